//! Configuration-loading properties (docs/contract.md, "Configuration"): layering with nulls and
//! provenance, the seed chain, empty/null sections, located errors for unknown keys at any depth
//! (files and `-o`), and the `config show --json` round trip. Works on temporary projects only.

use crate::support;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use support::Project;
use trainctl::config::{Config, Origin};
use trainctl::error::{Error, ErrorKind};

fn load(project: &Project, overrides: &[&str]) -> Result<Config, Error> {
    let root = project.root();
    trainctl::config::load(&support::opts(root, overrides), root, &support::no_vars)
}

fn load_ok(project: &Project, overrides: &[&str]) -> Config {
    load(project, overrides).unwrap_or_else(|e| panic!("load with {overrides:?} failed: {e}"))
}

// ------------------------------------------------------------------------------------------
// The shipped configuration set, and a block-YAML writer that knows its line numbers
// ------------------------------------------------------------------------------------------

/// One file of the configuration set as loaded from the shipped `config/`.
#[derive(Clone, Debug)]
struct RoleFile {
    role: String,
    /// Path under CONFIG (`env/local.yaml`).
    rel: String,
    /// How errors and provenance name it (`config/env/local.yaml`).
    display: String,
    tree: Value,
}

fn shipped() -> &'static Vec<RoleFile> {
    static SHIPPED: OnceLock<Vec<RoleFile>> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let project = Project::new();
        let config = load_ok(&project, &[]);
        config
            .docs
            .iter()
            .map(|(role, doc)| RoleFile {
                role: role.clone(),
                rel: config.files[role]
                    .strip_prefix(&config.config_dir)
                    .expect("shipped files live under config/")
                    .display()
                    .to_string(),
                display: doc.name.clone(),
                tree: doc.tree.clone(),
            })
            .collect()
    })
}

/// Sections that accept any key by design (and everything below them).
fn is_free_form(role: &str, path: &str) -> bool {
    let free: &[&str] = match role {
        "env" => &["storage", "logging", "workspace"],
        "hpo" => &["search_space", "sampling", "selection", "early_termination"],
        "final_training" => &["mlflow.tags"],
        "paths" => &["normalize_paths.replace", "cache_strategy_defaults"],
        "naming" => &["normalize.env.replace", "normalize.model.replace"],
        _ => &[],
    };
    free.iter()
        .any(|f| path == *f || path.starts_with(&format!("{f}.")))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Dotted paths of every mapping in `tree` (the root is ""), in document order.
fn mapping_paths(tree: &Value) -> Vec<String> {
    fn walk(path: &str, value: &Value, out: &mut Vec<String>) {
        if let Value::Object(map) = value {
            out.push(path.to_string());
            for (k, v) in map {
                walk(&join(path, k), v, out);
            }
        }
    }
    let mut out = Vec::new();
    walk("", tree, &mut out);
    out
}

fn get<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(tree);
    }
    path.split('.').try_fold(tree, |node, key| node.get(key))
}

/// One change to make while writing a tree.
#[derive(Clone, Copy, Debug)]
enum Edit<'a> {
    None,
    /// A new entry `key: value_text` as child number `pos` of the mapping at `path`.
    Insert {
        path: &'a str,
        pos: usize,
        key: &'a str,
        value_text: &'a str,
    },
    /// The entry at `path` written as `key:<raw>` instead of its value.
    Replace {
        path: &'a str,
        raw: &'a str,
    },
}

/// A YAML text and the 1-based line and column of the edited entry's key.
struct Written {
    text: String,
    at: Option<(u64, u64)>,
}

fn yaml_key(key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        key.to_string()
    } else {
        serde_json::to_string(key).expect("a string serialises")
    }
}

