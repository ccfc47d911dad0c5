//! Loads the configuration set (docs/contract.md, "Configuration"): finds ROOT and CONFIG, reads
//! every file through `yaml.rs`, applies `-o` overrides, checks the typed schema, and resolves the
//! effective hyperparameters and seed with the origin of each value. Never touches OUT.

pub mod schema;
pub mod yaml;

use crate::error::{Error, ErrorKind, Place, Result};
use schema::*;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
pub use yaml::{Doc, Origin};

/// The config files by role, with their path under CONFIG (experiment-selected files are
/// resolved later).
pub const TOP_LEVEL_FILES: [(&str, &str); 7] = [
    ("final_training", "final_training.yaml"),
    ("paths", "paths.yaml"),
    ("naming", "naming.yaml"),
    ("tags", "tags.yaml"),
    ("mlflow", "mlflow.yaml"),
    ("best_model_selection", "best_model_selection.yaml"),
    ("conversion", "conversion.yaml"),
];

/// Roles an `-o file:key=value` may address (no prefix = `final_training`).
pub const OVERRIDE_ROLES: [&str; 13] = [
    "final_training",
    "train",
    "paths",
    "naming",
    "tags",
    "mlflow",
    "best_model_selection",
    "conversion",
    "env",
    "data",
    "model",
    "hpo",
    "experiment",
];

/// One `-o [role:]key=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub role: String,
    pub key: String,
    pub value: String,
    pub arg: String,
}

impl Override {
    pub fn parse(arg: &str) -> Result<Override> {
        let usage = |msg: &str| {
            Error::new(
                ErrorKind::Usage,
                format!("-o {}: {msg}", crate::paths::redact(arg)),
            )
            .at(Place::file(format!("-o {}", crate::paths::redact(arg))))
        };
        let (lhs, value) = arg
            .split_once('=')
            .ok_or_else(|| usage("expected KEY=VALUE"))?;
        let (role, key) = match lhs.split_once(':') {
            Some((role, key)) => (role.trim(), key.trim()),
            None => ("final_training", lhs.trim()),
        };
        if !OVERRIDE_ROLES.contains(&role) {
            let hint = yaml::closest(role, &OVERRIDE_ROLES)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(usage(&format!(
                "unknown file `{role}`; expected one of {}{hint}",
                OVERRIDE_ROLES.join(", ")
            )));
        }
        if key.is_empty() {
            return Err(usage("empty key"));
        }
        Ok(Override {
            role: role.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            arg: arg.to_string(),
        })
    }
}

/// What the command line says about where and how to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub root: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub experiment: Option<String>,
    pub env: Option<String>,
    pub overrides: Vec<String>,
    /// The best-configuration layer (docs/contract.md, "Configuration" precedence: train.yaml <
    /// best configuration < final_training.yaml): where it came from, and a `training.*`-shaped
    /// tree of hyperparameters. Set by `pipeline` from the selection record.
    pub best_configuration: Option<(String, Value)>,
}

/// ROOT per docs/contract.md, "Vocabulary": `--root`, else the nearest ancestor of `cwd` holding
/// `config/`, else cwd.
pub fn find_root(explicit: Option<&Path>, cwd: &Path) -> PathBuf {
    if let Some(root) = explicit {
        return absolutize(root, cwd);
    }
    // Bounded walk: a path has finitely many ancestors.
    for dir in cwd.ancestors() {
        if dir.join("config").is_dir() {
            return dir.to_path_buf();
        }
    }
    cwd.to_path_buf()
}

