//! The file store: exact on-disk format, reading what MLflow writes, racing creators, and
//! crashes at every persistence step (SimFs) never leaving a store MLflow cannot read.

use super::*;
use crate::fs::sim::SimFs;
use crate::fs::OsFs;
use crate::track::TAG_RUN_NAME;
use crate::track::{resolve_experiment, RecordingTracker, RunFilter};
use proptest::prelude::*;

fn os_store(dir: &Path) -> FileTracker {
    FileTracker::new(Arc::new(OsFs), dir.join("mlruns")).unwrap()
}

fn new_run(experiment_id: &str, name: &str, variant: &str) -> NewRun {
    NewRun {
        experiment_id: experiment_id.into(),
        run_name: name.into(),
        start_time_ms: 1_700_000_000_000,
        tags: BTreeMap::from([("trainctl.variant".to_string(), variant.to_string())]),
    }
}

fn point(key: &str, value: f64, timestamp_ms: i64, step: i64) -> Metric {
    Metric {
        key: key.into(),
        value,
        timestamp_ms,
        step,
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn floats_are_written_as_python_repr() {
    let cases: [(f64, &str); 16] = [
        (3.0, "3.0"),
        (2.5, "2.5"),
        (-0.0, "-0.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e-7, "1e-07"),
        (1e-5, "1e-05"),
        (0.0001, "0.0001"),
        (1e16, "1e+16"),
        (1e20, "1e+20"),
        (1.5e300, "1.5e+300"),
        (9999999999999998.0, "9999999999999998.0"),
        (123456789.123, "123456789.123"),
        (f64::NAN, "nan"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (5e-324, "5e-324"),
    ];
    for (value, python) in cases {
        assert_eq!(python_float_repr(value), python, "{value:?}");
    }
}

proptest! {
    #![proptest_config(trainctl_core::testing::seeded_config(256, module_path!()))]
    #[test]
    fn quoted_yaml_strings_read_back_exactly(s in any::<String>()) {
        let doc = format!("name: {}\n", yaml_quote(&s));
        let back: BTreeMap<String, String> = serde_saphyr::from_str(&doc)
            .map_err(|e| TestCaseError::fail(format!("{doc:?}: {e}")))?;
        prop_assert_eq!(&back["name"], &s);
    }

    #[test]
    fn metric_lines_read_back(value in any::<f64>(), ts in any::<i64>(), step in any::<i64>()) {
        let m = point("k", value, ts, step);
        let back = parse_metric_lines("k", metric_line(&m).as_bytes()).unwrap();
        prop_assert_eq!(back.len(), 1);
        prop_assert!(back[0].value.to_bits() == value.to_bits() || (value.is_nan() && back[0].value.is_nan()));
        prop_assert_eq!((back[0].timestamp_ms, back[0].step), (ts, step));
    }
}

#[test]
fn a_run_is_laid_out_as_mlflows_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = os_store(dir.path());
    let exp = resolve_experiment(&store, "final: training #1").unwrap();
    let run = store
        .create_run(&new_run(&exp.experiment_id, "bert_v1", "1"))
        .unwrap();
    let mut batch = Batch::default();
    batch.params.insert("lr".into(), "0.001".into());
    batch.params.insert("nested/key".into(), "x".into());
    batch.metrics.push(point("loss", 2.5, 1_700_000_001_000, 0));
    batch.metrics.push(point("loss", 1.0, 1_700_000_002_000, 1));
    batch.tags.insert("stage".into(), "final\nmultiline".into());
    store.log_batch(&run.run_id, &batch).unwrap();
    store
        .set_terminated(&run.run_id, RunStatus::Finished, 1_700_000_009_000)
        .unwrap();

    let exp_dir = dir.path().join("mlruns").join(&exp.experiment_id);
    let run_dir = exp_dir.join(&run.run_id);
    assert_eq!(exp.experiment_id.len(), 18);
    assert_eq!(run.run_id.len(), 32);
    assert!(run.run_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(read(&run_dir.join("params/lr")), "0.001");
    assert_eq!(read(&run_dir.join("params/nested/key")), "x");
    assert_eq!(
        read(&run_dir.join("metrics/loss")),
        "1700000001000 2.5 0\n1700000002000 1.0 1\n"
    );
    assert_eq!(read(&run_dir.join("tags/mlflow.runName")), "bert_v1");
    assert_eq!(read(&run_dir.join("tags/trainctl.variant")), "1");
    assert_eq!(read(&run_dir.join("tags/stage")), "final\nmultiline");
    assert!(run_dir.join("artifacts").is_dir());
    let meta = read(&run_dir.join("meta.yaml"));
    for line in [
        "status: 3\n",
        "end_time: 1700000009000\n",
        "source_type: 4\n",
        "tags: []\n",
        "lifecycle_stage: \"active\"\n",
    ] {
        assert!(meta.contains(line), "{line:?} not in\n{meta}");
    }
    let exp_meta = read(&exp_dir.join("meta.yaml"));
    assert!(
        exp_meta.contains("name: \"final: training #1\"\n"),
        "{exp_meta}"
    );
    assert!(exp_meta.contains(&format!("experiment_id: \"{}\"\n", exp.experiment_id)));
    let keys: Vec<&str> = meta.lines().map(|l| l.split(':').next().unwrap()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "keys sorted like PyYAML");
    // No temporaries left anywhere.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let back = store.get_run(&run.run_id).unwrap();
    assert_eq!(back.info.status, RunStatus::Finished);
    assert_eq!(back.info.end_time_ms, Some(1_700_000_009_000));
    assert_eq!(back.params["nested/key"], "x");
    assert_eq!(back.metrics["loss"].step, 1);
    assert_eq!(store.metric_history(&run.run_id, "loss").unwrap().len(), 2);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                pending.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn params_are_write_once_and_a_conflicting_batch_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = os_store(dir.path());
    let exp = resolve_experiment(&store, "e").unwrap();
    let run = store
        .create_run(&new_run(&exp.experiment_id, "r", "1"))
        .unwrap();
    let mut batch = Batch::default();
    batch.params.insert("lr".into(), "0.1".into());
    store.log_batch(&run.run_id, &batch).unwrap();
    store.log_batch(&run.run_id, &batch).unwrap();
    let mut conflicting = Batch::default();
    conflicting.params.insert("a_new".into(), "1".into());
    conflicting.params.insert("lr".into(), "0.2".into());
    conflicting.metrics.push(point("loss", 1.0, 1, 0));
    let err = store.log_batch(&run.run_id, &conflicting).unwrap_err();
    assert_eq!(err.code(), Some(codes::INVALID_PARAMETER_VALUE), "{err}");
    let back = store.get_run(&run.run_id).unwrap();
    assert_eq!(
        back.params,
        BTreeMap::from([("lr".to_string(), "0.1".to_string())])
    );
    assert!(back.metrics.is_empty());
}

#[test]
fn bad_ids_and_keys_are_typed_errors_never_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = os_store(dir.path());
    let exp = resolve_experiment(&store, "e").unwrap();
    let run = store
        .create_run(&new_run(&exp.experiment_id, "r", "1"))
        .unwrap();
    for bad in ["../x", "", "a/b", ".trash", "x".repeat(300).as_str()] {
        assert_eq!(
            store.get_run(bad).unwrap_err().code(),
            Some(codes::RESOURCE_DOES_NOT_EXIST),
            "{bad}"
        );
        assert!(store.create_run(&new_run(bad, "r", "1")).is_err(), "{bad}");
    }
    let mut batch = Batch::default();
    batch.params.insert("../../escape".into(), "x".into());
    assert!(store.log_batch(&run.run_id, &batch).is_err());
    let local = dir.path().join("f.txt");
    std::fs::write(&local, "x").unwrap();
    assert!(store
        .log_artifact(&run.run_id, &local, "../outside.txt")
        .is_err());
    assert!(!dir
        .path()
        .join("mlruns")
        .join(&exp.experiment_id)
        .join("escape")
        .exists());
    let relative = FileTracker::new(Arc::new(OsFs), PathBuf::from("mlruns"));
    assert_eq!(relative.err().map(|e| e.kind()), Some("malformed_uri"));
}

#[test]
fn artifacts_search_and_torn_metric_lines() {
    let dir = tempfile::tempdir().unwrap();
    let store = os_store(dir.path());
    let exp = resolve_experiment(&store, "e").unwrap();
    let r1 = store
        .create_run(&new_run(&exp.experiment_id, "r", "1"))
        .unwrap();
    let r2 = store
        .create_run(&new_run(&exp.experiment_id, "r", "2"))
        .unwrap();
    let local = dir.path().join("metrics.json");
    std::fs::write(&local, b"{\"f1\": 0.5}").unwrap();
    store
        .log_artifact(&r1.run_id, &local, "metrics.json")
        .unwrap();
    store
        .log_artifact(&r1.run_id, &local, "checkpoint/inner.json")
        .unwrap();
    let listed = store.list_artifacts(&r1.run_id, "").unwrap();
    assert_eq!(
        listed,
        vec![
            ArtifactEntry {
                path: "checkpoint".into(),
                is_dir: true,
                size: None
            },
            ArtifactEntry {
                path: "metrics.json".into(),
                is_dir: false,
                size: Some(11)
            },
        ]
    );
    assert_eq!(
        store.list_artifacts(&r1.run_id, "checkpoint").unwrap()[0].path,
        "checkpoint/inner.json"
    );

    let filter = |v: &str| RunFilter {
        tags: BTreeMap::from([("trainctl.variant".to_string(), v.to_string())]),
        run_name: None,
    };
    let found = store.search_runs(&exp.experiment_id, &filter("2")).unwrap();
    assert_eq!(
        found
            .iter()
            .map(|r| r.info.run_id.clone())
            .collect::<Vec<_>>(),
        vec![r2.run_id.clone()]
    );
    assert_eq!(
        store
            .search_runs(&exp.experiment_id, &RunFilter::default())
            .unwrap()
            .len(),
        2
    );

    let metrics_file = dir
        .path()
        .join("mlruns")
        .join(&exp.experiment_id)
        .join(&r2.run_id)
        .join("metrics/loss");
    std::fs::write(&metrics_file, "1 0.5 0\n2 0.25 1\n3 0.1").unwrap();
    let history = store.metric_history(&r2.run_id, "loss").unwrap();
    assert_eq!(history.len(), 2, "the unterminated line is a torn append");
}

/// What MLflow 3.17.2 itself writes (PyYAML style, from the feasibility notes): we read it.
#[test]
fn reads_a_store_written_by_mlflow() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mlruns");
    let exp = root.join("123456789012345678");
    let run = exp.join("0123456789abcdef0123456789abcdef");
    for sub in ["metrics", "params", "tags", "artifacts"] {
        std::fs::create_dir_all(run.join(sub)).unwrap();
    }
    std::fs::create_dir_all(root.join(".trash")).unwrap();
    std::fs::write(
        exp.join("meta.yaml"),
        format!("artifact_location: file://{}/123456789012345678\ncreation_time: 1700000000000\neffective_trace_archival_retention: null\nexperiment_id: '123456789012345678'\nlast_update_time: 1700000000000\nlifecycle_stage: active\nname: hand-written\ntrace_location: null\nworkspace: default\n", root.display()),
    )
    .unwrap();
    std::fs::write(
        run.join("meta.yaml"),
        "artifact_uri: file:///x/artifacts\nend_time: 1700000009000\nentry_point_name: ''\nexperiment_id: '123456789012345678'\nlifecycle_stage: active\nrun_id: 0123456789abcdef0123456789abcdef\nrun_name: hand-run-1\nsource_name: ''\nsource_type: 4\nsource_version: ''\nstart_time: 1700000000000\nstatus: 3\ntags: []\nuser_id: orchestrator\n",
    )
    .unwrap();
    std::fs::write(run.join("params/lr"), "0.001").unwrap();
    std::fs::write(
        run.join("metrics/loss"),
        "1700000001000 2.5 0\n1700000002000 1.25 1\n1700000003000 nan 2\n",
    )
    .unwrap();
    std::fs::write(run.join("tags/mlflow.runName"), "hand-run-1").unwrap();
    let store = FileTracker::new(Arc::new(OsFs), root.clone()).unwrap();
    let found = store.experiment_by_name("hand-written").unwrap().unwrap();
    assert_eq!(found.experiment_id, "123456789012345678");
    let back = store.get_run("0123456789abcdef0123456789abcdef").unwrap();
    assert_eq!(back.info.run_name, "hand-run-1");
    assert_eq!(back.info.status, RunStatus::Finished);
    assert!(back.metrics["loss"].value.is_nan());
    assert_eq!(back.params["lr"], "0.001");
    // Updating keeps MLflow's user_id and the keys we do not own.
    store
        .update_run(&back.info.run_id, RunStatus::Failed, Some(1))
        .unwrap();
    let meta = read(&run.join("meta.yaml"));
    assert!(meta.contains("user_id: \"orchestrator\"\n"), "{meta}");
    assert_eq!(
        store.get_run(&back.info.run_id).unwrap().info.status,
        RunStatus::Failed
    );
    // A deleted experiment in .trash is found, as deleted.
    std::fs::rename(&exp, root.join(".trash/123456789012345678")).unwrap();
    let err = resolve_experiment(&store, "hand-written").unwrap_err();
    assert_eq!(err.kind(), "experiment_deleted", "{err}");
}

#[test]
fn racing_creators_end_with_one_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mlruns");
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let root = root.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let store = FileTracker::new(Arc::new(OsFs), root).unwrap();
                barrier.wait();
                resolve_experiment(&store, "raced").map(|e| e.experiment_id)
            })
        })
        .collect();
    let ids: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
}

