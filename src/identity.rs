//! Identity (docs/contract.md, "Identity"): the one canonical-JSON hasher, and spec_fp / exec_fp /
//! conv_fp built from exactly the inputs the contract lists. Pure: callers gather file digests and
//! code identity; nothing here reads the disk or the clock.

use serde::Serialize;
use serde_json::{json, Value};

/// Canonical JSON: keys sorted (by Unicode code point) at every level, no whitespace, strings
/// escaped as serde_json does, integers in decimal, an integral float rendered as the integer
/// (`1.0` == `1`), other floats in shortest round-trip form.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                let x = n.as_f64().unwrap_or(f64::NAN);
                // An integral float is an exact integer: render it as the integer would be,
                // over the whole i64/u64 range (beyond it no integer can collide).
                if x.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&x)
                {
                    out.push_str(&(x as i64).to_string());
                } else if x.fract() == 0.0 && (0.0..1.844_674_407_370_955_2e19).contains(&x) {
                    out.push_str(&(x as u64).to_string());
                } else {
                    // serde_json prints finite floats in shortest round-trip form (ryu).
                    out.push_str(&Value::from(x).to_string());
                }
            }
        }
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push(':');
                write_canonical(&map[key.as_str()], out);
            }
            out.push('}');
        }
    }
}

pub use trainctl_core::digest::sha256_hex;

/// The fingerprint of a JSON value: first 16 hex chars of SHA-256 over its canonical form.
pub fn fingerprint(value: &Value) -> String {
    let fp = sha256_hex(canonical_json(value).as_bytes())[..16].to_string();
    debug_assert!(is_fingerprint(&fp));
    fp
}

/// 16 lowercase hex characters.
pub fn is_fingerprint(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where the initial weights come from, as it enters spec_fp.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceIdentity {
    Scratch,
    /// An init checkpoint (best_selected), by content digest.
    Checkpoint {
        digest: String,
    },
    /// A parent final training (final_training source, or continue_from_previous).
    Parent {
        spec_fp: String,
        exec_fp: String,
        variant: u64,
    },
}

/// Everything that determines the trained model (docs/contract.md, "Identity").
#[derive(Clone, Debug, PartialEq)]
pub struct SpecInputs {
    /// The chosen backbone's model config, as the YAML tree.
    pub model: Value,
    /// The data config, as the YAML tree.
    pub data: Value,
    /// Content digest of the dataset files actually used.
    pub dataset_digest: String,
    /// The effective hyperparameters after all overrides.
    pub hyperparameters: Value,
    pub seed: u64,
    pub source: SourceIdentity,
}

impl SpecInputs {
    pub fn to_json(&self) -> Value {
        json!({
            "model": self.model,
            "data": self.data,
            "dataset_digest": self.dataset_digest,
            "hyperparameters": self.hyperparameters,
            "seed": self.seed,
            "source": self.source,
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.to_json())
    }
}

/// What identifies the code that trains.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CodeIdentity {
    /// `git rev-parse HEAD` of ROOT, when ROOT is a git checkout.
    pub git_commit: Option<String>,
    /// Tracked files modified outside config/ and the output folders.
    pub dirty: bool,
    /// `builtin/<version>` or the trainer argv joined by spaces.
    pub trainer: String,
}

/// How a run is executed (docs/contract.md, "Identity"); each part is present only when its
/// identity flag is on.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecInputs {
    pub code: Option<CodeIdentity>,
    pub precision: Option<String>,
    pub determinism: Option<Value>,
    /// The execution part of the running environment's env config (its `compute` section).
    pub env_execution: Value,
}

impl ExecInputs {
    pub fn to_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("env".into(), self.env_execution.clone());
        if let Some(code) = &self.code {
            map.insert(
                "code".into(),
                serde_json::to_value(code).unwrap_or_default(),
            );
        }
        if let Some(p) = &self.precision {
            map.insert("precision".into(), p.clone().into());
        }
        if let Some(d) = &self.determinism {
            map.insert("determinism".into(), d.clone());
        }
        Value::Object(map)
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.to_json())
    }
}

/// conv_fp: the conversion config and the parent identity (docs/contract.md, "Source, checkpoint
/// and conversion").
pub fn conv_fp(
    parent_spec_fp: &str,
    parent_exec_fp: &str,
    parent_variant: u64,
    conversion: &Value,
) -> String {
    fingerprint(&json!({
        "parent": {"spec_fp": parent_spec_fp, "exec_fp": parent_exec_fp, "variant": parent_variant},
        "conversion": conversion,
    }))
}

/// Digest of a set of named files: SHA-256 over the canonical JSON of {name: sha256(content)}.
pub fn files_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut map = serde_json::Map::new();
    for (name, bytes) in files {
        map.insert(name.to_string(), sha256_hex(bytes).into());
    }
    sha256_hex(canonical_json(&Value::Object(map)).as_bytes())
}
