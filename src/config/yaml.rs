//! One YAML document as a JSON tree plus the origin of every key, read with serde-saphyr
//! (YAML 1.2 typing, merge keys expanded, duplicate keys rejected). Owns `-o` overrides and
//! the mapping of typed-deserialisation errors back to file:line:column and dotted key.
//! Never interprets what a key means; that is `schema.rs`'s job.

use crate::error::{Error, ErrorKind, Place};
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;

/// Where an effective value came from (printed by `config show`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File {
        file: String,
        line: u64,
        column: u64,
    },
    Override {
        arg: String,
    },
    /// A value that came from elsewhere than a file or `-o`: the best configuration of a
    /// selection record.
    Derived {
        what: String,
    },
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { file, line, .. } => write!(f, "{file}:{line}"),
            Origin::Override { arg } => write!(f, "-o {}", crate::paths::redact(arg)),
            Origin::Derived { what } => f.write_str(what),
            Origin::Default => f.write_str("default"),
        }
    }
}

impl Origin {
    pub fn place(&self, key: &str) -> Place {
        match self {
            Origin::File { file, line, column } => Place {
                file: Some(file.clone()),
                line: Some(*line),
                column: Some(*column),
                key: Some(key.to_string()),
            },
            Origin::Override { arg } => Place {
                file: Some(format!("-o {}", crate::paths::redact(arg))),
                key: Some(key.to_string()),
                ..Place::default()
            },
            Origin::Derived { what } => Place {
                file: Some(what.clone()),
                key: Some(key.to_string()),
                ..Place::default()
            },
            Origin::Default => Place::default().with_key(key),
        }
    }
}

/// A parsed document: the tree with null map entries dropped (a null leaf means "keep the
/// lower-precedence value", a null section is an empty mapping) and the origin of each key
/// by dotted path (`a.b`, sequence items as `a[0]`).
#[derive(Clone, Debug)]
pub struct Doc {
    pub name: String,
    pub tree: Value,
    pub origins: BTreeMap<String, Origin>,
    /// Keys written with a null value (absent from `tree`), for the schema check.
    pub nulls: BTreeMap<String, Origin>,
}

/// The raw YAML tree as serde-saphyr hands it over, with spans.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
                i64::try_from(v)
                    .map(Raw::Int)
                    .map_err(|_| E::custom(format!("integer {v} is too large")))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Raw::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Raw::Map(entries))
            }
        }
        deserializer.deserialize_any(RawVisitor)
    }
}

fn options() -> serde_saphyr::Options {
    // YAML 1.2: only true/false are booleans (`yes` stays a string).
    serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    }
}

fn parse_raw(text: &str, name: &str) -> Result<Option<Spanned<Raw>>, Error> {
    check_tags(text, name)?;
    serde_saphyr::from_str_with_options::<Option<Spanned<Raw>>>(text, options()).map_err(|e| {
        let mut place = Place::file(name);
        if let Some(loc) = e.location() {
            place.line = Some(loc.line());
            place.column = Some(loc.column());
        }
        let message = e.to_string();
        let message = message.strip_prefix("error: ").unwrap_or(&message);
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("invalid YAML: {}", in_users_words(message)),
        )
        .at(place)
    })
}

/// The parser's message without its advice to the programmer (`set DuplicateKeyPolicy in
/// Options`, `use from_str_multiple`) or its Rust Debug text (`Nodes { nodes: 250001 }`).
fn in_users_words(message: &str) -> String {
    if message.starts_with("budget breached") {
        return "the document is too large or too deeply aliased for a config file (over the parser's budget of nodes, aliases and nesting)".into();
    }
    if message.starts_with("multiple YAML documents detected") {
        return "a config file holds one YAML document; found a second one (`---`)".into();
    }
    let message = message.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    // The location is given once, in front (file:line:column).
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    }
}

/// The YAML tags a config may use: the core schema's own. Any other tag
/// (`!!python/object:…`, `!Ref`, `!include`) would be ignored by the parser and the value
/// taken as plain text, which is never what its author meant: refused with its place.
const ALLOWED_TAGS: [&str; 6] = ["!!str", "!!int", "!!float", "!!bool", "!!null", "!!map"];

