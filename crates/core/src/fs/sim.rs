//! SimFs owns the simulated filesystem and its crash model; it must never touch the real
//! filesystem, the clock, threads or any global state.
//!
//! # Model
//!
//! A tree of directories and files addressed by absolute paths (`/` always exists; `..` is
//! refused). Files and directories are inodes with ids, so a rename moves the same inode and
//! content identity survives renames. Two states are kept:
//!
//! - VOLATILE: what running processes see; every read, list and metadata call uses it.
//! - DURABLE: what survives a crash. `fsync_file` makes one inode's content durable (durable
//!   content := volatile content). `fsync_dir` makes one directory's entries durable (durable
//!   entries := volatile entries, names → inodes). A directory that is named durably but was
//!   never itself fsynced has durably no entries; a file whose content was never fsynced is
//!   durably empty. As in `OsFs` (where both are `sync_all`), `fsync_file` of a directory syncs
//!   the directory and `fsync_dir` of a file syncs the file.
//!
//! Every mutation that is not yet durable sits in an ordered log: data writes per inode
//! (offset, bytes, truncate), and directory-entry changes per directory (link, unlink,
//! rename; a rename across two directories is ONE atomic log entry with two sides, and fsync of
//! one directory makes only that side durable). `remove_dir_all` logs one unlink per entry,
//! children first, as the OS does. An fsync drops the log entries it made durable.
//!
//! `crash(seed)`: power loss. The new volatile and durable state is the durable state plus a
//! seed-chosen subset of the log, applied in log order; an entry whose precondition no longer
//! holds is skipped (a rename whose source is gone, a link over an existing name, an unlink of
//! a name that now names something else, a rmdir of a non-empty directory). A rename is applied
//! whole or not at all. The seed may also tear ONE file's last kept data write: the write is cut
//! at a 4096-byte file-offset boundary (possibly keeping 0 bytes), as LazyFS `torn-op` does.
//! The subset is chosen by a splitmix64 stream: a prefix (ALICE), all-but-one, fair coins, or
//! coins of a random bias. After replay only what is reachable from `/` remains; a directory
//! named in two places (only possible when one side of a cross-directory move was synced and
//! the other was not) keeps its most recently created name, since a directory has one parent.
//! `crash_all_lost` keeps nothing from the log (pure durable state).
//!
//! Crash points and faults: `op_count` counts mutating calls (create_dir, create_dir_all,
//! create_new, write, append, fsync_file, fsync_dir, rename, rename_noreplace, rename_exchange,
//! hard_link, remove_file, remove_dir_all) made while alive, whatever their outcome.
//! `die_after(k)`: the next k of them run, then the process is dead and every call (reads included)
//! fails with `io::Error::other("simulated crash")` until `crash` revives it. `fail_op(k, fault)`:
//! the k-th mutating call from now (0 = next) fails with ENOSPC or EIO and has no effect. `crash`
//! clears the dead flag, a pending `die_after` and pending faults; `op_count` keeps counting.
//!
//! Storage profiles (docs/contract.md, "Storage profiles"): `with_caps` makes a filesystem
//! without rename flags (`rename_noreplace` and `rename_exchange` fail with EINVAL, as NFS and
//! FUSE answer) and/or without hard links (`hard_link` fails with EPERM). `set_byte_budget`
//! makes every write that would take the reachable file bytes over the budget fail with ENOSPC
//! (no effect); `set_read_only` makes every mutation but fsync fail with EROFS. An exchange is
//! one log entry within one directory, applied whole or not at all; a hard link is a `Link`
//! entry naming an existing file inode.
//!
//! Errors are `io::Error::from_raw_os_error` with the errno Linux gives (ENOENT, EEXIST,
//! ENOTDIR, EISDIR, ENOTEMPTY, EINVAL, EBUSY, EPERM, ENOSPC, EROFS), so kinds match `OsFs`.
//! Everything is deterministic: ids, sequence numbers and `unique()` are counters; maps are
//! ordered.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{Caps, Entry, Fs, Meta};

/// Inode id (files and directories share one id space).
type Id = u64;
const ROOT: Id = 0;
/// Torn writes are cut at multiples of this file offset.
const PAGE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    File(Id),
    Dir(Id),
}

/// A directory entry: the inode it names and the sequence number of the operation that
/// created this name (used to pick the newest name of a directory after a crash).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Link {
    node: Node,
    seq: u64,
}

type Entries = BTreeMap<String, Link>;

/// One state of the filesystem (volatile or durable). `dirs` may hold unreachable directories
/// (removed, or not yet known to be gone); only what is reachable from `ROOT` is visible.
#[derive(Clone, Debug, Default)]
struct Tree {
    dirs: BTreeMap<Id, Entries>,
    files: BTreeMap<Id, Vec<u8>>,
}

/// A not-yet-durable mutation.
#[derive(Clone, Debug)]
enum Change {
    /// Write `bytes` at `off` of file `file`, after truncating it to 0 when `trunc`.
    Data {
        file: Id,
        off: usize,
        bytes: Vec<u8>,
        trunc: bool,
    },
    /// `name` in `dir` now names `node` (create).
    Link { dir: Id, name: String, node: Node },
    /// `name` in `dir` (naming `node`) removed.
    Unlink { dir: Id, name: String, node: Node },
    /// The entries `a` and `b` of `dir` (naming `na` and `nb`) swapped.
    Exchange {
        dir: Id,
        a: String,
        b: String,
        na: Node,
        nb: Node,
    },
    /// `node` moved from `from` to `to`; a side is `None` once its directory was fsynced.
    Rename {
        node: Node,
        from: Option<(Id, String)>,
        to: Option<(Id, String)>,
        noreplace: bool,
    },
}

#[derive(Clone, Debug)]
struct Pending {
    seq: u64,
    change: Change,
}

/// An injected failure (see [`SimFs::fail_op`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// ENOSPC.
    NoSpace,
    /// EIO.
    Io,
}

impl Fault {
    fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            Fault::NoSpace => libc::ENOSPC,
            Fault::Io => libc::EIO,
        })
    }
}

/// What a crash did (tests count distinct crash states with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CrashReport {
    /// Not-yet-durable log entries when the power went.
    pub unsynced: usize,
    /// Entries chosen by the seed and applied (preconditions held).
    pub kept: usize,
    /// Whether one kept data write was torn at a 4096-byte boundary.
    pub torn: bool,
}

/// The crash model's randomness: the project's one PRNG, seeded by `crash(seed)`.
struct CrashRng(crate::rng::SplitMix64);

impl CrashRng {
    /// Uniform in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.0.below(n as u64) as usize
        }
    }
}

fn os(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn dead_error() -> io::Error {
    io::Error::other("simulated crash")
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("SimFs: {msg}"))
}

/// The names of an absolute path, `/` being the empty list (`.` and empty names skipped,
/// as `Path::components` does). One UTF-8 check for the whole path, then a byte split: this
/// runs on every simulated call.
fn components(path: &Path) -> io::Result<Vec<&str>> {
    let text = path
        .to_str()
        .ok_or_else(|| invalid("paths must be UTF-8"))?;
    if !text.starts_with('/') {
        return Err(invalid("paths must be absolute"));
    }
    let mut out = Vec::with_capacity(16);
    for name in text.split('/') {
        match name {
            "" | "." => {}
            ".." => return Err(invalid("`..` and prefixes are not supported")),
            name => out.push(name),
        }
    }
    Ok(out)
}

impl Tree {
    fn with_root() -> Tree {
        let mut t = Tree::default();
        t.dirs.insert(ROOT, Entries::new());
        t
    }

    fn entry(&self, dir: Id, name: &str) -> Option<&Link> {
        self.dirs.get(&dir).and_then(|e| e.get(name))
    }

    fn dir_is_empty(&self, dir: Id) -> bool {
        self.dirs.get(&dir).is_none_or(|e| e.is_empty())
    }

    /// The directory named by `comps` (ENOENT if missing, ENOTDIR through a file).
    fn walk_dir(&self, comps: &[&str]) -> io::Result<Id> {
        let mut cur = ROOT;
        for name in comps {
            match self.entry(cur, name) {
                None => return Err(os(libc::ENOENT)),
                Some(Link {
                    node: Node::File(_),
                    ..
                }) => return Err(os(libc::ENOTDIR)),
                Some(Link {
                    node: Node::Dir(d), ..
                }) => cur = *d,
            }
        }
        Ok(cur)
    }

