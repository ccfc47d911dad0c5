//! Typed errors whose kinds are the contract's error kinds (docs/contract.md, "Decision and
//! completion", "Command line"). Owns the mapping from kind to exit code and the JSON error shape;
//! never decides anything itself.

use serde::Serialize;
use std::fmt;

/// The contract's error kinds. `as_str` is the machine-readable name printed in
/// `{"error": {"kind": …}}`; `exit_code` is the one place that maps kinds to exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bad command line.
    Usage,
    /// YAML syntax, unknown key, wrong type, bad enum value, conflicting settings.
    ConfigInvalid,
    /// A configuration file (or the experiment) does not exist.
    ConfigMissing,
    /// A Windows drive or UNC path on a non-Windows host (docs/contract.md, "Environments and
    /// storage").
    UnsupportedPath,
    /// A generated path component or path over the configured limits, or a token that
    /// would leave OUT.
    InvalidPath,
    /// The dataset directory or a split file does not exist.
    DatasetMissing,
    /// A dataset file violates the data invariants (docs/contract.md, "Trainer").
    DatasetInvalid,
    /// The train split is empty.
    EmptyDataset,
    /// An init checkpoint is missing.
    CheckpointMissing,
    /// An init checkpoint does not validate.
    CheckpointInvalid,
    /// A loaded checkpoint's label map differs from the data config's.
    LabelMapMismatch,
    /// No best-model selection record to take the init checkpoint from.
    SelectionMissing,
    /// Explicit variant exists but is incomplete under reuse_if_exists.
    VariantIncomplete,
    /// continue_from_previous without a parent.
    ParentNotFound,
    /// continue_from_previous with an incomplete parent.
    ParentIncomplete,
    /// The parent already reached the configured epochs.
    NothingToContinue,
    /// The variant's lease is held by a live owner.
    Busy,
    /// The trainer failed, timed out or was killed.
    TrainingFailed,
    /// Best-model selection found no candidate with a usable objective.
    NoEligibleCandidates,
    /// `tracking.required` and the tracking store is unreachable or unusable.
    TrackingUnavailable,
    /// A Drive backup could not be completed (the previous backup is intact).
    BackupFailed,
    /// A converter's input artifact is missing (checked before anything is written).
    ConversionArtifactsMissing,
    /// The converter failed, or its output does not verify.
    ConversionFailed,
    /// Storage (docs/contract.md, "Storage errors"): no space left on the filesystem (ENOSPC).
    NoSpace,
    /// The user's or group's disk quota is exhausted (EDQUOT).
    QuotaExceeded,
    /// The filesystem is mounted read-only (EROFS).
    ReadOnly,
    /// Permission denied (EACCES, EPERM) on a path trainctl must write or read.
    PermissionDenied,
    /// The device or the network filesystem reported an I/O error (EIO).
    StorageIo,
    /// A bug or an unexpected I/O failure.
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::ConfigInvalid => "config_invalid",
            ErrorKind::ConfigMissing => "config_missing",
            ErrorKind::UnsupportedPath => "unsupported_path",
            ErrorKind::InvalidPath => "invalid_path",
            ErrorKind::DatasetMissing => "dataset_missing",
            ErrorKind::DatasetInvalid => "dataset_invalid",
            ErrorKind::EmptyDataset => "empty_dataset",
            ErrorKind::CheckpointMissing => "checkpoint_missing",
            ErrorKind::CheckpointInvalid => "checkpoint_invalid",
            ErrorKind::LabelMapMismatch => "label_map_mismatch",
            ErrorKind::SelectionMissing => "selection_missing",
            ErrorKind::VariantIncomplete => "variant_incomplete",
            ErrorKind::ParentNotFound => "parent_not_found",
            ErrorKind::ParentIncomplete => "parent_incomplete",
            ErrorKind::NothingToContinue => "nothing_to_continue",
            ErrorKind::Busy => "busy",
            ErrorKind::TrainingFailed => "training_failed",
            ErrorKind::ConversionArtifactsMissing => "conversion_artifacts_missing",
            ErrorKind::BackupFailed => "backup_failed",
            ErrorKind::TrackingUnavailable => "tracking_unavailable",
            ErrorKind::NoEligibleCandidates => "no_eligible_candidates",
            ErrorKind::ConversionFailed => "conversion_failed",
            ErrorKind::NoSpace => "no_space",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::StorageIo => "io_error",
            ErrorKind::Internal => "internal",
        }
    }

    /// docs/contract.md, "Exit codes": 0 ok; 2 usage or config error; 3 precondition failed;
    /// 4 busy; 5 training failed; 6 storage error; 1 internal error. (7, a check that found
    /// problems, is an outcome, not an error: `cli::CHECK_FOUND_PROBLEMS`.)
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage
            | ErrorKind::ConfigInvalid
            | ErrorKind::ConfigMissing
            | ErrorKind::UnsupportedPath
            | ErrorKind::InvalidPath => 2,
            ErrorKind::DatasetMissing
            | ErrorKind::DatasetInvalid
            | ErrorKind::EmptyDataset
            | ErrorKind::CheckpointMissing
            | ErrorKind::CheckpointInvalid
            | ErrorKind::LabelMapMismatch
            | ErrorKind::SelectionMissing
            | ErrorKind::VariantIncomplete
            | ErrorKind::ParentNotFound
            | ErrorKind::ParentIncomplete
            | ErrorKind::NothingToContinue
            | ErrorKind::ConversionArtifactsMissing
            | ErrorKind::NoEligibleCandidates
            | ErrorKind::TrackingUnavailable => 3,
            ErrorKind::Busy => 4,
            ErrorKind::TrainingFailed | ErrorKind::ConversionFailed => 5,
            ErrorKind::NoSpace
            | ErrorKind::QuotaExceeded
            | ErrorKind::ReadOnly
            | ErrorKind::PermissionDenied
            | ErrorKind::StorageIo => 6,
            ErrorKind::Internal | ErrorKind::BackupFailed => 1,
        }
    }
}

