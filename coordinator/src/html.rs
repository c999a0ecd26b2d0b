//! report.html: one self-contained page (inline CSS and SVG, no script, no
//! fetches) with the run's charts and the same tables as report.md.

use std::fmt::Write as _;

use crate::chart::{self, Axis, Bar, LineChart, Scale, Series, esc};
use crate::report::{self, Fold, fmt_rate, fmt_us};
use crate::result::{
    GroupResult, HostResult, IntervalPoint, ProfileResult, RunResult, SpectrumPoint,
    ThroughputBasis,
};
use crate::scaling::{Dimension, ScalingPoint, ScalingSeries};

/// report.html's style sheet; the live dashboard (`crate::dashboard`) uses
/// it too.
pub(crate) const CSS: &str = r#"
:root{color-scheme:light}
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1d1f23;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Liberation Sans','DejaVu Sans',Arial,sans-serif}
header{background:#1f2d3d;color:#fff;padding:22px 32px}
header h1{margin:0 0 6px;font-size:22px;font-weight:600}
header p{margin:0;color:#c9d3de;max-width:1100px}
main{padding:8px 32px 40px;max-width:1500px}
h2{font-size:18px;margin:28px 0 10px;font-weight:600}
h3{font-size:15px;margin:20px 0 8px;font-weight:600;color:#333}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:16px}
.card{background:#fff;border:1px solid #dfe3e8;border-radius:6px;padding:6px;overflow:hidden}
svg.chart{display:block;width:100%;height:auto}
table{border-collapse:collapse;background:#fff;border:1px solid #dfe3e8;font-size:13px;margin:6px 0 4px}
th,td{padding:5px 10px;border-bottom:1px solid #eceff2;text-align:left;white-space:nowrap}
th{background:#f0f2f5;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fdecea}
.scroll{overflow-x:auto}
.note{color:#555;font-size:12.5px;max-width:1100px}
blockquote{margin:10px 0 0;color:#dfe6ee;font-style:italic}
ul{padding-left:20px}
.warn li{color:#8a2a0b}
footer{color:#777;font-size:12px;padding:0 32px 24px}
"#;

/// Colour of each host label, in order of first appearance.
fn host_colors(r: &RunResult) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for p in &r.profiles {
        for h in &p.hosts {
            if !seen.contains(&h.label) {
                seen.push(h.label.clone());
            }
        }
    }
    seen
}

fn color_of(hosts: &[String], label: &str) -> &'static str {
    chart::color(hosts.iter().position(|h| h == label).unwrap_or(0))
}

/// The x of a percentile on the spectrum axis: 1/(1−p).
fn spectrum_x(p: f64) -> f64 {
    1.0 / (1.0 - (p / 100.0).min(0.999_999_9))
}

/// One line of a percentile spectrum chart: name, colour, points, and the
/// number of jobs behind them.
struct SpectrumLine<'a> {
    name: String,
    color: &'static str,
    points: &'a [SpectrumPoint],
    count: u64,
}

/// The latency percentile spectrum of a profile's hosts.
fn host_spectrum_chart(p: &ProfileResult, hosts: &[String]) -> Option<String> {
    let lines: Vec<SpectrumLine> = p
        .hosts
        .iter()
        .map(|h| SpectrumLine {
            name: h.label.clone(),
            color: color_of(hosts, &h.label),
            points: &h.spectrum,
            count: h.latency.completion.count,
        })
        .collect();
    spectrum_chart("Latency by percentile (whole run)", &lines)
}

/// A latency percentile spectrum (HdrHistogram style): x is 1/(1−p) on a
/// log scale, so each decade is one more nine; the rightmost point is the
/// maximum. One line each, overlaid.
fn spectrum_chart(title: &str, lines: &[SpectrumLine]) -> Option<String> {
    let with: Vec<&SpectrumLine> = lines.iter().filter(|l| !l.points.is_empty()).collect();
    if with.is_empty() {
        return None;
    }
    // Decades worth showing: up to 1/count (beyond that every percentile is
    // the maximum), 2..=5 nines.
    let count = with.iter().map(|l| l.count).max().unwrap_or(1).max(1) as f64;
    let decades = count.log10().floor().clamp(2.0, 5.0);
    let last = 10f64.powf(decades);
    let max_x = 10f64.powf(decades + 0.5);
    let max_us = with
        .iter()
        .flat_map(|l| l.points.iter().map(|s| s.value_us))
        .max()
        .unwrap_or(1) as f64;
    let (div, unit) = chart::latency_unit(max_us);
    let series = with
        .iter()
        .map(|l| Series {
            name: l.name.clone(),
            color: l.color,
            points: l
                .points
                .iter()
                .filter_map(|s| {
                    let x = if s.percentile >= 100.0 {
                        max_x
                    } else {
                        spectrum_x(s.percentile)
                    };
                    (s.percentile >= 100.0 || x <= last * 1.000_001)
                        .then_some((x, s.value_us as f64 / div))
                })
                .collect(),
            fit: false,
        })
        .collect();
    let mut ticks = Vec::new();
    let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    for (d, l) in labels.iter().enumerate().take(decades as usize + 1) {
        ticks.push((10f64.powi(d as i32), (*l).to_string()));
    }
    ticks.push((max_x, "max".into()));
    let y = Axis::linear_from_zero(
        &format!("completion latency ({unit})"),
        max_us / div,
        chart::num,
    );
    Some(chart::line_chart(&LineChart {
        title: title.into(),
        x: Axis {
            label: "percentile (log scale of 1/(1−p))".into(),
            scale: Scale::Log10,
            min: 1.0,
            max: max_x,
            ticks,
        },
        y,
        series,
        markers: Vec::new(),
    }))
}

fn time_axis(p: &ProfileResult) -> Axis {
    let t = p
        .hosts
        .iter()
        .flat_map(|h| h.intervals.iter().map(|i| i.t_s))
        .fold(0.0, f64::max);
    Axis::linear_from_zero("time since the host's run started (s)", t, chart::num)
}

fn throughput_chart(p: &ProfileResult, hosts: &[String]) -> Option<String> {
    if p.hosts.iter().all(|h| h.intervals.is_empty()) {
        return None;
    }
    let max = p
        .hosts
        .iter()
        .flat_map(|h| h.intervals.iter().map(|i| i.jobs_per_s))
        .fold(0.0, f64::max);
    Some(chart::line_chart(&LineChart {
        title: "Throughput over time (per snapshot interval)".into(),
        x: time_axis(p),
        y: Axis::linear_from_zero("measured jobs completed (jobs/s)", max, chart::si),
        series: p
            .hosts
            .iter()
            .map(|h| Series {
                name: h.label.clone(),
                color: color_of(hosts, &h.label),
                points: h.intervals.iter().map(|i| (i.t_s, i.jobs_per_s)).collect(),
                fit: false,
            })
            .collect(),
        markers: fault_markers(p, hosts),
    }))
}

fn p99_chart(p: &ProfileResult, hosts: &[String]) -> Option<String> {
    // Intervals with no measured completion have no p99.
    latency_over_time(
        p,
        hosts,
        "p99 completion latency over time (per snapshot interval)",
        "p99 completion latency",
        |i| (i.p99_us > 0).then_some(i.p99_us),
    )
}

fn lateness_chart(p: &ProfileResult, hosts: &[String]) -> Option<String> {
    latency_over_time(
        p,
        hosts,
        "Scheduler lateness over time (probe p99 per interval)",
        "probe wake lateness p99",
        |i| Some(i.lateness_p99_us),
    )
}

/// A latency figure of every interval, one line per host, fault markers.
fn latency_over_time(
    p: &ProfileResult,
    hosts: &[String],
    title: &str,
    y_label: &str,
    value: fn(&IntervalPoint) -> Option<u64>,
) -> Option<String> {
    if p.hosts.iter().all(|h| h.intervals.is_empty()) {
        return None;
    }
    let max_us = p
        .hosts
        .iter()
        .flat_map(|h| h.intervals.iter().filter_map(value))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (div, unit) = chart::latency_unit(max_us);
    Some(chart::line_chart(&LineChart {
        title: title.into(),
        x: time_axis(p),
        y: Axis::linear_from_zero(&format!("{y_label} ({unit})"), max_us / div, chart::num),
        series: p
            .hosts
            .iter()
            .map(|h| Series {
                name: h.label.clone(),
                color: color_of(hosts, &h.label),
                points: h
                    .intervals
                    .iter()
                    .filter_map(|i| value(i).map(|v| (i.t_s, v as f64 / div)))
                    .collect(),
                fit: false,
            })
            .collect(),
        markers: fault_markers(p, hosts),
    }))
}

/// Injected fault events, as dashed lines in each host's colour.
fn fault_markers(p: &ProfileResult, hosts: &[String]) -> Vec<(f64, &'static str)> {
    p.hosts
        .iter()
        .flat_map(|h| {
            let c = color_of(hosts, &h.label);
            h.recovery.marks.iter().map(move |m| (m.t_s, c))
        })
        .collect()
}

/// Throughput and p99 of every host × profile, side by side.
fn comparison_charts(r: &RunResult, hosts: &[String]) -> Vec<String> {
    let many = r.profiles.len() > 1;
    let label = |p: &ProfileResult, h: &HostResult| {
        if many {
            format!("{} · {}", h.label, p.label)
        } else {
            h.label.clone()
        }
    };
    let pairs: Vec<(&ProfileResult, &HostResult)> = r
        .profiles
        .iter()
        .flat_map(|p| p.hosts.iter().map(move |h| (p, h)))
        .collect();
    if pairs.is_empty() {
        return Vec::new();
    }
    let tput: Vec<Bar> = pairs
        .iter()
        .map(|(p, h)| Bar {
            label: label(p, h),
            value: h.throughput,
            text: format!("{} jobs/s", fmt_rate(h.throughput)),
            color: color_of(hosts, &h.label),
            range: None,
        })
        .collect();
    let max_p99 = pairs
        .iter()
        .map(|(_, h)| h.latency.completion.p99)
        .max()
        .unwrap_or(0) as f64;
    let (div, unit) = chart::latency_unit(max_p99);
    let p99: Vec<Bar> = pairs
        .iter()
        .map(|(p, h)| Bar {
            label: label(p, h),
            value: h.latency.completion.p99 as f64 / div,
            text: fmt_us(h.latency.completion.p99),
            color: color_of(hosts, &h.label),
            range: None,
        })
        .collect();
    vec![
        chart::bar_chart("Throughput by host", "jobs/s", &tput, chart::si),
        chart::bar_chart(
            "p99 completion latency by host",
            &format!("p99 completion latency ({unit})"),
            &p99,
            chart::num,
        ),
    ]
}

fn table_html(out: &mut String, t: &report::Table) {
    let _ = write!(out, "<h2>{}</h2>", esc(&t.title));
    if let Some(f) = t.fold {
        let _ = write!(
            out,
            "<details{}><summary>{} rows</summary>",
            if f == Fold::Open { " open" } else { "" },
            t.rows.len()
        );
    }
    out.push_str("<div class=\"scroll\"><table><thead><tr>");
    for (h, r) in t.header.iter().zip(&t.right) {
        let _ = write!(
            out,
            "<th{}>{}</th>",
            if *r { " class=\"num\"" } else { "" },
            esc(h)
        );
    }
    out.push_str("</tr></thead><tbody>");
    for (i, row) in t.rows.iter().enumerate() {
        let bad = t.bad.get(i).copied().unwrap_or(false);
        out.push_str(if bad { "<tr class=\"bad\">" } else { "<tr>" });
        for (c, r) in row.iter().zip(&t.right) {
            let _ = write!(
                out,
                "<td{}>{}</td>",
                if *r { " class=\"num\"" } else { "" },
                esc(c)
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    if t.fold.is_some() {
        out.push_str("</details>");
    }
    if let Some(n) = &t.note {
        let _ = write!(out, "<p class=\"note\">{}</p>", esc(n));
    }
}

/// Profiles with more hosts than this get no per-host charts (their legends
/// and lines would be unreadable): the group charts stand for them.
pub const HOST_CHARTS_MAX: usize = 12;

/// Every (profile, group) with a merged host, named for a legend.
fn group_lines(r: &RunResult) -> Vec<(String, &GroupResult)> {
    let many = r.profiles.len() > 1;
    r.profiles
        .iter()
        .flat_map(|p| {
            p.groups.iter().filter(|g| g.hosts_ok > 0).map(move |g| {
                let name = if many {
                    format!("{} · {}", g.name, p.label)
                } else {
                    g.name.clone()
                };
                (name, g)
            })
        })
        .collect()
}

/// The groups side by side: throughput and p99 bars with the spread across
/// each group's hosts, overlaid spectra, throughput over time.
fn group_charts(r: &RunResult) -> Vec<String> {
    let lines = group_lines(r);
    if lines.is_empty() {
        return Vec::new();
    }
    let tput: Vec<Bar> = lines
        .iter()
        .enumerate()
        .map(|(i, (name, g))| Bar {
            label: name.clone(),
            value: g.throughput,
            text: format!("{} jobs/s", fmt_rate(g.throughput)),
            color: chart::color(i),
            range: (g.hosts_ok > 1 && g.throughput_basis == ThroughputBasis::PerHostMean)
                .then_some((g.throughput_spread.min, g.throughput_spread.max)),
        })
        .collect();
    let max_p99 = lines
        .iter()
        .map(|(_, g)| g.completion.p99.max(g.p99_spread.max as u64))
        .max()
        .unwrap_or(0) as f64;
    let (div, unit) = chart::latency_unit(max_p99);
    let p99: Vec<Bar> = lines
        .iter()
        .enumerate()
        .map(|(i, (name, g))| Bar {
            label: name.clone(),
            value: g.completion.p99 as f64 / div,
            text: fmt_us(g.completion.p99),
            color: chart::color(i),
            range: (g.hosts_ok > 1).then_some((g.p99_spread.min / div, g.p99_spread.max / div)),
        })
        .collect();
    let spectra: Vec<SpectrumLine> = lines
        .iter()
        .enumerate()
        .map(|(i, (name, g))| SpectrumLine {
            name: name.clone(),
            color: chart::color(i),
            points: &g.spectrum,
            count: g.completion.count,
        })
        .collect();
    let basis = report::basis(lines[0].1.throughput_basis);
    let mut out = vec![
        chart::bar_chart(
            &format!("Throughput by group ({basis}; whisker: min–max host)"),
            "jobs/s",
            &tput,
            chart::si,
        ),
        chart::bar_chart(
            "p99 completion latency by group (merged; whisker: min–max host)",
            &format!("p99 completion latency ({unit})"),
            &p99,
            chart::num,
        ),
    ];
    out.extend(spectrum_chart(
        "Latency by percentile, groups overlaid (merged histograms)",
        &spectra,
    ));
    out.extend(group_throughput_chart(&lines, basis));
    out
}

fn group_throughput_chart(lines: &[(String, &GroupResult)], basis: &str) -> Option<String> {
    let points = |g: &GroupResult| g.intervals.iter().map(|i| (i.t_s, i.jobs_per_s)).collect();
    let series: Vec<Series> = lines
        .iter()
        .enumerate()
        .map(|(i, (name, g))| Series {
            name: name.clone(),
            color: chart::color(i),
            points: points(g),
            fit: false,
        })
        .collect();
    if series.iter().all(|s| s.points.is_empty()) {
        return None;
    }
    let (t, max) = series
        .iter()
        .flat_map(|s| s.points.iter())
        .fold((0.0, 0.0), |(t, m), &(x, y)| {
            (f64::max(t, x), f64::max(m, y))
        });
    Some(chart::line_chart(&LineChart {
        title: format!("Throughput over time, groups overlaid ({basis})"),
        x: Axis::linear_from_zero("time since the hosts' runs started (s)", t, chart::num),
        y: Axis::linear_from_zero("measured jobs completed (jobs/s)", max, chart::si),
        series,
        markers: Vec::new(),
    }))
}

/// Throughput and p99 against a numeric dimension: one line per series,
/// the USL fit dashed beside its points (the table's note gives its
/// coefficients).
fn scaling_charts(d: &Dimension) -> Vec<String> {
    let n = |p: &ScalingPoint| p.value.parse::<f64>().unwrap_or(0.0);
    let name = |s: &ScalingSeries| {
        if s.fixed.is_empty() {
            "measured".to_string()
        } else {
            s.fixed.clone()
        }
    };
    let mut tput = Vec::new();
    let mut p99 = Vec::new();
    for (i, s) in d.series.iter().enumerate() {
        let color = chart::color(i);
        tput.push(Series {
            name: name(s),
            color,
            points: s.points.iter().map(|p| (n(p), p.throughput)).collect(),
            fit: false,
        });
        p99.push(Series {
            name: name(s),
            color,
            points: s.points.iter().map(|p| (n(p), p.p99_us as f64)).collect(),
            fit: false,
        });
        if let Some(f) = &s.usl {
            let (lo, hi) = (n(&s.points[0]), n(&s.points[s.points.len() - 1]));
            tput.push(Series {
                name: format!("USL fit ({})", name(s)),
                color,
                points: (0..=40)
                    .map(|k| {
                        let x = lo + (hi - lo) * f64::from(k) / 40.0;
                        (x, f.at(x))
                    })
                    .collect(),
                fit: true,
            });
        }
    }
    let max_n = tput
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    let max_x = tput
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let max_us = p99
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (div, unit) = chart::latency_unit(max_us);
    for s in &mut p99 {
        for p in &mut s.points {
            p.1 /= div;
        }
    }
    let x = || Axis::linear_from_zero(&d.name, max_n, chart::num);
    let fitted = d.series.iter().any(|s| s.usl.is_some());
    vec![
        chart::line_chart(&LineChart {
            title: format!(
                "Throughput against {}{}",
                d.title(),
                if fitted { " (dashed: USL fit)" } else { "" }
            ),
            x: x(),
            y: Axis::linear_from_zero("jobs/s", max_x, chart::si),
            series: tput,
            markers: Vec::new(),
        }),
        chart::line_chart(&LineChart {
            title: format!("p99 completion latency against {}", d.title()),
            x: x(),
            y: Axis::linear_from_zero(&format!("p99 ({unit})"), max_us / div, chart::num),
            series: p99,
            markers: Vec::new(),
        }),
    ]
}

fn cards(o: &mut String, charts: Vec<String>) {
    if charts.is_empty() {
        return;
    }
    o.push_str("<div class=\"grid\">");
    for c in charts {
        let _ = write!(o, "<div class=\"card\">{c}</div>");
    }
    o.push_str("</div>");
}

/// A warning; a long list of hosts (after " — ") folds away.
fn warning_html(w: &str) -> String {
    match w.rsplit_once(" — ") {
        Some((cause, hosts)) if hosts.len() > 200 => format!(
            "{} <details><summary>the hosts</summary>{}</details>",
            esc(cause),
            esc(hosts)
        ),
        _ => esc(w),
    }
}

/// The whole page: groups first, then scaling, then per-host detail.
pub fn render(r: &RunResult) -> String {
    let hosts = host_colors(r);
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\"><title>cwbench run {}</title><style>{CSS}</style></head><body>",
        esc(&r.run_id)
    );
    let _ = write!(
        o,
        "<header><h1>cwbench run {}</h1><p>{}</p>",
        esc(&r.run_id),
        esc(&report::run_facts(r))
    );
    if !r.scenario.description.is_empty() {
        let _ = write!(
            o,
            "<blockquote>{}</blockquote>",
            esc(&r.scenario.description)
        );
    }
    o.push_str("</header><main>");
    if !r.warnings.is_empty() {
        o.push_str("<h2>Warnings</h2><ul class=\"warn\">");
        for w in &r.warnings {
            let _ = write!(o, "<li>{}</li>", warning_html(w));
        }
        o.push_str("</ul>");
    }
    let mut tables = report::tables(r).into_iter();
    // A WebSocket run's servers first, then host groups: the table, then
    // the charts.
    let ws = r.profiles.iter().any(|p| p.websocket.is_some());
    for t in tables.by_ref().take(if ws { 2 } else { 1 }) {
        table_html(&mut o, &t);
    }
    cards(&mut o, group_charts(r));
    // Scaling: a table per dimension, charts for the numeric ones.
    for (d, t) in r.scaling.iter().zip(tables.by_ref()) {
        table_html(&mut o, &t);
        if d.numeric {
            cards(&mut o, scaling_charts(d));
        }
    }
    o.push_str("<h2>Per host</h2>");
    let rows: usize = r.profiles.iter().map(|p| p.hosts.len()).sum();
    if rows <= HOST_CHARTS_MAX {
        let cmp = comparison_charts(r, &hosts);
        cards(&mut o, cmp);
    }
    for (i, p) in r.profiles.iter().enumerate() {
        let _ = write!(o, "<h3>Profile {}: {}</h3>", i + 1, esc(&p.label));
        if p.hosts.len() > HOST_CHARTS_MAX {
            let _ = write!(
                o,
                "<p class=\"note\">{} hosts: per-host charts are left out (more than {HOST_CHARTS_MAX} lines would not read); the group charts above merge them, the tables below list them.</p>",
                p.hosts.len()
            );
            continue;
        }
        cards(
            &mut o,
            [
                host_spectrum_chart(p, &hosts),
                throughput_chart(p, &hosts),
                p99_chart(p, &hosts),
                lateness_chart(p, &hosts),
            ]
            .into_iter()
            .flatten()
            .collect(),
        );
    }
    for t in tables {
        table_html(&mut o, &t);
    }
    o.push_str("<h2>Findings</h2><ul>");
    for f in report::findings(r) {
        let _ = write!(o, "<li>{}</li>", esc(&f));
    }
    o.push_str("</ul>");
    o.push_str("<p class=\"note\">How to read the percentile chart: each step right on the x axis adds a nine (90%, 99%, 99.9%…), so the tail gets as much room as the median; the rightmost point is the slowest job. Time series use each host's own clock from its run start; intervals are the agents' snapshot intervals.</p>");
    let _ = write!(
        o,
        "</main><footer>Generated by cwbench {} from result.json (schema {}). Self-contained: no scripts, no external resources.</footer></body></html>",
        esc(&r.cwbench_version),
        r.schema_version
    );
    o.push('\n');
    o
}
