//! Properties of the one path builder (`src/paths.rs`, docs/contract.md, "Vocabulary",
//! "Environments and storage"): every generated path is under OUT or an `invalid_path` error,
//! tokens normalise idempotently and are never truncated, OUT follows the storage env, variant
//! names round-trip, and dataset path forms resolve or are `unsupported_path`. Pure: nothing here
//! touches the disk.
use crate::support;

use proptest::prelude::*;
use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;
use trainctl::config::schema::{PathsFile, StorageEnv};
use trainctl::config::Doc;
use trainctl::error::{ErrorKind, Result};
use trainctl::paths::{resolve_out, DatasetPath, Identity, Layout, NormalizeRules};

/// The shipped `config/paths.yaml`, parsed once.
static SHIPPED: LazyLock<PathsFile> = LazyLock::new(|| {
    let path = support::repo_root().join("config/paths.yaml");
    let text = std::fs::read_to_string(&path).expect("read shipped config/paths.yaml");
    Doc::parse(&text, "paths.yaml")
        .and_then(|doc| doc.typed::<PathsFile>())
        .unwrap_or_else(|e| panic!("shipped paths.yaml does not load: {e}"))
});

const ROOT: &str = "/srv/project";

/// The shipped paths.yaml or an empty one (no replacements: only the hard safety layer).
fn paths_file(shipped: bool) -> PathsFile {
    if shipped {
        SHIPPED.clone()
    } else {
        PathsFile::default()
    }
}

/// The shipped paths.yaml with other limits.
fn with_limits(component_max: Option<u64>, path_max: Option<u64>) -> PathsFile {
    let mut paths = SHIPPED.clone();
    if component_max.is_some() {
        paths.normalize_paths.max_component_length = component_max;
    }
    if path_max.is_some() {
        paths.normalize_paths.max_path_length = path_max;
    }
    paths
}

fn layout(paths: &PathsFile, env: StorageEnv) -> Layout {
    Layout::new(Path::new(ROOT), paths, env)
        .unwrap_or_else(|e| panic!("Layout::new({ROOT}, {env:?}) failed: {e}"))
}

/// Segments of the conversion pattern (what `conversion_dir_for` renders below
/// `OUT/conversion`).
fn conversion_depth(paths: &PathsFile) -> usize {
    let default = "{storage_env}/{model}/spec-{spec8}_exec-{exec8}/v{variant}/conv-{conv8}";
    let text = paths.patterns.conversion_v2.as_deref().unwrap_or(default);
    text.split('/').filter(|s| !s.is_empty()).count()
}

// ---------------------------------------------------------------------------------------
// Strategies

fn env() -> impl Strategy<Value = StorageEnv> {
    prop::sample::select(StorageEnv::ALL.to_vec())
}

fn fp16() -> impl Strategy<Value = String> {
    "[0-9a-f]{16}"
}

/// Pieces a hostile model name is made of: traversal, separators, drive and UNC prefixes,
/// control chars, unicode (combining marks, emoji, bidi), pattern placeholders, plain text.
fn hostile_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "..",
            ".",
            "/",
            "\\",
            "C:",
            "C:\\x",
            "c:/x",
            "\\\\server\\share",
            "//server/share",
            "\0",
            "\u{1}",
            "\u{7f}",
            "\n",
            "\r\t",
            "\u{85}",
            "e\u{301}",
            "\u{301}",
            "👩\u{200d}👩\u{200d}👧",
            "🚀",
            "\u{202e}",
            "\u{feff}",
            "İ",
            "Σ",
            "ß",
            "\u{212a}",
            " ",
            "*?\"<>|",
            "~",
            "$HOME",
            "{variant}",
            "{spec8}",
            "{model}",
            "{",
            "}",
            "_",
            "-",
        ])
        .prop_map(String::from),
        "[a-z0-9_.-]{1,8}",
        any::<char>().prop_map(String::from),
        "\\PC{1,4}",
    ]
}

