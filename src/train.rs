//! `trainctl train` (docs/contract.md, "Decision and completion", "Caches", "Trainer"): plan, then
//! allocate or lease the variant, record `running`, run the trainer, check the completion contract
//! itself, write the manifest and `completed` last, add the cache record, release the lease. Every
//! write goes through the Fs port and its durable primitives; the only thing a failure leaves
//! behind is what the contract records (`status: failed`).

mod attempt;
mod settle;

use crate::cache::{self, Cache, CacheKind, CacheSettings, Record};
use crate::completion::{self, ManifestEntry, CHECKPOINT_DIR, METADATA_FILE, METRICS_FILE};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::{self, Fs};
use crate::identity::sha256_hex;
use crate::job::{Host, Job};
use crate::lease::{self, LeaseRecord, Owner, Take};
use crate::observe::FsVariants;
use crate::plan::{Decision, VariantOracle};
use crate::store::meta::VariantMeta;
use crate::trainer::Trainer;
use attempt::Attempt;
use serde_json::{json, Value};
use settle::{HeldVariant, Settled, Settling};
use std::path::{Path, PathBuf};

/// Bound on allocation attempts when other starts keep taking the next number.
pub const MAX_ALLOCATION_ATTEMPTS: u64 = 10_000;

/// What `train` needs besides the job.
pub struct Context<'a> {
    pub fs: &'a dyn Fs,
    pub host: &'a Host<'a>,
    pub owner: Owner,
    pub trainer: &'a dyn Trainer,
    /// Unix time in microseconds.
    pub now_us: &'a dyn Fn() -> u64,
    /// The training-stage tracker (docs/contract.md, "Tracking of final training"); `None` = no
    /// tracking (in-process test worlds).
    pub tracking: Option<Tracking<'a>>,
    /// How a start that waits for another owner says so and lets time pass.
    pub waiting: Waiting<'a>,
    /// Where the trainer's progress reports go (docs/contract.md, "Live progress"): this
    /// start's own trainer, or the owner a `reuse_if_exists` start waits for.
    pub progress: &'a dyn Fn(&crate::progress::Progress),
}

/// A tracker and how to name it in metadata.
#[derive(Clone, Copy)]
pub struct Tracking<'a> {
    pub tracker: &'a dyn crate::track::Tracker,
    pub backend: &'a str,
}

/// What `train` reports.
#[derive(Clone, Debug)]
pub struct Report {
    pub decision: Decision,
    pub output_dir: PathBuf,
    pub run_name: String,
    pub cache_record: Option<String>,
    pub backfilled: Vec<u64>,
    pub metrics: Option<Value>,
    pub warnings: Vec<String>,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, &e)
}

/// The label list of the data config: `["O"] + sorted(entity_types)`.
pub fn labels(job: &Job) -> Vec<String> {
    crate::data::labels(&job.config.data.schema.entity_types)
}

/// What allocation does when another start took the number first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collision {
    /// Try the next number (force_new, continue).
    NextNumber,
    /// `busy` (an explicit `variant.number` is never moved).
    Busy,
    /// Give up the number and let the caller decide again (reuse_if_exists: the winner is
    /// training the same identity, so its result will be reused).
    DecideAgain,
}

/// Allocates a NEW variant: a staged dir holding lease generation 1 is published by a
/// no-replace rename at `v<n>`; on collision the next number is tried (never "scan for the
/// max, create later"). An explicit number is never moved: a collision there is `busy`.
pub fn allocate(
    fs: &dyn Fs,
    job: &Job,
    first: u64,
    explicit: bool,
    owner: &Owner,
    now_ms: u64,
    purpose: &str,
) -> Result<(u64, PathBuf, LeaseRecord)> {
    let on_collision = if explicit {
        Collision::Busy
    } else {
        Collision::NextNumber
    };
    allocate_with(fs, job, first, on_collision, owner, now_ms, purpose)?
        .ok_or_else(|| Error::internal("allocation gave up a number it was told to move past"))
}

