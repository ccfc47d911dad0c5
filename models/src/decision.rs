//! Reference decision table of docs/contract.md, "Decision and completion" (with the `busy` rule of
//! "Allocation and leases") as one literal match over an observed variant table; it must never
//! import from the `trainctl` crate, do I/O, or know how allocation races are resolved (it plans on
//! a snapshot).

use std::collections::BTreeMap;

/// What the model needs to know about one existing variant dir of the identity being planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VariantView {
    /// COMPLETE per docs/contract.md, "Decision and completion".
    Complete,
    /// Exists but INCOMPLETE (any reason). `lease_live` = a live owner holds its lease
    /// (docs/contract.md, "Allocation and leases").
    Incomplete { lease_live: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    ReuseIfExists,
    ForceNew,
    ResumeIfIncomplete,
    ContinueFromPrevious,
}

/// The parent of continue_from_previous, as observed (only meaningful for that mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentView {
    NotFound,
    Incomplete,
    Complete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub mode: Mode,
    pub explicit_variant: Option<u64>,
    pub parent: ParentView,
    /// `run.wait_for_owner` > 0: reuse_if_exists waits for a live owner of the identity
    /// instead of training the same thing again (identical starts share one training).
    pub wait_for_owner: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    VariantIncomplete,
    ParentNotFound,
    ParentIncomplete,
    Busy,
    /// A setting the trainer or the tracking store would refuse: refused before the first
    /// write, so nothing changes.
    ConfigInvalid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
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
    /// reuse_if_exists found no complete variant while a live owner trains `variant`: wait for
    /// it (bounded), then decide again (its result is reused; at the bound, `busy`).
    Wait {
        variant: u64,
    },
    Error(ErrorKind),
}

/// RESUME of `variant`, unless a live owner holds its lease: then `busy` (docs/contract.md,
/// "Decision and completion", "Allocation and leases").
fn resume(variant: u64, lease_live: bool) -> Expected {
    if lease_live {
        Expected::Error(ErrorKind::Busy)
    } else {
        Expected::Resume { variant }
    }
}

/// `variants`: every existing variant number of the identity (absent numbers are simply not keys).
pub fn decide(variants: &BTreeMap<u64, VariantView>, request: &Request) -> Expected {
    assert!(!variants.contains_key(&0), "variant numbers start at 1");
    assert_ne!(request.explicit_variant, Some(0), "variants start at 1");

    // L: highest existing number in any state, 0 when none; max(C): highest complete one.
    let l = variants.keys().next_back().copied().unwrap_or(0);
    let max_c = variants
        .iter()
        .filter(|(_, view)| **view == VariantView::Complete)
        .map(|(number, _)| *number)
        .next_back();
    let v_l = variants.get(&l).copied();
    let v_n = request
        .explicit_variant
        .map(|n| (n, variants.get(&n).copied()));

    use Expected::{Continue, Error, New, Reuse};
    use VariantView::{Complete, Incomplete};
    // The newest variant a live owner is training.
    let live = variants
        .iter()
        .filter(|(_, view)| **view == Incomplete { lease_live: true })
        .map(|(number, _)| *number)
        .next_back();
    let expected = match (request.mode, v_n) {
        // reuse_if_exists, no N: the newest complete; else wait for a live owner; else new.
        (Mode::ReuseIfExists, None) => match (max_c, live) {
            (Some(c), _) => Reuse { variant: c },
            (None, Some(v)) if request.wait_for_owner => Expected::Wait { variant: v },
            (None, _) => New { variant: l + 1 },
        },
        // reuse_if_exists, N.
        (Mode::ReuseIfExists, Some((n, Some(Complete)))) => Reuse { variant: n },
        (Mode::ReuseIfExists, Some((n, None))) => New { variant: n },
        // Held by a live owner: busy (never "incomplete, resume it" for a running variant).
        (Mode::ReuseIfExists, Some((_, Some(Incomplete { lease_live: true })))) => {
            Error(ErrorKind::Busy)
        }
        (Mode::ReuseIfExists, Some((_, Some(Incomplete { lease_live: false })))) => {
            Error(ErrorKind::VariantIncomplete)
        }
        // force_new: N ignored (the warning is `expects_force_new_warning`).
        (Mode::ForceNew, _) => New { variant: l + 1 },
        // resume_if_incomplete, no N.
        (Mode::ResumeIfIncomplete, None) => match v_l {
            Some(Incomplete { lease_live }) => resume(l, lease_live),
            Some(Complete) | None => New { variant: l + 1 },
        },
        // resume_if_incomplete, N.
        (Mode::ResumeIfIncomplete, Some((n, Some(Incomplete { lease_live })))) => {
            resume(n, lease_live)
        }
        (Mode::ResumeIfIncomplete, Some((_, Some(Complete)))) => New { variant: l + 1 },
        (Mode::ResumeIfIncomplete, Some((n, None))) => New { variant: n },
        // continue_from_previous: N does not apply; the new variant is L+1 of this identity.
        (Mode::ContinueFromPrevious, _) => match request.parent {
            ParentView::Complete => Continue { variant: l + 1 },
            ParentView::NotFound => Error(ErrorKind::ParentNotFound),
            ParentView::Incomplete => Error(ErrorKind::ParentIncomplete),
        },
    };

    // A NEW/CONTINUE never names an existing dir; REUSE names a complete one.
    match expected {
        New { variant } | Continue { variant } => assert!(!variants.contains_key(&variant)),
        Reuse { variant } => assert_eq!(variants.get(&variant), Some(&Complete)),
        _ => {}
    }
    expected
}

