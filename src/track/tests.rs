//! The port's shared rules: validation, batch splitting, the latest-metric rule, get-or-create
//! under a lost race, and the recording backend's server semantics and fault injection.

use super::recording::Fault;
use super::*;
use proptest::prelude::*;

fn new_run(experiment_id: &str, name: &str) -> NewRun {
    NewRun {
        experiment_id: experiment_id.into(),
        run_name: name.into(),
        start_time_ms: 1_700_000_000_000,
        tags: BTreeMap::from([("trainctl.variant".to_string(), "1".to_string())]),
    }
}

fn metric(key: &str, value: f64, timestamp_ms: i64, step: i64) -> Metric {
    Metric {
        key: key.into(),
        value,
        timestamp_ms,
        step,
    }
}

#[test]
fn keys_follow_mlflows_alphabet_and_never_escape_their_folder() {
    for good in [
        "lr",
        "train/loss",
        "a.b-c_d e:f",
        "ümlaut",
        &"k".repeat(250),
    ] {
        assert!(validate_key("param", good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "a@b",
        "a/../b",
        "../x",
        "/abs",
        "a//b",
        "a/",
        ".",
        "x/./y",
        &"k".repeat(251),
        "a\\b",
        "a\0b",
    ] {
        let err = validate_key("param", bad).expect_err(bad);
        assert_eq!(err.code(), Some(codes::INVALID_PARAMETER_VALUE), "{bad}");
    }
    for bad in ["", "../a", "a/../../b", "/etc/passwd", "a//b", "a\\b"] {
        assert!(validate_artifact_path(bad).is_err(), "{bad}");
    }
    assert!(validate_artifact_path("checkpoint/model.safetensors").is_ok());
}

#[test]
fn value_limits_are_mlflows() {
    let mut batch = Batch::default();
    batch
        .params
        .insert("p".into(), "x".repeat(PARAM_VALUE_LEN_MAX));
    assert!(validate_batch(&batch).is_ok());
    batch
        .params
        .insert("p".into(), "x".repeat(PARAM_VALUE_LEN_MAX + 1));
    assert!(validate_batch(&batch).is_err());
    let mut batch = Batch::default();
    batch.tags.insert("t".into(), "é".repeat(TAG_VALUE_LEN_MAX));
    assert!(
        validate_batch(&batch).is_ok(),
        "limits count characters, not bytes"
    );
    assert!(validate_experiment_name(&"e".repeat(EXPERIMENT_NAME_LEN_MAX + 1)).is_err());
    assert!(validate_experiment_name(" ").is_err());
}

#[test]
fn latest_metric_is_the_greatest_step_then_timestamp_then_value() {
    let points = [
        metric("loss", 3.0, 10, 0),
        metric("loss", 1.0, 5, 2),
        metric("loss", 2.0, 9, 2),
        metric("loss", 0.5, 1, 1),
        metric("acc", 0.1, 1, 0),
    ];
    let latest = latest_metrics(&points);
    assert_eq!(latest["loss"], metric("loss", 2.0, 9, 2));
    assert_eq!(latest["acc"].value, 0.1);
}

proptest! {
    #![proptest_config(trainctl_core::testing::seeded_config(256, module_path!()))]
    #[test]
    fn split_batches_respect_the_limits_and_lose_nothing(
        n_params in 0usize..350,
        n_tags in 0usize..250,
        n_metrics in 0usize..2600,
    ) {
        let batch = Batch {
            params: (0..n_params).map(|i| (format!("p{i:04}"), i.to_string())).collect(),
            tags: (0..n_tags).map(|i| (format!("t{i:04}"), i.to_string())).collect(),
            metrics: (0..n_metrics).map(|i| metric("loss", i as f64, i as i64, i as i64)).collect(),
        };
        let pieces = split_batch(&batch);
        let mut rebuilt = Batch::default();
        for piece in &pieces {
            prop_assert!(!piece.is_empty());
            prop_assert!(piece.params.len() <= BATCH_PARAMS_MAX);
            prop_assert!(piece.tags.len() <= BATCH_TAGS_MAX);
            prop_assert!(piece.metrics.len() <= BATCH_METRICS_MAX);
            prop_assert!(piece.entity_count() <= BATCH_ENTITIES_MAX);
            rebuilt.params.extend(piece.params.clone());
            rebuilt.tags.extend(piece.tags.clone());
            rebuilt.metrics.extend(piece.metrics.clone());
        }
        prop_assert_eq!(rebuilt, batch.clone());
        // Exactly as many pieces as the tightest limit needs.
        let needed = batch.entity_count().div_ceil(BATCH_ENTITIES_MAX)
            .max(n_params.div_ceil(BATCH_PARAMS_MAX))
            .max(n_tags.div_ceil(BATCH_TAGS_MAX))
            .max(n_metrics.div_ceil(BATCH_METRICS_MAX));
        prop_assert_eq!(pieces.len(), needed);
    }
}

#[test]
fn resolve_creates_then_finds_the_same_experiment() {
    let tracker = RecordingTracker::new();
    let first = resolve_experiment(&tracker, "final-training").unwrap();
    let again = resolve_experiment(&tracker, "final-training").unwrap();
    assert_eq!(first, again);
    assert_eq!(tracker.experiments().len(), 1);
}

/// A store where another process creates the experiment between our lookup and our
/// create: the create fails with RESOURCE_ALREADY_EXISTS.
struct LosesTheCreationRace(RecordingTracker);

impl Tracker for LosesTheCreationRace {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        self.0.experiment_by_name(name)
    }
    fn create_experiment(&self, name: &str) -> Result<String> {
        self.0.insert_experiment(name);
        self.0.create_experiment(name)
    }
    fn create_run(&self, run: &NewRun) -> Result<RunInfo> {
        self.0.create_run(run)
    }
    fn get_run(&self, run_id: &str) -> Result<Run> {
        self.0.get_run(run_id)
    }
    fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time_ms: Option<i64>,
    ) -> Result<RunInfo> {
        self.0.update_run(run_id, status, end_time_ms)
    }
    fn log_batch(&self, run_id: &str, batch: &Batch) -> Result<()> {
        self.0.log_batch(run_id, batch)
    }
    fn log_artifact(&self, run_id: &str, local_file: &Path, artifact_path: &str) -> Result<()> {
        self.0.log_artifact(run_id, local_file, artifact_path)
    }
    fn list_artifacts(&self, run_id: &str, dir: &str) -> Result<Vec<ArtifactEntry>> {
        self.0.list_artifacts(run_id, dir)
    }
    fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        self.0.metric_history(run_id, key)
    }
    fn search_runs(&self, experiment_id: &str, filter: &RunFilter) -> Result<Vec<Run>> {
        self.0.search_runs(experiment_id, filter)
    }
}

