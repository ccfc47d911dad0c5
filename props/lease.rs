//! The lease rule of docs/contract.md, "Allocation and leases" at its edges, against real files in
//! a temp dir: liveness on this host (owner or trainer process alive, pid reuse) and on another
//! host (heartbeat age against `lease_timeout`, to the millisecond), and the generation sequence
//! that `read`, `take` and `release` walk through. Added for the mutation gate (issue 8): the
//! concurrency targets (sched, loom, races, crash) run every lease on one host with dead or live
//! owners only, so the cross-host rule and generations above 2 were reached by no test.

use crate::support;

use proptest::prelude::*;
use std::path::Path;
use trainctl::fs::{Fs, OsFs};
use trainctl::lease::{
    self, Heartbeat, LeaseRecord, LeaseState, LeaseView, LivenessFacts, Owner, Take,
};

const HERE: &str = "this-host";
const THERE: &str = "other-host";

fn record(host: &str, pid: u32, start_time: u64, started_at_ms: u64) -> LeaseRecord {
    LeaseRecord {
        generation: 1,
        state: LeaseState::Held,
        host: host.into(),
        pid,
        start_time,
        started_at_ms,
        purpose: "new".into(),
    }
}

fn beat(heartbeat_ms: u64, trainer: Option<(u32, u64)>) -> Heartbeat {
    Heartbeat {
        heartbeat_ms,
        trainer_pid: trainer.map(|t| t.0),
        trainer_start_time: trainer.map(|t| t.1),
    }
}

/// Processes 100 (started at tick 7) and 200 (started at tick 9) are alive on this host.
fn alive(pid: u32) -> Option<u64> {
    match pid {
        100 => Some(7),
        200 => Some(9),
        _ => None,
    }
}

fn facts(now_ms: u64, lease_timeout_ms: u64) -> LivenessFacts<'static> {
    LivenessFacts {
        this_host: HERE,
        now_ms,
        lease_timeout_ms,
        process_start_time: &alive,
        clock: None,
    }
}

proptest! {
    #![proptest_config(support::seeded_config(support::cases(256), module_path!(), "cross_host"))]

    /// On another host only the heartbeat's age counts (processes there cannot be seen): live
    /// while younger than `lease_timeout`; exactly `lease_timeout` old is no longer younger,
    /// so stale. Without a heartbeat the lease's own start time is the last sign of life.
    #[test]
    fn another_hosts_lease_is_live_exactly_while_younger_than_the_timeout(
        timeout in 1u64..1_000_000,
        last in 0u64..1_000_000_000,
        offset in prop_oneof![Just(0i64), Just(-1), Just(1), -5i64..5, -2_000_000i64..2_000_000],
        with_heartbeat in any::<bool>(),
        pid in prop_oneof![Just(100u32), Just(4242)],
    ) {
        // age = timeout + offset, clamped to what the clock allows
        let age = (timeout as i64 + offset).max(0) as u64;
        let now = last + age;
        let (rec, hb) = if with_heartbeat {
            // the lease started long before its last heartbeat
            (record(THERE, pid, 7, last.saturating_sub(5_000_000)), Some(beat(last, None)))
        } else {
            (record(THERE, pid, 7, last), None)
        };
        let live = lease::liveness(&rec, hb.as_ref(), &facts(now, timeout));
        prop_assert_eq!(live, age < timeout, "age {} ms, timeout {} ms", age, timeout);
    }
}

#[test]
fn the_cross_host_boundary_is_one_millisecond_wide() {
    let rec = record(THERE, 1, 1, 0);
    let hb = beat(1_000, None);
    let at = |now| lease::liveness(&rec, Some(&hb), &facts(now, 600_000));
    assert!(at(1_000), "a heartbeat from this instant is live");
    assert!(at(600_999), "599,999 ms old is younger than the timeout");
    assert!(!at(601_000), "exactly lease_timeout old is stale");
    assert!(!at(10_000_000), "far older is stale");
    // A clock behind the heartbeat (skew between hosts, or a reader's clock read when its
    // command started) does not make the lease stale, however far.
    assert!(at(0));
    let far = beat(1_000 + 3_600_000, None);
    assert!(lease::liveness(&rec, Some(&far), &facts(1_000, 600_000)));
}