/// Writes `tree` as block YAML (scalars and sequences as JSON flow, which is YAML), applying
/// `edit`.
fn write_yaml(tree: &Value, edit: Edit<'_>) -> Written {
    fn block(
        map: &Map<String, Value>,
        path: &str,
        indent: usize,
        edit: Edit<'_>,
        lines: &mut Vec<String>,
        at: &mut Option<(u64, u64)>,
    ) {
        let pad = " ".repeat(indent);
        let mut entries: Vec<(String, Option<&Value>)> =
            map.iter().map(|(k, v)| (k.clone(), Some(v))).collect();
        let mut inserted = None;
        if let Edit::Insert {
            path: target,
            pos,
            key,
            ..
        } = edit
        {
            if target == path {
                let pos = pos.min(entries.len());
                entries.insert(pos, (key.to_string(), None));
                inserted = Some(pos);
            }
        }
        for (i, (key, value)) in entries.iter().enumerate() {
            let child = join(path, key);
            let k = yaml_key(key);
            let here = (lines.len() as u64 + 1, indent as u64 + 1);
            match (value, edit) {
                (None, Edit::Insert { value_text, .. }) if inserted == Some(i) => {
                    lines.push(format!("{pad}{k}: {value_text}"));
                    *at = Some(here);
                }
                (_, Edit::Replace { path: target, raw }) if target == child => {
                    lines.push(format!("{pad}{k}:{raw}"));
                    *at = Some(here);
                }
                (Some(Value::Object(m)), _) => {
                    let grows = matches!(edit, Edit::Insert { path: t, .. } if t == child);
                    if m.is_empty() && !grows {
                        lines.push(format!("{pad}{k}: {{}}"));
                    } else {
                        lines.push(format!("{pad}{k}:"));
                        block(m, &child, indent + 2, edit, lines, at);
                    }
                }
                (Some(v), _) => lines.push(format!("{pad}{k}: {v}")),
                (None, _) => unreachable!("only the inserted entry has no value"),
            }
        }
    }
    if let Edit::Replace { path: "", raw } = edit {
        return Written {
            text: raw.to_string(),
            at: None,
        };
    }
    let Value::Object(map) = tree else {
        unreachable!("config trees are mappings")
    };
    let mut lines = Vec::new();
    let mut at = None;
    block(map, "", 0, edit, &mut lines, &mut at);
    let text = if lines.is_empty() {
        "{}\n".to_string()
    } else {
        lines.join("\n") + "\n"
    };
    Written { text, at }
}

#[test]
fn the_writer_round_trips_every_shipped_file() {
    // The writer is the basis of the properties below: what it writes must load as the same
    // tree, for every file of the set.
    let project = Project::new();
    for file in shipped() {
        project.write_config(&file.rel, &write_yaml(&file.tree, Edit::None).text);
    }
    let config = load_ok(&project, &[]);
    for file in shipped() {
        assert_eq!(config.docs[&file.role].tree, file.tree, "{}", file.rel);
    }
}

// ------------------------------------------------------------------------------------------
// Layering
// ------------------------------------------------------------------------------------------

/// The hyperparameters: (name in `Hyperparameters`, section in the YAML files, key in it).
const HYPER_KEYS: [(&str, &str, &str); 13] = [
    ("learning_rate", "training", "learning_rate"),
    ("epochs", "training", "epochs"),
    ("batch_size", "training", "batch_size"),
    ("dropout", "training", "dropout"),
    ("weight_decay", "training", "weight_decay"),
    (
        "gradient_accumulation_steps",
        "training",
        "gradient_accumulation_steps",
    ),
    ("warmup_steps", "training", "warmup_steps"),
    ("max_grad_norm", "training", "max_grad_norm"),
    ("validation_fraction", "training", "validation_fraction"),
    (
        "early_stopping.enabled",
        "training",
        "early_stopping.enabled",
    ),
    (
        "early_stopping.patience",
        "training",
        "early_stopping.patience",
    ),
    (
        "early_stopping.min_delta",
        "training",
        "early_stopping.min_delta",
    ),
    ("eval_interval", "logging", "eval_interval"),
];

const NULL_SPELLINGS: [&str; 4] = ["null", "~", "", "Null"];

/// A value as YAML text and as the JSON value it must load as.
type Written1 = (String, Value);

fn float_in(lo: f64, hi: f64) -> BoxedStrategy<Written1> {
    (lo..hi).prop_map(|x| (format!("{x}"), json!(x))).boxed()
}

fn int_in(lo: u64, hi: u64) -> BoxedStrategy<Written1> {
    (lo..hi).prop_map(|n| (n.to_string(), json!(n))).boxed()
}

