//! The Tracker port (docs/contract.md, "Tracking of final training"): everything trainctl tells
//! MLflow goes through `Tracker`, so the same lifecycle runs against the file store, a REST server,
//! AzureML, nothing at all, or an in-memory recorder in tests. This module owns the data types, the
//! typed error, the input validation every backend shares and the race-free experiment
//! get-or-create. It never decides whether tracking matters for a training: a `TrackError` is
//! handed back, and the caller turns it into a warning (or a failure under `tracking.required`).

pub mod disabled;
pub mod file;
pub mod lifecycle;
pub mod recording;
pub mod rest;
pub mod select;
pub mod sync;

pub use disabled::DisabledTracker;
pub use file::FileTracker;
pub use recording::{Call, RecordingTracker};
pub use rest::{RestTracker, RetryPolicy};
pub use select::{
    open, select_backend, AzureSettings, BackendChoice, Secret, Selection, TrackingEnv,
    TrackingSettings, UriSource,
};

use std::collections::BTreeMap;
use std::path::Path;

/// The tag MLflow reads the run name from (the file store keeps the name in two places).
pub const TAG_RUN_NAME: &str = "mlflow.runName";

/// MLflow's limits (REST API 2.0 and the stores behind it, measured on 3.17.2).
pub const KEY_LEN_MAX: usize = 250;
pub const PARAM_VALUE_LEN_MAX: usize = 6000;
pub const TAG_VALUE_LEN_MAX: usize = 8000;
pub const EXPERIMENT_NAME_LEN_MAX: usize = 500;
/// `runs/log-batch`: at most 100 params, 100 tags, 1000 metrics, 1000 entities in all.
pub const BATCH_PARAMS_MAX: usize = 100;
pub const BATCH_TAGS_MAX: usize = 100;
pub const BATCH_METRICS_MAX: usize = 1000;
pub const BATCH_ENTITIES_MAX: usize = 1000;

/// MLflow error codes both the server and our local stores use, so callers match one set.
pub mod codes {
    pub const RESOURCE_DOES_NOT_EXIST: &str = "RESOURCE_DOES_NOT_EXIST";
    pub const RESOURCE_ALREADY_EXISTS: &str = "RESOURCE_ALREADY_EXISTS";
    pub const INVALID_PARAMETER_VALUE: &str = "INVALID_PARAMETER_VALUE";
}

/// Why a tracking call failed. The kinds are the ones docs/contract.md, "Tracking of final
/// training" names (server down, 5xx, timeout, deleted/missing experiment, malformed URI); `kind()`
/// is the stable name recorded in metadata.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    #[error("malformed tracking URI `{uri}`: {reason}")]
    MalformedUri { uri: String, reason: String },
    #[error("tracking store {target} unreachable after {attempts} attempt(s): {detail}")]
    Unreachable {
        target: String,
        attempts: u32,
        detail: String,
    },
    #[error("tracking store {target} timed out after {attempts} attempt(s): {detail}")]
    Timeout {
        target: String,
        attempts: u32,
        detail: String,
    },
    #[error("tracking server {target} answered HTTP {status} after {attempts} attempt(s): {code} {message}")]
    Server {
        target: String,
        status: u16,
        code: String,
        message: String,
        attempts: u32,
    },
    /// The store refused the request (HTTP 4xx, or the same condition in a local store, where
    /// `status` is `None`). `code` is MLflow's error code, e.g. `RESOURCE_DOES_NOT_EXIST`.
    #[error("tracking request rejected ({code}{}): {message}", .status.map(|s| format!(", HTTP {s}")).unwrap_or_default())]
    Rejected {
        code: String,
        status: Option<u16>,
        message: String,
    },
    #[error("experiment `{name}` (id {experiment_id}) is deleted in the tracking store; restore it or choose another name")]
    ExperimentDeleted { name: String, experiment_id: String },
    #[error("tracking store I/O error at {path}: {detail}")]
    Store { path: String, detail: String },
    #[error("unexpected data from the tracking store ({what}): {detail}")]
    Malformed { what: String, detail: String },
    #[error("{what} is not supported by this tracking store: {detail}")]
    Unsupported { what: String, detail: String },
}

