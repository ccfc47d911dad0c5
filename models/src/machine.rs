//! Abstract state machine of docs/contract.md, "Verification suite" for SEQUENTIAL commands
//! (variants per identity, the final_training cache records and its latest/index views); it must
//! never import from the `trainctl` crate, and it plans only through `crate::decision::decide` (one
//! decision table).

use std::collections::BTreeMap;

use crate::decision::{decide, ErrorKind, Expected, Mode, ParentView, Request, VariantView};

/// Identities the machine tracks (identity `i` is an index, not a fingerprint).
pub const IDENTITIES: usize = 3;

/// How a started trainer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// Trainer succeeds and its outputs validate: `status: completed`, a cache record.
    Complete,
    /// Trainer exits non-zero: metadata `failed`, lease released, exit TrainingFailed.
    Fail,
    /// The orchestrator process dies right after writing metadata `running`: stale lease.
    Killed,
    /// The disk fills up once the trainer starts writing (space comes back after the
    /// command): nothing more can be written, so metadata keeps `running` and the lease is
    /// not released (its owner exits: stale); no record; the run ends FAILED; exit
    /// `no_space`. The variant is resumable, never complete (docs/contract.md, "Storage
    /// errors").
    DiskFull,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VariantDamage {
    DeleteMetadata,
    TruncateMetadata,
    DeleteMetrics,
    DeleteWeights,
    TruncateWeights,
    DeleteCheckpointDir,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CacheDamage {
    TruncateLatest,
    DeleteLatest,
    TruncateIndex,
    DeleteIndex,
    DeleteRecord { pick: usize },
    TruncateRecord { pick: usize },
}

/// A setting the trainer or the tracking store refuses (the contract: refused by `plan` and
/// `train` before the first write, exit 2, OUT and the tracking store unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Invalid {
    /// `mlflow.run_name` with a forbidden character (`/`) at this position.
    RunNameForbiddenChar { at: usize },
    /// `mlflow.run_name` this many characters over the naming limit.
    RunNameTooLong { extra: usize },
    /// The MLflow experiment name this many characters over the store's 500.
    ExperimentNameTooLong { extra: usize },
    /// `training.epochs` this much over the built-in trainer's limit.
    EpochsOverLimit { extra: u64 },
    /// `model.yaml features.hash_dim: 0`.
    HashDimZero,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    Train {
        identity: usize,
        mode: Mode,
        explicit_variant: Option<u64>,
        outcome: Outcome,
    },
    /// `pick` indexes the identity's existing variants ascending, modulo their count.
    DamageVariant {
        identity: usize,
        pick: usize,
        damage: VariantDamage,
    },
    /// Record picks index the record files (valid or not) in creation order, modulo count.
    DamageCache(CacheDamage),
    RepairCache,
    Status,
    /// `train` with one invalid setting: refused, nothing changes.
    TrainInvalid {
        identity: usize,
        mode: Mode,
        invalid: Invalid,
    },
    /// `trainctl convert` (the converter itself is not modelled: it always succeeds).
    Convert(ConvertFrom),
    /// `trainctl backup` to a Drive mirror: every complete variant, every conversion and
    /// every cache dir is copied (verified, swapped in); it never fails here.
    Backup,
    /// `trainctl track sync` once the tracking store is back (a faulty store is healed
    /// first): tracked runs are left as they are (every complete variant's training already
    /// finished its run); under `Tracking::Faulty` the harness checks instead that every
    /// complete variant then has exactly one FINISHED run, named as its metadata says.
    TrackSync,
    /// `trainctl gc --apply --older-than 0s` once the tracking store is back: sequential
    /// commands leave no live lease, so every incomplete variant is abandoned. Where the
    /// storage has an atomic exchange, each is replaced by a tombstone (its number stays
    /// taken: allocation passes over it, an explicit number there is `busy`) and its run
    /// still RUNNING ends KILLED; elsewhere gc keeps them all. Complete variants, records and
    /// views are untouched (docs/contract.md, "Retention and gc").
    Gc,
}

/// Which parent `convert` is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConvertFrom {
    /// `--latest`: the complete final training (any identity: they share model and
    /// environment) whose `completed_at` is the newest.
    Latest,
    /// `--from <variant dir>`: `pick` indexes the identity's existing variants ascending,
    /// modulo their count (no variant: the command is not drawn).
    Variant { identity: usize, pick: usize },
}

/// How `convert` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Converted {
    /// Converted now: the conversion dir of this parent did not exist.
    New(RecordKey),
    /// A conversion of this parent with the same conversion config existed and verifies.
    Reuse(RecordKey),
    /// `--latest` with no complete final training: `parent_not_found`, nothing written.
    ParentNotFound,
    /// The parent is not complete: `parent_incomplete`, nothing written.
    ParentIncomplete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The command finished; for Train: the decision (or the table's error) and how it ended.
    Decided { expected: Expected, exit: Exit },
    /// `convert`.
    Converted(Converted),
    /// Non-train commands.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok,
    TrainingFailed,
    Killed,
    /// The decision table's error (variant_incomplete, parent_*, busy): nothing changes.
    Error,
    /// A storage error (`no_space`, exit 6).
    NoSpace,
}

/// A final_training cache record as (identity, variant).
pub type RecordKey = (usize, u64);

/// The final_training cache's retention knobs (`paths.yaml` `cache_strategies`):
/// `index.max_entries` and `timestamped.max_files` (`None`: keep every record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retention {
    pub max_entries: usize,
    pub max_files: Option<usize>,
}

/// (latest, index): the newest valid record and the newest `max_entries` valid ones.
pub type Views = (Option<RecordKey>, Vec<RecordKey>);

/// How the tracking store sees runs (docs/contract.md, "Tracking of final training"), for the
/// tracked-run projection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracking {
    /// `tracking.training.enabled: false`: no runs at all.
    Disabled,
    /// Enabled, final-training names from the `mlflow.run_name` override `base` with
    /// auto-increment on: `base`, `base_2`, `base_3`, … in allocation order, across identities
    /// (one OUT), fixed for the variant's lifetime.
    AutoIncrement { base: String },
    /// Enabled, but the store fails at some call (fault injection): what reaches it is not
    /// predicted; outputs and caches must be exactly as without tracking.
    Faulty,
}

/// A run's status in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    Finished,
    Failed,
    /// An abandoned attempt's run, ended once another variant of its identity completed.
    Killed,
}

