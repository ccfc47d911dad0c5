//! Storage profiles (docs/contract.md, "Storage profiles"): what a filesystem really does,
//! found by a probe in a private directory that is always removed, and what trainctl
//! guarantees on it. Owns the profile names, the probe, the `/proc/self/mountinfo` reader and
//! the guarantees table; never publishes anything (that is `durable.rs`) and never decides
//! which profile a configuration asks for (that is the caller's `storage.profile`).

use super::Fs;
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};

/// The protocol family trainctl uses on a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileName {
    /// Local POSIX filesystems with `renameat2` flags: no-replace renames publish files and
    /// directories, an exchange swaps directories.
    Posix,
    /// No rename flags (NFS, FUSE): files are published by `link` + `unlink` (or by an
    /// O_EXCL create where there are no hard links), directories by a plain rename onto a name
    /// that must not exist, and a directory swap is rename-aside + rename-in.
    PosixNoflags,
    /// OUT in an object store (S3, GCS, Azure Blob; docs/contract.md, "OUT in an object
    /// store"): whole-object puts, create-if-absent for every exclusive create, no rename
    /// (a "rename" is copy + delete) and no directories. Never probed or forced: it comes
    /// with a `s3://`, `gs://` or `az://` OUT.
    Object,
}

impl ProfileName {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileName::Posix => "posix",
            ProfileName::PosixNoflags => "posix-noflags",
            ProfileName::Object => "object",
        }
    }
}

/// `paths.yaml` `storage.profile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Probe and pick (the default).
    Auto,
    Force(ProfileName),
}

impl Setting {
    pub fn parse(s: &str) -> Option<Setting> {
        match s {
            "auto" => Some(Setting::Auto),
            "posix" => Some(Setting::Force(ProfileName::Posix)),
            "posix-noflags" => Some(Setting::Force(ProfileName::PosixNoflags)),
            _ => None,
        }
    }

    pub const NAMES: [&'static str; 3] = ["auto", "posix", "posix-noflags"];
}

/// The optional primitives a filesystem has. `durable.rs` picks its protocol from these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Caps {
    /// `renameat2(RENAME_NOREPLACE)`.
    pub rename_noreplace: bool,
    /// `renameat2(RENAME_EXCHANGE)`.
    pub rename_exchange: bool,
    /// `link(2)`.
    pub hard_link: bool,
    /// An object store: a put replaces a whole object atomically (so a file is replaced by
    /// writing it in place, without a temporary), a file or directory "rename" is a copy and
    /// a delete (never atomic), and there are no directories (a name is a directory while a
    /// key below it exists).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub whole_objects: bool,
}

impl Caps {
    /// A local Linux filesystem.
    pub const POSIX: Caps = Caps {
        rename_noreplace: true,
        rename_exchange: true,
        hard_link: true,
        whole_objects: false,
    };
    /// NFS, bindfs and other FUSE daemons that pass links through.
    pub const NOFLAGS: Caps = Caps {
        rename_noreplace: false,
        rename_exchange: false,
        hard_link: true,
        whole_objects: false,
    };
    /// Drive, gcsfuse, blobfuse2, s3fs, rclone: neither rename flags nor hard links.
    pub const NOFLAGS_NOLINKS: Caps = Caps {
        rename_noreplace: false,
        rename_exchange: false,
        hard_link: false,
        whole_objects: false,
    };
    /// An object store (S3, GCS, Azure Blob, or the simulated one).
    pub const OBJECTS: Caps = Caps {
        rename_noreplace: false,
        rename_exchange: false,
        hard_link: false,
        whole_objects: true,
    };

    /// The profile these capabilities give.
    pub fn profile(self) -> ProfileName {
        if self.whole_objects {
            ProfileName::Object
        } else if self.rename_noreplace && self.rename_exchange {
            ProfileName::Posix
        } else {
            ProfileName::PosixNoflags
        }
    }

    /// These capabilities restricted to what `profile` may use (forcing `posix-noflags` on a
    /// filesystem that has flags switches them off; links stay as probed).
    pub fn restricted_to(self, profile: ProfileName) -> Caps {
        match profile {
            ProfileName::Posix | ProfileName::Object => self,
            ProfileName::PosixNoflags => Caps {
                rename_noreplace: false,
                rename_exchange: false,
                ..self
            },
        }
    }