/// `allocate` with the collision rule spelled out; `None` only for `Collision::DecideAgain`.
pub fn allocate_with(
    fs: &dyn Fs,
    job: &Job,
    first: u64,
    on_collision: Collision,
    owner: &Owner,
    now_ms: u64,
    purpose: &str,
) -> Result<Option<(u64, PathBuf, LeaseRecord)>> {
    let identity_dir = job.layout.identity_dir(&job.identity)?;
    cache::ensure_dir(fs, &identity_dir)?;
    let explicit = on_collision == Collision::Busy;
    // A number taken by a file (gc's tombstone of a removed variant, or anything else that is
    // not a variant) is passed over by every collision rule but an explicit number's (busy):
    // nobody trains there.
    let mut passed_a_file = false;
    for attempt in 0..MAX_ALLOCATION_ATTEMPTS {
        let moves_on = on_collision == Collision::NextNumber || (passed_a_file && !explicit);
        if attempt > 0 && !moves_on {
            break;
        }
        let n = first + attempt;
        let target = job.layout.variant_dir(&job.identity, n)?;
        let staged = identity_dir.join(format!(".v{n}.tmp-{}", fs.unique()));
        fs.create_dir(&staged)
            .map_err(|e| Error::io_op("allocate: create the staged variant dir", &staged, &e))?;
        let lease = lease::take_staged(fs, &staged, owner, now_ms, purpose)
            .map_err(|e| Error::io_op("allocate: write the first lease in", &staged, &e))?;
        match fs::publish_dir(fs, &staged, &target) {
            Ok(()) => {
                // Check right after publishing: the lease we staged is the current one.
                if !lease::still_ours(fs, &target, &lease) {
                    return Err(Error::internal(format!(
                        "{} was published without its lease",
                        target.display()
                    )));
                }
                return Ok(Some((n, target, lease)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = fs.remove_dir_all(&staged);
                passed_a_file = fs.metadata(&target).is_ok_and(|m| !m.is_dir);
            }
            Err(e) => {
                let _ = fs.remove_dir_all(&staged);
                return Err(Error::io_op("allocate: publish", &target, &e));
            }
        }
    }
    if on_collision == Collision::DecideAgain {
        return Ok(None);
    }
    if explicit {
        return Err(Error::new(
            ErrorKind::Busy,
            format!("variant {first} was created by another start at the same time"),
        ));
    }
    Err(Error::internal(format!(
        "no free variant number in {MAX_ALLOCATION_ATTEMPTS} attempts from v{first}"
    )))
}

/// Writes metadata.json atomically and durably (the one writer: `store::meta`).
fn write_metadata(fs: &dyn Fs, dir: &Path, meta: &VariantMeta) -> Result<()> {
    meta.write(fs, dir)
        .map_err(|e| Error::io_op("write", &dir.join(METADATA_FILE), &e))
}

pub use trainctl_trainer::protocol::latest_step_checkpoint;

/// Bytes of the trainer log's tail quoted in a storage error.
const LOG_TAIL_BYTES: usize = 2_000;

/// Whether a failed trainer died of a storage error, from its own words (the tail of its
/// stderr as the trainer port kept it, else of `trainer.log`): the kind, and the message part
/// quoting the tail, the space left and, for a full disk, the space the run needed as far as
/// it is known (the largest step checkpoint it wrote: the next one needs as much again).
fn storage_cause(
    fs: &dyn Fs,
    output_tail: &str,
    log: &Path,
    dir: &Path,
) -> Option<(ErrorKind, String)> {
    let (tail, from) = match ErrorKind::of_message(output_tail) {
        Some(_) => (
            output_tail.to_string(),
            "the trainer's last words".to_string(),
        ),
        None => {
            let bytes = fs.read(log).ok()?;
            let tail = &bytes[bytes.len().saturating_sub(LOG_TAIL_BYTES)..];
            (
                String::from_utf8_lossy(tail).into_owned(),
                format!("last lines of {}", log.display()),
            )
        }
    };
    let tail = tail.trim();
    let kind = ErrorKind::of_message(tail)?;
    let mut detail = format!("{from}:\n{tail}");
    if matches!(kind, ErrorKind::NoSpace | ErrorKind::QuotaExceeded) {
        if let Some(free) = fs.available_bytes(dir) {
            detail.push_str(&format!("\nspace available now: {free} bytes"));
        }
        let largest = fs
            .list(&dir.join("checkpoints"))
            .unwrap_or_default()
            .iter()
            .filter(|e| e.is_dir)
            // Sizes from metadata: on a full disk, never read (or hash) the checkpoints.
            .filter_map(|e| {
                fs::manifest::size_below(fs, &dir.join("checkpoints").join(&e.name)).ok()
            })
            .max();
        match largest {
            Some(n) => detail.push_str(&format!(
                "\neach step checkpoint of this run takes {n} bytes; the run needs at least that much free"
            )),
            None => detail.push_str("\nthe run's space need is unknown (no step checkpoint was written)"),
        }
    }
    Some((kind, detail))
}

/// Checks docs/contract.md, "Decision and completion" items 2 and 4 on a finished attempt (the
/// orchestrator's own check) and builds the manifest: every checkpoint file with size and sha256,
/// each fsynced.
fn verify_and_manifest(
    fs: &dyn Fs,
    job: &Job,
    dir: &Path,
) -> std::result::Result<(Vec<ManifestEntry>, Value), String> {
    let ckpt = dir.join(CHECKPOINT_DIR);
    let labels_found = completion::check_checkpoint(fs, &ckpt).map_err(|r| r.to_string())?;
    let want = labels(job);
    let got: Vec<String> = labels_found.values().cloned().collect();
    if got != want {
        return Err(format!(
            "label_map_mismatch: checkpoint has {got:?}, data config gives {want:?}"
        ));
    }
    let metrics_path = dir.join(METRICS_FILE);
    let metrics: Value = fs
        .read(&metrics_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| "metrics_missing".to_string())?;
    let objective = job.config.objective_metric();
    if !metrics
        .get(&objective)
        .and_then(Value::as_f64)
        .is_some_and(f64::is_finite)
    {
        return Err(format!("objective_missing:{objective}"));
    }
    // Every checkpoint file, read once for size and sha256 and fsynced before the manifest
    // that proves it is recorded.
    let manifest: Vec<ManifestEntry> = fs::manifest::build(fs, &ckpt, fs::manifest::Sync::Files)
        .map_err(|(at, e)| format!("manifest_mismatch:{}: {e}", at.display()))?
        .into_iter()
        .map(|f| ManifestEntry {
            path: format!("{CHECKPOINT_DIR}/{}", f.path),
            ..f
        })
        .collect();
    fs.fsync_file(&metrics_path)
        .map_err(|e| format!("fsync metrics: {e}"))?;
    fs.fsync_dir(&ckpt)
        .map_err(|e| format!("fsync checkpoint: {e}"))?;
    fs.fsync_dir(dir)
        .map_err(|e| format!("fsync variant dir: {e}"))?;
    if manifest.is_empty() {
        return Err("checkpoint_invalid:empty".into());
    }
    Ok((manifest, metrics))
}

fn subject(job: &Job, variant: u64) -> String {
    format!(
        "{}/{}-{}/v{variant}",
        job.identity.model,
        &job.spec_fp()[..8],
        &job.exec_fp()[..8]
    )
}

fn record_name_token(subject: &str) -> String {
    subject.replace(['/', '.'], "-")
}

/// The final_training cache record of a complete variant.
fn final_record(
    job: &Job,
    variant: u64,
    dir: &Path,
    meta: &completion::Metadata,
    metrics: &Value,
    now_us: u64,
) -> Record {
    let objective = job.config.objective_metric();
    Record {
        schema_version: 1,
        kind: CacheKind::FinalTraining.as_str().into(),
        created_at: cache::rfc3339(now_us),
        subject: subject(job, variant),
        payload: json!({
            "storage_env": meta.storage_env,
            "model": meta.model,
            "spec_fp": meta.spec_fp,
            "exec_fp": meta.exec_fp,
            "variant": variant,
            "output_dir": dir,
            "completed_at": meta.completed_at,
            "metrics": metrics,
        }),
        metadata: json!({
            "variant": variant,
            "spec_fp": meta.spec_fp,
            "exec_fp": meta.exec_fp,
            "objective_metric": objective,
            "objective": metrics.get(&objective),
        }),
    }
}

/// Adds the missing final_training records of this identity's complete variants (a crash
/// between completion and the record). Returns the variants backfilled.
fn backfill(ctx: &Context<'_>, job: &Job, cache: &Cache<'_>) -> Result<Vec<u64>> {
    // A fresh look at the identity (the caller's scan predates its own run). A variant whose
    // lease is live belongs to a running owner that writes its own record before releasing:
    // leave it alone, or two records would exist for one run. The lease is read before the
    // completion, and the records are listed after both, so a released lease means the
    // owner's record is already visible.
    let facts = ctx.host.facts(job.config.lease_timeout_s() * 1000);
    let variants = FsVariants::scan(ctx.fs, &job.layout, &job.identity, &facts)?;
    let mut candidates = Vec::new();
    for v in variants.numbers().iter().copied() {
        let (completion, lease) = variants.observe(v);
        if lease.is_live() {
            continue;
        }
        if let completion::Completion::Complete(meta) = completion {
            candidates.push((v, meta));
        }
    }
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let names = cache.record_names()?;
    // A record counts only if it is valid: a torn or corrupt one is replaced.
    let has_valid = |v: u64| {
        let token = format!("_{}_", record_name_token(&subject(job, v)));
        names.iter().filter(|n| n.contains(&token)).any(|n| {
            cache
                .read_record(n)
                .is_some_and(|r| r.subject == subject(job, v))
        })
    };
    // Under `timestamped.max_files`, a record retention pruned is not missing: only the
    // variants above the identity's highest recorded one are backfilled (docs/contract.md,
    // "Caches"), or each backfill would prune another record and the next train write it
    // again.
    let floor = match cache.settings.max_files {
        Some(_) => variants
            .numbers()
            .iter()
            .rev()
            .copied()
            .find(|v| has_valid(*v))
            .unwrap_or(0),
        None => 0,
    };
    let mut done = Vec::new();
    for (v, meta) in candidates {
        if v <= floor || has_valid(v) {
            continue;
        }
        let dir = job.layout.variant_dir(&job.identity, v)?;
        let metrics = ctx
            .fs
            .read(&dir.join(METRICS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .unwrap_or(Value::Null);
        cache.write(
            &final_record(job, v, &dir, &meta, &metrics, (ctx.now_us)()),
            (ctx.now_us)(),
        )?;
        done.push(v);
    }
    Ok(done)
}

/// Number of optimizer steps of the whole run (what the trainer is told).
fn total_steps(job: &Job) -> u64 {
    let h = &job.config.hyperparameters;
    let n_train = job.dataset.train_records.max(1);
    let batches = n_train.div_ceil(h.batch_size.max(1));
    let steps_per_epoch = batches
        .div_ceil(h.gradient_accumulation_steps.max(1))
        .max(1);
    steps_per_epoch * h.epochs
}

/// Bound on the rounds of deciding again (a lost allocation race in reuse_if_exists, a wait
/// that ends); the waits themselves are bounded by time.
pub const MAX_DECISION_ROUNDS: u64 = 1_000_000;

/// How long a resume waits for the trainer of a dead owner to exit before it is `busy`: the
/// trainer dies with its orchestrator (parent-death signal), but is reaped a moment later.
pub const DYING_TRAINER_WAIT_MS: u64 = 30_000;

/// How often a waiting start says what it waits for.
const WAIT_NOTICE_EVERY_MS: u64 = 10_000;

/// What `train` tells the user while it waits, and how it waits (docs/contract.md,
/// "Identical starts share one training").
pub struct Waiting<'a> {
    /// Called with a line about the owner waited for (and its progress), at most every 10 s.
    pub notice: &'a dyn Fn(&str),
    /// Lets time pass between two looks (a sleep; nothing in simulation, where the clock
    /// advances on every look).
    pub pause: &'a dyn Fn(),
}

/// Not waiting at all (tests that never meet a live owner).
pub fn no_waiting() -> Waiting<'static> {
    Waiting {
        notice: &|_| {},
        pause: &|| {},
    }
}

/// How long a waiting start sleeps between two looks.
pub const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(250);

fn sleep_a_poll() {
    std::thread::sleep(WAIT_POLL);
}

fn notice_on_stderr(line: &str) {
    eprintln!("{line}");
}

/// The real process under `--quiet`: no notices, a sleep between looks.
pub fn waiting_silently() -> Waiting<'static> {
    Waiting {
        notice: &|_| {},
        pause: &sleep_a_poll,
    }
}

/// The real process: notices on stderr, a sleep between looks.
pub fn waiting_on_stderr() -> Waiting<'static> {
    Waiting {
        notice: &notice_on_stderr,
        pause: &sleep_a_poll,
    }
}

