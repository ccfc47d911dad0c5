//! OUT in a bucket through the Fs port (docs/contract.md, "OUT in an object store"): every
//! path below OUT's URL is an object key, every other path goes to the local filesystem. The
//! orchestrator's protocols stay the ones it has: `durable.rs` sees the `object` profile
//! (`Caps::OBJECTS`) and uses the object-store protocol of each operation:
//!
//! - an exclusive create (lease generations, cache records, run-name reservations,
//!   manifests) is one create-if-absent put, its timeout resolved by reading back
//!   (`objects::create_resolving`); the bytes are unique to the writer (a lease names its
//!   owner, pid and start time; a record its writer's subject and time);
//! - a replace (metadata, views, heartbeats) is one overwrite put, atomic for readers;
//! - a directory publish (a variant's allocation, a conversion bundle, a step checkpoint) is
//!   a copy: the target must have no object, the first file by name is created with
//!   create-if-absent (the claim: of two publishers of one name, one wins, and the other
//!   sees `AlreadyExists`), the rest are put in name order, then the staged objects go;
//! - there are no directories: a name is a directory while an object exists below it, or
//!   while this process created it and has not removed it (a staged directory before its
//!   first file, an identity directory before its first variant). Those "virtual"
//!   directories live in this process only and hold nothing another machine could need.
//!
//! Never decides anything about variants, leases or caches.

use super::objects::{create_resolving, Created, ObjError, Objects, PutMode};
use crate::fs::{Caps, Entry, Fs, Meta};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The Fs port with OUT in a bucket.
pub struct BucketFs {
    local: Arc<dyn Fs>,
    /// OUT as the orchestrator names it (`s3://bucket/prefix`): every path below it is a key.
    root: PathBuf,
    /// The key prefix OUT maps to (`prefix`, no leading or trailing `/`; empty for the bucket's
    /// root).
    prefix: String,
    store: Arc<dyn Objects>,
    /// Directories this process created that hold no object yet (keys, no trailing `/`).
    virtual_dirs: Mutex<BTreeSet<String>>,
    /// Makes `unique` unique across machines (the local one is only per machine).
    nonce: String,
}

enum Side {
    Local,
    /// At or below OUT: the key (empty for OUT itself).
    Key(String),
    /// An ancestor of OUT (`s3://bucket`): a directory that always exists.
    Above,
}

fn io_err(e: ObjError, path: &Path) -> io::Error {
    let what = format!("{}: {e}", path.display());
    match e {
        ObjError::NotFound => io::Error::new(io::ErrorKind::NotFound, what),
        ObjError::Exists => io::Error::new(io::ErrorKind::AlreadyExists, what),
        ObjError::Unavailable { .. } => io::Error::new(io::ErrorKind::TimedOut, what),
        ObjError::Refused(_) => io::Error::new(io::ErrorKind::PermissionDenied, what),
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such object or prefix", path.display()),
    )
}

/// A name that is taken (what a plain rename onto a non-empty directory or a file reports).
fn taken(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{}: {what}", path.display()),
    )
}

fn os_err(errno: i32, path: &Path, what: &str) -> io::Error {
    let e = io::Error::from_raw_os_error(errno);
    io::Error::new(e.kind(), format!("{}: {what} ({e})", path.display()))
}

impl BucketFs {
    /// `root` is OUT as paths below it are built (`s3://bucket/prefix`), `prefix` the key
    /// prefix it stands for, `nonce` a token unique to this process among every machine
    /// sharing the bucket.
    pub fn new(
        local: Arc<dyn Fs>,
        root: PathBuf,
        prefix: &str,
        store: Arc<dyn Objects>,
        nonce: String,
    ) -> BucketFs {
        BucketFs {
            local,
            root,
            prefix: prefix.trim_matches('/').to_string(),
            store,
            virtual_dirs: Mutex::new(BTreeSet::new()),
            nonce,
        }
    }

    /// The object store behind OUT.
    pub fn store(&self) -> &dyn Objects {
        &*self.store
    }

