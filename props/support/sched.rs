//! A deterministic, seeded scheduler for N logical processes (threads) over one Fs: every Fs
//! operation is a yield point, and exactly one process runs between two yield points, chosen
//! by the seed (uniform random, or PCT-style priorities with random change points). The same
//! seed and the same programs give the same interleaving, which the schedule trace records.

use std::io;
use std::sync::{Arc, Mutex};
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
///
/// The processes are stackful coroutines on the calling thread (corosensei): a yield point
/// suspends the running one back to [`Scheduler::run`], which picks the next and resumes
/// it. One context switch costs nanoseconds, where handing the turn between OS threads
/// through a condition variable cost microseconds (docs/performance.md, "scheduler").
pub struct Scheduler {
    state: Mutex<State>,
}

type Yielder = corosensei::Yielder<(), ()>;

thread_local! {
    /// The process running now (`None` outside `run`, and on threads it does not schedule).
    static ME: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    /// The running coroutine's yielder (null outside a coroutine).
    static YIELDER: std::cell::Cell<*const Yielder> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// Each process's stack: larger than a thread's default, and only touched pages are mapped.
const STACK_BYTES: usize = 8 << 20;

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
                waiting: vec![true; n],
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
        })
    }

    /// Picks the next process among those waiting (every process is waiting or finished
    /// whenever control is back in `run`); `None` once all have finished.
    fn pick(s: &mut State) -> Option<usize> {
        let ready: Vec<usize> = (0..s.n).filter(|p| s.waiting[*p]).collect();
        if ready.is_empty() {
            return None;
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
        Some(chosen)
    }

    /// A yield point of the calling process; returns when it may perform its next operation.
    /// Outside a scheduled process (setup code, another thread) it returns at once.
    pub fn gate(&self) {
        let Some(me) = ME.with(|m| m.get()) else {
            return;
        };
        let yielder = YIELDER.with(|y| y.get());
        assert!(
            !yielder.is_null(),
            "a scheduled process runs in a coroutine"
        );
        {
            let mut s = self.state.lock().expect("scheduler");
            s.granted = None;
            s.waiting[me] = true;
        }
        // SAFETY: `YIELDER` holds the yielder of the coroutine running now (set when its body
        // starts and restored below after every resume), and that body is still on the
        // stack, since this call comes from inside it: the reference is live.
        unsafe { &*yielder }.suspend(());
        YIELDER.with(|y| y.set(yielder));
    }

    /// Runs `programs` as scheduled processes; returns their results in order.
    pub fn run<T>(self: &Arc<Self>, programs: Vec<Box<dyn FnOnce() -> T + Send + '_>>) -> Vec<T> {
        let n = programs.len();
        let mut results: Vec<Option<T>> = (0..n).map(|_| None).collect();
        let coroutines: Vec<_> = programs
            .into_iter()
            .map(|program| {
                let stack = corosensei::stack::DefaultStack::new(STACK_BYTES).expect("stack");
                corosensei::ScopedCoroutine::with_stack(stack, move |y: &Yielder, ()| {
                    YIELDER.with(|c| c.set(y as *const Yielder));
                    program()
                })
            })
            .collect();
        nest(coroutines, Vec::new(), &mut |refs| loop {
            let next = Scheduler::pick(&mut self.state.lock().expect("scheduler"));
            let Some(i) = next else { break };
            ME.with(|m| m.set(Some(i)));
            let out = refs[i].resume(());
            ME.with(|m| m.set(None));
            YIELDER.with(|y| y.set(std::ptr::null()));
            if let corosensei::CoroutineResult::Return(value) = out {
                results[i] = Some(value);
                let mut s = self.state.lock().expect("scheduler");
                s.finished[i] = true;
                s.waiting[i] = false;
                s.granted = None;
                s.responded[i] = Some(s.steps);
            }
        });
        results
            .into_iter()
            .map(|r| r.expect("every process ran to its end"))
            .collect()
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

type Coroutine<'a, T> = corosensei::ScopedCoroutine<'a, (), (), T>;
type CoroutineRef<'r, T> =
    corosensei::ScopedCoroutineRef<'r, (), (), T, corosensei::stack::DefaultStack>;

/// Opens one scope per coroutine (each must be used inside its scope), then runs `body` over
/// all of them.
fn nest<'r, T>(
    mut rest: Vec<Coroutine<'_, T>>,
    mut refs: Vec<CoroutineRef<'r, T>>,
    body: &mut dyn FnMut(&mut Vec<CoroutineRef<'_, T>>),
) {
    if rest.is_empty() {
        body(&mut refs);
        return;
    }
    let first = rest.remove(0);
    first.scope(move |r| {
        let mut refs: Vec<CoroutineRef<'_, T>> = refs;
        refs.push(r);
        nest(rest, refs, body);
    });
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