/// The clock-skew bound (docs/contract.md, "Allocation and leases"): with a live clock, a
/// heartbeat more than `MAX_CLOCK_SKEW_MS` ahead of it is stale, one within the bound is
/// live; the clock is read only for a heartbeat beyond the bound from the command's `now`
/// (so a reader whose `now` is old, a waiting reuse, still sees a beating owner as live).
#[test]
fn a_heartbeat_from_the_future_beyond_the_skew_bound_is_stale() {
    let rec = record(THERE, 1, 1, 0);
    let bound = lease::MAX_CLOCK_SKEW_MS;
    let reads = std::cell::Cell::new(0u32);
    let judged = |heartbeat_ms: u64, now_ms: u64, clock_ms: u64| {
        let clock = || {
            reads.set(reads.get() + 1);
            clock_ms
        };
        let facts = LivenessFacts {
            clock: Some(&clock),
            ..facts(now_ms, 600_000)
        };
        lease::liveness(&rec, Some(&beat(heartbeat_ms, None)), &facts)
    };
    let t = 1_000_000_000;
    assert!(
        judged(t + bound, t, t),
        "exactly the bound ahead is still live"
    );
    assert_eq!(
        reads.get(),
        0,
        "within the bound of `now` the clock is not read"
    );
    assert!(
        !judged(t + bound + 1, t, t),
        "one ms beyond the bound is stale"
    );
    assert!(!judged(t + 3_600_000, t, t), "an hour ahead is stale");
    // A waiting reader: its `now` is ten minutes old, the clock says the heartbeat is fresh.
    assert!(judged(t + 600_000, t, t + 600_000));
    assert!(judged(t + 600_000 + bound, t, t + 600_000));
    assert!(!judged(t + 600_000 + bound + 1, t, t + 600_000));
    assert_eq!(
        lease::ahead_beyond_bound(t + 3_600_000, &facts(t, 600_000)),
        None,
        "no clock: no judgement"
    );
    // On this host processes decide, whatever the heartbeat says.
    let here = record(HERE, 100, 7, 0);
    let clock = || t;
    let facts = LivenessFacts {
        clock: Some(&clock),
        ..facts(t, 600_000)
    };
    assert!(lease::liveness(
        &here,
        Some(&beat(t + 3_600_000, None)),
        &facts
    ));
}

#[test]
fn on_this_host_the_owner_or_its_trainer_keeps_the_lease_live_whatever_the_heartbeat() {
    let timeout = 600_000;
    let late = facts(100_000_000, timeout); // every heartbeat below is ancient
    let fresh = facts(1_000, timeout); // and here every heartbeat is fresh
    let owner_alive = record(HERE, 100, 7, 0);
    let owner_dead = record(HERE, 4242, 7, 0);
    let pid_reused = record(HERE, 100, 6, 0); // pid 100 now belongs to another process
    for f in [&late, &fresh] {
        assert!(lease::liveness(&owner_alive, None, f));
        assert!(lease::liveness(&owner_alive, Some(&beat(0, None)), f));
        assert!(!lease::liveness(&owner_dead, None, f));
        assert!(!lease::liveness(&owner_dead, Some(&beat(1_000, None)), f));
        assert!(
            !lease::liveness(&pid_reused, None, f),
            "a recycled pid is not the owner"
        );
        // The owner died but its trainer still writes into the variant dir.
        assert!(lease::liveness(
            &owner_dead,
            Some(&beat(0, Some((200, 9)))),
            f
        ));
        assert!(!lease::liveness(
            &owner_dead,
            Some(&beat(0, Some((200, 8)))),
            f
        ));
        assert!(!lease::liveness(
            &owner_dead,
            Some(&beat(0, Some((4243, 9)))),
            f
        ));
    }
}

#[test]
fn a_released_generation_is_never_live() {
    for host in [HERE, THERE] {
        let mut rec = record(host, 100, 7, 1_000);
        rec.state = LeaseState::Released;
        let hb = beat(1_000, Some((200, 9)));
        assert!(!lease::liveness(&rec, Some(&hb), &facts(1_000, 600_000)));
    }
}

fn owner(host: &str, pid: u32, start_time: u64) -> Owner {
    Owner {
        host: host.into(),
        pid,
        start_time,
    }
}

fn read(dir: &Path, now_ms: u64) -> LeaseView {
    lease::read(&OsFs, dir, &facts(now_ms, 600_000))
}

/// The generation sequence of one variant dir over its life: new, released, a resume that
/// died, a takeover, its release. Each step publishes generation n+1 and nothing else, on
/// every storage profile (real files seen without rename flags, and without links).
#[test]
fn generations_count_up_through_take_release_and_takeover() {
    for profile in support::SimProfile::ALL {
        generations_count_up_on(&support::scripted::Scripted::with_profile(profile));
    }
}