impl TrackError {
    /// Stable machine-readable kind, for metadata and `--json` warnings.
    pub fn kind(&self) -> &'static str {
        match self {
            TrackError::MalformedUri { .. } => "malformed_uri",
            TrackError::Unreachable { .. } => "unreachable",
            TrackError::Timeout { .. } => "timeout",
            TrackError::Server { .. } => "server_error",
            TrackError::Rejected { .. } => "rejected",
            TrackError::ExperimentDeleted { .. } => "experiment_deleted",
            TrackError::Store { .. } => "store_io",
            TrackError::Malformed { .. } => "malformed_response",
            TrackError::Unsupported { .. } => "unsupported",
        }
    }

    /// MLflow's error code when the store gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            TrackError::Rejected { code, .. } | TrackError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (what `track sync` retries).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TrackError::Unreachable { .. } | TrackError::Timeout { .. } | TrackError::Server { .. }
        )
    }

    pub fn rejected(code: &str, message: impl Into<String>) -> TrackError {
        TrackError::Rejected {
            code: code.to_string(),
            status: None,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> TrackError {
        TrackError::rejected(codes::INVALID_PARAMETER_VALUE, message)
    }

    pub fn not_found(message: impl Into<String>) -> TrackError {
        TrackError::rejected(codes::RESOURCE_DOES_NOT_EXIST, message)
    }

    pub(crate) fn store(path: &Path, err: impl std::fmt::Display) -> TrackError {
        TrackError::Store {
            path: path.display().to_string(),
            detail: err.to_string(),
        }
    }
}

pub type Result<T, E = TrackError> = std::result::Result<T, E>;

/// MLflow run status (the file store writes the numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunStatus {
    Running,
    Scheduled,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Running,
        RunStatus::Scheduled,
        RunStatus::Finished,
        RunStatus::Failed,
        RunStatus::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The number in a file-store `meta.yaml` (`mlflow.entities.RunStatus`).
    pub fn code(self) -> u8 {
        match self {
            RunStatus::Running => 1,
            RunStatus::Scheduled => 2,
            RunStatus::Finished => 3,
            RunStatus::Failed => 4,
            RunStatus::Killed => 5,
        }
    }

    pub fn from_code(code: u64) -> Option<RunStatus> {
        RunStatus::ALL
            .into_iter()
            .find(|r| u64::from(r.code()) == code)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Finished | RunStatus::Failed | RunStatus::Killed
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LifecycleStage {
    Active,
    Deleted,
}

impl LifecycleStage {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleStage::Active => "active",
            LifecycleStage::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<LifecycleStage> {
        match s {
            "active" => Some(LifecycleStage::Active),
            "deleted" => Some(LifecycleStage::Deleted),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Experiment {
    /// Opaque: sequential in SQL stores, 18 digits in the file store.
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: LifecycleStage,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    pub run_name: String,
    pub status: RunStatus,
    pub start_time_ms: i64,
    pub end_time_ms: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: LifecycleStage,
}

/// One metric point. NaN and ±inf are allowed (MLflow stores them).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub timestamp_ms: i64,
    pub step: i64,
}

impl Metric {
    /// MLflow's "latest" order: the greatest `(step, timestamp, value)` wins.
    fn later_than(&self, other: &Metric) -> bool {
        (self.step, self.timestamp_ms) > (other.step, other.timestamp_ms)
            || ((self.step, self.timestamp_ms) == (other.step, other.timestamp_ms)
                && self.value.total_cmp(&other.value).is_gt())
    }
}

/// A run as read back: params, tags, and the latest value of each metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub info: RunInfo,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, Metric>,
}

/// What `create_run` needs. `tags` excludes `mlflow.runName`, which every backend sets from
/// `run_name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    pub experiment_id: String,
    pub run_name: String,
    pub start_time_ms: i64,
    pub tags: BTreeMap<String, String>,
}

/// Params, metrics and tags logged together. Maps make duplicate keys impossible (MLflow
/// rejects a batch with a key twice).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub params: BTreeMap<String, String>,
    pub metrics: Vec<Metric>,
    pub tags: BTreeMap<String, String>,
}

impl NewRun {
    /// The new run's info as every backend reports it: RUNNING, active, not ended, with the
    /// backend's id and artifact location.
    pub fn info(&self, run_id: String, artifact_uri: String) -> RunInfo {
        RunInfo {
            run_id,
            experiment_id: self.experiment_id.clone(),
            run_name: self.run_name.clone(),
            status: RunStatus::Running,
            start_time_ms: self.start_time_ms,
            end_time_ms: None,
            artifact_uri,
            lifecycle_stage: LifecycleStage::Active,
        }
    }

    /// The tags a backend stores: the given ones plus `mlflow.runName`.
    pub fn stored_tags(&self) -> BTreeMap<String, String> {
        let mut tags = self.tags.clone();
        tags.insert(TAG_RUN_NAME.to_string(), self.run_name.clone());
        tags
    }
}

/// A path percent-encoded as MLflow writes it in URIs: ASCII alphanumerics and `_.-~/` kept,
/// every other byte `%XX` (the inverse of `select::percent_decode`).
pub fn percent_encode_path(path: &str) -> String {
    let mut out = String::new();
    for byte in path.as_bytes() {
        let c = *byte as char;
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '~' | '/') {
            out.push(c);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.params.is_empty() && self.metrics.is_empty() && self.tags.is_empty()
    }

    fn entity_count(&self) -> usize {
        self.params.len() + self.metrics.len() + self.tags.len()
    }
}

/// Which runs `search_runs` returns: active runs of one experiment whose tags include every
/// `tags` pair and, when given, whose name is `run_name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub tags: BTreeMap<String, String>,
    pub run_name: Option<String>,
}