/// The owner of `dir`'s lease and its progress, for the waiting notice and `busy` messages.
fn owner_of(fs: &dyn Fs, dir: &Path) -> String {
    let current = lease::current(fs, dir).unwrap_or_default();
    let (gen, record) = (current.generation, current.record);
    let step = latest_step_checkpoint(fs, dir)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    match record {
        Some(r) => format!(
            "{} pid {} (lease generation {gen}{})",
            r.host,
            r.pid,
            step.map(|s| format!(", last checkpoint {s}"))
                .unwrap_or_default()
        ),
        None => "an owner whose lease cannot be read".into(),
    }
}

/// Runs `train` for a prepared job.
pub fn train(job: &Job, ctx: &Context<'_>) -> Result<Report> {
    let request = job.request();
    let lease_timeout_ms = job.config.lease_timeout_s() * 1000;
    let wait_limit_ms = job.config.wait_for_owner_ms();
    let started_ms = (ctx.now_us)() / 1000;
    let settings =
        CacheSettings::from_paths(&job.config.paths, &job.layout, CacheKind::FinalTraining)?;
    let cache = Cache::new(ctx.fs, settings);
    let mut warnings = job.warnings.clone();
    let mut settling = Settling {
        job,
        ctx,
        cache: &cache,
        request,
        lease_timeout_ms,
        wait_limit_ms,
        started_ms,
        last_notice_ms: None,
        waited_for: None,
    };
    match settling.settle(&mut warnings)? {
        Settled::Reused(report) => Ok(report),
        Settled::Held(held) => train_held(job, ctx, &cache, held, warnings),
    }
}

