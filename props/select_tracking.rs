//! Selection candidates from the tracking store (docs/contract.md, "Best-model selection", issue
//! 7): HPO trial and refit runs seeded into a temp project's file store, through the Tracker API
//! and through MLflow's own Python client, then `trainctl select` (no `--trials`) and `trainctl
//! pipeline` read them.

use crate::support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use trainctl::track::{Batch, FileTracker, Metric, NewRun, RunStatus, Tracker};

/// The experiment `select` searches on the shipped config: `<experiment>-hpo-<model>`.
const HPO_EXPERIMENT: &str = "resume_ner_baseline-hpo-builtin";

/// One seeded run.
struct Seed<'a> {
    name: &'a str,
    stage: &'a str,
    /// (study, trial) key hashes.
    keys: Option<(&'a str, &'a str)>,
    metrics: &'a [(&'a str, f64)],
    params: &'a [(&'a str, &'a str)],
    tags: &'a [(&'a str, &'a str)],
    status: RunStatus,
    start_ms: i64,
}

impl<'a> Seed<'a> {
    fn trial(name: &'a str, trial: &'a str, metrics: &'a [(&'a str, f64)]) -> Seed<'a> {
        Seed {
            name,
            stage: "hpo",
            keys: Some(("study-1", trial)),
            metrics,
            params: &[],
            tags: &[],
            status: RunStatus::Finished,
            start_ms: 1_764_400_000_000,
        }
    }
}

fn store(root: &Path) -> FileTracker {
    FileTracker::new(Arc::new(trainctl::fs::OsFs), root.join("mlruns")).expect("file store")
}

/// Seeds `runs` into `experiment`; returns name → run id.
fn seed(tracker: &dyn Tracker, experiment: &str, runs: &[Seed]) -> BTreeMap<String, String> {
    let exp = trainctl::track::resolve_experiment(tracker, experiment).expect("experiment");
    let mut ids = BTreeMap::new();
    for (i, s) in runs.iter().enumerate() {
        let mut tags: BTreeMap<String, String> = [("code.stage", s.stage)]
            .into_iter()
            .chain(s.tags.iter().copied())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some((study, trial)) = s.keys {
            tags.insert("code.study_key_hash".into(), study.into());
            tags.insert("code.trial_key_hash".into(), trial.into());
        }
        let start = s.start_ms + i as i64 * 1000;
        let info = tracker
            .create_run(&NewRun {
                experiment_id: exp.experiment_id.clone(),
                run_name: s.name.into(),
                start_time_ms: start,
                tags,
            })
            .expect("create run");
        let batch = Batch {
            params: s
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metrics: s
                .metrics
                .iter()
                .map(|(k, v)| Metric {
                    key: k.to_string(),
                    value: *v,
                    timestamp_ms: start + 10,
                    step: 1,
                })
                .collect(),
            tags: BTreeMap::new(),
        };
        tracker.log_batch(&info.run_id, &batch).expect("log batch");
        if s.status.is_terminal() {
            tracker
                .set_terminated(&info.run_id, s.status, start + 500)
                .expect("terminate");
        }
        ids.insert(s.name.to_string(), info.run_id);
    }
    ids
}

fn select(project: &support::Project, overrides: &[&str]) -> (i32, Value) {
    let mut args = vec!["--json".to_string()];
    for o in overrides {
        args.push("-o".into());
        args.push(o.to_string());
    }
    args.push("select".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = project.run(&args);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}\n{stderr}"));
    (code, doc)
}

fn ranked_ids(doc: &Value) -> Vec<String> {
    doc["ranking"]
        .as_array()
        .unwrap_or_else(|| panic!("no ranking: {doc}"))
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect()
}

/// The composite decides (no accuracy rule), so the objective order is visible.
const BY_COMPOSITE: &str = "best_model_selection:thresholds.accuracy_threshold=null";

