//! Concurrent starts under the seeded scheduler (docs/contract.md, "Allocation and leases",
//! "Verification suite"): 2–8 logical processes run `train` (force_new, reuse, or a race to resume
//! one stale variant), cache writes and `cache repair` over one SimFs, interleaved at every Fs
//! operation, uniformly or PCT-style. The recorded history is checked for linearizability against
//! the concurrent model in `models/` (WGL-style search with memoisation), and the end state against
//! the invariants: distinct variants, every training complete, no lost cache record, settled views,
//! run names reserved both ways, one FINISHED tracked run per complete variant (all processes share
//! one recording store; in a quarter of the cases it fails from or at its k-th call, and
//! everything else must still hold). `a_long_run_watched_from_another_host_keeps_its_owner`
//! adds simulated time: an owner trains for several lease timeouts while another host watches.
//!
//! Replay: every failure prints its seed and a one-line command, and writes the trace (programs,
//! start times, schedule) to `target/trainctl-failures/`; `TRAINCTL_REPLAY=<file>` replays it
//! exactly, `TRAINCTL_SEED=<n>` reruns one seed, `TRAINCTL_SEED_RANGE=a..b` and
//! `TRAINCTL_TIME_BUDGET=<secs>` shape a campaign. Traces in `fixtures/regressions/sched-*.json`
//! always run first.

use crate::support;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use support::harness::{LeaseAudit, Sandbox, TrainerScript};
use support::lin::{linearizable, minimal_violation, Observed, Program};
use support::sched::{Policy, SchedFs, Scheduler};
use trainctl::completion::Depth;
use trainctl::config::schema::RunMode;
use trainctl::fs::sim::SimFs;
use trainctl::track::recording::{Fault, RecordingTracker};
use trainctl_models::concurrent::Variants;
use trainctl_models::decision::{ErrorKind as MErr, Expected};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Case {
    seed: u64,
    policy: Policy,
    programs: Vec<Program>,
    start_at: Vec<u64>,
    /// A recorded schedule to replay (empty = follow the policy).
    schedule: Vec<usize>,
    /// The simulated filesystem's storage profile (a hash of the seed; traces from before
    /// profiles: `posix`).
    #[serde(default)]
    profile: support::SimProfile,
    /// A long run watched from another host: process 0 trains v1 (force_new) for this many
    /// steps of half a lease timeout each, beating between steps, on the owner's host; every
    /// other process runs on a second host, where the owner's liveness is its heartbeat's age
    /// (no stale v1 is set up). `None`: the stale-v1 campaign, one host.
    #[serde(default)]
    long_run: Option<u32>,
    /// The shared tracking store fails from its k-th call (`sticky`) or at that call only:
    /// decisions, variants and caches must be exactly as with a healthy store; only the
    /// one-run-per-variant check is off. `None`: a healthy store.
    #[serde(default)]
    tracker_fault: Option<(u64, bool)>,
}

/// The owner's and the watchers' hosts of a long-run case.
const OWNER_HOST: &str = "test-host";
const WATCHER_HOST: &str = "watcher-host";

thread_local! {
    /// The prepared project every case runs in a `sibling` of (fresh SimFs, processes, clock):
    /// config loading and the dataset digest happen once per test thread, not per schedule.
    static TEMPLATE: Sandbox = {
        let scratch = Arc::new(SimFs::new());
        // A reuse that meets a live owner waits for it: 200 ms of the simulated clock (which
        // advances 1 ms per look), so that a starved owner ends the wait in bounded steps.
        let mut sandbox = Sandbox::new(
            scratch.clone(),
            Some(&scratch),
            1,
            &["run.wait_for_owner=200ms".to_string()],
        );
        // Run names auto-increment from one base: every new variant races the others for
        // the next free version in OUT's run-name registry (docs/contract.md, "Tracking of final
        // training").
        for job in Arc::make_mut(&mut sandbox.jobs) {
            // Tracked: every start that trains opens (or reopens) its variant's run in one
            // recording store shared by all processes.
            job.config.mlflow.tracking.training.enabled = Some(true);
            job.config.final_training.mlflow.run_name = Some("final".into());
            let a = &mut job.config.mlflow.naming.run_name.auto_increment;
            a.enabled = Some(true);
            a.processes.final_training = Some(true);
        }
        sandbox
    };
}

/// Histories checked for linearizability by this binary, and the time the checks took.
static LIN_HISTORIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static LIN_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The next value of the project's one PRNG over a bare u64 state.
fn splitmix(state: &mut u64) -> u64 {
    let mut rng = trainctl::rng::SplitMix64::new(*state);
    let value = rng.next_u64();
    *state = rng.state;
    value
}

