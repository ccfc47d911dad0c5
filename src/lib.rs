//! trainctl: final-training orchestrator. The library owns every decision and effect; the
//! binary (`main.rs`) only parses arguments and maps errors to exit codes.
//!
//! Shape (see ARCHITECTURE.md): `config` loads and types the YAML set, `job` resolves it into an
//! identity and paths, `observe` reads OUT through the `fs` port, and `plan` decides purely.

// The foundation and the built-in trainer live in their own crates (ARCHITECTURE.md,
// "Crates"); their modules keep their paths here.
pub use trainctl_core::{data, error, fs, rng};
pub use trainctl_trainer as builtin;

pub mod backup;
pub mod cache;
pub mod cli;
pub mod cmd;
pub mod completion;
pub mod config;
pub mod convert;
pub mod fuzzing;
pub mod gc;
pub mod identity;
pub mod job;
pub mod lease;
pub mod naming;
pub mod observe;
pub mod paths;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod retention;
pub mod select;
pub mod storage;
pub mod store;
pub mod track;
pub mod train;
pub mod trainer;
