//! `cargo xtask stats <file>…`: what the campaigns of a run explored, per hour. Reads the
//! JSON lines the suite appends to `TRAINCTL_STATS_FILE` (props/support/stats.rs) and prints
//! a Markdown table (the nightly appends it to its job summary): per campaign kind and
//! measure, the count, the seconds the campaigns ran, and the rate per second and per hour.

use serde_json::Value;
use std::collections::BTreeMap;

pub const USAGE: &str = "cargo xtask stats <stats.jsonl>...\n    per campaign kind: states (commands, schedules, interleavings) explored per hour, as Markdown";

/// (count, seconds, distinct) summed per (kind, measure).
type Totals = BTreeMap<(String, String), (u64, f64, Option<u64>)>;

fn totals(lines: &[Value]) -> Totals {
    let mut out = Totals::new();
    for l in lines {
        let (Some(kind), Some(measure)) = (l["kind"].as_str(), l["measure"].as_str()) else {
            continue;
        };
        let entry = out
            .entry((kind.to_string(), measure.to_string()))
            .or_insert((0, 0.0, None));
        entry.0 += l["count"].as_u64().unwrap_or(0);
        entry.1 += l["secs"].as_f64().unwrap_or(0.0);
        if let Some(d) = l["distinct"].as_u64() {
            entry.2 = Some(entry.2.unwrap_or(0) + d);
        }
    }
    out
}

fn markdown(totals: &Totals) -> String {
    let mut md = String::from(
        "### States explored per hour\n\n| kind | measure | count | distinct | seconds | per second | per hour |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for ((kind, measure), (count, secs, distinct)) in totals {
        let rate = *count as f64 / secs.max(1e-9);
        md.push_str(&format!(
            "| {kind} | {measure} | {count} | {} | {secs:.1} | {rate:.0} | {:.0} |\n",
            distinct.map_or("—".to_string(), |d| d.to_string()),
            rate * 3600.0
        ));
    }
    md
}

pub fn run(args: &[String]) -> Result<bool, String> {
    if args.is_empty() {
        return Err(USAGE.into());
    }
    let mut lines = Vec::new();
    for path in args {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        for (n, l) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: Value = serde_json::from_str(l).map_err(|e| format!("{path}:{}: {e}", n + 1))?;
            lines.push(v);
        }
    }
    print!("{}", markdown(&totals(&lines)));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_one_kind_are_summed_and_rated_per_hour() {
        let lines: Vec<Value> = [
            r#"{"kind":"crash_train","measure":"states","count":100,"secs":1.0,"distinct":100}"#,
            r#"{"kind":"crash_train","measure":"states","count":300,"secs":3.0,"distinct":300}"#,
            r#"{"kind":"sched_starts","measure":"schedules","count":10,"secs":2.0,"distinct":null}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let md = markdown(&totals(&lines));
        assert!(
            md.contains("| crash_train | states | 400 | 400 | 4.0 | 100 | 360000 |"),
            "{md}"
        );
        assert!(
            md.contains("| sched_starts | schedules | 10 | — | 2.0 | 5 | 18000 |"),
            "{md}"
        );
    }
}
