//! Concurrent starts on the real filesystem, in-process threads released together
//! (docs/contract.md, "Allocation and leases", "Caches"): concurrent NEW starts get distinct
//! variants; of N resumers of one stale variant exactly one wins and the rest are `busy`;
//! concurrent cache writers lose no record. Each scenario is repeated to meet many interleavings;
//! the seeded scheduler and loom explore them systematically elsewhere.

use crate::support;

use std::sync::{Arc, Barrier};
use support::harness::{Sandbox, TrainerScript};
use trainctl::completion::Depth;
use trainctl::config::schema::RunMode;

fn rounds() -> usize {
    support::cases(8) as usize
}

fn os_sandbox() -> Sandbox {
    Sandbox::new(Arc::new(trainctl::fs::OsFs), None, 1, &[])
}

/// Runs `f(i)` on `n` threads released at the same moment.
fn together<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

#[test]
fn concurrent_new_starts_get_distinct_variants() {
    for round in 0..rounds() {
        let sb = os_sandbox();
        let n = 6;
        let results = together(n, |_| {
            sb.train(0, RunMode::ForceNew, None, TrainerScript::Complete)
        });
        let mut variants: Vec<u64> = results
            .iter()
            .map(|(r, _)| {
                r.as_ref()
                    .expect("every force_new start succeeds")
                    .decision
                    .variant()
            })
            .collect();
        variants.sort();
        variants.dedup();
        assert_eq!(
            variants.len(),
            n,
            "round {round}: two starts got the same variant"
        );
        let states = sb.variant_states(0, Depth::Digests);
        assert_eq!(states.len(), n, "round {round}: {states:?}");
        assert!(
            states.values().all(|s| s == "complete"),
            "round {round}: {states:?}"
        );
        // No lost cache update: every run's record is there and the index lists the newest.
        let (valid, _) = sb.cache().newest_valid(usize::MAX).expect("records");
        assert_eq!(valid.len(), n, "round {round}: lost cache records");
        assert!(
            sb.cache().check().expect("check").is_empty(),
            "round {round}: views unsettled"
        );
    }
}

#[test]
fn of_many_resumers_of_one_stale_variant_exactly_one_wins() {
    for round in 0..rounds() {
        let sb = os_sandbox();
        // A variant whose owner died mid-training: incomplete, lease held by a dead pid.
        let (r, killed) = sb.train(0, RunMode::ForceNew, None, TrainerScript::KillOrchestrator);
        assert!(killed && r.is_err(), "setup: the first run must die");
        let n = 5;
        let results = together(n, |_| {
            sb.train(
                0,
                RunMode::ResumeIfIncomplete,
                Some(1),
                TrainerScript::Complete,
            )
        });
        let decisions: Vec<String> = results
            .iter()
            .map(|(r, _)| match r {
                Ok(report) => format!("{:?}", report.decision),
                Err(e) => e.kind.to_string(),
            })
            .collect();
        // Exactly one resume of v1; the others are busy, or — having looked after the winner
        // completed v1 — start a NEW variant as the table says for a complete explicit N.
        let resumed = decisions
            .iter()
            .filter(|d| d.starts_with("Resume { variant: 1 }"))
            .count();
        let allowed = decisions.iter().all(|d| {
            d.starts_with("Resume { variant: 1 }") || d == "busy" || d.starts_with("New {")
        });
        assert_eq!(resumed, 1, "round {round}: {decisions:?}");
        assert!(allowed, "round {round}: {decisions:?}");
        let states = sb.variant_states(0, Depth::Digests);
        assert!(
            states.values().all(|s| s == "complete"),
            "round {round}: {states:?}"
        );
        let new = decisions.iter().filter(|d| d.starts_with("New {")).count();
        assert_eq!(
            states.len(),
            1 + new,
            "round {round}: {states:?} after {decisions:?}"
        );
    }
}

#[test]
fn concurrent_cache_writers_lose_no_record() {
    for round in 0..rounds() {
        let sb = os_sandbox();
        let n = 8;
        let names = together(n, |i| {
            let record = trainctl::cache::Record {
                schema_version: 1,
                kind: "final_training".into(),
                created_at: format!("writer {i}"),
                subject: sb.subject(0, i as u64 + 1),
                payload: serde_json::json!({"writer": i}),
                metadata: serde_json::json!({"writer": i}),
            };
            sb.cache()
                .write(&record, sb.clock.now_us())
                .expect("write")
                .0
        });
        let on_disk = sb.cache().record_names().expect("names");
        for name in &names {
            assert!(on_disk.contains(name), "round {round}: record {name} lost");
        }
        assert!(
            sb.cache().check().expect("check").is_empty(),
            "round {round}: views unsettled after all writers returned"
        );
    }
}
