//! trainctl's foundation, shared by the orchestrator (`trainctl`) and the built-in trainer
//! (`trainctl-trainer`): the error taxonomy, the Fs port with its real and simulated
//! filesystems, the dataset reader, the project's PRNG and content digests. Nothing here
//! knows variants, leases, caches or tracking: the trainer depends on this crate and not on
//! the orchestrator, so the compiler keeps it away from orchestrator state
//! (ARCHITECTURE.md, "Crates").

pub mod data;
pub mod digest;
pub mod error;
pub mod fs;
pub mod progress;
pub mod rng;
/// Seeded proptest configs for the unit tests of this workspace's crates (feature
/// `testing`, enabled by their dev-dependencies only).
#[cfg(any(test, feature = "testing"))]
pub mod testing;