pub fn absolutize(path: &Path, base: &Path) -> PathBuf {
    // A bucket URL (`s3://b/k` as a path) is already absolute in its own store.
    if path.is_absolute() || crate::paths::is_bucket_path(path) {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Which storage environment this run uses, and why (docs/contract.md, "Environments and storage").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvChoice {
    pub env: StorageEnv,
    pub reason: String,
}

/// `--env` wins; else colab, kaggle, azureml by their variables; else local.
pub fn detect_env(cli: Option<&str>, var: &dyn Fn(&str) -> Option<String>) -> Result<EnvChoice> {
    if let Some(name) = cli {
        let env = StorageEnv::parse(name).ok_or_else(|| {
            let names: Vec<&str> = StorageEnv::ALL.iter().map(|e| e.as_str()).collect();
            let hint = yaml::closest(name, &names)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            Error::new(
                ErrorKind::Usage,
                format!(
                    "--env {name}: unknown environment; expected one of {}{hint}",
                    names.join(", ")
                ),
            )
        })?;
        return Ok(EnvChoice {
            env,
            reason: "--env".into(),
        });
    }
    let rules: [(StorageEnv, &[&str]); 3] = [
        (
            StorageEnv::Colab,
            &["COLAB_RELEASE_TAG", "COLAB_GPU", "COLAB_TPU"],
        ),
        (
            StorageEnv::Kaggle,
            &["KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE"],
        ),
        (
            StorageEnv::Azureml,
            &["AZUREML_RUN_ID", "AZUREML_EXPERIMENT_ID"],
        ),
    ];
    for (env, vars) in rules {
        if let Some(v) = vars.iter().find(|v| var(v).is_some()) {
            return Ok(EnvChoice {
                env,
                reason: format!("${v} is set"),
            });
        }
    }
    Ok(EnvChoice {
        env: StorageEnv::Local,
        reason: "no platform variable set".into(),
    })
}

pub use trainctl_trainer::protocol::{EarlyStopping, Hyperparameters};

/// Code defaults: the lowest layer.
pub fn default_hyperparameters() -> Value {
    serde_json::json!({
        "learning_rate": 0.05,
        "epochs": 5,
        "batch_size": 16,
        "dropout": 0.1,
        "weight_decay": 0.01,
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0,
        "max_grad_norm": 1.0,
        "validation_fraction": 0.1,
        "early_stopping": {"enabled": false, "patience": 3, "min_delta": 0.001},
        "eval_interval": 50,
    })
}

/// Non-identity settings of a run (cadence that does not change the trained model).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Cadence {
    pub log_interval: u64,
    pub save_interval: u64,
}

/// One effective value and where it came from.
#[derive(Clone, Debug)]
pub struct Provenanced {
    pub key: String,
    pub value: Value,
    pub origin: Origin,
}

/// A layer of hyperparameters: its `training`-shaped tree and how to locate its keys.
pub struct Layer<'a> {
    pub tree: Value,
    pub origin: Box<dyn Fn(&str) -> Origin + 'a>,
}

/// Overlays `layers` (lowest first) on the code defaults; a key absent from a layer keeps the
/// lower value. Returns the merged tree and the origin of every leaf.
pub fn merge_layers(layers: &[Layer<'_>]) -> (Value, BTreeMap<String, Origin>) {
    let mut merged = default_hyperparameters();
    let mut origins = BTreeMap::new();
    for (key, _) in flatten(&merged) {
        origins.insert(key, Origin::Default);
    }
    for layer in layers {
        for (key, value) in flatten(&layer.tree) {
            set_path(&mut merged, &key, value);
            origins.insert(key.clone(), (layer.origin)(&key));
        }
    }
    (merged, origins)
}

/// Leaves of a JSON object as (dotted key, value); arrays are leaves.
pub fn flatten(value: &Value) -> Vec<(String, Value)> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => out.push((prefix.to_string(), other.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

fn set_path(tree: &mut Value, dotted: &str, value: Value) {
    let mut node = tree;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(serde_json::Map::new());
        }
        let map = node.as_object_mut().expect("just made an object");
        if i + 1 == parts.len() {
            map.insert(part.to_string(), value);
            return;
        }
        node = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

/// Every file of the configuration set, parsed and typed.
#[derive(Clone, Debug)]
pub struct Config {
    pub root: PathBuf,
    pub config_dir: PathBuf,
    pub experiment_name: String,
    pub env: EnvChoice,
    /// Documents by role (`final_training`, `train`, `paths`, …, `data`, `model`, `env`).
    /// Shared: jobs are cloned per run mode and per attempt, the documents never change once
    /// loaded (a change goes through `Arc::make_mut`).
    pub docs: std::sync::Arc<BTreeMap<String, Doc>>,
    /// Path of each role's file (absolute).
    pub files: BTreeMap<String, PathBuf>,
    pub final_training: FinalTrainingFile,
    pub train: TrainFile,
    pub paths: PathsFile,
    pub naming: NamingFile,
    pub mlflow: MlflowFile,
    pub selection: SelectionFile,
    pub conversion: ConversionFile,
    pub experiment: ExperimentFile,
    pub env_file: EnvFile,
    pub data: DataFile,
    pub model: ModelFile,
    pub hpo: HpoFile,
    pub hyperparameters: Hyperparameters,
    pub seed: u64,
    /// Provenance of every effective value shown by `config show` (shared by job clones).
    pub provenance: std::sync::Arc<Vec<Provenanced>>,
    pub cadence: Cadence,
    pub warnings: Vec<String>,
    /// The tag registry of `tags.yaml`, read (and checked) once at load.
    pub tags: std::sync::Arc<crate::naming::TagRegistry>,
}

struct Reader<'a> {
    root: &'a Path,
    config_dir: &'a Path,
}

impl Reader<'_> {
    /// How a file is named in messages: relative to ROOT when under it.
    fn display(&self, path: &Path) -> String {
        path.strip_prefix(self.root)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string())
    }

    fn resolve(&self, rel: &str) -> PathBuf {
        absolutize(Path::new(rel), self.config_dir)
    }

    /// Reads and parses `path`; `required` decides between an error and an empty document.
    fn read(&self, path: &Path, required: bool, what: &str) -> Result<Doc> {
        let name = self.display(path);
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|e| {
                    Error::new(
                        ErrorKind::ConfigInvalid,
                        format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
                    )
                    .at(Place::file(name.clone()))
                })?;
                Doc::parse(&text, &name)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Doc::empty(&name))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::new(
                ErrorKind::ConfigMissing,
                format!("{what} not found: {}", path.display()),
            )
            .at(Place::file(name))),
            Err(e) => Err(
                Error::new(ErrorKind::ConfigMissing, format!("cannot read {what}: {e}"))
                    .at(Place::file(name)),
            ),
        }
    }
}

