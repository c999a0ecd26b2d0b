//! `--job-log`: one `job_done` JSON line per completed, crashed or timed-out
//! job, for small runs and for checking the histograms against raw data.
//!
//! Line format (fields in this order):
//! `{"event":"job_done","host":"local-1","profile":0,"id":7,"class":"mixed",
//! "origin_us":120,"start_us":135,"end_us":1290,"outcome":"completed"}`.
//! Times are µs since that host's run of that profile started, on the
//! agent's clock; `origin_us` is the intended start (open loop) or the
//! enqueue attempt (closed loop), the origin of completion latency.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cwbench::proto::JobRecords;

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

impl JobLogSink {
    /// Appends one line per record.
    pub fn write(&self, r: &JobRecords) -> io::Result<()> {
        let host = serde_json::to_string(&self.host).map_err(io::Error::other)?;
        let mut buf = String::with_capacity(r.ids.len() * 160);
        for k in 0..r.ids.len() {
            let class_id = r.class_ids.get(k).copied().unwrap_or(0);
            let class = self.classes.get(class_id as usize).map_or_else(
                || format!("\"class{class_id}\""),
                |c| serde_json::to_string(c).unwrap_or_default(),
            );
            let outcome = match r.outcomes.get(k) {
                Some(0) => "completed",
                Some(1) => "crashed",
                Some(2) => "timed_out",
                _ => "unknown",
            };
            use std::fmt::Write as _;
            let _ = writeln!(
                buf,
                "{{\"event\":\"job_done\",\"host\":{host},\"profile\":{},\"id\":{},\"class\":{class},\"origin_us\":{},\"start_us\":{},\"end_us\":{},\"outcome\":\"{outcome}\"}}",
                self.profile,
                r.ids[k],
                r.origin_us.get(k).copied().unwrap_or(0),
                r.start_us.get(k).copied().unwrap_or(0),
                r.end_us.get(k).copied().unwrap_or(0),
            );
        }
        let mut out = self
            .log
            .out
            .lock()
            .map_err(|_| io::Error::other("job log lock poisoned"))?;
        out.write_all(buf.as_bytes())
    }
}
