//! The typed parts of the job-file protocol between trainctl and a trainer (docs/contract.md,
//! "Execution"): the effective hyperparameters, the learning-rate schedule, the label map of
//! a checkpoint's `config.json`, and which step checkpoint a resume starts from. The
//! orchestrator re-exports them (`config`, `completion`, `train`), so both sides use one
//! definition.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trainctl_core::fs::Fs;

/// The learning-rate schedule after warmup (docs/contract.md, "Trainer"). `linear` decays to 0 at
/// the last step, so it depends on the total number of steps; `constant` does not, which makes a
/// continued run (E1 then E2 epochs) equal to an uninterrupted E2 run.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum LrScheduler {
    #[default]
    Linear,
    Constant,
}

impl LrScheduler {
    pub fn as_str(self) -> &'static str {
        match self {
            LrScheduler::Linear => "linear_warmup_linear_decay",
            LrScheduler::Constant => "linear_warmup_constant",
        }
    }
}

/// The effective hyperparameters after every layer (docs/contract.md, "Configuration" precedence).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hyperparameters {
    pub learning_rate: f64,
    pub epochs: u64,
    pub batch_size: u64,
    pub dropout: f64,
    pub weight_decay: f64,
    pub gradient_accumulation_steps: u64,
    pub warmup_steps: u64,
    /// Absent = linear (and absent from spec_fp, so configs that never set it keep their
    /// fingerprints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_scheduler: Option<LrScheduler>,
    pub max_grad_norm: f64,
    pub validation_fraction: f64,
    pub early_stopping: EarlyStopping,
    pub eval_interval: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    pub enabled: bool,
    pub patience: u64,
    pub min_delta: f64,
}

/// `id2label` / `label2id` from a checkpoint config; `None` unless both exist, are the same
/// size, and are inverse to each other with ids 0..n.
pub fn label_map(config: &serde_json::Value) -> Option<BTreeMap<u64, String>> {
    let id2label = config.get("id2label")?.as_object()?;
    let label2id = config.get("label2id")?.as_object()?;
    if id2label.is_empty() || id2label.len() != label2id.len() {
        return None;
    }
    let mut out = BTreeMap::new();
    for (id, label) in id2label {
        let id: u64 = id.parse().ok()?;
        let label = label.as_str()?;
        if label2id.get(label)?.as_u64()? != id {
            return None;
        }
        out.insert(id, label.to_string());
    }
    let dense = out.keys().copied().eq(0..out.len() as u64);
    dense.then_some(out)
}

/// The step checkpoints of a variant dir (`checkpoints/step-<k>`), oldest first; temporaries
/// and other names are not step checkpoints. Used by resume and by retention.
pub fn step_checkpoints(fs: &dyn Fs, dir: &Path) -> Vec<(u64, PathBuf)> {
    let root = dir.join("checkpoints");
    let mut steps: Vec<(u64, PathBuf)> = fs
        .list(&root)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.is_dir)
        .filter_map(|e| {
            Some((
                e.name.strip_prefix("step-")?.parse::<u64>().ok()?,
                root.join(&e.name),
            ))
        })
        .collect();
    steps.sort();
    steps
}

/// The newest resumable step checkpoint (`checkpoints/step-<k>` with a readable
/// trainer_state.json); temp dirs and torn ones are skipped.
pub fn latest_step_checkpoint(fs: &dyn Fs, dir: &Path) -> Option<PathBuf> {
    let steps = step_checkpoints(fs, dir);
    steps.into_iter().rev().map(|(_, p)| p).find(|p| {
        fs.read(&p.join("trainer_state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some()
    })
}
