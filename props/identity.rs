//! Identity properties (docs/contract.md, "Identity"): the one canonical-JSON hasher (key order,
//! integral floats, checked-in golden vectors) and what spec_fp / exec_fp may and must depend on,
//! checked through real config loading and job preparation on a temporary project. Never edits the
//! repository except through the opt-in golden regeneration below.

use crate::support;

use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use support::Project;
use trainctl::identity::{canonical_json, fingerprint, is_fingerprint, sha256_hex};

// ------------------------------------------------------------------------------------------
// Canonical JSON
// ------------------------------------------------------------------------------------------

const TWO_POW_53: f64 = 9_007_199_254_740_992.0;
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// Integral floats whose magnitude is in [2^53, 2^64): exactly an i64/u64 JSON integer, but
/// rendered as a float today. They have their own property so that the other canonical
/// properties stay about key order and whitespace.
fn in_wide_integral_zone(x: f64) -> bool {
    x.fract() == 0.0 && x.abs() >= TWO_POW_53 && x.abs() < TWO_POW_64
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_]{0,6}",
        // Any printable Unicode (astral planes included).
        "\\PC{0,4}",
        // Characters that must be escaped, plus code points whose UTF-16 order differs
        // from their code-point order.
        "[a\"\\\\\\x00-\\x1f\\x7f\u{e9}\u{2028}\u{ff61}\u{1f600}]{0,4}",
    ]
}

fn arb_float() -> impl Strategy<Value = f64> {
    use prop::num::f64 as f;
    prop_oneof![
        f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO,
        (-1_000_000i64..1_000_000).prop_map(|i| i as f64),
        -1.0e6f64..1.0e6,
        prop::sample::select(vec![0.1, 2e-5, 1e300, -0.0, 0.5, -2.5e-7, 1e21]),
    ]
    .prop_filter("wide integral floats have their own property", |x| {
        !in_wide_integral_zone(*x)
    })
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        arb_float().prop_map(Value::from),
        arb_key().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A 64-bit mix of a seed and a string (FNV-1a then splitmix64): a deterministic "random"
/// order for keys.
fn mix(seed: u64, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// `value` with the keys of every object reordered by `seed` (serde_json keeps insertion
/// order here, so this really changes the order the hasher sees).
fn shuffled(value: &Value, seed: u64) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|v| shuffled(v, seed)).collect()),
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by_key(|(k, _)| mix(seed, k));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), shuffled(v, seed)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

fn reversed(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(reversed).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .rev()
                .map(|(k, v)| (k.clone(), reversed(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The contract's canonical form written independently: keys sorted by code point at every
/// level, integral floats that are JSON integers rendered as those integers, then serde_json's
/// compact writer (no whitespace, shortest round-trip floats).
fn reference_canonical(value: &Value) -> String {
    fn normalise(value: &Value) -> Value {
        match value {
            Value::Number(n) if n.is_f64() => {
                let x = n.as_f64().expect("is_f64");
                if x.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&x) {
                    Value::from(x as i64)
                } else if x.fract() == 0.0 && (0.0..TWO_POW_64).contains(&x) {
                    Value::from(x as u64)
                } else {
                    value.clone()
                }
            }
            Value::Array(items) => Value::Array(items.iter().map(normalise).collect()),
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                // Rust's `str` order is byte order, which for UTF-8 is code-point order.
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), normalise(&map[k])))
                        .collect(),
                )
            }
            other => other.clone(),
        }
    }
    serde_json::to_string(&normalise(value)).expect("serialise")
}

