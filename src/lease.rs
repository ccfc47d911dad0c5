//! Variant leases (docs/contract.md, "Allocation and leases"): who owns a variant dir. A lease is a
//! sequence of generation files `lease-<n>.json`, each published whole by a no-replace rename; the
//! highest generation is the current one. Taking a lease (new, resume, takeover of a stale one) and
//! releasing it both mean publishing generation n+1, so of any number of racers exactly one wins
//! generation n+1 and nothing is ever deleted and re-created (the classic takeover race cannot
//! happen). The owner refreshes `heartbeat-<n>.json` while it trains. Liveness is decided here
//! once.

use crate::fs::{self, Fs};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;

/// Whether a generation holds the variant or gives it back.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    Held,
    Released,
}

/// One lease generation (`lease-<n>.json`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct LeaseRecord {
    pub generation: u64,
    pub state: LeaseState,
    pub host: String,
    pub pid: u32,
    /// The owner's process start time (clock ticks since boot, `/proc/<pid>/stat` field 22),
    /// so that a recycled pid is not mistaken for the owner.
    pub start_time: u64,
    pub started_at_ms: u64,
    /// What the owner came to do (`new`, `resume`, `continue`, `release`).
    pub purpose: String,
}

/// The owner's heartbeat for generation n (`heartbeat-<n>.json`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Heartbeat {
    pub heartbeat_ms: u64,
    /// The trainer child, while one runs: the lease stays live while it does.
    pub trainer_pid: Option<u32>,
    pub trainer_start_time: Option<u64>,
}

/// Who is asking: this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    pub start_time: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            host: this_host(),
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
        }
    }
}

/// What the planner needs to know about a variant's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseView {
    /// No lease generation, or the last one was released.
    None {
        generation: u64,
    },
    Live(LeaseRecord),
    /// Owner gone (or unreadable record): takeover allowed.
    Stale {
        generation: u64,
    },
}

impl LeaseView {
    pub fn is_live(&self) -> bool {
        matches!(self, LeaseView::Live(_))
    }

    /// The current generation (0 when none was ever taken).
    pub fn generation(&self) -> u64 {
        match self {
            LeaseView::None { generation } | LeaseView::Stale { generation } => *generation,
            LeaseView::Live(r) => r.generation,
        }
    }
}

/// The facts liveness depends on, gathered by the caller (I/O stays outside the rule).
pub struct LivenessFacts<'a> {
    pub this_host: &'a str,
    pub now_ms: u64,
    pub lease_timeout_ms: u64,
    /// Start time of `pid` on this host, `None` when no such process.
    pub process_start_time: &'a dyn Fn(u32) -> Option<u64>,
    /// This machine's clock now (ms), read only to judge a heartbeat that looks ahead of
    /// `now_ms` by more than `MAX_CLOCK_SKEW_MS` (`now_ms` may be the clock when a waiting
    /// command began). `None`: no judgement, such a heartbeat counts as live.
    pub clock: Option<&'a dyn Fn() -> u64>,
}

/// How far another host's clock may run ahead of ours (docs/contract.md, "Allocation and
/// leases"): a heartbeat further ahead than this of our clock now comes from a clock that is
/// wrong, and is treated as stale (a dead owner with a clock days ahead would otherwise hold
/// its lease for days).
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;

/// How far (ms) a heartbeat at `heartbeat_ms` is ahead of this machine's clock now, when
/// beyond `MAX_CLOCK_SKEW_MS`; `None` otherwise or without a live clock. The clock is read
/// only when the heartbeat is ahead of `facts.now_ms` by more than the bound.
pub fn ahead_beyond_bound(heartbeat_ms: u64, facts: &LivenessFacts<'_>) -> Option<u64> {
    if heartbeat_ms <= facts.now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return None;
    }
    let now = (facts.clock?)();
    (heartbeat_ms > now.saturating_add(MAX_CLOCK_SKEW_MS)).then(|| heartbeat_ms - now)
}