/// The case a seed stands for.
fn case_of(seed: u64) -> Case {
    let mut rng = seed;
    let n = 2 + (splitmix(&mut rng) % 7) as usize;
    let resume_race = splitmix(&mut rng) % 3 == 0;
    let programs: Vec<Program> = (0..n)
        .map(|_| {
            if resume_race {
                return Program::ResumeStale;
            }
            match splitmix(&mut rng) % 10 {
                0..=2 => Program::ForceNew,
                3 => Program::Reuse,
                4 => Program::ResumeStale,
                5 => Program::CacheWrite,
                6 => Program::Convert,
                7 => Program::Backup,
                8 => Program::TrackSync,
                _ => Program::Repair,
            }
        })
        .collect();
    // A convert starts later (up to ~2 trainings in): most then find a complete variant.
    let start_at = programs
        .iter()
        .map(|p| match p {
            Program::Convert | Program::Backup | Program::TrackSync => {
                (splitmix(&mut rng) % 60) * 6
            }
            _ => splitmix(&mut rng) % 60,
        })
        .collect();
    let policy = if splitmix(&mut rng) % 2 == 0 {
        Policy::Uniform
    } else {
        Policy::Pct {
            depth: 1 + (splitmix(&mut rng) % 3) as u32,
        }
    };
    // A quarter of the cases track into a failing store (a train makes ~10 calls).
    let tracker_fault = (splitmix(&mut rng) % 4 == 0)
        .then(|| (1 + splitmix(&mut rng) % 40, splitmix(&mut rng) % 2 == 0));
    Case {
        seed,
        policy,
        programs,
        start_at,
        schedule: Vec::new(),
        profile: support::SimProfile::of_seed(seed),
        long_run: None,
        tracker_fault,
    }
}

/// The case a seed stands for in the long-run campaign: `case_of`'s processes, of which the
/// first is the owner (force_new) of a 3–7-step run (1,500–3,500 simulated seconds against a 600 s
/// lease timeout) and the others watch it from another host, starting at any point of it.
fn long_run_case_of(seed: u64) -> Case {
    let mut case = case_of(seed ^ 0x10e6_0000_0000_0000);
    let mut rng = seed;
    case.seed = seed;
    case.programs[0] = Program::ForceNew;
    case.start_at[0] = 0;
    // Mostly resumers of v1 (what a stale-looking heartbeat would hand the run to), started
    // while the owner trains (its trainer starts after ~100 scheduled operations).
    for i in 1..case.programs.len() {
        case.programs[i] = match splitmix(&mut rng) % 8 {
            0..=3 => Program::ResumeStale,
            4 | 5 => Program::Reuse,
            6 => Program::ForceNew,
            _ => Program::Repair,
        };
        case.start_at[i] = splitmix(&mut rng) % 240;
    }
    case.long_run = Some(3 + (splitmix(&mut rng) % 5) as u32);
    case
}

fn expected_of(
    result: &trainctl::error::Result<trainctl::train::Report>,
) -> Result<Expected, String> {
    use trainctl::plan::Decision as D;
    match result {
        Ok(r) => Ok(match r.decision {
            D::New { variant } => Expected::New { variant },
            D::Reuse { variant } => Expected::Reuse { variant },
            D::Resume { variant } => Expected::Resume { variant },
            D::Continue { variant } => Expected::Continue { variant },
            D::Wait { variant } => Expected::Wait { variant },
        }),
        Err(e) if e.kind == trainctl::error::ErrorKind::Busy => Ok(Expected::Error(MErr::Busy)),
        Err(e) => Err(format!("train failed: {e}")),
    }
}

/// One logical process: its decision (trains), or nothing (cache writers).
type Process<'a> = Box<dyn FnOnce() -> Result<Option<Expected>, String> + Send + 'a>;

/// Runs one case; returns the schedule it took and the violation, if any.
fn run(case: &Case) -> (Vec<usize>, Result<(), String>) {
    let mut schedule = Vec::new();
    let verdict = run_into(case, &mut schedule);
    (schedule, verdict)
}

