//! `trainctl track sync` (docs/contract.md, "Tracking of final training"): upload the complete
//! variants the tracking store is missing; a run that exists is finished, never duplicated.

use super::{warning_lines, Env};
use crate::error::{Error, ErrorKind, Result};
use crate::track::sync::{self, Action, Entry};
use serde::Serialize;
use std::fmt;

/// What `track sync` did, variant by variant.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tracking_store: String,
    pub dry_run: bool,
    pub variants: Vec<Entry>,
    #[serde(skip)]
    pub warnings: Vec<String>,
}

fn unavailable(message: String) -> Error {
    Error::new(ErrorKind::TrackingUnavailable, message)
}

/// Syncs (or with `dry_run` lists) every complete variant the store is missing. A variant
/// that could not be synced makes the command fail after the others were tried.
pub fn run(env: &Env<'_>, include_untracked: bool, dry_run: bool) -> Result<Report> {
    let config = env.config()?;
    let layout = crate::paths::Layout::from_config(&config)?;
    if !dry_run {
        crate::storage::establish(&config, &layout.out)?;
    }
    let facts = env.host.facts(config.lease_timeout_s() * 1000);
    let opened = crate::track::lifecycle::open_training(
        &config,
        std::sync::Arc::new(crate::store::cloud::CloudFs::new()),
        env.host.var,
        env.cwd,
    )
    .map_err(|e| unavailable(format!("the tracking store cannot be opened: {e}")))?;
    if !opened.tracker.is_enabled() {
        return Err(unavailable(
            "tracking is disabled (mlflow.yaml tracking.training.enabled: false): nothing to sync"
                .into(),
        ));
    }
    let options = sync::Options {
        include_untracked,
        dry_run,
        now_ms: env.host.now_ms as i64,
        facts: &facts,
    };
    let variants = sync::sync(&config, &layout, env.fs, &*opened.tracker, &options);
    let report = Report {
        tracking_store: opened.describe,
        dry_run,
        variants,
        warnings: opened.warnings,
    };
    report.failure().map_or(Ok(report), Err)
}

impl Report {
    fn count(&self, a: Action) -> usize {
        self.variants.iter().filter(|e| e.action == a).count()
    }

    /// The error when some variants could not be synced; a later sync retries them.
    fn failure(&self) -> Option<Error> {
        let failed: Vec<String> = self
            .variants
            .iter()
            .filter(|e| e.action == Action::Failed)
            .map(|e| {
                format!(
                    "  {}: {}",
                    e.dir.display(),
                    e.error.clone().unwrap_or_default()
                )
            })
            .collect();
        (!failed.is_empty()).then(|| {
            unavailable(format!(
                "{} variant(s) could not be synced to {}; a later `trainctl track sync` retries them:\n{}",
                failed.len(),
                self.tracking_store,
                failed.join("\n")
            ))
        })
    }
}

/// What happened to one variant, for humans (`None`: nothing worth a line).
fn line(e: &Entry) -> Option<String> {
    let what = match e.action {
        Action::Tracked | Action::AlreadySynced | Action::Untracked => return None,
        Action::Adopted => "adopted (the store had it, FINISHED)".to_string(),
        Action::Completed => "completed its unfinished run".to_string(),
        Action::Uploaded => "uploaded".to_string(),
        Action::ArtifactsUploaded => "uploaded the artifacts its run ended without".to_string(),
        Action::WouldSync => "would upload".to_string(),
        Action::Failed => format!("FAILED: {}", e.error.clone().unwrap_or_default()),
    };
    let run = e.run_id.as_ref().map(|r| format!(" (run {r})"));
    Some(format!(
        "{}  {what}{}",
        e.dir.display(),
        run.unwrap_or_default()
    ))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tracking store: {}", self.tracking_store)?;
        let mut w = String::new();
        warning_lines(&mut w, &self.warnings);
        f.write_str(&w)?;
        for l in self.variants.iter().filter_map(line) {
            writeln!(f, "{l}")?;
        }
        let synced = self.count(Action::Uploaded)
            + self.count(Action::Completed)
            + self.count(Action::Adopted)
            + self.count(Action::ArtifactsUploaded);
        let would = if self.dry_run {
            format!(", {} would sync (dry run)", self.count(Action::WouldSync))
        } else {
            String::new()
        };
        writeln!(
            f,
            "{synced} synced, {} already in the store, {} untracked (--include-untracked), {} failed{would}",
            self.count(Action::Tracked) + self.count(Action::AlreadySynced),
            self.count(Action::Untracked),
            self.count(Action::Failed),
        )
    }
}