/// The tracked-run view of one variant: how many runs the store has for it (docs/contract.md,
/// "Tracking of final training": one), the newest run's name and status, and whether a RESUME
/// reopened it (`code.interrupted`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedRun {
    pub runs: usize,
    pub name: String,
    pub status: RunState,
    pub interrupted: bool,
}

/// Tracked runs keyed by (identity, variant).
pub type Runs = BTreeMap<(usize, u64), TrackedRun>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Projection {
    /// Per identity: variant number → "complete" or the incompleteness reason string.
    pub variants: [BTreeMap<u64, String>; IDENTITIES],
    /// Valid final_training cache records, newest first, as (identity, variant).
    pub records: Vec<RecordKey>,
    /// (latest, index) when the views must be consistent; `None` after an unrepaired damage
    /// to latest/index/records (the real views may then be anything).
    pub views: Option<Views>,
    /// The tracked runs, when the model predicts them (`None` under `Tracking::Faulty`).
    pub runs: Option<Runs>,
    /// Parents with a published conversion dir whose manifest verifies; any other entry
    /// under the conversion root (staging debris, a dir that does not verify) is a difference.
    pub conversions: std::collections::BTreeSet<RecordKey>,
    /// The Drive mirror: variants whose copy there is complete (sha256-checked against its
    /// own manifest, as a restore reads it), and conversions whose copy verifies. A copy that
    /// is not complete, or a backup's leftover, is a difference: a backup never publishes a
    /// partial copy, and a later damage to the source never reaches the mirror.
    pub mirror: Mirror,
    /// Per identity: variant numbers gc replaced by a tombstone file.
    pub removed: [std::collections::BTreeSet<u64>; IDENTITIES],
}

/// What the Drive mirror holds (see `Projection::mirror`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mirror {
    pub variants: std::collections::BTreeSet<RecordKey>,
    pub conversions: std::collections::BTreeSet<RecordKey>,
}

/// What the last run wrote into `metadata.json` (docs/contract.md, "Decision and completion" rule
/// 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    Completed,
    Running,
    Failed,
}

/// One file's state after damages; damaging an absent file is a no-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileState {
    Intact,
    Truncated,
    Deleted,
}

/// `checkpoint/` after damages: its weights file, or the whole dir gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checkpoint {
    Intact,
    WeightsTruncated,
    WeightsDeleted,
    DirDeleted,
}

/// An existing variant dir (absent variants are not keys of the identity's map).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Variant {
    base: Base,
    metadata: FileState,
    checkpoint: Checkpoint,
    metrics_deleted: bool,
    /// Order of the completion that wrote `completed_at` (0: never completed); a RESUME that
    /// completes writes a newer one.
    completed_seq: u64,
}

impl Variant {
    /// A run that completes rewrites every output: no damage survives.
    fn completed(seq: u64) -> Variant {
        Variant {
            base: Base::Completed,
            metadata: FileState::Intact,
            checkpoint: Checkpoint::Intact,
            metrics_deleted: false,
            completed_seq: seq,
        }
    }

    /// docs/contract.md, "Decision and completion"'s order: metadata, status, checkpoint, manifest,
    /// metrics.
    fn reason(&self) -> &'static str {
        match self.metadata {
            FileState::Deleted => return "no_metadata",
            FileState::Truncated => return "corrupt_metadata",
            FileState::Intact => {}
        }
        match self.base {
            Base::Running => return "running",
            Base::Failed => return "failed",
            Base::Completed => {}
        }
        match self.checkpoint {
            Checkpoint::DirDeleted => return "checkpoint_missing",
            Checkpoint::WeightsDeleted => return "checkpoint_invalid:weights",
            Checkpoint::WeightsTruncated => {
                return "manifest_mismatch:checkpoint/model.safetensors"
            }
            Checkpoint::Intact => {}
        }
        if self.metrics_deleted {
            return "metrics_missing";
        }
        "complete"
    }

    fn is_complete(&self) -> bool {
        self.reason() == "complete"
    }

    fn damage(&mut self, damage: VariantDamage) {
        use Checkpoint as C;
        match damage {
            VariantDamage::DeleteMetadata => self.metadata = FileState::Deleted,
            VariantDamage::TruncateMetadata => {
                if self.metadata == FileState::Intact {
                    self.metadata = FileState::Truncated;
                }
            }
            VariantDamage::DeleteMetrics => self.metrics_deleted = true,
            VariantDamage::DeleteWeights => {
                if self.checkpoint != C::DirDeleted {
                    self.checkpoint = C::WeightsDeleted;
                }
            }
            VariantDamage::TruncateWeights => {
                if self.checkpoint == C::Intact {
                    self.checkpoint = C::WeightsTruncated;
                }
            }
            VariantDamage::DeleteCheckpointDir => self.checkpoint = C::DirDeleted,
        }
    }
}

/// One record file of the final_training cache, in creation order (= timestamp order).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    identity: usize,
    variant: u64,
    valid: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    /// The final_training cache's retention knobs.
    retention: Retention,
    variants: [BTreeMap<u64, Variant>; IDENTITIES],
    /// Record files, oldest first; a deleted record is removed, a truncated one is invalid.
    records: Vec<Record>,
    /// Views are rebuilt from valid records by every record write and by repair; a cache
    /// damage voids them until then.
    views_consistent: bool,
    tracking: Tracking,
    runs: Runs,
    /// Run names reserved so far (auto-increment versions are taken in this order).
    names_reserved: u64,
    /// The name each variant was allocated.
    names: BTreeMap<(usize, u64), String>,
    /// Completions so far (each complete variant's `completed_seq` is one of them).
    completions: u64,
    /// Parents converted so far (a conversion dir is never removed or rewritten).
    conversions: std::collections::BTreeSet<RecordKey>,
    /// What backups copied so far (a mirror copy is replaced only by a newer complete one).
    mirror: Mirror,
    /// Whether the storage has an atomic exchange (gc removes abandoned variants only then).
    gc_exchanges: bool,
    /// Per identity: numbers gc replaced by a tombstone.
    tombstones: [std::collections::BTreeSet<u64>; IDENTITIES],
}

impl Model {
    /// A model with tracking disabled.
    pub fn new(max_entries: usize) -> Model {
        Model::with_tracking(max_entries, Tracking::Disabled)
    }

    pub fn with_tracking(max_entries: usize, tracking: Tracking) -> Model {
        let retention = Retention {
            max_entries,
            max_files: None,
        };
        Model::with_retention(retention, tracking)
    }

