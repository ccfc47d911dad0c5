//! Dataset loading and validation (docs/contract.md, "Trainer" data invariants): the character-span
//! JSON format, the label list, and the deterministic held-out slice. Owns every dataset error
//! (kind `dataset_invalid` with file and `record[i].annotations[j]` key, `empty_dataset`); never
//! writes anything and never depends on the trainer.

use crate::error::{Error, ErrorKind, Place};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;

/// One record: its text and its entity spans as `(start, end, label)` in CHARACTER offsets
/// (Unicode scalar indices, `end` exclusive), sorted by start, non-overlapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub text: String,
    pub spans: Vec<(usize, usize, String)>,
}

fn invalid(path: &Path, key: impl Into<String>, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::DatasetInvalid, message)
        .at(Place::file(path.display().to_string()).with_key(key))
}

/// The label list of a data config: `["O"] + sorted(dedup(entity_types))` (index = label id).
pub fn labels(entity_types: &[String]) -> Vec<String> {
    let mut types = entity_types.to_vec();
    types.sort();
    types.dedup();
    std::iter::once("O".to_string()).chain(types).collect()
}

/// Reads and validates one split file. Every violation is `dataset_invalid` naming the file,
/// the record (and span) as a key, and the problem; a missing file is `dataset_missing`.
pub fn load_split(path: &Path, entity_types: &[String]) -> Result<Vec<Record>, Error> {
    let bytes = std::fs::read(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::DatasetMissing
        } else {
            ErrorKind::DatasetInvalid
        };
        Error::new(kind, format!("cannot read the split: {e}"))
            .at(Place::file(path.display().to_string()))
    })?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
        let mut place = Place::file(path.display().to_string());
        place.line = Some(e.line() as u64);
        place.column = Some(e.column() as u64);
        Error::new(ErrorKind::DatasetInvalid, format!("not valid JSON: {e}")).at(place)
    })?;
    let records = parse_records(path, &doc, entity_types)?;
    // Check right after reading: what we return keeps the invariants the trainer relies on.
    debug_assert!(records.iter().all(spans_ok));
    Ok(records)
}

fn spans_ok(r: &Record) -> bool {
    let n = r.text.chars().count();
    r.spans.iter().all(|(s, e, _)| s < e && *e <= n) && r.spans.windows(2).all(|w| w[0].1 <= w[1].0)
}

/// Validates a parsed split document (exposed for callers that already hold the JSON).
pub fn parse_records(
    path: &Path,
    doc: &Value,
    entity_types: &[String],
) -> Result<Vec<Record>, Error> {
    let Some(items) = doc.as_array() else {
        return Err(invalid(
            path,
            "$",
            format!(
                "the split must be a JSON array of records, found {}",
                json_type(doc)
            ),
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(parse_record(path, i, item, entity_types)?);
    }
    Ok(out)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One record of a split: `{text, annotations: [[start, end, LABEL], …]}` with char offsets
/// inside the text, known labels and no overlaps. Every refusal names the record and span.
fn parse_record(
    path: &Path,
    i: usize,
    item: &Value,
    entity_types: &[String],
) -> Result<Record, Error> {
    let key = format!("record[{i}]");
    let Some(obj) = item.as_object() else {
        return Err(invalid(
            path,
            &key,
            format!(
                "record {i} must be an object with `text` and `annotations`, found {}",
                json_type(item)
            ),
        ));
    };
    let field = |name: &str, is: fn(&Value) -> bool, want: &str| -> Result<&Value, Error> {
        let fkey = format!("{key}.{name}");
        match obj.get(name) {
            None => Err(invalid(path, fkey, format!("record {i}: missing `{name}`"))),
            Some(v) if is(v) => Ok(v),
            Some(v) => Err(invalid(
                path,
                fkey,
                format!(
                    "record {i}: `{name}` must be {want}, found {}",
                    json_type(v)
                ),
            )),
        }
    };
    let text = field("text", Value::is_string, "a string")?
        .as_str()
        .unwrap_or_default()
        .to_string();
    let annotations = field(
        "annotations",
        Value::is_array,
        "an array of [start, end, LABEL]",
    )?;
    let annotations = annotations
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let n_chars = text.chars().count();
    // (start, end, label, index in the file) for the overlap check after sorting.
    let mut spans: Vec<(usize, usize, String, usize)> = Vec::with_capacity(annotations.len());
    for (j, span) in annotations.iter().enumerate() {
        let at = Span { path, i, j, span };
        let (start, end, label) = at.parse(n_chars, entity_types)?;
        spans.push((start, end, label, j));
    }
    check_overlaps(path, i, &mut spans)?;
    Ok(Record {
        text,
        spans: spans.into_iter().map(|(s, e, l, _)| (s, e, l)).collect(),
    })
}

/// Where a span stands, for its refusals.
struct Span<'a> {
    path: &'a Path,
    i: usize,
    j: usize,
    span: &'a Value,
}

impl Span<'_> {
    fn refuse(&self, what: String) -> Error {
        let (i, j, span) = (self.i, self.j, self.span);
        invalid(
            self.path,
            format!("record[{i}].annotations[{j}]"),
            format!("record {i} span {j} ({span}): {what}"),
        )
    }

    /// `[start, end, LABEL]` with `start < end <= n_chars` and a known label.
    fn parse(
        &self,
        n_chars: usize,
        entity_types: &[String],
    ) -> Result<(usize, usize, String), Error> {
        let Some(triple) = self.span.as_array().filter(|a| a.len() == 3) else {
            return Err(self.refuse("must be a 3-element array [start, end, LABEL]".into()));
        };
        let offset = |v: &Value, what: &str| -> Result<usize, Error> {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    self.refuse(format!(
                        "{what} must be a non-negative integer character offset, found {v}"
                    ))
                })
        };
        let start = offset(&triple[0], "start")?;
        let end = offset(&triple[1], "end")?;
        let Some(label) = triple[2].as_str() else {
            return Err(self.refuse("the label must be a string".into()));
        };
        if start >= end {
            return Err(self.refuse(format!("start {start} must be less than end {end}")));
        }
        if end > n_chars {
            return Err(self.refuse(format!(
                "out of bounds, end {end} is past the text's {n_chars} characters"
            )));
        }
        if !entity_types.iter().any(|t| t == label) {
            return Err(self.refuse(format!(
                "label `{label}` is not one of the entity types {entity_types:?}"
            )));
        }
        Ok((start, end, label.to_string()))
    }
}

