//! The scenario suite (issue 7): the data-driven table `fixtures/scenarios/*.yaml`, one row
//! per scenario of the original test plan, run through the real binary on a fresh temp
//! project each. A row states the platform (`env`, detected from its variables), an explicit
//! `storage_env` (`--env`), the tracking situation, the run mode, `-o` overrides and config
//! edits, setup steps (prior runs, interrupted runs, damaged files) and what must come out:
//! exit code and error kind, message fragments, decision/variant/paths/run names (JSON
//! pointers into the output), metadata, tags of the tracked run, cache record counts, and
//! "nothing changed" for refusals. Also here: the check of `docs/traceability.md`.
//!
//! The platforms' absolute paths are redirected into the temp project: OUT of colab is
//! `<root>/content/outputs` (the VM disk, so that the Drive backup has work), the Drive
//! mount `<root>/content/drive`, kaggle `<root>/kaggle/working/outputs`, azureml
//! `<root>/mnt/outputs`, local `<root>/outputs`.

use crate::support;

use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use trainctl::track::{FileTracker, Tracker};

const SCENARIO_DIR: &str = "fixtures/scenarios";

#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Tracking {
    /// The default file store `<root>/mlruns`.
    #[default]
    File,
    /// `tracking.training.enabled: false`.
    Disabled,
    /// `MLFLOW_TRACKING_URI` at a port nothing listens on.
    Down,
    /// `azure_ml` enabled with every setting and `MLFLOW_TRACKING_TOKEN`.
    Azureml,
    /// `azure_ml` enabled with every setting, no token.
    AzuremlNoCredentials,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    /// Relative to `config/`.
    file: String,
    /// The file's whole new text.
    #[serde(default)]
    text: Option<String>,
    /// `[from, to]`: replace the first occurrence (which must exist).
    #[serde(default)]
    replace: Option<(String, String)>,
}

/// One setup step: exactly one action.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Step {
    /// A trainctl invocation (global options and command), run with `--json`.
    #[serde(default)]
    run: Option<Vec<String>>,
    /// Extra environment variables of `run`.
    #[serde(default)]
    vars: BTreeMap<String, String>,
    /// The exit code `run` must have.
    #[serde(default)]
    exit: i32,
    #[serde(default)]
    write: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    remove: Option<String>,
    /// Replace the file's bytes with half of them (a torn write).
    #[serde(default)]
    truncate: Option<String>,
    #[serde(default)]
    mkdir: Option<String>,
    #[serde(default)]
    copy: Option<String>,
    #[serde(default)]
    to: Option<String>,
    /// A JSON file whose pointers get new values.
    #[serde(default)]
    json_set: Option<String>,
    #[serde(default)]
    set: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    exit: i32,
    #[serde(default)]
    kind: Option<String>,
    /// Fragments of the error message (failing rows only).
    #[serde(default)]
    message: Vec<String>,
    /// Fragments of the warnings.
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    no_warnings: bool,
    /// JSON pointer into the output → exact value (strings may use templates).
    #[serde(default)]
    json: BTreeMap<String, Value>,
    /// JSON pointer → fragment of its string value.
    #[serde(default)]
    json_contains: BTreeMap<String, String>,
    /// Pointers whose value equals / differs from the last setup run's output.
    #[serde(default)]
    same_as_prev: Vec<String>,
    #[serde(default)]
    differs_from_prev: Vec<String>,
    /// Pointers into `<output_dir>/metadata.json`.
    #[serde(default)]
    metadata: BTreeMap<String, Value>,
    #[serde(default)]
    metadata_contains: BTreeMap<String, String>,
    /// Tags of the tracked run (`metadata.tracking.run_id` in `<root>/mlruns`).
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// Paths (templates, `*` matches one component) that must exist / must not.
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
    /// JSON files (exactly one match each) → pointer → value.
    #[serde(default)]
    files: BTreeMap<String, BTreeMap<String, Value>>,
    /// Cache kind → number of records under `{out}/cache/<kind>`.
    #[serde(default)]
    cache: BTreeMap<String, usize>,
    /// Nothing under the project root changed.
    #[serde(default)]
    unchanged: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    name: String,
    #[serde(default)]
    about: String,
    /// The platform the command runs on (its variables are set): local, colab, kaggle, azureml.
    #[serde(default = "local")]
    env: String,
    /// `--env` (wins over detection); `None` = detected from `env`.
    #[serde(default)]
    storage_env: Option<String>,
    #[serde(default)]
    tracking: Tracking,
    /// `-o run.mode=<mode>` for the command.
    #[serde(default)]
    mode: Option<String>,
    /// `-o` overrides for the command.
    #[serde(default)]
    overrides: Vec<String>,
    /// Config edits, made before setup.
    #[serde(default)]
    edits: Vec<Edit>,
    /// Extra variables for the command.
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    setup: Vec<Step>,
    /// The command and its arguments (default `train`).
    #[serde(default = "train")]
    command: Vec<String>,
    expect: Expect,
}