    fn lookup(&self, comps: &[&str]) -> io::Result<Node> {
        match comps.split_last() {
            None => Ok(Node::Dir(ROOT)),
            Some((name, parent)) => {
                let dir = self.walk_dir(parent)?;
                self.entry(dir, name)
                    .map(|l| l.node)
                    .ok_or_else(|| os(libc::ENOENT))
            }
        }
    }

    /// Applies one log entry during crash replay; `limit` keeps only that many bytes of a
    /// data write (a torn write). Returns whether the entry's precondition held.
    fn replay(&mut self, p: &Pending, limit: Option<usize>) -> bool {
        match &p.change {
            Change::Data {
                file,
                off,
                bytes,
                trunc,
            } => {
                let content = self.files.entry(*file).or_default();
                if *trunc {
                    content.clear();
                }
                let kept = &bytes[..limit.unwrap_or(bytes.len()).min(bytes.len())];
                write_at(content, *off, kept);
                true
            }
            Change::Link { dir, name, node } => {
                let entries = self.dirs.entry(*dir).or_default();
                if entries.contains_key(name) {
                    return false;
                }
                entries.insert(
                    name.clone(),
                    Link {
                        node: *node,
                        seq: p.seq,
                    },
                );
                true
            }
            Change::Unlink { dir, name, node } => {
                if let Node::Dir(x) = node {
                    if !self.dir_is_empty(*x) {
                        return false;
                    }
                }
                if self.entry(*dir, name).is_none_or(|l| l.node != *node) {
                    return false;
                }
                self.dirs.entry(*dir).or_default().remove(name);
                true
            }
            Change::Exchange { dir, a, b, na, nb } => {
                let holds = |t: &Tree, name: &str, node: &Node| {
                    t.entry(*dir, name).is_some_and(|l| l.node == *node)
                };
                if !holds(self, a, na) || !holds(self, b, nb) {
                    return false;
                }
                let entries = self.dirs.entry(*dir).or_default();
                let link = |node: Node| Link { node, seq: p.seq };
                entries.insert(a.clone(), link(*nb));
                entries.insert(b.clone(), link(*na));
                true
            }
            Change::Rename {
                node,
                from,
                to,
                noreplace,
            } => self.replay_rename(p.seq, *node, from.as_ref(), to.as_ref(), *noreplace),
        }
    }

    /// A rename during crash replay: applied when the source still names `node` and the
    /// target may be replaced (absent, or a compatible node and not `noreplace`).
    fn replay_rename(
        &mut self,
        seq: u64,
        node: Node,
        from: Option<&(Id, String)>,
        to: Option<&(Id, String)>,
        noreplace: bool,
    ) -> bool {
        if let Some((fd, fname)) = from {
            if self.entry(*fd, fname).is_none_or(|l| l.node != node) {
                return false;
            }
        }
        if let Some((td, tname)) = to {
            if let Some(existing) = self.entry(*td, tname) {
                if noreplace {
                    return false;
                }
                let compatible = match (node, existing.node) {
                    _ if existing.node == node => true,
                    (Node::File(_), Node::File(_)) => true,
                    (Node::Dir(_), Node::Dir(y)) => self.dir_is_empty(y),
                    _ => false,
                };
                if !compatible {
                    return false;
                }
            }
        }
        if let Some((fd, fname)) = from {
            self.dirs.entry(*fd).or_default().remove(fname);
        }
        if let Some((td, tname)) = to {
            self.dirs
                .entry(*td)
                .or_default()
                .insert(tname.clone(), Link { node, seq });
        }
        true
    }

    /// What is reachable from `/`, each directory under its newest name only.
    fn materialize(&self) -> Tree {
        // The newest link of each directory wins (ties: first in id/name order).
        let mut home: BTreeMap<Id, (u64, Id, &str)> = BTreeMap::new();
        for (parent, entries) in &self.dirs {
            for (name, link) in entries {
                if let Node::Dir(x) = link.node {
                    if home.get(&x).is_none_or(|(seq, _, _)| link.seq > *seq) {
                        home.insert(x, (link.seq, *parent, name.as_str()));
                    }
                }
            }
        }
        let mut out = Tree::default();
        let mut stack = vec![ROOT];
        while let Some(d) = stack.pop() {
            if out.dirs.contains_key(&d) {
                continue;
            }
            let mut kept = Entries::new();
            for (name, link) in self.dirs.get(&d).into_iter().flatten() {
                match link.node {
                    Node::File(f) => {
                        out.files
                            .insert(f, self.files.get(&f).cloned().unwrap_or_default());
                    }
                    Node::Dir(x) => {
                        let at_home = home
                            .get(&x)
                            .is_some_and(|(_, p, n)| *p == d && *n == name.as_str());
                        if x == ROOT || !at_home {
                            continue;
                        }
                        stack.push(x);
                    }
                }
                kept.insert(name.clone(), link.clone());
            }
            out.dirs.insert(d, kept);
        }
        out
    }

    /// Files (with content) and directories reachable from `/`, by path.
    fn paths(&self) -> (BTreeMap<PathBuf, Vec<u8>>, BTreeSet<PathBuf>) {
        let mut files = BTreeMap::new();
        let mut dirs = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![(ROOT, PathBuf::from("/"))];
        while let Some((d, path)) = stack.pop() {
            if !seen.insert(d) {
                continue;
            }
            for (name, link) in self.dirs.get(&d).into_iter().flatten() {
                let child = path.join(name);
                match link.node {
                    Node::File(f) => {
                        files.insert(child, self.files.get(&f).cloned().unwrap_or_default());
                    }
                    Node::Dir(x) => stack.push((x, child)),
                }
            }
            dirs.insert(path);
        }
        (files, dirs)
    }
}

/// Writes `bytes` at `off`, zero-filling a gap (a hole) and extending the file as needed.
fn write_at(content: &mut Vec<u8>, off: usize, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if content.len() < off {
        content.resize(off, 0);
    }
    let end = off + bytes.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[off..end].copy_from_slice(bytes);
}

/// Which log entries a crash keeps: one of four seed-chosen shapes.
fn choose_kept(rng: &mut CrashRng, n: usize) -> Vec<bool> {
    match rng.below(4) {
        // A prefix: everything up to some point reached the disk (ALICE's prefixes).
        0 => {
            let k = rng.below(n + 1);
            (0..n).map(|i| i < k).collect()
        }
        // Everything but one (one reordered or dropped op).
        1 => {
            let skip = rng.below(n);
            (0..n).map(|i| i != skip).collect()
        }
        // Fair coins.
        2 => (0..n).map(|_| rng.below(2) == 0).collect(),
        // Coins of a random bias in 0..=100 %.
        _ => {
            let bias = rng.below(101);
            (0..n).map(|_| rng.below(100) < bias).collect()
        }
    }
}

#[derive(Clone, Debug)]
struct State {
    vol: Tree,
    dur: Tree,
    log: Vec<Pending>,
    next_id: Id,
    next_seq: u64,
    ops: u64,
    die_at: Option<u64>,
    dead: bool,
    faults: BTreeMap<u64, Fault>,
    unique: u64,
    caps: Caps,
    byte_budget: Option<u64>,
    read_only: bool,
}

impl Default for State {
    fn default() -> State {
        State {
            vol: Tree::with_root(),
            dur: Tree::with_root(),
            log: Vec::new(),
            next_id: ROOT + 1,
            next_seq: 0,
            ops: 0,
            die_at: None,
            dead: false,
            faults: BTreeMap::new(),
            unique: 0,
            caps: Caps::POSIX,
            byte_budget: None,
            read_only: false,
        }
    }
}

