//! Checkpoint files of the built-in trainer: safetensors encoding of parameters and Adam
//! moments, and their atomic, durable publication. The trainer runs as its own process and
//! writes only inside its variant dir; it publishes through the same Fs port and durable
//! operations as the orchestrator (`trainctl_core::fs` over `OsFs`), so a checkpoint is written by
//! the protocol of the filesystem's storage profile. It never touches orchestrator state.

use super::model::{Params, TENSOR_NAMES};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use trainctl_core::fs::{self, OsFs};

fn err(path: &Path, what: &str, e: impl std::fmt::Display) -> String {
    format!("{}: {what}: {e}", path.display())
}

/// Replaces the file `path` atomically and durably (through the Fs port, like every durable
/// write of trainctl: the protocol follows the storage profile of the filesystem).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let parent = path
        .parent()
        .ok_or_else(|| err(path, "publish", "no parent"))?;
    fs::ensure_dir(&OsFs, parent).map_err(|e| err(parent, "create", e))?;
    fs::write_atomic(&OsFs, path, bytes).map_err(|e| err(path, "write", e))
}

/// Publishes the directory `target` holding exactly `files`, atomically and durably. An
/// existing `target` (e.g. a step re-saved after resuming from an earlier one) is swapped
/// out whole: readers see the old or the new directory (`fs::write_dir_atomic`).
pub fn write_dir_atomic(target: &Path, files: &[(&str, Vec<u8>)]) -> Result<(), String> {
    fs::write_dir_atomic(&OsFs, target, files).map_err(|e| err(target, "write", e))
}

fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(xs.len() * 4);
    for x in xs {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// A set of named f32 tensors to serialize.
#[derive(Default)]
pub struct TensorSet {
    items: Vec<(String, Vec<usize>, Vec<u8>)>,
}

impl TensorSet {
    /// Adds every tensor of `p` under `prefix` + its name.
    pub fn add_params(&mut self, prefix: &str, p: &Params) {
        for (name, shape, data) in p.tensors() {
            self.items
                .push((format!("{prefix}{name}"), shape, f32_bytes(data)));
        }
    }

    /// safetensors bytes; the single metadata entry keeps the header deterministic.
    pub fn serialize(&self, format: &str) -> Result<Vec<u8>, String> {
        let mut views = Vec::with_capacity(self.items.len());
        for (name, shape, bytes) in &self.items {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map_err(|e| format!("tensor {name}: {e}"))?;
            views.push((name.clone(), view));
        }
        let meta: HashMap<String, String> = [("format".to_string(), format.to_string())].into();
        safetensors::serialize(views, Some(meta)).map_err(|e| format!("safetensors: {e}"))
    }
}

/// Named f32 tensors: name → (shape, data).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The f32 tensors of a safetensors file, by name.
pub fn read_tensors(path: &Path) -> Result<Tensors, String> {
    let bytes = std::fs::read(path).map_err(|e| err(path, "read", e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(path, "safetensors", e))?;
    let mut out = BTreeMap::new();
    for name in st.names() {
        let view = st.tensor(name).map_err(|e| err(path, name, e))?;
        if view.dtype() != Dtype::F32 {
            return Err(err(
                path,
                name,
                format!("dtype {:?}, expected F32", view.dtype()),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name.to_string(), (view.shape().to_vec(), data));
    }
    Ok(out)
}

/// Rebuilds `Params` named `prefix` + tensor name, checking shapes against `like`. With
/// `allow_missing_crf`, absent CRF tensors stay zero (a softmax checkpoint warm-starting a CRF).
pub fn params_from(
    tensors: &Tensors,
    prefix: &str,
    like: &Params,
    allow_missing_crf: bool,
    path: &Path,
) -> Result<Params, String> {
    let mut p = Params::zeros(like.hash_dim, like.n_labels, like.crf());
    let expected: Vec<(&str, Vec<usize>)> =
        like.tensors().into_iter().map(|(n, s, _)| (n, s)).collect();
    for (name, shape) in expected {
        let key = format!("{prefix}{name}");
        let Some((got_shape, data)) = tensors.get(&key) else {
            if allow_missing_crf && name != TENSOR_NAMES[0] {
                continue;
            }
            return Err(err(path, "missing tensor", &key));
        };
        if *got_shape != shape {
            return Err(err(
                path,
                &key,
                format!("shape {got_shape:?}, expected {shape:?} (hash_dim × labels)"),
            ));
        }
        let slot = match name {
            "weight" => &mut p.weight,
            "transitions" => &mut p.transitions,
            "start_transitions" => &mut p.start,
            _ => &mut p.end,
        };
        slot.copy_from_slice(data);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_bytes_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Params::zeros(4, 3, true);
        p.weight[5] = 1.5;
        p.transitions[2] = -0.25;
        p.end[1] = 3.0;
        let mut set = TensorSet::default();
        set.add_params("", &p);
        set.add_params("best.", &p);
        let a = set.serialize("x").unwrap();
        assert_eq!(a, set.serialize("x").unwrap());
        let path = dir.path().join("w.safetensors");
        write_file_atomic(&path, &a).unwrap();
        let t = read_tensors(&path).unwrap();
        assert_eq!(params_from(&t, "best.", &p, false, &path).unwrap(), p);
        let wrong = Params::zeros(5, 3, true);
        assert!(params_from(&t, "", &wrong, false, &path)
            .unwrap_err()
            .contains("shape"));
    }

    #[test]
    fn directories_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("step-1");
        write_dir_atomic(&target, &[("a", b"1".to_vec()), ("b", b"2".to_vec())]).unwrap();
        write_dir_atomic(&target, &[("a", b"3".to_vec())]).unwrap();
        assert_eq!(std::fs::read(target.join("a")).unwrap(), b"3");
        assert!(!target.join("b").exists());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("step-1")]);
    }
}
