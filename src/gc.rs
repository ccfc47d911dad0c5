//! `trainctl gc` (docs/contract.md, "Retention and gc"): lists, and with `--apply` removes,
//! what OUT no longer needs:
//! - step checkpoints of complete variants beyond `checkpoint.keep_last`;
//! - abandoned variants: incomplete, nobody holding them, and silent for longer than the
//!   bound (`--older-than`);
//! - interrupted-write debris (temporaries, staged allocations, conversion staging) whose
//!   writer is gone.
//!
//! It never touches a complete variant's final artifacts, a variant with a live lease,
//! anything outside OUT (symlinks are neither followed nor removed), or a cache record. An
//! abandoned variant is taken over by the lease protocol before it is removed, so a resume
//! racing gc either wins the lease (and gc leaves the variant alone) or finds the variant gone.

use crate::completion::Completion;
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::job::Host;
use crate::lease::{self, LeaseView, Owner, Take};
use crate::observe::{self, FoundVariant};
use crate::paths::Layout;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What gc is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Remove (otherwise only list).
    pub apply: bool,
    /// An incomplete variant or a staged allocation is abandoned once nothing was heard from
    /// its owner for this long.
    pub older_than_ms: u64,
}

/// The default bound: a day without a heartbeat.
pub const DEFAULT_OLDER_THAN_MS: u64 = 24 * 3600 * 1000;

/// What an item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    StepCheckpoint,
    AbandonedVariant,
    Debris,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::StepCheckpoint => "step checkpoint",
            Kind::AbandonedVariant => "abandoned variant",
            Kind::Debris => "debris",
        }
    }
}

/// One thing gc removes (or would remove).
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    pub kind: Kind,
    pub path: PathBuf,
    pub bytes: u64,
    /// Why it may go.
    pub reason: String,
    /// Removed by this run (`false` in a dry run, or when removing failed: see `error`).
    pub removed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The tracked runs gc ended as KILLED with the variant, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed_run: Option<String>,
}

/// Something gc looked at and kept, with why (only the cases a user might wonder about).
#[derive(Clone, Debug, Serialize)]
pub struct Kept {
    pub path: PathBuf,
    pub reason: String,
}

/// What `gc` did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub out: PathBuf,
    pub applied: bool,
    pub older_than_s: u64,
    pub keep_last: Option<u64>,
    pub items: Vec<Item>,
    pub kept: Vec<Kept>,
    /// Bytes removed (with `--apply`) or that `--apply` would remove.
    pub bytes: u64,
    pub warnings: Vec<String>,
}

/// The world gc acts in.
pub struct World<'a> {
    pub fs: &'a dyn Fs,
    pub host: &'a Host<'a>,
    pub owner: Owner,
    /// The training-stage tracker, to end a removed variant's run as KILLED, and the config
    /// its runs were named and tagged under.
    pub tracker: Option<&'a dyn crate::track::Tracker>,
    pub config: Option<&'a crate::config::Config>,
}

/// The fingerprint prefixes in a variant's identity dir name (`spec-<fp8>_exec-<fp8>`), for
/// a variant whose metadata cannot be read.
fn fingerprints_of(v: &FoundVariant) -> Option<(String, String)> {
    let name = v.identity_segments.last()?;
    let (spec, exec) = name.split_once('_')?;
    Some((
        spec.strip_prefix("spec-")?.to_string(),
        exec.strip_prefix("exec-")?.to_string(),
    ))
}

/// Lists and (with `apply`) removes what OUT no longer needs.
pub fn run(
    config: &crate::config::Config,
    layout: &Layout,
    world: &World<'_>,
    opts: Options,
) -> Result<Report> {
    let fs = world.fs;
    let now_ms = world.host.now_ms;
    let facts = world.host.facts(config.lease_timeout_s() * 1000);
    let found = observe::scan_all(fs, layout, &facts, crate::completion::Depth::Sizes, None);
    let mut report = Report {
        out: layout.out.clone(),
        applied: opts.apply,
        older_than_s: opts.older_than_ms / 1000,
        keep_last: config.keep_last(),
        items: Vec::new(),
        kept: Vec::new(),
        bytes: 0,
        warnings: Vec::new(),
    };
    for v in &found {
        variant_items(config, layout, world, v, now_ms, opts, &mut report);
    }
    for root in [&layout.final_training_dir, &layout.conversion_dir] {
        debris_items(world, &facts, root, now_ms, opts, &mut report);
    }
    report.bytes = report
        .items
        .iter()
        .filter(|i| i.removed || !opts.apply)
        .map(|i| i.bytes)
        .sum();
    Ok(report)
}