fn run_into(case: &Case, schedule_out: &mut Vec<usize>) -> Result<(), String> {
    let sim = Arc::new(case.profile.sim());
    let sched = Scheduler::new(
        case.programs.len(),
        case.seed,
        case.policy,
        case.start_at.clone(),
        case.schedule.clone(),
    );
    // The lease-law audit sits under the scheduler: its look-ups share the checked call's step.
    let out = TEMPLATE.with(|t| t.jobs[0].layout.out.clone());
    let world = case.profile.world(sim.clone(), &out, case.seed);
    let audit = Arc::new(LeaseAudit::new(world.clone()));
    let fs = Arc::new(SchedFs {
        inner: audit.clone(),
        sched: sched.clone(),
    });
    let mut sb = TEMPLATE.with(|t| t.sibling(fs, &sim));
    // The store reads artifacts from the simulated files directly (not through the
    // scheduler: a tracker call is one step, and holds the store's lock); a killed process's
    // calls fail, as a dead process's would.
    let switch = sb.fs.clone();
    let store = match case.tracker_fault {
        Some((at_call, sticky)) => RecordingTracker::with_fault(Fault { at_call, sticky }),
        None => RecordingTracker::new(),
    };
    sb.tracker = Some(Arc::new(
        store
            .reading_from(world.clone())
            .alive_while(Arc::new(move || !switch.is_dead())),
    ));
    if case.long_run.is_none() {
        // Setup (unscheduled): v1 left stale by an orchestrator that died mid-training.
        let (r, killed) = sb.train(0, RunMode::ForceNew, None, TrainerScript::KillOrchestrator);
        if !(killed && r.is_err()) {
            return Err("setup: the first run must die".into());
        }
    }
    let lease_timeout_ms = sb.jobs[0].config.lease_timeout_s() * 1000;
    // Each convert's process and outcome: the parent variant it converted (or reused).
    let converts: ConvertOutcomes = Default::default();
    let converts = &converts;
    // Each backup's process and outcome.
    let backups: BackupOutcomes = Default::default();
    let backups = &backups;
    // What every gc removed.
    let gc_removed: std::sync::Mutex<Vec<trainctl::gc::Item>> = Default::default();
    let gc_removed = &gc_removed;
    let with_gc = case.programs.contains(&Program::Gc);
    let programs: Vec<Process<'_>> = case
        .programs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let sb = &sb;
            let p = *p;
            Box::new(move || -> Result<Option<Expected>, String> {
                match p {
                    Program::CacheWrite => {
                        let record = trainctl::cache::Record {
                            schema_version: 1,
                            kind: "final_training".into(),
                            created_at: format!("writer {i}"),
                            subject: format!("external/writer-{i}"),
                            payload: serde_json::json!({"writer": i}),
                            metadata: serde_json::Value::Null,
                        };
                        sb.cache()
                            .write(&record, sb.clock.now_us())
                            .map_err(|e| e.to_string())?;
                        Ok(None)
                    }
                    Program::Repair => {
                        sb.cache().repair().map_err(|e| e.to_string())?;
                        Ok(None)
                    }
                    Program::Gc => {
                        let report = sb.gc().map_err(|e| format!("gc failed: {e}"))?;
                        if let Some(i) = report.items.iter().find(|i| i.error.is_some()) {
                            return Err(format!("gc could not remove {i:?}"));
                        }
                        gc_removed
                            .lock()
                            .expect("gc")
                            .extend(report.items.into_iter().filter(|i| i.removed));
                        Ok(None)
                    }
                    Program::TrackSync => {
                        let entries = sb.track_sync().expect("the sched world is tracked");
                        let failed: Vec<String> = entries
                            .iter()
                            .filter(|e| e.action == trainctl::track::sync::Action::Failed)
                            .map(|e| {
                                format!("v{}: {}", e.variant, e.error.clone().unwrap_or_default())
                            })
                            .collect();
                        if !failed.is_empty() && case.tracker_fault.is_none() {
                            return Err(format!(
                                "track sync failed with a healthy store: {failed:?}"
                            ));
                        }
                        Ok(None)
                    }
                    Program::Backup => {
                        let outcome = sb.backup().map(|_| ()).map_err(|e| (e.kind, e.to_string()));
                        backups.lock().expect("backups").push((i, outcome));
                        Ok(None)
                    }
                    Program::Convert => {
                        let outcome = sb
                            .convert(&trainctl::convert::From::Latest)
                            .map(|r| r.manifest["parent"]["variant"].as_u64())
                            .map_err(|e| (e.kind, e.to_string()));
                        converts.lock().expect("converts").push((i, outcome));
                        Ok(None)
                    }
                    _ => {
                        let (mode, explicit) = match p {
                            Program::ForceNew => (RunMode::ForceNew, None),
                            Program::Reuse => (RunMode::ReuseIfExists, None),
                            _ => (RunMode::ResumeIfIncomplete, Some(1)),
                        };
                        let job = sb.jobs[0].with_run(mode, explicit);
                        let (result, _) = match case.long_run {
                            Some(steps) if i == 0 => {
                                let script = TrainerScript::Long {
                                    steps,
                                    step_ms: lease_timeout_ms / 2,
                                };
                                sb.train_job_on(&job, script, OWNER_HOST)
                            }
                            Some(_) => sb.train_job_on(&job, TrainerScript::Complete, WATCHER_HOST),
                            None => sb.train_job(&job, TrainerScript::Complete),
                        };
                        expected_of(&result).map(Some)
                    }
                }
            }) as Process<'_>
        })
        .collect();
    let results = sched.run(programs);
    let (schedule, times) = sched.history();
    *schedule_out = schedule;
    let mut observed = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        let decision = result.map_err(|e| format!("process {i} ({:?}): {e}", case.programs[i]))?;
        observed.push(Observed {
            program: case.programs[i],
            decision,
            invoked: times[i].0,
            responded: times[i].1,
        });
    }
    // The long run's owner keeps its variant to the end: a watcher that took it over (its
    // heartbeat looked stale from the other host) made the owner fail, `lease lost`.
    // (A failure, `lease lost`, is already an error above; a watcher's force_new may take
    // v1 first, so the owner's variant is any new one.)
    if case.long_run.is_some() && !matches!(observed[0].decision, Some(Expected::New { .. })) {
        return Err(format!(
            "the long run's owner did not train a new variant: {:?}",
            observed[0].decision
        ));
    }
    // Linearizability against the concurrent model, starting from the setup's stale v1 (or
    // from nothing, in a long-run case).
    let mut start = Variants::default();
    if case.long_run.is_none() {
        start.0.insert(1, trainctl_models::concurrent::Slot::Idle);
    }
    let checking = std::time::Instant::now();
    // gc removes abandoned variants the concurrent model keeps: its cases check the weaker
    // guarantee below instead (docs/contract.md, "Retention and gc").
    let violation = if with_gc {
        None
    } else {
        minimal_violation(&start, &observed)
    };
    LIN_NANOS.fetch_add(
        checking.elapsed().as_nanos() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    LIN_HISTORIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(core) = violation {
        let dir = support::failure_dir();
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("sched-{}-history.json", case.seed));
        let doc = serde_json::json!({
            "seed": case.seed,
            "minimal_history": core.to_json(),
            "full_history": format!("{observed:?}"),
        });
        let _ = std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default());
        return Err(format!(
            "history is not linearizable; minimal history ({} of {} commands, written to {}):\n{}\nfull history: {observed:?}",
            core.observed.len() + core.context.len(),
            observed.len(),
            path.display(),
            core.describe()
        ));
    }
    // Invariant: no two starts receive the same variant.
    let mut got: Vec<u64> = observed
        .iter()
        .filter_map(|o| match o.decision {
            Some(Expected::New { variant }) | Some(Expected::Resume { variant }) => Some(variant),
            _ => None,
        })
        .collect();
    let before = got.len();
    got.sort();
    got.dedup();
    if got.len() != before {
        return Err(format!(
            "two starts received the same variant: {observed:?}"
        ));
    }
    // Invariant: at most one owner per variant at any instant (no two trainers in one dir).
    let overlaps = sb.occupancy.overlaps();
    if !overlaps.is_empty() {
        return Err(format!(
            "two owners of one variant at once: {overlaps:?}; outcomes {observed:?}"
        ));
    }
    // The lease law: no lease file removed or rewritten, generations published in order.
    let violations = audit.violations();
    if !violations.is_empty() {
        return Err(format!("lease law broken: {violations:?}"));
    }
    // End state: every variant a start trained is complete; the cache lost nothing.
    let states = sb.variant_states(0, Depth::Digests);
    for v in &got {
        if states.get(v).map(String::as_str) != Some("complete") {
            return Err(format!(
                "v{v} is not complete after its start returned: {states:?}"
            ));
        }
    }
    if with_gc {
        // gc removed only what was abandoned: never a variant a start returned.
        let returned: Vec<u64> = observed
            .iter()
            .filter_map(|o| match o.decision {
                Some(Expected::New { variant })
                | Some(Expected::Resume { variant })
                | Some(Expected::Reuse { variant }) => Some(variant),
                _ => None,
            })
            .collect();
        for v in returned {
            if states.get(&v).map(String::as_str) != Some("complete") {
                return Err(format!(
                    "v{v}, returned by a start, is not complete after gc: {states:?}; gc removed {:?}",
                    gc_removed.lock().expect("gc")
                ));
            }
        }
    }
    conversions_hold(&sb, &states, &observed, &converts.lock().expect("converts"))?;
    backups_hold(&sb, &backups.lock().expect("backups"))?;
    run_names_are_reserved(&sb, &states)?;
    if case.tracker_fault.is_some() {
        // The store comes back: one sync must then bring it to what it would hold had it never
        // failed (docs/contract.md, "What a sync guarantees").
        sb.tracker.as_ref().expect("tracked").heal();
        let entries = sb.track_sync().expect("the sched world is tracked");
        let failed: Vec<_> = entries
            .iter()
            .filter(|e| e.action == trainctl::track::sync::Action::Failed)
            .collect();
        if !failed.is_empty() {
            return Err(format!("a sync with the store back failed: {failed:?}"));
        }
    }
    one_run_per_variant(&sb, &states, with_gc)?;
    let cache = sb.cache();
    let (valid, _) = cache.newest_valid(usize::MAX).map_err(|e| e.to_string())?;
    for (v, state) in &states {
        if state == "complete" && !valid.iter().any(|f| f.record.subject == sb.subject(0, *v)) {
            return Err(format!("complete v{v} has no cache record"));
        }
    }
    let writers = case
        .programs
        .iter()
        .filter(|p| **p == Program::CacheWrite)
        .count();
    let external = valid
        .iter()
        .filter(|f| f.record.subject.starts_with("external/"))
        .count();
    if external != writers {
        return Err(format!(
            "{writers} cache writers returned but {external} records remain"
        ));
    }
    let problems = cache.check().map_err(|e| e.to_string())?;
    if !problems.is_empty() {
        return Err(format!(
            "cache views unsettled after every writer returned: {problems:?}"
        ));
    }
    Ok(())
}