/// Valid values of each key of `HYPER_KEYS`, in the same order.
fn hyper_values() -> Vec<BoxedStrategy<Written1>> {
    vec![
        float_in(1e-4, 1.0),
        int_in(1, 30),
        int_in(1, 64),
        float_in(0.0, 0.95),
        float_in(0.0, 0.5),
        int_in(1, 8),
        int_in(0, 200),
        prop_oneof![
            float_in(0.01, 10.0),
            (1u64..10).prop_map(|n| (format!("{n}.0"), json!(n as f64)))
        ]
        .boxed(),
        float_in(0.0, 0.9),
        any::<bool>()
            .prop_map(|b| (b.to_string(), json!(b)))
            .boxed(),
        int_in(0, 10),
        float_in(0.0, 0.1),
        int_in(1, 500),
    ]
}

#[derive(Clone, Debug)]
enum Layer {
    Absent,
    Null(usize),
    Set(Written1),
}

fn arb_layer(values: BoxedStrategy<Written1>) -> impl Strategy<Value = Layer> {
    prop_oneof![
        1 => Just(Layer::Absent),
        1 => (0..NULL_SPELLINGS.len()).prop_map(Layer::Null),
        2 => values.prop_map(Layer::Set),
    ]
}

/// (train.yaml, final_training.yaml, `-o`) for one key.
type Stack = (Layer, Layer, Option<Written1>);

fn arb_stack(values: BoxedStrategy<Written1>) -> impl Strategy<Value = Stack> {
    (
        arb_layer(values.clone()),
        arb_layer(values.clone()),
        prop::option::of(values),
    )
}

