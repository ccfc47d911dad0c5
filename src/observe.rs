//! Observation of OUT through the Fs port: the variants of an identity (lazily classified by
//! the completion predicate, with their leases), every variant for `status`, and parents for
//! continue/final_training sources. Reads only; never writes.

use crate::completion::{self, Completion, Depth};
use crate::config::schema::StorageEnv;
use crate::fs::Fs;
use crate::lease::{self, LeaseView, LivenessFacts};
use crate::paths::{Identity, Layout};
use crate::plan::{VariantOracle, VariantState};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bound on the re-decisions of a reuse while other starts keep completing variants.
pub const MAX_REUSE_RECHECKS: usize = 16;

/// The decision for `request` on the variants of `identity` as they are now, with the
/// observation it was made on. A reuse answers from a listing and from completion checks
/// made at different times, so a variant completed after the listing could be reused while
/// a newer one had completed meanwhile (found by the gate tier of props/sched.rs). Every
/// reuse_if_exists decision (reuse, wait, new) is therefore made again on a fresh listing
/// until two consecutive decisions agree (double collect): completion only grows between
/// them, so the second listing is an instant at which the answer was the contract's (a new
/// decided from "v2 incomplete" and then "v2's lease released" once v2 had completed was
/// found by props/sched.rs with the wait rule). Other decisions are protected by the lease
/// and the no-replace publish that carry them out.
pub fn decide<'a>(
    fs: &'a dyn Fs,
    layout: &'a Layout,
    identity: &'a Identity,
    facts: &'a LivenessFacts<'a>,
    request: &crate::plan::Request,
) -> crate::error::Result<(FsVariants<'a>, crate::plan::Decision)> {
    // A reuse hands a variant over as it is: it is checked at `run.verify_reuse` depth (by
    // default the sha256 of every checkpoint file), so a corrupt one is not complete to it.
    let depth = match request.mode {
        crate::config::schema::RunMode::ReuseIfExists => request.reuse_depth,
        _ => Depth::Sizes,
    };
    let mut variants = FsVariants::scan_at(fs, layout, identity, facts, depth)?;
    let mut decision = crate::plan::decide(request, &variants)?;
    // In reuse_if_exists every answer reads completions and leases of several variants at
    // different times (a variant seen incomplete, then its lease seen released once it
    // completed, would give NEW beside a complete variant): collect again until it agrees.
    let reuse_mode = request.mode == crate::config::schema::RunMode::ReuseIfExists;
    for _ in 0..MAX_REUSE_RECHECKS {
        if !reuse_mode && !matches!(decision, crate::plan::Decision::Reuse { .. }) {
            break;
        }
        let again = FsVariants::scan_at(fs, layout, identity, facts, depth)?;
        let next = crate::plan::decide(request, &again)?;
        variants = again;
        if next == decision {
            break;
        }
        decision = next;
    }
    let decision = past_files(decision, &variants, request)?;
    Ok((variants, decision))
}

/// A new variant's number taken by a file (gc's tombstone of a removed variant, or anything
/// else that is not a variant) is passed over, as allocation does, so that `plan` says the
/// number `train` makes; an explicit `variant.number` there is `busy` (docs/contract.md,
/// "Retention and gc").
fn past_files(
    decision: crate::plan::Decision,
    variants: &FsVariants<'_>,
    request: &crate::plan::Request,
) -> crate::error::Result<crate::plan::Decision> {
    use crate::plan::Decision;
    let (Decision::New { variant } | Decision::Continue { variant }) = decision else {
        return Ok(decision);
    };
    if !variants.taken_by_files.contains(&variant) {
        return Ok(decision);
    }
    let explicit = request.mode != crate::config::schema::RunMode::ForceNew
        && request.explicit_variant == Some(variant);
    if explicit {
        return Err(crate::error::Error::new(
            crate::error::ErrorKind::Busy,
            format!(
                "variant {variant} cannot be created: a file holds its name (a variant gc removed, see `trainctl status`)"
            ),
        ));
    }
    let free = (variant..)
        .find(|n| !variants.taken_by_files.contains(n))
        .unwrap_or(variant);
    Ok(match decision {
        Decision::Continue { .. } => Decision::Continue { variant: free },
        _ => Decision::New { variant: free },
    })
}

/// How many variants below the one `resume_if_incomplete` picks are looked at for the hint
/// about other incomplete ones (each costs a completion check: a few requests in a bucket).
pub const LOWER_INCOMPLETE_WINDOW: u64 = 100;

