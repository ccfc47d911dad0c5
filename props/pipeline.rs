//! `trainctl pipeline` end to end through the binary on real temp dirs: offline from
//! selection to conversion on the shipped config and `fixtures/hpo/trials.json`, a second run
//! that reuses every step and writes nothing, colab backup and restore from Drive, and the
//! skip-training rule for a selected final training on full data.

use crate::support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn pipeline(project: &support::Project, pre: &[String]) -> (i32, Value, String) {
    let mut args: Vec<&str> = vec!["--json"];
    args.extend(pre.iter().map(String::as_str));
    args.push("pipeline");
    let (code, stdout, stderr) = project.run(&args);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, doc, stderr)
}

fn statuses(doc: &Value) -> Vec<(String, String)> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn status_of(doc: &Value, step: &str) -> String {
    statuses(doc)
        .into_iter()
        .find(|(s, _)| s == step)
        .map(|(_, st)| st)
        .unwrap_or_default()
}

#[test]
fn pipeline_runs_offline_from_selection_to_conversion_then_reuses_everything() {
    let project = support::Project::new();
    let (code, first, stderr) = pipeline(&project, &[]);
    assert_eq!(code, 0, "{first}\n{stderr}");
    let names: Vec<String> = statuses(&first).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        names,
        [
            "environment",
            "config",
            "tracking",
            "drive",
            "selection",
            "decide",
            "train",
            "backup",
            "convert"
        ]
    );
    for i in 1..=9 {
        assert!(
            stderr.contains(&format!("[{i}/9]")),
            "progress line {i}: {stderr}"
        );
    }
    assert_eq!(status_of(&first, "selection"), "ok");
    assert_eq!(status_of(&first, "train"), "ok");
    assert_eq!(status_of(&first, "convert"), "ok");
    assert_eq!(first["reused_everything"], false);
    // The selected candidate's params are the best-configuration layer of the final training.
    let steps = first["steps"].as_array().unwrap();
    let selected = &steps[4]["detail"]["selected"];
    let hp = &steps[6]["detail"]["hyperparameters"];
    for key in ["learning_rate", "dropout", "epochs"] {
        assert_eq!(
            hp[key], selected["params"][key],
            "{key}: {hp} vs {selected}"
        );
    }
    let model = PathBuf::from(first["model_dir"].as_str().unwrap());
    let bundle = PathBuf::from(first["bundle"].as_str().unwrap());
    assert!(model.join("checkpoint/model.safetensors").is_file());
    // The final training was tracked in the default file store.
    assert_eq!(status_of(&first, "tracking"), "ok");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(model.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(
        meta["tracking"]["state"], "finished",
        "{}",
        meta["tracking"]
    );
    let run_dir = project
        .root()
        .join("mlruns")
        .join(meta["tracking"]["experiment_id"].as_str().unwrap())
        .join(meta["tracking"]["run_id"].as_str().unwrap());
    assert!(run_dir.join("meta.yaml").is_file(), "{}", run_dir.display());
    assert!(bundle.join("manifest.json").is_file());
    assert_eq!(
        bundle.parent().unwrap().file_name(),
        model.file_name(),
        "the bundle's path carries the trained variant"
    );
    // Plain commands have no best-configuration layer: `plan` alone computes the identity of
    // the config's own hyperparameters, which differ from the selected ones.
    let (code, plain) = project.run_json(&["plan"]);
    assert_eq!(code, 0, "{plain}");
    assert_ne!(plain["spec_fp"], steps[6]["detail"]["spec_fp"], "{plain}");

    // Second run: every step reuses, and nothing on disk changes.
    let before = support::snapshot(project.root());
    let (code, second, stderr) = pipeline(&project, &[]);
    assert_eq!(code, 0, "{second}\n{stderr}");
    assert_eq!(second["reused_everything"], true, "{second}");
    for step in ["selection", "train", "convert"] {
        assert_eq!(status_of(&second, step), "reused", "{step}: {second}");
    }
    assert_eq!(second["model_dir"], first["model_dir"]);
    assert_eq!(second["bundle"], first["bundle"]);
    let changed = support::changed(&before, &support::snapshot(project.root()));
    assert!(changed.is_empty(), "a reusing pipeline wrote {changed:?}");
}