/// The trainer of a dead owner that still runs on this host (its orchestrator was killed and
/// the parent-death signal has not reaped it yet): its pid, when the current generation of
/// `dir` is held by an owner of this host that is gone while its trainer is alive. Liveness
/// counts such a lease as live (a resume never races a trainer that is still writing); this
/// tells a resumer that waiting a moment will free it.
pub fn dying_trainer(fs: &dyn Fs, dir: &Path, facts: &LivenessFacts<'_>) -> Option<u32> {
    let current = current(fs, dir).ok()?;
    let record = current.record?;
    let beat = current.heartbeat?;
    // The one liveness rule: live with the heartbeat (the trainer), not without it (the
    // owner alone), on this host.
    let dying = record.host == facts.this_host
        && liveness(&record, Some(&beat), facts)
        && !liveness(&record, None, facts);
    dying.then_some(beat.trainer_pid).flatten()
}

/// The current generation of a variant dir's lease, as the files say (each part `None` when
/// absent or unreadable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// 0 when no generation was ever taken.
    pub generation: u64,
    pub record: Option<LeaseRecord>,
    pub heartbeat: Option<Heartbeat>,
}

/// Reads the current generation's record and heartbeat (the one reader of lease files).
pub fn current(fs: &dyn Fs, dir: &Path) -> io::Result<Current> {
    let generation = current_generation(fs, dir)?;
    if generation == 0 {
        return Ok(Current::default());
    }
    let parse = |name: String| fs.read(&dir.join(name)).ok();
    Ok(Current {
        generation,
        record: parse(lease_name(generation))
            .and_then(|b| serde_json::from_slice::<LeaseRecord>(&b).ok()),
        heartbeat: parse(heartbeat_name(generation))
            .and_then(|b| serde_json::from_slice::<Heartbeat>(&b).ok()),
    })
}

/// docs/contract.md, "Allocation and leases": a held lease is live when its owner (or the owner's
/// trainer) is alive on this host, or, on another host, when the heartbeat is younger than
/// `lease_timeout`.
pub fn liveness(
    record: &LeaseRecord,
    heartbeat: Option<&Heartbeat>,
    facts: &LivenessFacts<'_>,
) -> bool {
    if record.state == LeaseState::Released {
        return false;
    }
    if record.host == facts.this_host {
        let alive = |pid: u32, start: u64| (facts.process_start_time)(pid) == Some(start);
        let owner = alive(record.pid, record.start_time);
        let trainer = heartbeat
            .and_then(|h| h.trainer_pid.zip(h.trainer_start_time))
            .is_some_and(|(pid, start)| alive(pid, start));
        owner || trainer
    } else {
        // A heartbeat newer than `now` is live: `now` may be the reader's clock at the start
        // of its command, which a waiting reuse outlives while the owner keeps beating (a
        // "heartbeat from the future" rule judged against that `now` took such an owner's
        // lease: the regression trace
        // `sched-future-heartbeat-is-a-waiting-readers-old-clock.json`). Only a heartbeat ahead of
        // the clock read now by more than the skew bound is stale.
        let last = heartbeat.map_or(record.started_at_ms, |h| h.heartbeat_ms);
        if ahead_beyond_bound(last, facts).is_some() {
            return false;
        }
        facts.now_ms.saturating_sub(last) < facts.lease_timeout_ms
    }
}

fn lease_name(generation: u64) -> String {
    format!("lease-{generation}.json")
}

fn heartbeat_name(generation: u64) -> String {
    format!("heartbeat-{generation}.json")
}

/// The highest lease generation present in `dir` (0 when none).
pub fn current_generation(fs: &dyn Fs, dir: &Path) -> io::Result<u64> {
    let entries = match fs.list(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    Ok(entries
        .iter()
        .filter(|e| !e.is_dir)
        .filter_map(|e| {
            e.name
                .strip_prefix("lease-")?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()
        })
        .filter(|n| *n >= 1)
        .max()
        .unwrap_or(0))
}

/// Reads the current lease of a variant dir and applies the liveness rule. An unreadable
/// generation file counts as stale (it cannot name a live owner).
pub fn read(fs: &dyn Fs, dir: &Path, facts: &LivenessFacts<'_>) -> LeaseView {
    let Current {
        generation,
        record,
        heartbeat,
    } = match current(fs, dir) {
        Ok(c) => c,
        Err(_) => return LeaseView::Stale { generation: 0 },
    };
    if generation == 0 {
        return LeaseView::None { generation };
    }
    let Some(record) = record else {
        return LeaseView::Stale { generation };
    };
    if record.state == LeaseState::Released {
        return LeaseView::None { generation };
    }
    if liveness(&record, heartbeat.as_ref(), facts) {
        LeaseView::Live(record)
    } else {
        LeaseView::Stale { generation }
    }
}

/// Outcome of trying to take generation n+1.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    Won(LeaseRecord),
    /// Someone else published that generation first.
    Lost,
}