#[test]
fn select_reads_hpo_runs_joins_refits_excludes_nan_and_keys_the_cache_on_the_runs() {
    let project = support::Project::new();
    let tracker = store(project.root());
    let lat = "latency_batch_1_ms";
    let ids = seed(
        &tracker,
        HPO_EXPERIMENT,
        &[
            Seed::trial("trial-a", "t-a", &[("macro-f1", 0.90), (lat, 2.0)]),
            Seed {
                params: &[("learning_rate", "0.02"), ("epochs", "3")],
                ..Seed::trial("trial-b", "t-b", &[("macro-f1", 0.95), (lat, 2.0)])
            },
            // The refit of trial-b: its run id, params and tags are the candidate's.
            Seed {
                stage: "hpo_refit",
                params: &[
                    ("learning_rate", "0.02"),
                    ("epochs", "4"),
                    ("optimizer", "adamw"),
                ],
                tags: &[("code.trained_on_full_data", "true")],
                ..Seed::trial("refit-b", "t-b", &[])
            },
            Seed::trial("trial-nan", "t-nan", &[("macro-f1", f64::NAN), (lat, 1.0)]),
            // Not candidates: unfinished, another stage, a refit of no trial.
            Seed {
                status: RunStatus::Running,
                ..Seed::trial("trial-running", "t-r", &[("macro-f1", 0.99), (lat, 0.5)])
            },
            Seed {
                stage: "final_training",
                ..Seed::trial("final", "t-f", &[("macro-f1", 1.0), (lat, 0.5)])
            },
            Seed {
                stage: "hpo_refit",
                ..Seed::trial("refit-orphan", "t-none", &[("macro-f1", 1.0), (lat, 0.5)])
            },
        ],
    );
    // HPO runs of another experiment are not searched.
    seed(
        &tracker,
        "resume_ner_baseline",
        &[Seed::trial(
            "elsewhere",
            "t-x",
            &[("macro-f1", 1.0), (lat, 0.1)],
        )],
    );

    let (code, first) = select(&project, &[BY_COMPOSITE]);
    assert_eq!(
        (code, first["decision"].as_str()),
        (0, Some("new")),
        "{first}"
    );
    let selected = &first["selected"];
    assert_eq!(selected["run_id"], ids["refit-b"].as_str(), "{first}");
    assert_eq!(selected["trial_run_id"], ids["trial-b"].as_str());
    assert_eq!(
        (
            selected["study_key_hash"].as_str(),
            selected["trial_key_hash"].as_str()
        ),
        (Some("study-1"), Some("t-b"))
    );
    assert_eq!(selected["objective"], 0.95, "the trial's objective");
    // Params come back typed from MLflow's strings, from the refit run.
    assert_eq!(selected["params"]["learning_rate"], 0.02);
    assert_eq!(selected["params"]["epochs"], 4);
    assert_eq!(selected["params"]["optimizer"], "adamw");
    assert_eq!(selected["trained_on_full_data"], true);
    let mut ranked = ranked_ids(&first);
    ranked.sort();
    let mut expected = vec![ids["refit-b"].clone(), ids["trial-a"].clone()];
    expected.sort();
    assert_eq!(
        ranked, expected,
        "only finished hpo runs of the HPO experiment"
    );
    let excluded = first["excluded"].to_string();
    assert!(excluded.contains(&ids["trial-nan"]), "{excluded}");
    let warnings = first["warnings"].to_string();
    assert!(
        warnings.contains(&ids["trial-nan"]),
        "NaN named: {warnings}"
    );
    assert!(warnings.contains(&ids["trial-running"]), "{warnings}");
    assert!(warnings.contains(&ids["refit-orphan"]), "{warnings}");
    let record: Value = {
        let dir = project.root().join("outputs/cache/best_model_selection");
        let latest =
            std::fs::read(dir.join("latest_best_model_selection_cache.json")).expect("latest view");
        serde_json::from_slice(&latest).unwrap()
    };
    assert!(
        record.to_string().contains(HPO_EXPERIMENT),
        "the record names its source: {record}"
    );

    // Same runs, same metrics: the cached result.
    let (code, again) = select(&project, &[BY_COMPOSITE]);
    assert_eq!(
        (code, again["decision"].as_str()),
        (0, Some("reuse")),
        "{again}"
    );
    assert_eq!(again["key"], first["key"]);

    // A metric value changes in the store: a new key, a new winner.
    tracker
        .log_metrics(
            &ids["trial-a"],
            &[Metric {
                key: "macro-f1".into(),
                value: 0.97,
                timestamp_ms: 1_764_500_000_000,
                step: 2,
            }],
        )
        .unwrap();
    let (code, moved) = select(&project, &[BY_COMPOSITE]);
    assert_eq!(
        (code, moved["decision"].as_str()),
        (0, Some("new")),
        "{moved}"
    );
    assert_ne!(moved["key"], first["key"]);
    assert_eq!(moved["selected"]["run_id"], ids["trial-a"].as_str());

    // A new run joins the candidate set: a new key again.
    seed(
        &tracker,
        HPO_EXPERIMENT,
        &[Seed::trial(
            "trial-late",
            "t-late",
            &[("macro-f1", 0.5), (lat, 9.0)],
        )],
    );
    let (code, grown) = select(&project, &[BY_COMPOSITE]);
    assert_eq!(
        (code, grown["decision"].as_str()),
        (0, Some("new")),
        "{grown}"
    );
    assert_ne!(grown["key"], moved["key"]);
    assert_eq!(grown["ranking"].as_array().unwrap().len(), 3);
}

