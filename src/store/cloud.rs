//! The real object stores behind an OUT in a bucket (docs/contract.md, "OUT in an object
//! store"): the `object_store` crate's S3, GCS and Azure clients as the [`Objects`] port, and
//! [`CloudFs`], the Fs port of a command: paths of a bucket URL (`s3://bucket/…`) go to that
//! bucket's [`BucketFs`], every other path to the local filesystem.
//!
//! Credentials and endpoints come from each cloud's own environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, `AWS_REGION`;
//! `GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`; `AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCESS_KEY`, `AZURE_STORAGE_USE_EMULATOR`, …), read by the crate's
//! `from_env` builders. Nothing here ever prints them: errors name the URL and the key.

use super::bucket::BucketFs;
use super::objects::{ObjError, ObjResult, ObjectMeta, Objects, PutMode};
use crate::fs::{Caps, Entry, Fs, Meta, OsFs};
use crate::paths::BucketUrl;
use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Objects above this size are uploaded in parts (a single put is limited, and a failed part
/// is retried alone). Create-if-absent puts are always single (the claims and records are
/// small).
pub const MULTIPART_ABOVE: usize = 64 << 20;

/// The client's retries of a request that failed in transit: a few, within 30 s (a
/// heartbeat or an upload that fails after them is retried by trainctl's own loop, or
/// reported as the storage error it is).
fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 4,
        retry_timeout: std::time::Duration::from_secs(30),
        ..object_store::RetryConfig::default()
    }
}

/// One bucket through `object_store`, blocking on a runtime of its own.
pub struct CloudObjects {
    store: Arc<dyn ObjectStore>,
    /// The same bucket with the client's own retries off, for create-if-absent: a retried
    /// create that answers 412 may be our own first attempt, which only the port's
    /// read-back (`objects::create_resolving`) can tell; the client would report it as taken.
    create_store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
    url: String,
    /// Requests by kind: how many, and the time they took (`TRAINCTL_STORE_STATS=1` prints
    /// them to stderr when the client goes; docs/performance.md).
    stats: Mutex<BTreeMap<&'static str, (u64, std::time::Duration)>>,
}

fn key(k: &str) -> ObjResult<Key> {
    Key::parse(k).map_err(|e| ObjError::Refused(format!("key {k:?} is not allowed: {e}")))
}

fn classify(e: object_store::Error, write: bool) -> ObjError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ObjError::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => ObjError::Exists,
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::InvalidPath { .. }
        | E::UnknownConfigurationKey { .. } => ObjError::Refused(e.to_string()),
        // A bucket that does not exist, or credentials the store refuses, are not
        // transient (the crate reports them as a generic error with the store's code).
        other
            if [
                "NoSuchBucket",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
                "ContainerNotFound",
            ]
            .iter()
            .any(|code| other.to_string().contains(code)) =>
        {
            ObjError::Refused(other.to_string())
        }
        other => ObjError::Unavailable {
            maybe_applied: write,
            detail: other.to_string(),
        },
    }
}

impl CloudObjects {
    /// The client for `url`'s bucket, configured from the environment. Builds no connection
    /// yet: the first request does.
    pub fn connect(url: &BucketUrl) -> Result<CloudObjects, String> {
        CloudObjects::connect_with(url, &[])
    }

    /// `connect` with S3 settings given here over the environment's (`aws_endpoint`,
    /// `aws_access_key_id`, `aws_allow_http`, …: the crate's config keys): for tests and
    /// tools that must not change their own process environment.
    pub fn connect_with(url: &BucketUrl, s3: &[(&str, &str)]) -> Result<CloudObjects, String> {
        let build =
            |retry: object_store::RetryConfig| -> object_store::Result<Arc<dyn ObjectStore>> {
                Ok(match url.scheme.as_str() {
                    "s3" => {
                        let mut builder = object_store::aws::AmazonS3Builder::from_env()
                            .with_bucket_name(&url.bucket)
                            .with_retry(retry);
                        for (k, v) in s3 {
                            let key: object_store::aws::AmazonS3ConfigKey =
                                k.parse().map_err(|e| object_store::Error::Generic {
                                    store: "S3",
                                    source: format!("S3 setting {k}: {e}").into(),
                                })?;
                            builder = builder.with_config(key, *v);
                        }
                        Arc::new(builder.build()?)
                    }
                    "gs" => Arc::new(
                        object_store::gcp::GoogleCloudStorageBuilder::from_env()
                            .with_bucket_name(&url.bucket)
                            .with_retry(retry)
                            .build()?,
                    ),
                    "az" => Arc::new(
                        object_store::azure::MicrosoftAzureBuilder::from_env()
                            .with_container_name(&url.bucket)
                            .with_retry(retry)
                            .build()?,
                    ),
                    other => {
                        return Err(object_store::Error::NotSupported {
                            source: format!("no object store for scheme {other}://").into(),
                        })
                    }
                })
            };
        let configured = |e: object_store::Error| {
            format!(
                "{}://{}: cannot configure the client from the environment: {e}",
                url.scheme, url.bucket
            )
        };
        let store = build(retry_config()).map_err(configured)?;
        let create_store = build(object_store::RetryConfig {
            max_retries: 0,
            ..retry_config()
        })
        .map_err(configured)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the object-store runtime: {e}"))?;
        Ok(CloudObjects {
            store,
            create_store,
            rt,
            url: format!("{}://{}", url.scheme, url.bucket),
            stats: Mutex::new(BTreeMap::new()),
        })
    }

