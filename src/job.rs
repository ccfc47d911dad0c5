//! Turns a loaded `Config` into a concrete job: the dataset actually used and its digest, the
//! resolved source (init checkpoint or parent), spec_fp/exec_fp, the identity and its
//! directory, and the run name. Reads OUT and the dataset through the Fs port; writes nothing.

use crate::completion::{self, Completion, Depth};
use crate::config::schema::{CheckpointRef, RunMode, SourceType};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Place, Result};
use crate::fs::Fs;
use crate::identity::{files_digest, CodeIdentity, ExecInputs, SourceIdentity, SpecInputs};
use crate::lease::LivenessFacts;
use crate::naming::{RunNameParts, RunNamePolicy};
use crate::observe;
use crate::paths::{DatasetPath, Identity, Layout};
use crate::plan::ParentState;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Version of the built-in trainer, part of the code identity.
pub const BUILTIN_TRAINER: &str = crate::builtin::TRAINER_VERSION;

/// Reads (commit, dirty) of the checkout at ROOT, ignoring the given excluded folders.
pub type GitProbe = dyn Fn(&Path, &[PathBuf]) -> (Option<String>, bool);

/// What the job needs from the host, injected so that tests run without git or /proc.
pub struct Host<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub now_ms: u64,
    pub hostname: String,
    pub process_start_time: &'a dyn Fn(u32) -> Option<u64>,
    pub git: &'a GitProbe,
    /// This machine's clock now (ms), for judging heartbeats from the future
    /// (`lease::MAX_CLOCK_SKEW_MS`); `None` in worlds without one.
    pub clock: Option<&'a dyn Fn() -> u64>,
}

impl Host<'_> {
    pub fn facts(&self, lease_timeout_ms: u64) -> LivenessFacts<'_> {
        self.facts_at(lease_timeout_ms, self.now_ms)
    }

    /// The liveness facts at another instant (a command that waits looks again later).
    pub fn facts_at(&self, lease_timeout_ms: u64, now_ms: u64) -> LivenessFacts<'_> {
        LivenessFacts {
            this_host: &self.hostname,
            now_ms,
            lease_timeout_ms,
            process_start_time: self.process_start_time,
            clock: self.clock,
        }
    }
}

/// `git rev-parse HEAD` and whether tracked files changed outside `excluded`.
pub fn git_state(root: &Path, excluded: &[PathBuf]) -> (Option<String>, bool) {
    let run = |args: &[String]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    };
    let Some(commit) = run(&["rev-parse".into(), "HEAD".into()]) else {
        return (None, false);
    };
    let mut args: Vec<String> = ["status", "--porcelain", "--untracked-files=no", "--", "."]
        .map(String::from)
        .to_vec();
    for dir in excluded {
        if let Ok(rel) = dir.strip_prefix(root) {
            if !rel.as_os_str().is_empty() {
                args.push(format!(":(exclude){}", rel.display()));
            }
        }
    }
    let dirty = run(&args).is_some_and(|s| !s.trim().is_empty());
    (Some(commit.trim().to_string()), dirty)
}

/// The dataset files a run uses.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetFiles {
    pub dir: PathBuf,
    /// (role, path): train, then validation and test when configured.
    pub files: Vec<(String, PathBuf)>,
    pub digest: String,
    /// Records of the train split, counted when it was read and checked (the step count of a
    /// training is derived from it, so no attempt parses the split again).
    #[serde(skip)]
    pub train_records: u64,
}

/// A parent final training.
#[derive(Clone, Debug, Serialize)]
pub struct Parent {
    pub dir: PathBuf,
    pub spec_fp: String,
    pub exec_fp: String,
    pub variant: u64,
    pub trained_epochs: Option<u64>,
}