impl RunFilter {
    pub fn matches(&self, run: &Run) -> bool {
        let name_ok = self
            .run_name
            .as_ref()
            .is_none_or(|name| *name == run.info.run_name);
        let tags_ok = self
            .tags
            .iter()
            .all(|(k, v)| run.tags.get(k).is_some_and(|have| have == v));
        name_ok && tags_ok && run.info.lifecycle_stage == LifecycleStage::Active
    }
}

/// One entry of a run's artifact directory; `path` is relative to the artifact root.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ArtifactEntry {
    pub path: String,
    pub is_dir: bool,
    pub size: Option<u64>,
}

/// The port. Object-safe; every method is one round trip (or one local transaction) except
/// the provided conveniences at the end.
pub trait Tracker: Send + Sync {
    /// Where runs go, for messages and metadata (never a credential).
    fn describe(&self) -> String;

    /// False only for the disabled backend (callers record "not tracked", not a fake run).
    fn is_enabled(&self) -> bool {
        true
    }

    /// The experiment with this name, active or deleted; `None` when there is none.
    fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>>;

    /// Creates an experiment and returns its id; `Rejected` with `RESOURCE_ALREADY_EXISTS`
    /// when the name is taken (see `resolve_experiment` for the race-free get-or-create).
    fn create_experiment(&self, name: &str) -> Result<String>;

    /// Creates a RUNNING run named `run.run_name` (also tagged `mlflow.runName`).
    fn create_run(&self, run: &NewRun) -> Result<RunInfo>;

    fn get_run(&self, run_id: &str) -> Result<Run>;

    /// Sets the status and, when given, the end time. Returns the updated info. `None` clears
    /// the end time in the file store and the recorder; MLflow's REST API cannot clear it,
    /// so a reopened server run keeps its old end time until it is terminated again.
    fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time_ms: Option<i64>,
    ) -> Result<RunInfo>;

    /// Logs params (write-once: the same value again is fine, a different one is rejected
    /// with `INVALID_PARAMETER_VALUE`), metric points and tags (last writer wins).
    fn log_batch(&self, run_id: &str, batch: &Batch) -> Result<()>;

    /// Copies the local file `local_file` to `artifact_path` (relative, `/`-separated,
    /// including the file name) under the run's artifact root.
    fn log_artifact(&self, run_id: &str, local_file: &Path, artifact_path: &str) -> Result<()>;

    /// Entries directly under `dir` ("" = the artifact root), sorted by path.
    fn list_artifacts(&self, run_id: &str, dir: &str) -> Result<Vec<ArtifactEntry>>;

    /// Every logged point of one metric, in logging order.
    fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>>;

    /// Active runs of `experiment_id` matching `filter` (all pages), in no particular order.
    fn search_runs(&self, experiment_id: &str, filter: &RunFilter) -> Result<Vec<Run>>;

    fn log_params(&self, run_id: &str, params: &BTreeMap<String, String>) -> Result<()> {
        self.log_batch(
            run_id,
            &Batch {
                params: params.clone(),
                ..Batch::default()
            },
        )
    }

    fn log_metrics(&self, run_id: &str, metrics: &[Metric]) -> Result<()> {
        self.log_batch(
            run_id,
            &Batch {
                metrics: metrics.to_vec(),
                ..Batch::default()
            },
        )
    }

    fn set_tags(&self, run_id: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        self.log_batch(
            run_id,
            &Batch {
                tags: tags.clone(),
                ..Batch::default()
            },
        )
    }

    /// Ends a run: FINISHED, FAILED or KILLED, with its end time.
    fn set_terminated(&self, run_id: &str, status: RunStatus, end_time_ms: i64) -> Result<()> {
        if !status.is_terminal() {
            return Err(TrackError::invalid(format!(
                "set_terminated needs a terminal status, got {}",
                status.as_str()
            )));
        }
        self.update_run(run_id, status, Some(end_time_ms))
            .map(|_| ())
    }

    /// RESUME: reopens an existing active run (status back to RUNNING) and returns it as it
    /// was before reopening. A deleted run is `Rejected` (`INVALID_PARAMETER_VALUE`, as the
    /// server answers for logging into it).
    fn reopen_run(&self, run_id: &str) -> Result<Run> {
        let run = self.get_run(run_id)?;
        if run.info.lifecycle_stage != LifecycleStage::Active {
            return Err(TrackError::invalid(format!(
                "run {run_id} is deleted; it cannot be resumed"
            )));
        }
        self.update_run(run_id, RunStatus::Running, None)?;
        Ok(run)
    }
}