/// A process's failure: the error's kind and text.
type Failed = (trainctl::error::ErrorKind, String);

/// What one `convert` process returned: the parent's variant, or its failure.
type ConvertOutcome = (usize, Result<Option<u64>, Failed>);

/// What each `convert` process returned.
type ConvertOutcomes = std::sync::Mutex<Vec<ConvertOutcome>>;

/// The guarantee of `convert --latest` beside starts (weaker than linearizable: which of
/// several complete variants is "latest" depends on completions the model does not order):
/// what it converted is complete; `parent_not_found` only when no start had returned with a
/// complete variant before the convert began; any other error is a violation; at the end
/// every file under the conversion root lies in a conversion dir whose manifest verifies.
fn conversions_hold(
    sb: &Sandbox,
    states: &std::collections::BTreeMap<u64, String>,
    observed: &[Observed],
    converts: &[ConvertOutcome],
) -> Result<(), String> {
    let first_complete = observed
        .iter()
        .filter(|o| {
            matches!(
                o.decision,
                Some(Expected::New { .. } | Expected::Resume { .. } | Expected::Reuse { .. })
            )
        })
        .map(|o| o.responded)
        .min();
    for (i, outcome) in converts {
        match outcome {
            Ok(Some(v)) if states.get(v).map(String::as_str) == Some("complete") => {}
            Ok(parent) => {
                return Err(format!(
                    "process {i} converted v{parent:?}, which is not complete: {states:?}"
                ))
            }
            Err((trainctl::error::ErrorKind::ParentNotFound, _))
                if first_complete.is_none_or(|t| t >= observed[*i].invoked) => {}
            Err((_, e)) => {
                return Err(format!(
                    "process {i} (convert, invoked at step {}) failed: {e}; outcomes {observed:?}",
                    observed[*i].invoked
                ))
            }
        }
    }
    let (_, stray) = sb.verified_conversions();
    if !stray.is_empty() {
        return Err(format!(
            "files under the conversion root outside every verified conversion: {stray:?}"
        ));
    }
    Ok(())
}

