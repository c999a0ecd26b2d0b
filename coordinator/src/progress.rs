//! Live progress on stderr: indicatif bars on a terminal (a total bar and
//! one bar per host, at most `MAX_HOST_BARS` of them: the hosts furthest
//! behind), plain log lines otherwise, nothing with `--quiet`. Log lines
//! written through `log_writer` appear above the bars.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::{Arc, LazyLock, Mutex};

use cwbench::histogram::{merge_encoded, new_hist};
use cwbench::proto::Snapshot;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tracing_indicatif::IndicatifWriter;

use crate::observer::Progress;
use crate::report::{fmt_rate, fmt_us};

/// Host bars shown at most; with more hosts, the ones with the fewest jobs
/// done get the bars and the total bar counts every host.
pub const MAX_HOST_BARS: usize = 8;

/// The bars of this process: one set, shared by the progress reporter and
/// the log writer.
static BARS: LazyLock<MultiProgress> = LazyLock::new(MultiProgress::new);

/// A writer for the tracing subscriber: each log line is written with the
/// bars cleared, then the bars are drawn again below it.
pub fn log_writer() -> IndicatifWriter {
    IndicatifWriter::new(BARS.clone())
}

/// Prints a line on stderr above the bars (as is, off a terminal).
pub fn eprintln_above(line: &str) {
    BARS.suspend(|| eprintln!("{line}"));
}

/// One host's figures from its latest snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostState {
    pub host: String,
    pub seq: u64,
    /// Measured completions so far (the rate is the difference).
    pub measured: u64,
    /// Jobs finished in any way: completed, crashed, timed out, shed, cancelled.
    pub done: u64,
    pub elapsed_s: f64,
    /// Measured completions per second in the last interval.
    pub rate: f64,
    /// Completion p99 of the last interval, µs (None: no completion).
    pub p99: Option<u64>,
    pub queue: u64,
}

impl HostState {
    /// The state after snapshot `s`, whose host had `prev_measured`
    /// measured completions at its previous snapshot.
    pub fn of(host: &str, s: &Snapshot, prev_measured: u64) -> Self {
        let c = s.counters.unwrap_or_default();
        let secs = s.interval_us as f64 / 1e6;
        let rate = if secs > 0.0 {
            c.measured_completed.saturating_sub(prev_measured) as f64 / secs
        } else {
            0.0
        };
        let mut h = new_hist();
        for k in &s.classes {
            let _ = merge_encoded(&mut h, &k.completion);
        }
        Self {
            host: host.to_string(),
            seq: s.seq,
            measured: c.measured_completed,
            done: c.completed + c.crashed + c.timed_out + c.shed + c.cancelled,
            elapsed_s: s.elapsed_us as f64 / 1e6,
            rate,
            p99: (!h.is_empty()).then(|| h.value_at_quantile(0.99)),
            queue: s.gauges.map_or(0, |g| g.queue_depth),
        }
    }

    /// `t=1.0s done 500 of 1000 (50%), 500 jobs/s, p99 2.0ms, queue 3`
    /// (`total` 0: unknown, no "of").
    pub fn text(&self, total: u64) -> String {
        let mut l = format!("t={:.1}s done {}", self.elapsed_s, self.done);
        if total > 0 {
            let _ = write!(l, " of {total} ({:.0}%)", percent(self.done, total));
        }
        let p99 = self.p99.map_or_else(|| "—".to_string(), fmt_us);
        let _ = write!(
            l,
            ", {} jobs/s, p99 {p99}, queue {}",
            fmt_rate(self.rate),
            self.queue
        );
        l
    }
}

fn percent(done: u64, total: u64) -> f64 {
    (done as f64 / total as f64 * 100.0).min(100.0)
}

/// One host's plain progress line (stderr not a terminal).
pub fn plain_line(h: &HostState, total: u64) -> String {
    format!("  {}: {}", h.host, h.text(total))
}

