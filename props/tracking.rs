//! Tracking against real MLflow (issue 6, deliverable 4): runs written by the file backend are
//! read by MLflow's own Python client, and runs written through the REST backend to a real
//! `mlflow server` read back through the REST API and the Python client. Also: a stopped
//! server, a 5xx and a silent server give the typed error after bounded retries (no hang),
//! and racing get-or-create ends with one experiment.
//!
//! MLflow comes from a venv: `TRAINCTL_MLFLOW_PYTHON` (a python with mlflow), else
//! `<repo>/.venv/bin/python`, which the first run creates with the pinned MLflow when it is
//! missing (PyPI is reachable here). A failed install FAILS these tests with the command that
//! installs it; `TRAINCTL_SKIP_MLFLOW=1` skips them.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trainctl::fs::OsFs;
use trainctl::track::{
    codes, log_artifact_dir, resolve_experiment, Batch, FileTracker, Metric, NewRun, RestTracker,
    RetryPolicy, RunFilter, RunStatus, TrackError, Tracker, TAG_RUN_NAME,
};

const EXPERIMENT: &str = "final: training #1 \"ü名前\"";

/// The python with the pinned MLflow (`support::mlflow`), or `None` when skipped.
fn mlflow_python(test: &str) -> Option<PathBuf> {
    support::mlflow::python(test)
}

/// MLflow's client reading `uri`: the JSON of fixtures/mlflow/read_store.py.
fn read_with_mlflow(python: &Path, uri: &str, experiment: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mlflow/read_store.py");
    let out = Command::new(python)
        .arg(&script)
        .args([uri, experiment])
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .expect("run read_store.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "read_store.py {uri} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("read_store.py printed no JSON ({e}): {stdout}"))
}

// ---------------------------------------------------------------------------------------
// The runs every backend writes, and what reading them back must show.

