//! The final-training run lifecycle on top of the Tracker port (docs/contract.md, "Tracking of
//! final training"): which backend a job uses, and what `train` tells it at the start and at the
//! end of an attempt.
//!
//! Tracking never costs a training run: every function here returns a `TrackError` that the
//! caller turns into a warning and a `tracking` state in metadata.json (`tracking.required`
//! is checked before training instead).
//!
//! Run names (with their auto-increment reservation) come from `train`; uploading runs that
//! tracking missed is `super::sync`.

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

/// A tracked stage of `mlflow.yaml tracking.<stage>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Training,
    Conversion,
    /// Best-model selection reading HPO runs (`tracking.selection.enabled`).
    Selection,
}

/// Chooses and opens the training-stage backend (config + `MLFLOW_TRACKING_URI` /
/// `MLFLOW_TRACKING_TOKEN` from `var`).
pub fn open_training(
    config: &Config,
    fs: Arc<dyn Fs>,
    var: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Opened> {
    open_stage(config, Stage::Training, fs, var, cwd)
}

/// Chooses and opens the backend of `stage` (disabled when `tracking.<stage>.enabled` is
/// false).
pub fn open_stage(
    config: &Config,
    stage: Stage,
    fs: Arc<dyn Fs>,
    var: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Opened> {
    let (settings, env) = backend_inputs(config, stage, var, cwd);
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

/// What chooses the backend of `stage`: its settings from mlflow.yaml (enabled by
/// `tracking.<stage>.enabled`) and the environment (`MLFLOW_TRACKING_URI`,
/// `MLFLOW_TRACKING_TOKEN`, empty values unset, and the working directory). One place for
/// every stage, so training, conversion and selection read the same store.
pub fn backend_inputs(
    config: &Config,
    stage: Stage,
    var: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> (TrackingSettings, TrackingEnv) {
    let m = &config.mlflow;
    let enabled = match stage {
        Stage::Training => m.tracking.training.enabled,
        Stage::Conversion => m.tracking.conversion.enabled,
        Stage::Selection => m.tracking.selection.enabled,
    };
    let settings = TrackingSettings {
        root: config.root.clone(),
        enabled: enabled.unwrap_or(true),
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
    (settings, env)
}

/// What the tracking store would refuse of a final training's run, checked before the first
/// write (docs/contract.md, "Refused before the first write"): the experiment name and the
/// run name, by the same rules every backend applies. Nothing to check when the training
/// stage is not tracked.
pub fn preflight(config: &Config, run_name: &str) -> crate::error::Result<()> {
    if !config.mlflow.tracking.training.enabled.unwrap_or(true) {
        return Ok(());
    }
    let experiment = experiment_name(config);
    if let Err(e) = super::validate_experiment_name(&experiment) {
        let message =
            format!("the tracking store would refuse experiment name {experiment:?}: {e}");
        let located = match config.final_training.mlflow.experiment_name {
            Some(_) => config.docs["final_training"].locate("mlflow.experiment_name", &message),
            None => match config.docs.get("experiment") {
                Some(doc) => doc.locate("experiment_name", &message),
                None => crate::error::Error::new(crate::error::ErrorKind::ConfigInvalid, message),
            },
        };
        return Err(located);
    }
    if let Err(e) = super::validate_run_name(run_name) {
        return Err(config.docs["final_training"].locate(
            "mlflow.run_name",
            &format!("the tracking store would refuse run name {run_name:?}: {e}"),
        ));
    }
    Ok(())
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

/// What a final-training run's tags and params are made of: taken from a job at train time,
/// or from a variant's `metadata.json` (and `job.json`) when `track sync` uploads it later.
#[derive(Clone, Debug, PartialEq)]
pub struct RunFacts {
    pub model: String,
    pub storage_env: String,
    pub spec_fp: String,
    pub exec_fp: String,
    pub variant: u64,
    pub mode: String,
    pub decision: String,
    pub source_kind: String,
    /// (spec_fp, exec_fp, variant) of a final_training parent.
    pub parent: Option<(String, String, u64)>,
    /// The selection lineage of a best_selected source.
    pub selection: Option<Value>,
    pub hyperparameters: Value,
    pub seed: u64,
    pub precision: Option<String>,
    pub output_dir: PathBuf,
}

impl RunFacts {
    pub fn of_job(job: &Job, variant: u64, dir: &Path, decision: &str) -> RunFacts {
        RunFacts {
            model: job.identity.model.clone(),
            storage_env: job.identity.storage_env.as_str().into(),
            spec_fp: job.identity.spec_fp.clone(),
            exec_fp: job.identity.exec_fp.clone(),
            variant,
            mode: job.config.mode().as_str().into(),
            decision: decision.into(),
            source_kind: job.source.kind.as_str().into(),
            parent: job
                .source
                .parent
                .as_ref()
                .map(|p| (p.spec_fp.clone(), p.exec_fp.clone(), p.variant)),
            selection: job.source.selection.clone(),
            hyperparameters: serde_json::to_value(&job.config.hyperparameters)
                .unwrap_or(Value::Null),
            seed: job.config.seed,
            precision: Some(job.config.precision().as_str().into()),
            output_dir: dir.to_path_buf(),
        }
    }

    /// From a variant's metadata.json (and the precision of its job.json, when present);
    /// `None` when a field every run has is missing.
    pub fn from_metadata(meta: &Value, job_doc: Option<&Value>, dir: &Path) -> Option<RunFacts> {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let parent = &meta["source"]["parent"];
        Some(RunFacts {
            model: text(&meta["model"])?,
            storage_env: text(&meta["storage_env"])?,
            spec_fp: text(&meta["spec_fp"])?,
            exec_fp: text(&meta["exec_fp"])?,
            variant: meta["variant"].as_u64()?,
            mode: text(&meta["mode"]).unwrap_or_default(),
            decision: text(&meta["decision"]).unwrap_or_default(),
            source_kind: text(&meta["source"]["type"]).unwrap_or_default(),
            parent: match (
                text(&parent["spec_fp"]),
                text(&parent["exec_fp"]),
                parent["variant"].as_u64(),
            ) {
                (Some(s), Some(e), Some(v)) => Some((s, e, v)),
                _ => None,
            },
            selection: Some(meta["source"]["selection"].clone()).filter(|v| !v.is_null()),
            hyperparameters: meta["hyperparameters"].clone(),
            seed: meta["seed"].as_u64().unwrap_or(0),
            precision: job_doc.and_then(|j| text(&j["precision"])),
            output_dir: dir.to_path_buf(),
        })
    }
}

/// The tag registry of `tags.yaml` (read and checked when the configuration loaded).
fn tag_registry(config: &Config) -> &crate::naming::TagRegistry {
    &config.tags
}

/// The tags a variant's run is found by (a RESUME whose metadata lost the run id, and
/// `track sync`): stage, spec_fp, exec_fp, variant and output dir. The output dir keeps two
/// OUTs that share a tracking store apart (the same config trained twice is two runs).
pub fn identity_tags(config: &Config, facts: &RunFacts) -> BTreeMap<String, String> {
    let registry = tag_registry(config);
    let t = |s: &str, k: &str| registry.name(s, k);
    let mut tags = training_identity_tags(config, &facts.spec_fp, &facts.exec_fp);
    tags.insert(t("legacy", "variant"), facts.variant.to_string());
    tags.insert(
        t("paths", "output_dir"),
        facts.output_dir.display().to_string(),
    );
    tags
}

/// The tags every final-training run of one identity carries, whatever its variant: stage
/// and fingerprints.
pub fn training_identity_tags(
    config: &Config,
    spec_fp: &str,
    exec_fp: &str,
) -> BTreeMap<String, String> {
    let registry = tag_registry(config);
    let t = |s: &str, k: &str| registry.name(s, k);
    BTreeMap::from([
        (t("process", "stage"), "final_training".to_string()),
        (t("paths", "spec_fp"), spec_fp.to_string()),
        (t("paths", "exec_fp"), exec_fp.to_string()),
    ])
}

/// Ends as KILLED the runs that abandoned attempts of this identity left RUNNING, once
/// `completed` of the same identity has completed (docs/contract.md, "Runs that never end"):
/// a variant killed and never resumed would keep its run RUNNING forever. Only variants that
/// `abandoned` says are incomplete with nobody holding them are touched; each ended run is
/// tagged with the variant that superseded it. Returns the variants whose runs it ended.
pub fn end_superseded_runs(
    tracker: &dyn Tracker,
    config: &Config,
    spec_fp: &str,
    exec_fp: &str,
    completed: u64,
    abandoned: &dyn Fn(u64) -> bool,
    now_ms: i64,
) -> Result<Vec<u64>> {
    end_running_runs(
        tracker,
        config,
        Fingerprints::Full(spec_fp, exec_fp),
        &|v| v != completed && abandoned(v),
        ("trainctl.superseded_by", &format!("v{completed}")),
        now_ms,
    )
}

/// Which identity's runs `end_running_runs` ends: by the full fingerprints (the exact tags),
/// or by the 8-character prefixes a variant's directory name carries, for a variant whose
/// metadata is gone (found by the sequential model: gc left such a variant's run RUNNING).
#[derive(Clone, Copy, Debug)]
pub enum Fingerprints<'a> {
    Full(&'a str, &'a str),
    Prefixes(&'a str, &'a str),
}

/// Ends as KILLED every RUNNING run of the identity `(spec_fp, exec_fp)` whose variant
/// `which` selects, tagging it with `tag` first; found by the identity and variant tags (not
/// by metadata, which may not know a run the store created before it failed). Returns the
/// variants whose runs it ended. Used for superseded attempts and by `gc` for removed ones.
pub fn end_running_runs(
    tracker: &dyn Tracker,
    config: &Config,
    fingerprints: Fingerprints<'_>,
    which: &dyn Fn(u64) -> bool,
    (tag, value): (&str, &str),
    now_ms: i64,
) -> Result<Vec<u64>> {
    let registry = tag_registry(config);
    let variant_tag = registry.name("legacy", "variant");
    let Some(experiment) = tracker.experiment_by_name(&experiment_name(config))? else {
        return Ok(Vec::new());
    };
    let (spec_tag, exec_tag) = (
        registry.name("paths", "spec_fp"),
        registry.name("paths", "exec_fp"),
    );
    let (spec_fp, exec_fp, exact) = match fingerprints {
        Fingerprints::Full(spec, exec) => (spec, exec, true),
        Fingerprints::Prefixes(spec, exec) => (spec, exec, false),
    };
    let mut tags = training_identity_tags(config, spec_fp, exec_fp);
    if !exact {
        tags.remove(&spec_tag);
        tags.remove(&exec_tag);
    }
    let filter = super::RunFilter {
        tags,
        run_name: None,
    };
    let of_identity = |run: &super::Run| {
        let starts = |t: &str, p: &str| run.tags.get(t).is_some_and(|v| v.starts_with(p));
        exact || (starts(&spec_tag, spec_fp) && starts(&exec_tag, exec_fp))
    };
    let mut ended = Vec::new();
    for run in tracker.search_runs(&experiment.experiment_id, &filter)? {
        let Some(v) = run
            .tags
            .get(&variant_tag)
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        if run.info.status != RunStatus::Running || !which(v) || !of_identity(&run) {
            continue;
        }
        let tags = BTreeMap::from([(tag.to_string(), value.to_string())]);
        tracker.set_tags(&run.info.run_id, &tags)?;
        tracker.set_terminated(&run.info.run_id, RunStatus::Killed, now_ms)?;
        ended.push(v);
    }
    Ok(ended)
}

/// The training-stage tracker, or `None` when `mlflow.yaml` turns the stage off
/// (`tracking.training.enabled: false`: no runs at all) or the backend is the disabled one.
pub fn training_stage<'a>(config: &Config, tracker: &'a dyn Tracker) -> Option<&'a dyn Tracker> {
    let enabled = config.mlflow.tracking.training.enabled.unwrap_or(true);
    (enabled && tracker.is_enabled()).then_some(tracker)
}

/// The tags of a final-training run (names from `tags.yaml`), then the user's
/// `mlflow.tags` (which win).
pub fn run_tags(config: &Config, facts: &RunFacts) -> BTreeMap<String, String> {
    let registry = tag_registry(config);
    let t = |s: &str, k: &str| registry.name(s, k);
    let mut tags = identity_tags(config, facts);
    let mut put = |k: String, v: String| {
        tags.insert(k, v);
    };
    put(
        t("process", "project"),
        config.paths.project.name.clone().unwrap_or_default(),
    );
    put(t("process", "model"), facts.model.clone());
    put(t("process", "storage_env"), facts.storage_env.clone());
    put(t("process", "created_by"), "trainctl".into());
    put(t("training", "run_mode"), facts.mode.clone());
    put(t("training", "trained_on_full_data"), "true".into());
    put(t("lineage", "source"), facts.source_kind.clone());
    if let Some((spec, exec, variant)) = &facts.parent {
        put(t("lineage", "parent_spec_fp"), spec.clone());
        put(t("lineage", "parent_exec_fp"), exec.clone());
        put(t("lineage", "parent_variant"), variant.to_string());
    }
    if let Some(sel) = &facts.selection {
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
    put("trainctl.decision".into(), facts.decision.clone());
    for (k, v) in &config.final_training.mlflow.tags {
        tags.insert(k.clone(), v.clone());
    }
    tags
}

/// Params: the effective hyperparameters (dotted keys), seed, precision and model.
pub fn run_params(facts: &RunFacts) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    for (k, v) in crate::config::flatten(&facts.hyperparameters) {
        params.insert(k, scalar(&v));
    }
    params.insert("seed".into(), facts.seed.to_string());
    if let Some(p) = &facts.precision {
        params.insert("precision".into(), p.clone());
    }
    params.insert("model".into(), facts.model.clone());
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
    let facts = RunFacts::of_job(job, variant, dir, decision);
    let tags = run_tags(&job.config, &facts);
    // A RESUME whose metadata lost the run id (damaged metadata.json) finds the variant's
    // run by its identity tags: one run per variant.
    let found;
    let previous_run_id = match previous_run_id {
        Some(id) => Some(id),
        None if decision == "resume" => {
            let filter = super::RunFilter {
                tags: identity_tags(&job.config, &facts),
                run_name: None,
            };
            found = tracker
                .search_runs(&experiment.experiment_id, &filter)?
                .into_iter()
                .max_by_key(|r| r.info.start_time_ms)
                .map(|r| r.info.run_id);
            found.as_deref()
        }
        None => None,
    };
    if let Some(run_id) = previous_run_id {
        match tracker.reopen_run(run_id) {
            Ok(_) => {
                let registry = tag_registry(&job.config);
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
    tracker.log_params(&info.run_id, &run_params(&facts))?;
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
    config: &Config,
    fs: &dyn Fs,
    run_id: &str,
    dir: &Path,
    succeeded: bool,
    now_ms: i64,
) -> Result<Vec<MissingArtifact>> {
    upload(tracker, config, fs, run_id, dir, succeeded, now_ms, false)
}

/// An artifact a run ended without: its name in the run and why it did not go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingArtifact {
    pub name: String,
    pub why: String,
}

impl std::fmt::Display for MissingArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.why)
    }
}

/// The names of `missing`, as metadata and sync records keep them.
pub fn artifact_names(missing: &[MissingArtifact]) -> Vec<String> {
    missing.iter().map(|m| m.name.clone()).collect()
}

/// `missing` for a message: "name (why); …".
pub fn artifacts_text(missing: &[MissingArtifact]) -> String {
    missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The tag naming the artifacts a run ended without (empty once `track sync` uploaded them).
pub const ARTIFACTS_MISSING_TAG: &str = "trainctl.artifacts_missing";

/// Logs the run's artifacts (metrics.json, the job file, the checkpoint when configured).
/// They are optional to the run: each one that fails is returned by name (with why) instead
/// of failing, so that a store which does not take artifacts (a server without the artifact
/// proxy, the usual S3/GCS set-up) never keeps a run open.
pub(crate) fn upload_artifacts(
    tracker: &dyn Tracker,
    config: &Config,
    fs: &dyn Fs,
    run_id: &str,
    dir: &Path,
    succeeded: bool,
) -> Vec<MissingArtifact> {
    let stage = &config.mlflow.tracking.training;
    let mut missing = Vec::new();
    let files = [
        (
            stage.log_metrics_json.unwrap_or(true),
            dir.join(crate::completion::METRICS_FILE),
            "metrics.json",
        ),
        (true, dir.join("job.json"), "config/job.json"),
    ];
    for (wanted, local, dest) in files {
        if !wanted || !fs.is_file(&local) {
            continue;
        }
        if let Err(e) = tracker.log_artifact(run_id, &local, dest) {
            missing.push(MissingArtifact {
                name: dest.to_string(),
                why: e.to_string(),
            });
        }
    }
    if succeeded && stage.log_checkpoint.unwrap_or(false) {
        if let Err(e) = super::log_artifact_dir(
            tracker,
            run_id,
            &dir.join(crate::completion::CHECKPOINT_DIR),
            "checkpoint",
        ) {
            missing.push(MissingArtifact {
                name: "checkpoint".to_string(),
                why: e.to_string(),
            });
        }
    }
    missing
}

/// `finish`; with `dedupe`, metric points the run already has (same key, step and value:
/// an earlier upload that stopped half-way) are not logged again, so a retried upload leaves
/// the same history as one that went through.
#[allow(clippy::too_many_arguments)]
pub(crate) fn upload(
    tracker: &dyn Tracker,
    config: &Config,
    fs: &dyn Fs,
    run_id: &str,
    dir: &Path,
    succeeded: bool,
    now_ms: i64,
    dedupe: bool,
) -> Result<Vec<MissingArtifact>> {
    let mut points = metric_points(dir, fs);
    if dedupe {
        let keys: std::collections::BTreeSet<String> =
            points.iter().map(|p| p.key.clone()).collect();
        let mut have = std::collections::BTreeSet::new();
        for key in keys {
            for m in tracker.metric_history(run_id, &key)? {
                have.insert((m.key, m.step, m.value.to_bits()));
            }
        }
        points.retain(|p| !have.contains(&(p.key.clone(), p.step, p.value.to_bits())));
    }
    if !points.is_empty() {
        tracker.log_metrics(run_id, &points)?;
    }
    let missing = upload_artifacts(tracker, config, fs, run_id, dir, succeeded);
    if !missing.is_empty() {
        let tags = std::collections::BTreeMap::from([(
            ARTIFACTS_MISSING_TAG.to_string(),
            artifact_names(&missing).join(","),
        )]);
        tracker.set_tags(run_id, &tags)?;
    }
    let status = if succeeded {
        RunStatus::Finished
    } else {
        RunStatus::Failed
    };
    tracker.set_terminated(run_id, status, now_ms)?;
    Ok(missing)
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
    let opened = match open_training(
        config,
        Arc::new(crate::store::cloud::CloudFs::new()),
        var,
        cwd,
    ) {
        Ok(o) => o,
        Err(e) if required => return Err(unavailable(&e)),
        Err(e) => return Ok((None, vec![format!("tracking is off for this run: {e}")])),
    };
    let warnings = opened.warnings.clone();
    if training_stage(config, &*opened.tracker).is_none() {
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

/// The run of a conversion (docs/contract.md, "Tracking of final training", "Source, checkpoint and
/// conversion"): created when a conversion is made (not on reuse), named by `naming.yaml
/// run_names.conversion`, in the final training's experiment, with the manifest's lineage tags, the
/// conversion settings as params and `manifest.json` as an artifact; FINISHED. Returns the run id.
/// Like training, a failure is the caller's warning.
pub fn track_conversion(
    tracker: &dyn Tracker,
    config: &Config,
    manifest: &Value,
    output_dir: &Path,
    now_ms: i64,
) -> Result<String> {
    let experiment = resolve_experiment(tracker, &experiment_name(config))?;
    let mut tags = BTreeMap::new();
    if let Some(obj) = manifest["tags"].as_object() {
        for (k, v) in obj {
            tags.insert(k.clone(), scalar(v));
        }
    }
    tags.insert("trainctl.converter".into(), scalar(&manifest["converter"]));
    // The training run this conversion descends from, when training was tracked.
    let parent_run = manifest["parent"]["dir"]
        .as_str()
        .and_then(|d| {
            crate::store::meta::VariantMeta::read(
                &crate::store::cloud::CloudFs::new(),
                Path::new(d),
            )
        })
        .and_then(|m| m.tracking_run_id().map(str::to_string));
    if let Some(id) = parent_run {
        tags.insert(
            tag_registry(config).name("lineage", "parent_training_run_id"),
            id,
        );
    }
    let info = tracker.create_run(&NewRun {
        experiment_id: experiment.experiment_id,
        run_name: manifest["run_name"]
            .as_str()
            .unwrap_or("conversion")
            .to_string(),
        start_time_ms: now_ms,
        tags,
    })?;
    let mut params = BTreeMap::new();
    for (k, v) in crate::config::flatten(&manifest["conversion"]) {
        if !v.is_null() && super::validate_key("param", &k).is_ok() {
            params.insert(k, scalar(&v));
        }
    }
    params.insert("conv_fp".into(), scalar(&manifest["conv_fp"]));
    tracker.log_params(&info.run_id, &params)?;
    tracker.log_artifact(
        &info.run_id,
        &output_dir.join(crate::convert::MANIFEST_FILE),
        "manifest.json",
    )?;
    tracker.set_terminated(&info.run_id, RunStatus::Finished, now_ms)?;
    Ok(info.run_id)
}

/// Tracking after `convert::convert` (docs/contract.md, "Tracking of final training"): a new
/// conversion gets its run when `tracking.conversion.enabled`; a failure is a warning in the
/// report, never a failed conversion (the bundle is published already). Returns the `tracking`
/// state for the command's output (`null` when not tracked).
pub fn after_conversion(
    config: &Config,
    var: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
    report: &mut crate::convert::Report,
    now_ms: i64,
) -> Value {
    if report.decision != "new" {
        return Value::Null;
    }
    let opened = open_stage(
        config,
        Stage::Conversion,
        Arc::new(crate::store::cloud::CloudFs::new()),
        var,
        cwd,
    );
    let o = match opened {
        Ok(o) if o.tracker.is_enabled() => o,
        Ok(_) => return Value::Null,
        Err(e) => {
            report
                .warnings
                .push(format!("tracking is off for this conversion: {e}"));
            return Value::Null;
        }
    };
    report.warnings.extend(o.warnings.clone());
    match track_conversion(
        &*o.tracker,
        config,
        &report.manifest,
        &report.output_dir,
        now_ms,
    ) {
        Ok(run_id) => json!({"backend": o.describe, "state": "finished", "run_id": run_id}),
        Err(e) => {
            report.warnings.push(format!(
                "tracking ({}) failed, the conversion stands: {e}",
                o.describe
            ));
            error_state(&o.describe, &e)
        }
    }
}
