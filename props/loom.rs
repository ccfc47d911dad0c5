//! Exhaustive interleavings with loom: its own binary, because loom's model checker replaces
//! the synchronisation primitives of everything it runs (ARCHITECTURE.md, "Test binaries").

mod support;

mod interleavings;
