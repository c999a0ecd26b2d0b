//! CSV exports: `summary.csv` (one row per host × profile, raw numbers) and
//! `intervals.csv` (one row per snapshot interval), RFC 4180 quoting.

use std::fmt::Write as _;

use crate::result::{HostStatus, RunResult};

/// Columns of summary.csv: latencies in µs, rates in jobs/s.
pub const SUMMARY_HEADER: &str =
    "host,profile,cores,threads,status,jobs,jobs_per_s,p50_us,p95_us,p99_us,p999_us,max_us,errors";

/// Columns of intervals.csv.
pub const INTERVALS_HEADER: &str = "host,profile,seq,t_s,jobs_per_s,p50_us,p99_us,max_us,queue_depth,in_flight,rss_bytes,cpu_cores";

/// A field quoted when it holds a comma, a quote or a line break.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn status(s: HostStatus) -> &'static str {
    match s {
        HostStatus::Ok => "ok",
        HostStatus::Failed => "failed",
        HostStatus::Lost => "lost",
        HostStatus::Interrupted => "interrupted",
    }
}

/// summary.csv: the comparison table with raw numbers.
pub fn summary(r: &RunResult) -> String {
    let mut out = String::from(SUMMARY_HEADER);
    out.push_str("\r\n");
    for p in &r.profiles {
        for h in &p.hosts {
            let s = &h.latency.completion;
            let _ = write!(
                out,
                "{},{},{},{},{},{},{:.3},{},{},{},{},{},{}\r\n",
                field(&h.label),
                field(&p.label),
                h.info.logical_cores,
                h.threads,
                status(h.status),
                h.accounting.measured_completed,
                h.throughput,
                s.p50,
                s.p95,
                s.p99,
                s.p999,
                s.max,
                h.accounting.errors()
            );
        }
    }
    out
}

/// intervals.csv: every snapshot interval of every host and profile.
pub fn intervals(r: &RunResult) -> String {
    let mut out = String::from(INTERVALS_HEADER);
    out.push_str("\r\n");
    for p in &r.profiles {
        for h in &p.hosts {
            let (host, profile) = (field(&h.label), field(&p.label));
            for i in &h.intervals {
                let _ = write!(
                    out,
                    "{host},{profile},{},{:.3},{:.3},{},{},{},{},{},{},{:.3}\r\n",
                    i.seq,
                    i.t_s,
                    i.jobs_per_s,
                    i.p50_us,
                    i.p99_us,
                    i.max_us,
                    i.queue_depth,
                    i.in_flight,
                    i.rss_bytes,
                    i.cpu_cores
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }
}
