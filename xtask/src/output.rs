//! Writing generated files, or checking that the committed ones are current.

use std::fs;
use std::path::Path;

use similar::TextDiff;

use crate::{Outcome, Result};

/// Writes `content` to `path`, or with `check` compares it with what is there.
///
/// A stale file under `--check` is an error whose message is a unified diff (committed on the
/// `-` side, regenerated on the `+` side), cut after a screenful so CI logs stay readable.
pub(crate) fn write_or_check(path: &Path, content: &str, check: bool) -> Result<Outcome> {
    let current = match fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if current.as_deref() == Some(content.as_bytes()) {
        return Ok(if check {
            Outcome::UpToDate
        } else {
            Outcome::Unchanged
        });
    }
    if check {
        let Some(current) = current else {
            return Err(format!(
                "{} does not exist; run without --check",
                path.display()
            ));
        };
        let current = String::from_utf8_lossy(&current);
        return Err(format!(
            "{} is stale; run the same command without --check and commit the result\n{}",
            path.display(),
            diff(&current, content, &path.display().to_string())
        ));
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fs::write(path, content).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Outcome::Written)
}

const MAX_DIFF_LINES: usize = 200;

fn diff(old: &str, new: &str, name: &str) -> String {
    let text = TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{name} (committed)"),
            &format!("{name} (regenerated)"),
        )
        .to_string();
    let total = text.lines().count();
    if total <= MAX_DIFF_LINES {
        return text;
    }
    let mut cut: String = text
        .lines()
        .take(MAX_DIFF_LINES)
        .flat_map(|l| [l, "\n"])
        .collect();
    cut.push_str(&format!("... {} more diff lines\n", total - MAX_DIFF_LINES));
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_then_reports_unchanged_then_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.txt");
        assert_eq!(write_or_check(&path, "a\n", false), Ok(Outcome::Written));
        assert_eq!(write_or_check(&path, "a\n", false), Ok(Outcome::Unchanged));
        assert_eq!(write_or_check(&path, "a\n", true), Ok(Outcome::UpToDate));
    }

    #[test]
    fn check_fails_with_a_diff_and_does_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        fs::write(&path, "one\ntwo\n").unwrap();
        let err = write_or_check(&path, "one\nTwo\n", true).unwrap_err();
        assert!(err.contains("is stale"), "{err}");
        assert!(err.contains("-two\n+Two"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn check_fails_when_the_file_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_or_check(&dir.path().join("none"), "x", true).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }
}