    /// Runs one request on the runtime, counted under `kind`.
    fn timed<T>(&self, kind: &'static str, f: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = self.rt.block_on(f);
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let entry = stats.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += started.elapsed();
        out
    }

    /// Requests so far by kind: (count, total seconds).
    pub fn stats(&self) -> BTreeMap<&'static str, (u64, f64)> {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, (n, d))| (*k, (*n, d.as_secs_f64())))
            .collect()
    }

    fn meta(m: object_store::ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            key: m.location.as_ref().to_string(),
            size: m.size,
        }
    }

    /// `prefix` (a string prefix ending in `/`, or empty) as the crate's segment prefix.
    fn segment_prefix(prefix: &str) -> ObjResult<Option<Key>> {
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.is_empty() {
            Ok(None)
        } else {
            key(trimmed).map(Some)
        }
    }
}

impl Drop for CloudObjects {
    fn drop(&mut self) {
        if std::env::var_os("TRAINCTL_STORE_STATS").is_some_and(|v| v == "1") {
            let by_kind: serde_json::Map<String, serde_json::Value> = self
                .stats()
                .into_iter()
                .map(|(k, (n, secs))| (k.to_string(), serde_json::json!({"n": n, "secs": secs})))
                .collect();
            eprintln!(
                "TRAINCTL-STORE {}",
                serde_json::json!({"store": self.url, "requests": by_kind})
            );
        }
    }
}

impl std::fmt::Debug for CloudObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CloudObjects({})", self.url)
    }
}

impl Objects for CloudObjects {
    fn get(&self, k: &str) -> ObjResult<Vec<u8>> {
        let k = key(k)?;
        self.timed("get", async {
            let got = self.store.get(&k).await.map_err(|e| classify(e, false))?;
            let bytes = got.bytes().await.map_err(|e| classify(e, false))?;
            Ok(bytes.to_vec())
        })
    }

    fn head(&self, k: &str) -> ObjResult<ObjectMeta> {
        let k = key(k)?;
        self.timed("head", self.store.head(&k))
            .map(Self::meta)
            .map_err(|e| classify(e, false))
    }

    fn put(&self, k: &str, bytes: &[u8], mode: PutMode) -> ObjResult<()> {
        let k = key(k)?;
        let kind = match mode {
            PutMode::Create => "put_create",
            PutMode::Overwrite => "put_overwrite",
        };
        self.timed(kind, async {
            if mode == PutMode::Overwrite && bytes.len() > MULTIPART_ABOVE {
                let upload = self
                    .store
                    .put_multipart(&k)
                    .await
                    .map_err(|e| classify(e, true))?;
                let mut writer = object_store::WriteMultipart::new(upload);
                writer.write(bytes);
                writer.finish().await.map_err(|e| classify(e, true))?;
                return Ok(());
            }
            let opts = PutOptions {
                mode: match mode {
                    PutMode::Create => object_store::PutMode::Create,
                    PutMode::Overwrite => object_store::PutMode::Overwrite,
                },
                ..PutOptions::default()
            };
            let client = match mode {
                PutMode::Create => &self.create_store,
                PutMode::Overwrite => &self.store,
            };
            client
                .put_opts(&k, PutPayload::from(bytes.to_vec()), opts)
                .await
                .map(|_| ())
                .map_err(|e| classify(e, true))
        })
    }

