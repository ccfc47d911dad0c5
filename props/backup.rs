//! Drive backup (docs/contract.md, "Environments and storage") on real temp dirs: colab mirrors
//! complete runs and caches to the Drive mount with a verified copy and an atomic swap; an
//! interrupted backup leaves the previous backup intact; other environments and OUT-on-Drive never
//! copy.

use crate::support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trainctl::backup::{backup_dir, no_fault};

/// `{relative path: bytes}` of a tree (temp debris included: the test looks at it).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    support::snapshot(dir)
        .into_iter()
        .filter_map(|(p, b)| Some((p.strip_prefix(dir).unwrap().to_path_buf(), b?)))
        .collect()
}

fn colab(project: &support::Project, drive: &Path) -> Vec<String> {
    support::env_args("colab", &project.root().join("outputs"), drive)
}

fn run(project: &support::Project, pre: &[String], args: &[&str]) -> (i32, Value) {
    let mut all: Vec<&str> = vec!["--json"];
    all.extend(pre.iter().map(String::as_str));
    all.extend_from_slice(args);
    let (code, stdout, stderr) = project.run(&all);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{all:?}: not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, doc)
}

#[test]
fn colab_train_mirrors_the_run_and_its_cache_to_drive_verified() {
    let project = support::Project::new();
    let drive = project.root().join("drive");
    let pre = colab(&project, &drive);
    let (code, doc) = run(&project, &pre, &["-o", "training.epochs=1", "train"]);
    assert_eq!(code, 0, "{doc}");
    let units = doc["backup"]["units"].as_array().expect("a backup ran");
    assert_eq!(
        units.len(),
        2,
        "the variant and the final_training cache: {doc}"
    );
    let variant = PathBuf::from(doc["output_dir"].as_str().unwrap());
    let rel = variant.strip_prefix(project.root()).unwrap();
    let mirrored = drive.join("MyDrive/resume-ner").join(rel);
    assert_eq!(units[0]["target"], mirrored.display().to_string());
    assert_eq!(tree(&variant), tree(&mirrored), "byte-identical mirror");
    let cache = project.root().join("outputs/cache/final_training");
    assert_eq!(
        tree(&cache),
        tree(&drive.join("MyDrive/resume-ner/outputs/cache/final_training"))
    );
    // A reuse does not back up; `trainctl backup` finds everything up to date.
    let (code, doc) = run(&project, &pre, &["-o", "training.epochs=1", "train"]);
    assert_eq!(
        (code, doc["decision"].as_str()),
        (0, Some("reuse")),
        "{doc}"
    );
    assert!(doc["backup"].is_null(), "{doc}");
    let (code, doc) = run(&project, &pre, &["backup"]);
    assert_eq!(code, 0, "{doc}");
    let outcomes: Vec<&str> = doc["backup"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["outcome"].as_str().unwrap())
        .collect();
    assert!(
        !outcomes.is_empty() && outcomes.iter().all(|o| *o == "up_to_date"),
        "{doc}"
    );
}

#[test]
fn an_interrupted_backup_leaves_the_previous_backup_intact() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("out/final_training/v1");
    let target = dir.path().join("drive/MyDrive/p/out/final_training/v1");
    for (name, text) in [
        ("a.json", "1"),
        ("checkpoint/w.bin", "weights-1"),
        ("z.txt", "z"),
    ] {
        let p = src.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let first = backup_dir(&src, &target, &no_fault).unwrap();
    assert_eq!((first.outcome, first.files), ("copied", 3));
    let previous = tree(&target);
    assert_eq!(previous, tree(&src));
    // The source changes; the next backup dies after copying one file.
    std::fs::write(src.join("checkpoint/w.bin"), "weights-2").unwrap();
    std::fs::write(src.join("new.txt"), "new").unwrap();
    for fail_at in ["checkpoint/w.bin", "new.txt", "z.txt"] {
        let fault = |name: &str| {
            if name == fail_at {
                Err(std::io::Error::other("injected: drive went away"))
            } else {
                Ok(())
            }
        };
        let err = backup_dir(&src, &target, &fault).unwrap_err();
        assert_eq!(err.kind.as_str(), "backup_failed");
        assert!(err.message.contains("injected"), "{}", err.message);
        assert_eq!(
            tree(&target),
            previous,
            "failing at {fail_at}: the previous backup is intact"
        );
    }
    // The next backup completes, replaces the old one and removes the debris.
    let done = backup_dir(&src, &target, &no_fault).unwrap();
    assert_eq!((done.outcome, done.files), ("copied", 4));
    assert_eq!(tree(&target), tree(&src));
    let siblings: Vec<String> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(siblings, ["v1"], "no temp sibling left");
    assert_eq!(
        backup_dir(&src, &target, &no_fault).unwrap().outcome,
        "up_to_date"
    );
}

#[test]
fn only_colab_backs_up_and_never_copies_what_is_already_on_drive() {
    let project = support::Project::new();
    let drive = project.root().join("drive");
    for env in ["local", "kaggle", "azureml"] {
        let pre = support::env_args(env, &project.root().join("outputs"), &drive);
        let (code, doc) = run(&project, &pre, &["-o", "training.epochs=1", "train"]);
        assert_eq!(code, 0, "{env}: {doc}");
        assert!(
            doc["backup"]["skipped"]
                .as_str()
                .unwrap_or("")
                .contains("colab only"),
            "{env}: {doc}"
        );
        let (code, doc) = run(&project, &pre, &["backup"]);
        assert_eq!(code, 0, "{doc}");
        assert!(doc["backup"]["units"].as_array().unwrap().is_empty());
    }
    assert!(!drive.exists(), "nothing was written to the Drive mount");
    // Colab with OUT on the Drive mount itself: nothing to mirror.
    let on_drive = drive.join("MyDrive/resume-ner/outputs");
    let mut pre = support::env_args("colab", &on_drive, &drive);
    // A mirror elsewhere on the mount, so that a wrong copy would show up as stray files.
    pre.extend([
        "-o".to_string(),
        "paths:drive.backup_base_dir=mirror".to_string(),
    ]);
    let (code, doc) = run(&project, &pre, &["-o", "training.epochs=1", "train"]);
    assert_eq!(code, 0, "{doc}");
    assert!(
        doc["backup"]["skipped"]
            .as_str()
            .unwrap()
            .contains("already under the Drive mount"),
        "{doc}"
    );
    // Nothing was copied anywhere on the mount: every file there is OUT's own.
    let stray: Vec<PathBuf> = support::snapshot(&drive)
        .into_iter()
        .filter(|(p, bytes)| bytes.is_some() && !p.starts_with(&on_drive))
        .map(|(p, _)| p)
        .collect();
    assert!(stray.is_empty(), "copied onto the mount: {stray:?}");
    let (code, doc) = run(&project, &pre, &["backup"]);
    assert_eq!(code, 0, "{doc}");
    assert!(
        doc["backup"]["units"].as_array().unwrap().is_empty(),
        "{doc}"
    );
}
