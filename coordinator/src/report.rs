//! Human-readable output: the comparison table (stdout) and report.md.

use std::fmt::Write as _;

use cwbench::histogram::Summary;

use crate::result::{HostResult, HostStatus, RunResult};

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

fn rows(r: &RunResult) -> Vec<[String; 13]> {
    r.profiles
        .iter()
        .flat_map(|p| p.hosts.iter().map(move |h| row(&p.label, h)))
        .collect()
}

/// The comparison table as aligned plain text (completion latency).
pub fn table(r: &RunResult) -> String {
    let rows = rows(r);
    let mut w = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            // Text left, numbers right.
            if i <= 1 || i == 4 {
                let _ = write!(out, "{c}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "{}{c}", " ".repeat(pad));
            }
            out.push_str(if i + 1 < cells.len() { "  " } else { "\n" });
        }
    };
    line(&HEADER.map(String::from), &mut out);
    for row in &rows {
        line(row, &mut out);
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
}

impl Table {
    fn new(title: &str, header: &[&str], right: &[usize]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            right: (0..header.len()).map(|i| right.contains(&i)).collect(),
            rows: Vec::new(),
            note: None,
        }
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

/// The report's tables, in order: comparison, hosts, breakdown and
/// accounting, and per class when a host ran more than one class.
pub fn tables(r: &RunResult) -> Vec<Table> {
    let mut out = Vec::new();
    let mut t = Table::new(
        "Completion latency and throughput",
        &HEADER,
        &[2, 3, 5, 6, 7, 8, 9, 10, 11, 12],
    );
    t.rows = rows(r).into_iter().map(Vec::from).collect();
    let origin = if r.scenario.arrival.mode == cwbench::scenario::ArrivalMode::Open {
        "completion − intended start, open loop: coordinated omission is counted"
    } else {
        "completion − enqueue attempt, closed loop"
    };
    t.note = Some(format!(
        "Latencies are completion latency ({origin}), measured on each agent's own clock. jobs/s = measured completed jobs ÷ measured window. errors = crashed + timed out + shed + cancelled."
    ));
    out.push(t);

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
                format!("{} {}", h.info.runtime, h.info.agent_version),
            ]);
        }
    }
    out.push(t);

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
        }
    }
    out.push(t);

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
                "not recovered",
                "no baseline",
                "restarts",
                "restart p50 / max",
            ],
            &[2, 3, 4, 5, 6, 7, 8, 9],
        );
        t.note = Some(format!(
            "Recovery interval: fault → completion rate over a {} ms window back within ±{:.0}% of the median window of the {} ms before the fault (the first window wholly after the fault counts, so the window length is the floor). Restart latency: crash → the replacement worker picks up its next job.",
            r.scenario.recovery.window_ms,
            r.scenario.recovery.band * 100.0,
            r.scenario.recovery.baseline_ms
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
        out.push(t);
    }

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
        out.push(t);
    }
    out
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
    for t in tables(r) {
        let _ = writeln!(md, "## {}\n", t.title);
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
        if let Some(n) = &t.note {
            let _ = writeln!(md, "\n{n}");
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Findings\n");
    for f in findings(r) {
        let _ = writeln!(md, "- {f}");
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(md, "\n## Warnings\n");
        for w in &r.warnings {
            let _ = writeln!(md, "- {}", w.replace(['\n', '\r'], " "));
        }
    }
    md
}

/// Plain statements drawn from the numbers.
pub fn findings(r: &RunResult) -> Vec<String> {
    let mut f = Vec::new();
    for p in &r.profiles {
        let ok: Vec<&HostResult> = p
            .hosts
            .iter()
            .filter(|h| h.status == HostStatus::Ok)
            .collect();
        if ok.len() >= 2 {
            let best = ok
                .iter()
                .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
                .expect("non-empty");
            let worst = ok
                .iter()
                .min_by(|a, b| a.throughput.total_cmp(&b.throughput))
                .expect("non-empty");
            if worst.throughput > 0.0 {
                f.push(format!(
                    "[{}] {} has the highest throughput ({} jobs/s), {:.2}× {} ({} jobs/s).",
                    p.label,
                    best.label,
                    fmt_rate(best.throughput),
                    best.throughput / worst.throughput,
                    worst.label,
                    fmt_rate(worst.throughput)
                ));
            }
            let tail = ok
                .iter()
                .min_by_key(|h| h.latency.completion.p99)
                .expect("non-empty");
            f.push(format!(
                "[{}] lowest p99 completion latency: {} ({}).",
                p.label,
                tail.label,
                fmt_us(tail.latency.completion.p99)
            ));
        }
        for h in &p.hosts {
            let o = &h.latency.sleep_overshoot;
            if o.count > 0 {
                f.push(format!(
                    "[{}] {}: sleeps overshot their request by {} at p50 and {} at p99 (timer granularity counts in every sleeping job's latency).",
                    p.label,
                    h.label,
                    fmt_us(o.p50),
                    fmt_us(o.p99)
                ));
            }
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