/// Loads the whole configuration set. Reads only files under CONFIG (and the experiment's
/// selected files); writes nothing.
///
/// The steps run in the order their errors are reported: find CONFIG, detect the environment
/// and parse the `-o` overrides; read the top-level files, the experiment,
/// `final_training.yaml` and the files the experiment selects; type every document; check
/// `final_training.yaml`; resolve the effective hyperparameters, seed and cadence with their
/// origins.
pub fn load(
    opts: &LoadOptions,
    cwd: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Config> {
    let (root, config_dir) = locate_config(opts, cwd)?;
    let env = detect_env(opts.env.as_deref(), var)?;
    let overrides = opts
        .overrides
        .iter()
        .map(|o| Override::parse(o))
        .collect::<Result<Vec<_>>>()?;
    let mut loading = Loading::new(&root, &config_dir, overrides);
    loading.read_top_level()?;
    let (experiment_name, experiment) = loading.read_experiment(opts.experiment.as_deref())?;
    let final_training = loading.final_training()?;
    loading.read_selected(&experiment, &final_training, &env)?;
    loading.apply_remaining_overrides()?;
    let (docs, files) = (loading.docs, loading.files);
    let typed = TypedFiles::from_docs(&docs)?;
    let ft_doc = &docs["final_training"];
    let warnings = check_final_training(&final_training, ft_doc)?;
    let effective = resolve_effective(
        &final_training,
        &typed.train,
        ft_doc,
        &docs["train"],
        opts.best_configuration.as_ref(),
    )?;
    Ok(Config {
        root,
        config_dir,
        experiment_name,
        env,
        docs: std::sync::Arc::new(docs),
        files,
        final_training,
        train: typed.train,
        paths: typed.paths,
        naming: typed.naming,
        mlflow: typed.mlflow,
        selection: typed.selection,
        conversion: typed.conversion,
        experiment,
        env_file: typed.env_file,
        data: typed.data,
        model: typed.model,
        hpo: typed.hpo,
        hyperparameters: effective.hyperparameters,
        seed: effective.seed,
        provenance: std::sync::Arc::new(effective.provenance),
        cadence: effective.cadence,
        warnings,
        tags: typed.tags,
    })
}

/// ROOT and CONFIG from the command line (`--root`, `--config-dir`, else `ROOT/config`);
/// CONFIG must exist.
fn locate_config(opts: &LoadOptions, cwd: &Path) -> Result<(PathBuf, PathBuf)> {
    let root = find_root(opts.root.as_deref(), cwd);
    let config_dir = opts
        .config_dir
        .as_deref()
        .map(|d| absolutize(d, cwd))
        .unwrap_or_else(|| root.join("config"));
    if !config_dir.is_dir() {
        return Err(Error::new(
            ErrorKind::ConfigMissing,
            format!(
                "config directory {} does not exist (pass --root or --config-dir)",
                config_dir.display()
            ),
        ));
    }
    Ok((root, config_dir))
}

/// What `load` has read so far: the parsed `-o` overrides, and the documents by role with
/// the path of each. Every override is applied before its document is typed.
struct Loading<'a> {
    reader: Reader<'a>,
    overrides: Vec<Override>,
    docs: BTreeMap<String, Doc>,
    files: BTreeMap<String, PathBuf>,
}

