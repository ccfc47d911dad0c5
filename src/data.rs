//! Dataset loading and validation (being written).