/// `resume_if_incomplete` resumes only the highest variant. When lower ones are incomplete
/// too (nobody holding them), a hint naming them (up to 10, among the
/// `LOWER_INCOMPLETE_WINDOW` numbers below `picked`) and how to resume one or remove them
/// (docs/contract.md, "Retention and gc").
pub fn lower_incomplete_hint(variants: &FsVariants<'_>, picked: u64) -> Option<String> {
    let low = picked.saturating_sub(LOWER_INCOMPLETE_WINDOW);
    let lower: Vec<u64> = variants
        .numbers
        .range(low..picked)
        .rev()
        .copied()
        .filter(|n| {
            let (completion, lease) = variants.observe(*n);
            !completion.is_complete() && !lease.is_live()
        })
        .take(10)
        .collect();
    let first = *lower.first()?;
    let named: Vec<String> = lower.iter().rev().map(|n| format!("v{n}")).collect();
    Some(format!(
        "{} {} incomplete too: resume_if_incomplete takes only the highest; resume one with `-o run.mode=resume_if_incomplete -o variant.number={first}`, or remove abandoned ones with `trainctl gc`",
        named.join(", "),
        if lower.len() == 1 { "is" } else { "are" },
    ))
}

/// Reads a variant's lease and applies the liveness rule.
pub fn read_lease(fs: &dyn Fs, dir: &Path, facts: &LivenessFacts<'_>) -> LeaseView {
    lease::read(fs, dir, facts)
}

/// The variants of one identity, classified on demand and memoised: `plan` on 10,000
/// variants reads only the few it needs.
pub struct FsVariants<'a> {
    fs: &'a dyn Fs,
    layout: &'a Layout,
    identity: &'a Identity,
    pub dir: PathBuf,
    numbers: BTreeSet<u64>,
    /// Numbers whose name a file (or anything else that is not a directory) holds: gc's
    /// tombstones. Not variants, but taken.
    taken_by_files: BTreeSet<u64>,
    facts: &'a LivenessFacts<'a>,
    memo: RefCell<BTreeMap<u64, (Completion, LeaseView)>>,
    /// Completions checked alone (without the lease), memoised too.
    checked: RefCell<BTreeMap<u64, Completion>>,
    /// How deep completion is checked.
    depth: Depth,
}

