//! A deterministic, seeded scheduler for N logical processes (threads) over one Fs: every Fs
//! operation is a yield point, and exactly one process runs between two yield points, chosen
//! by the seed (uniform random, or PCT-style priorities with random change points). The same
//! seed and the same programs give the same interleaving, which the schedule trace records.

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use trainctl::fs::{Call, Fs, Hook};

/// How the next process is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Policy {
    Uniform,
    /// Probabilistic concurrency testing: the highest-priority ready process runs; at `depth`
    /// random steps the running process drops to the lowest priority.
    Pct {
        depth: u32,
    },
}

struct State {
    n: usize,
    granted: Option<usize>,
    waiting: Vec<bool>,
    finished: Vec<bool>,
    start_at: Vec<u64>,
    steps: u64,
    rng: u64,
    policy: Policy,
    priorities: Vec<u64>,
    change_points: Vec<u64>,
    trace: Vec<usize>,
    /// Scheduler step at which each process first ran and finished.
    invoked: Vec<Option<u64>>,
    responded: Vec<Option<u64>>,
    /// A replayed schedule: the process to grant at each step (falls back to the policy).
    forced: Vec<usize>,
}

/// The next value of the project's one PRNG over a bare u64 state.
fn splitmix(state: &mut u64) -> u64 {
    let mut rng = trainctl::rng::SplitMix64::new(*state);
    let value = rng.next_u64();
    *state = rng.state;
    value
}

/// The scheduler shared by the processes of one run.
pub struct Scheduler {
    state: Mutex<State>,
    cv: Condvar,
}

thread_local! {
    static ME: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

impl Scheduler {
    pub fn new(
        n: usize,
        seed: u64,
        policy: Policy,
        start_at: Vec<u64>,
        forced: Vec<usize>,
    ) -> Arc<Scheduler> {
        let mut rng = seed;
        let priorities = (0..n).map(|_| splitmix(&mut rng) | 1 << 32).collect();
        let change_points = match policy {
            Policy::Pct { depth } => (0..depth).map(|_| splitmix(&mut rng) % 400).collect(),
            Policy::Uniform => Vec::new(),
        };
        Arc::new(Scheduler {
            state: Mutex::new(State {
                n,
                granted: None,
                waiting: vec![false; n],
                finished: vec![false; n],
                start_at,
                steps: 0,
                rng,
                policy,
                priorities,
                change_points,
                trace: Vec::new(),
                invoked: vec![None; n],
                responded: vec![None; n],
                forced,
            }),
            cv: Condvar::new(),
        })
    }

    /// Picks the next process when everyone is waiting or finished.
    fn pick(s: &mut State) {
        if s.granted.is_some() || (0..s.n).any(|p| !s.waiting[p] && !s.finished[p]) {
            return;
        }
        let ready: Vec<usize> = (0..s.n).filter(|p| s.waiting[*p]).collect();
        if ready.is_empty() {
            return;
        }
        // Processes whose start time has come; if none, the earliest to start.
        let started: Vec<usize> = ready
            .iter()
            .copied()
            .filter(|p| s.start_at[*p] <= s.steps)
            .collect();
        let pool = if started.is_empty() {
            let min = ready.iter().map(|p| s.start_at[*p]).min().unwrap_or(0);
            ready
                .iter()
                .copied()
                .filter(|p| s.start_at[*p] == min)
                .collect()
        } else {
            started
        };
        let step = s.trace.len();
        let chosen = match s.forced.get(step).copied().filter(|p| pool.contains(p)) {
            Some(p) => p,
            None => match s.policy {
                Policy::Uniform => pool[(splitmix(&mut s.rng) % pool.len() as u64) as usize],
                Policy::Pct { .. } => *pool
                    .iter()
                    .max_by_key(|p| s.priorities[**p])
                    .unwrap_or(&pool[0]),
            },
        };
        if let Policy::Pct { .. } = s.policy {
            if s.change_points.contains(&s.steps) {
                s.priorities[chosen] = splitmix(&mut s.rng) % 1000;
            }
        }
        s.trace.push(chosen);
        s.waiting[chosen] = false;
        s.granted = Some(chosen);
        s.steps += 1;
        if s.invoked[chosen].is_none() {
            s.invoked[chosen] = Some(s.steps);
        }
    }

    /// A yield point of the calling process; returns when it may perform its next operation.
    pub fn gate(&self) {
        let Some(me) = ME.with(|m| m.get()) else {
            return;
        };
        let mut s = self.state.lock().expect("scheduler");
        if s.granted == Some(me) {
            s.granted = None;
        }
        s.waiting[me] = true;
        Scheduler::pick(&mut s);
        self.cv.notify_all();
        while s.granted != Some(me) {
            s = self.cv.wait(s).expect("scheduler");
        }
    }

    /// Runs `programs` as scheduled processes; returns their results in order.
    pub fn run<T: Send>(
        self: &Arc<Self>,
        programs: Vec<Box<dyn FnOnce() -> T + Send + '_>>,
    ) -> Vec<T> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = programs
                .into_iter()
                .enumerate()
                .map(|(i, program)| {
                    let sched = self.clone();
                    scope.spawn(move || {
                        ME.with(|m| m.set(Some(i)));
                        sched.gate();
                        let out = program();
                        let mut s = sched.state.lock().expect("scheduler");
                        s.finished[i] = true;
                        s.responded[i] = Some(s.steps);
                        if s.granted == Some(i) {
                            s.granted = None;
                        }
                        Scheduler::pick(&mut s);
                        sched.cv.notify_all();
                        drop(s);
                        ME.with(|m| m.set(None));
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("process"))
                .collect()
        })
    }

    /// The schedule taken (process per step) and each process's (invoked, responded) steps.
    pub fn history(&self) -> (Vec<usize>, Vec<(u64, u64)>) {
        let s = self.state.lock().expect("scheduler");
        let times = (0..s.n)
            .map(|p| {
                (
                    s.invoked[p].unwrap_or(0),
                    s.responded[p].unwrap_or(u64::MAX),
                )
            })
            .collect();
        (s.trace.clone(), times)
    }
}

/// An Fs whose every operation is a yield point of the scheduler.
pub struct SchedFs {
    pub inner: Arc<dyn Fs>,
    pub sched: Arc<Scheduler>,
}

impl Hook for SchedFs {
    fn inner(&self) -> &dyn Fs {
        &*self.inner
    }
    fn around<T>(&self, _: Call<'_>, run: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        self.sched.gate();
        run()
    }
}