impl<'a> Loading<'a> {
    fn new(root: &'a Path, config_dir: &'a Path, overrides: Vec<Override>) -> Self {
        Loading {
            reader: Reader { root, config_dir },
            overrides,
            docs: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    fn insert(&mut self, role: &str, path: PathBuf, doc: Doc) {
        self.docs.insert(role.to_string(), doc);
        self.files.insert(role.to_string(), path);
    }

    /// The files directly under CONFIG (`TOP_LEVEL_FILES`), in that order. `tags`,
    /// `best_model_selection` and `conversion` may be missing (an empty document).
    fn read_top_level(&mut self) -> Result<()> {
        let optional = ["tags", "best_model_selection", "conversion"];
        for (role, file) in TOP_LEVEL_FILES {
            let path = self.reader.config_dir.join(file);
            let doc = self.reader.read(&path, !optional.contains(&role), file)?;
            self.insert(role, path, doc);
        }
        Ok(())
    }

    /// Reads `experiment/<name>.yaml` (`--experiment`, else `resume_ner_baseline`) with its
    /// `-o experiment:` overrides, and types it. Returns the name and the typed file.
    fn read_experiment(&mut self, requested: Option<&str>) -> Result<(String, ExperimentFile)> {
        let name = requested.unwrap_or("resume_ner_baseline").to_string();
        let path = self.experiment_path(&name)?;
        let mut doc = self.reader.read(&path, true, "experiment file")?;
        apply_overrides(&mut doc, "experiment", &self.overrides)?;
        let experiment: ExperimentFile = doc.typed()?;
        self.insert("experiment", path, doc);
        Ok((name, experiment))
    }

    /// Where the experiment `name` lives. The name must be a plain file stem, and the file
    /// must exist (else the known experiments are listed, with the nearest one).
    fn experiment_path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Error::new(
                ErrorKind::Usage,
                format!("--experiment {name:?}: not a plain file stem"),
            ));
        }
        let dir = self.reader.config_dir.join("experiment");
        let path = dir.join(format!("{name}.yaml"));
        if path.is_file() {
            return Ok(path);
        }
        let known = list_stems(&dir);
        let refs: Vec<&str> = known.iter().map(String::as_str).collect();
        let hint = yaml::closest(name, &refs)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        Err(Error::new(
            ErrorKind::ConfigMissing,
            format!(
                "experiment `{name}` not found at {}; known experiments: [{}]{hint}",
                path.display(),
                known.join(", ")
            ),
        )
        .at(Place::file(self.reader.display(&path))))
    }

    /// `final_training.yaml` with its `-o` overrides, typed. It is needed before the other
    /// selected files are read: `dataset.data_config` picks the data file.
    fn final_training(&mut self) -> Result<FinalTrainingFile> {
        if let Some(doc) = self.docs.get_mut("final_training") {
            apply_overrides(doc, "final_training", &self.overrides)?;
        }
        self.docs["final_training"].typed()
    }

    /// Reads the files the experiment selects (data, model, train, hpo, env), in that order.
    fn read_selected(
        &mut self,
        experiment: &ExperimentFile,
        final_training: &FinalTrainingFile,
        env: &EnvChoice,
    ) -> Result<()> {
        for (role, rel) in self.selected_files(experiment, final_training, env)? {
            let path = self.reader.resolve(&rel);
            let doc = self.reader.read(&path, true, &format!("{role} config"))?;
            self.insert(role, path, doc);
        }
        Ok(())
    }

    /// The path (relative to CONFIG) of each file the experiment selects. The data file may
    /// be overridden by `dataset.data_config`; the train and env files have defaults, the
    /// others must be named.
    fn selected_files(
        &self,
        experiment: &ExperimentFile,
        final_training: &FinalTrainingFile,
        env: &EnvChoice,
    ) -> Result<[(&'static str, String); 5]> {
        let experiment_file = self.reader.display(&self.files["experiment"]);
        let selected = |key: &str, value: &Option<String>, default: Option<String>| {
            value.clone().or(default).ok_or_else(|| {
                Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("the experiment must name its `{key}`"),
                )
                .at(Place::file(experiment_file.clone()).with_key(key))
            })
        };
        let data_rel = match &final_training.dataset.data_config {
            Some(p) => p.clone(),
            None => selected("data_config", &experiment.data_config, None)?,
        };
        let env_rel = selected(
            "env_config",
            &experiment.env_config,
            Some("env/{storage_env}.yaml".into()),
        )?
        .replace("{storage_env}", env.env.as_str());
        let model_rel = selected("model_config", &experiment.model_config, None)?;
        let train_rel = selected(
            "train_config",
            &experiment.train_config,
            Some("train.yaml".into()),
        )?;
        let hpo_rel = selected("hpo_config", &experiment.hpo_config, None)?;
        Ok([
            ("data", data_rel),
            ("model", model_rel),
            ("train", train_rel),
            ("hpo", hpo_rel),
            ("env", env_rel),
        ])
    }

    /// The overrides of every other role, in command-line order (`final_training` and
    /// `experiment` ones were applied when those files were read).
    fn apply_remaining_overrides(&mut self) -> Result<()> {
        for o in self
            .overrides
            .iter()
            .filter(|o| o.role != "final_training" && o.role != "experiment")
        {
            let doc = self
                .docs
                .get_mut(&o.role)
                .ok_or_else(|| Error::internal(format!("no document for role {}", o.role)))?;
            doc.apply_override(&o.key, &o.value, &o.arg)?;
        }
        Ok(())
    }
}

