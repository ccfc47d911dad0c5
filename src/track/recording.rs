//! The recording backend: an in-memory tracking store with the server's semantics (unique
//! experiment names, write-once params, deleted experiments, RESOURCE_DOES_NOT_EXIST) that
//! records every call, for model-based tests; it can inject a failure at the k-th call.
//! Deterministic: ids are counters, and it never reads a clock.

use super::{
    codes, latest_metrics, validate_artifact_path, validate_batch, validate_experiment_name,
    validate_key, validate_new_run, ArtifactEntry, Batch, Experiment, LifecycleStage, Metric,
    NewRun, Result, Run, RunFilter, RunInfo, RunStatus, TrackError, Tracker,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// One call to the port, with its arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    ExperimentByName {
        name: String,
    },
    CreateExperiment {
        name: String,
    },
    CreateRun {
        run: NewRun,
    },
    GetRun {
        run_id: String,
    },
    UpdateRun {
        run_id: String,
        status: RunStatus,
        end_time_ms: Option<i64>,
    },
    LogBatch {
        run_id: String,
        batch: Batch,
    },
    LogArtifact {
        run_id: String,
        local_file: PathBuf,
        artifact_path: String,
    },
    ListArtifacts {
        run_id: String,
        dir: String,
    },
    MetricHistory {
        run_id: String,
        key: String,
    },
    SearchRuns {
        experiment_id: String,
        filter: RunFilter,
    },
}

/// Which calls fail: the `at_call`-th (1-based), and every later one when `sticky` (a server
/// that went down and stayed down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub at_call: u64,
    pub sticky: bool,
}

#[derive(Clone, Debug)]
struct StoredRun {
    info: RunInfo,
    params: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    history: Vec<Metric>,
    artifacts: BTreeMap<String, Vec<u8>>,
}

impl StoredRun {
    fn snapshot(&self) -> Run {
        Run {
            info: self.info.clone(),
            params: self.params.clone(),
            tags: self.tags.clone(),
            metrics: latest_metrics(&self.history),
        }
    }
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    experiments: Vec<Experiment>,
    runs: BTreeMap<String, StoredRun>,
    fault: Option<Fault>,
}

#[derive(Default)]
pub struct RecordingTracker {
    state: Mutex<State>,
    /// Where artifact files are read from (the real filesystem when unset): a test world on
    /// a simulated filesystem passes its Fs.
    files: Option<std::sync::Arc<dyn crate::fs::Fs>>,
    /// Whether the calling process is still alive (always when unset): a test world that
    /// kills its orchestrator in-process makes every later call fail unrecorded, as a dead
    /// process sends nothing.
    alive: Option<Alive>,
}

/// See [`RecordingTracker::alive_while`].
pub type Alive = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

impl RecordingTracker {
    pub fn new() -> RecordingTracker {
        RecordingTracker::default()
    }

    /// Fails the `at_call`-th call (1-based) with `Unreachable`, and every later one when
    /// `sticky`. Failed calls are recorded too and change nothing.
    pub fn with_fault(fault: Fault) -> RecordingTracker {
        let tracker = RecordingTracker::default();
        tracker.lock().fault = Some(fault);
        tracker
    }

    /// The store is back: no call fails from now on (the fault plan is dropped).
    pub fn heal(&self) {
        self.lock().fault = None;
    }

    /// Reads artifact files through `fs` instead of the real filesystem.
    pub fn reading_from(mut self, fs: std::sync::Arc<dyn crate::fs::Fs>) -> RecordingTracker {
        self.files = Some(fs);
        self
    }

