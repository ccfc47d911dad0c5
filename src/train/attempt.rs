//! One attempt at a variant this start holds (docs/contract.md, "Execution": completion and
//! failure): record `running`, stage the trainer's directory and write its job file, start
//! tracking, run the trainer, upload its outputs (OUT in a bucket), then either record the
//! failure, or verify, write the manifest and `completed` last, add the cache record and
//! prune step checkpoints. The helpers below are called in exactly this order: the crash
//! tests cut the power at every file-system operation of it and check that nothing is
//! falsely complete and nothing returned is lost.

use super::{
    final_record, io, labels, latest_step_checkpoint, storage_cause, total_steps,
    verify_and_manifest, write_metadata, Context,
};
use crate::cache::{self, Cache};
use crate::completion::{self, ManifestEntry, RunStatus, CHECKPOINT_DIR, METRICS_FILE};
use crate::error::{Error, ErrorKind, Result};
use crate::fs;
use crate::job::Job;
use crate::lease::{self, Heartbeat, LeaseRecord};
use crate::plan::Decision;
use crate::store::meta::{AttemptFailure, AttemptOwner, DatasetRef, VariantMeta};
use crate::track::lifecycle::Started;
use crate::trainer::{Outcome, Run, TrainerProcess};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// What an attempt ends with: the cache record's name, the metrics, and warnings.
pub(super) type Attempted = (Option<String>, Value, Vec<String>);

/// One attempt at a variant `train` decided on and holds the lease of.
pub(super) struct Attempt<'a> {
    pub job: &'a Job,
    pub ctx: &'a Context<'a>,
    pub decision: Decision,
    pub variant: u64,
    pub dir: &'a Path,
    pub held: &'a LeaseRecord,
    pub run_name: &'a str,
    pub cache: &'a Cache<'a>,
}

/// Where the trainer works and what it starts from. OUT in a bucket: a local staging dir
/// (docs/contract.md, "OUT in an object store"), with what it continues from downloaded.
struct Staged {
    remote: bool,
    work: PathBuf,
    /// The step checkpoints already in the variant dir (uploaded, or the one resumed from).
    uploaded: Mutex<BTreeSet<String>>,
    resume_from: Option<PathBuf>,
    init_checkpoint: Option<PathBuf>,
}

/// The attempt's tracking run (docs/contract.md, "Tracking of final training"), if one
/// started, and the warnings tracking gave.
struct Tracked {
    started: Option<Started>,
    warnings: Vec<String>,
}

