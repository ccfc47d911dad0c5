//! `trainctl config show|check` (docs/contract.md, "Configuration"): every effective value
//! with where it came from, the storage of OUT and the fingerprints; or a validity check.

use super::{Env, Ordered};
use crate::error::Result;
use crate::job;
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt;
use std::path::PathBuf;

/// A value and its origin (a file and line, an override, an environment variable, a default).
#[derive(Clone, Debug, Serialize)]
pub struct Valued {
    pub value: Value,
    pub origin: String,
}

/// One config file as merged.
#[derive(Clone, Debug, Serialize)]
pub struct File {
    pub file: String,
    /// Relative to the config dir.
    pub path: Option<String>,
    pub tree: Value,
    pub keys: Ordered<Valued>,
}

/// What `config show` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Show {
    pub experiment: String,
    pub storage_env: &'static str,
    pub env_reason: String,
    pub root: PathBuf,
    pub config_dir: PathBuf,
    /// The effective hyperparameters and seed.
    pub effective: Ordered<Valued>,
    pub hyperparameters: crate::config::Hyperparameters,
    pub seed: u64,
    pub files: Ordered<File>,
    /// Both fingerprints and their inputs, or why they cannot be computed.
    pub fingerprints: Value,
    /// The storage profile of OUT (and of the Drive mirror on colab), or why it is unknown.
    pub storage: Value,
    pub warnings: Vec<String>,
    /// The human lines of the storage and identity sections.
    #[serde(skip)]
    storage_text: String,
    #[serde(skip)]
    identity_text: String,
}

fn files(config: &crate::config::Config) -> Ordered<File> {
    let mut files = Ordered::default();
    for (role, doc) in config.docs.iter() {
        let mut keys = Ordered::default();
        for (key, value) in crate::config::flatten(&doc.tree) {
            let origin = doc.origin_of(&key).map(|o| o.to_string());
            let origin = origin.unwrap_or_else(|| "default".into());
            keys.push(key, Valued { value, origin });
        }
        let path = config.files.get(role).map(|p| {
            p.strip_prefix(&config.config_dir)
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| p.display().to_string())
        });
        let file = File {
            file: doc.name.clone(),
            path,
            tree: doc.tree.clone(),
            keys,
        };
        files.push(role.clone(), file);
    }
    files
}

/// The storage of OUT (and of the Drive mirror) as JSON and as human lines.
fn storage(config: &crate::config::Config) -> (Value, String) {
    let layout = match crate::paths::Layout::from_config(config) {
        Ok(layout) => layout,
        Err(e) => return (json!({"error": e.to_json()["error"]}), String::new()),
    };
    let (mut doc, line) = crate::storage::describe(config, &layout.out);
    let mut text = format!(
        "\n# storage of OUT {}\nprofile = {line}\n",
        layout.out.display()
    );
    for key in ["file_publish", "dir_publish", "dir_swap", "scope_reason"] {
        if let Some(v) = doc[key].as_str() {
            text.push_str(&format!("{key} = {v}\n"));
        }
    }
    // Colab: the Drive mirror is written too, on its own filesystem.
    if let crate::backup::Plan::Mirror { drive_root, .. } = crate::backup::plan(config, &layout) {
        let (drive, line) = crate::storage::describe_dir(&drive_root);
        text.push_str(&format!(
            "# storage of the Drive mirror {}\nprofile = {line}\n",
            drive_root.display()
        ));
        doc["drive_mirror"] = drive;
    }
    (doc, text)
}

/// Both fingerprints with their canonical inputs, as JSON and as human lines.
fn fingerprints(env: &Env<'_>, config: &crate::config::Config) -> (Value, String) {
    match job::prepare(config.clone(), env.fs, env.host) {
        Ok(job) => (
            json!({"spec_fp": job.spec_fp(), "exec_fp": job.exec_fp(), "spec_inputs": job.spec.to_json(), "exec_inputs": job.exec.to_json()}),
            format!(
                "\n# identity\nspec_fp = {}\nexec_fp = {}\nspec inputs: {}\nexec inputs: {}\n",
                job.spec_fp(),
                job.exec_fp(),
                crate::identity::canonical_json(&job.spec.to_json()),
                crate::identity::canonical_json(&job.exec.to_json()),
            ),
        ),
        Err(e) => (
            json!({"error": e.to_json()["error"]}),
            format!("\n# identity\nnot computable: {e}\n"),
        ),
    }
}

/// `config show`: everything, each value with its origin. Storage and identity that cannot
/// be computed are shown with why, not an error.
pub fn show(env: &Env<'_>) -> Result<Show> {
    let config = env.config()?;
    let mut effective = Ordered::default();
    for p in config.provenance.iter() {
        let valued = Valued {
            value: p.value.clone(),
            origin: p.origin.to_string(),
        };
        effective.push(p.key.clone(), valued);
    }
    let (storage, storage_text) = storage(&config);
    let (fingerprints, identity_text) = fingerprints(env, &config);
    Ok(Show {
        experiment: config.experiment_name.clone(),
        storage_env: config.env.env.as_str(),
        env_reason: config.env.reason.clone(),
        root: config.root.clone(),
        config_dir: config.config_dir.clone(),
        effective,
        hyperparameters: config.hyperparameters.clone(),
        seed: config.seed,
        files: files(&config),
        fingerprints,
        storage,
        warnings: config.warnings.clone(),
        storage_text,
        identity_text,
    })
}

impl fmt::Display for Show {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "experiment: {}\nstorage_env: {} ({})\nroot: {}\nconfig_dir: {}\n\n# effective hyperparameters and seed",
            self.experiment,
            self.storage_env,
            self.env_reason,
            self.root.display(),
            self.config_dir.display()
        )?;
        for (key, v) in self.effective.iter() {
            writeln!(f, "{key} = {}    # {}", v.value, v.origin)?;
        }
        for (role, file) in self.files.iter() {
            writeln!(f, "\n# {role}: {}", file.file)?;
            for (key, v) in file.keys.iter() {
                writeln!(f, "{key} = {}    # {}", v.value, v.origin)?;
            }
        }
        f.write_str(&self.storage_text)?;
        f.write_str(&self.identity_text)
    }
}

/// What `config check` answers when everything `plan` needs is valid.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub ok: bool,
    pub spec_fp: String,
    pub exec_fp: String,
    pub warnings: Vec<String>,
}

/// `config check`: load, prepare and preflight the job, writing nothing.
pub fn check(env: &Env<'_>) -> Result<Check> {
    let job = job::prepare(env.config()?, env.fs, env.host)?;
    // Variant 1 stands for any: the checks depend on the name's shape, not its number.
    job.preflight(1)?;
    Ok(Check {
        ok: true,
        spec_fp: job.spec_fp().to_string(),
        exec_fp: job.exec_fp().to_string(),
        warnings: job.warnings,
    })
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "config ok (spec_fp {}, exec_fp {})",
            self.spec_fp, self.exec_fp
        )
    }
}
