//! The conversion hand-off (docs/contract.md, "Source, checkpoint and conversion"): `trainctl
//! convert --from <variant dir> | --latest`.
//!
//! Order of work, each step before anything is written:
//! 1. find the parent (explicit dir, or the latest complete final training of the config's
//!    model and storage_env);
//! 2. parse `spec-<spec8>_exec-<exec8>/v<N>` from its path and check the metadata against it;
//! 3. refuse an incomplete parent with the completion reason (deep check: sha256 of every
//!    manifest file);
//! 4. check that the converter's input artifacts exist (a clear error naming the file);
//! 5. conv_fp from `conversion.yaml` and the parent identity; the output dir carries the real
//!    variant. A complete conversion already there is reused.
//!
//! Then the converter writes into a private staged dir (the built-in one: an inference bundle
//! of weights, label map and feature config, smoke-tested by loading it and predicting; or
//! `conversion.command`), every file is fsynced, `manifest.json` (files with sizes and
//! sha256, lineage, tags) is written last, and the staged dir is published by a no-replace
//! rename. A crash or a failed converter leaves no output dir behind; a concurrent convert of
//! the same parent ends with one published bundle that both report.

use crate::completion::{self, Completion, Depth, CHECKPOINT_DIR, METRICS_FILE};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::fs::{self, Fs};
use crate::identity::{conv_fp, sha256_hex};
use crate::job::Host;
use crate::naming::{build_parent_training_id, parse_parent_training_id, RunNameParts};
use crate::paths::{Identity, Layout};
use crate::store::meta::VariantMeta;
use crate::trainer::{Outcome, Run, Trainer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The manifest of a conversion output; written last, so its presence means "complete".
pub const MANIFEST_FILE: &str = "manifest.json";
/// What the built-in converter is, for the manifest.
pub const BUILTIN_CONVERTER: &str = "builtin-bundle/1";
/// The files of a built-in bundle (what `predict` loads).
pub const BUNDLE_FILES: [&str; 2] = ["model.safetensors", "config.json"];
/// Text the built-in converter predicts on to prove the bundle loads.
const SMOKE_TEXT: &str = "Jane Doe worked as a data engineer at Acme Corp in Berlin.";

/// Which parent to convert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum From {
    Dir(PathBuf),
    Latest,
}

/// What `convert` did.
#[derive(Clone, Debug)]
pub struct Report {
    /// `new` (converted now) or `reuse` (a complete conversion with this conv_fp existed).
    pub decision: &'static str,
    pub output_dir: PathBuf,
    pub conv_fp: String,
    pub run_name: String,
    pub manifest: Value,
    pub warnings: Vec<String>,
}

/// A command-line path: absolute, relative to `cwd` otherwise, lexically normalised (the
/// one normaliser, `paths::lexical_normalize`).
pub fn normalize(cwd: &Path, path: &Path) -> PathBuf {
    crate::paths::lexical_normalize(&crate::config::absolutize(path, cwd))
}

fn parent_incomplete(dir: &Path, reason: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::ParentIncomplete,
        format!(
            "cannot convert {}: the training is not complete ({reason})",
            dir.display()
        ),
    )
}

/// The parent's identity as its path states it: `(spec8, exec8, variant)`.
fn identity_from_path(dir: &Path) -> Result<(String, String, u64)> {
    let names: Vec<String> = dir
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let parsed = match names.as_slice() {
        [v, id] => parse_parent_training_id(&format!("{id}/{v}")),
        _ => None,
    };
    parsed.ok_or_else(|| {
        Error::new(
            ErrorKind::Usage,
            format!(
                "{} is not a final-training variant dir: its path must end in spec-<spec8>_exec-<exec8>/v<N>",
                dir.display()
            ),
        )
    })
}

