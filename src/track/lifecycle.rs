//! The final-training run lifecycle on top of the Tracker port (SPEC §6): which backend a
//! job uses, and what `train` tells it at the start and at the end of an attempt.
//!
//! Tracking never costs a training run: every function here returns a `TrackError` that the
//! caller turns into a warning and a `tracking` state in metadata.json (`tracking.required`
//! is checked before training instead).
//!
//! PARTIAL (tracking issue): run-name auto-increment (final training has it off in the
//! shipped naming config), `trainctl track sync` and the missing-runs column of `status` are
//! not built yet.

use super::{
    resolve_experiment, select_backend, AzureSettings, Metric, NewRun, Result, RunStatus,
    TrackError, Tracker, TrackingEnv, TrackingSettings,
};
use crate::config::Config;
use crate::fs::Fs;
use crate::job::Job;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The tracker of the training stage: the backend, how it was chosen, and warnings (an
/// AzureML fallback, a disabled stage).
pub struct Opened {
    pub tracker: Box<dyn Tracker>,
    pub describe: String,
    pub warnings: Vec<String>,
}

/// Chooses and opens the training-stage backend (config + `MLFLOW_TRACKING_URI` /
/// `MLFLOW_TRACKING_TOKEN` from `var`).
pub fn open_training(
    config: &Config,
    fs: Arc<dyn Fs>,
    var: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Opened> {
    let m = &config.mlflow;
    let settings = TrackingSettings {
        root: config.root.clone(),
        enabled: m.tracking.training.enabled.unwrap_or(true),
        uri: m.tracking.uri.clone(),
        azure: AzureSettings {
            enabled: m.azure_ml.enabled.unwrap_or(false),
            subscription_id: m.azure_ml.subscription_id.clone(),
            resource_group: m.azure_ml.resource_group.clone(),
            workspace_name: m.azure_ml.workspace_name.clone(),
            region: m.azure_ml.region.clone(),
        },
    };
    let nonempty = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let env = TrackingEnv {
        tracking_uri: nonempty("MLFLOW_TRACKING_URI"),
        token: nonempty("MLFLOW_TRACKING_TOKEN").map(super::Secret),
        cwd: cwd.to_path_buf(),
    };
    let selection = select_backend(&settings, &env)?;
    // Short per-call bounds: a down server must not stall a training run for minutes.
    let retry = super::RetryPolicy {
        attempts_max: 2,
        backoff_first_ms: 200,
        backoff_max_ms: 1_000,
        timeout_ms: 10_000,
        connect_timeout_ms: 3_000,
    };
    let describe = selection.choice.describe();
    let tracker = super::open(&selection.choice, fs, retry)?;
    Ok(Opened {
        tracker,
        describe,
        warnings: selection.warnings,
    })
}

/// The experiment name of a final training: `mlflow.experiment_name`, else the experiment's.
pub fn experiment_name(config: &Config) -> String {
    config
        .final_training
        .mlflow
        .experiment_name
        .clone()
        .unwrap_or_else(|| config.experiment_name.clone())
}

/// The tags of the run of `variant` (names from `tags.yaml`), then the user's
/// `mlflow.tags` (which win).
pub fn run_tags(job: &Job, variant: u64, dir: &Path, decision: &str) -> BTreeMap<String, String> {
    let registry = crate::naming::TagRegistry::from_doc(&job.config.docs["tags"])
        .unwrap_or_else(|_| crate::naming::TagRegistry::defaults());
    let t = |s: &str, k: &str| registry.name(s, k);
    let mut tags = BTreeMap::new();
    let mut put = |k: String, v: String| {
        tags.insert(k, v);
    };
    put(t("process", "stage"), "final_training".into());
    put(
        t("process", "project"),
        job.config.paths.project.name.clone().unwrap_or_default(),
    );
    put(t("process", "model"), job.identity.model.clone());
    put(
        t("process", "storage_env"),
        job.identity.storage_env.as_str().into(),
    );
    put(t("process", "created_by"), "trainctl".into());
    put(t("training", "run_mode"), job.config.mode().as_str().into());
    put(t("training", "trained_on_full_data"), "true".into());
    put(t("paths", "spec_fp"), job.identity.spec_fp.clone());
    put(t("paths", "exec_fp"), job.identity.exec_fp.clone());
    put(t("paths", "output_dir"), dir.display().to_string());
    put(t("legacy", "variant"), variant.to_string());
    put(t("lineage", "source"), job.source.kind.as_str().into());
    if let Some(p) = &job.source.parent {
        put(t("lineage", "parent_spec_fp"), p.spec_fp.clone());
        put(t("lineage", "parent_exec_fp"), p.exec_fp.clone());
        put(t("lineage", "parent_variant"), p.variant.to_string());
    }
    if let Some(sel) = &job.source.selection {
        for (key, field) in [
            ("hpo_study_key_hash", "study_key_hash"),
            ("hpo_trial_key_hash", "trial_key_hash"),
            ("hpo_trial_run_id", "trial_run_id"),
        ] {
            if let Some(v) = sel.get(field).and_then(Value::as_str) {
                put(t("lineage", key), v.to_string());
            }
        }
    }
    put("trainctl.decision".into(), decision.into());
    for (k, v) in &job.config.final_training.mlflow.tags {
        tags.insert(k.clone(), v.clone());
    }
    tags
}

/// Params: the effective hyperparameters (dotted keys), seed, precision and model.
pub fn run_params(job: &Job) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let hp = serde_json::to_value(&job.config.hyperparameters).unwrap_or(Value::Null);
    for (k, v) in crate::config::flatten(&hp) {
        params.insert(k, scalar(&v));
    }
    params.insert("seed".into(), job.config.seed.to_string());
    params.insert("precision".into(), job.config.precision().as_str().into());
    params.insert("model".into(), job.identity.model.clone());
    params
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The run of an attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    pub run_id: String,
    pub experiment_id: String,
    pub reopened: bool,
}

/// Start of an attempt: resolve the experiment, reopen the variant's run (RESUME, tagged
/// `code.interrupted`) or create it, log params and tags.
#[allow(clippy::too_many_arguments)]
pub fn start(
    tracker: &dyn Tracker,
    job: &Job,
    variant: u64,
    dir: &Path,
    run_name: &str,
    decision: &str,
    previous_run_id: Option<&str>,
    now_ms: i64,
) -> Result<Started> {
    let experiment = resolve_experiment(tracker, &experiment_name(&job.config))?;
    let tags = run_tags(job, variant, dir, decision);
    if let Some(run_id) = previous_run_id {
        match tracker.reopen_run(run_id) {
            Ok(_) => {
                let registry = crate::naming::TagRegistry::from_doc(&job.config.docs["tags"])
                    .unwrap_or_else(|_| crate::naming::TagRegistry::defaults());
                let mut more = tags;
                more.insert(registry.name("training", "interrupted"), "true".into());
                tracker.set_tags(run_id, &more)?;
                return Ok(Started {
                    run_id: run_id.to_string(),
                    experiment_id: experiment.experiment_id,
                    reopened: true,
                });
            }
            // The previous run is gone (deleted): a new run for this attempt.
            Err(TrackError::Rejected { .. }) | Err(TrackError::ExperimentDeleted { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let info = tracker.create_run(&NewRun {
        experiment_id: experiment.experiment_id.clone(),
        run_name: run_name.to_string(),
        start_time_ms: now_ms,
        tags,
    })?;
    tracker.log_params(&info.run_id, &run_params(job))?;
    Ok(Started {
        run_id: info.run_id,
        experiment_id: experiment.experiment_id,
        reopened: false,
    })
}

/// The metric points the trainer logged (`logs/metrics.jsonl`), last point per (key, step),
/// and the final metrics of `metrics.json` (numeric leaves, dotted keys) at the last step.
pub fn metric_points(dir: &Path, fs: &dyn Fs) -> Vec<Metric> {
    let mut by: BTreeMap<(String, i64), Metric> = BTreeMap::new();
    let mut last_step = 0i64;
    if let Ok(bytes) = fs.read(&dir.join("logs").join("metrics.jsonl")) {
        for line in String::from_utf8_lossy(&bytes).lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue; // a line torn by a kill
            };
            let (Some(key), Some(value), Some(step)) =
                (v["key"].as_str(), v["value"].as_f64(), v["step"].as_i64())
            else {
                continue;
            };
            last_step = last_step.max(step);
            by.insert(
                (key.to_string(), step),
                Metric {
                    key: key.to_string(),
                    value,
                    timestamp_ms: v["timestamp_ms"].as_i64().unwrap_or(0),
                    step,
                },
            );
        }
    }
    if let Some(m) = fs
        .read(&dir.join(crate::completion::METRICS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    {
        let step = m["steps"].as_i64().unwrap_or(last_step);
        let ts = by.values().map(|p| p.timestamp_ms).max().unwrap_or(0);
        for (k, v) in crate::config::flatten(&m) {
            if let Some(x) = v.as_f64().filter(|x| x.is_finite()) {
                let key = k.replace('.', "/");
                if super::validate_key("metric", &key).is_ok() {
                    by.insert(
                        (key.clone(), step),
                        Metric {
                            key,
                            value: x,
                            timestamp_ms: ts,
                            step,
                        },
                    );
                }
            }
        }
    }
    by.into_values().collect()
}

/// End of an attempt: metric history, artifacts (`metrics.json`, the job file as the
/// resolved config, the checkpoint when `log_checkpoint`), and FINISHED or FAILED.
pub fn finish(
    tracker: &dyn Tracker,
    job: &Job,
    fs: &dyn Fs,
    run_id: &str,
    dir: &Path,
    succeeded: bool,
    now_ms: i64,
) -> Result<()> {
    let points = metric_points(dir, fs);
    if !points.is_empty() {
        tracker.log_metrics(run_id, &points)?;
    }
    let stage = &job.config.mlflow.tracking.training;
    let metrics = dir.join(crate::completion::METRICS_FILE);
    if stage.log_metrics_json.unwrap_or(true) && fs.is_file(&metrics) {
        tracker.log_artifact(run_id, &metrics, "metrics.json")?;
    }
    let job_file: PathBuf = dir.join("job.json");
    if fs.is_file(&job_file) {
        tracker.log_artifact(run_id, &job_file, "config/job.json")?;
    }
    if succeeded && stage.log_checkpoint.unwrap_or(false) {
        super::log_artifact_dir(
            tracker,
            run_id,
            &dir.join(crate::completion::CHECKPOINT_DIR),
            "checkpoint",
        )?;
    }
    let status = if succeeded {
        RunStatus::Finished
    } else {
        RunStatus::Failed
    };
    tracker.set_terminated(run_id, status, now_ms)
}

/// The `tracking` object of metadata.json for an error.
pub fn error_state(backend: &str, e: &TrackError) -> Value {
    json!({"backend": backend, "state": "error", "error": {"kind": e.kind(), "message": e.to_string()}})
}

/// The tracker `train` uses, or `None` (stage disabled, or the store cannot be opened and
/// tracking is not required), with warnings. With `tracking.required: true` an unreachable
/// or unusable store is `tracking_unavailable` before anything is trained.
pub fn open_for_train(
    config: &Config,
    var: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> crate::error::Result<(Option<Opened>, Vec<String>)> {
    let required = config.mlflow.tracking.required.unwrap_or(false);
    let unavailable = |e: &TrackError| {
        crate::error::Error::new(
            crate::error::ErrorKind::TrackingUnavailable,
            format!("tracking.required is true and the tracking store is not usable: {e}"),
        )
    };
    let opened = match open_training(config, Arc::new(crate::fs::OsFs), var, cwd) {
        Ok(o) => o,
        Err(e) if required => return Err(unavailable(&e)),
        Err(e) => return Ok((None, vec![format!("tracking is off for this run: {e}")])),
    };
    let warnings = opened.warnings.clone();
    if !opened.tracker.is_enabled() {
        return Ok((None, warnings));
    }
    if required {
        opened
            .tracker
            .experiment_by_name(&experiment_name(config))
            .map_err(|e| unavailable(&e))?;
    }
    Ok((Some(opened), warnings))
}