    /// The local filesystem (everything outside OUT).
    pub fn local(&self) -> &dyn Fs {
        &*self.local
    }

    fn side(&self, path: &Path) -> Side {
        match path.strip_prefix(&self.root) {
            Ok(rel) => {
                let mut key = self.prefix.clone();
                for c in rel.components() {
                    if !key.is_empty() {
                        key.push('/');
                    }
                    key.push_str(&c.as_os_str().to_string_lossy());
                }
                Side::Key(key)
            }
            Err(_) if self.root.starts_with(path) && !path.as_os_str().is_empty() => Side::Above,
            Err(_) => Side::Local,
        }
    }

    /// Whether `key` is OUT itself (a directory that always exists).
    fn is_root(&self, key: &str) -> bool {
        key == self.prefix
    }

    fn dir_prefix(key: &str) -> String {
        if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        }
    }

    fn virtual_dirs(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.virtual_dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_virtual(&self, key: &str) -> bool {
        self.virtual_dirs().contains(key)
    }

    /// Whether some object lies below `key` (one short listing).
    fn has_below(&self, key: &str, path: &Path) -> io::Result<bool> {
        let listing = self
            .store
            .list_dir(&Self::dir_prefix(key))
            .map_err(|e| io_err(e, path))?;
        Ok(!listing.objects.is_empty() || !listing.dirs.is_empty())
    }

    fn file_exists(&self, key: &str, path: &Path) -> io::Result<bool> {
        match self.store.head(key) {
            Ok(_) => Ok(true),
            Err(ObjError::NotFound) => Ok(false),
            Err(e) => Err(io_err(e, path)),
        }
    }

    fn dir_exists(&self, key: &str, path: &Path) -> io::Result<bool> {
        Ok(self.is_root(key) || self.is_virtual(key) || self.has_below(key, path)?)
    }

    /// Every object below the directory `key`, by key.
    fn objects_below(&self, key: &str, path: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .store
            .list(&Self::dir_prefix(key))
            .map_err(|e| io_err(e, path))?
            .into_iter()
            .map(|o| o.key)
            .collect())
    }

    fn put(&self, key: &str, bytes: &[u8], path: &Path) -> io::Result<()> {
        self.store
            .put(key, bytes, PutMode::Overwrite)
            .map_err(|e| io_err(e, path))?;
        self.forget_virtual_above(key);
        Ok(())
    }

    /// A directory that now has an object below it needs no virtual entry.
    fn forget_virtual_above(&self, key: &str) {
        let mut dirs = self.virtual_dirs();
        if dirs.is_empty() {
            return;
        }
        let mut cur = key;
        while let Some((parent, _)) = cur.rsplit_once('/') {
            dirs.remove(parent);
            cur = parent;
        }
    }

    fn copy_object(&self, from: &str, to: &str, mode: PutMode, path: &Path) -> io::Result<()> {
        let bytes = self.store.get(from).map_err(|e| io_err(e, path))?;
        match mode {
            PutMode::Overwrite => self.put(to, &bytes, path),
            PutMode::Create => match create_resolving(&*self.store, to, &bytes) {
                Ok(Created::Ours) => {
                    self.forget_virtual_above(to);
                    Ok(())
                }
                Ok(Created::Lost) => Err(taken(path, "the name is taken")),
                Err(e) => Err(io_err(e, path)),
            },
        }
    }

    /// A directory "rename": copy every object (the first by create-if-absent, as the claim),
    /// then delete the originals. Refuses a target that has any object.
    fn rename_dir(&self, from: &str, to: &str, src: &Path, dst: &Path) -> io::Result<()> {
        if self.file_exists(to, dst)? {
            return Err(taken(dst, "a file is there"));
        }
        if self.has_below(to, dst)? {
            return Err(taken(dst, "the name is taken"));
        }
        let keys = self.objects_below(from, src)?;
        if keys.is_empty() {
            // An empty directory of this process: the name moves.
            let mut dirs = self.virtual_dirs();
            if !dirs.remove(from) {
                return Err(not_found(src));
            }
            dirs.insert(to.to_string());
            return Ok(());
        }
        let from_prefix = Self::dir_prefix(from);
        for (i, key) in keys.iter().enumerate() {
            let target = format!("{}{}", Self::dir_prefix(to), &key[from_prefix.len()..]);
            let mode = if i == 0 {
                PutMode::Create
            } else {
                PutMode::Overwrite
            };
            self.copy_object(key, &target, mode, dst)?;
        }
        for key in &keys {
            self.store.delete(key).map_err(|e| io_err(e, src))?;
        }
        self.virtual_dirs().remove(from);
        Ok(())
    }
}

