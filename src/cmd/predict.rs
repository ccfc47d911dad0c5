//! `trainctl predict --bundle DIR TEXT`: entity spans (char offsets) from a bundle. A
//! conversion output is verified against its manifest before it is loaded.

use crate::error::{Error, ErrorKind, Result};
use crate::fs::Fs;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// One entity found in the text.
#[derive(Clone, Debug, Serialize)]
pub struct Entity {
    /// Char offsets, end exclusive.
    pub start: usize,
    pub end: usize,
    pub label: String,
    pub text: String,
}

/// What `predict` found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bundle: PathBuf,
    pub text: String,
    pub entities: Vec<Entity>,
}

/// The bundle dir, verified when it is a conversion output.
fn verified(fs: &dyn Fs, cwd: &Path, bundle: &Path) -> Result<PathBuf> {
    let dir = crate::convert::normalize(cwd, bundle);
    if !fs.is_dir(&dir) {
        return Err(Error::new(
            ErrorKind::CheckpointMissing,
            format!("bundle {} does not exist", dir.display()),
        ));
    }
    if fs.exists(&dir.join(crate::convert::MANIFEST_FILE)) {
        crate::convert::check_output(fs, &dir).map_err(|reason| {
            Error::new(
                ErrorKind::CheckpointInvalid,
                format!("bundle {} does not verify ({reason})", dir.display()),
            )
        })?;
    }
    Ok(dir)
}

/// Tags the entities of `text`.
pub fn run(fs: &dyn Fs, cwd: &Path, bundle: &Path, text: &str) -> Result<Report> {
    let dir = verified(fs, cwd, bundle)?;
    let invalid = |m: String| Error::new(ErrorKind::CheckpointInvalid, m);
    let spans = if crate::store::stage::is_remote(fs, &dir) {
        // A bundle in a bucket is loaded from a local copy (removed after).
        let local = std::env::temp_dir().join(format!("trainctl-predict-{}", fs.unique()));
        let copied = crate::store::stage::copy_tree(fs, &dir, &local, "")
            .map_err(|e| Error::io_op("download the bundle", &dir, &e));
        let spans = copied.and_then(|_| crate::builtin::predict(&local, text).map_err(invalid));
        let _ = fs.remove_dir_all(&local);
        spans?
    } else {
        crate::builtin::predict(&dir, text).map_err(invalid)?
    };
    let entities = spans
        .into_iter()
        .map(|(start, end, label)| Entity {
            text: text.chars().skip(start).take(end - start).collect(),
            start,
            end,
            label,
        })
        .collect();
    Ok(Report {
        bundle: dir,
        text: text.to_string(),
        entities,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entities.is_empty() {
            writeln!(f, "no entities")?;
        }
        for e in &self.entities {
            writeln!(f, "{:<14} {:?} [{}, {})", e.label, e.text, e.start, e.end)?;
        }
        Ok(())
    }
}
