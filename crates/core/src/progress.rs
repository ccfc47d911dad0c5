//! The trainer's progress channel (docs/contract.md, "Live progress"): the trainer appends one
//! JSON object per line to the file named by the job's `progress_path` (also in the
//! `TRAINCTL_PROGRESS` environment variable), and the orchestrator tails it to draw a bar.
//! Both sides use this record, so the built-in trainer and the orchestrator cannot drift.
//!
//! The channel is advisory: a malformed, oversized or missing line is skipped, never an error,
//! because a trainer that cannot report progress still trains.

use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One progress report. Only `step` is required; an external trainer may leave out the rest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimizer steps done so far (counted from the start of the run, not of the attempt).
    pub step: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Epochs done so far (the epoch in progress is `epoch + 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    /// Mean training loss since the previous report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// The latest evaluation of the objective metric, and its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_name: Option<String>,
}

/// The environment variable naming the progress file for trainers that read no job file.
pub const ENV: &str = "TRAINCTL_PROGRESS";

/// Longest line the reader accepts; longer lines are skipped (a trainer printing a tensor
/// into the channel must not make the orchestrator allocate it).
pub const MAX_LINE: usize = 4096;

/// Most bytes one `poll` reads: a trainer that floods the channel is followed at this pace,
/// and the newest report still wins because every poll keeps the last line it parsed.
const MAX_READ: u64 = 256 * 1024;

impl Progress {
    /// The report as one line (with its newline).
    pub fn to_line(&self) -> String {
        let mut s =
            serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"step\":{}}}", self.step));
        s.push('\n');
        s
    }

    /// A line of the channel, or `None` when it is not a report.
    pub fn parse(line: &[u8]) -> Option<Progress> {
        if line.len() > MAX_LINE {
            return None;
        }
        serde_json::from_slice(line).ok()
    }
}

/// Follows a progress file from where it ended when the tail began (an earlier attempt's
/// reports are not this attempt's progress).
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    skipping: bool,
}

impl Tail {
    /// Starts at the current end of `path` (0 when it does not exist yet).
    pub fn at_end(path: &Path) -> Tail {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Tail {
            path: path.to_path_buf(),
            offset,
            partial: Vec::new(),
            skipping: false,
        }
    }

    /// The newest complete report written since the last poll, if any.
    pub fn poll(&mut self) -> Option<Progress> {
        let mut file = std::fs::File::open(&self.path).ok()?;
        let len = file.metadata().ok()?.len();
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
        }
        file.seek(SeekFrom::Start(self.offset)).ok()?;
        let mut buf = Vec::new();
        let n = file.take(MAX_READ).read_to_end(&mut buf).ok()?;
        self.offset += n as u64;
        let mut newest = None;
        for byte in buf {
            if byte == b'\n' {
                if !self.skipping {
                    if let Some(p) = Progress::parse(&self.partial) {
                        newest = Some(p);
                    }
                }
                self.partial.clear();
                self.skipping = false;
            } else if !self.skipping {
                self.partial.push(byte);
                if self.partial.len() > MAX_LINE {
                    self.partial.clear();
                    self.skipping = true;
                }
            }
        }
        newest
    }
}

/// The last complete report in `bytes` (the end of a progress file another process writes).
pub fn last_in(bytes: &[u8]) -> Option<Progress> {
    bytes
        .split(|b| *b == b'\n')
        .rev()
        .skip(1) // the part after the last newline is not a complete line
        .find_map(Progress::parse)
}

/// The newest report in the progress file at `path` (another process's), reading only its
/// end: the file of a long run holds many thousands of lines.
pub fn latest_in_file(path: &Path) -> Option<Progress> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let from = len.saturating_sub(2 * MAX_LINE as u64);
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = Vec::new();
    file.take(2 * MAX_LINE as u64).read_to_end(&mut buf).ok()?;
    last_in(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn report(step: u64) -> Progress {
        Progress {
            step,
            total: Some(10),
            epoch: Some(step / 5),
            epochs: Some(2),
            loss: Some(0.5),
            metric: None,
            metric_name: None,
        }
    }

    #[test]
    fn a_tail_sees_only_new_complete_lines_and_skips_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.jsonl");
        std::fs::write(&path, report(1).to_line()).unwrap();
        let mut tail = Tail::at_end(&path);
        assert_eq!(tail.poll(), None, "an earlier attempt's report is not news");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(report(2).to_line().as_bytes()).unwrap();
        f.write_all(b"not json\n").unwrap();
        f.write_all(&vec![b'x'; MAX_LINE * 3]).unwrap();
        f.write_all(b"\n").unwrap();
        let half = report(3).to_line();
        f.write_all(&half.as_bytes()[..5]).unwrap();
        assert_eq!(tail.poll(), Some(report(2)));
        f.write_all(&half.as_bytes()[5..]).unwrap();
        assert_eq!(tail.poll(), Some(report(3)));
        assert_eq!(tail.poll(), None);
    }

    #[test]
    fn the_last_complete_line_wins_and_a_torn_one_is_ignored() {
        let mut bytes = report(4).to_line().into_bytes();
        bytes.extend_from_slice(report(5).to_line().as_bytes());
        bytes.extend_from_slice(b"{\"step\":");
        assert_eq!(last_in(&bytes), Some(report(5)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        let mut long = Vec::new();
        for step in 0..1000 {
            long.extend_from_slice(report(step).to_line().as_bytes());
        }
        std::fs::write(&path, &long).unwrap();
        assert_eq!(latest_in_file(&path), Some(report(999)));
        assert_eq!(latest_in_file(&dir.path().join("none")), None);
        assert_eq!(last_in(b"{\"step\":7}"), None);
        assert_eq!(
            Progress::parse(b"{\"step\":7}"),
            Some(Progress {
                step: 7,
                ..Progress::default()
            })
        );
    }
}
