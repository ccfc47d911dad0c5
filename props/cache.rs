//! Edges of the cache (docs/contract.md, "Caches") that the crash, loom and model-vs-real targets
//! do not reach. Added for the mutation gate (issue 8): each test here kills mutants of
//! src/cache.rs that survived those targets.

use crate::support;

use proptest::prelude::*;
use trainctl::cache;

/// Instants with their UTC text, computed independently (Python's `datetime`): the epoch, leap
/// days in a leap century (2000) and an ordinary leap year, the day after a leap day, the
/// non-leap century 2100, and the last microsecond the format can hold.
const KNOWN: &[(u64, &str)] = &[
    (0, "1970-01-01T00:00:00.000000Z"),
    (68_169_600_000_000, "1972-02-29T00:00:00.000000Z"),
    (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),
    (1_700_000_000_123_456, "2023-11-14T22:13:20.123456Z"),
    (1_709_164_799_999_999, "2024-02-28T23:59:59.999999Z"),
    (1_709_251_200_000_000, "2024-03-01T00:00:00.000000Z"),
    (4_102_444_799_999_999, "2099-12-31T23:59:59.999999Z"),
    (4_107_542_400_000_000, "2100-03-01T00:00:00.000000Z"),
    (253_402_300_799_999_999, "9999-12-31T23:59:59.999999Z"),
];

/// Record timestamps (`created_at`) and the timestamped file names of the cache.
#[test]
fn timestamps_are_utc_calendar_dates_to_the_microsecond() {
    for (us, text) in KNOWN {
        assert_eq!(cache::rfc3339(*us), *text, "{us} µs");
        let compact: String = text.chars().filter(|c| *c != '-' && *c != ':').collect();
        assert_eq!(cache::file_timestamp(*us), compact, "{us} µs");
    }
}

proptest! {
    #![proptest_config(support::seeded_config(support::cases(256), module_path!(), "timestamps"))]

    /// Timestamped file names sort in time order, which is what "latest" relies on.
    #[test]
    fn timestamps_sort_like_the_instants_they_name(
        a in 0u64..253_402_300_800_000_000,
        b in 0u64..253_402_300_800_000_000,
    ) {
        prop_assert_eq!(cache::rfc3339(a).cmp(&cache::rfc3339(b)), a.cmp(&b));
        prop_assert_eq!(cache::file_timestamp(a).cmp(&cache::file_timestamp(b)), a.cmp(&b));
    }
}

use std::io;
use std::path::{Path, PathBuf};
use support::scripted::Scripted;
use trainctl::cache::{Cache, CacheKind, CacheSettings, Record};
use trainctl::fs::OsFs;

fn settings(dir: PathBuf, max_files: Option<usize>) -> CacheSettings {
    CacheSettings {
        kind: CacheKind::FinalTraining,
        dir,
        latest_enabled: true,
        latest_name: "latest_final_training_cache.json".into(),
        index_enabled: true,
        index_name: "final_training_index.json".into(),
        max_entries: 20,
        include_metadata: true,
        max_files,
    }
}

fn record(subject: &str) -> Record {
    Record {
        schema_version: 1,
        kind: CacheKind::FinalTraining.as_str().into(),
        created_at: cache::rfc3339(0),
        subject: subject.into(),
        payload: serde_json::json!({"subject": subject}),
        metadata: serde_json::json!({}),
    }
}

fn record_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("final_training_") && n.ends_with(".json"))
        .filter(|n| n != "final_training_index.json")
        .collect();
    names.sort();
    names
}

/// Two writers creating the cache dir at once: the one that loses the `create_dir` race
/// finds the dir there and carries on.
#[test]
fn a_cache_dir_created_meanwhile_by_another_writer_is_used() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache/final_training");
    let fs = Scripted {
        racing_mkdir: true,
        ..Scripted::default()
    };
    cache::ensure_dir(&fs, &dir).expect("the dir exists now, whoever made it");
    assert!(dir.is_dir());
    let (name, _) = Cache::new(&fs, settings(dir.clone(), None))
        .write(&record("m/a/v1"), 1)
        .expect("write");
    assert_eq!(record_files(&dir), [name]);
}

/// Two records in the same microsecond whose unique suffixes collide: the second writer takes
/// a fresh name instead of failing or overwriting.
/// On every storage profile: the exclusive create refuses the taken name whether it is a
/// rename-noreplace, a link or an O_EXCL create.
#[test]
fn a_record_name_collision_is_retried_with_a_fresh_name() {
    for profile in support::SimProfile::ALL {
        record_name_collision_on(Scripted::with_profile(profile));
    }
}