/// The lifecycle a final training drives, on any store; errors after a simulated death are
/// expected and ignored.
fn lifecycle(store: &FileTracker) {
    let Ok(exp) = resolve_experiment(store, "crash") else {
        return;
    };
    let Ok(run) = store.create_run(&new_run(&exp.experiment_id, "crash_v1", "1")) else {
        return;
    };
    let mut batch = Batch::default();
    batch.params.insert("lr".into(), "0.001".into());
    batch.params.insert("epochs".into(), "3".into());
    batch.metrics.push(point("loss", 2.5, 1, 0));
    batch.tags.insert("stage".into(), "final".into());
    if store.log_batch(&run.run_id, &batch).is_err() {
        return;
    }
    if store
        .log_metrics(&run.run_id, &[point("loss", 1.5, 2, 1)])
        .is_err()
    {
        return;
    }
    if store
        .log_artifact(&run.run_id, Path::new("/src/metrics.json"), "metrics.json")
        .is_err()
    {
        return;
    }
    let _ = store.set_terminated(&run.run_id, RunStatus::Finished, 9);
}

/// After any crash: the store reads without error, every visible run is whole (meta.yaml
/// parses, the three folders exist) and every param, tag and artifact holds a value that
/// was written (none torn); a new attempt can resolve the experiment and create a run.
fn check_recovered(sim: &Arc<SimFs>, label: &str) {
    let store = FileTracker::new(sim.clone(), PathBuf::from("/store")).unwrap();
    let found = store
        .experiment_by_name("crash")
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    if let Some(exp) = found {
        let runs = store
            .search_runs(&exp.experiment_id, &RunFilter::default())
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        for run in runs {
            assert_eq!(run.info.run_name, "crash_v1", "{label}");
            assert_eq!(
                run.tags.get(TAG_RUN_NAME).map(String::as_str),
                Some("crash_v1"),
                "{label}"
            );
            for (key, value) in &run.params {
                let expected = match key.as_str() {
                    "lr" => "0.001",
                    "epochs" => "3",
                    other => panic!("{label}: unexpected param {other}"),
                };
                assert_eq!(value, expected, "{label}: torn param");
            }
            if let Some(stage) = run.tags.get("stage") {
                assert_eq!(stage, "final", "{label}: torn tag");
            }
            let artifacts = store.list_artifacts(&run.info.run_id, "").unwrap();
            for a in artifacts {
                assert_eq!(
                    (a.path.as_str(), a.size),
                    ("metrics.json", Some(11)),
                    "{label}: torn artifact"
                );
            }
            assert!(
                matches!(run.info.status, RunStatus::Running | RunStatus::Finished),
                "{label}"
            );
        }
    }
    // Every folder in the root is either without meta.yaml (skipped by MLflow) or readable.
    for (path, bytes) in sim.files() {
        if path.file_name().is_some_and(|n| n == "meta.yaml") {
            let text = String::from_utf8(bytes).unwrap();
            let parsed: std::result::Result<serde_json::Value, _> = serde_saphyr::from_str(&text);
            assert!(
                parsed.is_ok(),
                "{label}: half-written {}: {text:?}",
                path.display()
            );
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !(name.starts_with('.')
                && path
                    .parent()
                    .is_some_and(|p| p.ends_with("params") || p.ends_with("tags"))),
            "{label}: temp in a keyed folder: {}",
            path.display()
        );
    }
    let exp = resolve_experiment(&store, "crash")
        .unwrap_or_else(|e| panic!("{label}: retry resolve: {e}"));
    store
        .create_run(&new_run(&exp.experiment_id, "crash_v1", "1"))
        .unwrap_or_else(|e| panic!("{label}: retry create_run: {e}"));
}