impl State {
    fn fresh_id(&mut self) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn push(&mut self, change: Change) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.log.push(Pending { seq, change });
        seq
    }

    fn vol_entries(&mut self, dir: Id) -> &mut Entries {
        self.vol.dirs.entry(dir).or_default()
    }

    fn add_link(&mut self, dir: Id, name: &str, node: Node) {
        let seq = self.push(Change::Link {
            dir,
            name: name.to_string(),
            node,
        });
        self.vol_entries(dir)
            .insert(name.to_string(), Link { node, seq });
    }

    fn unlink(&mut self, dir: Id, name: &str, node: Node) {
        self.vol_entries(dir).remove(name);
        self.push(Change::Unlink {
            dir,
            name: name.to_string(),
            node,
        });
    }

    fn new_dir_in(&mut self, dir: Id, name: &str) -> Id {
        let id = self.fresh_id();
        self.vol.dirs.insert(id, Entries::new());
        self.add_link(dir, name, Node::Dir(id));
        id
    }

    fn new_file_in(&mut self, dir: Id, name: &str) -> Id {
        let id = self.fresh_id();
        self.vol.files.insert(id, Vec::new());
        self.add_link(dir, name, Node::File(id));
        id
    }

    fn data(&mut self, file: Id, off: usize, bytes: &[u8], trunc: bool) {
        let content = self.vol.files.entry(file).or_default();
        if trunc {
            content.clear();
        }
        write_at(content, off, bytes);
        self.push(Change::Data {
            file,
            off,
            bytes: bytes.to_vec(),
            trunc,
        });
    }

    /// The parent directory and name of `path`, and what the name holds; `None` for `/`.
    fn split(&self, path: &Path) -> io::Result<Option<(Id, String, Option<Node>)>> {
        let comps = components(path)?;
        let Some((name, parent)) = comps.split_last() else {
            return Ok(None);
        };
        let dir = self.vol.walk_dir(parent)?;
        let node = self.vol.entry(dir, name).map(|l| l.node);
        Ok(Some((dir, name.to_string(), node)))
    }

    // Reads.

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        match self.vol.lookup(&components(path)?)? {
            Node::File(f) => Ok(self.vol.files.get(&f).cloned().unwrap_or_default()),
            Node::Dir(_) => Err(os(libc::EISDIR)),
        }
    }

    fn list(&self, path: &Path) -> io::Result<Vec<Entry>> {
        match self.vol.lookup(&components(path)?)? {
            Node::File(_) => Err(os(libc::ENOTDIR)),
            Node::Dir(d) => Ok(self
                .vol
                .dirs
                .get(&d)
                .into_iter()
                .flatten()
                .map(|(name, link)| Entry {
                    name: name.clone(),
                    is_dir: matches!(link.node, Node::Dir(_)),
                })
                .collect()),
        }
    }

    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        Ok(match self.vol.lookup(&components(path)?)? {
            Node::File(f) => Meta {
                is_dir: false,
                len: self.vol.files.get(&f).map_or(0, |c| c.len() as u64),
                special: false,
            },
            Node::Dir(_) => Meta {
                is_dir: true,
                len: 0,
                special: false,
            },
        })
    }

    // Mutations: each validates everything before changing anything.

    fn create_dir(&mut self, path: &Path) -> io::Result<()> {
        match self.split(path)? {
            None | Some((_, _, Some(_))) => Err(os(libc::EEXIST)),
            Some((dir, name, None)) => {
                self.new_dir_in(dir, &name);
                Ok(())
            }
        }
    }

    fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        let comps = components(path)?;
        let mut cur = ROOT;
        let mut i = 0;
        while i < comps.len() {
            match self.vol.entry(cur, comps[i]).map(|l| l.node) {
                Some(Node::Dir(d)) => cur = d,
                Some(Node::File(_)) if i + 1 == comps.len() => return Err(os(libc::EEXIST)),
                Some(Node::File(_)) => return Err(os(libc::ENOTDIR)),
                None => break,
            }
            i += 1;
        }
        for name in &comps[i..] {
            cur = self.new_dir_in(cur, name);
        }
        Ok(())
    }

    /// Bytes of the files reachable from `/` (each inode once).
    fn used_bytes(&self) -> u64 {
        let mut seen = BTreeSet::new();
        let mut total = 0u64;
        let mut stack = vec![ROOT];
        while let Some(d) = stack.pop() {
            for link in self.vol.dirs.get(&d).into_iter().flatten().map(|(_, l)| l) {
                match link.node {
                    Node::File(f) if seen.insert(f) => {
                        total += self.vol.files.get(&f).map_or(0, |c| c.len() as u64);
                    }
                    Node::File(_) => {}
                    Node::Dir(x) if x != ROOT && seen.insert(x) => stack.push(x),
                    Node::Dir(_) => {}
                }
            }
        }
        total
    }

    /// ENOSPC when growing a file from `old` to `new` bytes would exceed the budget.
    fn check_space(&self, old: u64, new: u64) -> io::Result<()> {
        match self.byte_budget {
            Some(budget) if new > old && self.used_bytes() + (new - old) > budget => {
                Err(os(libc::ENOSPC))
            }
            _ => Ok(()),
        }
    }

    fn file_len(&self, node: Option<Node>) -> u64 {
        match node {
            Some(Node::File(f)) => self.vol.files.get(&f).map_or(0, |c| c.len() as u64),
            _ => 0,
        }
    }

    fn hard_link(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        if !self.caps.hard_link {
            return Err(os(libc::EPERM));
        }
        let file = match self.split(from)? {
            None | Some((_, _, Some(Node::Dir(_)))) => return Err(os(libc::EPERM)),
            Some((_, _, None)) => return Err(os(libc::ENOENT)),
            Some((_, _, Some(node))) => node,
        };
        match self.split(to)? {
            None | Some((_, _, Some(_))) => Err(os(libc::EEXIST)),
            Some((dir, name, None)) => {
                self.add_link(dir, &name, file);
                Ok(())
            }
        }
    }

    fn exchange(&mut self, a: &Path, b: &Path) -> io::Result<()> {
        if !self.caps.rename_exchange {
            return Err(os(libc::EINVAL));
        }
        let (Some((da, na, Some(xa))), Some((db, nb, Some(xb)))) = (self.split(a)?, self.split(b)?)
        else {
            return Err(os(libc::ENOENT));
        };
        if da != db {
            return Err(invalid("exchange is simulated within one directory only"));
        }
        if xa == xb {
            return Ok(());
        }
        let seq = self.push(Change::Exchange {
            dir: da,
            a: na.clone(),
            b: nb.clone(),
            na: xa,
            nb: xb,
        });
        let entries = self.vol_entries(da);
        entries.insert(na, Link { node: xb, seq });
        entries.insert(nb, Link { node: xa, seq });
        Ok(())
    }

    fn create_new(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.check_space(0, bytes.len() as u64)?;
        match self.split(path)? {
            None | Some((_, _, Some(_))) => Err(os(libc::EEXIST)),
            Some((dir, name, None)) => {
                let f = self.new_file_in(dir, &name);
                if !bytes.is_empty() {
                    self.data(f, 0, bytes, true);
                }
                Ok(())
            }
        }
    }

    fn write(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Some((_, _, node)) = self.split(path)? {
            self.check_space(self.file_len(node), bytes.len() as u64)?;
        }
        match self.split(path)? {
            None | Some((_, _, Some(Node::Dir(_)))) => Err(os(libc::EISDIR)),
            Some((_, _, Some(Node::File(f)))) => {
                self.data(f, 0, bytes, true);
                Ok(())
            }
            Some((dir, name, None)) => {
                let f = self.new_file_in(dir, &name);
                if !bytes.is_empty() {
                    self.data(f, 0, bytes, true);
                }
                Ok(())
            }
        }
    }

    fn append(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Some((_, _, node)) = self.split(path)? {
            let old = self.file_len(node);
            self.check_space(old, old + bytes.len() as u64)?;
        }
        let f = match self.split(path)? {
            None | Some((_, _, Some(Node::Dir(_)))) => return Err(os(libc::EISDIR)),
            Some((_, _, Some(Node::File(f)))) => f,
            Some((dir, name, None)) => self.new_file_in(dir, &name),
        };
        if !bytes.is_empty() {
            let off = self.vol.files.get(&f).map_or(0, Vec::len);
            self.data(f, off, bytes, false);
        }
        Ok(())
    }

    fn fsync(&mut self, path: &Path) -> io::Result<()> {
        match self.vol.lookup(&components(path)?)? {
            Node::File(f) => self.sync_file(f),
            Node::Dir(d) => self.sync_dir(d),
        }
        Ok(())
    }

    fn sync_file(&mut self, f: Id) {
        let content = self.vol.files.get(&f).cloned().unwrap_or_default();
        self.dur.files.insert(f, content);
        self.log
            .retain(|p| !matches!(&p.change, Change::Data { file, .. } if *file == f));
    }

    fn sync_dir(&mut self, d: Id) {
        let entries = self.vol.dirs.get(&d).cloned().unwrap_or_default();
        self.dur.dirs.insert(d, entries);
        self.log.retain_mut(|p| match &mut p.change {
            Change::Data { .. } => true,
            Change::Link { dir, .. }
            | Change::Unlink { dir, .. }
            | Change::Exchange { dir, .. } => *dir != d,
            Change::Rename { from, to, .. } => {
                if from.as_ref().is_some_and(|(x, _)| *x == d) {
                    *from = None;
                }
                if to.as_ref().is_some_and(|(x, _)| *x == d) {
                    *to = None;
                }
                from.is_some() || to.is_some()
            }
        });
    }

    fn rename(&mut self, from: &Path, to: &Path, noreplace: bool) -> io::Result<()> {
        if noreplace && !self.caps.rename_noreplace {
            return Err(os(libc::EINVAL));
        }
        let Some((fd, fname, fnode)) = self.split(from)? else {
            return Err(os(libc::EBUSY));
        };
        let node = fnode.ok_or_else(|| os(libc::ENOENT))?;
        let Some((td, tname, existing)) = self.split(to)? else {
            return Err(os(if noreplace { libc::EEXIST } else { libc::EBUSY }));
        };
        if let Node::Dir(_) = node {
            let (fc, tc) = (components(from)?, components(to)?);
            if tc.len() > fc.len() && tc.starts_with(&fc) {
                return Err(os(libc::EINVAL));
            }
        }
        if let Some(target) = existing {
            if noreplace {
                return Err(os(libc::EEXIST));
            }
            if target == node {
                // POSIX: renaming a name onto a link of the same inode does nothing.
                return Ok(());
            }
            match (node, target) {
                (Node::File(_), Node::File(_)) => {}
                (Node::File(_), Node::Dir(_)) => return Err(os(libc::EISDIR)),
                (Node::Dir(_), Node::File(_)) => return Err(os(libc::ENOTDIR)),
                (Node::Dir(_), Node::Dir(y)) => {
                    if !self.vol.dir_is_empty(y) {
                        return Err(os(libc::ENOTEMPTY));
                    }
                    self.vol.dirs.remove(&y);
                }
            }
        }
        self.vol_entries(fd).remove(&fname);
        let seq = self.push(Change::Rename {
            node,
            from: Some((fd, fname)),
            to: Some((td, tname.clone())),
            noreplace,
        });
        self.vol_entries(td).insert(tname, Link { node, seq });
        Ok(())
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        match self.split(path)? {
            None | Some((_, _, Some(Node::Dir(_)))) => Err(os(libc::EISDIR)),
            Some((_, _, None)) => Err(os(libc::ENOENT)),
            Some((dir, name, Some(node))) => {
                self.unlink(dir, &name, node);
                Ok(())
            }
        }
    }

    fn remove_dir_all(&mut self, path: &Path) -> io::Result<()> {
        match self.split(path)? {
            None => Err(os(libc::EBUSY)),
            Some((_, _, None)) => Err(os(libc::ENOENT)),
            Some((_, _, Some(Node::File(_)))) => Err(os(libc::ENOTDIR)),
            Some((dir, name, Some(Node::Dir(x)))) => {
                self.remove_tree(x);
                self.unlink(dir, &name, Node::Dir(x));
                Ok(())
            }
        }
    }

    /// Unlinks everything below `x`, children first, one log entry per name.
    fn remove_tree(&mut self, x: Id) {
        let entries = self.vol.dirs.get(&x).cloned().unwrap_or_default();
        for (name, link) in entries {
            if let Node::Dir(y) = link.node {
                self.remove_tree(y);
            }
            self.unlink(x, &name, link.node);
        }
        self.vol.dirs.remove(&x);
    }

    // Crash.

    fn crash(&mut self, seed: u64, keep_nothing: bool) -> CrashReport {
        let mut rng = CrashRng(crate::rng::SplitMix64::new(seed));
        let unsynced = self.log.len();
        let keep = if keep_nothing {
            vec![false; unsynced]
        } else {
            choose_kept(&mut rng, unsynced)
        };

        // The last kept data write of each file; one of them may be torn.
        let mut last: BTreeMap<Id, usize> = BTreeMap::new();
        for (i, p) in self.log.iter().enumerate() {
            if let (true, Change::Data { file, .. }) = (keep[i], &p.change) {
                last.insert(*file, i);
            }
        }
        let tearable: Vec<usize> = last
            .into_values()
            .filter(
                |i| matches!(&self.log[*i].change, Change::Data { bytes, .. } if !bytes.is_empty()),
            )
            .collect();
        let mut tear: Option<(usize, usize)> = None;
        if !keep_nothing && !tearable.is_empty() && rng.below(2) == 0 {
            let i = tearable[rng.below(tearable.len())];
            if let Change::Data { off, bytes, .. } = &self.log[i].change {
                let end = off + bytes.len();
                // Cut points: the write's start, then every page boundary strictly inside it.
                let first = (off / PAGE + 1) * PAGE;
                let inner = if first < end {
                    (end - 1 - first) / PAGE + 1
                } else {
                    0
                };
                let j = rng.below(inner + 1);
                let keep_len = if j == 0 {
                    0
                } else {
                    first + (j - 1) * PAGE - off
                };
                tear = Some((i, keep_len));
            }
        }

        let mut state = self.dur.clone();
        let mut kept = 0;
        for (i, p) in self.log.iter().enumerate() {
            if !keep[i] {
                continue;
            }
            let limit = tear.filter(|(t, _)| *t == i).map(|(_, n)| n);
            if state.replay(p, limit) {
                kept += 1;
            }
        }
        let after = state.materialize();
        self.vol = after.clone();
        self.dur = after;
        self.log.clear();
        self.dead = false;
        self.die_at = None;
        self.faults.clear();
        CrashReport {
            unsynced,
            kept,
            torn: tear.is_some(),
        }
    }
}