    pub fn with_retention(retention: Retention, tracking: Tracking) -> Model {
        assert!(
            retention.max_entries > 0,
            "an index holds at least one entry"
        );
        assert_ne!(retention.max_files, Some(0), "max_files keeps at least one");
        Model {
            retention,
            variants: Default::default(),
            records: Vec::new(),
            views_consistent: true,
            tracking,
            runs: Runs::new(),
            names_reserved: 0,
            names: BTreeMap::new(),
            completions: 0,
            conversions: Default::default(),
            mirror: Mirror::default(),
            gc_exchanges: true,
            tombstones: Default::default(),
        }
    }

    /// The same model on storage with (`true`, the default) or without an atomic exchange.
    pub fn with_gc_exchanges(mut self, exchanges: bool) -> Model {
        self.gc_exchanges = exchanges;
        self
    }

    /// Whether `command` may run in this state. Permissive: only ContinueFromPrevious (not
    /// modelled) and inputs outside the contract (identity out of range, variant 0) are refused.
    pub fn precondition(&self, command: &Command) -> bool {
        match command {
            Command::Train {
                identity,
                mode,
                explicit_variant,
                ..
            } => {
                let modelled = *mode != Mode::ContinueFromPrevious;
                *identity < IDENTITIES && modelled && *explicit_variant != Some(0)
            }
            Command::DamageVariant { identity, .. } => *identity < IDENTITIES,
            // Without tracking no store sees the experiment name: it is not invalid there.
            Command::TrainInvalid {
                identity, invalid, ..
            } => {
                let untracked_only = matches!(invalid, Invalid::ExperimentNameTooLong { .. })
                    && self.tracking == Tracking::Disabled;
                *identity < IDENTITIES && !untracked_only
            }
            Command::Convert(ConvertFrom::Variant { identity, .. }) => {
                *identity < IDENTITIES && !self.variants[*identity].is_empty()
            }
            Command::Convert(ConvertFrom::Latest)
            | Command::Backup
            | Command::TrackSync
            | Command::Gc
            | Command::DamageCache(_)
            | Command::RepairCache
            | Command::Status => true,
        }
    }

    pub fn step(&mut self, command: &Command) -> Response {
        assert!(
            self.precondition(command),
            "precondition violated: {command:?}"
        );
        match command {
            Command::Train {
                identity,
                mode,
                explicit_variant,
                outcome,
            } => self.train(*identity, *mode, *explicit_variant, *outcome),
            Command::DamageVariant {
                identity,
                pick,
                damage,
            } => {
                self.damage_variant(*identity, *pick, *damage);
                Response::Done
            }
            Command::DamageCache(damage) => {
                self.damage_cache(*damage);
                Response::Done
            }
            Command::RepairCache => {
                self.views_consistent = true;
                Response::Done
            }
            Command::Status => Response::Done,
            Command::TrainInvalid { .. } => Response::Decided {
                expected: Expected::Error(ErrorKind::ConfigInvalid),
                exit: Exit::Error,
            },
            Command::Convert(from) => Response::Converted(self.convert(*from)),
            Command::Backup => {
                for (identity, variants) in self.variants.iter().enumerate() {
                    let complete = variants.iter().filter(|(_, v)| v.is_complete());
                    self.mirror
                        .variants
                        .extend(complete.map(|(number, _)| (identity, *number)));
                }
                self.mirror
                    .conversions
                    .extend(self.conversions.iter().copied());
                Response::Done
            }
            Command::TrackSync => Response::Done,
            Command::Gc => {
                self.gc();
                Response::Done
            }
        }
    }

    /// `gc`: see `Command::Gc`.
    fn gc(&mut self) {
        if !self.gc_exchanges {
            return;
        }
        for identity in 0..IDENTITIES {
            let abandoned: Vec<u64> = self.variants[identity]
                .iter()
                .filter(|(_, v)| !v.is_complete())
                .map(|(number, _)| *number)
                .collect();
            for number in abandoned {
                self.variants[identity].remove(&number);
                self.tombstones[identity].insert(number);
                if let Some(run) = self.runs.get_mut(&(identity, number)) {
                    if run.status == RunState::Running {
                        run.status = RunState::Killed;
                    }
                }
            }
        }
    }

    /// The contract's `convert`: the parent must be complete (`--latest`: the complete one
    /// with the newest `completed_at`); its conversion dir is created once and reused after
    /// (keyed by parent and conversion config, never by the parent's current bytes).
    fn convert(&mut self, from: ConvertFrom) -> Converted {
        let parent = match from {
            ConvertFrom::Latest => {
                let newest = (0..IDENTITIES)
                    .flat_map(|i| self.variants[i].iter().map(move |(n, v)| (i, *n, v)))
                    .filter(|(_, _, v)| v.is_complete())
                    .max_by_key(|(_, _, v)| v.completed_seq);
                match newest {
                    Some((i, n, _)) => (i, n),
                    None => return Converted::ParentNotFound,
                }
            }
            ConvertFrom::Variant { identity, pick } => {
                let numbers: Vec<u64> = self.variants[identity].keys().copied().collect();
                let number = numbers[pick % numbers.len()];
                if !self.variants[identity][&number].is_complete() {
                    return Converted::ParentIncomplete;
                }
                (identity, number)
            }
        };
        if self.conversions.insert(parent) {
            Converted::New(parent)
        } else {
            Converted::Reuse(parent)
        }
    }

    pub fn projection(&self) -> Projection {
        let variants = std::array::from_fn(|identity| {
            let of_identity = &self.variants[identity];
            of_identity
                .iter()
                .map(|(number, variant)| (*number, variant.reason().to_string()))
                .collect()
        });
        let records: Vec<RecordKey> = self
            .records
            .iter()
            .rev()
            .filter(|record| record.valid)
            .map(|record| (record.identity, record.variant))
            .collect();
        let views = self.views_consistent.then(|| {
            let index: Vec<RecordKey> = records
                .iter()
                .take(self.retention.max_entries)
                .copied()
                .collect();
            (records.first().copied(), index)
        });
        if let Some((_, index)) = &views {
            assert!(index.len() <= self.retention.max_entries);
        }
        let runs = (self.tracking != Tracking::Faulty).then(|| self.runs.clone());
        Projection {
            variants,
            records,
            views,
            runs,
            conversions: self.conversions.clone(),
            mirror: self.mirror.clone(),
            removed: self.tombstones.clone(),
        }
    }