fn generations_count_up_on(fs: &dyn Fs) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    assert_eq!(read(dir, 0), LeaseView::None { generation: 0 });
    assert_eq!(lease::current_generation(fs, dir).expect("list"), 0);

    let first = owner(HERE, 100, 7);
    let Take::Won(g1) = lease::take(fs, dir, 0, &first, 10, "new").expect("take") else {
        panic!("an empty dir must be taken");
    };
    assert_eq!(g1.generation, 1);
    assert!(matches!(read(dir, 20), LeaseView::Live(r) if r == g1));
    assert_eq!(read(dir, 20).generation(), 1);
    assert!(lease::still_ours(fs, dir, &g1));
    assert_eq!(
        lease::release(fs, dir, &g1, 30).expect("release"),
        Take::Won(LeaseRecord {
            generation: 2,
            state: LeaseState::Released,
            started_at_ms: 30,
            purpose: "release".into(),
            ..g1.clone()
        })
    );
    assert!(!lease::still_ours(fs, dir, &g1));
    assert_eq!(read(dir, 40), LeaseView::None { generation: 2 });

    // A resume takes generation 3 and dies (pid 4242 is not alive).
    let dead = owner(HERE, 4242, 1);
    let observed = read(dir, 50).generation();
    let Take::Won(g3) = lease::take(fs, dir, observed, &dead, 50, "resume").expect("take") else {
        panic!("generation 3 must be free");
    };
    assert_eq!(g3.generation, 3);
    let view = read(dir, 60);
    assert_eq!(view, LeaseView::Stale { generation: 3 });
    assert_eq!(view.generation(), 3);

    // Two takeovers of the stale generation 3: exactly one wins generation 4.
    let a = lease::take(fs, dir, view.generation(), &first, 70, "resume").expect("take");
    let b = lease::take(
        fs,
        dir,
        view.generation(),
        &owner(HERE, 200, 9),
        70,
        "resume",
    )
    .expect("take");
    assert!(matches!(&a, Take::Won(r) if r.generation == 4 && r.pid == 100));
    assert_eq!(b, Take::Lost);
    assert_eq!(lease::current_generation(fs, dir).expect("list"), 4);
    assert!(
        !lease::still_ours(fs, dir, &g3),
        "the dead owner lost the variant"
    );

    // The winner's heartbeat names its trainer; the dir's files are exactly the generations
    // and that one heartbeat.
    let Take::Won(g4) = a else { unreachable!() };
    lease::beat(fs, dir, &g4, &beat(80, Some((200, 9)))).expect("beat");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "heartbeat-4.json",
            "lease-1.json",
            "lease-2.json",
            "lease-3.json",
            "lease-4.json"
        ]
    );
}

#[test]
fn an_unreadable_current_generation_is_stale_and_counts_for_the_next_take() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let me = owner(HERE, 100, 7);
    let Take::Won(_) = lease::take(&OsFs, dir, 0, &me, 0, "new").expect("take") else {
        panic!("take");
    };
    // A torn or foreign lease-2 (garbage bytes), and files that only look like generations.
    std::fs::write(dir.join("lease-2.json"), b"{not json").expect("write");
    std::fs::write(dir.join("lease-x.json"), b"{}").expect("write");
    std::fs::write(dir.join("lease-0.json"), b"{}").expect("write");
    std::fs::create_dir(dir.join("lease-9.json")).expect("mkdir");
    let view = read(dir, 10);
    assert_eq!(view, LeaseView::Stale { generation: 2 });
    let next = lease::take(&OsFs, dir, view.generation(), &me, 20, "resume").expect("take");
    assert!(matches!(next, Take::Won(r) if r.generation == 3));
}

#[test]
fn a_staged_directory_holds_generation_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let me = owner(THERE, 100, 7);
    let rec = lease::take_staged(&OsFs, tmp.path(), &me, 5, "new").expect("stage");
    assert_eq!(
        (rec.generation, rec.state, rec.started_at_ms),
        (1, LeaseState::Held, 5)
    );
    let on_disk: LeaseRecord =
        serde_json::from_slice(&std::fs::read(tmp.path().join("lease-1.json")).expect("read"))
            .expect("json");
    assert_eq!(on_disk, rec);
    // Held by another host and started 5 ms ago: live; 600 s later with no heartbeat: stale.
    assert!(read(tmp.path(), 5).is_live());
    assert_eq!(
        read(tmp.path(), 600_005),
        LeaseView::Stale { generation: 1 }
    );
}

#[test]
fn a_missing_dir_has_no_lease_and_an_unlistable_one_is_stale() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("v9");
    assert_eq!(
        lease::current_generation(&OsFs, &missing).expect("missing"),
        0
    );
    assert_eq!(read(&missing, 0), LeaseView::None { generation: 0 });
    // A file where the variant dir should be: listing fails with something other than
    // NotFound, which is an error, and a lease nobody can read is not free.
    let file = tmp.path().join("v1");
    std::fs::write(&file, b"").expect("write");
    assert!(lease::current_generation(&OsFs, &file).is_err());
    assert_eq!(read(&file, 0), LeaseView::Stale { generation: 0 });
}