impl Attempt<'_> {
    fn now(&self) -> String {
        cache::rfc3339((self.ctx.now_us)())
    }

    /// Runs the attempt (see the module documentation for the order of its steps).
    pub(super) fn run(&self) -> Result<Attempted> {
        let fs = self.ctx.fs;
        let previous = VariantMeta::read(fs, self.dir);
        let attempts = previous.as_ref().map_or(0, |m| m.attempts) + 1;
        let created_at = previous
            .as_ref()
            .and_then(|m| m.created_at.clone())
            .unwrap_or_else(|| self.now());
        let (resume_from, init_checkpoint) = self.starting_points();
        let staged = self.stage(&resume_from, &init_checkpoint)?;
        let mut meta = self.running_meta(attempts, created_at, &resume_from, &init_checkpoint)?;
        write_metadata(fs, self.dir, &meta)?;
        let (job_path, progress_path) = self.write_job_file(&staged)?;
        let mut tracked = self.start_tracking(previous.as_ref(), &mut meta)?;
        let outcome = self.run_trainer(&staged, &job_path, &progress_path);
        let upload_failure = self.upload_outputs(&staged);
        if let Outcome::Failed(f) = outcome {
            meta.failure_exit_code = f.exit_code;
            meta.failure_signal = f.signal;
            self.end_tracking(&mut tracked, &mut meta, false);
            let message = match &upload_failure {
                Some(up) => format!("{}; {up}", f.message),
                None => f.message,
            };
            return Err(self.failed(&mut meta, f.kind, message, &f.output_tail));
        }
        if let Some(up) = upload_failure {
            self.end_tracking(&mut tracked, &mut meta, false);
            // The error's own words say whether it is a storage error (full, refused, …).
            return Err(self.failed(&mut meta, "upload", up.clone(), &up));
        }
        // Exit 0 proves nothing: check the contract ourselves.
        let (manifest, metrics) = match verify_and_manifest(fs, self.job, self.dir) {
            Ok(v) => v,
            Err(reason) => {
                self.end_tracking(&mut tracked, &mut meta, false);
                return Err(self.failed(&mut meta, "incomplete_outputs", reason, ""));
            }
        };
        self.end_tracking(&mut tracked, &mut meta, true);
        self.complete(meta, manifest, metrics, tracked.warnings)
    }

    /// What the trainer continues from (a resume's newest step checkpoint, a continue's
    /// parent checkpoint) and the checkpoint it initialises from.
    fn starting_points(&self) -> (Option<PathBuf>, Option<PathBuf>) {
        let (job, fs) = (self.job, self.ctx.fs);
        let resume_from = match self.decision {
            Decision::Resume { .. } => latest_step_checkpoint(fs, self.dir),
            Decision::Continue { .. } => job
                .source
                .parent
                .as_ref()
                .map(|p| p.dir.join(CHECKPOINT_DIR)),
            _ => None,
        };
        let init_checkpoint = match self.decision {
            Decision::Continue { .. } => None,
            _ if job.source.load => job.source.init_checkpoint.clone(),
            _ => None,
        };
        (resume_from, init_checkpoint)
    }

    /// Prepares the trainer's working dir: the variant dir itself, or for OUT in a bucket a
    /// fresh local staging dir with the checkpoints it starts from downloaded into it.
    fn stage(
        &self,
        resume_from: &Option<PathBuf>,
        init_checkpoint: &Option<PathBuf>,
    ) -> Result<Staged> {
        let (fs, dir) = (self.ctx.fs, self.dir);
        let remote = crate::store::stage::is_remote(fs, dir);
        let work = if remote {
            crate::store::stage::fresh(
                fs,
                &self.job.config.root,
                &self.job.layout.out_relative(dir),
            )
            .map_err(|e| Error::io_op("stage the trainer's local dir", dir, &e))?
        } else {
            dir.to_path_buf()
        };
        let mut uploaded = BTreeSet::new();
        let local_copy = |from: &Option<PathBuf>, name: &str| -> Result<Option<PathBuf>> {
            match from {
                Some(p) if crate::store::stage::is_remote(fs, p) => {
                    let to = work.join(name);
                    crate::store::stage::copy_tree(
                        fs,
                        p,
                        &to,
                        crate::store::stage::STEP_STATE_FILE,
                    )
                    .map_err(|e| Error::io_op("download", p, &e))?;
                    Ok(Some(to))
                }
                other => Ok(other.clone()),
            }
        };
        let trainer_resume_from = match resume_from {
            Some(step) if remote => {
                let name = step
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let local = local_copy(resume_from, &format!("checkpoints/{name}"))?;
                uploaded.insert(name);
                local
            }
            _ => local_copy(resume_from, "parent-checkpoint")?,
        };
        let trainer_init_checkpoint = local_copy(init_checkpoint, "init-checkpoint")?;
        Ok(Staged {
            remote,
            work,
            uploaded: Mutex::new(uploaded),
            resume_from: trainer_resume_from,
            init_checkpoint: trainer_init_checkpoint,
        })
    }

    /// The metadata of the attempt as it starts: `running`, owned by the held lease.
    fn running_meta(
        &self,
        attempts: u64,
        created_at: String,
        resume_from: &Option<PathBuf>,
        init_checkpoint: &Option<PathBuf>,
    ) -> Result<VariantMeta> {
        let (job, held) = (self.job, self.held);
        Ok(VariantMeta {
            schema_version: 1,
            status: RunStatus::Running,
            storage_env: job.identity.storage_env.as_str().to_string(),
            model: job.identity.model.clone(),
            spec_fp: job.spec_fp().to_string(),
            exec_fp: job.exec_fp().to_string(),
            variant: self.variant,
            objective_metric: Some(job.config.objective_metric()),
            experiment: Some(job.config.experiment_name.clone()),
            run_name: Some(self.run_name.to_string()),
            mode: Some(job.config.mode().as_str().to_string()),
            decision: Some(self.decision.name().to_string()),
            source: json!({
                "type": job.source.kind.as_str(),
                "load": job.source.load,
                "identity": job.source.identity,
                "init_checkpoint": init_checkpoint,
                "parent": job.source.parent,
                "selection": job.source.selection,
            }),
            resumed_from: resume_from.clone(),
            owner: Some(AttemptOwner {
                host: held.host.clone(),
                pid: held.pid,
                lease_generation: held.generation,
            }),
            hyperparameters: serde_json::to_value(&job.config.hyperparameters)
                .map_err(|e| Error::internal(e.to_string()))?,
            seed: Some(job.config.seed),
            dataset: Some(DatasetRef {
                dir: job.dataset.dir.clone(),
                digest: job.dataset.digest.clone(),
            }),
            attempts,
            created_at: Some(created_at),
            updated_at: Some(self.now()),
            manifest: Vec::new(),
            tracking: None,
            failure: None,
            failure_exit_code: None,
            failure_signal: None,
            completed_at: None,
            trained_epochs: None,
            metrics: None,
            extra: serde_json::Map::new(),
        })
    }

    /// Writes the trainer's job file; returns its path and the progress channel's.
    fn write_job_file(&self, staged: &Staged) -> Result<(PathBuf, PathBuf)> {
        let (job, fs, work) = (self.job, self.ctx.fs, &staged.work);
        let job_path = work.join("job.json");
        let progress_path = work.join(crate::progress::FILE);
        let dataset: serde_json::Map<String, Value> = job
            .dataset
            .files
            .iter()
            .map(|(role, p)| (role.clone(), json!(p)))
            .collect();
        let job_doc = json!({
            "variant_dir": work,
            "checkpoint_dir": work.join(CHECKPOINT_DIR),
            "checkpoints_dir": work.join("checkpoints"),
            "metrics_path": work.join(METRICS_FILE),
            "resume_from": staged.resume_from,
            "init_checkpoint": staged.init_checkpoint,
            "labels": labels(job),
            "hyperparameters": job.config.hyperparameters,
            "seed": job.config.seed,
            "total_steps": total_steps(job),
            "save_interval": job.config.cadence.save_interval,
            "log_interval": job.config.cadence.log_interval,
            "objective_metric": job.config.objective_metric(),
            "dataset": dataset,
            "model": job.config.docs["model"].tree,
            "precision": job.config.precision().as_str(),
            "run_name": self.run_name,
            "storage_profile": fs.caps(work).profile().as_str(),
            "progress_path": progress_path,
        });
        // The job file is rewritten by every attempt: atomic for readers, not durable.
        fs::write_replace(
            fs,
            &job_path,
            &serde_json::to_vec_pretty(&job_doc).map_err(|e| Error::internal(e.to_string()))?,
        )
        .map_err(|e| io(&job_path, e))?;
        Ok((job_path, progress_path))
    }

    /// Tracking (docs/contract.md, "Tracking of final training"): starts (or reopens) the
    /// variant's run and records it in metadata; a failure is a warning and a `tracking`
    /// state in metadata, never a failed training.
    fn start_tracking(
        &self,
        previous: Option<&VariantMeta>,
        meta: &mut VariantMeta,
    ) -> Result<Tracked> {
        let ctx = self.ctx;
        let mut warnings = Vec::new();
        let started = match &ctx.tracking {
            None => None,
            Some(t) => {
                let previous_run = previous.and_then(|m| m.tracking_run_id().map(str::to_string));
                let started = crate::track::lifecycle::start(
                    t.tracker,
                    self.job,
                    self.variant,
                    self.dir,
                    self.run_name,
                    self.decision.name(),
                    previous_run.as_deref(),
                    ((ctx.now_us)() / 1000) as i64,
                );
                let started = match started {
                    Ok(s) => {
                        meta.tracking = Some(json!({
                            "backend": t.backend,
                            "state": "running",
                            "run_id": s.run_id,
                            "experiment_id": s.experiment_id,
                            "reopened": s.reopened,
                        }));
                        Some(s)
                    }
                    Err(e) => {
                        warnings.push(format!(
                            "tracking ({}) failed, training continues: {e}",
                            t.backend
                        ));
                        meta.tracking = Some(crate::track::lifecycle::error_state(t.backend, &e));
                        None
                    }
                };
                write_metadata(ctx.fs, self.dir, meta)?;
                started
            }
        };
        Ok(Tracked { started, warnings })
    }

    /// Runs the trainer, heartbeating the lease (and, OUT in a bucket, uploading each
    /// finished step checkpoint) while it runs.
    fn run_trainer(&self, staged: &Staged, job_path: &Path, progress_path: &Path) -> Outcome {
        let (job, ctx, fs, dir, held) = (self.job, self.ctx, self.ctx.fs, self.dir, self.held);
        let heartbeat = |process: Option<TrainerProcess>| -> bool {
            let beat = Heartbeat {
                heartbeat_ms: (ctx.now_us)() / 1000,
                trainer_pid: process.map(|p| p.pid),
                trainer_start_time: process.map(|p| p.start_time),
            };
            let _ = lease::beat(fs, dir, held, &beat);
            if staged.remote {
                // Each finished step checkpoint goes up while the run trains, so that a resume
                // on another machine finds it; a failed upload is retried at the next beat.
                let mut done = staged.uploaded.lock().unwrap_or_else(|e| e.into_inner());
                let _ = crate::store::stage::upload_steps(fs, &staged.work, dir, &mut done);
            }
            lease::still_ours(fs, dir, held)
        };
        let run = Run {
            cwd: &job.config.root,
            job_path,
            log_path: &staged.work.join("logs").join("trainer.log"),
            timeout: job
                .config
                .final_training
                .trainer
                .timeout_s
                .map(Duration::from_secs),
            heartbeat_every: Duration::from_secs(
                job.config
                    .final_training
                    .lease
                    .heartbeat_s
                    .unwrap_or(10)
                    .max(1),
            ),
            heartbeat: &heartbeat,
            progress_path: Some(progress_path),
            progress: ctx.progress,
        };
        ctx.trainer.run(&run)
    }

    /// OUT in a bucket: what the trainer wrote goes up whether it succeeded or not (a failed
    /// run's step checkpoints are what a resume continues from). An upload that fails is the
    /// attempt's failure (returned here, recorded like any other), never a skipped record.
    fn upload_outputs(&self, staged: &Staged) -> Option<String> {
        if !staged.remote {
            return None;
        }
        let (fs, dir, work) = (self.ctx.fs, self.dir, &staged.work);
        let mut done = staged.uploaded.lock().unwrap_or_else(|e| e.into_inner());
        let uploaded = crate::store::stage::upload_outputs(
            fs,
            work,
            dir,
            &mut done,
            // job.json too: tracking uploads it as `config/job.json` and `track sync` reads
            // the precision from it (its paths name the staging dir the trainer saw).
            &["job.json", "logs", METRICS_FILE, CHECKPOINT_DIR],
        );
        drop(done);
        match uploaded {
            Ok(()) => {
                let _ = fs.remove_dir_all(work);
                crate::store::stage::remove_if_empty(fs, work.parent());
                None
            }
            Err(e) => Some(format!(
                "uploading the trainer's outputs from {} to {} failed: {e}",
                work.display(),
                dir.display()
            )),
        }
    }

    /// Ends the tracking run, if one started, and records how in `meta` (not yet written).
    fn end_tracking(&self, tracked: &mut Tracked, meta: &mut VariantMeta, succeeded: bool) {
        let ctx = self.ctx;
        if let (Some(t), Some(s)) = (&ctx.tracking, &tracked.started) {
            let ended = crate::track::lifecycle::finish(
                t.tracker,
                &self.job.config,
                ctx.fs,
                &s.run_id,
                self.dir,
                succeeded,
                ((ctx.now_us)() / 1000) as i64,
            );
            match ended {
                Ok(missing) => {
                    let tracking = meta.tracking.get_or_insert_with(|| json!({}));
                    tracking["state"] = json!(if succeeded { "finished" } else { "failed" });
                    if !missing.is_empty() {
                        tracked.warnings.push(format!(
                            "tracking ({}): the run ended, but these artifacts were not uploaded: {}; `trainctl track sync` retries them",
                            t.backend,
                            crate::track::lifecycle::artifacts_text(&missing)
                        ));
                        tracking["artifacts_missing"] =
                            json!(crate::track::lifecycle::artifact_names(&missing));
                    }
                }
                Err(e) => {
                    tracked.warnings.push(format!(
                        "tracking ({}) failed at the end of the run: {e}",
                        t.backend
                    ));
                    let mut state = crate::track::lifecycle::error_state(t.backend, &e);
                    state["run_id"] = json!(s.run_id);
                    state["experiment_id"] = json!(s.experiment_id);
                    meta.tracking = Some(state);
                }
            }
        }
    }

    /// Records a failed attempt (`status: failed` and its kind) and returns its error: a
    /// storage error the trainer died of, or `training failed`.
    fn failed(
        &self,
        meta: &mut VariantMeta,
        kind: &str,
        message: String,
        output_tail: &str,
    ) -> Error {
        let (fs, dir) = (self.ctx.fs, self.dir);
        let log = dir.join("logs").join("trainer.log");
        let cause = storage_cause(fs, output_tail, &log, dir);
        meta.status = RunStatus::Failed;
        meta.failure = Some(AttemptFailure {
            kind: kind.to_string(),
            message: message.clone(),
            storage: cause
                .as_ref()
                .map(|(storage, _)| storage.as_str().to_string()),
        });
        meta.updated_at = Some(self.now());
        // Recorded wherever the disk still allows a write; on a full or read-only disk the
        // variant stays as it was (running, with its lease), which is just as resumable.
        let recorded = write_metadata(fs, dir, meta).err();
        let not_recorded = recorded.map_or(String::new(), |e| {
            format!(
                " (metadata.json could not record the failure: {})",
                e.message
            )
        });
        match cause {
            Some((storage, detail)) => Error::new(
                storage,
                format!(
                    "training stopped: the trainer hit a storage error ({}) writing under {}{not_recorded}\n{detail}\nthe variant stays resumable: free the storage, then rerun with -o run.mode=resume_if_incomplete",
                    storage.as_str(),
                    dir.display()
                ),
            ),
            None => Error::new(
                ErrorKind::TrainingFailed,
                format!(
                    "training failed ({kind}): {message}; see {}{not_recorded}",
                    log.display()
                ),
            ),
        }
    }

    /// Completes a verified attempt: the manifest and `completed` in one atomic durable
    /// metadata write (last, after the manifest files were synced), the completion check,
    /// the cache record, then retention of step checkpoints.
    fn complete(
        &self,
        mut meta: VariantMeta,
        manifest: Vec<ManifestEntry>,
        metrics: Value,
        tracking_warnings: Vec<String>,
    ) -> Result<Attempted> {
        let (job, fs, dir, variant) = (self.job, self.ctx.fs, self.dir, self.variant);
        let completed_at = self.now();
        meta.status = RunStatus::Completed;
        meta.manifest = manifest;
        meta.completed_at = Some(completed_at.clone());
        meta.updated_at = Some(completed_at);
        meta.trained_epochs = Some(job.config.hyperparameters.epochs);
        meta.metrics = Some(metrics.clone());
        // `completed` is written last, atomically and durably, after the manifest files are synced.
        write_metadata(fs, dir, &meta)?;
        let verdict = completion::check(
            fs,
            &job.layout,
            dir,
            Some(&job.identity),
            variant,
            completion::Depth::Sizes,
        );
        let completion::Completion::Complete(final_meta) = verdict else {
            return Err(Error::internal(format!(
                "variant {variant} does not pass the completion check right after completing: {:?}",
                verdict.reason()
            )));
        };
        let record = final_record(
            job,
            variant,
            dir,
            &final_meta,
            &metrics,
            (self.ctx.now_us)(),
        );
        let (name, mut warnings) = self.cache.write(&record, (self.ctx.now_us)())?;
        warnings.extend(tracking_warnings);
        // Retention (docs/contract.md, "Retention and gc"): the variant is complete and
        // recorded, so its step checkpoints only serve a resume it no longer needs. Still
        // under the lease.
        if let Some(keep) = job.config.keep_last() {
            if let Err(e) = crate::retention::prune(fs, dir, keep) {
                warnings.push(format!(
                    "variant {variant}: pruning step checkpoints to checkpoint.keep_last {keep} failed ({e}); `trainctl gc --apply` retries"
                ));
            }
        }
        Ok((Some(name), metrics, warnings))
    }
}
