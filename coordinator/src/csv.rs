//! CSV exports: `summary.csv` (one row per host × profile, raw numbers) and
//! `intervals.csv` (one row per snapshot interval), written by the `csv`
//! crate from serde rows whose field names are the header (RFC 4180
//! quoting, CRLF line ends).

use std::io;

use serde::{Serialize, Serializer};

use crate::result::{HostResult, HostStatus, IntervalPoint, RunResult};

/// One row of summary.csv (latencies in µs, rates in jobs/s); the field
/// names are the header.
#[derive(Serialize, Default)]
struct SummaryRow<'a> {
    host: &'a str,
    profile: &'a str,
    cores: u32,
    threads: u32,
    /// Always set; an `Option` only so that a header-only row exists.
    status: Option<HostStatus>,
    jobs: u64,
    #[serde(serialize_with = "fixed3")]
    jobs_per_s: f64,
    p50_us: u64,
    p95_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    errors: u64,
}

impl<'a> SummaryRow<'a> {
    fn new(profile: &'a str, h: &'a HostResult) -> Self {
        let s = &h.latency.completion;
        Self {
            host: &h.label,
            profile,
            cores: h.info.logical_cores,
            threads: h.threads,
            status: Some(h.status),
            jobs: h.accounting.measured_completed,
            jobs_per_s: h.throughput,
            p50_us: s.p50,
            p95_us: s.p95,
            p99_us: s.p99,
            p999_us: s.p999,
            max_us: s.max,
            errors: h.accounting.errors(),
        }
    }
}

/// One row of intervals.csv; the field names are the header.
#[derive(Serialize, Default)]
struct IntervalRow<'a> {
    host: &'a str,
    profile: &'a str,
    seq: u64,
    #[serde(serialize_with = "fixed3")]
    t_s: f64,
    #[serde(serialize_with = "fixed3")]
    jobs_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    queue_depth: u64,
    in_flight: u64,
    rss_bytes: u64,
    #[serde(serialize_with = "fixed3")]
    cpu_cores: f64,
}

impl<'a> IntervalRow<'a> {
    fn new(host: &'a str, profile: &'a str, i: &IntervalPoint) -> Self {
        Self {
            host,
            profile,
            seq: i.seq,
            t_s: i.t_s,
            jobs_per_s: i.jobs_per_s,
            p50_us: i.p50_us,
            p99_us: i.p99_us,
            max_us: i.max_us,
            queue_depth: i.queue_depth,
            in_flight: i.in_flight,
            rss_bytes: i.rss_bytes,
            cpu_cores: i.cpu_cores,
        }
    }
}

/// Fractional figures with three decimals (`24123.457`, `0.000`).
fn fixed3<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:.3}"))
}

/// summary.csv: the comparison table with raw numbers.
pub fn summary(r: &RunResult) -> io::Result<String> {
    let rows = r
        .profiles
        .iter()
        .flat_map(|p| p.hosts.iter().map(|h| SummaryRow::new(&p.label, h)));
    table(rows)
}

/// intervals.csv: every snapshot interval of every host and profile.
pub fn intervals(r: &RunResult) -> io::Result<String> {
    let rows = r.profiles.iter().flat_map(|p| {
        p.hosts.iter().flat_map(|h| {
            let (host, profile) = (h.label.as_str(), p.label.as_str());
            h.intervals
                .iter()
                .map(move |i| IntervalRow::new(host, profile, i))
        })
    });
    table(rows)
}

/// The header, then one line per row. A table without rows still has its
/// header (taken from an empty row).
fn table<R: Serialize + Default>(rows: impl Iterator<Item = R>) -> io::Result<String> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let mut any = false;
    for row in rows {
        w.serialize(row)?;
        any = true;
    }
    if !any {
        w.serialize(R::default())?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    let text = String::from_utf8(bytes).map_err(io::Error::other)?;
    Ok(if any {
        text
    } else {
        // Only the header line of the empty row.
        text.split_inclusive("\r\n")
            .next()
            .unwrap_or("")
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    struct Row<'a> {
        name: &'a str,
        #[serde(serialize_with = "fixed3")]
        x: f64,
    }

    #[test]
    fn quoting_and_decimals() {
        let rows = ["plain", "a,b", "say \"hi\"", "two\nlines"].map(|name| Row { name, x: 1.5 });
        assert_eq!(
            table(rows.into_iter()).unwrap(),
            "name,x\r\nplain,1.500\r\n\"a,b\",1.500\r\n\"say \"\"hi\"\"\",1.500\r\n\"two\nlines\",1.500\r\n"
        );
    }

    /// A result whose run was interrupted before any profile ran.
    fn no_hosts() -> RunResult {
        use cwbench::scenario::{Limits, PARITY_NAME, PARITY_TOML, parse};
        let plan = parse(PARITY_TOML, PARITY_NAME, &Limits::default()).unwrap();
        RunResult {
            schema_version: crate::result::SCHEMA_VERSION,
            run_id: "r".into(),
            cwbench_version: cwbench::VERSION.into(),
            started_at: String::new(),
            scenario: plan.scenario,
            scenario_source: String::new(),
            sizing: None,
            profiles: Vec::new(),
            scaling: Vec::new(),
            warnings: Vec::new(),
            interrupted: Some("SIGINT".into()),
        }
    }

    #[test]
    fn an_empty_table_has_its_header() {
        assert_eq!(table(std::iter::empty::<Row>()).unwrap(), "name,x\r\n");
        let r = no_hosts();
        assert_eq!(
            summary(&r).unwrap(),
            "host,profile,cores,threads,status,jobs,jobs_per_s,p50_us,p95_us,p99_us,p999_us,max_us,errors\r\n"
        );
        assert_eq!(
            intervals(&r).unwrap(),
            "host,profile,seq,t_s,jobs_per_s,p50_us,p99_us,max_us,queue_depth,in_flight,rss_bytes,cpu_cores\r\n"
        );
    }
}
