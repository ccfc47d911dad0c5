//! Execution-core measurements (issue: execution core): fsyncs in one complete `train`, the
//! wall time of its durable steps against a raw fsync floor measured in the same run, and
//! model-vs-real style command throughput on SimFs, and `train` start throughput of 1, 8 and 64
//! concurrent real processes against the same floor. Run: `cargo bench --bench execute`.
//! Prints Markdown for docs/performance.md; asserts nothing about time.

#[path = "../props/support/mod.rs"]
mod support;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::harness::{Sandbox, TrainerScript};
use trainctl::config::schema::RunMode;
use trainctl::fs::{Call, Fs, Hook};

/// Counts fsyncs and all mutating operations of an inner Fs.
struct Counting {
    inner: Arc<dyn Fs>,
    fsyncs: AtomicU64,
    mutations: AtomicU64,
}

impl Hook for Counting {
    fn inner(&self) -> &dyn Fs {
        &*self.inner
    }
    fn around<T>(&self, call: Call<'_>, run: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        if call.mutates() {
            self.mutations.fetch_add(1, Ordering::Relaxed);
        }
        if call.is_fsync() {
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        run()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);

    // 1. Operations and fsyncs of one complete train (in-process trainer, its own writes
    //    unsynced like a real trainer's; the orchestrator makes them durable).
    let counting = Arc::new(Counting {
        inner: Arc::new(trainctl::fs::OsFs),
        fsyncs: AtomicU64::new(0),
        mutations: AtomicU64::new(0),
    });
    let sb = Sandbox::new(counting.clone(), None, 1, &[]);
    let (r, _) = sb.train(0, RunMode::ForceNew, None, TrainerScript::Complete);
    r.expect("train");
    let (fsyncs, mutations) = (
        counting.fsyncs.load(Ordering::Relaxed),
        counting.mutations.load(Ordering::Relaxed),
    );
    println!("| measurement | value | floor / detail | ratio |\n|---|---|---|---|");
    println!(
        "| one complete `train` (OsFs) | {fsyncs} fsyncs | {mutations} mutating operations | |"
    );

    // 2. Wall time of a whole in-process train on OsFs vs the raw floor: write + fsync +
    //    rename + dir fsync, times the number of fsync pairs the train needs.
    let sb = Sandbox::new(Arc::new(trainctl::fs::OsFs), None, 1, &[]);
    let mut train_times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let (r, _) = sb.train(0, RunMode::ForceNew, None, TrainerScript::Complete);
        r.expect("train");
        train_times.push(start.elapsed());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut floor_times = Vec::new();
    for i in 0..runs {
        let start = Instant::now();
        for k in 0..fsyncs.div_ceil(2) {
            let tmp = dir.path().join(format!("t{i}-{k}"));
            std::fs::write(&tmp, b"x").expect("write");
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .expect("fsync");
            std::fs::rename(&tmp, dir.path().join(format!("f{i}-{k}"))).expect("rename");
            std::fs::File::open(dir.path())
                .and_then(|f| f.sync_all())
                .expect("dir fsync");
        }
        floor_times.push(start.elapsed());
    }
    let (t, f) = (median(train_times), median(floor_times));
    let floor_per_train = f;
    println!(
        "| train (in-process trainer) vs fsync floor | {:.2} ms | floor {:.2} ms | {:.2} |",
        t.as_secs_f64() * 1e3,
        f.as_secs_f64() * 1e3,
        t.as_secs_f64() / f.as_secs_f64()
    );

