//! Finding a Python with the pinned MLflow for the real-MLflow tests (`props/tracking.rs`,
//! `props/select_tracking.rs`): `TRAINCTL_SKIP_MLFLOW=1` skips; `TRAINCTL_MLFLOW_PYTHON`,
//! else `<repo>/.venv/bin/python`, created with the pinned MLflow on first use (once per test
//! process); a missing or failed install FAILS the test with the command that installs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MLFLOW_VERSION: &str = "3.17.2";

/// The python that has mlflow, or `None` when the user asked to skip. Panics with the fix
/// when it is missing.
pub fn python(test: &str) -> Option<PathBuf> {
    if std::env::var("TRAINCTL_SKIP_MLFLOW").is_ok_and(|v| v == "1") {
        // Straight to stderr: the test harness captures `eprintln!` of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: skipped (TRAINCTL_SKIP_MLFLOW=1)"
        );
        return None;
    }
    let repo = super::repo_root();
    let candidate = match std::env::var_os("TRAINCTL_MLFLOW_PYTHON").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => ensure_repo_venv(&repo, test),
    };
    let probe = Command::new(&candidate)
        .args(["-c", "import mlflow; print(mlflow.__version__)"])
        .output();
    let version = match probe {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => panic!(
            "{test}: {} cannot import mlflow:\n{}\n{}",
            candidate.display(),
            String::from_utf8_lossy(&out.stderr),
            how_to_install()
        ),
        Err(e) => panic!(
            "{test}: no python at {}: {e}\n{}",
            candidate.display(),
            how_to_install()
        ),
    };
    assert_eq!(
        version,
        MLFLOW_VERSION,
        "{test}: {} has mlflow {version}; the suite is pinned to {MLFLOW_VERSION}.\n{}",
        candidate.display(),
        how_to_install()
    );
    Some(candidate)
}

/// `<repo>/.venv/bin/python`, creating the venv with the pinned MLflow first when it lacks
/// it, so that `cargo test --release` works on a fresh machine (the first run pays the
/// install: ~45 s idle, minutes on a loaded machine; `.ci/run` does it before the tests).
/// Once per test process; a failed install fails the tests with the command to run.
fn ensure_repo_venv(repo: &Path, test: &str) -> PathBuf {
    static READY: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    let result = READY.get_or_init(|| {
        let venv = repo.join(".venv");
        let python = venv.join("bin/python");
        let has = |py: &Path| {
            Command::new(py)
                .args([
                    "-c",
                    "import mlflow, sys; sys.exit(mlflow.__version__ != sys.argv[1])",
                    MLFLOW_VERSION,
                ])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if has(&python) {
            return Ok(python);
        }
        let _ = writeln!(
            std::io::stderr(),
            "{test}: creating {} with mlflow=={MLFLOW_VERSION} (first run only)",
            venv.display()
        );
        let run = |cmd: &mut Command| -> std::result::Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            "--disable-pip-version-check",
            &format!("mlflow=={MLFLOW_VERSION}"),
            // moto's S3 server for the bucket tests (props/support/moto.rs).
            &format!("moto[server]=={}", super::moto::MOTO_VERSION),
        ]))?;
        if has(&python) {
            Ok(python)
        } else {
            Err(format!(
                "{} still cannot import mlflow {MLFLOW_VERSION}",
                python.display()
            ))
        }
    });
    match result {
        Ok(p) => p.clone(),
        Err(e) => panic!(
            "{test}: could not create the MLflow venv: {e}\n{}",
            how_to_install()
        ),
    }
}

fn how_to_install() -> String {
    format!(
        "Real-MLflow tests need MLflow {MLFLOW_VERSION} in a venv. Create it with\n  \
         python3 -m venv .venv && .venv/bin/pip install mlflow=={MLFLOW_VERSION}\n\
         (from the repository root; `bash .ci/run` does this), or point TRAINCTL_MLFLOW_PYTHON at a python \
         that has it. TRAINCTL_SKIP_MLFLOW=1 skips these tests."
    )
}