/// The documents other than `final_training.yaml` and the experiment, typed.
struct TypedFiles {
    train: TrainFile,
    paths: PathsFile,
    naming: NamingFile,
    mlflow: MlflowFile,
    selection: SelectionFile,
    conversion: ConversionFile,
    env_file: EnvFile,
    data: DataFile,
    model: ModelFile,
    hpo: HpoFile,
    tags: std::sync::Arc<crate::naming::TagRegistry>,
}

impl TypedFiles {
    /// Types each document, in a fixed order so that the first error reported is stable.
    fn from_docs(docs: &BTreeMap<String, Doc>) -> Result<TypedFiles> {
        let train: TrainFile = docs["train"].typed()?;
        let paths: PathsFile = docs["paths"].typed()?;
        let naming: NamingFile = docs["naming"].typed()?;
        let mlflow: MlflowFile = docs["mlflow"].typed()?;
        let selection: SelectionFile = docs["best_model_selection"].typed()?;
        let conversion: ConversionFile = docs["conversion"].typed()?;
        let env_file: EnvFile = docs["env"].typed()?;
        let data: DataFile = docs["data"].typed()?;
        let model: ModelFile = docs["model"].typed()?;
        check_model_name(&model, &docs["model"])?;
        let hpo: HpoFile = docs["hpo"].typed()?;
        // The tag registry validates itself against the known tag keys.
        let tags = std::sync::Arc::new(crate::naming::TagRegistry::from_doc(&docs["tags"])?);
        Ok(TypedFiles {
            train,
            paths,
            naming,
            mlflow,
            selection,
            conversion,
            env_file,
            data,
            model,
            hpo,
            tags,
        })
    }
}

/// The model name goes into paths, run names and tags: no control characters (a NUL would
/// reach the tracking store's run name), no path separators.
fn check_model_name(model: &ModelFile, doc: &Doc) -> Result<()> {
    if let Some(name) = &model.name {
        if name.is_empty()
            || name
                .chars()
                .any(|c| c.is_control() || c == '/' || c == '\\')
        {
            return Err(doc.locate(
                "name",
                &format!("a model name must be non-empty, without control characters or path separators; got {name:?}"),
            ));
        }
    }
    Ok(())
}

/// The checks of `final_training.yaml` on its own: where the seed goes, then the cross-key
/// rules. Returns the warnings of those rules.
fn check_final_training(final_training: &FinalTrainingFile, doc: &Doc) -> Result<Vec<String>> {
    if final_training.training.random_seed.is_some() {
        return Err(doc.locate(
            "training.random_seed",
            "the seed of a final training is `seed.random_seed`, not `training.random_seed`",
        ));
    }
    let mut warnings = Vec::new();
    validate_final_training(final_training, doc, &mut warnings)?;
    Ok(warnings)
}

/// The effective values of a run and the origin of each.
struct Effective {
    hyperparameters: Hyperparameters,
    seed: u64,
    cadence: Cadence,
    provenance: Vec<Provenanced>,
}

/// Merges and checks the hyperparameters, then picks the seed and the cadence, and records
/// where every value came from (shown by `config show`).
fn resolve_effective(
    final_training: &FinalTrainingFile,
    train: &TrainFile,
    ft_doc: &Doc,
    train_doc: &Doc,
    best_configuration: Option<&(String, Value)>,
) -> Result<Effective> {
    let layers =
        hyperparameter_layers(final_training, train, ft_doc, train_doc, best_configuration)?;
    let (merged, origins) = merge_layers(&layers);
    let hyperparameters: Hyperparameters = serde_json::from_value(merged.clone())
        .map_err(|e| Error::internal(format!("merged hyperparameters do not type-check: {e}")))?;
    check_hyperparameters(&hyperparameters, &origins)?;
    let (seed, seed_origin) = match (final_training.seed.random_seed, train.training.random_seed) {
        (Some(s), _) => (s, ft_doc.origin_of("seed.random_seed").cloned()),
        (None, Some(s)) => (s, train_doc.origin_of("training.random_seed").cloned()),
        (None, None) => (42, Some(Origin::Default)),
    };
    let cadence = resolve_cadence(final_training, train, ft_doc, train_doc)?;
    let mut provenance = hyperparameter_provenance(&merged, &origins);
    provenance.push(Provenanced {
        key: "seed.random_seed".into(),
        value: seed.into(),
        origin: seed_origin.unwrap_or(Origin::Default),
    });
    provenance.extend(cadence_provenance(&cadence, ft_doc, train_doc));
    Ok(Effective {
        hyperparameters,
        seed,
        cadence,
        provenance,
    })
}

