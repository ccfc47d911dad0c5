//! The `file:` backend: MLflow's file-store layout, as MLflow 3.x reads it with
//! `MLFLOW_ALLOW_FILE_STORE=true` (the store layout MLflow 3.x reads; checked by the real-MLflow
//! tests in props/tracking.rs). Owns the on-disk layout under the store root and nothing else;
//! every write goes through the Fs port's durable primitives, and it never leaves a half-written
//! `meta.yaml`, param or tag (temp file + rename); `meta.yaml` is written last, so MLflow never
//! lists a run or experiment that is still being built.
//!
//! ```text
//! <root>/<experiment_id>/meta.yaml
//! <root>/<experiment_id>/<run_id>/meta.yaml
//! <root>/<experiment_id>/<run_id>/{params,tags}/<key>      value, no trailing newline
//! <root>/<experiment_id>/<run_id>/metrics/<key>            "<timestamp_ms> <value> <step>\n"...
//! <root>/<experiment_id>/<run_id>/artifacts/<path>
//! <root>/.trash/<experiment_id>/                           deleted experiments (read only)
//! ```
//!
//! Experiment names are unique within one store without a lock: a new experiment's id is
//! derived from its name, so two racing creators publish the same `meta.yaml` path and the
//! no-replace rename lets exactly one win (MLflow's own file store is racy here).

use super::{
    codes, latest_metrics, validate_artifact_path, validate_batch, validate_experiment_name,
    validate_key, validate_new_run, ArtifactEntry, Batch, Experiment, LifecycleStage, Metric,
    NewRun, Result, Run, RunFilter, RunInfo, RunStatus, TrackError, Tracker,
};
use crate::fs::{create_durable, is_temp_name, write_atomic, write_atomic_staged, Fs};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const META: &str = "meta.yaml";
const TRASH: &str = ".trash";
/// How many name-derived ids are tried before giving up (a hash collision with another
/// name is astronomically unlikely; the bound keeps the loop finite anyway).
const EXPERIMENT_ID_ATTEMPTS: u32 = 4;
/// Keys with `/` are nested directories; 250-character keys bound the depth.
const KEY_DEPTH_MAX: usize = 128;

pub struct FileTracker {
    fs: Arc<dyn Fs>,
    root: PathBuf,
    /// Metric files this tracker has checked for a torn last line (see `repair_torn_tail`).
    checked_metric_files: Mutex<HashSet<PathBuf>>,
}