fn local() -> String {
    "local".into()
}

fn train() -> Vec<String> {
    vec!["train".into()]
}

const ENVS: [&str; 4] = ["local", "colab", "kaggle", "azureml"];
const TEMPLATES: [&str; 4] = ["root", "out", "drive", "prev"];

// ---------------------------------------------------------------------------------------
// Loading and validating the table.

/// Every scenario file, sorted.
fn scenario_files() -> Vec<PathBuf> {
    let dir = support::repo_root().join(SCENARIO_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every `{name}` used in `s` must be a known template.
fn check_templates(s: &str, what: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            return Err(format!("{what}: unclosed `{{` in {s:?}"));
        };
        let name = &after[..j];
        // JSON text in `write` may hold braces: only bare identifiers are templates.
        let ident = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ident && !TEMPLATES.contains(&name) {
            return Err(format!(
                "{what}: unknown template {{{name}}} (known: {})",
                TEMPLATES.join(", ")
            ));
        }
        rest = &after[j + 1..];
    }
    Ok(())
}

fn validate(row: &Row) -> Result<(), String> {
    if row.name.trim().is_empty() || row.name.contains(char::is_whitespace) {
        return Err("name must be a non-empty identifier without spaces".into());
    }
    if !ENVS.contains(&row.env.as_str()) {
        return Err(format!("env `{}` is not one of {ENVS:?}", row.env));
    }
    if let Some(s) = &row.storage_env {
        if !ENVS.contains(&s.as_str()) && !s.starts_with("bad:") {
            return Err(format!("storage_env `{s}` is not one of {ENVS:?}"));
        }
    }
    if row.command.is_empty() {
        return Err("command is empty".into());
    }
    for (i, step) in row.setup.iter().enumerate() {
        let actions = [
            step.run.is_some(),
            step.write.is_some(),
            step.remove.is_some(),
            step.truncate.is_some(),
            step.mkdir.is_some(),
            step.copy.is_some(),
            step.json_set.is_some(),
        ];
        if actions.iter().filter(|a| **a).count() != 1 {
            return Err(format!(
                "setup[{i}] must have exactly one of run, write, remove, truncate, mkdir, copy, json_set"
            ));
        }
        if step.write.is_some() != step.text.is_some() {
            return Err(format!("setup[{i}]: write and text go together"));
        }
        if step.copy.is_some() != step.to.is_some() {
            return Err(format!("setup[{i}]: copy and to go together"));
        }
        if step.json_set.is_some() == step.set.is_empty() {
            return Err(format!("setup[{i}]: json_set and set go together"));
        }
        if step.run.is_none() && (step.exit != 0 || !step.vars.is_empty()) {
            return Err(format!("setup[{i}]: exit and vars belong to run"));
        }
        for s in [
            &step.write,
            &step.text,
            &step.remove,
            &step.truncate,
            &step.mkdir,
            &step.copy,
            &step.to,
            &step.json_set,
        ]
        .into_iter()
        .flatten()
        .chain(step.run.iter().flatten())
        {
            check_templates(s, &format!("setup[{i}]"))?;
        }
    }
    for e in &row.edits {
        if e.text.is_some() == e.replace.is_some() {
            return Err(format!("edit of {}: exactly one of text, replace", e.file));
        }
    }
    let x = &row.expect;
    if x.exit == 0 && (x.kind.is_some() || !x.message.is_empty()) {
        return Err("kind and message describe a failure; exit is 0".into());
    }
    // 7 is a check that ran and found problems: its report is the output, not an error.
    if x.exit != 0 && x.exit != trainctl::cli::CHECK_FOUND_PROBLEMS && x.kind.is_none() {
        return Err("a failing row names its error kind".into());
    }
    let asserts = x.kind.is_some()
        || !x.warnings.is_empty()
        || x.no_warnings
        || !x.json.is_empty()
        || !x.json_contains.is_empty()
        || !x.same_as_prev.is_empty()
        || !x.differs_from_prev.is_empty()
        || !x.metadata.is_empty()
        || !x.metadata_contains.is_empty()
        || !x.tags.is_empty()
        || !x.paths.is_empty()
        || !x.absent.is_empty()
        || !x.files.is_empty()
        || !x.cache.is_empty()
        || x.unchanged;
    if !asserts {
        return Err("expect asserts nothing beyond the exit code".into());
    }
    let texts = row
        .overrides
        .iter()
        .chain(&row.command)
        .chain(&x.paths)
        .chain(&x.absent)
        .chain(x.files.keys())
        .chain(x.json_contains.values())
        .chain(x.metadata_contains.values());
    for s in texts {
        check_templates(s, "row")?;
    }
    Ok(())
}