    /// docs/contract.md, "Tracking of final training" at the start of an attempt on `number`: a NEW
    /// variant reserves the next name; its run is created, or (RESUME) the variant's run is
    /// reopened and tagged interrupted.
    fn start_run(&mut self, identity: usize, number: u64, new: bool) {
        let Tracking::AutoIncrement { base } = &self.tracking else {
            return;
        };
        if new {
            self.names_reserved += 1;
            let name = match self.names_reserved {
                1 => base.clone(),
                n => format!("{base}_{n}"),
            };
            self.names.insert((identity, number), name);
        }
        let name = self.names[&(identity, number)].clone();
        self.runs
            .entry((identity, number))
            .and_modify(|run| {
                run.status = RunState::Running;
                run.interrupted = true;
            })
            .or_insert(TrackedRun {
                runs: 1,
                name,
                status: RunState::Running,
                interrupted: false,
            });
    }

    /// The end of an attempt: FINISHED or FAILED; a killed orchestrator leaves it RUNNING.
    fn end_run(&mut self, identity: usize, number: u64, outcome: Outcome) {
        if let Some(run) = self.runs.get_mut(&(identity, number)) {
            run.status = match outcome {
                Outcome::Complete => RunState::Finished,
                Outcome::Fail | Outcome::DiskFull => RunState::Failed,
                Outcome::Killed => RunState::Running,
            };
        }
    }

    fn train(
        &mut self,
        identity: usize,
        mode: Mode,
        explicit_variant: Option<u64>,
        outcome: Outcome,
    ) -> Response {
        // Sequential commands never leave a live lease: a killed owner is dead (stale).
        let observed: BTreeMap<u64, VariantView> = self.variants[identity]
            .iter()
            .map(|(number, variant)| {
                let view = if variant.is_complete() {
                    VariantView::Complete
                } else {
                    VariantView::Incomplete { lease_live: false }
                };
                (*number, view)
            })
            .collect();
        let request = Request {
            mode,
            explicit_variant,
            parent: ParentView::NotFound,
            wait_for_owner: true,
        };
        let mut expected = decide(&observed, &request);
        let number = match expected {
            Expected::Error(kind) => {
                assert_ne!(kind, ErrorKind::Busy, "no live lease in sequential runs");
                let exit = Exit::Error;
                return Response::Decided { expected, exit };
            }
            Expected::Reuse { .. } => {
                self.backfill(identity);
                let exit = Exit::Ok;
                return Response::Decided { expected, exit };
            }
            Expected::New { variant } => {
                // A number gc left a tombstone on: an explicit one is `busy`, any other is
                // passed over (docs/contract.md, "Retention and gc").
                let explicit = mode != Mode::ForceNew && explicit_variant == Some(variant);
                let tombstones = &self.tombstones[identity];
                if explicit && tombstones.contains(&variant) {
                    let expected = Expected::Error(ErrorKind::Busy);
                    let exit = Exit::Error;
                    return Response::Decided { expected, exit };
                }
                let number = (variant..)
                    .find(|n| !tombstones.contains(n))
                    .expect("a free number");
                expected = Expected::New { variant: number };
                number
            }
            Expected::Resume { variant } => variant,
            Expected::Continue { .. } => unreachable!("precondition refuses continue"),
            Expected::Wait { .. } => unreachable!("sequential commands never leave a live lease"),
        };
        self.start_run(identity, number, matches!(expected, Expected::New { .. }));
        self.end_run(identity, number, outcome);

        let exit = match outcome {
            Outcome::Complete => {
                self.completions += 1;
                self.variants[identity].insert(number, Variant::completed(self.completions));
                self.add_record(identity, number);
                self.backfill(identity);
                self.end_superseded_runs(identity, number);
                Exit::Ok
            }
            Outcome::Fail => {
                // A failed run leaves the cache untouched (issue acceptance: "the cache is
                // untouched"), so it backfills nothing either.
                self.rewrite_metadata(identity, number, Base::Failed);
                Exit::TrainingFailed
            }
            Outcome::Killed => {
                // Dies before the cache step: no record, no backfill.
                self.rewrite_metadata(identity, number, Base::Running);
                Exit::Killed
            }
            Outcome::DiskFull => {
                // `running` was written before the disk filled; `failed` cannot be.
                self.rewrite_metadata(identity, number, Base::Running);
                Exit::NoSpace
            }
        };
        Response::Decided { expected, exit }
    }

    /// Once `number` of `identity` completes, the runs of its abandoned attempts (incomplete
    /// variants; sequential commands leave no live owner) still RUNNING end as KILLED.
    fn end_superseded_runs(&mut self, identity: usize, number: u64) {
        let incomplete: Vec<u64> = self.variants[identity]
            .iter()
            .filter(|(v, variant)| **v != number && !variant.is_complete())
            .map(|(v, _)| *v)
            .collect();
        for v in incomplete {
            if let Some(run) = self.runs.get_mut(&(identity, v)) {
                if run.status == RunState::Running {
                    run.status = RunState::Killed;
                }
            }
        }
    }

    /// An attempt that does not complete rewrites `metadata.json` only. Checkpoint and metrics
    /// damages it leaves stay hidden behind the status (and a NEW dir's missing checkpoint is
    /// equally hidden), so starting a NEW dir from `completed()` outputs is unobservable.
    fn rewrite_metadata(&mut self, identity: usize, number: u64, base: Base) {
        assert_ne!(base, Base::Completed);
        let variant = self.variants[identity]
            .entry(number)
            .or_insert_with(|| Variant::completed(0));
        variant.base = base;
        variant.metadata = FileState::Intact;
        assert!(!variant.is_complete());
    }

    /// docs/contract.md, "Caches": each complete variant of `identity` without a valid record gets
    /// one, ascending by variant number (so the highest is newest). Under `max_files`, only the
    /// variants above the identity's highest recorded one: a record retention pruned is not
    /// missing, and backfilling it would only prune another (docs/contract.md, "Caches").
    fn backfill(&mut self, identity: usize) {
        let recorded = |number: u64| {
            self.records.iter().any(|record| {
                record.valid && record.identity == identity && record.variant == number
            })
        };
        let floor = match self.retention.max_files {
            Some(_) => self.variants[identity]
                .keys()
                .copied()
                .filter(|number| recorded(*number))
                .max()
                .unwrap_or(0),
            None => 0,
        };
        let missing: Vec<u64> = self.variants[identity]
            .iter()
            .filter(|(_, variant)| variant.is_complete())
            .map(|(number, _)| *number)
            .filter(|number| *number > floor && !recorded(*number))
            .collect();
        for number in missing {
            self.add_record(identity, number);
        }
    }