/// Where the initial weights (or full state) come from.
#[derive(Clone, Debug, Serialize)]
pub struct ResolvedSource {
    #[serde(rename = "type")]
    pub kind: SourceType,
    pub load: bool,
    pub identity: SourceIdentity,
    pub init_checkpoint: Option<PathBuf>,
    pub parent: Option<Parent>,
    /// best_selected from a selection record: the record's name and its `selected` lineage
    /// (HPO study/trial hashes and run ids), recorded in metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<Value>,
}

#[derive(Clone)]
pub struct Job {
    pub config: Config,
    pub layout: Layout,
    pub identity: Identity,
    /// The identity inputs, shared by the clones of a job (one per run mode and attempt).
    pub spec: std::sync::Arc<SpecInputs>,
    pub exec: std::sync::Arc<ExecInputs>,
    pub dataset: DatasetFiles,
    pub source: ResolvedSource,
    /// For continue_from_previous: the parent as observed (the decision checks it).
    pub parent_state: Option<ParentState>,
    pub warnings: Vec<String>,
}

impl Job {
    /// The same job with another run mode and explicit variant (neither is an identity
    /// input, docs/contract.md, "Identity"), without re-reading anything.
    pub fn with_run(&self, mode: crate::config::schema::RunMode, variant: Option<u64>) -> Job {
        let mut job = self.clone();
        job.config.final_training.run.mode = Some(mode);
        job.config.final_training.variant.number = variant;
        job
    }

    /// The decision request of this job (docs/contract.md, "Decision and completion" inputs besides
    /// the observed variants).
    pub fn request(&self) -> crate::plan::Request {
        crate::plan::Request {
            mode: self.config.mode(),
            explicit_variant: self.config.final_training.variant.number,
            parent: self.parent_state.clone(),
            target_epochs: self.config.hyperparameters.epochs,
            reuse_depth: match self.config.final_training.run.verify_reuse {
                Some(crate::config::schema::VerifyReuse::Sizes) => crate::completion::Depth::Sizes,
                _ => crate::completion::Depth::Digests,
            },
            wait_for_owner: self.config.wait_for_owner_ms() > 0,
        }
    }

    /// Everything the trainer or the tracking store would refuse for `variant`, checked
    /// before anything is written (docs/contract.md, "Refused before the first write"): the
    /// run name (and, with auto-increment, its longest version) and what tracking refuses.
    /// The built-in trainer's own refusals are checked by `prepare`. Returns the run name's
    /// warnings.
    pub fn preflight(&self, variant: u64) -> Result<Vec<String>> {
        let (name, warnings) = self.run_name(variant)?;
        if self.auto_increment() {
            let (longest, _) =
                self.run_name_version(variant, Some(crate::train::MAX_RUN_NAME_VERSIONS))?;
            crate::track::lifecycle::preflight(&self.config, &longest)?;
        }
        crate::track::lifecycle::preflight(&self.config, &name)?;
        Ok(warnings)
    }

    pub fn spec_fp(&self) -> &str {
        &self.identity.spec_fp
    }
    pub fn exec_fp(&self) -> &str {
        &self.identity.exec_fp
    }

    /// Whether final-training run names get a `_N` suffix when taken (docs/contract.md, "Tracking
    /// of final training": `mlflow.yaml naming.run_name.auto_increment`, enabled overall and for
    /// the process).
    pub fn auto_increment(&self) -> bool {
        let a = &self.config.mlflow.naming.run_name.auto_increment;
        a.enabled.unwrap_or(false) && a.processes.final_training.unwrap_or(false)
    }

    /// The run name of `variant` without a version suffix (the reserved name, with its
    /// suffix, is chosen at train time: `train::reserve_run_name`).
    pub fn run_name(&self, variant: u64) -> Result<(String, Vec<String>)> {
        self.run_name_version(variant, None)
    }

