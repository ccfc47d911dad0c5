//! The typed schema of every file in `config/` (docs/contract.md, "Configuration"). Every struct
//! denies unknown keys and every leaf is optional (absent or null = keep the lower-precedence
//! value); defaults live in `config/mod.rs`, not here. Never reads files.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

macro_rules! section {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name { $($(#[$fm])* #[serde(skip_serializing_if = "is_default")] pub $field: $ty,)* }
    };
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The four run modes of docs/contract.md, "Decision and completion".
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    ReuseIfExists,
    ForceNew,
    ResumeIfIncomplete,
    ContinueFromPrevious,
}

impl RunMode {
    pub const ALL: [RunMode; 4] = [
        RunMode::ReuseIfExists,
        RunMode::ForceNew,
        RunMode::ResumeIfIncomplete,
        RunMode::ContinueFromPrevious,
    ];

    pub fn parse(s: &str) -> Option<RunMode> {
        RunMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::ReuseIfExists => "reuse_if_exists",
            RunMode::ForceNew => "force_new",
            RunMode::ResumeIfIncomplete => "resume_if_incomplete",
            RunMode::ContinueFromPrevious => "continue_from_previous",
        }
    }
}

/// Where initial weights come from (docs/contract.md, "Source, checkpoint and conversion").
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SourceType {
    Scratch,
    BestSelected,
    FinalTraining,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Scratch => "scratch",
            SourceType::BestSelected => "best_selected",
            SourceType::FinalTraining => "final_training",
        }
    }
}

pub use trainctl_trainer::protocol::LrScheduler;

/// Numeric precision of training (an exec_fp input).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    Fp16,
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// The storage environments of docs/contract.md, "Environments and storage".
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum StorageEnv {
    Local,
    Colab,
    Kaggle,
    Azureml,
}

impl StorageEnv {
    pub const ALL: [StorageEnv; 4] = [
        StorageEnv::Local,
        StorageEnv::Colab,
        StorageEnv::Kaggle,
        StorageEnv::Azureml,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StorageEnv::Local => "local",
            StorageEnv::Colab => "colab",
            StorageEnv::Kaggle => "kaggle",
            StorageEnv::Azureml => "azureml",
        }
    }

    pub fn parse(s: &str) -> Option<StorageEnv> {
        StorageEnv::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// A reference to a finished training, by fingerprints and variant.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrainingRef {
    pub spec_fp: String,
    pub exec_fp: String,
    pub variant: u64,
}

/// `source.parent` / `checkpoint.source`: a directory path or a {spec_fp, exec_fp, variant}.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum CheckpointRef {
    Path(String),
    Training(TrainingRef),
}

section! {
    /// Early stopping on the validation objective.
    pub struct EarlyStoppingLayer {
        pub enabled: Option<bool>,
        pub patience: Option<u64>,
        pub min_delta: Option<f64>,
    }
}

section! {
    /// Hyperparameters as one layer writes them (`train.yaml training.*`, the selected
    /// configuration, `final_training.yaml training.*`).
    pub struct TrainingLayer {
        pub learning_rate: Option<f64>,
        pub epochs: Option<u64>,
        pub batch_size: Option<u64>,
        pub dropout: Option<f64>,
        pub weight_decay: Option<f64>,
        pub gradient_accumulation_steps: Option<u64>,
        pub warmup_steps: Option<u64>,
        /// `linear` (default) or `constant` after warmup.
        pub lr_scheduler: Option<LrScheduler>,
        pub max_grad_norm: Option<f64>,
        pub validation_fraction: Option<f64>,
        pub early_stopping: EarlyStoppingLayer,
        /// Only in `train.yaml` (the seed's last fallback, docs/contract.md, "Configuration").
        pub random_seed: Option<u64>,
    }
}

section! {
    /// Logging/evaluation/checkpoint cadence in optimizer steps.
    pub struct LoggingLayer {
        pub log_interval: Option<u64>,
        pub eval_interval: Option<u64>,
        pub save_interval: Option<u64>,
    }
}

/// `run.verify_reuse`: what a reuse checks of the files it hands over.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum VerifyReuse {
    /// The sha256 of every checkpoint file against the manifest (the default).
    #[default]
    Sha256,
    /// Sizes only (multi-GB checkpoints; a same-size corruption goes unnoticed).
    Sizes,
}