#[test]
fn a_lost_creation_race_ends_with_the_winners_experiment() {
    let tracker = LosesTheCreationRace(RecordingTracker::new());
    let resolved = resolve_experiment(&tracker, "raced").unwrap();
    let all = tracker.0.experiments();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(resolved.experiment_id, all[0].experiment_id);
}

#[test]
fn a_deleted_experiment_is_its_own_error() {
    let tracker = RecordingTracker::new();
    resolve_experiment(&tracker, "gone").unwrap();
    assert!(tracker.delete_experiment("gone"));
    let err = resolve_experiment(&tracker, "gone").unwrap_err();
    assert_eq!(err.kind(), "experiment_deleted", "{err}");
    assert!(!err.is_transient());
}

#[test]
fn recording_has_the_servers_semantics() {
    let tracker = RecordingTracker::new();
    let exp = resolve_experiment(&tracker, "e").unwrap();
    let run = tracker
        .create_run(&new_run(&exp.experiment_id, "r1"))
        .unwrap();
    let mut batch = Batch::default();
    batch.params.insert("lr".into(), "0.1".into());
    batch.metrics.push(metric("loss", 1.0, 1, 0));
    tracker.log_batch(&run.run_id, &batch).unwrap();
    tracker.log_batch(&run.run_id, &batch).unwrap(); // same param value again: fine

    let mut conflicting = Batch::default();
    conflicting.params.insert("lr".into(), "0.2".into());
    conflicting.tags.insert("late".into(), "x".into());
    let err = tracker.log_batch(&run.run_id, &conflicting).unwrap_err();
    assert_eq!(err.code(), Some(codes::INVALID_PARAMETER_VALUE));
    let stored = tracker.get_run(&run.run_id).unwrap();
    assert_eq!(stored.params["lr"], "0.1");
    assert!(
        !stored.tags.contains_key("late"),
        "a rejected batch changes nothing"
    );
    assert_eq!(stored.tags[TAG_RUN_NAME], "r1");

    let missing = tracker.get_run("nope").unwrap_err();
    assert_eq!(missing.code(), Some(codes::RESOURCE_DOES_NOT_EXIST));
    let no_exp = tracker.create_run(&new_run("999", "r")).unwrap_err();
    assert_eq!(no_exp.code(), Some(codes::RESOURCE_DOES_NOT_EXIST));
}