fn check_tags(text: &str, name: &str) -> Result<(), Error> {
    for (i, line) in text.lines().enumerate() {
        let chars: Vec<(usize, char)> = line.char_indices().collect();
        let spaced = |k: usize| chars.get(k + 1).is_none_or(|(_, c)| c.is_whitespace());
        let mut quote: Option<char> = None;
        // Whether the next non-blank character starts a node (where a tag may stand).
        let mut at_node = true;
        let mut after_blank = true;
        for (k, &(col, c)) in chars.iter().enumerate() {
            if let Some(q) = quote {
                if c == q {
                    quote = None;
                }
                continue;
            }
            let blank = c.is_whitespace();
            match c {
                _ if blank => {}
                '#' if after_blank => break,
                '!' if at_node => {
                    let tag: String = line[col..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && !",]}".contains(*c))
                        .collect();
                    if !ALLOWED_TAGS.contains(&tag.as_str()) && tag != "!!seq" {
                        return Err(Error::new(
                            ErrorKind::ConfigInvalid,
                            format!(
                                "unknown YAML tag `{}`: config files take plain values (tags allowed: {}, !!seq)",
                                tag.chars().take(60).collect::<String>(),
                                ALLOWED_TAGS.join(", ")
                            ),
                        )
                        .at(Place {
                            file: Some(name.to_string()),
                            line: Some(i as u64 + 1),
                            column: Some(col as u64 + 1),
                            key: None,
                        }));
                    }
                    at_node = false;
                }
                '\'' | '"' if at_node => {
                    quote = Some(c);
                    at_node = false;
                }
                ':' | '-' | '?' => at_node = spaced(k) && (c == ':' || at_node),
                '[' | '{' | ',' => at_node = true,
                _ => at_node = false,
            }
            after_blank = blank;
        }
    }
    Ok(())
}

struct Converter<'a> {
    name: &'a str,
    origins: BTreeMap<String, Origin>,
    /// Map entries whose value is null, with where they were written.
    nulls: BTreeMap<String, Origin>,
}

impl Converter<'_> {
    fn origin(&self, spanned_line: u64, spanned_column: u64) -> Origin {
        Origin::File {
            file: self.name.to_string(),
            line: spanned_line,
            column: spanned_column,
        }
    }

    fn convert(&mut self, node: &Spanned<Raw>, path: &str) -> Result<Value, Error> {
        let loc = &node.referenced;
        Ok(match &node.value {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(*b),
            Raw::Int(i) => Value::from(*i),
            // An integral float and the same integer are one value (`1.0` == `1`), so that
            // spelling never changes a fingerprint and `epochs: 3.0` is a valid integer.
            Raw::Float(x) if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 => {
                Value::from(*x as i64)
            }
            Raw::Float(x) => match serde_json::Number::from_f64(*x) {
                Some(n) => Value::Number(n),
                None => {
                    return Err(Error::new(
                        ErrorKind::ConfigInvalid,
                        format!("non-finite number {x} is not allowed"),
                    )
                    .at(self.origin(loc.line(), loc.column()).place(path)))
                }
            },
            Raw::Str(s) => Value::String(s.clone()),
            Raw::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    let origin = self.origin(item.referenced.line(), item.referenced.column());
                    self.origins.insert(child.clone(), origin);
                    out.push(self.convert(item, &child)?);
                }
                Value::Array(out)
            }
            Raw::Map(entries) => {
                let mut out = Map::new();
                for (key, value) in entries {
                    let child = if path.is_empty() {
                        key.value.clone()
                    } else {
                        format!("{path}.{}", key.value)
                    };
                    let converted = self.convert(value, &child)?;
                    let origin = self.origin(key.referenced.line(), key.referenced.column());
                    if converted.is_null() {
                        // A null leaf keeps the lower-precedence value; a null section is an
                        // empty mapping. Both are "absent" here, but the key is still checked
                        // against the schema (a typo set to null is still a typo).
                        self.nulls.insert(child, origin);
                        continue;
                    }
                    self.origins.insert(child, origin);
                    out.insert(key.value.clone(), converted);
                }
                Value::Object(out)
            }
        })
    }
}

