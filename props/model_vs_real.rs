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
use support::harness::{Clock, FsTrainer, KillSwitch, Processes, TrainerScript};
use trainctl::cache::{Cache, CacheKind, CacheSettings};
use trainctl::completion::{self, Completion, Depth};
use trainctl::fs::Fs;
use trainctl::plan::VariantOracle;
use trainctl_models::decision::{ErrorKind as MErr, Expected, Mode};
use trainctl_models::machine::{
    CacheDamage, Command, Exit, Model, Outcome, Projection, Response, VariantDamage, IDENTITIES,
};

const MAX_ENTRIES: usize = 3;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sim,
    Os,
}

/// The real side: a project root on disk (config, dataset), OUT on the chosen Fs.
pub struct Real {
    project: support::Project,
    fs: Arc<KillSwitch>,
    processes: Processes,
    clock: Clock,
    /// Each identity's job, prepared once (run mode and variant are not identity inputs).
    jobs: Vec<trainctl::job::Job>,
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::ReuseIfExists => "reuse_if_exists",
        Mode::ForceNew => "force_new",
        Mode::ResumeIfIncomplete => "resume_if_incomplete",
        Mode::ContinueFromPrevious => "continue_from_previous",
    }
}

fn identity_overrides(identity: usize) -> Vec<String> {
    vec![
        format!("seed.random_seed={}", 100 + identity),
        format!("paths:cache_strategies.final_training.index.max_entries={MAX_ENTRIES}"),
    ]
}

/// Copies every file under `dir` (on disk) into the simulated filesystem, durably.
fn seed_sim(sim: &trainctl::fs::sim::SimFs, dir: &Path) {
    for (path, bytes) in support::snapshot(dir) {
        if let Some(bytes) = bytes {
            sim.write_file_durably(&path, &bytes)
                .expect("seed the simulated disk");
        }
    }
}

impl Real {
    fn new(backend: Backend) -> Real {
        let project = support::Project::new();
        let inner: Arc<dyn Fs> = match backend {
            Backend::Os => Arc::new(trainctl::fs::OsFs),
            Backend::Sim => {
                let sim = trainctl::fs::sim::SimFs::new();
                seed_sim(&sim, &project.root().join("fixtures/datasets"));
                Arc::new(sim)
            }
        };
        let mut real = Real {
            project,
            fs: Arc::new(KillSwitch::new(inner)),
            processes: Processes::default(),
            clock: Clock::default(),
            jobs: Vec::new(),
        };
        real.jobs = (0..IDENTITIES).map(|i| real.load_job(i)).collect();
        real
    }

    fn root(&self) -> &Path {
        self.project.root()
    }

    fn job(&self, identity: usize) -> &trainctl::job::Job {
        &self.jobs[identity]
    }

    /// Loads and prepares the job of `identity`.
    fn load_job(&self, identity: usize) -> trainctl::job::Job {
        let overrides = identity_overrides(identity);
        let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
        let config = trainctl::config::load(
            &support::opts(self.root(), &refs),
            self.root(),
            &support::no_vars,
        )
        .expect("config loads");
        let start_time = |pid: u32| self.processes.start_time(pid);
        let host = trainctl::job::Host {
            process_start_time: &start_time,
            ..support::host()
        };
        trainctl::job::prepare(config, &*self.fs, &host).expect("job prepares")
    }

    fn train(
        &self,
        identity: usize,
        mode: Mode,
        explicit: Option<u64>,
        outcome: Outcome,
    ) -> (Expected, Exit) {
        let run_mode = trainctl::config::schema::RunMode::parse(mode_name(mode)).expect("mode");
        let job = self.jobs[identity].with_run(run_mode, explicit);
        let pid = self.processes.start();
        let start_time = |pid: u32| self.processes.start_time(pid);
        let now_us = || self.clock.now_us();
        let host = trainctl::job::Host {
            process_start_time: &start_time,
            now_ms: now_us() / 1000,
            ..support::host()
        };
        // The decision, as `plan` makes it, before executing.
        let facts = host.facts(job.config.lease_timeout_s() * 1000);
        let planned = {
            let variants =
                trainctl::observe::FsVariants::scan(&*self.fs, &job.layout, &job.identity, &facts)
                    .expect("scan");
            let request = trainctl::plan::Request {
                mode: job.config.mode(),
                explicit_variant: job.config.final_training.variant.number,
                parent: job.parent_state.clone(),
                target_epochs: job.config.hyperparameters.epochs,
            };
            trainctl::plan::decide(&request, &variants)
        };
        let script = match outcome {
            Outcome::Complete => TrainerScript::Complete,
            Outcome::Fail => TrainerScript::Fail,
            Outcome::Killed => TrainerScript::KillOrchestrator,
        };
        let trainer = FsTrainer {
            fs: &self.fs,
            script,
        };
        let ctx = trainctl::train::Context {
            fs: &*self.fs,
            host: &host,
            owner: trainctl::lease::Owner {
                host: "test-host".into(),
                pid,
                start_time: 7,
            },
            trainer: &trainer,
            now_us: &now_us,
        };
        let result = trainctl::train::train(&job, &ctx);
        let killed = self.fs.is_dead();
        self.fs.revive();
        self.processes.exit();
        let expected = match &planned {
            Ok(d) => match *d {
                trainctl::plan::Decision::New { variant } => Expected::New { variant },
                trainctl::plan::Decision::Reuse { variant } => Expected::Reuse { variant },
                trainctl::plan::Decision::Resume { variant } => Expected::Resume { variant },
                trainctl::plan::Decision::Continue { variant } => Expected::Continue { variant },
            },
            Err(e) => Expected::Error(match e.kind {
                trainctl::error::ErrorKind::VariantIncomplete => MErr::VariantIncomplete,
                trainctl::error::ErrorKind::Busy => MErr::Busy,
                trainctl::error::ErrorKind::ParentNotFound => MErr::ParentNotFound,
                trainctl::error::ErrorKind::ParentIncomplete => MErr::ParentIncomplete,
                other => panic!("plan failed with {other}: {e}"),
            }),
        };
        let exit = match (&result, killed) {
            (_, true) => Exit::Killed,
            (Ok(report), false) => {
                assert_eq!(
                    report.decision,
                    planned.clone().expect("train succeeded, so plan did"),
                    "train executed a different decision than plan made"
                );
                Exit::Ok
            }
            (Err(e), false) if e.kind == trainctl::error::ErrorKind::TrainingFailed => {
                Exit::TrainingFailed
            }
            (Err(e), false) if matches!(expected, Expected::Error(_)) => {
                let _ = e;
                Exit::Error
            }
            (Err(e), false) => panic!("train failed unexpectedly: {e}"),
        };
        (expected, exit)
    }

