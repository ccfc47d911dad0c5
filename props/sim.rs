//! Simulated worlds and in-process properties: the model against the orchestrator on SimFs and
//! OsFs, crashes at every operation, scheduled interleavings, and the properties of the pure
//! parts (decision, cache, lease, completion, identity, config, naming, paths, selection).
//!
//! One test binary per kind of world, so `props/support` compiles once per binary
//! (ARCHITECTURE.md, "Test binaries").

mod support;

mod cache;
mod completion;
mod config;
mod crash;
mod decision;
mod fuzz_corpus;
mod identity;
mod lease;
mod model_vs_real;
mod naming;
mod paths;
mod races;
mod sched;
mod select;
