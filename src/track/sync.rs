//! `trainctl track sync` (docs/contract.md, "Tracking of final training", failure handling): upload
//! the complete variants whose run the tracking store is missing (the store was down, timed out or
//! rejected a call during training), once the store is back.
//!
//! Idempotent twice over:
//! - the store is the source of truth: a variant's run is found by its identity tags
//!   (stage, spec_fp, exec_fp, variant), so a run that exists is finished, never duplicated,
//!   and a FINISHED one is only adopted; a retried upload skips the metric points the run
//!   already has;
//! - a sync record `OUT/tracking/sync/<sha256(variant path)>.json` (run id, backend) is
//!   written after each upload, so a second sync does not even ask the store.
//!
//! A complete variant is never modified: its `metadata.json` keeps the `tracking` state of
//! training time, and `status` reads the sync record beside it.

use super::lifecycle::{self, RunFacts};
use super::{resolve_experiment, RunFilter, RunStatus, TrackError, Tracker};
use crate::completion::{self, Completion, METADATA_FILE};
use crate::config::Config;
use crate::fs::{self, Fs};
use crate::identity::sha256_hex;
use crate::lease::LivenessFacts;
use crate::observe;
use crate::paths::Layout;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// What sync did (or, with `dry_run`, would do) for one complete variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Tracked at training time (`tracking.state: finished`).
    Tracked,
    /// Trained with tracking off; uploaded only with `--include-untracked`.
    Untracked,
    /// A sync record for this backend exists already.
    AlreadySynced,
    /// The store had a FINISHED run for it: adopted, nothing uploaded.
    Adopted,
    /// The store had an unfinished run for it (created before the failure): finished.
    Completed,
    /// No run in the store: created, with params, tags, metrics and artifacts.
    Uploaded,
    /// `--dry-run`: would be uploaded or completed.
    WouldSync,
    /// The run is there, finished, but ended without some artifacts (a store without the
    /// artifact proxy, or one that failed them): now uploaded.
    ArtifactsUploaded,
    /// The upload failed (see `error`); a later sync retries.
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub dir: PathBuf,
    pub variant: u64,
    /// The tracking state training recorded in metadata.json.
    pub training_state: Option<String>,
    pub action: Action,
    pub run_id: Option<String>,
    pub error: Option<String>,
}

impl Entry {
    /// The upload failed with `error`; a later sync retries.
    fn fail(&mut self, error: String) {
        self.action = Action::Failed;
        self.error = Some(error);
    }
}

/// Where the sync record of `dir` lives.
pub fn record_path(layout: &Layout, dir: &Path) -> PathBuf {
    let rel = layout.out_relative(dir);
    layout
        .out
        .join("tracking")
        .join("sync")
        .join(format!("{}.json", &sha256_hex(rel.as_bytes())[..32]))
}

/// The sync record of `dir`, if one was written (and is readable).
pub fn read_record(fs: &dyn Fs, layout: &Layout, dir: &Path) -> Option<Value> {
    let bytes = fs.read(&record_path(layout, dir)).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    (v["variant_dir"].as_str() == Some(layout.out_relative(dir).as_str())).then_some(v)
}

/// Whether a complete variant needs an upload, from the state training recorded.
fn needs_sync(state: Option<&str>, include_untracked: bool) -> Option<Action> {
    match state {
        Some("finished") => Some(Action::Tracked),
        Some(_) => None,
        None if include_untracked => None,
        None => Some(Action::Untracked),
    }
}

/// Options of one sync.
pub struct Options<'a> {
    pub include_untracked: bool,
    pub dry_run: bool,
    pub now_ms: i64,
    pub facts: &'a LivenessFacts<'a>,
}

/// Syncs every complete variant under OUT to `tracker` (the training-stage store).
pub fn sync(
    config: &Config,
    layout: &Layout,
    fs: &dyn Fs,
    tracker: &dyn Tracker,
    opts: &Options<'_>,
) -> Vec<Entry> {
    let found = observe::scan_all(fs, layout, opts.facts, completion::Depth::Sizes, None);
    let backend = tracker.describe();
    let mut entries = Vec::new();
    for v in found {
        let Completion::Complete(_) = v.completion else {
            continue; // an incomplete variant is tracked when it is resumed
        };
        entries.push(sync_variant(
            config, layout, fs, tracker, opts, &backend, &v,
        ));
    }
    entries
}

