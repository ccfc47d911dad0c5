//! Evaluation (docs/contract.md, "Trainer" metrics): token macro-F1 over the entity labels present
//! in the gold data (excluding "O"), span F1 (exact char span and label), loss, per-entity P/R/F1.
//! Counts are integers and every float is derived from them in a fixed order.

use super::model::{decode, emissions, loss_and_demissions, Example, Params};
use serde_json::{json, Map, Value};

/// Per-label token counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
}

/// What one evaluation measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub macro_f1: f64,
    pub span_f1: f64,
    pub span_precision: f64,
    pub span_recall: f64,
    pub token_accuracy: f64,
    pub tokens: u64,
    /// Index = label id (0 = "O", unused).
    pub per_label: Vec<Counts>,
}

fn prf(tp: u64, fp: u64, fn_: u64) -> (f64, f64, f64) {
    let p = if tp + fp == 0 {
        0.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let r = if tp + fn_ == 0 {
        0.0
    } else {
        tp as f64 / (tp + fn_) as f64
    };
    let f = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f)
}

/// Entity spans of a label sequence: runs of the same non-O label over consecutive tokens,
/// as (first token's start, last token's end, label) in char offsets.
pub fn spans_of(tokens: &[(usize, usize)], labels: &[u16]) -> Vec<(usize, usize, u16)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < labels.len() {
        if labels[i] == 0 {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < labels.len() && labels[j] == labels[i] {
            j += 1;
        }
        out.push((tokens[i].0, tokens[j - 1].1, labels[i]));
        i = j;
    }
    out
}

/// Evaluates `p` on `examples` (no dropout).
pub fn evaluate(p: &Params, examples: &[Example], half: bool) -> Evaluation {
    let l = p.n_labels;
    let mut per_label = vec![Counts::default(); l];
    let (mut loss, mut tokens, mut correct) = (0.0f64, 0u64, 0u64);
    let (mut span_tp, mut span_pred, mut span_gold) = (0u64, 0u64, 0u64);
    for ex in examples {
        if ex.is_empty() {
            span_gold += ex.gold_spans.len() as u64;
            continue;
        }
        let em = emissions(p, ex, None, half);
        loss += loss_and_demissions(p, &em, &ex.gold, half, 1.0, None).0;
        let pred = decode(p, &em, ex.len(), half);
        for (&g, &y) in ex.gold.iter().zip(&pred) {
            tokens += 1;
            if g == y {
                correct += 1;
                per_label[g as usize].tp += 1;
            } else {
                per_label[y as usize].fp += 1;
                per_label[g as usize].fn_ += 1;
            }
        }
        let predicted = spans_of(&ex.tokens, &pred);
        span_pred += predicted.len() as u64;
        span_gold += ex.gold_spans.len() as u64;
        span_tp += exact_matches(&predicted, &ex.gold_spans);
    }
    let macro_f1 = macro_f1(&per_label);
    let (sp, sr, sf) = prf(span_tp, span_pred - span_tp, span_gold - span_tp);
    Evaluation {
        loss: if tokens == 0 {
            0.0
        } else {
            loss / tokens as f64
        },
        macro_f1,
        span_f1: sf,
        span_precision: sp,
        span_recall: sr,
        token_accuracy: if tokens == 0 {
            0.0
        } else {
            correct as f64 / tokens as f64
        },
        tokens,
        per_label,
    }
}

/// How many spans of `predicted` equal one of `gold` (both sorted by start and
/// non-overlapping).
fn exact_matches(predicted: &[(usize, usize, u16)], gold: &[(usize, usize, u16)]) -> u64 {
    let mut matches = 0u64;
    // Both lists are sorted by start and non-overlapping: a merge finds exact matches.
    let (mut a, mut b) = (0, 0);
    while a < predicted.len() && b < gold.len() {
        let (x, y) = (predicted[a], gold[b]);
        if x == y {
            matches += 1;
            a += 1;
            b += 1;
        } else if (x.0, x.1) < (y.0, y.1) {
            a += 1;
        } else {
            b += 1;
        }
    }
    matches
}

/// The mean token F1 over the entity labels (id 0, "O", excluded) present in the gold data;
/// 0 when there are none.
fn macro_f1(per_label: &[Counts]) -> f64 {
    let mut f1s = Vec::new();
    for c in per_label.iter().skip(1) {
        if c.tp + c.fn_ > 0 {
            f1s.push(prf(c.tp, c.fp, c.fn_).2);
        }
    }
    if f1s.is_empty() {
        0.0
    } else {
        f1s.iter().sum::<f64>() / f1s.len() as f64
    }
}

impl Evaluation {
    /// The value of a metric by its metrics.json name.
    pub fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "macro-f1" => Some(self.macro_f1),
            "span-f1" => Some(self.span_f1),
            "loss" => Some(self.loss),
            "token-accuracy" => Some(self.token_accuracy),
            _ => None,
        }
    }

    /// Whether a larger value of `name` is better.
    pub fn maximize(name: &str) -> bool {
        name != "loss"
    }

    pub const METRICS: [&'static str; 4] = ["macro-f1", "span-f1", "loss", "token-accuracy"];

    /// The metrics as JSON (per-entity P/R/F1 and support for every entity label).
    pub fn to_json(&self, labels: &[String]) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("macro-f1".into(), json!(self.macro_f1));
        m.insert("span-f1".into(), json!(self.span_f1));
        m.insert("span-precision".into(), json!(self.span_precision));
        m.insert("span-recall".into(), json!(self.span_recall));
        m.insert("loss".into(), json!(self.loss));
        m.insert("token-accuracy".into(), json!(self.token_accuracy));
        m.insert("tokens".into(), json!(self.tokens));
        let mut per = Map::new();
        for (label, c) in labels.iter().zip(&self.per_label).skip(1) {
            let (p, r, f) = prf(c.tp, c.fp, c.fn_);
            per.insert(
                label.clone(),
                json!({"precision": p, "recall": r, "f1": f, "support": c.tp + c.fn_}),
            );
        }
        m.insert("per_entity".into(), Value::Object(per));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_merge_consecutive_same_label_tokens() {
        let toks = [(0, 4), (5, 8), (8, 9), (10, 13), (14, 17)];
        assert_eq!(
            spans_of(&toks, &[1, 1, 0, 2, 1]),
            vec![(0, 8, 1), (10, 13, 2), (14, 17, 1)]
        );
        assert!(spans_of(&toks, &[0, 0, 0, 0, 0]).is_empty());
    }

    #[test]
    fn prf_handles_empty_counts() {
        assert_eq!(prf(0, 0, 0), (0.0, 0.0, 0.0));
        let (p, r, f) = prf(1, 1, 0);
        assert_eq!((p, r), (0.5, 1.0));
        assert!((f - 2.0 / 3.0).abs() < 1e-12);
    }
}
