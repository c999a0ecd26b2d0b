//! `--job-log`: one `job_done` JSON line per completed, crashed or timed-out
//! job, for small runs and for checking the histograms against raw data.
//!
//! Line format (fields in this order):
//! `{"event":"job_done","host":"local-1","profile":0,"id":7,"class":"mixed",
//! "origin_us":120,"start_us":135,"end_us":1290,"outcome":"completed"}`.
//! Times are µs since that host's run of that profile started, on the
//! agent's clock; `origin_us` is the intended start (open loop) or the
//! enqueue attempt (closed loop), the origin of completion latency.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cwbench::proto::JobRecords;
use serde::Serialize;

pub const FILE_NAME: &str = "jobs.jsonl";

/// Most jobs a run with --job-log may have (per agent): about 150 bytes a
/// line, so 10 million jobs is about 1.5 GB.
pub const MAX_JOBS: u64 = 10_000_000;

/// The open log file, shared by the drivers.
#[derive(Debug)]
pub struct JobLog {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
}

/// One host's handle: the log plus what its lines carry.
#[derive(Debug, Clone)]
pub struct JobLogSink {
    log: Arc<JobLog>,
    host: String,
    profile: usize,
    classes: Arc<Vec<String>>,
}

impl JobLog {
    pub fn create(path: &Path) -> io::Result<Arc<Self>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            out: Mutex::new(BufWriter::new(File::create(path)?)),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sink(self: &Arc<Self>, host: &str, profile: usize, classes: Vec<String>) -> JobLogSink {
        JobLogSink {
            log: self.clone(),
            host: host.to_string(),
            profile,
            classes: Arc::new(classes),
        }
    }

    pub fn finish(&self) -> io::Result<()> {
        self.out
            .lock()
            .map_err(|_| io::Error::other("job log lock poisoned"))?
            .flush()
    }
}

/// One line of the job log; the field order is part of the format.
#[derive(Serialize)]
struct JobDone<'a> {
    event: &'static str,
    host: &'a str,
    profile: usize,
    id: u64,
    class: Cow<'a, str>,
    origin_us: u64,
    start_us: u64,
    end_us: u64,
    outcome: &'static str,
}

impl JobLogSink {
    /// Appends one line per record.
    pub fn write(&self, r: &JobRecords) -> io::Result<()> {
        let mut buf = Vec::with_capacity(r.ids.len() * 160);
        for (k, &id) in r.ids.iter().enumerate() {
            let class_id = r.class_ids.get(k).copied().unwrap_or(0);
            let line = JobDone {
                event: "job_done",
                host: &self.host,
                profile: self.profile,
                id,
                class: self.classes.get(class_id as usize).map_or_else(
                    || Cow::Owned(format!("class{class_id}")),
                    |c| Cow::Borrowed(c.as_str()),
                ),
                origin_us: r.origin_us.get(k).copied().unwrap_or(0),
                start_us: r.start_us.get(k).copied().unwrap_or(0),
                end_us: r.end_us.get(k).copied().unwrap_or(0),
                outcome: outcome(r.outcomes.get(k).copied()),
            };
            serde_json::to_writer(&mut buf, &line)?;
            buf.push(b'\n');
        }
        let mut out = self
            .log
            .out
            .lock()
            .map_err(|_| io::Error::other("job log lock poisoned"))?;
        out.write_all(&buf)
    }
}

fn outcome(code: Option<u32>) -> &'static str {
    match code {
        Some(0) => "completed",
        Some(1) => "crashed",
        Some(2) => "timed_out",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: the line format of the module doc, field order included.
    #[test]
    fn lines_keep_their_format() {
        let dir = tempfile::tempdir().unwrap();
        let log = JobLog::create(&dir.path().join(FILE_NAME)).unwrap();
        let sink = log.sink("local-1", 0, vec!["mixed".into()]);
        let r = JobRecords {
            ids: vec![7, 8],
            class_ids: vec![0, 3],
            origin_us: vec![120, 1],
            start_us: vec![135, 2],
            end_us: vec![1290, 3],
            outcomes: vec![0, 9],
        };
        sink.write(&r).unwrap();
        log.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(log.path()).unwrap(),
            concat!(
                "{\"event\":\"job_done\",\"host\":\"local-1\",\"profile\":0,\"id\":7,\"class\":\"mixed\",",
                "\"origin_us\":120,\"start_us\":135,\"end_us\":1290,\"outcome\":\"completed\"}\n",
                "{\"event\":\"job_done\",\"host\":\"local-1\",\"profile\":0,\"id\":8,\"class\":\"class3\",",
                "\"origin_us\":1,\"start_us\":2,\"end_us\":3,\"outcome\":\"unknown\"}\n",
            )
        );
    }
}
