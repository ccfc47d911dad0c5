//! Model vs real (SPEC §11): random command sequences (train in every mode with an optional
//! explicit variant over three identities, with complete / failing / killed trainers; damage to
//! variant files and to cache files; cache repair; status) run against the reference state
//! machine in `models/` and against the real orchestrator, comparing after every command the
//! decision, the exit kind, and the observable projection (variant states with reasons, the
//! valid cache records, and latest/index when the model says they must be consistent).
//! Runs on SimFs (many sequences) and on OsFs in real temp dirs (fewer).

mod support;

use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use support::harness::{Sandbox, TrainerScript};
use trainctl::cache::Cache;
use trainctl::completion::Depth;
use trainctl::config::schema::RunMode;
use trainctl::fs::Fs;
use trainctl::plan::Decision;
use trainctl::plan::VariantOracle;
use trainctl_models::decision::{ErrorKind as MErr, Expected, Mode};
use trainctl_models::machine::{
    CacheDamage, Command, Exit, Model, Outcome, Projection, Response, VariantDamage, IDENTITIES,
};

const MAX_ENTRIES: usize = 3;

thread_local! {
    /// The prepared (audited) sandbox every SimFs case runs in a `sibling` of.
    static SIM_TEMPLATE: Sandbox = {
        let extra = [format!(
            "paths:cache_strategies.final_training.index.max_entries={MAX_ENTRIES}"
        )];
        let scratch = Arc::new(trainctl::fs::sim::SimFs::new());
        Sandbox::audited(scratch.clone(), Some(&scratch), IDENTITIES, &extra)
    };
}

/// The reference side: the model plus the response to the last command.
#[derive(Clone, Debug)]
struct RefState {
    model: Model,
    last: Option<Response>,
}

struct Reference;

fn mode_strategy() -> impl Strategy<Value = Mode> {
    prop_oneof![
        3 => Just(Mode::ReuseIfExists),
        2 => Just(Mode::ForceNew),
        3 => Just(Mode::ResumeIfIncomplete),
    ]
}

fn command_strategy() -> impl Strategy<Value = Command> {
    let train = (
        0..IDENTITIES,
        mode_strategy(),
        prop::option::weighted(0.25, 1u64..6),
        prop_oneof![6 => Just(Outcome::Complete), 1 => Just(Outcome::Fail), 2 => Just(Outcome::Killed)],
    )
        .prop_map(|(identity, mode, explicit_variant, outcome)| Command::Train {
            identity,
            mode,
            explicit_variant,
            outcome,
        });
    let damage = (
        0..IDENTITIES,
        0usize..8,
        prop_oneof![
            Just(VariantDamage::DeleteMetadata),
            Just(VariantDamage::TruncateMetadata),
            Just(VariantDamage::DeleteMetrics),
            Just(VariantDamage::DeleteWeights),
            Just(VariantDamage::TruncateWeights),
            Just(VariantDamage::DeleteCheckpointDir),
        ],
    )
        .prop_map(|(identity, pick, damage)| Command::DamageVariant {
            identity,
            pick,
            damage,
        });
    let cache = prop_oneof![
        Just(CacheDamage::TruncateLatest),
        Just(CacheDamage::DeleteLatest),
        Just(CacheDamage::TruncateIndex),
        Just(CacheDamage::DeleteIndex),
        (0usize..8).prop_map(|pick| CacheDamage::DeleteRecord { pick }),
        (0usize..8).prop_map(|pick| CacheDamage::TruncateRecord { pick }),
    ]
    .prop_map(Command::DamageCache);
    prop_oneof![
        10 => train,
        3 => damage,
        2 => cache,
        1 => Just(Command::RepairCache),
        1 => Just(Command::Status),
    ]
}

impl ReferenceStateMachine for Reference {
    type State = RefState;
    type Transition = Command;

    fn init_state() -> BoxedStrategy<RefState> {
        Just(RefState {
            model: Model::new(MAX_ENTRIES),
            last: None,
        })
        .boxed()
    }

