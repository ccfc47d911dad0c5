//! The environment matrix (docs/contract.md, "Environments and storage", "Tracking of final
//! training"; issue 7): how the storage env is detected from the platform's variables, and what
//! each of local, colab, kaggle and azureml gets — its own OUT, run names and tags, Drive backup on
//! colab only, and the tracking store (the AzureML workspace URI with credentials, the local file
//! store with a warning without them). Everything runs through the binary on temp dirs: the
//! platforms' absolute paths (`/content/...`, `/kaggle/working`, `/mnt/outputs`) are redirected by
//! `-o`.

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use trainctl::track::{FileTracker, Tracker};

/// Runs the binary with `--json`; `unset` variables are removed from its environment.
fn run(
    project: &support::Project,
    args: &[String],
    vars: &[(&str, &str)],
    unset: &[&str],
) -> (i32, Value, String) {
    let mut all = vec!["--json".to_string()];
    all.extend(args.iter().cloned());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut cmd = project.command(&refs, vars);
    for v in unset {
        cmd.env_remove(v);
    }
    let out = cmd.output().expect("run trainctl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{all:?}: not JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), doc, stderr)
}

use support::platform_out as out_of;

/// `-o` arguments redirecting every env's OUT and the Drive mount into `root`.
fn redirect(root: &Path) -> Vec<String> {
    support::platform_redirects(root, &root.join("content/drive"))
}

struct Detect {
    name: &'static str,
    flag: Option<&'static str>,
    vars: &'static [(&'static str, &'static str)],
    /// `Ok(storage env)` or `Err(error kind)`.
    expect: Result<&'static str, &'static str>,
}

const DETECT: &[Detect] = &[
    Detect {
        name: "nothing set is local",
        flag: None,
        vars: &[],
        expect: Ok("local"),
    },
    Detect {
        name: "COLAB_GPU",
        flag: None,
        vars: &[("COLAB_GPU", "1")],
        expect: Ok("colab"),
    },
    Detect {
        name: "COLAB_TPU",
        flag: None,
        vars: &[("COLAB_TPU", "grpc://x")],
        expect: Ok("colab"),
    },
    Detect {
        name: "COLAB_RELEASE_TAG",
        flag: None,
        vars: &[("COLAB_RELEASE_TAG", "release-colab_20260101")],
        expect: Ok("colab"),
    },
    Detect {
        name: "KAGGLE_KERNEL_RUN_TYPE",
        flag: None,
        vars: &[("KAGGLE_KERNEL_RUN_TYPE", "Interactive")],
        expect: Ok("kaggle"),
    },
    Detect {
        name: "KAGGLE_URL_BASE",
        flag: None,
        vars: &[("KAGGLE_URL_BASE", "https://www.kaggle.com")],
        expect: Ok("kaggle"),
    },
    Detect {
        name: "AZUREML_RUN_ID",
        flag: None,
        vars: &[("AZUREML_RUN_ID", "r-1")],
        expect: Ok("azureml"),
    },
    Detect {
        name: "AZUREML_EXPERIMENT_ID",
        flag: None,
        vars: &[("AZUREML_EXPERIMENT_ID", "e-1")],
        expect: Ok("azureml"),
    },
    Detect {
        name: "colab is checked before kaggle and azureml",
        flag: None,
        vars: &[
            ("AZUREML_RUN_ID", "r"),
            ("KAGGLE_URL_BASE", "u"),
            ("COLAB_GPU", "1"),
        ],
        expect: Ok("colab"),
    },
    Detect {
        name: "kaggle is checked before azureml",
        flag: None,
        vars: &[("AZUREML_RUN_ID", "r"), ("KAGGLE_KERNEL_RUN_TYPE", "Batch")],
        expect: Ok("kaggle"),
    },
    Detect {
        name: "--env wins over the variables",
        flag: Some("azureml"),
        vars: &[("COLAB_GPU", "1"), ("KAGGLE_URL_BASE", "u")],
        expect: Ok("azureml"),
    },
    Detect {
        name: "--env local",
        flag: Some("local"),
        vars: &[("COLAB_GPU", "1")],
        expect: Ok("local"),
    },
    Detect {
        name: "--env with a typo",
        flag: Some("kagle"),
        vars: &[],
        expect: Err("usage"),
    },
    Detect {
        name: "--env azure (upstream's name) is not ours",
        flag: Some("azure"),
        vars: &[],
        expect: Err("usage"),
    },
];

#[test]
fn the_storage_env_is_detected_from_the_platform_variables_and_env_wins() {
    let project = support::Project::new();
    let root = project.root();
    let mut failures = Vec::new();
    for row in DETECT {
        let mut args = redirect(root);
        if let Some(flag) = row.flag {
            args.extend(["--env".to_string(), flag.to_string()]);
        }
        args.push("plan".into());
        let (code, doc, stderr) = run(&project, &args, row.vars, &[]);
        let got = match (code, doc["error"]["kind"].as_str()) {
            (0, _) => Ok(doc["storage_env"].as_str().unwrap_or("?").to_string()),
            (_, Some(kind)) => Err(kind.to_string()),
            _ => Err(format!("exit {code}")),
        };
        let want = row.expect.map(str::to_string).map_err(str::to_string);
        if got != want {
            failures.push(format!(
                "{}: got {got:?}, want {want:?}\n{doc}\n{stderr}",
                row.name
            ));
            continue;
        }
        let Ok(env) = &got else {
            let message = doc["error"]["message"].as_str().unwrap_or("");
            if !message.contains("expected one of local, colab, kaggle, azureml") {
                failures.push(format!("{}: message lists no choices: {message}", row.name));
            }
            continue;
        };
        // The plan for that env: its OUT, its run name.
        let dir = PathBuf::from(doc["output_dir"].as_str().unwrap_or(""));
        let base = out_of(root, env).join("final_training").join(env);
        if !dir.starts_with(&base) {
            failures.push(format!(
                "{}: {} not under {}",
                row.name,
                dir.display(),
                base.display()
            ));
        }
        if !doc["run_name"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("{env}_builtin_final_training_"))
        {
            failures.push(format!("{}: run name {}", row.name, doc["run_name"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What a completed train on `env` must show.
struct EnvRun {
    env: &'static str,
    backs_up: bool,
}

const ENV_RUNS: &[EnvRun] = &[
    EnvRun {
        env: "local",
        backs_up: false,
    },
    EnvRun {
        env: "colab",
        backs_up: true,
    },
    EnvRun {
        env: "kaggle",
        backs_up: false,
    },
    EnvRun {
        env: "azureml",
        backs_up: false,
    },
];

fn metadata(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("metadata.json")).expect("metadata.json"))
        .expect("metadata parses")
}

#[test]
fn each_env_trains_into_its_own_out_with_its_names_tags_and_backup_rule() {
    let project = support::Project::new();
    let root = project.root();
    let drive = root.join("content/drive");
    let tracker =
        FileTracker::new(Arc::new(trainctl::fs::OsFs), root.join("mlruns")).expect("store");
    let mut dirs = Vec::new();
    let mut fingerprints = Vec::new();
    for row in ENV_RUNS {
        let env = row.env;
        let mut args = redirect(root);
        args.extend(["--env", env, "-o", "training.epochs=1", "train"].map(String::from));
        let (code, doc, stderr) = run(&project, &args, &[], &["MLFLOW_TRACKING_TOKEN"]);
        assert_eq!(
            (code, doc["decision"].as_str()),
            (0, Some("new")),
            "{env}: {doc}\n{stderr}"
        );
        assert_eq!(doc["storage_env"], env);
        assert_eq!(doc["variant"], 1, "{env}: a fresh identity per env: {doc}");
        let dir = PathBuf::from(doc["output_dir"].as_str().unwrap());
        let expected = out_of(root, env).join(format!(
            "final_training/{env}/builtin/spec-{}_exec-{}/v1",
            &doc["spec_fp"].as_str().unwrap()[..8],
            &doc["exec_fp"].as_str().unwrap()[..8]
        ));
        assert_eq!(dir, expected, "{env}");
        let run_name = doc["run_name"].as_str().unwrap().to_string();
        assert!(
            run_name.starts_with(&format!("{env}_builtin_final_training_spec-"))
                && run_name.ends_with("_v1"),
            "{run_name}"
        );
        // Caches live under the env's own OUT.
        assert!(
            out_of(root, env).join("cache/final_training").is_dir(),
            "{env}"
        );
        // Tags of the run in the store.
        let meta = metadata(&dir);
        assert_eq!(meta["storage_env"], env);
        assert_eq!(
            meta["tracking"]["state"], "finished",
            "{env}: {}",
            meta["tracking"]
        );
        let tracked = tracker
            .get_run(meta["tracking"]["run_id"].as_str().unwrap())
            .expect("tracked run");
        assert_eq!(tracked.info.run_name, run_name);
        for (tag, want) in [
            ("code.storage_env", env),
            ("code.stage", "final_training"),
            ("code.model", "builtin"),
            ("code.variant", "1"),
            ("code.output_dir", dir.to_str().unwrap()),
        ] {
            assert_eq!(
                tracked.tags.get(tag).map(String::as_str),
                Some(want),
                "{env}: tag {tag}"
            );
        }
        // Backup: colab mirrors the run to the Drive; the others never touch it.
        let mirror = drive.join("MyDrive/resume-ner").join(
            dir.strip_prefix(out_of(root, env).parent().unwrap())
                .unwrap(),
        );
        if row.backs_up {
            let units = doc["backup"]["units"].as_array().expect("units");
            assert!(!units.is_empty(), "{env}: {doc}");
            assert!(
                mirror.join("metadata.json").is_file(),
                "{env}: {}",
                mirror.display()
            );
        } else {
            assert!(
                doc["backup"]["skipped"]
                    .as_str()
                    .unwrap_or("")
                    .contains("colab only"),
                "{env}: {doc}"
            );
            assert!(!mirror.exists(), "{env} wrote to the Drive");
        }
        dirs.push(dir);
        fingerprints.push((doc["spec_fp"].clone(), doc["exec_fp"].clone()));
    }
    // The same configuration everywhere: the same identity fingerprints (the env compute
    // sections are equal), four distinct variant dirs, one run each in one experiment.
    assert!(
        fingerprints.windows(2).all(|w| w[0] == w[1]),
        "{fingerprints:?}"
    );
    let mut unique = dirs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{dirs:?}");
    let exp = tracker
        .experiment_by_name("resume_ner_baseline")
        .unwrap()
        .expect("experiment of the experiment config");
    let runs = tracker
        .search_runs(&exp.experiment_id, &Default::default())
        .unwrap();
    assert_eq!(runs.len(), 4);
    // The drive holds colab's run only.
    let drive_files: Vec<PathBuf> = support::snapshot(&drive)
        .into_iter()
        .filter(|(p, b)| b.is_some() && p.file_name().is_some_and(|n| n == "metadata.json"))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(drive_files.len(), 1, "{drive_files:?}");
    assert!(drive_files[0]
        .to_string_lossy()
        .contains("/final_training/colab/"));
}

/// A tracking-URI case on azureml.
struct TrackRow {
    name: &'static str,
    overrides: &'static [&'static str],
    vars: &'static [(&'static str, &'static str)],
    /// Expected `tracking.backend` in metadata (`{root}` = the project root).
    backend: &'static str,
    /// Expected `tracking.state`.
    state: &'static str,
    /// A fragment every warning list must contain (empty: no warning expected).
    warning: &'static str,
}

const AZ: &[&str] = &[
    "mlflow:azure_ml.enabled=true",
    "mlflow:azure_ml.subscription_id=sub-1",
    "mlflow:azure_ml.resource_group=rg-1",
    "mlflow:azure_ml.region=westeurope",
];
const AZ_NO_SUB: &[&str] = &[
    "mlflow:azure_ml.enabled=true",
    "mlflow:azure_ml.resource_group=rg-1",
    "mlflow:azure_ml.region=westeurope",
];
const WORKSPACE: &str = "https://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.MachineLearningServices/workspaces/resume-ner-ws";

const TRACK: &[TrackRow] = &[
    TrackRow {
        name: "azure_ml disabled: the default file store",
        overrides: &[],
        vars: &[],
        backend: "file:{root}/mlruns",
        state: "finished",
        warning: "",
    },
    // With credentials the workspace URI is chosen. No workspace exists (and offline no
    // name resolves), so the run completes with the tracking error recorded.
    TrackRow {
        name: "azure_ml enabled with settings and token: the workspace",
        overrides: AZ,
        vars: &[("MLFLOW_TRACKING_TOKEN", "not-a-real-token")],
        backend: WORKSPACE,
        state: "error",
        warning: "training continues",
    },
    TrackRow {
        name: "azure_ml enabled without a token: file store with a warning",
        overrides: AZ,
        vars: &[],
        backend: "file:{root}/mlruns",
        state: "finished",
        warning: "no bearer token in MLFLOW_TRACKING_TOKEN",
    },
    TrackRow {
        name: "azure_ml enabled without subscription_id: file store with a warning",
        overrides: AZ_NO_SUB,
        vars: &[("MLFLOW_TRACKING_TOKEN", "t")],
        backend: "file:{root}/mlruns",
        state: "finished",
        warning: "azure_ml.subscription_id not set",
    },
    TrackRow {
        name: "an azureml:// MLFLOW_TRACKING_URI without a token falls back too",
        overrides: &[],
        vars: &[("MLFLOW_TRACKING_URI", "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w")],
        backend: "file:{root}/mlruns",
        state: "finished",
        warning: "MLFLOW_TRACKING_URI is an AzureML URI but MLFLOW_TRACKING_TOKEN is not set",
    },
    TrackRow {
        name: "MLFLOW_TRACKING_URI wins over the azure_ml settings",
        overrides: AZ,
        vars: &[("MLFLOW_TRACKING_URI", "file:elsewhere"), ("MLFLOW_TRACKING_TOKEN", "t")],
        backend: "file:{root}/elsewhere",
        state: "finished",
        warning: "",
    },
    TrackRow {
        name: "tracking.training.enabled false: no tracking at all",
        overrides: &["mlflow:tracking.training.enabled=false"],
        vars: &[],
        backend: "",
        state: "",
        warning: "",
    },
];

#[test]
fn azureml_tracks_to_the_workspace_with_credentials_and_falls_back_to_the_file_store_without() {
    let mut failures = Vec::new();
    for row in TRACK {
        let project = support::Project::new();
        let root = project.root();
        let mut args = redirect(root);
        args.extend(["--env", "azureml", "-o", "training.epochs=1"].map(String::from));
        for o in row.overrides {
            args.extend(["-o".to_string(), o.to_string()]);
        }
        args.push("train".into());
        let unset: &[&str] = if row.vars.iter().any(|(k, _)| *k == "MLFLOW_TRACKING_TOKEN") {
            &[]
        } else {
            &["MLFLOW_TRACKING_TOKEN"]
        };
        let (code, doc, stderr) = run(&project, &args, row.vars, unset);
        if code != 0 {
            failures.push(format!("{}: exit {code}: {doc}\n{stderr}", row.name));
            continue;
        }
        let dir = PathBuf::from(doc["output_dir"].as_str().unwrap());
        if !dir.starts_with(out_of(root, "azureml")) {
            failures.push(format!(
                "{}: {} outside azureml's OUT",
                row.name,
                dir.display()
            ));
        }
        let meta = metadata(&dir);
        let tracking = &meta["tracking"];
        let want_backend = row.backend.replace("{root}", root.to_str().unwrap());
        let got = (
            tracking["backend"].as_str().unwrap_or(""),
            tracking["state"].as_str().unwrap_or(""),
        );
        if got != (want_backend.as_str(), row.state) {
            failures.push(format!(
                "{}: tracking {tracking}, want {want_backend} {}",
                row.name, row.state
            ));
        }
        let warnings = doc["warnings"].to_string();
        if row.warning.is_empty() {
            if doc["warnings"].as_array().is_some_and(|w| !w.is_empty()) {
                failures.push(format!("{}: unexpected warnings {warnings}", row.name));
            }
        } else if !warnings.contains(row.warning) {
            failures.push(format!(
                "{}: warnings {warnings} lack `{}`",
                row.name, row.warning
            ));
        }
        // The file store is written exactly when it is the backend.
        let wrote_default = root.join("mlruns").exists();
        let want_default = want_backend.ends_with("/mlruns");
        if wrote_default != want_default {
            failures.push(format!("{}: mlruns exists = {wrote_default}", row.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