section! {
    pub struct RunSection {
        pub mode: Option<RunMode>,
        /// What a reuse verifies before handing a variant over (docs/contract.md).
        pub verify_reuse: Option<VerifyReuse>,
        /// How long reuse_if_exists waits for a live owner training the same identity:
        /// seconds, or a number with a unit (`500ms`, `90s`, `30m`, `2h`); 0 never waits.
        pub wait_for_owner: Option<Value>,
    }
}
section! {
    pub struct SourceSection {
        #[serde(rename = "type")]
        pub kind: Option<SourceType>,
        pub parent: Option<CheckpointRef>,
    }
}
section! {
    pub struct DatasetSection {
        pub data_config: Option<String>,
        pub local_path_override: Option<String>,
        /// Largest dataset split read, in bytes (null = 1 GiB): a bigger one is refused
        /// before it is read.
        pub max_file_bytes: Option<u64>,
    }
}
section! {
    pub struct CheckpointSection {
        pub load: Option<bool>,
        pub source: Option<CheckpointRef>,
        pub validate: Option<bool>,
        /// Step checkpoints kept once a variant is complete (docs/contract.md, "Retention
        /// and gc"): a count, or `all`; null = 1.
        pub keep_last: Option<Value>,
    }
}
section! { pub struct VariantSection { pub number: Option<u64>, } }
section! {
    pub struct IdentitySection {
        pub include_code_fp: Option<bool>,
        pub include_precision_fp: Option<bool>,
        pub include_determinism_fp: Option<bool>,
    }
}
section! { pub struct SeedSection { pub random_seed: Option<u64>, } }
section! {
    pub struct MlflowOverrides {
        pub experiment_name: Option<String>,
        pub run_name: Option<String>,
        pub tags: BTreeMap<String, String>,
    }
}
section! {
    /// How the trainer runs: `command: null` is the built-in trainer.
    pub struct TrainerSection {
        pub command: Option<Vec<String>>,
        pub timeout_s: Option<u64>,
        pub precision: Option<Precision>,
        pub deterministic: Option<bool>,
    }
}
section! {
    /// Lease timing (docs/contract.md, "Allocation and leases").
    pub struct LeaseSection {
        pub timeout_s: Option<u64>,
        pub heartbeat_s: Option<u64>,
    }
}

section! {
    /// `final_training.yaml`.
    pub struct FinalTrainingFile {
        pub run: RunSection,
        pub source: SourceSection,
        pub dataset: DatasetSection,
        pub checkpoint: CheckpointSection,
        pub variant: VariantSection,
        pub identity: IdentitySection,
        pub seed: SeedSection,
        pub training: TrainingLayer,
        pub logging: LoggingLayer,
        pub mlflow: MlflowOverrides,
        pub trainer: TrainerSection,
        pub lease: LeaseSection,
    }
}

section! {
    /// `train.yaml`.
    pub struct TrainFile {
        pub training: TrainingLayer,
        pub logging: LoggingLayer,
    }
}

section! {
    /// `experiment/<name>.yaml`: which data/model/train/hpo/env files to use.
    pub struct ExperimentFile {
        pub experiment_name: Option<String>,
        pub data_config: Option<String>,
        pub model_config: Option<String>,
        pub train_config: Option<String>,
        pub hpo_config: Option<String>,
        /// May contain `{storage_env}`; default `env/{storage_env}.yaml`.
        pub env_config: Option<String>,
    }
}

section! { pub struct OutputsBase { pub outputs: Option<String>, } }
section! { pub struct EnvOverride { pub base: OutputsBase, } }
section! {
    pub struct EnvOverrides {
        pub local: EnvOverride,
        pub colab: EnvOverride,
        pub kaggle: EnvOverride,
        pub azureml: EnvOverride,
    }
}
section! {
    /// Sub-directories of OUT per kind of output.
    pub struct OutputDirs {
        pub final_training: Option<String>,
        pub conversion: Option<String>,
        pub cache: Option<String>,
        pub best_model_selection: Option<String>,
        pub hpo: Option<String>,
        pub benchmarking: Option<String>,
    }
}
section! {
    pub struct CacheDirs {
        pub final_training: Option<String>,
        pub best_model_selection: Option<String>,
        pub best_configurations: Option<String>,
    }
}
section! {
    pub struct Patterns {
        pub final_training_v2: Option<String>,
        pub conversion_v2: Option<String>,
        pub best_config_v2: Option<String>,
        pub hpo_v2: Option<String>,
        pub benchmarking_v2: Option<String>,
    }
}
section! {
    pub struct TimestampedStrategy {
        pub enabled: Option<bool>,
        pub max_files: Option<u64>,
    }
}
section! {
    pub struct LatestStrategy {
        pub enabled: Option<bool>,
        pub filename: Option<String>,
    }
}
section! {
    pub struct IndexStrategy {
        pub enabled: Option<bool>,
        pub max_entries: Option<u64>,
        pub include_metadata: Option<bool>,
        pub filename: Option<String>,
    }
}
section! {
    pub struct CacheStrategy {
        pub strategy: Option<String>,
        pub timestamped: TimestampedStrategy,
        pub latest: LatestStrategy,
        pub index: IndexStrategy,
    }
}
section! {
    pub struct CacheStrategies {
        pub final_training: CacheStrategy,
        pub best_model_selection: CacheStrategy,
        pub best_configurations: CacheStrategy,
    }
}
section! {
    /// Token normalisation for generated paths (docs/contract.md, "Environments and storage").
    pub struct NormalizePaths {
        /// Ordered replacements `from: to`, applied in file order.
        pub replace: serde_json::Map<String, Value>,
        pub forbidden_chars: Vec<String>,
        pub lowercase: Option<bool>,
        pub max_component_length: Option<u64>,
        pub max_path_length: Option<u64>,
    }
}
section! {
    pub struct DriveSection {
        pub mount_point: Option<String>,
        pub backup_base_dir: Option<String>,
    }
}
section! { pub struct ProjectSection { pub name: Option<String>, } }

