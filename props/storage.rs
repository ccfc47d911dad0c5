//! OUT on real filesystems other than the local disk (docs/contract.md, "Storage profiles",
//! "Storage errors"), through the binary: a bindfs FUSE mount (no rename flags, like NFS and
//! most FUSE daemons), a tmpfs of a few MiB (a full disk, remounted larger to resume) and a
//! read-only remount. Each test mounts what it needs under its own temp dir and unmounts it
//! when it ends, passed or failed.
//!
//! These machines run as root with `/dev/fuse` and Debian's `bindfs` (`.ci/run` installs it).
//! Where mounting is impossible each test FAILS, saying what is missing; set
//! `TRAINCTL_SKIP_MOUNTS=1` to skip them on purpose (each prints that it was skipped).

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use trainctl::fs::{Fs, OsFs};

/// Whether the mount tests run; `false` only when the user opted out.
fn mounts_wanted(test: &str) -> bool {
    if std::env::var("TRAINCTL_SKIP_MOUNTS").as_deref() == Ok("1") {
        eprintln!("{test}: skipped (TRAINCTL_SKIP_MOUNTS=1)");
        return false;
    }
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (mount and remount need it)".to_string());
    }
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse".to_string());
    }
    if which("bindfs").is_none() {
        missing.push("bindfs (Debian: apt-get install bindfs fuse3)".to_string());
    }
    assert!(
        missing.is_empty(),
        "{test} needs real mounts, and this machine lacks: {}.\n\
         Install what is missing (`.ci/run` does), or run without these tests: \
         TRAINCTL_SKIP_MOUNTS=1 cargo test --release",
        missing.join(", ")
    );
    true
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn sh(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A mounted filesystem, unmounted on drop (lazily, so a failed test never leaves it).
struct Mount {
    point: PathBuf,
    fuse: bool,
    _dirs: tempfile::TempDir,
}

impl Mount {
    /// bindfs over a fresh temp dir: a FUSE filesystem without rename flags.
    fn bindfs() -> Mount {
        let dirs = tempfile::tempdir().expect("tempdir");
        let (src, point) = (dirs.path().join("src"), dirs.path().join("mnt"));
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::create_dir_all(&point).expect("mkdir");
        let (s, p) = (src.to_str().expect("utf8"), point.to_str().expect("utf8"));
        sh("bindfs", &[s, p]).unwrap_or_else(|e| panic!("mounting bindfs failed: {e}"));
        Mount {
            point,
            fuse: true,
            _dirs: dirs,
        }
    }

    /// A tmpfs of `size` (e.g. `6m`).
    fn tmpfs(size: &str) -> Mount {
        let dirs = tempfile::tempdir().expect("tempdir");
        let point = dirs.path().join("mnt");
        std::fs::create_dir_all(&point).expect("mkdir");
        let p = point.to_str().expect("utf8");
        sh(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", p],
        )
        .unwrap_or_else(|e| panic!("mounting a tmpfs failed: {e}"));
        Mount {
            point,
            fuse: false,
            _dirs: dirs,
        }
    }

    fn remount(&self, options: &str) {
        let p = self.point.to_str().expect("utf8");
        sh("mount", &["-o", &format!("remount,{options}"), p])
            .unwrap_or_else(|e| panic!("remount {options} failed: {e}"));
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.point.join(rel)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let p = self.point.to_str().unwrap_or_default();
        let unmounted = if self.fuse {
            sh("fusermount3", &["-u", "-z", p])
                .or_else(|_| sh("fusermount", &["-u", "-z", p]))
                .or_else(|_| sh("umount", &["-l", p]))
        } else {
            sh("umount", &["-l", p])
        };
        if let Err(e) = unmounted {
            eprintln!("warning: could not unmount {p}: {e}");
        }
    }
}

fn json_of(stdout: &str, stderr: &str) -> Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"))
}

/// `--json -o paths:base.outputs=OUT -o … <command…>`: exit code and document.
fn run(
    project: &support::Project,
    out: &Path,
    overrides: &[&str],
    command: &[&str],
) -> (i32, Value) {
    let (code, stdout, stderr) = run_args(project, &args(out, overrides, command));
    (code, json_of(&stdout, &stderr))
}

fn args(out: &Path, overrides: &[&str], command: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--json".to_string(),
        "-o".into(),
        format!("paths:base.outputs={}", out.display()),
    ];
    for o in overrides {
        args.push("-o".into());
        args.push(o.to_string());
    }
    args.extend(command.iter().map(|c| c.to_string()));
    args
}

