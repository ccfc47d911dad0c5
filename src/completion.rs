//! The one completion predicate (docs/contract.md, "Decision and completion"), used by plan,
//! status, resume, continue and conversion. Reads through the Fs port; never writes, never errors:
//! anything unreadable is INCOMPLETE with a machine-readable reason.

use crate::fs::Fs;
use crate::identity::sha256_hex;
use crate::paths::{Identity, Layout};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path};

pub const METADATA_FILE: &str = "metadata.json";
pub const METRICS_FILE: &str = "metrics.json";
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// Weights files that make a checkpoint loadable (besides sharded indexes).
pub const WEIGHT_FILES: [&str; 3] = ["model.safetensors", "pytorch_model.bin", "model.bin"];
pub const SHARD_INDEXES: [&str; 2] = [
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
];

/// Run status recorded in metadata.json.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
}

/// One file of the checkpoint manifest (path relative to the variant dir), as the one
/// manifest builder (`fs::manifest`) makes it.
pub type ManifestEntry = crate::fs::FileDigest;

/// metadata.json, as the predicate reads it: the one typed record (`store::meta`).
pub type Metadata = crate::store::meta::VariantMeta;

/// Why a variant is not complete.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    NoMetadata,
    CorruptMetadata,
    Running,
    Failed,
    IdentityMismatch(String),
    CheckpointMissing,
    CheckpointInvalid(String),
    ManifestMismatch(String),
    /// A file of the checkpoint directory that the manifest does not list.
    NotInManifest(String),
    MetricsMissing,
    MetricsInvalid,
    ObjectiveMissing(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoMetadata => f.write_str("no_metadata"),
            Reason::CorruptMetadata => f.write_str("corrupt_metadata"),
            Reason::Running => f.write_str("running"),
            Reason::Failed => f.write_str("failed"),
            Reason::IdentityMismatch(field) => write!(f, "identity_mismatch:{field}"),
            Reason::CheckpointMissing => f.write_str("checkpoint_missing"),
            Reason::CheckpointInvalid(file) => write!(f, "checkpoint_invalid:{file}"),
            Reason::ManifestMismatch(file) => write!(f, "manifest_mismatch:{file}"),
            Reason::NotInManifest(file) => write!(f, "not_in_manifest:{file}"),
            Reason::MetricsMissing => f.write_str("metrics_missing"),
            Reason::MetricsInvalid => f.write_str("metrics_invalid"),
            Reason::ObjectiveMissing(m) => write!(f, "objective_missing:{m}"),
        }
    }
}

/// The verdict on one variant dir.
#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    Complete(Box<Metadata>),
    Incomplete(Reason),
}

impl Completion {
    pub fn is_complete(&self) -> bool {
        matches!(self, Completion::Complete(_))
    }

    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Completion::Complete(_) => None,
            Completion::Incomplete(r) => Some(r),
        }
    }
}

/// How deep to look: `Sizes` checks manifest sizes; `Digests` also re-hashes every file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    Sizes,
    Digests,
}

/// Reads and parses metadata.json; `Err` carries the reason.
pub fn read_metadata(fs: &dyn Fs, dir: &Path) -> Result<Metadata, Reason> {
    let bytes = match fs.read(&dir.join(METADATA_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Reason::NoMetadata),
        Err(_) => return Err(Reason::CorruptMetadata),
    };
    serde_json::from_slice::<Metadata>(&bytes).map_err(|_| Reason::CorruptMetadata)
}

