//! Crash consistency on SimFs (docs/contract.md, "Decision and completion", "Caches", "Verification
//! suite"): a power loss at EVERY Fs operation of a command (losing unsynced data, tearing the last
//! write, keeping a random subset of unsynced renames), then recovery by the next command. After
//! the crash: no false "complete" (every complete variant passes the sha256 check), nothing that
//! returned Ok is lost, every view file that exists parses (views are never written in place);
//! after recovery the "Caches" (docs/contract.md) invariants hold and every complete variant has a
//! valid record. Every call is also checked against the lease law (`LeaseAudit`).
//!
//! Replay: a failure prints its seed (`TRAINCTL_SEED=… cargo test --release --test sim --
//! crash:: <property>`) and writes the minimised trace (property, history, crash point, crash seed
//! = the durability choice) to `target/trainctl-failures/crash-<property>.json`;
//! `TRAINCTL_REPLAY=<file> cargo test --release --test sim -- crash::replay` replays exactly that
//! crash. Committed traces `fixtures/regressions/crash-*.json` run first, before any random
//! case of either property.

use crate::support;

use proptest::prelude::*;
use proptest::test_runner::{TestError, TestRunner};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use support::harness::{Sandbox, TrainerScript};
use trainctl::completion::Depth;
use trainctl::config::schema::RunMode;
use trainctl::fs::sim::SimFs;
use trainctl::fs::Fs;

/// Crash states explored by this binary (printed by the summary test when asked).
static EXPLORED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// One prepared sandbox per `max_entries`: every crash state runs in a `sibling` of it (a
    /// fresh SimFs), so config loading and dataset digests happen once per binary, not per state.
    static TEMPLATES: std::cell::RefCell<std::collections::BTreeMap<(usize, Option<usize>), Sandbox>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// The simulated world of a case: the SimFs, and for the `object` profile the store holding
/// OUT (the project and the trainer's staging dir stay on the SimFs). A crash in a bucket
/// world is the process dying between two store requests: what the store answered stays.
#[derive(Clone)]
struct World {
    sim: Arc<SimFs>,
    objects: Option<Arc<trainctl::store::sim::SimObjects>>,
}

impl World {
    fn new(profile: support::SimProfile) -> World {
        World {
            sim: Arc::new(profile.sim()),
            objects: (profile == support::SimProfile::Object)
                .then(|| Arc::new(trainctl::store::sim::SimObjects::new())),
        }
    }

    /// What one process sees: the SimFs, or a bucket over it (a fresh one per process: its
    /// directories of its own die with it).
    fn fs(&self, out: &std::path::Path) -> Arc<dyn Fs> {
        match &self.objects {
            None => self.sim.clone(),
            Some(objects) => Arc::new(trainctl::store::bucket::BucketFs::new(
                self.sim.clone(),
                out.to_path_buf(),
                "out",
                objects.clone(),
                "crash-".into(),
            )),
        }
    }

    fn fork(&self) -> World {
        World {
            sim: Arc::new(self.sim.fork()),
            objects: self.objects.as_ref().map(|o| Arc::new(o.fork())),
        }
    }

    /// The process dies after `k` more mutating operations: store writes in a bucket world,
    /// Fs operations otherwise.
    fn die_after(&self, k: u64) {
        match &self.objects {
            Some(objects) => objects.die_after(k),
            None => self.sim.die_after(k),
        }
    }

    fn op_count(&self) -> u64 {
        match &self.objects {
            Some(objects) => objects.write_count(),
            None => self.sim.op_count(),
        }
    }

    /// The power loss (SimFs) or the death between requests (store), then a new process.
    fn crash(&self, seed: u64) -> trainctl::fs::sim::CrashReport {
        if let Some(objects) = &self.objects {
            objects.revive();
        }
        self.sim.crash(seed)
    }
}

