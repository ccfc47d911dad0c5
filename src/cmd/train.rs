//! `trainctl train`: plan, then execute: allocate or lease a variant, train, verify, record,
//! cache, prune (docs/contract.md, "Run modes", "Completion", "Retention and gc"); on colab,
//! back up afterwards.

use super::{warning_lines, Chosen, Env};
use crate::error::{Error, Result};
use crate::job::{self, Job};
use crate::plan::Decision;
use crate::progress::Display;
use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// How a training shows itself while it runs.
pub struct Live<'a> {
    /// The progress bar or lines (docs/contract.md, "Live progress").
    pub display: &'a Display,
    /// No waiting notices (`--quiet`).
    pub quiet: bool,
    /// Unix time in microseconds.
    pub now_us: &'a dyn Fn() -> u64,
}

/// What `train` did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub chosen: Chosen,
    pub cache_record: Option<String>,
    pub backfilled: Vec<u64>,
    pub metrics: Option<Value>,
    pub backup: Option<crate::backup::Report>,
    pub storage: Option<crate::fs::profile::Report>,
    pub warnings: Vec<String>,
    /// The metrics the human text shows: the objective, span-f1 and loss.
    #[serde(skip)]
    pub objective_metric: String,
}

/// The trainer of the job: `trainer.command`, or the built-in one (this executable, run as a
/// subprocess with the hidden `__builtin-train` command).
pub fn trainer_for(job: &Job) -> Result<crate::trainer::CommandTrainer> {
    let argv = match &job.config.final_training.trainer.command {
        Some(argv) => argv.clone(),
        None => {
            let exe = std::env::current_exe().map_err(|e| {
                Error::internal(format!("cannot locate the trainctl executable: {e}"))
            })?;
            vec![exe.display().to_string(), "__builtin-train".into()]
        }
    };
    Ok(crate::trainer::CommandTrainer {
        argv,
        env: Vec::new(),
    })
}

/// Trains a prepared job with its trainer and tracking store, showing progress; the
/// tracking store's warnings join the report's.
pub fn execute(env: &Env<'_>, live: &Live<'_>, job: &Job) -> Result<crate::train::Report> {
    let trainer = trainer_for(job)?;
    let (opened, tracking_warnings) =
        crate::track::lifecycle::open_for_train(&job.config, env.host.var, env.cwd)?;
    let progress = |p: &crate::progress::Progress| live.display.show(p);
    let ctx = crate::train::Context {
        waiting: if live.quiet {
            crate::train::waiting_silently()
        } else {
            crate::train::waiting_on_stderr()
        },
        progress: &progress,
        fs: env.fs,
        host: env.host,
        owner: crate::lease::Owner::current(),
        trainer: &trainer,
        now_us: live.now_us,
        tracking: opened.as_ref().map(|o| crate::train::Tracking {
            tracker: o.tracker.as_ref(),
            backend: &o.describe,
        }),
    };
    let report = crate::train::train(job, &ctx);
    live.display.finish();
    let mut report = report?;
    report.warnings.extend(tracking_warnings);
    Ok(report)
}

/// After a `resume_if_incomplete` without `variant.number`: the lower variants still
/// incomplete, and how to resume one (read after the training, never before it).
fn lower_incomplete(env: &Env<'_>, job: &Job, picked: u64) -> Option<String> {
    let resume = crate::config::schema::RunMode::ResumeIfIncomplete;
    if job.config.mode() != resume || job.request().explicit_variant.is_some() {
        return None;
    }
    let facts = env.host.facts(job.config.lease_timeout_s() * 1000);
    let variants =
        crate::observe::FsVariants::scan(env.fs, &job.layout, &job.identity, &facts).ok()?;
    crate::observe::lower_incomplete_hint(&variants, picked)
}

/// Plans and trains (or reuses, resumes, waits), then backs up on colab.
pub fn run(env: &Env<'_>, live: &Live<'_>) -> Result<Report> {
    let job = job::prepare(env.config()?, env.fs, env.host)?;
    let storage = crate::storage::establish_or_defer(&job.config, &job.layout.out)?;
    let storage = storage.map(|s| s.report);
    let mut trained = execute(env, live, &job)
        .map_err(|e| crate::storage::on_out(e, &job.layout.out, storage.as_ref()))?;
    trained
        .warnings
        .extend(lower_incomplete(env, &job, trained.decision.variant()));
    // After a run completes on colab, back up the variant and its cache. The run is complete
    // and recorded whatever happens here, so a failed backup is a warning.
    let backup = match trained.decision {
        Decision::Reuse { .. } => None,
        _ => match crate::backup::after_run(&job.config, &job.layout, &trained.output_dir) {
            Ok(r) => Some(r),
            Err(e) => {
                trained
                    .warnings
                    .push(format!("Drive backup failed: {}", e.message));
                None
            }
        },
    };
    Ok(Report {
        chosen: Chosen::of(
            &job,
            &trained.decision,
            trained.output_dir,
            trained.run_name,
        ),
        cache_record: trained.cache_record,
        backfilled: trained.backfilled,
        metrics: trained.metrics,
        backup,
        storage,
        warnings: trained.warnings,
        objective_metric: job.config.objective_metric(),
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} v{}: {}\nrun_name: {}",
            self.chosen.decision,
            self.chosen.variant,
            self.chosen.output_dir.display(),
            self.chosen.run_name
        )?;
        if let Some(m) = &self.metrics {
            let shown: Vec<String> = [self.objective_metric.as_str(), "span-f1", "loss"]
                .iter()
                .filter_map(|k| m.get(*k).map(|v| format!("{k} {v}")))
                .collect();
            writeln!(f, "metrics: {} (all in metrics.json)", shown.join(", "))?;
        }
        if let Some(b) = self.backup.as_ref().filter(|b| b.skipped.is_none()) {
            super::backup::Lines(b).fmt(f)?;
        }
        let mut w = String::new();
        warning_lines(&mut w, &self.warnings);
        f.write_str(&w)
    }
}
