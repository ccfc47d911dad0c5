//! The Trainer port (docs/contract.md, "Trainer"): runs one training attempt and reports how it
//! ended. The command trainer runs an argv with the job file in `TRAINCTL_JOB`, streams its output
//! to `logs/trainer.log` (never held in memory), heartbeats the lease, enforces
//! `trainer.timeout`, forwards SIGINT/SIGTERM, and makes sure the trainer never outlives its
//! orchestrator (parent-death signal). It never decides whether the run is complete: the
//! orchestrator checks the completion contract itself.

use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// How an attempt ended, as far as the process is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0 (the outputs still have to pass the completion contract).
    Exited0,
    Failed(Failure),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Machine-readable: `exit_code`, `signal`, `timeout`, `interrupted`, `spawn`,
    /// `lease_lost`, `io`.
    pub kind: &'static str,
    pub message: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The last bytes the trainer wrote to stderr (also in `trainer.log`, unless the disk was
    /// too full to take them): how a storage error the trainer died of is recognised.
    pub output_tail: String,
}

/// The trainer process, once running (recorded in the lease heartbeat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainerProcess {
    pub pid: u32,
    pub start_time: u64,
}

/// One attempt's parameters.
pub struct Run<'a> {
    /// Working directory of the trainer (the project root).
    pub cwd: &'a Path,
    pub job_path: &'a Path,
    pub log_path: &'a Path,
    pub timeout: Option<Duration>,
    pub heartbeat_every: Duration,
    /// Called at start (with the trainer process) and every `heartbeat_every`; returning
    /// false (the lease is no longer ours) stops the trainer.
    pub heartbeat: &'a dyn Fn(Option<TrainerProcess>) -> bool,
    /// The progress channel the trainer appends to (docs/contract.md, "Live progress"): named
    /// in the job file and in `TRAINCTL_PROGRESS`; each new report goes to `progress`.
    pub progress_path: Option<&'a Path>,
    pub progress: &'a dyn Fn(&crate::progress::Progress),
}

pub trait Trainer {
    fn run(&self, run: &Run<'_>) -> Outcome;
}

/// A signal received by the orchestrator while a trainer runs (0 = none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handlers that `CommandTrainer` forwards to its child.
pub fn install_signal_forwarding() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// The signal received so far, if any.
pub fn received_signal() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// An external trainer: `trainer.command` argv (the fixture trainer, or a real one).
pub struct CommandTrainer {
    pub argv: Vec<String>,
    /// Extra environment for the child.
    pub env: Vec<(String, String)>,
}

const POLL: Duration = Duration::from_millis(20);
/// How often the progress channel is read while the trainer runs.
const PROGRESS_POLL: Duration = Duration::from_millis(100);
const KILL_GRACE: Duration = Duration::from_secs(10);

fn failure(kind: &'static str, message: String) -> Outcome {
    Outcome::Failed(Failure {
        kind,
        message,
        exit_code: None,
        signal: None,
        output_tail: String::new(),
    })
}

/// Bytes of the trainer's stderr kept in memory (the rest is only in the log).
const TAIL_BYTES: usize = 4096;

/// Copies the trainer's stderr into the log and keeps its last bytes in memory, so that the
/// cause of a failure is known even when the log cannot be written (a full disk).
struct Tee {
    tail: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Tee {
    fn start(mut from: std::process::ChildStderr, mut log: std::fs::File) -> Tee {
        use std::io::{Read, Write};
        let tail = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = tail.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // Ends at EOF (every writer of the pipe closed) or on a read error.
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                // The log may be on a full disk: the tail still has the words.
                let _ = log.write_all(&buf[..n]);
                let mut t = keep.lock().unwrap_or_else(|e| e.into_inner());
                t.extend_from_slice(&buf[..n]);
                let excess = t.len().saturating_sub(TAIL_BYTES);
                t.drain(..excess);
            }
        });
        Tee { tail, thread }
    }

    /// The tail, once the pipe is drained or after `wait` (a grandchild may keep the pipe
    /// open: the copy goes on in the background then).
    fn finish(self, wait: Duration) -> String {
        let started = Instant::now();
        while !self.thread.is_finished() && started.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&t).into_owned()
    }
}