    /// How a file is created exclusively on this filesystem.
    pub fn file_publish(self) -> &'static str {
        if self.whole_objects {
            "create-if-absent put of the whole object"
        } else if self.rename_noreplace {
            "temp file + rename-noreplace"
        } else if self.hard_link {
            "temp file + link + unlink"
        } else {
            "O_EXCL create at the final name"
        }
    }

    /// How a staged directory is published.
    pub fn dir_publish(self) -> &'static str {
        if self.whole_objects {
            "copy: the first file (by name) by create-if-absent claims the name, the rest by put, the staged objects deleted"
        } else if self.rename_noreplace {
            "rename-noreplace"
        } else {
            "plain rename onto a name that must not exist (a non-empty target refuses)"
        }
    }

    /// How a published directory is replaced (the Drive mirror, a re-saved step checkpoint).
    pub fn dir_swap(self) -> &'static str {
        if self.whole_objects {
            "delete the old objects, then publish (an interrupted swap leaves no copy: only re-creatable data is swapped)"
        } else if self.rename_exchange {
            "rename-exchange"
        } else {
            "rename-aside + rename-in (an interrupted swap is finished or rolled back next time)"
        }
    }
}

/// What the probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub caps: Caps,
    /// `open(O_CREAT | O_EXCL)` refuses an existing name.
    pub excl_create: bool,
    /// `fsync` of a directory succeeds (where it does not, the filesystem makes names durable
    /// by its own rules and trainctl's directory fsyncs are no-ops).
    pub dir_fsync: bool,
}

/// Name prefix of probe directories (a temporary name: never data, skipped by every reader).
pub const PROBE_PREFIX: &str = ".trainctl-probe.tmp-";

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

fn link_unsupported(e: &io::Error) -> bool {
    unsupported(e) || matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EMLINK))
}

fn refused(r: io::Result<()>) -> bool {
    matches!(r, Err(e) if e.kind() == io::ErrorKind::AlreadyExists)
}

/// Probes the filesystem holding the directory `dir` in a private directory below it, which
/// is removed whatever happens. Every primitive is checked for what it must do, not only for
/// whether it answers: a no-replace rename must refuse a taken name, an exchange must swap, a
/// link must refuse a taken name. An error that is not "unsupported" (read-only, no space,
/// permission) is returned: the caller reports it as the storage error it is.
pub fn probe(fs: &dyn Fs, dir: &Path) -> io::Result<Probe> {
    let root = dir.join(format!("{PROBE_PREFIX}{}", fs.unique()));
    fs.create_dir(&root)?;
    let found = probe_in(fs, &root);
    let removed = fs.remove_dir_all(&root);
    let found = found?;
    removed?;
    Ok(found)
}

fn probe_in(fs: &dyn Fs, root: &Path) -> io::Result<Probe> {
    let p = |name: &str| root.join(name);
    fs.create_new(&p("a"), b"a")?;
    fs.create_new(&p("b"), b"b")?;
    let excl_create = refused(fs.create_new(&p("a"), b"x"));
    let dir_fsync = match fs.fsync_dir(root) {
        Ok(()) => true,
        Err(e) if unsupported(&e) => false,
        Err(e) => return Err(e),
    };
    let rename_noreplace = match fs.rename_noreplace(&p("a"), &p("n")) {
        Ok(()) => refused(fs.rename_noreplace(&p("b"), &p("n"))) && fs.read(&p("n"))? == b"a",
        Err(e) if unsupported(&e) => false,
        Err(e) => return Err(e),
    };
    fs.create_new(&p("x"), b"x")?;
    fs.create_new(&p("y"), b"y")?;
    let rename_exchange = match fs.rename_exchange(&p("x"), &p("y")) {
        Ok(()) => fs.read(&p("x"))? == b"y" && fs.read(&p("y"))? == b"x",
        Err(e) if unsupported(&e) => false,
        Err(e) => return Err(e),
    };
    let hard_link = match fs.hard_link(&p("x"), &p("l")) {
        Ok(()) => {
            refused(fs.hard_link(&p("y"), &p("l"))) && fs.read(&p("l"))? == fs.read(&p("x"))?
        }
        Err(e) if link_unsupported(&e) => false,
        Err(e) => return Err(e),
    };
    Ok(Probe {
        caps: Caps {
            rename_noreplace,
            rename_exchange,
            hard_link,
            whole_objects: false,
        },
        excl_create,
        dir_fsync,
    })
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub mount_point: PathBuf,
    /// `ext4`, `tmpfs`, `nfs4`, `fuse.bindfs`, …
    pub fstype: String,
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of a mountinfo text, in order (later mounts shadow earlier ones).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
            let sep = fields.iter().position(|f| *f == "-")?;
            let mount_point = fields.get(4)?;
            let fstype = fields.get(sep + 1)?;
            let source = fields.get(sep + 2).copied().unwrap_or("");
            Some(Mount {
                mount_point: PathBuf::from(unescape(mount_point)),
                fstype: unescape(fstype),
                source: unescape(source),
            })
        })
        .collect()
}

