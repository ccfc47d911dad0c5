//! Finding a Python with MLflow for the real-MLflow tests outside `props/tracking.rs`: the
//! same rule as there (`TRAINCTL_SKIP_MLFLOW=1` skips; `TRAINCTL_MLFLOW_PYTHON`, else
//! `<repo>/.venv/bin/python`, created with the pinned MLflow on first use; a failed install
//! FAILS the test with the command that installs it). `props/tracking.rs` keeps its own copy
//! until the tracking branch merges (it is being edited there).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MLFLOW_VERSION: &str = "3.17.2";

fn has_mlflow(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import mlflow, sys; sys.exit(mlflow.__version__ != sys.argv[1])",
            MLFLOW_VERSION,
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn how_to_install() -> String {
    format!(
        "Real-MLflow tests need MLflow {MLFLOW_VERSION}: python3 -m venv .venv && \
         .venv/bin/pip install mlflow=={MLFLOW_VERSION} (from the repository root), or point \
         TRAINCTL_MLFLOW_PYTHON at a python that has it. TRAINCTL_SKIP_MLFLOW=1 skips these tests."
    )
}

/// The python to use, or `None` when `TRAINCTL_SKIP_MLFLOW=1` (said on stderr).
pub fn python(test: &str) -> Option<PathBuf> {
    if std::env::var("TRAINCTL_SKIP_MLFLOW").is_ok_and(|v| v == "1") {
        let _ = writeln!(
            std::io::stderr(),
            "{test}: skipped (TRAINCTL_SKIP_MLFLOW=1)"
        );
        return None;
    }
    if let Some(p) = std::env::var_os("TRAINCTL_MLFLOW_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            has_mlflow(&p),
            "{test}: {} has no mlflow {MLFLOW_VERSION}.\n{}",
            p.display(),
            how_to_install()
        );
        return Some(p);
    }
    let venv = super::repo_root().join(".venv");
    let python = venv.join("bin/python");
    if has_mlflow(&python) {
        return Some(python);
    }
    let run = |cmd: &mut Command| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{test}: {cmd:?}: {e}\n{}", how_to_install()));
        assert!(
            out.status.success(),
            "{test}: {cmd:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            how_to_install()
        );
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        &format!("mlflow=={MLFLOW_VERSION}"),
    ]));
    assert!(has_mlflow(&python), "{test}: {}", how_to_install());
    Some(python)
}
