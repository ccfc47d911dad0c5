//! The object-store port (docs/contract.md, "OUT in an object store"): what OUT in a bucket
//! needs from S3, GCS or Azure Blob, and nothing more. Whole objects only, put in one of two
//! modes (create-if-absent or overwrite), read back whole, listed by key prefix; no rename, no
//! directories. Synchronous, like the Fs port: the orchestrator is synchronous, and a backend
//! on an async client blocks on its own runtime.
//!
//! A request may fail in a way that leaves its effect unknown (a timeout, a dropped
//! connection): [`ObjError::Unavailable`] says whether the store may have applied it. The one
//! place that matters is a create-if-absent, where "did my create win?" decides who owns a
//! variant, a lease generation, a cache record or a run name: [`create_resolving`] answers it
//! by reading the object back and comparing it with what the caller wrote (the caller makes
//! its bytes unique, e.g. with an owner nonce).

use std::fmt;

/// How a put treats an existing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Fails with [`ObjError::Exists`] when the key exists (S3 and Azure `If-None-Match: *`,
    /// GCS `ifGenerationMatch=0`).
    Create,
    /// Replaces the object whole (readers see the old or the new one, never a mix).
    Overwrite,
}

/// What a listing or a head says of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjError {
    NotFound,
    /// A create-if-absent met an existing object (HTTP 412).
    Exists,
    /// The store did not answer (timeout, connection reset, 5xx after retries). `maybe_applied`:
    /// a write may have taken effect anyway; a read or a listing never changes anything.
    Unavailable {
        maybe_applied: bool,
        detail: String,
    },
    /// Refused for good (credentials, permission, a bucket that does not exist, a bad key).
    Refused(String),
}

impl fmt::Display for ObjError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjError::NotFound => write!(f, "no such object"),
            ObjError::Exists => write!(f, "the object exists (create-if-absent refused)"),
            ObjError::Unavailable {
                maybe_applied,
                detail,
            } => write!(
                f,
                "the store did not answer ({detail}){}",
                if *maybe_applied {
                    "; the write may have been applied"
                } else {
                    ""
                }
            ),
            ObjError::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl std::error::Error for ObjError {}

pub type ObjResult<T> = Result<T, ObjError>;

/// The object-store port. Keys are `/`-separated, without a leading `/`. Strong
/// read-after-write and list-after-write are assumed (what S3, GCS and Azure document).
pub trait Objects: Send + Sync {
    fn get(&self, key: &str) -> ObjResult<Vec<u8>>;
    fn head(&self, key: &str) -> ObjResult<ObjectMeta>;
    fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> ObjResult<()>;
    /// Removing a missing key succeeds (as S3's DELETE does).
    fn delete(&self, key: &str) -> ObjResult<()>;
    /// Every object whose key starts with `prefix`, in key order (all pages).
    fn list(&self, prefix: &str) -> ObjResult<Vec<ObjectMeta>>;
    /// One level below `prefix` (which ends with `/`, or is empty): the objects directly
    /// there, and the names of the "directories" (common prefixes, without the `/`), both in
    /// key order, all pages. A delimiter listing on a real store; derived from `list` here.
    fn list_dir(&self, prefix: &str) -> ObjResult<Listing> {
        let mut listing = Listing::default();
        for object in self.list(prefix)? {
            let rest = &object.key[prefix.len()..];
            match rest.split_once('/') {
                Some((dir, _)) => {
                    if listing.dirs.last().map(String::as_str) != Some(dir) {
                        listing.dirs.push(dir.to_string());
                    }
                }
                None => listing.objects.push(object),
            }
        }
        Ok(listing)
    }
}

/// What [`Objects::list_dir`] finds one level below a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub objects: Vec<ObjectMeta>,
    /// Names one level down that have objects below them.
    pub dirs: Vec<String>,
}

/// How a create-if-absent ended once its outcome is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// The object is ours: this call (or a retry of it) created it.
    Ours,
    /// Another writer's object was there first.
    Lost,
}

/// Attempts of [`create_resolving`] while the store does not answer.
pub const CREATE_ATTEMPTS: usize = 8;

/// Create-if-absent of `bytes` at `key`, with the outcome of an unanswered request resolved
/// (docs/contract.md, "A create-if-absent that timed out"): after an `Unavailable` that may
/// have been applied, or an `Exists` answering a retry, the object is read back; holding
/// exactly `bytes` means it is ours. `bytes` must be unique to this writer (an owner nonce):
/// another writer's identical bytes would be taken for ours.
pub fn create_resolving(store: &dyn Objects, key: &str, bytes: &[u8]) -> ObjResult<Created> {
    let mut last = None;
    // Some attempt may have been applied without our knowing: an `Exists` may be our own.
    let mut uncertain = false;
    // Read the object back before the next put.
    let mut check = false;
    for _ in 0..CREATE_ATTEMPTS {
        if check {
            match read_back(store, key, bytes) {
                ReadBack::Resolved(r) => return r,
                ReadBack::Absent => check = false,
                ReadBack::Faulted(e) => {
                    last = Some(e);
                    continue;
                }
            }
        }
        match store.put(key, bytes, PutMode::Create) {
            Ok(()) => return Ok(Created::Ours),
            Err(ObjError::Exists) if !uncertain => return Ok(Created::Lost),
            // Read it back within the same attempt: an attempt ends unresolved only on a
            // fault (found by the seeded property: an `Exists` spent an attempt of its own).
            Err(ObjError::Exists) => match read_back(store, key, bytes) {
                ReadBack::Resolved(r) => return r,
                ReadBack::Absent => {}
                ReadBack::Faulted(e) => {
                    last = Some(e);
                    check = true;
                }
            },
            Err(e @ ObjError::Unavailable { .. }) => {
                if matches!(
                    e,
                    ObjError::Unavailable {
                        maybe_applied: true,
                        ..
                    }
                ) {
                    uncertain = true;
                    check = true;
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(ObjError::Unavailable {
        maybe_applied: true,
        detail: "no attempt answered".into(),
    }))
}

/// What reading a created object back says.
enum ReadBack {
    /// Ours (the same bytes) or the winner's.
    Resolved(ObjResult<Created>),
    /// Nothing there: our create was not applied.
    Absent,
    /// The read itself failed; try again.
    Faulted(ObjError),
}

fn read_back(store: &dyn Objects, key: &str, bytes: &[u8]) -> ReadBack {
    match store.get(key) {
        Ok(found) if found == bytes => ReadBack::Resolved(Ok(Created::Ours)),
        Ok(_) => ReadBack::Resolved(Ok(Created::Lost)),
        Err(ObjError::NotFound) => ReadBack::Absent,
        Err(e @ ObjError::Unavailable { .. }) => ReadBack::Faulted(e),
        Err(e) => ReadBack::Resolved(Err(e)),
    }
}
