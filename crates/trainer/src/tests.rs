//! Feature tests of the built-in trainer, driven through job files as trainctl writes them.

use super::*;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/datasets/resume_tiny")
        .join(name)
}

fn entity_types() -> Vec<String> {
    [
        "SKILL",
        "EDUCATION",
        "DESIGNATION",
        "EXPERIENCE",
        "NAME",
        "EMAIL",
        "PHONE",
        "LOCATION",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Writes the first `n` records of a fixture split to `dir/name`.
fn slice(split: &str, n: usize, dir: &Path) -> PathBuf {
    let all: Vec<Value> = serde_json::from_slice(&std::fs::read(fixture(split)).unwrap()).unwrap();
    let path = dir.join(format!("{n}-{split}"));
    std::fs::write(&path, serde_json::to_vec(&all[..n.min(all.len())]).unwrap()).unwrap();
    path
}

/// A job like the orchestrator's, for variant dir `v`.
fn job(v: &Path, train: &Path, validation: Option<&Path>) -> Value {
    json!({
        "variant_dir": v,
        "checkpoint_dir": v.join("checkpoint"),
        "checkpoints_dir": v.join("checkpoints"),
        "metrics_path": v.join("metrics.json"),
        "resume_from": null,
        "init_checkpoint": null,
        "labels": data::labels(&entity_types()),
        "hyperparameters": {
            "learning_rate": 0.05, "epochs": 3, "batch_size": 8, "dropout": 0.1,
            "weight_decay": 0.0001, "gradient_accumulation_steps": 2, "warmup_steps": 3,
            "max_grad_norm": 5.0, "validation_fraction": 0.1,
            "early_stopping": {"enabled": true, "patience": 3, "min_delta": 0.001},
            "eval_interval": 2
        },
        "seed": 7,
        "total_steps": 1,
        "save_interval": 1,
        "log_interval": 5,
        "objective_metric": "macro-f1",
        "dataset": {"train": train, "validation": validation},
        "model": {
            "name": "builtin", "backbone": BACKBONE,
            "preprocessing": {"max_length": 24, "lowercase": false},
            "features": {"hash_dim": 4096, "window": 2, "char_ngrams": true},
            "decoding": {"use_crf": false}
        },
        "precision": "fp32",
        "run_name": "test"
    })
}

fn write_job(v: &Path, job: &Value) -> PathBuf {
    std::fs::create_dir_all(v).unwrap();
    let path = v.join("job.json");
    std::fs::write(&path, serde_json::to_vec_pretty(job).unwrap()).unwrap();
    path
}

fn set(job: &mut Value, pointer: &str, value: Value) {
    *job.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = value;
}

/// Every output that must be byte-identical: the checkpoint/ files and metrics.json.
fn outputs(v: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(v.join("checkpoint")).unwrap() {
        let e = e.unwrap();
        out.insert(
            format!("checkpoint/{}", e.file_name().to_string_lossy()),
            std::fs::read(e.path()).unwrap(),
        );
    }
    out.insert(
        "metrics.json".into(),
        std::fs::read(v.join("metrics.json")).unwrap(),
    );
    out
}

fn assert_same(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>, ctx: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{ctx}"
    );
    for (k, x) in a {
        assert!(x == &b[k], "{ctx}: {k} differs");
    }
}

fn metrics(v: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(v.join("metrics.json")).unwrap()).unwrap()
}

struct Data {
    _dir: tempfile::TempDir,
    root: PathBuf,
    train: PathBuf,
    validation: PathBuf,
}

fn data(n_train: usize, n_val: usize) -> Data {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    Data {
        train: slice("train.json", n_train, &root),
        validation: slice("validation.json", n_val, &root),
        root,
        _dir: dir,
    }
}

