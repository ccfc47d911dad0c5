//! The storage of OUT for one command (docs/contract.md, "Storage profiles"): probes the
//! filesystem OUT lives on (once per process, through `OsFs`), applies `paths.yaml`
//! `storage.profile`, and says which profile is in force and what it guarantees. Never writes
//! anything but the probe's private directory, which is always removed.

use crate::config::schema::StorageProfileSetting;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::fs::profile::{self, ProfileName, Report, Setting};
use crate::fs::OsFs;
use std::path::Path;
use std::time::Instant;

/// The configured setting.
pub fn setting(config: &Config) -> Setting {
    match config.paths.storage.profile {
        None | Some(StorageProfileSetting::Auto) => Setting::Auto,
        Some(StorageProfileSetting::Posix) => Setting::Force(ProfileName::Posix),
        Some(StorageProfileSetting::PosixNoflags) => Setting::Force(ProfileName::PosixNoflags),
    }
}

/// What the probe of a directory cost, for docs/performance.md (`probe_us` is 0 when this
/// process had probed that filesystem already).
#[derive(Clone, Debug)]
pub struct Established {
    pub report: Report,
    pub probe_us: u64,
}

/// Probes the filesystem of `out` (or of its nearest existing ancestor, where OUT will be
/// created) and applies the configured profile. A forced `posix` on a filesystem without
/// rename flags is a config error naming the setting and the failed probe; a probe that
/// cannot write (read-only, full, no permission) is the storage error it is, naming OUT.
pub fn establish(config: &Config, out: &Path) -> Result<Established> {
    let setting = setting(config);
    if let Some(bucket) = crate::paths::out_bucket(config) {
        return in_bucket(config, &bucket, setting);
    }
    let started = Instant::now();
    let (probe, dir, ran) = OsFs::probe(out).map_err(|e| {
        let kind = ErrorKind::of_io(&e).unwrap_or(ErrorKind::Internal);
        Error::new(
            kind,
            format!(
                "OUT {}: cannot probe its filesystem (a private directory is created and removed in {}): {e}",
                out.display(),
                nearest_existing(out).display()
            ),
        )
    })?;
    let probe_us = if ran {
        started.elapsed().as_micros() as u64
    } else {
        0
    };
    if let Setting::Force(forced) = setting {
        if let Some(failed) = profile::forced_mismatch(forced, &probe) {
            let message = format!(
                "storage.profile {} cannot be used for OUT {}: {failed}; use `auto` or `posix-noflags`",
                forced.as_str(),
                out.display()
            );
            return Err(setting_error(config, &message));
        }
        OsFs::force(&dir, forced).map_err(|e| Error::io_op("stat", &dir, &e))?;
    }
    let report = Report::new(dir.clone(), probe, setting, profile::mount_of(&dir));
    Ok(Established { report, probe_us })
}

/// A `config_invalid` located at `paths.yaml` `storage.profile`.
fn setting_error(config: &Config, message: &str) -> Error {
    match config.docs.get("paths") {
        Some(doc) => doc.locate("storage.profile", message),
        None => Error::new(ErrorKind::ConfigInvalid, message.to_string()),
    }
}

/// OUT in a bucket: the `object` profile, never probed (the store's semantics are documented,
/// not discovered); a forced filesystem profile is a config error naming the key.
fn in_bucket(
    config: &Config,
    bucket: &crate::paths::BucketUrl,
    setting: Setting,
) -> Result<Established> {
    if let Setting::Force(forced) = setting {
        let message = format!(
            "storage.profile {} is a filesystem profile, but OUT is the bucket {}: remove the key (a bucket always uses the object profile)",
            forced.as_str(),
            bucket.url()
        );
        return Err(setting_error(config, &message));
    }
    let probe = profile::Probe {
        caps: crate::fs::Caps::OBJECTS,
        excl_create: true,
        dir_fsync: false,
    };
    let mount = profile::Mount {
        mount_point: std::path::PathBuf::from(bucket.url()),
        fstype: format!("object-store.{}", bucket.scheme),
        source: bucket.url(),
    };
    let report = Report::new(
        std::path::PathBuf::from(bucket.url()),
        probe,
        Setting::Auto,
        Some(mount),
    );
    Ok(Established {
        report,
        probe_us: 0,
    })
}

/// `establish` for commands that may still succeed without writing (a `train` that reuses, a
/// `pipeline` that reuses every step): a probe that fails with a storage error (read-only,
/// full, no permission) is deferred, since the first write will report it naming its file,
/// and a reuse needs none. Config errors (a forced profile the filesystem lacks) still fail.
pub fn establish_or_defer(config: &Config, out: &Path) -> Result<Option<Established>> {
    match establish(config, out) {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.kind.is_storage() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `establish` for commands that only report (status, config show): the JSON document and
/// one human line. A probe that cannot run is described, not an error (a read-only OUT can
/// still be listed).
pub fn describe(config: &Config, out: &Path) -> (serde_json::Value, String) {
    match establish(config, out) {
        Ok(e) => (
            serde_json::to_value(&e.report).unwrap_or_default(),
            e.report.line(),
        ),
        Err(e) => (
            serde_json::json!({
                "profile": null,
                "error": {"kind": e.kind.as_str(), "message": e.message},
            }),
            format!("unknown ({}: {})", e.kind, e.message),
        ),
    }
}

/// The storage of another directory trainctl writes (the Drive mirror): always probed, never
/// overridden; a probe that cannot run is described.
pub fn describe_dir(dir: &Path) -> (serde_json::Value, String) {
    match OsFs::probe(dir) {
        Ok((probe, at, _)) => {
            let report = Report::new(at.clone(), probe, Setting::Auto, profile::mount_of(&at));
            (
                serde_json::to_value(&report).unwrap_or_default(),
                report.line(),
            )
        }
        Err(e) => {
            let kind = ErrorKind::of_io(&e).unwrap_or(ErrorKind::Internal);
            (
                serde_json::json!({"profile": null, "error": {"kind": kind.as_str(), "message": e.to_string()}}),
                format!("unknown ({kind}: {e})"),
            )
        }
    }
}

fn nearest_existing(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

/// A storage error names OUT and the profile in force (docs/contract.md, "Storage errors");
/// other errors pass unchanged.
pub fn on_out(mut e: Error, out: &Path, storage: Option<&Report>) -> Error {
    if e.kind.is_storage() {
        e.message = format!(
            "{}\n(OUT is {}{})",
            e.message,
            out.display(),
            storage
                .map(|r| format!(", storage profile {}", r.line()))
                .unwrap_or_else(|| ", storage profile unknown: its probe failed".into())
        );
    }
    e
}
