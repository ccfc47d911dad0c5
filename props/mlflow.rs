//! Against a real MLflow: `mlflow server` on 127.0.0.1 and MLflow's own Python client
//! (one at a time: nextest's `mlflow` test group).
//!
//! One test binary per kind of world, so `props/support` compiles once per binary
//! (ARCHITECTURE.md, "Test binaries").

mod support;

mod select_tracking;
mod tracking;
