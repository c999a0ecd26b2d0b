//! `coordinator compare`: two saved results side by side, per (group,
//! profile), per (host, profile) and metric, with regression gates such as
//! `p99>+10%` or `group:p99>+10%`. Groups match by name, so two fleet runs
//! whose hosts were renamed still compare.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::report::{fmt_rate, fmt_us};
use crate::result::{GroupResult, HostResult, ProfileResult, RunResult};

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

    /// The figure of a host: jobs/s, µs or a count.
    pub fn value(self, h: &HostResult) -> f64 {
        self.of(h.throughput, &h.latency.completion, h.accounting.errors())
    }

    /// The figure of a group (merged latencies, the group's throughput).
    pub fn group_value(self, g: &GroupResult) -> f64 {
        self.of(g.throughput, &g.completion, g.accounting.errors())
    }

    fn of(self, throughput: f64, c: &cwbench::histogram::Summary, errors: u64) -> f64 {
        match self {
            Metric::Throughput => throughput,
            Metric::P50 => c.p50 as f64,
            Metric::P95 => c.p95 as f64,
            Metric::P99 => c.p99 as f64,
            Metric::P999 => c.p999 as f64,
            Metric::Max => c.max as f64,
            Metric::Errors => errors as f64,
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

/// What a row compares: a host group, or one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Group,
    Host,
}

/// A regression gate: `[group:|host:]METRIC>+PCT%` or `…METRIC<-PCT%`;
/// without a scope it applies to groups and hosts alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub scope: Option<Scope>,
    pub metric: Metric,
    pub direction: Direction,
    /// Signed percent.
    pub percent: f64,
    pub text: String,
}

/// A gate that does not parse; the message names it and says why.
#[derive(Debug, thiserror::Error)]
#[error(
    "bad --fail-if gate {gate:?}: {reason} (form: [group:|host:]METRIC>+PCT% or [group:|host:]METRIC<-PCT%, e.g. 'p99>+10%', 'group:throughput<-5%'; metrics: throughput, p50, p95, p99, p99.9, max, errors)"
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
        let (scope, body) = if let Some(b) = s.strip_prefix("group:") {
            (Some(Scope::Group), b)
        } else if let Some(b) = s.strip_prefix("host:") {
            (Some(Scope::Host), b)
        } else {
            (None, s)
        };
        let Some(op) = body.find(['>', '<']) else {
            return Err(bad("no comparison: use > or <"));
        };
        let (name, rest) = body.split_at(op);
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
            scope,
            metric,
            direction,
            percent: sign * value,
            text: s.to_string(),
        })
    }
}

impl Gate {
    /// Whether the gate judges rows of this scope and metric.
    pub fn applies(&self, scope: Scope, metric: Metric) -> bool {
        self.metric == metric && self.scope.is_none_or(|s| s == scope)
    }

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

/// One metric of one (group or host, profile) pair.
#[derive(Debug, Clone)]
pub struct Row {
    pub scope: Scope,
    /// The group's or the host's name.
    pub name: String,
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
    /// (group or host, profile) present in only one of the results.
    pub unmatched: Vec<String>,
    /// Hosts present in only one of the results: (only in base, only in
    /// new). Fleets get new host names every run; their groups still match.
    pub unmatched_hosts: (usize, usize),
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
    #[error("nothing to compare: no (group, profile) or (host, profile) pair is in both results")]
    Nothing,
}

/// Pairs groups by (name, profile label) and hosts by (label, profile
/// label), checks they ran the same jobs and applies the gates.
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
        let np = new.profiles.iter().find(|p| p.label == bp.label);
        if !by_stream && let Some(np) = np {
            check_digests(&mut c, bp, np);
        }
        for bg in &bp.groups {
            match np.and_then(|p| p.groups.iter().find(|g| g.name == bg.name)) {
                Some(ng) => c
                    .rows
                    .extend(rows(Scope::Group, &bg.name, &bp.label, gates, |m| {
                        (m.group_value(bg), m.group_value(ng))
                    })),
                None => c
                    .unmatched
                    .push(format!("group {} [{}] only in BASE", bg.name, bp.label)),
            }
        }
        for bh in &bp.hosts {
            match np.and_then(|p| p.hosts.iter().find(|h| h.label == bh.label)) {
                Some(nh) => c
                    .rows
                    .extend(rows(Scope::Host, &bh.label, &bp.label, gates, |m| {
                        (m.value(bh), m.value(nh))
                    })),
                None => c.unmatched_hosts.0 += 1,
            }
        }
    }
    for np in &new.profiles {
        let bp = base.profiles.iter().find(|p| p.label == np.label);
        for ng in &np.groups {
            if !bp.is_some_and(|p| p.groups.iter().any(|g| g.name == ng.name)) {
                c.unmatched
                    .push(format!("group {} [{}] only in NEW", ng.name, np.label));
            }
        }
        for nh in &np.hosts {
            if !bp.is_some_and(|p| p.hosts.iter().any(|h| h.label == nh.label)) {
                c.unmatched_hosts.1 += 1;
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

/// The same jobs on both sides: host by host where hosts match by name,
/// else as the set of streams the profile's hosts were sent.
fn check_digests(c: &mut Comparison, bp: &ProfileResult, np: &ProfileResult) {
    let mut matched = false;
    for bh in &bp.hosts {
        if let Some(nh) = np.hosts.iter().find(|h| h.label == bh.label) {
            matched = true;
            if bh.digest_sent != nh.digest_sent {
                c.mismatches.push(format!(
                    "{} [{}]: job digest {} vs {}",
                    bh.label, bp.label, bh.digest_sent, nh.digest_sent
                ));
            }
        }
    }
    let streams = |p: &ProfileResult| {
        p.hosts
            .iter()
            .map(|h| h.digest_sent.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    if !matched && streams(bp) != streams(np) {
        c.mismatches.push(format!(
            "[{}]: the hosts were sent different job streams",
            bp.label
        ));
    }
}

/// Every metric of one matched pair, with the gates it trips.
fn rows(
    scope: Scope,
    name: &str,
    profile: &str,
    gates: &[Gate],
    figures: impl Fn(Metric) -> (f64, f64),
) -> Vec<Row> {
    Metric::ALL
        .iter()
        .map(|&m| {
            let (b, n) = figures(m);
            let ch = change(b, n);
            Row {
                scope,
                name: name.to_string(),
                profile: profile.to_string(),
                metric: m,
                base: b,
                new: n,
                change: ch,
                tripped: gates
                    .iter()
                    .filter(|g| g.applies(scope, m) && g.trips(ch))
                    .map(|g| g.text.clone())
                    .collect(),
            }
        })
        .collect()
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
    let header = [
        "group / host",
        "profile",
        "metric",
        "base",
        "new",
        "change",
        "",
    ];
    let rows: Vec<[String; 7]> = c
        .rows
        .iter()
        .map(|r| {
            [
                match r.scope {
                    Scope::Group => format!("group {}", r.name),
                    Scope::Host => r.name.clone(),
                },
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
        assert_eq!(g.scope, None);
        let g: Gate = "group:p99>+10%".parse().unwrap();
        assert_eq!((g.scope, g.metric), (Some(Scope::Group), Metric::P99));
        assert!(g.applies(Scope::Group, Metric::P99) && !g.applies(Scope::Host, Metric::P99));
        let g: Gate = "host:throughput<-5%".parse().unwrap();
        assert!(g.applies(Scope::Host, Metric::Throughput));
        assert!(!g.applies(Scope::Group, Metric::Throughput));
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
            "groups:p99>+10%",
            "group:",
            "group:p99",
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
