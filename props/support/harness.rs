//! The system under test for the model-based suites: the real orchestrator (`train::train`,
//! caches, status) run in-process over a chosen Fs (`OsFs` in a temp dir, or `SimFs`), with a
//! kill switch that makes the orchestrator "die" at a chosen moment, an in-process trainer that
//! writes its outputs through the same Fs, a fake clock and a fake process table.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use trainctl::fs::{Call, Fs, Hook};
use trainctl::trainer::{Failure, Outcome, Run, Trainer};

/// Forwards to an inner Fs until killed; then every call fails (the process is gone, its
/// page cache is not: unlike a power loss, nothing already written is lost).
pub struct KillSwitch {
    pub inner: Arc<dyn Fs>,
    dead: AtomicBool,
    /// Mutating operations allowed before the switch trips by itself (u64::MAX = never).
    budget: AtomicU64,
    /// A full disk: every call that needs new space (create, write, append, mkdir, link)
    /// fails with ENOSPC and has no effect; renames, removals and fsyncs still work.
    full: AtomicBool,
    /// Mutating operations attempted so far.
    mutations: AtomicU64,
    /// Every path a mutating call named since the last `take_touched` (attempted, whether or
    /// not it succeeded): what an incremental projection must look at again.
    touched: std::sync::Mutex<Vec<PathBuf>>,
}

impl KillSwitch {
    pub fn new(inner: Arc<dyn Fs>) -> KillSwitch {
        KillSwitch {
            inner,
            dead: AtomicBool::new(false),
            budget: AtomicU64::new(u64::MAX),
            full: AtomicBool::new(false),
            mutations: AtomicU64::new(0),
            touched: std::sync::Mutex::new(Vec::new()),
        }
    }
    /// The paths mutating calls named since the last call (see `touched`).
    pub fn take_touched(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *self.touched.lock().expect("touched"))
    }
    fn touch(&self, first: &Path, second: Option<&Path>) {
        let mut touched = self.touched.lock().expect("touched");
        touched.push(first.to_path_buf());
        touched.extend(second.map(Path::to_path_buf));
    }
    /// Mutating operations attempted so far (to count the steps of a command).
    pub fn mutations(&self) -> u64 {
        self.mutations.load(Ordering::SeqCst)
    }
    /// Fills (or frees) the disk.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }
    fn space(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            Ok(())
        }
    }
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }
    pub fn revive(&self) {
        self.dead.store(false, Ordering::SeqCst);
        self.budget.store(u64::MAX, Ordering::SeqCst);
    }
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
    /// Dies after `k` more mutating operations.
    pub fn die_after(&self, k: u64) {
        self.budget.store(k, Ordering::SeqCst);
    }
    fn check(&self) -> io::Result<()> {
        if self.is_dead() {
            Err(io::Error::other("process killed"))
        } else {
            Ok(())
        }
    }
    fn mutate(&self) -> io::Result<()> {
        self.mutations.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        let left = self.budget.load(Ordering::SeqCst);
        if left == 0 {
            self.kill();
            return Err(io::Error::other("process killed"));
        }
        if left != u64::MAX {
            self.budget.store(left - 1, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl Hook for KillSwitch {
    fn inner(&self) -> &dyn Fs {
        &*self.inner
    }
    fn around<T>(&self, call: Call<'_>, run: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        if !call.mutates() {
            self.check()?;
            return run();
        }
        let (first, second) = call.paths();
        self.touch(first, second);
        self.mutate()?;
        if call.grows() {
            self.space()?;
        }
        run()
    }
    fn reported_space(&self, path: &Path) -> Option<u64> {
        if self.full.load(Ordering::SeqCst) {
            return Some(0);
        }
        self.inner.available_bytes(path)
    }
}

/// How the in-process trainer's attempt ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainerScript {
    Complete,
    /// Exits 1 after one step checkpoint.
    Fail,
    /// The orchestrator process dies after the first step checkpoint.
    KillOrchestrator,
    /// The disk fills up as the trainer starts writing (the kill switch refuses every write
    /// with ENOSPC until the command returns, as on a full disk).
    DiskFull,
    /// A long run: `steps` steps of `step_ms` simulated milliseconds each, a step checkpoint
    /// and a heartbeat after each (as the trainer runner beats while a real trainer trains),
    /// then completes.
    Long {
        steps: u32,
        step_ms: u64,
    },
}

/// A trainer that runs in-process and writes through the orchestrator's Fs, honouring the
/// job-file protocol (labels, seed, step checkpoints, final checkpoint, metrics).
pub struct FsTrainer<'a> {
    pub fs: &'a KillSwitch,
    pub script: TrainerScript,
    pub occupancy: &'a Occupancy,
    pub clock: &'a Clock,
}