/// Arbitrary model tokens: hostile concatenations, any string, and long strings (≤ 1000).
fn hostile_token() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => prop::collection::vec(hostile_piece(), 0..8).prop_map(|v| v.concat()),
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => (hostile_piece(), 1usize..=1000)
            .prop_map(|(p, n)| p.repeat(n).chars().take(1000).collect::<String>()),
        1 => "[A-Za-z0-9_]{200,1000}",
        1 => "\\PC{100,1000}",
    ]
}

/// Model names every layout must accept: short, plain, not `.`/`..`.
fn plain_model() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}"
}

fn identity(model: impl Strategy<Value = String>) -> impl Strategy<Value = Identity> {
    (env(), model, fp16(), fp16()).prop_map(|(storage_env, model, spec_fp, exec_fp)| Identity {
        storage_env,
        model,
        spec_fp,
        exec_fp,
    })
}

// ---------------------------------------------------------------------------------------
// Checks

/// A built path is `invalid_path`, or lies under OUT with exactly `depth` plain components
/// below OUT, none holding a separator.
fn check_contained(
    layout: &Layout,
    what: &str,
    built: &Result<PathBuf>,
    depth: usize,
) -> std::result::Result<(), TestCaseError> {
    let path = match built {
        Err(e) => {
            prop_assert_eq!(
                e.kind,
                ErrorKind::InvalidPath,
                "{}: unexpected error kind: {}",
                what,
                e
            );
            return Ok(());
        }
        Ok(path) => path,
    };
    prop_assert!(
        path.starts_with(&layout.out),
        "{what}: {path:?} is not under OUT {:?}",
        layout.out
    );
    let below = path.strip_prefix(&layout.out).expect("starts_with checked");
    let mut count = 0;
    for component in below.components() {
        count += 1;
        let Component::Normal(name) = component else {
            return Err(TestCaseError::fail(format!(
                "{what}: {path:?} has non-plain component {component:?} below OUT"
            )));
        };
        let name = name.to_string_lossy();
        prop_assert!(
            !name.contains(['/', '\\']),
            "{what}: component {name:?} holds a separator"
        );
    }
    // A `.` or empty component would vanish from `components()`, so count them.
    prop_assert_eq!(
        count,
        depth,
        "{}: {:?} has the wrong number of components below OUT",
        what,
        path
    );
    Ok(())
}

/// The variant dir the shipped pattern describes, built by hand.
fn expected_variant_dir(layout: &Layout, id: &Identity, token: &str, variant: u64) -> PathBuf {
    layout
        .final_training_dir
        .join(id.storage_env.as_str())
        .join(token)
        .join(format!(
            "spec-{}_exec-{}",
            &id.spec_fp[..8],
            &id.exec_fp[..8]
        ))
        .join(format!("v{variant}"))
}

/// Ordinary lexical normalisation of a `/`-separated path against `base` (reference model).
fn reference_resolve(base: &Path, rel_or_abs: &str) -> PathBuf {
    let mut stack: Vec<String> = Vec::new();
    if !rel_or_abs.starts_with('/') {
        for c in base.components() {
            if let Component::Normal(s) = c {
                stack.push(s.to_string_lossy().into_owned());
            }
        }
    }
    for seg in rel_or_abs.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            s => stack.push(s.to_string()),
        }
    }
    let mut out = PathBuf::from("/");
    for s in stack {
        out.push(s);
    }
    out
}