/// Hyperparameter layers above the code defaults: train.yaml < best configuration <
/// final_training.yaml (which already carries `-o`). The best-configuration layer is present
/// when the caller (`pipeline`) passes the selected candidate's hyperparameters.
fn hyperparameter_layers<'a>(
    final_training: &FinalTrainingFile,
    train: &TrainFile,
    ft_doc: &'a Doc,
    train_doc: &'a Doc,
    best_configuration: Option<&(String, Value)>,
) -> Result<Vec<Layer<'a>>> {
    let mut layers = vec![layer_of(&train.training, &train.logging, train_doc)];
    if let Some((what, tree)) = best_configuration {
        layers.push(best_configuration_layer(what, tree)?);
    }
    layers.push(layer_of(
        &final_training.training,
        &final_training.logging,
        ft_doc,
    ));
    Ok(layers)
}

/// The best configuration (`what` names where it came from) as a layer: typed like a
/// `training` section, without a seed; every value's origin is `what`.
fn best_configuration_layer(what: &str, tree: &Value) -> Result<Layer<'static>> {
    let typed: TrainingLayer = serde_path_to_error::deserialize(tree.clone()).map_err(|e| {
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("best configuration: {}", e.inner()),
        )
        .at(Place::file(what.to_string()).with_key(e.path().to_string()))
    })?;
    let mut tree = serde_json::to_value(&typed).unwrap_or_default();
    if let Value::Object(map) = &mut tree {
        map.remove("random_seed");
    }
    let what = what.to_string();
    Ok(Layer {
        tree,
        origin: Box::new(move |_| Origin::Derived { what: what.clone() }),
    })
}

/// Logging cadence: final_training.yaml, else train.yaml, else the defaults (10, 100);
/// neither interval may be 0.
fn resolve_cadence(
    final_training: &FinalTrainingFile,
    train: &TrainFile,
    ft_doc: &Doc,
    train_doc: &Doc,
) -> Result<Cadence> {
    let cadence = Cadence {
        log_interval: final_training
            .logging
            .log_interval
            .or(train.logging.log_interval)
            .unwrap_or(10),
        save_interval: final_training
            .logging
            .save_interval
            .or(train.logging.save_interval)
            .unwrap_or(100),
    };
    for (key, v) in [
        ("logging.log_interval", cadence.log_interval),
        ("logging.save_interval", cadence.save_interval),
    ] {
        if v == 0 {
            return Err(locate_any(&[ft_doc, train_doc], key, "must be at least 1"));
        }
    }
    Ok(cadence)
}

/// The provenance of each merged hyperparameter, under the key a user writes it as.
fn hyperparameter_provenance(
    merged: &Value,
    origins: &BTreeMap<String, Origin>,
) -> Vec<Provenanced> {
    let mut provenance = Vec::new();
    for (key, value) in flatten(merged) {
        let origin = origins.get(&key).cloned().unwrap_or(Origin::Default);
        // eval_interval is a hyperparameter (early stopping reads it) written under logging.
        let shown = if key == "eval_interval" {
            "logging.eval_interval".to_string()
        } else {
            format!("training.{key}")
        };
        provenance.push(Provenanced {
            key: shown,
            value,
            origin,
        });
    }
    provenance
}

/// The provenance of the two cadence intervals: final_training.yaml, else train.yaml, else
/// the default.
fn cadence_provenance(cadence: &Cadence, ft_doc: &Doc, train_doc: &Doc) -> Vec<Provenanced> {
    let mut provenance = Vec::new();
    for (key, value) in [
        ("logging.log_interval", cadence.log_interval),
        ("logging.save_interval", cadence.save_interval),
    ] {
        let origin = ft_doc
            .origins
            .get(key)
            .or_else(|| train_doc.origins.get(key))
            .cloned()
            .unwrap_or(Origin::Default);
        provenance.push(Provenanced {
            key: key.into(),
            value: value.into(),
            origin,
        });
    }
    provenance
}

fn apply_overrides(doc: &mut Doc, role: &str, overrides: &[Override]) -> Result<()> {
    for o in overrides.iter().filter(|o| o.role == role) {
        doc.apply_override(&o.key, &o.value, &o.arg)?;
    }
    Ok(())
}

fn list_stems(dir: &Path) -> Vec<String> {
    let mut stems: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.strip_suffix(".yaml").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    stems.sort();
    stems
}