    /// The run name of `variant` with version `version` (`None` or a number >= 2): the
    /// `naming.yaml` pattern's `{version}`, or the `mlflow.run_name` override followed by
    /// the version separator and the number. Validated (length, forbidden characters).
    pub fn run_name_version(
        &self,
        variant: u64,
        version: Option<u64>,
    ) -> Result<(String, Vec<String>)> {
        let policy = RunNamePolicy::from_naming(&self.config.naming, false)?;
        if let Some(name) = &self.config.final_training.mlflow.run_name {
            let name = match version {
                Some(v) => format!("{name}{}{v}", policy.version_separator),
                None => name.clone(),
            };
            return policy
                .validate(&name)
                .map(|w| (name.clone(), w))
                .map_err(|v| {
                    self.config.docs["final_training"].locate("mlflow.run_name", &v.message)
                });
        }
        let parts = RunNameParts {
            env: self.identity.storage_env.as_str().into(),
            model: self.identity.model.clone(),
            spec_hash: self.identity.spec_fp[..8].into(),
            exec_hash: self.identity.exec_fp[..8].into(),
            variant,
            conv_hash: None,
            version,
        };
        let violation = |v: crate::naming::NameViolation| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("{} ({})", v.message, v.rule),
            )
            .at(Place::file(self.config.display("naming")).with_key(format!("validate.{}", v.rule)))
        };
        match version {
            // A pattern without `{version}`: the suffix goes at the end.
            Some(v) if !policy.has_version_token() => {
                let (base, _) = policy.build(&parts).map_err(violation)?;
                let name = format!("{base}{}{v}", policy.version_separator);
                let warnings = policy.validate(&name).map_err(violation)?;
                Ok((name, warnings))
            }
            _ => policy.build(&parts).map_err(violation),
        }
    }
}

/// Resolves the dataset dir and reads the configured split files for their digest.
pub fn dataset_files(config: &Config, fs: &dyn Fs) -> Result<DatasetFiles> {
    let dir = dataset_dir(config, fs)?;
    let f = &config.data.files;
    let wanted = [
        (
            "train",
            Some(f.train.clone().unwrap_or_else(|| "train.json".into())),
        ),
        ("validation", f.validation.clone()),
        ("test", f.test.clone()),
    ];
    let mut files = Vec::new();
    let mut contents = Vec::new();
    let mut train_records = 0;
    for (role, name) in wanted {
        let Some(name) = name else { continue };
        let path = dir.join(&name);
        let (bytes, records) = read_split(config, fs, role, &path)?;
        if role == "train" {
            train_records = records;
        }
        contents.push((role.to_string(), bytes));
        files.push((role.to_string(), path));
    }
    let digest = files_digest(contents.iter().map(|(r, b)| (r.as_str(), b.as_slice())));
    Ok(DatasetFiles {
        dir,
        files,
        digest,
        train_records,
    })
}

/// The dataset directory: `dataset.local_path_override` of final_training.yaml, else the
/// data config's `local_path`. It must exist; errors name the key that set it.
fn dataset_dir(config: &Config, fs: &dyn Fs) -> Result<PathBuf> {
    let (raw, key, place) = match &config.final_training.dataset.local_path_override {
        Some(p) => (
            p.clone(),
            "dataset.local_path_override",
            config.docs["final_training"]
                .origin_of("dataset.local_path_override")
                .map(|o| o.place("dataset.local_path_override")),
        ),
        None => {
            let p = config.data.local_path.clone().ok_or_else(|| {
                Error::new(
                    ErrorKind::ConfigInvalid,
                    "the data config has no `local_path`",
                )
                .at(Place::file(config.display("data")).with_key("local_path"))
            })?;
            (
                p,
                "local_path",
                config.docs["data"]
                    .origin_of("local_path")
                    .map(|o| o.place("local_path")),
            )
        }
    };
    let place = place.unwrap_or_else(|| Place::default().with_key(key));
    let dir = DatasetPath::parse(&raw)
        .resolve(&raw, &config.root, key)
        .map_err(|e| e.at(place.clone()))?;
    if !fs.is_dir(&dir) {
        return Err(Error::new(
            ErrorKind::DatasetMissing,
            format!("dataset directory {} does not exist", dir.display()),
        )
        .at(place));
    }
    Ok(dir)
}

