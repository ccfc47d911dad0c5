//! Properties of run names, parent training ids and the tag registry (`src/naming.rs`,
//! docs/contract.md, "Tracking of final training"): names built from valid parts parse back into
//! them, every invalid name is rejected naming the rule it breaks, parent ids round-trip and
//! malformed ones do not parse, and `tags.yaml` typos are located errors with a suggestion. Pure
//! string work.
use crate::support;

use proptest::prelude::*;
use std::sync::LazyLock;
use trainctl::config::schema::{NamingFile, StorageEnv};
use trainctl::config::Doc;
use trainctl::error::ErrorKind;
use trainctl::naming::{
    build_parent_training_id, parse_parent_training_id, RunNameParts, RunNamePolicy, TagRegistry,
    DEFAULT_FINAL_TRAINING_PATTERN, DEFAULT_TAGS,
};

fn shipped_text(name: &str) -> String {
    let path = support::repo_root().join("config").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The shipped `config/naming.yaml`, parsed once.
static NAMING: LazyLock<NamingFile> = LazyLock::new(|| {
    Doc::parse(&shipped_text("naming.yaml"), "naming.yaml")
        .and_then(|doc| doc.typed::<NamingFile>())
        .unwrap_or_else(|e| panic!("shipped naming.yaml does not load: {e}"))
});

fn policy(conversion: bool) -> RunNamePolicy {
    RunNamePolicy::from_naming(&NAMING, conversion)
        .unwrap_or_else(|e| panic!("shipped naming.yaml policy (conversion={conversion}): {e}"))
}

/// The model as the shipped `normalize.model` rule writes it into a name (read from the
/// file, in file order, so this follows the config rather than restating it).
fn normalised_model(model: &str) -> String {
    let rule = &NAMING.normalize.model;
    let mut s = model.to_string();
    for (from, to) in &rule.replace {
        let to = to.as_str().expect("shipped replacements are strings");
        if !from.is_empty() {
            s = s.replace(from.as_str(), to);
        }
    }
    if rule.lowercase.unwrap_or(false) {
        s = s.to_lowercase();
    }
    s
}

// ---------------------------------------------------------------------------------------
// Strategies

fn env_name() -> impl Strategy<Value = String> {
    prop::sample::select(StorageEnv::ALL.to_vec()).prop_map(|e| e.as_str().to_string())
}

fn hex(len: impl Into<prop::collection::SizeRange>) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(b"0123456789abcdef".to_vec()), len)
        .prop_map(|bytes| String::from_utf8(bytes).expect("ascii"))
}

/// `[a-z0-9_]{1,40}`-like models, sometimes holding pieces of the pattern itself so that
/// the parser has to backtrack (the literal `_final_training_spec-`, hash- and variant-like
/// pieces). At most 80 chars so that every built name fits `max_length`.
fn model() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z0-9_]{1,10}",
        1 => prop::sample::select(vec![
            "_final_training_spec-",
            "_conversion_spec-",
            "_exec-",
            "_conv-",
            "_v1",
            "_v",
            "_2",
            "local_",
            "_final_training_spec-0123abcd_exec-0123abcd_v7",
            "_conversion_spec-0123abcd_exec-0123abcd_v7_conv-0123abcd_3",
        ])
        .prop_map(String::from),
    ];
    prop_oneof![
        "[a-z0-9_]{1,40}",
        prop::collection::vec(piece, 1..5).prop_map(|v| v.concat().chars().take(80).collect()),
    ]
}

fn parts(conversion: bool) -> impl Strategy<Value = RunNameParts> {
    (
        env_name(),
        model(),
        hex(8..=16),
        hex(8..=16),
        1..=u64::from(u32::MAX),
        hex(8),
        prop::option::of(2u64..1000),
    )
        .prop_map(
            move |(env, model, spec_hash, exec_hash, variant, conv, version)| RunNameParts {
                env,
                model,
                spec_hash,
                exec_hash,
                variant,
                conv_hash: conversion.then_some(conv),
                version,
            },
        )
}

/// What parsing a built name must give back: hashes as their 8-char forms, the model as the
/// policy normalised it.
fn expected_back(parts: &RunNameParts, normalise: bool) -> RunNameParts {
    RunNameParts {
        model: if normalise {
            normalised_model(&parts.model)
        } else {
            parts.model.clone()
        },
        spec_hash: parts.spec_hash[..8].to_string(),
        exec_hash: parts.exec_hash[..8].to_string(),
        ..parts.clone()
    }
}

/// Characters of names that break no rule (some non-ASCII, counted as one char each).
const ALLOWED: &str = "[a-zA-Z0-9_. éü🚀-]";

