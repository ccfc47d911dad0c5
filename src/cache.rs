//! Dual-file caches (docs/contract.md, "Caches"): timestamped records are the source of truth;
//! `latest` and `index` are views derived from the records and replaced atomically. Concurrent
//! writers need no lock: every writer publishes its record exclusively, then rebuilds the views
//! from a listing and re-lists until the views it wrote match the records it sees, so at the return
//! of every cache operation the invariants of docs/contract.md, "Caches" hold. Readers that must be
//! exact use records.

use crate::config::schema::{CacheStrategy, PathsFile};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::{self, Fs};
use crate::paths::Layout;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The three caches of docs/contract.md, "Caches".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CacheKind {
    FinalTraining,
    BestModelSelection,
    BestConfigurations,
}

impl CacheKind {
    pub const ALL: [CacheKind; 3] = [
        CacheKind::FinalTraining,
        CacheKind::BestModelSelection,
        CacheKind::BestConfigurations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::FinalTraining => "final_training",
            CacheKind::BestModelSelection => "best_model_selection",
            CacheKind::BestConfigurations => "best_configurations",
        }
    }

    pub fn parse(s: &str) -> Option<CacheKind> {
        CacheKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The effective strategy of one cache (`paths.yaml cache_strategies.<kind>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    pub kind: CacheKind,
    pub dir: PathBuf,
    pub latest_enabled: bool,
    pub latest_name: String,
    pub index_enabled: bool,
    pub index_name: String,
    pub max_entries: usize,
    pub include_metadata: bool,
    pub max_files: Option<usize>,
}

impl CacheSettings {
    pub fn from_paths(
        paths: &PathsFile,
        layout: &Layout,
        kind: CacheKind,
    ) -> Result<CacheSettings> {
        let s: &CacheStrategy = match kind {
            CacheKind::FinalTraining => &paths.cache_strategies.final_training,
            CacheKind::BestModelSelection => &paths.cache_strategies.best_model_selection,
            CacheKind::BestConfigurations => &paths.cache_strategies.best_configurations,
        };
        let sub = match kind {
            CacheKind::FinalTraining => paths.cache.final_training.clone(),
            CacheKind::BestModelSelection => paths.cache.best_model_selection.clone(),
            CacheKind::BestConfigurations => paths.cache.best_configurations.clone(),
        };
        let dir = layout.cache_kind_dir(sub.as_deref().unwrap_or(kind.as_str()))?;
        let max_entries = s.index.max_entries.unwrap_or(20).max(1) as usize;
        let name = |n: &Option<String>, default: String| -> Result<String> {
            let n = n.clone().unwrap_or(default);
            layout.rules.token("cache file name", &n)
        };
        Ok(CacheSettings {
            kind,
            latest_enabled: s.latest.enabled.unwrap_or(true),
            latest_name: name(
                &s.latest.filename,
                format!("latest_{}_cache.json", kind.as_str()),
            )?,
            index_enabled: s.index.enabled.unwrap_or(true),
            index_name: name(&s.index.filename, format!("{}_index.json", kind.as_str()))?,
            max_entries,
            include_metadata: s.index.include_metadata.unwrap_or(true),
            max_files: s.timestamped.max_files.map(|m| m.max(1) as usize),
            dir,
        })
    }
}

/// A record file's content.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Record {
    pub schema_version: u32,
    pub kind: String,
    pub created_at: String,
    /// What identifies the record's subject (for final_training: `<model>/spec8-exec8/vN`).
    pub subject: String,
    pub payload: Value,
    /// Small summary copied into index entries when `include_metadata`.
    #[serde(default)]
    pub metadata: Value,
}

/// A record as found on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub name: String,
    pub record: Record,
}

/// Something `cache check` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: &'static str,
    pub file: String,
    pub detail: String,
}

const RECORD_SUFFIX: &str = ".json";
/// Bound on view-rebuild rounds when writers keep adding records concurrently.
const MAX_SETTLE_ROUNDS: usize = 1000;

/// The UTC calendar time of `unix_us` (clamped to the end of the year 9999, the last instant
/// the formats can hold, for a clock that far off). Civil time, not `jiff::Timestamp`, whose
/// range stops a day earlier.
fn instant(unix_us: u64) -> jiff::civil::DateTime {
    const EPOCH: jiff::civil::DateTime = jiff::civil::date(1970, 1, 1).at(0, 0, 0, 0);
    i64::try_from(unix_us)
        .ok()
        .and_then(|us| {
            EPOCH
                .checked_add(jiff::SignedDuration::from_micros(us))
                .ok()
        })
        .unwrap_or(jiff::civil::DateTime::MAX)
}

/// A timestamp usable in file names: `YYYYMMDDTHHMMSS.ffffffZ` (UTC, microseconds). Existing
/// caches stay readable: the format is byte-identical to the hand-written one it replaced
/// (golden vectors in props/cache.rs).
pub fn file_timestamp(unix_us: u64) -> String {
    instant(unix_us).strftime("%Y%m%dT%H%M%S.%6fZ").to_string()
}

/// RFC 3339 UTC with microseconds.
pub fn rfc3339(unix_us: u64) -> String {
    instant(unix_us)
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp (`rfc3339`'s form, or with
/// fewer fraction digits); `None` for anything else, an impossible date (2026-02-31) included.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    if !s.ends_with('Z') {
        return None;
    }
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// One cache over the Fs port.
pub struct Cache<'a> {
    pub fs: &'a dyn Fs,
    pub settings: CacheSettings,
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, &e)
}

/// Creates `dir` and missing ancestors durably (`fs::ensure_dir`); the error names `dir`.
pub fn ensure_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs::ensure_dir(fs, dir).map_err(|e| io_err(dir, e))
}

impl<'a> Cache<'a> {
    pub fn new(fs: &'a dyn Fs, settings: CacheSettings) -> Cache<'a> {
        Cache { fs, settings }
    }

    fn is_record_name(&self, name: &str) -> bool {
        name.starts_with(&format!("{}_", self.settings.kind.as_str()))
            && name.ends_with(RECORD_SUFFIX)
            && name != self.settings.latest_name
            && name != self.settings.index_name
            && !fs::is_temp_name(name)
    }

    /// Record file names, newest first (names sort by timestamp, then unique suffix).
    pub fn record_names(&self) -> Result<Vec<String>> {
        let entries = match self.fs.list(&self.settings.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.settings.dir, e)),
        };
        let mut names: Vec<String> = entries
            .into_iter()
            .filter(|e| !e.is_dir && self.is_record_name(&e.name))
            .map(|e| e.name)
            .collect();
        names.sort_by_key(|n| std::cmp::Reverse(record_order_key(n)));
        Ok(names)
    }

    /// Reads one record; `None` when torn, corrupt or of another kind.
    pub fn read_record(&self, name: &str) -> Option<Record> {
        let bytes = self.fs.read(&self.settings.dir.join(name)).ok()?;
        let record: Record = serde_json::from_slice(&bytes).ok()?;
        (record.kind == self.settings.kind.as_str() && record.schema_version == 1).then_some(record)
    }

    /// The newest `limit` valid records (newest first) and the names of invalid ones seen.
    pub fn newest_valid(&self, limit: usize) -> Result<(Vec<Found>, Vec<String>)> {
        let mut valid = Vec::new();
        let mut invalid = Vec::new();
        for name in self.record_names()? {
            if valid.len() >= limit {
                break;
            }
            match self.read_record(&name) {
                Some(record) => valid.push(Found { name, record }),
                None => invalid.push(name),
            }
        }
        Ok((valid, invalid))
    }

    /// Publishes a new record (exclusive, durable), prunes to `max_files`, then refreshes
    /// the views from what is left. Returns the record's file name and warnings.
    pub fn write(&self, record: &Record, unix_us: u64) -> Result<(String, Vec<String>)> {
        debug_assert_eq!(record.kind, self.settings.kind.as_str());
        ensure_dir(self.fs, &self.settings.dir)?;
        let bytes =
            serde_json::to_vec_pretty(record).map_err(|e| Error::internal(e.to_string()))?;
        let subject = crate::paths::NormalizeRules::default()
            .token("subject", &record.subject.replace(['/', '.'], "-"))
            .unwrap_or_else(|_| "record".into());
        let subject: String = subject.chars().take(80).collect();
        // Bounded: each attempt uses a fresh unique suffix, so a collision is a fluke.
        for _ in 0..16 {
            let name = format!(
                "{}_{subject}_{}_{}{RECORD_SUFFIX}",
                self.settings.kind.as_str(),
                file_timestamp(unix_us),
                self.fs.unique()
            );
            let path = self.settings.dir.join(&name);
            match fs::create_durable(self.fs, &path, &bytes) {
                Ok(()) => {
                    // Check the data right after writing it (an I/O failure is an error here,
                    // never a panic).
                    if self.read_record(&name).is_none() {
                        return Err(Error::internal(format!(
                            "cache record {} is unreadable right after it was written",
                            path.display()
                        )));
                    }
                    // The record is the truth from here on: views and retention are derived, and
                    // a failure to write them (a full or read-only disk) is a warning that
                    // `cache repair` fixes, never a failed command.
                    // Retention first, then the views: views settled before pruning would
                    // list the records this write prunes.
                    let kind = self.settings.kind.as_str();
                    let mut warnings = Vec::new();
                    if let Err(e) = self.prune() {
                        warnings.push(format!(
                            "cache record {name} is written, but older {kind} records could not be pruned: {e}"
                        ));
                    }
                    match self.settle_views() {
                        Ok(w) => warnings.extend(w),
                        Err(e) => warnings.push(format!(
                            "cache record {name} is written, but the {kind} views (latest, index) are not up to date: {e}; run `trainctl cache repair {kind}`"
                        )),
                    }
                    return Ok((name, warnings));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        Err(Error::internal(
            "could not find a free record name in 16 attempts",
        ))
    }

    fn index_doc(&self, records: &[Found]) -> Value {
        let entries: Vec<Value> = records
            .iter()
            .map(|f| {
                let mut e = json!({"record": f.name, "created_at": f.record.created_at, "subject": f.record.subject});
                if self.settings.include_metadata {
                    e["metadata"] = f.record.metadata.clone();
                }
                e
            })
            .collect();
        json!({
            "schema_version": 1,
            "kind": self.settings.kind.as_str(),
            "max_entries": self.settings.max_entries,
            "entries": entries,
        })
    }

    /// Rebuilds `latest` and `index` from the records until a listing taken after the write
    /// agrees with what was written (bounded). Returns warnings about skipped records.
    pub fn settle_views(&self) -> Result<Vec<String>> {
        for _ in 0..MAX_SETTLE_ROUNDS {
            let (records, invalid) = self.newest_valid(self.settings.max_entries)?;
            let warnings = invalid
                .iter()
                .map(|n| format!("skipped unreadable cache record {n}"))
                .collect();
            self.write_views(&records)?;
            let (again, _) = self.newest_valid(self.settings.max_entries)?;
            let names = |v: &[Found]| v.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
            if names(&again) == names(&records) {
                return Ok(warnings);
            }
        }
        Err(Error::internal(format!(
            "cache views of {} did not settle in {MAX_SETTLE_ROUNDS} rounds",
            self.settings.kind.as_str()
        )))
    }

    fn write_views(&self, records: &[Found]) -> Result<()> {
        let dir = &self.settings.dir;
        if self.settings.index_enabled {
            let path = dir.join(&self.settings.index_name);
            let bytes = serde_json::to_vec_pretty(&self.index_doc(records))
                .map_err(|e| Error::internal(e.to_string()))?;
            fs::write_atomic(self.fs, &path, &bytes).map_err(|e| io_err(&path, e))?;
        }
        if self.settings.latest_enabled {
            let path = dir.join(&self.settings.latest_name);
            match records.first() {
                Some(newest) => {
                    let doc = json!({"record": newest.name, "data": newest.record});
                    let bytes = serde_json::to_vec_pretty(&doc)
                        .map_err(|e| Error::internal(e.to_string()))?;
                    fs::write_atomic(self.fs, &path, &bytes).map_err(|e| io_err(&path, e))?;
                }
                None => match self.fs.remove_file(&path) {
                    Ok(()) => self.fs.fsync_dir(dir).map_err(|e| io_err(dir, e))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&path, e)),
                },
            }
        }
        Ok(())
    }

    /// Deletes the oldest records beyond `max_files`, never the newest valid one.
    fn prune(&self) -> Result<()> {
        let Some(max) = self.settings.max_files else {
            return Ok(());
        };
        let names = self.record_names()?;
        let keep_newest = self.newest_valid(1)?.0.first().map(|f| f.name.clone());
        for name in names.iter().skip(max) {
            if Some(name) == keep_newest.as_ref() {
                continue;
            }
            let path = self.settings.dir.join(name);
            match self.fs.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        self.fs.fsync_dir(&self.settings.dir).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(io_err(&self.settings.dir, e))
            }
        })
    }

    /// The newest valid record, from `latest` when it is consistent, else from the records
    /// (with a warning); `None` means "recompute".
    pub fn latest(&self) -> Result<(Option<Found>, Vec<String>)> {
        let mut warnings = Vec::new();
        if self.settings.latest_enabled {
            let path = self.settings.dir.join(&self.settings.latest_name);
            if let Ok(bytes) = self.fs.read(&path) {
                let named = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|d| d.get("record").and_then(Value::as_str).map(str::to_string));
                match named.and_then(|n| self.read_record(&n).map(|r| (n, r))) {
                    Some((name, record)) => {
                        // latest must name the newest valid record to be trusted.
                        let newest = self.newest_valid(1)?.0;
                        if newest.first().map(|f| &f.name) == Some(&name) {
                            return Ok((Some(Found { name, record }), warnings));
                        }
                        warnings
                            .push("latest is behind the newest record; using the records".into());
                    }
                    None => warnings.push(format!(
                        "{} is torn or names a missing or corrupt record; using the records",
                        self.settings.latest_name
                    )),
                }
            }
        }
        let (mut newest, invalid) = self.newest_valid(1)?;
        warnings.extend(
            invalid
                .iter()
                .map(|n| format!("skipped unreadable cache record {n}")),
        );
        Ok((newest.pop(), warnings))
    }

    /// Reports every inconsistency between records and views (read-only).
    pub fn check(&self) -> Result<Vec<Problem>> {
        let mut problems = Vec::new();
        let mut valid = Vec::new();
        for name in &self.record_names()? {
            match self.read_record(name) {
                Some(record) => valid.push(Found {
                    name: name.clone(),
                    record,
                }),
                None => problems.push(Problem {
                    kind: "corrupt_record",
                    file: self.file(name),
                    detail: "unparseable or wrong kind; skipped by readers".into(),
                }),
            }
        }
        if self.settings.index_enabled {
            let want: Vec<String> = valid
                .iter()
                .take(self.settings.max_entries)
                .map(|f| f.name.clone())
                .collect();
            problems.extend(self.check_index(&want));
        }
        if self.settings.latest_enabled {
            problems.extend(self.check_latest(valid.first().map(|f| f.name.as_str())));
        }
        if let Ok(entries) = self.fs.list(&self.settings.dir) {
            for e in entries.iter().filter(|e| fs::is_temp_name(&e.name)) {
                problems.push(Problem {
                    kind: "temp_debris",
                    file: self.file(&e.name),
                    detail: "left by an interrupted write; repair removes it".into(),
                });
            }
        }
        Ok(problems)
    }

    /// A file of the cache dir as a report names it.
    fn file(&self, name: &str) -> String {
        self.settings.dir.join(name).display().to_string()
    }

    /// A view as JSON, `None` when it is absent or unparseable.
    fn read_view(&self, name: &str) -> Option<Value> {
        let bytes = self.fs.read(&self.settings.dir.join(name)).ok()?;
        serde_json::from_slice::<Value>(&bytes).ok()
    }

    /// The index against the records it should list (the newest valid ones, in order).
    fn check_index(&self, want: &[String]) -> Option<Problem> {
        let name = &self.settings.index_name;
        let exists = self.fs.exists(&self.settings.dir.join(name));
        let Some(doc) = self.read_view(name) else {
            return (exists || !want.is_empty()).then(|| Problem {
                kind: if exists {
                    "index_corrupt"
                } else {
                    "index_missing"
                },
                file: self.file(name),
                detail: format!("{} records should be listed", want.len()),
            });
        };
        let listed: Vec<String> = doc["entries"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["record"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (listed != want).then(|| Problem {
            kind: "index_stale",
            file: self.file(name),
            detail: format!(
                "lists {} entries, the newest {} valid records differ",
                listed.len(),
                want.len()
            ),
        })
    }

    /// Latest against the newest valid record.
    fn check_latest(&self, newest: Option<&str>) -> Option<Problem> {
        let name = &self.settings.latest_name;
        let exists = self.fs.exists(&self.settings.dir.join(name));
        let named = self
            .read_view(name)
            .and_then(|d| d.get("record").and_then(Value::as_str).map(str::to_string));
        match (named, newest) {
            (None, None) if !exists => None,
            (None, _) => Some(Problem {
                kind: if exists {
                    "latest_corrupt"
                } else {
                    "latest_missing"
                },
                file: self.file(name),
                detail: "latest is unreadable or absent".into(),
            }),
            (Some(n), Some(newest)) if n == newest => None,
            (Some(n), _) => Some(Problem {
                kind: "latest_stale",
                file: self.file(name),
                detail: format!("names {n}, which is not the newest valid record"),
            }),
        }
    }

    /// Rebuilds the views from the records and removes temporary debris.
    pub fn repair(&self) -> Result<Vec<String>> {
        if !self.fs.is_dir(&self.settings.dir) {
            return Ok(Vec::new());
        }
        if let Ok(entries) = self.fs.list(&self.settings.dir) {
            for e in entries.iter().filter(|e| fs::is_temp_name(&e.name)) {
                let _ = self.fs.remove_file(&self.settings.dir.join(&e.name));
            }
        }
        self.settle_views()
    }

    /// Subjects of all valid records (for backfill checks); reads every record.
    pub fn subjects(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for name in self.record_names()? {
            if let Some(r) = self.read_record(&name) {
                out.push(r.subject);
            }
        }
        Ok(out)
    }
}

/// Sort key of a record name: (timestamp, unique suffix) when the name has our shape.
fn record_order_key(name: &str) -> (String, String) {
    let stem = name.strip_suffix(RECORD_SUFFIX).unwrap_or(name);
    // `<kind>_<subject>_<timestamp>_<unique>`: the timestamp is the second-to-last field.
    let mut parts = stem.rsplitn(3, '_');
    let unique = parts.next().unwrap_or_default().to_string();
    let ts = parts.next().unwrap_or_default().to_string();
    (ts, unique)
}

/// The error for an unknown cache kind on the command line.
pub fn unknown_kind(given: &str) -> Error {
    let names: Vec<&str> = CacheKind::ALL.iter().map(|k| k.as_str()).collect();
    Error::new(
        ErrorKind::Usage,
        format!(
            "unknown cache `{given}`; expected one of {}",
            names.join(", ")
        ),
    )
}
