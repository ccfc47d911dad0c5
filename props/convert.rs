//! The conversion hand-off (docs/contract.md, "Source, checkpoint and conversion") end to end,
//! through the real binary on real temp dirs: the built-in bundle and `predict`, reuse, conv_fp and
//! the real variant in the output path, refusals before anything is written, an external
//! `conversion.command`, and concurrent converts of one parent.

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::Project;

fn json_run(project: &Project, args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = project.run_env(&all, env);
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("{args:?}: stdout is not JSON ({e}): {stdout}\nstderr: {stderr}")
    });
    (code, doc)
}

fn train(project: &Project, overrides: &[&str]) -> Value {
    let mut args = Vec::new();
    for o in overrides {
        args.push("-o");
        args.push(*o);
    }
    args.push("train");
    let (code, doc) = json_run(project, &args, &[]);
    assert_eq!(code, 0, "train failed: {doc}");
    doc
}

fn convert(project: &Project, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["convert"];
    all.extend_from_slice(args);
    json_run(project, &all, &[])
}

fn error_of(doc: &Value) -> (String, String) {
    (
        doc["error"]["kind"].as_str().unwrap_or("").to_string(),
        doc["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

/// Asserts that no file changed under the project; new empty directories are allowed (a
/// failed convert may leave the empty parents of its output path, docs/contract.md).
fn assert_no_file_changed(project: &Project, before: &[(PathBuf, Option<Vec<u8>>)], ctx: &str) {
    let after = support::snapshot(project.root());
    let changed = support::changed(before, &after);
    // A new file shows up as its own path; directories themselves carry no bytes.
    let bad: Vec<&PathBuf> = changed.iter().filter(|p| !p.is_dir()).collect();
    assert!(bad.is_empty(), "{ctx}: files changed: {bad:?}");
}

fn sha256(bytes: &[u8]) -> String {
    trainctl::identity::sha256_hex(bytes)
}

#[test]
fn convert_latest_writes_a_verified_bundle_that_predicts_and_is_then_reused() {
    let project = Project::new();
    let trained = train(&project, &[]);
    let (code, doc) = convert(&project, &["--latest"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["decision"], "new");
    let out = PathBuf::from(doc["output_dir"].as_str().unwrap());
    let conv = doc["conv_fp"].as_str().unwrap();
    let spec8 = &trained["spec_fp"].as_str().unwrap()[..8];
    let exec8 = &trained["exec_fp"].as_str().unwrap()[..8];
    let want_tail = format!("spec-{spec8}_exec-{exec8}/v1/conv-{}", &conv[..8]);
    assert!(
        out.ends_with(&want_tail)
            && out.starts_with(project.root().join("outputs/conversion/local/builtin")),
        "output dir {} does not end in {want_tail}",
        out.display()
    );
    // The manifest lists exactly the bundle's files, with their real sizes and digests.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let mut names: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "model.safetensors"]);
    for f in manifest["files"].as_array().unwrap() {
        let bytes = std::fs::read(out.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["size"].as_u64(), Some(bytes.len() as u64));
        assert_eq!(f["sha256"].as_str(), Some(sha256(&bytes).as_str()));
    }
    // The weights are the parent's final weights, byte for byte.
    let parent = PathBuf::from(trained["output_dir"].as_str().unwrap());
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(parent.join("checkpoint/model.safetensors")).unwrap()
    );
    // Lineage.
    let tags = &manifest["tags"];
    assert_eq!(tags["code.conv_fp"], conv);
    assert_eq!(tags["code.lineage.parent_spec_fp"], trained["spec_fp"]);
    assert_eq!(tags["code.lineage.parent_exec_fp"], trained["exec_fp"]);
    assert_eq!(tags["code.lineage.parent_variant"], "1");
    assert_eq!(
        tags["code.parent_training_id"],
        format!("spec-{spec8}_exec-{exec8}/v1")
    );
    assert_eq!(manifest["parent"]["run_name"], trained["run_name"]);
    assert_eq!(manifest["converter"]["converter"], "builtin-bundle/1");

    // The bundle is usable: the first held-out test record's entities, exactly.
    let test: Vec<Value> = serde_json::from_slice(
        &std::fs::read(
            project
                .root()
                .join("fixtures/datasets/resume_tiny/test.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let text = test[0]["text"].as_str().unwrap();
    let (code, pred) = json_run(
        &project,
        &["predict", "--bundle", out.to_str().unwrap(), text],
        &[],
    );
    assert_eq!(code, 0, "{pred}");
    let got: Vec<(u64, u64, String)> = pred["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap(),
                e["end"].as_u64().unwrap(),
                e["label"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let gold: Vec<(u64, u64, String)> = test[0]["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a[0].as_u64().unwrap(),
                a[1].as_u64().unwrap(),
                a[2].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, gold, "predict on held-out text `{text}`");

    // Converting again reuses the bundle and writes nothing.
    let before = support::snapshot(project.root());
    let (code, again) = convert(&project, &["--latest"]);
    assert_eq!(
        (code, again["decision"].as_str()),
        (0, Some("reuse")),
        "{again}"
    );
    assert_eq!(again["output_dir"], doc["output_dir"]);
    assert!(support::changed(&before, &support::snapshot(project.root())).is_empty());

    // A damaged bundle is refused by predict and is not silently reused by convert.
    let weights = out.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&weights, &bytes).unwrap();
    let (code, pred) = json_run(
        &project,
        &["predict", "--bundle", out.to_str().unwrap(), text],
        &[],
    );
    assert_eq!(code, 3, "{pred}");
    assert!(
        error_of(&pred)
            .1
            .contains("model.safetensors differs from the manifest"),
        "{pred}"
    );
    let before = support::snapshot(project.root());
    let (code, doc) = convert(&project, &["--latest"]);
    assert_eq!(code, 5, "{doc}");
    let (kind, message) = error_of(&doc);
    assert_eq!(kind, "conversion_failed");
    assert!(message.contains("is not a valid conversion"), "{message}");
    assert!(support::changed(&before, &support::snapshot(project.root())).is_empty());
}

#[test]
fn the_output_path_carries_the_real_variant_and_conv_fp_follows_conversion_yaml() {
    let project = Project::new();
    let v1 = train(&project, &[]);
    let v2 = train(&project, &["run.mode=force_new"]);
    assert_eq!(
        (v1["variant"].as_u64(), v2["variant"].as_u64()),
        (Some(1), Some(2))
    );
    let (code, from_v1) = convert(&project, &["--from", v1["output_dir"].as_str().unwrap()]);
    assert_eq!(code, 0, "{from_v1}");
    let (code, latest) = convert(&project, &["--latest"]);
    assert_eq!(code, 0, "{latest}");
    let dir = |d: &Value| PathBuf::from(d["output_dir"].as_str().unwrap());
    assert_eq!(dir(&from_v1).parent().unwrap().file_name().unwrap(), "v1");
    assert_eq!(
        dir(&latest).parent().unwrap().file_name().unwrap(),
        "v2",
        "--latest is the newest complete run"
    );
    assert_ne!(
        from_v1["conv_fp"], latest["conv_fp"],
        "conv_fp covers the parent variant"
    );
    // A relative --from works from the project root.
    let rel = Path::new(v1["output_dir"].as_str().unwrap())
        .strip_prefix(project.root())
        .unwrap()
        .to_path_buf();
    let (code, relative) = convert(&project, &["--from", rel.to_str().unwrap()]);
    assert_eq!(
        (code, relative["decision"].as_str()),
        (0, Some("reuse")),
        "{relative}"
    );
    // Another conversion config is another conv_fp and another output dir, same parent.
    let (code, other) = convert(
        &project,
        &[
            "-o",
            "conversion:onnx.opset_version=17",
            "--from",
            v1["output_dir"].as_str().unwrap(),
        ],
    );
    assert_eq!(
        (code, other["decision"].as_str()),
        (0, Some("new")),
        "{other}"
    );
    assert_ne!(other["conv_fp"], from_v1["conv_fp"]);
    assert_eq!(dir(&other).parent(), dir(&from_v1).parent());
}

#[test]
fn incomplete_or_mismatched_parents_are_refused_before_anything_is_written() {
    let project = Project::new();
    let before = support::snapshot(project.root());
    let (code, doc) = convert(&project, &["--latest"]);
    assert_eq!(
        (code, error_of(&doc).0.as_str()),
        (3, "parent_not_found"),
        "{doc}"
    );
    let (code, doc) = convert(&project, &["--from", "outputs/final_training/nope/v1"]);
    assert_eq!(
        (code, error_of(&doc).0.as_str()),
        (3, "parent_not_found"),
        "{doc}"
    );
    assert_no_file_changed(&project, &before, "nothing trained");

    let trained = train(&project, &[]);
    let v1 = PathBuf::from(trained["output_dir"].as_str().unwrap());
    // Not a variant dir at all.
    let (code, doc) = convert(
        &project,
        &["--from", v1.parent().unwrap().to_str().unwrap()],
    );
    assert_eq!((code, error_of(&doc).0.as_str()), (2, "usage"), "{doc}");
    assert!(
        error_of(&doc).1.contains("spec-<spec8>_exec-<exec8>/v<N>"),
        "{doc}"
    );
    // A copy under another variant number: the path and the metadata disagree.
    let v7 = v1.parent().unwrap().join("v7");
    support::copy_tree(&v1, &v7);
    let before = support::snapshot(project.root());
    let (code, doc) = convert(&project, &["--from", v7.to_str().unwrap()]);
    let (kind, message) = error_of(&doc);
    assert_eq!((code, kind.as_str()), (3, "parent_incomplete"), "{doc}");
    assert!(message.contains("identity_mismatch:variant"), "{message}");
    assert_no_file_changed(&project, &before, "v7 copy");
    std::fs::remove_dir_all(&v7).unwrap();
    // Same-size damage inside the checkpoint: only the deep (sha256) check sees it.
    let weights = v1.join("checkpoint/model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    std::fs::write(&weights, &bad).unwrap();
    let before = support::snapshot(project.root());
    let (code, doc) = convert(&project, &["--latest"]);
    // --latest itself only checks sizes, so it still finds v1; convert's deep check refuses it.
    let (kind, message) = error_of(&doc);
    assert_eq!((code, kind.as_str()), (3, "parent_incomplete"), "{doc}");
    assert!(message.contains("manifest_mismatch"), "{message}");
    assert_no_file_changed(&project, &before, "damaged checkpoint");
    std::fs::write(&weights, &good).unwrap();
    // A run that is not completed.
    let meta_path = v1.join("metadata.json");
    let meta = std::fs::read(&meta_path).unwrap();
    let mut running: Value = serde_json::from_slice(&meta).unwrap();
    running["status"] = "failed".into();
    std::fs::write(&meta_path, serde_json::to_vec(&running).unwrap()).unwrap();
    let before = support::snapshot(project.root());
    let (code, doc) = convert(&project, &["--from", v1.to_str().unwrap()]);
    let (kind, message) = error_of(&doc);
    assert_eq!((code, kind.as_str()), (3, "parent_incomplete"), "{doc}");
    assert!(message.contains("(failed)"), "{message}");
    assert_no_file_changed(&project, &before, "failed parent");
    std::fs::write(&meta_path, &meta).unwrap();
    let (code, doc) = convert(&project, &["--from", v1.to_str().unwrap()]);
    assert_eq!(code, 0, "restored parent converts: {doc}");
}

#[test]
fn missing_converter_inputs_are_a_clear_error_before_anything_is_written() {
    // The fixture trainer's checkpoint has no built-in feature config.
    let project = Project::new();
    project.use_fixture_trainer();
    train(&project, &[]);
    let before = support::snapshot(project.root());
    let (code, doc) = convert(&project, &["--latest"]);
    let (kind, message) = error_of(&doc);
    assert_eq!(
        (code, kind.as_str()),
        (3, "conversion_artifacts_missing"),
        "{doc}"
    );
    assert!(
        message.contains("checkpoint/config.json") && message.contains("features"),
        "{message}"
    );
    assert_no_file_changed(&project, &before, "artifacts missing");
    assert!(
        !project.root().join("outputs/conversion").exists(),
        "nothing was created"
    );
}

fn with_external_converter(project: &Project) {
    let path = project.config("conversion.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "command: null",
        "command: [python3, fixtures/converter/fake_converter.py]",
        1,
    );
    assert!(
        text.contains("fake_converter.py"),
        "conversion.yaml lost its command key"
    );
    std::fs::write(&path, text).unwrap();
}

#[test]
fn conversion_command_runs_an_external_converter_and_its_failure_leaves_no_output() {
    let project = Project::new();
    with_external_converter(&project);
    let trained = train(&project, &[]);
    let fail = [("FAKE_CONVERTER_FAIL", "1")];
    let before = support::snapshot(project.root());
    let (code, doc) = json_run(&project, &["convert", "--latest"], &fail);
    let (kind, message) = error_of(&doc);
    assert_eq!((code, kind.as_str()), (5, "conversion_failed"), "{doc}");
    assert!(
        message.contains("injected failure"),
        "the converter's log is quoted: {message}"
    );
    assert_no_file_changed(&project, &before, "failed converter");
    let (code, doc) = json_run(
        &project,
        &["convert", "--latest"],
        &[("FAKE_CONVERTER_EMPTY", "1")],
    );
    assert_eq!(
        (code, error_of(&doc).0.as_str()),
        (5, "conversion_failed"),
        "{doc}"
    );
    assert!(error_of(&doc).1.contains("wrote nothing"), "{doc}");
    assert_no_file_changed(&project, &before, "empty converter");

    let (code, doc) = json_run(&project, &["convert", "--latest"], &[]);
    assert_eq!((code, doc["decision"].as_str()), (0, Some("new")), "{doc}");
    let out = PathBuf::from(doc["output_dir"].as_str().unwrap());
    let onnx = std::fs::read(out.join("model_none.onnx")).unwrap();
    let parent = PathBuf::from(trained["output_dir"].as_str().unwrap());
    let weights = std::fs::read(parent.join("checkpoint/model.safetensors")).unwrap();
    assert!(onnx.starts_with(b"FAKEONNX") && onnx.ends_with(&weights));
    let files: Vec<&str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"model_none.onnx"), "{files:?}");
    assert_eq!(
        doc["converter"]["converter"],
        "python3 fixtures/converter/fake_converter.py"
    );
    // The built-in converter and the external one are different conversions.
    let builtin = Project::new();
    train(&builtin, &[]);
    let (_, b) = json_run(&builtin, &["convert", "--latest"], &[]);
    assert_ne!(
        b["conv_fp"], doc["conv_fp"],
        "conv_fp covers conversion.command"
    );
}

#[test]
fn concurrent_converts_of_one_parent_publish_one_bundle() {
    let project = Project::new();
    train(&project, &[]);
    let children: Vec<_> = (0..6)
        .map(|_| {
            project
                .command(&["--json", "convert", "--latest"], &[])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let docs: Vec<Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let new = docs.iter().filter(|d| d["decision"] == "new").count();
    assert_eq!(new, 1, "exactly one convert publishes: {docs:?}");
    assert!(docs
        .iter()
        .all(|d| d["output_dir"] == docs[0]["output_dir"]));
    let holder = PathBuf::from(docs[0]["output_dir"].as_str().unwrap());
    let entries: Vec<String> = std::fs::read_dir(holder.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 1, "no staged debris left: {entries:?}");
}