/// Where an error about the `role` split is reported: its key in the data config.
fn split_place(config: &Config, role: &str) -> Place {
    Place::file(config.display("data")).with_key(format!("files.{role}"))
}

/// Reads the `role` split at `path` and checks its records. Returns its bytes (for the
/// digest) and its record count; the train split must not be empty.
fn read_split(config: &Config, fs: &dyn Fs, role: &str, path: &Path) -> Result<(Vec<u8>, u64)> {
    check_split_file(config, fs, role, path)?;
    let bytes = fs.read(path).map_err(|e| {
        Error::new(
            ErrorKind::DatasetMissing,
            format!("{role} split {}: {e}", path.display()),
        )
        .at(split_place(config, role))
    })?;
    // Data invariants are checked before anything is written (docs/contract.md, "Trainer"): a bad
    // record is a precondition error naming the file, the record and the span.
    let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        let mut place = Place::file(path.display().to_string()).with_key("$");
        place.line = Some(e.line() as u64);
        place.column = Some(e.column() as u64);
        Error::new(
            ErrorKind::DatasetInvalid,
            format!("{role} split is not valid JSON: {e}"),
        )
        .at(place)
    })?;
    let records = crate::data::parse_records(path, &doc, &config.data.schema.entity_types)?;
    if role == "train" {
        crate::data::require_nonempty(&records, path)?;
    }
    Ok((bytes, records.len() as u64))
}

/// A split is read only when it is a regular file no larger than `dataset.max_file_bytes`.
fn check_split_file(config: &Config, fs: &dyn Fs, role: &str, path: &Path) -> Result<()> {
    // A FIFO would block forever and a device never end: only regular files are read.
    if fs.metadata(path).is_ok_and(|m| m.special || m.is_dir) {
        return Err(Error::new(
            ErrorKind::DatasetInvalid,
            format!(
                "{role} split {} is not a regular file (a FIFO, device, socket or directory)",
                path.display()
            ),
        )
        .at(split_place(config, role)));
    }
    let limit = config.max_dataset_bytes();
    if let Some(len) = fs.metadata(path).ok().map(|m| m.len).filter(|l| *l > limit) {
        return Err(Error::new(
            ErrorKind::DatasetInvalid,
            format!(
                "{role} split {} is {len} bytes, over dataset.max_file_bytes {limit} (final_training.yaml); raise it to read this file",
                path.display()
            ),
        )
        .at(split_place(config, role)));
    }
    Ok(())
}

/// Digest of every file below a checkpoint dir (relative names, sorted; temporaries skipped).
fn checkpoint_digest(fs: &dyn Fs, dir: &Path) -> Result<String> {
    let mut items: Vec<(String, Vec<u8>)> = Vec::new();
    for rel in crate::fs::files_below(fs, dir).map_err(|e| Error::io(dir, &e))? {
        let path = dir.join(&rel);
        let bytes = fs.read(&path).map_err(|err| Error::io(&path, &err))?;
        items.push((rel.to_string_lossy().into_owned(), bytes));
    }
    items.sort();
    Ok(files_digest(
        items.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
    ))
}

fn parent_from_dir(fs: &dyn Fs, layout: &Layout, dir: &Path) -> ParentState {
    let shown = dir.display().to_string();
    if !fs.is_dir(dir) {
        return ParentState::NotFound { looked_for: shown };
    }
    let meta = match completion::read_metadata(fs, dir) {
        Ok(m) => m,
        Err(reason) => return ParentState::Incomplete { dir: shown, reason },
    };
    match completion::check(fs, layout, dir, None, meta.variant, Depth::Sizes) {
        Completion::Complete(m) => ParentState::Complete {
            dir: shown,
            trained_epochs: m.trained_epochs,
        },
        Completion::Incomplete(reason) => ParentState::Incomplete { dir: shown, reason },
    }
}