    fn transitions(_: &RefState) -> BoxedStrategy<Command> {
        command_strategy().boxed()
    }

    fn apply(mut state: RefState, command: &Command) -> RefState {
        state.last = Some(state.model.step(command));
        state
    }

    fn preconditions(state: &RefState, command: &Command) -> bool {
        state.model.precondition(command)
    }
}

/// Which filesystem the real side runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Backend {
    Sim,
    Os,
}

/// The real side: the orchestrator in a sandbox, and the commands applied so far (written as
/// the failure trace when a comparison fails).
pub struct Real {
    sandbox: Sandbox,
    backend: Backend,
    history: Vec<Command>,
}

/// Commands applied per backend (Sim, Os) since the first sandbox of that backend: with
/// `TRAINCTL_STATS=1` every dropped `Real` prints the running total (`cargo xtask bench`).
static COMMANDS: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];
static STARTED: [std::sync::OnceLock<std::time::Instant>; 2] =
    [std::sync::OnceLock::new(), std::sync::OnceLock::new()];

fn backend_index(backend: &Backend) -> usize {
    match backend {
        Backend::Sim => 0,
        Backend::Os => 1,
    }
}

impl Drop for Real {
    fn drop(&mut self) {
        if std::env::var_os("TRAINCTL_STATS").is_none() {
            return;
        }
        let i = backend_index(&self.backend);
        let secs = STARTED[i].get().map_or(0.0, |t| t.elapsed().as_secs_f64());
        let count = COMMANDS[i].load(std::sync::atomic::Ordering::Relaxed);
        let test = [
            "model_agrees_with_orchestrator_on_simfs",
            "model_agrees_with_orchestrator_on_osfs",
        ][i];
        let stats = serde_json::json!({"target": "model_vs_real", "test": test,
            "measure": "commands (incl. generation, model, checks)", "count": count, "secs": secs});
        eprintln!("TRAINCTL-STATS {stats}");
    }
}

fn run_mode(mode: Mode) -> RunMode {
    match mode {
        Mode::ReuseIfExists => RunMode::ReuseIfExists,
        Mode::ForceNew => RunMode::ForceNew,
        Mode::ResumeIfIncomplete => RunMode::ResumeIfIncomplete,
        Mode::ContinueFromPrevious => RunMode::ContinueFromPrevious,
    }
}

fn expected_of(decision: &trainctl::error::Result<Decision>) -> Expected {
    match decision {
        Ok(Decision::New { variant }) => Expected::New { variant: *variant },
        Ok(Decision::Reuse { variant }) => Expected::Reuse { variant: *variant },
        Ok(Decision::Resume { variant }) => Expected::Resume { variant: *variant },
        Ok(Decision::Continue { variant }) => Expected::Continue { variant: *variant },
        Err(e) => Expected::Error(match e.kind {
            trainctl::error::ErrorKind::VariantIncomplete => MErr::VariantIncomplete,
            trainctl::error::ErrorKind::Busy => MErr::Busy,
            trainctl::error::ErrorKind::ParentNotFound => MErr::ParentNotFound,
            trainctl::error::ErrorKind::ParentIncomplete => MErr::ParentIncomplete,
            other => panic!("plan failed with {other}: {e}"),
        }),
    }
}

impl Real {
    fn new(backend: Backend) -> Real {
        STARTED[backend_index(&backend)].get_or_init(std::time::Instant::now);
        let extra = [format!(
            "paths:cache_strategies.final_training.index.max_entries={MAX_ENTRIES}"
        )];
        let sandbox = match backend {
            Backend::Os => Sandbox::audited(Arc::new(trainctl::fs::OsFs), None, IDENTITIES, &extra),
            // A sibling of one prepared sandbox: config and digests once per test thread.
            Backend::Sim => SIM_TEMPLATE.with(|template| {
                let sim = Arc::new(trainctl::fs::sim::SimFs::new());
                template.sibling(sim.clone(), &sim)
            }),
        };
        Real {
            sandbox,
            backend,
            history: Vec::new(),
        }
    }