/// The mount holding `path` (the last-mounted longest prefix), from this process's
/// mountinfo. `None` when mountinfo is unreadable (not Linux).
pub fn mount_of(path: &Path) -> Option<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mount_in(&parse_mountinfo(&text), &path)
}

/// The mount of `path` among `mounts`.
pub fn mount_in(mounts: &[Mount], path: &Path) -> Option<Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point)
            && best.is_none_or(|b| {
                m.mount_point.components().count() >= b.mount_point.components().count()
            })
        {
            best = Some(m);
        }
    }
    best.cloned()
}

/// Whether the guarantees hold between processes on one machine only, or between machines
/// sharing the filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    OneMachine,
    AcrossMachines,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OneMachine => "one machine",
            Scope::AcrossMachines => "across machines",
        }
    }
}

/// The guarantees table (README "Where OUT can live"): the scope of the allocation, lease
/// and cache guarantees on a filesystem type, and why.
pub fn scope_of(fstype: &str) -> (Scope, &'static str) {
    match fstype {
        t if t.starts_with("object-store.") => (
            Scope::AcrossMachines,
            "an object store with create-if-absent and strong read-after-write: every \
             machine's claims, leases and records are decided by the store",
        ),
        "nfs" | "nfs4" => (
            Scope::AcrossMachines,
            "NFS: link, rename and O_EXCL create are atomic on the server, and close-to-open \
             consistency makes a published file visible to every client that opens it after",
        ),
        "ceph" | "lustre" | "gpfs" => (
            Scope::AcrossMachines,
            "a POSIX cluster filesystem: rename and link are atomic for every client",
        ),
        "fuse.gcsfuse"
        | "fuse.blobfuse2"
        | "fuse.blobfuse"
        | "fuse.s3fs"
        | "fuse.rclone"
        | "fuse.drive"
        | "fuse.google-drive-ocamlfuse"
        | "fuse.goofys" => (
            Scope::OneMachine,
            "an object store behind FUSE: a directory rename is a copy + delete and the \
             daemon caches per machine; several machines need OUT in the bucket itself",
        ),
        t if t.starts_with("fuse") => (
            Scope::OneMachine,
            "a FUSE daemon: its consistency between machines is the daemon's, not POSIX's",
        ),
        _ => (
            Scope::OneMachine,
            "a local filesystem: every process that sees it runs on this machine",
        ),
    }
}

/// What `config show`, `status` and `--json` say about the storage of OUT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub profile: ProfileName,
    /// `probe`, or `paths.yaml storage.profile`.
    pub chosen_by: String,
    /// The directory the probe ran in (OUT, or its nearest existing ancestor).
    pub probed_in: PathBuf,
    pub mount: Option<Mount>,
    pub probe: Probe,
    /// The capabilities trainctl uses (the probe's, restricted to the profile).
    pub caps: Caps,
    pub file_publish: &'static str,
    pub dir_publish: &'static str,
    pub dir_swap: &'static str,
    pub scope: Scope,
    pub scope_reason: &'static str,
}

impl Report {
    pub fn new(probed_in: PathBuf, probe: Probe, setting: Setting, mount: Option<Mount>) -> Report {
        let (profile, chosen_by) = match setting {
            Setting::Auto if probe.caps.whole_objects => {
                (ProfileName::Object, "OUT's URL".to_string())
            }
            Setting::Auto => (probe.caps.profile(), "probe".to_string()),
            Setting::Force(p) => (p, "paths.yaml storage.profile".to_string()),
        };
        let caps = probe.caps.restricted_to(profile);
        let (scope, scope_reason) = scope_of(mount.as_ref().map_or("", |m| m.fstype.as_str()));
        Report {
            profile,
            chosen_by,
            probed_in,
            mount,
            probe,
            caps,
            file_publish: caps.file_publish(),
            dir_publish: caps.dir_publish(),
            dir_swap: caps.dir_swap(),
            scope,
            scope_reason,
        }
    }