/// The complete parent, checked against its path, with its metadata.
fn checked_parent(
    fs: &dyn Fs,
    layout: &Layout,
    dir: &Path,
) -> Result<(Identity, completion::Metadata, Option<VariantMeta>)> {
    if !fs.is_dir(dir) {
        return Err(Error::new(
            ErrorKind::ParentNotFound,
            format!("{} does not exist", dir.display()),
        ));
    }
    let (spec8, exec8, variant) = identity_from_path(dir)?;
    let meta = completion::read_metadata(fs, dir).map_err(|r| parent_incomplete(dir, r))?;
    for (field, from_path, from_meta) in [
        ("spec_fp", spec8.as_str(), meta.spec_fp.as_str()),
        ("exec_fp", exec8.as_str(), meta.exec_fp.as_str()),
    ] {
        if !from_meta.starts_with(from_path) {
            return Err(parent_incomplete(
                dir,
                format!("identity_mismatch:{field}: the path says {from_path}, metadata.json says {from_meta}"),
            ));
        }
    }
    if meta.variant != variant {
        return Err(parent_incomplete(
            dir,
            format!(
                "identity_mismatch:variant: the path says v{variant}, metadata.json says {}",
                meta.variant
            ),
        ));
    }
    // The full predicate (identity renders to this dir under OUT, checkpoint, manifest with
    // sha256, metrics): conversion is where a silently damaged checkpoint would ship.
    let meta = match completion::check(fs, layout, dir, None, variant, Depth::Digests) {
        Completion::Complete(m) => *m,
        Completion::Incomplete(reason) => return Err(parent_incomplete(dir, reason)),
    };
    let storage_env = crate::config::schema::StorageEnv::parse(&meta.storage_env)
        .ok_or_else(|| parent_incomplete(dir, "identity_mismatch:storage_env"))?;
    let identity = Identity {
        storage_env,
        model: meta.model.clone(),
        spec_fp: meta.spec_fp.clone(),
        exec_fp: meta.exec_fp.clone(),
    };
    Ok((identity, meta, VariantMeta::read(fs, dir)))
}

fn artifacts_missing(message: String) -> Error {
    Error::new(ErrorKind::ConversionArtifactsMissing, message)
}

/// The built-in converter's inputs: `checkpoint/model.safetensors` and a `config.json` with
/// a label map and the built-in feature config.
fn check_builtin_inputs(fs: &dyn Fs, parent: &Path) -> Result<()> {
    let ckpt = parent.join(CHECKPOINT_DIR);
    for name in BUNDLE_FILES {
        if !fs.is_file(&ckpt.join(name)) {
            return Err(artifacts_missing(format!(
                "{} is missing: the built-in converter needs the checkpoint's {}",
                ckpt.join(name).display(),
                BUNDLE_FILES.join(" and ")
            )));
        }
    }
    let config_path = ckpt.join("config.json");
    let config: Value = fs
        .read(&config_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    if config.get("features").is_none_or(|f| !f.is_object()) {
        return Err(artifacts_missing(format!(
            "{} has no `features` section: the built-in converter only converts checkpoints of the built-in trainer (set conversion.command for others)",
            config_path.display()
        )));
    }
    Ok(())
}

/// A conversion output dir's manifest, verified: every listed file exists with its size and
/// sha256. `Err` names what is wrong.
pub fn check_output(fs: &dyn Fs, dir: &Path) -> std::result::Result<Value, String> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = fs
        .read(&path)
        .map_err(|_| format!("{MANIFEST_FILE} missing"))?;
    let manifest: Value =
        serde_json::from_slice(&bytes).map_err(|_| format!("{MANIFEST_FILE} corrupt"))?;
    let files = manifest
        .get("files")
        .and_then(Value::as_array)
        .filter(|f| !f.is_empty())
        .ok_or_else(|| format!("{MANIFEST_FILE} lists no files"))?;
    for f in files {
        let (Some(name), Some(size), Some(sha)) = (
            f.get("path").and_then(Value::as_str),
            f.get("size").and_then(Value::as_u64),
            f.get("sha256").and_then(Value::as_str),
        ) else {
            return Err(format!("{MANIFEST_FILE} has a malformed file entry"));
        };
        if !completion::is_plain_relative(name) {
            return Err(format!("{MANIFEST_FILE} names an unsafe path {name}"));
        }
        let got = fs
            .read(&dir.join(name))
            .map_err(|_| format!("{name} missing"))?;
        if got.len() as u64 != size || sha256_hex(&got) != sha {
            return Err(format!("{name} differs from the manifest"));
        }
    }
    Ok(manifest)
}