/// Whether the contract requires a warning for this request (force_new with an explicit number).
pub fn expects_force_new_warning(request: &Request) -> bool {
    request.mode == Mode::ForceNew && request.explicit_variant.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind::*;
    use Expected::*;
    use Mode::*;
    use ParentView as P;
    use VariantView::Complete as C;

    const IDLE: VariantView = VariantView::Incomplete { lease_live: false };
    const LIVE: VariantView = VariantView::Incomplete { lease_live: true };

    fn req(mode: Mode, n: Option<u64>) -> Request {
        let (explicit_variant, parent) = (n, P::NotFound);
        Request {
            mode,
            explicit_variant,
            parent,
            wait_for_owner: true,
        }
    }

    fn cont(n: Option<u64>, parent: P) -> Request {
        let (mode, explicit_variant) = (ContinueFromPrevious, n);
        Request {
            mode,
            explicit_variant,
            parent,
            wait_for_owner: true,
        }
    }

    /// One table row: observed variants + request → expected decision.
    fn check(table: &[(u64, VariantView)], request: Request, want: Expected) {
        let variants: BTreeMap<u64, VariantView> = table.iter().copied().collect();
        let got = decide(&variants, &request);
        assert_eq!(got, want, "table={table:?} request={request:?}");
    }

    #[test]
    fn reuse_without_number_picks_max_complete() {
        let t = [(1, C), (3, C), (7, IDLE)];
        check(&t, req(ReuseIfExists, None), Reuse { variant: 3 });
    }

    #[test]
    fn reuse_without_number_and_no_complete_is_new_at_l_plus_1() {
        check(&[], req(ReuseIfExists, None), New { variant: 1 });
        let t = [(2, IDLE), (5, IDLE)];
        check(&t, req(ReuseIfExists, None), New { variant: 6 });
    }

    #[test]
    fn reuse_without_number_waits_for_a_live_owner_unless_told_not_to() {
        let t = [(2, LIVE), (5, IDLE), (3, LIVE)];
        check(&t, req(ReuseIfExists, None), Wait { variant: 3 });
        let no_wait = Request {
            wait_for_owner: false,
            ..req(ReuseIfExists, None)
        };
        check(&t, no_wait, New { variant: 6 });
        // A complete variant is reused, whoever trains meanwhile.
        check(
            &[(1, C), (2, LIVE)],
            req(ReuseIfExists, None),
            Reuse { variant: 1 },
        );
    }

    #[test]
    fn reuse_with_complete_number_reuses_it() {
        let t = [(2, C), (9, C)];
        check(&t, req(ReuseIfExists, Some(2)), Reuse { variant: 2 });
    }

    #[test]
    fn reuse_with_absent_number_is_new_exactly_n() {
        let t = [(1, C), (9, IDLE)];
        check(&t, req(ReuseIfExists, Some(4)), New { variant: 4 });
        check(&[(1, C)], req(ReuseIfExists, Some(40)), New { variant: 40 });
    }

    #[test]
    fn reuse_with_incomplete_number_is_variant_incomplete_or_busy_when_a_live_owner_holds_it() {
        let t = [(1, C), (2, IDLE)];
        check(&t, req(ReuseIfExists, Some(2)), Error(VariantIncomplete));
        let t = [(2, LIVE)];
        check(&t, req(ReuseIfExists, Some(2)), Error(Busy));
    }

    #[test]
    fn force_new_is_new_at_l_plus_1_and_ignores_number_with_warning() {
        check(&[], req(ForceNew, None), New { variant: 1 });
        let t = [(1, C), (4, LIVE)];
        check(&t, req(ForceNew, Some(1)), New { variant: 5 });
        assert!(expects_force_new_warning(&req(ForceNew, Some(3))));
        assert!(!expects_force_new_warning(&req(ForceNew, None)));
        assert!(!expects_force_new_warning(&req(ReuseIfExists, Some(3))));
    }

    #[test]
    fn resume_without_number_and_incomplete_l_resumes_l() {
        let t = [(1, C), (3, IDLE)];
        check(&t, req(ResumeIfIncomplete, None), Resume { variant: 3 });
        let t = [(1, C), (3, LIVE)];
        check(&t, req(ResumeIfIncomplete, None), Error(Busy));
    }

    #[test]
    fn resume_without_number_and_complete_l_or_nothing_is_new_at_l_plus_1() {
        let t = [(2, IDLE), (5, C)];
        check(&t, req(ResumeIfIncomplete, None), New { variant: 6 });
        check(&[], req(ResumeIfIncomplete, None), New { variant: 1 });
    }

    #[test]
    fn resume_with_number_resumes_incomplete_or_news_at_l_plus_1_or_exactly_n() {
        let t = [(2, IDLE), (3, LIVE), (5, C), (8, IDLE)];
        check(&t, req(ResumeIfIncomplete, Some(2)), Resume { variant: 2 });
        check(&t, req(ResumeIfIncomplete, Some(3)), Error(Busy));
        check(&t, req(ResumeIfIncomplete, Some(5)), New { variant: 9 });
        check(&t, req(ResumeIfIncomplete, Some(4)), New { variant: 4 });
        check(&t, req(ResumeIfIncomplete, Some(20)), New { variant: 20 });
    }

    #[test]
    fn continue_with_complete_parent_is_continue_at_l_plus_1() {
        check(&[], cont(None, P::Complete), Continue { variant: 1 });
        check(
            &[(3, C)],
            cont(Some(3), P::Complete),
            Continue { variant: 4 },
        );
    }

    #[test]
    fn continue_with_missing_or_incomplete_parent_is_parent_error() {
        check(&[(1, C)], cont(None, P::NotFound), Error(ParentNotFound));
        check(&[], cont(Some(1), P::Incomplete), Error(ParentIncomplete));
    }
}
