//! Against real services written in Python: MLflow (`mlflow server` on 127.0.0.1 and its own
//! Python client; one at a time: nextest's `mlflow` test group) and an S3-compatible server
//! (moto's server mode on 127.0.0.1) holding OUT in a bucket.
//!
//! One test binary per kind of world, so `props/support` compiles once per binary
//! (ARCHITECTURE.md, "Test binaries").

mod support;

mod bucket;
mod select_tracking;
mod tracking;