#[test]
fn lifecycle_finish_fail_and_reopen() {
    let tracker = RecordingTracker::new();
    let exp = resolve_experiment(&tracker, "e").unwrap();
    let run = tracker
        .create_run(&new_run(&exp.experiment_id, "r1"))
        .unwrap();
    tracker
        .set_terminated(&run.run_id, RunStatus::Failed, 5)
        .unwrap();
    assert_eq!(
        tracker.get_run(&run.run_id).unwrap().info.status,
        RunStatus::Failed
    );
    let before = tracker.reopen_run(&run.run_id).unwrap();
    assert_eq!(before.info.status, RunStatus::Failed);
    let now = tracker.get_run(&run.run_id).unwrap().info;
    assert_eq!((now.status, now.end_time_ms), (RunStatus::Running, None));
    tracker
        .set_terminated(&run.run_id, RunStatus::Finished, 9)
        .unwrap();
    let done = tracker.get_run(&run.run_id).unwrap().info;
    assert_eq!(
        (done.status, done.end_time_ms),
        (RunStatus::Finished, Some(9))
    );
    assert!(tracker
        .set_terminated(&run.run_id, RunStatus::Running, 1)
        .is_err());
    let found = tracker
        .search_runs(
            &exp.experiment_id,
            &RunFilter {
                tags: BTreeMap::from([("trainctl.variant".into(), "1".into())]),
                run_name: Some("r1".into()),
            },
        )
        .unwrap();
    assert_eq!(found.len(), 1);
}

#[test]
fn an_injected_fault_fails_exactly_the_kth_call_and_changes_nothing() {
    let tracker = RecordingTracker::with_fault(Fault {
        at_call: 2,
        sticky: false,
    });
    tracker.create_experiment("a").unwrap();
    let err = tracker.create_experiment("b").unwrap_err();
    assert_eq!(err.kind(), "unreachable");
    assert!(err.is_transient());
    tracker.create_experiment("c").unwrap();
    let names: Vec<String> = tracker.experiments().into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["a", "c"]);
    assert_eq!(tracker.calls().len(), 3, "failed calls are recorded too");

    let down = RecordingTracker::with_fault(Fault {
        at_call: 1,
        sticky: true,
    });
    for _ in 0..3 {
        assert!(down.create_experiment("x").is_err());
    }
    assert!(down.experiments().is_empty());
}

#[test]
fn disabled_tracking_stores_nothing_and_says_so() {
    let tracker = DisabledTracker;
    assert!(!tracker.is_enabled());
    let exp = resolve_experiment(&tracker, "e").unwrap();
    let run = tracker
        .create_run(&new_run(&exp.experiment_id, "r"))
        .unwrap();
    tracker.log_batch(&run.run_id, &Batch::default()).unwrap();
    tracker
        .set_terminated(&run.run_id, RunStatus::Finished, 1)
        .unwrap();
    assert!(tracker
        .search_runs(&exp.experiment_id, &RunFilter::default())
        .unwrap()
        .is_empty());
    assert_eq!(
        tracker.reopen_run(&run.run_id).unwrap().info.status,
        RunStatus::Running
    );
}

#[test]
fn error_kinds_are_stable_names() {
    let cases = [
        (
            TrackError::MalformedUri {
                uri: "x".into(),
                reason: "y".into(),
            },
            "malformed_uri",
            false,
        ),
        (
            TrackError::Timeout {
                target: "t".into(),
                attempts: 3,
                detail: "d".into(),
            },
            "timeout",
            true,
        ),
        (
            TrackError::Server {
                target: "t".into(),
                status: 503,
                code: "c".into(),
                message: "m".into(),
                attempts: 4,
            },
            "server_error",
            true,
        ),
        (TrackError::not_found("m"), "rejected", false),
    ];
    for (err, kind, transient) in cases {
        assert_eq!(err.kind(), kind);
        assert_eq!(err.is_transient(), transient, "{err}");
    }
}