proptest! {
    #![proptest_config(support::seeded_config(512, module_path!(), ""))]

    /// Key order never reaches the hash: any reordering of the keys of any object, at any
    /// depth, gives the same canonical text and fingerprint.
    #[test]
    fn canonical_json_ignores_key_order(value in arb_json(), seed in any::<u64>()) {
        let canonical = canonical_json(&value);
        prop_assert_eq!(&canonical, &canonical_json(&shuffled(&value, seed)));
        prop_assert_eq!(&canonical, &canonical_json(&reversed(&value)));
        prop_assert_eq!(fingerprint(&value), fingerprint(&shuffled(&value, seed)));
    }

    /// The canonical text is the contract's form: sorted keys, no whitespace, integral floats
    /// as integers, shortest round-trip floats (compared with an independent rendering).
    #[test]
    fn canonical_json_is_sorted_compact_json(value in arb_json()) {
        prop_assert_eq!(canonical_json(&value), reference_canonical(&value));
    }

    /// `fingerprint` is the first 16 lowercase hex chars of SHA-256 over the canonical text.
    #[test]
    fn fingerprint_is_16_lowercase_hex_of_the_canonical_sha256(value in arb_json()) {
        let fp = fingerprint(&value);
        prop_assert!(is_fingerprint(&fp), "{fp:?}");
        prop_assert_eq!(fp.len(), 16);
        prop_assert!(fp.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(&fp[..], &sha256_hex(canonical_json(&value).as_bytes())[..16]);
    }

    /// `1.0` and `1`, `-3.0` and `-3` render alike, alone and nested.
    #[test]
    fn integral_float_renders_like_the_integer(i in -(1i64 << 53)..=(1i64 << 53)) {
        check_integral(i as f64, Value::from(i))?;
    }

    /// The same for integral floats of magnitude 2^53 and above that are still exactly a JSON
    /// integer (i64/u64). docs/contract.md, "Identity" makes no exception for them.
    #[test]
    fn integral_float_renders_like_the_integer_above_2_pow_53(
        mantissa in 1u64..(1u64 << 53),
        shift in 0u32..=11,
        negative in any::<bool>(),
    ) {
        let magnitude = mantissa << shift;
        let x = magnitude as f64;
        prop_assume!(x as u64 == magnitude);
        let int = if negative {
            prop_assume!(magnitude <= 1u64 << 63);
            Value::from((magnitude as i128).wrapping_neg() as i64)
        } else {
            Value::from(magnitude)
        };
        check_integral(if negative { -x } else { x }, int)?;
    }
}

fn check_integral(float: f64, int: Value) -> Result<(), TestCaseError> {
    let f = Value::from(float);
    prop_assert!(f.is_f64(), "{f} should be a float value");
    prop_assert_eq!(canonical_json(&f), canonical_json(&int));
    let wrap = |v: Value| json!({"k": [v, {"x": 1}], "a": true});
    prop_assert_eq!(
        canonical_json(&wrap(f.clone())),
        canonical_json(&wrap(int.clone()))
    );
    prop_assert_eq!(fingerprint(&wrap(f)), fingerprint(&wrap(int)));
    Ok(())
}

#[test]
fn sha256_hex_matches_known_vectors() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

// ------------------------------------------------------------------------------------------
// Golden vectors of our canonical form (fixtures/golden/canonical.json)
// ------------------------------------------------------------------------------------------

fn golden_path() -> PathBuf {
    support::repo_root().join("fixtures/golden/canonical.json")
}

/// The inputs of the golden file, as JSON text (key order and number spelling as written).
const GOLDEN_INPUTS: &[(&str, &str)] = &[
    ("empty_object", r#"{}"#),
    ("empty_array", r#"[]"#),
    ("empty_string", r#""""#),
    ("top_level_scalars", r#"[null, true, false, 0, -1, "x"]"#),
    (
        "empty_containers_nested",
        r#"{"b": [], "a": {}, "c": [{}, []], "": ""}"#,
    ),
    (
        "key_order",
        r#"{"zeta": 1, "alpha": 2, "Beta": 3, "_": 4, "a": {"y": [3, 2, 1], "x": null}, "ab": 5, "a b": 6}"#,
    ),
    (
        "unicode_keys",
        r#"{"é": 1, "e": 2, "z": 3, "日本": 4, "😀": 5, "｡": 6, "e\u0301": 7, "Z": 8, "ä": 9, "Ω": 10}"#,
    ),
    (
        "escapes",
        r#"{"quote\"": "\"", "back\\slash": "\\", "newline": "a\nb", "tab": "\t", "cr": "\r", "nul": "\u0000", "unit_sep": "\u001f", "del": "\u007f", "line_sep": "\u2028", "slash": "/", "bell": "\u0007", "emoji": "\ud83d\ude00"}"#,
    ),
    (
        "floats",
        r#"{"lr": 2e-5, "lr_decimal": 0.00002, "tenth": 0.1, "huge": 1e300, "neg_zero": -0.0, "third": 0.3333333333333333, "tiny": 5e-324, "max": 1.7976931348623157e308, "neg": -2.5e-7, "non_integral": 123456.789, "one_and_a_bit": 1.0000000000000002, "big_exp": 1e21}"#,
    ),
    (
        "integral_floats",
        r#"{"one_float": 1.0, "one": 1, "neg3_float": -3.0, "neg3": -3, "zero_float": 0.0, "large": 1e15, "two52_plus_1": 4503599627370497.0, "epochs": 3.0}"#,
    ),
    (
        "big_ints",
        r#"{"i64_min": -9223372036854775808, "i64_max": 9223372036854775807, "u64_max": 18446744073709551615, "two53_plus_1": 9007199254740993}"#,
    ),
    (
        "array_order_kept",
        r#"[3, 1, 2, "b", "a", null, true, false, 1.5, {"b": 1, "a": 2}]"#,
    ),
    (
        "deep",
        r#"{"a": {"b": {"c": {"d": {"e": [{"z": 1, "y": 2}]}}}}}"#,
    ),
    (
        "hyperparameters_like",
        r#"{"learning_rate": 5e-2, "epochs": 4.0, "early_stopping": {"patience": 3, "enabled": true, "min_delta": 1e-3}, "max_grad_norm": 1.0}"#,
    ),
];

/// Regenerates fixtures/golden/canonical.json from the CURRENT implementation. Opt-in only:
/// `TRAINCTL_REGENERATE_GOLDEN=1 cargo test --release --test sim -- identity:: --ignored
/// regenerate_golden_canonical`. Review the diff by hand: a changed canonical string changes
/// every fingerprint, i.e. every variant directory name.
#[test]
#[ignore]
fn regenerate_golden_canonical() {
    if std::env::var("TRAINCTL_REGENERATE_GOLDEN").as_deref() != Ok("1") {
        return;
    }
    let cases: Vec<Value> = GOLDEN_INPUTS
        .iter()
        .map(|(name, text)| {
            let input: Value = serde_json::from_str(text).expect("golden input is JSON");
            json!({
                "name": name,
                "input": input,
                "canonical": canonical_json(&input),
                "fingerprint": fingerprint(&input),
            })
        })
        .collect();
    let doc = json!({
        "about": "Golden vectors of trainctl's canonical JSON (docs/contract.md: Identity). `canonical` is the exact text hashed; `fingerprint` its first 16 hex chars of SHA-256. Checked by props/identity.rs golden_canonical_vectors; a change here re-keys every variant directory.",
        "cases": cases,
    });
    let path = golden_path();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let text = serde_json::to_string_pretty(&doc).expect("serialise") + "\n";
    std::fs::write(&path, text).expect("write golden");
}

#[test]
fn golden_canonical_vectors() {
    let path = golden_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("golden file is JSON");
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= GOLDEN_INPUTS.len(), "golden file lost cases");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let input = &case["input"];
        let want_canonical = case["canonical"].as_str().expect("canonical");
        let want_fp = case["fingerprint"].as_str().expect("fingerprint");
        // The file must be self-consistent, so that a hand edit cannot hide a change.
        assert_eq!(
            &sha256_hex(want_canonical.as_bytes())[..16],
            want_fp,
            "{name}: golden fingerprint is not the hash of its canonical text"
        );
        let got_canonical = canonical_json(input);
        let got_fp = fingerprint(input);
        if got_canonical != want_canonical || got_fp != want_fp {
            failures.push(format!(
                "{name}:\n  input     {input}\n  canonical want {want_canonical}\n            got  {got_canonical}\n  fingerprint want {want_fp} got {got_fp}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "canonical JSON differs from fixtures/golden/canonical.json (this changes every \
         fingerprint):\n{}",
        failures.join("\n")
    );
}

// ------------------------------------------------------------------------------------------
// Fingerprints through real config loading
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Ids {
    spec_fp: String,
    exec_fp: String,
    spec_inputs: Value,
    exec_inputs: Value,
}

type Git = (Option<&'static str>, bool);
const NO_GIT: Git = (None, false);

fn ids(
    project: &Project,
    overrides: &[&str],
    env: Option<&str>,
    git: Git,
) -> Result<Ids, trainctl::error::Error> {
    let root = project.root();
    let mut opts = support::opts(root, overrides);
    opts.env = env.map(str::to_string);
    let config = trainctl::config::load(&opts, root, &support::no_vars)?;
    let (commit, dirty) = (git.0.map(str::to_string), git.1);
    let git_state = move |_: &Path, _: &[PathBuf]| (commit.clone(), dirty);
    let host = trainctl::job::Host {
        git: &git_state,
        ..support::host()
    };
    let job = trainctl::job::prepare(config, &trainctl::fs::OsFs, &host)?;
    Ok(Ids {
        spec_fp: job.spec_fp().to_string(),
        exec_fp: job.exec_fp().to_string(),
        spec_inputs: job.spec.to_json(),
        exec_inputs: job.exec.to_json(),
    })
}

fn ids_ok(project: &Project, overrides: &[&str]) -> Ids {
    ids(project, overrides, None, NO_GIT)
        .unwrap_or_else(|e| panic!("load/prepare with {overrides:?} failed: {e}"))
}

// --- A tiny YAML writer with many spellings of the same configuration ----------------------

/// Marks a spelling that leaves the entry out.
const ABSENT: &str = "\u{0}absent";
/// Ways to say "null" (or to say nothing).
const NULLS: &[&str] = &["null", "~", "", "Null", "NULL", ABSENT];

#[derive(Clone, Debug)]
enum Node {
    /// One value and its alternative spellings (index 0 is the plain one). `decoy` is a
    /// valid, different value used to test merge-key precedence; `group` names leaves of equal
    /// value that may share one anchor.
    Leaf {
        spellings: &'static [&'static str],
        decoy: Option<&'static str>,
        group: Option<&'static str>,
    },
    Seq(&'static [&'static str]),
    Map(Vec<(&'static str, Node)>),
    /// Text emitted verbatim after `key: `.
    Raw(&'static str),
}

fn leaf(spellings: &'static [&'static str], decoy: &'static str) -> Node {
    Node::Leaf {
        spellings,
        decoy: Some(decoy),
        group: None,
    }
}

fn grouped(spellings: &'static [&'static str], decoy: &'static str, group: &'static str) -> Node {
    Node::Leaf {
        spellings,
        decoy: Some(decoy),
        group: Some(group),
    }
}

fn nulls() -> Node {
    Node::Leaf {
        spellings: NULLS,
        decoy: None,
        group: None,
    }
}

fn map(entries: Vec<(&'static str, Node)>) -> Node {
    Node::Map(entries)
}

/// How one file is spelled. All zero/false is the plain spelling.
#[derive(Clone, Debug, Default)]
struct Style {
    /// 0 keeps the written key order; otherwise keys are reordered at every level.
    order_seed: u64,
    /// 0 picks the plain spelling of every value; otherwise a spelling per value.
    spell_seed: u64,
    comments: bool,
    /// Anchors/aliases for equal values, merge keys (with a decoy that the explicit key
    /// must override) in nested mappings.
    anchors: bool,
    /// Nested mappings and sequences in flow style.
    flow: bool,
}

const TRUE: &[&str] = &["true", "True", "TRUE"];
const FALSE: &[&str] = &["false", "False", "FALSE"];

fn train_yaml() -> Node {
    map(vec![
        (
            "training",
            map(vec![
                (
                    "learning_rate",
                    leaf(
                        &[
                            "0.00002", "2e-5", "2.0e-5", "2E-5", "0.2e-4", "20e-6", "+2e-5",
                            "0.000020",
                        ],
                        "0.9",
                    ),
                ),
                ("epochs", leaf(&["3", "3.0", "+3", "3e0", "3.00"], "9")),
                ("batch_size", leaf(&["16", "16.0", "0x10", "1.6e1"], "7")),
                (
                    "dropout",
                    grouped(&["0.1", "1e-1", "0.10", ".1"], "0.5", "tenth"),
                ),
                ("weight_decay", leaf(&["0.0001", "1e-4", "1.0E-4"], "0.3")),
                ("gradient_accumulation_steps", leaf(&["1", "1.0"], "5")),
                ("warmup_steps", leaf(&["20", "20.0", "2e1"], "9")),
                ("max_grad_norm", leaf(&["1", "1.0", "1e0", "1.000"], "7.5")),
                (
                    "validation_fraction",
                    grouped(&["0.1", "1e-1", ".1"], "0.5", "tenth"),
                ),
                ("random_seed", leaf(&["42", "42.0", "4.2e1"], "9")),
                (
                    "early_stopping",
                    map(vec![
                        ("enabled", grouped(TRUE, "false", "yes")),
                        ("patience", leaf(&["3", "3.0"], "8")),
                        ("min_delta", leaf(&["0.001", "1e-3", "1.0E-3"], "0.5")),
                    ]),
                ),
            ]),
        ),
        (
            "logging",
            map(vec![
                ("log_interval", leaf(&["10", "1e1"], "3")),
                ("eval_interval", leaf(&["50", "50.0", "5e1"], "7")),
                ("save_interval", leaf(&["50", "5e1"], "9")),
            ]),
        ),
    ])
}

fn final_training_yaml() -> Node {
    let es = map(vec![
        ("enabled", nulls()),
        ("patience", nulls()),
        ("min_delta", nulls()),
    ]);
    map(vec![
        (
            "run",
            map(vec![(
                "mode",
                leaf(
                    &[
                        "reuse_if_exists",
                        "\"reuse_if_exists\"",
                        "'reuse_if_exists'",
                    ],
                    "force_new",
                ),
            )]),
        ),
        (
            "source",
            map(vec![
                ("type", leaf(&["scratch", "\"scratch\""], "scratch")),
                ("parent", nulls()),
            ]),
        ),
        (
            "dataset",
            map(vec![
                ("data_config", nulls()),
                ("local_path_override", nulls()),
            ]),
        ),
        (
            "checkpoint",
            map(vec![
                ("load", nulls()),
                ("source", nulls()),
                ("validate", grouped(TRUE, "false", "yes")),
            ]),
        ),
        ("variant", map(vec![("number", nulls())])),
        (
            "identity",
            map(vec![
                ("include_code_fp", grouped(TRUE, "false", "yes")),
                ("include_precision_fp", grouped(TRUE, "false", "yes")),
                ("include_determinism_fp", grouped(FALSE, "true", "no")),
            ]),
        ),
        ("seed", map(vec![("random_seed", nulls())])),
        (
            "training",
            map(vec![
                ("learning_rate", nulls()),
                ("epochs", nulls()),
                ("batch_size", nulls()),
                ("dropout", nulls()),
                ("weight_decay", nulls()),
                ("gradient_accumulation_steps", nulls()),
                ("warmup_steps", nulls()),
                ("max_grad_norm", nulls()),
                ("validation_fraction", nulls()),
                ("early_stopping", es),
            ]),
        ),
        (
            "logging",
            map(vec![
                ("log_interval", nulls()),
                ("eval_interval", nulls()),
                ("save_interval", nulls()),
            ]),
        ),
        (
            "mlflow",
            map(vec![
                ("experiment_name", nulls()),
                ("run_name", nulls()),
                ("tags", map(vec![])),
            ]),
        ),
        (
            "trainer",
            map(vec![
                ("command", nulls()),
                ("timeout_s", nulls()),
                ("precision", leaf(&["fp32", "\"fp32\"", "'fp32'"], "bf16")),
                ("deterministic", grouped(TRUE, "false", "yes")),
            ]),
        ),
        (
            "lease",
            map(vec![
                ("timeout_s", leaf(&["600", "600.0", "6e2"], "5")),
                ("heartbeat_s", leaf(&["10", "1e1"], "3")),
            ]),
        ),
    ])
}

fn model_yaml() -> Node {
    map(vec![
        (
            "name",
            leaf(&["builtin", "\"builtin\"", "'builtin'"], "other"),
        ),
        (
            "backbone",
            leaf(
                &["builtin/hashed-linear", "\"builtin/hashed-linear\""],
                "x/y",
            ),
        ),
        (
            "preprocessing",
            map(vec![
                ("max_length", leaf(&["128", "128.0", "1.28e2"], "64")),
                ("lowercase", grouped(FALSE, "true", "no")),
            ]),
        ),
        (
            "features",
            map(vec![
                (
                    "hash_dim",
                    leaf(&["65536", "65536.0", "6.5536e4", "0x10000"], "1024"),
                ),
                ("window", leaf(&["2", "2.0"], "3")),
                ("char_ngrams", grouped(TRUE, "false", "yes")),
            ]),
        ),
        (
            "decoding",
            map(vec![("use_crf", grouped(FALSE, "true", "no"))]),
        ),
    ])
}

fn data_yaml() -> Node {
    map(vec![
        ("name", leaf(&["resume_tiny", "\"resume_tiny\""], "other")),
        ("version", leaf(&["v1", "'v1'", "\"v1\""], "v2")),
        (
            "description",
            leaf(
                &[
                    ">-\n  Synthetic resume snippets (no real people) with character-span entity\n  annotations; generated by examples/gen_resume_tiny.rs.",
                    "\"Synthetic resume snippets (no real people) with character-span entity annotations; generated by examples/gen_resume_tiny.rs.\"",
                    "Synthetic resume snippets (no real people) with character-span entity annotations; generated by examples/gen_resume_tiny.rs.",
                ],
                "other",
            ),
        ),
        (
            "local_path",
            leaf(
                &[
                    "fixtures/datasets/resume_tiny",
                    "\"fixtures/datasets/resume_tiny\"",
                ],
                "nowhere",
            ),
        ),
        (
            "files",
            map(vec![
                ("train", leaf(&["train.json", "\"train.json\""], "x.json")),
                (
                    "validation",
                    leaf(&["validation.json", "'validation.json'"], "x.json"),
                ),
                ("test", leaf(&["test.json", "\"test.json\""], "x.json")),
            ]),
        ),
        (
            "schema",
            map(vec![
                ("format", leaf(&["json", "\"json\""], "csv")),
                (
                    "annotation_format",
                    leaf(&["character_spans"], "bio"),
                ),
                (
                    "entity_types",
                    Node::Seq(&[
                        "SKILL",
                        "EDUCATION",
                        "DESIGNATION",
                        "EXPERIENCE",
                        "NAME",
                        "EMAIL",
                        "PHONE",
                        "LOCATION",
                    ]),
                ),
            ]),
        ),
    ])
}

fn env_yaml(anchors: bool) -> Node {
    let threads = leaf(&["1", "1.0", "+1"], "8");
    let compute = if anchors {
        // The anchor sits on a free-form section's value and is merged into `compute`.
        map(vec![
            ("<<", Node::Raw("*compute_base")),
            ("threads", threads),
        ])
    } else {
        map(vec![
            ("device", leaf(&["cpu", "\"cpu\""], "cuda")),
            ("num_workers", leaf(&["1", "1.0"], "4")),
            ("threads", threads),
        ])
    };
    let mut entries = vec![
        ("compute", compute),
        ("storage", map(vec![])),
        (
            "logging",
            map(vec![(
                "experiment_name",
                leaf(&["resume-ner-local", "\"resume-ner-local\""], "x"),
            )]),
        ),
    ];
    if anchors {
        entries.push((
            "workspace",
            Node::Raw("&compute_base {device: cpu, num_workers: 1}"),
        ));
    }
    map(entries)
}

/// Entries that must come first whatever the order (they define anchors used later).
const PIN_FIRST: &[&str] = &["workspace"];

struct Writer<'a> {
    style: &'a Style,
    anchored: BTreeSet<&'static str>,
    out: String,
}

impl Writer<'_> {
    fn spelling(&self, path: &str, spellings: &'static [&'static str]) -> &'static str {
        if self.style.spell_seed == 0 {
            spellings[0]
        } else {
            spellings[(mix(self.style.spell_seed, path) % spellings.len() as u64) as usize]
        }
    }

    /// The text of a scalar, with an anchor on the first of its group and aliases after.
    fn scalar(&mut self, path: &str, node: &Node, in_flow: bool) -> Option<String> {
        let Node::Leaf {
            spellings, group, ..
        } = node
        else {
            unreachable!("scalar of a non-leaf")
        };
        let text = self.spelling(path, spellings);
        if text == ABSENT {
            return None;
        }
        let is_null = NULLS.contains(&text);
        let text = if in_flow && text.is_empty() {
            "null"
        } else {
            text
        };
        match group {
            Some(g) if self.style.anchors && !is_null => {
                if self.anchored.insert(g) {
                    Some(format!("&{g} {text}"))
                } else {
                    Some(format!("*{g}"))
                }
            }
            _ => Some(text.to_string()),
        }
    }

    fn ordered<'n>(
        &self,
        path: &str,
        entries: &'n [(&'static str, Node)],
    ) -> Vec<&'n (&'static str, Node)> {
        let mut out: Vec<&(&'static str, Node)> = entries.iter().collect();
        if self.style.order_seed != 0 {
            out.sort_by_key(|(k, _)| mix(self.style.order_seed, &format!("{path}.{k}")));
        }
        out.sort_by_key(|(k, _)| !PIN_FIRST.contains(k));
        out
    }

    fn flow(&mut self, path: &str, node: &Node) -> Option<String> {
        match node {
            Node::Leaf { .. } => self.scalar(path, node, true),
            Node::Raw(text) => Some(text.to_string()),
            Node::Seq(items) => Some(format!("[{}]", items.join(", "))),
            Node::Map(entries) => {
                let mut parts = Vec::new();
                for (k, child) in self.ordered(path, entries) {
                    if let Some(v) = self.flow(&format!("{path}.{k}"), child) {
                        parts.push(format!("{k}: {v}"));
                    }
                }
                Some(format!("{{{}}}", parts.join(", ")))
            }
        }
    }

    fn block(&mut self, path: &str, entries: &[(&'static str, Node)], indent: usize) {
        let pad = " ".repeat(indent);
        let mut entries = self.ordered(path, entries);
        // Merge key: the first present leaf moves into `<<: {…}`, together with a decoy for
        // the second one, which stays explicit and must win.
        if self.style.anchors && indent > 0 {
            let present: Vec<usize> = entries
                .iter()
                .enumerate()
                .filter(|(_, (k, n))| match n {
                    Node::Leaf {
                        spellings,
                        decoy: Some(_),
                        ..
                    } => !NULLS.contains(&self.spelling(&format!("{path}.{k}"), spellings)),
                    _ => false,
                })
                .map(|(i, _)| i)
                .collect();
            if present.len() >= 2 {
                let (k0, n0) = entries[present[0]];
                let (k1, n1) = entries[present[1]];
                let Node::Leaf {
                    decoy: Some(decoy), ..
                } = n1
                else {
                    unreachable!("filtered above")
                };
                let v0 = self
                    .scalar(&format!("{path}.{k0}"), n0, true)
                    .expect("present");
                self.out
                    .push_str(&format!("{pad}<<: {{{k1}: {decoy}, {k0}: {v0}}}\n"));
                entries.remove(present[0]);
            }
        }
        for (k, child) in entries {
            let child_path = format!("{path}.{k}");
            if self.style.comments {
                self.out.push_str(&format!("{pad}# about {k}\n"));
            }
            let trailing = if self.style.comments { "  # note" } else { "" };
            match child {
                Node::Leaf { .. } => {
                    let Some(v) = self.scalar(&child_path, child, false) else {
                        continue;
                    };
                    if v.contains('\n') {
                        self.out.push_str(&format!("{pad}{k}: {v}\n"));
                    } else if v.is_empty() {
                        self.out.push_str(&format!("{pad}{k}:{trailing}\n"));
                    } else {
                        self.out.push_str(&format!("{pad}{k}: {v}{trailing}\n"));
                    }
                }
                Node::Raw(text) => self.out.push_str(&format!("{pad}{k}: {text}{trailing}\n")),
                Node::Seq(items) => {
                    if self.style.flow {
                        self.out
                            .push_str(&format!("{pad}{k}: [{}]{trailing}\n", items.join(", ")));
                    } else {
                        self.out.push_str(&format!("{pad}{k}:{trailing}\n"));
                        for item in items.iter() {
                            self.out.push_str(&format!("{pad}  - {item}\n"));
                        }
                    }
                }
                Node::Map(grand) if grand.is_empty() => {
                    self.out.push_str(&format!("{pad}{k}: {{}}{trailing}\n"));
                }
                Node::Map(grand) => {
                    if self.style.flow && indent > 0 {
                        let v = self.flow(&child_path, child).expect("maps always render");
                        self.out.push_str(&format!("{pad}{k}: {v}{trailing}\n"));
                    } else {
                        self.out.push_str(&format!("{pad}{k}:{trailing}\n"));
                        self.block(&child_path, grand, indent + 2);
                    }
                }
            }
        }
    }
}

fn render(node: &Node, style: &Style) -> String {
    let Node::Map(entries) = node else {
        unreachable!("files are mappings")
    };
    let mut w = Writer {
        style,
        anchored: BTreeSet::new(),
        out: String::new(),
    };
    if style.comments {
        w.out.push_str("# a header comment\n\n");
    }
    w.block("", entries, 0);
    w.out
}

/// The five files that the spelling property rewrites, by path under config/.
const SPELLED: [&str; 5] = [
    "train.yaml",
    "final_training.yaml",
    "model/builtin.yaml",
    "data/resume_tiny.yaml",
    "env/local.yaml",
];

fn spelled_texts(styles: &[Style; 5]) -> Vec<(&'static str, String)> {
    let nodes = [
        train_yaml(),
        final_training_yaml(),
        model_yaml(),
        data_yaml(),
        env_yaml(styles[4].anchors),
    ];
    SPELLED
        .iter()
        .zip(nodes.iter().zip(styles.iter()))
        .map(|(rel, (node, style))| (*rel, render(node, style)))
        .collect()
}

fn write_spelled(project: &Project, styles: &[Style; 5]) -> Vec<(&'static str, String)> {
    let texts = spelled_texts(styles);
    for (rel, text) in &texts {
        project.write_config(rel, text);
    }
    texts
}

/// Inputs that docs/contract.md, "Identity" says neither fingerprint depends on (or that restate
/// the effective value), as `-o` arguments.
const NEUTRAL_OVERRIDES: &[&str] = &[
    "mlflow.run_name=some_custom_run",
    "mlflow.tags={a: b, team: nlp}",
    "mlflow.experiment_name=another_experiment",
    "run.mode=force_new",
    "run.mode=resume_if_incomplete",
    "run.mode=reuse_if_exists",
    "variant.number=7",
    "variant.number=1",
    "paths:base.outputs=elsewhere/outputs",
    "paths:outputs.final_training=ft_elsewhere",
    // Cadence does not change the trained model (config/mod.rs `Cadence`).
    "logging.log_interval=3",
    "logging.save_interval=7",
    "lease.timeout_s=60",
    "lease.heartbeat_s=2",
    "trainer.timeout_s=3600",
    "env:logging.experiment_name=elsewhere",
    "env:storage.bucket=b",
    "hpo:sampling.max_trials=9",
    "naming:validate.warn_length=100",
    "tags:legacy.variant=code.variant_number",
    "best_model_selection:scoring.f1_weight=0.5",
    "conversion:onnx.opset_version=17",
    "mlflow:naming.project_name=other",
    // The same effective values, spelled on the command line.
    "training.learning_rate=2e-5",
    "training.epochs=3.0",
    "train:training.max_grad_norm=1",
    "seed.random_seed=42",
    "training.early_stopping.enabled=True",
    "model:features.hash_dim=0x10000",
];

fn arb_style() -> impl Strategy<Value = Style> {
    (
        prop_oneof![Just(0u64), any::<u64>()],
        prop_oneof![Just(0u64), any::<u64>()],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(order_seed, spell_seed, comments, anchors, flow)| Style {
            order_seed,
            spell_seed,
            comments,
            anchors,
            flow,
        })
}

proptest! {
    #![proptest_config(support::seeded_config(96, module_path!(), ""))]

    /// Neither fingerprint depends on key order, comments, anchors/aliases/merge keys, flow vs
    /// block style, quoting, null spelling, number spelling (`2e-5`/`0.00002`, `1`/`1.0`,
    /// `3`/`3.0`), MLflow names and tags, run.mode, variant.number, output paths, cadence or
    /// the storage environment (whose compute sections are equal) — any combination at once.
    #[test]
    fn fingerprints_ignore_spelling_and_non_identity_inputs(
        styles in [arb_style(), arb_style(), arb_style(), arb_style(), arb_style()],
        overrides in prop::sample::subsequence(NEUTRAL_OVERRIDES, 0..=6),
        env in prop::option::of(prop::sample::select(vec!["local", "colab", "kaggle", "azureml"])),
    ) {
        let project = Project::new();
        let plain: [Style; 5] = Default::default();
        write_spelled(&project, &plain);
        let base = ids(&project, &[], None, NO_GIT)
            .map_err(|e| TestCaseError::fail(format!("plain spelling does not load: {e}")))?;
        let texts = write_spelled(&project, &styles);
        let shown: String = texts
            .iter()
            .map(|(rel, text)| format!("--- {rel}\n{text}"))
            .collect();
        let other = ids(&project, &overrides, env, NO_GIT).map_err(|e| {
            TestCaseError::fail(format!("respelled config does not load: {e}\n{shown}"))
        })?;
        prop_assert_eq!(
            (&base.spec_fp, &base.exec_fp),
            (&other.spec_fp, &other.exec_fp),
            "overrides {:?}, env {:?}\nspec inputs {} vs {}\nexec inputs {} vs {}\n{}",
            overrides, env, base.spec_inputs, other.spec_inputs, base.exec_inputs,
            other.exec_inputs, shown
        );
    }
}

#[test]
fn plain_spelling_equals_the_shipped_config() {
    // The spelling property starts from a rewrite of the shipped config with a few values
    // changed (learning rate 2e-5, 3 epochs, max_grad_norm 1, to exercise their spellings).
    // Everything else must be the
    // shipped config: restating those differences as `-o` gives the same identity.
    let project = Project::new();
    let plain: [Style; 5] = Default::default();
    write_spelled(&project, &plain);
    let ours = ids_ok(&project, &[]);
    let restated = ids_ok(
        &Project::new(),
        &[
            "train:training.learning_rate=0.00002",
            "train:training.epochs=3",
            "train:training.max_grad_norm=1",
        ],
    );
    let drift = "the plain rendering in props/identity.rs (train_yaml, final_training_yaml, \
                 model_yaml, data_yaml, env_yaml) no longer matches config/: update it";
    assert_eq!(ours.spec_inputs, restated.spec_inputs, "{drift}");
    assert_eq!(ours.exec_inputs, restated.exec_inputs, "{drift}");
    assert_eq!(
        (&ours.spec_fp, &ours.exec_fp),
        (&restated.spec_fp, &restated.exec_fp),
        "{drift}"
    );
}

#[test]
fn continue_from_previous_with_a_scratch_source_is_an_error() {
    let project = Project::new();
    let err = ids(&project, &["run.mode=continue_from_previous"], None, NO_GIT)
        .expect_err("continue_from_previous needs source.type final_training");
    assert_eq!(err.kind, trainctl::error::ErrorKind::ConfigInvalid, "{err}");
    assert_eq!(err.place.key.as_deref(), Some("source.type"), "{err}");
}

// --- What fingerprints MUST depend on --------------------------------------------------------

struct Side {
    overrides: &'static [&'static str],
    git: Git,
}

const BASE: Side = Side {
    overrides: &[],
    git: NO_GIT,
};

const fn o(overrides: &'static [&'static str]) -> Side {
    Side {
        overrides,
        git: NO_GIT,
    }
}