fn run_args(project: &support::Project, args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    project.run(&refs)
}

/// Quick trainings: two epochs.
const QUICK: &str = "training.epochs=2";

fn assert_complete_and_clean(project: &support::Project, out: &Path) {
    let (code, status) = run(project, out, &[], &["status", "--deep"]);
    assert_eq!(code, 0, "{status}");
    for v in status["variants"].as_array().expect("variants") {
        assert_eq!(v["state"], "complete", "{v}");
    }
    let (code, check) = run(project, out, &[], &["cache", "check"]);
    assert_eq!(code, 0, "{check}");
    assert_eq!(check["problems"], 0, "cache check must be clean: {check}");
}

#[test]
fn on_a_fuse_mount_train_reuses_and_reports_the_noflags_profile() {
    if !mounts_wanted("fuse train") {
        return;
    }
    let mount = Mount::bindfs();
    let out = mount.path("out");
    let project = support::Project::new();
    let (code, first) = run(&project, &out, &[QUICK], &["train"]);
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["decision"], "new", "{first}");
    assert_eq!(first["storage"]["profile"], "posix-noflags", "{first}");
    assert_eq!(first["storage"]["probe"]["caps"]["rename_noreplace"], false);
    assert_eq!(first["storage"]["probe"]["caps"]["hard_link"], true);
    assert!(
        first["storage"]["mount"]["fstype"]
            .as_str()
            .is_some_and(|t| t.starts_with("fuse")),
        "{first}"
    );
    let (code, again) = run(&project, &out, &[QUICK], &["train"]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["decision"], "reuse", "{again}");
    assert_eq!(again["variant"], first["variant"]);
    let (code, status) = run(&project, &out, &[], &["status"]);
    assert_eq!(code, 0);
    assert_eq!(status["storage"]["profile"], "posix-noflags", "{status}");
    assert_eq!(status["storage"]["scope"], "one_machine", "{status}");
    assert_complete_and_clean(&project, &out);
    // No probe directory or other temporary is left behind.
    let stray: Vec<PathBuf> = support::snapshot(&out)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // Forcing `posix` there is a config error naming the key and the failed probe.
    let (code, forced) = run(
        &project,
        &out,
        &["paths:storage.profile=posix", "run.mode=force_new"],
        &["train"],
    );
    assert_eq!(code, 2, "{forced}");
    assert_eq!(forced["error"]["kind"], "config_invalid");
    assert_eq!(forced["error"]["key"], "storage.profile");
    assert!(
        forced["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rename-noreplace probe failed")),
        "{forced}"
    );
}

#[test]
fn on_a_fuse_mount_eight_concurrent_force_new_get_eight_distinct_variants() {
    if !mounts_wanted("fuse concurrent") {
        return;
    }
    let mount = Mount::bindfs();
    let out = mount.path("out");
    let project = support::Project::new();
    let argv = args(&out, &[QUICK, "run.mode=force_new"], &["train"]);
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let variants = support::concurrent_variants(&project, &refs, 8);
    assert_eq!(variants, (1..=8).collect::<Vec<u64>>(), "distinct variants");
    assert_complete_and_clean(&project, &out);
}