impl<'a> FsVariants<'a> {
    pub fn scan(
        fs: &'a dyn Fs,
        layout: &'a Layout,
        identity: &'a Identity,
        facts: &'a LivenessFacts<'a>,
    ) -> crate::error::Result<FsVariants<'a>> {
        FsVariants::scan_at(fs, layout, identity, facts, Depth::Sizes)
    }

    /// `scan`, checking completion at `depth`.
    pub fn scan_at(
        fs: &'a dyn Fs,
        layout: &'a Layout,
        identity: &'a Identity,
        facts: &'a LivenessFacts<'a>,
        depth: Depth,
    ) -> crate::error::Result<FsVariants<'a>> {
        let dir = layout.identity_dir(identity)?;
        let entries = match fs.list(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(crate::error::Error::io(&dir, &e)),
        };
        let (mut numbers, mut taken_by_files) = (BTreeSet::new(), BTreeSet::new());
        for e in &entries {
            if let Some(n) = layout.parse_variant_name(&e.name) {
                if e.is_dir {
                    numbers.insert(n);
                } else {
                    taken_by_files.insert(n);
                }
            }
        }
        Ok(FsVariants {
            fs,
            layout,
            identity,
            dir,
            numbers,
            taken_by_files,
            facts,
            memo: RefCell::new(BTreeMap::new()),
            checked: RefCell::new(BTreeMap::new()),
            depth,
        })
    }

    /// Warnings about the variants this observation looked at and found corrupt at sha256
    /// depth (`run.verify_reuse`): not reused, and said so.
    pub fn unverified_warnings(&self) -> Vec<String> {
        if self.depth != Depth::Digests {
            return Vec::new();
        }
        let mut seen: BTreeMap<u64, Completion> = self.checked.borrow().clone();
        for (v, (c, _)) in self.memo.borrow().iter() {
            seen.insert(*v, c.clone());
        }
        seen.iter()
            .filter_map(|(v, completion)| match completion.reason() {
                Some(r @ (completion::Reason::ManifestMismatch(_) | completion::Reason::NotInManifest(_))) => Some(format!(
                    "v{v} does not match its manifest ({r}): it is not reused; `trainctl status --deep` lists it"
                )),
                _ => None,
            })
            .collect()
    }

    /// A warning for each variant observed whose owner, on another host, wrote a heartbeat
    /// further ahead of this machine's clock than `lease::MAX_CLOCK_SKEW_MS`: its lease is
    /// judged stale (docs/contract.md, "Allocation and leases"), and one of the two clocks
    /// is wrong.
    pub fn skew_warnings(&self) -> Vec<String> {
        let stale: Vec<u64> = self
            .memo
            .borrow()
            .iter()
            .filter(|(_, (_, lease))| matches!(lease, LeaseView::Stale { .. }))
            .map(|(v, _)| *v)
            .collect();
        stale
            .into_iter()
            .filter_map(|v| {
                let dir = self.dir.join(self.layout.variant_name(v));
                let current = lease::current(self.fs, &dir).ok()?;
                let record = current.record?;
                // The last sign of life, as the liveness rule reads it.
                let last = current
                    .heartbeat
                    .map_or(record.started_at_ms, |h| h.heartbeat_ms);
                let ahead = (record.host != self.facts.this_host)
                    .then(|| lease::ahead_beyond_bound(last, self.facts))??;
                Some(format!(
                    "v{v}: the heartbeat of its owner on {} is {} s ahead of this machine's clock, beyond the {} s bound: its lease is judged stale; check both clocks (NTP)",
                    record.host,
                    ahead / 1000,
                    lease::MAX_CLOCK_SKEW_MS / 1000
                ))
            })
            .collect()
    }

    /// Completion of `variant` alone (memoised with `observe` when that ran).
    pub fn completion(&self, variant: u64) -> Completion {
        if let Some(hit) = self.memo.borrow().get(&variant) {
            return hit.0.clone();
        }
        if let Some(hit) = self.checked.borrow().get(&variant) {
            return hit.clone();
        }
        let dir = self.dir.join(self.layout.variant_name(variant));
        let verdict = completion::check(
            self.fs,
            self.layout,
            &dir,
            Some(self.identity),
            variant,
            self.depth,
        );
        self.checked.borrow_mut().insert(variant, verdict.clone());
        verdict
    }

    /// Completion and lease of `variant` (memoised).
    pub fn observe(&self, variant: u64) -> (Completion, LeaseView) {
        if let Some(hit) = self.memo.borrow().get(&variant) {
            return hit.clone();
        }
        let dir = self.dir.join(self.layout.variant_name(variant));
        // The lease is read BEFORE the completion: completing a variant needs a lease
        // generation above the one read here, so if the variant completes after this read, a
        // takeover of generation n+1 by this caller must fail (busy). Reading in the other
        // order let a resumer see "incomplete" from before and "released" from after another
        // process finished, and retrain a complete variant (found by props/races.rs).
        let lease = read_lease(self.fs, &dir, self.facts);
        let completion = completion::check(
            self.fs,
            self.layout,
            &dir,
            Some(self.identity),
            variant,
            self.depth,
        );
        let seen = (completion, lease);
        self.memo.borrow_mut().insert(variant, seen.clone());
        seen
    }
}

impl VariantOracle for FsVariants<'_> {
    fn numbers(&self) -> &BTreeSet<u64> {
        &self.numbers
    }

    fn is_complete(&self, variant: u64) -> bool {
        self.completion(variant).is_complete()
    }

    fn state(&self, variant: u64) -> VariantState {
        match self.observe(variant) {
            (Completion::Complete(_), _) => VariantState::Complete,
            (Completion::Incomplete(reason), lease) => VariantState::Incomplete {
                reason,
                lease_live: lease.is_live(),
            },
        }
    }
}

/// One variant dir found under OUT (for `status` and parent search).
#[derive(Clone, Debug)]
pub struct FoundVariant {
    pub dir: PathBuf,
    /// Path segments between `OUT/final_training` and the variant dir name.
    pub identity_segments: Vec<String>,
    pub variant: u64,
    pub completion: Completion,
    pub lease: LeaseView,
}

