//! HdrHistogram interval log (`completion.hlog`): every interval's completion
//! histogram, per host, profile and class, streamed to disk as it arrives.
//!
//! One file per run. Each line is tagged `host=<label>;profile=<index>;class=<name>`
//! (the log format forbids `,`, spaces and line breaks in a tag; those, `;`
//! and `=` inside a name become `_`). Timestamps are seconds since that
//! host's run of that profile started, on the agent's clock; values are µs.
//! Written by the hdrhistogram crate's standard `IntervalLogWriter` as
//! V2 + DEFLATE, so the Java and Python HdrHistogram tools read it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use cwbench::histogram::Hist;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

/// File name of the interval log in the run directory.
pub const FILE_NAME: &str = "completion.hlog";

/// Intervals waiting for the writer thread; a snapshot carries one per class,
/// so this is many seconds of headroom while memory stays bounded.
const QUEUE: usize = 1024;

struct Entry {
    tag: String,
    start: Duration,
    len: Duration,
    hist: Hist,
}

/// Owns the writer thread of one run's interval log.
pub struct HlogWriter {
    path: PathBuf,
    tx: Option<SyncSender<Entry>>,
    thread: Option<JoinHandle<io::Result<u64>>>,
}

impl std::fmt::Debug for HlogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlogWriter")
            .field("path", &self.path)
            .finish()
    }
}

/// Where one host's run of one profile sends its intervals. Cheap to clone.
#[derive(Clone)]
pub struct HlogSink {
    tx: SyncSender<Entry>,
    prefix: String,
}

impl std::fmt::Debug for HlogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlogSink")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A name made safe for an interval-log tag: `,`, whitespace, `;` and `=`
/// become `_`.
pub fn tag_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == ',' || c == ';' || c == '=' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The tag of one host, profile (index in the run) and class.
pub fn tag(host: &str, profile: usize, class: &str) -> String {
    format!(
        "host={};profile={profile};class={}",
        tag_part(host),
        tag_part(class)
    )
}

impl HlogWriter {
    /// Creates (truncates) the log at `path`, and its directory, and starts
    /// its writer thread.
    /// `comments` go into the header.
    pub fn create(path: &Path, comments: &[String]) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::create(path)?;
        let (tx, rx) = sync_channel(QUEUE);
        let comments = comments.to_vec();
        let thread = std::thread::Builder::new()
            .name("hlog-writer".into())
            .spawn(move || write_loop(file, &comments, rx))?;
        Ok(Self {
            path: path.to_path_buf(),
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// A sink for one host's run of profile number `profile`.
    pub fn sink(&self, host: &str, profile: usize) -> Option<HlogSink> {
        self.tx.as_ref().map(|tx| HlogSink {
            tx: tx.clone(),
            prefix: format!("host={};profile={profile}", tag_part(host)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for every queued interval to be written (all sinks must be
    /// dropped first) and returns how many were written.
    pub fn finish(mut self) -> io::Result<u64> {
        drop(self.tx.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the hlog writer thread panicked")),
            None => Ok(0),
        }
    }
}

impl Drop for HlogWriter {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl HlogSink {
    /// Queues one interval histogram of `class`. `end` is the end of the
    /// interval and `len` its length (agent clock). Empty histograms are
    /// skipped. Never blocks the caller for long: the queue is drained by a
    /// thread that only writes a buffered file.
    pub fn interval(&self, class: &str, end: Duration, len: Duration, hist: Hist) {
        if hist.is_empty() {
            return;
        }
        let _ = self.tx.send(Entry {
            tag: format!("{};class={}", self.prefix, tag_part(class)),
            start: end.saturating_sub(len),
            len,
            hist,
        });
    }
}

fn write_loop(file: File, comments: &[String], rx: Receiver<Entry>) -> io::Result<u64> {
    let mut out = BufWriter::new(file);
    let mut ser = V2DeflateSerializer::new();
    let now = SystemTime::now();
    let mut b = IntervalLogWriterBuilder::new();
    b.add_comment("[Histogram log format version 1.3]");
    for c in comments {
        b.add_comment(c);
    }
    b.with_start_time(now).with_base_time(now);
    let mut w = b.begin_log_with(&mut out, &mut ser)?;
    let mut n = 0u64;
    let mut first_err: Option<io::Error> = None;
    // Keep draining after an error so senders never block on a dead writer.
    for e in rx {
        if first_err.is_some() {
            continue;
        }
        let Some(tag) = Tag::new(&e.tag) else {
            first_err = Some(io::Error::other(format!("bad hlog tag {:?}", e.tag)));
            continue;
        };
        match w.write_histogram(&e.hist, e.start, e.len, Some(tag)) {
            Ok(()) => n += 1,
            Err(err) => first_err = Some(io::Error::other(err.to_string())),
        }
    }
    drop(w);
    out.flush()?;
    match first_err {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn tags_are_valid_and_round_trip() {
        let t = tag("a host,with;bad=chars", 3, "mix ed");
        assert_eq!(t, "host=a_host_with_bad_chars;profile=3;class=mix_ed");
        assert!(Tag::new(&t).is_some());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let w = HlogWriter::create(&path, &["run test".into()]).unwrap();
        let s = w.sink("h 1", 0).unwrap();
        let mut h = cwbench::histogram::new_hist();
        for v in [10, 20, 3_000_000] {
            cwbench::histogram::record(&mut h, v);
        }
        s.interval(
            "c",
            Duration::from_millis(1500),
            Duration::from_millis(500),
            h,
        );
        s.interval(
            "c",
            Duration::from_secs(2),
            Duration::from_millis(500),
            cwbench::histogram::new_hist(),
        );
        drop(s);
        assert_eq!(w.finish().unwrap(), 1);
        let bytes = std::fs::read(&path).unwrap();
        let entries: Vec<_> = IntervalLogIterator::new(&bytes)
            .map(Result::unwrap)
            .filter_map(|e| match e {
                LogEntry::Interval(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(entries.len(), 1);
        let i = &entries[0];
        assert_eq!(i.tag().unwrap().as_str(), "host=h_1;profile=0;class=c");
        assert_eq!(i.start_timestamp(), Duration::from_secs(1));
        assert_eq!(i.duration(), Duration::from_millis(500));
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(i.encoded_histogram())
            .unwrap();
        let back: Hist = Deserializer::new().deserialize(&mut &raw[..]).unwrap();
        assert_eq!(back.len(), 3);
    }
}