fn resolve_parent(
    config: &Config,
    fs: &dyn Fs,
    layout: &Layout,
    host: &Host<'_>,
) -> Result<(ParentState, Option<PathBuf>)> {
    let env = config.env.env;
    let model = config.model_name();
    match &config.final_training.source.parent {
        Some(CheckpointRef::Path(p)) => {
            let dir = DatasetPath::parse(p).resolve(p, &config.root, "source.parent")?;
            Ok((parent_from_dir(fs, layout, &dir), Some(dir)))
        }
        Some(CheckpointRef::Training(r)) => {
            let id = Identity {
                storage_env: env,
                model,
                spec_fp: r.spec_fp.clone(),
                exec_fp: r.exec_fp.clone(),
            };
            if !crate::identity::is_fingerprint(&r.spec_fp)
                || !crate::identity::is_fingerprint(&r.exec_fp)
                || r.variant == 0
            {
                return Err(config.docs["final_training"].locate(
                    "source.parent",
                    "spec_fp and exec_fp must be 16 lowercase hex characters and variant at least 1",
                ));
            }
            let dir = layout.variant_dir(&id, r.variant)?;
            Ok((parent_from_dir(fs, layout, &dir), Some(dir)))
        }
        None => {
            let facts = host.facts(config.lease_timeout_s() * 1000);
            match observe::latest_complete(fs, layout, &facts, env, &model) {
                Some(found) => Ok((parent_from_dir(fs, layout, &found.dir), Some(found.dir))),
                None => Ok((
                    ParentState::NotFound {
                        looked_for: format!(
                            "latest complete final training of model {model} in {}",
                            env.as_str()
                        ),
                    },
                    None,
                )),
            }
        }
    }
}

fn parent_error(state: &ParentState) -> Option<Error> {
    match state {
        ParentState::Complete { .. } => None,
        ParentState::NotFound { looked_for } => Some(Error::new(
            ErrorKind::ParentNotFound,
            format!("no parent final training found ({looked_for})"),
        )),
        ParentState::Incomplete { dir, reason } => Some(Error::new(
            ErrorKind::ParentIncomplete,
            format!("parent {dir} is incomplete ({reason})"),
        )),
    }
}

/// docs/contract.md, "Source, checkpoint and conversion": the label map of a loaded checkpoint must
/// equal the data config's. Checked whenever the checkpoint's config.json is readable (also with
/// `checkpoint.validate: false`, which skips content validation, not this), before anything is
/// written.
fn check_label_map(config: &Config, fs: &dyn Fs, ckpt: &Path) -> Result<()> {
    let Some(found) = fs
        .read(&ckpt.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| completion::label_map(&c))
    else {
        return Ok(());
    };
    let got: Vec<String> = found.into_values().collect();
    let want = crate::data::labels(&config.data.schema.entity_types);
    if got != want {
        return Err(Error::new(
            ErrorKind::LabelMapMismatch,
            format!(
                "{} has labels {got:?}, but data config {} gives {want:?}",
                ckpt.join("config.json").display(),
                config.display("data")
            ),
        ));
    }
    Ok(())
}