#[test]
fn a_crash_at_any_step_leaves_a_readable_store() {
    let seeded = || {
        let sim = Arc::new(SimFs::new());
        sim.write_file_durably(Path::new("/src/metrics.json"), b"{\"f1\": 0.5}")
            .unwrap();
        sim
    };
    let full = seeded();
    let before = full.op_count();
    lifecycle(&FileTracker::new(full.clone(), PathBuf::from("/store")).unwrap());
    let ops = full.op_count() - before;
    assert!(ops > 20, "the lifecycle makes {ops} mutating calls");
    for k in 0..=ops {
        for seed in 0..4u64 {
            let sim = seeded();
            sim.die_after(k);
            lifecycle(&FileTracker::new(sim.clone(), PathBuf::from("/store")).unwrap());
            let report = if seed == 0 {
                sim.crash_all_lost()
            } else {
                sim.crash(seed)
            };
            check_recovered(
                &sim,
                &format!("crash after {k} ops, seed {seed} ({report:?})"),
            );
        }
    }
}

#[test]
fn a_torn_metric_line_is_cut_before_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = os_store(dir.path());
    let exp = resolve_experiment(&store, "e").unwrap();
    let run = store
        .create_run(&new_run(&exp.experiment_id, "r", "1"))
        .unwrap();
    store
        .log_metrics(&run.run_id, &[point("loss", 1.0, 1, 0)])
        .unwrap();
    let file = dir
        .path()
        .join("mlruns")
        .join(&exp.experiment_id)
        .join(&run.run_id)
        .join("metrics/loss");
    let mut torn = read(&file);
    torn.push_str("17000000");
    std::fs::write(&file, torn).unwrap();
    // A new process (RESUME) appends: MLflow must be able to read every line afterwards.
    let resumed = os_store(dir.path());
    resumed
        .log_metrics(&run.run_id, &[point("loss", 0.5, 2, 1)])
        .unwrap();
    resumed
        .log_metrics(&run.run_id, &[point("loss", 0.25, 3, 2)])
        .unwrap();
    assert_eq!(read(&file), "1 1.0 0\n2 0.5 1\n3 0.25 2\n");
}

