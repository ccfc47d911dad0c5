//! Linearizability of train histories (SPEC §2.3): a WGL-style search for an order of each
//! command's DECIDE / ALLOCATE / FINISH steps, consistent with real time, under which the
//! concurrent model of `models/` gives every observed outcome. Shared by the scheduled
//! (simulated) and the real-process suites.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use trainctl_models::concurrent::Variants;
use trainctl_models::decision::{ErrorKind as MErr, Expected, Mode};

/// What one logical process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Program {
    ForceNew,
    Reuse,
    /// resume_if_incomplete with variant 1, which the setup leaves stale.
    ResumeStale,
    CacheWrite,
}

/// One process's observed outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub program: Program,
    /// For trains: the decision (or busy).
    pub decision: Option<Expected>,
    pub invoked: u64,
    pub responded: u64,
}

pub fn mode_of(p: Program) -> (Mode, Option<u64>) {
    match p {
        Program::ForceNew => (Mode::ForceNew, None),
        Program::Reuse => (Mode::ReuseIfExists, None),
        Program::ResumeStale => (Mode::ResumeIfIncomplete, Some(1)),
        Program::CacheWrite => (Mode::ReuseIfExists, None),
    }
}

/// Progress of one train in the search: nothing yet, decided (with the planned decision),
/// allocated, finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Stage {
    Pending,
    Decided(Planned),
    Allocated,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Planned {
    New(u64),
    Resume(u64),
}

/// WGL-style search: is there an order of DECIDE / ALLOCATE / FINISH steps, consistent with
/// real time (a command that responded before another was invoked comes wholly first) and
/// with each command's own step order, under which the model produces every observed
/// outcome? Memoised on (stages, model state).
pub fn linearizable(start: &Variants, ops: &[Observed]) -> bool {
    let trains_idx: Vec<usize> = (0..ops.len())
        .filter(|i| ops[*i].decision.is_some())
        .collect();
    let mut stages = vec![Stage::Done; ops.len()];
    for &i in &trains_idx {
        stages[i] = Stage::Pending;
    }
    let mut seen: HashSet<(Vec<Stage>, Variants)> = HashSet::new();
    search(start, &mut stages, ops, &trains_idx, &mut seen)
}

fn search(
    state: &Variants,
    stages: &mut Vec<Stage>,
    ops: &[Observed],
    trains_idx: &[usize],
    seen: &mut HashSet<(Vec<Stage>, Variants)>,
) -> bool {
    if trains_idx.iter().all(|i| stages[*i] == Stage::Done) {
        return true;
    }
    if !seen.insert((stages.clone(), state.clone())) {
        return false;
    }
    for &i in trains_idx {
        let observed = ops[i].decision.clone().expect("train has a decision");
        let stage = stages[i];
        let mut try_step =
            |next_stage: Stage, next_state: &Variants, stages: &mut Vec<Stage>| -> bool {
                stages[i] = next_stage;
                let ok = search(next_state, stages, ops, trains_idx, seen);
                stages[i] = stage;
                ok
            };
        match stage {
            Stage::Pending => {
                // Real time: whatever responded before i was invoked is already done.
                let blocked = trains_idx.iter().any(|&j| {
                    j != i && ops[j].responded < ops[i].invoked && stages[j] != Stage::Done
                });
                if blocked {
                    continue;
                }
                let (mode, explicit) = mode_of(ops[i].program);
                let decided = state.decide(mode, explicit);
                let next = match (decided, &observed) {
                    (Expected::New { variant: p }, Expected::New { variant: v }) if p <= *v => {
                        Stage::Decided(Planned::New(p))
                    }
                    (Expected::Resume { variant: p }, Expected::Resume { variant: v })
                        if p == *v =>
                    {
                        Stage::Decided(Planned::Resume(p))
                    }
                    // A resume decided on an idle variant whose lease is lost at allocation.
                    (Expected::Resume { variant: p }, Expected::Error(MErr::Busy)) => {
                        Stage::Decided(Planned::Resume(p))
                    }
                    (d, o) if d == *o => Stage::Done,
                    _ => continue,
                };
                if try_step(next, state, stages) {
                    return true;
                }
            }
            Stage::Decided(Planned::New(p)) => {
                let (v, next) = state.allocate_new(i, p);
                if Some(v) == observed_variant(&observed)
                    && try_step(Stage::Allocated, &next, stages)
                {
                    return true;
                }
            }
            Stage::Decided(Planned::Resume(v)) => {
                let found = match (state.take(i, v), &observed) {
                    (Some(next), Expected::Resume { .. }) => {
                        try_step(Stage::Allocated, &next, stages)
                    }
                    (None, Expected::Error(MErr::Busy)) => try_step(Stage::Done, state, stages),
                    _ => false,
                };
                if found {
                    return true;
                }
            }
            Stage::Allocated => {
                if let Some(next) = state.finish(i) {
                    if try_step(Stage::Done, &next, stages) {
                        return true;
                    }
                }
            }
            Stage::Done => {}
        }
    }
    false
}

fn observed_variant(e: &Expected) -> Option<u64> {
    match e {
        Expected::New { variant } | Expected::Resume { variant } => Some(*variant),
        _ => None,
    }
}
