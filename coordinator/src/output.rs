//! Writes a run's files: result.json, report.md, report.html, summary.csv
//! and intervals.csv (completion.hlog is streamed during the run, see
//! `hlog`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::result::RunResult;
use crate::{csv, html, report};

/// Files derived from a result (everything but result.json and the hlog).
pub const DERIVED: [&str; 4] = ["report.md", "report.html", "summary.csv", "intervals.csv"];

/// Writes every output of `r` into `dir` (created if missing). Files are
/// written to a temporary name and renamed, so a reader never sees half a file.
pub fn write_all(r: &RunResult, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    // Compact: half the size of pretty-printed JSON (1.3 against 2.8 MiB at
    // 256 hosts); `jq .` prints it readably.
    let json = serde_json::to_string(r).map_err(io::Error::other)?;
    write_atomic(&dir.join("result.json"), json.as_bytes())?;
    write_derived(r, dir)?;
    Ok(())
}

/// Writes the files that can be re-derived from a saved result; returns
/// their paths.
pub fn write_derived(r: &RunResult, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let files = [
        (DERIVED[0], report::markdown(r)),
        (DERIVED[1], html::render(r)),
        (DERIVED[2], csv::summary(r)?),
        (DERIVED[3], csv::intervals(r)?),
    ];
    let mut out = Vec::new();
    for (name, text) in files {
        let p = dir.join(name);
        write_atomic(&p, text.as_bytes())?;
        out.push(p);
    }
    Ok(out)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}
