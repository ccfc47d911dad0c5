//! Source and checkpoint semantics end to end (docs/contract.md, "Source, checkpoint and
//! conversion"), through the real binary and the built-in trainer on real temp dirs: every
//! `source.type`, every way of naming the init checkpoint or parent, the `checkpoint.load` ×
//! `checkpoint.validate` table with its warnings and errors, weights-only warm starts, lineage in
//! metadata, `label_map_mismatch`, and continue_from_previous (E1 then E2 epochs) against an
//! uninterrupted E2 run.

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::Project;

/// Small and fast: two epochs, constant learning rate after warmup.
const FAST: [&str; 2] = ["training.epochs=2", "training.lr_scheduler=constant"];

fn run(project: &Project, command: &str, overrides: &[&str]) -> (i32, Value) {
    let mut args = vec!["--json".to_string()];
    for o in FAST.iter().chain(overrides) {
        args.push("-o".into());
        args.push(o.to_string());
    }
    args.push(command.into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = project.run(&args);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, doc)
}

fn train_ok(project: &Project, overrides: &[&str]) -> Value {
    let (code, doc) = run(project, "train", overrides);
    assert_eq!(code, 0, "train {overrides:?}: {doc}");
    doc
}

fn dir_of(doc: &Value) -> PathBuf {
    PathBuf::from(doc["output_dir"].as_str().expect("output_dir"))
}

fn metadata(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("metadata.json")).unwrap()).unwrap()
}

fn file(dir: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(rel).display()))
}

fn warnings(doc: &Value) -> String {
    doc["warnings"].to_string()
}

#[test]
fn best_selected_warm_starts_from_weights_only_however_the_checkpoint_is_named() {
    let project = Project::new();
    let scratch = train_ok(&project, &[]);
    let parent = dir_of(&scratch);
    let ckpt = parent.join("checkpoint");
    let by_path = format!("checkpoint.source={}", ckpt.display());
    let warm = train_ok(&project, &["source.type=best_selected", &by_path]);
    let dir = dir_of(&warm);
    assert_ne!(
        warm["spec_fp"], scratch["spec_fp"],
        "the init checkpoint is a spec input"
    );
    let meta = metadata(&dir);
    assert_eq!(meta["source"]["type"], "best_selected");
    assert_eq!(meta["source"]["load"], true);
    assert_eq!(meta["source"]["identity"]["type"], "checkpoint");
    assert_eq!(
        meta["source"]["init_checkpoint"],
        ckpt.display().to_string()
    );
    // Weights only: the step counter, optimizer and scheduler start fresh, so the warm run
    // makes exactly as many steps as the scratch run, from different initial weights.
    let log = String::from_utf8(file(&dir, "logs/trainer.log")).unwrap();
    assert!(log.contains("warm start: weights from"), "{log}");
    let state = |d: &Path| -> Value {
        serde_json::from_slice(&file(d, "checkpoint/trainer_state.json")).unwrap()
    };
    let (s, w) = (state(&parent), state(&dir));
    assert_eq!(s["step"], w["step"], "warm start restarts the step count");
    assert_eq!(
        s["optimizer"]["t"], w["optimizer"]["t"],
        "fresh optimizer: same number of updates"
    );
    assert_ne!(
        file(&parent, "checkpoint/model.safetensors"),
        file(&dir, "checkpoint/model.safetensors"),
        "the initial weights mattered"
    );
    // The same checkpoint named by {spec_fp, exec_fp, variant} is the same identity: reuse.
    let by_fps = format!(
        "checkpoint.source={{spec_fp: {}, exec_fp: {}, variant: 1}}",
        scratch["spec_fp"].as_str().unwrap(),
        scratch["exec_fp"].as_str().unwrap()
    );
    let (code, again) = run(&project, "train", &["source.type=best_selected", &by_fps]);
    assert_eq!(
        (code, again["decision"].as_str()),
        (0, Some("reuse")),
        "{again}"
    );
    assert_eq!(again["spec_fp"], warm["spec_fp"]);
    // No explicit checkpoint and no selection record.
    let before = support::snapshot(project.root());
    let (code, doc) = run(&project, "train", &["source.type=best_selected"]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("selection_missing")),
        "{doc}"
    );
    assert!(support::changed(&before, &support::snapshot(project.root())).is_empty());
}