const fn g(overrides: &'static [&'static str], commit: Option<&'static str>, dirty: bool) -> Side {
    Side {
        overrides,
        git: (commit, dirty),
    }
}

/// (what, side a, side b, spec_fp differs, exec_fp differs)
type Row = (&'static str, Side, Side, bool, bool);

const CODE_OFF: &[&str] = &["identity.include_code_fp=false"];
const PREC_OFF: &[&str] = &["identity.include_precision_fp=false"];
const DET_ON: &[&str] = &["identity.include_determinism_fp=true"];
const BEST_A: &[&str] = &["source.type=best_selected", "checkpoint.source=ckpt_a"];

fn must_change_rows() -> Vec<Row> {
    vec![
        // Every hyperparameter (spec only).
        (
            "learning_rate",
            BASE,
            o(&["training.learning_rate=0.07"]),
            true,
            false,
        ),
        ("epochs", BASE, o(&["training.epochs=6"]), true, false),
        (
            "batch_size",
            BASE,
            o(&["training.batch_size=8"]),
            true,
            false,
        ),
        ("dropout", BASE, o(&["training.dropout=0.2"]), true, false),
        (
            "weight_decay",
            BASE,
            o(&["training.weight_decay=0.02"]),
            true,
            false,
        ),
        (
            "gradient_accumulation_steps",
            BASE,
            o(&["training.gradient_accumulation_steps=2"]),
            true,
            false,
        ),
        (
            "warmup_steps",
            BASE,
            o(&["training.warmup_steps=5"]),
            true,
            false,
        ),
        (
            "max_grad_norm",
            BASE,
            o(&["training.max_grad_norm=2.5"]),
            true,
            false,
        ),
        (
            "validation_fraction",
            BASE,
            o(&["training.validation_fraction=0.2"]),
            true,
            false,
        ),
        (
            "early_stopping.enabled",
            BASE,
            o(&["training.early_stopping.enabled=false"]),
            true,
            false,
        ),
        (
            "early_stopping.patience",
            BASE,
            o(&["training.early_stopping.patience=5"]),
            true,
            false,
        ),
        (
            "early_stopping.min_delta",
            BASE,
            o(&["training.early_stopping.min_delta=0.01"]),
            true,
            false,
        ),
        (
            "eval_interval",
            BASE,
            o(&["logging.eval_interval=25"]),
            true,
            false,
        ),
        (
            "train.yaml layer",
            BASE,
            o(&["train:training.learning_rate=0.07"]),
            true,
            false,
        ),
        // Seed, model, data (spec only).
        ("seed", BASE, o(&["seed.random_seed=7"]), true, false),
        (
            "train.yaml seed",
            BASE,
            o(&["train:training.random_seed=7"]),
            true,
            false,
        ),
        (
            "model config",
            BASE,
            o(&["model:features.hash_dim=1024"]),
            true,
            false,
        ),
        (
            "model file",
            BASE,
            o(&["experiment:model_config=model/builtin_crf.yaml"]),
            true,
            false,
        ),
        ("data config", BASE, o(&["data:description=x"]), true, false),
        (
            "data entity types",
            BASE,
            o(&["data:schema.entity_types=[SKILL, EDUCATION, DESIGNATION, EXPERIENCE, NAME, EMAIL, PHONE, LOCATION, AWARD]"]),
            true,
            false,
        ),
        // Dataset content (spec only): content-addressed, not path-addressed.
        (
            "override: byte-identical copy",
            BASE,
            o(&["dataset.local_path_override=data_same"]),
            false,
            false,
        ),
        (
            "override: copy with one byte changed",
            BASE,
            o(&["dataset.local_path_override=data_changed"]),
            true,
            false,
        ),
        (
            "override: two copies with different bytes",
            o(&["dataset.local_path_override=data_same"]),
            o(&["dataset.local_path_override=data_changed"]),
            true,
            false,
        ),
        // Source identity (spec only).
        ("scratch vs init checkpoint", BASE, o(BEST_A), true, false),
        (
            "init checkpoints with different bytes",
            o(BEST_A),
            o(&["source.type=best_selected", "checkpoint.source=ckpt_b"]),
            true,
            false,
        ),
        (
            "byte-identical init checkpoints",
            o(BEST_A),
            o(&["source.type=best_selected", "checkpoint.source=ckpt_a_copy"]),
            false,
            false,
        ),
        (
            "init checkpoint with an extra file",
            o(BEST_A),
            o(&["source.type=best_selected", "checkpoint.source=ckpt_extra"]),
            true,
            false,
        ),
        // Code identity (exec only, when include_code_fp).
        (
            "git commit",
            g(&[], Some("aaaa"), false),
            g(&[], Some("bbbb"), false),
            false,
            true,
        ),
        (
            "git dirty",
            g(&[], Some("aaaa"), false),
            g(&[], Some("aaaa"), true),
            false,
            true,
        ),
        (
            "git vs no git",
            BASE,
            g(&[], Some("aaaa"), false),
            false,
            true,
        ),
        (
            "trainer command",
            BASE,
            o(&["trainer.command=[python, train.py]"]),
            false,
            true,
        ),
        (
            "trainer argv",
            o(&["trainer.command=[python, train.py]"]),
            o(&["trainer.command=[python, train2.py]"]),
            false,
            true,
        ),
        (
            "git commit, code fp off",
            g(CODE_OFF, Some("aaaa"), false),
            g(CODE_OFF, Some("bbbb"), false),
            false,
            false,
        ),
        (
            "git dirty, code fp off",
            g(CODE_OFF, Some("aaaa"), false),
            g(CODE_OFF, Some("aaaa"), true),
            false,
            false,
        ),
        (
            "trainer command, code fp off",
            o(CODE_OFF),
            o(&[
                "identity.include_code_fp=false",
                "trainer.command=[python, train.py]",
            ]),
            false,
            false,
        ),
        ("include_code_fp flag", BASE, o(CODE_OFF), false, true),
        // Precision (exec only, when include_precision_fp).
        (
            "precision fp16",
            BASE,
            o(&["trainer.precision=fp16"]),
            false,
            true,
        ),
        (
            // bf16 needs an external trainer: the built-in one refuses it before anything is
            // written (issue 16).
            "precision bf16",
            o(&[
                "trainer.command=[python3, fixtures/trainer/fake_trainer.py]",
                "trainer.precision=fp16",
            ]),
            o(&[
                "trainer.command=[python3, fixtures/trainer/fake_trainer.py]",
                "trainer.precision=bf16",
            ]),
            false,
            true,
        ),
        (
            "precision, precision fp off",
            o(PREC_OFF),
            o(&[
                "identity.include_precision_fp=false",
                "trainer.precision=fp16",
            ]),
            false,
            false,
        ),
        ("include_precision_fp flag", BASE, o(PREC_OFF), false, true),
        // Determinism (exec only, when include_determinism_fp; off by default).
        (
            "deterministic, determinism fp off",
            BASE,
            o(&["trainer.deterministic=false"]),
            false,
            false,
        ),
        (
            "deterministic, determinism fp on",
            o(DET_ON),
            o(&[
                "identity.include_determinism_fp=true",
                "trainer.deterministic=false",
            ]),
            false,
            true,
        ),
        ("include_determinism_fp flag", BASE, o(DET_ON), false, true),
        // The running environment's compute section (exec only).
        (
            "env compute.threads",
            BASE,
            o(&["env:compute.threads=4"]),
            false,
            true,
        ),
        (
            "env compute.num_workers",
            BASE,
            o(&["env:compute.num_workers=2"]),
            false,
            true,
        ),
        (
            "env compute.device",
            BASE,
            o(&["env:compute.device=cuda"]),
            false,
            true,
        ),
    ]
}

/// A project with the extra directories the table refers to: dataset copies and minimal
/// valid init checkpoints.
fn table_project() -> Project {
    let project = Project::new();
    let root = project.root();
    let dataset = root.join("fixtures/datasets/resume_tiny");
    for (name, change) in [("data_same", false), ("data_changed", true)] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for file in ["train.json", "validation.json", "test.json"] {
            let mut bytes = std::fs::read(dataset.join(file)).expect("read dataset");
            if change && file == "train.json" {
                flip_a_letter(&mut bytes);
            }
            std::fs::write(dir.join(file), bytes).expect("write dataset copy");
        }
    }
    // The label map of the shipped data config (init checkpoints must match it, docs/contract.md,
    // "Source, checkpoint and conversion").
    let labels = [
        "O",
        "DESIGNATION",
        "EDUCATION",
        "EMAIL",
        "EXPERIENCE",
        "LOCATION",
        "NAME",
        "PHONE",
        "SKILL",
    ];
    let config = serde_json::to_vec(&serde_json::json!({
        "id2label": labels.iter().enumerate().map(|(i, l)| (i.to_string(), serde_json::Value::from(*l))).collect::<serde_json::Map<String, serde_json::Value>>(),
        "label2id": labels.iter().enumerate().map(|(i, l)| (l.to_string(), serde_json::json!(i))).collect::<serde_json::Map<String, serde_json::Value>>(),
    }))
    .expect("label map");
    let config = config.as_slice();
    for (name, weights, extra) in [
        ("ckpt_a", &b"weights-A"[..], false),
        ("ckpt_a_copy", &b"weights-A"[..], false),
        ("ckpt_b", &b"weights-B"[..], false),
        ("ckpt_extra", &b"weights-A"[..], true),
    ] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("config.json"), config).expect("write");
        std::fs::write(dir.join("model.safetensors"), weights).expect("write");
        if extra {
            std::fs::write(dir.join("optimizer.safetensors"), b"moments").expect("write");
        }
    }
    project
}