struct ExpectedRun {
    name: &'static str,
    status: RunStatus,
    end_time_ms: i64,
    tags: BTreeMap<String, String>,
    params: BTreeMap<String, String>,
    /// key → (step, value, timestamp) in logging order.
    history: BTreeMap<String, Vec<(i64, f64, i64)>>,
    /// artifact path → content.
    artifacts: BTreeMap<String, String>,
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn point(key: &str, step: i64, value: f64, timestamp_ms: i64) -> Metric {
    Metric {
        key: key.into(),
        value,
        timestamp_ms,
        step,
    }
}

/// Writes two runs: v1 FINISHED with artifacts, v2 FAILED, reopened (RESUME), failed again.
fn write_runs(tracker: &dyn Tracker, scratch: &Path) -> (String, Vec<(String, ExpectedRun)>) {
    let exp = resolve_experiment(tracker, EXPERIMENT).expect("resolve experiment");
    let t0 = 1_700_000_000_000i64;
    let mut written = Vec::new();

    // Variant 1: finished, with artifacts (a file and a checkpoint directory).
    let v1 = ExpectedRun {
        name: "resume-ner_bert_final_v1",
        status: RunStatus::Finished,
        end_time_ms: t0 + 9_000,
        tags: map(&[
            ("trainctl.variant", "1"),
            ("trainctl.spec_fp", "0123456789abcdef"),
            ("user tag", "it's \"quoted\": yes # no comment"),
            ("mlflow.note.content", "line one\nline two"),
        ]),
        params: map(&[
            ("learning_rate", "2e-05"),
            ("epochs", "3"),
            ("optimizer/name", "adamw"),
        ]),
        history: BTreeMap::from([
            (
                "train/loss".to_string(),
                (0..5)
                    .map(|s| (s, 2.5 / (s + 1) as f64, t0 + 1_000 * s))
                    .collect(),
            ),
            (
                "eval/f1".to_string(),
                vec![(2, 0.5, t0 + 2_500), (4, 0.75, t0 + 4_500)],
            ),
        ]),
        artifacts: BTreeMap::from([
            ("metrics.json".to_string(), "{\"f1\": 0.75}".to_string()),
            (
                "checkpoint/weights.txt".to_string(),
                "weights\n".to_string(),
            ),
            (
                "checkpoint/config/labels.txt".to_string(),
                "O\nB-PER\n".to_string(),
            ),
        ]),
    };
    let run = tracker
        .create_run(&NewRun {
            experiment_id: exp.experiment_id.clone(),
            run_name: v1.name.into(),
            start_time_ms: t0,
            tags: v1.tags.clone(),
        })
        .expect("create v1");
    // Params in one batch, metrics as they come (two batches), like a training loop.
    tracker
        .log_params(&run.run_id, &v1.params)
        .expect("params v1");
    let all: Vec<Metric> = v1
        .history
        .iter()
        .flat_map(|(k, pts)| pts.iter().map(|(s, v, t)| point(k, *s, *v, *t)))
        .collect();
    let (early, late) = all.split_at(3);
    tracker
        .log_metrics(&run.run_id, early)
        .expect("metrics v1 a");
    tracker
        .log_metrics(&run.run_id, late)
        .expect("metrics v1 b");
    let metrics_json = scratch.join("metrics.json");
    std::fs::write(&metrics_json, &v1.artifacts["metrics.json"]).unwrap();
    tracker
        .log_artifact(&run.run_id, &metrics_json, "metrics.json")
        .expect("artifact");
    let ckpt = scratch.join("checkpoint");
    std::fs::create_dir_all(ckpt.join("config")).unwrap();
    std::fs::write(
        ckpt.join("weights.txt"),
        &v1.artifacts["checkpoint/weights.txt"],
    )
    .unwrap();
    std::fs::write(
        ckpt.join("config/labels.txt"),
        &v1.artifacts["checkpoint/config/labels.txt"],
    )
    .unwrap();
    assert_eq!(
        log_artifact_dir(tracker, &run.run_id, &ckpt, "checkpoint").expect("checkpoint"),
        2
    );
    tracker
        .set_terminated(&run.run_id, RunStatus::Finished, v1.end_time_ms)
        .expect("finish v1");
    written.push((run.run_id, v1));

    // Variant 2: fails, is resumed (same run, tagged code.interrupted), fails again.
    let mut v2 = ExpectedRun {
        name: "resume-ner_bert_final_v2",
        status: RunStatus::Failed,
        end_time_ms: t0 + 20_000,
        tags: map(&[
            ("trainctl.variant", "2"),
            ("trainctl.spec_fp", "0123456789abcdef"),
        ]),
        params: map(&[("learning_rate", "3e-05"), ("epochs", "3")]),
        history: BTreeMap::from([(
            "train/loss".to_string(),
            vec![
                (0, 3.0, t0 + 11_000),
                (1, f64::NAN, t0 + 12_000),
                (2, 1e-7, t0 + 15_000),
                (3, 1e20, t0 + 16_000),
            ],
        )]),
        artifacts: BTreeMap::new(),
    };
    let run = tracker
        .create_run(&NewRun {
            experiment_id: exp.experiment_id.clone(),
            run_name: v2.name.into(),
            start_time_ms: t0 + 10_000,
            tags: v2.tags.clone(),
        })
        .expect("create v2");
    let loss = &v2.history["train/loss"];
    let batch = Batch {
        params: v2.params.clone(),
        metrics: loss[..2]
            .iter()
            .map(|(s, v, t)| point("train/loss", *s, *v, *t))
            .collect(),
        tags: BTreeMap::new(),
    };
    tracker.log_batch(&run.run_id, &batch).expect("batch v2");
    tracker
        .set_terminated(&run.run_id, RunStatus::Failed, t0 + 13_000)
        .expect("fail v2");
    let before = tracker.reopen_run(&run.run_id).expect("reopen v2");
    assert_eq!(before.info.status, RunStatus::Failed);
    assert_eq!(before.params, v2.params, "the reopened run is the same run");
    tracker
        .set_tags(&run.run_id, &map(&[("code.interrupted", "true")]))
        .expect("tag v2");
    v2.tags.insert("code.interrupted".into(), "true".into());
    // The resumed attempt logs the same params again (write-once, same value: accepted).
    tracker
        .log_params(&run.run_id, &v2.params)
        .expect("params again");
    let rest: Vec<Metric> = loss[2..]
        .iter()
        .map(|(s, v, t)| point("train/loss", *s, *v, *t))
        .collect();
    tracker.log_metrics(&run.run_id, &rest).expect("metrics v2");
    let conflict = tracker
        .log_params(&run.run_id, &map(&[("epochs", "4")]))
        .unwrap_err();
    assert_eq!(
        conflict.code(),
        Some(codes::INVALID_PARAMETER_VALUE),
        "{conflict}"
    );
    tracker
        .set_terminated(&run.run_id, RunStatus::Failed, v2.end_time_ms)
        .expect("fail v2 again");
    written.push((run.run_id, v2));
    (exp.experiment_id, written)
}

fn same_float(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// The runs as our own backend reads them back (through the REST API for the REST backend).
fn check_via_tracker(
    tracker: &dyn Tracker,
    experiment_id: &str,
    written: &[(String, ExpectedRun)],
) {
    let all = tracker
        .search_runs(experiment_id, &RunFilter::default())
        .expect("search all");
    assert_eq!(all.len(), written.len(), "{}", tracker.describe());
    for (run_id, want) in written {
        let run = tracker.get_run(run_id).expect("get_run");
        assert_eq!(run.info.run_name, want.name);
        assert_eq!(run.info.status, want.status, "{}", want.name);
        assert_eq!(
            run.info.end_time_ms,
            Some(want.end_time_ms),
            "{}",
            want.name
        );
        assert_eq!(run.params, want.params, "{}", want.name);
        let mut tags = want.tags.clone();
        tags.insert(TAG_RUN_NAME.into(), want.name.into());
        for (k, v) in &tags {
            assert_eq!(run.tags.get(k), Some(v), "{}: tag {k}", want.name);
        }
        for (key, points) in &want.history {
            let got = tracker.metric_history(run_id, key).expect("history");
            let got: Vec<(i64, f64, i64)> = got
                .iter()
                .map(|m| (m.step, m.value, m.timestamp_ms))
                .collect();
            assert_eq!(got.len(), points.len(), "{}: {key}: {got:?}", want.name);
            for (g, w) in got.iter().zip(points) {
                assert!(
                    g.0 == w.0 && g.2 == w.2 && same_float(g.1, w.1),
                    "{}: {key}: {got:?} vs {points:?}",
                    want.name
                );
            }
        }
        let top: Vec<String> = tracker
            .list_artifacts(run_id, "")
            .expect("artifacts")
            .into_iter()
            .map(|a| a.path)
            .collect();
        let mut want_top: Vec<String> = want
            .artifacts
            .keys()
            .map(|p| p.split('/').next().unwrap().to_string())
            .collect();
        want_top.dedup();
        want_top.sort();
        assert_eq!(top, want_top, "{}", want.name);
    }
    let filter = RunFilter {
        tags: map(&[("trainctl.variant", "2")]),
        run_name: None,
    };
    let found: Vec<String> = tracker
        .search_runs(experiment_id, &filter)
        .expect("search")
        .into_iter()
        .map(|r| r.info.run_id)
        .collect();
    assert_eq!(found, vec![written[1].0.clone()]);
}

/// The runs as MLflow's Python client reads them.
fn check_via_mlflow(doc: &Value, written: &[(String, ExpectedRun)]) {
    let context = || serde_json::to_string_pretty(doc).unwrap_or_default();
    assert_eq!(doc["experiment"]["name"], EXPERIMENT, "{}", context());
    assert_eq!(doc["experiment"]["lifecycle_stage"], "active");
    let runs = doc["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), written.len(), "{}", context());
    for (run_id, want) in written {
        let run = runs
            .iter()
            .find(|r| r["run_id"] == run_id.as_str())
            .unwrap_or_else(|| panic!("run {run_id} not seen by MLflow: {}", context()));
        assert_eq!(run["run_name"], want.name);
        assert_eq!(run["status"], want.status.as_str(), "{}", want.name);
        assert_eq!(run["end_time"], want.end_time_ms, "{}", want.name);
        assert_eq!(run["lifecycle_stage"], "active");
        let params: BTreeMap<String, String> =
            serde_json::from_value(run["params"].clone()).unwrap();
        assert_eq!(params, want.params, "{}", want.name);
        let tags: BTreeMap<String, String> = serde_json::from_value(run["tags"].clone()).unwrap();
        assert_eq!(tags.get(TAG_RUN_NAME).map(String::as_str), Some(want.name));
        for (k, v) in &want.tags {
            assert_eq!(tags.get(k), Some(v), "{}: tag {k}: {tags:?}", want.name);
        }
        let history = run["history"].as_object().expect("history");
        assert_eq!(
            history.len(),
            want.history.len(),
            "{}: {history:?}",
            want.name
        );
        for (key, points) in &want.history {
            let got = history[key].as_array().expect("points");
            assert_eq!(got.len(), points.len(), "{}: {key}", want.name);
            for (g, (step, value, ts)) in got.iter().zip(points) {
                assert_eq!(g[0], *step, "{}: {key}", want.name);
                assert_eq!(g[2], *ts, "{}: {key}", want.name);
                let v = match &g[1] {
                    Value::String(s) if s == "nan" => f64::NAN,
                    other => other.as_f64().expect("metric value"),
                };
                assert!(
                    same_float(v, *value),
                    "{}: {key}: {v} vs {value}",
                    want.name
                );
            }
        }
        let files: BTreeMap<String, String> = run["artifacts"]
            .as_array()
            .expect("artifacts")
            .iter()
            .filter(|a| a["is_dir"] == false)
            .map(|a| {
                (
                    a["path"].as_str().unwrap().to_string(),
                    a["content"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(files, want.artifacts, "{}", want.name);
    }
    assert_eq!(doc["search_variant_2"], serde_json::json!([written[1].0]));
}

// ---------------------------------------------------------------------------------------
// (a) the file store, read by MLflow.

#[test]
fn mlflow_reads_the_file_store() {
    let Some(python) = mlflow_python("mlflow_reads_the_file_store") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mlruns");
    let store = FileTracker::new(Arc::new(OsFs), root.clone()).unwrap();
    let (experiment_id, written) = write_runs(&store, dir.path());
    check_via_tracker(&store, &experiment_id, &written);
    let doc = read_with_mlflow(&python, &format!("file://{}", root.display()), EXPERIMENT);
    assert_eq!(doc["experiment"]["experiment_id"], experiment_id.as_str());
    check_via_mlflow(&doc, &written);
}

// ---------------------------------------------------------------------------------------
// (b) a real `mlflow server`.

/// A server we started; stopped by its PID (SIGTERM, then SIGKILL of its process group
/// after a bound) when dropped, so a failing test never leaves it running.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(python: &Path, dir: &Path) -> Server {
        Server::start_on(python, dir, free_port())
    }

    /// A server on `port` over the sqlite store and artifacts in `dir` (a restart on the
    /// same port and store is the same tracking server, back).
    fn start_on(python: &Path, dir: &Path, port: u16) -> Server {
        let artifacts = vec![
            "--artifacts-destination".to_string(),
            dir.join("artifacts").display().to_string(),
        ];
        Server::start_with(python, dir, port, &artifacts)
    }

    /// A server whose runs get `root` as their artifact root and which does not proxy
    /// artifacts (the usual set-up with S3 or GCS).
    fn start_without_artifact_proxy(python: &Path, dir: &Path, root: &str) -> Server {
        let artifacts = vec![
            "--default-artifact-root".to_string(),
            root.to_string(),
            "--no-serve-artifacts".to_string(),
        ];
        Server::start_with(python, dir, free_port(), &artifacts)
    }

    fn start_with(python: &Path, dir: &Path, port: u16, artifacts: &[String]) -> Server {
        let log = dir.join("server.log");
        let mlflow = python.parent().expect("venv bin").join("mlflow");
        let mut cmd = Command::new(&mlflow);
        cmd.args([
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--workers",
            "1",
        ])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .args(artifacts)
        .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        .env_remove("MLFLOW_TRACKING_URI")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("server.err")).unwrap());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", mlflow.display()));
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log: dir.join("server.err"),
        };
        server.wait_healthy(Duration::from_secs(120));
        server
    }

    fn wait_healthy(&mut self, bound: Duration) {
        let deadline = Instant::now() + bound;
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(2)))
                .build(),
        );
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mlflow server exited ({status}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if agent.get(&format!("{}/health", self.url)).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "mlflow server not healthy after {bound:?}:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn stop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: signalling a process (and its group) that this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // SAFETY: as above; the group may hold a uvicorn worker that outlived it.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The artifact paths of one run as `read_store.py` lists them.
fn artifact_paths(run: &Value) -> Vec<&str> {
    run["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        attempts_max: 3,
        backoff_first_ms: 50,
        backoff_max_ms: 200,
        timeout_ms: 1_000,
        connect_timeout_ms: 500,
    }
}

#[test]
fn rest_backend_against_a_real_mlflow_server() {
    let Some(python) = mlflow_python("rest_backend_against_a_real_mlflow_server") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&python, dir.path());
    let tracker = RestTracker::new(&server.url, None, RetryPolicy::default()).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (experiment_id, written) = write_runs(&tracker, &scratch);
    check_via_tracker(&tracker, &experiment_id, &written);
    check_via_mlflow(
        &read_with_mlflow(&python, &server.url, EXPERIMENT),
        &written,
    );

    // Racing get-or-create: 8 clients, one experiment.
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let ids: Vec<String> = (0..8)
        .map(|_| {
            let (url, barrier) = (server.url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let client = RestTracker::new(&url, None, RetryPolicy::default()).unwrap();
                barrier.wait();
                resolve_experiment(&client, "raced").map(|e| e.experiment_id)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap().expect("resolve under race"))
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");

    // The server's 4xx answers are typed.
    let missing = tracker
        .get_run("0123456789abcdef0123456789abcdef")
        .unwrap_err();
    assert!(
        matches!(&missing, TrackError::Rejected { code, status: Some(404), .. } if code == codes::RESOURCE_DOES_NOT_EXIST),
        "{missing:?}"
    );
    let gone = resolve_experiment(&tracker, "to-delete").unwrap();
    let agent = ureq::Agent::new_with_defaults();
    agent
        .post(&format!("{}/api/2.0/mlflow/experiments/delete", server.url))
        .header("Content-Type", "application/json")
        .send(format!("{{\"experiment_id\": \"{}\"}}", gone.experiment_id))
        .expect("delete experiment");
    let err = resolve_experiment(&tracker, "to-delete").unwrap_err();
    assert_eq!(err.kind(), "experiment_deleted", "{err}");

    // `trainctl train` itself on the REST backend (issue 6 (b)): checked through the REST API
    // and through MLflow's Python client.
    let project = support::Project::new();
    let (code, trained) = train_json(
        &project,
        &["training.epochs=1"],
        &[("MLFLOW_TRACKING_URI", server.url.as_str())],
    );
    assert_eq!(code, 0, "{trained}");
    let meta = metadata_of(&trained);
    assert_eq!(
        meta["tracking"]["state"], "finished",
        "{}",
        meta["tracking"]
    );
    assert_eq!(meta["tracking"]["backend"], server.url.as_str());
    let run_id = meta["tracking"]["run_id"].as_str().unwrap();
    let run = tracker.get_run(run_id).expect("the run through REST");
    assert_eq!(run.info.status, trainctl::track::RunStatus::Finished);
    assert_eq!(run.info.run_name, trained["run_name"].as_str().unwrap());
    assert_eq!(
        run.tags["code.spec_fp"],
        trained["spec_fp"].as_str().unwrap()
    );
    assert_eq!(run.params["epochs"], "1");
    let history = tracker.metric_history(run_id, "train/loss").unwrap();
    assert!(history.len() >= 2 && history.windows(2).all(|w| w[0].step < w[1].step));
    let by_mlflow = read_with_mlflow(&python, &server.url, "resume_ner_baseline");
    let runs = by_mlflow["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{by_mlflow}");
    assert_eq!(runs[0]["run_id"], run_id);
    assert_eq!(runs[0]["status"], "FINISHED");
    assert!(runs[0]["history"]["eval/macro-f1"]
        .as_array()
        .is_some_and(|h| !h.is_empty()));
    let artifacts = artifact_paths(&runs[0]);
    assert!(artifacts.contains(&"metrics.json"), "{artifacts:?}");

    // A stopped server: Unreachable after exactly the bounded attempts, quickly.
    server.stop();
    let down = RestTracker::new(&server.url, None, quick_retry()).unwrap();
    let started = Instant::now();
    let err = down.get_run(&written[0].0).unwrap_err();
    assert!(
        matches!(err, TrackError::Unreachable { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.is_transient());
}

// ---------------------------------------------------------------------------------------
// Failure handling against fake servers (no MLflow needed).

/// Answers every request with `status` and a JSON error body; counts requests. Serves until
/// the process ends (the listener thread is detached; each test has its own port).
fn fake_server(status: u16, respond: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            if !respond {
                held.push(stream); // never answer
                continue;
            }
            let mut buf = [0u8; 65536];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = stream.read(&mut buf);
            let body = "{\"error_code\": \"TEMPORARILY_UNAVAILABLE\", \"message\": \"try later\"}";
            let reply = format!(
                "HTTP/1.1 {status} Oops\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (url, count)
}

#[test]
fn a_5xx_is_retried_a_bounded_number_of_times_then_typed() {
    let (url, count) = fake_server(503, true);
    let tracker = RestTracker::new(&url, None, quick_retry()).unwrap();
    let started = Instant::now();
    let err = tracker.get_run("r").unwrap_err();
    assert!(
        matches!(&err, TrackError::Server { status: 503, attempts: 3, code, .. } if code == "TEMPORARILY_UNAVAILABLE"),
        "{err:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // runs/create is not idempotent: a request that reached the server is not repeated.
    let before = count.load(Ordering::SeqCst);
    let err = tracker
        .create_run(&NewRun {
            experiment_id: "1".into(),
            run_name: "r".into(),
            start_time_ms: 0,
            tags: BTreeMap::new(),
        })
        .unwrap_err();
    assert!(
        matches!(err, TrackError::Server { attempts: 1, .. }),
        "{err:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst) - before, 1);
}

#[test]
fn a_4xx_is_not_retried() {
    let (url, count) = fake_server(400, true);
    let tracker = RestTracker::new(&url, None, quick_retry()).unwrap();
    let err = tracker.get_run("r").unwrap_err();
    assert!(
        matches!(
            err,
            TrackError::Rejected {
                status: Some(400),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn a_silent_server_times_out_within_the_bound() {
    let (url, count) = fake_server(200, false);
    let mut retry = quick_retry();
    retry.timeout_ms = 300;
    retry.attempts_max = 2;
    let tracker = RestTracker::new(&url, None, retry).unwrap();
    let started = Instant::now();
    let err = tracker.experiment_by_name("e").unwrap_err();
    assert!(
        matches!(err, TrackError::Timeout { attempts: 2, .. }),
        "{err:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn nothing_listening_is_unreachable_and_even_runs_create_is_retried() {
    // Nothing ever reached a server, so retrying runs/create is safe.
    let url = format!("http://127.0.0.1:{}", free_port());
    let tracker = RestTracker::new(&url, None, quick_retry()).unwrap();
    let err = tracker
        .create_run(&NewRun {
            experiment_id: "1".into(),
            run_name: "r".into(),
            start_time_ms: 0,
            tags: BTreeMap::new(),
        })
        .unwrap_err();
    assert!(
        matches!(err, TrackError::Unreachable { attempts: 3, .. }),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------
// `trainctl train` itself, tracked (docs/contract.md, "Tracking of final training"), read back by
// MLflow's own client.

use crate::support;

fn train_json(
    project: &support::Project,
    overrides: &[&str],
    env: &[(&str, &str)],
) -> (i32, Value) {
    let mut args = vec!["--json".to_string()];
    for o in overrides {
        args.push("-o".into());
        args.push(o.to_string());
    }
    args.push("train".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = project.run_env(&args, env);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}\n{stderr}"));
    (code, doc)
}

fn metadata_of(doc: &Value) -> Value {
    let dir = PathBuf::from(doc["output_dir"].as_str().expect("output_dir"));
    serde_json::from_slice(&std::fs::read(dir.join("metadata.json")).unwrap()).unwrap()
}

/// A server that does not proxy artifacts (issue 16): every run still ends. A bucket root
/// this client cannot write: the run is FINISHED, tagged with the artifacts it lacks, training
/// warns, and `track sync` retries only those artifacts (failing again here, without
/// reopening or duplicating the run). A local directory root on this machine: the artifacts
/// are written there, as MLflow's own client does.
#[test]
fn a_server_without_the_artifact_proxy_never_keeps_a_run_open() {
    let Some(python) = mlflow_python("a_server_without_the_artifact_proxy_never_keeps_a_run_open")
    else {
        return;
    };
    for root in ["s3://nowhere-bucket/mlruns", "LOCAL"] {
        let dir = tempfile::tempdir().unwrap();
        let local_root = dir.path().join("served-artifacts");
        std::fs::create_dir_all(&local_root).unwrap();
        let root_arg = if root == "LOCAL" {
            local_root.display().to_string()
        } else {
            root.to_string()
        };
        let server = Server::start_without_artifact_proxy(&python, dir.path(), &root_arg);
        let env = [("MLFLOW_TRACKING_URI", server.url.as_str())];
        let project = support::Project::new();
        let (code, trained) = train_json(&project, &["training.epochs=1"], &env);
        assert_eq!(code, 0, "{trained}");
        let meta = metadata_of(&trained);
        assert_eq!(
            meta["tracking"]["state"], "finished",
            "{}",
            meta["tracking"]
        );
        let run_id = meta["tracking"]["run_id"]
            .as_str()
            .expect("run id")
            .to_string();
        let tracker = RestTracker::new(&server.url, None, RetryPolicy::default()).unwrap();
        let run = tracker.get_run(&run_id).expect("run");
        assert_eq!(run.info.status, RunStatus::Finished, "{root}: {run:?}");
        let missing = run
            .tags
            .get("trainctl.artifacts_missing")
            .cloned()
            .unwrap_or_default();
        if root == "LOCAL" {
            assert!(missing.is_empty(), "{missing}");
            let names: Vec<String> = tracker
                .list_artifacts(&run_id, "")
                .expect("list")
                .into_iter()
                .map(|a| a.path)
                .collect();
            assert!(names.iter().any(|n| n == "metrics.json"), "{names:?}");
            continue;
        }
        assert!(missing.contains("metrics.json"), "tagged: {missing:?}");
        assert_eq!(
            meta["tracking"]["artifacts_missing"][0], "metrics.json",
            "{}",
            meta["tracking"]
        );
        assert!(
            trained["warnings"].as_array().is_some_and(|w| w
                .iter()
                .any(|w| w.as_str().is_some_and(|w| w.contains("track sync")))),
            "{trained}"
        );
        let (code, synced) = sync_json(&project, &env);
        assert_eq!(
            code, 3,
            "the artifacts cannot go there, and sync says so: {synced}"
        );
        let run = tracker.get_run(&run_id).expect("run");
        assert_eq!(
            run.info.status,
            RunStatus::Finished,
            "sync never reopens it"
        );
        let runs = tracker
            .search_runs(&run.info.experiment_id, &Default::default())
            .expect("search");
        assert_eq!(runs.len(), 1, "one run per variant");
    }
}

#[test]
fn train_runs_are_tracked_and_mlflow_reads_them() {
    let Some(python) = mlflow_python("train_runs_are_tracked_and_mlflow_reads_them") else {
        return;
    };
    let project = support::Project::new();
    let (code, trained) = train_json(&project, &["training.epochs=2"], &[]);
    assert_eq!(code, 0, "{trained}");
    let meta = metadata_of(&trained);
    assert_eq!(
        meta["tracking"]["state"], "finished",
        "{}",
        meta["tracking"]
    );
    let uri = format!("file:{}", project.root().join("mlruns").display());
    let store = read_with_mlflow(&python, &uri, "resume_ner_baseline");
    let runs = store["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{store}");
    let run = &runs[0];
    assert_eq!(run["run_id"], meta["tracking"]["run_id"]);
    assert_eq!(run["run_name"], trained["run_name"]);
    assert_eq!(run["status"], "FINISHED");
    assert_eq!(run["tags"]["code.spec_fp"], trained["spec_fp"]);
    assert_eq!(run["tags"]["code.exec_fp"], trained["exec_fp"]);
    assert_eq!(run["tags"]["code.variant"], "1");
    assert_eq!(run["tags"]["code.stage"], "final_training");
    assert_eq!(run["params"]["epochs"], "2");
    assert_eq!(run["params"]["learning_rate"], "0.05");
    let steps: Vec<i64> = run["history"]["eval/macro-f1"]
        .as_array()
        .expect("eval history")
        .iter()
        .map(|p| p[0].as_i64().unwrap())
        .collect();
    assert!(
        steps.len() >= 2 && steps.windows(2).all(|w| w[0] < w[1]),
        "{steps:?}"
    );
    let loss_steps = run["history"]["train/loss"]
        .as_array()
        .expect("train history")
        .len();
    assert!(
        loss_steps >= 2,
        "train loss logged every log_interval steps"
    );
    assert!(
        run["history"]["macro-f1"].is_array(),
        "final metrics logged"
    );
    let artifacts: Vec<&str> = run["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert!(
        artifacts.contains(&"metrics.json") && artifacts.contains(&"config/job.json"),
        "{artifacts:?}"
    );

    // A reuse adds no run.
    let (code, again) = train_json(&project, &["training.epochs=2"], &[]);
    assert_eq!((code, again["decision"].as_str()), (0, Some("reuse")));
    assert_eq!(
        read_with_mlflow(&python, &uri, "resume_ner_baseline")["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_failed_run_is_failed_in_mlflow_and_resume_reopens_it() {
    let Some(python) = mlflow_python("a_failed_run_is_failed_in_mlflow_and_resume_reopens_it")
    else {
        return;
    };
    let project = support::Project::new();
    project.use_fixture_trainer();
    let (code, doc) = train_json(&project, &[], &[("FAKE_TRAINER_FAIL_AT", "3")]);
    assert_eq!(code, 5, "{doc}");
    let uri = format!("file:{}", project.root().join("mlruns").display());
    let store = read_with_mlflow(&python, &uri, "resume_ner_baseline");
    let runs = store["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{store}");
    assert_eq!(runs[0]["status"], "FAILED");
    let failed_id = runs[0]["run_id"].clone();
    let (code, resumed) = train_json(&project, &["run.mode=resume_if_incomplete"], &[]);
    assert_eq!(
        (code, resumed["decision"].as_str()),
        (0, Some("resume")),
        "{resumed}"
    );
    let store = read_with_mlflow(&python, &uri, "resume_ner_baseline");
    let runs = store["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "RESUME reopens the variant's run: {store}");
    assert_eq!(runs[0]["run_id"], failed_id);
    assert_eq!(runs[0]["status"], "FINISHED");
    assert_eq!(runs[0]["tags"]["code.interrupted"], "true");
}

#[test]
fn tracking_failures_never_cost_a_run_unless_tracking_is_required() {
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{port}");
    let env = [("MLFLOW_TRACKING_URI", down.as_str())];
    let project = support::Project::new();
    let started = Instant::now();
    let (code, doc) = train_json(&project, &["training.epochs=1"], &env);
    assert_eq!(code, 0, "{doc}");
    assert!(doc["warnings"].to_string().contains("tracking"), "{doc}");
    let meta = metadata_of(&doc);
    assert_eq!(meta["tracking"]["state"], "error", "{}", meta["tracking"]);
    assert_eq!(meta["tracking"]["error"]["kind"], "unreachable");
    // `status` shows the run as missing from tracking.
    let (code, status) = project.run_json(&["status"]);
    assert_eq!(code, 0);
    assert_eq!(status["variants"][0]["tracking"], "error", "{status}");
    let (_, human, _) = project.run(&["status"]);
    assert!(human.contains("missing from tracking"), "{human}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded: {:?}",
        started.elapsed()
    );
    // Required: refused before anything is written.
    let other = support::Project::new();
    let before = support::snapshot(other.root());
    let (code, doc) = train_json(&other, &["mlflow:tracking.required=true"], &env);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("tracking_unavailable")),
        "{doc}"
    );
    assert!(support::changed(&before, &support::snapshot(other.root())).is_empty());
    // Disabled: no runs at all, outputs and caches as usual.
    let off = support::Project::new();
    let (code, doc) = train_json(
        &off,
        &[
            "mlflow:tracking.training.enabled=false",
            "training.epochs=1",
        ],
        &[],
    );
    assert_eq!(code, 0, "{doc}");
    assert!(!off.root().join("mlruns").exists());
    assert!(metadata_of(&doc)["tracking"].is_null());
    assert!(doc["cache_record"].is_string());
}

// ---------------------------------------------------------------------------------------
// `trainctl track sync` (docs/contract.md, "Tracking of final training" failure handling) and
// run-name auto-increment.

fn sync_json(project: &support::Project, env: &[(&str, &str)]) -> (i32, Value) {
    let (code, stdout, stderr) = project.run_env(&["--json", "track", "sync"], env);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("track sync: not JSON ({e}): {stdout}\n{stderr}"));
    (code, doc)
}

fn actions(doc: &Value) -> Vec<String> {
    doc["variants"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|e| e["action"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The issue's acceptance, end to end against a real `mlflow server`: the server stops in
/// the middle of a training; the training completes with a warning and an `error` tracking
/// state; `status` flags the run; once the same server is back, `track sync` finishes the
/// run training created (one run, FINISHED, with its metrics); syncing again changes nothing,
/// also without the sync record.
#[test]
fn a_server_stopped_mid_training_is_caught_up_by_track_sync() {
    let Some(python) = mlflow_python("a_server_stopped_mid_training_is_caught_up_by_track_sync")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start_on(&python, dir.path(), port);
    let url = server.url.clone();
    let env = [
        ("MLFLOW_TRACKING_URI", url.as_str()),
        ("FAKE_TRAINER_SLEEP_MS", "400"),
    ];
    let project = support::Project::new();
    project.use_fixture_trainer();
    let mut child = project
        .command(&["--json", "train"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start train");
    // Wait until training has created its run on the server, then stop the server.
    let tracker = RestTracker::new(&url, None, quick_retry()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = tracker
            .experiment_by_name("resume_ner_baseline")
            .ok()
            .flatten()
            .and_then(|e| {
                tracker
                    .search_runs(&e.experiment_id, &Default::default())
                    .ok()
            })
            .unwrap_or_default();
        if !runs.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no run appeared on the server");
        assert!(
            child.try_wait().unwrap().is_none(),
            "train ended before its run appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trained: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        trained["warnings"].to_string().contains("tracking"),
        "{trained}"
    );
    let meta = metadata_of(&trained);
    assert_eq!(meta["status"], "completed");
    assert_eq!(meta["tracking"]["state"], "error", "{}", meta["tracking"]);
    let (_, status) = project.run_json(&["status"]);
    assert_eq!(
        status["variants"][0]["missing_from_tracking"], true,
        "{status}"
    );

    // While the server is down, sync fails (exit 3) and records nothing.
    let (code, doc) = sync_json(&project, &[("MLFLOW_TRACKING_URI", url.as_str())]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("tracking_unavailable")),
        "{doc}"
    );

    let _server = Server::start_on(&python, dir.path(), port);
    let (code, doc) = sync_json(&project, &[("MLFLOW_TRACKING_URI", url.as_str())]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(actions(&doc), ["completed"], "{doc}");
    let (_, status) = project.run_json(&["status"]);
    assert_eq!(
        status["variants"][0]["missing_from_tracking"], false,
        "{status}"
    );
    assert_eq!(status["variants"][0]["tracking"], "synced", "{status}");

    let store = read_with_mlflow(&python, &url, "resume_ner_baseline");
    let runs = store["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "one run per variant: {store}");
    let run = &runs[0];
    assert_eq!(run["status"], "FINISHED");
    assert_eq!(run["run_name"], trained["run_name"]);
    assert_eq!(run["tags"]["code.variant"], "1");
    assert_eq!(run["tags"]["trainctl.synced"], "true");
    let final_points = run["history"]["macro-f1"]
        .as_array()
        .expect("final metric")
        .len();
    assert_eq!(final_points, 1, "{}", run["history"]);

    // Idempotent: with the sync record, nothing is asked; without it, the FINISHED run is
    // adopted; either way the store is unchanged.
    let (code, doc) = sync_json(&project, &[("MLFLOW_TRACKING_URI", url.as_str())]);
    assert_eq!(
        (code, actions(&doc)),
        (0, vec!["already_synced".to_string()]),
        "{doc}"
    );
    std::fs::remove_dir_all(project.root().join("outputs/tracking/sync")).unwrap();
    let (code, doc) = sync_json(&project, &[("MLFLOW_TRACKING_URI", url.as_str())]);
    assert_eq!(
        (code, actions(&doc)),
        (0, vec!["adopted".to_string()]),
        "{doc}"
    );
    // A sync that died half-way (run back to RUNNING, no sync record): the retry finishes
    // it without logging any metric point twice.
    let run_id = run["run_id"].as_str().unwrap();
    tracker
        .update_run(run_id, trainctl::track::RunStatus::Running, None)
        .unwrap();
    std::fs::remove_dir_all(project.root().join("outputs/tracking/sync")).unwrap();
    let (code, doc) = sync_json(&project, &[("MLFLOW_TRACKING_URI", url.as_str())]);
    assert_eq!(
        (code, actions(&doc)),
        (0, vec!["completed".to_string()]),
        "{doc}"
    );
    let again = read_with_mlflow(&python, &url, "resume_ner_baseline");
    assert_eq!(again["runs"].as_array().unwrap().len(), 1, "{again}");
    assert_eq!(again["runs"][0]["status"], "FINISHED");
    assert_eq!(
        again["runs"][0]["history"]["macro-f1"]
            .as_array()
            .unwrap()
            .len(),
        final_points,
        "no metric point logged twice"
    );
}

/// A run the store never saw (the server was down for the whole training) is created by
/// `track sync` with its params, tags, metrics and artifacts; MLflow's own client reads it
/// from the file store.
#[test]
fn track_sync_uploads_a_run_the_store_never_saw() {
    let Some(python) = mlflow_python("track_sync_uploads_a_run_the_store_never_saw") else {
        return;
    };
    let project = support::Project::new();
    let down = format!("http://127.0.0.1:{}", free_port());
    let (code, trained) = train_json(
        &project,
        &["training.epochs=1"],
        &[("MLFLOW_TRACKING_URI", down.as_str())],
    );
    assert_eq!(code, 0, "{trained}");
    assert_eq!(metadata_of(&trained)["tracking"]["state"], "error");
    let before = support::snapshot(&trained["output_dir"].as_str().map(PathBuf::from).unwrap());
    // The file store of the project (the embedded default) is back.
    let (code, doc) = sync_json(&project, &[]);
    assert_eq!(
        (code, actions(&doc)),
        (0, vec!["uploaded".to_string()]),
        "{doc}"
    );
    let after = support::snapshot(&trained["output_dir"].as_str().map(PathBuf::from).unwrap());
    assert!(
        support::changed(&before, &after).is_empty(),
        "a complete variant is never modified"
    );
    let uri = format!("file:{}", project.root().join("mlruns").display());
    let store = read_with_mlflow(&python, &uri, "resume_ner_baseline");
    let runs = store["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{store}");
    let run = &runs[0];
    assert_eq!(run["status"], "FINISHED");
    assert_eq!(run["run_name"], trained["run_name"]);
    assert_eq!(run["params"]["epochs"], "1");
    assert_eq!(run["tags"]["code.spec_fp"], trained["spec_fp"]);
    assert!(
        run["history"]["train/loss"]
            .as_array()
            .is_some_and(|h| h.len() >= 2),
        "{run}"
    );
    let (code, doc) = sync_json(&project, &[]);
    assert_eq!(
        (code, actions(&doc)),
        (0, vec!["already_synced".to_string()]),
        "{doc}"
    );
    assert_eq!(
        read_with_mlflow(&python, &uri, "resume_ner_baseline")["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A sync that died half-way (run back to RUNNING, no sync record): the retry finishes it
    // without logging a metric point twice (the file store appends every point it is given,
    // unlike MLflow's SQL store, which folds identical points).
    let history = |store: &Value| -> Vec<usize> {
        let h = store["runs"][0]["history"].as_object().expect("history");
        h.values()
            .map(|v| v.as_array().map_or(0, Vec::len))
            .collect()
    };
    let points = history(&store);
    let files =
        trainctl::track::file::FileTracker::new(Arc::new(OsFs), project.root().join("mlruns"))
            .unwrap();
    files
        .update_run(
            run["run_id"].as_str().unwrap(),
            trainctl::track::RunStatus::Running,
            None,
        )
        .unwrap();
    std::fs::remove_dir_all(project.root().join("outputs/tracking/sync")).unwrap();
    let (code, doc) = sync_json(&project, &[]);
    assert_eq!(
        (code, actions(&doc)),
        (0, vec!["completed".to_string()]),
        "{doc}"
    );
    let again = read_with_mlflow(&python, &uri, "resume_ner_baseline");
    assert_eq!(again["runs"][0]["status"], "FINISHED", "{again}");
    assert_eq!(history(&again), points, "no metric point logged twice");
}

/// Run-name auto-increment (docs/contract.md, "Tracking of final training") with real processes:
/// concurrent `force_new` starts under one `mlflow.run_name` each get a distinct name (`base`,
/// `base_2`, …, no gaps), recorded in their metadata and in the tracking store; a reuse reports the
/// reused variant's own name.
#[test]
fn concurrent_starts_reserve_distinct_run_names() {
    let project = support::Project::new();
    let overrides = [
        "-o",
        "mlflow.run_name=nightly",
        "-o",
        "mlflow:naming.run_name.auto_increment.processes.final_training=true",
        "-o",
        "run.mode=force_new",
        "-o",
        "training.epochs=1",
    ];
    let starts = 4;
    let children: Vec<_> = (0..starts)
        .map(|_| {
            let mut args = vec!["--json"];
            args.extend_from_slice(&overrides);
            args.push("train");
            project
                .command(&args, &[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start train")
        })
        .collect();
    let mut names = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        let doc: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(metadata_of(&doc)["run_name"], doc["run_name"]);
        names.push(doc["run_name"].as_str().unwrap().to_string());
    }
    names.sort();
    let mut want: Vec<String> = (1..=starts)
        .map(|n| match n {
            1 => "nightly".to_string(),
            n => format!("nightly_{n}"),
        })
        .collect();
    want.sort();
    assert_eq!(names, want);
    // The file store has exactly these runs.
    let store =
        trainctl::track::file::FileTracker::new(Arc::new(OsFs), project.root().join("mlruns"))
            .unwrap();
    let exp = store
        .experiment_by_name("resume_ner_baseline")
        .unwrap()
        .expect("experiment");
    let mut tracked: Vec<String> = store
        .search_runs(&exp.experiment_id, &Default::default())
        .unwrap()
        .into_iter()
        .map(|r| r.info.run_name)
        .collect();
    tracked.sort();
    assert_eq!(tracked, want);
    // A reuse (no force_new) reports the newest variant's own, suffixed name.
    let reuse = [
        "-o",
        "mlflow.run_name=nightly",
        "-o",
        "mlflow:naming.run_name.auto_increment.processes.final_training=true",
        "-o",
        "training.epochs=1",
        "train",
    ];
    let (code, doc) = project.run_json(&reuse);
    assert_eq!(
        (code, doc["decision"].as_str()),
        (0, Some("reuse")),
        "{doc}"
    );
    assert_eq!(doc["run_name"], metadata_of(&doc)["run_name"]);
    assert_ne!(doc["run_name"], "nightly", "v{} was not the first", starts);
}

/// A new conversion is a run of its own (stage `conversion`, lineage tags, the manifest as an
/// artifact), read by MLflow's client; a reuse adds none; `tracking.conversion.enabled:
/// false` adds none while the bundle is still made.
#[test]
fn conversions_are_tracked_runs_with_their_lineage() {
    let Some(python) = mlflow_python("conversions_are_tracked_runs_with_their_lineage") else {
        return;
    };
    let project = support::Project::new();
    let (code, trained) = train_json(&project, &["training.epochs=1"], &[]);
    assert_eq!(code, 0, "{trained}");
    let (code, converted) = project.run_json(&["convert", "--latest"]);
    assert_eq!(code, 0, "{converted}");
    assert_eq!(converted["tracking"]["state"], "finished", "{converted}");
    let uri = format!("file:{}", project.root().join("mlruns").display());
    let store = read_with_mlflow(&python, &uri, "resume_ner_baseline");
    let runs = store["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "the training and its conversion: {store}");
    let conv = runs
        .iter()
        .find(|r| r["tags"]["code.stage"] == "conversion")
        .unwrap_or_else(|| panic!("no conversion run: {store}"));
    assert_eq!(conv["run_id"], converted["tracking"]["run_id"]);
    assert_eq!(conv["run_name"], converted["run_name"]);
    assert_eq!(conv["status"], "FINISHED");
    assert_eq!(
        conv["tags"]["code.lineage.parent_spec_fp"], trained["spec_fp"],
        "{conv}"
    );
    assert_eq!(conv["params"]["conv_fp"], converted["conv_fp"]);
    let training = runs
        .iter()
        .find(|r| r["tags"]["code.stage"] == "final_training")
        .unwrap();
    assert_eq!(
        conv["tags"]["code.lineage.parent_training_run_id"],
        training["run_id"]
    );
    let artifacts: Vec<&str> = conv["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert!(artifacts.contains(&"manifest.json"), "{artifacts:?}");
    // A reuse adds no run.
    let (code, again) = project.run_json(&["convert", "--latest"]);
    assert_eq!(
        (code, again["decision"].as_str()),
        (0, Some("reuse")),
        "{again}"
    );
    assert!(again["tracking"].is_null());
    // Conversion tracking off: the bundle is made, no run.
    let off = support::Project::new();
    let (code, _) = train_json(
        &off,
        &[
            "training.epochs=1",
            "mlflow:tracking.training.enabled=false",
        ],
        &[],
    );
    assert_eq!(code, 0);
    let (code, converted) = off.run_json(&[
        "-o",
        "mlflow:tracking.conversion.enabled=false",
        "convert",
        "--latest",
    ]);
    assert_eq!(
        (code, converted["decision"].as_str()),
        (0, Some("new")),
        "{converted}"
    );
    assert!(converted["tracking"].is_null(), "{converted}");
    assert!(!off.root().join("mlruns").exists(), "no runs at all");
}

/// OUT in a bucket (moto's S3 server) with a real `mlflow server` for tracking (issue 17):
/// the run ends FINISHED with its metrics and the artifacts trainctl read from the bucket.
#[test]
fn a_training_with_out_in_a_bucket_tracks_to_a_real_mlflow_server() {
    let test = "a_training_with_out_in_a_bucket_tracks_to_a_real_mlflow_server";
    let Some(python) = mlflow_python(test) else {
        return;
    };
    let Some(moto) = support::moto::Moto::start(test, "tracked") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&python, dir.path());
    let project = support::Project::new();
    let out = format!("paths:base.outputs={}", moto.url("out"));
    let vars = moto.env();
    let mut env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("MLFLOW_TRACKING_URI", server.url.as_str()));
    let (code, trained) = train_json(&project, &["training.epochs=1", &out], &env);
    assert_eq!(code, 0, "{trained}");
    assert!(
        trained["output_dir"]
            .as_str()
            .is_some_and(|d| d.starts_with("s3://tracked/out/")),
        "{trained}"
    );
    assert!(
        !trained.to_string().contains("not uploaded"),
        "artifacts missing: {trained}"
    );
    let by_mlflow = read_with_mlflow(&python, &server.url, "resume_ner_baseline");
    let runs = by_mlflow["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{by_mlflow}");
    assert_eq!(runs[0]["status"], "FINISHED", "{by_mlflow}");
    assert_eq!(runs[0]["run_name"], trained["run_name"], "{by_mlflow}");
    let artifacts = artifact_paths(&runs[0]);
    assert!(artifacts.contains(&"metrics.json"), "{artifacts:?}");
}
