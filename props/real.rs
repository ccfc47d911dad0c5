//! The real system through the `trainctl` binary: processes, kill -9, scenarios, the pipeline,
//! the environments, conversion, sources, backup, edges, real mounts (bindfs, tmpfs, read-only)
//! and bad input.
//!
//! One test binary per kind of world, so `props/support` compiles once per binary
//! (ARCHITECTURE.md, "Test binaries").

mod support;

mod backup;
mod cli_bad_input;
mod convert;
mod edges;
mod environments;
mod pipeline;
mod process;
mod scenarios;
mod source;
mod storage;
mod ux;
