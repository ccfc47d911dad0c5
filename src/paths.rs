//! The one path builder (docs/contract.md, "Vocabulary", "Environments and storage"): OUT
//! resolution with env overrides, token normalisation, `paths.yaml` patterns, length limits, and
//! dataset path forms. Every generated path is under OUT or an error; nothing here touches the
//! disk.

use crate::config::schema::{PathsFile, StorageEnv};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Place, Result};
use std::path::{Component, Path, PathBuf};

/// Token normalisation rules (`paths.yaml normalize_paths`).
#[derive(Clone, Debug, PartialEq)]
pub struct NormalizeRules {
    pub replace: Vec<(String, String)>,
    pub forbidden_chars: Vec<String>,
    pub lowercase: bool,
    pub max_component_length: usize,
    pub max_path_length: usize,
}

impl Default for NormalizeRules {
    fn default() -> Self {
        NormalizeRules {
            replace: Vec::new(),
            forbidden_chars: Vec::new(),
            lowercase: false,
            max_component_length: 255,
            max_path_length: 4096,
        }
    }
}

/// Characters that must never survive in a token whatever the user's rules say: they would
/// make a token a separator or a drive letter.
fn is_unsafe(c: char) -> bool {
    matches!(c, '/' | '\\' | ':') || c.is_control()
}

impl NormalizeRules {
    /// Normalises one token value. The result is a single safe path component: the user's
    /// replacements and forbidden chars, then separators, drive colons and control chars as
    /// `_`, then lowercase. `""`, `.`, `..` and over-long results are errors, never truncated.
    pub fn token(&self, what: &str, value: &str) -> Result<String> {
        let mut s = value.to_string();
        for (from, to) in &self.replace {
            if !from.is_empty() {
                s = s.replace(from.as_str(), to);
            }
        }
        for forbidden in &self.forbidden_chars {
            if !forbidden.is_empty() {
                s = s.replace(forbidden.as_str(), "_");
            }
        }
        let mut s: String = s
            .chars()
            .map(|c| if is_unsafe(c) { '_' } else { c })
            .collect();
        if self.lowercase {
            s = s.to_lowercase();
        }
        if s.is_empty() || s == "." || s == ".." {
            return Err(Error::new(
                ErrorKind::InvalidPath,
                format!(
                    "{what} {value:?} normalises to {s:?}, which is not a usable path component"
                ),
            ));
        }
        let len = s.chars().count();
        if len > self.max_component_length {
            return Err(Error::new(
                ErrorKind::InvalidPath,
                format!(
                    "{what} {value:?} is {len} characters after normalisation, over max_component_length {}",
                    self.max_component_length
                ),
            ));
        }
        debug_assert!(!s.contains(['/', '\\']));
        Ok(s)
    }

    pub fn from_paths(paths: &PathsFile) -> Result<NormalizeRules> {
        let n = &paths.normalize_paths;
        let mut replace = Vec::new();
        for (from, to) in &n.replace {
            let to = to.as_str().ok_or_else(|| {
                Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("normalize_paths.replace[{from:?}] must be a string"),
                )
                .at(Place::default().with_key(format!("normalize_paths.replace.{from}")))
            })?;
            replace.push((from.clone(), to.to_string()));
        }
        let defaults = NormalizeRules::default();
        Ok(NormalizeRules {
            replace,
            forbidden_chars: n.forbidden_chars.clone(),
            lowercase: n.lowercase.unwrap_or(false),
            max_component_length: n
                .max_component_length
                .map(|v| v as usize)
                .unwrap_or(defaults.max_component_length),
            max_path_length: n
                .max_path_length
                .map(|v| v as usize)
                .unwrap_or(defaults.max_path_length),
        })
    }
}

/// A `paths.yaml` pattern split into segments; the last one of a variant pattern holds
/// `{variant}` with a fixed prefix/suffix so that directory names parse back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    pub text: String,
    segments: Vec<String>,
}

const PATH_TOKENS: [&str; 12] = [
    "storage_env",
    "model",
    "spec_fp",
    "exec_fp",
    "spec8",
    "exec8",
    "variant",
    "conv_fp",
    "conv8",
    "study8",
    "trial8",
    "bench8",
];