#[test]
fn only_a_published_generation_counts_as_lost_other_failures_are_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let me = owner(HERE, 100, 7);
    // The variant dir vanished (or was never there): an I/O error, not a lost race.
    let missing = tmp.path().join("gone");
    assert!(lease::take(&OsFs, &missing, 0, &me, 0, "resume").is_err());
    assert!(!missing.exists(), "a failed take creates nothing");
    let Take::Won(g1) = lease::take(&OsFs, tmp.path(), 0, &me, 0, "new").expect("take") else {
        panic!("take");
    };
    std::fs::remove_dir_all(tmp.path()).expect("rm");
    assert!(lease::release(&OsFs, tmp.path(), &g1, 1).is_err());
}

/// The owner facts a lease records come from the kernel: the host name other hosts see, and a
/// start time that tells a live owner from a dead one and from a recycled pid.
#[test]
fn owners_are_named_by_the_kernels_hostname_and_process_start_time() {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(lease::this_host(), kernel.trim());
    assert!(!lease::this_host().is_empty());

    let me = lease::process_start_time(std::process::id()).expect("this process is alive");
    assert_eq!(lease::process_start_time(std::process::id()), Some(me));
    assert_eq!(Owner::current().start_time, me);
    // Start times are clock ticks (10 ms): a child started later has a later one.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let started = lease::process_start_time(child.id()).expect("the child is alive");
    assert!(started > me, "child {started} vs parent {me}");
    // Killed but not reaped: a zombie is gone as far as leases go.
    child.kill().expect("kill");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lease::process_start_time(child.id()).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed child stays alive"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait().expect("reap");
    // (Not asked again after reaping: the pid may already belong to another process.)
    assert_eq!(lease::process_start_time(u32::MAX), None);
}

/// `train::allocate`, the one place a NEW variant gets its number and its lease generation 1:
/// an automatic number moves past a taken one, an explicit one (`run.variant`) never does.
#[test]
fn an_explicit_variant_number_is_never_moved_an_automatic_one_is() {
    for profile in support::SimProfile::ALL {
        allocation_on(&support::scripted::Scripted::with_profile(profile));
    }
}

fn allocation_on(fs: &dyn Fs) {
    let project = support::Project::new();
    let job = support::prepared_job(&project);
    let me = owner(HERE, 100, 7);
    let alloc =
        |first, explicit| trainctl::train::allocate(fs, &job, first, explicit, &me, 0, "new");
    let variants = || {
        let dir = job
            .layout
            .identity_dir(&job.identity)
            .expect("identity dir");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    let (n, dir, held) = alloc(3, true).expect("an explicit free number is allocated");
    assert_eq!(n, 3);
    assert_eq!(dir, job.layout.variant_dir(&job.identity, 3).expect("dir"));
    assert_eq!((held.generation, held.pid), (1, 100));
    assert!(lease::still_ours(fs, &dir, &held));

    let err = alloc(3, true).expect_err("v3 is taken");
    assert_eq!(err.kind, trainctl::error::ErrorKind::Busy, "{err}");
    assert_eq!(
        variants(),
        ["v3"],
        "a refused explicit start creates nothing"
    );

    let (n, _, _) = alloc(3, false).expect("automatic numbering moves on");
    assert_eq!(n, 4);
    let (n, _, _) = alloc(1, false).expect("a free lower number is used");
    assert_eq!(n, 1);
    let (n, _, _) = alloc(3, false).expect("moves past v3 and v4");
    assert_eq!(n, 5);
    assert_eq!(
        variants(),
        ["v1", "v3", "v4", "v5"],
        "no staged dir is left behind"
    );
}

/// A publish that fails for any reason but "that number is taken" is an error naming the
/// variant dir and the cause; allocation must not walk on through 10,000 numbers as if each were
/// taken.
#[test]
fn a_failed_publish_is_an_io_error_not_a_taken_number() {
    let project = support::Project::new();
    let job = support::prepared_job(&project);
    let fs = support::scripted::Scripted {
        rename_noreplace_fails: Some(std::io::ErrorKind::PermissionDenied),
        ..Default::default()
    };
    let err = trainctl::train::allocate(&fs, &job, 1, false, &owner(HERE, 100, 7), 0, "new")
        .expect_err("publish fails");
    let v1 = job.layout.variant_dir(&job.identity, 1).expect("dir");
    let text = err.to_string();
    assert!(text.contains(&v1.display().to_string()), "{text}");
    assert!(
        text.contains("ermission denied"),
        "the cause is kept: {text}"
    );
    let identity = job
        .layout
        .identity_dir(&job.identity)
        .expect("identity dir");
    assert_eq!(
        std::fs::read_dir(identity).expect("list").count(),
        0,
        "the staged dir is removed"
    );
}