fn record_name_collision_on(fs: Scripted) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("final_training");
    let cache = Cache::new(&fs, settings(dir.clone(), None));
    let (first, _) = cache.write(&record("m/a/v1"), 7).expect("first");
    // The record name is `<kind>_<subject>_<timestamp>_<unique>.json`, and naming the record
    // is the first thing a write asks `unique()` for: hand the second write the same suffix.
    let suffix = first
        .strip_suffix(".json")
        .and_then(|n| n.rsplit_once('_'))
        .map(|(_, u)| u.to_string())
        .expect("suffix");
    fs.uniques.lock().expect("lock").push(suffix);
    let (second, _) = cache.write(&record("m/a/v1"), 7).expect("second, renamed");
    assert_ne!(first, second);
    assert_eq!(record_files(&dir).len(), 2);
    assert_eq!(
        cache.read_record(&first).expect("first intact").payload["subject"],
        "m/a/v1"
    );
}

/// Only records of this cache's kind and of schema version 1 are records: a file named like
/// one but holding another kind or a future schema is skipped, never served.
#[test]
fn records_of_another_kind_or_schema_are_not_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("final_training");
    let cache = Cache::new(&OsFs, settings(dir.clone(), None));
    let (good, _) = cache.write(&record("m/a/v1"), 1).expect("write");
    let mut foreign = record("m/a/v2");
    foreign.kind = CacheKind::BestModelSelection.as_str().into();
    let mut future = record("m/a/v3");
    future.schema_version = 2;
    for (name, r) in [
        ("final_training_x_29990101T000000.000000Z_a.json", &foreign),
        ("final_training_y_29990101T000000.000000Z_b.json", &future),
    ] {
        std::fs::write(dir.join(name), serde_json::to_vec(r).expect("json")).expect("write");
        assert_eq!(cache.read_record(name), None, "{name}");
    }
    let (latest, _) = cache.latest().expect("latest");
    assert_eq!(latest.map(|f| f.name), Some(good.clone()));
    let (valid, invalid) = cache.newest_valid(10).expect("newest");
    assert_eq!(valid.iter().map(|f| &f.name).collect::<Vec<_>>(), [&good]);
    assert_eq!(invalid.len(), 2);
}

/// `latest()` answers from the `latest` view only when it names the newest valid record;
/// a torn or stale view falls back to the records, with a warning.
#[test]
fn latest_trusts_the_view_only_when_it_names_the_newest_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("final_training");
    let cache = Cache::new(&OsFs, settings(dir.clone(), None));
    assert_eq!(cache.latest().expect("empty"), (None, vec![]));
    let (v1, _) = cache.write(&record("m/a/v1"), 1).expect("write");
    let (v2, _) = cache.write(&record("m/a/v2"), 2).expect("write");
    let (latest, warnings) = cache.latest().expect("latest");
    assert_eq!(latest.map(|f| f.name), Some(v2.clone()));
    assert!(warnings.is_empty(), "{warnings:?}");

    let view = dir.join("latest_final_training_cache.json");
    std::fs::write(&view, serde_json::json!({ "record": v1 }).to_string()).expect("write");
    let (latest, warnings) = cache.latest().expect("stale view");
    assert_eq!(latest.map(|f| f.name), Some(v2.clone()));
    assert!(
        warnings.iter().any(|w| w.contains("behind")),
        "{warnings:?}"
    );

    std::fs::write(&view, b"{\"rec").expect("torn");
    let (latest, warnings) = cache.latest().expect("torn view");
    assert_eq!(latest.map(|f| f.name), Some(v2));
    assert!(warnings.iter().any(|w| w.contains("torn")), "{warnings:?}");
}