proptest! {
    // Default case count; failures are reported with their shrunk input rather than saved
    // to a regressions file next to the sources.
    #![proptest_config(support::seeded_config(256, module_path!(), ""))]

    /// P1 (docs/contract.md, "Environments and storage"): no generated path leaves OUT. Every
    /// variant, identity and conversion dir built from an arbitrary model token is `invalid_path`
    /// or a path under OUT whose components below OUT are plain names; with the shipped rules and
    /// with no rules at all. The normalised token itself holds no separator, drive colon or control
    /// char and is not `.`/`..` (the hard safety layer, whatever the rules say).
    #[test]
    fn generated_paths_stay_under_out(
        shipped in any::<bool>(),
        id in identity(hostile_token()),
        variant in 1u64..,
        conv_fp in prop_oneof![fp16(), hostile_token()],
    ) {
        let paths = paths_file(shipped);
        let layout = layout(&paths, id.storage_env);
        if let Ok(token) = layout.rules.token("model", &id.model) {
            prop_assert!(
                !token.contains(['/', '\\', ':']) && !token.chars().any(char::is_control),
                "model {:?} normalises to unsafe {:?}",
                id.model,
                token
            );
            prop_assert!(!["", ".", ".."].contains(&token.as_str()), "model {:?} -> {:?}", id.model, token);
        }
        let depth = layout.pattern_depth();
        check_contained(&layout, "variant_dir", &layout.variant_dir(&id, variant), depth + 1)?;
        check_contained(&layout, "identity_dir", &layout.identity_dir(&id), depth)?;
        check_contained(
            &layout,
            "conversion_dir_for",
            &layout.conversion_dir_for(&id, variant, &conv_fp),
            conversion_depth(&paths) + 1,
        )?;
    }

    /// P1b: the model component of a variant dir is exactly the normalised model token (no
    /// placeholder inside a model is expanded, nothing is truncated); the variant dir's
    /// parent is the identity dir; the two agree on success; a token without braces that
    /// normalises fine gives a path.
    #[test]
    fn model_component_is_the_normalised_token(
        shipped in any::<bool>(),
        id in identity(prop_oneof![hostile_token(), plain_model()]),
        variant in 1u64..,
    ) {
        let layout = layout(&paths_file(shipped), id.storage_env);
        let token = layout.rules.token("model", &id.model);
        let built = layout.variant_dir(&id, variant);
        let identity_dir = layout.identity_dir(&id);
        let token = match token {
            Err(e) => {
                prop_assert_eq!(e.kind, ErrorKind::InvalidPath);
                prop_assert!(built.is_err(), "token {:?} rejected but variant_dir is {:?}", id.model, built);
                prop_assert!(identity_dir.is_err(), "token {:?} rejected but identity_dir is {:?}", id.model, identity_dir);
                return Ok(());
            }
            Ok(token) => token,
        };
        let expected = expected_variant_dir(&layout, &id, &token, variant);
        if let Ok(dir) = &built {
            prop_assert_eq!(dir, &expected, "variant_dir of model {:?} (token {:?})", id.model, token);
        }
        if let Ok(dir) = &identity_dir {
            prop_assert_eq!(Some(dir.as_path()), expected.parent(), "identity_dir of model {:?}", id.model);
        }
        prop_assert_eq!(
            built.is_ok(),
            identity_dir.is_ok(),
            "model {:?}: variant_dir {:?} but identity_dir {:?}",
            id.model,
            built,
            identity_dir
        );
        // Limits are 255/4096 in both layouts and ROOT is short: once the token fits, only a
        // brace (a pattern placeholder) may still make the builder refuse it.
        if !token.contains(['{', '}']) {
            prop_assert_eq!(built.ok(), Some(expected), "model {:?} (token {:?})", id.model, token);
        }
    }

    /// Plain model names always build (the builder does not pass P1 by refusing everything).
    #[test]
    fn plain_models_build(shipped in any::<bool>(), id in identity(plain_model()), variant in 1u64..) {
        prop_assume!(id.model != "." && id.model != "..");
        let layout = layout(&paths_file(shipped), id.storage_env);
        let built = layout.variant_dir(&id, variant);
        prop_assert_eq!(built.ok(), Some(expected_variant_dir(&layout, &id, &id.model, variant)));
    }

    /// P2: normalisation is idempotent (shipped rules, no rules, shipped + lowercase).
    #[test]
    fn normalisation_is_idempotent(which in 0..3u8, s in hostile_token()) {
        let rules = match which {
            0 => NormalizeRules::from_paths(&SHIPPED).expect("shipped rules"),
            1 => NormalizeRules::default(),
            _ => NormalizeRules {
                lowercase: true,
                ..NormalizeRules::from_paths(&SHIPPED).expect("shipped rules")
            },
        };
        if let Ok(x) = rules.token("t", &s) {
            let again = rules.token("t", &x);
            prop_assert_eq!(again.as_ref(), Ok(&x), "token({:?}) = {:?}", s, x);
        }
    }

    /// P3 (docs/contract.md, "Environments and storage"): a token whose normalised form is over
    /// `max_component_length` is an `invalid_path` error, never truncated; one that fits is exactly
    /// the full normal form. Through the builder too (its limit is at least 27: `spec-<8>_exec-<8>`
    /// must fit).
    #[test]
    fn long_components_are_errors_not_truncations(
        max in 1u64..=32,
        builder_max in 27u64..=48,
        s in prop_oneof!["[A-Za-z0-9_ /:-]{0,64}", hostile_token()],
        id in identity(Just(String::new())),
        variant in 1u64..1000,
    ) {
        let small = NormalizeRules::from_paths(&with_limits(Some(max), None)).expect("rules");
        let unbounded = NormalizeRules { max_component_length: usize::MAX, ..small.clone() };
        let full = unbounded.token("t", &s);
        let got = small.token("t", &s);
        match &full {
            Ok(full) if full.chars().count() > max as usize => {
                let e = got.as_ref().expect_err("over-long component accepted");
                prop_assert_eq!(e.kind, ErrorKind::InvalidPath);
            }
            Ok(full) => prop_assert_eq!(got.as_ref(), Ok(full)),
            Err(_) => prop_assert!(got.is_err()),
        }

        let layout = layout(&with_limits(Some(builder_max), None), id.storage_env);
        let id = Identity { model: s.clone(), ..id };
        let built = layout.variant_dir(&id, variant);
        if let Ok(full) = &full {
            if full.chars().count() > builder_max as usize {
                let e = built.expect_err("over-long model accepted by variant_dir");
                prop_assert_eq!(e.kind, ErrorKind::InvalidPath);
            } else if !full.contains(['{', '}']) {
                prop_assert_eq!(built.ok(), Some(expected_variant_dir(&layout, &id, full, variant)));
            }
        }
    }

    /// P4 (docs/contract.md, "Environments and storage"): with a small `max_path_length`, a long
    /// model gives `invalid_path` naming the path; a path that fits is the full path, never a
    /// shortened one.
    #[test]
    fn long_paths_are_errors_not_truncations(
        max in 60u64..=200,
        id in identity("[a-z0-9_]{1,160}"),
        variant in 1u64..,
    ) {
        let layout = layout(&with_limits(None, Some(max)), id.storage_env);
        let full = expected_variant_dir(&layout, &id, &id.model, variant);
        let full_len = full.as_os_str().to_string_lossy().chars().count();
        let built = layout.variant_dir(&id, variant);
        if full_len > max as usize {
            let e = built.expect_err("over-long path accepted");
            prop_assert_eq!(e.kind, ErrorKind::InvalidPath);
            prop_assert!(e.message.contains(&id.model), "error does not name the path: {}", e);
        } else {
            prop_assert_eq!(built.ok(), Some(full));
        }
    }

    /// P5 (docs/contract.md, "Vocabulary"): OUT per storage env. Shipped: local is ROOT/outputs,
    /// the others are their overrides, all four differ; a relative override resolves against ROOT;
    /// every variant dir for env E lies under OUT(E), and no two envs share a variant dir.
    #[test]
    fn each_storage_env_has_its_own_out(
        root_segs in prop::collection::vec("[a-z0-9_]{1,8}", 0..4),
        rel in prop::collection::vec("[a-z0-9_]{1,8}", 1..4),
        override_env in env(),
        model in plain_model(),
        spec_fp in fp16(),
        exec_fp in fp16(),
        variant in 1u64..,
    ) {
        prop_assume!(model != "." && model != "..");
        let mut root = PathBuf::from("/work/root");
        root.extend(&root_segs);
        let outs: Vec<PathBuf> = StorageEnv::ALL.iter().map(|e| resolve_out(&root, &SHIPPED, *e)).collect();
        let overrides = &SHIPPED.env_overrides;
        let expected = [
            root.join("outputs"),
            PathBuf::from(overrides.colab.base.outputs.clone().expect("colab override")),
            PathBuf::from(overrides.kaggle.base.outputs.clone().expect("kaggle override")),
            PathBuf::from(overrides.azureml.base.outputs.clone().expect("azureml override")),
        ];
        prop_assert_eq!(&outs[..], &expected[..]);
        for (i, a) in outs.iter().enumerate() {
            for b in &outs[i + 1..] {
                prop_assert_ne!(a, b);
            }
        }

        let mut paths = SHIPPED.clone();
        let rel_text = rel.join("/");
        let slot = match override_env {
            StorageEnv::Local => &mut paths.env_overrides.local,
            StorageEnv::Colab => &mut paths.env_overrides.colab,
            StorageEnv::Kaggle => &mut paths.env_overrides.kaggle,
            StorageEnv::Azureml => &mut paths.env_overrides.azureml,
        };
        slot.base.outputs = Some(rel_text.clone());
        prop_assert_eq!(resolve_out(&root, &paths, override_env), root.join(&rel_text));

        let mut dirs = Vec::new();
        for e in StorageEnv::ALL {
            let layout = Layout::new(&root, &SHIPPED, e).expect("layout");
            let id = Identity { storage_env: e, model: model.clone(), spec_fp: spec_fp.clone(), exec_fp: exec_fp.clone() };
            let dir = layout.variant_dir(&id, variant).expect("plain model builds");
            prop_assert!(dir.starts_with(resolve_out(&root, &SHIPPED, e)), "{:?} not under OUT({:?})", dir, e);
            prop_assert!(!dirs.contains(&dir), "two envs share {:?}", dir);
            dirs.push(dir);
        }
    }

    /// P6: variant dir names parse back to their number.
    #[test]
    fn variant_names_round_trip(shipped in any::<bool>(), id in identity(plain_model()), variant in 1u64..) {
        prop_assume!(id.model != "." && id.model != "..");
        let layout = layout(&paths_file(shipped), id.storage_env);
        let dir = layout.variant_dir(&id, variant).expect("plain model builds");
        let name = dir.file_name().expect("last component").to_string_lossy().into_owned();
        prop_assert_eq!(layout.parse_variant_name(&name), Some(variant), "name {:?}", name);
    }

    /// P6b: non-canonical variant names are not variants.
    #[test]
    fn non_canonical_variant_names_do_not_parse(
        name in prop_oneof![
            prop::sample::select(vec![
                "v0", "v00", "v01", "v007", "v-1", "v+1", "v", "vx", "V1", "v1 ", " v1", "v1\n",
                "v1.0", "v1e3", "vv1", "v 1", "v١", "v18446744073709551616", "1", "",
            ]).prop_map(String::from),
            "v0[0-9]{0,5}",
            "v[0-9]{0,3}[^0-9][0-9]{0,3}",
            "[^v][0-9]{1,4}",
        ],
        shipped in any::<bool>(),
    ) {
        let layout = layout(&paths_file(shipped), StorageEnv::Local);
        prop_assert_eq!(layout.parse_variant_name(&name), None, "name {:?}", name);
    }

    /// P7 (docs/contract.md, "Environments and storage"): drive-letter and UNC dataset paths, with
    /// any mix of separators, are `unsupported_path` on this (non-Windows) host, naming the key.
    #[test]
    fn windows_dataset_paths_are_unsupported(
        drive in prop_oneof![
            ("[A-Za-z]", prop::collection::vec(("[\\\\/]", "[A-Za-z0-9_. ]{1,8}"), 0..4)).prop_map(|(l, rest)| {
                let tail: String = rest.into_iter().map(|(sep, seg)| format!("{sep}{seg}")).collect();
                (format!("{l}:{tail}"), true)
            }),
            ("[A-Za-z0-9]{1,8}", "[A-Za-z0-9$]{1,8}", prop::collection::vec(("[\\\\/]", "[A-Za-z0-9_. ]{1,8}"), 0..3))
                .prop_map(|(server, share, rest)| {
                    let tail: String = rest.into_iter().map(|(sep, seg)| format!("{sep}{seg}")).collect();
                    (format!("\\\\{server}\\{share}{tail}"), false)
                }),
        ],
        key in prop::sample::select(vec!["dataset.local_path_override", "local_path"]),
    ) {
        let (raw, is_drive) = drive;
        let parsed = DatasetPath::parse(&raw);
        prop_assert_eq!(matches!(parsed, DatasetPath::Drive { .. }), is_drive, "{:?} parsed as {:?}", raw, parsed);
        prop_assert_eq!(matches!(parsed, DatasetPath::Unc { .. }), !is_drive, "{:?} parsed as {:?}", raw, parsed);
        let e = parsed
            .resolve(&raw, Path::new(ROOT), key)
            .expect_err("a Windows path resolved on a non-Windows host");
        prop_assert_eq!(e.kind, ErrorKind::UnsupportedPath, "{}", e);
        prop_assert_eq!(e.place.key.as_deref(), Some(key));
    }

    /// P7b: POSIX paths resolve, relative ones against the base, lexically normalised;
    /// backslashes in a relative path are separators.
    #[test]
    fn posix_dataset_paths_resolve(
        absolute in any::<bool>(),
        segs in prop::collection::vec(
            prop_oneof![3 => "[A-Za-z0-9_ -][A-Za-z0-9_. -]{0,8}", 1 => Just(".".to_string()), 1 => Just("..".to_string())],
            1..6,
        ),
        seps in prop::collection::vec(prop::sample::select(vec!["/", "\\", "//", "/\\"]), 6),
        base_segs in prop::collection::vec("[a-z0-9_]{1,8}", 0..4),
    ) {
        let mut base = PathBuf::from("/");
        base.extend(&base_segs);
        let mut raw = if absolute { "/".to_string() } else { String::new() };
        for (i, seg) in segs.iter().enumerate() {
            if i > 0 {
                raw.push_str(seps[i]);
            }
            raw.push_str(seg);
        }
        let expected = reference_resolve(&base, &raw.replace('\\', "/"));
        let parsed = DatasetPath::parse(&raw);
        prop_assert!(matches!(parsed, DatasetPath::Posix(_)), "{:?} parsed as {:?}", raw, parsed);
        let got = parsed.resolve(&raw, &base, "dataset.local_path_override");
        prop_assert_eq!(got.as_ref().ok(), Some(&expected), "raw {:?} base {:?}: {:?}", raw, base, got);
    }
}

