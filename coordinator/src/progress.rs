//! Live progress on stderr: one line per host redrawn in place on a
//! terminal, plain log lines otherwise (nothing with `--quiet`).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::{Arc, Mutex};

use cwbench::histogram::{merge_encoded, new_hist};
use cwbench::proto::Snapshot;

use crate::driver::Progress;
use crate::report::{fmt_rate, fmt_us};

#[derive(Default)]
struct Board {
    /// Host -> (last seq, last measured count, its line), in arrival order.
    hosts: Vec<(String, u64, u64, String)>,
    /// Lines of the block drawn last (to move the cursor back over).
    drawn: usize,
}

/// One host's progress line of a snapshot.
pub fn line(host: &str, s: &Snapshot, total: u64, prev_measured: u64) -> String {
    let c = s.counters.unwrap_or_default();
    let done = c.completed + c.crashed + c.timed_out + c.shed + c.cancelled;
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
    let p99 = if h.is_empty() {
        "—".to_string()
    } else {
        fmt_us(h.value_at_quantile(0.99))
    };
    let mut l = format!("  {host}: t={:.1}s done {done}", s.elapsed_us as f64 / 1e6);
    if total > 0 {
        let _ = write!(
            l,
            " of {total} ({:.0}%)",
            (done as f64 / total as f64 * 100.0).min(100.0)
        );
    }
    let _ = write!(
        l,
        ", {} jobs/s, p99 {p99}, queue {}",
        fmt_rate(rate),
        s.gauges.map_or(0, |g| g.queue_depth)
    );
    l
}

/// The progress callback for a run with `total` jobs per host (0 =
/// unknown): in-place lines on a terminal, log lines otherwise.
pub fn reporter(total: u64) -> Progress {
    let tty = std::io::stderr().is_terminal();
    let board = Arc::new(Mutex::new(Board::default()));
    Arc::new(move |host: &str, s: &Snapshot| {
        let Ok(mut b) = board.lock() else { return };
        let known = b.hosts.iter().position(|(h, ..)| h == host);
        // A host starting over (a new profile) starts a new block below.
        if let Some(i) = known
            && s.seq <= b.hosts[i].1
        {
            b.hosts.clear();
            b.drawn = 0;
        }
        let i = match b.hosts.iter().position(|(h, ..)| h == host) {
            Some(i) => i,
            None => {
                b.hosts.push((host.to_string(), 0, 0, String::new()));
                b.hosts.len() - 1
            }
        };
        let l = line(host, s, total, b.hosts[i].2);
        let measured = s.counters.map_or(0, |c| c.measured_completed);
        b.hosts[i] = (host.to_string(), s.seq, measured, l.clone());
        let mut err = std::io::stderr().lock();
        if tty {
            let mut out = String::new();
            if b.drawn > 0 {
                let _ = write!(out, "\x1b[{}A", b.drawn);
            }
            for (.., l) in &b.hosts {
                let _ = writeln!(out, "\r\x1b[2K{l}");
            }
            b.drawn = b.hosts.len();
            let _ = err.write_all(out.as_bytes());
        } else {
            let _ = writeln!(err, "{l}");
        }
        let _ = err.flush();
    })
}
