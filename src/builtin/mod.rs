//! The built-in trainer (being written).
