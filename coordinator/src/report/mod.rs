//! Human-readable output: the comparison table (stdout) and report.md.

use std::fmt::Write as _;

use cwbench::histogram::Summary;

use crate::result::{GroupResult, HostResult, HostStatus, ProfileResult, RunResult};

mod fleet;
mod ws;

pub use fleet::{basis, group_table, usl_text};
use fleet::{outlier_table, outlier_text, scaling_tables};

/// Formats microseconds compactly: 850µs, 12.3ms, 4.20s.
pub fn fmt_us(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Formats a rate compactly: 950, 22.6k, 1.20M.
pub fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

const HEADER: [&str; 13] = [
    "host", "profile", "cores", "threads", "status", "jobs", "jobs/s", "p50", "p95", "p99",
    "p99.9", "max", "errors",
];

fn row(profile: &str, h: &HostResult) -> [String; 13] {
    let s: &Summary = &h.latency.completion;
    let status = match h.status {
        HostStatus::Ok => "ok",
        HostStatus::Failed => "FAILED",
        HostStatus::Lost => "LOST",
        HostStatus::Interrupted => "interrupted",
    };
    [
        h.label.clone(),
        profile.to_string(),
        h.info.logical_cores.to_string(),
        h.threads.to_string(),
        status.to_string(),
        h.accounting.measured_completed.to_string(),
        fmt_rate(h.throughput),
        fmt_us(s.p50),
        fmt_us(s.p95),
        fmt_us(s.p99),
        fmt_us(s.p999),
        fmt_us(s.max),
        h.accounting.errors().to_string(),
    ]
}

/// Host rows the printed table shows at most; beyond, report.md has them.
pub const STDOUT_HOST_ROWS: usize = 32;

/// What a run prints at its end: the groups, then the hosts (when there are
/// few enough to read), as aligned plain text.
pub fn table(r: &RunResult) -> String {
    let mut out = String::new();
    if let Some(ws) = ws::websocket_table(r) {
        out.push_str(&ws.text());
        out.push('\n');
    }
    let groups = group_table(r);
    if !groups.rows.is_empty() {
        out.push_str(&groups.text());
        out.push('\n');
    }
    let hosts = host_table(r);
    if hosts.rows.len() <= STDOUT_HOST_ROWS {
        out.push_str(&hosts.text());
    } else {
        let _ = writeln!(
            out,
            "({} host rows: see report.md or report.html)",
            hosts.rows.len()
        );
    }
    out
}

/// A table of the report, renderable as Markdown or HTML. Cells are plain
/// text; each renderer escapes them.
#[derive(Debug, Clone)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    /// Per column: right-aligned (numbers).
    pub right: Vec<bool>,
    pub rows: Vec<Vec<String>>,
    /// A sentence printed under the table.
    pub note: Option<String>,
    /// Rows to highlight (a host that failed, was lost, or stands out).
    pub bad: Vec<bool>,
    /// Per-host detail: folded away (`<details>`), open when it is short.
    pub fold: Option<Fold>,
}

/// How a table of per-host detail is folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    Open,
    Closed,
}

/// Per-host tables with more rows than this start folded.
pub const OPEN_HOST_ROWS: usize = 16;