impl FileTracker {
    /// A store rooted at the absolute directory `root` (created on first write).
    pub fn new(fs: Arc<dyn Fs>, root: PathBuf) -> Result<FileTracker> {
        if !root.is_absolute() {
            return Err(TrackError::MalformedUri {
                uri: root.display().to_string(),
                reason: "the file store root must be an absolute path".into(),
            });
        }
        if root.to_str().is_none() {
            return Err(TrackError::MalformedUri {
                uri: root.display().to_string(),
                reason: "the file store root is not valid UTF-8".into(),
            });
        }
        Ok(FileTracker {
            fs,
            root,
            checked_metric_files: Mutex::new(HashSet::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(&self, path: &Path, err: io::Error) -> TrackError {
        TrackError::store(path, err)
    }

    fn experiment_dir(&self, experiment_id: &str) -> PathBuf {
        self.root.join(experiment_id)
    }

    fn read_yaml(&self, path: &Path) -> Result<BTreeMap<String, Value>> {
        let bytes = self.fs.read(path).map_err(|e| self.io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|e| malformed(path, e))?;
        let value: Value = serde_saphyr::from_str(&text).map_err(|e| malformed(path, e))?;
        match value {
            Value::Object(map) => Ok(map.into_iter().collect()),
            other => Err(malformed(path, format!("expected a mapping, got {other}"))),
        }
    }

    fn read_experiment(&self, dir: &Path, stage: LifecycleStage) -> Result<Experiment> {
        let path = dir.join(META);
        let meta = self.read_yaml(&path)?;
        let experiment = Experiment {
            experiment_id: scalar(&meta, "experiment_id")
                .ok_or_else(|| missing(&path, "experiment_id"))?,
            name: scalar(&meta, "name").ok_or_else(|| missing(&path, "name"))?,
            artifact_location: scalar(&meta, "artifact_location").unwrap_or_default(),
            lifecycle_stage: scalar(&meta, "lifecycle_stage")
                .and_then(|s| LifecycleStage::parse(&s))
                .unwrap_or(stage),
        };
        Ok(experiment)
    }

    /// Experiment directories (names only) under `dir`, skipping our temporaries and
    /// MLflow's reserved folders.
    fn experiment_ids_in(&self, dir: &Path) -> Result<Vec<String>> {
        let entries = match self.fs.list(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(dir, e)),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.is_dir && !e.name.starts_with('.') && e.name != "models")
            .map(|e| e.name)
            .collect())
    }

    /// The experiment published at `<root>/<id>`, if its meta.yaml reads.
    fn experiment_at(&self, id: &str) -> Option<Experiment> {
        let dir = self.experiment_dir(id);
        if !self.fs.is_file(&dir.join(META)) {
            return None;
        }
        self.read_experiment(&dir, LifecycleStage::Active).ok()
    }

    fn find_run_dir(&self, run_id: &str) -> Result<PathBuf> {
        if !is_valid_id(run_id) {
            return Err(TrackError::not_found(format!("run `{run_id}` not found")));
        }
        for experiment_id in self.experiment_ids_in(&self.root)? {
            let dir = self.experiment_dir(&experiment_id).join(run_id);
            if self.fs.is_file(&dir.join(META)) {
                return Ok(dir);
            }
        }
        Err(TrackError::not_found(format!(
            "run `{run_id}` not found in {}",
            self.root.display()
        )))
    }

    fn read_run_meta(&self, run_dir: &Path) -> Result<(BTreeMap<String, Value>, RunInfo)> {
        let path = run_dir.join(META);
        let meta = self.read_yaml(&path)?;
        let status_code = meta.get("status").and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
        let status = status_code
            .and_then(RunStatus::from_code)
            .ok_or_else(|| missing(&path, "status"))?;
        let start_time_ms = int(&meta, "start_time").ok_or_else(|| missing(&path, "start_time"))?;
        let info = RunInfo {
            run_id: scalar(&meta, "run_id")
                .or_else(|| scalar(&meta, "run_uuid"))
                .ok_or_else(|| missing(&path, "run_id"))?,
            experiment_id: scalar(&meta, "experiment_id")
                .ok_or_else(|| missing(&path, "experiment_id"))?,
            run_name: scalar(&meta, "run_name").unwrap_or_default(),
            status,
            start_time_ms,
            end_time_ms: int(&meta, "end_time"),
            artifact_uri: scalar(&meta, "artifact_uri").unwrap_or_default(),
            lifecycle_stage: scalar(&meta, "lifecycle_stage")
                .and_then(|s| LifecycleStage::parse(&s))
                .unwrap_or(LifecycleStage::Active),
        };
        Ok((meta, info))
    }

    /// `<dir>/<key>` files, keys with `/` from nested directories, as (key, bytes).
    fn read_keyed_files(&self, dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut pending = vec![(dir.to_path_buf(), String::new(), 0usize)];
        while let Some((cur, prefix, depth)) = pending.pop() {
            let entries = match self.fs.list(&cur) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(&cur, e)),
            };
            for entry in entries {
                if is_temp_name(&entry.name) {
                    continue;
                }
                let key = format!("{prefix}{}", entry.name);
                let path = cur.join(&entry.name);
                if entry.is_dir {
                    if depth < KEY_DEPTH_MAX {
                        pending.push((path, format!("{key}/"), depth + 1));
                    }
                } else {
                    let bytes = self.fs.read(&path).map_err(|e| self.io(&path, e))?;
                    out.push((key, bytes));
                }
            }
        }
        Ok(out)
    }