/// Get-or-create by name. A concurrent creator that wins the race makes our create fail
/// with `RESOURCE_ALREADY_EXISTS`; we then read the winner's experiment, so every racer ends
/// with the same id. A deleted experiment of that name is `ExperimentDeleted` (MLflow keeps
/// the name reserved until it is purged).
pub fn resolve_experiment(tracker: &dyn Tracker, name: &str) -> Result<Experiment> {
    validate_experiment_name(name)?;
    let found = match tracker.experiment_by_name(name)? {
        Some(found) => found,
        None => match tracker.create_experiment(name) {
            Ok(_) => read_back_experiment(tracker, name)?,
            Err(e) if e.code() == Some(codes::RESOURCE_ALREADY_EXISTS) => {
                read_back_experiment(tracker, name)?
            }
            Err(e) => return Err(e),
        },
    };
    if found.lifecycle_stage == LifecycleStage::Deleted {
        return Err(TrackError::ExperimentDeleted {
            name: found.name,
            experiment_id: found.experiment_id,
        });
    }
    debug_assert_eq!(found.name, name, "experiment_by_name returned another name");
    Ok(found)
}

fn read_back_experiment(tracker: &dyn Tracker, name: &str) -> Result<Experiment> {
    tracker
        .experiment_by_name(name)?
        .ok_or_else(|| TrackError::Malformed {
            what: "experiment read-back".into(),
            detail: format!("experiment `{name}` exists by create but not by name"),
        })
}

/// Logs every regular file below `local_dir` under `artifact_dir` (e.g. a checkpoint
/// directory). Bounded: at most `ARTIFACT_DIR_FILES_MAX` files, symlinks skipped.
pub fn log_artifact_dir(
    tracker: &dyn Tracker,
    run_id: &str,
    local_dir: &Path,
    artifact_dir: &str,
) -> Result<usize> {
    let mut pending = vec![(
        local_dir.to_path_buf(),
        artifact_dir.trim_matches('/').to_string(),
    )];
    let mut logged = 0usize;
    while let Some((dir, dest)) = pending.pop() {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| TrackError::store(&dir, e))? {
            let entry = entry.map_err(|e| TrackError::store(&dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let kind = entry.file_type().map_err(|e| TrackError::store(&dir, e))?;
            entries.push((name, kind));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in entries {
            let child_dest = if dest.is_empty() {
                name.clone()
            } else {
                format!("{dest}/{name}")
            };
            if kind.is_dir() {
                pending.push((dir.join(&name), child_dest));
            } else if kind.is_file() {
                if logged == ARTIFACT_DIR_FILES_MAX {
                    return Err(TrackError::invalid(format!(
                        "{} holds more than {ARTIFACT_DIR_FILES_MAX} files",
                        local_dir.display()
                    )));
                }
                tracker.log_artifact(run_id, &dir.join(&name), &child_dest)?;
                logged += 1;
            }
        }
    }
    Ok(logged)
}

pub const ARTIFACT_DIR_FILES_MAX: usize = 10_000;

// ---------------------------------------------------------------------------------------
// Validation shared by every backend, so the file store and the recorder refuse what the
// server refuses (and nothing becomes a path outside the run directory).

fn char_len(s: &str) -> usize {
    s.chars().count()
}

pub fn validate_experiment_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(TrackError::invalid("experiment name is empty"));
    }
    if char_len(name) > EXPERIMENT_NAME_LEN_MAX {
        return Err(TrackError::invalid(format!(
            "experiment name longer than {EXPERIMENT_NAME_LEN_MAX} characters"
        )));
    }
    Ok(())
}