#[test]
fn two_runs_are_byte_identical() {
    let d = data(40, 12);
    let mut j = job(&d.root.join("a"), &d.train, Some(&d.validation));
    set(&mut j, "/save_interval", json!(4));
    run(&write_job(&d.root.join("a"), &j)).unwrap();
    let j = job(&d.root.join("b"), &d.train, Some(&d.validation));
    let mut j2 = j.clone();
    set(&mut j2, "/save_interval", json!(4));
    run(&write_job(&d.root.join("b"), &j2)).unwrap();
    assert_same(
        &outputs(&d.root.join("a")),
        &outputs(&d.root.join("b")),
        "two runs",
    );
    let m = metrics(&d.root.join("a"));
    for key in [
        "macro-f1",
        "span-f1",
        "loss",
        "per_entity",
        "truncated_tokens",
        "skipped_steps",
        "steps",
        "epochs_completed",
        "stopped_early",
    ] {
        assert!(m.get(key).is_some(), "metrics.json lacks {key}: {m}");
    }
    // 40 records, batch 8, accumulation 2: 3 steps per epoch, 3 epochs.
    assert_eq!(m["steps"], json!(9));
    assert!(
        m["truncated_tokens"].as_u64().unwrap() > 0,
        "max_length 24 truncates: {m}"
    );
}

/// Interrupt right after the checkpoint of step k, resume from it in the same variant dir:
/// the final bytes equal the uninterrupted run's.
fn check_resume_equivalence(tweak: &dyn Fn(&mut Value), ks: &[u64], name: &str) {
    let d = data(40, 12);
    let base = d.root.join("base");
    let mut j = job(&base, &d.train, Some(&d.validation));
    tweak(&mut j);
    run(&write_job(&base, &j)).unwrap();
    let want = outputs(&base);
    let steps = metrics(&base)["steps"].as_u64().unwrap();
    for &k in ks {
        let k = if k == u64::MAX { steps } else { k };
        let v = d.root.join(format!("cut-{k}"));
        let mut j = job(&v, &d.train, Some(&d.validation));
        tweak(&mut j);
        let ending = run_until(&write_job(&v, &j), Some(k)).unwrap();
        assert_eq!(ending, Ending::StoppedAt(k), "{name}: k={k}");
        assert!(!v.join("checkpoint").exists());
        set(
            &mut j,
            "/resume_from",
            json!(v.join("checkpoints").join(format!("step-{k}"))),
        );
        run(&write_job(&v, &j)).unwrap();
        assert_same(
            &want,
            &outputs(&v),
            &format!("{name}: resumed from step {k} of {steps}"),
        );
    }
}

#[test]
fn resume_is_byte_identical_fp32_softmax() {
    check_resume_equivalence(&|_| {}, &[1, 2, 5, u64::MAX], "fp32 softmax");
}

#[test]
fn resume_is_byte_identical_fp16() {
    check_resume_equivalence(
        &|j| set(j, "/precision", json!("fp16")),
        &[1, 2, 4, u64::MAX],
        "fp16 softmax",
    );
}

#[test]
fn resume_is_byte_identical_crf() {
    check_resume_equivalence(
        &|j| set(j, "/model/decoding/use_crf", json!(true)),
        &[1, 3, u64::MAX],
        "fp32 crf",
    );
    check_resume_equivalence(
        &|j| {
            set(j, "/model/decoding/use_crf", json!(true));
            set(j, "/precision", json!("fp16"));
            set(j, "/hyperparameters/early_stopping/enabled", json!(false));
            set(j, "/hyperparameters/gradient_accumulation_steps", json!(1));
        },
        &[2, u64::MAX],
        "fp16 crf",
    );
}

/// `run_until` with the fp16 loss scale of a fresh (not resumed) run forced to `scale`.
fn run_with_scale(job_path: &Path, stop: Option<u64>, scale: f32) -> Ending {
    let setup = Setup::prepare(read_job(job_path).unwrap()).unwrap();
    let fresh = setup.job.resume_from.is_none();
    let mut t = Trainer::init(setup).unwrap();
    if fresh {
        t.st.scaler.scale = scale;
    }
    let ending = t.train(stop).unwrap();
    if ending == Ending::Finished {
        t.finish().unwrap();
    }
    ending
}