    fn read_text_map(&self, dir: &Path) -> Result<BTreeMap<String, String>> {
        self.read_keyed_files(dir)?
            .into_iter()
            .map(|(key, bytes)| {
                String::from_utf8(bytes)
                    .map(|text| (key, text))
                    .map_err(|e| malformed(dir, e))
            })
            .collect()
    }

    fn read_run(&self, run_dir: &Path) -> Result<Run> {
        let (_, info) = self.read_run_meta(run_dir)?;
        let params = self.read_text_map(&run_dir.join("params"))?;
        let tags = self.read_text_map(&run_dir.join("tags"))?;
        let mut points = Vec::new();
        for (key, bytes) in self.read_keyed_files(&run_dir.join("metrics"))? {
            points.extend(parse_metric_lines(&key, &bytes).map_err(|e| malformed(run_dir, e))?);
        }
        Ok(Run {
            info,
            params,
            tags,
            metrics: latest_metrics(&points),
        })
    }

    fn active_run_dir(&self, run_id: &str) -> Result<PathBuf> {
        let dir = self.find_run_dir(run_id)?;
        let (_, info) = self.read_run_meta(&dir)?;
        if info.lifecycle_stage != LifecycleStage::Active {
            return Err(TrackError::invalid(format!(
                "run `{run_id}` must be in the 'active' state"
            )));
        }
        Ok(dir)
    }

    /// A crash during an append can leave a metrics file whose last line has no newline.
    /// Our reader skips it, but MLflow's reader rejects the whole file, so before the first
    /// append to a file in this process (e.g. after RESUME) the torn tail is cut off by an
    /// atomic rewrite. Later appends by this tracker end in a newline by construction.
    fn repair_torn_tail(&self, run_dir: &Path, path: &Path) -> Result<()> {
        let mut checked = self
            .checked_metric_files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if checked.contains(path) {
            return Ok(());
        }
        let bytes = self.fs.read(path).map_err(|e| self.io(path, e))?;
        if bytes.last().is_some_and(|b| *b != b'\n') {
            let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            write_atomic_staged(&*self.fs, run_dir, path, &bytes[..keep])
                .map_err(|e| self.io(path, e))?;
        }
        checked.insert(path.to_path_buf());
        Ok(())
    }