/// What one `backup` process returned.
type BackupOutcome = (usize, Result<(), Failed>);

/// What each `backup` process returned.
type BackupOutcomes = std::sync::Mutex<Vec<BackupOutcome>>;

/// The guarantee of `backup` beside starts, cache writers and repair (docs/contract.md,
/// "Drive backup"): it succeeds, or fails with `backup_failed` when a source changed under
/// it; every copy in the mirror is complete (sha256-checked, read as a restore reads it);
/// and a backup once every process returned succeeds and leaves no leftover.
fn backups_hold(sb: &Sandbox, backups: &[BackupOutcome]) -> Result<(), String> {
    if backups.is_empty() {
        return Ok(());
    }
    for (i, outcome) in backups {
        if let Err((kind, e)) = outcome {
            if *kind != trainctl::error::ErrorKind::BackupFailed {
                return Err(format!("process {i} (backup) failed: {e}"));
            }
        }
    }
    let incomplete_copies = |when: &str| -> Result<(), String> {
        for found in sb.mirror_variants() {
            if let trainctl::completion::Completion::Incomplete(reason) = &found.completion {
                return Err(format!(
                    "{when}: the mirror's copy {} is not complete ({reason})",
                    found.dir.display()
                ));
            }
        }
        Ok(())
    };
    incomplete_copies("after the schedule")?;
    sb.backup()
        .map_err(|e| format!("a backup once every process returned failed: {e}"))?;
    incomplete_copies("after a quiet backup")?;
    let leftovers = sb.mirror_leftovers();
    if !leftovers.is_empty() {
        return Err(format!(
            "a quiet backup left files behind in the mirror: {leftovers:?}; the backups beside the others returned {backups:?}"
        ));
    }
    Ok(())
}

/// Run-name reservation, both ways: every variant that recorded a run name has one no other
/// variant has, and the registry's reservation of that name names that variant's dir.
fn run_names_are_reserved(
    sb: &Sandbox,
    states: &std::collections::BTreeMap<u64, String>,
) -> Result<(), String> {
    let job = &sb.jobs[0];
    let mut names = std::collections::BTreeMap::new();
    for v in states.keys() {
        let dir = job
            .layout
            .variant_dir(&job.identity, *v)
            .map_err(|e| e.to_string())?;
        let Some(name) = trainctl::train::recorded_run_name(&*sb.fs, &dir) else {
            continue;
        };
        if let Some(other) = names.insert(name.clone(), *v) {
            return Err(format!("run name {name:?} is v{other}'s and v{v}'s"));
        }
        let holder = trainctl::train::run_name_holder(&*sb.fs, job, &name);
        if holder != Some(job.layout.out_relative(&dir)) {
            return Err(format!(
                "v{v} runs as {name:?}, but its reservation names {holder:?}"
            ));
        }
    }
    Ok(())
}

/// Tracking under concurrency (docs/contract.md, "Tracking of final training"): each complete
/// variant has exactly one run, FINISHED and named as the variant's metadata says; every run
/// belongs to a variant that exists; an incomplete variant (the stale v1 of the setup) has at most
/// one run.
fn one_run_per_variant(
    sb: &Sandbox,
    states: &std::collections::BTreeMap<u64, String>,
    with_gc: bool,
) -> Result<(), String> {
    let tracker = sb.tracker.as_ref().expect("tracked");
    let variant_tag = trainctl::naming::TagRegistry::defaults().name("legacy", "variant");
    let mut runs: std::collections::BTreeMap<u64, Vec<trainctl::track::Run>> = Default::default();
    for run in tracker.runs() {
        // The run of a variant gc removed stays, ended KILLED (by gc, or before it by the
        // superseding training): docs/contract.md, "Retention and gc".
        if with_gc
            && run.info.status == trainctl::track::RunStatus::Killed
            && !states.contains_key(
                &run.tags
                    .get(&variant_tag)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )
        {
            continue;
        }
        let Some(v) = run
            .tags
            .get(&variant_tag)
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return Err(format!("run {:?} has no variant tag", run.info.run_name));
        };
        if !states.contains_key(&v) {
            return Err(format!(
                "run {:?} names v{v}, which does not exist",
                run.info.run_name
            ));
        }
        runs.entry(v).or_default().push(run);
    }
    let job = &sb.jobs[0];
    for (v, state) in states {
        let of_v = runs.get(v).map_or(&[][..], Vec::as_slice);
        let names: Vec<&str> = of_v.iter().map(|r| r.info.run_name.as_str()).collect();
        if of_v.len() > 1 {
            return Err(format!("v{v} has {} runs: {names:?}", of_v.len()));
        }
        if state != "complete" {
            continue;
        }
        let Some(run) = of_v.first() else {
            return Err(format!("complete v{v} has no run"));
        };
        if run.info.status != trainctl::track::RunStatus::Finished {
            return Err(format!("complete v{v}'s run is {:?}", run.info.status));
        }
        let dir = job
            .layout
            .variant_dir(&job.identity, *v)
            .map_err(|e| e.to_string())?;
        let recorded = trainctl::train::recorded_run_name(&*sb.fs, &dir);
        if recorded.as_deref() != Some(run.info.run_name.as_str()) {
            return Err(format!(
                "v{v}'s run is named {:?}, its metadata says {recorded:?}",
                run.info.run_name
            ));
        }
    }
    Ok(())
}