/// Which variant dirs have a trainer running in them right now, and every moment two ran in
/// one dir at once (docs/contract.md, "Allocation and leases": at most one live owner per variant
/// at any instant; an owner is what runs a trainer there).
#[derive(Default)]
pub struct Occupancy {
    inside: std::sync::Mutex<std::collections::BTreeMap<String, u32>>,
    overlaps: std::sync::Mutex<Vec<String>>,
}

impl Occupancy {
    fn enter(&self, dir: &str) {
        let mut inside = self.inside.lock().expect("occupancy");
        let n = inside.entry(dir.to_string()).or_insert(0);
        *n += 1;
        if *n > 1 {
            self.overlaps
                .lock()
                .expect("occupancy")
                .push(format!("{n} trainers ran in {dir} at once"));
        }
    }
    fn leave(&self, dir: &str) {
        let mut inside = self.inside.lock().expect("occupancy");
        if let Some(n) = inside.get_mut(dir) {
            *n = n.saturating_sub(1);
        }
    }
    /// Every overlap seen so far.
    pub fn overlaps(&self) -> Vec<String> {
        self.overlaps.lock().expect("occupancy").clone()
    }
}

/// Writes a trainer output the way real trainers do: plainly, without fsync. Making it
/// durable is the orchestrator's job before it records completion.
fn put(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs.create_dir_all(parent)?;
    }
    fs.write(path, bytes)
}

impl FsTrainer<'_> {
    /// Writes the outputs; `beat` is the runner's heartbeat (false: the lease is lost).
    fn outputs(&self, job: &serde_json::Value, beat: &dyn Fn() -> bool) -> io::Result<()> {
        let fs: &dyn Fs = self.fs;
        let path = |k: &str| PathBuf::from(job[k].as_str().unwrap_or_default());
        let labels: Vec<String> = job["labels"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let seed = job["seed"].as_u64().unwrap_or(0);
        let steps = job["total_steps"].as_u64().unwrap_or(1);
        // A resume reads the step checkpoint it continues from (with OUT in a bucket: the
        // copy trainctl downloaded into the staging dir).
        if let Some(from) = job["resume_from"].as_str() {
            fs.read(&Path::new(from).join("trainer_state.json"))?;
        }
        if self.script == TrainerScript::DiskFull {
            self.fs.set_full(true);
        }
        let step_dir = path("checkpoints_dir").join("step-1");
        put(
            fs,
            &step_dir.join("trainer_state.json"),
            format!("{{\"step\":1,\"seed\":{seed}}}").as_bytes(),
        )?;
        match self.script {
            TrainerScript::KillOrchestrator => {
                self.fs.kill();
                return Err(io::Error::other("orchestrator killed"));
            }
            TrainerScript::Fail => return Err(io::Error::other("exit 1")),
            TrainerScript::Long { steps, step_ms } => {
                for step in 2..=steps + 1 {
                    self.clock.advance_ms(step_ms);
                    put(
                        fs,
                        &path("checkpoints_dir")
                            .join(format!("step-{step}"))
                            .join("trainer_state.json"),
                        format!("{{\"step\":{step},\"seed\":{seed}}}").as_bytes(),
                    )?;
                    if !beat() {
                        return Err(io::Error::other("lease lost"));
                    }
                }
            }
            TrainerScript::Complete | TrainerScript::DiskFull => {}
        }
        let id2label: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), l.clone().into()))
            .collect();
        let label2id: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i.into()))
            .collect();
        let ckpt = path("checkpoint_dir");
        let config = serde_json::json!({"id2label": id2label, "label2id": label2id});
        put(
            fs,
            &ckpt.join("config.json"),
            &serde_json::to_vec(&config).map_err(io::Error::other)?,
        )?;
        let weights =
            trainctl::identity::sha256_hex(format!("{seed}:{steps}:{labels:?}").as_bytes());
        put(fs, &ckpt.join("model.safetensors"), weights.as_bytes())?;
        put(
            fs,
            &ckpt.join("trainer_state.json"),
            format!("{{\"step\":{steps}}}").as_bytes(),
        )?;
        let metric = job["objective_metric"].as_str().unwrap_or("macro-f1");
        let metrics = serde_json::json!({metric: 0.5 + (seed % 7) as f64 / 100.0, "loss": 0.25});
        put(
            fs,
            &path("metrics_path"),
            &serde_json::to_vec(&metrics).map_err(io::Error::other)?,
        )
    }
}