/// When the owner of a lease was last heard of (its heartbeat, or when it took or released
/// the lease); `None` without a readable lease record.
fn last_heard_ms(fs: &dyn Fs, dir: &Path) -> Option<u64> {
    let current = lease::current(fs, dir).ok()?;
    let record = current.record?;
    Some(current.heartbeat.map_or(record.started_at_ms, |h| {
        h.heartbeat_ms.max(record.started_at_ms)
    }))
}

fn variant_items(
    config: &crate::config::Config,
    layout: &Layout,
    world: &World<'_>,
    v: &FoundVariant,
    now_ms: u64,
    opts: Options,
    report: &mut Report,
) {
    if v.lease.is_live() {
        report.kept.push(Kept {
            path: v.dir.clone(),
            reason: "its lease is live".into(),
        });
        return;
    }
    match &v.completion {
        Completion::Complete(_) => {
            if let Some(keep) = config.keep_last() {
                step_items(world.fs, v, keep, opts, report);
            }
        }
        Completion::Incomplete(reason) => {
            let judged = abandoned(world.fs, v, &reason.to_string(), now_ms, opts);
            let mut item = match judged {
                Ok(item) => item,
                Err(kept) => return report.kept.push(kept),
            };
            if opts.apply {
                if let Err(why) = remove_abandoned(layout, world, v, now_ms, &mut item) {
                    return report.kept.push(Kept {
                        path: v.dir.clone(),
                        reason: why,
                    });
                }
            }
            report.items.push(item);
        }
    }
}

/// A complete variant's step checkpoints beyond `checkpoint.keep_last`.
fn step_items(fs: &dyn Fs, v: &FoundVariant, keep: u64, opts: Options, report: &mut Report) {
    for step in crate::retention::beyond(fs, &v.dir, keep) {
        let mut item = Item {
            kind: Kind::StepCheckpoint,
            bytes: crate::retention::tree_bytes(fs, &step),
            path: step.clone(),
            reason: format!("complete variant; checkpoint.keep_last is {keep}"),
            removed: false,
            error: None,
            killed_run: None,
        };
        if opts.apply {
            match crate::retention::remove_step(fs, &step) {
                Ok(()) => item.removed = true,
                Err(e) => item.error = Some(storage_words(&step, &e)),
            }
        }
        report.items.push(item);
    }
}

/// An incomplete variant nobody holds, as an item when it is abandoned (silent for longer
/// than the bound, on storage with an atomic exchange), or why it is kept.
fn abandoned(
    fs: &dyn Fs,
    v: &FoundVariant,
    reason: &str,
    now_ms: u64,
    opts: Options,
) -> std::result::Result<Item, Kept> {
    let kept = |reason: String| Kept {
        path: v.dir.clone(),
        reason,
    };
    let Some(heard) = last_heard_ms(fs, &v.dir) else {
        return Err(kept(
            "incomplete, and its lease cannot be read: not judged abandoned".into(),
        ));
    };
    let silent = now_ms.saturating_sub(heard);
    if silent < opts.older_than_ms {
        return Err(kept(format!(
            "incomplete ({reason}) but its owner was heard {} s ago (--older-than {} s)",
            silent / 1000,
            opts.older_than_ms / 1000
        )));
    }
    if !fs.caps(&v.dir).rename_exchange {
        return Err(kept(format!(
            "abandoned (incomplete, {reason}, silent for {} s), but this storage has no atomic exchange (posix-noflags, FUSE, a bucket): removing it could race a resume; delete it by hand once nothing can resume it",
            silent / 1000
        )));
    }
    Ok(Item {
        kind: Kind::AbandonedVariant,
        path: v.dir.clone(),
        bytes: crate::retention::tree_bytes(fs, &v.dir),
        reason: format!(
            "incomplete ({reason}), nobody holds it, silent for {} s",
            silent / 1000
        ),
        removed: false,
        error: None,
        killed_run: None,
    })
}

/// Takes an abandoned variant over by the lease protocol, checks it is still incomplete,
/// ends its tracked run as KILLED, and replaces it by a tombstone file in one exchange (only
/// where the storage has one, see `variant_items`). `Err` says why
/// the variant is kept after all (a race lost, or its tracked run could not be ended); a
/// storage error is the item's `error`.
fn remove_abandoned(
    layout: &Layout,
    world: &World<'_>,
    v: &FoundVariant,
    now_ms: u64,
    item: &mut Item,
) -> std::result::Result<(), String> {
    let fs = world.fs;
    let seen = match &v.lease {
        LeaseView::None { generation } | LeaseView::Stale { generation } => *generation,
        LeaseView::Live(_) => return Err("its lease is live".into()),
    };
    let held = match lease::take(fs, &v.dir, seen, &world.owner, now_ms, "gc") {
        Ok(Take::Won(held)) => held,
        Ok(Take::Lost) => return Err("another process took the variant over first".into()),
        // Another gc removed it since this one listed it.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Err("removed meanwhile by another gc".into())
        }
        Err(e) => {
            item.error = Some(storage_words(&v.dir, &e));
            return Ok(());
        }
    };
    let removed = remove_held(layout, world, v, now_ms, item);
    if removed.is_err() {
        // Kept after all: hand the lease back, so that a resume need not wait for it to go
        // stale.
        let _ = lease::release(fs, &v.dir, &held, now_ms);
    }
    removed
}