/// Parses one scenario file's text; every error names the file and the row.
fn parse_rows(file: &str, text: &str) -> Result<Vec<Row>, String> {
    let items: Vec<Value> = serde_saphyr::from_str(text)
        .map_err(|e| format!("{file}: not a YAML list of rows: {e}"))?;
    let mut rows = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let label = match item.get("name").and_then(Value::as_str) {
            Some(n) => format!("{file}: row {i} `{n}`"),
            None => format!("{file}: row {i} (no name)"),
        };
        let row: Row = serde_path_to_error::deserialize(item)
            .map_err(|e| format!("{label}: {}: {}", e.path(), e.inner()))?;
        validate(&row).map_err(|e| format!("{label}: {e}"))?;
        rows.push(row);
    }
    Ok(rows)
}

/// All rows by file name; names are unique across files.
fn load_table() -> Vec<(String, Vec<Row>)> {
    let mut seen = BTreeMap::new();
    let mut out = Vec::new();
    for path in scenario_files() {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let rows = parse_rows(&file, &text).unwrap_or_else(|e| panic!("{e}"));
        for row in &rows {
            if let Some(other) = seen.insert(row.name.clone(), file.clone()) {
                panic!("{file}: row `{}` also in {other}", row.name);
            }
        }
        out.push((file, rows));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Running a row.

struct World<'a> {
    project: &'a support::Project,
    row: &'a Row,
    out: PathBuf,
    drive: PathBuf,
    prev: Option<PathBuf>,
    prev_doc: Value,
    down_uri: String,
}

use support::platform_out as out_of;

const AZ_SETTINGS: [&str; 4] = [
    "mlflow:azure_ml.enabled=true",
    "mlflow:azure_ml.subscription_id=sub-1",
    "mlflow:azure_ml.resource_group=rg-1",
    "mlflow:azure_ml.region=westeurope",
];

impl World<'_> {
    fn expand(&self, s: &str) -> String {
        let root = self.project.root().display().to_string();
        let prev = self
            .prev
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<no previous run>".into());
        s.replace("{root}", &root)
            .replace("{out}", &self.out.display().to_string())
            .replace("{drive}", &self.drive.display().to_string())
            .replace("{prev}", &prev)
    }

    fn expand_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.expand(s)),
            other => other.clone(),
        }
    }

    /// Global arguments every invocation of the row gets.
    fn globals(&self) -> Vec<String> {
        let root = self.project.root();
        let mut args = support::platform_redirects(root, &self.drive);
        if let Some(s) = &self.row.storage_env {
            args.extend([
                "--env".to_string(),
                s.trim_start_matches("bad:").to_string(),
            ]);
        }
        match self.row.tracking {
            Tracking::Disabled => {
                args.extend(["-o", "mlflow:tracking.training.enabled=false"].map(String::from))
            }
            Tracking::Azureml | Tracking::AzuremlNoCredentials => {
                for o in AZ_SETTINGS {
                    args.extend(["-o".to_string(), o.to_string()]);
                }
            }
            Tracking::File | Tracking::Down => {}
        }
        args
    }

    /// Runs trainctl with `--json`; returns (exit, document, stderr).
    fn trainctl(&self, args: &[String], vars: &BTreeMap<String, String>) -> (i32, Value, String) {
        let mut all = vec!["--json".to_string()];
        all.extend(self.globals());
        all.extend(args.iter().map(|a| self.expand(a)));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut cmd = self.project.command(&refs, &[]);
        cmd.env_remove("MLFLOW_TRACKING_TOKEN");
        match self.row.env.as_str() {
            "colab" => cmd.env("COLAB_GPU", "1"),
            "kaggle" => cmd.env("KAGGLE_KERNEL_RUN_TYPE", "Interactive"),
            "azureml" => cmd.env("AZUREML_RUN_ID", "scenario"),
            _ => &mut cmd,
        };
        match self.row.tracking {
            Tracking::Down => {
                cmd.env("MLFLOW_TRACKING_URI", &self.down_uri);
            }
            Tracking::Azureml => {
                cmd.env("MLFLOW_TRACKING_TOKEN", "not-a-real-token");
            }
            _ => {}
        }
        for (k, v) in vars {
            cmd.env(k, self.expand(v));
        }
        let out = cmd.output().expect("run trainctl");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let doc = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| Value::String(format!("<not JSON ({e}): {stdout}>")));
        (out.status.code().unwrap_or(-1), doc, stderr)
    }

    fn path(&self, template: &str) -> PathBuf {
        let s = self.expand(template);
        let p = PathBuf::from(&s);
        if p.is_absolute() {
            p
        } else {
            self.project.root().join(p)
        }
    }

    /// A setup target: a path, or a pattern matching exactly one path.
    fn target(&self, template: &str) -> Result<PathBuf, String> {
        let path = self.path(template);
        if !template.contains('*') {
            return Ok(path);
        }
        let found = glob(&path);
        match found.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(format!(
                "{} matches {} paths: {found:?}",
                path.display(),
                found.len()
            )),
        }
    }

    fn setup(&mut self) -> Result<(), String> {
        for edit in &self.row.edits {
            let path = self.project.config(&edit.file);
            let text = match (&edit.text, &edit.replace) {
                (Some(t), _) => self.expand(t),
                (None, Some((from, to))) => {
                    let old = std::fs::read_to_string(&path)
                        .map_err(|e| format!("edit {}: {e}", edit.file))?;
                    if !old.contains(from.as_str()) {
                        return Err(format!("edit {}: `{from}` not found", edit.file));
                    }
                    old.replacen(from.as_str(), &self.expand(to), 1)
                }
                (None, None) => unreachable!("validated"),
            };
            self.project.write_config(&edit.file, &text);
        }
        for (i, step) in self.row.setup.iter().enumerate() {
            let what = format!("setup[{i}]");
            if let Some(args) = &step.run {
                let (code, doc, stderr) = self.trainctl(args, &step.vars);
                if code != step.exit {
                    return Err(format!(
                        "{what} {args:?}: exit {code}, want {}: {doc}\n{stderr}",
                        step.exit
                    ));
                }
                if let Some(dir) = doc["output_dir"].as_str() {
                    self.prev = Some(PathBuf::from(dir));
                    self.prev_doc = doc;
                }
            } else if let Some(p) = &step.write {
                let path = self.path(p);
                std::fs::create_dir_all(path.parent().unwrap())
                    .map_err(|e| format!("{what}: {e}"))?;
                let text = self.expand(step.text.as_deref().unwrap_or(""));
                std::fs::write(&path, text).map_err(|e| format!("{what}: {e}"))?;
            } else if let Some(p) = &step.remove {
                let path = self.target(p).map_err(|e| format!("{what}: {e}"))?;
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|e| format!("{what}: remove {}: {e}", path.display()))?;
            } else if let Some(p) = &step.truncate {
                let path = self.target(p).map_err(|e| format!("{what}: {e}"))?;
                let bytes =
                    std::fs::read(&path).map_err(|e| format!("{what}: {}: {e}", path.display()))?;
                std::fs::write(&path, &bytes[..bytes.len() / 2])
                    .map_err(|e| format!("{what}: {e}"))?;
            } else if let Some(p) = &step.mkdir {
                std::fs::create_dir_all(self.path(p)).map_err(|e| format!("{what}: {e}"))?;
            } else if let (Some(from), Some(to)) = (&step.copy, &step.to) {
                let (from, to) = (self.path(from), self.path(to));
                if from.is_dir() {
                    support::copy_tree(&from, &to);
                } else {
                    std::fs::copy(&from, &to).map_err(|e| format!("{what}: {e}"))?;
                }
            } else if let Some(p) = &step.json_set {
                let path = self.target(p).map_err(|e| format!("{what}: {e}"))?;
                let bytes =
                    std::fs::read(&path).map_err(|e| format!("{what}: {}: {e}", path.display()))?;
                let mut doc: Value =
                    serde_json::from_slice(&bytes).map_err(|e| format!("{what}: {e}"))?;
                for (ptr, v) in &step.set {
                    let slot = doc
                        .pointer_mut(ptr)
                        .ok_or_else(|| format!("{what}: no {ptr} in {}", path.display()))?;
                    *slot = self.expand_value(v);
                }
                std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap())
                    .map_err(|e| format!("{what}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Paths matching a pattern whose components may contain `*` (any run of characters).
fn glob(pattern: &Path) -> Vec<PathBuf> {
    fn matches(pat: &str, name: &str) -> bool {
        let parts: Vec<&str> = pat.split('*').collect();
        if parts.len() == 1 {
            return pat == name;
        }
        let (first, last) = (parts[0], parts[parts.len() - 1]);
        if !name.starts_with(first)
            || !name.ends_with(last)
            || name.len() < first.len() + last.len()
        {
            return false;
        }
        let mut rest = &name[first.len()..name.len() - last.len()];
        for mid in &parts[1..parts.len() - 1] {
            match rest.find(mid) {
                Some(i) => rest = &rest[i + mid.len()..],
                None => return false,
            }
        }
        true
    }
    let mut found = vec![PathBuf::from("/")];
    for comp in pattern.components().skip(1) {
        let c = comp.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for base in &found {
            if c.contains('*') {
                let Ok(rd) = std::fs::read_dir(base) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect();
                names.sort();
                next.extend(
                    names
                        .into_iter()
                        .filter(|n| matches(&c, n))
                        .map(|n| base.join(n)),
                );
            } else {
                let p = base.join(c.as_ref());
                if p.exists() {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    found
}

/// Record files of one cache dir (views and temp files excluded).
fn cache_records(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    !n.starts_with('.') && n.ends_with(".json") && n.contains("Z_")
                })
                .count()
        })
        .unwrap_or(0)
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs one row on a fresh project; returns the problems (empty = pass).
fn check(row: &Row) -> Vec<String> {
    let project = support::Project::new();
    let root = project.root().to_path_buf();
    let storage = row
        .storage_env
        .as_deref()
        .filter(|s| !s.starts_with("bad:"))
        .unwrap_or(&row.env)
        .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut world = World {
        project: &project,
        row,
        out: out_of(&root, &storage),
        drive: root.join("content/drive"),
        prev: None,
        prev_doc: Value::Null,
        down_uri: format!("http://127.0.0.1:{port}"),
    };
    if let Err(e) = world.setup() {
        return vec![e];
    }
    let mut args = Vec::new();
    if let Some(mode) = &row.mode {
        args.extend(["-o".to_string(), format!("run.mode={mode}")]);
    }
    for o in &row.overrides {
        args.extend(["-o".to_string(), o.clone()]);
    }
    args.extend(row.command.iter().cloned());
    let before = support::snapshot(&root);
    let (code, doc, stderr) = world.trainctl(&args, &row.vars);
    let x = &row.expect;
    let mut problems = Vec::new();
    let mut fail = |p: String| problems.push(p);
    if code != x.exit {
        fail(format!("exit {code}, want {}", x.exit));
    }
    if let Some(kind) = &x.kind {
        if doc["error"]["kind"] != kind.as_str() {
            fail(format!("error kind {}, want {kind}", doc["error"]["kind"]));
        }
    }
    let message = doc["error"]["message"].as_str().unwrap_or("");
    for m in &x.message {
        let m = world.expand(m);
        if !message.contains(&m) {
            fail(format!("message lacks {m:?}"));
        }
    }
    let warnings = doc["warnings"].to_string();
    for w in &x.warnings {
        let w = world.expand(w);
        if !warnings.contains(&w) {
            fail(format!("warnings lack {w:?}: {warnings}"));
        }
    }
    if x.no_warnings && doc["warnings"].as_array().is_some_and(|w| !w.is_empty()) {
        fail(format!("unexpected warnings {warnings}"));
    }
    for (ptr, want) in &x.json {
        let want = world.expand_value(want);
        let got = doc.pointer(ptr).cloned().unwrap_or(Value::Null);
        if got != want {
            fail(format!("output {ptr} = {got}, want {want}"));
        }
    }
    for (ptr, frag) in &x.json_contains {
        let frag = world.expand(frag);
        let got = doc.pointer(ptr).map(text_of).unwrap_or_default();
        if !got.contains(&frag) {
            fail(format!("output {ptr} = {got:?} lacks {frag:?}"));
        }
    }
    for ptr in &x.same_as_prev {
        if doc.pointer(ptr).is_none() || doc.pointer(ptr) != world.prev_doc.pointer(ptr) {
            fail(format!(
                "output {ptr} = {:?}, setup had {:?}",
                doc.pointer(ptr),
                world.prev_doc.pointer(ptr)
            ));
        }
    }
    for ptr in &x.differs_from_prev {
        if doc.pointer(ptr).is_none() || doc.pointer(ptr) == world.prev_doc.pointer(ptr) {
            fail(format!(
                "output {ptr} = {:?} did not change from setup",
                doc.pointer(ptr)
            ));
        }
    }
    let output_dir = doc["output_dir"].as_str().map(PathBuf::from);
    let metadata: Value = output_dir
        .as_ref()
        .and_then(|d| std::fs::read(d.join("metadata.json")).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let wants_metadata =
        !x.metadata.is_empty() || !x.metadata_contains.is_empty() || !x.tags.is_empty();
    if wants_metadata && metadata.is_null() {
        fail(format!("no metadata.json at output_dir {output_dir:?}"));
    }
    for (ptr, want) in &x.metadata {
        let want = world.expand_value(want);
        let got = metadata.pointer(ptr).cloned().unwrap_or(Value::Null);
        if got != want {
            fail(format!("metadata {ptr} = {got}, want {want}"));
        }
    }
    for (ptr, frag) in &x.metadata_contains {
        let frag = world.expand(frag);
        let got = metadata.pointer(ptr).map(text_of).unwrap_or_default();
        if !got.contains(&frag) {
            fail(format!("metadata {ptr} = {got:?} lacks {frag:?}"));
        }
    }
    if !x.tags.is_empty() {
        let run = metadata["tracking"]["run_id"].as_str().and_then(|id| {
            FileTracker::new(Arc::new(trainctl::fs::OsFs), root.join("mlruns"))
                .ok()?
                .get_run(id)
                .ok()
        });
        match run {
            None => fail(format!("no tracked run for {}", metadata["tracking"])),
            Some(run) => {
                for (k, v) in &x.tags {
                    let v = world.expand(v);
                    if run.tags.get(k) != Some(&v) {
                        fail(format!("tag {k} = {:?}, want {v:?}", run.tags.get(k)));
                    }
                }
            }
        }
    }
    for p in &x.paths {
        if glob(&world.path(p)).is_empty() {
            fail(format!("missing {}", world.expand(p)));
        }
    }
    for p in &x.absent {
        let found = glob(&world.path(p));
        if !found.is_empty() {
            fail(format!("should not exist: {found:?}"));
        }
    }
    for (p, checks) in &x.files {
        let found = glob(&world.path(p));
        if found.len() != 1 {
            fail(format!(
                "{} matches {} files: {found:?}",
                world.expand(p),
                found.len()
            ));
            continue;
        }
        let file: Value = std::fs::read(&found[0])
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        for (ptr, want) in checks {
            let want = world.expand_value(want);
            let got = file.pointer(ptr).cloned().unwrap_or(Value::Null);
            if got != want {
                fail(format!("{} {ptr} = {got}, want {want}", found[0].display()));
            }
        }
    }
    for (kind, n) in &x.cache {
        let got = cache_records(&world.out.join("cache").join(kind));
        if got != *n {
            fail(format!("cache {kind}: {got} records, want {n}"));
        }
    }
    if x.unchanged {
        let changed = support::changed(&before, &support::snapshot(&root));
        if !changed.is_empty() {
            fail(format!("files changed: {changed:?}"));
        }
    }
    if !problems.is_empty() {
        problems.push(format!("output: {doc}\nstderr: {stderr}"));
    }
    problems
}

/// Runs every row of one file (a few at a time) and fails with every failing row's name.
fn run_file(file: &str) {
    let table = load_table();
    let rows = &table
        .iter()
        .find(|(f, _)| f == file)
        .unwrap_or_else(|| panic!("no {SCENARIO_DIR}/{file}"))
        .1;
    assert!(!rows.is_empty(), "{file} has no rows");
    let filter = std::env::var("TRAINCTL_SCENARIO").ok();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(row) = rows.get(i) else { break };
                if filter.as_deref().is_some_and(|f| f != row.name) {
                    continue;
                }
                let problems = check(row);
                if !problems.is_empty() {
                    failures.lock().unwrap().push(format!(
                        "- {file}::{} ({}):\n    {}\n  replay: TRAINCTL_SCENARIO={} {}",
                        row.name,
                        row.about,
                        problems.join("\n    "),
                        row.name,
                        support::replay_command(module_path!(), "")
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "scenario rows failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn scenarios_run_modes_and_sources() {
    run_file("run_modes.yaml");
}

#[test]
fn scenarios_environments_and_tracking() {
    run_file("environments.yaml");
}

#[test]
fn scenarios_selection_and_conversion() {
    run_file("selection_conversion.yaml");
}

#[test]
fn scenarios_negative_paths() {
    run_file("negative.yaml");
}

#[test]
fn every_scenario_file_is_run_by_a_test() {
    let source = include_str!("scenarios.rs");
    for (file, _) in load_table() {
        assert!(
            source.contains(&format!("run_file(\"{file}\")")),
            "{SCENARIO_DIR}/{file} is run by no test"
        );
    }
}

#[test]
fn bad_rows_fail_with_their_file_and_row_name() {
    for (text, want) in [
        (
            "- name: a\n  expect: {exit: 0, unchanged: true, jsn: {}}\n",
            "x.yaml: row 0 `a`: expect.jsn: unknown field `jsn`",
        ),
        (
            "- name: b\n  env: mars\n  expect: {exit: 0, unchanged: true}\n",
            "x.yaml: row 0 `b`: env `mars`",
        ),
        (
            "- name: c\n  expect: {exit: 2}\n",
            "x.yaml: row 0 `c`: a failing row names its error kind",
        ),
        (
            "- name: d\n  expect: {exit: 0}\n",
            "x.yaml: row 0 `d`: expect asserts nothing",
        ),
        (
            "- name: e\n  overrides: [\"a={outt}\"]\n  expect: {exit: 0, unchanged: true}\n",
            "x.yaml: row 0 `e`: row: unknown template {outt}",
        ),
        (
            "- name: f\n  setup: [{remove: x, mkdir: other}]\n  expect: {exit: 0, unchanged: true}\n",
            "x.yaml: row 0 `f`: setup[0] must have exactly one",
        ),
        ("- expect: {exit: 0}\n", "x.yaml: row 0 (no name)"),
        ("name: g\n", "x.yaml: not a YAML list of rows"),
    ] {
        let err = match parse_rows("x.yaml", text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e,
        };
        assert!(err.contains(want), "{err}\n  wanted {want}");
    }
}

// ---------------------------------------------------------------------------------------
// docs/traceability.md: every scenario of the original test plan has exactly one owning
// test, and every owner exists.

/// One row of the traceability table.
#[derive(Debug)]
struct Trace {
    line: usize,
    id: String,
    scenario: String,
    level: String,
    owner: String,
}

const TRACE_HEADER: &str = "| id | area | scenario | level | owner |";
const LEVELS: [&str; 4] = ["property", "scenario", "process", "unit"];

fn parse_traceability(text: &str) -> Result<Vec<Trace>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .skip_while(|(_, l)| l.trim() != TRACE_HEADER);
    if lines.next().is_none() {
        return Err(format!("no table with the header `{TRACE_HEADER}`"));
    }
    lines.next(); // the |---| line
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.trim();
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() != 5 {
            return Err(format!(
                "line {}: {} cells, want 5: {line}",
                i + 1,
                cells.len()
            ));
        }
        let owner = cells[4].trim_matches('`').to_string();
        out.push(Trace {
            line: i + 1,
            id: cells[0].to_string(),
            scenario: cells[2].to_string(),
            level: cells[3].to_string(),
            owner,
        });
    }
    Ok(out)
}

/// Whether `owner` names something that exists: `props/<f>.rs::fn` and `src/<f>.rs::fn` by
/// `fn <name>` in that file; `fixtures/scenarios/<f>.yaml::row` by the parsed table.
fn owner_exists(owner: &str, table: &[(String, Vec<Row>)]) -> Result<(), String> {
    let (file, item) = owner
        .split_once("::")
        .ok_or_else(|| format!("owner `{owner}` is not <file>::<test>"))?;
    if item.is_empty() || file.is_empty() {
        return Err(format!("owner `{owner}` is not <file>::<test>"));
    }
    if let Some(yaml) = file.strip_prefix(&format!("{SCENARIO_DIR}/")) {
        let rows = table
            .iter()
            .find(|(f, _)| f == yaml)
            .ok_or_else(|| format!("{file} does not exist"))?;
        return if rows.1.iter().any(|r| r.name == item) {
            Ok(())
        } else {
            Err(format!("{file} has no row `{item}`"))
        };
    }
    let under = ["props/", "src/", "crates/core/src/", "crates/trainer/src/"];
    if !under.iter().any(|d| file.starts_with(d)) || !file.ends_with(".rs") {
        return Err(format!(
            "owner file {file} is not under {}, or {SCENARIO_DIR}/",
            under.join(", ")
        ));
    }
    let text = std::fs::read_to_string(support::repo_root().join(file))
        .map_err(|e| format!("{file}: {e}"))?;
    let found = text.lines().any(|l| {
        let l = l.trim_start();
        let l = l.strip_prefix("pub ").unwrap_or(l);
        l.strip_prefix("fn ").is_some_and(|rest| {
            rest.starts_with(item) && rest[item.len()..].starts_with(['(', '<'])
        })
    });
    if found {
        Ok(())
    } else {
        Err(format!("{file} has no `fn {item}`"))
    }
}

fn check_traceability(text: &str, table: &[(String, Vec<Row>)]) -> Vec<String> {
    let rows = match parse_traceability(text) {
        Ok(r) => r,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    if rows.is_empty() {
        problems.push("the table is empty".into());
    }
    let mut ids = BTreeSet::new();
    let mut scenarios = BTreeSet::new();
    for r in &rows {
        let at = format!("docs/traceability.md:{} ({})", r.line, r.id);
        if r.id.is_empty() || !ids.insert(r.id.clone()) {
            problems.push(format!("{at}: id empty or listed twice"));
        }
        if r.scenario.is_empty() || !scenarios.insert(r.scenario.to_lowercase()) {
            problems.push(format!(
                "{at}: scenario empty or listed twice: {}",
                r.scenario
            ));
        }
        if !LEVELS.contains(&r.level.as_str()) {
            problems.push(format!(
                "{at}: level `{}` is not one of {LEVELS:?}",
                r.level
            ));
        }
        if r.owner.is_empty() {
            problems.push(format!("{at}: no owning test for `{}`", r.scenario));
        } else if let Err(e) = owner_exists(&r.owner, table) {
            problems.push(format!("{at}: {e}"));
        }
    }
    // Every scenario row is traced.
    let owners: BTreeSet<&str> = rows.iter().map(|r| r.owner.as_str()).collect();
    for (file, file_rows) in table {
        for row in file_rows {
            let owner = format!("{SCENARIO_DIR}/{file}::{}", row.name);
            if !owners.contains(owner.as_str()) {
                problems.push(format!(
                    "scenario row {owner} is not in docs/traceability.md"
                ));
            }
        }
    }
    problems
}

#[test]
fn traceability_maps_every_scenario_to_exactly_one_existing_test() {
    let text = std::fs::read_to_string(support::repo_root().join("docs/traceability.md"))
        .expect("docs/traceability.md");
    let problems = check_traceability(&text, &load_table());
    assert!(
        problems.is_empty(),
        "docs/traceability.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_traceability_check_catches_missing_duplicate_and_stale_owners() {
    let table = load_table();
    let ok = "props/scenarios.rs::bad_rows_fail_with_their_file_and_row_name";
    let doc = |rows: &[&str]| {
        format!(
            "# t\n\n{TRACE_HEADER}\n|---|---|---|---|---|\n{}\n",
            rows.join("\n")
        )
    };
    for (rows, want) in [
        (vec!["| a | x | one | unit | |"], "no owning test"),
        (
            vec![
                &format!("| a | x | one | unit | {ok} |") as &str,
                &format!("| b | x | One | unit | {ok} |"),
            ],
            "listed twice",
        ),
        (
            vec![
                &format!("| a | x | one | unit | {ok} |") as &str,
                &format!("| a | x | two | unit | {ok} |"),
            ],
            "id empty or listed twice",
        ),
        (
            vec!["| a | x | one | unit | props/scenarios.rs::no_such_test |"],
            "has no `fn no_such_test`",
        ),
        (
            vec!["| a | x | one | unit | props/nope.rs::t |"],
            "props/nope.rs",
        ),
        (
            vec!["| a | x | one | scenario | fixtures/scenarios/negative.yaml::no_such_row |"],
            "has no row `no_such_row`",
        ),
        (
            vec![&format!("| a | x | one | vibes | {ok} |") as &str],
            "level `vibes`",
        ),
    ] {
        let problems = check_traceability(&doc(&rows), &table).join("\n");
        assert!(problems.contains(want), "{rows:?}: {problems}");
    }
    // Untraced rows are reported too (this document traces none).
    let problems =
        check_traceability(&doc(&[&format!("| a | x | one | unit | {ok} |")]), &table).join("\n");
    assert!(
        problems.contains("is not in docs/traceability.md"),
        "{problems}"
    );
}