/// Syncs one complete variant: retries the artifacts its run ended without, else skips it
/// (tracked at training time, untracked, or already synced), else uploads or completes its
/// run.
fn sync_variant(
    config: &Config,
    layout: &Layout,
    fs: &dyn Fs,
    tracker: &dyn Tracker,
    opts: &Options<'_>,
    backend: &str,
    v: &observe::FoundVariant,
) -> Entry {
    let meta = completion::read_metadata_value(fs, &v.dir).unwrap_or(Value::Null);
    let training_state = meta["tracking"]["state"].as_str().map(str::to_string);
    let mut entry = Entry {
        dir: v.dir.clone(),
        variant: v.variant,
        training_state: training_state.clone(),
        action: Action::WouldSync,
        run_id: None,
        error: None,
    };
    let record = read_record(fs, layout, &v.dir).filter(|r| r["backend"].as_str() == Some(backend));
    let artifacts = pending_artifacts(record.as_ref(), &meta, training_state.as_deref());
    let run_id = record
        .as_ref()
        .and_then(|r| r["run_id"].as_str())
        .or_else(|| meta["tracking"]["run_id"].as_str())
        .map(str::to_string);
    if !artifacts.is_empty() {
        entry.run_id = run_id.clone();
        if opts.dry_run {
            return entry;
        }
        match run_id {
            Some(run_id) => {
                match sync_artifacts(config, layout, fs, tracker, &v.dir, &run_id, opts.now_ms) {
                    Ok(()) => entry.action = Action::ArtifactsUploaded,
                    Err(e) => entry.fail(e.to_string()),
                }
            }
            None => entry.fail("the run's id is not recorded".into()),
        }
        return entry;
    }
    if let Some(skip) = needs_sync(training_state.as_deref(), opts.include_untracked) {
        entry.action = skip;
        entry.run_id = meta["tracking"]["run_id"].as_str().map(str::to_string);
        return entry;
    }
    if let Some(record) = &record {
        entry.action = Action::AlreadySynced;
        entry.run_id = record["run_id"].as_str().map(str::to_string);
        return entry;
    }
    if opts.dry_run {
        return entry;
    }
    match sync_one(config, layout, fs, tracker, &v.dir, &meta, opts.now_ms) {
        Ok((action, run_id)) => {
            entry.action = action;
            entry.run_id = Some(run_id);
        }
        Err(e) => entry.fail(e.to_string()),
    }
    entry
}

/// Artifacts a run ended without: the sync record's list once sync has run, else what
/// training recorded.
fn pending_artifacts(
    record: Option<&Value>,
    meta: &Value,
    training_state: Option<&str>,
) -> Vec<String> {
    let pending = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    match record {
        Some(r) => pending(&r["artifacts_missing"]),
        None if training_state == Some("finished") => {
            pending(&meta["tracking"]["artifacts_missing"])
        }
        None => Vec::new(),
    }
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("{0}")]
    Track(#[from] TrackError),
    #[error("{0}")]
    Local(String),
}

/// Uploads or completes the run of one complete variant in the store (adopting a FINISHED
/// one), then writes its sync record.
fn sync_one(
    config: &Config,
    layout: &Layout,
    fs: &dyn Fs,
    tracker: &dyn Tracker,
    dir: &Path,
    meta: &Value,
    now_ms: i64,
) -> Result<(Action, String), SyncError> {
    let job_doc = fs
        .read(&dir.join("job.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let facts = RunFacts::from_metadata(meta, job_doc.as_ref(), dir).ok_or_else(|| {
        SyncError::Local(format!(
            "{} lacks the fields of a run (model, storage_env, fingerprints, variant)",
            dir.join(METADATA_FILE).display()
        ))
    })?;
    let experiment = resolve_experiment(tracker, &lifecycle::experiment_name(config))?;
    let filter = RunFilter {
        tags: lifecycle::identity_tags(config, &facts),
        run_name: None,
    };
    let found = tracker.search_runs(&experiment.experiment_id, &filter)?;
    let finished = found.iter().find(|r| r.info.status == RunStatus::Finished);
    let (action, run_id, missing) = if let Some(run) = finished {
        (Action::Adopted, run.info.run_id.clone(), Vec::new())
    } else {
        let (action, run_id) = open_run(
            config,
            tracker,
            meta,
            &facts,
            &experiment.experiment_id,
            &found,
            now_ms,
        )?;
        let mut tags = lifecycle::run_tags(config, &facts);
        tags.insert("trainctl.synced".into(), "true".into());
        tracker.set_tags(&run_id, &tags)?;
        let ended = meta["completed_at"]
            .as_str()
            .and_then(rfc3339_ms)
            .unwrap_or(now_ms);
        // The run ends whatever happens to its artifacts; the record keeps the ones that
        // did not go, and the next sync retries only those.
        let missing = lifecycle::upload(tracker, config, fs, &run_id, dir, true, ended, true)?;
        (action, run_id, missing)
    };
    let names = lifecycle::artifact_names(&missing);
    write_record(layout, fs, tracker, dir, &run_id, action, &names, now_ms)?;
    if !missing.is_empty() {
        return Err(SyncError::Local(format!(
            "run {run_id} is finished, but these artifacts were not uploaded: {}; the next sync retries them",
            lifecycle::artifacts_text(&missing)
        )));
    }
    Ok((action, run_id))
}