/// `paths.yaml` `storage.profile` (docs/contract.md, "Storage profiles").
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StorageProfileSetting {
    /// Probe OUT's filesystem and pick (the default).
    Auto,
    /// Rename flags required; a filesystem without them is a config error.
    Posix,
    /// The protocol for filesystems without rename flags, on any filesystem.
    PosixNoflags,
}

section! {
    /// `paths.yaml` `storage`.
    pub struct StorageSection {
        pub profile: Option<StorageProfileSetting>,
    }
}

section! {
    /// `paths.yaml`.
    pub struct PathsFile {
        pub schema_version: Option<u64>,
        pub project: ProjectSection,
        pub base: OutputsBase,
        pub env_overrides: EnvOverrides,
        pub outputs: OutputDirs,
        pub cache: CacheDirs,
        pub patterns: Patterns,
        /// A YAML anchor template that `cache_strategies` merges in; not read directly.
        pub cache_strategy_defaults: Option<Value>,
        pub cache_strategies: CacheStrategies,
        pub normalize_paths: NormalizePaths,
        pub drive: DriveSection,
        pub storage: StorageSection,
    }
}

section! {
    pub struct RunNameRule {
        pub pattern: Option<String>,
    }
}
section! {
    pub struct RunNames {
        pub final_training: RunNameRule,
        pub conversion: RunNameRule,
        pub hpo_trial: RunNameRule,
        pub hpo_refit: RunNameRule,
        pub benchmarking: RunNameRule,
    }
}
section! {
    pub struct VersionRule {
        pub format: Option<String>,
        pub separator: Option<String>,
    }
}
section! {
    pub struct NameNormalizeRule {
        pub replace: serde_json::Map<String, Value>,
        pub lowercase: Option<bool>,
    }
}
section! {
    pub struct NameNormalize {
        pub env: NameNormalizeRule,
        pub model: NameNormalizeRule,
    }
}
section! {
    pub struct NameValidate {
        pub max_length: Option<u64>,
        pub warn_length: Option<u64>,
        pub forbidden_chars: Vec<String>,
    }
}
section! {
    /// `naming.yaml`.
    pub struct NamingFile {
        pub schema_version: Option<u64>,
        pub run_names: RunNames,
        pub version: VersionRule,
        pub normalize: NameNormalize,
        pub validate: NameValidate,
    }
}

section! {
    pub struct StageTracking {
        pub enabled: Option<bool>,
        pub log_checkpoint: Option<bool>,
        pub log_metrics_json: Option<bool>,
    }
}
section! {
    pub struct TrackingSection {
        /// `null` = `file:<ROOT>/mlruns`. `MLFLOW_TRACKING_URI` overrides it.
        pub uri: Option<String>,
        pub required: Option<bool>,
        pub training: StageTracking,
        pub conversion: StageTracking,
        pub selection: StageTracking,
    }
}
section! {
    pub struct AzureMl {
        pub enabled: Option<bool>,
        pub workspace_name: Option<String>,
        pub subscription_id: Option<String>,
        pub resource_group: Option<String>,
        pub region: Option<String>,
    }
}
section! {
    pub struct AutoIncrementProcesses {
        pub final_training: Option<bool>,
        pub conversion: Option<bool>,
        pub hpo: Option<bool>,
        pub benchmarking: Option<bool>,
    }
}
section! {
    pub struct AutoIncrement {
        pub enabled: Option<bool>,
        pub processes: AutoIncrementProcesses,
    }
}
section! {
    pub struct RunNameSettings {
        pub max_length: Option<u64>,
        pub auto_increment: AutoIncrement,
    }
}
section! {
    pub struct TagSettings {
        pub max_length: Option<u64>,
    }
}
section! {
    pub struct MlflowNaming {
        pub project_name: Option<String>,
        pub run_name: RunNameSettings,
        pub tags: TagSettings,
    }
}
section! {
    /// `mlflow.yaml`.
    pub struct MlflowFile {
        pub tracking: TrackingSection,
        pub azure_ml: AzureMl,
        pub naming: MlflowNaming,
    }
}