/// Every variant dir under `OUT/final_training`, walking as deep as the pattern says, sorted
/// by path. `depth` is the number of segments of the final-training pattern.
pub fn scan_all(
    fs: &dyn Fs,
    layout: &Layout,
    facts: &LivenessFacts<'_>,
    depth: Depth,
    under: Option<&Path>,
) -> Vec<FoundVariant> {
    let segments = layout.pattern_depth();
    let start = under
        .map(Path::to_path_buf)
        .unwrap_or_else(|| layout.final_training_dir.clone());
    let start_depth = start
        .strip_prefix(&layout.final_training_dir)
        .map(|p| p.components().count())
        .unwrap_or(0);
    let mut found = Vec::new();
    for (path, entry) in variant_level_entries(fs, segments, start, start_depth) {
        if !entry.is_dir {
            continue;
        }
        if let Some(variant) = layout.parse_variant_name(&entry.name) {
            let identity_segments = identity_segments_of(layout, &path);
            let completion = completion::check(fs, layout, &path, None, variant, depth);
            let lease = read_lease(fs, &path, facts);
            found.push(FoundVariant {
                dir: path,
                identity_segments,
                variant,
                completion,
                lease,
            });
        }
    }
    found.sort_by(|a, b| a.dir.cmp(&b.dir));
    found
}

/// Every entry at the variant level of the final-training tree (`segments` levels below it),
/// directories or not, with its path.
fn variant_level_entries(
    fs: &dyn Fs,
    segments: usize,
    start: PathBuf,
    start_depth: usize,
) -> Vec<(PathBuf, crate::fs::Entry)> {
    let mut out = Vec::new();
    let mut stack = vec![(start, start_depth)];
    // Bounded: the walk goes at most `segments` levels deep.
    while let Some((dir, level)) = stack.pop() {
        let Ok(entries) = fs.list(&dir) else { continue };
        for entry in entries {
            let path = dir.join(&entry.name);
            if level + 1 < segments {
                if entry.is_dir {
                    stack.push((path, level + 1));
                }
            } else {
                out.push((path, entry));
            }
        }
    }
    out
}

fn identity_segments_of(layout: &Layout, variant_path: &Path) -> Vec<String> {
    variant_path
        .parent()
        .and_then(|p| p.strip_prefix(&layout.final_training_dir).ok())
        .map(|p| p.iter().map(|s| s.to_string_lossy().to_string()).collect())
        .unwrap_or_default()
}

/// Something where a variant dir should be that is not one: a file (`not_a_directory`) or a
/// symlink (`symlink`, never followed). Allocation counts its number; `status` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OddVariant {
    pub path: PathBuf,
    pub identity_segments: Vec<String>,
    pub variant: u64,
    pub reason: &'static str,
}

/// Whether the file at a variant's name is the tombstone `gc` left for a removed variant (it
/// keeps the number from being allocated again: docs/contract.md, "Retention and gc").
pub fn is_tombstone(fs: &dyn Fs, path: &Path) -> bool {
    fs.metadata(path)
        .is_ok_and(|m| !m.is_dir && !m.special && m.len < 64 * 1024)
        && fs
            .read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["removed_by"] == "gc")
}

/// The non-directories under OUT/final_training named like variants.
pub fn odd_variants(fs: &dyn Fs, layout: &Layout) -> Vec<OddVariant> {
    let start = layout.final_training_dir.clone();
    let mut odd: Vec<OddVariant> = variant_level_entries(fs, layout.pattern_depth(), start, 0)
        .into_iter()
        .filter(|(_, e)| !e.is_dir)
        .filter_map(|(path, e)| {
            let variant = layout.parse_variant_name(&e.name)?;
            let symlink =
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            let reason = if symlink {
                "symlink"
            } else if is_tombstone(fs, &path) {
                "removed_by_gc"
            } else {
                "not_a_directory"
            };
            Some(OddVariant {
                identity_segments: identity_segments_of(layout, &path),
                path,
                variant,
                reason,
            })
        })
        .collect();
    odd.sort_by(|a, b| a.path.cmp(&b.path));
    odd
}

/// The latest complete final training of `model` in `storage_env` (by `completed_at`, then
/// path), for `source.type: final_training` without an explicit parent.
pub fn latest_complete(
    fs: &dyn Fs,
    layout: &Layout,
    facts: &LivenessFacts<'_>,
    storage_env: StorageEnv,
    model: &str,
) -> Option<FoundVariant> {
    scan_all(fs, layout, facts, Depth::Sizes, None)
        .into_iter()
        .filter(|v| match &v.completion {
            Completion::Complete(m) => m.storage_env == storage_env.as_str() && m.model == model,
            Completion::Incomplete(_) => false,
        })
        .max_by(|a, b| {
            let key = |v: &FoundVariant| match &v.completion {
                Completion::Complete(m) => m.completed_at.clone().unwrap_or_default(),
                Completion::Incomplete(_) => String::new(),
            };
            key(a).cmp(&key(b)).then_with(|| a.dir.cmp(&b.dir))
        })
}
