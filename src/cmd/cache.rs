//! `trainctl cache check|repair [KIND]` (docs/contract.md, "Caches"): records against their
//! views; repair rebuilds latest and index from the records and removes debris.

use super::{Env, CHECK_FOUND_PROBLEMS};
use crate::cache::{Cache, CacheKind, CacheSettings, Problem};
use crate::error::Result;
use serde::Serialize;
use std::fmt;

/// check (read-only) or repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Check,
    Repair,
}

/// One cache's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// What is left: after `repair`, what repair cannot fix (corrupt records).
    pub problems: Vec<Problem>,
    /// What repair noticed but left (for example records it could not read).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What `cache check|repair` found, cache by cache.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub repaired: bool,
    pub problems: usize,
    pub caches: super::Ordered<Entry>,
}

/// Checks (and first repairs) one cache or all.
pub fn run(env: &Env<'_>, action: Action, kind: Option<&str>) -> Result<Report> {
    let config = env.config()?;
    let layout = crate::paths::Layout::from_config(&config)?;
    let kinds: Vec<CacheKind> = match kind {
        Some(k) => vec![CacheKind::parse(k).ok_or_else(|| crate::cache::unknown_kind(k))?],
        None => CacheKind::ALL.to_vec(),
    };
    let repair = action == Action::Repair;
    if repair {
        crate::storage::establish(&config, &layout.out)?;
    }
    let mut caches = super::Ordered::default();
    for kind in kinds {
        let cache = Cache::new(
            env.fs,
            CacheSettings::from_paths(&config.paths, &layout, kind)?,
        );
        let warnings = if repair { cache.repair()? } else { Vec::new() };
        let problems = cache.check()?;
        caches.push(kind.as_str().to_string(), Entry { problems, warnings });
    }
    Ok(Report {
        repaired: repair,
        problems: caches.values().map(|e| e.problems.len()).sum(),
        caches,
    })
}

impl Report {
    /// The report is the output either way; a check that found problems exits
    /// CHECK_FOUND_PROBLEMS so that cron and CI notice (docs/contract.md, "Exit codes").
    pub fn exit_code(&self) -> i32 {
        if self.problems > 0 {
            CHECK_FOUND_PROBLEMS
        } else {
            0
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (kind, entry) in self.caches.iter() {
            for w in &entry.warnings {
                writeln!(f, "{kind}: warning: {w}")?;
            }
            for p in &entry.problems {
                writeln!(f, "{kind}: {} {} ({})", p.kind, p.file, p.detail)?;
            }
            if entry.problems.is_empty() {
                writeln!(f, "{kind}: ok")?;
            }
        }
        Ok(())
    }
}