#[derive(Clone, Debug)]
enum Op {
    CreateRun {
        variant: u8,
    },
    LogParam {
        run: usize,
        key: u8,
        value: u8,
    },
    LogMetric {
        run: usize,
        key: u8,
        value: i16,
        step: u8,
    },
    SetTag {
        run: usize,
        key: u8,
        value: u8,
    },
    Terminate {
        run: usize,
        finished: bool,
        end: u8,
    },
    Reopen {
        run: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3).prop_map(|variant| Op::CreateRun { variant }),
        (0usize..4, 0u8..3, 0u8..2).prop_map(|(run, key, value)| Op::LogParam { run, key, value }),
        (0usize..4, 0u8..2, any::<i16>(), 0u8..4).prop_map(|(run, key, value, step)| {
            Op::LogMetric {
                run,
                key,
                value,
                step,
            }
        }),
        (0usize..4, 0u8..3, 0u8..3).prop_map(|(run, key, value)| Op::SetTag { run, key, value }),
        (0usize..4, any::<bool>(), any::<u8>()).prop_map(|(run, finished, end)| Op::Terminate {
            run,
            finished,
            end
        }),
        (0usize..4).prop_map(|run| Op::Reopen { run }),
    ]
}

/// Applies `op` to one store; run indices map to the store's own run ids (an index past the
/// runs created so far names a run that does not exist).
fn apply(
    store: &dyn Tracker,
    exp: &str,
    runs: &mut Vec<String>,
    op: &Op,
) -> std::result::Result<(), Option<String>> {
    let id = |run: &usize| {
        runs.get(*run)
            .cloned()
            .unwrap_or_else(|| "0000missing".into())
    };
    let outcome = match op {
        Op::CreateRun { variant } => store
            .create_run(&new_run(
                exp,
                &format!("run_v{variant}"),
                &variant.to_string(),
            ))
            .map(|info| runs.push(info.run_id)),
        Op::LogParam { run, key, value } => store.log_params(
            &id(run),
            &BTreeMap::from([(format!("p{key}"), format!("v{value}"))]),
        ),
        Op::LogMetric {
            run,
            key,
            value,
            step,
        } => store.log_metrics(
            &id(run),
            &[point(
                &format!("m{key}"),
                f64::from(*value) / 8.0,
                i64::from(*step) * 10,
                i64::from(*step),
            )],
        ),
        Op::SetTag { run, key, value } => store.set_tags(
            &id(run),
            &BTreeMap::from([(format!("t{key}"), format!("v{value}"))]),
        ),
        Op::Terminate { run, finished, end } => {
            let status = if *finished {
                RunStatus::Finished
            } else {
                RunStatus::Failed
            };
            store.set_terminated(&id(run), status, i64::from(*end))
        }
        Op::Reopen { run } => store.reopen_run(&id(run)).map(|_| ()),
    };
    outcome.map_err(|e| e.code().map(str::to_string))
}

