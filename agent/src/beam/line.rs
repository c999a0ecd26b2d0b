//! The line protocol between the agent and the VM (docs/workload.md, "Other runtimes"): the header that gives the VM its plan, and the lines it sends back.

use crate::engine::Config;

/// Version of the line protocol (the header's second word).
pub const PROTOCOL: u32 = 2;

/// Version of the server mode's protocol (`cwbench-beam-ws` header).
pub const SERVER_PROTOCOL: u32 = 1;

/// Longest line the VM may send; a longer one is a protocol error.
pub(crate) const MAX_LINE: u64 = 4096;

/// One line from the VM (docs/workload.md, "Other runtimes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The VM's time zero; in server mode, the port it listens on.
    Ready {
        schedulers: u64,
        port: Option<u16>,
    },
    /// Jobs released from the VM's buffer into its bounded queue.
    Credit(u64),
    /// One finished job.
    Job(Record),
    /// One wake of the lateness probe, µs late.
    Late(u64),
    /// The supervisor restarted worker `idx`.
    Restart(u64),
    /// A restarted worker picked up its first job this long after the crash.
    RestartLatency(u64),
    Gauge {
        queue: u64,
        in_flight: u64,
        processes: u64,
        run_queue: u64,
        busy_us: u64,
    },
    /// The restart intensity was exceeded.
    Failed(String),
    /// A timed run: its measured part starts at this µs (VM clock).
    MeasureFrom(u64),
    /// A timed run: the measured part is over; nothing more is released.
    Stopped,
    End {
        digest: u64,
        jobs: u64,
        cancelled: u64,
        /// Jobs a timed run received but never released.
        unreleased: u64,
    },
    Error(String),
    /// Server mode: one task read, and how it ended.
    Task(TaskRecord),
    /// Server mode: open connections now, connections dropped so far.
    Conns {
        open: u64,
        dropped: u64,
    },
}

/// Server mode: a task's fields, its outcome (0 completed, 1 crashed, 2
/// timed out, 3 refused, 4 cancelled) and its times, µs since READY on the
/// VM's clock: read, started, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskRecord {
    pub job: cwbench::generator::Job,
    pub outcome: u32,
    pub read: u64,
    pub pickup: u64,
    pub end: u64,
}

/// A job's timestamps: µs since READY on the VM's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub class: u32,
    /// 0 completed, 1 crashed, 2 timed out.
    pub outcome: u32,
    pub origin: u64,
    pub release: u64,
    pub pickup: u64,
    pub end: u64,
    pub sleep_req: u64,
    pub sleep_act: u64,
}

/// Parses one line from the VM.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let bad = || format!("malformed line from the BEAM: {line:?}");
    let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
    let nums = || -> Result<Vec<u64>, String> {
        rest.split(' ')
            .map(|f| f.parse::<u64>().map_err(|_| bad()))
            .collect()
    };
    let one = || -> Result<u64, String> {
        match nums()?.as_slice() {
            [v] => Ok(*v),
            _ => Err(bad()),
        }
    };
    let parsed = match tag {
        "READY" => ready(rest),
        "K" => Some(Line::Credit(one()?)),
        "L" => Some(Line::Late(one()?)),
        "S" => Some(Line::Restart(one()?)),
        "R" => Some(Line::RestartLatency(one()?)),
        "D" => job(&nums()?),
        "G" => match nums()?.as_slice() {
            &[queue, in_flight, processes, run_queue, busy_us] => Some(Line::Gauge {
                queue,
                in_flight,
                processes,
                run_queue,
                busy_us,
            }),
            _ => None,
        },
        "T" => task(&nums()?),
        "W" => match nums()?.as_slice() {
            &[open, dropped] => Some(Line::Conns { open, dropped }),
            _ => None,
        },
        "F" => Some(Line::Failed(rest.to_string())),
        "M" => Some(Line::MeasureFrom(one()?)),
        "X" if rest.is_empty() => Some(Line::Stopped),
        "ERR" => Some(Line::Error(rest.to_string())),
        "END" => end(rest),
        _ => None,
    };
    parsed.ok_or_else(bad)
}