/// Trains the variant the decide loop left this start holding: reserves its run name, runs
/// the attempt, releases the lease whatever happened, then backfills the cache and ends the
/// runs of abandoned attempts.
fn train_held(
    job: &Job,
    ctx: &Context<'_>,
    cache: &Cache<'_>,
    held: HeldVariant,
    mut warnings: Vec<String>,
) -> Result<Report> {
    let fs = ctx.fs;
    let HeldVariant {
        decision,
        variant,
        dir,
        lease: held,
    } = held;
    let decision = match decision {
        Decision::New { .. } => Decision::New { variant },
        Decision::Continue { .. } => Decision::Continue { variant },
        other => other,
    };
    // The name is reserved under the lease; a failure here still releases the lease.
    let named = match decision {
        Decision::Resume { .. } => match recorded_run_name(fs, &dir) {
            Some(name) => Ok((name, Vec::new())),
            None => reserve_run_name(fs, job, variant, &dir),
        },
        _ => reserve_run_name(fs, job, variant, &dir),
    };
    let result = match &named {
        Ok((run_name, _)) => Attempt {
            job,
            ctx,
            decision,
            variant,
            dir: &dir,
            held: &held,
            run_name,
            cache,
        }
        .run(),
        Err(e) => Err(e.clone()),
    };
    // The lease is released whatever happened (a crash leaves it to the liveness rule).
    match lease::release(fs, &dir, &held, (ctx.now_us)() / 1000) {
        Ok(Take::Won(_)) => {}
        Ok(Take::Lost) => warnings.push(format!(
            "variant {variant}: another process took the lease over before release"
        )),
        Err(e) => warnings.push(format!(
            "variant {variant}: releasing the lease failed: {e}"
        )),
    }
    let (run_name, w) = named?;
    warnings.extend(w);
    let (cache_record, metrics, more) = result?;
    warnings.extend(more);
    let backfilled = backfill(ctx, job, cache)?;
    warnings.extend(end_superseded_runs(ctx, job, variant));
    Ok(Report {
        decision,
        output_dir: dir,
        run_name,
        cache_record,
        backfilled,
        metrics: Some(metrics),
        warnings,
    })
}