/// Runs the converter into `staged`; returns what the manifest says about it.
fn run_converter(
    fs: &dyn Fs,
    config: &Config,
    parent: &Path,
    staged: &Path,
    job: &Value,
    external: Option<&dyn Trainer>,
) -> Result<Value> {
    match external {
        None => run_builtin_converter(fs, parent, staged),
        Some(trainer) => run_external_converter(fs, config, staged, job, trainer),
    }
}

/// The built-in converter: copies the bundle files out of the parent's checkpoint and
/// smoke-tests the result.
fn run_builtin_converter(fs: &dyn Fs, parent: &Path, staged: &Path) -> Result<Value> {
    let io = |p: &Path, e: std::io::Error| Error::io(p, &e);
    let ckpt = parent.join(CHECKPOINT_DIR);
    for name in BUNDLE_FILES {
        let bytes = fs
            .read(&ckpt.join(name))
            .map_err(|e| io(&ckpt.join(name), e))?;
        let to = staged.join(name);
        fs.write(&to, &bytes).map_err(|e| io(&to, e))?;
    }
    // The proof that the bundle is usable: load it and predict.
    let spans = crate::builtin::predict(staged, SMOKE_TEXT).map_err(|m| {
        Error::new(
            ErrorKind::ConversionFailed,
            format!("the bundle does not load: {m}"),
        )
    })?;
    Ok(json!({
        "converter": BUILTIN_CONVERTER,
        "smoke_test": {"text": SMOKE_TEXT, "entities": spans.len()},
    }))
}

/// `conversion.command`: writes the job file, runs the command and checks that it wrote
/// something besides its job file and logs.
fn run_external_converter(
    fs: &dyn Fs,
    config: &Config,
    staged: &Path,
    job: &Value,
    trainer: &dyn Trainer,
) -> Result<Value> {
    let io = |p: &Path, e: std::io::Error| Error::io(p, &e);
    let job_path = staged.join("conversion_job.json");
    let bytes = serde_json::to_vec_pretty(job).map_err(|e| Error::internal(e.to_string()))?;
    fs.write(&job_path, &bytes).map_err(|e| io(&job_path, e))?;
    let log_path = staged.join("logs").join("convert.log");
    let heartbeat = |_| true;
    let run = Run {
        cwd: &config.root,
        job_path: &job_path,
        log_path: &log_path,
        timeout: None,
        heartbeat_every: Duration::from_secs(5),
        heartbeat: &heartbeat,
        progress_path: None,
        progress: &|_| {},
    };
    match trainer.run(&run) {
        Outcome::Exited0 => {}
        Outcome::Failed(f) => return Err(converter_failed(&log_path, &f)),
    }
    let produced = fs::files_below(fs, staged).map_err(|e| Error::io(staged, &e))?;
    let outputs = produced
        .iter()
        .filter(|p| !p.starts_with("logs") && *p != Path::new("conversion_job.json"))
        .count();
    if outputs == 0 {
        return Err(Error::new(
            ErrorKind::ConversionFailed,
            "conversion.command exited 0 but wrote nothing to the job's output_dir",
        ));
    }
    let argv = config
        .conversion
        .command
        .clone()
        .unwrap_or_default()
        .join(" ");
    Ok(json!({"converter": argv}))
}

/// The error of a failed `conversion.command`, with the last lines of its log.
fn converter_failed(log_path: &Path, f: &crate::trainer::Failure) -> Error {
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Error::new(
        ErrorKind::ConversionFailed,
        format!(
            "conversion.command failed ({}: {}); last log lines: {}",
            f.kind,
            f.message,
            tail.join(" | ")
        ),
    )
}

/// `trainctl convert`: converts a complete final training (docs/contract.md, "Source,
/// checkpoint and conversion"), with the built-in converter or `conversion.command`.
pub fn convert(
    config: &Config,
    fs: &dyn Fs,
    host: &Host<'_>,
    cwd: &Path,
    from: &From,
    now: &dyn Fn() -> String,
) -> Result<Report> {
    let external: Option<crate::trainer::CommandTrainer> =
        config
            .conversion
            .command
            .clone()
            .map(|argv| crate::trainer::CommandTrainer {
                argv,
                env: Vec::new(),
            });
    let external = external.as_ref().map(|t| t as &dyn Trainer);
    convert_with(config, fs, host, cwd, from, now, external)
}