/// Runs `case`; on failure writes the trace (with the exact schedule) and panics with the
/// replay commands for `test`. Returns the number of scheduled steps.
fn check(case: &Case, test: &str) -> usize {
    let (schedule, verdict) = run(case);
    let steps = schedule.len();
    if let Err(violation) = verdict {
        let original = case.programs.len();
        // A recorded schedule (replay, regression) is reported exactly as it ran.
        let (case, schedule, violation) = if case.schedule.is_empty() {
            shrink(case, schedule, violation)
        } else {
            (case.clone(), schedule, violation)
        };
        let violation = format!(
            "{violation}\n(shrunk from {original} to {} processes, {} scheduled steps)",
            case.programs.len(),
            schedule.len()
        );
        let case = &case;
        let dir = support::failure_dir();
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("sched-{}.json", case.seed));
        let trace = Case {
            schedule,
            ..case.clone()
        };
        let _ = std::fs::write(&path, serde_json::to_vec_pretty(&trace).unwrap_or_default());
        panic!(
            "{violation}\nseed {seed}; rerun: TRAINCTL_SEED={seed} {replay}\n\
             replay exactly: TRAINCTL_REPLAY={} {replay}",
            path.display(),
            seed = case.seed,
            replay = support::replay_command(module_path!(), test)
        );
    }
    steps
}

/// The kind of a violation: its text up to the first ':' or ';'.
fn kind_of(violation: &str) -> &str {
    violation.split([':', ';']).next().unwrap_or(violation)
}

/// Shrinks a failing case: drops processes, then start offsets, while it still fails (the
/// schedule then follows the policy from the same seed; the one that failed is recorded).
fn shrink(case: &Case, schedule: Vec<usize>, violation: String) -> (Case, Vec<usize>, String) {
    let mut best = (case.clone(), schedule, violation);
    // Bounded: every accepted step removes a process or zeroes an offset.
    loop {
        let current = best.0.clone();
        let mut candidates = Vec::new();
        for i in 0..current.programs.len() {
            if current.programs.len() <= 1 {
                break;
            }
            if i == 0 && current.long_run.is_some() {
                continue; // The long run's owner is what the case is about.
            }
            let mut c = current.clone();
            c.programs.remove(i);
            c.start_at.remove(i);
            c.schedule.clear();
            candidates.push(c);
        }
        if current.start_at.iter().any(|t| *t != 0) {
            let mut c = current.clone();
            c.start_at = vec![0; c.programs.len()];
            c.schedule.clear();
            candidates.push(c);
        }
        // Only the same kind of failure counts: shrinking must not trade the violation found
        // for a different one.
        let kind = kind_of(&best.2).to_string();
        let smaller = candidates.into_iter().find_map(|c| {
            let (schedule, verdict) = run(&c);
            verdict
                .err()
                .filter(|v| kind_of(v) == kind)
                .map(|v| (c, schedule, v))
        });
        match smaller {
            Some(found) => best = found,
            None => return best,
        }
    }
}

fn read_case(path: &std::path::Path) -> Case {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read trace {}: {e}", path.display()));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not a sched trace: {e}", path.display()))
}

/// Committed regressions first, then an exact replay, one seed, or a campaign of
/// `case_of(seed)` from `base`.
fn campaign(kind: &'static str, test: &str, base: u64, quick: u32, case_of: fn(u64) -> Case) {
    for path in support::regression_traces("sched-") {
        check(&read_case(&path), test);
    }
    if let Ok(file) = std::env::var("TRAINCTL_REPLAY") {
        check(&read_case(std::path::Path::new(&file)), test);
        return;
    }
    if let Some(seed) = std::env::var("TRAINCTL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        check(&case_of(seed), test);
        return;
    }
    let began = std::time::Instant::now();
    let lin_before = (
        LIN_HISTORIES.load(std::sync::atomic::Ordering::Relaxed),
        LIN_NANOS.load(std::sync::atomic::Ordering::Relaxed),
    );
    let (mut schedules, mut steps) = (0u64, 0u64);
    for seed in support::seeds(base, support::cases(quick) as u64) {
        steps += check(&case_of(seed), test) as u64;
        schedules += 1;
    }
    let secs = began.elapsed().as_secs_f64();
    eprintln!(
        "sched {test}: {schedules} schedules ({steps} scheduled Fs operations) in {secs:.2} s = {:.1} schedules/s, {:.0} scheduled operations/s",
        schedules as f64 / secs.max(1e-9),
        steps as f64 / secs.max(1e-9)
    );
    // Both campaigns of this binary may run at once: the counters are shared, so this is the
    // rate over every history checked so far.
    let histories = LIN_HISTORIES.load(std::sync::atomic::Ordering::Relaxed) - lin_before.0;
    let lin_secs =
        (LIN_NANOS.load(std::sync::atomic::Ordering::Relaxed) - lin_before.1) as f64 / 1e9;
    eprintln!(
        "sched {test}: {histories} histories checked for linearizability in {lin_secs:.3} s of checking = {:.0} histories/s",
        histories as f64 / lin_secs.max(1e-9)
    );
    for (measure, count, secs) in [
        ("schedules", schedules, secs),
        ("scheduled Fs operations", steps, secs),
        ("linearizability histories", histories, lin_secs),
    ] {
        // Each seed is its own schedule; `distinct` is not tracked here.
        support::stats::line(kind, test, measure, count, secs, None, &Default::default());
    }
}