impl Trainer for FsTrainer<'_> {
    fn run(&self, run: &Run<'_>) -> Outcome {
        (run.heartbeat)(None);
        let job = self
            .fs
            .read(run.job_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let Some(job) = job else {
            return Outcome::Failed(Failure {
                kind: "io",
                message: "job file unreadable".into(),
                exit_code: Some(2),
                signal: None,
                output_tail: String::new(),
            });
        };
        let variant_dir = job["variant_dir"].as_str().unwrap_or_default().to_string();
        self.occupancy.enter(&variant_dir);
        let written = self.outputs(&job, &|| (run.heartbeat)(None));
        self.occupancy.leave(&variant_dir);
        exit_of(written)
    }
}

/// The converter the simulated worlds run (`conversion.command`'s protocol, in-process):
/// reads the job file through the Fs and writes `model.bin`, the parent's final weights, into
/// the job's `output_dir`; trainctl then writes the manifest and publishes.
pub struct FsConverter<'a> {
    pub fs: &'a KillSwitch,
}

impl Trainer for FsConverter<'_> {
    fn run(&self, run: &Run<'_>) -> Outcome {
        let fs: &dyn Fs = self.fs;
        let written = (|| -> io::Result<()> {
            let job: serde_json::Value = serde_json::from_slice(&fs.read(run.job_path)?)?;
            let path = |k: &str| PathBuf::from(job[k].as_str().unwrap_or_default());
            let weights = fs.read(&path("checkpoint_dir").join("model.safetensors"))?;
            put(fs, &path("output_dir").join("model.bin"), &weights)
        })();
        exit_of(written)
    }
}

/// How an in-process trainer or converter process ends: exit 0, or exit 1 with the error on
/// its stderr, as a real one that dies of an error.
fn exit_of(written: io::Result<()>) -> Outcome {
    match written {
        Ok(()) => Outcome::Exited0,
        Err(e) => Outcome::Failed(Failure {
            kind: "exit_code",
            message: e.to_string(),
            exit_code: Some(1),
            signal: None,
            output_tail: format!("error: {e}"),
        }),
    }
}

/// Every entry below `dir` (temporaries and empty directories included) with the bytes of
/// each file: OUT "byte-identical" checks.
pub fn fs_snapshot(fs: &dyn Fs, dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs.list(&d).unwrap_or_default() {
            let path = d.join(&e.name);
            if e.is_dir {
                out.insert(path.clone(), None);
                stack.push(path);
            } else {
                out.insert(path.clone(), Some(fs.read(&path).unwrap_or_default()));
            }
        }
    }
    out
}

/// The fake process table: a pid is alive from `start` until `exit`.
pub struct Processes {
    next_pid: AtomicU64,
    live: std::sync::Mutex<std::collections::BTreeSet<u32>>,
}

impl Default for Processes {
    fn default() -> Self {
        Processes {
            next_pid: AtomicU64::new(1000),
            live: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        }
    }
}

impl Processes {
    /// A copy of `other`'s table: the same live pids, the same next pid (a forked world).
    pub fn continuing(other: &Processes) -> Processes {
        Processes {
            next_pid: AtomicU64::new(other.next_pid.load(Ordering::SeqCst)),
            live: std::sync::Mutex::new(other.live.lock().expect("process table").clone()),
        }
    }

    /// Starts a "process": a fresh pid that is alive until `exit`.
    pub fn start(&self) -> u32 {
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst) as u32 + 1;
        self.live.lock().expect("process table").insert(pid);
        pid
    }
    pub fn exit(&self, pid: u32) {
        self.live.lock().expect("process table").remove(&pid);
    }
    pub fn start_time(&self, pid: u32) -> Option<u64> {
        self.live
            .lock()
            .expect("process table")
            .contains(&pid)
            .then_some(7)
    }
}

/// A monotonically increasing fake clock (microseconds), shared by threads.
pub struct Clock(AtomicU64);

impl Default for Clock {
    fn default() -> Self {
        Clock(AtomicU64::new(1_800_000_000_000_000))
    }
}

impl Clock {
    /// A clock that reads on from `other`'s current time (a forked world).
    pub fn continuing(other: &Clock) -> Clock {
        Clock(AtomicU64::new(other.0.load(Ordering::SeqCst)))
    }

    pub fn now_us(&self) -> u64 {
        self.0.fetch_add(1_000, Ordering::SeqCst) + 1_000
    }
    /// Time passes (a long training step): every process sees it at its next look.
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms * 1_000, Ordering::SeqCst);
    }
}

/// Copies every file under `dir` (on disk) into a simulated filesystem, durably.
pub fn seed_sim(sim: &trainctl::fs::sim::SimFs, dir: &Path) {
    for (path, bytes) in super::snapshot(dir) {
        if let Some(bytes) = bytes {
            sim.write_file_durably(&path, &bytes)
                .expect("seed the simulated disk");
        }
    }
}