fn layer_of<'a>(training: &TrainingLayer, logging: &LoggingLayer, doc: &'a Doc) -> Layer<'a> {
    let mut tree = serde_json::to_value(training).unwrap_or_default();
    if let Value::Object(map) = &mut tree {
        map.remove("random_seed");
        if let Some(eval) = logging.eval_interval {
            map.insert("eval_interval".into(), eval.into());
        }
    }
    Layer {
        tree,
        origin: Box::new(move |key: &str| {
            let path = if key == "eval_interval" {
                "logging.eval_interval".to_string()
            } else {
                format!("training.{key}")
            };
            doc.origin_of(&path).cloned().unwrap_or(Origin::Default)
        }),
    }
}

fn locate_any(docs: &[&Doc], key: &str, message: &str) -> Error {
    let doc = docs
        .iter()
        .find(|d| d.origins.contains_key(key))
        .unwrap_or(&docs[0]);
    doc.locate(key, message)
}

/// Range checks of the merged hyperparameters, reported at the layer that set the value.
fn check_hyperparameters(h: &Hyperparameters, origins: &BTreeMap<String, Origin>) -> Result<()> {
    let fail = |key: &str, message: String| -> Error {
        let dotted = if key == "eval_interval" {
            "logging.eval_interval".to_string()
        } else {
            format!("training.{key}")
        };
        let place = origins
            .get(key)
            .map(|o| o.place(&dotted))
            .unwrap_or_else(|| Place::default().with_key(dotted.clone()));
        Error::new(ErrorKind::ConfigInvalid, message).at(place)
    };
    let positive = [
        ("epochs", h.epochs),
        ("batch_size", h.batch_size),
        ("gradient_accumulation_steps", h.gradient_accumulation_steps),
        ("eval_interval", h.eval_interval),
    ];
    for (key, v) in positive {
        if v == 0 {
            return Err(fail(key, format!("must be at least 1, got {v}")));
        }
    }
    if h.learning_rate.is_nan() || h.learning_rate <= 0.0 {
        return Err(fail(
            "learning_rate",
            format!("must be > 0, got {}", h.learning_rate),
        ));
    }
    if !(0.0..1.0).contains(&h.dropout) {
        return Err(fail(
            "dropout",
            format!("must be in [0, 1), got {}", h.dropout),
        ));
    }
    if h.weight_decay.is_nan() || h.weight_decay < 0.0 {
        return Err(fail(
            "weight_decay",
            format!("must be >= 0, got {}", h.weight_decay),
        ));
    }
    if h.max_grad_norm.is_nan() || h.max_grad_norm <= 0.0 {
        return Err(fail(
            "max_grad_norm",
            format!("must be > 0, got {}", h.max_grad_norm),
        ));
    }
    if !(0.0..1.0).contains(&h.validation_fraction) {
        return Err(fail(
            "validation_fraction",
            format!("must be in [0, 1), got {}", h.validation_fraction),
        ));
    }
    if h.early_stopping.min_delta.is_nan() || h.early_stopping.min_delta < 0.0 {
        return Err(fail(
            "early_stopping.min_delta",
            format!("must be >= 0, got {}", h.early_stopping.min_delta),
        ));
    }
    Ok(())
}

/// Cross-key rules of `final_training.yaml` (docs/contract.md, "Source, checkpoint and
/// conversion").
fn validate_final_training(
    f: &FinalTrainingFile,
    doc: &Doc,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let source = f.source.kind.unwrap_or(SourceType::Scratch);
    if f.variant.number == Some(0) {
        return Err(doc.locate("variant.number", "variant numbers start at 1, got 0"));
    }
    if f.checkpoint.load == Some(true) && source == SourceType::Scratch {
        return Err(doc.locate(
            "checkpoint.load",
            "`checkpoint.load: true` needs a source to load from, but `source.type` is `scratch`",
        ));
    }
    if f.checkpoint.load == Some(false) && source != SourceType::Scratch {
        warnings.push(format!(
            "checkpoint.load is false with source.type {}: training from scratch (spec_fp records scratch)",
            source.as_str()
        ));
    }
    if f.source.parent.is_some() && source != SourceType::FinalTraining {
        return Err(doc.locate(
            "source.parent",
            &format!(
                "`source.parent` applies only to `source.type: final_training`, not `{}`",
                source.as_str()
            ),
        ));
    }
    if f.run.mode == Some(RunMode::ContinueFromPrevious) && source != SourceType::FinalTraining {
        return Err(doc.locate(
            "source.type",
            &format!(
                "run.mode continue_from_previous continues a final training: set `source.type: final_training` (got `{}`)",
                source.as_str()
            ),
        ));
    }
    if let Some(v) = &f.run.wait_for_owner {
        parse_duration_ms(v).map_err(|why| doc.locate("run.wait_for_owner", &why))?;
    }
    if let Some(v) = &f.checkpoint.keep_last {
        parse_keep_last(v).map_err(|why| doc.locate("checkpoint.keep_last", &why))?;
    }
    if let Some(cmd) = &f.trainer.command {
        if cmd.is_empty() {
            return Err(doc.locate(
                "trainer.command",
                "an empty argv; use null for the built-in trainer",
            ));
        }
    }
    if f.run.mode == Some(RunMode::ForceNew) && f.variant.number.is_some() {
        warnings.push("force_new ignores variant.number: a new variant is allocated".into());
    }
    Ok(())
}