/// One row of the load × validate table.
struct Row {
    name: &'static str,
    overrides: Vec<String>,
    /// `Ok(warning substring)` or `Err((exit, kind, message substring))`.
    want: Result<Option<&'static str>, (i32, &'static str, String)>,
}

#[test]
fn checkpoint_load_and_validate_combinations_give_their_warnings_and_errors() {
    let project = Project::new();
    let scratch = train_ok(&project, &[]);
    let good = dir_of(&scratch).join("checkpoint");
    let spare = project.root().join("spare");
    let invalid = spare.join("no-config");
    support::copy_tree(&good, &invalid);
    std::fs::remove_file(invalid.join("config.json")).unwrap();
    let no_weights = spare.join("no-weights");
    support::copy_tree(&good, &no_weights);
    std::fs::remove_file(no_weights.join("model.safetensors")).unwrap();
    // A checkpoint trained on another label set: one label fewer.
    let other_labels = spare.join("other-labels");
    support::copy_tree(&good, &other_labels);
    let mut config: Value = serde_json::from_slice(&file(&other_labels, "config.json")).unwrap();
    let n = config["id2label"].as_object().unwrap().len();
    let last = config["id2label"][(n - 1).to_string()]
        .as_str()
        .unwrap()
        .to_string();
    config["id2label"]
        .as_object_mut()
        .unwrap()
        .remove(&(n - 1).to_string());
    config["label2id"].as_object_mut().unwrap().remove(&last);
    std::fs::write(
        other_labels.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let missing = spare.join("missing");
    let src = |p: &Path| format!("checkpoint.source={}", p.display());
    let bs = "source.type=best_selected".to_string();
    let rows = vec![
        Row {
            name: "scratch + load true",
            overrides: vec!["checkpoint.load=true".into()],
            want: Err((2, "config_invalid", "checkpoint.load".into())),
        },
        Row {
            name: "scratch + validate false (nothing to validate)",
            overrides: vec!["checkpoint.validate=false".into()],
            want: Ok(None),
        },
        Row {
            name: "best_selected + load false: scratch, with a warning",
            overrides: vec![bs.clone(), "checkpoint.load=false".into(), src(&good)],
            want: Ok(Some("training from scratch")),
        },
        Row {
            name: "best_selected + validate true + valid",
            overrides: vec![bs.clone(), "checkpoint.validate=true".into(), src(&good)],
            want: Ok(None),
        },
        Row {
            name: "best_selected + validate true + missing",
            overrides: vec![bs.clone(), src(&missing)],
            want: Err((3, "checkpoint_missing", missing.display().to_string())),
        },
        Row {
            name: "best_selected + validate false + missing (still an error)",
            overrides: vec![
                bs.clone(),
                "checkpoint.validate=false".into(),
                src(&missing),
            ],
            want: Err((3, "checkpoint_missing", missing.display().to_string())),
        },
        Row {
            name: "best_selected + validate true + invalid",
            overrides: vec![bs.clone(), src(&invalid)],
            want: Err((3, "checkpoint_invalid", "config.json".into())),
        },
        Row {
            name: "best_selected + validate true + no weights",
            overrides: vec![bs.clone(), src(&no_weights)],
            want: Err((3, "checkpoint_invalid", "weights".into())),
        },
        Row {
            name: "best_selected + validate false + valid: warned",
            overrides: vec![bs.clone(), "checkpoint.validate=false".into(), src(&good)],
            want: Ok(Some("used without checking")),
        },
        Row {
            name: "best_selected + other label set",
            overrides: vec![bs.clone(), src(&other_labels)],
            want: Err((3, "label_map_mismatch", "other-labels/config.json".into())),
        },
        Row {
            name: "best_selected + validate false + other label set (still checked)",
            overrides: vec![
                bs.clone(),
                "checkpoint.validate=false".into(),
                src(&other_labels),
            ],
            want: Err((3, "label_map_mismatch", last.clone())),
        },
    ];
    let mut problems = Vec::new();
    for row in &rows {
        let overrides: Vec<&str> = row.overrides.iter().map(String::as_str).collect();
        let before = support::snapshot(project.root());
        let (code, doc) = run(&project, "train", &overrides);
        match &row.want {
            Ok(warning) => {
                if code != 0 {
                    problems.push(format!("{}: exit {code}: {doc}", row.name));
                } else if let Some(w) = warning {
                    if !warnings(&doc).contains(w) {
                        problems.push(format!(
                            "{}: no warning `{w}` in {}",
                            row.name,
                            warnings(&doc)
                        ));
                    }
                }
            }
            Err((exit, kind, message)) => {
                let err = &doc["error"];
                if code != *exit || err["kind"] != *kind {
                    problems.push(format!(
                        "{}: want exit {exit} {kind}, got {code}: {doc}",
                        row.name
                    ));
                } else if !err["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains(message.as_str())
                {
                    problems.push(format!("{}: message lacks `{message}`: {doc}", row.name));
                }
                let changed = support::changed(&before, &support::snapshot(project.root()));
                if !changed.is_empty() {
                    problems.push(format!("{}: the disk changed: {changed:?}", row.name));
                }
            }
        }
    }
    // load false with a source means spec_fp says scratch: same identity as the scratch run.
    let (_, doc) = run(
        &project,
        "plan",
        &[&bs, "checkpoint.load=false", &src(&good)],
    );
    if doc["spec_fp"] != scratch["spec_fp"] {
        problems.push(format!(
            "load false: spec_fp {} is not scratch's {}",
            doc["spec_fp"], scratch["spec_fp"]
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn final_training_source_finds_its_parent_by_path_fingerprints_or_as_the_latest() {
    let project = Project::new();
    let ft = "source.type=final_training";
    let before = support::snapshot(project.root());
    let (code, doc) = run(&project, "train", &[ft]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("parent_not_found")),
        "{doc}"
    );
    assert!(support::changed(&before, &support::snapshot(project.root())).is_empty());

    let parent = train_ok(&project, &[]);
    let pdir = dir_of(&parent);
    let auto = train_ok(&project, &[ft]);
    let meta = metadata(&dir_of(&auto));
    assert_eq!(meta["source"]["type"], "final_training");
    let lineage = &meta["source"]["parent"];
    assert_eq!(lineage["spec_fp"], parent["spec_fp"]);
    assert_eq!(lineage["exec_fp"], parent["exec_fp"]);
    assert_eq!(lineage["variant"], 1);
    assert_eq!(lineage["dir"], pdir.display().to_string());
    assert_eq!(
        meta["source"]["init_checkpoint"],
        pdir.join("checkpoint").display().to_string()
    );
    // The same parent by path and by fingerprints is the same identity (reuse).
    let by_path = format!("source.parent={}", pdir.display());
    let by_fps = format!(
        "source.parent={{spec_fp: {}, exec_fp: {}, variant: 1}}",
        parent["spec_fp"].as_str().unwrap(),
        parent["exec_fp"].as_str().unwrap()
    );
    for o in [&by_path, &by_fps] {
        let (code, doc) = run(&project, "train", &[ft, o]);
        assert_eq!(
            (code, doc["decision"].as_str()),
            (0, Some("reuse")),
            "{o}: {doc}"
        );
        assert_eq!(doc["spec_fp"], auto["spec_fp"], "{o}");
    }
    // An incomplete parent is refused with its reason; nothing is written.
    let broken = pdir.parent().unwrap().join("v9");
    support::copy_tree(&pdir, &broken);
    let before = support::snapshot(project.root());
    let (code, doc) = run(
        &project,
        "train",
        &[ft, &format!("source.parent={}", broken.display())],
    );
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("parent_incomplete")),
        "{doc}"
    );
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("identity_mismatch"),
        "{doc}"
    );
    assert!(support::changed(&before, &support::snapshot(project.root())).is_empty());
}

#[test]
fn continue_from_previous_e1_then_e2_equals_an_uninterrupted_e2_run() {
    let project = Project::new();
    let no_es = "training.early_stopping.enabled=false";
    let parent = train_ok(&project, &[no_es, "training.epochs=2"]);
    let cont = [
        no_es,
        "training.epochs=4",
        "run.mode=continue_from_previous",
        "source.type=final_training",
    ];
    let child = train_ok(&project, &cont);
    assert_eq!(child["decision"], "continue");
    let meta = metadata(&dir_of(&child));
    assert_eq!(meta["source"]["parent"]["spec_fp"], parent["spec_fp"]);
    let log = String::from_utf8(file(&dir_of(&child), "logs/trainer.log")).unwrap();
    assert!(
        log.contains("resum") || log.contains("continu"),
        "the child restored state: {log}"
    );
    // The uninterrupted 4-epoch run, in another project so nothing is shared.
    let other = Project::new();
    let straight = train_ok(&other, &[no_es, "training.epochs=4"]);
    let mut compared = Vec::new();
    for e in std::fs::read_dir(dir_of(&straight).join("checkpoint")).unwrap() {
        compared.push(format!(
            "checkpoint/{}",
            e.unwrap().file_name().to_string_lossy()
        ));
    }
    compared.push("metrics.json".into());
    assert!(compared.len() >= 4, "{compared:?}");
    for rel in &compared {
        assert!(
            file(&dir_of(&child), rel) == file(&dir_of(&straight), rel),
            "{rel}: continued 2→4 epochs differs from a straight 4-epoch run"
        );
    }
    // A parent that already reached the configured epochs.
    let before = support::snapshot(project.root());
    let mut again = cont;
    again[1] = "training.epochs=4";
    let (code, doc) = run(&project, "train", &again);
    // The child is now the latest complete run and has 4 epochs.
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("nothing_to_continue")),
        "{doc}"
    );
    assert!(support::changed(&before, &support::snapshot(project.root())).is_empty());
    // load false contradicts continue.
    let mut bad = cont.to_vec();
    bad.push("checkpoint.load=false");
    let (code, doc) = run(&project, "train", &bad);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (2, Some("config_invalid")),
        "{doc}"
    );
}

