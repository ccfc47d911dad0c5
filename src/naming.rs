//! Run names (`naming.yaml`), parent training ids and the tag registry (`tags.yaml`): build,
//! validate and parse back. Pure string work; never reads files or tracking state.

use crate::config::schema::{NameNormalizeRule, NamingFile};
use crate::config::Doc;
use crate::error::{Error, ErrorKind, Place, Result};
use serde_json::Value;
use std::collections::BTreeMap;

pub const DEFAULT_FINAL_TRAINING_PATTERN: &str =
    "{env}_{model}_final_training_spec-{spec_hash}_exec-{exec_hash}_v{variant}{version}";
pub const DEFAULT_CONVERSION_PATTERN: &str =
    "{env}_{model}_conversion_spec-{spec_hash}_exec-{exec_hash}_v{variant}_conv-{conv_hash}{version}";

/// The parts of a run name.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RunNameParts {
    pub env: String,
    pub model: String,
    /// First 8 chars of spec_fp.
    pub spec_hash: String,
    pub exec_hash: String,
    pub variant: u64,
    pub conv_hash: Option<String>,
    /// Auto-increment suffix number (≥ 2), when the name was taken.
    pub version: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Token(String),
}

const NAME_TOKENS: [&str; 7] = [
    "env",
    "model",
    "spec_hash",
    "exec_hash",
    "variant",
    "conv_hash",
    "version",
];

fn pieces(pattern: &str) -> std::result::Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        if start > 0 {
            out.push(Piece::Literal(rest[..start].to_string()));
        }
        let after = &rest[start + 1..];
        let end = after.find('}').ok_or("unclosed `{`")?;
        let name = &after[..end];
        if !NAME_TOKENS.contains(&name) {
            return Err(format!(
                "unknown token {{{name}}}; run-name tokens are {}",
                NAME_TOKENS.join(", ")
            ));
        }
        // `{version}` starts with its separator, so it may follow a token directly.
        if matches!(out.last(), Some(Piece::Token(_))) && name != "version" {
            return Err(format!(
                "tokens must be separated by literal text (at {{{name}}})"
            ));
        }
        out.push(Piece::Token(name.to_string()));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest.to_string()));
    }
    Ok(out)
}

/// A naming policy for one process type.
#[derive(Clone, Debug, PartialEq)]
pub struct RunNamePolicy {
    pattern: String,
    pieces: Vec<Piece>,
    env_rule: (Vec<(String, String)>, bool),
    model_rule: (Vec<(String, String)>, bool),
    pub max_length: usize,
    pub warn_length: usize,
    pub forbidden_chars: Vec<String>,
    pub version_separator: String,
}

fn rule_of(rule: &NameNormalizeRule) -> (Vec<(String, String)>, bool) {
    let replace = rule
        .replace
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect();
    (replace, rule.lowercase.unwrap_or(false))
}

fn apply_rule(value: &str, rule: &(Vec<(String, String)>, bool)) -> String {
    let mut s = value.to_string();
    for (from, to) in &rule.0 {
        if !from.is_empty() {
            s = s.replace(from.as_str(), to);
        }
    }
    if rule.1 {
        s = s.to_lowercase();
    }
    s
}

/// A run name that breaks a rule; `rule` is `max_length` or `forbidden_chars`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameViolation {
    pub rule: &'static str,
    pub message: String,
}