/// Name lengths 1–400, a third of them on the edges of the shipped limits (`warn_length`
/// and `max_length`, ±1), where off-by-one mistakes live.
fn name_length() -> impl Strategy<Value = usize> {
    let warn = NAMING.validate.warn_length.expect("shipped warn_length") as usize;
    let max = NAMING.validate.max_length.expect("shipped max_length") as usize;
    prop_oneof![
        2 => 1usize..=400,
        1 => prop::sample::select(vec![warn - 1, warn, warn + 1, max - 1, max, max + 1]),
    ]
}

/// A name: allowed chars with 0–2 forbidden chars inserted.
fn candidate_name() -> impl Strategy<Value = String> {
    let forbidden = prop::sample::select(NAMING.validate.forbidden_chars.clone());
    (
        name_length().prop_flat_map(|n| prop::collection::vec(ALLOWED, n)),
        prop::collection::vec((any::<prop::sample::Index>(), forbidden), 0..=2),
    )
        .prop_map(|(chars, inserts)| {
            let mut chars = chars;
            for (at, c) in inserts {
                let i = at.index(chars.len() + 1);
                chars.insert(i, c);
            }
            chars.concat()
        })
}

proptest! {
    // Default case count; failures are reported with their shrunk input rather than saved
    // to a regressions file next to the sources.
    #![proptest_config(support::seeded_config(256, module_path!(), ""))]

    /// N1 (docs/contract.md, "Tracking of final training"): final-training names built from valid
    /// parts parse back into them, with the shipped policy and with the bare default pattern (no
    /// normalisation, so the model keeps `-` and pattern look-alikes intact).
    #[test]
    fn final_training_names_round_trip(parts in parts(false), shipped in any::<bool>()) {
        let policy = if shipped {
            policy(false)
        } else {
            RunNamePolicy::new(DEFAULT_FINAL_TRAINING_PATTERN).expect("default pattern")
        };
        let (name, _warnings) = policy
            .build(&parts)
            .map_err(|v| TestCaseError::fail(format!("build({parts:?}) failed: {v:?}")))?;
        prop_assert_eq!(policy.parse(&name), Some(expected_back(&parts, shipped)), "name {:?}", name);
    }

    /// N1b: the same for conversion names (with their conv_hash).
    #[test]
    fn conversion_names_round_trip(parts in parts(true)) {
        let policy = policy(true);
        let (name, _warnings) = policy
            .build(&parts)
            .map_err(|v| TestCaseError::fail(format!("build({parts:?}) failed: {v:?}")))?;
        prop_assert_eq!(policy.parse(&name), Some(expected_back(&parts, true)), "name {:?}", name);
    }

    /// N1c: a final-training name never parses as a conversion name and vice versa.
    #[test]
    fn process_types_do_not_parse_as_each_other(parts in parts(true)) {
        let (conversion, _) = policy(true).build(&parts).expect("conversion name builds");
        let final_parts = RunNameParts { conv_hash: None, ..parts };
        let (final_name, _) = policy(false).build(&final_parts).expect("final name builds");
        prop_assert_eq!(policy(false).parse(&conversion), None, "{:?}", conversion);
        prop_assert_eq!(policy(true).parse(&final_name), None, "{:?}", final_name);
    }

    /// N2 (docs/contract.md, "Tracking of final training"): every name is judged by the rules: over
    /// `max_length` is rule `max_length`, a forbidden char is rule `forbidden_chars` (either when
    /// both), anything else is accepted, with a warning exactly when over `warn_length`.
    #[test]
    fn validation_names_the_broken_rule(name in candidate_name()) {
        let policy = policy(false);
        let len = name.chars().count();
        let too_long = len > policy.max_length;
        let forbidden = policy.forbidden_chars.iter().any(|c| !c.is_empty() && name.contains(c.as_str()));
        match policy.validate(&name) {
            Ok(warnings) => {
                prop_assert!(!too_long && !forbidden, "{} chars, forbidden={}, accepted: {:?}", len, forbidden, name);
                prop_assert_eq!(warnings.len(), usize::from(len > policy.warn_length), "{} chars: {:?}", len, warnings);
            }
            Err(v) => {
                let allowed: &[&str] = match (too_long, forbidden) {
                    (true, true) => &["max_length", "forbidden_chars"],
                    (true, false) => &["max_length"],
                    (false, true) => &["forbidden_chars"],
                    (false, false) => &[],
                };
                prop_assert!(allowed.contains(&v.rule), "{} chars, forbidden={}: rejected as {:?}", len, forbidden, v);
            }
        }
    }

    /// N2b: a model holding a forbidden char that the model rule does not replace makes
    /// `build` fail with `forbidden_chars`; one the rule replaces builds.
    #[test]
    fn forbidden_chars_in_a_model_fail_the_build(
        parts in parts(false),
        c in prop::sample::select(NAMING.validate.forbidden_chars.clone()),
        at in any::<prop::sample::Index>(),
    ) {
        let policy = policy(false);
        let mut chars: Vec<String> = parts.model.chars().map(String::from).collect();
        chars.insert(at.index(chars.len() + 1), c.clone());
        let parts = RunNameParts { model: chars.concat(), ..parts };
        let built = policy.build(&parts);
        if normalised_model(&parts.model).contains(c.as_str()) {
            let v = built.expect_err("a forbidden char survived into an accepted name");
            prop_assert_eq!(v.rule, "forbidden_chars", "{:?}", v);
        } else {
            prop_assert!(built.is_ok(), "model {:?}: {:?}", parts.model, built);
        }
    }

    /// N2c: names built from long models: over `max_length` fail with `max_length`, between
    /// `warn_length` and `max_length` build with one warning, shorter ones with none; an
    /// accepted name is the whole pattern, never shortened.
    #[test]
    fn long_names_warn_then_fail(
        env in env_name(),
        pool in "[a-z0-9_]{400}",
        target in name_length(),
        spec in hex(8),
        exec in hex(8),
        variant in 1..=u64::from(u32::MAX),
        version in prop::option::of(2u64..1000),
    ) {
        let policy = policy(false);
        let suffix = version.map(|v| format!("_{v}")).unwrap_or_default();
        let name_with = |model: &str| {
            format!("{env}_{model}_final_training_spec-{spec}_exec-{exec}_v{variant}{suffix}")
        };
        // The model that makes the name `target` chars long (at least one char).
        let fixed = name_with("").chars().count();
        let model = pool[..target.saturating_sub(fixed).max(1)].to_string();
        let expected = name_with(&model);
        let parts = RunNameParts {
            env: env.clone(), model, spec_hash: spec.clone(), exec_hash: exec.clone(), variant,
            conv_hash: None, version,
        };
        let len = expected.chars().count();
        match policy.build(&parts) {
            Err(v) => {
                prop_assert!(len > policy.max_length, "{} chars rejected: {:?}", len, v);
                prop_assert_eq!(v.rule, "max_length");
            }
            Ok((name, warnings)) => {
                prop_assert!(len <= policy.max_length, "{} chars accepted", len);
                prop_assert_eq!(&name, &expected);
                prop_assert_eq!(warnings.len(), usize::from(len > policy.warn_length), "{} chars: {:?}", len, warnings);
            }
        }
    }

    /// N3: parent training ids round-trip (hashes as their 8-char forms).
    #[test]
    fn parent_training_ids_round_trip(spec in hex(16), exec in hex(16), variant in 1u64..) {
        let id = build_parent_training_id(&spec, &exec, variant);
        prop_assert_eq!(
            parse_parent_training_id(&id),
            Some((spec[..8].to_string(), exec[..8].to_string(), variant)),
            "id {:?}", id
        );
    }

    /// N3b: malformed parent training ids do not parse.
    #[test]
    fn malformed_parent_training_ids_do_not_parse(
        spec in hex(8),
        exec in hex(8),
        variant in 1u64..,
        which in 0..12u8,
        at in any::<prop::sample::Index>(),
        upper in prop::sample::select(vec!['A', 'B', 'C', 'D', 'E', 'F']),
    ) {
        let i = at.index(8);
        let mut upper_spec: Vec<char> = spec.chars().collect();
        upper_spec[i] = upper;
        let upper_spec: String = upper_spec.into_iter().collect();
        let id = match which {
            0 => format!("spec-{upper_spec}_exec-{exec}/v{variant}"),
            1 => format!("spec-{exec}_exec-{upper_spec}/v{variant}"),
            2 => format!("spec-{}_exec-{exec}/v{variant}", &spec[..7]),
            3 => format!("spec-{spec}_exec-{}/v{variant}", &exec[..7]),
            4 => format!("spec-{spec}0_exec-{exec}/v{variant}"),
            5 => format!("spec-{spec}_exec-{exec}/v0"),
            6 => format!("spec-{spec}_exec-{exec}/v0{variant}"),
            7 => format!("spec-{spec}_exec-{exec}{variant}"),
            8 => format!("spec-{spec}_exec-{exec}_v{variant}"),
            9 => format!("spec-{spec}_exec-{exec}/v{variant}/x"),
            10 => format!("spec-{spec}_exec-{exec}/v{variant} "),
            _ => format!(" spec-{spec}_exec-{exec}/v{variant}"),
        };
        prop_assert_eq!(parse_parent_training_id(&id), None, "id {:?}", id);
    }

    /// N4 (docs/contract.md, "Configuration"): a one-edit typo of a section or key in the shipped
    /// `tags.yaml` is a config error located at the typo's line, with a "did you mean".
    #[test]
    fn tags_yaml_typos_are_located_with_a_suggestion(
        line_at in any::<prop::sample::Index>(),
        edit in 0..4u8,
        at in any::<prop::sample::Index>(),
        letter in prop::sample::select(b"abcdefghijklmnopqrstuvwxyz_".to_vec()),
    ) {
        let text = shipped_text("tags.yaml");
        let lines: Vec<&str> = text.lines().collect();
        // Lines holding a section or key (not the comment, not schema_version).
        let candidates: Vec<usize> = (0..lines.len())
            .filter(|&i| {
                let l = lines[i].trim_start();
                !l.starts_with('#') && l.contains(':') && !l.starts_with("schema_version")
            })
            .collect();
        let n = candidates[line_at.index(candidates.len())];
        let line = lines[n];
        let indent = line.len() - line.trim_start().len();
        let (name, rest) = line[indent..].split_once(':').expect("a key line");
        let mut chars: Vec<u8> = name.bytes().collect();
        let i = at.index(chars.len());
        match edit {
            0 => { chars.remove(i); }
            1 => { chars.insert(i, letter); }
            2 => chars[i] = letter,
            _ => {
                let j = if i + 1 < chars.len() { i + 1 } else { i.saturating_sub(1) };
                chars.swap(i, j);
            }
        }
        let typo = String::from_utf8(chars).expect("ascii");
        // The section a key line belongs to (None: the line is a section).
        let section = if indent == 0 {
            None
        } else {
            lines[..n]
                .iter()
                .rev()
                .find(|l| !l.starts_with([' ', '#']))
                .and_then(|l| l.split_once(':'))
                .map(|(s, _)| s.to_string())
        };
        // A typo that lands on another real name is not a typo.
        let known = DEFAULT_TAGS.iter().any(|(s, k, _)| match &section {
            None => *s == typo,
            Some(sec) => s == sec && *k == typo,
        });
        prop_assume!(!known && !typo.is_empty() && typo != "schema_version");
        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        edited[n] = format!("{}{typo}:{rest}", &line[..indent]);
        let doc = Doc::parse(&edited.join("\n"), "tags.yaml").expect("still valid YAML");
        let e = TagRegistry::from_doc(&doc).expect_err("a typo was accepted");
        prop_assert_eq!(e.kind, ErrorKind::ConfigInvalid, "{}", e);
        prop_assert_eq!(e.place.line, Some(n as u64 + 1), "{}", e);
        prop_assert!(e.message.contains("did you mean"), "typo {:?} on line {}: {}", typo, n + 1, e);
    }
}