/// The real orchestrator in-process: a project root on disk (config, dataset), OUT on the
/// given Fs behind a kill switch, fake processes and clock, and one prepared job per
/// identity (identities differ by seed).
pub struct Sandbox {
    /// Shared by `sibling`s (the project on disk is only read once the jobs are prepared).
    pub project: Arc<super::Project>,
    pub fs: Arc<KillSwitch>,
    pub processes: Processes,
    pub clock: Clock,
    /// Shared by siblings and forks (a change goes through `Arc::make_mut`).
    pub jobs: Arc<Vec<trainctl::job::Job>>,
    /// Trainers running per variant dir (single-owner check).
    pub occupancy: Occupancy,
    /// The lease-law audit under the kill switch, when built with `audited`.
    pub audit: Option<Arc<LeaseAudit>>,
    /// The tracking store `train` talks to (None: no tracking, as before tracking existed).
    pub tracker: Option<Arc<trainctl::track::recording::RecordingTracker>>,
}

impl Sandbox {
    /// `inner` gets the dataset copied in when it is not the real filesystem (`seed`).
    pub fn new(
        inner: Arc<dyn Fs>,
        seed: Option<&trainctl::fs::sim::SimFs>,
        identities: usize,
        extra: &[String],
    ) -> Sandbox {
        let project = Arc::new(super::Project::new());
        Sandbox::in_project(project, inner, seed, identities, extra, false)
    }

    /// As `new`, in a given project (e.g. one whose dataset was shrunk); with `audited`, every
    /// call is checked against the lease law (`LeaseAudit`, directly over `inner`).
    pub fn in_project(
        project: Arc<super::Project>,
        inner: Arc<dyn Fs>,
        seed: Option<&trainctl::fs::sim::SimFs>,
        identities: usize,
        extra: &[String],
        audited: bool,
    ) -> Sandbox {
        let audit = audited.then(|| Arc::new(LeaseAudit::new(inner.clone())));
        let inner: Arc<dyn Fs> = match &audit {
            Some(a) => a.clone(),
            None => inner,
        };
        if let Some(sim) = seed {
            seed_sim(sim, &project.root().join("fixtures/datasets"));
        }
        let mut sandbox = Sandbox {
            project,
            fs: Arc::new(KillSwitch::new(inner)),
            processes: Processes::default(),
            clock: Clock::default(),
            jobs: Arc::new(Vec::new()),
            occupancy: Occupancy::default(),
            audit,
            tracker: None,
        };
        sandbox.jobs = Arc::new(
            (0..identities)
                .map(|i| sandbox.load_job(i, extra))
                .collect(),
        );
        sandbox
    }

    /// As `new`, with every call checked against the lease law (`LeaseAudit`).
    pub fn audited(
        inner: Arc<dyn Fs>,
        seed: Option<&trainctl::fs::sim::SimFs>,
        identities: usize,
        extra: &[String],
    ) -> Sandbox {
        let project = Arc::new(super::Project::new());
        Sandbox::in_project(project, inner, seed, identities, extra, true)
    }

    /// A fresh sandbox over `inner` that shares this one's project and prepared jobs (no
    /// config loading or dataset digest again): fresh processes, clock and checks, audited
    /// when this one is. The jobs' OUT paths name the same project root, which lives in the
    /// simulated `inner` only, so siblings never see each other's files.
    pub fn sibling(&self, inner: Arc<dyn Fs>, seed: &trainctl::fs::sim::SimFs) -> Sandbox {
        seed_sim(seed, &self.root().join("fixtures/datasets"));
        self.sibling_unseeded(inner)
    }

    /// This sandbox's world continued over `inner` (a fork of its simulated filesystem): the
    /// same jobs, clock reading and process table, a fresh lease audit and occupancy. What
    /// runs next sees exactly the state this one has now.
    pub fn fork_onto(&self, inner: Arc<dyn Fs>) -> Sandbox {
        let mut forked = self.sibling_unseeded(inner);
        forked.clock = Clock::continuing(&self.clock);
        forked.processes = Processes::continuing(&self.processes);
        forked
    }

    /// `sibling` over a filesystem that already holds the project's dataset.
    fn sibling_unseeded(&self, inner: Arc<dyn Fs>) -> Sandbox {
        let audit = self
            .audit
            .as_ref()
            .map(|_| Arc::new(LeaseAudit::new(inner.clone())));
        let fs: Arc<dyn Fs> = match &audit {
            Some(a) => a.clone(),
            None => inner,
        };
        Sandbox {
            project: self.project.clone(),
            fs: Arc::new(KillSwitch::new(fs)),
            processes: Processes::default(),
            clock: Clock::default(),
            jobs: self.jobs.clone(),
            occupancy: Occupancy::default(),
            audit,
            tracker: None,
        }
    }

