//! The disabled backend (`tracking.<stage>.enabled: false`): accepts every call and stores
//! nothing. Callers check `is_enabled()` and record "not tracked" instead of its synthetic
//! ids; it must never touch the disk or the network.

use super::{
    ArtifactEntry, Batch, Experiment, LifecycleStage, Metric, NewRun, Result, Run, RunFilter,
    RunInfo, RunStatus, TrackError, Tracker,
};
use std::path::Path;

/// The id every synthetic experiment and run of the disabled backend has.
pub const DISABLED_ID: &str = "disabled";

#[derive(Clone, Copy, Debug, Default)]
pub struct DisabledTracker;

impl Tracker for DisabledTracker {
    fn describe(&self) -> String {
        "disabled".into()
    }

    fn is_enabled(&self) -> bool {
        false
    }

    fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        Ok(Some(Experiment {
            experiment_id: DISABLED_ID.into(),
            name: name.into(),
            artifact_location: String::new(),
            lifecycle_stage: LifecycleStage::Active,
        }))
    }

    fn create_experiment(&self, _name: &str) -> Result<String> {
        Ok(DISABLED_ID.into())
    }

    fn create_run(&self, run: &NewRun) -> Result<RunInfo> {
        Ok(RunInfo {
            run_id: DISABLED_ID.into(),
            experiment_id: run.experiment_id.clone(),
            run_name: run.run_name.clone(),
            status: RunStatus::Running,
            start_time_ms: run.start_time_ms,
            end_time_ms: None,
            artifact_uri: String::new(),
            lifecycle_stage: LifecycleStage::Active,
        })
    }

    fn get_run(&self, run_id: &str) -> Result<Run> {
        Err(TrackError::not_found(format!(
            "run `{run_id}`: tracking is disabled"
        )))
    }

    fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time_ms: Option<i64>,
    ) -> Result<RunInfo> {
        Ok(RunInfo {
            run_id: run_id.into(),
            experiment_id: DISABLED_ID.into(),
            run_name: String::new(),
            status,
            start_time_ms: 0,
            end_time_ms,
            artifact_uri: String::new(),
            lifecycle_stage: LifecycleStage::Active,
        })
    }

    fn log_batch(&self, _run_id: &str, _batch: &Batch) -> Result<()> {
        Ok(())
    }

    fn log_artifact(&self, _run_id: &str, _local_file: &Path, _artifact_path: &str) -> Result<()> {
        Ok(())
    }

    fn list_artifacts(&self, _run_id: &str, _dir: &str) -> Result<Vec<ArtifactEntry>> {
        Ok(Vec::new())
    }

    fn metric_history(&self, _run_id: &str, _key: &str) -> Result<Vec<Metric>> {
        Ok(Vec::new())
    }

    fn search_runs(&self, _experiment_id: &str, _filter: &RunFilter) -> Result<Vec<Run>> {
        Ok(Vec::new())
    }

    /// Nothing to reopen: answers like a fresh run so a RESUME under disabled tracking
    /// proceeds.
    fn reopen_run(&self, run_id: &str) -> Result<Run> {
        let info = self.update_run(run_id, RunStatus::Running, None)?;
        Ok(Run {
            info,
            params: Default::default(),
            tags: Default::default(),
            metrics: Default::default(),
        })
    }
}