/// The unfinished run of a variant, open: one run per variant, so the run training created
/// (the one metadata names, else the newest of `found`) is reopened if it ended, else a run
/// is created with the variant's params.
fn open_run(
    config: &Config,
    tracker: &dyn Tracker,
    meta: &Value,
    facts: &RunFacts,
    experiment_id: &str,
    found: &[super::Run],
    now_ms: i64,
) -> Result<(Action, String), SyncError> {
    let recorded_id = meta["tracking"]["run_id"].as_str();
    let existing = found
        .iter()
        .find(|r| Some(r.info.run_id.as_str()) == recorded_id)
        .or_else(|| found.iter().max_by_key(|r| r.info.start_time_ms));
    Ok(match existing {
        Some(run) => {
            if run.info.status.is_terminal() {
                tracker.reopen_run(&run.info.run_id)?;
            }
            (Action::Completed, run.info.run_id.clone())
        }
        None => {
            let run_name = meta["run_name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| format!("final_training_v{}", facts.variant));
            let started = meta["created_at"]
                .as_str()
                .and_then(rfc3339_ms)
                .unwrap_or(now_ms);
            let info = tracker.create_run(&super::NewRun {
                experiment_id: experiment_id.to_string(),
                run_name,
                start_time_ms: started,
                tags: lifecycle::run_tags(config, facts),
            })?;
            tracker.log_params(&info.run_id, &lifecycle::run_params(facts))?;
            (Action::Uploaded, info.run_id)
        }
    })
}

/// Retries the artifacts a finished run ended without, then clears its tag and records it.
fn sync_artifacts(
    config: &Config,
    layout: &Layout,
    fs: &dyn Fs,
    tracker: &dyn Tracker,
    dir: &Path,
    run_id: &str,
    now_ms: i64,
) -> Result<(), SyncError> {
    let missing = lifecycle::upload_artifacts(tracker, config, fs, run_id, dir, true);
    if !missing.is_empty() {
        return Err(SyncError::Local(format!(
            "artifacts still not uploaded: {}",
            lifecycle::artifacts_text(&missing)
        )));
    }
    let tags = std::collections::BTreeMap::from([(
        lifecycle::ARTIFACTS_MISSING_TAG.to_string(),
        String::new(),
    )]);
    tracker.set_tags(run_id, &tags)?;
    write_record(
        layout,
        fs,
        tracker,
        dir,
        run_id,
        Action::ArtifactsUploaded,
        &[],
        now_ms,
    )
}

/// Writes the sync record of `dir` (atomically): the run, the backend, what was done, and
/// the artifacts still missing.
#[allow(clippy::too_many_arguments)]
fn write_record(
    layout: &Layout,
    fs: &dyn Fs,
    tracker: &dyn Tracker,
    dir: &Path,
    run_id: &str,
    action: Action,
    artifacts_missing: &[String],
    now_ms: i64,
) -> Result<(), SyncError> {
    let record = json!({
        "variant_dir": layout.out_relative(dir),
        "backend": tracker.describe(),
        "run_id": run_id,
        "action": action,
        "artifacts_missing": artifacts_missing,
        "synced_at_ms": now_ms,
    });
    let path = record_path(layout, dir);
    let parent = path.parent().unwrap_or(&layout.out).to_path_buf();
    crate::cache::ensure_dir(fs, &parent).map_err(|e| SyncError::Local(e.to_string()))?;
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| SyncError::Local(e.to_string()))?;
    fs::write_atomic(fs, &path, &bytes)
        .map_err(|e| SyncError::Local(format!("{}: {e}", path.display())))
}

use crate::cache::rfc3339_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_the_cache_clock() {
        for us in [
            0u64,
            1_700_000_000_123_456,
            951_782_400_000_000,
            4_102_444_799_999_000,
        ] {
            let text = crate::cache::rfc3339(us);
            assert_eq!(rfc3339_ms(&text), Some((us / 1000) as i64), "{text}");
        }
        assert_eq!(rfc3339_ms("2026-13-01T00:00:00Z"), None);
        assert_eq!(rfc3339_ms("yesterday"), None);
        assert_eq!(rfc3339_ms("2026-02-31T00:00:00Z"), None, "no 31 February");
        assert_eq!(rfc3339_ms("2026-02-28T00:00:00+01:00"), None, "UTC only");
    }

    #[test]
    fn only_unfinished_tracking_states_need_a_sync() {
        assert_eq!(needs_sync(Some("finished"), false), Some(Action::Tracked));
        assert_eq!(needs_sync(Some("finished"), true), Some(Action::Tracked));
        for state in ["error", "running", "failed"] {
            assert_eq!(needs_sync(Some(state), false), None, "{state}");
        }
        assert_eq!(needs_sync(None, false), Some(Action::Untracked));
        assert_eq!(needs_sync(None, true), None);
    }
}