impl Pattern {
    pub fn parse(key: &str, text: &str) -> Result<Pattern> {
        let bad = |msg: String| {
            Error::new(ErrorKind::ConfigInvalid, msg)
                .at(Place::file("paths.yaml").with_key(format!("patterns.{key}")))
        };
        for token in tokens_of(text).map_err(|m| bad(format!("{text:?}: {m}")))? {
            if !PATH_TOKENS.contains(&token.as_str()) {
                return Err(bad(format!(
                    "unknown token {{{token}}} in {text:?}; path tokens are {}",
                    PATH_TOKENS.join(", ")
                )));
            }
        }
        let segments: Vec<String> = text
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if segments.is_empty() {
            return Err(bad("empty pattern".into()));
        }
        if segments.iter().any(|s| s == "." || s == "..") {
            return Err(bad(format!("{text:?} contains `.` or `..`")));
        }
        Ok(Pattern {
            text: text.to_string(),
            segments,
        })
    }

    /// For a variant pattern: `{variant}` only in the last segment, exactly once.
    fn check_variant_last(&self, key: &str) -> Result<()> {
        let (last, rest) = self.segments.split_last().expect("non-empty");
        let only_variant = tokens_of(last).is_ok_and(|t| t == ["variant"]);
        if !only_variant || rest.iter().any(|s| s.contains("{variant}")) {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "{:?}: the last segment must hold {{variant}} as its only token, and no other segment may",
                    self.text
                ),
            )
            .at(Place::file("paths.yaml").with_key(format!("patterns.{key}"))));
        }
        Ok(())
    }

    /// Substitutes tokens in one pass over the pattern text, so a token's value is never
    /// scanned for placeholders (a model named `{spec8}` stays literally `{spec8}`).
    fn render(&self, segments: &[String], tokens: &[(&str, String)]) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(segments.len());
        for segment in segments {
            let mut rendered = String::with_capacity(segment.len());
            let mut rest = segment.as_str();
            // Bounded by the segment length: every round consumes at least one placeholder.
            while let Some(start) = rest.find('{') {
                rendered.push_str(&rest[..start]);
                let after = &rest[start + 1..];
                let end = after.find('}').unwrap_or(after.len());
                let name = &after[..end];
                let value = tokens.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
                let Some(value) = value else {
                    return Err(Error::new(
                        ErrorKind::InvalidPath,
                        format!(
                            "pattern {:?} needs the token {{{name}}}, which was not given",
                            self.text
                        ),
                    ));
                };
                rendered.push_str(value);
                rest = after.get(end + 1..).unwrap_or("");
            }
            rendered.push_str(rest);
            out.push(rendered);
        }
        Ok(out)
    }
}

fn tokens_of(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after.find('}').ok_or("unclosed `{`")?;
        let name = &after[..end];
        if name.is_empty() || name.contains('{') {
            return Err("malformed placeholder".into());
        }
        tokens.push(name.to_string());
        rest = &after[end + 1..];
    }
    if rest.contains('}') {
        return Err("unmatched `}`".into());
    }
    Ok(tokens)
}

/// The identity whose variants live in one directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub storage_env: StorageEnv,
    pub model: String,
    pub spec_fp: String,
    pub exec_fp: String,
}

/// Where every output lives for one storage environment.
#[derive(Clone, Debug)]
pub struct Layout {
    pub out: PathBuf,
    pub final_training_dir: PathBuf,
    pub conversion_dir: PathBuf,
    pub cache_dir: PathBuf,
    final_training: Pattern,
    conversion: Pattern,
    pub rules: NormalizeRules,
}