/// metadata.json as a raw JSON value (for writers that keep fields), `None` if unreadable.
pub fn read_metadata_value(fs: &dyn Fs, dir: &Path) -> Option<serde_json::Value> {
    let bytes = fs.read(&dir.join(METADATA_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// docs/contract.md, "Decision and completion" for the variant dir `dir`, which the layout says
/// belongs to `expected` (when known) with number `variant`.
pub fn check(
    fs: &dyn Fs,
    layout: &Layout,
    dir: &Path,
    expected: Option<&Identity>,
    variant: u64,
    depth: Depth,
) -> Completion {
    match check_inner(fs, layout, dir, expected, variant, depth) {
        Ok(meta) => Completion::Complete(Box::new(meta)),
        Err(reason) => Completion::Incomplete(reason),
    }
}

fn check_inner(
    fs: &dyn Fs,
    layout: &Layout,
    dir: &Path,
    expected: Option<&Identity>,
    variant: u64,
    depth: Depth,
) -> Result<Metadata, Reason> {
    // 1. metadata parses, says completed, and names this directory's identity.
    let meta = read_metadata(fs, dir)?;
    match meta.status {
        RunStatus::Running => return Err(Reason::Running),
        RunStatus::Failed => return Err(Reason::Failed),
        RunStatus::Completed => {}
    }
    check_identity(layout, dir, expected, variant, &meta)?;
    // 2. the checkpoint validates.
    check_checkpoint(fs, &dir.join(CHECKPOINT_DIR))?;
    // 3. every manifest file exists with its size (and digest when deep).
    if meta.manifest.is_empty() {
        return Err(Reason::ManifestMismatch("<empty manifest>".into()));
    }
    for entry in &meta.manifest {
        check_manifest_entry(fs, dir, entry, depth)?;
    }
    // 3b. and the manifest covers the whole checkpoint directory: a file it does not list
    // (a manifest edited to leave the weights out, a file added afterwards) is not vouched
    // for, and a consumer would load it.
    let listed: std::collections::BTreeSet<&str> =
        meta.manifest.iter().map(|e| e.path.as_str()).collect();
    let present = crate::fs::files_below(fs, &dir.join(CHECKPOINT_DIR))
        .map_err(|_| Reason::CheckpointMissing)?;
    for rel in present {
        let path = format!(
            "{CHECKPOINT_DIR}/{}",
            rel.to_string_lossy().replace('\\', "/")
        );
        if !listed.contains(path.as_str()) {
            return Err(Reason::NotInManifest(path));
        }
    }
    // 4. metrics.json holds the objective metric.
    let objective = meta
        .objective_metric
        .clone()
        .unwrap_or_else(|| "macro-f1".into());
    check_metrics(fs, &dir.join(METRICS_FILE), &objective)?;
    Ok(meta)
}

fn check_identity(
    layout: &Layout,
    dir: &Path,
    expected: Option<&Identity>,
    variant: u64,
    meta: &Metadata,
) -> Result<(), Reason> {
    if meta.variant != variant {
        return Err(Reason::IdentityMismatch("variant".into()));
    }
    if let Some(id) = expected {
        let fields = [
            (
                "storage_env",
                id.storage_env.as_str(),
                meta.storage_env.as_str(),
            ),
            ("model", id.model.as_str(), meta.model.as_str()),
            ("spec_fp", id.spec_fp.as_str(), meta.spec_fp.as_str()),
            ("exec_fp", id.exec_fp.as_str(), meta.exec_fp.as_str()),
        ];
        if let Some((field, _, _)) = fields.iter().find(|(_, want, got)| want != got) {
            return Err(Reason::IdentityMismatch((*field).into()));
        }
    }
    // Whatever the caller knows, the metadata's identity must render to this very directory.
    let Some(storage_env) = crate::config::schema::StorageEnv::parse(&meta.storage_env) else {
        return Err(Reason::IdentityMismatch("storage_env".into()));
    };
    let meta_id = Identity {
        storage_env,
        model: meta.model.clone(),
        spec_fp: meta.spec_fp.clone(),
        exec_fp: meta.exec_fp.clone(),
    };
    match layout.variant_dir(&meta_id, meta.variant) {
        Ok(path) if path == dir => Ok(()),
        _ => Err(Reason::IdentityMismatch("path".into())),
    }
}

/// Validates a checkpoint directory: config.json with a consistent label map, and weights.
pub fn check_checkpoint(fs: &dyn Fs, ckpt: &Path) -> Result<BTreeMap<u64, String>, Reason> {
    if !fs.is_dir(ckpt) {
        return Err(Reason::CheckpointMissing);
    }
    let invalid = |f: &str| Reason::CheckpointInvalid(f.to_string());
    let config = fs
        .read(&ckpt.join("config.json"))
        .map_err(|_| invalid("config.json"))?;
    let config: serde_json::Value =
        serde_json::from_slice(&config).map_err(|_| invalid("config.json"))?;
    let labels = label_map(&config).ok_or_else(|| invalid("config.json"))?;
    let has_weights = WEIGHT_FILES.iter().any(|w| fs.is_file(&ckpt.join(w)));
    if !has_weights {
        let mut sharded = false;
        for index in SHARD_INDEXES {
            let Ok(bytes) = fs.read(&ckpt.join(index)) else {
                continue;
            };
            let doc: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|_| invalid(index))?;
            let map = doc
                .get("weight_map")
                .and_then(|m| m.as_object())
                .filter(|m| !m.is_empty())
                .ok_or_else(|| invalid(index))?;
            for shard in map.values() {
                let name = shard.as_str().ok_or_else(|| invalid(index))?;
                if !is_plain_relative(name) || !fs.is_file(&ckpt.join(name)) {
                    return Err(invalid(name));
                }
            }
            sharded = true;
            break;
        }
        if !sharded {
            return Err(invalid("weights"));
        }
    }
    Ok(labels)
}

pub use trainctl_trainer::protocol::label_map;

pub fn is_plain_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

fn check_manifest_entry(
    fs: &dyn Fs,
    dir: &Path,
    entry: &ManifestEntry,
    depth: Depth,
) -> Result<(), Reason> {
    let mismatch = || Reason::ManifestMismatch(entry.path.clone());
    if !is_plain_relative(&entry.path) {
        return Err(mismatch());
    }
    let path = dir.join(&entry.path);
    let meta = fs.metadata(&path).map_err(|_| mismatch())?;
    if meta.is_dir || meta.len != entry.size {
        return Err(mismatch());
    }
    if depth == Depth::Digests {
        let bytes = fs.read(&path).map_err(|_| mismatch())?;
        if sha256_hex(&bytes) != entry.sha256 {
            return Err(mismatch());
        }
    }
    Ok(())
}

fn check_metrics(fs: &dyn Fs, path: &Path, objective: &str) -> Result<(), Reason> {
    let bytes = match fs.read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Reason::MetricsMissing),
        Err(_) => return Err(Reason::MetricsInvalid),
    };
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| Reason::MetricsInvalid)?;
    let value = doc
        .get(objective)
        .and_then(|v| v.as_f64())
        .filter(|v| v.is_finite());
    if value.is_none() {
        return Err(Reason::ObjectiveMissing(objective.into()));
    }
    Ok(())
}