    /// Creates `dir` and its missing ancestors durably (`fs::ensure_dir`).
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        crate::fs::ensure_dir(&*self.fs, dir).map_err(|e| self.io(dir, e))
    }

    /// Writes `<base>/<key>` (key may hold `/`) atomically, the temporary in `staging`.
    fn write_keyed(&self, staging: &Path, base: &Path, key: &str, value: &str) -> Result<()> {
        let path = base.join(key);
        if let Some(parent) = path.parent() {
            self.ensure_dir(parent)?;
        }
        write_atomic_staged(&*self.fs, staging, &path, value.as_bytes())
            .map_err(|e| self.io(&path, e))
    }

    fn unique_hex32(&self) -> String {
        use sha2::{Digest, Sha256};
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = format!("{nanos}:{}:{}", self.fs.unique(), self.root.display());
        let digest = Sha256::digest(seed.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        hex[..32].to_string()
    }

    /// Builds a run directory in place and publishes `meta.yaml` last: MLflow (and our
    /// reader) skip a run folder without one, so a run appears whole or not at all. A crash
    /// leaves at most an unnamed folder that nothing lists. (A staging folder renamed into
    /// place would be listed by MLflow as a duplicate run while it exists.)
    fn build_run(&self, run_dir: &Path, meta: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        let experiment_dir = run_dir.parent().unwrap_or(&self.root);
        self.fs
            .create_dir(run_dir)
            .map_err(|e| self.io(run_dir, e))?;
        let built = (|| -> Result<()> {
            self.fs
                .fsync_dir(experiment_dir)
                .map_err(|e| self.io(experiment_dir, e))?;
            for sub in ["metrics", "params", "artifacts", "tags"] {
                let path = run_dir.join(sub);
                self.fs.create_dir(&path).map_err(|e| self.io(&path, e))?;
            }
            let mut synced_dirs = vec![run_dir.join("tags")];
            for (key, value) in tags {
                let path = run_dir.join("tags").join(key);
                if let Some(parent) = path.parent() {
                    self.fs
                        .create_dir_all(parent)
                        .map_err(|e| self.io(parent, e))?;
                    synced_dirs.push(parent.to_path_buf());
                }
                self.fs
                    .create_new(&path, value.as_bytes())
                    .map_err(|e| self.io(&path, e))?;
                self.fs.fsync_file(&path).map_err(|e| self.io(&path, e))?;
            }
            synced_dirs.sort();
            synced_dirs.dedup();
            // Deepest first, then the run folder, so every entry is durable before meta.yaml.
            for dir in synced_dirs.iter().rev() {
                self.fs.fsync_dir(dir).map_err(|e| self.io(dir, e))?;
            }
            self.fs
                .fsync_dir(run_dir)
                .map_err(|e| self.io(run_dir, e))?;
            let meta_path = run_dir.join(META);
            create_durable(&*self.fs, &meta_path, meta.as_bytes())
                .map_err(|e| self.io(&meta_path, e))
        })();
        if built.is_err() {
            // Nobody knows this run id yet: removing it is safe.
            let _ = self.fs.remove_dir_all(run_dir);
        }
        built
    }

    /// Publishes experiment `id`: mkdir (exclusive, but tolerant of a folder left without
    /// meta.yaml by a crash or by a racer still writing it), then meta.yaml by no-replace
    /// rename. `Ok(false)` when a meta.yaml is already there. No staging folder in the root:
    /// MLflow's experiment listing raises on any folder name that is not a valid id.
    fn publish_experiment(&self, id: &str, meta: &str) -> Result<bool> {
        let dir = self.experiment_dir(id);
        match self.fs.create_dir(&dir) {
            Ok(()) => self
                .fs
                .fsync_dir(&self.root)
                .map_err(|e| self.io(&self.root, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.fs.is_dir(&dir) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(self.io(&dir, e)),
        }
        let meta_path = dir.join(META);
        match create_durable(&*self.fs, &meta_path, meta.as_bytes()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.io(&meta_path, e)),
        }
    }
}

impl Tracker for FileTracker {
    fn describe(&self) -> String {
        format!("file:{}", self.root.display())
    }

    fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        // Fast path: the id we would have given it.
        if let Some(found) = self.experiment_at(&experiment_id_for(name, 0)) {
            if found.name == name {
                return Ok(Some(found));
            }
        }
        let mut deleted = None;
        for id in self.experiment_ids_in(&self.root)? {
            let dir = self.experiment_dir(&id);
            if !self.fs.is_file(&dir.join(META)) {
                continue; // MLflow skips such folders too ("malformed experiment").
            }
            let found = self.read_experiment(&dir, LifecycleStage::Active)?;
            if found.name == name && found.experiment_id == id {
                if found.lifecycle_stage == LifecycleStage::Active {
                    return Ok(Some(found));
                }
                deleted = Some(found);
            }
        }
        let trash = self.root.join(TRASH);
        for id in self.experiment_ids_in(&trash)? {
            let dir = trash.join(&id);
            if !self.fs.is_file(&dir.join(META)) {
                continue;
            }
            let mut found = self.read_experiment(&dir, LifecycleStage::Deleted)?;
            if found.name == name {
                found.lifecycle_stage = LifecycleStage::Deleted;
                deleted = Some(found);
            }
        }
        Ok(deleted)
    }

    fn create_experiment(&self, name: &str) -> Result<String> {
        validate_experiment_name(name)?;
        if let Some(found) = self.experiment_by_name(name)? {
            return Err(already_exists(name, &found.experiment_id));
        }
        self.ensure_dir(&self.root)?;
        let now_ms = now_ms();
        for attempt in 0..EXPERIMENT_ID_ATTEMPTS {
            let id = experiment_id_for(name, attempt);
            if let Some(there) = self.experiment_at(&id) {
                if there.name == name {
                    return Err(already_exists(name, &id));
                }
                continue; // Another name hashed to this id: try the next derivation.
            }
            let meta =
                experiment_meta_yaml(&id, name, &file_uri(&self.experiment_dir(&id)), now_ms);
            if self.publish_experiment(&id, &meta)? {
                return Ok(id);
            }
            // Lost a race: whoever published decides whether it is our name.
            match self.experiment_at(&id) {
                Some(there) if there.name == name => return Err(already_exists(name, &id)),
                _ => continue,
            }
        }
        Err(TrackError::Store {
            path: self.root.display().to_string(),
            detail: format!(
                "no free experiment id for `{name}` after {EXPERIMENT_ID_ATTEMPTS} attempts"
            ),
        })
    }

    fn create_run(&self, run: &NewRun) -> Result<RunInfo> {
        validate_new_run(run)?;
        let experiment_dir = self.experiment_dir(&run.experiment_id);
        let experiment = if is_valid_id(&run.experiment_id) {
            self.experiment_at(&run.experiment_id)
        } else {
            None
        };
        let Some(experiment) = experiment else {
            return Err(TrackError::not_found(format!(
                "experiment `{}` not found in {}",
                run.experiment_id,
                self.root.display()
            )));
        };
        if experiment.lifecycle_stage != LifecycleStage::Active {
            return Err(TrackError::invalid(format!(
                "experiment `{}` must be in the 'active' state",
                experiment.name
            )));
        }
        let run_id = self.unique_hex32();
        let info = run.info(
            run_id.clone(),
            format!("{}/artifacts", file_uri(&experiment_dir.join(&run_id))),
        );
        let tags = run.stored_tags();
        let meta = emit_mapping(&run_meta(&info, "unknown", &BTreeMap::new()));
        self.build_run(&experiment_dir.join(&run_id), &meta, &tags)?;
        Ok(info)
    }

    fn get_run(&self, run_id: &str) -> Result<Run> {
        let dir = self.find_run_dir(run_id)?;
        self.read_run(&dir)
    }

    fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time_ms: Option<i64>,
    ) -> Result<RunInfo> {
        let dir = self.find_run_dir(run_id)?;
        let (old, mut info) = self.read_run_meta(&dir)?;
        info.status = status;
        // Reopening (no end time) clears the old one, so a RUNNING run has none.
        info.end_time_ms = end_time_ms;
        let user_id = scalar(&old, "user_id").unwrap_or_else(|| "unknown".into());
        let meta = emit_mapping(&run_meta(&info, &user_id, &old));
        let path = dir.join(META);
        write_atomic(&*self.fs, &path, meta.as_bytes()).map_err(|e| self.io(&path, e))?;
        Ok(info)
    }

    fn log_batch(&self, run_id: &str, batch: &Batch) -> Result<()> {
        validate_batch(batch)?;
        let dir = self.active_run_dir(run_id)?;
        // Params are write-once: check every one before writing anything, so a conflict
        // leaves the run as it was (the server's log-batch is atomic the same way).
        let params_dir = dir.join("params");
        let mut new_params = Vec::new();
        for (key, value) in &batch.params {
            let path = params_dir.join(key);
            match self.fs.read(&path) {
                Ok(old) if old == value.as_bytes() => {}
                Ok(old) => {
                    return Err(TrackError::invalid(format!(
                        "Changing param values is not allowed. Param with key='{key}' was already logged with value='{}' for run ID='{run_id}'. Attempted logging new value '{value}'.",
                        String::from_utf8_lossy(&old)
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => new_params.push((key, value)),
                Err(e) => return Err(self.io(&path, e)),
            }
        }
        for (key, value) in new_params {
            self.write_keyed(&dir, &params_dir, key, value)?;
        }
        let metrics_dir = dir.join("metrics");
        let mut lines: BTreeMap<&str, String> = BTreeMap::new();
        for m in &batch.metrics {
            lines.entry(&m.key).or_default().push_str(&metric_line(m));
        }
        for (key, text) in lines {
            let path = metrics_dir.join(key);
            let parent = path.parent().unwrap_or(&metrics_dir).to_path_buf();
            self.ensure_dir(&parent)?;
            let is_new = !self.fs.exists(&path);
            if !is_new {
                self.repair_torn_tail(&dir, &path)?;
            }
            self.fs
                .append(&path, text.as_bytes())
                .map_err(|e| self.io(&path, e))?;
            self.fs.fsync_file(&path).map_err(|e| self.io(&path, e))?;
            if is_new {
                self.fs
                    .fsync_dir(&parent)
                    .map_err(|e| self.io(&parent, e))?;
            }
        }
        let tags_dir = dir.join("tags");
        for (key, value) in &batch.tags {
            self.write_keyed(&dir, &tags_dir, key, value)?;
        }
        Ok(())
    }

    fn log_artifact(&self, run_id: &str, local_file: &Path, artifact_path: &str) -> Result<()> {
        validate_artifact_path(artifact_path)?;
        let dir = self.active_run_dir(run_id)?;
        let bytes = self
            .fs
            .read(local_file)
            .map_err(|e| self.io(local_file, e))?;
        let path = dir.join("artifacts").join(artifact_path);
        if let Some(parent) = path.parent() {
            self.ensure_dir(parent)?;
        }
        write_atomic_staged(&*self.fs, &dir, &path, &bytes).map_err(|e| self.io(&path, e))
    }

    fn list_artifacts(&self, run_id: &str, dir: &str) -> Result<Vec<ArtifactEntry>> {
        let dir = dir.trim_matches('/');
        if !dir.is_empty() {
            validate_artifact_path(dir)?;
        }
        let run_dir = self.find_run_dir(run_id)?;
        let base = run_dir.join("artifacts").join(dir);
        let entries = match self.fs.list(&base) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(&base, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = if dir.is_empty() {
                entry.name.clone()
            } else {
                format!("{dir}/{}", entry.name)
            };
            let size = if entry.is_dir {
                None
            } else {
                let full = base.join(&entry.name);
                Some(self.fs.metadata(&full).map_err(|e| self.io(&full, e))?.len)
            };
            out.push(ArtifactEntry {
                path,
                is_dir: entry.is_dir,
                size,
            });
        }
        out.sort();
        Ok(out)
    }

    fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        validate_key("metric", key)?;
        let dir = self.find_run_dir(run_id)?;
        let path = dir.join("metrics").join(key);
        match self.fs.read(&path) {
            Ok(bytes) => parse_metric_lines(key, &bytes).map_err(|e| malformed(&path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io(&path, e)),
        }
    }

    fn search_runs(&self, experiment_id: &str, filter: &RunFilter) -> Result<Vec<Run>> {
        if !is_valid_id(experiment_id) || self.experiment_at(experiment_id).is_none() {
            return Err(TrackError::not_found(format!(
                "experiment `{experiment_id}` not found in {}",
                self.root.display()
            )));
        }
        let dir = self.experiment_dir(experiment_id);
        let entries = self.fs.list(&dir).map_err(|e| self.io(&dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            if !entry.is_dir || entry.name.starts_with('.') {
                continue;
            }
            let run_dir = dir.join(&entry.name);
            // MLflow's `_is_valid_run_directory`: a run needs these three folders.
            let valid = ["metrics", "params", "artifacts"]
                .iter()
                .all(|sub| self.fs.is_dir(&run_dir.join(sub)))
                && self.fs.is_file(&run_dir.join(META));
            if !valid {
                continue;
            }
            let run = self.read_run(&run_dir)?;
            if filter.matches(&run) {
                out.push(run);
            }
        }
        Ok(out)
    }
}

fn already_exists(name: &str, id: &str) -> TrackError {
    TrackError::rejected(
        codes::RESOURCE_ALREADY_EXISTS,
        format!("Experiment '{name}' already exists (id {id})."),
    )
}

fn malformed(path: &Path, err: impl std::fmt::Display) -> TrackError {
    TrackError::Malformed {
        what: path.display().to_string(),
        detail: err.to_string(),
    }
}

fn missing(path: &Path, key: &str) -> TrackError {
    malformed(path, format!("missing or invalid `{key}`"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// MLflow's accepted id shape (`^[a-zA-Z0-9][\w\-]{0,63}$`); also keeps ids from being paths.
fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    first_ok && id.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The id a new experiment named `name` gets: 18 decimal digits (the file store's id shape)
/// derived from the name, so racing creators collide on one directory.
pub fn experiment_id_for(name: &str, attempt: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("trainctl/experiment/{attempt}/{name}").as_bytes());
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(word) % 900_000_000_000_000_000 + 100_000_000_000_000_000;
    let id = n.to_string();
    debug_assert_eq!(id.len(), 18);
    id
}

/// `pathlib.Path(path).as_uri()`: `file://` plus the percent-encoded absolute path.
pub fn file_uri(path: &Path) -> String {
    format!(
        "file://{}",
        super::percent_encode_path(&path.to_string_lossy())
    )
}

/// The line MLflow's file store appends for one metric point.
pub fn metric_line(m: &Metric) -> String {
    format!(
        "{} {} {}\n",
        m.timestamp_ms,
        python_float_repr(m.value),
        m.step
    )
}

/// Python's `repr(float)`, which the file store writes: shortest round-trip digits, `.0` on
/// integral values, exponent form below 1e-4 and from 1e16 on (`1e-05`, `1e+16`), `nan`,
/// `inf`, `-inf`.
pub fn python_float_repr(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's Debug uses the same shortest digits and the same switch to exponent form.
    let debug = format!("{v:?}");
    match debug.split_once('e') {
        None => debug,
        Some((mantissa, exponent)) => {
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exponent),
            };
            let mantissa = mantissa.strip_suffix(".0").unwrap_or(mantissa);
            format!("{mantissa}e{sign}{digits:0>2}")
        }
    }
}

/// Parses a metrics file as MLflow reads it: 2, 3 or 5 space-separated fields per line
/// (`ts value [step [dataset_name dataset_digest]]`). An unterminated last line is a torn
/// append from a crash and is skipped.
pub fn parse_metric_lines(key: &str, bytes: &[u8]) -> std::result::Result<Vec<Metric>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut out = Vec::new();
    for (n, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !matches!(fields.len(), 2 | 3 | 5) {
            return Err(format!(
                "metric `{key}` line {}: {} fields",
                n + 1,
                fields.len()
            ));
        }
        let bad = |what: &str| format!("metric `{key}` line {}: bad {what}", n + 1);
        let timestamp_ms: i64 = fields[0].parse().map_err(|_| bad("timestamp"))?;
        let value: f64 = fields[1].parse().map_err(|_| bad("value"))?;
        let step: i64 = match fields.get(2) {
            Some(s) => s.parse().map_err(|_| bad("step"))?,
            None => 0,
        };
        out.push(Metric {
            key: key.to_string(),
            value,
            timestamp_ms,
            step,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// meta.yaml. PyYAML writes it with sorted keys; we do the same, with every string
// double-quoted (a YAML double-quoted scalar escapes anything, so names with `: `, `#`,
// quotes, newlines or non-printable characters round-trip through PyYAML's SafeLoader).

fn scalar(meta: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    match meta.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn int(meta: &BTreeMap<String, Value>, key: &str) -> Option<i64> {
    match meta.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn experiment_meta_yaml(id: &str, name: &str, artifact_location: &str, now_ms: i64) -> String {
    let mut meta = BTreeMap::new();
    meta.insert("artifact_location".into(), Value::from(artifact_location));
    meta.insert("creation_time".into(), Value::from(now_ms));
    meta.insert("effective_trace_archival_retention".into(), Value::Null);
    meta.insert("experiment_id".into(), Value::from(id));
    meta.insert("last_update_time".into(), Value::from(now_ms));
    meta.insert("lifecycle_stage".into(), Value::from("active"));
    meta.insert("name".into(), Value::from(name));
    meta.insert("trace_location".into(), Value::Null);
    meta.insert("workspace".into(), Value::from("default"));
    emit_mapping(&meta)
}

/// A run's meta.yaml keys (3.17.2), keeping any extra keys `old` had (e.g. `deleted_time`).
fn run_meta(
    info: &RunInfo,
    user_id: &str,
    old: &BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    let mut meta = old.clone();
    let defaults = [
        ("entry_point_name", Value::from("")),
        ("source_name", Value::from("")),
        ("source_type", Value::from(4)),
        ("source_version", Value::from("")),
        ("tags", Value::Array(Vec::new())),
    ];
    for (key, value) in defaults {
        meta.entry(key.to_string()).or_insert(value);
    }
    meta.insert(
        "artifact_uri".into(),
        Value::from(info.artifact_uri.as_str()),
    );
    meta.insert(
        "end_time".into(),
        info.end_time_ms.map(Value::from).unwrap_or(Value::Null),
    );
    meta.insert(
        "experiment_id".into(),
        Value::from(info.experiment_id.as_str()),
    );
    meta.insert(
        "lifecycle_stage".into(),
        Value::from(info.lifecycle_stage.as_str()),
    );
    meta.insert("run_id".into(), Value::from(info.run_id.as_str()));
    meta.insert("run_name".into(), Value::from(info.run_name.as_str()));
    meta.insert("start_time".into(), Value::from(info.start_time_ms));
    meta.insert("status".into(), Value::from(info.status.code()));
    meta.insert("user_id".into(), Value::from(user_id));
    meta.remove("run_uuid");
    meta
}

/// A block mapping, one `key: value` per line, keys sorted.
pub fn emit_mapping(meta: &BTreeMap<String, Value>) -> String {
    let mut out = String::new();
    for (key, value) in meta {
        out.push_str(&yaml_key(key));
        out.push_str(": ");
        out.push_str(&yaml_flow(value));
        out.push('\n');
    }
    out
}

fn yaml_key(key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    if plain {
        key.to_string()
    } else {
        yaml_quote(key)
    }
}

fn yaml_flow(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_quote(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(yaml_flow).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", yaml_quote(k), yaml_flow(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// A YAML double-quoted scalar that PyYAML (YAML 1.1) and saphyr both read back exactly.
/// Escaped: `"` and `\`, and every character PyYAML's reader rejects or treats as a line
/// break (C0/C1 controls, DEL, U+2028/9, U+FEFF, U+FFFE/F).
pub fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let code = c as u32;
                if code <= 0xFFFF {
                    out.push_str(&format!("\\u{code:04X}"));
                } else {
                    out.push_str(&format!("\\U{code:08X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn needs_escape(c: char) -> bool {
    let code = c as u32;
    code < 0x20
        || (0x7F..=0x9F).contains(&code)
        || code == 0x2028
        || code == 0x2029
        || code == 0xFEFF
        || code == 0xFFFE
        || code == 0xFFFF
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