/// Changes one byte of a dataset file without breaking it: the first lowercase ASCII letter
/// of the first `"text"` value becomes another letter (same length, spans stay valid).
fn flip_a_letter(bytes: &mut [u8]) {
    let marker = b"\"text\":\"";
    let start = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("a text field")
        + marker.len();
    let at = (start..bytes.len())
        .find(|&i| bytes[i].is_ascii_lowercase())
        .expect("a lowercase letter");
    bytes[at] = if bytes[at] == b'z' {
        b'y'
    } else {
        bytes[at] + 1
    };
}

#[test]
fn fingerprints_change_with_every_identity_input() {
    let project = table_project();
    let mut failures = Vec::new();
    for (what, a, b, spec_differs, exec_differs) in must_change_rows() {
        let side = |s: &Side| {
            ids(&project, s.overrides, None, s.git)
                .unwrap_or_else(|e| panic!("{what}: {:?} does not load: {e}", s.overrides))
        };
        let (ia, ib) = (side(&a), side(&b));
        let got = (ia.spec_fp != ib.spec_fp, ia.exec_fp != ib.exec_fp);
        if got != (spec_differs, exec_differs) {
            failures.push(format!(
                "{what}: {:?}/{:?} vs {:?}/{:?}\n  want (spec differs, exec differs) = {:?}, got {:?}\n  spec inputs {}\n           vs {}\n  exec inputs {}\n           vs {}",
                a.overrides, a.git, b.overrides, b.git, (spec_differs, exec_differs), got,
                ia.spec_inputs, ib.spec_inputs, ia.exec_inputs, ib.exec_inputs
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn spec_fp_addresses_the_dataset_files_actually_used() {
    let project = Project::new();
    let dataset = project.root().join("fixtures/datasets/resume_tiny");
    let base = ids_ok(&project, &[]);
    // A file the data config does not list is not part of the dataset.
    std::fs::write(dataset.join("NOTES.txt"), b"unrelated").expect("write");
    let with_extra = ids_ok(&project, &[]);
    assert_eq!(
        base.spec_fp, with_extra.spec_fp,
        "an unlisted file changed spec_fp"
    );
    let mut previous = with_extra;
    for file in ["train.json", "validation.json", "test.json"] {
        let path = dataset.join(file);
        let mut bytes = std::fs::read(&path).expect("read");
        flip_a_letter(&mut bytes);
        std::fs::write(&path, bytes).expect("write");
        let now = ids_ok(&project, &[]);
        assert_ne!(
            previous.spec_fp, now.spec_fp,
            "one byte of {file} did not change spec_fp"
        );
        assert_eq!(
            previous.exec_fp, now.exec_fp,
            "dataset bytes changed exec_fp"
        );
        previous = now;
    }
}

/// Small domains per hyperparameter so that random assignments sometimes coincide.
const HYPER_DOMAINS: &[(&str, &[&str])] = &[
    ("training.learning_rate", &["0.05", "0.01", "2e-5"]),
    ("training.epochs", &["1", "2", "4"]),
    ("training.batch_size", &["8", "16"]),
    ("training.dropout", &["0.0", "0.1", "0.25"]),
    ("training.weight_decay", &["0.0", "0.0001"]),
    ("training.gradient_accumulation_steps", &["1", "2"]),
    ("training.warmup_steps", &["0", "20"]),
    ("training.max_grad_norm", &["1.0", "5.0"]),
    ("training.validation_fraction", &["0.1", "0.2"]),
    ("training.early_stopping.enabled", &["true", "false"]),
    ("training.early_stopping.patience", &["1", "3"]),
    ("training.early_stopping.min_delta", &["0.001", "0.0"]),
    ("logging.eval_interval", &["10", "50"]),
    ("seed.random_seed", &["1", "42"]),
];

fn arb_assignment() -> impl Strategy<Value = Vec<usize>> {
    HYPER_DOMAINS
        .iter()
        .map(|(_, domain)| 0..domain.len())
        .collect::<Vec<_>>()
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn assignment_args(assignment: &[usize]) -> Vec<String> {
    HYPER_DOMAINS
        .iter()
        .zip(assignment)
        .map(|((key, domain), &i)| format!("{key}={}", domain[i]))
        .collect()
}

proptest! {
    #![proptest_config(support::seeded_config(128, module_path!(), ""))]

    /// spec_fp separates effective hyperparameters and the seed exactly: an assignment and a
    /// copy with 0–2 keys moved to another value of their domain (values spelled as
    /// different `-o` texts of equal value would be a spelling test, see above) have equal
    /// spec_fp iff no key moved; exec_fp never moves.
    #[test]
    fn spec_fp_is_equal_iff_hyperparameters_are_equal(
        a in arb_assignment(),
        moved in prop::sample::subsequence((0..HYPER_DOMAINS.len()).collect::<Vec<_>>(), 0..=2),
        steps in prop::collection::vec(1usize..3, 2),
    ) {
        let mut b = a.clone();
        for (key, step) in moved.iter().zip(&steps) {
            let len = HYPER_DOMAINS[*key].1.len();
            // A step of 1..len never lands on the same value.
            b[*key] = (b[*key] + 1 + (step - 1) % (len - 1)) % len;
        }
        prop_assert_eq!(moved.is_empty(), a == b);
        let project = Project::new();
        let (args_a, args_b) = (assignment_args(&a), assignment_args(&b));
        let ia = ids_ok(&project, &refs(&args_a));
        let ib = ids_ok(&project, &refs(&args_b));
        prop_assert_eq!(a == b, ia.spec_fp == ib.spec_fp, "{:?} vs {:?}", args_a, args_b);
        prop_assert_eq!(&ia.exec_fp, &ib.exec_fp);
    }
}

// ------------------------------------------------------------------------------------------
// Added for the mutation gate (issue 8): conv_fp and the names of modes and sources
// ------------------------------------------------------------------------------------------

/// conv_fp (docs/contract.md, "Source, checkpoint and conversion") names one conversion of one
/// parent: equal inputs give the same fingerprint, and changing the parent's spec, exec, variant or
/// the conversion config gives another one.
#[test]
fn conv_fp_changes_with_each_of_its_inputs_and_only_with_them() {
    use trainctl::identity::conv_fp;
    let conversion = serde_json::json!({"format": "onnx", "opset": 17, "quantize": false});
    let base = conv_fp("aaaa", "bbbb", 1, &conversion);
    assert_eq!(base.len(), 16, "{base}");
    assert!(base.chars().all(|c| c.is_ascii_hexdigit()), "{base}");
    assert_eq!(base, conv_fp("aaaa", "bbbb", 1, &conversion.clone()));
    let reordered = serde_json::json!({"quantize": false, "opset": 17, "format": "onnx"});
    assert_eq!(
        base,
        conv_fp("aaaa", "bbbb", 1, &reordered),
        "key order is not identity"
    );
    let others = [
        conv_fp("aaab", "bbbb", 1, &conversion),
        conv_fp("aaaa", "bbbc", 1, &conversion),
        conv_fp("aaaa", "bbbb", 2, &conversion),
        conv_fp(
            "aaaa",
            "bbbb",
            1,
            &serde_json::json!({"format": "onnx", "opset": 18, "quantize": false}),
        ),
    ];
    for (i, other) in others.iter().enumerate() {
        assert_ne!(&base, other, "input {i} changed but conv_fp did not");
    }
}

/// The names modes and sources print (messages, metadata, tags, `plan --json`) are the names
/// the config accepts, and `RunMode::parse` reads exactly those back.
#[test]
fn mode_and_source_names_are_the_config_spellings() {
    use trainctl::config::schema::{RunMode, SourceType};
    for mode in RunMode::ALL {
        let spelled = serde_json::to_value(mode).expect("json");
        assert_eq!(spelled, mode.as_str(), "{mode:?}");
        assert_eq!(RunMode::parse(mode.as_str()), Some(mode));
    }
    assert_eq!(RunMode::parse("resume"), None);
    assert_eq!(RunMode::parse(""), None);
    for source in [
        SourceType::Scratch,
        SourceType::BestSelected,
        SourceType::FinalTraining,
    ] {
        let spelled = serde_json::to_value(source).expect("json");
        assert_eq!(spelled, source.as_str(), "{source:?}");
    }
    // The scheduler's name in trainer_state.json (`scheduler.kind`) is a file format: pinned.
    use trainctl::config::schema::LrScheduler;
    assert_eq!(LrScheduler::Linear.as_str(), "linear_warmup_linear_decay");
    assert_eq!(LrScheduler::Constant.as_str(), "linear_warmup_constant");
}
