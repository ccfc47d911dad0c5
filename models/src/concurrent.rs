//! The concurrent view of a train command for linearizability checking (docs/contract.md, "Decision
//! and completion", "Allocation and leases"): a train is three atomic steps. DECIDE reads the
//! variants and applies the decision table (a resume of a held variant is `busy`); ALLOCATE happens
//! later: a NEW planned at p gets the first absent number ≥ p ("on collision try the next number"),
//! a RESUME takes the lease only if the variant is still idle (else `busy`); FINISH makes the held
//! variant complete. Must never import from `trainctl`.

use crate::decision::{decide, ErrorKind, Expected, Mode, ParentView, Request, VariantView};
use std::collections::BTreeMap;

/// A variant in the concurrent model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// Allocated or leased by command `op`, not finished.
    Held {
        op: usize,
    },
    /// Exists, incomplete, nobody holds it.
    Idle,
    Complete,
}

/// The state of one identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Variants(pub BTreeMap<u64, Slot>);

impl Variants {
    fn views(&self) -> BTreeMap<u64, VariantView> {
        self.0
            .iter()
            .map(|(v, s)| {
                let view = match s {
                    Slot::Complete => VariantView::Complete,
                    Slot::Held { .. } => VariantView::Incomplete { lease_live: true },
                    Slot::Idle => VariantView::Incomplete { lease_live: false },
                };
                (*v, view)
            })
            .collect()
    }

    /// DECIDE: the decision table over the variants as they are now.
    pub fn decide(&self, mode: Mode, explicit_variant: Option<u64>) -> Expected {
        let request = Request {
            mode,
            explicit_variant,
            parent: ParentView::NotFound,
            wait_for_owner: true,
        };
        decide(&self.views(), &request)
    }

    /// ALLOCATE of a NEW planned at `planned`: the first absent number from there on, now held
    /// by `op`.
    pub fn allocate_new(&self, op: usize, planned: u64) -> (u64, Variants) {
        let mut v = planned;
        // Bounded: the map is finite.
        while self.0.contains_key(&v) {
            v += 1;
        }
        let mut next = self.clone();
        next.0.insert(v, Slot::Held { op });
        (v, next)
    }

    /// ALLOCATE of a NEW of reuse_if_exists at exactly `planned` (identical starts share one
    /// training: a start that finds the number taken decides again, and waits for its
    /// owner); `None` when the number is taken.
    pub fn allocate_exact(&self, op: usize, planned: u64) -> Option<Variants> {
        if self.0.contains_key(&planned) {
            return None;
        }
        let mut next = self.clone();
        next.0.insert(planned, Slot::Held { op });
        Some(next)
    }

    /// ALLOCATE of a RESUME of `variant`: the lease is taken only if the variant is still idle;
    /// `None` means `busy`.
    pub fn take(&self, op: usize, variant: u64) -> Option<Variants> {
        if self.0.get(&variant) != Some(&Slot::Idle) {
            return None;
        }
        let mut next = self.clone();
        next.0.insert(variant, Slot::Held { op });
        Some(next)
    }

    /// FINISH for command `op` (a successful training): its held variant becomes complete.
    /// `None` when `op` holds nothing (then FINISH cannot happen here).
    pub fn finish(&self, op: usize) -> Option<Variants> {
        let (variant, _) = self.0.iter().find(|(_, s)| **s == Slot::Held { op })?;
        let mut next = self.clone();
        next.0.insert(*variant, Slot::Complete);
        Some(next)
    }
}

/// Whether a decision needs a FINISH step (it trained).
pub fn trains(expected: &Expected) -> bool {
    matches!(expected, Expected::New { .. } | Expected::Resume { .. })
}

/// Busy, as the table names it.
pub fn is_busy(expected: &Expected) -> bool {
    *expected == Expected::Error(ErrorKind::Busy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_of_a_held_variant_is_busy() {
        let mut s = Variants::default();
        s.0.insert(1, Slot::Idle);
        assert_eq!(
            s.decide(Mode::ResumeIfIncomplete, Some(1)),
            Expected::Resume { variant: 1 }
        );
        let s = s.take(0, 1).expect("idle variant can be taken");
        assert!(is_busy(&s.decide(Mode::ResumeIfIncomplete, Some(1))));
        assert!(
            s.take(1, 1).is_none(),
            "a second take of the same variant is busy"
        );
    }

    #[test]
    fn concurrent_new_starts_take_the_next_free_numbers() {
        let s = Variants::default();
        let planned = |s: &Variants| match s.decide(Mode::ForceNew, None) {
            Expected::New { variant } => variant,
            other => panic!("{other:?}"),
        };
        let (p0, p1) = (planned(&s), planned(&s));
        let (a, s) = s.allocate_new(0, p0);
        let (b, s) = s.allocate_new(1, p1);
        assert_eq!((a, b), (1, 2));
        let s = s.finish(1).expect("op 1 holds v2");
        assert_eq!(s.0[&2], Slot::Complete);
        assert_eq!(s.0[&1], Slot::Held { op: 0 });
    }

    #[test]
    fn finish_needs_a_held_variant() {
        assert!(Variants::default().finish(3).is_none());
    }
}