/// `convert` with the external converter given (`None`: the built-in one). The suite runs
/// an in-process converter over a simulated filesystem through it.
pub fn convert_with(
    config: &Config,
    fs: &dyn Fs,
    host: &Host<'_>,
    cwd: &Path,
    from: &From,
    now: &dyn Fn() -> String,
    external: Option<&dyn Trainer>,
) -> Result<Report> {
    let layout = Layout::from_config(config)?;
    let parent_dir = find_parent(config, fs, host, cwd, from, &layout)?;
    let (identity, meta, raw_meta) = checked_parent(fs, &layout, &parent_dir)?;
    if external.is_none() {
        check_builtin_inputs(fs, &parent_dir)?;
    }
    let conversion = config.docs["conversion"].tree.clone();
    let conv = conv_fp(&meta.spec_fp, &meta.exec_fp, meta.variant, &conversion);
    let out = layout.conversion_dir_for(&identity, meta.variant, &conv)?;
    let (run_name, warnings) = conversion_run_name(config, &identity, &meta, &conv)?;
    if fs.exists(&out) {
        return reuse(fs, &out, conv, run_name, warnings);
    }
    let (tags, parent) = lineage(
        config,
        &identity,
        &meta,
        raw_meta.as_ref(),
        &parent_dir,
        &conv,
        &out,
    );
    let plan = Plan {
        parent_dir,
        out,
        conv,
        conversion,
        run_name,
        tags,
        parent,
    };
    let work = prepare_workspace(fs, config, &plan)?;
    let job = conversion_job(&plan, &work);
    let result = build_staged(fs, config, &plan, &work, &job, external, now);
    if let Some(local) = &work.scratch {
        let _ = fs.remove_dir_all(local);
        crate::store::stage::remove_if_empty(fs, local.parent());
    }
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = fs.remove_dir_all(&work.staged);
            return Err(e);
        }
    };
    publish(fs, &work.staged, plan, manifest, warnings)
}

/// What a conversion is decided to be before anything is written: its parent, where it
/// goes, and what its manifest says about where it came from.
struct Plan {
    parent_dir: PathBuf,
    out: PathBuf,
    conv: String,
    /// The `conversion.yaml` tree.
    conversion: Value,
    run_name: String,
    /// Lineage tags, as a tracker gets them.
    tags: Value,
    /// The parent, as the manifest and the job file describe it.
    parent: Value,
}

/// Where the converter works: the staged dir itself, or (OUT in a bucket) a local scratch
/// dir holding copies of the parent's checkpoint and metrics.
struct Workspace {
    /// The private dir published as the output once complete.
    staged: PathBuf,
    /// The local scratch dir, when OUT is remote.
    scratch: Option<PathBuf>,
    /// Where the converter writes its bundle.
    out_dir: PathBuf,
    checkpoint: PathBuf,
    metrics: PathBuf,
}

/// The parent dir to convert: the one given, or the latest complete final training of the
/// config's model and storage_env.
fn find_parent(
    config: &Config,
    fs: &dyn Fs,
    host: &Host<'_>,
    cwd: &Path,
    from: &From,
    layout: &Layout,
) -> Result<PathBuf> {
    match from {
        From::Dir(p) => Ok(normalize(cwd, p)),
        From::Latest => {
            let facts = host.facts(config.lease_timeout_s() * 1000);
            let model = config.model_name();
            crate::observe::latest_complete(fs, layout, &facts, config.env.env, &model)
                .map(|v| v.dir)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::ParentNotFound,
                        format!(
                            "no complete final training of model {model} in {} under {}",
                            config.env.env.as_str(),
                            layout.out.display()
                        ),
                    )
                })
        }
    }
}