fn cross(path: &Path) -> io::Error {
    os_err(
        libc::EXDEV,
        path,
        "between the bucket and the local filesystem",
    )
}

impl Fs for BucketFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        match self.side(path) {
            Side::Local => self.local.read(path),
            Side::Above => Err(os_err(libc::EISDIR, path, "a directory")),
            Side::Key(key) => match self.store.get(&key) {
                Ok(bytes) => Ok(bytes),
                Err(ObjError::NotFound) if self.dir_exists(&key, path)? => {
                    Err(os_err(libc::EISDIR, path, "a directory"))
                }
                Err(e) => Err(io_err(e, path)),
            },
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let key = match self.side(dir) {
            Side::Local => return self.local.list(dir),
            Side::Above => return Ok(Vec::new()),
            Side::Key(key) => key,
        };
        let prefix = Self::dir_prefix(&key);
        let listing = self.store.list_dir(&prefix).map_err(|e| io_err(e, dir))?;
        let mut entries: Vec<Entry> = listing
            .objects
            .iter()
            .map(|o| Entry {
                name: o.key[prefix.len()..].to_string(),
                is_dir: false,
            })
            .chain(listing.dirs.iter().map(|d| Entry {
                name: d.clone(),
                is_dir: true,
            }))
            .collect();
        let had_objects = !entries.is_empty();
        {
            let dirs = self.virtual_dirs();
            for v in dirs.range(prefix.clone()..) {
                let Some(rest) = v.strip_prefix(&prefix) else {
                    break;
                };
                if !rest.is_empty()
                    && !rest.contains('/')
                    && !entries.iter().any(|e| e.name == rest)
                {
                    entries.push(Entry {
                        name: rest.to_string(),
                        is_dir: true,
                    });
                }
            }
            if !had_objects && !self.is_root(&key) && !dirs.contains(&key) {
                return Err(if self.file_exists(&key, dir)? {
                    os_err(libc::ENOTDIR, dir, "a file")
                } else {
                    not_found(dir)
                });
            }
        }
        entries.sort();
        Ok(entries)
    }

    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        let dir = Meta {
            is_dir: true,
            len: 0,
            special: false,
        };
        match self.side(path) {
            Side::Local => self.local.metadata(path),
            Side::Above => Ok(dir),
            Side::Key(key) => {
                if self.is_root(&key) || self.is_virtual(&key) {
                    return Ok(dir);
                }
                match self.store.head(&key) {
                    Ok(o) => Ok(Meta {
                        is_dir: false,
                        len: o.size,
                        special: false,
                    }),
                    Err(ObjError::NotFound) if self.has_below(&key, path)? => Ok(dir),
                    Err(e) => Err(io_err(e, path)),
                }
            }
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        match self.side(path) {
            Side::Local => self.local.create_dir(path),
            Side::Above => Err(os_err(libc::EEXIST, path, "exists")),
            Side::Key(key) => {
                if self.dir_exists(&key, path)? || self.file_exists(&key, path)? {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists", path.display()),
                    ));
                }
                self.virtual_dirs().insert(key);
                Ok(())
            }
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        match self.side(path) {
            Side::Local => self.local.create_dir_all(path),
            Side::Above => Ok(()),
            Side::Key(key) => {
                if !self.dir_exists(&key, path)? {
                    self.virtual_dirs().insert(key);
                }
                Ok(())
            }
        }
    }

    fn create_new(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        match self.side(path) {
            Side::Local => self.local.create_new(path, bytes),
            Side::Above => Err(os_err(libc::EEXIST, path, "exists")),
            Side::Key(key) => match create_resolving(&*self.store, &key, bytes) {
                Ok(Created::Ours) => {
                    self.forget_virtual_above(&key);
                    Ok(())
                }
                Ok(Created::Lost) => Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                )),
                Err(e) => Err(io_err(e, path)),
            },
        }
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        match self.side(path) {
            Side::Local => self.local.write(path, bytes),
            Side::Above => Err(os_err(libc::EISDIR, path, "a directory")),
            Side::Key(key) => self.put(&key, bytes, path),
        }
    }

    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        match self.side(path) {
            Side::Local => self.local.append(path, bytes),
            Side::Above => Err(os_err(libc::EISDIR, path, "a directory")),
            Side::Key(key) => {
                // Objects cannot grow: read, extend, put (only logs append).
                let mut all = match self.store.get(&key) {
                    Ok(b) => b,
                    Err(ObjError::NotFound) => Vec::new(),
                    Err(e) => return Err(io_err(e, path)),
                };
                all.extend_from_slice(bytes);
                self.put(&key, &all, path)
            }
        }
    }

    fn fsync_file(&self, path: &Path) -> io::Result<()> {
        match self.side(path) {
            Side::Local => self.local.fsync_file(path),
            // A put that answered is durable.
            _ => Ok(()),
        }
    }

    fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        match self.side(dir) {
            Side::Local => self.local.fsync_dir(dir),
            _ => Ok(()),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match (self.side(from), self.side(to)) {
            (Side::Local, Side::Local) => self.local.rename(from, to),
            (Side::Key(a), Side::Key(b)) => {
                if self.file_exists(&a, from)? {
                    if self.dir_exists(&b, to)? {
                        return Err(os_err(libc::EISDIR, to, "a directory is there"));
                    }
                    self.copy_object(&a, &b, PutMode::Overwrite, to)?;
                    self.store.delete(&a).map_err(|e| io_err(e, from))
                } else {
                    self.rename_dir(&a, &b, from, to)
                }
            }
            _ => Err(cross(to)),
        }
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        match (self.side(from), self.side(to)) {
            (Side::Local, Side::Local) => self.local.rename_noreplace(from, to),
            _ => Err(os_err(
                libc::EINVAL,
                to,
                "an object store has no rename flags",
            )),
        }
    }

    fn rename_exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        match (self.side(a), self.side(b)) {
            (Side::Local, Side::Local) => self.local.rename_exchange(a, b),
            _ => Err(os_err(
                libc::EINVAL,
                b,
                "an object store has no rename flags",
            )),
        }
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        match (self.side(from), self.side(to)) {
            (Side::Local, Side::Local) => self.local.hard_link(from, to),
            _ => Err(os_err(libc::EPERM, to, "an object store has no links")),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self.side(path) {
            Side::Local => self.local.remove_file(path),
            Side::Above => Err(os_err(libc::EISDIR, path, "a directory")),
            Side::Key(key) => {
                if !self.file_exists(&key, path)? {
                    return Err(not_found(path));
                }
                self.store.delete(&key).map_err(|e| io_err(e, path))
            }
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match self.side(path) {
            Side::Local => self.local.remove_dir_all(path),
            Side::Above => Err(os_err(libc::EPERM, path, "above OUT")),
            Side::Key(key) => {
                let keys = self.objects_below(&key, path)?;
                let was_virtual = {
                    let mut dirs = self.virtual_dirs();
                    let below = Self::dir_prefix(&key);
                    let gone: Vec<String> = dirs
                        .range(key.clone()..)
                        .take_while(|d| *d == &key || d.starts_with(&below))
                        .cloned()
                        .collect();
                    for d in &gone {
                        dirs.remove(d);
                    }
                    !gone.is_empty()
                };
                if keys.is_empty() && !was_virtual {
                    return Err(not_found(path));
                }
                for k in &keys {
                    self.store.delete(k).map_err(|e| io_err(e, path))?;
                }
                Ok(())
            }
        }
    }

    fn unique(&self) -> String {
        format!("{}{}", self.nonce, self.local.unique())
    }

    fn caps(&self, path: &Path) -> Caps {
        match self.side(path) {
            Side::Local => self.local.caps(path),
            _ => Caps::OBJECTS,
        }
    }

    fn available_bytes(&self, path: &Path) -> Option<u64> {
        match self.side(path) {
            Side::Local => self.local.available_bytes(path),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::sim::SimFs;
    use crate::store::sim::SimObjects;

    fn world() -> (BucketFs, Arc<SimObjects>) {
        let store = Arc::new(SimObjects::new());
        let fs = BucketFs::new(
            Arc::new(SimFs::new()),
            PathBuf::from("s3://bucket/out"),
            "out",
            store.clone(),
            "h1-".into(),
        );
        (fs, store)
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(format!("s3://bucket/out/{s}"))
    }

    #[test]
    fn files_are_objects_and_directories_exist_while_something_is_below() {
        let (fs, store) = world();
        assert!(fs.is_dir(Path::new("s3://bucket/out")));
        assert!(!fs.exists(&p("a")));
        fs.create_dir_all(&p("a/b")).unwrap();
        assert!(fs.is_dir(&p("a/b")), "a directory this process made");
        fs.create_new(&p("a/b/f.json"), b"1").unwrap();
        assert_eq!(
            fs.create_new(&p("a/b/f.json"), b"2").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs.read(&p("a/b/f.json")).unwrap(), b"1");
        assert_eq!(
            store.objects().keys().cloned().collect::<Vec<_>>(),
            vec!["out/a/b/f.json".to_string()]
        );
        assert_eq!(
            fs.list(&p("a")).unwrap(),
            vec![Entry {
                name: "b".into(),
                is_dir: true
            }]
        );
        assert_eq!(fs.metadata(&p("a/b/f.json")).unwrap().len, 1);
        fs.remove_dir_all(&p("a")).unwrap();
        assert!(!fs.exists(&p("a")));
        assert_eq!(
            fs.list(&p("a")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn publishing_a_directory_claims_its_name_once() {
        let (fs, _) = world();
        for staged in ["s1", "s2"] {
            fs.create_dir(&p(staged)).unwrap();
            fs.create_new(&p(&format!("{staged}/lease-1.json")), staged.as_bytes())
                .unwrap();
        }
        crate::fs::publish_dir(&fs, &p("s1"), &p("v1")).unwrap();
        let lost = crate::fs::publish_dir(&fs, &p("s2"), &p("v1")).unwrap_err();
        assert_eq!(lost.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs.read(&p("v1/lease-1.json")).unwrap(), b"s1");
        assert!(!fs.exists(&p("s1")));
        assert!(
            fs.exists(&p("s2")),
            "the loser's staged copy stays for it to remove"
        );
    }

    #[test]
    fn replacing_a_file_is_one_put_and_paths_outside_out_are_local() {
        let (fs, store) = world();
        crate::fs::write_atomic(&fs, &p("m/metadata.json"), b"a").unwrap();
        crate::fs::write_atomic(&fs, &p("m/metadata.json"), b"b").unwrap();
        assert_eq!(fs.read(&p("m/metadata.json")).unwrap(), b"b");
        let counts = store.counts();
        assert_eq!(counts.get("put_overwrite"), Some(&2));
        assert_eq!(counts.get("delete"), None, "no temporary was made");
        fs.create_dir_all(Path::new("/root/x")).unwrap();
        fs.write(Path::new("/root/x/f"), b"local").unwrap();
        assert_eq!(fs.read(Path::new("/root/x/f")).unwrap(), b"local");
        assert_eq!(store.objects().len(), 1);
        assert_eq!(fs.caps(&p("m")), Caps::OBJECTS);
    }
}