    // 3. Command throughput on SimFs (one core): trains and status projections.
    let sim = Arc::new(trainctl::fs::sim::SimFs::new());
    let sb = Sandbox::new(sim.clone(), Some(&sim), 3, &[]);
    let start = Instant::now();
    let mut commands = 0u64;
    while start.elapsed() < Duration::from_secs(3) {
        let i = (commands % 3) as usize;
        let mode = if commands % 4 == 0 {
            RunMode::ReuseIfExists
        } else {
            RunMode::ForceNew
        };
        let _ = sb.train(i, mode, None, TrainerScript::Complete);
        let _ = sb.variant_states(i, trainctl::completion::Depth::Sizes);
        commands += 2;
    }
    let per_s = commands as f64 / start.elapsed().as_secs_f64();
    println!("| model-vs-real style commands on SimFs | {per_s:.0} commands/s | {commands} commands, variants grow as it runs | |");

    // 4. Start throughput: N real `trainctl train -o run.mode=force_new` processes at once on
    //    one project (the fixture trainer, ~instant), wall time until all exit; against N ×
    //    the floor of one train's fsyncs measured above (the fsyncs cannot overlap on one disk
    //    in the worst case, so N × floor is what durability alone costs serially).
    let max_starts: usize = std::env::var("BENCH_MAX_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    for n in [1usize, 8, 64].into_iter().filter(|n| *n <= max_starts) {
        let project = fixture_project();
        let start = Instant::now();
        let children: Vec<_> = (0..n)
            .map(|_| {
                project
                    .command(&["--json", "-o", "run.mode=force_new", "train"], &[])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn trainctl")
            })
            .collect();
        let mut failed = 0;
        for child in children {
            let out = child.wait_with_output().expect("wait");
            if !out.status.success() {
                failed += 1;
                eprintln!("start failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let wall = start.elapsed();
        let floor = floor_per_train * n as u32;
        println!(
            "| {n} concurrent `train` processes (fixture trainer) | {:.0} ms wall, {:.1} starts/s | floor {n} × {:.1} ms = {:.0} ms | {:.2}{} |",
            wall.as_secs_f64() * 1e3,
            n as f64 / wall.as_secs_f64(),
            floor_per_train.as_secs_f64() * 1e3,
            floor.as_secs_f64() * 1e3,
            wall.as_secs_f64() / floor.as_secs_f64(),
            if failed > 0 { format!(", {failed} FAILED") } else { String::new() }
        );
    }

    // 5. Storage profiles (docs/contract.md, "Storage profiles"): one in-process `train` on
    //    each filesystem against that filesystem's own floor (F/2 × write + fsync + publish by
    //    the profile's primitive + dir fsync, F = the fsyncs of one train there), and the
    //    probe's cost. Mounts need root, /dev/fuse and bindfs; a world that cannot be mounted
    //    is reported as skipped.
    println!("\n| storage world | profile | train (median) | floor (median) | ratio | probe (median of {runs}) |\n|---|---|---|---|---|---|");
    let worlds = storage_worlds();
    for world in &worlds {
        storage_row(world, runs);
    }
}

/// A directory to put OUT in, and how it was made.
struct World {
    name: &'static str,
    dir: std::path::PathBuf,
    /// `posix-noflags` forced on this filesystem (the last world: forcing lasts for the
    /// process and its device).
    force_noflags: bool,
    _keep: Option<tempfile::TempDir>,
    unmount: Option<(&'static str, Vec<String>)>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some((program, args)) = &self.unmount {
            let _ = std::process::Command::new(program).args(args).status();
        }
    }
}

fn sh(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn storage_worlds() -> Vec<World> {
    let mut worlds = Vec::new();
    let local = tempfile::tempdir().expect("tempdir");
    worlds.push(World {
        name: "local disk",
        dir: local.path().to_path_buf(),
        force_noflags: false,
        _keep: Some(local),
        unmount: None,
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let point = tmp.path().to_str().expect("utf8").to_string();
    if sh(
        "mount",
        &["-t", "tmpfs", "-o", "size=512m", "tmpfs", &point],
    ) {
        worlds.push(World {
            name: "tmpfs",
            dir: tmp.path().to_path_buf(),
            force_noflags: false,
            _keep: Some(tmp),
            unmount: Some(("umount", vec!["-l".into(), point])),
        });
    } else {
        println!("| tmpfs | skipped: cannot mount (needs root) | | | | |");
    }
    let fuse = tempfile::tempdir().expect("tempdir");
    let (src, mnt) = (fuse.path().join("src"), fuse.path().join("mnt"));
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let (s, m) = (src.display().to_string(), mnt.display().to_string());
    if sh("bindfs", &[&s, &m]) {
        worlds.push(World {
            name: "bindfs (FUSE) over the local disk",
            dir: mnt,
            force_noflags: false,
            _keep: Some(fuse),
            unmount: Some(("fusermount3", vec!["-u".into(), "-z".into(), m])),
        });
    } else {
        println!("| bindfs | skipped: cannot mount (needs root, /dev/fuse, bindfs) | | | | |");
    }
    let forced = tempfile::tempdir().expect("tempdir");
    worlds.push(World {
        name: "local disk, `storage.profile: posix-noflags`",
        dir: forced.path().to_path_buf(),
        force_noflags: true,
        _keep: Some(forced),
        unmount: None,
    });
    worlds
}

fn storage_row(world: &World, runs: usize) {
    use trainctl::fs::{profile, OsFs};
    let mut probes = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        profile::probe(&OsFs, &world.dir).expect("probe");
        probes.push(start.elapsed());
    }
    if world.force_noflags {
        OsFs::force(&world.dir, trainctl::fs::ProfileName::PosixNoflags).expect("force");
    }
    let caps = OsFs.caps(&world.dir);
    let out = format!("paths:base.outputs={}", world.dir.join("out").display());
    let counting = Arc::new(Counting {
        inner: Arc::new(OsFs),
        fsyncs: AtomicU64::new(0),
        mutations: AtomicU64::new(0),
    });
    let sb = Sandbox::new(counting.clone(), None, 1, std::slice::from_ref(&out));
    let (r, _) = sb.train(0, RunMode::ForceNew, None, TrainerScript::Complete);
    r.expect("train");
    let fsyncs = counting.fsyncs.load(Ordering::Relaxed);
    let mut trains = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let (r, _) = sb.train(0, RunMode::ForceNew, None, TrainerScript::Complete);
        r.expect("train");
        trains.push(start.elapsed());
    }
    let floor_dir = world.dir.join("floor");
    std::fs::create_dir_all(&floor_dir).expect("mkdir");
    let mut floors = Vec::new();
    for i in 0..runs {
        let start = Instant::now();
        for k in 0..fsyncs.div_ceil(2) {
            let tmp = floor_dir.join(format!(".t{i}-{k}.tmp-x"));
            let to = floor_dir.join(format!("f{i}-{k}"));
            OsFs.create_new(&tmp, b"x").expect("write");
            OsFs.fsync_file(&tmp).expect("fsync");
            if caps.rename_noreplace {
                OsFs.rename_noreplace(&tmp, &to).expect("publish");
            } else {
                OsFs.hard_link(&tmp, &to).expect("publish");
                OsFs.remove_file(&tmp).expect("unlink");
            }
            OsFs.fsync_dir(&floor_dir).expect("dir fsync");
        }
        floors.push(start.elapsed());
    }
    let (t, f, p) = (median(trains), median(floors), median(probes));
    println!(
        "| {} | {} | {:.2} ms | {:.2} ms ({} fsyncs / 2 publishes) | {:.2} | {:.3} ms |",
        world.name,
        caps.profile().as_str(),
        t.as_secs_f64() * 1e3,
        f.as_secs_f64() * 1e3,
        fsyncs,
        t.as_secs_f64() / f.as_secs_f64(),
        p.as_secs_f64() * 1e3
    );
}

/// A project whose trainer is the fixture trainer (python, exits at once), so a start costs
/// the orchestrator's work and a python start-up, not a training.
fn fixture_project() -> support::Project {
    let project = support::Project::new();
    project.use_fixture_trainer();
    project
}