/// A run without its store-specific ids.
/// Metric histories as (timestamp, step, value bits) per key.
type Histories = Vec<Vec<(i64, i64, u64)>>;

fn projection(store: &dyn Tracker, run_id: &str) -> (Run, Histories) {
    let mut run = store.get_run(run_id).unwrap();
    run.info.run_id.clear();
    run.info.experiment_id.clear();
    run.info.artifact_uri.clear();
    let histories = ["m0", "m1"]
        .iter()
        .map(|k| {
            store
                .metric_history(run_id, k)
                .unwrap()
                .iter()
                .map(|m| (m.step, m.timestamp_ms, m.value.to_bits()))
                .collect()
        })
        .collect();
    (run, histories)
}

proptest! {
    #![proptest_config(trainctl_core::testing::seeded_config(64, module_path!()))]
    /// Model-based: the file store answers every call as the recorder (which has the
    /// server's semantics) does, and ends with the same runs.
    #[test]
    fn the_file_store_behaves_like_the_reference_recorder(ops in proptest::collection::vec(op(), 1..40)) {
        let sim: Arc<SimFs> = Arc::new(SimFs::new());
        let file = FileTracker::new(sim, PathBuf::from("/store")).unwrap();
        let reference = RecordingTracker::new();
        let file_exp = resolve_experiment(&file, "model").unwrap().experiment_id;
        let ref_exp = resolve_experiment(&reference, "model").unwrap().experiment_id;
        let (mut file_runs, mut ref_runs) = (Vec::new(), Vec::new());
        for (i, op) in ops.iter().enumerate() {
            let got = apply(&file, &file_exp, &mut file_runs, op);
            let want = apply(&reference, &ref_exp, &mut ref_runs, op);
            prop_assert_eq!(got, want, "op {} {:?}", i, op);
        }
        prop_assert_eq!(file_runs.len(), ref_runs.len());
        for (f, r) in file_runs.iter().zip(&ref_runs) {
            prop_assert_eq!(projection(&file, f), projection(&reference, r));
        }
        for variant in 0..3u8 {
            let filter = RunFilter { tags: BTreeMap::from([("trainctl.variant".to_string(), variant.to_string())]), run_name: None };
            let count = |store: &dyn Tracker, exp: &str| store.search_runs(exp, &filter).unwrap().len();
            prop_assert_eq!(count(&file, &file_exp), count(&reference, &ref_exp));
        }
    }
}