    fn cache(&self) -> Cache<'_> {
        let job = self.job(0);
        let settings =
            CacheSettings::from_paths(&job.config.paths, &job.layout, CacheKind::FinalTraining)
                .expect("cache settings");
        Cache::new(&*self.fs, settings)
    }

    fn identity_dirs(&self) -> Vec<(&trainctl::job::Job, PathBuf)> {
        (0..IDENTITIES)
            .map(|i| {
                let job = self.job(i);
                let dir = job
                    .layout
                    .identity_dir(&job.identity)
                    .expect("identity dir");
                (job, dir)
            })
            .collect()
    }

    fn damage_variant(&self, identity: usize, pick: usize, damage: VariantDamage) {
        let job = self.job(identity);
        let host = support::host();
        let facts = host.facts(600_000);
        let variants =
            trainctl::observe::FsVariants::scan(&*self.fs, &job.layout, &job.identity, &facts)
                .expect("scan");
        let numbers: Vec<u64> = variants.numbers().iter().copied().collect();
        if numbers.is_empty() {
            return;
        }
        let dir = job
            .layout
            .variant_dir(&job.identity, numbers[pick % numbers.len()])
            .expect("dir");
        let fs = &*self.fs;
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
        let fs = &*self.fs;
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
        for (i, (job, dir)) in self.identity_dirs().into_iter().enumerate() {
            let entries = self.fs.list(&dir).unwrap_or_default();
            for e in entries.iter().filter(|e| e.is_dir) {
                let Some(v) = job.layout.parse_variant_name(&e.name) else {
                    continue;
                };
                let state = match completion::check(
                    &*self.fs,
                    &job.layout,
                    &dir.join(&e.name),
                    Some(&job.identity),
                    v,
                    Depth::Sizes,
                ) {
                    Completion::Complete(_) => "complete".to_string(),
                    Completion::Incomplete(r) => r.to_string(),
                };
                variants[i].insert(v, state);
            }
            for v in 1..=64u64 {
                by_subject.insert(
                    format!(
                        "{}/{}-{}/v{v}",
                        job.identity.model,
                        &job.identity.spec_fp[..8],
                        &job.identity.exec_fp[..8]
                    ),
                    (i, v),
                );
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
            serde_json::from_slice(&self.fs.read(&p).ok()?).ok()
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

fn check_projection(real: &Real, model: &Projection) {
    let got = real.projection();
    assert_eq!(
        got.variants, model.variants,
        "variant states differ (real left, model right)"
    );
    assert_eq!(
        got.records, model.records,
        "valid cache records differ (newest first)"
    );
    if let Some(views) = &model.views {
        assert_eq!(
            got.views.as_ref(),
            Some(views),
            "latest/index differ from the records they derive from"
        );
    }
}

macro_rules! machine_test {
    ($name:ident, $backend:expr) => {
        struct $name;
        impl StateMachineTest for $name {
            type SystemUnderTest = Real;
            type Reference = Reference;

            fn init_test(_: &RefState) -> Real {
                Real::new($backend)
            }

            fn apply(real: Real, state: &RefState, command: Command) -> Real {
                match (&command, &state.last) {
                    (
                        Command::Train {
                            identity,
                            mode,
                            explicit_variant,
                            outcome,
                        },
                        Some(Response::Decided { expected, exit }),
                    ) => {
                        let (got, got_exit) =
                            real.train(*identity, *mode, *explicit_variant, *outcome);
                        assert_eq!(&got, expected, "decision differs for {command:?}");
                        assert_eq!(&got_exit, exit, "exit differs for {command:?}");
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

            fn check_invariants(real: &Real, state: &RefState) {
                check_projection(real, &state.model.projection());
            }
        }
    };
}

machine_test!(OnSimFs, Backend::Sim);
machine_test!(OnOsFs, Backend::Os);

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: support::cases(256),
        max_shrink_iters: 4096,
        .. ProptestConfig::default()
    })]

    /// Thousands of commands per run on the simulated filesystem.
    #[test]
    fn model_agrees_with_orchestrator_on_simfs(sequential 1..40 => OnSimFs);
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: support::cases(24),
        max_shrink_iters: 1024,
        .. ProptestConfig::default()
    })]

    /// The same on the real filesystem in a temp dir.
    #[test]
    fn model_agrees_with_orchestrator_on_osfs(sequential 1..25 => OnOsFs);
}
