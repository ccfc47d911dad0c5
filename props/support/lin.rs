//! Linearizability of train histories (docs/contract.md, "Allocation and leases"): a WGL-style
//! search for an order of each command's DECIDE / ALLOCATE / FINISH steps, consistent with real
//! time, under which the concurrent model of `models/` gives every observed outcome. Shared by the
//! scheduled (simulated) and the real-process suites.

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
    /// `cache repair final_training` (rebuilds the views, removes interrupted-write debris)
    /// beside the others: no decision; it must neither lose a record nor fail a writer.
    Repair,
    /// `convert --latest` beside the others: no decision in the concurrent model. Its weaker
    /// guarantee is checked apart (docs/contract.md, "Convert beside trainings"): what it converts
    /// is complete, `parent_not_found` only if no start had finished a variant when it began,
    /// and no staging file outlives it.
    Convert,
    /// `trainctl backup` to a Drive mirror beside the others: no decision. Checked apart
    /// (docs/contract.md, "Drive backup"): it succeeds or fails with `backup_failed` (a source
    /// that changed while it was copied), never publishes a copy that is not complete, and a
    /// backup once every process returned succeeds and leaves no leftover.
    Backup,
    /// `trainctl gc --apply --older-than 0s` beside trains, resumes and repairs: no decision,
    /// and no linearizability either (it removes abandoned variants the model keeps). Its
    /// weaker guarantee is checked apart (docs/contract.md, "Retention and gc"): it never
    /// fails, never removes a variant a start returned, never takes a live lease, removes lease
    /// files only under its own lease, and everything else the campaign checks still holds.
    Gc,
    /// `trainctl track sync` beside the others (the shared tracking store): no decision.
    /// Checked apart: with a healthy store no variant's sync fails, and every complete variant
    /// still has exactly one FINISHED run (`one_run_per_variant`).
    TrackSync,
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
        Program::CacheWrite
        | Program::Repair
        | Program::Convert
        | Program::Backup
        | Program::TrackSync
        | Program::Gc => (Mode::ReuseIfExists, None),
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
    linearizable_with(start, ops, &vec![true; ops.len()])
}

/// As `linearizable`, but a train whose `checked[i]` is false may have had ANY outcome the
/// model allows at its place (it still ran, in real time, and trained to the end if it got a
/// variant): its observed decision is not compared.
fn linearizable_with(start: &Variants, ops: &[Observed], checked: &[bool]) -> bool {
    let trains_idx: Vec<usize> = (0..ops.len())
        .filter(|i| ops[*i].decision.is_some())
        .collect();
    let mut stages = vec![Stage::Done; ops.len()];
    for &i in &trains_idx {
        stages[i] = Stage::Pending;
    }
    let mut seen: HashSet<(Vec<Stage>, Variants)> = HashSet::new();
    let search = Search {
        ops,
        checked,
        trains_idx: &trains_idx,
    };
    search.run(start, &mut stages, &mut seen)
}

/// The minimal core of a non-linearizable history, found by delta debugging.
#[derive(Clone, Debug, PartialEq)]
pub struct Core {
    /// Observed outcomes that no order explains together (1-minimal: un-checking any one of
    /// them makes the rest explainable).
    pub observed: Vec<Observed>,
    /// Commands that must stay in the history (as commands that ran at their time, with any
    /// outcome) for the contradiction to hold; usually empty.
    pub context: Vec<Observed>,
}