impl Table {
    fn new(title: &str, header: &[&str], right: &[usize]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            right: (0..header.len()).map(|i| right.contains(&i)).collect(),
            rows: Vec::new(),
            note: None,
            bad: Vec::new(),
            fold: None,
        }
    }

    /// Folds per-host detail, open when short.
    fn per_host(mut self) -> Self {
        self.fold = Some(if self.rows.len() <= OPEN_HOST_ROWS {
            Fold::Open
        } else {
            Fold::Closed
        });
        self
    }

    /// The table as aligned plain text (numbers right).
    pub fn text(&self) -> String {
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for cells in std::iter::once(&self.header).chain(&self.rows) {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = " ".repeat(w[i] - c.chars().count());
                if self.right[i] {
                    let _ = write!(l, "{pad}{c}  ");
                } else {
                    let _ = write!(l, "{c}{pad}  ");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The run's length in words: from the resolved sizing, or for files
/// written before it existed, from the scenario's job counts.
fn length(r: &RunResult) -> String {
    match &r.sizing {
        Some(z) => z.describe(),
        None => format!(
            "{} measured jobs after {} warm-up jobs",
            r.scenario.run.jobs.unwrap_or(0),
            r.scenario.run.warmup_jobs
        ),
    }
}

/// One sentence on the scenario: name, seed, sizes, source, version, start.
pub fn run_facts(r: &RunResult) -> String {
    let s = &r.scenario;
    format!(
        "Scenario {} (seed {}, {}, {}), from {}; cwbench {}, started {}.",
        s.name,
        s.seed,
        length(r),
        cwbench::scenario::enum_name(&s.run.distribution),
        r.scenario_source,
        r.cwbench_version,
        r.started_at
    )
}

/// The per-host comparison table (completion latency and throughput).
fn host_table(r: &RunResult) -> Table {
    let mut t = Table::new(
        "Completion latency and throughput, per host",
        &HEADER,
        &[2, 3, 5, 6, 7, 8, 9, 10, 11, 12],
    );
    for p in &r.profiles {
        for h in &p.hosts {
            t.rows.push(Vec::from(row(&p.label, h)));
            t.bad.push(!h.status.checked() || is_outlier(p, &h.label));
        }
    }
    let origin = if r.scenario.arrival.mode == cwbench::scenario::ArrivalMode::Open {
        "completion − intended start, open loop: coordinated omission is counted"
    } else {
        "completion − enqueue attempt, closed loop"
    };
    t.note = Some(format!(
        "Latencies are completion latency ({origin}), measured on each agent's own clock. jobs/s = measured completed jobs ÷ measured window. errors = crashed + timed out + shed + cancelled. Highlighted: a host that failed, was lost, or is an outlier of its group."
    ));
    t
}

fn is_outlier(p: &ProfileResult, host: &str) -> bool {
    p.groups
        .iter()
        .any(|g| g.outliers.iter().any(|o| o.host == host))
}

/// The report's tables, in order: a WebSocket run's servers, host groups, scaling, then per-host
/// detail (comparison, hosts, breakdown and accounting, faults, per class).
pub fn tables(r: &RunResult) -> Vec<Table> {
    let mut out: Vec<Table> = ws::websocket_table(r).into_iter().collect();
    out.push(group_table(r));
    out.extend(scaling_tables(r));
    out.push(host_table(r).per_host());
    out.extend(outlier_table(r).map(Table::per_host));
    out.extend(host_tables(r).into_iter().map(Table::per_host));
    out
}

/// Per-host detail after the comparison table.
fn host_tables(r: &RunResult) -> Vec<Table> {
    let mut out = Vec::new();
    let mut t = Table::new(
        "Hosts",
        &[
            "host",
            "address",
            "CPU",
            "cores",
            "pinned to",
            "OS",
            "agent",
            "label",
        ],
        &[3],
    );
    if let Some(p) = r.profiles.first() {
        for h in &p.hosts {
            t.rows.push(vec![
                h.label.clone(),
                h.addr.clone(),
                h.info.cpu_model.clone(),
                h.info.logical_cores.to_string(),
                if h.info.cpu_set.is_empty() {
                    "—".to_string()
                } else {
                    h.info.cpu_set.clone()
                },
                h.info.os.clone(),
                format!(
                    "{} {}{}",
                    h.info.runtime,
                    h.info.agent_version,
                    if h.info.in_process {
                        " (in the coordinator's process)"
                    } else {
                        ""
                    }
                ),
                if h.info.label.is_empty() {
                    "—".to_string()
                } else {
                    h.info.label.clone()
                },
            ]);
        }
    }
    out.push(t);

    out.push(breakdown_table(r));
    out.extend(faults_table(r));
    out.extend(class_table(r));
    out
}

/// Per host and profile: latency breakdown, accounting and digest.
fn breakdown_table(r: &RunResult) -> Table {
    let mut t = Table::new(
        "Breakdown and accounting",
        &[
            "host",
            "profile",
            "queue wait p99",
            "service p99",
            "sleep overshoot p50 / p99",
            "scheduler lateness p50 / p99",
            "restart p50 / max",
            "sent",
            "completed",
            "crashed",
            "timed out",
            "shed",
            "cancelled",
            "unreleased",
            "balanced",
            "digest",
        ],
        &[2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    );
    for p in &r.profiles {
        for h in &p.hosts {
            let a = &h.accounting;
            let digest = match &h.digest_received {
                Some(d) if *d == h.digest_sent => format!("{d} ✓"),
                Some(d) => format!("{d} ≠ sent {}", h.digest_sent),
                None => "—".into(),
            };
            let restart = if h.restart_latency.count > 0 {
                format!(
                    "{} / {}",
                    fmt_us(h.restart_latency.p50),
                    fmt_us(h.restart_latency.max)
                )
            } else {
                "—".into()
            };
            t.rows.push(vec![
                h.label.clone(),
                p.label.clone(),
                fmt_us(h.latency.queue_wait.p99),
                fmt_us(h.latency.service.p99),
                format!(
                    "{} / {}",
                    fmt_us(h.latency.sleep_overshoot.p50),
                    fmt_us(h.latency.sleep_overshoot.p99)
                ),
                format!("{} / {}", fmt_us(h.lateness.p50), fmt_us(h.lateness.p99)),
                restart,
                a.sent.to_string(),
                a.completed.to_string(),
                a.crashed.to_string(),
                a.timed_out.to_string(),
                a.shed.to_string(),
                a.cancelled.to_string(),
                a.unreleased.to_string(),
                if a.balances() { "yes" } else { "NO" }.into(),
                digest,
            ]);
            t.bad.push(!h.status.checked());
        }
    }
    t
}

/// Per host and profile: faults, recovery and restarts (only when a fault
/// was injected).
fn faults_table(r: &RunResult) -> Option<Table> {
    if r.profiles
        .iter()
        .any(|p| p.hosts.iter().any(|h| h.recovery.faults > 0))
    {
        let mut t = Table::new(
            "Faults and recovery",
            &[
                "host",
                "profile",
                "fault events",
                "recovered",
                "recovery p50",
                "recovery max",
                "no measurable dip",
                "not recovered",
                "no baseline",
                "restarts",
                "restart p50 / max",
            ],
            &[2, 3, 4, 5, 6, 7, 8, 9, 10],
        );
        t.note = Some(format!(
            "Recovery interval: fault → the end of the dent in the completion rate, resolved to 10 ms: where the jobs missing against the baseline (the median {} ms window of the {} ms before the fault) stopped growing, once a window is back within {:.0}% of it. A fault after which the missing jobs never exceeded that share of a window made no measurable dip. Restart latency: crash → the replacement worker picks up its next job.",
            r.scenario.recovery.window_ms,
            r.scenario.recovery.baseline_ms,
            r.scenario.recovery.band * 100.0
        ));
        for p in &r.profiles {
            for h in &p.hosts {
                let rv = &h.recovery;
                t.rows.push(vec![
                    h.label.clone(),
                    p.label.clone(),
                    rv.faults.to_string(),
                    rv.interval.count.to_string(),
                    fmt_us(rv.interval.p50),
                    fmt_us(rv.interval.max),
                    rv.no_dip.to_string(),
                    rv.unrecovered.to_string(),
                    rv.no_baseline.to_string(),
                    h.accounting.restarts.to_string(),
                    format!(
                        "{} / {}",
                        fmt_us(h.restart_latency.p50),
                        fmt_us(h.restart_latency.max)
                    ),
                ]);
            }
        }
        Some(t)
    } else {
        None
    }
}

/// Per host, profile and class: completion latency (only with several
/// classes).
fn class_table(r: &RunResult) -> Option<Table> {
    if r.profiles
        .iter()
        .any(|p| p.hosts.iter().any(|h| h.classes.len() > 1))
    {
        let mut t = Table::new(
            "Per class (completion latency)",
            &["host", "profile", "class", "jobs", "p50", "p99", "max"],
            &[3, 4, 5, 6],
        );
        for p in &r.profiles {
            for h in &p.hosts {
                for c in &h.classes {
                    let l = &c.latency.completion;
                    t.rows.push(vec![
                        h.label.clone(),
                        p.label.clone(),
                        c.class.clone(),
                        l.count.to_string(),
                        fmt_us(l.p50),
                        fmt_us(l.p99),
                        fmt_us(l.max),
                    ]);
                }
            }
        }
        Some(t)
    } else {
        None
    }
}

/// A table cell made safe for Markdown: `|` escaped, line breaks flattened.
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// report.md: the run's facts, the comparison table and the findings.
pub fn markdown(r: &RunResult) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# cwbench run {}\n", md_cell(&r.run_id));
    let _ = writeln!(md, "{}\n", run_facts(r));
    if !r.scenario.description.is_empty() {
        let _ = writeln!(md, "> {}\n", r.scenario.description);
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(md, "## Warnings\n");
        for w in &r.warnings {
            let _ = writeln!(md, "- {}", md_cell(w));
        }
        md.push('\n');
    }
    for t in tables(r) {
        let _ = writeln!(md, "## {}\n", t.title);
        match t.fold {
            None => {}
            Some(f) => {
                let _ = writeln!(
                    md,
                    "<details{}><summary>{} rows</summary>\n",
                    if f == Fold::Open { " open" } else { "" },
                    t.rows.len()
                );
            }
        }
        let _ = writeln!(md, "| {} |", t.header.join(" | "));
        let _ = writeln!(
            md,
            "|{}|",
            t.right
                .iter()
                .map(|&r| if r { " ---: " } else { " --- " })
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in &t.rows {
            let cells: Vec<String> = row.iter().map(|c| md_cell(c)).collect();
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        if t.fold.is_some() {
            let _ = writeln!(md, "\n</details>");
        }
        if let Some(n) = &t.note {
            let _ = writeln!(md, "\n{n}");
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Findings\n");
    for f in findings(r) {
        let _ = writeln!(md, "- {f}");
    }
    md
}

/// The highest throughput against the lowest, and the lowest p99, of
/// `items` (groups or hosts), each seen as (name, jobs/s, p99 µs).
fn best_and_worst<T>(
    profile: &str,
    kind: &str,
    items: &[&T],
    fig: impl Fn(&T) -> (&str, f64, u64),
) -> Vec<String> {
    let mut out = Vec::new();
    let figs: Vec<(&str, f64, u64)> = items.iter().map(|i| fig(i)).collect();
    if figs.len() < 2 {
        return out;
    }
    let best = figs.iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("two");
    let worst = figs.iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("two");
    if worst.1 > 0.0 {
        out.push(format!(
            "[{profile}] {kind} {} has the highest throughput ({} jobs/s), {:.2}× {kind} {} ({} jobs/s).",
            best.0,
            fmt_rate(best.1),
            best.1 / worst.1,
            worst.0,
            fmt_rate(worst.1)
        ));
    }
    let tail = figs.iter().min_by_key(|x| x.2).expect("two");
    out.push(format!(
        "[{profile}] lowest p99 completion latency: {kind} {} ({}).",
        tail.0,
        fmt_us(tail.2)
    ));
    out
}

/// Sleep overshoot: per host when one slept, its range across the hosts
/// otherwise (one line whatever the fleet's size).
fn overshoot(p: &ProfileResult) -> Option<String> {
    let slept: Vec<&HostResult> = p
        .hosts
        .iter()
        .filter(|h| h.latency.sleep_overshoot.count > 0)
        .collect();
    let why = "timer granularity counts in every sleeping job's latency";
    match slept.as_slice() {
        [] => None,
        [h] => Some(format!(
            "[{}] {}: sleeps overshot their request by {} at p50 and {} at p99 ({why}).",
            p.label,
            h.label,
            fmt_us(h.latency.sleep_overshoot.p50),
            fmt_us(h.latency.sleep_overshoot.p99)
        )),
        many => {
            let range = |q: fn(&Summary) -> u64| {
                let v = many.iter().map(|h| q(&h.latency.sleep_overshoot));
                let (lo, hi) = (v.clone().min().unwrap_or(0), v.max().unwrap_or(0));
                if lo == hi {
                    fmt_us(lo)
                } else {
                    format!("{}–{}", fmt_us(lo), fmt_us(hi))
                }
            };
            Some(format!(
                "[{}] sleeps overshot their request by {} at p50 and {} at p99 across {} hosts ({why}).",
                p.label,
                range(|s| s.p50),
                range(|s| s.p99),
                many.len()
            ))
        }
    }
}

/// Plain statements drawn from the numbers.
pub fn findings(r: &RunResult) -> Vec<String> {
    let mut f = Vec::new();
    for p in &r.profiles {
        let merged: Vec<&GroupResult> = p.groups.iter().filter(|g| g.hosts_ok > 0).collect();
        if merged.len() >= 2 {
            f.extend(best_and_worst(&p.label, "group", &merged, |g| {
                (g.name.as_str(), g.throughput, g.completion.p99)
            }));
        } else {
            let ok: Vec<&HostResult> = p.hosts.iter().filter(|h| h.status.checked()).collect();
            f.extend(best_and_worst(&p.label, "host", &ok, |h| {
                (h.label.as_str(), h.throughput, h.latency.completion.p99)
            }));
        }
        for g in &p.groups {
            match g.outliers.as_slice() {
                [] => {}
                few @ ([_] | [_, _] | [_, _, _]) => f.extend(few.iter().map(|o| {
                    format!(
                        "[{}] group {}: {} stands out from its group.",
                        p.label,
                        g.name,
                        outlier_text(o)
                    )
                })),
                many => f.push(format!(
                    "[{}] group {}: {} of its {} hosts stand out from it (table Outlier hosts).",
                    p.label,
                    g.name,
                    many.len(),
                    g.hosts.len()
                )),
            }
        }
        f.extend(overshoot(p));
    }
    for d in r.scaling.iter().filter(|d| d.numeric) {
        for s in &d.series {
            let (first, last) = (&s.points[0], &s.points[s.points.len() - 1]);
            let eff = last
                .efficiency
                .map_or_else(String::new, |e| format!(", efficiency {:.0}%", e * 100.0));
            f.push(format!(
                "{} {} → {}{}: {:.2}× the throughput{eff}, p99 {} → {}.",
                d.name,
                first.value,
                last.value,
                if s.fixed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.fixed)
                },
                last.speedup,
                fmt_us(first.p99_us),
                fmt_us(last.p99_us)
            ));
        }
    }
    let digests: std::collections::BTreeSet<&str> = r
        .profiles
        .iter()
        .flat_map(|p| p.hosts.iter().filter_map(|h| h.digest_received.as_deref()))
        .collect();
    let timed = r.sizing.is_some_and(|z| z.timed());
    if timed {
        // Each agent stopped at its own time: equal digests are not expected,
        // only that each host got exactly what was sent to it.
        let runs: Vec<String> = r
            .profiles
            .iter()
            .flat_map(|p| p.hosts.iter())
            .map(|h| {
                let a = &h.accounting;
                format!(
                    "{} {}",
                    h.label,
                    a.received.saturating_sub(a.unreleased + a.cancelled)
                )
            })
            .collect();
        let verified = r
            .profiles
            .iter()
            .flat_map(|p| p.hosts.iter())
            .all(|h| h.digest_received.as_deref() == Some(h.digest_sent.as_str()));
        f.push(format!(
            "Timed run: each host released jobs until its measured part was over, so each ran a prefix of the one job stream, as long as it managed (jobs released: {}){}.",
            runs.join(", "),
            if verified {
                "; every host's digest matches what was sent to it"
            } else {
                ""
            }
        ));
    } else if r.scenario.run.distribution == cwbench::scenario::Distribution::Replicate {
        match digests.len() {
            0 => {}
            1 => f.push(format!(
                "Every host ran the identical job stream (digest {}).",
                digests.iter().next().expect("one")
            )),
            _ => f.push("Hosts ran different job streams: the comparison is not valid.".into()),
        }
    }
    f
}