#[test]
fn select_from_the_store_honours_the_objective_direction() {
    let project = support::Project::new();
    let tracker = store(project.root());
    let ids = seed(
        &tracker,
        HPO_EXPERIMENT,
        &[
            Seed::trial("low-loss", "t1", &[("loss", 0.1), ("macro-f1", 0.80)]),
            Seed::trial("high-loss", "t2", &[("loss", 0.9), ("macro-f1", 0.99)]),
        ],
    );
    let no_latency = "best_model_selection:scoring.latency_weight=0";
    for (metric, direction, winner) in [
        ("loss", "minimize", "low-loss"),
        ("loss", "maximize", "high-loss"),
        ("macro-f1", "maximize", "high-loss"),
        ("macro-f1", "minimize", "low-loss"),
    ] {
        let m = format!("best_model_selection:objective.metric={metric}");
        let d = format!("best_model_selection:objective.direction={direction}");
        let (code, doc) = select(&project, &[BY_COMPOSITE, no_latency, &m, &d]);
        assert_eq!(code, 0, "{metric} {direction}: {doc}");
        assert_eq!(
            doc["selected"]["run_id"],
            ids[winner].as_str(),
            "{metric} {direction}: {doc}"
        );
    }
}

#[test]
fn no_store_no_experiment_or_no_finite_objective_is_no_eligible_candidates() {
    // No store at all: nothing is created by looking. (With the offline fixture present,
    // `select` falls back to it as `pipeline` does: props/ux.rs; here it is removed.)
    let project = support::Project::new();
    std::fs::remove_file(project.root().join(trainctl::pipeline::DEFAULT_TRIALS))
        .expect("remove the fixture trials");
    let before = support::snapshot(project.root());
    let (code, doc) = select(&project, &[]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("no_eligible_candidates")),
        "{doc}"
    );
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(HPO_EXPERIMENT) && message.contains("--trials"),
        "{message}"
    );
    assert!(support::changed(&before, &support::snapshot(project.root())).is_empty());

    // A store whose HPO runs all lack a finite objective.
    let tracker = store(project.root());
    let ids = seed(
        &tracker,
        HPO_EXPERIMENT,
        &[
            Seed::trial(
                "nan",
                "t1",
                &[("macro-f1", f64::NAN), ("latency_batch_1_ms", 1.0)],
            ),
            Seed::trial(
                "inf",
                "t2",
                &[("macro-f1", f64::INFINITY), ("latency_batch_1_ms", 1.0)],
            ),
            Seed::trial("none", "t3", &[("latency_batch_1_ms", 1.0)]),
        ],
    );
    let (code, doc) = select(&project, &[]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("no_eligible_candidates")),
        "{doc}"
    );
    let message = doc["error"]["message"].as_str().unwrap();
    for id in ids.values() {
        assert!(message.contains(id.as_str()), "{id} named: {message}");
    }
    assert!(
        !project
            .root()
            .join("outputs/cache/best_model_selection")
            .exists(),
        "no record without a winner"
    );

    // The selection stage switched off, no --trials: a usage error, not a guess.
    let (code, doc) = select(&project, &["mlflow:tracking.selection.enabled=false"]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (2, Some("usage")),
        "{doc}"
    );

    // An unreachable store is tracking_unavailable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("mlflow:tracking.uri=http://127.0.0.1:{port}");
    let (code, doc) = select(&project, &[&uri]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("tracking_unavailable")),
        "{doc}"
    );
}

#[test]
fn hpo_runs_logged_by_mlflow_itself_are_selected() {
    let Some(python) = support::mlflow::python("hpo_runs_logged_by_mlflow_itself_are_selected")
    else {
        return;
    };
    let project = support::Project::new();
    let uri = format!("file:{}", project.root().join("mlruns").display());
    let script = r#"
import json, sys, mlflow
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
exp = client.create_experiment(sys.argv[2])
ids = {}
for name, stage, trial, f1, lat in [
    ("t0", "hpo", "k0", 0.80, 2.0),
    ("t1", "hpo", "k1", 0.93, 2.0),
    ("t1-refit", "hpo_refit", "k1", None, None),
    ("t2", "hpo", "k2", float("nan"), 1.0),
]:
    run = client.create_run(exp, run_name=name, tags={
        "code.stage": stage, "code.study_key_hash": "s", "code.trial_key_hash": trial})
    rid = run.info.run_id
    if f1 is not None:
        client.log_metric(rid, "macro-f1", f1, step=1)
        client.log_metric(rid, "latency_batch_1_ms", lat, step=1)
    client.log_param(rid, "learning_rate", "0.03")
    client.set_terminated(rid, "FINISHED")
    ids[name] = rid
print(json.dumps(ids))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, &uri, HPO_EXPERIMENT])
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "seeding with mlflow failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: BTreeMap<String, String> =
        serde_json::from_slice(&out.stdout).expect("run ids as JSON");
    let (code, doc) = select(&project, &[BY_COMPOSITE]);
    assert_eq!((code, doc["decision"].as_str()), (0, Some("new")), "{doc}");
    assert_eq!(doc["selected"]["run_id"], ids["t1-refit"].as_str(), "{doc}");
    assert_eq!(doc["selected"]["trial_run_id"], ids["t1"].as_str());
    assert_eq!(doc["selected"]["objective"], 0.93);
    assert_eq!(doc["selected"]["params"]["learning_rate"], 0.03);
    assert!(
        doc["excluded"].to_string().contains(&ids["t2"]),
        "NaN excluded: {doc}"
    );
    assert_eq!(doc["ranking"].as_array().unwrap().len(), 2, "{doc}");
}