/// The configured OUT and the key that set it (`base.outputs`, or the env override's).
fn configured_out(paths: &PathsFile, env: StorageEnv) -> (String, String) {
    let o = &paths.env_overrides;
    let overridden = match env {
        StorageEnv::Local => &o.local,
        StorageEnv::Colab => &o.colab,
        StorageEnv::Kaggle => &o.kaggle,
        StorageEnv::Azureml => &o.azureml,
    };
    match (&overridden.base.outputs, &paths.base.outputs) {
        (Some(v), _) => (
            v.clone(),
            format!("env_overrides.{}.base.outputs", env.as_str()),
        ),
        (None, Some(v)) => (v.clone(), "base.outputs".into()),
        (None, None) => ("outputs".into(), "base.outputs".into()),
    }
}

/// OUT per docs/contract.md, "Vocabulary": `base.outputs` (relative to ROOT), replaced by the env
/// override; a `file://` URL is its local path; a bucket URL (`s3://`, `gs://`, `az://`) stays the
/// URL, without a trailing `/` (paths below it are object keys: `store::bucket`).
pub fn resolve_out(root: &Path, paths: &PathsFile, env: StorageEnv) -> PathBuf {
    let (base, _) = configured_out(paths, env);
    if let Some(Ok(bucket)) = BucketUrl::parse(&base) {
        return PathBuf::from(bucket.url());
    }
    let base = base.strip_prefix("file://").unwrap_or(&base);
    lexical_normalize(&crate::config::absolutize(Path::new(base), root))
}

/// The scheme of a path that names a bucket or an object in one (`s3://bucket/key` taken as a
/// path: its first component is `s3:`, `gs:` or `az:`).
fn bucket_scheme(path: &Path) -> Option<&str> {
    match path.components().next() {
        Some(Component::Normal(first)) => first
            .to_str()?
            .strip_suffix(':')
            .filter(|s| BUCKET_SCHEMES.contains(s)),
        _ => None,
    }
}

/// Whether `path` names an object in a bucket (or the bucket).
pub fn is_bucket_path(path: &Path) -> bool {
    bucket_scheme(path).is_some()
}

/// The bucket a bucket path lies in (`s3://bucket/…` → `s3`, `bucket`, no prefix).
pub fn bucket_of_path(path: &Path) -> Option<BucketUrl> {
    let scheme = bucket_scheme(path)?;
    match path.components().nth(1) {
        Some(Component::Normal(bucket)) => Some(BucketUrl {
            scheme: scheme.to_string(),
            bucket: bucket.to_str()?.to_string(),
            prefix: String::new(),
        }),
        _ => None,
    }
}

/// The object stores OUT may live in, by URL scheme.
pub const BUCKET_SCHEMES: [&str; 3] = ["s3", "gs", "az"];

/// OUT in a bucket: `<scheme>://<bucket>/<prefix>` (docs/contract.md, "OUT in an object
/// store").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketUrl {
    pub scheme: String,
    pub bucket: String,
    /// Key prefix, without leading or trailing `/` (empty: the bucket's root).
    pub prefix: String,
}

impl BucketUrl {
    /// `None` when `text` is not a URL of a bucket scheme; `Some(Err(why))` when it is one
    /// but malformed (no bucket, a query or credentials in it, `.`/`..` or empty segments).
    pub fn parse(text: &str) -> Option<std::result::Result<BucketUrl, String>> {
        let (scheme, rest) = text.split_once("://")?;
        if !BUCKET_SCHEMES.contains(&scheme) {
            return None;
        }
        Some((|| {
            if rest.contains(['?', '#', '@', '\\']) || rest.chars().any(char::is_control) {
                return Err(
                    "a bucket URL holds no credentials, query or fragment (credentials come from the environment)"
                        .to_string(),
                );
            }
            let rest = rest.trim_end_matches('/');
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("the URL names no bucket".to_string());
            }
            if prefix
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
                && !prefix.is_empty()
            {
                return Err("the key prefix has an empty, `.` or `..` segment".to_string());
            }
            Ok(BucketUrl {
                scheme: scheme.to_string(),
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            })
        })())
    }

    /// The canonical URL (no trailing `/`).
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("{}://{}", self.scheme, self.bucket)
        } else {
            format!("{}://{}/{}", self.scheme, self.bucket, self.prefix)
        }
    }
}

