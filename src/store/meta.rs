//! A variant's `metadata.json` as one typed record (docs/contract.md, "Decision and
//! completion"; issue 17's typed store layer, first part): the completion predicate reads it
//! as this type (`completion::Metadata`) and `train` writes it through this type only, on
//! every backend (a filesystem or a bucket, through the Fs port). Fields other
//! modules own the shape of (the training source, hyperparameters, metrics, the tracking
//! state) are kept as JSON documents; fields this type does not know, written by a newer
//! trainctl, are kept on rewrite (`extra`). `status`, `convert` and the tracking lifecycle
//! read through it too; `track sync` still reads the JSON value (its run facts are built
//! from it): moving it is the rest of that work.

use crate::completion::{ManifestEntry, RunStatus, METADATA_FILE};
use crate::fs::{self, Fs};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Who ran the current attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptOwner {
    pub host: String,
    pub pid: u32,
    pub lease_generation: u64,
}

/// The data the variant was trained on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRef {
    pub dir: PathBuf,
    pub digest: String,
}

/// Why the last attempt failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptFailure {
    pub kind: String,
    pub message: String,
    /// The storage error kind (`no_space`, …) when the trainer died of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

/// `metadata.json`. `completed` (`status`) is written last (docs/contract.md, "Decision and
/// completion").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantMeta {
    #[serde(default)]
    pub schema_version: u32,
    pub status: RunStatus,
    pub storage_env: String,
    pub model: String,
    pub spec_fp: String,
    pub exec_fp: String,
    pub variant: u64,
    #[serde(default)]
    pub objective_metric: Option<String>,
    #[serde(default)]
    pub experiment: Option<String>,
    #[serde(default)]
    pub run_name: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub decision: Option<String>,
    /// The training source (`job::Source`'s record: type, load, identity, checkpoint, parent,
    /// selection).
    #[serde(default)]
    pub source: Value,
    /// The step checkpoint this attempt resumed from, or the parent checkpoint it continued.
    #[serde(default)]
    pub resumed_from: Option<PathBuf>,
    #[serde(default)]
    pub owner: Option<AttemptOwner>,
    #[serde(default)]
    pub hyperparameters: Value,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub dataset: Option<DatasetRef>,
    #[serde(default)]
    pub attempts: u64,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub manifest: Vec<ManifestEntry>,
    /// The tracking state (`track::lifecycle`: backend, state, run and experiment ids, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<AttemptFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_epochs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl VariantMeta {
    /// The record in `dir`, or `None` when missing or unreadable as one.
    pub fn read(fs: &dyn Fs, dir: &Path) -> Option<VariantMeta> {
        let bytes = fs.read(&dir.join(METADATA_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Replaces `dir/metadata.json` atomically and durably.
    pub fn write(&self, fs: &dyn Fs, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        fs::write_atomic(fs, &dir.join(METADATA_FILE), &bytes)
    }

    /// The tracking run this variant was tracked as, if any.
    pub fn tracking_run_id(&self) -> Option<&str> {
        self.tracking.as_ref()?.get("run_id")?.as_str()
    }

    /// What tracking recorded at training time (`running`, `finished`, `failed`, `error`).
    pub fn tracking_state(&self) -> Option<&str> {
        self.tracking.as_ref()?.get("state")?.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_rewrite_and_old_records_parse() {
        let old = serde_json::json!({
            "schema_version": 1, "status": "running", "storage_env": "local", "model": "m",
            "spec_fp": "a", "exec_fp": "b", "variant": 3, "from_the_future": {"x": 1},
        });
        let meta: VariantMeta = serde_json::from_value(old).expect("parses");
        assert_eq!(meta.variant, 3);
        assert_eq!(meta.attempts, 0);
        let again = serde_json::to_value(&meta).expect("json");
        assert_eq!(again["from_the_future"]["x"], 1);
        assert!(
            again.get("failure").is_none(),
            "absent optional fields are not written"
        );
    }
}