/// The simulated filesystem. Cheap to create; all state behind one mutex.
#[derive(Debug, Default)]
pub struct SimFs {
    inner: Mutex<State>,
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// A simulated filesystem with the storage profile `caps` (which rename flags and links
    /// it has).
    pub fn with_caps(caps: Caps) -> SimFs {
        let fs = SimFs::default();
        fs.state().caps = caps;
        fs
    }

    /// From now on, writes that would take the reachable file bytes over `budget` fail with
    /// ENOSPC and have no effect (`None`: unlimited). Not a counted op.
    pub fn set_byte_budget(&self, budget: Option<u64>) {
        self.state().byte_budget = budget;
    }

    /// Bytes of the files reachable from `/` now.
    pub fn used_bytes(&self) -> u64 {
        self.state().used_bytes()
    }

    /// From now on (until `false`), every mutation but fsync fails with EROFS and has no
    /// effect. Not a counted op.
    pub fn set_read_only(&self, read_only: bool) {
        self.state().read_only = read_only;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn observe<T>(&self, f: impl FnOnce(&State) -> io::Result<T>) -> io::Result<T> {
        let s = self.state();
        if s.dead {
            return Err(dead_error());
        }
        f(&s)
    }

    /// One mutating call: dead check, op counting, fault injection, a read-only filesystem
    /// (every call but fsync refused), death after the k-th.
    fn mutate<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        self.mutate_op(false, f)
    }

    fn mutate_op<T>(
        &self,
        is_fsync: bool,
        f: impl FnOnce(&mut State) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut s = self.state();
        if s.dead {
            return Err(dead_error());
        }
        let index = s.ops;
        s.ops += 1;
        let result = match s.faults.remove(&index) {
            Some(fault) => Err(fault.error()),
            None if s.read_only && !is_fsync => Err(os(libc::EROFS)),
            None => f(&mut s),
        };
        if s.die_at == Some(s.ops) {
            s.dead = true;
            s.die_at = None;
        }
        result
    }

    /// Power loss: the durable state plus a `seed`-chosen subset of the unsynced log (one
    /// data write possibly torn) becomes the new state; revives a dead process.
    pub fn crash(&self, seed: u64) -> CrashReport {
        self.state().crash(seed, false)
    }

    /// Power loss keeping nothing unsynced: exactly the durable state survives.
    pub fn crash_all_lost(&self) -> CrashReport {
        self.state().crash(0, true)
    }

    /// Mutating calls made so far while alive (failed ones included).
    pub fn op_count(&self) -> u64 {
        self.state().ops
    }

    /// An independent copy of this filesystem in its current state (volatile and durable
    /// trees, the unsynced log, op count, profile): crash exploration runs a command's
    /// prefix once and forks it for every crash point.
    pub fn fork(&self) -> SimFs {
        SimFs {
            inner: Mutex::new(self.state().clone()),
        }
    }

    /// The next `k` mutating calls run, then every call fails until `crash`.
    pub fn die_after(&self, k: u64) {
        let mut s = self.state();
        if k == 0 {
            s.dead = true;
            s.die_at = None;
        } else {
            s.die_at = Some(s.ops + k);
        }
    }

    pub fn is_dead(&self) -> bool {
        self.state().dead
    }

    /// The `k`-th mutating call from now (0 = the next) fails with `fault` and has no effect.
    pub fn fail_op(&self, k: u64, fault: Fault) {
        let mut s = self.state();
        let at = s.ops + k;
        s.faults.insert(at, fault);
    }