/// Pruning to `max_files`: a record someone else already removed is fine; any other failure
/// to remove a record, or to make the removals durable, is reported, not a silent success.
/// It is a warning of the write, not an error: the new record is written and durable, and a
/// recorded training never fails because of retention (docs/contract.md, "Storage errors").
#[test]
fn pruning_reports_failures_other_than_already_gone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("final_training");
    let ok = Cache::new(&OsFs, settings(dir.clone(), Some(1)));
    ok.write(&record("m/a/v1"), 1).expect("write");
    let (v2, _) = ok.write(&record("m/a/v2"), 2).expect("write, pruning v1");
    assert_eq!(record_files(&dir), std::slice::from_ref(&v2));

    let denied = Scripted {
        remove_fails: Some(io::ErrorKind::PermissionDenied),
        ..Scripted::default()
    };
    let (v3, warnings) = Cache::new(&denied, settings(dir.clone(), Some(1)))
        .write(&record("m/a/v3"), 3)
        .expect("the record is written although an old one cannot be pruned");
    let warning = warnings.join("\n");
    assert!(
        warning.contains(&v2) && warning.contains("could not be pruned"),
        "names the record it could not prune: {warning}"
    );
    assert!(record_files(&dir).contains(&v3));

    let gone = Scripted {
        remove_fails: Some(io::ErrorKind::NotFound),
        ..Scripted::default()
    };
    Cache::new(&gone, settings(dir.clone(), Some(1)))
        .write(&record("m/a/v4"), 4)
        .expect("records pruned by someone else meanwhile are fine");

    let unsynced = Scripted {
        fsync_after_remove_fails: Some(io::ErrorKind::Other),
        ..Scripted::default()
    };
    let (_, warnings) = Cache::new(&unsynced, settings(dir.clone(), Some(1)))
        .write(&record("m/a/v5"), 5)
        .expect("the record is written");
    assert!(
        warnings.iter().any(|w| w.contains("could not be pruned")),
        "removals that cannot be made durable are reported: {warnings:?}"
    );
    let dir_gone = Scripted {
        fsync_after_remove_fails: Some(io::ErrorKind::NotFound),
        ..Scripted::default()
    };
    Cache::new(&dir_gone, settings(dir, Some(1)))
        .write(&record("m/a/v6"), 6)
        .expect("a cache dir removed meanwhile has nothing left to sync");
}

/// `cache check` reports damaged views even when there is no valid record to rebuild them
/// from, and nothing for a cache that simply has nothing yet.
#[test]
fn check_reports_corrupt_views_of_an_empty_cache() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("final_training");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let cache = Cache::new(&OsFs, settings(dir.clone(), None));
    assert_eq!(cache.check().expect("check"), vec![]);
    std::fs::write(dir.join("final_training_index.json"), b"{torn").expect("write");
    std::fs::write(dir.join("latest_final_training_cache.json"), b"{torn").expect("write");
    let kinds: Vec<&str> = cache
        .check()
        .expect("check")
        .iter()
        .map(|p| p.kind)
        .collect();
    assert_eq!(kinds, ["index_corrupt", "latest_corrupt"]);
}

/// `subjects` lists the subject of every valid record and of nothing else.
#[test]
fn subjects_are_those_of_the_valid_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("final_training");
    let cache = Cache::new(&OsFs, settings(dir.clone(), None));
    assert_eq!(cache.subjects().expect("empty"), Vec::<String>::new());
    cache.write(&record("m/a/v1"), 1).expect("write");
    cache.write(&record("m/a/v2"), 2).expect("write");
    std::fs::write(
        dir.join("final_training_x_29990101T000000.000000Z_a.json"),
        b"{",
    )
    .expect("w");
    let mut subjects = cache.subjects().expect("subjects");
    subjects.sort();
    assert_eq!(subjects, ["m/a/v1", "m/a/v2"]);
}

/// With no valid record left, `repair` removes the `latest` view; failing to remove it is an
/// error (a stale `latest` would keep naming a record that is gone), unless it is already gone.
#[test]
fn a_latest_view_that_cannot_be_removed_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("final_training");
    let (name, _) = Cache::new(&OsFs, settings(dir.clone(), None))
        .write(&record("m/a/v1"), 1)
        .expect("write");
    std::fs::write(dir.join(&name), b"{corrupt").expect("corrupt the only record");
    let denied = Scripted {
        remove_fails: Some(io::ErrorKind::PermissionDenied),
        ..Scripted::default()
    };
    assert!(Cache::new(&denied, settings(dir.clone(), None))
        .repair()
        .is_err());
    assert!(dir.join("latest_final_training_cache.json").exists());
    let gone = Scripted {
        remove_fails: Some(io::ErrorKind::NotFound),
        ..Scripted::default()
    };
    Cache::new(&gone, settings(dir.clone(), None))
        .repair()
        .expect("already gone is fine");
    Cache::new(&OsFs, settings(dir.clone(), None))
        .repair()
        .expect("repair");
    assert!(!dir.join("latest_final_training_cache.json").exists());
}