    /// Lease-law violations seen so far (none when not audited).
    pub fn lease_violations(&self) -> Vec<String> {
        self.audit
            .as_ref()
            .map(|a| a.violations())
            .unwrap_or_default()
    }

    pub fn root(&self) -> &Path {
        self.project.root()
    }

    fn load_job(&self, identity: usize, extra: &[String]) -> trainctl::job::Job {
        let mut overrides = vec![format!("seed.random_seed={}", 100 + identity)];
        overrides.extend_from_slice(extra);
        let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
        let config = trainctl::config::load(
            &super::opts(self.root(), &refs),
            self.root(),
            &super::no_vars,
        )
        .expect("config loads");
        trainctl::job::prepare(config, &*self.fs, &super::host()).expect("job prepares")
    }

    /// The decision `plan` makes for this command right now.
    pub fn plan(
        &self,
        identity: usize,
        mode: trainctl::config::schema::RunMode,
        explicit: Option<u64>,
    ) -> trainctl::error::Result<trainctl::plan::Decision> {
        self.plan_job(&self.jobs[identity].with_run(mode, explicit))
    }

    /// The decision `plan` makes for `job` right now.
    pub fn plan_job(
        &self,
        job: &trainctl::job::Job,
    ) -> trainctl::error::Result<trainctl::plan::Decision> {
        let start_time = |pid: u32| self.processes.start_time(pid);
        let host = trainctl::job::Host {
            process_start_time: &start_time,
            ..super::host()
        };
        let facts = host.facts(job.config.lease_timeout_s() * 1000);
        let request = job.request();
        trainctl::observe::decide(&*self.fs, &job.layout, &job.identity, &facts, &request)
            .map(|(_, decision)| decision)
    }

    /// Runs `train` as a fresh process; returns its result and whether the process died.
    pub fn train(
        &self,
        identity: usize,
        mode: trainctl::config::schema::RunMode,
        explicit: Option<u64>,
        script: TrainerScript,
    ) -> (trainctl::error::Result<trainctl::train::Report>, bool) {
        self.train_job(&self.jobs[identity].with_run(mode, explicit), script)
    }

    /// Runs `train` of `job` as a fresh process; returns its result and whether it died.
    pub fn train_job(
        &self,
        job: &trainctl::job::Job,
        script: TrainerScript,
    ) -> (trainctl::error::Result<trainctl::train::Report>, bool) {
        self.train_job_on(job, script, &super::host().hostname)
    }

    /// `train_job` as a process of host `hostname`: on another host than an owner's, the
    /// owner's liveness is its heartbeat's age (the simulated clock), not the process table.
    pub fn train_job_on(
        &self,
        job: &trainctl::job::Job,
        script: TrainerScript,
        hostname: &str,
    ) -> (trainctl::error::Result<trainctl::train::Report>, bool) {
        let job = job.clone();
        let pid = self.processes.start();
        let start_time = |pid: u32| self.processes.start_time(pid);
        let now_us = || self.clock.now_us();
        let clock = || self.clock.now_us() / 1000;
        let host = trainctl::job::Host {
            process_start_time: &start_time,
            now_ms: now_us() / 1000,
            hostname: hostname.into(),
            clock: Some(&clock),
            ..super::host()
        };
        let trainer = FsTrainer {
            fs: &self.fs,
            script,
            occupancy: &self.occupancy,
            clock: &self.clock,
        };
        let ctx = trainctl::train::Context {
            // The clock advances on every look: a wait ends by its bound in simulated time.
            waiting: trainctl::train::no_waiting(),
            progress: &|_| {},
            fs: &*self.fs,
            host: &host,
            owner: trainctl::lease::Owner {
                host: hostname.into(),
                pid,
                start_time: 7,
            },
            trainer: &trainer,
            now_us: &now_us,
            // The product's rule for whether the training stage is tracked at all.
            tracking: self
                .tracker
                .as_ref()
                .and_then(|t| {
                    let t: &dyn trainctl::track::Tracker = &**t;
                    trainctl::track::lifecycle::training_stage(&job.config, t)
                })
                .map(|tracker| trainctl::train::Tracking {
                    tracker,
                    backend: "recording",
                }),
        };
        let result = trainctl::train::train(&job, &ctx);
        let killed = self.fs.is_dead();
        self.fs.revive();
        // Space comes back once the command has returned (a user freed some).
        self.fs.set_full(false);
        self.processes.exit(pid);
        (result, killed)
    }