#[test]
fn on_a_fuse_mount_kill_9_then_resume_gives_the_uninterrupted_weights() {
    if !mounts_wanted("fuse kill and resume") {
        return;
    }
    let mount = Mount::bindfs();
    let out = mount.path("out");
    let reference_out = tempfile::tempdir().expect("tempdir");
    let project = support::Project::new();
    let long = [
        "training.epochs=24",
        "training.early_stopping.enabled=false",
        "logging.save_interval=10",
    ];
    let (code, planned) = run(&project, &out, &long, &["plan"]);
    assert_eq!(code, 0, "{planned}");
    let dir = PathBuf::from(planned["output_dir"].as_str().expect("output_dir"));
    let argv = args(&out, &long, &["train"]);
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut child = project
        .command(&refs, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn train");
    let started = Instant::now();
    while !dir.join("checkpoints").is_dir()
        || std::fs::read_dir(dir.join("checkpoints"))
            .map(|rd| rd.count() == 0)
            .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no step checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let mut resume = long.to_vec();
    resume.push("run.mode=resume_if_incomplete");
    let started = Instant::now();
    let resumed = loop {
        let (code, doc) = run(&project, &out, &resume, &["train"]);
        if code == 0 {
            break doc;
        }
        // The dying trainer may still hold the lease for a moment (exit 4).
        assert_eq!(code, 4, "resume failed: {doc}");
        assert!(started.elapsed() < Duration::from_secs(30), "{doc}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (code, fresh) = run(&project, reference_out.path(), &long, &["train"]);
    assert_eq!(code, 0, "{fresh}");
    assert_eq!(fresh["storage"]["profile"], "posix", "{fresh}");
    let bytes = |d: &Value, f: &str| {
        std::fs::read(Path::new(d["output_dir"].as_str().expect("dir")).join(f)).expect("file")
    };
    for file in ["checkpoint/model.safetensors", "metrics.json"] {
        assert!(
            bytes(&resumed, file) == bytes(&fresh, file),
            "{file} differs between the resumed run on FUSE and an uninterrupted local run"
        );
    }
    assert_complete_and_clean(&project, &out);
}

/// The Drive mirror on a FUSE mount (no rename exchange there: rename-aside + rename-in):
/// through the binary after `train` on colab, and in-process with the process killed after
/// every Fs operation of a backup that replaces a previous one. After each interruption a
/// whole copy is at the target or at its aside name; the next backup leaves exactly the
/// source's files and no debris.
#[test]
fn the_drive_mirror_on_a_fuse_mount_survives_an_interruption_at_every_step() {
    if !mounts_wanted("fuse drive") {
        return;
    }
    let mount = Mount::bindfs();
    let drive = mount.path("drive");
    std::fs::create_dir_all(&drive).expect("mkdir");
    let local = tempfile::tempdir().expect("tempdir");
    let project = support::Project::new();
    let colab = [
        "--env".to_string(),
        "colab".into(),
        "--json".into(),
        "-o".into(),
        format!(
            "paths:env_overrides.colab.base.outputs={}",
            local.path().join("out").display()
        ),
        "-o".into(),
        format!("paths:drive.mount_point={}", drive.display()),
        "-o".into(),
        QUICK.into(),
        "train".into(),
    ];
    let (code, stdout, stderr) = run_args(&project, &colab);
    let doc = json_of(&stdout, &stderr);
    assert_eq!(code, 0, "{doc}");
    let units = doc["backup"]["units"].as_array().expect("units");
    assert!(
        units.iter().all(|u| u["outcome"] == "copied") && !units.is_empty(),
        "{doc}"
    );

    // A unit with a previous backup, replaced by a newer source.
    let source = local.path().join("unit");
    let target = drive.join("MyDrive/unit");
    let write = |dir: &Path, files: &[(&str, &str)]| {
        let _ = std::fs::remove_dir_all(dir);
        for (rel, text) in files {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
    };
    let old = [("a.bin", "old a"), ("sub/b.json", "old b")];
    let new = [("a.bin", "new a"), ("c.txt", "new c"), ("sub/d", "new d")];
    let tree = |dir: &Path| -> Vec<(PathBuf, Option<Vec<u8>>)> {
        support::snapshot(dir)
            .into_iter()
            .filter_map(|(p, b)| Some((p.strip_prefix(dir).ok()?.to_path_buf(), b)))
            .filter(|(_, b)| b.is_some())
            .collect()
    };
    let (old_tree, new_tree) = {
        write(&source, &old);
        let o = tree(&source);
        write(&source, &new);
        (o, tree(&source))
    };
    let steps = {
        write(&source, &old);
        trainctl::backup::backup_dir(&source, &target, &trainctl::backup::no_fault)
            .expect("first backup");
        write(&source, &new);
        let counting = Arc::new(support::harness::KillSwitch::new(Arc::new(OsFs)));
        let before = counting.mutations();
        trainctl::backup::backup_dir_on(&*counting, &source, &target, &trainctl::backup::no_fault)
            .expect("backup");
        assert_eq!(tree(&target), new_tree);
        counting.mutations() - before
    };
    assert!(steps > 10, "a swap is more than a few operations ({steps})");
    let aside = drive.join("MyDrive/.unit.tmp-aside");
    for k in 0..steps {
        write(&source, &old);
        let _ = std::fs::remove_dir_all(&target);
        let _ = std::fs::remove_dir_all(&aside);
        trainctl::backup::backup_dir(&source, &target, &trainctl::backup::no_fault)
            .expect("previous backup");
        write(&source, &new);
        let killed = Arc::new(support::harness::KillSwitch::new(Arc::new(OsFs)));
        killed.die_after(k);
        let interrupted = trainctl::backup::backup_dir_on(
            &*killed,
            &source,
            &target,
            &trainctl::backup::no_fault,
        );
        assert!(interrupted.is_err(), "k={k}: the kill must interrupt it");
        let at_target = tree(&target);
        assert!(
            at_target == old_tree || at_target == new_tree || tree(&aside) == old_tree,
            "k={k}: no whole copy at the target or aside: {at_target:?}"
        );
        let redo = trainctl::backup::backup_dir(&source, &target, &trainctl::backup::no_fault)
            .unwrap_or_else(|e| panic!("k={k}: the next backup failed: {e}"));
        assert_eq!(tree(&target), new_tree, "k={k}: {redo:?}");
        let debris: Vec<String> = OsFs
            .list(&drive.join("MyDrive"))
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != "unit" && n != "resume-ner")
            .collect();
        assert!(debris.is_empty(), "k={k}: debris {debris:?}");
    }
}

#[test]
fn a_full_disk_is_a_named_storage_error_and_the_resume_after_freeing_space_completes() {
    if !mounts_wanted("full disk") {
        return;
    }
    let mount = Mount::tmpfs("6m");
    let out = mount.path("out");
    let project = support::Project::new();
    let (code, stdout, stderr) = run_args(&project, &args(&out, &[], &["train"]));
    assert_eq!(code, 6, "a full disk exits 6\n{stdout}\n{stderr}");
    let doc = json_of(&stdout, &stderr);
    let error = &doc["error"];
    assert_eq!(error["kind"], "no_space", "{doc}");
    let message = error["message"].as_str().expect("message");
    for needle in [
        "No space left on device",
        "resume_if_incomplete",
        &format!("OUT is {}", out.display()),
        "space available now",
    ] {
        assert!(
            message.contains(needle),
            "`{needle}` missing from: {message}"
        );
    }
    eprintln!("full-disk message: {message}");
    // The space the run needs: the size of its largest step checkpoint, when one was written.
    let need = message
        .split("each step checkpoint of this run takes ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .map(|n| n.parse::<u64>().expect("a byte count"));
    assert!(
        need.is_some_and(|n| n > 0) || message.contains("no step checkpoint was written"),
        "no space need in: {message}"
    );
    let (code, status) = run(&project, &out, &[], &["status"]);
    assert_eq!(code, 0, "{status}");
    let variants = status["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), 1, "{status}");
    assert_ne!(
        variants[0]["state"], "complete",
        "nothing complete on a full disk"
    );

    mount.remount("size=64m");
    let (code, resumed) = run(
        &project,
        &out,
        &["run.mode=resume_if_incomplete"],
        &["train"],
    );
    assert_eq!(code, 0, "{resumed}");
    assert_eq!(resumed["decision"], "resume", "{resumed}");
    assert_eq!(resumed["variant"], variants[0]["variant"]);
    assert_complete_and_clean(&project, &out);
}

#[test]
fn a_read_only_out_is_a_named_storage_error_that_changes_nothing() {
    if !mounts_wanted("read-only") {
        return;
    }
    let mount = Mount::tmpfs("64m");
    let out = mount.path("out");
    let project = support::Project::new();
    let (code, first) = run(&project, &out, &[QUICK], &["train"]);
    assert_eq!(code, 0, "{first}");
    mount.remount("ro");
    let before = support::snapshot(&out);
    let (code, forced) = run(&project, &out, &[QUICK, "run.mode=force_new"], &["train"]);
    assert_eq!(code, 6, "{forced}");
    assert_eq!(forced["error"]["kind"], "read_only", "{forced}");
    assert!(
        forced["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Read-only file system") && m.contains("allocate")),
        "names the operation: {forced}"
    );
    // A reuse needs no write: it still works on a read-only OUT.
    let (code, reused) = run(&project, &out, &[QUICK], &["train"]);
    assert_eq!(code, 0, "{reused}");
    assert_eq!(reused["decision"], "reuse", "{reused}");
    let (code, status) = run(&project, &out, &[], &["status"]);
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["storage"]["profile"], Value::Null, "{status}");
    assert_eq!(status["storage"]["error"]["kind"], "read_only", "{status}");
    let (code, repair) = run(&project, &out, &[], &["cache", "repair"]);
    assert_eq!(code, 6, "{repair}");
    assert_eq!(repair["error"]["kind"], "read_only", "{repair}");
    assert!(support::changed(&before, &support::snapshot(&out)).is_empty());
    mount.remount("rw");
}