impl RunNamePolicy {
    pub fn new(pattern: &str) -> Result<RunNamePolicy> {
        let pieces = pieces(pattern).map_err(|m| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("run-name pattern {pattern:?}: {m}"),
            )
            .at(Place::file("naming.yaml"))
        })?;
        Ok(RunNamePolicy {
            pattern: pattern.to_string(),
            pieces,
            env_rule: (Vec::new(), false),
            model_rule: (Vec::new(), false),
            max_length: 256,
            warn_length: 150,
            forbidden_chars: ["/", "\\", ":", "*", "?", "\"", "<", ">", "|"]
                .map(String::from)
                .to_vec(),
            version_separator: "_".into(),
        })
    }

    /// The final-training (or conversion) policy from `naming.yaml`.
    pub fn from_naming(naming: &NamingFile, conversion: bool) -> Result<RunNamePolicy> {
        let pattern = if conversion {
            naming
                .run_names
                .conversion
                .pattern
                .as_deref()
                .unwrap_or(DEFAULT_CONVERSION_PATTERN)
        } else {
            naming
                .run_names
                .final_training
                .pattern
                .as_deref()
                .unwrap_or(DEFAULT_FINAL_TRAINING_PATTERN)
        };
        let mut policy = RunNamePolicy::new(pattern)?;
        policy.env_rule = rule_of(&naming.normalize.env);
        policy.model_rule = rule_of(&naming.normalize.model);
        if let Some(max) = naming.validate.max_length {
            policy.max_length = max as usize;
        }
        if let Some(warn) = naming.validate.warn_length {
            policy.warn_length = warn as usize;
        }
        if !naming.validate.forbidden_chars.is_empty() {
            policy.forbidden_chars = naming.validate.forbidden_chars.clone();
        }
        if let Some(sep) = &naming.version.separator {
            policy.version_separator = sep.clone();
        }
        Ok(policy)
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern places `{version}` itself (else a version is appended).
    pub fn has_version_token(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Token(t) if t == "version"))
    }

    /// Builds and validates a name; returns it with its warnings (over `warn_length`).
    pub fn build(
        &self,
        parts: &RunNameParts,
    ) -> std::result::Result<(String, Vec<String>), NameViolation> {
        let mut name = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => name.push_str(l),
                Piece::Token(t) => name.push_str(&self.render_token(t, parts)),
            }
        }
        self.validate(&name).map(|warnings| (name, warnings))
    }

    fn render_token(&self, token: &str, parts: &RunNameParts) -> String {
        match token {
            "env" => apply_rule(&parts.env, &self.env_rule),
            "model" => apply_rule(&parts.model, &self.model_rule),
            "spec_hash" => parts.spec_hash.chars().take(8).collect(),
            "exec_hash" => parts.exec_hash.chars().take(8).collect(),
            "variant" => parts.variant.to_string(),
            "conv_hash" => parts.conv_hash.clone().unwrap_or_else(|| "unknown".into()),
            "version" => parts
                .version
                .map(|v| format!("{}{v}", self.version_separator))
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// Checks `max_length` and `forbidden_chars`; returns warnings for `warn_length`.
    pub fn validate(&self, name: &str) -> std::result::Result<Vec<String>, NameViolation> {
        let len = name.chars().count();
        if len > self.max_length {
            return Err(NameViolation {
                rule: "max_length",
                message: format!(
                    "run name is {len} characters, over max_length {}: {name:?}",
                    self.max_length
                ),
            });
        }
        if let Some(c) = self
            .forbidden_chars
            .iter()
            .find(|c| !c.is_empty() && name.contains(c.as_str()))
        {
            return Err(NameViolation {
                rule: "forbidden_chars",
                message: format!("run name contains forbidden {c:?}: {name:?}"),
            });
        }
        if name.is_empty() {
            return Err(NameViolation {
                rule: "max_length",
                message: "run name is empty".into(),
            });
        }
        let mut warnings = Vec::new();
        if len > self.warn_length {
            warnings.push(format!(
                "run name is {len} characters, over warn_length {}",
                self.warn_length
            ));
        }
        Ok(warnings)
    }

    /// Parses a name built by this policy back into its parts (hashes as their 8-char forms).
    pub fn parse(&self, name: &str) -> Option<RunNameParts> {
        let mut parts = RunNameParts::default();
        if self.match_from(0, name, &mut parts) {
            Some(parts)
        } else {
            None
        }
    }

    /// Backtracking matcher: tokens have fixed shapes except `model`, which may contain the
    /// separators; bounded by name length × pieces.
    fn match_from(&self, piece: usize, rest: &str, parts: &mut RunNameParts) -> bool {
        let Some(p) = self.pieces.get(piece) else {
            return rest.is_empty();
        };
        match p {
            Piece::Literal(l) => rest
                .strip_prefix(l.as_str())
                .is_some_and(|r| self.match_from(piece + 1, r, parts)),
            Piece::Token(t) => {
                let mut cuts: Vec<usize> = rest.char_indices().map(|(i, _)| i).skip(1).collect();
                cuts.push(rest.len());
                if t == "version" {
                    cuts.insert(0, 0);
                }
                for cut in cuts.into_iter().rev() {
                    let (head, tail) = rest.split_at(cut);
                    if self.accept(t, head, parts) && self.match_from(piece + 1, tail, parts) {
                        return true;
                    }
                }
                false
            }
        }
    }

    fn accept(&self, token: &str, value: &str, parts: &mut RunNameParts) -> bool {
        let hex8 =
            |v: &str| v.len() == 8 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let number = |v: &str| {
            !v.is_empty()
                && !v.starts_with('0')
                && v.bytes().all(|b| b.is_ascii_digit())
                && v.len() < 20
        };
        match token {
            "env" => {
                let ok = crate::config::schema::StorageEnv::ALL
                    .iter()
                    .any(|e| apply_rule(e.as_str(), &self.env_rule) == value);
                if ok {
                    parts.env = value.to_string();
                }
                ok
            }
            "model" => {
                let ok = !value.is_empty();
                if ok {
                    parts.model = value.to_string();
                }
                ok
            }
            "spec_hash" | "exec_hash" | "conv_hash" => {
                if !hex8(value) {
                    return false;
                }
                match token {
                    "spec_hash" => parts.spec_hash = value.to_string(),
                    "exec_hash" => parts.exec_hash = value.to_string(),
                    _ => parts.conv_hash = Some(value.to_string()),
                }
                true
            }
            "variant" => {
                let ok = number(value);
                if ok {
                    parts.variant = value.parse().unwrap_or(0);
                }
                ok && parts.variant >= 1
            }
            "version" => {
                if value.is_empty() {
                    parts.version = None;
                    return true;
                }
                let Some(n) = value.strip_prefix(self.version_separator.as_str()) else {
                    return false;
                };
                if !number(n) {
                    return false;
                }
                parts.version = n.parse().ok().filter(|v| *v >= 2);
                parts.version.is_some()
            }
            _ => false,
        }
    }
}

/// `spec-<spec8>_exec-<exec8>/v<N>`: how a conversion names its parent.
pub fn build_parent_training_id(spec_fp: &str, exec_fp: &str, variant: u64) -> String {
    let spec8: String = spec_fp.chars().take(8).collect();
    let exec8: String = exec_fp.chars().take(8).collect();
    format!("spec-{spec8}_exec-{exec8}/v{variant}")
}

/// Parses a parent training id; `None` unless it has exactly the built form.
pub fn parse_parent_training_id(id: &str) -> Option<(String, String, u64)> {
    let (head, v) = id.split_once("/v")?;
    let rest = head.strip_prefix("spec-")?;
    let (spec8, exec8) = rest.split_once("_exec-")?;
    let hex8 = |s: &str| s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex8(spec8)
        || !hex8(exec8)
        || v.is_empty()
        || v.starts_with('0')
        || !v.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let variant = v.parse().ok().filter(|n| *n >= 1)?;
    Some((spec8.to_string(), exec8.to_string(), variant))
}

/// Built-in tag keys: (section, key, MLflow tag name). `tags.yaml` may rename any of them but
/// not invent new ones (a typo would otherwise silently drop a tag).
pub const DEFAULT_TAGS: &[(&str, &str, &str)] = &[
    ("process", "stage", "code.stage"),
    ("process", "project", "code.project"),
    ("process", "model", "code.model"),
    ("process", "backbone", "code.backbone"),
    ("process", "env", "code.env"),
    ("process", "storage_env", "code.storage_env"),
    ("process", "execution_platform", "code.execution_platform"),
    ("process", "created_by", "code.created_by"),
    ("process", "run_type", "code.run_type"),
    (
        "training",
        "trained_on_full_data",
        "code.trained_on_full_data",
    ),
    ("training", "source_training_run", "source_training_run"),
    ("training", "interrupted", "code.interrupted"),
    ("training", "run_mode", "code.run_mode"),
    ("lineage", "source", "code.lineage.source"),
    (
        "lineage",
        "hpo_study_key_hash",
        "code.lineage.hpo_study_key_hash",
    ),
    (
        "lineage",
        "hpo_trial_key_hash",
        "code.lineage.hpo_trial_key_hash",
    ),
    (
        "lineage",
        "hpo_trial_run_id",
        "code.lineage.hpo_trial_run_id",
    ),
    (
        "lineage",
        "hpo_refit_run_id",
        "code.lineage.hpo_refit_run_id",
    ),
    (
        "lineage",
        "hpo_sweep_run_id",
        "code.lineage.hpo_sweep_run_id",
    ),
    (
        "lineage",
        "parent_training_run_id",
        "code.lineage.parent_training_run_id",
    ),
    ("lineage", "parent_spec_fp", "code.lineage.parent_spec_fp"),
    ("lineage", "parent_exec_fp", "code.lineage.parent_exec_fp"),
    ("lineage", "parent_variant", "code.lineage.parent_variant"),
    ("paths", "spec_fp", "code.spec_fp"),
    ("paths", "exec_fp", "code.exec_fp"),
    ("paths", "conv_fp", "code.conv_fp"),
    ("paths", "output_dir", "code.output_dir"),
    ("legacy", "variant", "code.variant"),
    ("legacy", "parent_training_id", "code.parent_training_id"),
    ("grouping", "study_key_hash", "code.study_key_hash"),
    ("grouping", "trial_key_hash", "code.trial_key_hash"),
    ("objective", "direction", "code.objective.direction"),
    ("mlflow", "run_type", "mlflow.runType"),
    ("mlflow", "parent_run_id", "mlflow.parentRunId"),
];

/// The tag-name registry: built-in defaults, renamed by `tags.yaml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRegistry {
    names: BTreeMap<(String, String), String>,
}

