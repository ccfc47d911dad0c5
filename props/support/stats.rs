//! What a campaign covered (`TRAINCTL_STATS=1`): one `TRAINCTL-STATS {json}` line per
//! campaign and measure, with stable keys, read by `cargo xtask bench`:
//! `kind` (`mvr_simfs`, `mvr_osfs`, `crash_train`, `crash_cache`, `sched_starts`,
//! `sched_resumers`, `sched_long_run`, `loom`, …), `measure`, `count`, `secs`, `distinct`
//! (distinct model states or projections reached, `null` where a campaign does not track
//! them), `commands` (per-command counts, `{}` where there are no commands) and `test` (the
//! replay filter). With `TRAINCTL_STATS_FILE=<path>` each line's JSON is also appended to
//! that file (one line per write, from any number of test processes): the nightly sums them
//! into states per hour (`cargo xtask stats <path>`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Whether stats are wanted.
pub fn enabled() -> bool {
    std::env::var_os("TRAINCTL_STATS").is_some()
        || std::env::var_os("TRAINCTL_STATS_FILE").is_some()
}

/// Prints one stats line.
pub fn line(
    kind: &str,
    test: &str,
    measure: &str,
    count: u64,
    secs: f64,
    distinct: Option<u64>,
    commands: &BTreeMap<String, u64>,
) {
    if !enabled() {
        return;
    }
    let stats = serde_json::json!({
        "kind": kind,
        "test": test,
        "measure": measure,
        "count": count,
        "secs": secs,
        "distinct": distinct,
        "commands": commands,
    });
    eprintln!("TRAINCTL-STATS {stats}");
    if let Some(path) = std::env::var_os("TRAINCTL_STATS_FILE") {
        use std::io::Write;
        // One write of a whole line with O_APPEND: lines of concurrent processes never mix.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{stats}\n").as_bytes()));
        if let Err(e) = appended {
            eprintln!(
                "TRAINCTL_STATS_FILE {}: {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
}

/// A sequential campaign (many proptest cases, each a command sequence): commands per kind,
/// distinct states, and the cases finished; the line is printed when the last case ends.
#[derive(Default)]
struct Campaign {
    began: Option<std::time::Instant>,
    commands: BTreeMap<String, u64>,
    distinct: BTreeSet<u64>,
    cases_done: u32,
}

static CAMPAIGNS: Mutex<BTreeMap<&'static str, Campaign>> = Mutex::new(BTreeMap::new());

fn with<T>(kind: &'static str, f: impl FnOnce(&mut Campaign) -> T) -> T {
    let mut all = CAMPAIGNS.lock().unwrap_or_else(|e| e.into_inner());
    let c = all.entry(kind).or_default();
    c.began.get_or_insert_with(std::time::Instant::now);
    f(c)
}

/// One command applied.
pub fn command(kind: &'static str, command: &str) {
    if enabled() {
        with(kind, |c| {
            *c.commands.entry(command.to_string()).or_insert(0) += 1
        });
    }
}

/// A state reached (any stable hash of it).
pub fn state(kind: &'static str, hash: u64) {
    if enabled() {
        with(kind, |c| {
            c.distinct.insert(hash);
        });
    }
}

/// One case finished; after the `cases`-th, prints the campaign's line.
pub fn case_done(kind: &'static str, test: &str, cases: u32) {
    if !enabled() {
        return;
    }
    let done = with(kind, |c| {
        c.cases_done += 1;
        (c.cases_done == cases).then(|| {
            (
                c.commands.values().sum::<u64>(),
                c.began.map_or(0.0, |t| t.elapsed().as_secs_f64()),
                c.distinct.len() as u64,
                c.commands.clone(),
            )
        })
    });
    if let Some((count, secs, distinct, commands)) = done {
        line(
            kind,
            test,
            "commands",
            count,
            secs,
            Some(distinct),
            &commands,
        );
    }
}

/// A 64-bit hash of a value's `Debug` form (std's hasher with its fixed keys: the same for
/// equal values within a run, which is all that counting distinct states needs).
pub fn hash_debug(value: &impl std::fmt::Debug) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    format!("{value:?}").hash(&mut hasher);
    hasher.finish()
}