fn fp16_job(v: &Path, d: &Data) -> Value {
    let mut j = job(v, &d.train, Some(&d.validation));
    set(&mut j, "/precision", json!("fp16"));
    set(&mut j, "/hyperparameters/batch_size", json!(4));
    set(
        &mut j,
        "/hyperparameters/gradient_accumulation_steps",
        json!(1),
    );
    set(
        &mut j,
        "/hyperparameters/early_stopping/enabled",
        json!(false),
    );
    j
}

/// Per-token mean losses keep gradients below 1, so the initial 2^16 rarely overflows; a
/// scale of 2^24 must: those steps are skipped and counted, the scale backs off by halves.
#[test]
fn fp16_overflowing_steps_are_skipped_and_the_scale_backs_off() {
    let d = data(40, 12);
    let v = d.root.join("v");
    let path = write_job(&v, &fp16_job(&v, &d));
    assert_eq!(run_with_scale(&path, None, 16_777_216.0), Ending::Finished);
    let m = metrics(&v);
    let skipped = m["skipped_steps"].as_u64().unwrap();
    assert!((1..=12).contains(&skipped), "{m}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(v.join("checkpoint/trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(
        state["loss_scaler"]["scale"].as_f64().unwrap(),
        16_777_216.0 / 2f64.powi(skipped as i32),
        "{state}"
    );
    assert_eq!(
        state["optimizer"]["t"].as_u64().unwrap() + skipped,
        m["steps"].as_u64().unwrap()
    );
    assert!(m["macro-f1"].as_f64().unwrap() > 0.3, "{m}");
    // Resuming in the middle of the back-off, and after it, gives the same bytes.
    for k in [2, 5, 20] {
        let c = d.root.join(format!("cut-{k}"));
        let mut j = fp16_job(&c, &d);
        assert_eq!(
            run_with_scale(&write_job(&c, &j), Some(k), 16_777_216.0),
            Ending::StoppedAt(k)
        );
        set(
            &mut j,
            "/resume_from",
            json!(c.join("checkpoints").join(format!("step-{k}"))),
        );
        run(&write_job(&c, &j)).unwrap();
        assert_same(
            &outputs(&v),
            &outputs(&c),
            &format!("fp16 resumed from step {k}"),
        );
    }
}

#[test]
fn warm_start_loads_weights_only() {
    let d = data(40, 12);
    let a = d.root.join("a");
    run(&write_job(&a, &job(&a, &d.train, Some(&d.validation)))).unwrap();
    let w = d.root.join("w");
    let mut j = job(&w, &d.train, Some(&d.validation));
    set(&mut j, "/init_checkpoint", json!(a.join("checkpoint")));
    let path = write_job(&w, &j);
    let t = Trainer::init(Setup::prepare(read_job(&path).unwrap()).unwrap()).unwrap();
    let exported = ckpt::read_tensors(&a.join("checkpoint/model.safetensors")).unwrap();
    assert_eq!(
        t.params.weight, exported["weight"].1,
        "weights come from model.safetensors"
    );
    assert!(!t.params.all_zero());
    assert!(
        t.m.all_zero() && t.v.all_zero(),
        "optimizer moments start at zero"
    );
    assert_eq!(
        (t.st.step, t.st.epoch, t.st.epoch_step, t.st.adam_t),
        (0, 0, 0, 0)
    );
    assert_eq!(t.st.best_metric, None);
    assert!(t.best.is_none());
    assert_eq!(t.st.scaler, LossScaler::new(false));
    assert_eq!(t.st.rng, Progress::fresh(7, false).rng);
    run(&path).unwrap();
    // A CRF warm start from a softmax checkpoint: weights loaded, transitions start at zero.
    let mut j = job(&d.root.join("c"), &d.train, Some(&d.validation));
    set(&mut j, "/init_checkpoint", json!(a.join("checkpoint")));
    set(&mut j, "/model/decoding/use_crf", json!(true));
    let t = Trainer::init(Setup::prepare(serde_json::from_value(j).unwrap()).unwrap()).unwrap();
    assert_eq!(t.params.weight, exported["weight"].1);
    assert!(t.params.transitions.iter().all(|&x| x == 0.0));
    // A different hash_dim is refused.
    let mut j = job(&d.root.join("h"), &d.train, Some(&d.validation));
    set(&mut j, "/init_checkpoint", json!(a.join("checkpoint")));
    set(&mut j, "/model/features/hash_dim", json!(2048));
    let e = Trainer::init(Setup::prepare(serde_json::from_value(j).unwrap()).unwrap())
        .err()
        .unwrap();
    assert!(e.contains("hash_dim"), "{e}");
}

#[test]
fn continue_from_a_final_checkpoint_restores_full_state() {
    let d = data(40, 12);
    let p = d.root.join("parent");
    let mut j = job(&p, &d.train, Some(&d.validation));
    set(
        &mut j,
        "/hyperparameters/early_stopping/enabled",
        json!(false),
    );
    run(&write_job(&p, &j)).unwrap();
    let c = d.root.join("child");
    let mut j = job(&c, &d.train, Some(&d.validation));
    set(
        &mut j,
        "/hyperparameters/early_stopping/enabled",
        json!(false),
    );
    set(&mut j, "/hyperparameters/epochs", json!(5));
    set(&mut j, "/resume_from", json!(p.join("checkpoint")));
    let path = write_job(&c, &j);
    let t = Trainer::init(Setup::prepare(read_job(&path).unwrap()).unwrap()).unwrap();
    assert_eq!((t.st.step, t.st.epoch, t.st.epoch_step), (9, 3, 0));
    assert!(
        t.st.adam_t == 9 && !t.m.all_zero(),
        "optimizer state restored"
    );
    run(&path).unwrap();
    let m = metrics(&c);
    assert_eq!(
        (m["steps"].as_u64(), m["epochs_completed"].as_u64()),
        (Some(15), Some(5))
    );
    // Nothing left to continue when the parent already reached the epochs.
    set(&mut j, "/hyperparameters/epochs", json!(3));
    let e = Trainer::init(Setup::prepare(serde_json::from_value(j).unwrap()).unwrap())
        .err()
        .unwrap();
    assert!(e.contains("nothing_to_continue"), "{e}");
}

#[test]
fn a_dataset_smaller_than_a_batch_trains_one_partial_batch() {
    let d = data(3, 3);
    let v = d.root.join("v");
    let mut j = job(&v, &d.train, Some(&d.validation));
    set(&mut j, "/hyperparameters/batch_size", json!(16));
    set(
        &mut j,
        "/hyperparameters/early_stopping/enabled",
        json!(false),
    );
    run(&write_job(&v, &j)).unwrap();
    let m = metrics(&v);
    assert_eq!(m["steps"], json!(3), "one step per epoch: {m}");
    assert_eq!(m["epochs_completed"], json!(3));
    let w = ckpt::read_tensors(&v.join("checkpoint/model.safetensors")).unwrap();
    assert!(
        w["weight"].1.iter().any(|&x| x != 0.0),
        "the partial batch moved the weights"
    );
}

#[test]
fn label_map_mismatch_is_refused() {
    let d = data(20, 6);
    let a = d.root.join("a");
    let mut j = job(&a, &d.train, Some(&d.validation));
    set(&mut j, "/hyperparameters/epochs", json!(1));
    run(&write_job(&a, &j)).unwrap();
    let mut types = entity_types();
    types.push("ZIP".into());
    for key in ["/init_checkpoint", "/resume_from"] {
        let b = d.root.join("b");
        let mut j = job(&b, &d.train, Some(&d.validation));
        set(&mut j, "/labels", json!(data::labels(&types)));
        set(&mut j, key, json!(a.join("checkpoint")));
        let e = run(&write_job(&b, &j)).unwrap_err();
        assert!(e.contains("label_map_mismatch"), "{key}: {e}");
        assert!(!b.join("checkpoint").exists());
    }
}

#[test]
fn predict_finds_obvious_entities() {
    let d = data(300, 60);
    let v = d.root.join("v");
    let mut j = job(&v, &d.train, Some(&d.validation));
    set(&mut j, "/hyperparameters/batch_size", json!(16));
    set(
        &mut j,
        "/hyperparameters/gradient_accumulation_steps",
        json!(1),
    );
    set(&mut j, "/hyperparameters/epochs", json!(4));
    set(&mut j, "/save_interval", json!(1000));
    set(&mut j, "/model/preprocessing/max_length", json!(128));
    set(&mut j, "/model/features/hash_dim", json!(65536));
    run(&write_job(&v, &j)).unwrap();
    let text = "Name: Jane Doe. Email: jane.doe@example.com. Phone: 555-0100.";
    let spans = predict(&v.join("checkpoint"), text).unwrap();
    let chars: Vec<char> = text.chars().collect();
    let found: Vec<(String, String)> = spans
        .iter()
        .map(|(s, e, l)| (chars[*s..*e].iter().collect(), l.clone()))
        .collect();
    for want in [("Jane Doe", "NAME"), ("jane.doe@example.com", "EMAIL")] {
        assert!(
            found.iter().any(|(t, l)| t == want.0 && l == want.1),
            "{want:?} not in {found:?}"
        );
    }
}

#[test]
fn holdout_is_used_without_a_validation_file() {
    let d = data(40, 1);
    let v = d.root.join("v");
    let mut j = job(&v, &d.train, None);
    set(&mut j, "/dataset", json!({"train": d.train}));
    set(&mut j, "/hyperparameters/validation_fraction", json!(0.25));
    let setup = Setup::prepare(serde_json::from_value(j.clone()).unwrap()).unwrap();
    assert_eq!(
        (setup.train.len(), setup.eval.len(), setup.eval_source),
        (30, 10, "holdout")
    );
    for e in &setup.eval {
        assert!(
            !setup.train.contains(e),
            "a held-out record is also trained on"
        );
    }
    run(&write_job(&v, &j)).unwrap();
    assert_eq!(metrics(&v)["evaluated_on"], json!("holdout"));
}

#[test]
fn bad_jobs_and_data_are_errors() {
    let d = data(10, 3);
    let v = d.root.join("v");
    let mut j = job(&v, &d.train, Some(&d.validation));
    set(&mut j, "/precision", json!("bf16"));
    let e = run(&write_job(&v, &j)).unwrap_err();
    assert!(
        e.contains("bf16 is not supported by the built-in trainer"),
        "{e}"
    );
    let bad = d.root.join("bad.json");
    std::fs::write(&bad, r#"[{"text":"abc","annotations":[[0,9,"NAME"]]}]"#).unwrap();
    let mut j = job(&v, &bad, Some(&d.validation));
    let e = run(&write_job(&v, &j)).unwrap_err();
    assert!(
        e.contains("dataset_invalid") && e.contains("record[0].annotations[0]"),
        "{e}"
    );
    std::fs::write(&bad, "[]").unwrap();
    let e = run(&write_job(&v, &j)).unwrap_err();
    assert!(e.contains("empty_dataset"), "{e}");
    j["hyperparameters"]["label_smoothing"] = json!(0.1);
    let e = run(&write_job(&v, &j)).unwrap_err();
    assert!(e.contains("label_smoothing"), "{e}");
    let mut j = job(&v, &d.train, Some(&d.validation));
    set(&mut j, "/model/backbone", json!("distilbert-base-uncased"));
    assert!(run(&write_job(&v, &j)).unwrap_err().contains("backbone"));
}

/// Measurements on the full fixture with the shipped defaults (run by hand:
/// `cargo test --release --lib builtin::tests::measure -- --ignored --nocapture`).
#[test]
#[ignore]
fn measure() {
    let dir = tempfile::tempdir().unwrap();
    let d = Data {
        train: fixture("train.json"),
        validation: fixture("validation.json"),
        root: dir.path().to_path_buf(),
        _dir: dir,
    };
    let variants: Vec<(&str, bool, &str)> = vec![
        ("softmax fp32", false, "fp32"),
        ("softmax fp16", false, "fp16"),
        ("crf fp32", true, "fp32"),
        ("crf fp16", true, "fp16"),
    ];
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    };
    for (name, crf, precision) in variants {
        let v = d.root.join(name.replace(' ', "-"));
        let mut j = job(&v, &d.train, Some(&d.validation));
        j["dataset"]["test"] = json!(fixture("test.json"));
        set(
            &mut j,
            "/hyperparameters",
            json!({
                "learning_rate": 0.05, "epochs": 4, "batch_size": 16, "dropout": 0.1,
                "weight_decay": 0.0001, "gradient_accumulation_steps": 1, "warmup_steps": 20,
                "max_grad_norm": 5.0, "validation_fraction": 0.1,
                "early_stopping": {"enabled": true, "patience": 3, "min_delta": 0.001},
                "eval_interval": 50
            }),
        );
        set(&mut j, "/save_interval", json!(50));
        set(&mut j, "/log_interval", json!(10));
        set(&mut j, "/seed", json!(42));
        set(&mut j, "/model/preprocessing/max_length", json!(128));
        set(&mut j, "/model/features/hash_dim", json!(262144));
        set(&mut j, "/model/decoding/use_crf", json!(crf));
        set(&mut j, "/precision", json!(precision));
        if let Some(Value::Object(o)) = env("MEASURE_OVERRIDES") {
            for (k, x) in o {
                set(&mut j, &k, x);
            }
        }
        let t = Instant::now();
        let c = cpu_seconds();
        run(&write_job(&v, &j)).unwrap();
        let m = metrics(&v);
        eprintln!(
            "{name}: wall {:.2}s cpu {:.2}s val macro-f1 {:.4} span-f1 {:.4} loss {:.4} | test macro-f1 {:.4} span-f1 {:.4} | steps {} skipped {} stopped_early {} truncated {}",
            t.elapsed().as_secs_f64(),
            cpu_seconds() - c,
            m["macro-f1"].as_f64().unwrap(),
            m["span-f1"].as_f64().unwrap(),
            m["loss"].as_f64().unwrap(),
            m["test"]["macro-f1"].as_f64().unwrap(),
            m["test"]["span-f1"].as_f64().unwrap(),
            m["steps"],
            m["skipped_steps"],
            m["stopped_early"],
            m["truncated_tokens"]
        );
    }
}

/// The resume-equivalence property over random small configs and datasets (issue 5): a run
/// killed at ANY step k (the state on disk is then the last step checkpoint at or before k,
/// plus the temp dir of the checkpoint write the kill interrupted) and resumed the way
/// `train` resumes (from `latest_step_checkpoint`, or from the start when there is none)
/// ends byte-identical to the uninterrupted run: checkpoint/ files and metrics.json.
mod resume_property {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    struct Case {
        n_train: usize,
        n_val: Option<usize>,
        batch: u64,
        accum: u64,
        epochs: u64,
        warmup: u64,
        save: u64,
        eval: u64,
        max_length: u64,
        crf: bool,
        fp16: bool,
        constant_lr: bool,
        early_stopping: bool,
        dropout: f64,
        seed: u64,
        /// Where the kill lands, as a fraction of the run's steps.
        cut: f64,
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            (3usize..30, prop::option::of(2usize..10), 1u64..10, 1u64..4),
            (1u64..4, 0u64..6, 1u64..4, 1u64..4, 4u64..32),
            (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
            (0.0f64..0.4, 0u64..1000, 0.0f64..1.0),
        )
            .prop_map(
                |(
                    (n_train, n_val, batch, accum),
                    (epochs, warmup, save, eval, max_length),
                    (crf, fp16, constant_lr, early_stopping),
                    (dropout, seed, cut),
                )| Case {
                    n_train,
                    n_val,
                    batch,
                    accum,
                    epochs,
                    warmup,
                    save,
                    eval,
                    max_length,
                    crf,
                    fp16,
                    constant_lr,
                    early_stopping,
                    dropout,
                    seed,
                    cut,
                },
            )
    }

    fn job_of(c: &Case, v: &Path, d: &Data) -> Value {
        let validation = c.n_val.map(|n| slice("validation.json", n, &d.root));
        let train = slice("train.json", c.n_train, &d.root);
        let mut j = job(v, &train, validation.as_deref());
        set(&mut j, "/hyperparameters/batch_size", json!(c.batch));
        set(
            &mut j,
            "/hyperparameters/gradient_accumulation_steps",
            json!(c.accum),
        );
        set(&mut j, "/hyperparameters/epochs", json!(c.epochs));
        set(&mut j, "/hyperparameters/warmup_steps", json!(c.warmup));
        set(&mut j, "/hyperparameters/eval_interval", json!(c.eval));
        set(&mut j, "/hyperparameters/dropout", json!(c.dropout));
        set(
            &mut j,
            "/hyperparameters/early_stopping/enabled",
            json!(c.early_stopping),
        );
        if c.constant_lr {
            j["hyperparameters"]["lr_scheduler"] = json!("constant");
        }
        // A holdout slice needs enough records to leave some for training.
        set(&mut j, "/hyperparameters/validation_fraction", json!(0.2));
        set(&mut j, "/save_interval", json!(c.save));
        set(&mut j, "/seed", json!(c.seed));
        set(
            &mut j,
            "/model/preprocessing/max_length",
            json!(c.max_length),
        );
        set(&mut j, "/model/decoding/use_crf", json!(c.crf));
        set(
            &mut j,
            "/precision",
            json!(if c.fp16 { "fp16" } else { "fp32" }),
        );
        j
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..trainctl_core::testing::seeded_config(24, module_path!())
        })]
        #[test]
        fn a_kill_at_any_step_then_resume_equals_the_uninterrupted_run(c in case()) {
            let d = data(1, 1);
            let base = d.root.join("base");
            let j = job_of(&c, &base, &d);
            run(&write_job(&base, &j)).map_err(TestCaseError::fail)?;
            let want = outputs(&base);
            let steps = metrics(&base)["steps"].as_u64().unwrap();
            prop_assume!(steps >= 1);
            let k = 1 + ((steps - 1) as f64 * c.cut) as u64;
            // The disk after a kill at step k: the last checkpoint at or before k...
            let v = d.root.join("killed");
            let mut j = job_of(&c, &v, &d);
            let last_saved = k / c.save * c.save;
            if last_saved > 0 {
                let ending = run_until(&write_job(&v, &j), Some(last_saved)).map_err(TestCaseError::fail)?;
                prop_assert_eq!(ending, Ending::StoppedAt(last_saved));
            }
            // ...and the torn temp dir of the checkpoint write it interrupted.
            let torn = v.join("checkpoints").join(format!(".step-{}.tmp-4242", last_saved + c.save));
            std::fs::create_dir_all(&torn).unwrap();
            std::fs::write(torn.join("model.safetensors"), b"\x10\x00\x00").unwrap();
            // Resume as `train` does: from the newest valid step checkpoint, if any.
            let from = crate::protocol::latest_step_checkpoint(&trainctl_core::fs::OsFs, &v);
            prop_assert_eq!(
                from.clone(),
                (last_saved > 0).then(|| v.join("checkpoints").join(format!("step-{last_saved}")))
            );
            set(&mut j, "/resume_from", json!(from));
            run(&write_job(&v, &j)).map_err(TestCaseError::fail)?;
            let got = outputs(&v);
            prop_assert_eq!(
                want.keys().collect::<Vec<_>>(),
                got.keys().collect::<Vec<_>>()
            );
            for (name, bytes) in &want {
                prop_assert!(bytes == &got[name], "{} differs after a kill at step {} of {} (resumed from {:?})", name, k, steps, from);
            }
        }
    }
}