/// Time passes: an owner trains for several lease timeouts while processes of another host
/// start beside it (resume v1, reuse, force_new, cache writes, repair). The owner's
/// heartbeat must keep advancing, so that no watcher ever takes the run over; the history is
/// linearizable and every invariant of the stale-v1 campaign holds.
#[test]
fn a_long_run_watched_from_another_host_keeps_its_owner() {
    campaign(
        "sched_long_run",
        "a_long_run_watched_from_another_host_keeps_its_owner",
        0x10e6_0000,
        32,
        long_run_case_of,
    );
}

#[test]
fn scheduled_starts_are_linearizable() {
    campaign(
        "sched_starts",
        "scheduled_starts_are_linearizable",
        0x5eed_0000,
        64,
        case_of,
    );
}

/// The case a seed stands for in the takeover race: 2–3 resumers of the one stale variant,
/// started together, uniformly or PCT-scheduled.
/// The case a seed stands for in the gc campaign: `case_of`'s processes with one to three of
/// them `gc --apply --older-than 0s`, beside force_new, reuse, resumes of the stale v1 and
/// repairs (gc ∥ train, gc ∥ resume, gc ∥ repair, gc ∥ gc).
fn gc_case_of(seed: u64) -> Case {
    let mut case = case_of(seed ^ 0x0009_c000_0000_0000);
    case.seed = seed;
    let mut rng = seed;
    let n = case.programs.len();
    for i in 0..n {
        case.programs[i] = match splitmix(&mut rng) % 8 {
            0 | 1 => Program::ForceNew,
            2 => Program::Reuse,
            3 | 4 => Program::ResumeStale,
            5 => Program::Repair,
            _ => Program::Gc,
        };
        case.start_at[i] = splitmix(&mut rng) % 60;
    }
    if !case.programs.contains(&Program::Gc) {
        let i = (splitmix(&mut rng) % n as u64) as usize;
        case.programs[i] = Program::Gc;
    }
    case
}

/// gc beside trains, resumes and repairs never removes a variant a start returned, never
/// fails, and keeps every other invariant of the campaign (not linearizability: it removes
/// abandoned variants the model keeps).
#[test]
fn gc_beside_trains_and_repairs_removes_only_what_is_abandoned() {
    campaign(
        "sched_gc",
        "gc_beside_trains_and_repairs_removes_only_what_is_abandoned",
        0x9c_0000,
        256,
        gc_case_of,
    );
}

fn takeover_case_of(seed: u64) -> Case {
    let mut rng = seed ^ 0x7a4e_0e5e_0000_0000;
    let n = 2 + (splitmix(&mut rng) % 2) as usize;
    let start_at = (0..n).map(|_| splitmix(&mut rng) % 4).collect();
    let policy = if splitmix(&mut rng) % 2 == 0 {
        Policy::Uniform
    } else {
        Policy::Pct {
            depth: 1 + (splitmix(&mut rng) % 3) as u32,
        }
    };
    Case {
        seed,
        policy,
        programs: vec![Program::ResumeStale; n],
        start_at,
        schedule: Vec::new(),
        profile: support::SimProfile::of_seed(seed),
        long_run: None,
        tracker_fault: None,
    }
}

/// docs/contract.md, "Allocation and leases" "stale-lease takeover is atomic: of N racing resumers
/// exactly one wins": 2–3 resumers of one stale variant, interleaved at every Fs operation. Single
/// ownership (no two trainers in the variant dir at once, no two resumes of it), linearizable
/// outcomes, and the end-state checks of every scheduled case.
#[test]
fn racing_resumers_of_a_stale_variant_have_a_single_owner() {
    campaign(
        "sched_resumers",
        "racing_resumers_of_a_stale_variant_have_a_single_owner",
        0x7a4e_0000,
        48,
        takeover_case_of,
    );
}

/// The checker itself can fail: histories that no order explains are rejected.
#[test]
fn checker_rejects_impossible_histories() {
    let mut stale = Variants::default();
    stale.0.insert(1, trainctl_models::concurrent::Slot::Idle);
    let op = |program, decision, invoked, responded| Observed {
        program,
        decision: Some(decision),
        invoked,
        responded,
    };
    // Two resumers of one stale variant both won.
    let both_won = [
        op(Program::ResumeStale, Expected::Resume { variant: 1 }, 1, 10),
        op(Program::ResumeStale, Expected::Resume { variant: 1 }, 2, 11),
    ];
    assert!(!linearizable(&stale, &both_won));
    // One won, one was busy: fine.
    let one_won = [
        op(Program::ResumeStale, Expected::Resume { variant: 1 }, 1, 10),
        op(Program::ResumeStale, Expected::Error(MErr::Busy), 2, 11),
    ];
    assert!(linearizable(&stale, &one_won));
    // Two NEW starts got the same number.
    let same = [
        op(Program::ForceNew, Expected::New { variant: 2 }, 1, 10),
        op(Program::ForceNew, Expected::New { variant: 2 }, 2, 11),
    ];
    assert!(!linearizable(&stale, &same));
    // A reuse that started after a complete run returned must reuse it, not train anew.
    let stale_read = [
        op(Program::ForceNew, Expected::New { variant: 2 }, 1, 5),
        op(Program::Reuse, Expected::New { variant: 3 }, 6, 10),
    ];
    assert!(!linearizable(&stale, &stale_read));
}

