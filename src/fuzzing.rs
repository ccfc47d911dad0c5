//! The loaders under fuzzing (docs/contract.md, "Fuzzed loaders"): one entry point per target,
//! shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`, nightly toolchain, libFuzzer) and by
//! the quick tier's corpus replay on the stable toolchain (`props/fuzz_corpus.rs`), so that
//! what the fuzzer found stays checked on every `cargo test`.
//!
//! Every target feeds its input to the real reader and checks what a user is promised: no
//! panic (the fuzzer catches it), bounded memory (`-rss_limit_mb`), and a refusal that names
//! where the problem is (a file, a line, a key or a record). `run` returns `Err` with the
//! broken promise; the fuzz target panics on it.

use crate::fs::{Fs, OsFs};
use arbitrary::{Arbitrary, Unstructured};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The fuzz targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One config file of the shipped set replaced, plus `-o` overrides, loaded in full.
    Config,
    /// `metadata.json` of a variant, judged by the completion predicate and read by `status`.
    Metadata,
    /// A lease generation and its heartbeat, read by the liveness rule.
    Lease,
    /// A cache record among valid ones, read by `cache check` and `latest`.
    CacheRecord,
    /// A trials file read by `select`.
    Trials,
    /// The job file the built-in trainer reads.
    JobFile,
    /// A checkpoint's `model.safetensors` (header and tensors), read by the completion
    /// predicate and by the trainer.
    Safetensors,
    /// An MLflow REST response body.
    MlflowResponse,
}

impl Target {
    pub const ALL: [Target; 8] = [
        Target::Config,
        Target::Metadata,
        Target::Lease,
        Target::CacheRecord,
        Target::Trials,
        Target::JobFile,
        Target::Safetensors,
        Target::MlflowResponse,
    ];

    /// The name of the fuzz target and of its corpus dir (`fuzz/corpus/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Config => "config",
            Target::Metadata => "metadata",
            Target::Lease => "lease",
            Target::CacheRecord => "cache_record",
            Target::Trials => "trials",
            Target::JobFile => "job_file",
            Target::Safetensors => "safetensors",
            Target::MlflowResponse => "mlflow_response",
        }
    }

    /// Feeds one input to the target. `Err` says which promise it broke.
    pub fn run(self, data: &[u8]) -> Result<(), String> {
        match self {
            Target::Config => config(data),
            Target::Metadata => metadata(data),
            Target::Lease => lease(data),
            Target::CacheRecord => cache_record(data),
            Target::Trials => trials(data),
            Target::JobFile => job_file(data),
            Target::Safetensors => safetensors(data),
            Target::MlflowResponse => mlflow_response(data),
        }
    }
}

/// The config files a `Config` input may replace (roles of the shipped set).
const CONFIG_FILES: [&str; 11] = [
    "final_training.yaml",
    "train.yaml",
    "paths.yaml",
    "naming.yaml",
    "mlflow.yaml",
    "tags.yaml",
    "best_model_selection.yaml",
    "conversion.yaml",
    "model/builtin.yaml",
    "data/resume_tiny.yaml",
    "experiment/resume_ner_baseline.yaml",
];

/// Splits an input at its first 0xFF byte (never part of UTF-8 text): the text of a file
/// before it, and the `arbitrary`-structured rest after it. Seeds are real files followed by
/// nothing, so the corpus starts from what users write.
fn split_text(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A private copy of the shipped `config/` (one per process), which each input edits and
/// restores.
fn project() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("trainctl-fuzz-{}", std::process::id()));
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        copy_dir(&shipped, &dir.join("config"));
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::create_dir_all(to);
    for e in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            let _ = std::fs::copy(e.path(), target);
        }
    }
}

/// Input: one byte choosing the file, its new text, then (after 0xFF) `-o` overrides as
/// `arbitrary` (key, value) pairs.
fn config(data: &[u8]) -> Result<(), String> {
    let Some((file, rest)) = data.split_first() else {
        return Ok(());
    };
    let (text, tail) = split_text(rest);
    let overrides: Vec<(String, String)> =
        Vec::arbitrary_take_rest(Unstructured::new(tail)).unwrap_or_default();
    let root = project();
    let rel = CONFIG_FILES[*file as usize % CONFIG_FILES.len()];
    let path = root.join("config").join(rel);
    let original = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let opts = crate::config::LoadOptions {
        root: Some(root.to_path_buf()),
        overrides: overrides
            .iter()
            .take(8)
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        ..Default::default()
    };
    let loaded = crate::config::load(&opts, root, &|_| None);
    std::fs::write(&path, original).map_err(|e| e.to_string())?;
    match loaded {
        Ok(_) => Ok(()),
        Err(e) if e.place.is_empty() => Err(format!("an unlocated config error: {e}")),
        Err(_) => Ok(()),
    }
}

/// A variant dir in a fresh simulated filesystem, with `files` written into it.
fn variant_with(files: &[(&str, &[u8])]) -> (crate::fs::sim::SimFs, PathBuf) {
    let fs = crate::fs::sim::SimFs::new();
    let dir = PathBuf::from("/out/final_training/local/builtin/spec-0_exec-0/v1");
    for (name, bytes) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            let _ = fs.create_dir_all(parent);
        }
        let _ = fs.write(&path, bytes);
    }
    (fs, dir)
}