    /// One line for humans.
    pub fn line(&self) -> String {
        let fstype = self.mount.as_ref().map_or("unknown", |m| m.fstype.as_str());
        format!(
            "{} ({}, {}; guarantees hold {})",
            self.profile.as_str(),
            fstype,
            if self.chosen_by == "probe" {
                "probed".to_string()
            } else if self.profile == ProfileName::Object {
                format!("set by {}", self.chosen_by)
            } else {
                format!("forced by {}", self.chosen_by)
            },
            self.scope.as_str()
        )
    }
}

/// Why a forced profile cannot be used: the probe that failed.
pub fn forced_mismatch(forced: ProfileName, probe: &Probe) -> Option<String> {
    match forced {
        ProfileName::Posix if !probe.caps.rename_noreplace => Some(
            "the rename-noreplace probe failed (the filesystem refuses renameat2 flags)".into(),
        ),
        ProfileName::Posix if !probe.caps.rename_exchange => {
            Some("the rename-exchange probe failed (the filesystem refuses RENAME_EXCHANGE)".into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_mount_point_type_and_source_with_escapes() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    40 22 0:50 / /mnt/my\\040drive rw,nosuid - fuse.bindfs bindfs rw,user_id=0\n\
                    41 22 0:51 / /mnt/nfs rw - nfs4 srv:/export rw,vers=4.2\n\
                    garbage line\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[1].mount_point, PathBuf::from("/mnt/my drive"));
        assert_eq!(mounts[1].fstype, "fuse.bindfs");
        let of = |p: &str| mount_in(&mounts, Path::new(p)).map(|m| m.fstype);
        assert_eq!(of("/mnt/my drive/out/x").as_deref(), Some("fuse.bindfs"));
        assert_eq!(of("/mnt/nfs").as_deref(), Some("nfs4"));
        assert_eq!(of("/mnt/nfsother").as_deref(), Some("ext4"));
        assert_eq!(of("/home").as_deref(), Some("ext4"));
    }

    #[test]
    fn a_later_mount_on_the_same_point_shadows_the_earlier_one() {
        let text = "1 0 8:1 / /data rw - ext4 /dev/a rw\n2 1 0:9 / /data rw - tmpfs tmpfs rw\n";
        let m = mount_in(&parse_mountinfo(text), Path::new("/data/x")).unwrap();
        assert_eq!(m.fstype, "tmpfs");
    }

    #[test]
    fn profiles_follow_the_flags_and_forcing_only_removes_capabilities() {
        assert_eq!(Caps::POSIX.profile(), ProfileName::Posix);
        assert_eq!(Caps::NOFLAGS.profile(), ProfileName::PosixNoflags);
        let half = Caps {
            rename_exchange: false,
            ..Caps::POSIX
        };
        assert_eq!(half.profile(), ProfileName::PosixNoflags);
        assert_eq!(
            Caps::POSIX.restricted_to(ProfileName::PosixNoflags),
            Caps::NOFLAGS
        );
        assert_eq!(
            Caps::NOFLAGS.restricted_to(ProfileName::Posix),
            Caps::NOFLAGS
        );
        for name in Setting::NAMES {
            assert!(Setting::parse(name).is_some());
        }
        assert_eq!(Setting::parse("POSIX"), None);
    }

    #[test]
    fn scopes_of_known_types() {
        assert_eq!(scope_of("nfs4").0, Scope::AcrossMachines);
        assert_eq!(scope_of("ext4").0, Scope::OneMachine);
        assert_eq!(scope_of("fuse.gcsfuse").0, Scope::OneMachine);
        assert_eq!(scope_of("fuse.bindfs").0, Scope::OneMachine);
    }

    #[test]
    fn forcing_posix_names_the_failed_probe() {
        let p = |caps| Probe {
            caps,
            excl_create: true,
            dir_fsync: true,
        };
        assert!(forced_mismatch(ProfileName::Posix, &p(Caps::NOFLAGS))
            .unwrap()
            .contains("rename-noreplace"));
        assert!(forced_mismatch(ProfileName::Posix, &p(Caps::POSIX)).is_none());
        assert!(forced_mismatch(ProfileName::PosixNoflags, &p(Caps::POSIX)).is_none());
    }
}