/// The rest of `remove_abandoned`, under gc's lease.
fn remove_held(
    layout: &Layout,
    world: &World<'_>,
    v: &FoundVariant,
    now_ms: u64,
    item: &mut Item,
) -> std::result::Result<(), String> {
    // Under our lease: nobody can have completed it since, unless they did before we won.
    let now = crate::completion::check(
        world.fs,
        layout,
        &v.dir,
        None,
        v.variant,
        crate::completion::Depth::Sizes,
    );
    if now.is_complete() {
        // Ours now, but complete: hand the lease back and keep it.
        return Err("completed meanwhile".into());
    }
    end_tracked_runs(world, v, now_ms, item)?;
    match exchange_with_tombstone(world.fs, v, now_ms, &item.reason) {
        Ok(()) => item.removed = true,
        Err(e) => item.error = Some(storage_words(&v.dir, &e)),
    }
    Ok(())
}

/// Ends the variant's tracked runs still RUNNING as KILLED, found by identity and variant
/// tags (the metadata may not know a run the store created before it failed). A store that
/// cannot be asked keeps the variant (`Err`): gc retries next time.
fn end_tracked_runs(
    world: &World<'_>,
    v: &FoundVariant,
    now_ms: u64,
    item: &mut Item,
) -> std::result::Result<(), String> {
    let (Some(tracker), Some(config)) = (world.tracker, world.config) else {
        return Ok(());
    };
    use crate::track::lifecycle::Fingerprints;
    let meta = crate::store::meta::VariantMeta::read(world.fs, &v.dir);
    let from_name = fingerprints_of(v);
    let fingerprints = match (&meta, &from_name) {
        (Some(m), _) => Fingerprints::Full(&m.spec_fp, &m.exec_fp),
        (None, Some((spec, exec))) => Fingerprints::Prefixes(spec, exec),
        (None, None) => return Ok(()),
    };
    let ended = crate::track::lifecycle::end_running_runs(
        tracker,
        config,
        fingerprints,
        &|n| n == v.variant,
        ("trainctl.removed_by", "gc"),
        now_ms as i64,
    )
    .map_err(|e| {
        format!("its tracked run could not be ended as KILLED ({e}); gc retries next time")
    })?;
    if !ended.is_empty() {
        item.killed_run = Some(format!("{} run(s) of v{}", ended.len(), v.variant));
    }
    Ok(())
}

/// Replaces the variant by a tombstone file in one exchange. The name `v<n>` never stands
/// free, so it is never allocated again (a new variant under an old number would meet
/// resumers and gcs that judged the old one: their next lease generation would land in the
/// new variant), and a resumer that read the old lease generation now finds a file, not a
/// directory, and answers busy; no reader ever sees half a variant.
fn exchange_with_tombstone(
    fs: &dyn Fs,
    v: &FoundVariant,
    now_ms: u64,
    reason: &str,
) -> std::io::Result<()> {
    let tombstone = serde_json::json!({
        "removed_by": "gc",
        "removed_at": crate::cache::rfc3339(now_ms * 1000),
        "variant": v.variant,
        "reason": reason,
    });
    let aside = crate::fs::temp_sibling(fs, &v.dir)?;
    fs.create_new(
        &aside,
        &serde_json::to_vec_pretty(&tombstone).unwrap_or_default(),
    )?;
    fs.fsync_file(&aside)?;
    fs.rename_exchange(&aside, &v.dir)?;
    if let Some(parent) = v.dir.parent() {
        fs.fsync_dir(parent)?;
    }
    fs.remove_dir_all(&aside)
}