/// Writes one layer file: `entries` are (section, dotted key in section, layer). A section
/// whose keys are all absent is written empty (`section:`), or as `section: ~` when
/// `null_sections`. Returns the text and the (line, column) of each written dotted key.
fn write_layer_file(
    entries: &[(&str, &str, &Layer)],
    null_sections: bool,
) -> (String, BTreeMap<String, (u64, u64)>) {
    let mut lines: Vec<String> = Vec::new();
    let mut at = BTreeMap::new();
    let mut sections: Vec<&str> = entries.iter().map(|(s, _, _)| *s).collect();
    sections.dedup();
    let empty = if null_sections { ": ~" } else { ":" };
    for section in sections {
        let mine: Vec<(&str, &Layer)> = entries
            .iter()
            .filter(|(s, _, _)| *s == section)
            .map(|(_, k, l)| (*k, *l))
            .collect();
        let written = |l: &Layer| !matches!(l, Layer::Absent);
        if !mine.iter().any(|(_, l)| written(l)) {
            lines.push(format!("{section}{empty}"));
            continue;
        }
        lines.push(format!("{section}:"));
        let mut group_open: Option<&str> = None;
        // Direct keys first, then each nested group (`early_stopping.*`).
        let mut ordered = mine.clone();
        ordered.sort_by_key(|(k, _)| k.contains('.'));
        for (key, layer) in ordered {
            let (indent, leaf) = match key.split_once('.') {
                None => (2, key),
                Some((group, leaf)) => {
                    if group_open != Some(group) {
                        let any = mine
                            .iter()
                            .any(|(k, l)| k.starts_with(&format!("{group}.")) && written(l));
                        if !any {
                            lines.push(format!("  {group}{empty}"));
                            group_open = Some(group);
                            continue;
                        }
                        lines.push(format!("  {group}:"));
                        group_open = Some(group);
                    }
                    (4, leaf)
                }
            };
            let text = match layer {
                Layer::Absent => continue,
                Layer::Null(i) => NULL_SPELLINGS[*i].to_string(),
                Layer::Set((text, _)) => text.clone(),
            };
            let pad = " ".repeat(indent);
            if text.is_empty() {
                lines.push(format!("{pad}{leaf}:"));
            } else {
                lines.push(format!("{pad}{leaf}: {text}"));
            }
            if matches!(layer, Layer::Set(_)) {
                at.insert(
                    format!("{section}.{key}"),
                    (lines.len() as u64, indent as u64 + 1),
                );
            }
        }
    }
    (lines.join("\n") + "\n", at)
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn file_origin(file: &str, at: Option<&(u64, u64)>) -> Origin {
    let (line, column) = *at.expect("a written key has a position");
    Origin::File {
        file: file.to_string(),
        line,
        column,
    }
}

/// The expected (value, origin) of one key: the last non-null layer.
fn expect_layered(
    default: Value,
    stack: &Stack,
    dotted: &str,
    override_key: &str,
    train_at: &BTreeMap<String, (u64, u64)>,
    ft_at: &BTreeMap<String, (u64, u64)>,
) -> (Value, Origin) {
    let (train, ft, ov) = stack;
    let mut want = (default, Origin::Default);
    if let Layer::Set((_, v)) = train {
        want = (
            v.clone(),
            file_origin("config/train.yaml", train_at.get(dotted)),
        );
    }
    if let Layer::Set((_, v)) = ft {
        want = (
            v.clone(),
            file_origin("config/final_training.yaml", ft_at.get(dotted)),
        );
    }
    if let Some((text, v)) = ov {
        want = (
            v.clone(),
            Origin::Override {
                arg: format!("{override_key}={text}"),
            },
        );
    }
    want
}

fn arb_seed_value() -> BoxedStrategy<Written1> {
    int_in(0, 100_000)
}

proptest! {
    #![proptest_config(support::seeded_config(128, module_path!(), ""))]

    /// Every hyperparameter resolves to the last non-null of (code default, train.yaml,
    /// final_training.yaml, `-o`), and its provenance names that layer's file and line; the
    /// seed resolves along `-o seed.random_seed` > final_training `seed.random_seed` >
    /// train.yaml `training.random_seed` > 42. Nulls are spelled every way YAML allows, and
    /// sections whose keys are all absent are written empty or `~`.
    #[test]
    fn layers_resolve_to_the_last_non_null_value_with_its_origin(
        stacks in hyper_values().into_iter().map(arb_stack).collect::<Vec<_>>(),
        seed in arb_stack(arb_seed_value()),
        null_sections in any::<bool>(),
    ) {
        let mut train_entries: Vec<(&str, &str, &Layer)> = Vec::new();
        let mut ft_entries: Vec<(&str, &str, &Layer)> = Vec::new();
        for ((_, section, key), (train, ft, _)) in HYPER_KEYS.iter().zip(&stacks) {
            train_entries.push((section, key, train));
            ft_entries.push((section, key, ft));
        }
        train_entries.push(("training", "random_seed", &seed.0));
        ft_entries.push(("seed", "random_seed", &seed.1));
        // Keep sections contiguous: the writer groups by consecutive section names.
        train_entries.sort_by_key(|(s, _, _)| *s != "training");
        ft_entries.sort_by_key(|(s, _, _)| *s != "training");
        let (train_text, train_at) = write_layer_file(&train_entries, null_sections);
        let (ft_text, ft_at) = write_layer_file(&ft_entries, null_sections);

        let mut overrides = Vec::new();
        for ((_, section, key), (_, _, ov)) in HYPER_KEYS.iter().zip(&stacks) {
            if let Some((text, _)) = ov {
                overrides.push(format!("{section}.{key}={text}"));
            }
        }
        if let Some((text, _)) = &seed.2 {
            overrides.push(format!("seed.random_seed={text}"));
        }

        let project = Project::new();
        project.write_config("train.yaml", &train_text);
        project.write_config("final_training.yaml", &ft_text);
        let args: Vec<&str> = overrides.iter().map(String::as_str).collect();
        let shown = format!("--- train.yaml\n{train_text}--- final_training.yaml\n{ft_text}-o {overrides:?}");
        let config = load(&project, &args)
            .map_err(|e| TestCaseError::fail(format!("load failed: {e}\n{shown}")))?;

        let defaults = trainctl::config::default_hyperparameters();
        let effective = serde_json::to_value(&config.hyperparameters).expect("serialise");
        for ((name, section, key), stack) in HYPER_KEYS.iter().zip(&stacks) {
            let default = get(&defaults, name).expect("a default for every key").clone();
            let dotted = format!("{section}.{key}");
            let (want_value, want_origin) =
                expect_layered(default, stack, &dotted, &dotted, &train_at, &ft_at);
            let got_value = get(&effective, name).expect("effective value");
            prop_assert!(same_value(got_value, &want_value),
                "{name}: effective {got_value}, want {want_value}\n{shown}");
            let prov_key = dotted.clone();
            let entry = config.provenance.iter().find(|p| p.key == prov_key);
            prop_assert!(entry.is_some(), "no provenance for {prov_key}");
            let entry = entry.expect("checked");
            prop_assert!(same_value(&entry.value, &want_value),
                "{prov_key}: provenance value {}, want {want_value}\n{shown}", entry.value);
            prop_assert_eq!(&entry.origin, &want_origin, "{}\n{}", prov_key, shown);
        }

        let (want_seed, want_origin) = {
            let (train, ft, ov) = &seed;
            let mut want = (json!(42), Origin::Default);
            if let Layer::Set((_, v)) = train {
                want = (v.clone(), file_origin("config/train.yaml", train_at.get("training.random_seed")));
            }
            if let Layer::Set((_, v)) = ft {
                want = (v.clone(), file_origin("config/final_training.yaml", ft_at.get("seed.random_seed")));
            }
            if let Some((text, v)) = ov {
                want = (v.clone(), Origin::Override { arg: format!("seed.random_seed={text}") });
            }
            want
        };
        prop_assert_eq!(json!(config.seed), want_seed, "seed\n{}", shown);
        let entry = config.provenance.iter().find(|p| p.key == "seed.random_seed");
        prop_assert!(entry.is_some(), "no provenance for seed.random_seed");
        prop_assert_eq!(&entry.expect("checked").origin, &want_origin, "seed origin\n{}", shown);
    }
}

#[test]
fn an_override_set_to_null_keeps_the_final_training_value() {
    // docs/contract.md, "Configuration": "A leaf set to null means keep the lower-precedence
    // value"; below `-o` is final_training.yaml, so `-o training.learning_rate=null` must leave its
    // 0.3 in force.
    let project = Project::new();
    project.write_config(
        "final_training.yaml",
        "training:\n  learning_rate: 0.3\nseed:\n  random_seed: 5\n",
    );
    let config = load_ok(
        &project,
        &["training.learning_rate=null", "seed.random_seed=null"],
    );
    assert_eq!(
        (config.hyperparameters.learning_rate, config.seed),
        (0.3, 5),
        "`-o key=null` dropped final_training.yaml's value instead of keeping it"
    );
}

// ------------------------------------------------------------------------------------------
// Empty and null sections
// ------------------------------------------------------------------------------------------

#[test]
fn a_section_written_empty_or_null_loads_as_empty() {
    let spellings = ["", " ~", " null", " Null", " {}"];
    let mut failures = Vec::new();
    let project = Project::new();
    for file in shipped() {
        let original = std::fs::read_to_string(project.config(&file.rel)).expect("read");
        let mut targets: Vec<String> = mapping_paths(&file.tree);
        // The whole file: empty, `~`, or only a comment. The experiment must name its
        // files, so an empty experiment is rightly an error.
        if file.role == "experiment" {
            targets.retain(|p| !p.is_empty());
        }
        for path in &targets {
            let raws: Vec<&str> = if path.is_empty() {
                vec!["", "~\n", "# only a comment\n", "{}\n"]
            } else {
                spellings.to_vec()
            };
            for raw in raws {
                let text = write_yaml(&file.tree, Edit::Replace { path, raw }).text;
                project.write_config(&file.rel, &text);
                match load(&project, &[]) {
                    Err(e) => failures.push(format!("{} `{path}` as {raw:?}: {e}", file.rel)),
                    Ok(config) => {
                        let tree = &config.docs[&file.role].tree;
                        let loaded = get(tree, path);
                        let empty = match loaded {
                            None => true,
                            Some(Value::Object(m)) => m.is_empty(),
                            Some(_) => false,
                        };
                        if !empty {
                            failures.push(format!(
                                "{} `{path}` as {raw:?} loaded as {loaded:?}",
                                file.rel
                            ));
                        }
                    }
                }
            }
        }
        project.write_config(&file.rel, &original);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ------------------------------------------------------------------------------------------
// Unknown keys
// ------------------------------------------------------------------------------------------

/// Non-free-form mappings of a file, where an unknown key must be an error.
fn strict_mappings(file: &RoleFile) -> Vec<String> {
    mapping_paths(&file.tree)
        .into_iter()
        .filter(|p| !is_free_form(&file.role, p))
        .collect()
}

const UNKNOWN_VALUES: &[&str] = &["1", "true", "\"text\"", "[1, 2]", "{a: 1}", "0.5", "word"];

proptest! {
    #![proptest_config(support::seeded_config(192, module_path!(), ""))]

    /// An unknown key inserted anywhere in any file of the set (outside the free-form
    /// sections) is a `ConfigInvalid` error naming that file, the line and column where it
    /// was inserted, and its dotted key; the same key given with `-o` names the `-o`.
    #[test]
    fn an_unknown_key_at_any_depth_is_a_located_error(
        file_index in any::<Index>(),
        path_index in any::<Index>(),
        position in any::<Index>(),
        key in "x_[a-z0-9_\u{e9}-]{0,6}",
        value in prop::sample::select(UNKNOWN_VALUES),
        via_override in any::<bool>(),
        unprefixed in any::<bool>(),
    ) {
        let file = file_index.get(shipped());
        let paths = strict_mappings(file);
        let path = path_index.get(&paths);
        let dotted = join(path, &key);
        let project = Project::new();
        let (result, shown) = if via_override {
            let arg = if file.role == "final_training" && unprefixed {
                format!("{dotted}={value}")
            } else {
                format!("{}:{dotted}={value}", file.role)
            };
            (load(&project, &[&arg]), arg)
        } else {
            let children = get(&file.tree, path).and_then(Value::as_object).map_or(0, Map::len);
            let pos = position.index(children + 1);
            let written = write_yaml(&file.tree, Edit::Insert { path, pos, key: &key, value_text: value });
            project.write_config(&file.rel, &written.text);
            let (line, column) = written.at.expect("the key was inserted");
            let result = load(&project, &[]);
            if let Err(e) = &result {
                prop_assert_eq!(e.place.line, Some(line), "{}\n{}", e, written.text);
                prop_assert_eq!(e.place.column, Some(column), "{}\n{}", e, written.text);
            }
            (result, written.text)
        };
        let err = match result {
            Ok(_) => return Err(TestCaseError::fail(format!(
                "unknown key `{dotted}` in {} was accepted\n{shown}", file.rel))),
            Err(e) => e,
        };
        prop_assert_eq!(err.kind, ErrorKind::ConfigInvalid, "{}", err);
        prop_assert_eq!(err.place.key.as_deref(), Some(dotted.as_str()), "{}\n{}", err, shown);
        if via_override {
            prop_assert_eq!(err.place.file.clone(), Some(format!("-o {shown}")), "{}", err);
        } else {
            prop_assert_eq!(err.place.file.as_deref(), Some(file.display.as_str()), "{}", err);
        }
    }
}

#[test]
fn a_misspelt_override_names_the_override_and_suggests_the_key() {
    let project = Project::new();
    let err = load(&project, &["training.lerning_rate=1"]).expect_err("unknown key");
    assert_eq!(err.kind, ErrorKind::ConfigInvalid, "{err}");
    assert_eq!(
        err.place.file.as_deref(),
        Some("-o training.lerning_rate=1"),
        "{err}"
    );
    assert_eq!(
        err.place.key.as_deref(),
        Some("training.lerning_rate"),
        "{err}"
    );
    assert!(
        err.message.contains("did you mean `learning_rate`"),
        "{err}"
    );
    // The same typo in a file names the file, line and column.
    project.write_config(
        "train.yaml",
        "training:\n  epochs: 2\n  lerning_rate: 0.1\n",
    );
    let err = load(&project, &[]).expect_err("unknown key");
    assert_eq!(
        (err.place.file.as_deref(), err.place.line, err.place.column),
        (Some("config/train.yaml"), Some(3), Some(3)),
        "{err}"
    );
    assert!(
        err.message.contains("did you mean `learning_rate`"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_is_an_error_even_when_its_value_is_null() {
    // docs/contract.md, "Configuration": unknown keys are errors. A misspelt key whose value is
    // null (or a misspelt section written empty) is still a misspelt key.
    let cases: [(&str, &str, &[&str], &str); 4] = [
        (
            "train.yaml",
            "training:\n  lerning_rate: null\n",
            &[],
            "training.lerning_rate",
        ),
        (
            "final_training.yaml",
            "mlfow:\nrun:\n  mode: force_new\n",
            &[],
            "mlfow",
        ),
        (
            "final_training.yaml",
            "training:\n  early_stoping:\n    enabled: ~\n",
            &[],
            "training.early_stoping",
        ),
        (
            "final_training.yaml",
            "{}\n",
            &["training.lerning_rate=null"],
            "training.lerning_rate",
        ),
    ];
    let mut failures = Vec::new();
    for (rel, text, overrides, key) in cases {
        let project = Project::new();
        project.write_config(rel, text);
        match load(&project, overrides) {
            Ok(_) => failures.push(format!(
                "{rel} {text:?} -o {overrides:?}: accepted, want an error at `{key}`"
            )),
            Err(e) if e.place.key.as_deref() != Some(key) => {
                failures.push(format!("{rel} {text:?}: {e}, want key `{key}`"))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ------------------------------------------------------------------------------------------
// `config show --json` round trip
// ------------------------------------------------------------------------------------------

fn show_args<'a>(overrides: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    let mut args = Vec::new();
    for o in overrides {
        args.push("-o");
        args.push(*o);
    }
    args.extend_from_slice(tail);
    args
}

/// `config show --json`, its files written back as JSON into a new config dir, loaded again
/// from there: the same effective config.
fn check_round_trip(project: &Project, overrides: &[&str]) -> Result<(), TestCaseError> {
    let (code, first) = project.run_json(&show_args(overrides, &["config", "show"]));
    prop_assert_eq!(code, 0, "config show failed: {}", first);
    let dir = project.root().join("config_roundtrip");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clean");
    }
    let files = first["files"].as_object().expect("files");
    for (role, file) in files {
        let rel = file["path"].as_str().expect("path");
        prop_assert!(
            Path::new(rel).is_relative(),
            "{role} lives outside CONFIG: {rel}"
        );
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let text = serde_json::to_string_pretty(&file["tree"]).expect("serialise");
        std::fs::write(&path, text).expect("write");
    }
    let dir_arg = dir.display().to_string();
    let (code, second) = project.run_json(&["--config-dir", &dir_arg, "config", "show"]);
    prop_assert_eq!(code, 0, "reloading the shown config failed: {}", second);
    prop_assert_eq!(&first["hyperparameters"], &second["hyperparameters"]);
    prop_assert_eq!(&first["seed"], &second["seed"]);
    let values = |doc: &Value| -> Map<String, Value> {
        doc["effective"]
            .as_object()
            .expect("effective")
            .iter()
            .map(|(k, v)| (k.clone(), v["value"].clone()))
            .collect()
    };
    prop_assert_eq!(values(&first), values(&second));
    let second_files = second["files"].as_object().expect("files");
    prop_assert_eq!(
        files.keys().collect::<Vec<_>>(),
        second_files.keys().collect::<Vec<_>>()
    );
    for (role, file) in files {
        prop_assert_eq!(&file["tree"], &second_files[role]["tree"], "role {}", role);
    }
    let (fa, fb) = (&first["fingerprints"], &second["fingerprints"]);
    prop_assert!(
        fa.get("error").is_none(),
        "fingerprints not computable: {}",
        fa
    );
    for key in ["spec_fp", "exec_fp", "spec_inputs", "exec_inputs"] {
        prop_assert_eq!(&fa[key], &fb[key], "{}", key);
    }
    Ok(())
}

#[test]
fn config_show_round_trips_the_shipped_config() {
    let project = Project::new();
    check_round_trip(&project, &[]).unwrap_or_else(|e| panic!("{e}"));
}

/// Overrides for the round trip. Values are short decimals: the test reads `config show`
/// through serde_json, whose float parser is not exact beyond 15 significant digits.
const ROUND_TRIP_OVERRIDES: &[&str] = &[
    "training.learning_rate=0.02",
    "training.epochs=2",
    "training.early_stopping.enabled=false",
    "training.max_grad_norm=2",
    "train:training.dropout=0.3",
    "seed.random_seed=7",
    "train:training.random_seed=9",
    "logging.eval_interval=25",
    "logging.log_interval=5",
    "model:features.hash_dim=1024",
    "env:compute.threads=4",
    "mlflow.run_name=rt",
    "mlflow.tags={a: b, c: d}",
    "run.mode=force_new",
    "variant.number=3",
    "trainer.precision=fp16",
    "identity.include_determinism_fp=true",
    "trainer.deterministic=false",
    "identity.include_code_fp=false",
    "trainer.command=[python, train.py]",
    "paths:base.outputs=out2",
    "data:description=round trip",
    "naming:validate.warn_length=120",
    "hpo:sampling.max_trials=3",
];

proptest! {
    #![proptest_config(support::seeded_config(8, module_path!(), ""))]

    #[test]
    fn config_show_round_trips_override_stacks(
        overrides in prop::sample::subsequence(ROUND_TRIP_OVERRIDES, 1..=6).prop_shuffle(),
    ) {
        let project = Project::new();
        check_round_trip(&project, &overrides)?;
    }
}

// ------------------------------------------------------------------------------------------
// Optional files, warnings and derived settings (added for the mutation gate, issue 8)
// ------------------------------------------------------------------------------------------

/// tags.yaml, best_model_selection.yaml and conversion.yaml may be absent (their defaults
/// apply); one that exists but cannot be read is an error naming it, never an empty file.
#[test]
fn optional_files_may_be_missing_but_not_unreadable() {
    for file in ["tags.yaml", "best_model_selection.yaml", "conversion.yaml"] {
        let project = Project::new();
        let path = project.config(file);
        std::fs::remove_file(&path).expect("remove");
        let config = load_ok(&project, &[]);
        if file == "best_model_selection.yaml" {
            assert_eq!(
                config.objective_metric(),
                "macro-f1",
                "the default objective"
            );
        }
        std::fs::create_dir(&path).expect("a directory where the file should be");
        let err = load(&project, &[]).expect_err(file);
        assert_eq!(err.kind, ErrorKind::ConfigMissing, "{file}: {err}");
        assert!(err.to_string().contains("cannot read"), "{file}: {err}");
        assert!(err.to_string().contains(file), "{file}: {err}");
    }
    // A required one is an error when missing.
    let project = Project::new();
    std::fs::remove_file(project.config("train.yaml")).expect("remove");
    let err = load(&project, &[]).expect_err("train.yaml is required");
    assert_eq!(err.kind, ErrorKind::ConfigMissing, "{err}");
    assert!(err.to_string().contains("not found"), "{err}");
}

/// Settings derived from others: `checkpoint.load` follows the source unless set, and the
/// objective comes from best_model_selection.yaml.
#[test]
fn derived_settings_follow_their_sources() {
    let project = Project::new();
    let scratch = load_ok(&project, &[]);
    assert!(!scratch.checkpoint_load(), "scratch loads nothing");
    let parent = load_ok(
        &project,
        &[
            "source.type=final_training",
            "run.mode=continue_from_previous",
        ],
    );
    assert!(parent.checkpoint_load(), "a parent source loads by default");
    project.write_config(
        "best_model_selection.yaml",
        "objective:\n  metric: span-f1\n  direction: maximize\n",
    );
    assert_eq!(load_ok(&project, &[]).objective_metric(), "span-f1");
}

/// Warnings are for settings that are ignored, and only for those.
#[test]
fn warnings_name_ignored_settings_and_nothing_else() {
    let project = Project::new();
    let warned = |overrides: &[&str]| load_ok(&project, overrides).warnings;
    assert_eq!(warned(&[]), Vec::<String>::new());
    assert_eq!(
        warned(&["checkpoint.load=false"]),
        Vec::<String>::new(),
        "scratch"
    );
    let w = warned(&["source.type=final_training", "checkpoint.load=false"]);
    assert!(
        w.iter().any(|w| w.contains("checkpoint.load is false")),
        "{w:?}"
    );
    assert_eq!(
        warned(&["variant.number=2"]),
        Vec::<String>::new(),
        "reuse uses it"
    );
    let w = warned(&["run.mode=force_new", "variant.number=2"]);
    assert!(
        w.iter()
            .any(|w| w.contains("force_new ignores variant.number")),
        "{w:?}"
    );
}

/// A bad value that came from the selected HPO configuration (the pipeline's derived layer)
/// is reported against that configuration and the key, like a file or an override would be.
#[test]
fn a_bad_value_from_the_best_configuration_names_it() {
    let project = Project::new();
    let root = project.root();
    let opts = trainctl::config::LoadOptions {
        best_configuration: Some((
            "best configuration of trial 7".into(),
            json!({"dropout": 1.5}),
        )),
        ..support::opts(root, &[])
    };
    let err = trainctl::config::load(&opts, root, &support::no_vars).expect_err("dropout 1.5");
    assert_eq!(err.kind, ErrorKind::ConfigInvalid, "{err}");
    assert_eq!(
        err.place.file.as_deref(),
        Some("best configuration of trial 7"),
        "{err}"
    );
    assert_eq!(err.place.key.as_deref(), Some("training.dropout"), "{err}");
}