/// The conversion's run name under the config's naming policy, with its warnings.
fn conversion_run_name(
    config: &Config,
    identity: &Identity,
    meta: &completion::Metadata,
    conv: &str,
) -> Result<(String, Vec<String>)> {
    let policy = crate::naming::RunNamePolicy::from_naming(&config.naming, true)?;
    policy
        .build(&RunNameParts {
            env: identity.storage_env.as_str().into(),
            model: identity.model.clone(),
            spec_hash: meta.spec_fp[..8].into(),
            exec_hash: meta.exec_fp[..8].into(),
            variant: meta.variant,
            conv_hash: Some(conv[..8].into()),
            version: None,
        })
        .map_err(|v| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("{} ({})", v.message, v.rule),
            )
        })
}

/// The lineage recorded in the manifest: the tags a tracker gets, and the parent.
fn lineage(
    config: &Config,
    identity: &Identity,
    meta: &completion::Metadata,
    raw_meta: Option<&VariantMeta>,
    parent_dir: &Path,
    conv: &str,
    out: &Path,
) -> (Value, Value) {
    let parent_id = build_parent_training_id(&meta.spec_fp, &meta.exec_fp, meta.variant);
    // Lineage (docs/contract.md, "Source, checkpoint and conversion"): the tags a tracker
    // gets, recorded in the manifest.
    let registry = config.tags.clone();
    let tag = |section: &str, key: &str| registry.name(section, key);
    let parent_run_name = raw_meta.and_then(|m| m.run_name.clone());
    let tags = json!({
        tag("process", "stage"): "conversion",
        tag("process", "model"): identity.model,
        tag("process", "storage_env"): identity.storage_env.as_str(),
        tag("paths", "conv_fp"): conv,
        tag("paths", "spec_fp"): meta.spec_fp,
        tag("paths", "exec_fp"): meta.exec_fp,
        tag("paths", "output_dir"): out,
        tag("lineage", "parent_spec_fp"): meta.spec_fp,
        tag("lineage", "parent_exec_fp"): meta.exec_fp,
        tag("lineage", "parent_variant"): meta.variant.to_string(),
        tag("legacy", "parent_training_id"): parent_id,
    });
    let parent = json!({
        "dir": parent_dir,
        "storage_env": identity.storage_env.as_str(),
        "model": identity.model,
        "spec_fp": meta.spec_fp,
        "exec_fp": meta.exec_fp,
        "variant": meta.variant,
        "run_name": parent_run_name,
        "training_id": parent_id,
        "completed_at": meta.completed_at,
        "source": raw_meta.map_or(Value::Null, |m| m.source.clone()),
    });
    (tags, parent)
}

/// Creates the private staged dir beside the output dir and, when OUT is remote, the local
/// scratch dir the converter works in, with the parent's checkpoint and metrics copied in.
fn prepare_workspace(fs: &dyn Fs, config: &Config, plan: &Plan) -> Result<Workspace> {
    let io = |p: &Path, e: std::io::Error| Error::io(p, &e);
    let holder = plan
        .out
        .parent()
        .ok_or_else(|| Error::internal("conversion dir without a parent"))?;
    crate::cache::ensure_dir(fs, holder)?;
    let staged = holder.join(format!(".conv-{}.tmp-{}", &plan.conv[..8], fs.unique()));
    fs.create_dir(&staged).map_err(|e| io(&staged, e))?;
    // OUT in a bucket: the converter (a process, or the built-in one's smoke test) works on
    // the local disk; its bundle is uploaded into the staged prefix before the manifest.
    let scratch = if crate::store::stage::is_remote(fs, &staged) {
        Some(
            crate::store::stage::fresh(fs, &config.root, &format!("convert-{}", fs.unique()))
                .map_err(|e| io(&staged, e))?,
        )
    } else {
        None
    };
    let parent_dir = &plan.parent_dir;
    let (out_dir, checkpoint, metrics) = match &scratch {
        Some(local) => {
            let ckpt = local.join("parent-checkpoint");
            crate::store::stage::copy_tree(fs, &parent_dir.join(CHECKPOINT_DIR), &ckpt, "")
                .map_err(|e| io(&parent_dir.join(CHECKPOINT_DIR), e))?;
            let metrics = local.join(METRICS_FILE);
            let from = parent_dir.join(METRICS_FILE);
            let bytes = fs.read(&from).map_err(|e| io(&from, e))?;
            fs.write(&metrics, &bytes).map_err(|e| io(&metrics, e))?;
            let out_dir = local.join("bundle");
            fs.create_dir_all(&out_dir).map_err(|e| io(&out_dir, e))?;
            (out_dir, ckpt, metrics)
        }
        None => (
            staged.clone(),
            parent_dir.join(CHECKPOINT_DIR),
            parent_dir.join(METRICS_FILE),
        ),
    };
    Ok(Workspace {
        staged,
        scratch,
        out_dir,
        checkpoint,
        metrics,
    })
}

