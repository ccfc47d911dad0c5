//! Produces `fixtures/hpo/trials.json`: real HPO results for the tiny dataset, the input of
//! `trainctl select` / `trainctl pipeline` on the shipped config.
//!
//! Each trial trains the built-in trainer (through the real `trainctl train`, in a temporary
//! copy of the project) with one hyperparameter setting, reads its validation macro-F1 from
//! `metrics.json`, and measures `latency_batch_1_ms` as the median wall time of predicting one
//! validation text at a time with the trained checkpoint (in this process). Checkpoints are
//! not kept (the fixture holds metrics and params only; `pipeline` retrains the winner as a
//! final training on the full data).
//!
//! Run from the repository root after `cargo build --release`:
//!
//! ```text
//! cargo run --release --example gen_hpo_trials
//! ```
//!
//! Metrics are deterministic (the trainer is); latencies are measurements of this machine.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// (trial id, learning_rate, dropout, epochs)
const TRIALS: [(&str, f64, f64, u64); 4] = [
    ("trial-0", 0.05, 0.1, 4),
    ("trial-1", 0.02, 0.1, 4),
    ("trial-2", 0.05, 0.3, 3),
    ("trial-3", 0.005, 0.1, 2),
];

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn main() {
    let repo = std::env::current_dir().unwrap();
    let exe = repo.join("target/release/trainctl");
    assert!(exe.is_file(), "build first: cargo build --release");
    let validation: Vec<Value> = serde_json::from_slice(
        &std::fs::read(repo.join("fixtures/datasets/resume_tiny/validation.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = validation
        .iter()
        .filter_map(|r| r["text"].as_str())
        .collect();
    let mut candidates = Vec::new();
    for (i, (id, lr, dropout, epochs)) in TRIALS.iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(&repo.join("config"), &tmp.path().join("config"));
        copy_tree(
            &repo.join("fixtures/datasets"),
            &tmp.path().join("fixtures/datasets"),
        );
        let out = std::process::Command::new(&exe)
            .arg("--root")
            .arg(tmp.path())
            .args(["--json", "--env", "local"])
            .args(["-o", &format!("training.learning_rate={lr}")])
            .args(["-o", &format!("training.dropout={dropout}")])
            .args(["-o", &format!("training.epochs={epochs}")])
            .arg("train")
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(out.status.success(), "{doc}");
        let dir = PathBuf::from(doc["output_dir"].as_str().unwrap());
        let metrics: Value =
            serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap();
        let ckpt = dir.join("checkpoint");
        let mut times: Vec<f64> = texts
            .iter()
            .map(|t| {
                let start = Instant::now();
                trainctl::builtin::predict(&ckpt, t).unwrap();
                start.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let latency = (times[times.len() / 2] * 1000.0).round() / 1000.0;
        candidates.push(json!({
            "run_id": format!("hpo-{id}"),
            "trial_run_id": format!("hpo-{id}"),
            "study_key_hash": "5e1ec7ed",
            "trial_key_hash": format!("{:08x}", 0x7a1a_0000u32 + i as u32),
            "backbone": "builtin",
            "start_time": 1_764_400_000_000u64 + i as u64 * 60_000,
            "metrics": {
                "macro-f1": metrics["macro-f1"],
                "span-f1": metrics["span-f1"],
                "loss": metrics["loss"],
                "latency_batch_1_ms": latency,
            },
            "params": {"learning_rate": lr, "dropout": dropout, "epochs": epochs},
        }));
        eprintln!(
            "{id}: macro-f1 {} latency {latency} ms",
            metrics["macro-f1"]
        );
    }
    let doc = json!({"schema_version": 1, "candidates": candidates});
    let path = repo.join("fixtures/hpo/trials.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = serde_json::to_vec_pretty(&doc).unwrap();
    bytes.push(b'\n');
    std::fs::write(&path, bytes).unwrap();
    eprintln!("wrote {}", path.display());
}