/// Publishes generation `after + 1` held by `owner` (for a resume or takeover, `after` is the
/// generation the caller observed as free or stale; for a brand-new staged dir it is 0).
pub fn take(
    fs: &dyn Fs,
    dir: &Path,
    after: u64,
    owner: &Owner,
    now_ms: u64,
    purpose: &str,
) -> io::Result<Take> {
    let record = LeaseRecord {
        generation: after + 1,
        state: LeaseState::Held,
        host: owner.host.clone(),
        pid: owner.pid,
        start_time: owner.start_time,
        started_at_ms: now_ms,
        purpose: purpose.to_string(),
    };
    publish(fs, dir, record)
}

fn publish(fs: &dyn Fs, dir: &Path, record: LeaseRecord) -> io::Result<Take> {
    let bytes = serde_json::to_vec_pretty(&record).map_err(io::Error::other)?;
    match fs::create_durable(fs, &dir.join(lease_name(record.generation)), &bytes) {
        Ok(()) => Ok(Take::Won(record)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Take::Lost),
        Err(e) => Err(e),
    }
}

/// Gives the variant back: publishes generation n+1 as released. `Lost` means another process
/// had already taken generation n+1 (it judged us stale); the caller reports it.
pub fn release(fs: &dyn Fs, dir: &Path, held: &LeaseRecord, now_ms: u64) -> io::Result<Take> {
    let record = LeaseRecord {
        generation: held.generation + 1,
        state: LeaseState::Released,
        started_at_ms: now_ms,
        purpose: "release".into(),
        ..held.clone()
    };
    publish(fs, dir, record)
}

/// Refreshes the owner's heartbeat: atomic for readers, not durable (after a crash the owner
/// is dead anyway, and a lost heartbeat only makes the lease look older).
pub fn beat(fs: &dyn Fs, dir: &Path, held: &LeaseRecord, heartbeat: &Heartbeat) -> io::Result<()> {
    let bytes = serde_json::to_vec(heartbeat).map_err(io::Error::other)?;
    fs::write_replace(fs, &dir.join(heartbeat_name(held.generation)), &bytes)
}

/// Writes generation 1 into a staged directory nobody else can see yet: no temp file or
/// rename is needed, and the directory itself is synced when it is published.
pub fn take_staged(
    fs: &dyn Fs,
    staged: &Path,
    owner: &Owner,
    now_ms: u64,
    purpose: &str,
) -> io::Result<LeaseRecord> {
    let record = LeaseRecord {
        generation: 1,
        state: LeaseState::Held,
        host: owner.host.clone(),
        pid: owner.pid,
        start_time: owner.start_time,
        started_at_ms: now_ms,
        purpose: purpose.to_string(),
    };
    let path = staged.join(lease_name(1));
    let bytes = serde_json::to_vec_pretty(&record).map_err(io::Error::other)?;
    fs.create_new(&path, &bytes)?;
    fs.fsync_file(&path)?;
    Ok(record)
}

/// Whether `held` is still the current generation of `dir` (nobody took over).
pub fn still_ours(fs: &dyn Fs, dir: &Path, held: &LeaseRecord) -> bool {
    current_generation(fs, dir).is_ok_and(|g| g == held.generation)
}

/// This host's name (for lease ownership): `TRAINCTL_HOST_ID` when set (machines that share
/// one OUT must have distinct host ids, and containers often share a host name such as
/// `localhost`), else the kernel's host name.
pub fn this_host() -> String {
    if let Some(id) = std::env::var("TRAINCTL_HOST_ID")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    {
        return id;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Start time of a process on this host from `/proc/<pid>/stat` (field 22), `None` if gone.
/// A zombie (exited, not yet reaped) counts as gone.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 22 overall is the 20th after the state field (field 3).
    fields.nth(18)?.parse().ok()
}