#[test]
fn pipeline_selects_from_the_store_before_the_shipped_trials_file() {
    let project = support::Project::new();
    let tracker = store(project.root());
    let ids = seed(
        &tracker,
        HPO_EXPERIMENT,
        &[
            Seed {
                params: &[("learning_rate", "0.03"), ("epochs", "1")],
                ..Seed::trial(
                    "best",
                    "t1",
                    &[("macro-f1", 0.99), ("latency_batch_1_ms", 1.0)],
                )
            },
            Seed::trial(
                "worse",
                "t2",
                &[("macro-f1", 0.50), ("latency_batch_1_ms", 1.0)],
            ),
        ],
    );
    let (code, stdout, stderr) = project.run(&["--json", "pipeline"]);
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    assert_eq!(code, 0, "{doc}\n{stderr}");
    let selection = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "selection")
        .expect("selection step")
        .clone();
    assert_eq!(selection["status"], "ok", "{selection}");
    assert!(
        selection["detail"]["source"]
            .as_str()
            .is_some_and(|s| s.contains(HPO_EXPERIMENT)),
        "{selection}"
    );
    assert_eq!(
        selection["detail"]["selected"]["run_id"],
        ids["best"].as_str()
    );
    let train = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "train")
        .expect("train step");
    assert_eq!(
        train["detail"]["hyperparameters"]["learning_rate"], 0.03,
        "the tracked run's params are the best configuration: {train}"
    );
}

#[test]
fn a_tracked_refit_checkpoint_artifact_hands_off_to_a_best_selected_train() {
    let project = support::Project::new();
    // A real checkpoint to log as the refit's artifact.
    let (code, trained) = project.run_json(&["-o", "training.epochs=1", "train"]);
    assert_eq!(code, 0, "{trained}");
    let checkpoint = Path::new(trained["output_dir"].as_str().unwrap()).join("checkpoint");
    let tracker = store(project.root());
    let ids = seed(
        &tracker,
        HPO_EXPERIMENT,
        &[
            Seed::trial(
                "trial",
                "t1",
                &[("macro-f1", 0.9), ("latency_batch_1_ms", 1.0)],
            ),
            Seed {
                stage: "hpo_refit",
                ..Seed::trial("refit", "t1", &[])
            },
        ],
    );
    let logged =
        trainctl::track::log_artifact_dir(&tracker, &ids["refit"], &checkpoint, "checkpoint")
            .expect("log the checkpoint");
    assert!(logged >= 2, "config.json and weights logged");
    let (code, selected) = select(&project, &[]);
    assert_eq!(code, 0, "{selected}");
    let from_store = selected["selected"]["checkpoint"]
        .as_str()
        .unwrap_or_else(|| panic!("a checkpoint from the refit's artifacts: {selected}"))
        .to_string();
    assert!(
        from_store.starts_with(project.root().join("mlruns").to_str().unwrap())
            && from_store.ends_with(&format!("{}/artifacts/checkpoint", ids["refit"])),
        "{from_store}"
    );
    // The selection record hands the artifact checkpoint to a best_selected training.
    let (code, doc) = project.run_json(&[
        "-o",
        "source.type=best_selected",
        "-o",
        "training.epochs=1",
        "train",
    ]);
    assert_eq!((code, doc["decision"].as_str()), (0, Some("new")), "{doc}");
    assert_eq!(
        doc["source"]["init_checkpoint"],
        from_store.as_str(),
        "{doc}"
    );
    assert_ne!(
        doc["spec_fp"], trained["spec_fp"],
        "warm start is part of spec_fp"
    );
    let meta: Value = serde_json::from_slice(
        &std::fs::read(Path::new(doc["output_dir"].as_str().unwrap()).join("metadata.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["source"]["selection"]["run_id"], ids["refit"].as_str());
    assert_eq!(
        meta["source"]["selection"]["trial_run_id"],
        ids["trial"].as_str()
    );
}