/// Writes a best-model-selection cache record into the project's OUT, as `trainctl select`
/// will (schema in docs/contract.md).
fn write_selection_record(project: &Project, selected: Value, unix_us: u64) {
    use trainctl::cache::{Cache, CacheKind, CacheSettings, Record};
    let config = trainctl::config::load(
        &support::opts(project.root(), &[]),
        project.root(),
        &support::no_vars,
    )
    .unwrap();
    let layout = trainctl::paths::Layout::from_config(&config).unwrap();
    let settings =
        CacheSettings::from_paths(&config.paths, &layout, CacheKind::BestModelSelection).unwrap();
    let fs = trainctl::fs::OsFs;
    Cache::new(&fs, settings)
        .write(
            &Record {
                schema_version: 1,
                kind: "best_model_selection".into(),
                created_at: trainctl::cache::rfc3339(unix_us),
                subject: "builtin/selection".into(),
                payload: serde_json::json!({ "selected": selected }),
                metadata: serde_json::json!({}),
            },
            unix_us,
        )
        .unwrap();
}

#[test]
fn best_selected_without_a_checkpoint_source_uses_the_latest_selection_record() {
    let project = Project::new();
    let hpo = train_ok(&project, &[]);
    let ckpt = dir_of(&hpo).join("checkpoint");
    let bs = "source.type=best_selected";
    // A record that names no checkpoint.
    write_selection_record(
        &project,
        serde_json::json!({"run_id": "r0"}),
        1_700_000_000_000_000,
    );
    let before = support::snapshot(project.root());
    let (code, doc) = run(&project, "train", &[bs]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("selection_missing")),
        "{doc}"
    );
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("names no checkpoint"),
        "{doc}"
    );
    assert!(support::changed(&before, &support::snapshot(project.root())).is_empty());
    // The newest record wins; the checkpoint path may be relative to ROOT.
    let rel = ckpt
        .strip_prefix(project.root())
        .unwrap()
        .display()
        .to_string();
    let lineage = serde_json::json!({
        "checkpoint": rel,
        "study_key_hash": "a1b2c3d4",
        "trial_key_hash": "e5f6a7b8",
        "trial_run_id": "run-17",
    });
    write_selection_record(&project, lineage, 1_700_000_001_000_000);
    let from_record = train_ok(&project, &[bs]);
    let meta = metadata(&dir_of(&from_record));
    assert_eq!(
        meta["source"]["init_checkpoint"],
        ckpt.display().to_string()
    );
    let selection = &meta["source"]["selection"];
    assert_eq!(selection["study_key_hash"], "a1b2c3d4");
    assert_eq!(selection["trial_run_id"], "run-17");
    assert!(
        selection["record"]
            .as_str()
            .unwrap()
            .starts_with("best_model_selection_"),
        "{selection}"
    );
    // The identity is the checkpoint's content, however it was found.
    let by_path = format!("checkpoint.source={}", ckpt.display());
    let (code, explicit) = run(&project, "train", &[bs, &by_path]);
    assert_eq!(
        (code, explicit["decision"].as_str()),
        (0, Some("reuse")),
        "{explicit}"
    );
}