/// The shipped config with OUT at `/out`, loaded once per process (a load per input made a
/// target 300× slower than the others), and its layout.
fn shipped() -> &'static (crate::config::Config, crate::paths::Layout) {
    static SHIPPED: OnceLock<(crate::config::Config, crate::paths::Layout)> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let opts = crate::config::LoadOptions {
            root: Some(root.to_path_buf()),
            overrides: vec!["paths:base.outputs=/out".into()],
            ..Default::default()
        };
        let config = crate::config::load(&opts, root, &|_| None)
            .unwrap_or_else(|e| panic!("the shipped config loads: {e}"));
        let layout = crate::paths::Layout::from_config(&config)
            .unwrap_or_else(|e| panic!("the shipped layout: {e}"));
        (config, layout)
    })
}

fn layout() -> &'static crate::paths::Layout {
    &shipped().1
}

fn metadata(data: &[u8]) -> Result<(), String> {
    let (fs, dir) = variant_with(&[("metadata.json", data)]);
    let _ = crate::completion::check(
        &fs,
        layout(),
        &dir,
        None,
        1,
        crate::completion::Depth::Digests,
    );
    let _ = crate::store::meta::VariantMeta::read(&fs, &dir);
    Ok(())
}

/// The clock and bound a lease is judged under (`arbitrary`).
#[derive(Arbitrary, Debug, Default)]
struct Clock {
    now_ms: u64,
    timeout_ms: u64,
}

/// Input: a lease record, then (after 0xFF) its heartbeat, then (after 0xFF) the clock.
fn lease(data: &[u8]) -> Result<(), String> {
    let (record, rest) = split_text(data);
    let (heartbeat, tail) = split_text(rest);
    let clock = Clock::arbitrary_take_rest(Unstructured::new(tail)).unwrap_or_default();
    let (fs, dir) = variant_with(&[("lease-1.json", record), ("heartbeat-1.json", heartbeat)]);
    let facts = crate::lease::LivenessFacts {
        this_host: "fuzz-host",
        now_ms: clock.now_ms,
        lease_timeout_ms: clock.timeout_ms,
        process_start_time: &|_| None,
        clock: Some(&|| clock.now_ms),
    };
    let _ = crate::observe::read_lease(&fs, &dir, &facts);
    let _ = crate::lease::current(&fs, &dir);
    Ok(())
}

/// The final-training cache settings of the shipped config.
fn cache_settings() -> crate::cache::CacheSettings {
    let (config, layout) = shipped();
    crate::cache::CacheSettings::from_paths(
        &config.paths,
        layout,
        crate::cache::CacheKind::FinalTraining,
    )
    .unwrap_or_else(|e| panic!("the shipped cache settings: {e}"))
}

fn cache_record(data: &[u8]) -> Result<(), String> {
    let fs = crate::fs::sim::SimFs::new();
    let settings = cache_settings();
    let name = "final_training_spec-0_20261207T000000.000000Z_1-0000000001-1.json";
    let path = settings.dir.join(name);
    let _ = fs.create_dir_all(&settings.dir);
    let _ = fs.write(&path, data);
    let cache = crate::cache::Cache::new(&fs, settings);
    let problems = cache
        .check()
        .map_err(|e| format!("cache check failed: {e}"))?;
    if let Some(p) = problems.iter().find(|p| p.file.is_empty()) {
        return Err(format!("a cache problem that names no file: {p:?}"));
    }
    let _ = cache.latest();
    Ok(())
}

fn trials(data: &[u8]) -> Result<(), String> {
    let fs = crate::fs::sim::SimFs::new();
    let path = Path::new("/project/trials.json");
    let _ = fs.create_dir_all(Path::new("/project"));
    let _ = fs.write(path, data);
    match crate::select::read_trials(&fs, path) {
        Err(e) if e.place.file.is_none() => Err(format!("a trials error naming no file: {e}")),
        _ => Ok(()),
    }
}

fn job_file(data: &[u8]) -> Result<(), String> {
    if let Ok(job) = serde_json::from_slice::<crate::builtin::JobFile>(data) {
        let _ = crate::builtin::feature_config(&job.model);
    }
    Ok(())
}

/// A private file for readers that take a path (one per process).
fn scratch_file(name: &str, data: &[u8]) -> Result<PathBuf, String> {
    let path = std::env::temp_dir().join(format!("trainctl-fuzz-{}-{name}", std::process::id()));
    std::fs::write(&path, data).map_err(|e| e.to_string())?;
    Ok(path)
}

fn safetensors(data: &[u8]) -> Result<(), String> {
    let config = br#"{"id2label":{"0":"O"},"label2id":{"O":0}}"#;
    let (fs, dir) = variant_with(&[
        ("checkpoint/model.safetensors", data),
        ("checkpoint/config.json", config),
    ]);
    let _ = crate::completion::check_checkpoint(&fs, &dir.join("checkpoint"));
    let path = scratch_file("model.safetensors", data)?;
    let read = crate::builtin::ckpt::read_tensors(&path);
    let _ = OsFs.remove_file(&path);
    match read {
        Err(e) if !e.contains("model.safetensors") => {
            Err(format!("a checkpoint error naming no file: {e}"))
        }
        _ => Ok(()),
    }
}

fn mlflow_response(data: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    match crate::track::rest::parse_answer(text) {
        Err(crate::track::TrackError::Malformed { what, .. }) if what.is_empty() => {
            Err("a malformed answer naming nothing".into())
        }
        _ => Ok(()),
    }
}
