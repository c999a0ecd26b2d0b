//! Writes a run's files: result.json and report.md.

use std::fs;
use std::io;
use std::path::Path;

use crate::report;
use crate::result::RunResult;

/// Writes every output of `r` into `dir` (created if missing). Files are
/// written to a temporary name and renamed, so a reader never sees half a file.
pub fn write_all(r: &RunResult, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(r).map_err(io::Error::other)?;
    write_atomic(&dir.join("result.json"), json.as_bytes())?;
    write_atomic(&dir.join("report.md"), report::markdown(r).as_bytes())?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}