/// `objective.direction`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Maximize,
    Minimize,
}

section! {
    pub struct Objective {
        pub metric: Option<String>,
        pub direction: Option<Direction>,
    }
}
section! {
    pub struct Scoring {
        pub f1_weight: Option<f64>,
        pub latency_weight: Option<f64>,
        pub normalize_weights: Option<bool>,
    }
}
section! {
    pub struct Thresholds {
        pub min_objective: Option<f64>,
        pub max_latency_ms: Option<f64>,
        pub accuracy_threshold: Option<f64>,
        pub use_relative_threshold: Option<bool>,
    }
}
section! {
    pub struct BenchmarkReq {
        pub required_metrics: Vec<String>,
        pub latency_metric: Option<String>,
    }
}
section! {
    /// `best_model_selection.yaml`.
    pub struct SelectionFile {
        pub run: RunSection,
        pub objective: Objective,
        pub scoring: Scoring,
        pub thresholds: Thresholds,
        pub benchmark: BenchmarkReq,
    }
}

section! {
    pub struct ConversionTarget { pub format: Option<String>, }
}
section! {
    pub struct ConversionOutput { pub filename_pattern: Option<String>, }
}
section! {
    pub struct OnnxSettings {
        pub opset_version: Option<u64>,
        pub quantization: Option<String>,
        pub run_smoke_test: Option<bool>,
    }
}
section! {
    /// `conversion.yaml`.
    pub struct ConversionFile {
        pub target: ConversionTarget,
        pub onnx: OnnxSettings,
        pub output: ConversionOutput,
        pub command: Option<Vec<String>>,
    }
}

section! {
    pub struct Compute {
        pub device: Option<String>,
        pub num_workers: Option<u64>,
        pub threads: Option<u64>,
    }
}
section! {
    /// `env/<storage_env>.yaml`. Only `compute` is an execution input (exec_fp); the other
    /// sections describe the platform and are free-form.
    pub struct EnvFile {
        pub compute: Compute,
        pub storage: BTreeMap<String, Value>,
        pub logging: BTreeMap<String, Value>,
        pub workspace: BTreeMap<String, Value>,
    }
}

section! {
    pub struct DataFiles {
        pub train: Option<String>,
        pub validation: Option<String>,
        pub test: Option<String>,
    }
}
section! {
    pub struct DataSchema {
        pub format: Option<String>,
        pub annotation_format: Option<String>,
        pub entity_types: Vec<String>,
    }
}
section! {
    /// `data/<name>.yaml`.
    pub struct DataFile {
        pub name: Option<String>,
        pub version: Option<String>,
        pub description: Option<String>,
        pub local_path: Option<String>,
        pub files: DataFiles,
        pub schema: DataSchema,
    }
}

section! {
    pub struct Preprocessing {
        pub max_length: Option<u64>,
        pub lowercase: Option<bool>,
    }
}
section! {
    pub struct Features {
        pub hash_dim: Option<u64>,
        pub window: Option<u64>,
        pub char_ngrams: Option<bool>,
    }
}
section! {
    pub struct Decoding {
        pub use_crf: Option<bool>,
    }
}
section! {
    /// `model/<name>.yaml`.
    pub struct ModelFile {
        pub name: Option<String>,
        pub backbone: Option<String>,
        pub tokenizer: Option<String>,
        pub preprocessing: Preprocessing,
        pub features: Features,
        pub decoding: Decoding,
    }
}

section! {
    /// `hpo/<name>.yaml`: only loaded and checked here; its sections are free-form.
    pub struct HpoFile {
        pub search_space: BTreeMap<String, Value>,
        pub sampling: BTreeMap<String, Value>,
        pub objective: Objective,
        pub selection: BTreeMap<String, Value>,
        pub early_termination: BTreeMap<String, Value>,
    }
}