impl Core {
    /// One line per command, in invocation order, for failure messages and trace files.
    pub fn describe(&self) -> String {
        let mut rows: Vec<(u64, String)> = self
            .observed
            .iter()
            .map(|o| (o.invoked, format!("{o:?}")))
            .chain(
                self.context
                    .iter()
                    .map(|o| (o.invoked, format!("{:?} (outcome not checked)", o.program))),
            )
            .collect();
        rows.sort();
        rows.into_iter()
            .map(|(_, r)| format!("  {r}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The core as JSON (the models' types are not serde: outcomes are their Debug text).
    pub fn to_json(&self) -> serde_json::Value {
        let row = |o: &Observed, checked: bool| {
            serde_json::json!({
                "program": o.program,
                "outcome": if checked { o.decision.as_ref().map(|d| format!("{d:?}")) } else { None },
                "checked": checked,
                "invoked": o.invoked,
                "responded": o.responded,
            })
        };
        serde_json::Value::Array(
            self.observed
                .iter()
                .map(|o| row(o, true))
                .chain(self.context.iter().map(|o| row(o, false)))
                .collect(),
        )
    }
}

/// Shrinks a non-linearizable history to a minimal core (`None` when it is linearizable).
/// Two passes, each keeping the history well-formed (whole commands, real-time order kept):
/// 1. un-check observed outcomes one at a time while no order explains the rest; a command
///    whose outcome is un-checked still ran, so this never hides a real contradiction;
/// 2. drop un-checked commands entirely while the rest stays unexplainable.
///
/// Every step keeps the history non-linearizable, so the core is a witness on its own and with
/// the dropped commands put back with any outcome.
pub fn minimal_violation(start: &Variants, ops: &[Observed]) -> Option<Core> {
    let trains: Vec<Observed> = ops
        .iter()
        .filter(|o| o.decision.is_some())
        .cloned()
        .collect();
    if linearizable(start, &trains) {
        return None;
    }
    let mut checked = vec![true; trains.len()];
    // Pass 1, to a fixpoint (bounded by the number of commands).
    for _ in 0..=trains.len() {
        let mut changed = false;
        for i in 0..trains.len() {
            if !checked[i] {
                continue;
            }
            checked[i] = false;
            if linearizable_with(start, &trains, &checked) {
                checked[i] = true;
            } else {
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Pass 2: drop un-checked commands.
    let mut kept: Vec<(Observed, bool)> = trains.into_iter().zip(checked).collect();
    let mut i = 0;
    while i < kept.len() {
        if kept[i].1 {
            i += 1;
            continue;
        }
        let mut fewer = kept.clone();
        fewer.remove(i);
        let (ops, checks): (Vec<Observed>, Vec<bool>) = fewer.iter().cloned().unzip();
        if linearizable_with(start, &ops, &checks) {
            i += 1;
        } else {
            kept = fewer;
        }
    }
    let (observed, context): (Vec<_>, Vec<_>) = kept.into_iter().partition(|(_, c)| *c);
    Some(Core {
        observed: observed.into_iter().map(|(o, _)| o).collect(),
        context: context.into_iter().map(|(o, _)| o).collect(),
    })
}

/// The fixed inputs of one search.
struct Search<'a> {
    ops: &'a [Observed],
    checked: &'a [bool],
    trains_idx: &'a [usize],
}

impl Search<'_> {
    fn run(
        &self,
        state: &Variants,
        stages: &mut Vec<Stage>,
        seen: &mut HashSet<(Vec<Stage>, Variants)>,
    ) -> bool {
        let (ops, trains_idx) = (self.ops, self.trains_idx);
        if trains_idx.iter().all(|i| stages[*i] == Stage::Done) {
            return true;
        }
        if !seen.insert((stages.clone(), state.clone())) {
            return false;
        }
        for &i in trains_idx {
            let observed = ops[i].decision.clone().expect("train has a decision");
            let checked = self.checked[i];
            let stage = stages[i];
            let mut try_step =
                |next_stage: Stage, next_state: &Variants, stages: &mut Vec<Stage>| -> bool {
                    stages[i] = next_stage;
                    let ok = self.run(next_state, stages, seen);
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
                        // An un-checked command takes whatever path the model gives it.
                        (Expected::New { variant: p }, _) if !checked => {
                            Stage::Decided(Planned::New(p))
                        }
                        (Expected::Resume { variant: p }, _) if !checked => {
                            Stage::Decided(Planned::Resume(p))
                        }
                        (_, _) if !checked => Stage::Done,
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
                        // A reuse that waited for a live owner until its bound.
                        (Expected::Wait { .. }, Expected::Error(MErr::Busy)) => Stage::Done,
                        (d, o) if d == *o => Stage::Done,
                        _ => continue,
                    };
                    if try_step(next, state, stages) {
                        return true;
                    }
                }
                // reuse_if_exists allocates exactly the number it planned: a start that finds
                // it taken decides again (and waits for the winner), it never moves on.
                Stage::Decided(Planned::New(p)) if ops[i].program == Program::Reuse => {
                    let found = match state.allocate_exact(i, p) {
                        Some(next) => {
                            let fits = !checked || Some(p) == observed_variant(&observed);
                            fits && try_step(Stage::Allocated, &next, stages)
                        }
                        None => try_step(Stage::Pending, state, stages),
                    };
                    if found {
                        return true;
                    }
                }
                Stage::Decided(Planned::New(p)) => {
                    let (v, next) = state.allocate_new(i, p);
                    let fits = !checked || Some(v) == observed_variant(&observed);
                    if fits && try_step(Stage::Allocated, &next, stages) {
                        return true;
                    }
                }
                Stage::Decided(Planned::Resume(v)) => {
                    let found = match (state.take(i, v), &observed) {
                        (Some(next), _) if !checked => try_step(Stage::Allocated, &next, stages),
                        (None, _) if !checked => try_step(Stage::Done, state, stages),
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
}

fn observed_variant(e: &Expected) -> Option<u64> {
    match e {
        Expected::New { variant } | Expected::Resume { variant } => Some(*variant),
        _ => None,
    }
}