/// A param, metric or tag key: MLflow's alphabet (alphanumerics, `_ - . space / :`), at most
/// 250 characters, and as a `/`-path no empty, `.` or `..` component (keys with `/` become
/// sub-directories in the file store).
pub fn validate_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(TrackError::invalid(format!("{what} key is empty")));
    }
    if char_len(key) > KEY_LEN_MAX {
        return Err(TrackError::invalid(format!(
            "{what} key `{key}` is longer than {KEY_LEN_MAX} characters"
        )));
    }
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '/' | ':');
    if let Some(bad) = key.chars().find(|c| !allowed(*c)) {
        return Err(TrackError::invalid(format!(
            "{what} key `{key}` contains `{bad}`; allowed are alphanumerics, `_`, `-`, `.`, space, `/` and `:`"
        )));
    }
    let bad_component = key
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..");
    if bad_component {
        return Err(TrackError::invalid(format!(
            "{what} key `{key}` is not a normalized relative path"
        )));
    }
    Ok(())
}

/// An artifact destination: relative, `/`-separated, no empty, `.` or `..` component.
pub fn validate_artifact_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || path.contains('\\')
        || path.contains('\0');
    if bad {
        return Err(TrackError::invalid(format!(
            "artifact path `{path}` must be relative, `/`-separated, without `.`/`..` or empty components"
        )));
    }
    Ok(())
}

pub fn validate_run_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(TrackError::invalid("run name is empty"));
    }
    if char_len(name) > TAG_VALUE_LEN_MAX {
        return Err(TrackError::invalid(format!(
            "run name longer than {TAG_VALUE_LEN_MAX} characters"
        )));
    }
    Ok(())
}

fn validate_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in tags {
        validate_key("tag", key)?;
        if char_len(value) > TAG_VALUE_LEN_MAX {
            return Err(TrackError::invalid(format!(
                "tag `{key}` value longer than {TAG_VALUE_LEN_MAX} characters"
            )));
        }
    }
    Ok(())
}

pub fn validate_new_run(run: &NewRun) -> Result<()> {
    validate_run_name(&run.run_name)?;
    validate_tags(&run.tags)
}

pub fn validate_batch(batch: &Batch) -> Result<()> {
    for (key, value) in &batch.params {
        validate_key("param", key)?;
        if char_len(value) > PARAM_VALUE_LEN_MAX {
            return Err(TrackError::invalid(format!(
                "param `{key}` value longer than {PARAM_VALUE_LEN_MAX} characters"
            )));
        }
    }
    for metric in &batch.metrics {
        validate_key("metric", &metric.key)?;
    }
    validate_tags(&batch.tags)
}

/// Splits a batch into pieces within the `runs/log-batch` limits: each piece takes up to
/// 100 params and 100 tags, then fills up with metrics (in order) to 1000 entities, so the
/// number of requests is the least the limits allow.
pub fn split_batch(batch: &Batch) -> Vec<Batch> {
    let mut params = batch.params.iter();
    let mut tags = batch.tags.iter();
    let mut metrics = batch.metrics.iter();
    let mut out = Vec::new();
    // Bounded: every piece takes at least one entity until all are taken.
    loop {
        let mut piece = Batch::default();
        piece.params.extend(
            params
                .by_ref()
                .take(BATCH_PARAMS_MAX)
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        piece.tags.extend(
            tags.by_ref()
                .take(BATCH_TAGS_MAX)
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let room =
            BATCH_METRICS_MAX.min(BATCH_ENTITIES_MAX - piece.params.len() - piece.tags.len());
        piece.metrics.extend(metrics.by_ref().take(room).cloned());
        if piece.is_empty() {
            return out;
        }
        debug_assert!(piece.entity_count() <= BATCH_ENTITIES_MAX);
        out.push(piece);
    }
}

/// The latest point per key (MLflow's rule), from points in any order.
pub fn latest_metrics<'a>(
    points: impl IntoIterator<Item = &'a Metric>,
) -> BTreeMap<String, Metric> {
    let mut latest: BTreeMap<String, Metric> = BTreeMap::new();
    for point in points {
        match latest.get(&point.key) {
            Some(have) if !point.later_than(have) => {}
            _ => {
                latest.insert(point.key.clone(), point.clone());
            }
        }
    }
    latest
}

#[cfg(test)]
mod tests;