/// Temporaries and staged dirs below `root` whose writer is gone: a staged allocation by its
/// own lease; any other temporary when the process that made it (the pid in its unique
/// suffix) no longer runs on this host (found by `sched`: judging a variant's temporaries by
/// the variant's lease removed those of a resumer that took the lease after gc looked).
fn debris_items(
    world: &World<'_>,
    facts: &lease::LivenessFacts<'_>,
    root: &Path,
    now_ms: u64,
    opts: Options,
    report: &mut Report,
) {
    let fs = world.fs;
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    // Bounded: at most 16 levels below the root, symlinks are not followed.
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs.list(&dir) else { continue };
        for e in entries {
            let path = dir.join(&e.name);
            if !crate::fs::is_temp_name(&e.name) {
                if e.is_dir && depth < 16 {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !writer_gone(fs, facts, &path, &e, now_ms, opts) {
                report.kept.push(Kept {
                    path,
                    reason: "a temporary whose writer may still run".into(),
                });
                continue;
            }
            report.items.push(debris_item(fs, path, e.is_dir, opts));
        }
    }
}

/// Whether the writer of a temporary is gone.
fn writer_gone(
    fs: &dyn Fs,
    facts: &lease::LivenessFacts<'_>,
    path: &Path,
    e: &crate::fs::Entry,
    now_ms: u64,
    opts: Options,
) -> bool {
    if e.is_dir && fs.exists(&path.join("lease-1.json")) {
        // A staged allocation: judged by the lease its allocator staged in it.
        let current = lease::current(fs, path).unwrap_or_default();
        let live = current
            .record
            .as_ref()
            .is_some_and(|r| lease::liveness(r, current.heartbeat.as_ref(), facts));
        return !live
            && last_heard_ms(fs, path)
                .is_none_or(|h| now_ms.saturating_sub(h) >= opts.older_than_ms);
    }
    // Any other temporary: its writer is the process named in its unique suffix, whatever
    // the variant's lease says (a resumer may take the lease after this walk began, and its
    // temporaries must survive).
    writer_pid(&e.name).is_some_and(|pid| {
        !fs.caps(path).whole_objects && (facts.process_start_time)(pid).is_none()
    })
}

/// Debris as an item, removed with `apply` (already gone counts as removed).
fn debris_item(fs: &dyn Fs, path: PathBuf, is_dir: bool, opts: Options) -> Item {
    let mut item = Item {
        kind: Kind::Debris,
        bytes: crate::retention::tree_bytes(fs, &path),
        path,
        reason: "interrupted write; its writer is gone".into(),
        removed: false,
        error: None,
        killed_run: None,
    };
    if opts.apply {
        let removed = if is_dir {
            fs.remove_dir_all(&item.path)
        } else {
            fs.remove_file(&item.path)
        };
        match removed {
            Ok(()) => item.removed = true,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => item.removed = true,
            Err(err) => item.error = Some(storage_words(&item.path, &err)),
        }
    }
    item
}

/// The pid in a temporary's unique suffix (`.<name>.tmp-<pid>-<counter>-<nanos>`).
fn writer_pid(name: &str) -> Option<u32> {
    let suffix = name.rsplit_once(".tmp-")?.1;
    let fields: Vec<&str> = suffix.split('-').collect();
    match fields.as_slice() {
        [pid, counter, nanos] if counter.parse::<u64>().is_ok() && nanos.parse::<u64>().is_ok() => {
            pid.parse().ok()
        }
        _ => None,
    }
}

fn storage_words(path: &Path, e: &std::io::Error) -> String {
    Error::io(path, e).message
}

/// `12.3 MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "OUT: {}", self.out.display())?;
        if self.items.is_empty() {
            writeln!(f, "nothing to remove")?;
        }
        for i in &self.items {
            let verb = match (&i.error, i.removed, self.applied) {
                (Some(_), _, _) => "KEPT",
                (None, true, _) => "removed",
                (None, false, _) => "would remove",
            };
            writeln!(
                f,
                "{verb:<12} {:<17} {:>9}  {}",
                i.kind.as_str(),
                human_bytes(i.bytes),
                i.path.display()
            )?;
            match &i.error {
                Some(e) => writeln!(f, "             {e}")?,
                None => writeln!(f, "             {}", i.reason)?,
            }
            if let Some(runs) = &i.killed_run {
                writeln!(f, "             tracking: {runs} ended as KILLED")?;
            }
        }
        for k in &self.kept {
            writeln!(f, "kept         {}  ({})", k.path.display(), k.reason)?;
        }
        if self.applied {
            writeln!(f, "freed {}", human_bytes(self.bytes))
        } else {
            writeln!(
                f,
                "would free {} (a dry run: `trainctl gc --apply` removes)",
                human_bytes(self.bytes)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_pid_is_read_from_the_unique_suffix_only() {
        assert_eq!(writer_pid(".v3.tmp-4242-0000000001-123456789"), Some(4242));
        assert_eq!(writer_pid(".conv-abcd1234.tmp-7-0000000002-5"), Some(7));
        assert_eq!(writer_pid(".v3.tmp-host-start-9-1-2"), None);
        assert_eq!(writer_pid(".v3.tmp-x"), None);
        assert_eq!(writer_pid("v3"), None);
    }

    #[test]
    fn bytes_are_shown_in_decimal_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(21_000_000), "21.0 MB");
    }
}