impl Doc {
    /// An empty document (a missing optional file, or an empty one).
    pub fn empty(name: &str) -> Doc {
        Doc {
            name: name.to_string(),
            tree: Value::Object(Map::new()),
            origins: BTreeMap::new(),
            nulls: BTreeMap::new(),
        }
    }

    /// Parses `text`; `name` is how errors and provenance name the file. An empty file is
    /// an empty mapping; a non-mapping top level is an error.
    pub fn parse(text: &str, name: &str) -> Result<Doc, Error> {
        let Some(root) = parse_raw(text, name)? else {
            return Ok(Doc::empty(name));
        };
        let mut converter = Converter {
            name,
            origins: BTreeMap::new(),
            nulls: BTreeMap::new(),
        };
        let tree = converter.convert(&root, "")?;
        let tree = match tree {
            Value::Object(_) => tree,
            Value::Null => Value::Object(Map::new()),
            _ => {
                let place = Place {
                    file: Some(name.to_string()),
                    line: Some(root.referenced.line()),
                    column: Some(root.referenced.column()),
                    key: None,
                };
                return Err(Error::new(
                    ErrorKind::ConfigInvalid,
                    "the top level of a config file must be a mapping",
                )
                .at(place));
            }
        };
        Ok(Doc {
            name: name.to_string(),
            tree,
            origins: converter.origins,
            nulls: converter.nulls,
        })
    }

    /// Applies `-o key=value` to this document: the value is parsed as a YAML scalar or flow
    /// collection; `null` removes the key (the lower-precedence value applies again).
    pub fn apply_override(&mut self, key: &str, value_text: &str, arg: &str) -> Result<(), Error> {
        let segments: Vec<&str> = key.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(Error::new(ErrorKind::Usage, "empty key segment in -o")
                .at(override_place(arg, key)));
        }
        let value = override_value(key, value_text, arg)?;
        let (last, parents) = segments
            .split_last()
            .expect("split('.') yields at least one");
        let map = override_parent(&mut self.tree, key, parents, arg)?;
        let origin = Origin::Override {
            arg: arg.to_string(),
        };
        if value.is_null() {
            // `-o key=null` keeps the lower-precedence value (the file's), as a null leaf in a
            // file does; the key is still checked against the schema.
            self.nulls.insert(key.to_string(), origin);
        } else {
            let prefix = format!("{key}.");
            self.origins.retain(|k, _| !k.starts_with(&prefix));
            self.origins.insert(key.to_string(), origin.clone());
            mark_override_children(&mut self.origins, key, &value, &origin);
            map.insert(last.to_string(), value);
        }
        Ok(())
    }

    /// The origin of `path`, or of its nearest recorded ancestor.
    pub fn origin_of(&self, path: &str) -> Option<&Origin> {
        let mut p = path.to_string();
        loop {
            if let Some(o) = self.origins.get(&p) {
                return Some(o);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }

    /// Deserialises the tree into the typed schema `T`; errors carry file:line:column, the
    /// dotted key and serde's list of allowed keys/values (plus a "did you mean").
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let typed = serde_path_to_error::deserialize::<_, T>(self.tree.clone())
            .map_err(|e| self.locate(&path_string(e.path()), &e.inner().to_string()))?;
        // Keys written as null are absent from the tree; probe each one (as an empty mapping)
        // so that an unknown key is an error even when its value is null. A known leaf fails
        // the probe with a type error, a known section accepts it; only "unknown field" at
        // the probed key itself means the key does not exist.
        for (path, origin) in &self.nulls {
            let mut probe = self.tree.clone();
            if !insert_path(&mut probe, path, Value::Object(Map::new())) {
                continue;
            }
            if let Err(e) = serde_path_to_error::deserialize::<_, T>(probe) {
                let message = e.inner().to_string();
                if path_string(e.path()) == *path && message.starts_with("unknown field") {
                    let mut err = self.locate(path, &message);
                    err.place = origin.place(path);
                    return Err(err);
                }
            }
        }
        Ok(typed)
    }

    /// A located config error about `path` in this document.
    pub fn locate(&self, path: &str, message: &str) -> Error {
        let place = match self.origin_of(path) {
            Some(origin) => origin.place(path),
            None => Place::file(self.name.clone()).with_key(path),
        };
        let mut message = message.replace("untagged enum", "form of");
        if let Some(hint) = did_you_mean(&message) {
            message.push_str(&hint);
        }
        Error::new(ErrorKind::ConfigInvalid, message).at(place)
    }
}

