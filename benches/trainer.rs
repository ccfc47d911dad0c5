//! Built-in trainer measurements (issue: trainer): tokens per second, the cost of a step
//! checkpoint, the overhead of an interrupted-and-resumed run, and peak memory.
//! Run: `cargo bench --bench trainer`. Prints Markdown for docs/performance.md; asserts
//! nothing about time (the machine is shared: compare the ratios of one run).
//!
//! The first `trainctl train` (real binary, shipped config) gives the job file the
//! orchestrator writes, the trainer's own tokens/s line and the peak RSS of the trainer
//! process (RUSAGE_CHILDREN: the largest descendant waited for). The other runs replay that
//! job file in-process with a changed save interval or an interruption.

#[path = "../props/support/mod.rs"]
mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

const REPS: usize = 3;

fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss
    }
}

/// The job file for variant dir `v`, from the template written by `trainctl train`.
fn job_for(template: &Value, v: &Path, save_interval: u64) -> PathBuf {
    let mut j = template.clone();
    j["variant_dir"] = json!(v);
    j["checkpoint_dir"] = json!(v.join("checkpoint"));
    j["checkpoints_dir"] = json!(v.join("checkpoints"));
    j["metrics_path"] = json!(v.join("metrics.json"));
    j["resume_from"] = Value::Null;
    j["save_interval"] = json!(save_interval);
    std::fs::create_dir_all(v).unwrap();
    let path = v.join("job.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&j).unwrap()).unwrap();
    path
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let project = support::Project::new();
    let rss_before = children_max_rss_kib();
    let wall = Instant::now();
    let (code, doc) = project.run_json(&["train"]);
    let train_wall = wall.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{doc}");
    let peak_kib = children_max_rss_kib();
    let dir = PathBuf::from(doc["output_dir"].as_str().unwrap());
    let log = std::fs::read_to_string(dir.join("logs/trainer.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.starts_with("trained "))
        .unwrap_or("")
        .to_string();
    let template: Value =
        serde_json::from_slice(&std::fs::read(dir.join("job.json")).unwrap()).unwrap();
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap();
    let steps = metrics["steps"].as_u64().unwrap();

    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let mut none = Vec::new();
    let mut every = Vec::new();
    let mut interrupted = Vec::new();
    let mut ckpt_bytes = 0;
    for rep in 0..REPS {
        let v = root.join(format!("none-{rep}"));
        let job = job_for(&template, &v, u64::MAX / 2);
        none.push(timed(|| trainctl::builtin::run(&job).unwrap()));
        let v = root.join(format!("every-{rep}"));
        let job = job_for(&template, &v, 1);
        every.push(timed(|| trainctl::builtin::run(&job).unwrap()));
        ckpt_bytes = dir_bytes(&v.join("checkpoints/step-1"));
        // Interrupted at the middle checkpoint, then resumed from it.
        let v = root.join(format!("cut-{rep}"));
        let save = (steps / 2).max(1);
        let job = job_for(&template, &v, save);
        let first = timed(|| {
            trainctl::builtin::run_until(&job, Some(save)).unwrap();
        });
        let mut j: Value = serde_json::from_slice(&std::fs::read(&job).unwrap()).unwrap();
        j["resume_from"] = json!(v.join("checkpoints").join(format!("step-{save}")));
        std::fs::write(&job, serde_json::to_vec_pretty(&j).unwrap()).unwrap();
        let second = timed(|| trainctl::builtin::run(&job).unwrap());
        interrupted.push(first + second);
        let a = std::fs::read(v.join("checkpoint/model.safetensors")).unwrap();
        let b =
            std::fs::read(root.join(format!("every-{rep}/checkpoint/model.safetensors"))).unwrap();
        assert!(
            a == b,
            "the resumed run's weights differ from the uninterrupted run's"
        );
    }
    let (t_none, t_every, t_cut) = (median(none), median(every), median(interrupted));
    let per_ckpt_ms = (t_every - t_none) / steps as f64 * 1000.0;
    // The in-process trainer prints its progress to stdout (as a subprocess that goes to
    // logs/trainer.log); `cargo xtask bench` keeps stdout from the first Markdown line on.
    println!("| measurement (shipped config, resume_tiny: 300 train records, {steps} optimizer steps; medians of {REPS} in-process runs) | result |\n|---|---|");
    println!(
        "| `trainctl train` end to end (binary, incl. config, verify, cache) | {train_wall:.2} s |"
    );
    println!("| trainer's own line | `{line}` |");
    println!("| peak RSS of the trainer process (max over children, RUSAGE_CHILDREN) | {:.1} MiB (before: {:.1} MiB) |", peak_kib as f64 / 1024.0, rss_before as f64 / 1024.0);
    println!("| training without step checkpoints | {t_none:.3} s |");
    println!("| a step checkpoint after every step | {t_every:.3} s ({steps} checkpoints of {:.1} MiB) |", ckpt_bytes as f64 / 1048576.0);
    println!(
        "| cost of one step checkpoint | {per_ckpt_ms:.1} ms (ratio every-step / none: {:.2}) |",
        t_every / t_none
    );
    println!("| killed at the middle checkpoint + resumed, vs uninterrupted with the same save interval | {t_cut:.3} s (ratio to `none`: {:.2}) |", t_cut / t_none);
}