fn send(pid: u32, sig: i32) {
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let (Some(target), Some(sig)) = (target, rustix::process::Signal::from_named_raw(sig)) {
        // The child may have exited already: nothing to do then.
        let _ = rustix::process::kill_process(target, sig);
    }
}

impl Trainer for CommandTrainer {
    fn run(&self, run: &Run<'_>) -> Outcome {
        let mut tee = None;
        let outcome = self.run_child(run, &mut tee);
        match (outcome, tee) {
            (Outcome::Failed(mut f), Some(tee)) => {
                f.output_tail = tee.finish(Duration::from_secs(2));
                Outcome::Failed(f)
            }
            (outcome, Some(tee)) => {
                drop(tee.finish(Duration::ZERO));
                outcome
            }
            (outcome, None) => outcome,
        }
    }
}

impl CommandTrainer {
    /// Starts the trainer and watches it until it ends; `tee` gets the copier of its stderr
    /// once it runs.
    fn run_child(&self, run: &Run<'_>, tee: &mut Option<Tee>) -> Outcome {
        let Some((program, args)) = self.argv.split_first() else {
            return failure("spawn", "empty trainer command".into());
        };
        let (log, log_err) = match open_log(run.log_path) {
            Ok(files) => files,
            Err(outcome) => return outcome,
        };
        let mut command = self.command(program, args, run, log);
        // Reports of an earlier attempt in the same file are not this attempt's progress.
        let progress = run.progress_path.map(crate::progress::Tail::at_end);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => return failure("spawn", format!("cannot start {program}: {e}")),
        };
        if let Some(stderr) = child.stderr.take() {
            *tee = Some(Tee::start(stderr, log_err));
        }
        watch(&mut child, run, progress)
    }

    /// The trainer's command: the job file and the progress channel in its environment,
    /// stdout to the log, stderr piped (for the tee), and the parent-death signal.
    fn command(
        &self,
        program: &str,
        args: &[String],
        run: &Run<'_>,
        log: std::fs::File,
    ) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let parent = i32::try_from(std::process::id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .current_dir(run.cwd)
            .env("TRAINCTL_JOB", run.job_path)
            .envs(
                run.progress_path
                    .map(|p| (crate::progress::ENV, p.as_os_str())),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(std::process::Stdio::piped());
        // SAFETY: only async-signal-safe calls (the prctl and getppid system calls through
        // rustix, which neither allocates nor locks, and _exit) run between fork and exec.
        // The trainer gets SIGKILL when the orchestrator dies; if the orchestrator died before
        // prctl took effect, the child exits at once.
        unsafe {
            command.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                if rustix::process::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        command
    }
}

/// Opens the trainer's log for appending (its parent dir created first), twice: one handle
/// for stdout, one for the stderr tee. A failure is the attempt's outcome.
fn open_log(path: &Path) -> Result<(std::fs::File, std::fs::File), Outcome> {
    if let Some(dir) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Err(failure("io", format!("{}: {e}", dir.display())));
        }
    }
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return Err(failure("io", format!("{}: {e}", path.display()))),
    };
    let log_err = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return Err(failure("io", format!("{}: {e}", path.display()))),
    };
    Ok((log, log_err))
}