    /// Writes the commands applied so far (the failing sequence) and returns its path.
    fn write_trace(&self) -> PathBuf {
        let dir = support::failure_dir();
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("model_vs_real-{:?}.json", self.backend).to_lowercase());
        let trace = serde_json::json!({
            "target": "model_vs_real",
            "backend": format!("{:?}", self.backend),
            "commands": self.history,
        });
        let _ = std::fs::write(&path, serde_json::to_vec_pretty(&trace).unwrap_or_default());
        path
    }

    fn job(&self, identity: usize) -> &trainctl::job::Job {
        &self.sandbox.jobs[identity]
    }

    fn train(
        &self,
        identity: usize,
        mode: Mode,
        explicit: Option<u64>,
        outcome: Outcome,
    ) -> (Expected, Exit) {
        let mode = run_mode(mode);
        // The decision, as `plan` makes it, before executing.
        let planned = self.sandbox.plan(identity, mode, explicit);
        let script = match outcome {
            Outcome::Complete => TrainerScript::Complete,
            Outcome::Fail => TrainerScript::Fail,
            Outcome::Killed => TrainerScript::KillOrchestrator,
        };
        let (result, killed) = self.sandbox.train(identity, mode, explicit, script);
        let expected = expected_of(&planned);
        let exit = match (&result, killed) {
            (_, true) => Exit::Killed,
            (Ok(report), false) => {
                assert_eq!(
                    Ok(report.decision),
                    planned.map_err(|e| e.kind),
                    "train executed a different decision than plan made"
                );
                Exit::Ok
            }
            (Err(e), false) if e.kind == trainctl::error::ErrorKind::TrainingFailed => {
                Exit::TrainingFailed
            }
            (Err(_), false) if matches!(expected, Expected::Error(_)) => Exit::Error,
            (Err(e), false) => panic!("train failed unexpectedly: {e}"),
        };
        (expected, exit)
    }

    fn cache(&self) -> Cache<'_> {
        self.sandbox.cache()
    }

    fn damage_variant(&self, identity: usize, pick: usize, damage: VariantDamage) {
        let job = self.job(identity);
        let host = support::host();
        let facts = host.facts(600_000);
        let variants = trainctl::observe::FsVariants::scan(
            &*self.sandbox.fs,
            &job.layout,
            &job.identity,
            &facts,
        )
        .expect("scan");
        let numbers: Vec<u64> = variants.numbers().iter().copied().collect();
        if numbers.is_empty() {
            return;
        }
        let dir = job
            .layout
            .variant_dir(&job.identity, numbers[pick % numbers.len()])
            .expect("dir");
        let fs = &*self.sandbox.fs;
        let truncate = |p: &Path| {
            if let Ok(bytes) = fs.read(p) {
                fs.write(p, &bytes[..bytes.len() / 2]).expect("truncate");
            }
        };
        let remove = |p: &Path| {
            let _ = fs.remove_file(p);
        };
        match damage {
            VariantDamage::DeleteMetadata => remove(&dir.join("metadata.json")),
            VariantDamage::TruncateMetadata => truncate(&dir.join("metadata.json")),
            VariantDamage::DeleteMetrics => remove(&dir.join("metrics.json")),
            VariantDamage::DeleteWeights => remove(&dir.join("checkpoint/model.safetensors")),
            VariantDamage::TruncateWeights => truncate(&dir.join("checkpoint/model.safetensors")),
            VariantDamage::DeleteCheckpointDir => {
                let _ = fs.remove_dir_all(&dir.join("checkpoint"));
            }
        }
    }

    /// Record files in creation order (names sort by timestamp).
    fn record_files(&self) -> Vec<PathBuf> {
        let cache = self.cache();
        let mut names = cache.record_names().expect("record names");
        names.reverse();
        names
            .into_iter()
            .map(|n| cache.settings.dir.join(n))
            .collect()
    }

    fn damage_cache(&self, damage: CacheDamage) {
        let cache = self.cache();
        let fs = &*self.sandbox.fs;
        let latest = cache.settings.dir.join(&cache.settings.latest_name);
        let index = cache.settings.dir.join(&cache.settings.index_name);
        let truncate = |p: &Path| {
            if let Ok(bytes) = fs.read(p) {
                fs.write(p, &bytes[..bytes.len() / 2]).expect("truncate");
            }
        };
        let records = self.record_files();
        match damage {
            CacheDamage::TruncateLatest => truncate(&latest),
            CacheDamage::DeleteLatest => {
                let _ = fs.remove_file(&latest);
            }
            CacheDamage::TruncateIndex => truncate(&index),
            CacheDamage::DeleteIndex => {
                let _ = fs.remove_file(&index);
            }
            CacheDamage::DeleteRecord { pick } if !records.is_empty() => {
                fs.remove_file(&records[pick % records.len()])
                    .expect("delete record");
            }
            CacheDamage::TruncateRecord { pick } if !records.is_empty() => {
                truncate(&records[pick % records.len()])
            }
            CacheDamage::DeleteRecord { .. } | CacheDamage::TruncateRecord { .. } => {}
        }
    }

    /// The observable state, in the model's terms.
    fn projection(&self) -> Projection {
        let mut variants: [BTreeMap<u64, String>; IDENTITIES] = Default::default();
        let mut by_subject = BTreeMap::new();
        for (i, states) in variants.iter_mut().enumerate() {
            *states = self.sandbox.variant_states(i, Depth::Sizes);
            for v in 1..=64u64 {
                by_subject.insert(self.sandbox.subject(i, v), (i, v));
            }
        }
        let cache = self.cache();
        let id_of = |name: &str| -> Option<(usize, u64)> {
            let record = cache.read_record(name)?;
            by_subject.get(&record.subject).copied()
        };
        let records: Vec<(usize, u64)> = cache
            .record_names()
            .expect("names")
            .iter()
            .filter_map(|n| id_of(n))
            .collect();
        let read_json = |p: PathBuf| -> Option<serde_json::Value> {
            serde_json::from_slice(&self.sandbox.fs.read(&p).ok()?).ok()
        };
        let latest = read_json(cache.settings.dir.join(&cache.settings.latest_name))
            .and_then(|d| d["record"].as_str().and_then(id_of));
        let index: Vec<(usize, u64)> =
            read_json(cache.settings.dir.join(&cache.settings.index_name))
                .and_then(|d| d["entries"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|e| e["record"].as_str().and_then(id_of))
                .collect();
        Projection {
            variants,
            records,
            views: Some((latest, index)),
        }
    }
}

