//! The completion predicate's edges (docs/contract.md, "Decision and completion") that the damage
//! table in `props/decision.rs` does not reach: unreadable (not missing) files, a variant dir moved
//! under another identity, sharded checkpoints, label maps, manifest paths, the recorded objective.
//! Added for the mutation gate (issue 8): each test kills mutants of src/completion.rs that
//! survived the decision, crash and model_vs_real targets.

use crate::support;

use std::path::{Path, PathBuf};
use trainctl::completion::{self, Completion, Depth, Reason};
use trainctl::fs::OsFs;
use trainctl::job::Job;

/// A project with one prepared job (its layout and identity).
fn fixture() -> (support::Project, Job) {
    let project = support::Project::new();
    let job = support::prepared_job(&project);
    (project, job)
}

/// The one check: the reason (or `None` = complete) at both depths must be `want`.
fn check(job: &Job, dir: &Path, expected: bool, variant: u64, want: Option<Reason>) {
    for depth in [Depth::Sizes, Depth::Digests] {
        let id = expected.then_some(&job.identity);
        let got = completion::check(&OsFs, &job.layout, dir, id, variant, depth);
        assert_eq!(
            got.reason().cloned(),
            want,
            "{} at {depth:?} (expected identity given: {expected})",
            dir.display()
        );
    }
}

fn edit_metadata(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("metadata.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read metadata")).expect("json");
    edit(&mut meta);
    std::fs::write(path, serde_json::to_vec(&meta).expect("json")).expect("write metadata");
}

#[test]
fn an_unreadable_metadata_file_is_corrupt_not_missing() {
    let (_p, job) = fixture();
    let dir = support::write_complete_variant(&job.layout, &job.identity, 1);
    std::fs::remove_file(dir.join("metadata.json")).expect("rm");
    check(&job, &dir, true, 1, Some(Reason::NoMetadata));
    // A directory where the file should be: reading fails, but not with NotFound.
    std::fs::create_dir(dir.join("metadata.json")).expect("mkdir");
    check(&job, &dir, true, 1, Some(Reason::CorruptMetadata));
}

#[test]
fn metadata_value_is_read_whole_or_not_at_all() {
    let (_p, job) = fixture();
    let dir = support::write_complete_variant(&job.layout, &job.identity, 3);
    edit_metadata(&dir, |m| m["kept_by_writers"] = "yes".into());
    let value = completion::read_metadata_value(&OsFs, &dir).expect("metadata value");
    assert_eq!(value["status"], "completed");
    assert_eq!(value["variant"], 3);
    assert_eq!(value["kept_by_writers"], "yes");
    std::fs::write(dir.join("metadata.json"), b"{ torn").expect("tear");
    assert_eq!(completion::read_metadata_value(&OsFs, &dir), None);
    std::fs::remove_file(dir.join("metadata.json")).expect("rm");
    assert_eq!(completion::read_metadata_value(&OsFs, &dir), None);
}

#[test]
fn a_variant_moved_under_another_identity_is_not_complete() {
    let (_p, job) = fixture();
    let dir = support::write_complete_variant(&job.layout, &job.identity, 2);
    check(&job, &dir, false, 2, None);
    // The same bytes under another identity's path: its metadata renders elsewhere. Without an
    // expected identity (status over all of OUT) only the path check can tell.
    let other = trainctl::paths::Identity {
        spec_fp: "ffffffffffffffff".into(),
        ..job.identity.clone()
    };
    let moved = job.layout.variant_dir(&other, 2).expect("dir");
    support::copy_tree(&dir, &moved);
    check(
        &job,
        &moved,
        false,
        2,
        Some(Reason::IdentityMismatch("path".into())),
    );
    // And a storage env the metadata cannot even name.
    edit_metadata(&dir, |m| m["storage_env"] = "mars".into());
    check(
        &job,
        &dir,
        false,
        2,
        Some(Reason::IdentityMismatch("storage_env".into())),
    );
}

#[test]
fn every_identity_field_is_compared_when_the_identity_is_known() {
    for (field, value) in [
        ("storage_env", "colab"),
        ("exec_fp", "0000000000000000"),
        ("spec_fp", "0000000000000000"),
        ("model", "other"),
    ] {
        let (_p, job) = fixture();
        let dir = support::write_complete_variant(&job.layout, &job.identity, 4);
        edit_metadata(&dir, |m| m[field] = value.into());
        check(
            &job,
            &dir,
            true,
            4,
            Some(Reason::IdentityMismatch(field.into())),
        );
    }
}