/// The init checkpoint of `best_selected` without `checkpoint.source`: the latest valid
/// best-model-selection cache record (docs/contract.md, "Source, checkpoint and conversion",
/// "Caches"). Its payload names the checkpoint as `selected.checkpoint` (absolute, or relative to
/// ROOT); everything else under `selected` (study/trial hashes, run ids) is lineage. Schema in
/// docs/contract.md.
fn selected_checkpoint(config: &Config, fs: &dyn Fs, layout: &Layout) -> Result<(PathBuf, Value)> {
    use crate::cache::{Cache, CacheKind, CacheSettings};
    let cache = Cache::new(
        fs,
        CacheSettings::from_paths(&config.paths, layout, CacheKind::BestModelSelection)?,
    );
    let place = Place::file(config.display("final_training")).with_key("checkpoint.source");
    let (found, _warnings) = cache.latest()?;
    let Some(found) = found else {
        return Err(Error::new(
            ErrorKind::SelectionMissing,
            format!(
                "source.type best_selected needs a best-model selection record in {} (run `trainctl select`) or an explicit `checkpoint.source`",
                cache_dir_display(layout, config)
            ),
        )
        .at(place));
    };
    let selected = found
        .record
        .payload
        .get("selected")
        .cloned()
        .unwrap_or(Value::Null);
    let Some(ckpt) = selected.get("checkpoint").and_then(Value::as_str) else {
        return Err(Error::new(
            ErrorKind::SelectionMissing,
            format!(
                "best-model selection record {} names no checkpoint (`payload.selected.checkpoint`)",
                found.name
            ),
        )
        .at(place));
    };
    let dir = DatasetPath::parse(ckpt).resolve(ckpt, &config.root, "selected.checkpoint")?;
    let mut lineage = selected.clone();
    if let Value::Object(map) = &mut lineage {
        map.insert("record".into(), Value::String(found.name.clone()));
    }
    Ok((dir, lineage))
}

fn cache_dir_display(layout: &Layout, config: &Config) -> String {
    crate::cache::CacheSettings::from_paths(
        &config.paths,
        layout,
        crate::cache::CacheKind::BestModelSelection,
    )
    .map(|s| s.dir.display().to_string())
    .unwrap_or_else(|_| "the best_model_selection cache".into())
}

/// The source checks `pipeline` makes before its first write (bad input is refused before
/// anything is written): every source except a `best_selected` one without
/// `checkpoint.source`, which is the selection record the pipeline's own selection step
/// writes. The final training resolves the source again, on the configuration with the
/// selected hyperparameters.
pub fn preflight_source(config: &Config, fs: &dyn Fs, host: &Host<'_>) -> Result<()> {
    let from_this_run = config.source_type() == SourceType::BestSelected
        && config.final_training.checkpoint.source.is_none();
    if from_this_run {
        return Ok(());
    }
    let layout = Layout::from_config(config)?;
    resolve_source(config, fs, &layout, host, &mut Vec::new()).map(|_| ())
}

/// The source of the initial weights: scratch, a parent final training, or a checkpoint
/// (`best_selected`). With `continue_from_previous`, also the parent as observed.
fn resolve_source(
    config: &Config,
    fs: &dyn Fs,
    layout: &Layout,
    host: &Host<'_>,
    warnings: &mut Vec<String>,
) -> Result<(ResolvedSource, Option<ParentState>)> {
    let kind = config.source_type();
    let load = config.checkpoint_load();
    let continuing = config.mode() == RunMode::ContinueFromPrevious;
    if continuing && !load {
        return Err(config.docs["final_training"].locate(
            "checkpoint.load",
            "continue_from_previous restores the parent's full trainer state; `checkpoint.load: false` contradicts it",
        ));
    }
    let scratch = ResolvedSource {
        kind,
        load: false,
        identity: SourceIdentity::Scratch,
        init_checkpoint: None,
        parent: None,
        selection: None,
    };
    if kind == SourceType::Scratch || !load {
        return Ok((scratch, None));
    }
    match kind {
        SourceType::Scratch => Ok((scratch, None)),
        SourceType::FinalTraining => {
            let (source, state) = parent_source(config, fs, layout, host)?;
            Ok((source, continuing.then_some(state)))
        }
        SourceType::BestSelected => Ok((checkpoint_source(config, fs, layout, warnings)?, None)),
    }
}