/// Compares the projections; on a difference, writes the trace and fails with the replay
/// command.
fn check_projection(real: &Real, model: &Projection) {
    let got = real.projection();
    let mut problems = Vec::new();
    if got.variants != model.variants {
        problems.push(format!(
            "variant states differ:\n  real  {:?}\n  model {:?}",
            got.variants, model.variants
        ));
    }
    if got.records != model.records {
        problems.push(format!(
            "valid cache records differ (newest first):\n  real  {:?}\n  model {:?}",
            got.records, model.records
        ));
    }
    if let Some(views) = &model.views {
        if got.views.as_ref() != Some(views) {
            problems.push(format!(
                "latest/index differ from the records:\n  real  {:?}\n  model {views:?}",
                got.views
            ));
        }
    }
    let violations = real.sandbox.lease_violations();
    if !violations.is_empty() {
        problems.push(format!("lease law broken: {violations:?}"));
    }
    if !problems.is_empty() {
        fail(real, &problems.join("\n"));
    }
}

fn fail(real: &Real, what: &str) -> ! {
    let path = real.write_trace();
    panic!(
        "{what}\nafter {} commands; trace: {}\nreplay exactly: TRAINCTL_REPLAY={} cargo test --release --test model_vs_real -- replay",
        real.history.len(),
        path.display(),
        path.display()
    );
}