    fn delete(&self, k: &str) -> ObjResult<()> {
        let k = key(k)?;
        match self.timed("delete", self.store.delete(&k)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify(e, true)),
        }
    }

    fn list(&self, prefix: &str) -> ObjResult<Vec<ObjectMeta>> {
        let p = Self::segment_prefix(prefix)?;
        let mut all: Vec<ObjectMeta> = self.timed("list", async {
            let mut stream = self.store.list(p.as_ref());
            let mut out = Vec::new();
            while let Some(item) = stream.next().await {
                out.push(Self::meta(item.map_err(|e| classify(e, false))?));
            }
            Ok::<_, ObjError>(out)
        })?;
        // The crate does not promise an order; the port does.
        all.retain(|m| m.key.starts_with(prefix));
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    fn list_dir(&self, prefix: &str) -> ObjResult<super::objects::Listing> {
        let p = Self::segment_prefix(prefix)?;
        let found = self
            .timed("list_dir", self.store.list_with_delimiter(p.as_ref()))
            .map_err(|e| classify(e, false))?;
        let mut objects: Vec<ObjectMeta> = found.objects.into_iter().map(Self::meta).collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let mut dirs: Vec<String> = found
            .common_prefixes
            .into_iter()
            .filter_map(|d| d.filename().map(str::to_string))
            .collect();
        dirs.sort();
        Ok(super::objects::Listing { objects, dirs })
    }
}

/// A token unique to this process among every machine sharing a bucket: the host name, the
/// pid and the process start (the local `unique` adds a counter).
fn process_nonce() -> String {
    let host: String = crate::lease::this_host()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    let start = crate::lease::process_start_time(std::process::id()).unwrap_or(0);
    format!("{host}-{start}-")
}

/// The Fs port of a command: each bucket URL's paths go to that bucket (connected on first
/// use), everything else to `OsFs`.
pub struct CloudFs {
    local: Arc<dyn Fs>,
    buckets: Mutex<BTreeMap<String, Arc<BucketFs>>>,
    /// Temporary names (staged variants in a bucket among them) must not collide between
    /// machines: `unique` is this nonce and the local counter.
    nonce: String,
}

impl Default for CloudFs {
    fn default() -> Self {
        CloudFs::new()
    }
}

impl CloudFs {
    pub fn new() -> CloudFs {
        CloudFs {
            local: Arc::new(OsFs),
            buckets: Mutex::new(BTreeMap::new()),
            nonce: process_nonce(),
        }
    }

    /// The bucket's Fs for `path`, or `None` for a local path.
    fn route(&self, path: &Path) -> io::Result<Option<Arc<BucketFs>>> {
        let Some(url) = crate::paths::bucket_of_path(path) else {
            return Ok(None);
        };
        let root = url.url();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = buckets.get(&root) {
            return Ok(Some(b.clone()));
        }
        let store = CloudObjects::connect(&url)
            .map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why))?;
        let fs = Arc::new(BucketFs::new(
            self.local.clone(),
            PathBuf::from(&root),
            "",
            Arc::new(store),
            self.nonce.clone(),
        ));
        buckets.insert(root, fs.clone());
        Ok(Some(fs))
    }

    fn on(&self, path: &Path) -> io::Result<Arc<dyn Fs>> {
        Ok(match self.route(path)? {
            Some(b) => b,
            None => self.local.clone(),
        })
    }

    /// Both paths on one side (a rename, a link).
    fn on_both(&self, a: &Path, b: &Path) -> io::Result<Arc<dyn Fs>> {
        let (fa, fb) = (
            crate::paths::bucket_of_path(a),
            crate::paths::bucket_of_path(b),
        );
        if fa.map(|u| u.url()) != fb.map(|u| u.url()) {
            let e = io::Error::from_raw_os_error(libc::EXDEV);
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{} and {}: not in one store ({e})",
                    a.display(),
                    b.display()
                ),
            ));
        }
        self.on(a)
    }
}

impl Fs for CloudFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.on(path)?.read(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        self.on(dir)?.list(dir)
    }
    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        self.on(path)?.metadata(path)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.on(path)?.create_dir(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.on(path)?.create_dir_all(path)
    }
    fn create_new(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.on(path)?.create_new(path, bytes)
    }
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.on(path)?.write(path, bytes)
    }
    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.on(path)?.append(path, bytes)
    }
    fn fsync_file(&self, path: &Path) -> io::Result<()> {
        self.on(path)?.fsync_file(path)
    }
    fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        self.on(dir)?.fsync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.on_both(from, to)?.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.on_both(from, to)?.rename_noreplace(from, to)
    }
    fn rename_exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.on_both(a, b)?.rename_exchange(a, b)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.on_both(from, to)?.hard_link(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.on(path)?.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.on(path)?.remove_dir_all(path)
    }
    fn unique(&self) -> String {
        format!("{}{}", self.nonce, self.local.unique())
    }
    fn caps(&self, path: &Path) -> Caps {
        match crate::paths::bucket_of_path(path) {
            Some(_) => Caps::OBJECTS,
            None => self.local.caps(path),
        }
    }
    fn available_bytes(&self, path: &Path) -> Option<u64> {
        match crate::paths::bucket_of_path(path) {
            Some(_) => None,
            None => self.local.available_bytes(path),
        }
    }
}