    fn add_record(&mut self, identity: usize, variant: u64) {
        let complete = self.variants[identity]
            .get(&variant)
            .map(Variant::is_complete);
        assert_eq!(complete, Some(true), "only a complete variant is recorded");
        self.records.push(Record {
            identity,
            variant,
            valid: true,
        });
        self.prune();
        // A successful record write rebuilds latest and index from the valid records that
        // retention kept.
        self.views_consistent = true;
    }

    /// `timestamped.max_files`: after each record write, the record files (valid or not)
    /// beyond the newest `max_files` are deleted, except the newest valid record (the one
    /// latest names).
    fn prune(&mut self) {
        let Some(max) = self.retention.max_files else {
            return;
        };
        let count = self.records.len();
        let newest_valid = self.records.iter().rposition(|record| record.valid);
        let mut at = 0;
        self.records.retain(|_| {
            let keep = at + max >= count || Some(at) == newest_valid;
            at += 1;
            keep
        });
    }

    fn damage_variant(&mut self, identity: usize, pick: usize, damage: VariantDamage) {
        let variants = &mut self.variants[identity];
        let count = variants.len();
        if count == 0 {
            return; // Nothing to damage.
        }
        let variant = variants.values_mut().nth(pick % count);
        variant.expect("pick % count < count").damage(damage);
    }

