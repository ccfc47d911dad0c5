//! Variant leases (SPEC §2.3), the read side: the lease record and the liveness rule. Whether a
//! lease is live is decided here once, from an observed record, the host's view of its
//! processes, and the time; taking and refreshing leases belongs to execution.

use serde::{Deserialize, Serialize};

/// The lease record kept in `<variant>/lease.json`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct LeaseRecord {
    pub host: String,
    pub pid: u32,
    /// The owner's process start time (clock ticks since boot, `/proc/<pid>/stat` field 22),
    /// so that a recycled pid is not mistaken for the owner.
    pub start_time: u64,
    /// Pid of the trainer child, if one runs: the lease stays live while it does.
    #[serde(default)]
    pub trainer_pid: Option<u32>,
    #[serde(default)]
    pub trainer_start_time: Option<u64>,
    pub started_at_ms: u64,
    pub heartbeat_ms: u64,
}

/// What the planner needs to know about a variant's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseView {
    None,
    Live(LeaseRecord),
    /// Owner gone (or unreadable record): takeover allowed.
    Stale(Option<LeaseRecord>),
}

impl LeaseView {
    pub fn is_live(&self) -> bool {
        matches!(self, LeaseView::Live(_))
    }
}

/// The facts liveness depends on, gathered by the caller (I/O stays outside the rule).
pub struct LivenessFacts<'a> {
    pub this_host: &'a str,
    pub now_ms: u64,
    pub lease_timeout_ms: u64,
    /// Start time of `pid` on this host, `None` when no such process.
    pub process_start_time: &'a dyn Fn(u32) -> Option<u64>,
}

/// SPEC §2.3: live when the owner (or its trainer) is alive on this host, or, on another host,
/// the heartbeat is younger than `lease_timeout`.
pub fn liveness(record: Option<LeaseRecord>, facts: &LivenessFacts<'_>) -> LeaseView {
    let Some(record) = record else {
        return LeaseView::Stale(None);
    };
    let live = if record.host == facts.this_host {
        let alive = |pid: u32, start: u64| (facts.process_start_time)(pid) == Some(start);
        let owner = alive(record.pid, record.start_time);
        let trainer = match (record.trainer_pid, record.trainer_start_time) {
            (Some(pid), Some(start)) => alive(pid, start),
            _ => false,
        };
        owner || trainer
    } else {
        facts.now_ms.saturating_sub(record.heartbeat_ms) < facts.lease_timeout_ms
    };
    if live {
        LeaseView::Live(record)
    } else {
        LeaseView::Stale(Some(record))
    }
}

/// This host's name (for lease ownership).
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Start time of a process on this host from `/proc/<pid>/stat` (field 22), `None` if gone.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}