/// A checkpoint with its weights sharded: `model.safetensors.index.json` names the shards.
fn shard(dir: &Path, weight_map: serde_json::Value, shards: &[&str]) -> PathBuf {
    let ckpt = dir.join("checkpoint");
    std::fs::remove_file(ckpt.join("model.safetensors")).expect("rm weights");
    // The manifest must not list the removed file.
    edit_metadata(dir, |m| {
        let manifest = m["manifest"].as_array_mut().expect("manifest");
        manifest.retain(|e| e["path"] != "checkpoint/model.safetensors");
    });
    for s in shards {
        std::fs::write(ckpt.join(s), b"shard").expect("shard");
    }
    let index = ckpt.join("model.safetensors.index.json");
    let doc = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    let index_bytes = serde_json::to_vec(&doc).expect("json");
    std::fs::write(&index, &index_bytes).expect("index");
    // As a training would: the manifest covers every file of the checkpoint dir.
    let mut files: Vec<(String, Vec<u8>)> = shards
        .iter()
        .map(|s| (format!("checkpoint/{s}"), b"shard".to_vec()))
        .collect();
    files.push((
        "checkpoint/model.safetensors.index.json".into(),
        index_bytes,
    ));
    edit_metadata(dir, |m| {
        let manifest = m["manifest"].as_array_mut().expect("manifest");
        for (path, bytes) in &files {
            manifest.push(serde_json::json!({
                "path": path,
                "size": bytes.len(),
                "sha256": trainctl::identity::sha256_hex(bytes),
            }));
        }
    });
    index
}

#[test]
fn sharded_checkpoints_need_every_shard_inside_the_checkpoint() {
    let invalid = |f: &str| Some(Reason::CheckpointInvalid(f.into()));
    let cases: Vec<(serde_json::Value, Vec<&str>, Option<Reason>)> = vec![
        (
            serde_json::json!({"a": "model-1.safetensors", "b": "model-2.safetensors"}),
            vec!["model-1.safetensors", "model-2.safetensors"],
            None,
        ),
        (
            serde_json::json!({"a": "model-1.safetensors", "b": "model-2.safetensors"}),
            vec!["model-1.safetensors"],
            invalid("model-2.safetensors"),
        ),
        (
            serde_json::json!({"a": "../escape.safetensors"}),
            vec![],
            invalid("../escape.safetensors"),
        ),
        (
            serde_json::json!({}),
            vec![],
            invalid("model.safetensors.index.json"),
        ),
        (
            serde_json::json!({"a": 7}),
            vec![],
            invalid("model.safetensors.index.json"),
        ),
    ];
    for (map, shards, want) in cases {
        let (_p, job) = fixture();
        let dir = support::write_complete_variant(&job.layout, &job.identity, 1);
        shard(&dir, map.clone(), &shards);
        check(&job, &dir, true, 1, want.clone());
        let labels = completion::check_checkpoint(&OsFs, &dir.join("checkpoint"));
        assert_eq!(labels.is_ok(), want.is_none(), "{map}");
    }
    // An index that is not JSON is invalid by name; no index and no weights: "weights".
    let (_p, job) = fixture();
    let dir = support::write_complete_variant(&job.layout, &job.identity, 1);
    let index = shard(&dir, serde_json::json!({}), &[]);
    std::fs::write(&index, b"not json").expect("garble");
    check(&job, &dir, true, 1, invalid("model.safetensors.index.json"));
    std::fs::remove_file(&index).expect("rm index");
    check(&job, &dir, true, 1, invalid("weights"));
}