    /// Not-yet-durable log entries.
    pub fn unsynced_ops(&self) -> usize {
        self.state().log.len()
    }

    /// Volatile files by path (what a process reads now). Works while dead.
    pub fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        self.state().vol.paths().0
    }

    /// Volatile directories by path, `/` included. Works while dead.
    pub fn dirs(&self) -> BTreeSet<PathBuf> {
        self.state().vol.paths().1
    }

    /// The files `crash_all_lost` would leave.
    pub fn durable_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        self.state().dur.materialize().paths().0
    }

    /// The directories `crash_all_lost` would leave.
    pub fn durable_dirs(&self) -> BTreeSet<PathBuf> {
        self.state().dur.materialize().paths().1
    }

    /// Makes the whole volatile state durable (what `sync(2)` does). Not a counted op.
    pub fn sync_all(&self) {
        let mut s = self.state();
        s.dur = s.vol.clone();
        s.log.clear();
    }

    /// Test seeding: creates the missing parents, writes `bytes` (create or truncate) and makes
    /// the file, its name and every ancestor's entries durable. Not a counted op; fails only
    /// on a bad path or when dead.
    pub fn write_file_durably(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.state();
        if s.dead {
            return Err(dead_error());
        }
        let comps = components(path)?;
        let Some((_, parent_comps)) = comps.split_last() else {
            return Err(os(libc::EISDIR));
        };
        let parent: PathBuf = std::iter::once(Path::new("/"))
            .chain(parent_comps.iter().map(Path::new))
            .collect();
        s.create_dir_all(&parent)?;
        s.write(path, bytes)?;
        let mut cur = ROOT;
        s.sync_dir(cur);
        for name in parent_comps {
            match s.vol.entry(cur, name).map(|l| l.node) {
                Some(Node::Dir(d)) => cur = d,
                _ => return Err(os(libc::ENOTDIR)),
            }
            s.sync_dir(cur);
        }
        s.fsync(path)
    }
}