/// The job the converter is given (written as `conversion_job.json` for an external one).
fn conversion_job(plan: &Plan, work: &Workspace) -> Value {
    json!({
        "kind": "conversion",
        "parent_dir": plan.parent_dir,
        "checkpoint_dir": work.checkpoint,
        "metrics_path": work.metrics,
        "output_dir": work.out_dir,
        "final_output_dir": plan.out,
        "conv_fp": plan.conv,
        "conversion": plan.conversion,
        "parent": plan.parent,
    })
}

/// Runs the converter, brings its bundle into the staged dir (uploading it when OUT is
/// remote), and writes `manifest.json` there last, durably: its presence means "complete".
fn build_staged(
    fs: &dyn Fs,
    config: &Config,
    plan: &Plan,
    work: &Workspace,
    job: &Value,
    external: Option<&dyn Trainer>,
    now: &dyn Fn() -> String,
) -> Result<Value> {
    let io = |p: &Path, e: std::io::Error| Error::io(p, &e);
    let staged = &work.staged;
    let converter = run_converter(fs, config, &plan.parent_dir, &work.out_dir, job, external)?;
    if work.scratch.is_some() {
        crate::store::stage::copy_tree(fs, &work.out_dir, staged, "").map_err(|e| io(staged, e))?;
    }
    let files =
        fs::manifest::build(fs, staged, fs::manifest::Sync::Files).map_err(|(at, e)| io(&at, e))?;
    let manifest = json!({
        "schema_version": 1,
        "status": "complete",
        "format": config.conversion.target.format.clone().unwrap_or_else(|| "bundle".into()),
        "conv_fp": plan.conv,
        "run_name": plan.run_name,
        "converter": converter,
        "parent": plan.parent,
        "conversion": plan.conversion,
        "tags": plan.tags,
        "files": files,
        "created_at": now(),
    });
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::internal(e.to_string()))?;
    let path = staged.join(MANIFEST_FILE);
    fs::create_durable(fs, &path, &bytes).map_err(|e| io(&path, e))?;
    Ok(manifest)
}

/// Publishes the complete staged dir as the output dir by a no-replace rename; a concurrent
/// convert that published first wins and its output is reused.
fn publish(
    fs: &dyn Fs,
    staged: &Path,
    plan: Plan,
    manifest: Value,
    mut warnings: Vec<String>,
) -> Result<Report> {
    let Plan {
        out,
        conv,
        run_name,
        ..
    } = plan;
    match fs::publish_dir(fs, staged, &out) {
        Ok(()) => Ok(Report {
            decision: "new",
            output_dir: out,
            conv_fp: conv,
            run_name,
            manifest,
            warnings,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // A concurrent convert of the same parent published first: same inputs, same
            // conv_fp, so its bundle is the answer.
            let _ = fs.remove_dir_all(staged);
            warnings
                .push("another convert of this parent finished first; reusing its output".into());
            reuse(fs, &out, conv, run_name, warnings)
        }
        Err(e) => {
            let _ = fs.remove_dir_all(staged);
            Err(Error::io(&out, &e))
        }
    }
}

fn reuse(
    fs: &dyn Fs,
    out: &Path,
    conv: String,
    run_name: String,
    warnings: Vec<String>,
) -> Result<Report> {
    match check_output(fs, out) {
        Ok(manifest) => Ok(Report {
            decision: "reuse",
            output_dir: out.to_path_buf(),
            conv_fp: conv,
            run_name,
            manifest,
            warnings,
        }),
        Err(reason) => Err(Error::new(
            ErrorKind::ConversionFailed,
            format!(
                "{} exists but is not a valid conversion ({reason}); it is left untouched: remove it to convert again",
                out.display()
            ),
        )),
    }
}