impl ErrorKind {
    /// The storage kind of an I/O error, from its errno (or, for errors built without one,
    /// its `io::ErrorKind`).
    pub fn of_io(err: &std::io::Error) -> Option<ErrorKind> {
        use std::io::ErrorKind as K;
        match err.raw_os_error() {
            Some(libc::ENOSPC) => Some(ErrorKind::NoSpace),
            Some(libc::EDQUOT) => Some(ErrorKind::QuotaExceeded),
            Some(libc::EROFS) => Some(ErrorKind::ReadOnly),
            Some(libc::EACCES) | Some(libc::EPERM) => Some(ErrorKind::PermissionDenied),
            Some(libc::EIO) => Some(ErrorKind::StorageIo),
            Some(_) => None,
            None => match err.kind() {
                K::StorageFull => Some(ErrorKind::NoSpace),
                K::QuotaExceeded => Some(ErrorKind::QuotaExceeded),
                K::ReadOnlyFilesystem => Some(ErrorKind::ReadOnly),
                K::PermissionDenied => Some(ErrorKind::PermissionDenied),
                // An object store that did not answer (OUT in a bucket).
                K::TimedOut
                | K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::HostUnreachable
                | K::NetworkUnreachable => Some(ErrorKind::StorageIo),
                _ => None,
            },
        }
    }

    /// The storage kind a process's own words report (a trainer's log line such as
    /// `OSError: [Errno 28] No space left on device`, or Rust's `(os error 28)`).
    pub fn of_message(text: &str) -> Option<ErrorKind> {
        let table = [
            ("No space left on device", ErrorKind::NoSpace),
            ("Disk quota exceeded", ErrorKind::QuotaExceeded),
            ("Read-only file system", ErrorKind::ReadOnly),
            ("Permission denied", ErrorKind::PermissionDenied),
            ("Input/output error", ErrorKind::StorageIo),
            // An object store's own words (`store::objects::ObjError`).
            ("the store did not answer", ErrorKind::StorageIo),
        ];
        table
            .iter()
            .filter_map(|(needle, kind)| text.rfind(needle).map(|at| (at, *kind)))
            .max_by_key(|(at, _)| *at)
            .map(|(_, kind)| kind)
    }

    /// Whether this is a storage error (exit code 6).
    pub fn is_storage(self) -> bool {
        self.exit_code() == 6
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a problem is: a file (or `-o`), with line/column and the dotted key when known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Place {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Place {
    pub fn file(file: impl Into<String>) -> Place {
        Place {
            file: Some(file.into()),
            ..Place::default()
        }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Place {
        self.key = Some(key.into());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.file.is_none() && self.key.is_none()
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            f.write_str(file)?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(column) = self.column {
                    write!(f, ":{column}")?;
                }
            }
        }
        if let Some(key) = &self.key {
            if self.file.is_some() {
                f.write_str(": ")?;
            }
            write!(f, "key `{key}`")?;
        }
        Ok(())
    }
}

/// The one error type of the library.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub place: Place,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.place.is_empty() {
            write!(f, "{}: {}", self.kind, self.message)
        } else {
            write!(f, "{}: {}: {}", self.kind, self.place, self.message)
        }
    }
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            place: Place::default(),
        }
    }

    pub fn at(mut self, place: Place) -> Error {
        self.place = place;
        self
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// An I/O failure on `path`: a storage error of its kind when the errno says so (no
    /// space, quota, read-only, permission, I/O), else internal (callers that know better,
    /// e.g. a missing dataset, build their own kind).
    pub fn io(path: &std::path::Path, err: &std::io::Error) -> Error {
        let kind = ErrorKind::of_io(err).unwrap_or(ErrorKind::Internal);
        Error::new(kind, format!("{}: {err}", path.display()))
    }

    /// `io` with the operation named (`write`, `create`, `publish`, …).
    pub fn io_op(op: &str, path: &std::path::Path, err: &std::io::Error) -> Error {
        let kind = ErrorKind::of_io(err).unwrap_or(ErrorKind::Internal);
        Error::new(kind, format!("{op} {}: {err}", path.display()))
    }

    /// The JSON error document of docs/contract.md, "Command line".
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert("kind".into(), self.kind.as_str().into());
        body.insert("message".into(), self.to_string().into());
        if let Some(file) = &self.place.file {
            body.insert("file".into(), file.clone().into());
        }
        if let Some(line) = self.place.line {
            body.insert("line".into(), line.into());
        }
        if let Some(column) = self.place.column {
            body.insert("column".into(), column.into());
        }
        if let Some(key) = &self.place.key {
            body.insert("key".into(), key.clone().into());
        }
        serde_json::json!({ "error": body })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