/// The example of docs/contract.md, "Environments and storage" written out.
#[test]
fn backslash_relative_path_is_a_relative_posix_path() {
    let base = Path::new("/srv/project");
    let raw = "data\\sub\\x";
    let got = DatasetPath::parse(raw).resolve(raw, base, "k");
    assert_eq!(got.ok(), Some(base.join("data/sub/x")));
}

/// A model spelled like a pattern placeholder is a different model from the value the
/// placeholder stands for; they must not share a variant dir (the shrunk counterexample of
/// `model_component_is_the_normalised_token`).
#[test]
fn placeholder_in_model_is_not_expanded() {
    let layout = layout(&SHIPPED, StorageEnv::Local);
    let id = |model: &str| Identity {
        storage_env: StorageEnv::Local,
        model: model.to_string(),
        spec_fp: "0123456789abcdef".to_string(),
        exec_fp: "fedcba9876543210".to_string(),
    };
    for (braced, plain) in [("{spec8}", "01234567"), ("{variant}", "1")] {
        let braced_dir = layout.variant_dir(&id(braced), 1);
        let plain_dir = layout
            .variant_dir(&id(plain), 1)
            .expect("plain model builds");
        assert_ne!(
            braced_dir.as_ref().ok(),
            Some(&plain_dir),
            "model {braced:?} and model {plain:?} share a variant dir"
        );
    }
}
