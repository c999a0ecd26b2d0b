//! The fleet's tables: host groups (merged figures, spread, outliers) and
//! scaling along each dimension, with the USL fit in words.

use super::{Table, fmt_rate, fmt_us};
use crate::result::{Outlier, RunResult, Spread, ThroughputBasis};
use crate::scaling::{Dimension, ScalingSeries, UslFit};

fn spread(s: &Spread, show: impl Fn(f64) -> String) -> String {
    format!("{} / {} / {}", show(s.min), show(s.median), show(s.max))
}

/// How a group's throughput combines its hosts', in words.
pub fn basis(b: ThroughputBasis) -> &'static str {
    match b {
        ThroughputBasis::PerHostMean => "mean per host",
        ThroughputBasis::Sum => "sum of hosts",
    }
}

/// A figure of an outlier's metric: jobs/s or µs.
fn outlier_figure(o: &Outlier, v: f64) -> String {
    if o.metric == "throughput" {
        format!("{} jobs/s", fmt_rate(v))
    } else {
        fmt_us(v as u64)
    }
}

/// An outlier in words: `local-3 (p99 12.0ms, median 3.1ms)`.
pub(super) fn outlier_text(o: &Outlier) -> String {
    format!(
        "{} ({} {}, median {})",
        o.host,
        o.metric,
        outlier_figure(o, o.value),
        outlier_figure(o, o.median)
    )
}

/// One row per host group of every profile: the merged figures first.
pub fn group_table(r: &RunResult) -> Table {
    let mut t = Table::new(
        "Host groups",
        &[
            "profile",
            "group",
            "hosts ok",
            "jobs/s",
            "of",
            "p50",
            "p95",
            "p99",
            "p99.9",
            "max",
            "host jobs/s min / median / max",
            "host p99 min / median / max",
            "errors",
            "outlier hosts",
        ],
        &[2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    );
    for p in &r.profiles {
        for g in &p.groups {
            let c = &g.completion;
            t.rows.push(vec![
                p.label.clone(),
                g.name.clone(),
                format!("{}/{}", g.hosts_ok, g.hosts.len()),
                fmt_rate(g.throughput),
                basis(g.throughput_basis).into(),
                fmt_us(c.p50),
                fmt_us(c.p95),
                fmt_us(c.p99),
                fmt_us(c.p999),
                fmt_us(c.max),
                spread(&g.throughput_spread, fmt_rate),
                spread(&g.p99_spread, |v| fmt_us(v as u64)),
                g.accounting.errors().to_string(),
                g.outliers.len().to_string(),
            ]);
            t.bad.push(g.hosts_ok < g.hosts.len() as u32);
        }
    }
    t.note = Some(format!(
        "A group is the hosts of a profile that share agent label (agent --label), logical cores and worker threads (shown as cores c / threads t). Its latencies are those of the HdrHistogram sum of its ok hosts' whole-run histograms, never an average of percentiles; jobs/s is the {}. An outlier is a host whose throughput or p99 has a modified z-score 0.6745·|x − median| / MAD over {} and lies at least {:.0}% from the group median (groups of {} or more hosts); the table Outlier hosts lists them. Highlighted: a group with a host that failed or was lost.",
        if r.scenario.run.distribution == cwbench::scenario::Distribution::Shard {
            "sum over the hosts (shard: they split the stream)"
        } else {
            "mean per host (replicate: every host ran the whole stream)"
        },
        crate::groups::OUTLIER_Z,
        crate::groups::OUTLIER_MIN_RELATIVE * 100.0,
        crate::groups::OUTLIER_MIN_HOSTS
    ));
    t
}

/// One table per dimension that varies: its series, point by point.
pub(super) fn scaling_tables(r: &RunResult) -> Vec<Table> {
    r.scaling.iter().map(scaling_table).collect()
}

fn scaling_table(d: &Dimension) -> Table {
    let ratio = if d.numeric { "speedup" } else { "relative" };
    let mut t = Table::new(
        &format!("Scaling: {}", d.title()),
        &[
            "held fixed",
            &d.name,
            "profile",
            "group",
            "jobs/s",
            ratio,
            "efficiency",
            "p99",
        ],
        &[4, 5, 6, 7],
    );
    let mut notes = Vec::new();
    for s in &d.series {
        for p in &s.points {
            t.rows.push(vec![
                if s.fixed.is_empty() {
                    "—".into()
                } else {
                    s.fixed.clone()
                },
                p.value.clone(),
                p.profile.clone(),
                p.group.clone(),
                fmt_rate(p.throughput),
                format!("{:.2}×", p.speedup),
                p.efficiency
                    .map_or_else(|| "—".into(), |e| format!("{:.0}%", e * 100.0)),
                fmt_us(p.p99_us),
            ]);
        }
        if let Some(f) = &s.usl {
            notes.push(usl_text(&d.name, s, f));
        }
    }
    let base = if d.numeric {
        "speedup = jobs/s ÷ that of the smallest point of the series"
    } else {
        "relative = jobs/s ÷ that of the series' first point"
    };
    let eff = if matches!(d.name.as_str(), "cores" | "threads") {
        "; efficiency = speedup ÷ (N ÷ N₀), 100% = linear scaling"
    } else {
        ""
    };
    notes.insert(0, format!("{base}{eff}."));
    t.note = Some(notes.join(" "));
    t
}

/// The USL fit of a series in one sentence, with its caveats.
pub fn usl_text(dim: &str, s: &ScalingSeries, f: &UslFit) -> String {
    let max_n = s
        .points
        .iter()
        .filter_map(|p| p.value.parse::<f64>().ok())
        .fold(0.0, f64::max);
    let peak = match (f.peak_n, f.peak_throughput) {
        (Some(n), Some(x)) => format!(", peak at N* ≈ {n:.1} {dim} ({} jobs/s)", fmt_rate(x)),
        _ => String::new(),
    };
    let mut text = format!(
        "USL fit{}: λ = {} jobs/s, σ (contention) = {:.4}, κ (coherency) = {:.5}, R² = {:.3} over {} points{peak}.",
        if s.fixed.is_empty() {
            String::new()
        } else {
            format!(" [{}]", s.fixed)
        },
        fmt_rate(f.lambda),
        f.sigma,
        f.kappa,
        f.r2,
        f.points
    );
    for c in f.caveats(max_n) {
        text.push_str(&format!(" Note: {c}."));
    }
    text
}

/// Every outlier host, when there is one.
pub(super) fn outlier_table(r: &RunResult) -> Option<Table> {
    let mut t = Table::new(
        "Outlier hosts",
        &[
            "profile",
            "group",
            "host",
            "metric",
            "value",
            "group median",
            "modified z",
        ],
        &[4, 5, 6],
    );
    for p in &r.profiles {
        for g in &p.groups {
            for o in &g.outliers {
                t.rows.push(vec![
                    p.label.clone(),
                    g.name.clone(),
                    o.host.clone(),
                    o.metric.clone(),
                    outlier_figure(o, o.value),
                    outlier_figure(o, o.median),
                    o.score
                        .map_or_else(|| "MAD 0".into(), |z| format!("{z:+.1}")),
                ]);
            }
        }
    }
    (!t.rows.is_empty()).then_some(t)
}