/// `source.type: final_training` (loaded): the parent must be complete and its label map
/// match; its full state is the init checkpoint. Returns the parent as observed too.
fn parent_source(
    config: &Config,
    fs: &dyn Fs,
    layout: &Layout,
    host: &Host<'_>,
) -> Result<(ResolvedSource, ParentState)> {
    let (state, dir) = resolve_parent(config, fs, layout, host)?;
    if let Some(err) = parent_error(&state) {
        return Err(err);
    }
    let dir = dir.ok_or_else(|| Error::internal("complete parent without a directory"))?;
    check_label_map(config, fs, &dir.join(completion::CHECKPOINT_DIR))?;
    let meta = completion::read_metadata(fs, &dir).map_err(|r| {
        Error::new(
            ErrorKind::ParentIncomplete,
            format!("parent {}: {r}", dir.display()),
        )
    })?;
    let parent = Parent {
        dir: dir.clone(),
        spec_fp: meta.spec_fp.clone(),
        exec_fp: meta.exec_fp.clone(),
        variant: meta.variant,
        trained_epochs: meta.trained_epochs,
    };
    let source = ResolvedSource {
        kind: SourceType::FinalTraining,
        // Only a loaded source gets here; one not loaded resolved to scratch.
        load: true,
        identity: SourceIdentity::Parent {
            spec_fp: meta.spec_fp,
            exec_fp: meta.exec_fp,
            variant: meta.variant,
        },
        init_checkpoint: Some(dir.join(completion::CHECKPOINT_DIR)),
        parent: Some(parent),
        selection: None,
    };
    Ok((source, state))
}

/// `source.type: best_selected` (loaded): the init checkpoint must exist, be valid (unless
/// `checkpoint.validate: false`, which warns) and match the label map; its content digest
/// is the source identity.
fn checkpoint_source(
    config: &Config,
    fs: &dyn Fs,
    layout: &Layout,
    warnings: &mut Vec<String>,
) -> Result<ResolvedSource> {
    let doc = &config.docs["final_training"];
    let (dir, selection) = init_checkpoint_dir(config, fs, layout)?;
    let place = doc
        .origin_of("checkpoint.source")
        .map(|o| o.place("checkpoint.source"))
        .unwrap_or_else(|| Place::default().with_key("checkpoint.source"));
    if !fs.is_dir(&dir) {
        return Err(Error::new(
            ErrorKind::CheckpointMissing,
            format!("init checkpoint {} does not exist", dir.display()),
        )
        .at(place));
    }
    if config.final_training.checkpoint.validate.unwrap_or(true) {
        if let Err(reason) = completion::check_checkpoint(fs, &dir) {
            return Err(Error::new(
                ErrorKind::CheckpointInvalid,
                format!("init checkpoint {} is invalid ({reason})", dir.display()),
            )
            .at(place));
        }
    } else {
        warnings.push(format!(
            "checkpoint.validate is false: {} is used without checking its contents",
            dir.display()
        ));
    }
    check_label_map(config, fs, &dir)?;
    Ok(ResolvedSource {
        kind: SourceType::BestSelected,
        // Only a loaded source gets here; one not loaded resolved to scratch.
        load: true,
        identity: SourceIdentity::Checkpoint {
            digest: checkpoint_digest(fs, &dir)?,
        },
        init_checkpoint: Some(dir),
        parent: None,
        selection,
    })
}

/// The init checkpoint dir of `best_selected`: `checkpoint.source` as a path or as a
/// training's variant, else the latest selection record's checkpoint (with its lineage).
fn init_checkpoint_dir(
    config: &Config,
    fs: &dyn Fs,
    layout: &Layout,
) -> Result<(PathBuf, Option<Value>)> {
    match &config.final_training.checkpoint.source {
        Some(CheckpointRef::Path(p)) => Ok((
            DatasetPath::parse(p).resolve(p, &config.root, "checkpoint.source")?,
            None,
        )),
        Some(CheckpointRef::Training(r)) => {
            let id = Identity {
                storage_env: config.env.env,
                model: config.model_name(),
                spec_fp: r.spec_fp.clone(),
                exec_fp: r.exec_fp.clone(),
            };
            let dir = layout
                .variant_dir(&id, r.variant)?
                .join(completion::CHECKPOINT_DIR);
            Ok((dir, None))
        }
        None => {
            let (dir, lineage) = selected_checkpoint(config, fs, layout)?;
            Ok((dir, Some(lineage)))
        }
    }
}