/// `READY otp=.. schedulers=N [port=P]`.
fn ready(rest: &str) -> Option<Line> {
    let field = |k: &str| rest.split(' ').find_map(|kv| kv.strip_prefix(k));
    let schedulers = field("schedulers=")?.parse().ok()?;
    let port = match field("port=") {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some(Line::Ready { schedulers, port })
}

/// `D id class outcome origin release pickup end sleep_req sleep_act`.
fn job(f: &[u64]) -> Option<Line> {
    let &[
        id,
        class,
        outcome,
        origin,
        release,
        pickup,
        end,
        sleep_req,
        sleep_act,
    ] = f
    else {
        return None;
    };
    (outcome <= 2).then_some(())?;
    Some(Line::Job(Record {
        id,
        class: u32::try_from(class).ok()?,
        outcome: outcome as u32,
        origin,
        release,
        pickup,
        end,
        sleep_req,
        sleep_act,
    }))
}

/// `T id class work_units sleep_us crash intended_us outcome read pickup end`.
fn task(f: &[u64]) -> Option<Line> {
    let &[
        id,
        class,
        work_units,
        sleep_us,
        crash,
        intended_us,
        outcome,
        read,
        pickup,
        end,
    ] = f
    else {
        return None;
    };
    (outcome <= 4 && crash <= 1).then_some(())?;
    Some(Line::Task(TaskRecord {
        job: cwbench::generator::Job {
            id,
            class: u32::try_from(class).ok()?,
            work_units: u32::try_from(work_units).ok()?,
            sleep_us: u32::try_from(sleep_us).ok()?,
            crash: crash == 1,
            intended_us,
        },
        outcome: outcome as u32,
        read,
        pickup,
        end,
    }))
}

/// `END digest-hex jobs cancelled unreleased`.
fn end(rest: &str) -> Option<Line> {
    let mut f = rest.split(' ');
    let digest = f
        .next()
        .filter(|h| h.len() == 16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())?;
    let mut n = || f.next().and_then(|v| v.parse::<u64>().ok());
    let (jobs, cancelled, unreleased) = (n()?, n()?, n()?);
    if f.next().is_some() {
        return None;
    }
    Some(Line::End {
        digest,
        jobs,
        cancelled,
        unreleased,
    })
}

/// The header line: the plan the VM needs.
pub fn header(cfg: &Config) -> String {
    let mut kill: Vec<u64> = cfg.kill_jobs.iter().copied().collect();
    kill.sort_unstable();
    let kill: Vec<String> = kill.iter().map(u64::to_string).collect();
    use crate::span::{End, Warmup};
    let (warmup_jobs, warmup_us) = match cfg.warmup {
        Warmup::Jobs(n) => (n, 0),
        // At least 1 µs: 0 means "by id".
        Warmup::For(d) => (0, (d.as_micros() as u64).max(1)),
    };
    let (end_us, end_jobs) = match cfg.end {
        End::Fed => (0, 0),
        End::After(d) => ((d.as_micros() as u64).max(1), 0),
        // End::Jobs(0) cannot pass validation (jobs >= 1).
        End::Jobs(n) => (0, n),
    };
    format!(
        "cwbench-beam {PROTOCOL} workers={} bound={} open={} max_restarts={} restart_window_ms={} backoff_ms={} max_backoff_ms={} probe_us={} timeout_ms={} gauge_ms=100 warmup_jobs={warmup_jobs} warmup_us={warmup_us} end_us={end_us} end_jobs={end_jobs} kill={}\n",
        cfg.workers,
        cfg.queue_bound,
        u8::from(cfg.open),
        cfg.max_restarts,
        cfg.restart_window.as_millis(),
        cfg.backoff.as_millis(),
        cfg.max_backoff.as_millis(),
        cfg.probe_interval.as_micros(),
        cfg.job_timeout.map_or(0, |t| t.as_millis()),
        kill.join(",")
    )
}

/// The server mode's header: what the VM serves, and how.
pub fn server_header(cfg: &Config, ws: &cwbench::proto::WebSocket) -> String {
    format!(
        "cwbench-beam-ws {SERVER_PROTOCOL} port={} in_flight={} max_message={} classes={} timeout_ms={} probe_us={} gauge_ms=100\n",
        ws.port,
        ws.in_flight,
        match ws.max_message {
            0 => crate::ws::DEFAULT_MAX_MESSAGE as u32,
            n => n,
        },
        cfg.classes,
        cfg.job_timeout.map_or(0, |t| t.as_millis()),
        cfg.probe_interval.as_micros(),
    )
}