impl Fs for SimFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.observe(|s| s.read(path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        self.observe(|s| s.list(dir))
    }

    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        self.observe(|s| s.metadata(path))
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.mutate(|s| s.create_dir(path))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.mutate(|s| s.create_dir_all(path))
    }

    fn create_new(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.mutate(|s| s.create_new(path, bytes))
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.mutate(|s| s.write(path, bytes))
    }

    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.mutate(|s| s.append(path, bytes))
    }

    fn fsync_file(&self, path: &Path) -> io::Result<()> {
        self.mutate_op(true, |s| s.fsync(path))
    }

    fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        self.mutate_op(true, |s| s.fsync(dir))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate(|s| s.rename(from, to, false))
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate(|s| s.rename(from, to, true))
    }

    fn rename_exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.mutate(|s| s.exchange(a, b))
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate(|s| s.hard_link(from, to))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.mutate(|s| s.remove_file(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.mutate(|s| s.remove_dir_all(path))
    }

    fn unique(&self) -> String {
        let mut s = self.state();
        s.unique += 1;
        format!("sim-{}", s.unique)
    }

    fn caps(&self, _path: &Path) -> Caps {
        self.state().caps
    }

    fn available_bytes(&self, _path: &Path) -> Option<u64> {
        let s = self.state();
        s.byte_budget.map(|b| b.saturating_sub(s.used_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{create_durable, is_temp_name, publish_dir, write_atomic};
    use io::ErrorKind::{AlreadyExists, InvalidInput, NotFound};

    /// Seeds per crash point in the exhaustive crash tests.
    const SEEDS: u64 = 200;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    fn file(fs: &SimFs, path: &str) -> Option<Vec<u8>> {
        fs.files().get(p(path)).cloned()
    }

    fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> Option<i32> {
        r.expect_err("expected an error").raw_os_error()
    }

    fn kind<T: std::fmt::Debug>(r: io::Result<T>) -> io::ErrorKind {
        r.expect_err("expected an error").kind()
    }

    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
    }

    #[test]
    fn simfs_is_send_sync_default_with_root() {
        fn check<T: Send + Sync + Default>() {}
        check::<SimFs>();
        let fs = SimFs::new();
        assert_eq!(fs.dirs(), BTreeSet::from([PathBuf::from("/")]));
        assert!(fs.is_dir(p("/")));
        assert!(fs.files().is_empty());
    }

    #[test]
    fn posix_errors_match_linux() {
        let fs = SimFs::new();
        fs.create_dir(p("/a")).unwrap();
        assert_eq!(kind(fs.create_dir(p("/a"))), AlreadyExists);
        assert_eq!(kind(fs.create_dir(p("/"))), AlreadyExists);
        assert_eq!(kind(fs.create_dir(p("/x/y"))), NotFound);
        fs.write(p("/a/f"), b"1").unwrap();
        assert_eq!(kind(fs.create_dir(p("/a/f"))), AlreadyExists);
        assert_eq!(errno(fs.create_dir(p("/a/f/g"))), Some(libc::ENOTDIR));
        assert_eq!(kind(fs.create_new(p("/a/f"), b"2")), AlreadyExists);
        assert_eq!(kind(fs.create_new(p("/a"), b"2")), AlreadyExists);
        assert_eq!(kind(fs.create_new(p("/nope/f"), b"")), NotFound);
        assert_eq!(errno(fs.remove_file(p("/a"))), Some(libc::EISDIR));
        assert_eq!(kind(fs.remove_file(p("/a/nope"))), NotFound);
        assert_eq!(errno(fs.read(p("/a"))), Some(libc::EISDIR));
        assert_eq!(errno(fs.write(p("/a"), b"")), Some(libc::EISDIR));
        assert_eq!(errno(fs.list(p("/a/f"))), Some(libc::ENOTDIR));
        assert_eq!(errno(fs.read(p("/a/f/g"))), Some(libc::ENOTDIR));
        assert_eq!(errno(fs.remove_dir_all(p("/a/f"))), Some(libc::ENOTDIR));
        assert_eq!(kind(fs.remove_dir_all(p("/a/nope"))), NotFound);
        assert_eq!(kind(fs.read(p("relative"))), InvalidInput);
        assert_eq!(kind(fs.read(p("/a/../a/f"))), InvalidInput);
        assert_eq!(kind(fs.fsync_file(p("/a/nope"))), NotFound);

        fs.create_dir_all(p("/a/b/c")).unwrap();
        fs.create_dir_all(p("/a/b/c")).unwrap();
        fs.create_dir_all(p("/")).unwrap();
        assert_eq!(kind(fs.create_dir_all(p("/a/f"))), AlreadyExists);
        assert_eq!(errno(fs.create_dir_all(p("/a/f/x"))), Some(libc::ENOTDIR));

        // rename: a file replaces a file, never a directory; a directory replaces only an
        // empty directory and never moves into itself.
        fs.write(p("/a/g"), b"g").unwrap();
        fs.rename(p("/a/g"), p("/a/f")).unwrap();
        assert_eq!(file(&fs, "/a/f"), Some(b"g".to_vec()));
        assert!(!fs.exists(p("/a/g")));
        assert_eq!(errno(fs.rename(p("/a/f"), p("/a/b"))), Some(libc::EISDIR));
        assert_eq!(errno(fs.rename(p("/a/b"), p("/a/f"))), Some(libc::ENOTDIR));
        fs.create_dir(p("/a/full")).unwrap();
        fs.write(p("/a/full/x"), b"x").unwrap();
        assert_eq!(
            errno(fs.rename(p("/a/b"), p("/a/full"))),
            Some(libc::ENOTEMPTY)
        );
        fs.create_dir(p("/a/empty")).unwrap();
        fs.rename(p("/a/b"), p("/a/empty")).unwrap();
        assert!(fs.is_dir(p("/a/empty/c")));
        assert_eq!(
            errno(fs.rename(p("/a"), p("/a/empty/c/a"))),
            Some(libc::EINVAL)
        );
        assert_eq!(kind(fs.rename(p("/a/nope"), p("/a/z"))), NotFound);
        assert_eq!(kind(fs.rename(p("/a/f"), p("/nope/z"))), NotFound);
        fs.rename(p("/a/f"), p("/a/f")).unwrap();
        assert_eq!(file(&fs, "/a/f"), Some(b"g".to_vec()));
        assert_eq!(errno(fs.rename(p("/"), p("/b"))), Some(libc::EBUSY));
    }

    #[test]
    fn write_truncates_append_extends_list_is_sorted_metadata_has_len() {
        let fs = SimFs::new();
        fs.write(p("/f"), b"hello world").unwrap();
        fs.write(p("/f"), b"hi").unwrap();
        assert_eq!(fs.read(p("/f")).unwrap(), b"hi");
        fs.append(p("/f"), b" there").unwrap();
        assert_eq!(fs.read(p("/f")).unwrap(), b"hi there");
        fs.append(p("/g"), b"new").unwrap();
        assert_eq!(fs.read(p("/g")).unwrap(), b"new");
        fs.create_dir(p("/d")).unwrap();
        fs.create_new(p("/d/z"), b"").unwrap();
        fs.create_dir(p("/B")).unwrap();
        let names: Vec<(String, bool)> = fs
            .list(p("/"))
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.is_dir))
            .collect();
        let expected = [("B", true), ("d", true), ("f", false), ("g", false)];
        assert_eq!(
            names,
            expected.map(|(n, d)| (n.to_string(), d)).to_vec(),
            "sorted by name"
        );
        assert_eq!(
            fs.metadata(p("/f")).unwrap(),
            Meta {
                is_dir: false,
                len: 8,
                special: false
            }
        );
        assert!(fs.metadata(p("/d")).unwrap().is_dir);
        assert!(fs.is_file(p("/d/z")) && !fs.is_dir(p("/d/z")));
        fs.remove_dir_all(p("/d")).unwrap();
        fs.remove_file(p("/g")).unwrap();
        assert_eq!(
            fs.dirs(),
            BTreeSet::from([PathBuf::from("/"), PathBuf::from("/B")])
        );
        assert_eq!(fs.files().keys().collect::<Vec<_>>(), vec![p("/f")]);
    }

    #[test]
    fn unique_is_a_deterministic_counter() {
        let (a, b) = (SimFs::new(), SimFs::new());
        let xs: Vec<String> = (0..5).map(|_| a.unique()).collect();
        let ys: Vec<String> = (0..5).map(|_| b.unique()).collect();
        assert_eq!(xs, ys);
        assert_eq!(xs.iter().collect::<BTreeSet<_>>().len(), 5);
    }

    #[test]
    fn unsynced_file_content_is_lost_on_crash_all_lost() {
        let fs = SimFs::new();
        fs.write_file_durably(p("/d/old"), b"old").unwrap();
        // A new file whose name was synced but whose content was not: present and empty.
        fs.write(p("/d/f"), b"hello").unwrap();
        fs.fsync_dir(p("/d")).unwrap();
        // In-place overwrite and append of a durable file, never fsynced: old content.
        fs.write(p("/d/old"), b"new!").unwrap();
        fs.append(p("/d/old"), b"more").unwrap();
        // A file neither named nor written durably: gone.
        fs.write(p("/d/g"), b"gone").unwrap();
        let report = fs.crash_all_lost();
        assert_eq!(report.kept, 0);
        assert!(!report.torn);
        assert_eq!(file(&fs, "/d/f"), Some(Vec::new()));
        assert_eq!(file(&fs, "/d/old"), Some(b"old".to_vec()));
        assert_eq!(file(&fs, "/d/g"), None);
        // Once fsynced, the content survives.
        fs.write(p("/d/f"), b"hello").unwrap();
        fs.fsync_file(p("/d/f")).unwrap();
        assert_eq!(fs.durable_files().get(p("/d/f")), Some(&b"hello".to_vec()));
        fs.crash_all_lost();
        assert_eq!(file(&fs, "/d/f"), Some(b"hello".to_vec()));
        assert_eq!(fs.unsynced_ops(), 0);
    }

    #[test]
    fn fsynced_file_in_unsynced_dir_entry_is_lost() {
        let fs = SimFs::new();
        fs.write_file_durably(p("/d/keep"), b"k").unwrap();
        fs.create_new(p("/d/f"), b"data").unwrap();
        fs.fsync_file(p("/d/f")).unwrap();
        assert!(!fs.durable_files().contains_key(p("/d/f")));
        fs.crash_all_lost();
        assert_eq!(file(&fs, "/d/f"), None);
        assert_eq!(file(&fs, "/d/keep"), Some(b"k".to_vec()));
    }

    #[test]
    fn new_dir_named_durably_has_no_entries_until_fsynced() {
        let fs = SimFs::new();
        fs.write_file_durably(p("/out/.keep"), b"").unwrap();
        fs.create_dir_all(p("/out/a/b")).unwrap();
        fs.write(p("/out/a/b/f"), b"f").unwrap();
        fs.fsync_file(p("/out/a/b/f")).unwrap();
        fs.fsync_dir(p("/out")).unwrap();
        fs.crash_all_lost();
        assert!(fs.is_dir(p("/out/a")));
        assert_eq!(fs.list(p("/out/a")).unwrap(), Vec::new());
        // Each level needs its own parent fsynced; `fsync_file` of a directory syncs it too.
        fs.create_dir_all(p("/out/a/b")).unwrap();
        fs.write(p("/out/a/b/f"), b"f").unwrap();
        fs.fsync_file(p("/out/a/b/f")).unwrap();
        fs.fsync_dir(p("/out/a/b")).unwrap();
        fs.fsync_file(p("/out/a")).unwrap();
        fs.crash_all_lost();
        assert_eq!(file(&fs, "/out/a/b/f"), Some(b"f".to_vec()));
    }

    #[test]
    fn rename_survives_only_after_dir_fsync() {
        let fs = SimFs::new();
        fs.write_file_durably(p("/d/a"), b"A").unwrap();
        fs.rename(p("/d/a"), p("/d/b")).unwrap();
        assert_eq!(file(&fs, "/d/b"), Some(b"A".to_vec()));
        fs.crash_all_lost();
        assert_eq!(file(&fs, "/d/a"), Some(b"A".to_vec()));
        assert_eq!(file(&fs, "/d/b"), None);
        fs.rename(p("/d/a"), p("/d/b")).unwrap();
        fs.fsync_dir(p("/d")).unwrap();
        fs.crash_all_lost();
        assert_eq!(file(&fs, "/d/a"), None);
        assert_eq!(file(&fs, "/d/b"), Some(b"A".to_vec()));
    }

    #[test]
    fn content_identity_survives_rename() {
        // The inode moves: fsyncing it under its new name makes the content written under the
        // old name durable, and a second name never copies content.
        let fs = SimFs::new();
        fs.write_file_durably(p("/d/.keep"), b"").unwrap();
        fs.write(p("/d/tmp"), b"content").unwrap();
        fs.rename(p("/d/tmp"), p("/d/f")).unwrap();
        fs.fsync_file(p("/d/f")).unwrap();
        fs.fsync_dir(p("/d")).unwrap();
        assert_eq!(fs.unsynced_ops(), 0);
        fs.crash_all_lost();
        assert_eq!(file(&fs, "/d/f"), Some(b"content".to_vec()));
        assert_eq!(file(&fs, "/d/tmp"), None);
    }

    #[test]
    fn rename_is_atomic_in_every_crash() {
        let content = pattern(6000, 7);
        let setup = |fs: &SimFs| {
            fs.write_file_durably(p("/d/a"), &content).unwrap();
            fs.write_file_durably(p("/s/x"), b"x").unwrap();
            fs.write_file_durably(p("/t/.keep"), b"").unwrap();
            // Unrelated unsynced traffic around the renames.
            fs.write(p("/d/other"), &pattern(9000, 1)).unwrap();
            fs.rename(p("/d/a"), p("/d/b")).unwrap();
            fs.append(p("/d/other"), b"tail").unwrap();
            fs.rename(p("/s/x"), p("/t/x")).unwrap();
            fs.create_dir(p("/d/sub")).unwrap();
        };
        let (mut kept, mut dropped) = (0, 0);
        for seed in 0..SEEDS * 2 {
            let fs = SimFs::new();
            setup(&fs);
            fs.crash(seed);
            let (a, b) = (file(&fs, "/d/a"), file(&fs, "/d/b"));
            match (a, b) {
                (Some(c), None) => {
                    assert_eq!(c, content, "seed {seed}");
                    dropped += 1;
                }
                (None, Some(c)) => {
                    assert_eq!(c, content, "seed {seed}");
                    kept += 1;
                }
                other => panic!("seed {seed}: both or neither name: {other:?}"),
            }
            // Across directories too: one log entry, kept or dropped whole.
            let (sx, tx) = (file(&fs, "/s/x"), file(&fs, "/t/x"));
            assert!(sx.is_some() != tx.is_some(), "seed {seed}: {sx:?} {tx:?}");
        }
        assert!(kept > 0 && dropped > 0, "kept {kept}, dropped {dropped}");
    }

    #[test]
    fn dir_moved_across_dirs_has_one_name_after_every_crash() {
        let setup = |fs: &SimFs| {
            fs.write_file_durably(p("/s/x/y"), b"y").unwrap();
            fs.write_file_durably(p("/t/.keep"), b"").unwrap();
            fs.rename(p("/s/x"), p("/t/x")).unwrap();
        };
        // Target synced: the move is durable; the stale source name never resurfaces.
        for seed in 0..SEEDS {
            let fs = SimFs::new();
            setup(&fs);
            fs.fsync_dir(p("/t")).unwrap();
            fs.crash(seed);
            assert_eq!(file(&fs, "/t/x/y"), Some(b"y".to_vec()), "seed {seed}");
            assert!(!fs.exists(p("/s/x")), "seed {seed}");
        }
        // Only the source synced: the weak model may lose the directory (never duplicate it).
        let mut outcomes = BTreeSet::new();
        for seed in 0..SEEDS {
            let fs = SimFs::new();
            setup(&fs);
            fs.fsync_dir(p("/s")).unwrap();
            fs.crash(seed);
            assert!(!fs.exists(p("/s/x")), "seed {seed}");
            outcomes.insert(fs.exists(p("/t/x")));
        }
        assert_eq!(outcomes.len(), 2, "both lost and moved are reachable");
    }

    #[test]
    fn remove_dir_all_survives_only_after_parent_fsync() {
        let fs = SimFs::new();
        fs.write_file_durably(p("/d/sub/f1"), b"1").unwrap();
        fs.write_file_durably(p("/d/sub/deep/f2"), b"2").unwrap();
        fs.remove_dir_all(p("/d/sub")).unwrap();
        assert!(!fs.exists(p("/d/sub")));
        fs.crash_all_lost();
        assert_eq!(file(&fs, "/d/sub/f1"), Some(b"1".to_vec()));
        assert_eq!(file(&fs, "/d/sub/deep/f2"), Some(b"2".to_vec()));
        fs.remove_dir_all(p("/d/sub")).unwrap();
        fs.fsync_dir(p("/d")).unwrap();
        fs.crash_all_lost();
        assert_eq!(fs.dirs(), BTreeSet::from([p("/").into(), p("/d").into()]));
        assert!(fs.files().is_empty());
    }

    #[test]
    fn torn_write_cuts_at_4k_boundary() {
        let new = pattern(10_000, 3);
        let mut lens = BTreeSet::new();
        let mut torn = 0;
        for seed in 0..SEEDS * 2 {
            let fs = SimFs::new();
            fs.write_file_durably(p("/d/.keep"), b"").unwrap();
            fs.write(p("/d/f"), &new).unwrap();
            fs.fsync_dir(p("/d")).unwrap();
            let report = fs.crash(seed);
            let got = file(&fs, "/d/f").expect("the name was synced");
            assert!(new.starts_with(&got), "seed {seed}: not a prefix");
            assert!(
                got.len() == new.len() || got.len() % PAGE == 0,
                "seed {seed}"
            );
            if report.torn {
                torn += 1;
                assert!(got.len() < new.len(), "seed {seed}: torn but whole");
            }
            lens.insert(got.len());
        }
        assert!(torn > 0);
        assert_eq!(lens, BTreeSet::from([0, 4096, 8192, 10_000]));
    }

    #[test]
    fn torn_append_cuts_at_file_offset_4k_boundary() {
        let old = pattern(5000, 9);
        let more = pattern(10_000, 4);
        let mut full = old.clone();
        full.extend_from_slice(&more);
        let mut lens = BTreeSet::new();
        for seed in 0..SEEDS * 2 {
            let fs = SimFs::new();
            fs.write_file_durably(p("/d/log"), &old).unwrap();
            fs.append(p("/d/log"), &more).unwrap();
            fs.crash(seed);
            let got = file(&fs, "/d/log").unwrap();
            assert!(full.starts_with(&got), "seed {seed}");
            lens.insert(got.len());
        }
        assert_eq!(lens, BTreeSet::from([5000, 8192, 12_288, 15_000]));
    }

    #[test]
    fn rename_noreplace_refuses_existing_file_and_dir() {
        let fs = SimFs::new();
        fs.write_file_durably(p("/d/a"), b"A").unwrap();
        fs.write_file_durably(p("/d/b"), b"B").unwrap();
        fs.create_dir(p("/d/dir")).unwrap();
        fs.create_dir(p("/d/empty")).unwrap();
        let before = (fs.files(), fs.dirs(), fs.unsynced_ops());
        assert_eq!(
            kind(fs.rename_noreplace(p("/d/a"), p("/d/b"))),
            AlreadyExists
        );
        assert_eq!(
            kind(fs.rename_noreplace(p("/d/a"), p("/d/dir"))),
            AlreadyExists
        );
        assert_eq!(
            kind(fs.rename_noreplace(p("/d/dir"), p("/d/empty"))),
            AlreadyExists
        );
        assert_eq!(
            kind(fs.rename_noreplace(p("/d/a"), p("/d/a"))),
            AlreadyExists
        );
        assert_eq!(kind(fs.rename_noreplace(p("/d/a"), p("/"))), AlreadyExists);
        assert_eq!(kind(fs.rename_noreplace(p("/d/no"), p("/d/c"))), NotFound);
        assert_eq!((fs.files(), fs.dirs(), fs.unsynced_ops()), before);
        fs.rename_noreplace(p("/d/a"), p("/d/c")).unwrap();
        fs.rename_noreplace(p("/d/dir"), p("/d/moved")).unwrap();
        assert_eq!(file(&fs, "/d/c"), Some(b"A".to_vec()));
        assert!(!fs.exists(p("/d/a")) && fs.is_dir(p("/d/moved")));
    }

    #[test]
    fn die_after_k_stops_every_call() {
        let fs = SimFs::new();
        fs.write_file_durably(p("/d/a"), b"A").unwrap();
        let start = fs.op_count();
        fs.die_after(2);
        fs.create_dir(p("/d/x")).unwrap();
        assert!(!fs.is_dead());
        assert_eq!(
            kind(fs.create_dir(p("/d/x"))),
            AlreadyExists,
            "errors count"
        );
        assert!(fs.is_dead());
        let dead = |r: io::Result<()>| {
            let e = r.expect_err("dead");
            assert_eq!(e.kind(), io::ErrorKind::Other);
            assert_eq!(e.to_string(), "simulated crash");
        };
        dead(fs.read(p("/d/a")).map(drop));
        dead(fs.list(p("/d")).map(drop));
        dead(fs.metadata(p("/d")).map(drop));
        assert!(!fs.exists(p("/d/a")));
        dead(fs.create_dir(p("/d/y")));
        dead(fs.create_dir_all(p("/d/y")));
        dead(fs.create_new(p("/d/n"), b""));
        dead(fs.write(p("/d/a"), b"x"));
        dead(fs.append(p("/d/a"), b"x"));
        dead(fs.fsync_file(p("/d/a")));
        dead(fs.fsync_dir(p("/d")));
        dead(fs.rename(p("/d/a"), p("/d/b")));
        dead(fs.rename_noreplace(p("/d/a"), p("/d/b")));
        dead(fs.remove_file(p("/d/a")));
        dead(fs.remove_dir_all(p("/d")));
        dead(fs.write_file_durably(p("/d/z"), b""));
        assert_eq!(fs.op_count(), start + 2, "dead calls are not ops");
        fs.crash_all_lost();
        assert!(!fs.is_dead());
        assert_eq!(fs.read(p("/d/a")).unwrap(), b"A");
        assert!(!fs.exists(p("/d/x")));
        // k = 0: dead at once.
        fs.die_after(0);
        assert!(fs.is_dead());
        dead(fs.read(p("/d/a")).map(drop));
        fs.crash(1);
        assert_eq!(fs.read(p("/d/a")).unwrap(), b"A");
    }

    #[test]
    fn fail_op_has_no_effect() {
        type Op = fn(&SimFs) -> io::Result<()>;
        let ops: [Op; 11] = [
            |fs| fs.create_dir(p("/d/new")),
            |fs| fs.create_dir_all(p("/d/new/deeper")),
            |fs| fs.create_new(p("/d/n"), b"n"),
            |fs| fs.write(p("/d/a"), b"overwritten"),
            |fs| fs.append(p("/d/a"), b"appended"),
            |fs| fs.fsync_file(p("/d/b")),
            |fs| fs.fsync_dir(p("/d")),
            |fs| fs.rename(p("/d/a"), p("/d/b")),
            |fs| fs.rename_noreplace(p("/d/a"), p("/d/c")),
            |fs| fs.remove_file(p("/d/a")),
            |fs| fs.remove_dir_all(p("/d")),
        ];
        let snapshot = |fs: &SimFs| {
            (
                fs.files(),
                fs.dirs(),
                fs.durable_files(),
                fs.durable_dirs(),
                fs.unsynced_ops(),
            )
        };
        for (i, op) in ops.iter().enumerate() {
            for fault in [Fault::NoSpace, Fault::Io] {
                let fs = SimFs::new();
                fs.write_file_durably(p("/d/a"), b"A").unwrap();
                fs.write(p("/d/b"), b"unsynced").unwrap();
                let before = snapshot(&fs);
                let count = fs.op_count();
                fs.fail_op(1, fault);
                fs.append(p("/d/log"), b"x").unwrap();
                let before_fault = snapshot(&fs);
                assert_ne!(before, before_fault);
                let e = op(&fs).expect_err("injected");
                let want = match fault {
                    Fault::NoSpace => libc::ENOSPC,
                    Fault::Io => libc::EIO,
                };
                assert_eq!(e.raw_os_error(), Some(want), "op {i}");
                assert_eq!(snapshot(&fs), before_fault, "op {i} had an effect");
                assert_eq!(fs.op_count(), count + 2);
                // Later ops proceed normally.
                op(&fs).unwrap_or_else(|e| panic!("op {i} after the fault: {e}"));
            }
        }
    }

    fn workload(fs: &SimFs) {
        fs.write_file_durably(p("/d/a"), &pattern(10_000, 1))
            .unwrap();
        fs.write_file_durably(p("/e/.keep"), b"").unwrap();
        fs.write(p("/d/b"), &pattern(6000, 2)).unwrap();
        fs.append(p("/d/a"), &pattern(5000, 3)).unwrap();
        fs.rename(p("/d/b"), p("/d/c")).unwrap();
        fs.create_dir(p("/d/sub")).unwrap();
        fs.write(p("/d/sub/f"), b"f").unwrap();
        fs.fsync_file(p("/d/c")).unwrap();
        fs.rename(p("/d/sub"), p("/e/sub")).unwrap();
        fs.remove_file(p("/e/.keep")).unwrap();
        fs.write(p("/e/g"), &pattern(9000, 5)).unwrap();
    }

    #[test]
    fn crash_is_deterministic_per_seed() {
        let mut states = BTreeSet::new();
        for seed in 0..64 {
            let run = || {
                let fs = SimFs::new();
                workload(&fs);
                let report = fs.crash(seed);
                (report, fs.files(), fs.dirs(), fs.durable_files())
            };
            let (a, b) = (run(), run());
            assert_eq!(a, b, "seed {seed}");
            assert_eq!(a.1, a.3, "after a crash everything is durable");
            states.insert((a.1, a.2));
        }
        assert!(states.len() > 16, "only {} distinct states", states.len());
    }

    /// Runs `setup` then `run`, crashing after every k in 0..=(ops of a full run) with `SEEDS`
    /// seeds each; `check(fs, run_returned_ok)` judges every post-crash state. Returns the
    /// number of distinct post-crash file states.
    fn crash_everywhere(
        setup: &dyn Fn(&SimFs),
        run: &dyn Fn(&SimFs) -> io::Result<()>,
        check: &dyn Fn(&SimFs, bool) -> Result<(), String>,
    ) -> usize {
        let full = {
            let fs = SimFs::new();
            setup(&fs);
            let before = fs.op_count();
            run(&fs).expect("an uninterrupted run succeeds");
            fs.op_count() - before
        };
        assert!(full > 0);
        let mut states = BTreeSet::new();
        let mut oks = 0;
        for k in 0..=full {
            for seed in 0..SEEDS {
                let fs = SimFs::new();
                setup(&fs);
                fs.die_after(k);
                let ok = run(&fs).is_ok();
                assert!(fs.is_dead(), "k {k}: the process died");
                oks += usize::from(ok);
                let report = fs.crash(seed);
                if let Err(why) = check(&fs, ok) {
                    panic!(
                        "crash after op {k} of {full}, seed {seed} ({report:?}, returned ok: \
                         {ok}): {why}; files: {:?}",
                        fs.files().keys().collect::<Vec<_>>()
                    );
                }
                states.insert(fs.files());
            }
        }
        assert_eq!(oks as u64, SEEDS, "only the full run returns Ok");
        states.len()
    }

    #[test]
    fn write_atomic_leaves_old_or_new_after_a_crash_at_every_op() {
        let old = pattern(5000, 0x11);
        let new = pattern(9000, 0x22);
        let path = p("/out/d/f");
        let states = crash_everywhere(
            &|fs| fs.write_file_durably(path, &old).unwrap(),
            &|fs| write_atomic(fs, path, &new),
            &|fs, ok| {
                let got = file(fs, "/out/d/f").ok_or("the file is missing")?;
                if ok && got != new {
                    return Err("returned Ok but the new content did not survive".into());
                }
                if got != old && got != new {
                    return Err(format!("a mix of {} bytes", got.len()));
                }
                for other in fs.list(p("/out/d")).unwrap() {
                    if other.name != "f" && !is_temp_name(&other.name) {
                        return Err(format!("stray {}", other.name));
                    }
                }
                // The revived process can publish again.
                write_atomic(fs, path, b"again").map_err(|e| e.to_string())?;
                fs.crash_all_lost();
                match file(fs, "/out/d/f") {
                    Some(c) if c == b"again" => Ok(()),
                    other => Err(format!(
                        "republish lost: {:?} bytes",
                        other.map(|c| c.len())
                    )),
                }
            },
        );
        assert!(states >= 2, "only {states} crash states");
    }

    #[test]
    fn create_durable_leaves_absent_or_whole_after_a_crash_at_every_op() {
        let new = pattern(9000, 0x33);
        let path = p("/out/leases/lease-1");
        let states = crash_everywhere(
            &|fs| {
                fs.write_file_durably(p("/out/leases/lease-0"), b"0")
                    .unwrap()
            },
            &|fs| create_durable(fs, path, &new),
            &|fs, ok| {
                match file(fs, "/out/leases/lease-1") {
                    None if ok => return Err("returned Ok but the file did not survive".into()),
                    None => return Ok(()),
                    Some(got) if got != new => {
                        return Err(format!("partial file of {} bytes", got.len()))
                    }
                    Some(_) => {}
                }
                // The revived process cannot take the name again.
                match create_durable(fs, path, b"usurper") {
                    Err(e) if e.kind() == AlreadyExists => {}
                    other => return Err(format!("second create: {other:?}")),
                }
                match file(fs, "/out/leases/lease-1") {
                    Some(got) if got == new => Ok(()),
                    _ => Err("a second create replaced the file".into()),
                }
            },
        );
        assert!(states >= 2, "only {states} crash states");
    }

    #[test]
    fn publish_dir_leaves_absent_or_complete_after_a_crash_at_every_op() {
        let (a, b) = (pattern(7000, 0x44), pattern(300, 0x55));
        let staged = p("/out/.staging/v1-tmp");
        let path = p("/out/runs/v1");
        let states = crash_everywhere(
            &|fs| {
                fs.write_file_durably(p("/out/.staging/.keep"), b"")
                    .unwrap();
                fs.write_file_durably(p("/out/runs/.keep"), b"").unwrap();
            },
            &|fs| {
                fs.create_dir(staged)?;
                fs.write(&staged.join("a"), &a)?;
                fs.fsync_file(&staged.join("a"))?;
                fs.write(&staged.join("b"), &b)?;
                fs.fsync_file(&staged.join("b"))?;
                publish_dir(fs, staged, path)
            },
            &|fs, ok| {
                if !fs.exists(path) {
                    return if ok {
                        Err("returned Ok but the directory did not survive".into())
                    } else {
                        Ok(())
                    };
                }
                let names: Vec<String> =
                    fs.list(path).unwrap().into_iter().map(|e| e.name).collect();
                if names != ["a", "b"] {
                    return Err(format!("incomplete directory: {names:?}"));
                }
                if fs.read(&path.join("a")).unwrap() != a || fs.read(&path.join("b")).unwrap() != b
                {
                    return Err("partial file in the published directory".into());
                }
                if fs.exists(staged) {
                    return Err("published directory has two names".into());
                }
                Ok(())
            },
        );
        assert!(states >= 2, "only {states} crash states");
    }
}