    /// Calls fail (unrecorded) while `alive` returns false.
    pub fn alive_while(mut self, alive: Alive) -> RecordingTracker {
        self.alive = Some(alive);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens in a failing test; keep its state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `call` and applies the fault plan. Returns the locked state to act on.
    fn enter(&self, call: Call) -> Result<MutexGuard<'_, State>> {
        if self.alive.as_ref().is_some_and(|alive| !alive()) {
            return Err(TrackError::Unreachable {
                target: "recording".into(),
                attempts: 0,
                detail: "the calling process is dead".into(),
            });
        }
        let mut state = self.lock();
        state.calls.push(call);
        let n = state.calls.len() as u64;
        if let Some(fault) = state.fault {
            let hit = n == fault.at_call || (fault.sticky && n > fault.at_call);
            if hit {
                return Err(TrackError::Unreachable {
                    target: "recording".into(),
                    attempts: 1,
                    detail: format!("injected fault on call {n}"),
                });
            }
        }
        Ok(state)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many calls reached the store (every change to its runs is one): a reader that
    /// saw the same count saw the same runs.
    pub fn call_count(&self) -> usize {
        self.lock().calls.len()
    }

    pub fn experiments(&self) -> Vec<Experiment> {
        self.lock().experiments.clone()
    }

    /// Every run, sorted by run id (creation order).
    pub fn runs(&self) -> Vec<Run> {
        self.lock().runs.values().map(StoredRun::snapshot).collect()
    }

    pub fn artifact(&self, run_id: &str, path: &str) -> Option<Vec<u8>> {
        self.lock().runs.get(run_id)?.artifacts.get(path).cloned()
    }

    /// Marks an experiment deleted, as `mlflow experiments delete` would (test set-up).
    pub fn delete_experiment(&self, name: &str) -> bool {
        let mut state = self.lock();
        let found = state.experiments.iter_mut().find(|e| e.name == name);
        match found {
            Some(e) => {
                e.lifecycle_stage = LifecycleStage::Deleted;
                true
            }
            None => false,
        }
    }

    /// Adds an experiment behind the caller's back, as a concurrent creator would (test
    /// set-up for the creation race).
    pub fn insert_experiment(&self, name: &str) -> String {
        let mut state = self.lock();
        insert_experiment(&mut state, name)
    }
}

fn insert_experiment(state: &mut State, name: &str) -> String {
    let id = (state.experiments.len() + 1).to_string();
    state.experiments.push(Experiment {
        experiment_id: id.clone(),
        name: name.to_string(),
        artifact_location: format!("memory://{id}"),
        lifecycle_stage: LifecycleStage::Active,
    });
    id
}

fn run_mut<'a>(state: &'a mut State, run_id: &str) -> Result<&'a mut StoredRun> {
    state
        .runs
        .get_mut(run_id)
        .ok_or_else(|| TrackError::not_found(format!("Run with id={run_id} not found")))
}

fn active_run_mut<'a>(state: &'a mut State, run_id: &str) -> Result<&'a mut StoredRun> {
    let run = run_mut(state, run_id)?;
    if run.info.lifecycle_stage != LifecycleStage::Active {
        return Err(TrackError::invalid(format!(
            "run `{run_id}` must be in the 'active' state"
        )));
    }
    Ok(run)
}

impl Tracker for RecordingTracker {
    fn describe(&self) -> String {
        "recording".into()
    }

    fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        let state = self.enter(Call::ExperimentByName { name: name.into() })?;
        Ok(state.experiments.iter().find(|e| e.name == name).cloned())
    }

    fn create_experiment(&self, name: &str) -> Result<String> {
        let mut state = self.enter(Call::CreateExperiment { name: name.into() })?;
        validate_experiment_name(name)?;
        if state.experiments.iter().any(|e| e.name == name) {
            return Err(TrackError::rejected(
                codes::RESOURCE_ALREADY_EXISTS,
                format!("Experiment '{name}' already exists."),
            ));
        }
        Ok(insert_experiment(&mut state, name))
    }

    fn create_run(&self, run: &NewRun) -> Result<RunInfo> {
        let mut state = self.enter(Call::CreateRun { run: run.clone() })?;
        validate_new_run(run)?;
        let experiment = state
            .experiments
            .iter()
            .find(|e| e.experiment_id == run.experiment_id)
            .ok_or_else(|| {
                TrackError::not_found(format!(
                    "No Experiment with id={} exists",
                    run.experiment_id
                ))
            })?;
        if experiment.lifecycle_stage != LifecycleStage::Active {
            return Err(TrackError::invalid(format!(
                "experiment `{}` must be in the 'active' state",
                experiment.name
            )));
        }
        let run_id = format!("run-{:04}", state.runs.len() + 1);
        let info = run.info(
            run_id.clone(),
            format!("memory://{}/{run_id}/artifacts", run.experiment_id),
        );
        let tags = run.stored_tags();
        state.runs.insert(
            run_id,
            StoredRun {
                info: info.clone(),
                params: BTreeMap::new(),
                tags,
                history: Vec::new(),
                artifacts: BTreeMap::new(),
            },
        );
        Ok(info)
    }

    fn get_run(&self, run_id: &str) -> Result<Run> {
        let mut state = self.enter(Call::GetRun {
            run_id: run_id.into(),
        })?;
        Ok(run_mut(&mut state, run_id)?.snapshot())
    }

    fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time_ms: Option<i64>,
    ) -> Result<RunInfo> {
        let mut state = self.enter(Call::UpdateRun {
            run_id: run_id.into(),
            status,
            end_time_ms,
        })?;
        let run = active_run_mut(&mut state, run_id)?;
        run.info.status = status;
        run.info.end_time_ms = end_time_ms;
        Ok(run.info.clone())
    }

    fn log_batch(&self, run_id: &str, batch: &Batch) -> Result<()> {
        let mut state = self.enter(Call::LogBatch {
            run_id: run_id.into(),
            batch: batch.clone(),
        })?;
        validate_batch(batch)?;
        let run = active_run_mut(&mut state, run_id)?;
        // Atomic like the server's log-batch: check every param before changing anything.
        for (key, value) in &batch.params {
            if let Some(old) = run.params.get(key) {
                if old != value {
                    return Err(TrackError::invalid(format!(
                        "Changing param values is not allowed. Param with key='{key}' was already logged with value='{old}'"
                    )));
                }
            }
        }
        run.params
            .extend(batch.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        run.history.extend(batch.metrics.iter().cloned());
        run.tags
            .extend(batch.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    fn log_artifact(&self, run_id: &str, local_file: &Path, artifact_path: &str) -> Result<()> {
        let mut state = self.enter(Call::LogArtifact {
            run_id: run_id.into(),
            local_file: local_file.to_path_buf(),
            artifact_path: artifact_path.into(),
        })?;
        validate_artifact_path(artifact_path)?;
        let bytes = match &self.files {
            Some(fs) => fs.read(local_file),
            None => std::fs::read(local_file),
        }
        .map_err(|e| TrackError::store(local_file, e))?;
        active_run_mut(&mut state, run_id)?
            .artifacts
            .insert(artifact_path.into(), bytes);
        Ok(())
    }

    fn list_artifacts(&self, run_id: &str, dir: &str) -> Result<Vec<ArtifactEntry>> {
        let mut state = self.enter(Call::ListArtifacts {
            run_id: run_id.into(),
            dir: dir.into(),
        })?;
        let dir = dir.trim_matches('/');
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let run = run_mut(&mut state, run_id)?;
        let mut out: BTreeMap<String, ArtifactEntry> = BTreeMap::new();
        for (path, bytes) in &run.artifacts {
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            let entry = match rest.split_once('/') {
                Some((first, _)) => ArtifactEntry {
                    path: format!("{prefix}{first}"),
                    is_dir: true,
                    size: None,
                },
                None => ArtifactEntry {
                    path: path.clone(),
                    is_dir: false,
                    size: Some(bytes.len() as u64),
                },
            };
            out.insert(entry.path.clone(), entry);
        }
        Ok(out.into_values().collect())
    }

    fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        let mut state = self.enter(Call::MetricHistory {
            run_id: run_id.into(),
            key: key.into(),
        })?;
        validate_key("metric", key)?;
        let run = run_mut(&mut state, run_id)?;
        Ok(run
            .history
            .iter()
            .filter(|m| m.key == key)
            .cloned()
            .collect())
    }

    fn search_runs(&self, experiment_id: &str, filter: &RunFilter) -> Result<Vec<Run>> {
        let state = self.enter(Call::SearchRuns {
            experiment_id: experiment_id.into(),
            filter: filter.clone(),
        })?;
        if !state
            .experiments
            .iter()
            .any(|e| e.experiment_id == experiment_id)
        {
            return Err(TrackError::not_found(format!(
                "No Experiment with id={experiment_id} exists"
            )));
        }
        Ok(state
            .runs
            .values()
            .filter(|r| r.info.experiment_id == experiment_id)
            .map(StoredRun::snapshot)
            .filter(|r| filter.matches(r))
            .collect())
    }
}