/// `run.wait_for_owner` when not set: a day, so that identical starts share trainings of
/// up to that long (docs/contract.md, "Identical starts share one training").
pub const DEFAULT_WAIT_FOR_OWNER_MS: u64 = 24 * 3600 * 1000;

/// `dataset.max_file_bytes` when not set: 1 GiB (the built-in trainer holds a split in memory).
pub const DEFAULT_MAX_DATASET_BYTES: u64 = 1 << 30;

/// `checkpoint.keep_last` when not set: the newest step checkpoint stays (a complete
/// variant needs none; one is kept for a user who resumes a damaged variant by hand).
pub const DEFAULT_KEEP_LAST: u64 = 1;

/// `checkpoint.keep_last`: a count (`Some`), or `all` (`None`: prune nothing).
pub fn parse_keep_last(v: &Value) -> std::result::Result<Option<u64>, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("expected a count ≥ 0 or `all`, got {v}")),
        Value::String(s) if s == "all" => Ok(None),
        _ => Err(format!("expected a count ≥ 0 or `all`, got {v}")),
    }
}

/// A duration setting in milliseconds: whole seconds, or a whole number with a unit `ms`,
/// `s`, `m` or `h`.
pub fn parse_duration_ms(v: &Value) -> std::result::Result<u64, String> {
    let bad = || {
        format!("expected seconds or a duration like `90s`, `30m`, `2h` (0 = do not wait), got {v}")
    };
    if let Some(n) = v.as_u64() {
        return n.checked_mul(1000).ok_or_else(bad);
    }
    let s = v.as_str().ok_or_else(bad)?.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

impl Config {
    /// How long reuse_if_exists waits for a live owner of the same identity, in ms.
    pub fn wait_for_owner_ms(&self) -> u64 {
        self.final_training
            .run
            .wait_for_owner
            .as_ref()
            .and_then(|v| parse_duration_ms(v).ok())
            .unwrap_or(DEFAULT_WAIT_FOR_OWNER_MS)
    }

    pub fn mode(&self) -> RunMode {
        self.final_training
            .run
            .mode
            .unwrap_or(RunMode::ReuseIfExists)
    }

    pub fn source_type(&self) -> SourceType {
        self.final_training
            .source
            .kind
            .unwrap_or(SourceType::Scratch)
    }

    /// `checkpoint.load` after auto-derivation: scratch → false, others → true.
    pub fn checkpoint_load(&self) -> bool {
        self.final_training
            .checkpoint
            .load
            .unwrap_or(self.source_type() != SourceType::Scratch)
    }

    pub fn precision(&self) -> Precision {
        self.final_training.trainer.precision.unwrap_or_default()
    }

    pub fn deterministic(&self) -> bool {
        self.final_training.trainer.deterministic.unwrap_or(true)
    }

    /// The model token: `model.yaml name`, else the model file's stem.
    pub fn model_name(&self) -> String {
        self.model.name.clone().unwrap_or_else(|| {
            self.files["model"]
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "model".into())
        })
    }

    /// The objective metric every completed run must report (`best_model_selection.yaml`).
    pub fn objective_metric(&self) -> String {
        self.selection
            .objective
            .metric
            .clone()
            .unwrap_or_else(|| "macro-f1".into())
    }

    /// `dataset.max_file_bytes`: the largest dataset split read.
    pub fn max_dataset_bytes(&self) -> u64 {
        self.final_training
            .dataset
            .max_file_bytes
            .unwrap_or(DEFAULT_MAX_DATASET_BYTES)
    }

    /// `checkpoint.keep_last`: step checkpoints a complete variant keeps (`None`: all).
    pub fn keep_last(&self) -> Option<u64> {
        match &self.final_training.checkpoint.keep_last {
            None => Some(DEFAULT_KEEP_LAST),
            Some(v) => parse_keep_last(v).unwrap_or(Some(DEFAULT_KEEP_LAST)),
        }
    }

    pub fn lease_timeout_s(&self) -> u64 {
        self.final_training.lease.timeout_s.unwrap_or(600)
    }

    /// The display name of a role's file (relative to ROOT when under it).
    pub fn display(&self, role: &str) -> String {
        self.docs
            .get(role)
            .map(|d| d.name.clone())
            .unwrap_or_else(|| role.to_string())
    }
}
