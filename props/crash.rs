//! Crash consistency on SimFs (SPEC §2.1, §5, §11): a power loss at EVERY Fs operation of a
//! command (losing unsynced data, tearing the last write, keeping a random subset of unsynced
//! renames), then recovery by the next command. After the crash: no false "complete" (every
//! complete variant passes the sha256 check), nothing that returned Ok is lost, every view
//! file that exists parses (views are never written in place); after recovery the §5 cache
//! invariants hold and every complete variant has a valid record.

mod support;

use proptest::prelude::*;
use std::sync::Arc;
use support::harness::{Sandbox, TrainerScript};
use trainctl::completion::Depth;
use trainctl::config::schema::RunMode;
use trainctl::fs::sim::SimFs;
use trainctl::fs::Fs;

/// Crash states explored by this binary (printed by the summary test when asked).
static EXPLORED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn sandbox(sim: &Arc<SimFs>, max_entries: usize) -> Sandbox {
    let extra = [format!(
        "paths:cache_strategies.final_training.index.max_entries={max_entries}"
    )];
    Sandbox::new(sim.clone(), Some(sim), 2, &extra)
}

/// The §5 invariants right after a successful cache operation, plus "view files parse".
fn check_cache(sb: &Sandbox) -> Result<(), TestCaseError> {
    let cache = sb.cache();
    let max = cache.settings.max_entries;
    let (valid, _) = cache
        .newest_valid(usize::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let read = |name: &str| -> Option<serde_json::Value> {
        serde_json::from_slice(&sb.fs.read(&cache.settings.dir.join(name)).ok()?).ok()
    };
    let index = read(&cache.settings.index_name);
    let listed: Vec<String> = index
        .as_ref()
        .and_then(|d| d["entries"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["record"].as_str().map(str::to_string))
        .collect();
    let want: Vec<String> = valid.iter().take(max).map(|f| f.name.clone()).collect();
    prop_assert_eq!(listed, want, "index must list the newest valid records");
    let latest =
        read(&cache.settings.latest_name).and_then(|d| d["record"].as_str().map(str::to_string));
    prop_assert_eq!(
        latest,
        valid.first().map(|f| f.name.clone()),
        "latest must name the newest valid record"
    );
    Ok(())
}

/// Every cache file that exists after a crash is whole: records are published by no-replace
/// rename of a synced temp file, views by atomic replace.
fn check_no_torn_cache_files(sb: &Sandbox) -> Result<(), TestCaseError> {
    let cache = sb.cache();
    for e in sb.fs.list(&cache.settings.dir).unwrap_or_default() {
        if e.is_dir || trainctl::fs::is_temp_name(&e.name) {
            continue;
        }
        let bytes = sb
            .fs
            .read(&cache.settings.dir.join(&e.name))
            .unwrap_or_default();
        prop_assert!(
            serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
            "cache file {} is torn after a crash ({} bytes)",
            e.name,
            bytes.len()
        );
    }
    Ok(())
}

/// No false complete: whatever the predicate calls complete also passes the digest check,
/// for every variant of every identity.
fn check_no_false_complete(sb: &Sandbox) -> Result<(), TestCaseError> {
    for i in 0..sb.jobs.len() {
        let sizes = sb.variant_states(i, Depth::Sizes);
        let digests = sb.variant_states(i, Depth::Digests);
        prop_assert_eq!(
            &sizes,
            &digests,
            "a variant is complete by size but its bytes differ"
        );
        // `completed` is written last: whenever metadata says so, the variant IS complete
        // (a consumer reading only the status must never be fooled).
        let job = &sb.jobs[i];
        for v in sizes.keys() {
            let dir = job.layout.variant_dir(&job.identity, *v).expect("dir");
            if let Ok(meta) = trainctl::completion::read_metadata(&*sb.fs, &dir) {
                if meta.status == trainctl::completion::RunStatus::Completed {
                    prop_assert_eq!(
                        digests.get(v).map(String::as_str),
                        Some("complete"),
                        "v{} says completed but is not complete",
                        v
                    );
                }
            }
        }
    }
    Ok(())
}

/// Operations a full, uninterrupted `train` of identity 0 performs on a fresh SimFs.
fn ops_of_a_full_train(max_entries: usize) -> u64 {
    let sim = Arc::new(SimFs::new());
    let sb = sandbox(&sim, max_entries);
    let before = sim.op_count();
    let (result, killed) = sb.train(0, RunMode::ForceNew, None, TrainerScript::Complete);
    assert!(result.is_ok() && !killed, "{result:?}");
    sim.op_count() - before
}

/// Which crash points a case tries: every one in the quick tier (short commands), a sample
/// when asked for fewer.
fn crash_points(total: u64, stride: u64) -> Vec<u64> {
    (0..=total).step_by(stride.max(1) as usize).collect()
}

proptest! {
    #![proptest_config(support::seeded_config(support::cases(12), "crash", "survives_a_power_loss"))]

    /// A power loss at every operation of `train` (after some history), then recovery with
    /// resume_if_incomplete.
    #[test]
    fn train_survives_a_power_loss_at_every_operation(
        history in prop::collection::vec((0usize..2, prop_oneof![Just(RunMode::ForceNew), Just(RunMode::ResumeIfIncomplete)]), 0..3),
        seed in any::<u64>(),
        max_entries in 1usize..4,
    ) {
        let total = ops_of_a_full_train(max_entries);
        for k in crash_points(total + 1, 1) {
            let sim = Arc::new(SimFs::new());
            let sb = sandbox(&sim, max_entries);
            for (identity, mode) in &history {
                let (r, _) = sb.train(*identity, *mode, None, TrainerScript::Complete);
                prop_assert!(r.is_ok(), "history run failed: {r:?}");
            }
            let complete_before: Vec<_> = (0..2).map(|i| sb.variant_states(i, Depth::Digests)).collect();
            let start = sim.op_count();
            sim.die_after(k);
            let (result, _) = sb.train(0, RunMode::ForceNew, None, TrainerScript::Complete);
            let returned_ok = result.is_ok();
            let ran = sim.op_count() - start;
            let report = sim.crash(seed ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let explored = EXPLORED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if std::env::var_os("TRAINCTL_REPORT").is_some() {
                eprintln!("crash states explored so far: {explored} (unsynced ops {}, kept {}, torn {})", report.unsynced, report.kept, report.torn);
            }
            let _ = ran;
            check_no_false_complete(&sb)?;
            check_no_torn_cache_files(&sb)?;
            // Complete variants from before are never lost or changed.
            for (i, before) in complete_before.iter().enumerate() {
                let now = sb.variant_states(i, Depth::Digests);
                for (v, state) in before.iter().filter(|(_, s)| *s == "complete") {
                    prop_assert_eq!(now.get(v).map(String::as_str), Some(state.as_str()),
                        "complete v{} of identity {} lost after a crash at op {}", v, i, k);
                }
            }
            // What returned Ok survives: the new variant is complete.
            if returned_ok {
                let completes = sb.variant_states(0, Depth::Digests).values().filter(|s| *s == "complete").count();
                let before = complete_before[0].values().filter(|s| *s == "complete").count();
                prop_assert_eq!(completes, before + 1, "a train that returned Ok lost its variant (crash at op {})", k);
            }
            // Recovery: the next command finishes the job and leaves the cache consistent.
            let (recovered, killed) = sb.train(0, RunMode::ResumeIfIncomplete, None, TrainerScript::Complete);
            prop_assert!(!killed && recovered.is_ok(), "recovery failed after a crash at op {}: {:?}", k, recovered);
            check_no_false_complete(&sb)?;
            check_cache(&sb)?;
            // Every complete variant of identity 0 has a valid record (backfill).
            let cache = sb.cache();
            let (valid, _) = cache.newest_valid(usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (v, state) in sb.variant_states(0, Depth::Sizes) {
                if state == "complete" {
                    let subject = sb.subject(0, v);
                    prop_assert!(valid.iter().any(|f| f.record.subject == subject), "v{} has no valid record", v);
                }
            }
        }
    }

    /// A power loss at every operation of a burst of cache writes, then `cache repair`.
    #[test]
    fn cache_survives_a_power_loss_at_every_operation(
        writes in 1usize..4,
        seed in any::<u64>(),
        max_entries in 1usize..4,
    ) {
        let record = |sb: &Sandbox, i: usize| trainctl::cache::Record {
            schema_version: 1,
            kind: "final_training".into(),
            created_at: format!("t{i}"),
            subject: sb.subject(0, i as u64 + 1),
            payload: serde_json::json!({"i": i}),
            metadata: serde_json::json!({"i": i}),
        };
        let total = {
            let sim = Arc::new(SimFs::new());
            let sb = sandbox(&sim, max_entries);
            let start = sim.op_count();
            for i in 0..writes {
                sb.cache().write(&record(&sb, i), sb.clock.now_us()).expect("write");
            }
            sim.op_count() - start
        };
        for k in crash_points(total + 1, 1) {
            let sim = Arc::new(SimFs::new());
            let sb = sandbox(&sim, max_entries);
            sim.die_after(k);
            let mut returned = Vec::new();
            for i in 0..writes {
                match sb.cache().write(&record(&sb, i), sb.clock.now_us()) {
                    Ok((name, _)) => returned.push(name),
                    Err(_) => break,
                }
            }
            sim.crash(seed ^ k);
            EXPLORED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            check_no_torn_cache_files(&sb)?;
            let names = sb.cache().record_names().expect("names");
            for name in &returned {
                prop_assert!(names.contains(name), "record {} returned Ok but was lost (crash at op {})", name, k);
            }
            sb.cache().repair().expect("repair");
            check_cache(&sb)?;
        }
    }
}

/// Prints how many crash states the suite explored (`cargo test --release --test crash --
/// --nocapture crash_states_explored`); it runs after the properties in the same binary only
/// when selected, so it reports 0 alone.
#[test]
#[ignore = "reporting helper: run with --ignored --nocapture after the properties"]
fn crash_states_explored() {
    eprintln!(
        "crash states explored: {}",
        EXPLORED.load(std::sync::atomic::Ordering::Relaxed)
    );
}