/// Once `variant` is complete, the runs of this identity's abandoned attempts (incomplete
/// variants nobody holds) that are still RUNNING in the tracking store end as KILLED.
/// Tracking never costs a run: a failure is a warning.
fn end_superseded_runs(ctx: &Context<'_>, job: &Job, variant: u64) -> Vec<String> {
    let Some(t) = &ctx.tracking else {
        return Vec::new();
    };
    let facts = ctx
        .host
        .facts_at(job.config.lease_timeout_s() * 1000, (ctx.now_us)() / 1000);
    let Ok(variants) = crate::observe::FsVariants::scan(ctx.fs, &job.layout, &job.identity, &facts)
    else {
        return Vec::new();
    };
    let abandoned = |v: u64| {
        variants.numbers().contains(&v) && {
            let (completion, lease) = variants.observe(v);
            !completion.is_complete() && !lease.is_live()
        }
    };
    match crate::track::lifecycle::end_superseded_runs(
        t.tracker,
        &job.config,
        job.spec_fp(),
        job.exec_fp(),
        variant,
        &abandoned,
        ((ctx.now_us)() / 1000) as i64,
    ) {
        Ok(_) => Vec::new(),
        Err(e) => vec![format!(
            "tracking ({}): the runs of abandoned attempts could not be ended: {e}",
            t.backend
        )],
    }
}