    /// `trainctl gc --apply --older-than 0s` as a fresh process of this host (docs/contract.md,
    /// "Retention and gc"): every incomplete variant nobody holds is abandoned at once.
    pub fn gc(&self) -> trainctl::error::Result<trainctl::gc::Report> {
        let job = &self.jobs[0];
        let pid = self.processes.start();
        let start_time = |pid: u32| self.processes.start_time(pid);
        let clock = || self.clock.now_us() / 1000;
        let host = trainctl::job::Host {
            process_start_time: &start_time,
            now_ms: self.clock.now_us() / 1000,
            clock: Some(&clock),
            ..super::host()
        };
        let world = trainctl::gc::World {
            fs: &*self.fs,
            host: &host,
            owner: trainctl::lease::Owner {
                host: host.hostname.clone(),
                pid,
                start_time: 7,
            },
            tracker: self.tracker.as_ref().and_then(|t| {
                let t: &dyn trainctl::track::Tracker = &**t;
                trainctl::track::lifecycle::training_stage(&job.config, t)
            }),
            config: Some(&job.config),
        };
        let options = trainctl::gc::Options {
            apply: true,
            older_than_ms: 0,
        };
        let result = trainctl::gc::run(&job.config, &job.layout, &world, options);
        self.fs.revive();
        self.processes.exit(pid);
        result
    }

    /// `trainctl convert` as a fresh process, with the in-process converter (identity 0's
    /// configuration: the identities share model, environment and conversion config).
    pub fn convert(
        &self,
        from: &trainctl::convert::From,
    ) -> trainctl::error::Result<trainctl::convert::Report> {
        let job = &self.jobs[0];
        let pid = self.processes.start();
        let start_time = |pid: u32| self.processes.start_time(pid);
        let host = trainctl::job::Host {
            process_start_time: &start_time,
            now_ms: self.clock.now_us() / 1000,
            ..super::host()
        };
        let now = || format!("{}", self.clock.now_us());
        let converter = FsConverter { fs: &self.fs };
        let result = trainctl::convert::convert_with(
            &job.config,
            &*self.fs,
            &host,
            &job.config.root,
            from,
            &now,
            Some(&converter),
        );
        self.fs.revive();
        self.processes.exit(pid);
        result
    }

    /// The conversion dirs under OUT whose manifest verifies (dir → manifest), and every file
    /// under the conversion root outside them (staging debris, a dir that does not verify).
    pub fn verified_conversions(&self) -> (BTreeMap<PathBuf, serde_json::Value>, Vec<PathBuf>) {
        self.verified_conversions_in(&self.jobs[0].layout.conversion_dir)
    }

    /// `verified_conversions` under another conversion root (a backup's mirror of it).
    pub fn verified_conversions_in(
        &self,
        root: &Path,
    ) -> (BTreeMap<PathBuf, serde_json::Value>, Vec<PathBuf>) {
        let fs: &dyn Fs = &*self.fs;
        let all = fs_snapshot(fs, root);
        let valid: BTreeMap<PathBuf, serde_json::Value> = all
            .keys()
            .filter(|p| p.file_name() == Some(std::ffi::OsStr::new("manifest.json")))
            .filter_map(|p| {
                let dir = p.parent()?;
                let manifest = trainctl::convert::check_output(fs, dir).ok()?;
                Some((dir.to_path_buf(), manifest))
            })
            .collect();
        let stray = all
            .iter()
            .filter(|(p, bytes)| bytes.is_some() && !valid.keys().any(|d| p.starts_with(d)))
            .map(|(p, _)| p.clone())
            .collect();
        (valid, stray)
    }

    /// The Drive mirror's root (beside OUT, in the project) and OUT's parent, whose relative
    /// paths the mirror keeps.
    pub fn drive(&self) -> (PathBuf, PathBuf) {
        let out = &self.jobs[0].layout.out;
        let out_parent = out.parent().expect("OUT has a parent").to_path_buf();
        (
            self.root().join("drive-mirror/MyDrive/trainctl"),
            out_parent,
        )
    }

    /// `trainctl backup` on colab, as the binary runs it (every unit, in order), to the
    /// mirror of `drive`.
    pub fn backup(&self) -> trainctl::error::Result<trainctl::backup::Report> {
        let job = &self.jobs[0];
        let host = super::host();
        let facts = host.facts(600_000);
        let fs: &dyn Fs = &*self.fs;
        let units = trainctl::backup::units_on(fs, &job.config, &job.layout, &facts);
        let (drive_root, out_parent) = self.drive();
        let no_fault = trainctl::backup::no_fault;
        trainctl::backup::mirror_on(fs, &drive_root, &out_parent, &units, &no_fault)
    }