/// The shipped `tags.yaml` loads, and every name it sets is the registry's name.
#[test]
fn shipped_tags_yaml_loads() {
    let doc =
        Doc::parse(&shipped_text("tags.yaml"), "tags.yaml").expect("shipped tags.yaml parses");
    let registry = TagRegistry::from_doc(&doc).expect("shipped tags.yaml is a valid registry");
    let serde_json::Value::Object(top) = &doc.tree else {
        panic!("tags.yaml is a mapping");
    };
    for (section, body) in top {
        let serde_json::Value::Object(keys) = body else {
            continue;
        };
        for (key, name) in keys {
            assert_eq!(
                Some(registry.name(section, key).as_str()),
                name.as_str(),
                "{section}.{key}"
            );
        }
    }
}

/// The two examples from the brief, in block and flow style.
#[test]
fn tags_yaml_near_misses_are_located() {
    for (text, line) in [
        ("schema_version: 1\nproces:\n  stage: code.stage\n", 2),
        ("schema_version: 1\nprocess: {stag: x}\n", 2),
        ("schema_version: 1\nprocess:\n  stage: a\n  stag: x\n", 4),
    ] {
        let doc = Doc::parse(text, "tags.yaml").expect("valid YAML");
        let e = TagRegistry::from_doc(&doc).expect_err("typo accepted");
        assert_eq!(e.kind, ErrorKind::ConfigInvalid, "{text:?}: {e}");
        assert_eq!(e.place.line, Some(line), "{text:?}: {e}");
        assert!(e.message.contains("did you mean"), "{text:?}: {e}");
    }
}
