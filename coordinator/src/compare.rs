//! `coordinator compare`: two saved results side by side, per (host,
//! profile) and metric, with regression gates such as `p99>+10%`.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::report::{fmt_rate, fmt_us};
use crate::result::{HostResult, RunResult};

/// A compared figure of a host's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Throughput,
    P50,
    P95,
    P99,
    P999,
    Max,
    Errors,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::Throughput,
        Metric::P50,
        Metric::P95,
        Metric::P99,
        Metric::P999,
        Metric::Max,
        Metric::Errors,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::P50 => "p50",
            Metric::P95 => "p95",
            Metric::P99 => "p99",
            Metric::P999 => "p99.9",
            Metric::Max => "max",
            Metric::Errors => "errors",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "throughput" => Metric::Throughput,
            "p50" => Metric::P50,
            "p95" => Metric::P95,
            "p99" => Metric::P99,
            "p99.9" | "p999" => Metric::P999,
            "max" => Metric::Max,
            "errors" => Metric::Errors,
            _ => return None,
        })
    }

    /// The figure: jobs/s, µs or a count.
    pub fn value(self, h: &HostResult) -> f64 {
        let c = &h.latency.completion;
        match self {
            Metric::Throughput => h.throughput,
            Metric::P50 => c.p50 as f64,
            Metric::P95 => c.p95 as f64,
            Metric::P99 => c.p99 as f64,
            Metric::P999 => c.p999 as f64,
            Metric::Max => c.max as f64,
            Metric::Errors => h.accounting.errors() as f64,
        }
    }

    /// The figure as the table prints it.
    pub fn show(self, v: f64) -> String {
        match self {
            Metric::Throughput => format!("{}/s", fmt_rate(v)),
            Metric::Errors => format!("{v:.0}"),
            _ => fmt_us(v as u64),
        }
    }
}

/// `>`: trips when the change is above the percent; `<`: below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Above,
    Below,
}

/// A regression gate: `METRIC>+PCT%` or `METRIC<-PCT%`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub metric: Metric,
    pub direction: Direction,
    /// Signed percent.
    pub percent: f64,
    pub text: String,
}

/// A gate that does not parse; the message names it and says why.
#[derive(Debug, thiserror::Error)]
#[error(
    "bad --fail-if gate {gate:?}: {reason} (form: METRIC>+PCT% or METRIC<-PCT%, e.g. 'p99>+10%', 'throughput<-5%'; metrics: throughput, p50, p95, p99, p99.9, max, errors)"
)]
pub struct GateError {
    pub gate: String,
    pub reason: String,
}

impl FromStr for Gate {
    type Err = GateError;

    fn from_str(s: &str) -> Result<Self, GateError> {
        let bad = |reason: &str| GateError {
            gate: s.to_string(),
            reason: reason.to_string(),
        };
        let Some(op) = s.find(['>', '<']) else {
            return Err(bad("no comparison: use > or <"));
        };
        let (name, rest) = s.split_at(op);
        let metric = Metric::parse(name).ok_or_else(|| bad(&format!("unknown metric {name:?}")))?;
        let direction = if rest.starts_with('>') {
            Direction::Above
        } else {
            Direction::Below
        };
        let rest = &rest[1..];
        let sign = match rest.chars().next() {
            Some('+') => 1.0,
            Some('-') => -1.0,
            _ => return Err(bad("the percent must carry a sign, + or -")),
        };
        let Some(digits) = rest[1..].strip_suffix('%') else {
            return Err(bad("the percent must end with %"));
        };
        let ok = !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
            && digits.chars().filter(|&c| c == '.').count() <= 1
            && !digits.starts_with('.')
            && !digits.ends_with('.');
        let value: f64 = if ok {
            digits.parse().map_err(|_| bad("not a number"))?
        } else {
            return Err(bad(&format!("{digits:?} is not a plain number")));
        };
        Ok(Gate {
            metric,
            direction,
            percent: sign * value,
            text: s.to_string(),
        })
    }
}

impl Gate {
    /// Whether a change (percent; +inf for growth from 0) trips the gate.
    pub fn trips(&self, change: f64) -> bool {
        match self.direction {
            Direction::Above => change > self.percent,
            Direction::Below => change < self.percent,
        }
    }
}

/// Percent change from `base` to `new`: 0 when both are 0, +inf when only
/// `new` is non-zero.
pub fn change(base: f64, new: f64) -> f64 {
    if base == 0.0 {
        if new == 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        (new - base) / base * 100.0
    }
}

/// One metric of one (host, profile) pair.
#[derive(Debug, Clone)]
pub struct Row {
    pub host: String,
    pub profile: String,
    pub metric: Metric,
    pub base: f64,
    pub new: f64,
    pub change: f64,
    /// Gates this row trips.
    pub tripped: Vec<String>,
}

/// Two results side by side.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub rows: Vec<Row>,
    /// (host, profile) present in only one of the results.
    pub unmatched: Vec<String>,
    /// Differences in workload that were allowed.
    pub mismatches: Vec<String>,
}

impl Comparison {
    /// Rows that tripped a gate.
    pub fn tripped(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| !r.tripped.is_empty())
    }
}

/// Why two results cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(
        "the results ran different workloads ({0}); compare anyway with --allow-digest-mismatch"
    )]
    Mismatch(String),
    #[error("nothing to compare: no (host, profile) pair is in both results")]
    Nothing,
}