/// What the built-in trainer would refuse (`trainer.command: null`), located at the setting.
fn builtin_preflight(config: &Config) -> Result<()> {
    if config.final_training.trainer.command.is_some() {
        return Ok(());
    }
    let refused = crate::builtin::preflight(
        &config.docs["model"].tree,
        &config.hyperparameters,
        config.precision().as_str(),
        &config.objective_metric(),
    );
    let Err((what, key, message)) = refused else {
        return Ok(());
    };
    let message = format!("the built-in trainer would refuse this: {message}");
    Err(match what {
        crate::builtin::Refused::Model => config.docs["model"].locate(&key, &message),
        crate::builtin::Refused::Hyperparameter => {
            let dotted = format!("training.{key}");
            match config.provenance.iter().find(|p| p.key == dotted) {
                Some(p) => {
                    Error::new(ErrorKind::ConfigInvalid, message).at(p.origin.place(&dotted))
                }
                None => Error::new(ErrorKind::ConfigInvalid, message)
                    .at(crate::error::Place::default().with_key(dotted)),
            }
        }
        crate::builtin::Refused::Precision => config.docs["final_training"].locate(&key, &message),
        crate::builtin::Refused::Objective => match config.docs.get("best_model_selection") {
            Some(doc) => doc.locate(&key, &message),
            None => Error::new(ErrorKind::ConfigInvalid, message),
        },
    })
}

/// Prepares the job for `config`: everything `plan` and `train` need before deciding.
pub fn prepare(config: Config, fs: &dyn Fs, host: &Host<'_>) -> Result<Job> {
    builtin_preflight(&config)?;
    let layout = Layout::from_config(&config)?;
    let mut warnings = config.warnings.clone();
    let dataset = dataset_files(&config, fs)?;
    let (source, parent_state) = resolve_source(&config, fs, &layout, host, &mut warnings)?;
    let hyperparameters = serde_json::to_value(&config.hyperparameters)
        .map_err(|e| Error::internal(format!("hyperparameters: {e}")))?;
    let spec = SpecInputs {
        model: config.docs["model"].tree.clone(),
        data: config.docs["data"].tree.clone(),
        dataset_digest: dataset.digest.clone(),
        hyperparameters,
        seed: config.seed,
        source: source.identity.clone(),
    };
    let flags = &config.final_training.identity;
    let code = if flags.include_code_fp.unwrap_or(true) {
        let out = layout.out.clone();
        let excluded = vec![config.config_dir.clone(), out, config.root.join("mlruns")];
        let (git_commit, dirty) = (host.git)(&config.root, &excluded);
        let trainer = match &config.final_training.trainer.command {
            None => BUILTIN_TRAINER.to_string(),
            Some(argv) => argv.join(" "),
        };
        Some(CodeIdentity {
            git_commit,
            dirty,
            trainer,
        })
    } else {
        None
    };
    let exec = ExecInputs {
        code,
        precision: flags
            .include_precision_fp
            .unwrap_or(true)
            .then(|| config.precision().as_str().to_string()),
        determinism: flags
            .include_determinism_fp
            .unwrap_or(false)
            .then(|| serde_json::json!({"deterministic": config.deterministic()})),
        env_execution: serde_json::to_value(&config.env_file.compute).unwrap_or(Value::Null),
    };
    let identity = Identity {
        storage_env: config.env.env,
        model: config.model_name(),
        spec_fp: spec.fingerprint(),
        exec_fp: exec.fingerprint(),
    };
    // The identity must render to a valid directory before anything else uses it.
    layout.identity_dir(&identity)?;
    Ok(Job {
        config,
        layout,
        identity,
        spec: std::sync::Arc::new(spec),
        exec: std::sync::Arc::new(exec),
        dataset,
        source,
        parent_state,
        warnings,
    })
}