/// Which hosts get a bar: all when they fit in `cap`, else the `cap` with
/// the fewest jobs done (the first to arrive among equals), in arrival
/// order so that a bar does not jump about.
pub fn shown(hosts: &[HostState], cap: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..hosts.len()).collect();
    if hosts.len() > cap {
        idx.sort_by_key(|&i| (hosts[i].done, i));
        idx.truncate(cap);
        idx.sort_unstable();
    }
    idx
}

/// The total bar's text: every host's jobs and rate summed, and how many
/// hosts have no bar.
pub fn total_text(hosts: &[HostState], total: u64, bars: usize) -> String {
    let done: u64 = hosts.iter().map(|h| h.done).sum();
    let rate: f64 = hosts.iter().map(|h| h.rate).sum();
    let mut l = format!("{} hosts: done {done}", hosts.len());
    if total > 0 {
        let all = total * hosts.len() as u64;
        let _ = write!(l, " of {all} ({:.0}%)", percent(done, all));
    }
    let _ = write!(l, ", {} jobs/s", fmt_rate(rate));
    if bars < hosts.len() {
        let _ = write!(
            l,
            "; bars for the {bars} furthest behind, {} more not shown",
            hosts.len() - bars
        );
    }
    l
}

/// Every host's latest state, in arrival order.
#[derive(Default)]
struct Hosts(Vec<HostState>);

impl Hosts {
    /// Records snapshot `s` of `host`, returning its index. A host starting
    /// over (the next profile) starts a new set.
    fn record(&mut self, host: &str, s: &Snapshot) -> usize {
        let known = self.0.iter().position(|h| h.host == host);
        if known.is_some_and(|i| s.seq <= self.0[i].seq) {
            self.0.clear();
        }
        match self.0.iter().position(|h| h.host == host) {
            Some(i) => {
                self.0[i] = HostState::of(host, s, self.0[i].measured);
                i
            }
            None => {
                self.0.push(HostState::of(host, s, 0));
                self.0.len() - 1
            }
        }
    }
}

/// The bars on a terminal: host bars added as hosts appear (up to the cap)
/// and reused by whichever hosts are shown; the total bar above them once
/// there are two hosts.
struct Bars {
    total: u64,
    hosts: Hosts,
    host_bars: Vec<ProgressBar>,
    total_bar: Option<ProgressBar>,
}

impl Bars {
    fn new(total: u64) -> Self {
        Self {
            total,
            hosts: Hosts::default(),
            host_bars: Vec::new(),
            total_bar: None,
        }
    }

    fn update(&mut self, host: &str, s: &Snapshot) {
        self.hosts.record(host, s);
        let hosts = &self.hosts.0;
        let shown = shown(hosts, MAX_HOST_BARS);
        while self.host_bars.len() < shown.len() {
            let bar = BARS.add(ProgressBar::new(self.total).with_style(style(self.total)));
            self.host_bars.push(bar);
        }
        let width = shown
            .iter()
            .map(|&i| hosts[i].host.len())
            .max()
            .unwrap_or(0);
        for (bar, &i) in self.host_bars.iter().zip(&shown) {
            let h = &hosts[i];
            bar.set_message(h.text(self.total));
            bar.set_prefix(format!("{:>width$}", h.host));
            bar.set_position(h.done);
        }
        if hosts.len() > 1 {
            let bar = self.total_bar.get_or_insert_with(|| {
                let all = self.total * hosts.len() as u64;
                BARS.insert(0, ProgressBar::new(all).with_style(style(all)))
            });
            bar.set_message(total_text(hosts, self.total, shown.len()));
            bar.set_prefix(format!("{:>width$}", "all"));
            bar.set_length(self.total * hosts.len() as u64);
            bar.set_position(hosts.iter().map(|h| h.done).sum());
        }
    }
}

