//! The decision of docs/contract.md, "Decision and completion" as a pure function: (request,
//! observed variants) → Decision. No clock, no randomness, no I/O: the variants are seen through
//! `VariantOracle`, which the caller backs with the filesystem (lazily) or, in tests, with a table.

use crate::completion::Reason;
use crate::config::schema::RunMode;
use crate::error::{Error, ErrorKind, Result};
use serde::Serialize;
use std::collections::BTreeSet;

/// A variant as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VariantState {
    Complete,
    Incomplete { reason: Reason, lease_live: bool },
}

/// The existing variants of one identity. `state` is only asked for numbers in `numbers`.
pub trait VariantOracle {
    fn numbers(&self) -> &BTreeSet<u64>;
    fn state(&self, variant: u64) -> VariantState;
    /// Whether `variant` is complete; oracles may answer it without looking at leases.
    fn is_complete(&self, variant: u64) -> bool {
        self.state(variant) == VariantState::Complete
    }
}

/// The parent of continue_from_previous, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParentState {
    NotFound {
        looked_for: String,
    },
    Incomplete {
        dir: String,
        reason: Reason,
    },
    Complete {
        dir: String,
        trained_epochs: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub mode: RunMode,
    pub explicit_variant: Option<u64>,
    /// Required for continue_from_previous, ignored otherwise.
    pub parent: Option<ParentState>,
    /// The configured total epochs (continue trains until it).
    pub target_epochs: u64,
    /// How deep a variant is checked before reuse_if_exists reuses it (`run.verify_reuse`):
    /// the observation, not this pure decision, applies it.
    pub reuse_depth: crate::completion::Depth,
    /// `run.wait_for_owner` > 0: reuse_if_exists waits for a live owner of the identity.
    pub wait_for_owner: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    New {
        variant: u64,
    },
    Reuse {
        variant: u64,
    },
    Resume {
        variant: u64,
    },
    Continue {
        variant: u64,
    },
    /// reuse_if_exists with no complete variant while a live owner trains `variant`: `train`
    /// waits for it (bounded by `run.wait_for_owner`) and decides again; `plan` reports it.
    Wait {
        variant: u64,
    },
}

impl Decision {
    pub fn variant(self) -> u64 {
        match self {
            Decision::New { variant }
            | Decision::Reuse { variant }
            | Decision::Resume { variant }
            | Decision::Continue { variant }
            | Decision::Wait { variant } => variant,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Decision::New { .. } => "new",
            Decision::Reuse { .. } => "reuse",
            Decision::Resume { .. } => "resume",
            Decision::Continue { .. } => "continue",
            Decision::Wait { .. } => "wait",
        }
    }
}

/// Decides (docs/contract.md, "Run modes"). Errors are `variant_incomplete`,
/// `parent_not_found`, `parent_incomplete`, `nothing_to_continue` and `busy`.
pub fn decide(request: &Request, variants: &dyn VariantOracle) -> Result<Decision> {
    let numbers = variants.numbers();
    debug_assert!(!numbers.contains(&0), "variant 0 is never observed");
    let highest = numbers.last().copied().unwrap_or(0);
    let next = highest
        .checked_add(1)
        .ok_or_else(|| Error::internal("variant numbers exhausted"))?;
    let decision = match request.mode {
        RunMode::ForceNew => Decision::New { variant: next },
        RunMode::ContinueFromPrevious => {
            check_parent(request)?;
            Decision::Continue { variant: next }
        }
        RunMode::ReuseIfExists => match request.explicit_variant {
            Some(n) if !numbers.contains(&n) => Decision::New { variant: n },
            Some(n) => reuse_explicit(n, variants)?,
            None => reuse_newest(request, variants, next),
        },
        RunMode::ResumeIfIncomplete => {
            let target = request.explicit_variant.unwrap_or(highest);
            if target == 0 || !numbers.contains(&target) {
                // Nothing to resume: an explicit N is created exactly, otherwise L+1.
                Decision::New {
                    variant: request.explicit_variant.unwrap_or(next),
                }
            } else {
                resume(target, variants, next)?
            }
        }
    };
    debug_assert!(decision.variant() >= 1);
    Ok(decision)
}

fn busy(n: u64) -> Error {
    Error::new(
        ErrorKind::Busy,
        format!("variant {n} is being trained by a live owner (its lease is held)"),
    )
}

/// reuse_if_exists with `variant.number` N, which exists: reuse it if complete.
fn reuse_explicit(n: u64, variants: &dyn VariantOracle) -> Result<Decision> {
    match variants.state(n) {
        VariantState::Complete => Ok(Decision::Reuse { variant: n }),
        VariantState::Incomplete {
            lease_live: true, ..
        } => Err(busy(n)),
        VariantState::Incomplete { reason, .. } => Err(Error::new(
            ErrorKind::VariantIncomplete,
            format!(
                "variant {n} exists but is incomplete ({reason}); use run.mode resume_if_incomplete to finish it or force_new for a fresh variant"
            ),
        )),
    }
}

/// reuse_if_exists without a number: the highest complete variant (looked for from the top,
/// bounded by the numbers observed); with none, identical starts share one training, so
/// wait for the newest variant a live owner trains; else a new one.
fn reuse_newest(request: &Request, variants: &dyn VariantOracle, next: u64) -> Decision {
    let numbers = variants.numbers();
    if let Some(v) = numbers
        .iter()
        .rev()
        .copied()
        .find(|v| variants.is_complete(*v))
    {
        return Decision::Reuse { variant: v };
    }
    let live = || {
        numbers.iter().rev().copied().find(|v| {
            matches!(
                variants.state(*v),
                VariantState::Incomplete {
                    lease_live: true,
                    ..
                }
            )
        })
    };
    match live().filter(|_| request.wait_for_owner) {
        Some(v) => Decision::Wait { variant: v },
        None => Decision::New { variant: next },
    }
}

/// resume_if_incomplete on an existing `target`: resume it unless it is complete (then a new
/// variant) or a live owner holds it (busy).
fn resume(target: u64, variants: &dyn VariantOracle, next: u64) -> Result<Decision> {
    match variants.state(target) {
        VariantState::Complete => Ok(Decision::New { variant: next }),
        VariantState::Incomplete {
            lease_live: true, ..
        } => Err(busy(target)),
        VariantState::Incomplete {
            lease_live: false, ..
        } => Ok(Decision::Resume { variant: target }),
    }
}

fn check_parent(request: &Request) -> Result<()> {
    match &request.parent {
        None => Err(Error::new(
            ErrorKind::ParentNotFound,
            "continue_from_previous needs a parent final training",
        )),
        Some(ParentState::NotFound { looked_for }) => Err(Error::new(
            ErrorKind::ParentNotFound,
            format!("no parent final training found ({looked_for})"),
        )),
        Some(ParentState::Incomplete { dir, reason }) => Err(Error::new(
            ErrorKind::ParentIncomplete,
            format!("parent {dir} is incomplete ({reason})"),
        )),
        Some(ParentState::Complete { dir, trained_epochs }) => match trained_epochs {
            Some(done) if *done >= request.target_epochs => Err(Error::new(
                ErrorKind::NothingToContinue,
                format!(
                    "parent {dir} already trained {done} epochs and training.epochs is {}; raise training.epochs to continue",
                    request.target_epochs
                ),
            )),
            _ => Ok(()),
        },
    }
}