/// Why the watch stopped the trainer: the failure kind, its message, and since when (for the
/// kill after `KILL_GRACE`).
type Stop = (&'static str, String, Instant);

/// What the watch of a running trainer keeps between two polls.
struct Watch {
    pid: u32,
    process: Option<TrainerProcess>,
    started: Instant,
    last_beat: Instant,
    last_look: Instant,
    lease_ok: bool,
    stop: Option<Stop>,
    forwarded: Option<i32>,
}

/// Watches the trainer every `POLL` until it exits: forwards a signal the orchestrator
/// received, follows the progress channel, heartbeats, and stops the trainer at
/// `trainer.timeout` or when the lease is lost (SIGTERM; any stop ends in SIGKILL after
/// `KILL_GRACE`).
fn watch(
    child: &mut std::process::Child,
    run: &Run<'_>,
    mut progress: Option<crate::progress::Tail>,
) -> Outcome {
    let pid = child.id();
    let process =
        crate::lease::process_start_time(pid).map(|start_time| TrainerProcess { pid, start_time });
    let mut watch = Watch {
        pid,
        process,
        started: Instant::now(),
        last_beat: Instant::now(),
        last_look: Instant::now(),
        lease_ok: (run.heartbeat)(process),
        stop: None,
        forwarded: None,
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if let Some(p) = progress.as_mut().and_then(|t| t.poll()) {
                    (run.progress)(&p);
                }
                return exit_outcome(status, watch.stop, watch.forwarded);
            }
            Ok(None) => {}
            Err(e) => {
                send(pid, libc::SIGKILL);
                let _ = child.wait();
                return failure("io", format!("waiting for the trainer: {e}"));
            }
        }
        watch.poll(run, &mut progress);
        std::thread::sleep(POLL);
    }
}

impl Watch {
    /// One look at a trainer still running.
    fn poll(&mut self, run: &Run<'_>, progress: &mut Option<crate::progress::Tail>) {
        let pid = self.pid;
        if let (Some(sig), None) = (received_signal(), self.forwarded) {
            send(pid, sig);
            self.forwarded = Some(sig);
            self.stop.get_or_insert((
                "interrupted",
                format!("orchestrator received signal {sig}"),
                Instant::now(),
            ));
        }
        if let (Some(limit), None) = (run.timeout, &self.stop) {
            if self.started.elapsed() > limit {
                send(pid, libc::SIGTERM);
                self.stop = Some((
                    "timeout",
                    format!("trainer.timeout of {}s reached", limit.as_secs()),
                    Instant::now(),
                ));
            }
        }
        if let (Some(tail), true) = (progress, self.last_look.elapsed() >= PROGRESS_POLL) {
            self.last_look = Instant::now();
            if let Some(p) = tail.poll() {
                (run.progress)(&p);
            }
        }
        if self.last_beat.elapsed() >= run.heartbeat_every {
            self.last_beat = Instant::now();
            self.lease_ok = (run.heartbeat)(self.process);
        }
        if !self.lease_ok && self.stop.is_none() {
            send(pid, libc::SIGTERM);
            self.stop = Some((
                "lease_lost",
                "another process took over the lease".into(),
                Instant::now(),
            ));
        }
        if let Some((_, _, since)) = &self.stop {
            if since.elapsed() > KILL_GRACE {
                send(pid, libc::SIGKILL);
            }
        }
    }
}

/// How an attempt ended, from the trainer's exit status and what the watch stopped it for.
fn exit_outcome(
    status: std::process::ExitStatus,
    stop: Option<Stop>,
    forwarded: Option<i32>,
) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    if let Some((kind, message, _)) = stop {
        return Outcome::Failed(Failure {
            kind,
            message,
            exit_code: status.code(),
            signal: status.signal(),
            output_tail: String::new(),
        });
    }
    if let Some(sig) = forwarded {
        return Outcome::Failed(Failure {
            kind: "interrupted",
            message: format!("orchestrator received signal {sig}; forwarded to the trainer"),
            exit_code: status.code(),
            signal: status.signal(),
            output_tail: String::new(),
        });
    }
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Exited0,
        (Some(code), _) => Outcome::Failed(Failure {
            kind: "exit_code",
            message: format!("trainer exited with code {code}"),
            exit_code: Some(code),
            signal: None,
            output_tail: String::new(),
        }),
        (None, sig) => Outcome::Failed(Failure {
            kind: "signal",
            message: format!("trainer killed by signal {}", sig.unwrap_or(0)),
            exit_code: None,
            signal: sig,
            output_tail: String::new(),
        }),
    }
}