fn op(program: Program, decision: Expected, invoked: u64, responded: u64) -> Observed {
    Observed {
        program,
        decision: Some(decision),
        invoked,
        responded,
    }
}

fn stale_v1() -> Variants {
    let mut stale = Variants::default();
    stale.0.insert(1, trainctl_models::concurrent::Slot::Idle);
    stale
}

/// A violation is reported as its minimal core: of four overlapping commands where two
/// resumers both won, the two winners remain; the busy resumer and the unrelated NEW drop out.
#[test]
fn a_violation_shrinks_to_its_minimal_history() {
    let history = [
        op(Program::ResumeStale, Expected::Resume { variant: 1 }, 1, 40),
        op(Program::ForceNew, Expected::New { variant: 2 }, 2, 30),
        op(Program::ResumeStale, Expected::Error(MErr::Busy), 3, 20),
        op(Program::ResumeStale, Expected::Resume { variant: 1 }, 4, 50),
    ];
    let core = minimal_violation(&stale_v1(), &history).expect("not linearizable");
    assert_eq!(
        core.observed,
        vec![history[0].clone(), history[3].clone()],
        "{}",
        core.describe()
    );
    assert!(core.context.is_empty(), "{}", core.describe());
    // A stale read: a reuse invoked after a NEW of v2 returned "allocates" v2 again. Alone that
    // outcome is fine, so the NEW stays as context (it ran first, whatever it returned); the
    // busy resumer drops out.
    let stale_read = [
        op(Program::ResumeStale, Expected::Error(MErr::Busy), 0, 3),
        op(Program::ForceNew, Expected::New { variant: 2 }, 1, 5),
        op(Program::Reuse, Expected::New { variant: 2 }, 6, 10),
    ];
    let core = minimal_violation(&stale_v1(), &stale_read).expect("not linearizable");
    assert_eq!(
        core.observed,
        vec![stale_read[2].clone()],
        "{}",
        core.describe()
    );
    assert_eq!(
        core.context,
        vec![stale_read[1].clone()],
        "{}",
        core.describe()
    );
}

/// Linearizable histories have no core, and the shrinker never calls one a violation.
#[test]
fn linearizable_histories_are_accepted() {
    let histories = [
        vec![
            op(Program::ResumeStale, Expected::Resume { variant: 1 }, 1, 40),
            op(Program::ResumeStale, Expected::Error(MErr::Busy), 2, 20),
            op(Program::ResumeStale, Expected::Error(MErr::Busy), 3, 30),
        ],
        vec![
            op(Program::ForceNew, Expected::New { variant: 3 }, 1, 10),
            op(Program::ForceNew, Expected::New { variant: 2 }, 2, 11),
            op(Program::Reuse, Expected::Reuse { variant: 3 }, 12, 13),
        ],
        vec![
            op(Program::ResumeStale, Expected::Resume { variant: 1 }, 1, 5),
            op(Program::ResumeStale, Expected::New { variant: 2 }, 6, 9),
        ],
    ];
    for h in &histories {
        assert!(linearizable(&stale_v1(), h), "{h:?}");
        assert_eq!(minimal_violation(&stale_v1(), h), None, "{h:?}");
    }
}

/// The lease-law audit itself can fail: removing a lease file, writing one in place and
/// publishing a generation that skips one are all recorded; the lawful take (generation n+1 by
/// no-replace rename) and generation 1 written inside a staged dir are not.
#[test]
fn lease_audit_flags_every_break_of_the_lease_law() {
    use std::path::Path;
    use trainctl::fs::Fs;
    let sim = Arc::new(SimFs::new());
    let audit = LeaseAudit::new(sim.clone());
    let (dir, staged) = (Path::new("/out/v1"), Path::new("/out/.v2.tmp-1"));
    audit.create_dir_all(dir).expect("dir");
    audit.create_dir_all(staged).expect("staged dir");
    audit
        .create_new(&staged.join("lease-1.json"), b"{}")
        .expect("staged generation 1");
    let owner = trainctl::lease::Owner {
        host: "h".into(),
        pid: 1,
        start_time: 7,
    };
    for after in 0..2 {
        let taken = trainctl::lease::take(&audit, dir, after, &owner, 0, "resume").expect("take");
        assert!(matches!(taken, trainctl::lease::Take::Won(_)));
    }
    assert_eq!(audit.violations(), Vec::<String>::new());
    audit
        .remove_file(&dir.join("lease-2.json"))
        .expect("remove");
    audit
        .write(&dir.join("lease-1.json"), b"{}")
        .expect("write");
    trainctl::fs::create_durable(&audit, &dir.join("lease-5.json"), b"{}").expect("publish");
    let violations = audit.violations();
    assert_eq!(violations.len(), 3, "{violations:?}");
    assert!(
        violations[0].starts_with("removal of lease file"),
        "{violations:?}"
    );
    assert!(
        violations[1].starts_with("in-place write"),
        "{violations:?}"
    );
    assert!(violations[2].contains("generation 5"), "{violations:?}");
}