/// A bar with the text after it; without a known total, the text alone.
fn style(total: u64) -> ProgressStyle {
    let template = if total > 0 {
        "{prefix} [{bar:24}] {msg}"
    } else {
        "{prefix} {msg}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The progress callback for a run with `total` jobs per host (0 =
/// unknown): bars on a terminal, log lines otherwise.
pub fn reporter(total: u64) -> Progress {
    if std::io::stderr().is_terminal() {
        let bars = Mutex::new(Bars::new(total));
        Arc::new(move |host: &str, s: &Snapshot| {
            if let Ok(mut b) = bars.lock() {
                b.update(host, s);
            }
        })
    } else {
        let hosts = Mutex::new(Hosts::default());
        Arc::new(move |host: &str, s: &Snapshot| {
            let Ok(mut hs) = hosts.lock() else { return };
            let i = hs.record(host, s);
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{}", plain_line(&hs.0[i], total));
            let _ = err.flush();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwbench::proto::{Counters, Gauges};

    fn snap(seq: u64, completed: u64, measured: u64) -> Snapshot {
        Snapshot {
            seq,
            elapsed_us: seq * 1_000_000,
            interval_us: 1_000_000,
            counters: Some(Counters {
                completed,
                measured_completed: measured,
                crashed: 2,
                ..Default::default()
            }),
            gauges: Some(Gauges {
                queue_depth: 7,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The plain lines (stderr not a terminal) keep their format.
    #[test]
    fn plain_lines() {
        let h = HostState::of("local-1", &snap(2, 498, 400), 100);
        assert_eq!(
            plain_line(&h, 1000),
            "  local-1: t=2.0s done 500 of 1000 (50%), 300 jobs/s, p99 —, queue 7"
        );
        let h = HostState::of("h", &snap(1, 23_998, 20_000), 0);
        assert_eq!(
            plain_line(&h, 0),
            "  h: t=1.0s done 24000, 20.0k jobs/s, p99 —, queue 7"
        );
    }

    /// The rate is per host, and a host starting over (the next profile)
    /// starts a new set.
    #[test]
    fn hosts_are_tracked_per_profile() {
        let mut hs = Hosts::default();
        assert_eq!(hs.record("a", &snap(1, 98, 100)), 0);
        assert_eq!(hs.record("b", &snap(1, 98, 100)), 1);
        assert_eq!(hs.record("a", &snap(2, 298, 300)), 0);
        assert_eq!(hs.0[0].rate, 200.0);
        assert_eq!(hs.record("a", &snap(1, 8, 10)), 0);
        assert_eq!(hs.0.len(), 1);
        assert_eq!(hs.0[0].rate, 10.0);
    }

    fn hosts(done: &[u64]) -> Vec<HostState> {
        done.iter()
            .enumerate()
            .map(|(i, &done)| HostState {
                host: format!("h{i}"),
                done,
                rate: 10.0,
                ..Default::default()
            })
            .collect()
    }

    /// `--help` states the cap this module applies.
    #[test]
    fn the_help_states_the_cap() {
        use clap::CommandFactory;
        let help = crate::cli::Cli::command().render_long_help().to_string();
        assert!(
            help.contains(&format!("up to {MAX_HOST_BARS} hosts")),
            "{help}"
        );
    }

    #[test]
    fn few_hosts_all_get_bars() {
        assert_eq!(shown(&hosts(&[5, 1, 3]), MAX_HOST_BARS), [0, 1, 2]);
        assert_eq!(shown(&[], MAX_HOST_BARS), Vec::<usize>::new());
    }

    /// 256 hosts: the 8 with the fewest jobs done, in arrival order.
    #[test]
    fn many_hosts_show_the_ones_furthest_behind() {
        let mut done: Vec<u64> = (0..256).map(|i| 1000 + i).collect();
        for (i, d) in [(200, 5), (3, 9), (77, 1), (150, 9), (10, 2)] {
            done[i] = d;
        }
        let hs = hosts(&done);
        let s = shown(&hs, MAX_HOST_BARS);
        assert_eq!(s, [0, 1, 2, 3, 10, 77, 150, 200]);
        assert_eq!(
            total_text(&hs, 2000, s.len()),
            format!(
                "256 hosts: done {} of 512000 ({:.0}%), 2560 jobs/s; bars for the 8 furthest behind, 248 more not shown",
                done.iter().sum::<u64>(),
                done.iter().sum::<u64>() as f64 / 5120.0
            )
        );
        assert_eq!(
            total_text(&hosts(&[1, 2]), 0, 2),
            "2 hosts: done 3, 20 jobs/s"
        );
    }
}