    /// OUT's layout rebased into the Drive mirror (None before any backup layout exists).
    pub fn mirror_layout(&self) -> Option<trainctl::paths::Layout> {
        let (drive_root, out_parent) = self.drive();
        trainctl::backup::mirror_layout(&self.jobs[0].layout, &drive_root, &out_parent)
    }

    /// The Drive mirror's variant copies, read as a restore reads them (sha256-checked
    /// completion through OUT's layout rebased into the mirror); none before any backup.
    pub fn mirror_variants(&self) -> Vec<trainctl::observe::FoundVariant> {
        let Some(layout) = self.mirror_layout() else {
            return Vec::new();
        };
        let host = super::host();
        let facts = host.facts(600_000);
        trainctl::observe::scan_all(
            &*self.fs,
            &layout,
            &facts,
            trainctl::completion::Depth::Digests,
            None,
        )
    }

    /// `trainctl track sync` against the sandbox's tracking store, as the binary runs it
    /// (identity 0's configuration: the identities share OUT and the store); `None` when
    /// training tracking is disabled (the command refuses: nothing to sync).
    pub fn track_sync(&self) -> Option<Vec<trainctl::track::sync::Entry>> {
        let job = &self.jobs[0];
        let tracker: &dyn trainctl::track::Tracker = &**self.tracker.as_ref()?;
        trainctl::track::lifecycle::training_stage(&job.config, tracker)?;
        let host = super::host();
        let facts = host.facts(job.config.lease_timeout_s() * 1000);
        let opts = trainctl::track::sync::Options {
            include_untracked: false,
            dry_run: false,
            now_ms: (self.clock.now_us() / 1000) as i64,
            facts: &facts,
        };
        Some(trainctl::track::sync::sync(
            &job.config,
            &job.layout,
            &*self.fs,
            tracker,
            &opts,
        ))
    }

    /// Files under the Drive root that a backup left behind (a temporary name anywhere in
    /// their path).
    pub fn mirror_leftovers(&self) -> Vec<PathBuf> {
        fs_snapshot(&*self.fs, &self.drive().0)
            .into_keys()
            .filter(|p| {
                p.components()
                    .any(|c| trainctl::fs::is_temp_name(&c.as_os_str().to_string_lossy()))
            })
            .collect()
    }

    /// The final_training cache (identity 0's settings; all identities share it).
    pub fn cache(&self) -> trainctl::cache::Cache<'_> {
        let job = &self.jobs[0];
        let settings = trainctl::cache::CacheSettings::from_paths(
            &job.config.paths,
            &job.layout,
            trainctl::cache::CacheKind::FinalTraining,
        )
        .expect("cache settings");
        trainctl::cache::Cache::new(&*self.fs, settings)
    }

    /// Every variant of `identity` with "complete" or its reason, at `depth`.
    pub fn variant_states(
        &self,
        identity: usize,
        depth: trainctl::completion::Depth,
    ) -> std::collections::BTreeMap<u64, String> {
        self.variant_states_memo(identity, depth, &mut Default::default())
    }

    /// `variant_states`, taking a variant dir's state from `memo` when it holds one (the
    /// caller drops entries whose files changed) and recording what it computes.
    pub fn variant_states_memo(
        &self,
        identity: usize,
        depth: trainctl::completion::Depth,
        memo: &mut std::collections::BTreeMap<PathBuf, String>,
    ) -> std::collections::BTreeMap<u64, String> {
        let job = &self.jobs[identity];
        let dir = job
            .layout
            .identity_dir(&job.identity)
            .expect("identity dir");
        let mut out = std::collections::BTreeMap::new();
        for e in self
            .fs
            .list(&dir)
            .unwrap_or_default()
            .iter()
            .filter(|e| e.is_dir)
        {
            let Some(v) = job.layout.parse_variant_name(&e.name) else {
                continue;
            };
            let variant_dir = dir.join(&e.name);
            let state = memo.entry(variant_dir).or_insert_with_key(|variant_dir| {
                let verdict = trainctl::completion::check(
                    &*self.fs,
                    &job.layout,
                    variant_dir,
                    Some(&job.identity),
                    v,
                    depth,
                );
                match verdict {
                    trainctl::completion::Completion::Complete(_) => "complete".to_string(),
                    trainctl::completion::Completion::Incomplete(r) => r.to_string(),
                }
            });
            out.insert(v, state.clone());
        }
        out
    }

    /// The subject of identity `i`'s variant `v` in cache records.
    pub fn subject(&self, identity: usize, variant: u64) -> String {
        let id = &self.jobs[identity].identity;
        format!(
            "{}/{}-{}/v{variant}",
            id.model,
            &id.spec_fp[..8],
            &id.exec_fp[..8]
        )
    }
}