#[test]
fn label_maps_must_be_inverse_dense_and_non_empty() {
    let map = |id2label: serde_json::Value, label2id: serde_json::Value| {
        completion::label_map(&serde_json::json!({"id2label": id2label, "label2id": label2id}))
    };
    let ok = map(
        serde_json::json!({"0": "O", "1": "NAME"}),
        serde_json::json!({"O": 0, "NAME": 1}),
    )
    .expect("a valid map");
    assert_eq!(
        ok.into_iter().collect::<Vec<_>>(),
        vec![(0, "O".to_string()), (1, "NAME".to_string())]
    );
    for (id2label, label2id) in [
        (serde_json::json!({}), serde_json::json!({})),
        (
            serde_json::json!({"0": "O"}),
            serde_json::json!({"O": 0, "NAME": 1}),
        ),
        (
            serde_json::json!({"0": "O", "2": "NAME"}),
            serde_json::json!({"O": 0, "NAME": 2}),
        ),
        (
            serde_json::json!({"1": "O", "2": "NAME"}),
            serde_json::json!({"O": 1, "NAME": 2}),
        ),
        (
            serde_json::json!({"0": "O", "1": "NAME"}),
            serde_json::json!({"O": 1, "NAME": 0}),
        ),
        (serde_json::json!({"x": "O"}), serde_json::json!({"O": 0})),
    ] {
        assert_eq!(
            map(id2label.clone(), label2id.clone()),
            None,
            "{id2label} / {label2id}"
        );
    }
    assert_eq!(
        completion::label_map(&serde_json::json!({"id2label": {"0": "O"}})),
        None
    );
}

#[test]
fn manifest_paths_are_plain_relative_files() {
    for (path, plain) in [
        ("checkpoint/model.safetensors", true),
        ("metrics.json", true),
        ("", false),
        ("../x", false),
        ("/etc/passwd", false),
        ("./x", false),
        ("checkpoint/../metrics.json", false),
    ] {
        assert_eq!(completion::is_plain_relative(path), plain, "{path:?}");
    }
    let (_p, job) = fixture();
    let dir = support::write_complete_variant(&job.layout, &job.identity, 1);
    // A manifest entry that names a directory, or climbs out of the variant dir.
    for bad in ["checkpoint", "../v1/metrics.json"] {
        edit_metadata(&dir, |m| {
            m["manifest"]
                .as_array_mut()
                .expect("manifest")
                .push(serde_json::json!({"path": bad, "size": 4096, "sha256": "0"}));
        });
        check(
            &job,
            &dir,
            true,
            1,
            Some(Reason::ManifestMismatch(bad.into())),
        );
        edit_metadata(&dir, |m| {
            m["manifest"].as_array_mut().expect("manifest").pop();
        });
    }
    edit_metadata(&dir, |m| m["manifest"] = serde_json::json!([]));
    check(
        &job,
        &dir,
        true,
        1,
        Some(Reason::ManifestMismatch("<empty manifest>".into())),
    );
}

#[test]
fn metrics_must_hold_the_recorded_objective_as_a_number() {
    let (_p, job) = fixture();
    let dir = support::write_complete_variant(&job.layout, &job.identity, 1);
    let metrics = dir.join("metrics.json");
    // The objective recorded in metadata, not the default, is the one looked up.
    edit_metadata(&dir, |m| m["objective_metric"] = "loss".into());
    check(&job, &dir, true, 1, None);
    edit_metadata(&dir, |m| m["objective_metric"] = "accuracy".into());
    check(
        &job,
        &dir,
        true,
        1,
        Some(Reason::ObjectiveMissing("accuracy".into())),
    );
    edit_metadata(&dir, |m| m["objective_metric"] = serde_json::Value::Null);
    check(&job, &dir, true, 1, None);
    std::fs::write(&metrics, br#"{"macro-f1": "0.9"}"#).expect("metrics");
    check(
        &job,
        &dir,
        true,
        1,
        Some(Reason::ObjectiveMissing("macro-f1".into())),
    );
    // Unreadable (a directory), not missing.
    std::fs::remove_file(&metrics).expect("rm");
    std::fs::create_dir(&metrics).expect("mkdir");
    check(&job, &dir, true, 1, Some(Reason::MetricsInvalid));
}

#[test]
fn reasons_render_as_their_machine_readable_names() {
    let cases = [
        (Reason::NoMetadata, "no_metadata"),
        (Reason::CheckpointMissing, "checkpoint_missing"),
        (
            Reason::IdentityMismatch("path".into()),
            "identity_mismatch:path",
        ),
        (
            Reason::ObjectiveMissing("loss".into()),
            "objective_missing:loss",
        ),
    ];
    for (reason, text) in cases {
        assert_eq!(reason.to_string(), text);
        assert_eq!(
            Completion::Incomplete(reason.clone()).reason(),
            Some(&reason)
        );
        assert!(!Completion::Incomplete(reason).is_complete());
    }
}
