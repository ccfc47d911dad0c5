//! Model vs real (docs/contract.md, "Verification suite"): random command sequences (train in every
//! mode with an optional explicit variant over three identities, with complete / failing / killed
//! trainers; damage to variant files and to cache files; cache repair; status) run against the
//! reference state machine in `models/` and against the real orchestrator, comparing after every
//! command the decision, the exit kind, and the observable projection (variant states with reasons,
//! the valid cache records, and latest/index when the model says they must be consistent), and
//! the tracked runs a recording tracking store holds (docs/contract.md, "Tracking of final
//! training": one run per variant, its name with auto-increment, its status, `code.interrupted`
//! after a RESUME). Runs on SimFs (many sequences) and on OsFs in real temp dirs (fewer); two
//! smaller SimFs properties run with tracking disabled (no runs at all) and with a store that fails
//! at a random call (outputs and caches exactly as the model says, whatever tracking did).

use crate::support;

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
use trainctl::track::recording::{Fault, RecordingTracker};
use trainctl_models::decision::{ErrorKind as MErr, Expected, Mode};
use trainctl_models::machine::{
    CacheDamage, Command, ConvertFrom, Converted, Exit, Invalid, Mirror, Model, Outcome,
    Projection, Response, Retention, RunState, Runs, TrackedRun, Tracking, VariantDamage,
    IDENTITIES,
};

const MAX_ENTRIES: usize = 3;

/// What a latest or index entry projects to when the record it names is missing, corrupt,
/// or of no identity of the campaign.
const NAMES_NO_RECORD: (usize, u64) = (usize::MAX, 0);

/// What the conversion projection gets when a file lies outside every verified conversion dir.
const CONVERSION_DEBRIS: (usize, u64) = (usize::MAX, 1);

/// What the mirror projection gets for a copy that is not complete or does not verify, and
/// for a backup's leftover (a temporary name anywhere under the Drive root).
const MIRROR_BROKEN: (usize, u64) = (usize::MAX, 2);

/// The retention of traces recorded before retention was drawn.
const DEFAULT_RETENTION: Retention = Retention {
    max_entries: MAX_ENTRIES,
    max_files: None,
};

/// The retention knobs of a case: `index.max_entries` 1–4, and half the time a
/// `timestamped.max_files` of 1–4 (below, at and above the number of records a case makes).
fn retention_strategy() -> impl Strategy<Value = Retention> {
    (1usize..=4, prop::option::of(1usize..=4)).prop_map(|(max_entries, max_files)| Retention {
        max_entries,
        max_files,
    })
}

/// The `mlflow.run_name` override of the tracked properties (auto-increment on).
const RUN_NAME: &str = "final";

/// Which tracking world a property runs in.
const TRACKED: u8 = 0;
const UNTRACKED: u8 = 1;
const FAULTY: u8 = 2;

fn tracking_of(kind: u8) -> Tracking {
    match kind {
        UNTRACKED => Tracking::Disabled,
        FAULTY => Tracking::Faulty,
        _ => Tracking::AutoIncrement {
            base: RUN_NAME.into(),
        },
    }
}

thread_local! {
    /// The prepared (audited) sandbox every SimFs case runs in a `sibling` of.
    static SIM_TEMPLATE: Sandbox = {
        let extra = [format!(
            "paths:cache_strategies.final_training.index.max_entries={MAX_ENTRIES}"
        )];
        let scratch = Arc::new(trainctl::fs::sim::SimFs::new());
        // The data never matters to the model; 8 records per split keep `prepare` (run by
        // every TrainInvalid) cheap.
        let project = Arc::new(support::Project::new());
        project.shrink_dataset(8);
        Sandbox::in_project(project, scratch.clone(), Some(&scratch), IDENTITIES, &extra, true)
    };
}

/// The reference side: the model plus the response to the last command, and the fault the
/// tracking store injects (FAULTY only).
#[derive(Clone, Debug)]
struct RefState {
    model: Model,
    retention: Retention,
    last: Option<Response>,
    fault: Option<Fault>,
}

/// The reference machine of one tracking world (`TRACKED`, `UNTRACKED`, `FAULTY`).
/// The reference: tracking world `T`; `X` whether the storage has an atomic exchange (gc
/// removes abandoned variants only there).
struct Reference<const T: u8, const X: bool>;

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
        prop_oneof![6 => Just(Outcome::Complete), 1 => Just(Outcome::Fail), 2 => Just(Outcome::Killed), 1 => Just(Outcome::DiskFull)],
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
    let invalid = (
        0..IDENTITIES,
        mode_strategy(),
        prop_oneof![
            (0usize..12).prop_map(|at| Invalid::RunNameForbiddenChar { at }),
            (1usize..64).prop_map(|extra| Invalid::RunNameTooLong { extra }),
            (1usize..64).prop_map(|extra| Invalid::ExperimentNameTooLong { extra }),
            (1u64..u64::from(u32::MAX)).prop_map(|extra| Invalid::EpochsOverLimit { extra }),
            Just(Invalid::HashDimZero),
        ],
    )
        .prop_map(|(identity, mode, invalid)| Command::TrainInvalid {
            identity,
            mode,
            invalid,
        });
    prop_oneof![
        10 => train,
        3 => damage,
        2 => cache,
        1 => invalid,
        1 => Just(Command::RepairCache),
        1 => Just(Command::Status),
        2 => prop_oneof![
            Just(ConvertFrom::Latest),
            (0..IDENTITIES, 0usize..8)
                .prop_map(|(identity, pick)| ConvertFrom::Variant { identity, pick }),
        ]
        .prop_map(Command::Convert),
        1 => Just(Command::Backup),
        1 => Just(Command::TrackSync),
        1 => Just(Command::Gc),
    ]
}