/// The run name a variant's metadata records (`None` before the first attempt wrote it).
pub fn recorded_run_name(fs: &dyn Fs, dir: &Path) -> Option<String> {
    VariantMeta::read(fs, dir)?
        .run_name
        .filter(|n| !n.is_empty())
}

/// Where final-training run-name reservations live (docs/contract.md, "Tracking of final training":
/// race-free within one OUT).
pub fn run_name_registry(job: &Job) -> PathBuf {
    job.layout
        .out
        .join("tracking")
        .join("run_names")
        .join("final_training")
}

/// The reservation file of run name `name`: `<registry>/<sha256(name)[..32]>.json`.
pub fn run_name_reservation(job: &Job, name: &str) -> PathBuf {
    run_name_registry(job).join(format!("{}.json", &sha256_hex(name.as_bytes())[..32]))
}

/// The variant dir (OUT-relative, as `Layout::out_relative` writes it) that holds the
/// reservation of `name`, when one is readable.
pub fn run_name_holder(fs: &dyn Fs, job: &Job, name: &str) -> Option<String> {
    let bytes = fs.read(&run_name_reservation(job, name)).ok()?;
    let holder: Value = serde_json::from_slice(&bytes).ok()?;
    (holder["run_name"] == json!(name))
        .then(|| holder["variant_dir"].as_str().map(str::to_string))
        .flatten()
}

/// Bound on the version suffixes tried for one name.
pub const MAX_RUN_NAME_VERSIONS: u64 = 10_000;

/// The run name of a new attempt (docs/contract.md, "Tracking of final training"). Without
/// auto-increment, the configured name. With it, the first of `name`, `name_2`, `name_3`, … that is
/// free or already this variant's: a name is taken by creating `<registry>/<sha256(name)>.json`
/// exclusively and durably (whole or absent, never replaced), so two starts within one OUT never
/// get the same name, and a retry of the same variant finds its own reservation again.
pub fn reserve_run_name(
    fs: &dyn Fs,
    job: &Job,
    variant: u64,
    dir: &Path,
) -> Result<(String, Vec<String>)> {
    if !job.auto_increment() {
        return job.run_name(variant);
    }
    let registry = run_name_registry(job);
    cache::ensure_dir(fs, &registry)?;
    let ours = job.layout.out_relative(dir);
    for n in 1..=MAX_RUN_NAME_VERSIONS {
        let version = (n > 1).then_some(n);
        let (name, warnings) = job.run_name_version(variant, version)?;
        let path = run_name_reservation(job, &name);
        let doc = json!({"run_name": name, "variant_dir": ours, "variant": variant});
        let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| Error::internal(e.to_string()))?;
        match fs::create_durable(fs, &path, &bytes) {
            Ok(()) => return Ok((name, warnings)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if run_name_holder(fs, job, &name).as_deref() == Some(ours.as_str()) {
                    return Ok((name, warnings));
                }
            }
            Err(e) => return Err(io(&path, e)),
        }
    }
    Err(Error::internal(format!(
        "no free run-name version in {MAX_RUN_NAME_VERSIONS} tries under {}",
        registry.display()
    )))
}