/// The lease law of ARCHITECTURE.md ("lease.rs never deletes a lease file; take = publish
/// generation n+1 exclusively, release = publish n+1 released"), checked on every call: a
/// lease file `lease-<n>.json` of a published variant dir is never removed, renamed over,
/// moved away or rewritten in place, and a generation is only published as the successor of
/// the newest one present. Violations are recorded (never panicked on: a panic inside a
/// scheduled process would stall the others) and read by the suites after each command.
/// Put it directly over the backing Fs (inside `SchedFs`), so that its own look-ups happen in
/// the same scheduling step as the call they check.
pub struct LeaseAudit {
    pub inner: Arc<dyn Fs>,
    violations: std::sync::Mutex<Vec<String>>,
}

/// The generation of a lease file name.
fn lease_generation(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let n = name.strip_prefix("lease-")?.strip_suffix(".json")?;
    n.parse().ok().filter(|n| *n >= 1)
}

/// Whether `path` lies in a staged (not yet published) directory.
fn in_staged_dir(path: &Path) -> bool {
    path.parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .is_some_and(trainctl::fs::is_temp_name)
}

impl LeaseAudit {
    pub fn new(inner: Arc<dyn Fs>) -> LeaseAudit {
        LeaseAudit {
            inner,
            violations: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Every violation seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().expect("audit").clone()
    }

    fn violate(&self, what: String) {
        self.violations.lock().expect("audit").push(what);
    }

    /// A mutation that must never touch a lease file of a published dir; recorded when the
    /// call succeeded (a call on a dead or crashed Fs changes nothing).
    fn forbid<T>(&self, op: &str, path: &Path, result: io::Result<T>) -> io::Result<T> {
        if result.is_ok() && lease_generation(path).is_some() && !in_staged_dir(path) {
            self.violate(format!("{op} of lease file {}", path.display()));
        }
        result
    }

    /// A no-replace publication at `to`: when it is a lease generation n and it succeeds, n
    /// must follow the newest generation present just before.
    fn publish<T>(&self, to: &Path, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let newest = match (lease_generation(to), to.parent()) {
            (Some(_), Some(dir)) => trainctl::lease::current_generation(&*self.inner, dir).ok(),
            _ => None,
        };
        let result = op();
        if let (Ok(_), Some(newest), Some(n)) = (&result, newest, lease_generation(to)) {
            if n != newest + 1 {
                self.violate(format!(
                    "lease generation {n} published at {} while the newest was {newest}",
                    to.display()
                ));
            }
        }
        result
    }
}

impl Hook for LeaseAudit {
    fn inner(&self) -> &dyn Fs {
        &*self.inner
    }
    fn around<T>(&self, call: Call<'_>, run: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        match call {
            Call::CreateNew(path, _) => {
                // Only generation 1 inside a staged dir is written directly, except where the
                // filesystem has neither rename flags nor links: there an O_EXCL create at the
                // final name IS the exclusive publication (docs/contract.md, "Storage
                // profiles").
                let caps = path.parent().map(|d| self.inner.caps(d));
                if caps.is_some_and(|c| !c.rename_noreplace && !c.hard_link) {
                    return self.publish(path, run);
                }
                let result = run();
                self.forbid(
                    "direct creation (not a no-replace publication)",
                    path,
                    result,
                )
            }
            Call::Write(path, _) => self.forbid("in-place write", path, run()),
            Call::Append(path, _) => self.forbid("append", path, run()),
            Call::Rename(from, to) => {
                let result = self.forbid("rename over", to, run());
                self.forbid("rename away", from, result)
            }
            Call::RenameNoreplace(from, to) => {
                let result = self.publish(to, run);
                self.forbid("rename away", from, result)
            }
            Call::RenameExchange(a, b) => {
                let result = self.forbid("exchange", a, run());
                self.forbid("exchange", b, result)
            }
            // A link publishes `to` exclusively (posix-noflags); its source is a temporary.
            Call::HardLink(_, to) => self.publish(to, run),
            Call::RemoveFile(path) => self.forbid("removal", path, run()),
            Call::RemoveDirAll(path) => {
                let staged = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(trainctl::fs::is_temp_name);
                let holds_leases = self.inner.list(path).is_ok_and(|entries| {
                    entries
                        .iter()
                        .any(|e| !e.is_dir && lease_generation(Path::new(&e.name)).is_some())
                });
                let result = run();
                if result.is_ok() && holds_leases && !staged {
                    self.violate(format!(
                        "removal of {} with its lease files",
                        path.display()
                    ));
                }
                result
            }
            _ => run(),
        }
    }
}