/// Pairs hosts by (label, profile label), checks they ran the same jobs
/// and applies the gates.
pub fn compare(
    base: &RunResult,
    new: &RunResult,
    gates: &[Gate],
    allow_mismatch: bool,
) -> Result<Comparison, CompareError> {
    let mut c = Comparison::default();
    if base.scenario.name != new.scenario.name || base.scenario.seed != new.scenario.seed {
        c.mismatches.push(format!(
            "scenario {} seed {} vs {} seed {}",
            base.scenario.name, base.scenario.seed, new.scenario.name, new.scenario.seed
        ));
    }
    // A timed closed loop runs as many jobs as each host manages, so job
    // digests differ by design; the same scenario definition (seed, classes,
    // arrival, faults) is what makes the streams the same.
    let timed = |r: &RunResult| r.sizing.is_some_and(|z| z.timed());
    let by_stream = timed(base) || timed(new);
    if by_stream && base.scenario != new.scenario {
        c.mismatches.push(format!(
            "timed runs of different scenario definitions ({} vs {})",
            base.scenario_source, new.scenario_source
        ));
    }
    for bp in &base.profiles {
        for bh in &bp.hosts {
            let Some(nh) = new
                .profiles
                .iter()
                .filter(|p| p.label == bp.label)
                .flat_map(|p| p.hosts.iter())
                .find(|h| h.label == bh.label)
            else {
                c.unmatched
                    .push(format!("{} [{}] only in BASE", bh.label, bp.label));
                continue;
            };
            if !by_stream && bh.digest_sent != nh.digest_sent {
                c.mismatches.push(format!(
                    "{} [{}]: job digest {} vs {}",
                    bh.label, bp.label, bh.digest_sent, nh.digest_sent
                ));
            }
            for m in Metric::ALL {
                let (b, n) = (m.value(bh), m.value(nh));
                let ch = change(b, n);
                let tripped = gates
                    .iter()
                    .filter(|g| g.metric == m && g.trips(ch))
                    .map(|g| g.text.clone())
                    .collect();
                c.rows.push(Row {
                    host: bh.label.clone(),
                    profile: bp.label.clone(),
                    metric: m,
                    base: b,
                    new: n,
                    change: ch,
                    tripped,
                });
            }
        }
    }
    for np in &new.profiles {
        for nh in &np.hosts {
            let in_base = base
                .profiles
                .iter()
                .filter(|p| p.label == np.label)
                .any(|p| p.hosts.iter().any(|h| h.label == nh.label));
            if !in_base {
                c.unmatched
                    .push(format!("{} [{}] only in NEW", nh.label, np.label));
            }
        }
    }
    if !c.mismatches.is_empty() && !allow_mismatch {
        return Err(CompareError::Mismatch(c.mismatches.join("; ")));
    }
    if c.rows.is_empty() {
        return Err(CompareError::Nothing);
    }
    Ok(c)
}

fn show_change(ch: f64) -> String {
    if ch.is_infinite() {
        "new (base 0)".into()
    } else {
        format!("{ch:+.1}%")
    }
}

/// The side-by-side table as aligned text.
pub fn table(c: &Comparison) -> String {
    let header = ["host", "profile", "metric", "base", "new", "change", ""];
    let rows: Vec<[String; 7]> = c
        .rows
        .iter()
        .map(|r| {
            [
                r.host.clone(),
                r.profile.clone(),
                r.metric.name().to_string(),
                r.metric.show(r.base),
                r.metric.show(r.new),
                show_change(r.change),
                if r.tripped.is_empty() {
                    String::new()
                } else {
                    format!("FAIL {}", r.tripped.join(" "))
                },
            ]
        })
        .collect();
    let mut w = header.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = " ".repeat(w[i] - c.chars().count());
            if (3..=5).contains(&i) {
                let _ = write!(l, "{pad}{c}  ");
            } else {
                let _ = write!(l, "{c}{pad}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.map(String::from), &mut out);
    for r in &rows {
        line(r, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_parse_strictly() {
        let g: Gate = "p99>+10%".parse().unwrap();
        assert_eq!(
            (g.metric, g.direction, g.percent),
            (Metric::P99, Direction::Above, 10.0)
        );
        let g: Gate = "throughput<-5%".parse().unwrap();
        assert_eq!(
            (g.metric, g.direction, g.percent),
            (Metric::Throughput, Direction::Below, -5.0)
        );
        let g: Gate = "p99.9>+2.5%".parse().unwrap();
        assert_eq!((g.metric, g.percent), (Metric::P999, 2.5));
        for bad in [
            "",
            "p99",
            "p99>10%",
            "p99>+10",
            "p98>+10%",
            "p99=+10%",
            "p99>+%",
            "p99>+1.2.3%",
            "p99 >+10%",
            "p99>+10%x",
            "P99>+10%",
            "p99>+.5%",
            "p99>+1e3%",
        ] {
            let e = bad.parse::<Gate>().expect_err(bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn changes_and_trips() {
        assert_eq!(change(100.0, 110.0), 10.0);
        assert_eq!(change(0.0, 0.0), 0.0);
        assert!(change(0.0, 3.0).is_infinite());
        let g: Gate = "p99>+10%".parse().unwrap();
        assert!(g.trips(10.5) && !g.trips(10.0) && !g.trips(-50.0));
        let g: Gate = "throughput<-5%".parse().unwrap();
        assert!(g.trips(-6.0) && !g.trips(-5.0) && !g.trips(3.0));
        let g: Gate = "errors>+0%".parse().unwrap();
        assert!(g.trips(f64::INFINITY));
    }
}