/// Applies one command to both sides and compares the immediate responses.
fn step(mut real: Real, expected: Option<&Response>, command: Command) -> Real {
    COMMANDS[backend_index(&real.backend)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    real.history.push(command.clone());
    match (&command, expected) {
        (
            Command::Train {
                identity,
                mode,
                explicit_variant,
                outcome,
            },
            Some(Response::Decided { expected, exit }),
        ) => {
            let (got, got_exit) = real.train(*identity, *mode, *explicit_variant, *outcome);
            if (&got, &got_exit) != (expected, exit) {
                fail(
                    &real,
                    &format!("{command:?}: real {got:?}/{got_exit:?}, model {expected:?}/{exit:?}"),
                );
            }
        }
        (
            Command::DamageVariant {
                identity,
                pick,
                damage,
            },
            _,
        ) => real.damage_variant(*identity, *pick, *damage),
        (Command::DamageCache(d), _) => real.damage_cache(*d),
        (Command::RepairCache, _) => {
            real.cache().repair().expect("repair");
        }
        (Command::Status, _) => {
            let _ = real.projection();
        }
        (Command::Train { .. }, other) => panic!("model gave {other:?} for a train"),
    }
    real
}

/// Replays a trace (commands) on a backend, comparing after every command.
fn replay_commands(backend: Backend, commands: &[Command]) {
    let mut model = Model::new(MAX_ENTRIES);
    let mut real = Real::new(backend);
    check_projection(&real, &model.projection());
    for command in commands {
        if !model.precondition(command) {
            continue;
        }
        let response = model.step(command);
        real = step(real, Some(&response), command.clone());
        check_projection(&real, &model.projection());
    }
}

/// Replays a trace file (`{"backend": "Sim"|"Os", "commands": [...]}`).
fn replay_file(path: &Path) {
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("read trace"))
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let backend = if trace["backend"] == "Os" {
        Backend::Os
    } else {
        Backend::Sim
    };
    let commands: Vec<Command> = serde_json::from_value(trace["commands"].clone())
        .unwrap_or_else(|e| panic!("{}: bad commands: {e}", path.display()));
    replay_commands(backend, &commands);
}

/// Committed regression traces (`fixtures/regressions/model_vs_real-*.json`), once per process
/// and before the first random case of either property.
static REGRESSIONS: std::sync::Once = std::sync::Once::new();

fn run_regressions() {
    REGRESSIONS.call_once(|| {
        for path in support::regression_traces("model_vs_real-") {
            replay_file(&path);
        }
    });
}

/// The committed regressions; with `TRAINCTL_REPLAY=<file>` also that trace, exactly.
#[test]
fn replay() {
    run_regressions();
    if let Some(file) = std::env::var_os("TRAINCTL_REPLAY") {
        let path = PathBuf::from(file);
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("model_vs_real"))
        {
            replay_file(&path);
        }
    }
}

macro_rules! machine_test {
    ($name:ident, $backend:expr) => {
        struct $name;
        impl StateMachineTest for $name {
            type SystemUnderTest = Real;
            type Reference = Reference;

            fn init_test(_: &RefState) -> Real {
                run_regressions();
                Real::new($backend)
            }

            fn apply(real: Real, state: &RefState, command: Command) -> Real {
                step(real, state.last.as_ref(), command)
            }

            fn check_invariants(real: &Real, state: &RefState) {
                check_projection(real, &state.model.projection());
            }
        }
    };
}

machine_test!(OnSimFs, Backend::Sim);
machine_test!(OnOsFs, Backend::Os);

prop_state_machine! {
    #![proptest_config(support::seeded_config(support::cases(256), "model_vs_real", "model_agrees_with_orchestrator_on_simfs"))]

    /// Thousands of commands per run on the simulated filesystem.
    #[test]
    fn model_agrees_with_orchestrator_on_simfs(sequential 1..40 => OnSimFs);
}

prop_state_machine! {
    #![proptest_config(support::seeded_config(support::cases(24), "model_vs_real", "model_agrees_with_orchestrator_on_osfs"))]

    /// The same on the real filesystem in a temp dir.
    #[test]
    fn model_agrees_with_orchestrator_on_osfs(sequential 1..25 => OnOsFs);
}