fn sandbox(world: &World, max_entries: usize, max_files: Option<usize>) -> Sandbox {
    TEMPLATES.with(|t| {
        let mut templates = t.borrow_mut();
        let template = templates
            .entry((max_entries, max_files))
            .or_insert_with(|| {
                let mut extra = vec![format!(
                    "paths:cache_strategies.final_training.index.max_entries={max_entries}"
                )];
                extra.extend(max_files.map(|m| {
                    format!("paths:cache_strategies.final_training.timestamped.max_files={m}")
                }));
                let scratch = Arc::new(SimFs::new());
                Sandbox::audited(scratch.clone(), Some(&scratch), 2, &extra)
            });
        let out = template.jobs[0].layout.out.clone();
        template.sibling(world.fs(&out), &world.sim)
    })
}

/// The cache invariants (docs/contract.md, "Caches") right after a successful cache operation, plus
/// "view files parse".
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
    // Without rename flags or links a record is created at its final name (docs/contract.md,
    // "Storage profiles"): a crash may tear one that was being written; it reads as corrupt,
    // never as data, and records that returned are checked whole elsewhere. Views are always
    // replaced whole.
    let caps = sb.fs.caps(&cache.settings.dir);
    let records_may_tear = !caps.rename_noreplace && !caps.hard_link;
    for e in sb.fs.list(&cache.settings.dir).unwrap_or_default() {
        if e.is_dir || trainctl::fs::is_temp_name(&e.name) {
            continue;
        }
        let is_view = e.name == cache.settings.latest_name || e.name == cache.settings.index_name;
        if records_may_tear && !is_view {
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
/// Every identity's variant states at both depths, read once per look and shared by the
/// checks of that look.
struct States {
    sizes: Vec<std::collections::BTreeMap<u64, String>>,
    digests: Vec<std::collections::BTreeMap<u64, String>>,
}

fn states(sb: &Sandbox) -> States {
    let at = |depth| {
        (0..sb.jobs.len())
            .map(|i| sb.variant_states(i, depth))
            .collect()
    };
    States {
        sizes: at(Depth::Sizes),
        digests: at(Depth::Digests),
    }
}

fn check_no_false_complete(sb: &Sandbox, states: &States) -> Result<(), TestCaseError> {
    for i in 0..sb.jobs.len() {
        let (sizes, digests) = (&states.sizes[i], &states.digests[i]);
        prop_assert_eq!(
            sizes,
            digests,
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

/// The other direction of "every complete variant has its record": every valid
/// final_training record names a variant that is complete, after a crash at any point too.
/// A record is written only after the completion it describes is durable; a record that
/// survives a power loss its completion did not would hand out a variant that is not there.
fn check_records_name_complete_variants(
    sb: &Sandbox,
    states: &States,
) -> Result<(), TestCaseError> {
    let (valid, _) = sb
        .cache()
        .newest_valid(usize::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    // Subjects read `<model>/<spec8>-<exec8>/v<N>` (`Sandbox::subject`).
    let identity_heads: Vec<String> = (0..sb.jobs.len())
        .map(|i| {
            let subject = sb.subject(i, 0);
            subject[..subject.len() - "/v0".len()].to_string()
        })
        .collect();
    for found in &valid {
        let parsed = found
            .record
            .subject
            .rsplit_once("/v")
            .and_then(|(head, v)| Some((identity_heads.iter().position(|h| h == head)?, v)))
            .and_then(|(i, v)| Some((i, v.parse::<u64>().ok()?)));
        let Some((i, v)) = parsed else {
            continue;
        };
        prop_assert_eq!(
            states.digests[i].get(&v).map(String::as_str),
            Some("complete"),
            "record {} names v{} of identity {} ({}), which is not complete",
            &found.name,
            v,
            i,
            sb.jobs[i].identity.spec_fp
        );
    }
    Ok(())
}

/// No lease file was removed or rewritten and generations were published in order.
fn check_lease_law(sb: &Sandbox) -> Result<(), TestCaseError> {
    let violations = sb.lease_violations();
    prop_assert!(violations.is_empty(), "lease law broken: {:?}", violations);
    Ok(())
}

/// Which crash points a case tries: every one in the quick tier (short commands), a sample
/// when asked for fewer.
fn crash_points(total: u64, stride: u64) -> Vec<u64> {
    (0..=total).step_by(stride.max(1) as usize).collect()
}

/// Which property a trace belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Property {
    /// Power loss inside `train` of identity 0 (force_new) after `history`; recovery by
    /// resume_if_incomplete.
    Train,
    /// Power loss inside a burst of `writes` cache writes; recovery by `cache repair`.
    Cache,
}

/// One crash state, exactly: the trace a failure writes and `TRAINCTL_REPLAY` replays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CrashTrace {
    property: Property,
    /// Train: completed trains (identity, mode) before the crashing command.
    #[serde(default)]
    history: Vec<(usize, RunMode)>,
    /// Cache: number of writes in the crashing burst.
    #[serde(default)]
    writes: usize,
    max_entries: usize,
    /// `timestamped.max_files` (cache property only; traces from before: none).
    #[serde(default)]
    max_files: Option<usize>,
    /// The power goes after this many mutating Fs operations of the crashing command.
    crash_point: u64,
    /// The durability choice: seed of `SimFs::crash` (which unsynced operations survive,
    /// whether the last write tears).
    crash_seed: u64,
    /// The property's random seed input (the crash seed derives from it and the point).
    seed: u64,
    /// Regression traces only: also sweep every crash point of this case.
    #[serde(default)]
    every_point: bool,
    /// The simulated filesystem's storage profile (traces from before profiles: `posix`).
    #[serde(default)]
    profile: support::SimProfile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    violation: Option<String>,
}

impl CrashTrace {
    /// A case before its crash point is chosen: no history, no writes, no `max_files`.
    fn case(
        property: Property,
        seed: u64,
        max_entries: usize,
        profile: support::SimProfile,
    ) -> CrashTrace {
        CrashTrace {
            property,
            history: Vec::new(),
            writes: 0,
            max_entries,
            max_files: None,
            crash_point: 0,
            crash_seed: 0,
            seed,
            every_point: false,
            profile,
            violation: None,
        }
    }
}

/// The durability choice for point `k` of a case with `seed`.
fn crash_seed(property: Property, seed: u64, k: u64) -> u64 {
    match property {
        Property::Train => seed ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        Property::Cache => seed ^ k,
    }
}

fn count_state() {
    EXPLORED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The world right before the crashing `train` of a Train case: its history, run once per
/// case and forked (copy of the SimFs, clock and process table) for every crash point.
struct Prefix {
    world: World,
    sb: Sandbox,
    /// Each identity's variant states (sha256-checked) before the crashing command.
    complete_before: Vec<std::collections::BTreeMap<u64, String>>,
}

fn train_prefix(t: &CrashTrace) -> Result<Prefix, TestCaseError> {
    let world = World::new(t.profile);
    let sb = sandbox(&world, t.max_entries, t.max_files);
    for (identity, mode) in &t.history {
        let (r, _) = sb.train(*identity, *mode, None, TrainerScript::Complete);
        prop_assert!(r.is_ok(), "history run failed: {r:?}");
    }
    check_lease_law(&sb)?;
    let complete_before = (0..2)
        .map(|i| sb.variant_states(i, Depth::Digests))
        .collect();
    Ok(Prefix {
        world,
        sb,
        complete_before,
    })
}

/// A crash at one point of `train` (after the history of `prefix`), then recovery.
fn train_crash_state(t: &CrashTrace, prefix: &Prefix) -> Result<(), TestCaseError> {
    let k = t.crash_point;
    let world = prefix.world.fork();
    let out = prefix.sb.jobs[0].layout.out.clone();
    let sb = prefix.sb.fork_onto(world.fs(&out));
    let complete_before = &prefix.complete_before;
    world.die_after(k);
    let (result, _) = sb.train(0, RunMode::ForceNew, None, TrainerScript::Complete);
    let returned_ok = result.is_ok();
    let report = world.crash(t.crash_seed);
    // The next process (a bucket's: without the dead one's own directories).
    let sb = match &world.objects {
        Some(_) => sb.fork_onto(world.fs(&out)),
        None => sb,
    };
    count_state();
    if std::env::var_os("TRAINCTL_REPORT").is_some() {
        eprintln!(
            "crash at op {k}: unsynced ops {}, kept {}, torn {}",
            report.unsynced, report.kept, report.torn
        );
    }
    check_lease_law(&sb)?;
    let after_crash = states(&sb);
    check_no_false_complete(&sb, &after_crash)?;
    check_no_torn_cache_files(&sb)?;
    check_records_name_complete_variants(&sb, &after_crash)?;
    // Complete variants from before are never lost or changed.
    for (i, before) in complete_before.iter().enumerate() {
        let now = &after_crash.digests[i];
        for (v, state) in before.iter().filter(|(_, s)| *s == "complete") {
            prop_assert_eq!(
                now.get(v).map(String::as_str),
                Some(state.as_str()),
                "complete v{} of identity {} lost after a crash at op {}",
                v,
                i,
                k
            );
        }
    }
    // What returned Ok survives: the new variant is complete.
    if returned_ok {
        let completes = after_crash.digests[0]
            .values()
            .filter(|s| *s == "complete")
            .count();
        let before = complete_before[0]
            .values()
            .filter(|s| *s == "complete")
            .count();
        prop_assert_eq!(
            completes,
            before + 1,
            "a train that returned Ok lost its variant (crash at op {})",
            k
        );
    }
    // Recovery: the next command finishes the job and leaves the cache consistent.
    let (recovered, killed) = sb.train(
        0,
        RunMode::ResumeIfIncomplete,
        None,
        TrainerScript::Complete,
    );
    prop_assert!(
        !killed && recovered.is_ok(),
        "recovery failed after a crash at op {}: {:?}",
        k,
        recovered
    );
    check_lease_law(&sb)?;
    let after_recovery = states(&sb);
    check_no_false_complete(&sb, &after_recovery)?;
    check_cache(&sb)?;
    check_records_name_complete_variants(&sb, &after_recovery)?;
    // Every complete variant of identity 0 has a valid record (backfill).
    let cache = sb.cache();
    let (valid, _) = cache
        .newest_valid(usize::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (v, state) in &after_recovery.sizes[0] {
        if state == "complete" {
            let subject = sb.subject(0, *v);
            prop_assert!(
                valid.iter().any(|f| f.record.subject == subject),
                "v{} has no valid record",
                v
            );
        }
    }
    Ok(())
}

fn cache_record(sb: &Sandbox, i: usize) -> trainctl::cache::Record {
    trainctl::cache::Record {
        schema_version: 1,
        kind: "final_training".into(),
        created_at: format!("t{i}"),
        subject: sb.subject(0, i as u64 + 1),
        payload: serde_json::json!({"i": i}),
        metadata: serde_json::json!({"i": i}),
    }
}

/// A crash at one point of a burst of cache writes, then `cache repair`.
fn cache_crash_state(t: &CrashTrace) -> Result<(), TestCaseError> {
    let k = t.crash_point;
    let world = World::new(t.profile);
    let sb = sandbox(&world, t.max_entries, t.max_files);
    world.die_after(k);
    let mut returned = Vec::new();
    for i in 0..t.writes {
        match sb.cache().write(&cache_record(&sb, i), sb.clock.now_us()) {
            Ok((name, _)) => returned.push(name),
            Err(_) => break,
        }
    }
    world.crash(t.crash_seed);
    let sb = match &world.objects {
        Some(_) => sb.fork_onto(world.fs(&sb.jobs[0].layout.out.clone())),
        None => sb,
    };
    count_state();
    check_no_torn_cache_files(&sb)?;
    let names = sb.cache().record_names().expect("names");
    // Every record that returned Ok survives, except what retention pruned: under
    // `max_files` m, the newest m of them (the newest valid one always) survive.
    let kept = t.max_files.unwrap_or(usize::MAX).min(returned.len());
    for name in &returned[returned.len() - kept..] {
        prop_assert!(
            names.contains(name),
            "record {} returned Ok but was lost (crash at op {}, max_files {:?})",
            name,
            k,
            t.max_files
        );
    }
    sb.cache().repair().expect("repair");
    check_cache(&sb)?;
    check_lease_law(&sb)
}

/// Runs one crash state of either property (a Train case's history first).
fn crash_state(t: &CrashTrace) -> Result<(), TestCaseError> {
    match t.property {
        Property::Train => train_crash_state(t, &train_prefix(t)?),
        Property::Cache => cache_crash_state(t),
    }
}

/// Mutating operations of the uncrashed command of a case (a Train case: on a fork of its
/// prefix).
fn ops_in_command(t: &CrashTrace, prefix: Option<&Prefix>) -> u64 {
    match (t.property, prefix) {
        (Property::Train, Some(prefix)) => {
            let world = prefix.world.fork();
            let sb = prefix.sb.fork_onto(world.fs(&prefix.sb.jobs[0].layout.out));
            let before = world.op_count();
            let (result, killed) = sb.train(0, RunMode::ForceNew, None, TrainerScript::Complete);
            assert!(result.is_ok() && !killed, "{result:?}");
            world.op_count() - before
        }
        (Property::Train, None) => unreachable!("a Train case counts on its prefix"),
        (Property::Cache, _) => {
            let world = World::new(t.profile);
            let sb = sandbox(&world, t.max_entries, t.max_files);
            let before = world.op_count();
            for i in 0..t.writes {
                sb.cache()
                    .write(&cache_record(&sb, i), sb.clock.now_us())
                    .expect("write");
            }
            world.op_count() - before
        }
    }
}

/// Every crash point of a case (one past the last operation: the command completes, then the
/// power goes); the first failing state, with its violation.
fn sweep(case: &CrashTrace) -> Result<(), CrashTrace> {
    let prefix = match case.property {
        Property::Train => match train_prefix(case) {
            Ok(prefix) => Some(prefix),
            Err(e) => {
                return Err(CrashTrace {
                    violation: Some(e.to_string()),
                    ..case.clone()
                })
            }
        },
        Property::Cache => None,
    };
    let total = ops_in_command(case, prefix.as_ref());
    for k in crash_points(total + 1, 1) {
        let t = CrashTrace {
            crash_point: k,
            crash_seed: crash_seed(case.property, case.seed, k),
            every_point: false,
            violation: None,
            ..case.clone()
        };
        let state = match &prefix {
            Some(prefix) => train_crash_state(&t, prefix),
            None => crash_state(&t),
        };
        if let Err(e) = state {
            return Err(CrashTrace {
                violation: Some(e.to_string()),
                ..t
            });
        }
    }
    Ok(())
}

/// Writes a failing trace and returns the replay instructions.
fn write_failure(t: &CrashTrace) -> String {
    let dir = support::failure_dir();
    let _ = std::fs::create_dir_all(&dir);
    let name = match t.property {
        Property::Train => "crash-train.json",
        Property::Cache => "crash-cache.json",
    };
    let path = dir.join(name);
    let _ = std::fs::write(&path, serde_json::to_vec_pretty(t).unwrap_or_default());
    format!(
        "{}\nminimised trace: {}\nreplay exactly: TRAINCTL_REPLAY={} {}",
        serde_json::to_string(t).unwrap_or_default(),
        path.display(),
        path.display(),
        support::replay_command(module_path!(), "replay")
    )
}

/// Committed regression traces (`fixtures/regressions/crash-*.json`), once per process and
/// before any random case: each runs at its recorded point, and at every point when it says
/// `every_point`.
static REGRESSIONS: std::sync::Once = std::sync::Once::new();

fn run_regressions() {
    REGRESSIONS.call_once(|| {
        for path in support::regression_traces("crash-") {
            let t: CrashTrace = serde_json::from_slice(&std::fs::read(&path).expect("read trace"))
                .unwrap_or_else(|e| panic!("{} is not a crash trace: {e}", path.display()));
            if let Err(e) = crash_state(&t) {
                panic!(
                    "regression {} fails again at its recorded point: {e}\nreplay: TRAINCTL_REPLAY={} {}",
                    path.display(),
                    path.display(),
                    support::replay_command(module_path!(), "replay")
                );
            }
            if t.every_point {
                if let Err(failing) = sweep(&t) {
                    panic!(
                        "regression {} fails at another point:\n{}",
                        path.display(),
                        write_failure(&failing)
                    );
                }
            }
        }
    });
}

/// Runs a property: regressions first, then proptest cases (shrinking the case), then the
/// minimal case's first failing crash point is written as a trace. Reports the rate.
fn property(
    kind: &'static str,
    name: &str,
    quick: u32,
    strategy: impl Strategy<Value = CrashTrace>,
) {
    run_regressions();
    let began = std::time::Instant::now();
    let states_before = EXPLORED.load(std::sync::atomic::Ordering::Relaxed);
    let mut runner = TestRunner::new(support::seeded_config(
        support::cases(quick),
        module_path!(),
        name,
    ));
    let outcome = runner.run(&strategy, |case| match sweep(&case) {
        Ok(()) => Ok(()),
        Err(t) => Err(TestCaseError::fail(t.violation.unwrap_or_default())),
    });
    match outcome {
        Ok(()) => {
            let states = EXPLORED.load(std::sync::atomic::Ordering::Relaxed) - states_before;
            let secs = began.elapsed().as_secs_f64();
            eprintln!(
                "crash {name}: {states} crash states in {secs:.1} s = {:.1} states/s (each with recovery and checks)",
                states as f64 / secs.max(1e-9)
            );
            {
                // Every crash state is distinct: one (case, crash point, durability choice).
                support::stats::line(
                    kind,
                    name,
                    "crash states",
                    states,
                    secs,
                    Some(states),
                    &Default::default(),
                );
            }
        }
        Err(TestError::Fail(reason, minimal)) => {
            // The shrunk case fails at some point of its sweep; that point is the trace.
            let failing = sweep(&minimal).expect_err("the minimal case fails again");
            panic!(
                "{reason}\nshrunk to the case below, its first failing crash point:\n{}",
                write_failure(&failing)
            );
        }
        Err(e) => panic!("{e}"),
    }
}

/// Every storage profile, in turn (a case's profile is part of its trace).
fn profiles() -> impl Strategy<Value = support::SimProfile> {
    prop::sample::select(support::SimProfile::WORLDS.to_vec())
}

/// A power loss at every operation of `train` (after some history), then recovery with
/// resume_if_incomplete, on every storage profile.
#[test]
fn train_survives_a_power_loss_at_every_operation() {
    let history = prop::collection::vec(
        (
            0usize..2,
            prop_oneof![Just(RunMode::ForceNew), Just(RunMode::ResumeIfIncomplete)],
        ),
        0..3,
    );
    let strategy = (history, any::<u64>(), 1usize..4, profiles()).prop_map(
        |(history, seed, max_entries, profile)| CrashTrace {
            history,
            ..CrashTrace::case(Property::Train, seed, max_entries, profile)
        },
    );
    property(
        "crash_train",
        "train_survives_a_power_loss_at_every_operation",
        12,
        strategy,
    );
}

/// A power loss at every operation of a burst of cache writes, then `cache repair`.
#[test]
fn cache_survives_a_power_loss_at_every_operation() {
    let strategy = (
        1usize..4,
        any::<u64>(),
        1usize..4,
        profiles(),
        prop::option::of(1usize..3),
    )
        .prop_map(
            |(writes, seed, max_entries, profile, max_files)| CrashTrace {
                writes,
                max_files,
                ..CrashTrace::case(Property::Cache, seed, max_entries, profile)
            },
        );
    property(
        "crash_cache",
        "cache_survives_a_power_loss_at_every_operation",
        12,
        strategy,
    );
}

/// `TRAINCTL_REPLAY=<file>` replays that crash trace exactly (one crash state); without it,
/// the committed regressions.
#[test]
fn replay() {
    run_regressions();
    let Some(file) = std::env::var_os("TRAINCTL_REPLAY") else {
        return;
    };
    let path = std::path::PathBuf::from(file);
    if !path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("crash"))
    {
        return;
    }
    let t: CrashTrace = serde_json::from_slice(&std::fs::read(&path).expect("read trace"))
        .unwrap_or_else(|e| panic!("{} is not a crash trace: {e}", path.display()));
    if let Err(e) = crash_state(&t) {
        panic!("replayed {}: {e}", path.display());
    }
}