/// Sorts the spans of record `i` and refuses the first overlap, naming the later span (in
/// file order) and the one it overlaps.
fn check_overlaps(
    path: &Path,
    i: usize,
    spans: &mut [(usize, usize, String, usize)],
) -> Result<(), Error> {
    spans.sort_by_key(|a| (a.0, a.1, a.3));
    for w in spans.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        if next.0 < prev.1 {
            let (later, earlier) = if next.3 > prev.3 {
                (next, prev)
            } else {
                (prev, next)
            };
            return Err(invalid(
                path,
                format!("record[{i}].annotations[{}]", later.3),
                format!(
                    "record {i} span {}: [{}, {}, {}] overlaps span {} [{}, {}, {}]",
                    later.3, later.0, later.1, later.2, earlier.3, earlier.0, earlier.1, earlier.2,
                ),
            ));
        }
    }
    Ok(())
}

/// An empty train split is `empty_dataset` (docs/contract.md, "Trainer").
pub fn require_nonempty(records: &[Record], path: &Path) -> Result<(), Error> {
    if records.is_empty() {
        return Err(
            Error::new(ErrorKind::EmptyDataset, "the train split has no records")
                .at(Place::file(path.display().to_string())),
        );
    }
    Ok(())
}

/// The stable key a record is held out by: the first 8 bytes of sha256(text).
fn text_key(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// How many records a held-out slice of `fraction` takes from `len`: none when `len < 2` or
/// `fraction` is not positive, otherwise `round(len·fraction)` clamped to `1..=len-1`.
pub fn holdout_size(len: usize, fraction: f64) -> usize {
    if len < 2 || fraction.is_nan() || fraction <= 0.0 {
        return 0;
    }
    let want = (len as f64 * fraction).round();
    let want = if want.is_finite() { want as usize } else { len };
    want.clamp(1, len - 1)
}

/// Splits `records` into (train, validation) when there is no validation file: the
/// validation slice is chosen by a hash of the text (not by position), so it is stable under
/// reordering and appending; all records with the same text land on the same side (no
/// leakage); both parts keep the input order, are disjoint and cover the input.
pub fn holdout(records: Vec<Record>, fraction: f64) -> (Vec<Record>, Vec<Record>) {
    let len = records.len();
    let want = holdout_size(len, fraction);
    if want == 0 {
        return (records, Vec::new());
    }
    // Groups of equal text, ordered by (hash, text): a total, position-independent order.
    let mut order: Vec<(u64, usize)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (text_key(&r.text), i))
        .collect();
    order.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| records[a.1].text.cmp(&records[b.1].text))
            .then(a.1.cmp(&b.1))
    });
    let mut to_validation = vec![false; len];
    let mut taken = 0usize;
    let mut g = 0usize;
    // Bounded: each iteration consumes one group.
    while g < order.len() && taken < want {
        let mut h = g + 1;
        while h < order.len() && records[order[h].1].text == records[order[g].1].text {
            h += 1;
        }
        let group = h - g;
        // Never empty the training side.
        if taken + group < len {
            for &(_, i) in &order[g..h] {
                to_validation[i] = true;
            }
            taken += group;
        }
        g = h;
    }
    let mut train = Vec::with_capacity(len - taken);
    let mut validation = Vec::with_capacity(taken);
    for (r, v) in records.into_iter().zip(to_validation) {
        if v {
            validation.push(r);
        } else {
            train.push(r);
        }
    }
    debug_assert_eq!(train.len() + validation.len(), len);
    (train, validation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Vec<String> {
        ["NAME", "EMAIL", "SKILL"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn check(json: &str) -> Result<Vec<Record>, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.json");
        std::fs::write(&path, json).unwrap();
        let out = load_split(&path, &types());
        if let Err(e) = &out {
            assert_eq!(
                e.place.file.as_deref(),
                Some(path.display().to_string().as_str())
            );
        }
        out
    }

    fn check_err(json: &str, key: &str, words: &[&str]) {
        let e = check(json).expect_err(json);
        assert_eq!(e.kind, ErrorKind::DatasetInvalid, "{e}");
        assert_eq!(e.place.key.as_deref(), Some(key), "{e}");
        for w in words {
            assert!(e.message.contains(w), "{e} should mention {w}");
        }
    }

    #[test]
    fn valid_split_loads_with_char_offsets() {
        let r = check(r#"[{"text":"José Núñez: j@x.org","annotations":[[12,19,"EMAIL"],[0,10,"NAME"]]},{"text":"","annotations":[]}]"#).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].spans[0], (0, 10, "NAME".into()));
        let chars: String = r[0].text.chars().skip(12).take(7).collect();
        assert_eq!(chars, "j@x.org");
    }

    #[test]
    fn schema_errors_name_the_record() {
        check_err(r#"{"text":"a"}"#, "$", &["array"]);
        check_err(
            r#"[{"text":"a","annotations":[]}, 3]"#,
            "record[1]",
            &["object"],
        );
        check_err(r#"[{"annotations":[]}]"#, "record[0].text", &["missing"]);
        check_err(
            r#"[{"text":5,"annotations":[]}]"#,
            "record[0].text",
            &["string"],
        );
        check_err(r#"[{"text":"a"}]"#, "record[0].annotations", &["missing"]);
        check_err(
            r#"[{"text":"a","annotations":{}}]"#,
            "record[0].annotations",
            &["array"],
        );
        check_err(
            r#"[{"text":"abc","annotations":[[0,1]]}]"#,
            "record[0].annotations[0]",
            &["3-element"],
        );
        check_err(
            r#"[{"text":"abc","annotations":[[0,1,2]]}]"#,
            "record[0].annotations[0]",
            &["label"],
        );
        check_err(
            r#"[{"text":"abc","annotations":["x"]}]"#,
            "record[0].annotations[0]",
            &["3-element"],
        );
    }

    #[test]
    fn bad_offsets_are_rejected() {
        check_err(
            r#"[{"text":"abc","annotations":[[-1,2,"NAME"]]}]"#,
            "record[0].annotations[0]",
            &["non-negative integer", "start"],
        );
        check_err(
            r#"[{"text":"abc","annotations":[[0,1.5,"NAME"]]}]"#,
            "record[0].annotations[0]",
            &["non-negative integer", "end"],
        );
        check_err(
            r#"[{"text":"abc","annotations":[[0,"2","NAME"]]}]"#,
            "record[0].annotations[0]",
            &["integer"],
        );
    }

    #[test]
    fn out_of_bounds_uses_characters_not_bytes() {
        // "Zürich" is 6 characters, 7 bytes: end 7 is out of bounds.
        check_err(
            r#"[{"text":"Zürich","annotations":[[0,7,"NAME"]]}]"#,
            "record[0].annotations[0]",
            &["out of bounds", "[0,7,\"NAME\"]"],
        );
        assert!(check(r#"[{"text":"Zürich","annotations":[[0,6,"NAME"]]}]"#).is_ok());
    }

    #[test]
    fn start_not_before_end_is_rejected() {
        check_err(
            r#"[{"text":"abc","annotations":[[0,1,"NAME"]]},{"text":"abc","annotations":[[0,1,"NAME"],[2,2,"NAME"]]}]"#,
            "record[1].annotations[1]",
            &["less than"],
        );
    }

    #[test]
    fn overlapping_spans_name_both() {
        check_err(
            r#"[{"text":"abcdefgh","annotations":[[0,4,"NAME"],[5,8,"SKILL"],[3,6,"EMAIL"]]}]"#,
            "record[0].annotations[2]",
            &["overlaps", "span 0", "[3, 6, EMAIL]"],
        );
    }

    #[test]
    fn unknown_label_is_rejected() {
        check_err(
            r#"[{"text":"abc","annotations":[[0,1,"CITY"]]}]"#,
            "record[0].annotations[0]",
            &["CITY", "entity types"],
        );
    }

    #[test]
    fn garbage_and_missing_files() {
        let e = check("[{").unwrap_err();
        assert_eq!(e.kind, ErrorKind::DatasetInvalid);
        assert!(e.place.line.is_some());
        let e = load_split(Path::new("/nonexistent/train.json"), &types()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DatasetMissing);
    }

    #[test]
    fn empty_train_split_is_empty_dataset() {
        let r = check("[]").unwrap();
        let e = require_nonempty(&r, Path::new("t.json")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::EmptyDataset);
        assert_eq!(e.place.file.as_deref(), Some("t.json"));
        assert!(require_nonempty(
            &[Record {
                text: "a".into(),
                spans: vec![]
            }],
            Path::new("t")
        )
        .is_ok());
    }

    #[test]
    fn labels_are_o_then_sorted_unique() {
        let l = labels(&["b".into(), "A".into(), "b".into()]);
        assert_eq!(l, vec!["O", "A", "b"]);
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::seeded_config(256, module_path!()))]
        /// The hold-out property (issue 5): no training record's text appears in validation;
        /// the split covers the input; it is independent of input order. Shrinks to a
        /// minimal record list.
        #[test]
        fn holdout_never_leaks_and_is_stable(
            texts in proptest::collection::vec(0u8..25, 0..40),
            fraction in proptest::sample::select(vec![0.0, 0.05, 0.1, 0.3, 0.5, 0.9, 1.0]),
        ) {
            // Few distinct texts so duplicates are common.
            let records: Vec<Record> = texts
                .iter()
                .map(|t| Record { text: format!("t{t}"), spans: vec![] })
                .collect();
            let len = records.len();
            let (train, val) = holdout(records.clone(), fraction);
            proptest::prop_assert_eq!(train.len() + val.len(), len);
            for v in &val {
                proptest::prop_assert!(!train.iter().any(|t| t.text == v.text), "{} leaked", v.text);
            }
            let mut all: Vec<String> = train.iter().chain(&val).map(|r| r.text.clone()).collect();
            let mut orig: Vec<String> = records.iter().map(|r| r.text.clone()).collect();
            all.sort();
            orig.sort();
            proptest::prop_assert_eq!(all, orig);
            if len >= 2 && fraction > 0.0 {
                proptest::prop_assert!(!train.is_empty());
                if !records.iter().all(|r| r.text == records[0].text) {
                    proptest::prop_assert!(!val.is_empty());
                }
            }
            let mut rev = records.clone();
            rev.reverse();
            let (_, val2) = holdout(rev, fraction);
            let mut a: Vec<&str> = val.iter().map(|r| r.text.as_str()).collect();
            let mut b: Vec<&str> = val2.iter().map(|r| r.text.as_str()).collect();
            a.sort();
            b.sort();
            proptest::prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn holdout_of_unique_texts_has_the_requested_size() {
        let records: Vec<Record> = (0..300)
            .map(|i| Record {
                text: format!("r{i}"),
                spans: vec![],
            })
            .collect();
        let (train, val) = holdout(records, 0.1);
        assert_eq!((train.len(), val.len()), (270, 30));
        let (t, v) = holdout(
            vec![Record {
                text: "a".into(),
                spans: vec![],
            }],
            0.5,
        );
        assert_eq!((t.len(), v.len()), (1, 0));
        let two = vec![
            Record {
                text: "a".into(),
                spans: vec![],
            },
            Record {
                text: "b".into(),
                spans: vec![],
            },
        ];
        let (t, v) = holdout(two, 0.01);
        assert_eq!((t.len(), v.len()), (1, 1));
    }
}