impl<const T: u8, const X: bool> ReferenceStateMachine for Reference<T, X> {
    type State = RefState;
    type Transition = Command;

    fn init_state() -> BoxedStrategy<RefState> {
        let fault = if T == FAULTY {
            // A train makes ~10 tracking calls: faults land anywhere in the first few trains.
            (1u64..60, any::<bool>())
                .prop_map(|(at_call, sticky)| Some(Fault { at_call, sticky }))
                .boxed()
        } else {
            Just(None).boxed()
        };
        (fault, retention_strategy())
            .prop_map(|(fault, retention)| RefState {
                model: Model::with_retention(retention, tracking_of(T)).with_gc_exchanges(X),
                retention,
                last: None,
                fault,
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
    /// SimFs without rename flags, with hard links (NFS, bindfs).
    SimNoflags,
    /// SimFs with neither rename flags nor hard links (Drive, gcsfuse).
    SimNoflagsNolinks,
    /// OUT in a simulated object store (`BucketFs` over `SimObjects`; the project and the
    /// trainer's staging dir on SimFs): the `object` profile.
    Bucket,
}

impl Backend {
    /// Whether OUT's storage has an atomic exchange (`RENAME_EXCHANGE`): SimFs and the local
    /// disk do; posix-noflags, no-links FUSE and buckets do not.
    const fn exchanges(self) -> bool {
        matches!(self, Backend::Sim | Backend::Os)
    }
}

/// The real side: the orchestrator in a sandbox, and the commands applied so far (written as
/// the failure trace when a comparison fails).
pub struct Real {
    sandbox: Sandbox,
    backend: Backend,
    tracking: Tracking,
    retention: Retention,
    fault: Option<Fault>,
    history: Vec<Command>,
    /// The cache subject of every (identity, variant) the campaign can reach.
    by_subject: BTreeMap<String, (usize, u64)>,
    /// The incremental projection (docs/performance.md, "Engine"): what was read from OUT,
    /// kept until a mutating call touches it.
    memo: std::cell::RefCell<Memo>,
}

/// What the projection read from OUT, by path: the state of a variant dir and the identity
/// a cache record names. An entry is dropped when a mutating call named its path, an
/// ancestor or a descendant (`KillSwitch::take_touched`); every 16th projection is also
/// computed in full and compared, so a mutation that bypassed the switch fails the property
/// instead of hiding a difference.
#[derive(Default)]
struct Memo {
    variants: BTreeMap<PathBuf, String>,
    records: BTreeMap<PathBuf, Option<(usize, u64)>>,
    /// The tracked runs, as of the store's call count.
    runs: Option<(usize, Runs)>,
    /// The verified conversions, with the conversion root they were read under.
    conversions: Option<(PathBuf, std::collections::BTreeSet<(usize, u64)>)>,
    /// The Drive mirror, with the Drive root it was read under.
    mirror: Option<(PathBuf, Mirror)>,
    projections: u64,
}

impl Memo {
    fn forget(&mut self, touched: Vec<PathBuf>) {
        if touched.is_empty() {
            return;
        }
        // Byte prefixes on a component boundary (Path::starts_with and Path's order walk
        // components: slow).
        let mut touched: Vec<Vec<u8>> = touched
            .into_iter()
            .map(|t| t.into_os_string().into_encoded_bytes())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let under = |long: &[u8], short: &[u8]| {
            long.starts_with(short) && (long.len() == short.len() || long[short.len()] == b'/')
        };
        let related = |k: &Path| {
            let k = k.as_os_str().as_encoded_bytes();
            touched.iter().any(|t| under(k, t) || under(t, k))
        };
        self.variants.retain(|k, _| !related(k));
        self.records.retain(|k, _| !related(k));
        if self
            .conversions
            .as_ref()
            .is_some_and(|(root, _)| related(root))
        {
            self.conversions = None;
        }
        if self.mirror.as_ref().is_some_and(|(root, _)| related(root)) {
            self.mirror = None;
        }
    }
}

/// The campaigns of this suite: stats kind, test, quick-tier cases (`TRAINCTL_STATS=1`
/// prints one line per campaign when its last case ends: `support::stats`).
const CAMPAIGNS: [(&str, &str, u32); 7] = [
    ("mvr_simfs", "model_agrees_with_orchestrator_on_simfs", 256),
    ("mvr_osfs", "model_agrees_with_orchestrator_on_osfs", 24),
    (
        "mvr_simfs_untracked",
        "untracked_runs_leave_no_trace_in_the_store",
        32,
    ),
    (
        "mvr_simfs_faulty",
        "a_failing_tracking_store_never_changes_outputs_or_caches",
        64,
    ),
    (
        "mvr_simfs_noflags",
        "model_agrees_with_orchestrator_on_simfs_without_rename_flags",
        96,
    ),
    (
        "mvr_simfs_nolinks",
        "model_agrees_with_orchestrator_on_simfs_without_rename_flags_or_links",
        64,
    ),
    (
        "mvr_bucket",
        "model_agrees_with_orchestrator_with_out_in_a_bucket",
        96,
    ),
];

/// The campaign a sandbox belongs to (an index into `CAMPAIGNS`).
fn campaign_of(backend: Backend, tracking: &Tracking) -> usize {
    match (backend, tracking) {
        (Backend::Os, _) => 1,
        (Backend::SimNoflags, _) => 4,
        (Backend::SimNoflagsNolinks, _) => 5,
        (Backend::Bucket, _) => 6,
        (Backend::Sim, Tracking::Disabled) => 2,
        (Backend::Sim, Tracking::Faulty) => 3,
        (Backend::Sim, Tracking::AutoIncrement { .. }) => 0,
    }
}

/// The proptest config of campaign `i` (its cases scaled by the tier).
fn campaign_config(i: usize) -> proptest::test_runner::Config {
    let (_, test, quick) = CAMPAIGNS[i];
    support::seeded_config(support::cases(quick), module_path!(), test)
}

impl Real {
    fn kind(&self) -> &'static str {
        CAMPAIGNS[campaign_of(self.backend, &self.tracking)].0
    }
}

/// The storage profile of a simulated backend.
fn sim_profile(backend: Backend) -> support::SimProfile {
    match backend {
        Backend::SimNoflags => support::SimProfile::PosixNoflags,
        Backend::SimNoflagsNolinks => support::SimProfile::PosixNoflagsNolinks,
        Backend::Sim | Backend::Os | Backend::Bucket => support::SimProfile::Posix,
    }
}

impl Drop for Real {
    fn drop(&mut self) {
        let (kind, test, quick) = CAMPAIGNS[campaign_of(self.backend, &self.tracking)];
        support::stats::case_done(kind, test, support::cases(quick));
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
        Ok(Decision::Wait { variant }) => Expected::Wait { variant: *variant },
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
    fn new(
        backend: Backend,
        tracking: Tracking,
        retention: Retention,
        fault: Option<Fault>,
    ) -> Real {
        let extra = [format!(
            "paths:cache_strategies.final_training.index.max_entries={MAX_ENTRIES}"
        )];
        let sandbox = match backend {
            Backend::Os => Sandbox::audited(Arc::new(trainctl::fs::OsFs), None, IDENTITIES, &extra),
            // A sibling of one prepared sandbox: config and digests once per test thread.
            Backend::Sim | Backend::SimNoflags | Backend::SimNoflagsNolinks => {
                SIM_TEMPLATE.with(|template| {
                    let sim = Arc::new(sim_profile(backend).sim());
                    template.sibling(sim.clone(), &sim)
                })
            }
            // Create-if-absent puts time out now and then (a fixed schedule: the commands
            // vary per case), which the protocol must absorb.
            Backend::Bucket => SIM_TEMPLATE.with(|template| {
                let sim = Arc::new(sim_profile(backend).sim());
                let world = support::SimProfile::Object.world(
                    sim.clone(),
                    &template.jobs[0].layout.out,
                    0x000b_1ec7,
                );
                template.sibling(world, &sim)
            }),
        };
        let mut sandbox = sandbox;
        // The tracking world is configuration (mlflow.yaml / final_training.yaml), which no
        // identity input covers: set on the prepared jobs.
        for job in Arc::make_mut(&mut sandbox.jobs) {
            let c = &mut job.config;
            let cache = &mut c.paths.cache_strategies.final_training;
            cache.index.max_entries = Some(retention.max_entries as u64);
            cache.timestamped.max_files = retention.max_files.map(|m| m as u64);
            match &tracking {
                Tracking::Disabled => c.mlflow.tracking.training.enabled = Some(false),
                Tracking::AutoIncrement { .. } | Tracking::Faulty => {
                    c.mlflow.tracking.training.enabled = Some(true);
                    c.final_training.mlflow.run_name = Some(RUN_NAME.into());
                    let a = &mut c.mlflow.naming.run_name.auto_increment;
                    a.enabled = Some(true);
                    a.processes.final_training = Some(true);
                }
            }
        }
        let store = match fault {
            Some(f) => RecordingTracker::with_fault(f),
            None => RecordingTracker::new(),
        };
        // Artifacts are read through the orchestrator's Fs (below its kill switch).
        let files: Arc<dyn Fs> = sandbox.fs.clone();
        let switch = sandbox.fs.clone();
        sandbox.tracker = Some(Arc::new(
            store
                .reading_from(files)
                .alive_while(Arc::new(move || !switch.is_dead())),
        ));
        let by_subject = (0..IDENTITIES)
            .flat_map(|i| (1..=64u64).map(move |v| (i, v)))
            .map(|(i, v)| (sandbox.subject(i, v), (i, v)))
            .collect();
        Real {
            sandbox,
            backend,
            tracking,
            retention,
            fault,
            history: Vec::new(),
            by_subject,
            memo: Default::default(),
        }
    }

    /// The runs the recording store holds, per (identity, variant) by their tags; a run no
    /// identity claims lands under `(usize::MAX, 0)` (a difference either way).
    fn runs(&self) -> Runs {
        let tracker = self.sandbox.tracker.as_ref().expect("tracker");
        let registry = trainctl::naming::TagRegistry::defaults();
        let spec_tag = registry.name("paths", "spec_fp");
        let exec_tag = registry.name("paths", "exec_fp");
        let variant_tag = registry.name("legacy", "variant");
        let interrupted_tag = registry.name("training", "interrupted");
        let mut runs = tracker.runs();
        runs.sort_by_key(|r| r.info.start_time_ms);
        let mut out = Runs::new();
        for run in runs {
            let identity = self.sandbox.jobs.iter().position(|j| {
                run.tags.get(&spec_tag) == Some(&j.identity.spec_fp)
                    && run.tags.get(&exec_tag) == Some(&j.identity.exec_fp)
            });
            let variant = run.tags.get(&variant_tag).and_then(|v| v.parse().ok());
            let key = match (identity, variant) {
                (Some(i), Some(v)) => (i, v),
                _ => (usize::MAX, 0),
            };
            let status = match run.info.status {
                trainctl::track::RunStatus::Finished => RunState::Finished,
                trainctl::track::RunStatus::Failed => RunState::Failed,
                trainctl::track::RunStatus::Killed => RunState::Killed,
                _ => RunState::Running,
            };
            let count = out.get(&key).map_or(0, |r: &TrackedRun| r.runs);
            out.insert(
                key,
                TrackedRun {
                    runs: count + 1,
                    name: run.info.run_name.clone(),
                    status,
                    interrupted: run.tags.get(&interrupted_tag).map(String::as_str) == Some("true"),
                },
            );
        }
        out
    }

    /// Writes the commands applied so far (the failing sequence) and returns its path.
    fn write_trace(&self) -> PathBuf {
        let dir = support::failure_dir();
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("model_vs_real-{:?}.json", self.backend).to_lowercase());
        let trace = serde_json::json!({
            "target": "model_vs_real",
            "backend": format!("{:?}", self.backend),
            "tracking": match self.tracking {
                Tracking::Disabled => "disabled",
                Tracking::Faulty => "faulty",
                Tracking::AutoIncrement { .. } => "auto_increment",
            },
            "fault": self.fault.map(|f| serde_json::json!({"at_call": f.at_call, "sticky": f.sticky})),
            "retention": self.retention,
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
            Outcome::DiskFull => TrainerScript::DiskFull,
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
            (Err(e), false) if e.kind == trainctl::error::ErrorKind::NoSpace => Exit::NoSpace,
            (Err(_), false) if matches!(expected, Expected::Error(_)) => Exit::Error,
            (Err(e), false) => panic!("train failed unexpectedly: {e}"),
        };
        (expected, exit)
    }

    /// `train` with one invalid setting, as the binary runs it: the configuration is
    /// prepared again (what `config check` and `plan` check), then trained. It must be refused
    /// as `config_invalid` with OUT byte-identical and the tracking store untouched.
    fn train_invalid(&self, identity: usize, mode: Mode, invalid: Invalid) -> (Expected, Exit) {
        let job = self.sandbox.jobs[identity].with_run(run_mode(mode), None);
        let mut config = job.config.clone();
        match invalid {
            Invalid::RunNameForbiddenChar { at } => {
                let base = "final-run-name";
                let at = at.min(base.len());
                config.final_training.mlflow.run_name =
                    Some(format!("{}/{}", &base[..at], &base[at..]));
            }
            Invalid::RunNameTooLong { extra } => {
                let limit = config.naming.validate.max_length.unwrap_or(256) as usize;
                config.final_training.mlflow.run_name = Some("r".repeat(limit + extra));
            }
            Invalid::ExperimentNameTooLong { extra } => {
                config.final_training.mlflow.experiment_name = Some("e".repeat(500 + extra));
            }
            Invalid::EpochsOverLimit { extra } => {
                config.hyperparameters.epochs = trainctl::builtin::MAX_EPOCHS + extra;
            }
            Invalid::HashDimZero => {
                if let Some(doc) = std::sync::Arc::make_mut(&mut config.docs).get_mut("model") {
                    doc.tree["features"]["hash_dim"] = serde_json::json!(0);
                }
            }
        }
        // Refused before the first write: not one mutating call reaches OUT (stricter than
        // "byte-identical", and it needs no snapshot of OUT).
        let mutations = self.sandbox.fs.mutations();
        let runs_before = self.sandbox.tracker.as_ref().map(|t| t.runs());
        let host = support::host();
        let refused = match trainctl::job::prepare(config, &*self.sandbox.fs, &host) {
            Err(e) => e,
            Ok(bad) => {
                let planned = self.sandbox.plan_job(&bad);
                if let Err(e) = &planned {
                    assert_eq!(
                        e.kind,
                        trainctl::error::ErrorKind::ConfigInvalid,
                        "plan refuses what train would: {e}"
                    );
                }
                match self.sandbox.train_job(&bad, TrainerScript::Complete).0 {
                    Err(e) => e,
                    Ok(r) => fail(self, &format!("{invalid:?} was trained: {:?}", r.decision)),
                }
            }
        };
        let short =
            |e: &trainctl::error::Error| e.to_string().chars().take(300).collect::<String>();
        if self.sandbox.fs.mutations() != mutations {
            let touched = self.sandbox.fs.take_touched();
            self.memo.borrow_mut().forget(touched.clone());
            fail(
                self,
                &format!(
                    "{invalid:?} wrote to OUT before refusing: {touched:?} ({})",
                    short(&refused)
                ),
            );
        }
        if self.sandbox.tracker.as_ref().map(|t| t.runs()) != runs_before {
            fail(
                self,
                &format!(
                    "{invalid:?} reached the tracking store ({})",
                    short(&refused)
                ),
            );
        }
        let expected = match refused.kind {
            trainctl::error::ErrorKind::ConfigInvalid => Expected::Error(MErr::ConfigInvalid),
            other => fail(
                self,
                &format!(
                    "{invalid:?} refused as {other}, not config_invalid: {}",
                    short(&refused)
                ),
            ),
        };
        (expected, Exit::Error)
    }

    fn cache(&self) -> Cache<'_> {
        self.sandbox.cache()
    }

    /// The identity's existing variant numbers, ascending (what a command's `pick` indexes).
    fn variant_numbers(&self, identity: usize) -> Vec<u64> {
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
        variants.numbers().iter().copied().collect()
    }

    fn damage_variant(&self, identity: usize, pick: usize, damage: VariantDamage) {
        let job = self.job(identity);
        let numbers = self.variant_numbers(identity);
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

    /// The observable state, in the model's terms (incremental: see `Memo`).
    fn projection(&self) -> Projection {
        let mut memo = self.memo.borrow_mut();
        memo.forget(self.sandbox.fs.take_touched());
        memo.projections += 1;
        let full_check = memo.projections % 16 == 0;
        let got = self.project(&mut memo);
        if full_check {
            let full = self.project(&mut Memo::default());
            if full != got {
                drop(memo);
                fail(
                    self,
                    &format!("the incremental projection went stale:\n  incremental {got:?}\n  full        {full:?}"),
                );
            }
        }
        got
    }

    fn project(&self, memo: &mut Memo) -> Projection {
        let mut variants: [BTreeMap<u64, String>; IDENTITIES] = Default::default();
        for (i, states) in variants.iter_mut().enumerate() {
            *states = self
                .sandbox
                .variant_states_memo(i, Depth::Sizes, &mut memo.variants);
        }
        let cache = self.cache();
        let mut id_of = |name: &str| -> Option<(usize, u64)> {
            let path = cache.settings.dir.join(name);
            *memo.records.entry(path).or_insert_with(|| {
                let record = cache.read_record(name)?;
                self.by_subject.get(&record.subject).copied()
            })
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
        // A view entry naming a record that is missing, corrupt or of no identity projects
        // to `NAMES_NO_RECORD`: a difference, never silently dropped.
        let latest = read_json(cache.settings.dir.join(&cache.settings.latest_name)).map(|d| {
            d["record"]
                .as_str()
                .and_then(&mut id_of)
                .unwrap_or(NAMES_NO_RECORD)
        });
        let index: Vec<(usize, u64)> =
            read_json(cache.settings.dir.join(&cache.settings.index_name))
                .and_then(|d| d["entries"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    e["record"]
                        .as_str()
                        .and_then(&mut id_of)
                        .unwrap_or(NAMES_NO_RECORD)
                })
                .collect();
        Projection {
            variants,
            records,
            views: Some((latest, index)),
            runs: Some(self.runs_memo(memo)),
            conversions: memo
                .conversions
                .get_or_insert_with(|| {
                    (
                        self.job(0).layout.conversion_dir.clone(),
                        self.conversions(),
                    )
                })
                .1
                .clone(),
            mirror: memo
                .mirror
                .get_or_insert_with(|| (self.sandbox.drive().0, self.mirror()))
                .1
                .clone(),
            removed: self.removed(),
        }
    }

    /// `trainctl gc --apply --older-than 0s` with the tracking store back; it must not fail,
    /// and it keeps a variant only where the storage has no atomic exchange.
    fn gc(&self) {
        if let Some(tracker) = self.sandbox.tracker.as_ref() {
            tracker.heal();
        }
        let report = match self.sandbox.gc() {
            Ok(report) => report,
            Err(e) => fail(self, &format!("gc failed: {e}")),
        };
        let failed: Vec<_> = report.items.iter().filter(|i| i.error.is_some()).collect();
        if !failed.is_empty() {
            fail(self, &format!("gc could not remove: {failed:?}"));
        }
    }

    /// Per identity: the variant numbers a gc tombstone file holds (as `status` finds them).
    fn removed(&self) -> [std::collections::BTreeSet<u64>; IDENTITIES] {
        let odd = trainctl::observe::odd_variants(&*self.sandbox.fs, &self.job(0).layout);
        std::array::from_fn(|identity| {
            let job = self.job(identity);
            let dir = job
                .layout
                .identity_dir(&job.identity)
                .expect("identity dir");
            odd.iter()
                .filter(|o| o.reason == "removed_by_gc" && o.path.parent() == Some(&*dir))
                .map(|o| o.variant)
                .collect()
        })
    }

    /// `trainctl backup` on colab to the sandbox's Drive mirror; it must not fail here.
    fn backup(&self) {
        if let Err(e) = self.sandbox.backup() {
            fail(self, &format!("backup failed: {e}"));
        }
    }

    /// `trainctl track sync` with the store back (a faulty one healed first); a sync entry
    /// that failed is a difference. In the faulty world, where the model does not predict
    /// runs, every complete variant must then have exactly one FINISHED run, named as its
    /// metadata says: what the store would hold had it never failed.
    fn track_sync(&self) {
        self.sandbox.tracker.as_ref().expect("tracker").heal();
        let Some(entries) = self.sandbox.track_sync() else {
            return; // `track sync` refuses: tracking is disabled, nothing to sync
        };
        if support::stats::enabled() {
            for e in &entries {
                let action = serde_json::to_value(e.action).unwrap_or_default();
                let label = format!("TrackSync.{}", action.as_str().unwrap_or("?"));
                support::stats::command(self.kind(), &label);
            }
        }
        let failed: Vec<_> = entries
            .iter()
            .filter(|e| e.action == trainctl::track::sync::Action::Failed)
            .collect();
        if !failed.is_empty() {
            fail(
                self,
                &format!("track sync failed with the store back: {failed:?}"),
            );
        }
        if self.tracking != Tracking::Faulty {
            return;
        }
        let runs = self.runs();
        for identity in 0..IDENTITIES {
            let job = self.job(identity);
            for (v, state) in self.sandbox.variant_states(identity, Depth::Sizes) {
                if state != "complete" {
                    continue;
                }
                let dir = job.layout.variant_dir(&job.identity, v).expect("dir");
                let recorded = trainctl::train::recorded_run_name(&*self.sandbox.fs, &dir);
                let name = recorded.as_deref().unwrap_or_default();
                match runs.get(&(identity, v)) {
                    Some(run)
                        if run.runs == 1
                            && run.status == RunState::Finished
                            && run.name == name => {}
                    other => fail(
                        self,
                        &format!(
                            "after track sync, complete v{v} of identity {identity} (run name {name:?}) has {other:?} in the store, not one FINISHED run"
                        ),
                    ),
                }
            }
        }
    }

    /// What the mirror holds, read as a restore reads it (OUT's layout rebased into it).
    fn mirror(&self) -> Mirror {
        let mut mirror = Mirror::default();
        let Some(layout) = self.sandbox.mirror_layout() else {
            return mirror;
        };
        for found in self.sandbox.mirror_variants() {
            let key = match &found.completion {
                trainctl::completion::Completion::Complete(meta) => self
                    .sandbox
                    .jobs
                    .iter()
                    .position(|j| {
                        j.identity.spec_fp == meta.spec_fp && j.identity.exec_fp == meta.exec_fp
                    })
                    .map_or(MIRROR_BROKEN, |i| (i, found.variant)),
                trainctl::completion::Completion::Incomplete(_) => MIRROR_BROKEN,
            };
            mirror.variants.insert(key);
        }
        let (valid, stray) = self.sandbox.verified_conversions_in(&layout.conversion_dir);
        mirror
            .conversions
            .extend(valid.values().map(|m| self.parent_of(m)));
        if !stray.is_empty() {
            mirror.conversions.insert(MIRROR_BROKEN);
        }
        if !self.sandbox.mirror_leftovers().is_empty() {
            mirror.variants.insert(MIRROR_BROKEN);
        }
        mirror
    }

    /// The parent of a conversion manifest, as (identity, variant); `NAMES_NO_RECORD` when
    /// no identity claims it.
    fn parent_of(&self, manifest: &serde_json::Value) -> (usize, u64) {
        let parent = &manifest["parent"];
        let identity = self.sandbox.jobs.iter().position(|j| {
            parent["spec_fp"].as_str() == Some(j.identity.spec_fp.as_str())
                && parent["exec_fp"].as_str() == Some(j.identity.exec_fp.as_str())
        });
        match (identity, parent["variant"].as_u64()) {
            (Some(i), Some(v)) => (i, v),
            _ => NAMES_NO_RECORD,
        }
    }

    /// Conversion dirs whose manifest verifies, by parent. A file under the conversion root
    /// outside every such dir (staging debris, an unverifiable dir) adds `CONVERSION_DEBRIS`.
    fn conversions(&self) -> std::collections::BTreeSet<(usize, u64)> {
        let (valid, stray) = self.sandbox.verified_conversions();
        let mut out: std::collections::BTreeSet<(usize, u64)> =
            valid.values().map(|m| self.parent_of(m)).collect();
        if !stray.is_empty() {
            out.insert(CONVERSION_DEBRIS);
        }
        out
    }

    /// `convert`, as the binary runs it; a refusal must leave OUT byte-identical.
    fn convert(&self, from: ConvertFrom) -> Converted {
        let target = match from {
            ConvertFrom::Latest => trainctl::convert::From::Latest,
            ConvertFrom::Variant { identity, pick } => {
                let numbers = self.variant_numbers(identity);
                let job = self.job(identity);
                let number = numbers[pick % numbers.len()];
                trainctl::convert::From::Dir(
                    job.layout.variant_dir(&job.identity, number).expect("dir"),
                )
            }
        };
        // A refusal attempts no mutating call at all (stricter than "OUT byte-identical",
        // and it needs no snapshot of OUT).
        let mutations = self.sandbox.fs.mutations();
        match self.sandbox.convert(&target) {
            Ok(report) => {
                let parent = self.parent_of(&report.manifest);
                match report.decision {
                    "new" => Converted::New(parent),
                    "reuse" => Converted::Reuse(parent),
                    other => fail(self, &format!("convert decided {other}")),
                }
            }
            Err(e) => {
                if self.sandbox.fs.mutations() != mutations {
                    fail(self, &format!("convert failed ({e}) after writing to OUT"));
                }
                match e.kind {
                    trainctl::error::ErrorKind::ParentNotFound => Converted::ParentNotFound,
                    trainctl::error::ErrorKind::ParentIncomplete => Converted::ParentIncomplete,
                    _ => fail(self, &format!("convert failed unexpectedly: {e}")),
                }
            }
        }
    }

    fn runs_memo(&self, memo: &mut Memo) -> Runs {
        let calls = self.sandbox.tracker.as_ref().map_or(0, |t| t.call_count());
        match &memo.runs {
            Some((seen, runs)) if *seen == calls => runs.clone(),
            _ => {
                let runs = self.runs();
                memo.runs = Some((calls, runs.clone()));
                runs
            }
        }
    }
}

/// Compares the projections; on a difference, writes the trace and fails with the replay
/// command.
fn check_projection(real: &Real, model: &Projection) {
    let got = real.projection();
    let mut problems = Vec::new();
    let mut compare = |what: &str, real: &dyn std::fmt::Debug, model: &dyn std::fmt::Debug| {
        problems.push(format!("{what}:\n  real  {real:?}\n  model {model:?}"));
    };
    if got.variants != model.variants {
        compare("variant states differ", &got.variants, &model.variants);
    }
    if got.records != model.records {
        let what = "valid cache records differ (newest first)";
        compare(what, &got.records, &model.records);
    }
    if let Some(views) = model
        .views
        .as_ref()
        .filter(|v| got.views.as_ref() != Some(*v))
    {
        compare("latest/index differ from the records", &got.views, views);
    }
    if got.mirror != model.mirror {
        let what = format!(
            "the Drive mirror differs ({MIRROR_BROKEN:?}: an incomplete copy or a leftover)"
        );
        compare(&what, &got.mirror, &model.mirror);
    }
    if got.removed != model.removed {
        compare(
            "variants removed by gc (tombstones) differ",
            &got.removed,
            &model.removed,
        );
    }
    if got.conversions != model.conversions {
        let what =
            format!("verified conversions differ ({CONVERSION_DEBRIS:?}: a file outside them)");
        compare(&what, &got.conversions, &model.conversions);
    }
    if let Some(runs) = model
        .runs
        .as_ref()
        .filter(|r| got.runs.as_ref() != Some(*r))
    {
        compare("tracked runs differ", &got.runs, runs);
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
        "{what}\nafter {} commands; trace: {}\nreplay exactly: TRAINCTL_REPLAY={} {}",
        real.history.len(),
        path.display(),
        path.display(),
        support::replay_command(module_path!(), "replay")
    );
}

/// Applies one command to both sides and compares the immediate responses.
fn step(mut real: Real, expected: Option<&Response>, command: Command) -> Real {
    if support::stats::enabled() {
        let label = format!("{command:?}");
        let label = label.split([' ', '(', '{']).next().unwrap_or("?");
        support::stats::command(real.kind(), label);
    }
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
        (
            Command::TrainInvalid {
                identity,
                mode,
                invalid,
            },
            Some(Response::Decided { expected, exit }),
        ) => {
            let (got, got_exit) = real.train_invalid(*identity, *mode, *invalid);
            if (&got, &got_exit) != (expected, exit) {
                fail(
                    &real,
                    &format!("{command:?}: real {got:?}/{got_exit:?}, model {expected:?}/{exit:?}"),
                );
            }
        }
        (Command::Backup, _) => real.backup(),
        (Command::TrackSync, _) => real.track_sync(),
        (Command::Gc, _) => real.gc(),
        (Command::Convert(from), Some(Response::Converted(expected))) => {
            let got = real.convert(*from);
            if support::stats::enabled() {
                let outcome = match got {
                    Converted::New(_) => "Convert.new",
                    Converted::Reuse(_) => "Convert.reuse",
                    Converted::ParentNotFound => "Convert.parent_not_found",
                    Converted::ParentIncomplete => "Convert.parent_incomplete",
                };
                support::stats::command(real.kind(), outcome);
            }
            if &got != expected {
                fail(
                    &real,
                    &format!("{command:?}: real {got:?}, model {expected:?}"),
                );
            }
        }
        (Command::Train { .. } | Command::TrainInvalid { .. } | Command::Convert(_), other) => {
            panic!("model gave {other:?} for {command:?}")
        }
    }
    real
}

/// Replays a trace (commands) on a backend and tracking world, comparing after every command.
fn replay_commands(
    backend: Backend,
    tracking: Tracking,
    retention: Retention,
    fault: Option<Fault>,
    commands: &[Command],
) {
    let mut model =
        Model::with_retention(retention, tracking.clone()).with_gc_exchanges(backend.exchanges());
    let mut real = Real::new(backend, tracking, retention, fault);
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

/// Replays a trace file (`{"backend": "Sim"|"Os", "tracking": …, "fault": …, "retention":
/// {"max_entries": …, "max_files": …}, "commands": [...]}`; traces from before tracking
/// replay in the auto-increment world, from before retention with `DEFAULT_RETENTION`).
fn replay_file(path: &Path) {
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("read trace"))
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let backend: Backend = serde_json::from_value(trace["backend"].clone()).unwrap_or(Backend::Sim);
    let commands: Vec<Command> = serde_json::from_value(trace["commands"].clone())
        .unwrap_or_else(|e| panic!("{}: bad commands: {e}", path.display()));
    let tracking = match trace["tracking"].as_str() {
        Some("disabled") => UNTRACKED,
        Some("faulty") => FAULTY,
        _ => TRACKED,
    };
    let fault = trace["fault"]["at_call"].as_u64().map(|at_call| Fault {
        at_call,
        sticky: trace["fault"]["sticky"].as_bool().unwrap_or(false),
    });
    // Traces from before retention was drawn ran with the default knobs.
    let retention = match trace.get("retention") {
        Some(r) => serde_json::from_value(r.clone())
            .unwrap_or_else(|e| panic!("{}: bad retention: {e}", path.display())),
        None => DEFAULT_RETENTION,
    };
    replay_commands(backend, tracking_of(tracking), retention, fault, &commands);
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

/// The incremental projection's own check can fail: a change made beneath the kill switch
/// (which therefore records no touched path) leaves the memo stale, and the next full
/// projection (every 16th) names it.
#[test]
#[should_panic(expected = "the incremental projection went stale")]
fn a_change_the_kill_switch_did_not_see_is_caught_by_the_full_projection() {
    let real = Real::new(Backend::Sim, tracking_of(TRACKED), DEFAULT_RETENTION, None);
    let (_, exit) = real.train(0, Mode::ForceNew, None, Outcome::Complete);
    assert_eq!(exit, Exit::Ok);
    assert_eq!(
        real.projection().variants[0].get(&1).map(String::as_str),
        Some("complete")
    );
    let job = real.job(0);
    let metadata = job
        .layout
        .variant_dir(&job.identity, 1)
        .expect("dir")
        .join("metadata.json");
    real.sandbox
        .fs
        .inner
        .remove_file(&metadata)
        .expect("remove beneath the switch");
    for _ in 0..16 {
        let _ = real.projection();
    }
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
    ($name:ident, $backend:expr, $tracking:expr) => {
        struct $name;
        impl StateMachineTest for $name {
            type SystemUnderTest = Real;
            type Reference = Reference<$tracking, { $backend.exchanges() }>;

            fn init_test(state: &RefState) -> Real {
                run_regressions();
                Real::new(
                    $backend,
                    tracking_of($tracking),
                    state.retention,
                    state.fault,
                )
            }

            fn apply(real: Real, state: &RefState, command: Command) -> Real {
                step(real, state.last.as_ref(), command)
            }

            fn check_invariants(real: &Real, state: &RefState) {
                let projection = state.model.projection();
                if support::stats::enabled() {
                    support::stats::state(real.kind(), support::stats::hash_debug(&projection));
                }
                check_projection(real, &projection);
            }
        }
    };
}

machine_test!(OnSimFs, Backend::Sim, TRACKED);
machine_test!(OnOsFs, Backend::Os, TRACKED);
machine_test!(UntrackedOnSimFs, Backend::Sim, UNTRACKED);
machine_test!(FaultyTrackingOnSimFs, Backend::Sim, FAULTY);
machine_test!(OnSimFsNoflags, Backend::SimNoflags, TRACKED);
machine_test!(OnSimFsNoflagsNolinks, Backend::SimNoflagsNolinks, TRACKED);
machine_test!(WithOutInABucket, Backend::Bucket, TRACKED);

prop_state_machine! {
    #![proptest_config(campaign_config(0))]

    /// Thousands of commands per run on the simulated filesystem.
    #[test]
    fn model_agrees_with_orchestrator_on_simfs(sequential 1..40 => OnSimFs);
}

prop_state_machine! {
    #![proptest_config(campaign_config(1))]

    /// The same on the real filesystem in a temp dir.
    #[test]
    fn model_agrees_with_orchestrator_on_osfs(sequential 1..25 => OnOsFs);
}

prop_state_machine! {
    #![proptest_config(campaign_config(2))]

    /// `tracking.training.enabled: false`: outputs and caches as the model says, no runs.
    #[test]
    fn untracked_runs_leave_no_trace_in_the_store(sequential 1..25 => UntrackedOnSimFs);
}

prop_state_machine! {
    #![proptest_config(campaign_config(3))]

    /// The store fails at the k-th call (once, or from then on): every decision, exit,
    /// variant state and cache record is exactly the model's (which knows no tracking).
    #[test]
    fn a_failing_tracking_store_never_changes_outputs_or_caches(sequential 1..25 => FaultyTrackingOnSimFs);
}

prop_state_machine! {
    #![proptest_config(campaign_config(4))]

    /// The same model on a filesystem without rename flags but with hard links (NFS, bindfs:
    /// the `posix-noflags` protocol, files published by link + unlink).
    #[test]
    fn model_agrees_with_orchestrator_on_simfs_without_rename_flags(sequential 1..40 => OnSimFsNoflags);
}

prop_state_machine! {
    #![proptest_config(campaign_config(5))]

    /// The same model on a filesystem with neither rename flags nor hard links (Drive,
    /// gcsfuse: files published by O_EXCL create at their final name).
    #[test]
    fn model_agrees_with_orchestrator_on_simfs_without_rename_flags_or_links(sequential 1..40 => OnSimFsNoflagsNolinks);
}

prop_state_machine! {
    #![proptest_config(campaign_config(6))]

    /// The same model with OUT in an object store (the `object` profile: create-if-absent
    /// claims, whole-object puts, no rename; the trainer stages locally and its outputs are
    /// uploaded): every backend agrees with one model.
    #[test]
    fn model_agrees_with_orchestrator_with_out_in_a_bucket(sequential 1..40 => WithOutInABucket);
}