/// Where an error about `-o arg` is reported: the argument itself, at `key`.
fn override_place(arg: &str, key: &str) -> Place {
    Place::file(format!("-o {}", crate::paths::redact(arg))).with_key(key)
}

/// The value of `-o key=value_text`, parsed as YAML (an empty text is null).
fn override_value(key: &str, value_text: &str, arg: &str) -> Result<Value, Error> {
    match parse_raw(value_text, &format!("-o {arg}"))? {
        None => Ok(Value::Null),
        Some(raw) => {
            let mut converter = Converter {
                name: "-o",
                origins: BTreeMap::new(),
                nulls: BTreeMap::new(),
            };
            converter.convert(&raw, key)
        }
    }
}

/// The mapping in `tree` that holds the last segment of `key`, reached through `parents`;
/// missing mappings on the way are created. A parent that is a value, not a mapping, is an
/// error at the `-o`.
fn override_parent<'t>(
    tree: &'t mut Value,
    key: &str,
    parents: &[&str],
    arg: &str,
) -> Result<&'t mut Map<String, Value>, Error> {
    let mut node = tree;
    for segment in parents {
        let Value::Object(map) = node else {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!("cannot set `{key}`: `{segment}` is inside a value that is not a mapping"),
            )
            .at(override_place(arg, key)));
        };
        node = map
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    match node {
        Value::Object(map) => Ok(map),
        _ => Err(Error::new(
            ErrorKind::ConfigInvalid,
            format!("cannot set `{key}`: its parent is not a mapping"),
        )
        .at(override_place(arg, key))),
    }
}

/// Children of a collection given on the command line come from the same `-o`: records
/// `origin` for every key and item below `key` in `value`.
fn mark_override_children(
    origins: &mut BTreeMap<String, Origin>,
    key: &str,
    value: &Value,
    origin: &Origin,
) {
    let mut stack = vec![(key.to_string(), value)];
    while let Some((path, v)) = stack.pop() {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let p = format!("{path}.{k}");
                    origins.insert(p.clone(), origin.clone());
                    stack.push((p, child));
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    origins.insert(p.clone(), origin.clone());
                    stack.push((p, child));
                }
            }
            _ => {}
        }
    }
}

/// Sets `dotted` (map keys only) in `tree`, creating mappings; false if a parent is not a
/// mapping.
fn insert_path(tree: &mut Value, dotted: &str, value: Value) -> bool {
    let mut node = tree;
    let parts: Vec<&str> = dotted.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    for part in parents {
        let Value::Object(map) = node else {
            return false;
        };
        node = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    match node {
        Value::Object(map) => {
            map.insert(last.to_string(), value);
            true
        }
        _ => false,
    }
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" and "unknown variant" messages:
/// the closest allowed value when it is a near miss.
fn did_you_mean(message: &str) -> Option<String> {
    let (given, rest) = if let Some(rest) = message.strip_prefix("unknown field `") {
        rest.split_once('`')?
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        rest.split_once('`')?
    } else {
        return None;
    };
    let allowed: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    closest(given, &allowed).map(|best| format!(" (did you mean `{best}`?)"))
}

/// The allowed value nearest to `given` when it is a plausible typo.
pub fn closest<'a>(given: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (strsim::damerau_levenshtein(given, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min()
        .map(|(_, a)| a)
}