/// The bucket OUT lives in, if it is a bucket URL.
pub fn out_bucket(config: &Config) -> Option<BucketUrl> {
    let (base, _) = configured_out(&config.paths, config.env.env);
    BucketUrl::parse(&base).and_then(|r| r.ok())
}

/// An OUT given as a URL is a bucket (`s3://`, `gs://`, `az://`), a local path (`file://`),
/// or a config error naming the key: an unknown scheme, or a malformed bucket URL, must never
/// become a local directory named `s3:` (docs/contract.md, "Storage profiles").
fn check_out_is_a_path(config: &Config) -> Result<()> {
    let (paths, env) = (&config.paths, config.env.env);
    let (base, key) = configured_out(paths, env);
    let scheme = base.split_once("://").map(|(s, _)| s).filter(|s| {
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    let refuse = |message: String| {
        Err(match config.docs.get("paths") {
            Some(doc) => doc.locate(&key, &message),
            None => Error::new(ErrorKind::ConfigInvalid, message)
                .at(Place::file("paths.yaml").with_key(key.clone())),
        })
    };
    match scheme {
        None | Some("file") => Ok(()),
        Some(_) => match BucketUrl::parse(&base) {
            Some(Ok(_)) => Ok(()),
            Some(Err(why)) => refuse(format!("OUT `{}`: {why}", redact(&base))),
            None => refuse(format!(
                "OUT `{}` is a URL of a scheme trainctl does not know: OUT is a filesystem \
                 path, a `file://` URL, or a bucket (`s3://`, `gs://`, `az://`; README \
                 \"Where OUT can live\")",
                redact(&base)
            )),
        },
    }
}

/// `text` without anything between `://` and an `@` (credentials never reach a message).
pub fn redact(text: &str) -> String {
    match (text.split_once("://"), text.rfind('@')) {
        (Some((scheme, rest)), Some(_)) if rest.contains('@') => {
            let after = &rest[rest.rfind('@').map_or(0, |i| i + 1)..];
            format!("{scheme}://…@{after}")
        }
        _ => text.to_string(),
    }
}

/// Removes `.` and resolves `..` lexically (no symlinks consulted).
pub fn lexical_normalize(path: &Path) -> PathBuf {
    if is_bucket_path(path) {
        // A key is not a local path: `s3://b/k` keeps its `//` (component-wise rebuilding
        // would make it `s3:/b/k`); only a trailing `/` goes.
        return PathBuf::from(path.to_string_lossy().trim_end_matches('/'));
    }
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn subdir(
    name: &Option<String>,
    default: &str,
    key: &str,
    rules: &NormalizeRules,
) -> Result<String> {
    let value = name.clone().unwrap_or_else(|| default.to_string());
    rules
        .token(&format!("paths.yaml {key}"), &value)
        .map_err(|e| e.at(Place::file("paths.yaml").with_key(key.to_string())))
}

impl Layout {
    pub fn new(root: &Path, paths: &PathsFile, env: StorageEnv) -> Result<Layout> {
        let rules = NormalizeRules::from_paths(paths)?;
        let out = resolve_out(root, paths, env);
        let ft = subdir(
            &paths.outputs.final_training,
            "final_training",
            "outputs.final_training",
            &rules,
        )?;
        let conv = subdir(
            &paths.outputs.conversion,
            "conversion",
            "outputs.conversion",
            &rules,
        )?;
        let cache = subdir(&paths.outputs.cache, "cache", "outputs.cache", &rules)?;
        let final_training = Pattern::parse(
            "final_training_v2",
            paths
                .patterns
                .final_training_v2
                .as_deref()
                .unwrap_or("{storage_env}/{model}/spec-{spec8}_exec-{exec8}/v{variant}"),
        )?;
        final_training.check_variant_last("final_training_v2")?;
        let conversion = Pattern::parse(
            "conversion_v2",
            paths.patterns.conversion_v2.as_deref().unwrap_or(
                "{storage_env}/{model}/spec-{spec8}_exec-{exec8}/v{variant}/conv-{conv8}",
            ),
        )?;
        Ok(Layout {
            final_training_dir: out.join(ft),
            conversion_dir: out.join(conv),
            cache_dir: out.join(cache),
            out,
            final_training,
            conversion,
            rules,
        })
    }

    pub fn from_config(config: &Config) -> Result<Layout> {
        check_out_is_a_path(config)?;
        Layout::new(&config.root, &config.paths, config.env.env)
    }

    fn identity_tokens(&self, id: &Identity) -> Result<Vec<(&'static str, String)>> {
        if !crate::identity::is_fingerprint(&id.spec_fp)
            || !crate::identity::is_fingerprint(&id.exec_fp)
        {
            return Err(Error::internal(format!(
                "fingerprints must be 16 lowercase hex: {:?} {:?}",
                id.spec_fp, id.exec_fp
            )));
        }
        Ok(vec![
            ("storage_env", id.storage_env.as_str().to_string()),
            ("model", self.rules.token("model", &id.model)?),
            ("spec_fp", id.spec_fp.clone()),
            ("exec_fp", id.exec_fp.clone()),
            ("spec8", id.spec_fp[..8].to_string()),
            ("exec8", id.exec_fp[..8].to_string()),
        ])
    }

    /// How many directory levels the final-training pattern has below `OUT/final_training`.
    pub fn pattern_depth(&self) -> usize {
        self.final_training.segments.len()
    }

    /// The directory holding every variant of `id` (the pattern without its last segment).
    pub fn identity_dir(&self, id: &Identity) -> Result<PathBuf> {
        let tokens = self.identity_tokens(id)?;
        let segs = &self.final_training.segments;
        let rendered = self
            .final_training
            .render(&segs[..segs.len() - 1], &tokens)?;
        self.join_checked(&self.final_training_dir, &rendered)
    }

    /// The variant dir `OUT/final_training/<pattern>`.
    pub fn variant_dir(&self, id: &Identity, variant: u64) -> Result<PathBuf> {
        debug_assert!(variant >= 1);
        let mut tokens = self.identity_tokens(id)?;
        tokens.push(("variant", variant.to_string()));
        let rendered = self
            .final_training
            .render(&self.final_training.segments, &tokens)?;
        self.join_checked(&self.final_training_dir, &rendered)
    }

    /// `dir` relative to OUT with `/` separators (`dir` itself when it is not under OUT): how
    /// OUT's own records (run-name reservations, sync records) name a variant dir, so that
    /// they stay valid when OUT is mounted elsewhere.
    pub fn out_relative(&self, dir: &Path) -> String {
        dir.strip_prefix(&self.out)
            .unwrap_or(dir)
            .to_string_lossy()
            .replace('\\', "/")
    }

    /// The name of variant `variant`'s directory inside its identity dir (the pattern's last
    /// segment, which holds only `{variant}` and literals).
    pub fn variant_name(&self, variant: u64) -> String {
        let last = self
            .final_training
            .segments
            .last()
            .expect("non-empty pattern");
        last.replace("{variant}", &variant.to_string())
    }

    /// Parses a directory name inside an identity dir back into its variant number.
    /// Only canonical decimal numbers ≥ 1 count (`v01` is not a variant).
    pub fn parse_variant_name(&self, name: &str) -> Option<u64> {
        let last = self.final_training.segments.last()?;
        let (prefix, suffix) = last.split_once("{variant}")?;
        let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        digits.parse::<u64>().ok()
    }

    /// The conversion output dir of a parent variant (docs/contract.md, "Source, checkpoint and
    /// conversion").
    pub fn conversion_dir_for(
        &self,
        id: &Identity,
        variant: u64,
        conv_fp: &str,
    ) -> Result<PathBuf> {
        let mut tokens = self.identity_tokens(id)?;
        tokens.push(("variant", variant.to_string()));
        tokens.push(("conv_fp", conv_fp.to_string()));
        tokens.push(("conv8", conv_fp.chars().take(8).collect()));
        let rendered = self.conversion.render(&self.conversion.segments, &tokens)?;
        self.join_checked(&self.conversion_dir, &rendered)
    }

    /// `OUT/cache/<kind>`.
    pub fn cache_kind_dir(&self, kind: &str) -> Result<PathBuf> {
        let seg = self.rules.token("cache kind", kind)?;
        self.join_checked(&self.cache_dir, &[seg])
    }

    /// Joins rendered segments under `base`, checking component and path limits and that the
    /// result stays under OUT.
    fn join_checked(&self, base: &Path, segments: &[String]) -> Result<PathBuf> {
        let mut path = base.to_path_buf();
        for segment in segments {
            if segment.is_empty()
                || segment == "."
                || segment == ".."
                || segment.contains(['/', '\\'])
            {
                return Err(Error::new(
                    ErrorKind::InvalidPath,
                    format!("generated path component {segment:?} is not a plain name"),
                ));
            }
            let len = segment.chars().count();
            if len > self.rules.max_component_length {
                return Err(Error::new(
                    ErrorKind::InvalidPath,
                    format!(
                        "path component {segment:?} is {len} characters, over max_component_length {}",
                        self.rules.max_component_length
                    ),
                ));
            }
            path.push(segment);
        }
        let total = path.as_os_str().to_string_lossy().chars().count();
        if total > self.rules.max_path_length {
            return Err(Error::new(
                ErrorKind::InvalidPath,
                format!(
                    "path {} is {total} characters, over max_path_length {}",
                    path.display(),
                    self.rules.max_path_length
                ),
            ));
        }
        if !path.starts_with(&self.out) {
            return Err(Error::internal(format!(
                "generated path {} is outside OUT {}",
                path.display(),
                self.out.display()
            )));
        }
        Ok(path)
    }
}

/// A dataset path as written by the user (`dataset.local_path_override`, data `local_path`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetPath {
    /// A POSIX path (backslashes already turned into `/`).
    Posix(String),
    /// `C:\d\x`, `C:/d/x` (drive letter, rest with `/`).
    Drive { letter: char, rest: String },
    /// `\\server\share\x`.
    Unc {
        server: String,
        share: String,
        rest: String,
    },
}

impl DatasetPath {
    /// Classifies a path string. Windows forms are recognised with any mix of separators.
    pub fn parse(raw: &str) -> DatasetPath {
        let bytes = raw.as_bytes();
        if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
            let rest = raw[2..].replace('\\', "/");
            return DatasetPath::Drive {
                letter: (bytes[0] as char).to_ascii_uppercase(),
                rest,
            };
        }
        if raw.starts_with("\\\\") || (raw.starts_with("\\/") || raw.starts_with("/\\")) {
            let body = raw[2..].replace('\\', "/");
            let mut parts = body.splitn(3, '/');
            let server = parts.next().unwrap_or_default().to_string();
            let share = parts.next().unwrap_or_default().to_string();
            let rest = parts.next().unwrap_or_default().to_string();
            return DatasetPath::Unc {
                server,
                share,
                rest,
            };
        }
        DatasetPath::Posix(raw.replace('\\', "/"))
    }

    /// Resolves against `base` on this host. Windows forms are `unsupported_path` on a
    /// non-Windows host (never a file literally named `C:\…`).
    pub fn resolve(&self, raw: &str, base: &Path, key: &str) -> Result<PathBuf> {
        match self {
            DatasetPath::Posix(p) => Ok(lexical_normalize(&crate::config::absolutize(
                Path::new(p),
                base,
            ))),
            DatasetPath::Drive { .. } | DatasetPath::Unc { .. } => {
                if cfg!(windows) {
                    Ok(PathBuf::from(raw))
                } else {
                    Err(Error::new(
                        ErrorKind::UnsupportedPath,
                        format!(
                            "{raw:?} is a Windows {} path; this host is not Windows",
                            self.form()
                        ),
                    )
                    .at(Place::default().with_key(key)))
                }
            }
        }
    }

    fn form(&self) -> &'static str {
        match self {
            DatasetPath::Posix(_) => "POSIX",
            DatasetPath::Drive { .. } => "drive-letter",
            DatasetPath::Unc { .. } => "UNC",
        }
    }
}
