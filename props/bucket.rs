//! OUT in a bucket against a real S3-compatible server (moto's server mode on 127.0.0.1,
//! `props/support/moto.rs`): the whole program through the binary, as users on many machines
//! run it (docs/contract.md, "OUT in an object store").

use crate::support::{self, moto::Moto};
use serde_json::Value;
use std::time::{Duration, Instant};
use trainctl::store::objects::{ObjError, Objects, PutMode};

fn run(
    project: &support::Project,
    moto: &Moto,
    out: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, Value) {
    let mut all = vec![
        "--json".to_string(),
        "-o".into(),
        format!("paths:base.outputs={out}"),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let vars = moto.env();
    let mut envs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.extend_from_slice(env);
    let (code, stdout, stderr) = project.run_env(&all, &envs);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, doc)
}

fn keys(moto: &Moto, prefix: &str) -> Vec<String> {
    moto.objects()
        .list(prefix)
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[test]
fn the_server_honours_create_if_absent() {
    let Some(moto) = Moto::start("the_server_honours_create_if_absent", "cond") else {
        return;
    };
    let store = moto.objects();
    store
        .put("a/x", b"1", PutMode::Create)
        .expect("first create");
    assert_eq!(
        store.put("a/x", b"2", PutMode::Create),
        Err(ObjError::Exists),
        "a second create-if-absent must be refused (If-None-Match: *)"
    );
    assert_eq!(store.get("a/x").expect("get"), b"1");
    store
        .put("a/x", b"3", PutMode::Overwrite)
        .expect("overwrite");
    assert_eq!(store.get("a/x").expect("get"), b"3");
    let listing = store.list_dir("a/").expect("list_dir");
    assert_eq!(listing.objects.len(), 1);
    assert_eq!(store.get("a/missing"), Err(ObjError::NotFound));
}

/// The "done when": the whole pipeline against the bucket, then a second run that
/// reuses every step; train, `status --deep`, `convert --latest`, `select` and `cache check`
/// read from the bucket, and nothing lands on the local disk under a `s3:` directory.
#[test]
fn pipeline_train_status_convert_and_cache_check_against_a_bucket() {
    let Some(moto) = Moto::start("pipeline_against_a_bucket", "pipe") else {
        return;
    };
    let project = support::Project::new();
    let out = moto.url("out");
    let (code, first) = run(&project, &moto, &out, &["pipeline"], &[]);
    assert_eq!(code, 0, "{first}");
    let (code, second) = run(&project, &moto, &out, &["pipeline"], &[]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(
        second["reused_everything"], true,
        "the second pipeline run redid a step: {second}"
    );
    let (code, train) = run(&project, &moto, &out, &["train"], &[]);
    assert_eq!(code, 0, "{train}");
    // Tracking (the file store under the project) got the run's artifacts from the bucket.
    assert!(
        !train.to_string().contains("were not uploaded"),
        "tracking could not read the artifacts from the bucket: {train}"
    );
    let artifacts = support::snapshot(&project.root().join("mlruns"));
    assert!(
        artifacts
            .iter()
            .any(|(p, _)| p.ends_with("artifacts/metrics.json")),
        "no tracked artifact"
    );
    let variant_dir = train["output_dir"]
        .as_str()
        .expect("output_dir")
        .to_string();
    assert!(variant_dir.starts_with("s3://pipe/out/"), "{train}");
    let (code, status) = run(&project, &moto, &out, &["status", "--deep"], &[]);
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["storage"]["profile"], "object", "{status}");
    assert!(
        status["variants"]
            .as_array()
            .expect("variants")
            .iter()
            .all(|v| v["state"] == "complete"),
        "{status}"
    );
    // Plain `train` trains without the pipeline's best-configuration layer: a model of its
    // own, converted once, then reused.
    let (code, convert) = run(&project, &moto, &out, &["convert", "--latest"], &[]);
    assert_eq!(code, 0, "{convert}");
    assert_eq!(convert["decision"], "new", "{convert}");
    assert_eq!(
        convert["parent"]["dir"].as_str(),
        Some(variant_dir.as_str())
    );
    let (code, again) = run(&project, &moto, &out, &["convert", "--latest"], &[]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["decision"], "reuse", "{again}");
    let (code, check) = run(&project, &moto, &out, &["cache", "check"], &[]);
    assert_eq!(code, 0, "{check}");
    // Every complete variant is tracked already: a sync finds nothing to do, from the bucket.
    let (code, sync) = run(&project, &moto, &out, &["track", "sync"], &[]);
    assert_eq!(code, 0, "{sync}");
    // On colab, the Drive mirror is irrelevant with OUT in a bucket, and says so.
    let colab_out = format!("paths:env_overrides.colab.base.outputs={out}");
    let drive = format!(
        "paths:drive.mount_point={}",
        project.root().join("drive").display()
    );
    let (code, backup) = run(
        &project,
        &moto,
        &out,
        &["--env", "colab", "-o", &colab_out, "-o", &drive, "backup"],
        &[],
    );
    assert_eq!(code, 0, "{backup}");
    assert!(
        backup["backup"]["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("is a bucket")),
        "{backup}"
    );
    let objects = keys(&moto, "out/");
    assert!(
        objects.iter().any(|k| k.ends_with("/job.json")),
        "the job file was not uploaded beside the outputs"
    );
    assert!(objects
        .iter()
        .any(|k| k.ends_with("/checkpoint/model.safetensors")));
    assert!(objects.iter().any(|k| k.starts_with("out/cache/")));
    assert!(
        !project.root().join("s3:").exists(),
        "a local directory named s3: appeared"
    );
    assert!(
        !project.root().join(".trainctl-staging").exists(),
        "the local staging dir was left behind"
    );
}

#[test]
fn eight_force_new_starts_from_eight_hosts_get_eight_variants() {
    let Some(moto) = Moto::start("eight_force_new", "race") else {
        return;
    };
    let project = support::Project::new();
    project.shrink_dataset(40);
    let out = moto.url("out");
    let results: Vec<(i32, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (project, moto, out) = (&project, &moto, &out);
                s.spawn(move || {
                    let host = format!("host-{i}");
                    run(
                        project,
                        moto,
                        out,
                        &["-o", "run.mode=force_new", "train"],
                        &[("TRAINCTL_HOST_ID", host.as_str())],
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    let mut variants: Vec<u64> = results
        .iter()
        .map(|(code, doc)| {
            assert_eq!(*code, 0, "{doc}");
            assert_eq!(doc["decision"], "new", "{doc}");
            doc["variant"].as_u64().expect("variant")
        })
        .collect();
    variants.sort();
    assert_eq!(variants, (1..=8).collect::<Vec<u64>>());
    let (code, status) = run(&project, &moto, &out, &["status", "--deep"], &[]);
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["variants"].as_array().expect("variants").len(), 8);
    let (code, check) = run(&project, &moto, &out, &["cache", "check"], &[]);
    assert_eq!(code, 0, "{check}");
}

/// kill -9 of a training on host A; host B may not take it while A's heartbeat is fresh
/// (busy), and resumes it from A's last uploaded step checkpoint once the heartbeat is stale;
/// the weights equal an uninterrupted run's.
#[test]
fn kill_9_then_another_host_resumes_from_the_uploaded_step_checkpoint() {
    let Some(moto) = Moto::start("kill_9_then_resume_elsewhere", "kill") else {
        return;
    };
    let project = support::Project::new();
    project.use_fixture_trainer();
    let out = moto.url("out");
    let lease = [
        "-o",
        "final_training:lease.heartbeat_s=1",
        "-o",
        "final_training:lease.timeout_s=4",
    ];
    let vars = moto.env();
    let mut cmd = project.command(
        &[
            "--json",
            "-o",
            &format!("paths:base.outputs={out}"),
            lease[0],
            lease[1],
            lease[2],
            lease[3],
            "train",
        ],
        &[
            ("FAKE_TRAINER_SLEEP_MS", "40"),
            ("TRAINCTL_HOST_ID", "host-a"),
        ],
    );
    for (k, v) in &vars {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn train");
    let start = Instant::now();
    while !keys(&moto, "out/final_training/")
        .iter()
        .any(|k| k.contains("/checkpoints/step-") && k.ends_with("/trainer_state.json"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no step checkpoint reached the bucket"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();

    let mut args: Vec<&str> = lease.to_vec();
    args.extend(["-o", "run.mode=resume_if_incomplete", "train"]);
    let b = [("TRAINCTL_HOST_ID", "host-b")];
    let (code, early) = run(&project, &moto, &out, &args, &b);
    assert_eq!(
        code, 4,
        "host B took a lease whose heartbeat is fresh: {early}"
    );
    let start = Instant::now();
    let resumed = loop {
        std::thread::sleep(Duration::from_millis(500));
        let (code, doc) = run(&project, &moto, &out, &args, &b);
        if code == 0 {
            break doc;
        }
        assert_eq!(code, 4, "{doc}");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never stale: {doc}"
        );
    };
    assert_eq!(resumed["decision"], "resume", "{resumed}");
    assert_eq!(resumed["variant"], 1, "{resumed}");
    let dir = resumed["output_dir"].as_str().expect("dir").to_string();
    let store = moto.objects();
    let key_of = |path: &str| {
        path.strip_prefix("s3://kill/")
            .expect("in the bucket")
            .to_string()
    };
    let meta: Value = serde_json::from_slice(
        &store
            .get(&format!("{}/metadata.json", key_of(&dir)))
            .expect("metadata"),
    )
    .expect("json");
    assert!(
        meta["resumed_from"]
            .as_str()
            .is_some_and(|s| s.contains("/checkpoints/step-")),
        "the resume did not start from the uploaded step checkpoint: {meta}"
    );
    let (code, fresh) = run(
        &project,
        &moto,
        &out,
        &["-o", "run.mode=force_new", "train"],
        &[],
    );
    assert_eq!(code, 0, "{fresh}");
    let weights = |d: &str| {
        store
            .get(&format!("{}/checkpoint/model.safetensors", key_of(d)))
            .expect("weights")
    };
    assert_eq!(
        weights(&dir),
        weights(fresh["output_dir"].as_str().expect("dir")),
        "resumed weights differ from an uninterrupted run"
    );
}