    fn damage_cache(&mut self, damage: CacheDamage) {
        match damage {
            CacheDamage::TruncateLatest
            | CacheDamage::DeleteLatest
            | CacheDamage::TruncateIndex
            | CacheDamage::DeleteIndex => self.views_consistent = false,
            CacheDamage::DeleteRecord { pick } => {
                if !self.records.is_empty() {
                    self.records.remove(pick % self.records.len());
                    self.views_consistent = false;
                }
            }
            CacheDamage::TruncateRecord { pick } => {
                if !self.records.is_empty() {
                    let count = self.records.len();
                    self.records[pick % count].valid = false;
                    self.views_consistent = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CacheDamage::*;
    use Expected::{New, Resume, Reuse};
    use Mode::*;
    use Outcome::*;
    use VariantDamage::*;

    fn train(identity: usize, mode: Mode, n: Option<u64>, outcome: Outcome) -> Command {
        let explicit_variant = n;
        Command::Train {
            identity,
            mode,
            explicit_variant,
            outcome,
        }
    }

    /// force_new that completes: the shortest way to a fresh complete variant.
    fn fresh(identity: usize) -> Command {
        train(identity, ForceNew, None, Complete)
    }

    fn damage(identity: usize, pick: usize, damage: VariantDamage) -> Command {
        Command::DamageVariant {
            identity,
            pick,
            damage,
        }
    }

    fn decided(expected: Expected, exit: Exit) -> Response {
        Response::Decided { expected, exit }
    }

    /// Runs `commands` on a fresh model (index of `max_entries`); returns it for inspection.
    fn run(max_entries: usize, commands: &[Command]) -> Model {
        run_on(Model::new(max_entries), commands)
    }

    fn reasons(model: &Model, identity: usize) -> Vec<(u64, String)> {
        let projection = model.projection();
        projection.variants[identity].clone().into_iter().collect()
    }

    fn check_reasons(model: &Model, identity: usize, want: &[(u64, &str)]) {
        let want: Vec<(u64, String)> = want.iter().map(|(n, r)| (*n, r.to_string())).collect();
        assert_eq!(reasons(model, identity), want, "model={model:?}");
    }

    fn records(model: &Model) -> Vec<(usize, u64)> {
        model.projection().records
    }

    /// Views that a consistent cache with these valid records (newest first) must show.
    fn views_of(records: &[RecordKey], max_entries: usize) -> Option<Views> {
        let index = records.iter().take(max_entries).copied().collect();
        Some((records.first().copied(), index))
    }

    fn run_on(mut model: Model, commands: &[Command]) -> Model {
        for command in commands {
            assert!(model.precondition(command), "{command:?}");
            model.step(command);
        }
        model
    }

    #[test]
    fn fresh_model_has_no_variants_no_records_and_consistent_empty_views() {
        let projection = Model::new(2).projection();
        assert!(projection.variants.iter().all(BTreeMap::is_empty));
        assert!(projection.records.is_empty());
        assert_eq!(projection.views, Some((None, vec![])));
    }

    #[test]
    fn completed_run_adds_complete_variant_and_newest_record() {
        let mut model = Model::new(5);
        let got = model.step(&train(0, ReuseIfExists, None, Complete));
        assert_eq!(got, decided(New { variant: 1 }, Exit::Ok));
        let got = model.step(&train(0, ReuseIfExists, Some(4), Complete));
        assert_eq!(got, decided(New { variant: 4 }, Exit::Ok));
        check_reasons(&model, 0, &[(1, "complete"), (4, "complete")]);
        assert_eq!(model.projection().views, views_of(&[(0, 4), (0, 1)], 5));
    }

    #[test]
    fn reuse_adds_no_variant_and_no_record_when_all_are_recorded() {
        let mut model = run(5, &[fresh(1), fresh(1)]);
        let before = model.clone();
        let got = model.step(&train(1, ReuseIfExists, None, Fail));
        assert_eq!(got, decided(Reuse { variant: 2 }, Exit::Ok));
        assert_eq!(model, before);
    }

    #[test]
    fn reuse_with_explicit_incomplete_variant_is_an_error_and_changes_nothing() {
        let mut model = run(5, &[fresh(0), train(0, ForceNew, None, Killed)]);
        model.step(&Command::DamageCache(DeleteRecord { pick: 0 }));
        let before = model.clone();
        let got = model.step(&train(0, ReuseIfExists, Some(2), Complete));
        let error = Expected::Error(ErrorKind::VariantIncomplete);
        assert_eq!(got, decided(error, Exit::Error));
        // No backfill of v1 either: an error never reaches the cache.
        assert_eq!(model, before);
    }

    #[test]
    fn failed_run_leaves_failed_variant_without_record() {
        let mut model = Model::new(5);
        let got = model.step(&train(2, ResumeIfIncomplete, None, Fail));
        assert_eq!(got, decided(New { variant: 1 }, Exit::TrainingFailed));
        check_reasons(&model, 2, &[(1, "failed")]);
        assert!(records(&model).is_empty());
        assert_eq!(model.projection().views, views_of(&[], 5));
        // A failed variant is incomplete: resume takes it.
        let got = model.step(&train(2, ResumeIfIncomplete, None, Complete));
        assert_eq!(got, decided(Resume { variant: 1 }, Exit::Ok));
        check_reasons(&model, 2, &[(1, "complete")]);
    }

    #[test]
    fn killed_run_leaves_running_variant_that_resume_completes() {
        let mut model = Model::new(5);
        let got = model.step(&train(0, ForceNew, None, Killed));
        assert_eq!(got, decided(New { variant: 1 }, Exit::Killed));
        check_reasons(&model, 0, &[(1, "running")]);
        assert!(records(&model).is_empty());
        // The owner is dead: the stale lease is taken by the next resume.
        let got = model.step(&train(0, ResumeIfIncomplete, Some(1), Complete));
        assert_eq!(got, decided(Resume { variant: 1 }, Exit::Ok));
        check_reasons(&model, 0, &[(1, "complete")]);
        assert_eq!(records(&model), vec![(0, 1)]);
    }

    #[test]
    fn killed_run_does_not_touch_the_cache() {
        let mut model = run(5, &[fresh(0)]);
        model.step(&Command::DamageCache(DeleteRecord { pick: 0 }));
        model.step(&train(0, ForceNew, None, Killed));
        check_reasons(&model, 0, &[(1, "complete"), (2, "running")]);
        assert!(records(&model).is_empty(), "no run record, no backfill");
        assert_eq!(model.projection().views, None, "views stay void");
    }

    #[test]
    fn reasons_follow_the_completion_contract_order() {
        let ckpt = "manifest_mismatch:checkpoint/model.safetensors";
        // Each step adds a damage that ranks before all earlier ones.
        let steps = [
            (DeleteMetrics, "metrics_missing"),
            (TruncateWeights, ckpt),
            (DeleteWeights, "checkpoint_invalid:weights"),
            (DeleteCheckpointDir, "checkpoint_missing"),
            (TruncateMetadata, "corrupt_metadata"),
            (DeleteMetadata, "no_metadata"),
        ];
        let mut model = run(5, &[fresh(1)]);
        for (kind, want) in steps {
            model.step(&damage(1, 0, kind));
            check_reasons(&model, 1, &[(1, want)]);
        }
    }

    #[test]
    fn damage_to_an_absent_file_is_a_no_op() {
        let model = run(5, &[fresh(0), damage(0, 0, DeleteMetadata)]);
        let model = run_on(model, &[damage(0, 0, TruncateMetadata)]);
        check_reasons(&model, 0, &[(1, "no_metadata")]);
        let model = run(5, &[fresh(0), damage(0, 0, DeleteCheckpointDir)]);
        let model = run_on(
            model,
            &[damage(0, 0, DeleteWeights), damage(0, 0, TruncateWeights)],
        );
        check_reasons(&model, 0, &[(1, "checkpoint_missing")]);
        let model = run(5, &[fresh(0), damage(0, 0, DeleteWeights)]);
        let model = run_on(model, &[damage(0, 0, TruncateWeights)]);
        check_reasons(&model, 0, &[(1, "checkpoint_invalid:weights")]);
    }

    #[test]
    fn status_outranks_checkpoint_and_metrics_damage_of_running_or_failed_variants() {
        let all = [
            DeleteMetrics,
            TruncateWeights,
            DeleteWeights,
            DeleteCheckpointDir,
        ];
        let mut model = run(
            5,
            &[
                train(0, ForceNew, None, Killed),
                train(0, ForceNew, None, Fail),
            ],
        );
        for kind in all {
            model.step(&damage(0, 0, kind));
            model.step(&damage(0, 1, kind));
        }
        check_reasons(&model, 0, &[(1, "running"), (2, "failed")]);
        // Metadata damage still shows: it ranks before the status.
        model.step(&damage(0, 0, TruncateMetadata));
        model.step(&damage(0, 1, DeleteMetadata));
        check_reasons(&model, 0, &[(1, "corrupt_metadata"), (2, "no_metadata")]);
    }

    #[test]
    fn failed_or_killed_attempt_rewrites_metadata_healing_its_damage() {
        let mut model = run(5, &[fresh(0), damage(0, 0, DeleteMetadata)]);
        model.step(&damage(0, 0, DeleteCheckpointDir));
        let got = model.step(&train(0, ResumeIfIncomplete, None, Fail));
        assert_eq!(got, decided(Resume { variant: 1 }, Exit::TrainingFailed));
        check_reasons(&model, 0, &[(1, "failed")]);
        model.step(&damage(0, 0, TruncateMetadata));
        let got = model.step(&train(0, ResumeIfIncomplete, Some(1), Killed));
        assert_eq!(got, decided(Resume { variant: 1 }, Exit::Killed));
        check_reasons(&model, 0, &[(1, "running")]);
    }

    #[test]
    fn completed_resume_rewrites_every_output_of_a_damaged_variant() {
        let mut model = run(5, &[fresh(0)]);
        for kind in [
            DeleteMetrics,
            TruncateWeights,
            DeleteCheckpointDir,
            TruncateMetadata,
        ] {
            model.step(&damage(0, 0, kind));
        }
        model.step(&train(0, ResumeIfIncomplete, None, Fail));
        let got = model.step(&train(0, ResumeIfIncomplete, None, Complete));
        assert_eq!(got, decided(Resume { variant: 1 }, Exit::Ok));
        check_reasons(&model, 0, &[(1, "complete")]);
        // v1 kept its first record (valid): the resume adds a second one.
        assert_eq!(records(&model), vec![(0, 1), (0, 1)]);
    }

    #[test]
    fn damaged_variants_still_count_for_the_highest_number() {
        let mut model = run(5, &[fresh(0), fresh(0), damage(0, 1, DeleteMetadata)]);
        let got = model.step(&train(0, ReuseIfExists, None, Complete));
        assert_eq!(got, decided(Reuse { variant: 1 }, Exit::Ok));
        let got = model.step(&train(0, ForceNew, Some(1), Complete));
        assert_eq!(got, decided(New { variant: 3 }, Exit::Ok));
    }

    #[test]
    fn backfill_replaces_a_deleted_record_on_next_train_of_that_identity() {
        let mut model = run(5, &[fresh(0), fresh(0)]);
        model.step(&Command::DamageCache(DeleteRecord { pick: 0 }));
        assert_eq!(records(&model), vec![(0, 2)]);
        assert_eq!(model.projection().views, None);
        let got = model.step(&train(0, ReuseIfExists, None, Complete));
        assert_eq!(got, decided(Reuse { variant: 2 }, Exit::Ok));
        assert_eq!(model.projection().records, vec![(0, 1), (0, 2)]);
        assert_eq!(model.projection().views, views_of(&[(0, 1), (0, 2)], 5));
    }

    #[test]
    fn backfill_only_touches_the_trained_identity() {
        let mut model = run(5, &[fresh(0), fresh(1)]);
        model.step(&Command::DamageCache(DeleteRecord { pick: 0 }));
        model.step(&train(1, ReuseIfExists, None, Complete));
        assert_eq!(records(&model), vec![(1, 1)]);
        // Nothing was written: the views stay void.
        assert_eq!(model.projection().views, None);
        model.step(&train(0, ReuseIfExists, None, Complete));
        assert_eq!(records(&model), vec![(0, 1), (1, 1)]);
    }

    #[test]
    fn backfill_follows_the_run_record_in_ascending_variant_order() {
        let mut model = run(9, &[fresh(2), fresh(2), fresh(2)]);
        for _ in 0..3 {
            model.step(&Command::DamageCache(DeleteRecord { pick: 0 }));
        }
        let got = model.step(&train(2, ReuseIfExists, Some(7), Complete));
        assert_eq!(got, decided(New { variant: 7 }, Exit::Ok));
        // Newest first: v3, v2, v1 backfilled after v7's own record.
        let want = [(2, 3), (2, 2), (2, 1), (2, 7)];
        assert_eq!(model.projection().views, views_of(&want, 9));
    }

    #[test]
    fn failed_run_leaves_the_cache_untouched() {
        let mut model = run(5, &[fresh(0)]);
        model.step(&Command::DamageCache(TruncateRecord { pick: 0 }));
        model.step(&train(0, ForceNew, None, Fail));
        assert_eq!(records(&model), Vec::<(usize, u64)>::new());
        assert_eq!(model.projection().views, None);
    }

    #[test]
    fn truncated_record_is_not_valid_and_is_backfilled() {
        let mut model = run(5, &[fresh(0), fresh(1)]);
        model.step(&Command::DamageCache(TruncateRecord { pick: 0 }));
        assert_eq!(records(&model), vec![(1, 1)]);
        assert_eq!(model.projection().views, None);
        model.step(&train(0, ReuseIfExists, None, Complete));
        assert_eq!(records(&model), vec![(0, 1), (1, 1)]);
        // The torn file is still a record file: pick 0 is still it, pick 2 the backfill.
        model.step(&Command::DamageCache(DeleteRecord { pick: 2 }));
        assert_eq!(records(&model), vec![(1, 1)]);
    }

    #[test]
    fn index_keeps_newest_max_entries() {
        let model = run(2, &[fresh(0), fresh(1), fresh(2), fresh(0)]);
        let projection = model.projection();
        assert_eq!(projection.records, vec![(0, 2), (2, 1), (1, 1), (0, 1)]);
        let index = vec![(0, 2), (2, 1)];
        assert_eq!(projection.views, Some((Some((0, 2)), index)));
    }

    #[test]
    fn max_files_prunes_the_oldest_record_files_but_never_the_newest_valid_one() {
        let retention = Retention {
            max_entries: 3,
            max_files: Some(2),
        };
        let mut model = run_on(
            Model::with_retention(retention, Tracking::Disabled),
            &[fresh(0), fresh(1), fresh(2)],
        );
        let projection = model.projection();
        assert_eq!(projection.records, vec![(2, 1), (1, 1)]);
        // The index lists what retention kept, never a pruned record.
        assert_eq!(projection.views, Some((Some((2, 1)), vec![(2, 1), (1, 1)])));
        // A corrupt record file counts against max_files until it is pruned as the oldest.
        model.step(&Command::DamageCache(TruncateRecord { pick: 1 }));
        assert_eq!(model.projection().records, vec![(1, 1)]);
        model.step(&fresh(1));
        assert_eq!(model.projection().records, vec![(1, 2)]);
        assert_eq!(model.records.len(), 2, "(1, 2) and the corrupt (2, 1)");
        // A pruned record is not backfilled: (1, 1) is below the identity's newest record.
        model.step(&fresh(1));
        assert_eq!(model.projection().records, vec![(1, 3), (1, 2)]);
        assert!(
            model.records.iter().all(|record| record.valid),
            "corrupt one pruned"
        );
        // An identity with no record left is recorded again by its next reuse (once: its
        // highest complete variant is then recorded).
        model.step(&train(0, ReuseIfExists, None, Complete));
        assert_eq!(model.projection().records, vec![(0, 1), (1, 3)]);
        model.step(&train(0, ReuseIfExists, None, Complete));
        assert_eq!(model.projection().records, vec![(0, 1), (1, 3)]);
        // A lost record (the crash window between completion and record, here a deletion) is
        // backfilled: (1, 3)'s record deleted, the next reuse of 1 writes 1..=3 again, and
        // retention keeps the newest two.
        model.step(&Command::DamageCache(DeleteRecord { pick: 0 }));
        model.step(&train(1, ReuseIfExists, None, Complete));
        assert_eq!(model.projection().records, vec![(1, 3), (1, 2)]);
    }

    #[test]
    fn index_skips_invalid_records_to_keep_max_entries_valid_ones() {
        let mut model = run(2, &[fresh(0), fresh(1), fresh(2)]);
        model.step(&Command::DamageCache(TruncateRecord { pick: 2 }));
        model.step(&Command::RepairCache);
        let index = vec![(1, 1), (0, 1)];
        assert_eq!(model.projection().views, Some((Some((1, 1)), index)));
    }

    #[test]
    fn cache_damage_voids_views_until_a_record_write_or_repair() {
        for kind in [TruncateLatest, DeleteLatest, TruncateIndex, DeleteIndex] {
            let mut model = run(5, &[fresh(0)]);
            model.step(&Command::DamageCache(kind));
            assert_eq!(model.projection().views, None, "{kind:?}");
            assert_eq!(records(&model), vec![(0, 1)], "{kind:?} keeps the records");
            model.step(&fresh(1));
            assert_eq!(model.projection().views, views_of(&[(1, 1), (0, 1)], 5));
        }
    }

    #[test]
    fn repair_rebuilds_views_without_creating_or_deleting_records() {
        let mut model = run(5, &[fresh(0), fresh(0)]);
        model.step(&Command::DamageCache(DeleteRecord { pick: 1 }));
        model.step(&Command::DamageCache(TruncateRecord { pick: 0 }));
        model.step(&Command::DamageCache(DeleteIndex));
        assert_eq!(model.step(&Command::RepairCache), Response::Done);
        // Both complete variants stay unrecorded: repair does not backfill.
        assert_eq!(model.projection().views, Some((None, vec![])));
        model.step(&train(0, ReuseIfExists, None, Complete));
        assert_eq!(records(&model), vec![(0, 2), (0, 1)]);
    }

    #[test]
    fn status_changes_nothing() {
        let mut model = run(5, &[fresh(0), damage(0, 0, DeleteMetrics)]);
        model.step(&Command::DamageCache(DeleteLatest));
        let before = model.clone();
        assert_eq!(model.step(&Command::Status), Response::Done);
        assert_eq!(model, before);
    }

    #[test]
    fn damage_picks_wrap_modulo_and_are_no_ops_when_nothing_exists() {
        let mut model = Model::new(5);
        model.step(&damage(0, 7, DeleteMetadata));
        model.step(&Command::DamageCache(DeleteRecord { pick: 3 }));
        model.step(&Command::DamageCache(TruncateRecord { pick: 3 }));
        assert_eq!(
            model,
            Model::new(5),
            "no variant, no record: nothing to damage"
        );
        let model = run_on(
            model,
            &[fresh(1), fresh(1), fresh(1), damage(1, 4, DeleteMetrics)],
        );
        let want = [(1, "complete"), (2, "metrics_missing"), (3, "complete")];
        check_reasons(&model, 1, &want);
        let model = run_on(model, &[Command::DamageCache(DeleteRecord { pick: 5 })]);
        assert_eq!(records(&model), vec![(1, 2), (1, 1)]);
    }

    #[test]
    fn precondition_refuses_only_continue_and_inputs_outside_the_contract() {
        let model = Model::new(5);
        let modes = [ReuseIfExists, ForceNew, ResumeIfIncomplete];
        for mode in modes {
            for outcome in [Complete, Fail, Killed] {
                assert!(model.precondition(&train(2, mode, Some(9), outcome)));
            }
        }
        assert!(!model.precondition(&train(0, ContinueFromPrevious, None, Complete)));
        assert!(!model.precondition(&train(IDENTITIES, ForceNew, None, Complete)));
        assert!(!model.precondition(&train(0, ForceNew, Some(0), Complete)));
        assert!(!model.precondition(&damage(IDENTITIES, 0, DeleteMetrics)));
        assert!(model.precondition(&Command::DamageCache(DeleteIndex)));
        assert!(model.precondition(&Command::RepairCache));
        assert!(model.precondition(&Command::Status));
    }

    #[test]
    fn tracked_runs_follow_allocation_names_and_resume_reopens() {
        let tracked = Model::with_tracking(
            5,
            Tracking::AutoIncrement {
                base: "final".into(),
            },
        );
        let model = run_on(
            tracked,
            &[
                train(0, ForceNew, None, Killed),
                train(1, ForceNew, None, Complete),
                train(0, ResumeIfIncomplete, None, Fail),
                train(0, ResumeIfIncomplete, None, Complete),
                train(1, ReuseIfExists, None, Complete),
            ],
        );
        let runs = model.projection().runs.expect("predicted");
        let run = |name: &str, status, interrupted| TrackedRun {
            runs: 1,
            name: name.into(),
            status,
            interrupted,
        };
        let want = Runs::from([
            ((0, 1), run("final", RunState::Finished, true)),
            ((1, 1), run("final_2", RunState::Finished, false)),
        ]);
        assert_eq!(runs, want, "one run per variant; a reuse adds none");
        let off = run_on(Model::new(5), &[fresh(0), fresh(0)]);
        assert_eq!(
            off.projection().runs,
            Some(Runs::new()),
            "disabled: no runs"
        );
        let faulty = run_on(Model::with_tracking(5, Tracking::Faulty), &[fresh(0)]);
        assert_eq!(faulty.projection().runs, None, "not predicted under faults");
    }

    /// `--latest` follows the newest completion across identities, a RESUME that completes
    /// included; `--from` an incomplete variant is refused; a second convert reuses.
    #[test]
    fn convert_picks_the_newest_completion_and_reuses() {
        let mut m = Model::new(3);
        let latest = Command::Convert(ConvertFrom::Latest);
        assert_eq!(
            m.step(&latest),
            Response::Converted(Converted::ParentNotFound)
        );
        m.step(&fresh(0));
        m.step(&fresh(1));
        assert_eq!(m.step(&latest), Response::Converted(Converted::New((1, 1))));
        assert_eq!(
            m.step(&latest),
            Response::Converted(Converted::Reuse((1, 1)))
        );
        // v1 of identity 0 loses its weights, then a resume completes it again: newest.
        m.step(&damage(0, 0, DeleteWeights));
        let from_v1 = Command::Convert(ConvertFrom::Variant {
            identity: 0,
            pick: 0,
        });
        assert_eq!(
            m.step(&from_v1),
            Response::Converted(Converted::ParentIncomplete)
        );
        m.step(&train(0, ResumeIfIncomplete, None, Complete));
        assert_eq!(m.step(&latest), Response::Converted(Converted::New((0, 1))));
        assert_eq!(
            m.projection().conversions,
            [(0, 1), (1, 1)].into_iter().collect()
        );
    }

    #[test]
    fn gc_leaves_tombstones_that_allocation_passes_over_and_an_explicit_number_meets_as_busy() {
        let mut m = Model::new(3);
        m.step(&train(0, ReuseIfExists, None, Fail));
        m.step(&fresh(0));
        m.step(&train(0, ForceNew, None, Killed));
        assert_eq!(m.step(&Command::Gc), Response::Done);
        let p = m.projection();
        assert_eq!(p.removed[0], [1, 3].into_iter().collect());
        assert_eq!(p.variants[0].keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(
            m.step(&train(0, ForceNew, None, Complete)),
            decided(Expected::New { variant: 4 }, Exit::Ok)
        );
        assert_eq!(
            m.step(&train(0, ResumeIfIncomplete, Some(3), Complete)),
            decided(Expected::Error(ErrorKind::Busy), Exit::Error)
        );
        // Without an atomic exchange gc keeps every variant.
        let mut kept = Model::new(3).with_gc_exchanges(false);
        kept.step(&train(0, ReuseIfExists, None, Fail));
        kept.step(&Command::Gc);
        assert!(kept.projection().removed[0].is_empty());
        assert_eq!(kept.projection().variants[0].len(), 1);
    }
}