impl TagRegistry {
    pub fn defaults() -> TagRegistry {
        TagRegistry {
            names: DEFAULT_TAGS
                .iter()
                .map(|(s, k, t)| ((s.to_string(), k.to_string()), t.to_string()))
                .collect(),
        }
    }

    /// Reads `tags.yaml`: `schema_version` plus `section: {key: tag_name}`; every pair must be
    /// a known one, every tag name a non-empty string.
    pub fn from_doc(doc: &Doc) -> Result<TagRegistry> {
        let mut registry = TagRegistry::defaults();
        let Value::Object(top) = &doc.tree else {
            return Ok(registry);
        };
        let sections: Vec<&str> = {
            let mut s: Vec<&str> = DEFAULT_TAGS.iter().map(|(s, _, _)| *s).collect();
            s.dedup();
            s
        };
        for (section, body) in top {
            if section == "schema_version" {
                if !body.is_u64() {
                    return Err(doc.locate(section, "schema_version must be a positive integer"));
                }
                continue;
            }
            if !sections.contains(&section.as_str()) {
                let mut allowed = sections.clone();
                allowed.push("schema_version");
                return Err(doc.locate(section, &unknown("section", section, &allowed)));
            }
            let Value::Object(keys) = body else {
                return Err(doc.locate(section, "expected a mapping of tag keys to tag names"));
            };
            let known: Vec<&str> = DEFAULT_TAGS
                .iter()
                .filter(|(s, _, _)| s == section)
                .map(|(_, k, _)| *k)
                .collect();
            for (key, name) in keys {
                let path = format!("{section}.{key}");
                if !known.contains(&key.as_str()) {
                    return Err(doc.locate(&path, &unknown("tag key", key, &known)));
                }
                let Some(name) = name.as_str().filter(|n| !n.is_empty()) else {
                    return Err(doc.locate(&path, "a tag name must be a non-empty string"));
                };
                registry
                    .names
                    .insert((section.clone(), key.clone()), name.to_string());
            }
        }
        Ok(registry)
    }

    /// The MLflow tag name for `section.key`. Only called with keys from [`DEFAULT_TAGS`].
    pub fn name(&self, section: &str, key: &str) -> String {
        self.names
            .get(&(section.to_string(), key.to_string()))
            .cloned()
            .unwrap_or_else(|| format!("code.{key}"))
    }
}

fn unknown(what: &str, given: &str, allowed: &[&str]) -> String {
    let hint = crate::config::yaml::closest(given, allowed)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default();
    format!(
        "unknown {what} `{given}`, expected one of {}{hint}",
        allowed.join(", ")
    )
}