fn colab(project: &support::Project, drive: &Path) -> Vec<String> {
    support::env_args("colab", &project.root().join("outputs"), drive)
}

#[test]
fn pipeline_on_colab_backs_up_then_restores_a_lost_run_from_drive() {
    let project = support::Project::new();
    let drive = project.root().join("drive");
    let pre = colab(&project, &drive);
    let (code, first, stderr) = pipeline(&project, &pre);
    assert_eq!(code, 0, "{first}\n{stderr}");
    assert_eq!(status_of(&first, "backup"), "ok", "{first}");
    assert_eq!(status_of(&first, "drive"), "checked");
    let model = PathBuf::from(first["model_dir"].as_str().unwrap());
    let mirrored = drive
        .join("MyDrive/resume-ner")
        .join(model.strip_prefix(project.root()).unwrap());
    assert!(
        mirrored.join("metadata.json").is_file(),
        "{}",
        mirrored.display()
    );
    // The local run is lost (a new Colab VM); the pipeline restores it and does not retrain.
    let weights = std::fs::read(model.join("checkpoint/model.safetensors")).unwrap();
    std::fs::remove_dir_all(&model).unwrap();
    let (code, second, stderr) = pipeline(&project, &pre);
    assert_eq!(code, 0, "{second}\n{stderr}");
    assert_eq!(status_of(&second, "drive"), "restored", "{second}");
    assert_eq!(status_of(&second, "train"), "reused", "{second}");
    assert_eq!(
        std::fs::read(model.join("checkpoint/model.safetensors")).unwrap(),
        weights
    );
}

#[test]
fn a_selected_final_training_on_full_data_is_not_retrained() {
    let project = support::Project::new();
    let (code, trained) = project.run_json(&["-o", "training.epochs=1", "train"]);
    assert_eq!(code, 0, "{trained}");
    let dir = PathBuf::from(trained["output_dir"].as_str().unwrap());
    let trials = json!([{
        "run_id": "final-1",
        "metrics": {"macro-f1": 0.99, "latency_batch_1_ms": 1.0},
        "checkpoint": dir.join("checkpoint"),
        "trained_on_full_data": true,
    }]);
    let path = project.root().join("final.json");
    std::fs::write(&path, serde_json::to_vec(&trials).unwrap()).unwrap();
    let (code, stdout, stderr) =
        project.run(&["--json", "pipeline", "--trials", path.to_str().unwrap()]);
    let doc: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    assert_eq!(code, 0, "{doc}");
    assert_eq!(status_of(&doc, "decide"), "skip");
    assert_eq!(status_of(&doc, "train"), "skipped");
    assert_eq!(doc["model_dir"], dir.display().to_string());
    assert_eq!(status_of(&doc, "convert"), "ok");
}

#[test]
fn a_best_selected_pipeline_warm_starts_from_the_selected_checkpoint() {
    let project = support::Project::new();
    let (code, hpo) = project.run_json(&["-o", "training.epochs=1", "train"]);
    assert_eq!(code, 0, "{hpo}");
    let ckpt = PathBuf::from(hpo["output_dir"].as_str().unwrap()).join("checkpoint");
    let trials = json!([{
        "run_id": "hpo-7",
        "metrics": {"macro-f1": 0.97, "latency_batch_1_ms": 1.0},
        "checkpoint": ckpt,
        "trial_key_hash": "t7",
        "params": {"epochs": 2},
    }]);
    let path = project.root().join("with-ckpt.json");
    std::fs::write(&path, serde_json::to_vec(&trials).unwrap()).unwrap();
    let args: Vec<&str> = vec![
        "--json",
        "-o",
        "source.type=best_selected",
        "pipeline",
        "--trials",
        path.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = project.run(&args);
    let doc: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    assert_eq!(code, 0, "{doc}\n{stderr}");
    let model = PathBuf::from(doc["model_dir"].as_str().unwrap());
    let meta: Value =
        serde_json::from_slice(&std::fs::read(model.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["source"]["type"], "best_selected");
    assert_eq!(
        meta["source"]["init_checkpoint"],
        ckpt.display().to_string()
    );
    assert_eq!(meta["source"]["selection"]["trial_key_hash"], "t7");
    assert_eq!(
        meta["hyperparameters"]["epochs"], 2,
        "the selected params are used"
    );
}
