//! The BEAM as a workload runtime: the agent starts an Erlang VM as a child
//! process (runtimes/beam/, embedded and compiled with `erlc` on first use),
//! streams it the jobs over the line protocol of docs/workload.md ("Other
//! runtimes") within the VM's credit, and feeds the per-job records it sends
//! back (timed on the VM's own monotonic clock) into the same recorder as the
//! tokio path, so snapshots, recovery and Done need no special case.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cwbench::digest::Digest;
use cwbench::generator::Job;
use cwbench::proto;
use parking_lot::Mutex;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::buffers::Buffers;
use crate::engine::{Config, Outcome, Parts, Probe, Workload};
use crate::recorder::{Recorder, Timing};

/// The Erlang sources, compiled into the agent so it runs from anywhere.
pub const SOURCES: [(&str, &str); 3] = [
    (
        "cwbench_beam.erl",
        include_str!("../../runtimes/beam/cwbench_beam.erl"),
    ),
    (
        "cwbench_beam_sup.erl",
        include_str!("../../runtimes/beam/cwbench_beam_sup.erl"),
    ),
    (
        "cwbench_beam_worker.erl",
        include_str!("../../runtimes/beam/cwbench_beam_worker.erl"),
    ),
];

/// What to tell a user whose machine has no Erlang.
pub const INSTALL_HINT: &str =
    "install Erlang/OTP to run runtime = \"beam\" (Debian/Ubuntu: apt-get install erlang-nox)";

/// Version of the line protocol (the header's second word).
pub const PROTOCOL: u32 = 2;

/// Longest line the VM may send; a longer one is a protocol error.
const MAX_LINE: u64 = 4096;

/// How long a cancelled VM may take to answer END before it is killed.
const CANCEL_GRACE: Duration = Duration::from_millis(1000);

/// None when the BEAM can run here; otherwise why not and how to fix it.
pub fn unavailable_reason() -> Option<String> {
    for tool in ["erl", "erlc"] {
        if find_in_path(tool).is_none() {
            return Some(format!("`{tool}` is not in PATH: {INSTALL_HINT}"));
        }
    }
    None
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    find_in(&std::env::var_os("PATH")?, tool)
}

fn find_in(path: &std::ffi::OsStr, tool: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The compiled modules: built once per version of the sources, Erlang
/// installation and user in `$TMPDIR/cwbench-beam-<uid>-<hash>` (private to
/// the user), or, if that cannot be trusted, once per agent process and
/// version in a directory of its own. Only success is remembered: a failed
/// `erlc` (a full disk, say) is retried by the next run, and an Erlang
/// upgraded under a running agent is noticed.
fn compiled_dir() -> Result<PathBuf, String> {
    static OWN: Mutex<Option<(u64, PathBuf)>> = Mutex::new(None);
    // FNV-1a over the sources and the Erlang installation: new sources or
    // another (upgraded, downgraded) OTP, new directory — a .beam file
    // from a newer compiler may not load in an older VM.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, text) in SOURCES {
        for b in name.bytes().chain(text.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    for b in installation_id().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let uid = std::fs::metadata("/proc/self").ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let shared = uid.map(|u| {
        (
            u,
            std::env::temp_dir().join(format!("cwbench-beam-{u}-{h:016x}")),
        )
    });
    if let Some((u, cache)) = &shared
        && trusted(cache, *u)
    {
        return Ok(cache.clone());
    }
    let mut own = OWN.lock();
    if let Some((oh, dir)) = own.as_ref()
        && *oh == h
        && uid.is_none_or(|u| trusted(dir, u))
    {
        return Ok(dir.clone());
    }
    let fresh = compile()?;
    if let Some((u, cache)) = &shared {
        if std::fs::rename(&fresh, cache).is_ok() && trusted(cache, *u) {
            return Ok(cache.clone());
        }
        // Another agent won the race (use its copy if sound) or the name
        // is taken by someone else: keep ours.
        if trusted(cache, *u) {
            let _ = std::fs::remove_dir_all(&fresh);
            return Ok(cache.clone());
        }
    }
    *own = Some((h, fresh.clone()));
    Ok(fresh)
}

/// Where `erl` and `erlc` resolve to, with their size and modification
/// time: changes when Erlang is installed, upgraded or switched (e.g. by a
/// version manager), without starting a VM to ask.
fn installation_id() -> String {
    std::env::var_os("PATH").map_or_else(String::new, |p| installation_id_in(&p))
}

fn installation_id_in(path: &std::ffi::OsStr) -> String {
    let mut id = String::new();
    for tool in ["erl", "erlc"] {
        let Some(p) = find_in(path, tool) else {
            continue;
        };
        let real = std::fs::canonicalize(&p).unwrap_or(p);
        id.push_str(&real.to_string_lossy());
        if let Ok(m) = std::fs::metadata(&real) {
            use std::os::unix::fs::MetadataExt;
            id.push_str(&format!(":{}:{}.{};", m.len(), m.mtime(), m.mtime_nsec()));
        }
    }
    id
}

/// A directory of compiled modules we may load: ours, private, complete.
fn trusted(dir: &std::path::Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    m.is_dir()
        && m.uid() == uid
        && m.mode() & 0o077 == 0
        && SOURCES.iter().all(|(name, _)| {
            std::fs::symlink_metadata(dir.join(name.replace(".erl", ".beam")))
                .is_ok_and(|f| f.is_file() && f.uid() == uid)
        })
}

fn compile() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("cwbench-beam-{}-{nanos:x}", std::process::id()));
    // Fails if it exists: nobody can plant modules for us to load.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for (name, text) in SOURCES {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        files.push(p);
    }
    let out = std::process::Command::new("erlc")
        .arg("-o")
        .arg(&dir)
        .args(&files)
        .output()
        .map_err(|e| format!("cannot run erlc: {e}; {INSTALL_HINT}"))?;
    if !out.status.success() {
        return Err(format!(
            "erlc failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(dir)
}

/// The VM's own figures, from its `G` lines, for the session's gauges.
#[derive(Debug, Default)]
pub struct BeamGauges {
    queue_depth: AtomicU64,
    processes: AtomicU64,
    run_queue: AtomicU64,
    busy_us: AtomicU64,
    schedulers: AtomicU64,
    /// OS process id of the VM (0 before it started and once reaped).
    pid: AtomicU32,
    /// The VM's CPU times and RSS as last read: what the final snapshot,
    /// taken after the VM is gone, reports.
    cpu_user_us: AtomicU64,
    cpu_system_us: AtomicU64,
    rss_bytes: AtomicU64,
}

impl BeamGauges {
    pub fn queue_depth(&self) -> u64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    /// Gauges in the form the tokio path reports them: schedulers as
    /// runtime workers, processes as tasks alive, the run queues as the
    /// global queue, and the VM's RSS and CPU time (the aggregator adds the
    /// agent's own).
    /// Reads the VM's CPU times and RSS while it runs; keeps the last
    /// readings once it is gone (a read of an exited process gives zeros).
    fn refresh(&self) {
        let pid = self.pid.load(Ordering::Relaxed);
        if pid == 0 {
            return;
        }
        let (user, system) = cwbench::sysinfo::cpu_times_us_of(&pid.to_string());
        if user + system > 0 {
            self.cpu_user_us.store(user, Ordering::Relaxed);
            self.cpu_system_us.store(system, Ordering::Relaxed);
        }
        let rss = cwbench::sysinfo::rss_bytes_of(&pid.to_string());
        if rss > 0 {
            self.rss_bytes.store(rss, Ordering::Relaxed);
        }
    }

    pub fn to_proto(&self) -> proto::Gauges {
        self.refresh();
        proto::Gauges {
            queue_depth: self.queue_depth(),
            runtime_workers: self.schedulers.load(Ordering::Relaxed),
            alive_tasks: self.processes.load(Ordering::Relaxed),
            global_queue_depth: self.run_queue.load(Ordering::Relaxed),
            workers_busy_us: self.busy_us.load(Ordering::Relaxed),
            rss_bytes: self.rss_bytes.load(Ordering::Relaxed),
            cpu_user_us: self.cpu_user_us.load(Ordering::Relaxed),
            cpu_system_us: self.cpu_system_us.load(Ordering::Relaxed),
            ..Default::default()
        }
    }
}

impl Probe for BeamGauges {
    fn queue_depth(&self) -> u64 {
        BeamGauges::queue_depth(self)
    }

    fn gauges(&self) -> proto::Gauges {
        self.to_proto()
    }
}

/// Starts a BEAM run: the thread that compiles the modules if needed and
/// owns the VM. Errors say what is missing and how to install it.
pub fn start(cfg: Config) -> Result<Workload, String> {
    if let Some(r) = unavailable_reason() {
        return Err(r);
    }
    let (feed_tx, feed_rx) = mpsc::unbounded_channel();
    let (credit_tx, credit_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    // A timed run's span is decided in the VM (M and X lines) and mirrored
    // here, so the recorder tells measured jobs as for tokio.
    let recorder = Arc::new(Recorder::new(
        1,
        cfg.classes,
        Arc::new(crate::span::Span::new(cfg.warmup, cfg.end)),
        Instant::now(),
        cfg.job_log,
    ));
    let gauges = Arc::new(BeamGauges::default());
    let cancel = CancellationToken::new();
    let (rec, g, c) = (recorder.clone(), gauges.clone(), cancel.clone());
    let thread = std::thread::Builder::new()
        .name("cwbench-beam".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = done_tx.send(Outcome::Internal(format!(
                        "cannot build the BEAM driver's runtime: {e}"
                    )));
                    return;
                }
            };
            let io = Io {
                feed: feed_rx,
                credit: credit_tx,
                rec,
                gauges: g,
                cancel: c,
            };
            // Compiling takes a second or so: here, not on the server's
            // runtime, whose HTTP/2 keepalives must keep being answered.
            let outcome = match compiled_dir() {
                Ok(dir) => rt.block_on(run_vm(cfg, dir, io)),
                Err(e) => Outcome::Internal(format!("cannot build the BEAM modules: {e}")),
            };
            let _ = done_tx.send(outcome);
        })
        .map_err(|e| format!("cannot start the BEAM driver thread: {e}"))?;
    Ok(Workload::from_parts(Parts {
        feed: feed_tx,
        credit: credit_rx,
        finished: done_rx,
        recorder,
        buffers: Arc::new(Buffers::new(0)),
        probe: gauges,
        cancel,
        thread,
    }))
}

/// The driver's connections to the session.
struct Io {
    feed: mpsc::UnboundedReceiver<Vec<Job>>,
    credit: mpsc::UnboundedSender<u64>,
    rec: Arc<Recorder>,
    gauges: Arc<BeamGauges>,
    cancel: CancellationToken,
}

/// Starts the VM, drives it to the end, and makes sure it is gone.
async fn run_vm(cfg: Config, dir: PathBuf, io: Io) -> Outcome {
    let s = cfg.threads.to_string();
    let mut cmd = tokio::process::Command::new("erl");
    cmd.args(["-noshell", "-noinput", "+S", &format!("{s}:{s}"), "-pa"])
        .arg(&dir)
        .args(["-run", "cwbench_beam", "main", "-extra"])
        // Names the VM in `ps`, so a stray one is easy to find.
        .arg(format!("cwbench-agent={}", std::process::id()))
        .env("ERL_CRASH_DUMP_SECONDS", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(cpus) = &cfg.cpus {
        // `--cpus`: a child inherits the CPU set of the thread that starts
        // it, so pinning this (the driver's own) thread pins the VM and
        // every thread it starts.
        if let Err(e) = crate::affinity::pin_current_thread(cpus) {
            return Outcome::Internal(format!("cannot pin to CPUs: {e}"));
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Internal(format!("cannot start erl: {e}; {INSTALL_HINT}")),
    };
    io.gauges
        .pid
        .store(child.id().unwrap_or(0), Ordering::Relaxed);
    let stderr_tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
    if let Some(err) = child.stderr.take() {
        let tail = stderr_tail.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(mut l)) = lines.next_line().await {
                l.truncate(300);
                let mut t = tail.lock();
                if t.len() == 10 {
                    t.pop_front();
                }
                t.push_back(l);
            }
        });
    }
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill().await;
        return Outcome::Internal("erl started without pipes".into());
    };
    let gauges = io.gauges.clone();
    let mut outcome = drive(&cfg, tokio::io::BufReader::new(stdout), stdin, io).await;
    // The last reading of the VM's CPU and memory, before it is reaped (its
    // pid may then be another process's).
    gauges.refresh();
    gauges.pid.store(0, Ordering::Relaxed);
    // After END the VM halts by itself; otherwise (or if it lingers) kill it.
    let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(Ok(st)) => Some(st),
        _ => {
            let _ = child.kill().await;
            None
        }
    };
    if let Outcome::Internal(m) = &mut outcome {
        if let Some(st) = status {
            m.push_str(&format!(" (erl {st})"));
        }
        let tail = stderr_tail.lock();
        if !tail.is_empty() {
            m.push_str("; erl stderr: ");
            m.push_str(&tail.iter().cloned().collect::<Vec<_>>().join(" | "));
        }
    }
    outcome
}

/// One line from the VM (docs/workload.md, "Other runtimes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The VM's time zero.
    Ready {
        schedulers: u64,
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
    Ok(match tag {
        "READY" => {
            let schedulers = rest
                .split(' ')
                .find_map(|kv| kv.strip_prefix("schedulers="))
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?;
            Line::Ready { schedulers }
        }
        "K" => Line::Credit(one()?),
        "L" => Line::Late(one()?),
        "S" => Line::Restart(one()?),
        "R" => Line::RestartLatency(one()?),
        "D" => match nums()?.as_slice() {
            &[
                id,
                class,
                outcome,
                origin,
                release,
                pickup,
                end,
                sleep_req,
                sleep_act,
            ] if outcome <= 2 && class <= u64::from(u32::MAX) => Line::Job(Record {
                id,
                class: class as u32,
                outcome: outcome as u32,
                origin,
                release,
                pickup,
                end,
                sleep_req,
                sleep_act,
            }),
            _ => return Err(bad()),
        },
        "G" => match nums()?.as_slice() {
            &[queue, in_flight, processes, run_queue, busy_us] => Line::Gauge {
                queue,
                in_flight,
                processes,
                run_queue,
                busy_us,
            },
            _ => return Err(bad()),
        },
        "F" => Line::Failed(rest.to_string()),
        "M" => Line::MeasureFrom(one()?),
        "X" if rest.is_empty() => Line::Stopped,
        "ERR" => Line::Error(rest.to_string()),
        "END" => {
            let mut f = rest.split(' ');
            let digest = f
                .next()
                .filter(|h| h.len() == 16)
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .ok_or_else(bad)?;
            let mut n = || f.next().and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad);
            let (jobs, cancelled, unreleased) = (n()?, n()?, n()?);
            if f.next().is_some() {
                return Err(bad());
            }
            Line::End {
                digest,
                jobs,
                cancelled,
                unreleased,
            }
        }
        _ => return Err(bad()),
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

/// Jobs the VM may hold beyond its queue before it returns credit.
fn window(cfg: &Config) -> u64 {
    (2 * cfg.queue_bound as u64).clamp(1024, 65_536)
}

/// Runs the protocol over the VM's stdout (`from`) and stdin (`to`) until
/// its END line; records everything into `io.rec`.
async fn drive<R, W>(cfg: &Config, mut from: R, to: W, mut io: Io) -> Outcome
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Writes go through their own task, so a slow pipe never stops this
    // loop from reading the VM's output (the VM's writes could otherwise
    // block on a full pipe while we block on its full stdin).
    let (wtx, wrx) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(write_all(to, wrx));
    let _ = wtx.send(header(cfg).into_bytes()).await;
    let rec = io.rec.clone();
    let mut st = State {
        anchor: None,
        failed: None,
        nclasses: cfg.classes as u32,
        records: 0,
        credited: 0,
    };
    let mut buf: VecDeque<Job> = VecDeque::new();
    let mut beam_credit = window(cfg);
    let mut feed_open = true;
    let mut fed_once = false;
    let mut stall_since: Option<Instant> = None;
    let (mut ended_sent, mut cancel_sent) = (false, false);
    let mut cancel_deadline: Option<tokio::time::Instant> = None;
    let mut agent_cancelled = 0u64;
    // A timed run whose measured part is over: nothing more is written;
    // what the agent still holds or receives is unreleased.
    let mut vm_stopped = false;
    let mut agent_unreleased = 0u64;
    let mut sent = Digest::new();
    let mut line = Vec::with_capacity(256);
    let outcome = loop {
        if vm_stopped && !buf.is_empty() {
            agent_unreleased += buf.len() as u64;
            buf.clear();
        }
        if !cancel_sent && !vm_stopped && beam_credit > 0 && !buf.is_empty() {
            let n = (beam_credit as usize).min(buf.len());
            let mut out = Vec::with_capacity(n * 40);
            for j in buf.drain(..n) {
                sent.push(&j);
                use std::io::Write;
                let _ = writeln!(
                    out,
                    "J {} {} {} {} {} {}",
                    j.id,
                    j.class,
                    j.work_units,
                    j.sleep_us,
                    u8::from(j.crash),
                    j.intended_us
                );
            }
            beam_credit -= n as u64;
            let _ = wtx.send(out).await;
            // The jobs left the agent's buffer: the coordinator may refill it.
            let _ = io.credit.send(n as u64);
        }
        if !feed_open && buf.is_empty() && !ended_sent && !cancel_sent {
            ended_sent = true;
            let _ = wtx.send(b"E\n".to_vec()).await;
        }
        if fed_once && feed_open && buf.is_empty() && beam_credit > 0 && !cancel_sent && !vm_stopped
        {
            stall_since.get_or_insert_with(Instant::now);
        }
        let mut limited = (&mut from).take(MAX_LINE + 1 - line.len() as u64);
        tokio::select! {
            biased;
            _ = io.cancel.cancelled(), if !cancel_sent => {
                cancel_sent = true;
                let _ = wtx.send(b"C\n".to_vec()).await;
                agent_cancelled += drop_unwritten(&mut io.feed, &mut buf);
                cancel_deadline = Some(tokio::time::Instant::now() + CANCEL_GRACE);
            }
            // Cancel-safe: a partly read line stays in `line` for the next turn.
            r = limited.read_until(b'\n', &mut line) => {
                match r {
                    Ok(0) => break Outcome::Internal(
                        "the BEAM VM exited before its END line".into()),
                    Ok(_) if line.last() != Some(&b'\n') => {
                        if line.len() as u64 > MAX_LINE {
                            break Outcome::Internal(format!(
                                "a line from the BEAM is longer than {MAX_LINE} bytes"));
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => break Outcome::Internal(format!("reading from the BEAM: {e}")),
                }
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                line.clear();
                match parse_line(&text).and_then(|l| st.apply(l, &rec, &io.gauges)) {
                    Ok(Some(Line::Credit(n))) => {
                        if st.credited > sent.count() {
                            break Outcome::Internal(format!(
                                "the BEAM returned credit for {} jobs, but was sent {}",
                                st.credited,
                                sent.count()
                            ));
                        }
                        beam_credit += n;
                    }
                    // The pool failed: the VM reads on until told to end,
                    // so every job written is accounted for in its END.
                    Ok(Some(Line::Failed(_))) if !cancel_sent => {
                        cancel_sent = true;
                        let _ = wtx.send(b"C\n".to_vec()).await;
                        agent_cancelled += drop_unwritten(&mut io.feed, &mut buf);
                        cancel_deadline = Some(tokio::time::Instant::now() + CANCEL_GRACE);
                    }
                    Ok(Some(Line::Stopped)) => {
                        // The session tells the coordinator to stop feeding.
                        vm_stopped = true;
                        stall_since = None;
                        rec.span.stopped.cancel();
                    }
                    Ok(Some(Line::End { digest, jobs, cancelled, unreleased })) => {
                        rec.cancelled.fetch_add(agent_cancelled + cancelled, Ordering::Relaxed);
                        rec.unreleased.fetch_add(agent_unreleased + unreleased, Ordering::Relaxed);
                        break st.end(digest, jobs, cancelled.saturating_add(unreleased), &sent);
                    }
                    Ok(_) => {}
                    Err(e) => break Outcome::Internal(e),
                }
            }
            jobs = io.feed.recv(), if feed_open && !cancel_sent => match jobs {
                Some(jobs) => {
                    if let Some(t) = stall_since.take() {
                        rec.feed_stall_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                    fed_once = true;
                    buf.extend(jobs);
                }
                None => {
                    feed_open = false;
                    stall_since = None;
                }
            },
            _ = sleep_until(cancel_deadline) => {
                break Outcome::Internal(format!(
                    "the BEAM did not stop within {} ms of being cancelled",
                    CANCEL_GRACE.as_millis()
                ));
            }
        }
    };
    if !matches!(outcome, Outcome::Finished | Outcome::PoolFailed(_)) {
        // The run ends in error: what never reached the VM is not lost
        // silently from the accounting either.
        let unwritten = drop_unwritten(&mut io.feed, &mut buf);
        rec.cancelled.fetch_add(unwritten, Ordering::Relaxed);
    }
    drop(wtx);
    writer.abort();
    outcome
}

/// Stops the feed and drops the jobs not yet written to the VM; how many.
fn drop_unwritten(feed: &mut mpsc::UnboundedReceiver<Vec<Job>>, buf: &mut VecDeque<Job>) -> u64 {
    feed.close();
    let mut n = buf.len() as u64;
    buf.clear();
    while let Ok(jobs) = feed.try_recv() {
        n += jobs.len() as u64;
    }
    n
}

async fn write_all<W: AsyncWrite + Unpin>(mut to: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(chunk) = rx.recv().await {
        if to.write_all(&chunk).await.is_err() || to.flush().await.is_err() {
            return;
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// What the driver remembers between lines.
struct State {
    /// The agent's instant for the VM's time zero (READY).
    anchor: Option<Instant>,
    failed: Option<String>,
    nclasses: u32,
    /// `D` lines received.
    records: u64,
    /// Jobs returned by `K` lines.
    credited: u64,
}

/// How far past the agent's own clock a VM timestamp may be (the two
/// clocks are read a few µs apart at READY).
const CLOCK_SLACK: Duration = Duration::from_secs(1);

impl State {
    /// Records one line; returns the lines the loop acts on (credit, end).
    fn apply(
        &mut self,
        line: Line,
        rec: &Recorder,
        gauges: &BeamGauges,
    ) -> Result<Option<Line>, String> {
        // The VM's µs since READY, as ns on the agent's clock.
        let at = |anchor: Option<Instant>, us: u64| -> Result<u64, String> {
            anchor
                .map(|a| crate::clock::ns_of(a) + us * 1000)
                .ok_or_else(|| "the BEAM sent a timestamp before READY".to_string())
        };
        match line {
            Line::Ready { schedulers } => {
                self.anchor = Some(Instant::now());
                gauges.schedulers.store(schedulers, Ordering::Relaxed);
            }
            Line::Credit(n) => {
                self.credited = self.credited.saturating_add(n);
                rec.released.fetch_add(n, Ordering::Relaxed);
                return Ok(Some(line));
            }
            Line::Job(r) => {
                if r.class >= self.nclasses {
                    return Err(format!(
                        "the BEAM reported job {} of class {}, but the plan has {} classes",
                        r.id, r.class, self.nclasses
                    ));
                }
                // Times must be in order and not in the future: a wrong
                // one would land in a far-off recovery bucket or a bogus
                // latency, and a huge one would overflow.
                let now_us = self
                    .anchor
                    .map_or(0, |a| (a.elapsed() + CLOCK_SLACK).as_micros() as u64);
                if !(r.origin <= r.release
                    && r.release <= r.pickup
                    && r.pickup <= r.end
                    && r.end <= now_us)
                {
                    return Err(format!(
                        "the BEAM reported job {} with times out of order or in the future (origin {} release {} pickup {} end {} µs; now {} µs)",
                        r.id, r.origin, r.release, r.pickup, r.end, now_us
                    ));
                }
                self.records += 1;
                let job = Job {
                    id: r.id,
                    class: r.class,
                    ..Default::default()
                };
                let (origin, pickup, end) = (
                    at(self.anchor, r.origin)?,
                    at(self.anchor, r.pickup)?,
                    at(self.anchor, r.end)?,
                );
                rec.released(&job, origin, at(self.anchor, r.release)?);
                rec.log_job(&job, origin, pickup, end, r.outcome);
                match r.outcome {
                    0 => rec.completed(
                        0,
                        &job,
                        &Timing {
                            origin,
                            pickup,
                            done: end,
                            overshoot_us: (r.sleep_req > 0)
                                .then(|| r.sleep_act.saturating_sub(r.sleep_req)),
                        },
                    ),
                    1 => rec.crashed(0, end),
                    _ => {
                        rec.timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Line::Late(us) => rec.lateness(Duration::from_micros(us)),
            Line::Restart(_) => {
                rec.restarts.fetch_add(1, Ordering::Relaxed);
            }
            Line::RestartLatency(us) => rec.restart_latency(0, Duration::from_micros(us)),
            Line::Gauge {
                queue,
                in_flight,
                processes,
                run_queue,
                busy_us,
            } => {
                gauges.queue_depth.store(queue, Ordering::Relaxed);
                rec.in_flight.store(in_flight, Ordering::Relaxed);
                gauges.processes.store(processes, Ordering::Relaxed);
                gauges.run_queue.store(run_queue, Ordering::Relaxed);
                gauges.busy_us.store(busy_us, Ordering::Relaxed);
            }
            Line::Failed(m) => {
                self.failed = Some(m.clone());
                return Ok(Some(Line::Failed(m)));
            }
            Line::MeasureFrom(us) => {
                let now_us = self
                    .anchor
                    .map_or(0, |a| (a.elapsed() + CLOCK_SLACK).as_micros() as u64);
                if us > now_us.saturating_add(86_400_000_000) {
                    return Err(format!("the BEAM's measured part starts too late: {us} µs"));
                }
                rec.span.measure_from(at(self.anchor, us)?);
            }
            Line::Stopped => return Ok(Some(line)),
            Line::End { .. } => return Ok(Some(line)),
            Line::Error(m) => return Err(format!("the BEAM failed: {m}")),
        }
        Ok(None)
    }

    /// The parity check, then how the run ended.
    /// `cancelled`: jobs the VM cancelled or never released.
    fn end(&mut self, digest: u64, jobs: u64, cancelled: u64, sent: &Digest) -> Outcome {
        if digest != sent.value() || jobs != sent.count() {
            return Outcome::Internal(format!(
                "parity check failed: the BEAM ran {jobs} jobs with digest {digest:016x}, the agent sent it {} with digest {:016x}",
                sent.count(),
                sent.value()
            ));
        }
        // Every job written comes back exactly once.
        if cancelled.checked_add(self.records) != Some(jobs) {
            return Outcome::Internal(format!(
                "accounting check failed: the BEAM received {jobs} jobs but reported {} finished and {cancelled} cancelled or unreleased",
                self.records
            ));
        }
        match self.failed.take() {
            Some(m) => Outcome::PoolFailed(m),
            None => Outcome::Finished,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    /// The module cache is keyed on the installation: another `erlc` (a
    /// different place or a replaced file) gives another id.
    #[test]
    fn installation_id_follows_the_erlang_binaries() {
        let base = std::env::temp_dir().join(format!("cwbench-otp-id-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("erl"), "vm").unwrap();
            std::fs::write(d.join("erlc"), "compiler 25").unwrap();
        }
        let id_a = installation_id_in(a.as_os_str());
        assert!(id_a.contains("erlc"), "{id_a}");
        assert_eq!(id_a, installation_id_in(a.as_os_str()));
        assert_ne!(id_a, installation_id_in(b.as_os_str()));
        std::fs::write(a.join("erlc"), "compiler 26.2").unwrap();
        assert_ne!(id_a, installation_id_in(a.as_os_str()));
        assert_eq!(installation_id_in(base.join("none").as_os_str()), "");
        std::fs::remove_dir_all(&base).unwrap();
    }

    fn config() -> Config {
        Config {
            runtime: cwbench::spec::Flavor::Beam,
            threads: 1,
            workers: 4,
            queue_bound: 8,
            producers: 1,
            shed: false,
            open: false,
            dispatch: cwbench::spec::Dispatch::Pool,
            compute: cwbench::spec::Compute::Inline,
            yield_every: 1,
            compute_threads: 0,
            warmup: crate::span::Warmup::Jobs(0),
            end: crate::span::End::Fed,
            classes: 2,
            credit_chunk: 1,
            recycle_jobs: 0,
            max_restarts: 3,
            restart_window: Duration::from_millis(1000),
            backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            probe_interval: Duration::from_micros(1000),
            job_timeout: None,
            cpus: None,
            job_log: false,
            kill_jobs: [7, 3].into_iter().collect(),
        }
    }

    #[test]
    fn lines_parse() {
        assert_eq!(
            parse_line("READY otp=25 schedulers=2"),
            Ok(Line::Ready { schedulers: 2 })
        );
        assert_eq!(parse_line("K 12"), Ok(Line::Credit(12)));
        assert_eq!(parse_line("L 1033"), Ok(Line::Late(1033)));
        assert_eq!(parse_line("S 5"), Ok(Line::Restart(5)));
        assert_eq!(parse_line("R 40"), Ok(Line::RestartLatency(40)));
        assert_eq!(
            parse_line("D 9 1 0 100 101 150 2300 2000 2150"),
            Ok(Line::Job(Record {
                id: 9,
                class: 1,
                outcome: 0,
                origin: 100,
                release: 101,
                pickup: 150,
                end: 2300,
                sleep_req: 2000,
                sleep_act: 2150,
            }))
        );
        assert_eq!(
            parse_line("G 3 4 80 1 123456"),
            Ok(Line::Gauge {
                queue: 3,
                in_flight: 4,
                processes: 80,
                run_queue: 1,
                busy_us: 123456
            })
        );
        assert_eq!(
            parse_line("END 4aa4b5e45aa2708c 1 0 0"),
            Ok(Line::End {
                digest: 0x4aa4_b5e4_5aa2_708c,
                jobs: 1,
                cancelled: 0,
                unreleased: 0
            })
        );
        assert_eq!(parse_line("M 1500"), Ok(Line::MeasureFrom(1500)));
        assert_eq!(parse_line("X"), Ok(Line::Stopped));
        assert_eq!(
            parse_line("F supervisor gave up: 4 crashes"),
            Ok(Line::Failed("supervisor gave up: 4 crashes".into()))
        );
        for bad in [
            "",
            "K",
            "K -1",
            "K 1 2",
            "D 1 2 3",
            "D 1 0 3 1 1 1 1 0 0",
            "END xyz 1 0 0",
            "END 4aa4b5e45aa2708c 1 0",
            "END 4aa4b5e45aa2708c 1 0 0 0",
            "X 1",
            "M",
            "READY otp=25",
            "HELLO 1",
        ] {
            let e = parse_line(bad).unwrap_err();
            assert!(e.contains("malformed line from the BEAM"), "{bad}: {e}");
        }
    }

    #[test]
    fn header_names_the_plan() {
        assert_eq!(
            header(&config()),
            "cwbench-beam 2 workers=4 bound=8 open=0 max_restarts=3 restart_window_ms=1000 backoff_ms=0 max_backoff_ms=0 probe_us=1000 timeout_ms=0 gauge_ms=100 warmup_jobs=0 warmup_us=0 end_us=0 end_jobs=0 kill=3,7\n"
        );
        let timed = Config {
            warmup: crate::span::Warmup::For(Duration::from_millis(250)),
            end: crate::span::End::After(Duration::from_secs(2)),
            ..config()
        };
        assert!(
            header(&timed).contains(" warmup_jobs=0 warmup_us=250000 end_us=2000000 end_jobs=0 "),
            "{}",
            header(&timed)
        );
    }

    /// A stand-in VM on in-memory pipes: completes every job it is sent and
    /// ends with `digest` (None: the right one).
    /// How a fake VM departs from the protocol.
    #[derive(Clone, Copy)]
    enum Lie {
        None,
        Digest(u64),
        /// The times of every `D` line: origin release pickup end.
        Times(&'static str),
        /// Five more jobs of credit than it was sent, once.
        Credit,
        /// No `D` line for job 0 (END still says it received every job).
        Drop,
    }

    async fn fake_vm(n: u64, digest: Option<u64>) -> (Outcome, Arc<Recorder>) {
        fake_vm_lying(n, digest.map_or(Lie::None, Lie::Digest)).await
    }

    async fn fake_vm_lying(n: u64, lie: Lie) -> (Outcome, Arc<Recorder>) {
        let (agent_side, vm_side) = tokio::io::duplex(1 << 16);
        let (vm_in, mut vm_out) = tokio::io::split(vm_side);
        let (agent_in, agent_out) = tokio::io::split(agent_side);
        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        let (credit_tx, _credit_rx) = mpsc::unbounded_channel();
        let span = crate::span::Span::new(crate::span::Warmup::Jobs(0), crate::span::End::Fed);
        let rec = Arc::new(Recorder::new(1, 2, Arc::new(span), Instant::now(), false));
        let io = Io {
            feed: feed_rx,
            credit: credit_tx,
            rec: rec.clone(),
            gauges: Arc::new(BeamGauges::default()),
            cancel: CancellationToken::new(),
        };
        let jobs: Vec<Job> = (0..n)
            .map(|id| Job {
                id,
                class: (id % 2) as u32,
                work_units: 10,
                sleep_us: 0,
                crash: false,
                intended_us: 0,
            })
            .collect();
        let mut d = Digest::new();
        jobs.iter().for_each(|j| d.push(j));
        let end_digest = match lie {
            Lie::Digest(x) => x,
            _ => d.value(),
        };
        feed_tx.send(jobs).unwrap();
        drop(feed_tx);
        let vm = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(vm_in).lines();
            let header = lines.next_line().await.unwrap().unwrap();
            assert!(header.starts_with("cwbench-beam 2 "), "{header}");
            vm_out
                .write_all(b"READY otp=25 schedulers=1\n")
                .await
                .unwrap();
            while let Ok(Some(l)) = lines.next_line().await {
                if l == "E" {
                    break;
                }
                let f: Vec<u64> = l[2..].split(' ').map(|x| x.parse().unwrap()).collect();
                let times = match lie {
                    Lie::Times(t) => t,
                    _ => "10 10 20 30",
                };
                let mut out = match lie {
                    Lie::Credit if f[0] == 0 => "K 6\n".to_string(),
                    _ => "K 1\n".to_string(),
                };
                if !matches!(lie, Lie::Drop if f[0] == 0) {
                    out += &format!("D {} {} 0 {times} 0 0\n", f[0], f[1]);
                }
                if vm_out.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
            let end = format!("G 0 0 40 0 1000\nEND {end_digest:016x} {n} 0 0\n");
            let _ = vm_out.write_all(end.as_bytes()).await;
        });
        let outcome = drive(
            &config(),
            tokio::io::BufReader::new(agent_in),
            agent_out,
            io,
        )
        .await;
        vm.await.unwrap();
        (outcome, rec)
    }

    #[tokio::test]
    async fn records_from_the_vm_land_in_the_recorder() {
        // More jobs than the VM's window: credit must flow back.
        let (outcome, rec) = fake_vm(3000, None).await;
        assert_eq!(outcome, Outcome::Finished);
        let mut agg = crate::recorder::Aggregator::new(2, Default::default());
        let done = agg.done(&rec, 0);
        let t = done.totals.unwrap();
        assert_eq!((t.completed, t.crashed, t.cancelled), (3000, 0, 0));
        assert_eq!(done.classes.len(), 2);
    }

    #[tokio::test]
    async fn a_wrong_digest_from_the_vm_is_an_error() {
        let (outcome, _) = fake_vm(10, Some(0x1234)).await;
        let Outcome::Internal(m) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            m.starts_with("parity check failed: the BEAM ran 10 jobs with digest 0000000000001234, the agent sent it 10 with digest "),
            "{m}"
        );
    }

    /// What a runtime says is checked: times in order and not in the
    /// future, credit for no more jobs than it was sent, and every job
    /// accounted for at END.
    #[tokio::test]
    async fn a_vm_that_lies_is_an_error() {
        for (lie, want) in [
            (
                Lie::Times("10 10 5 30"),
                "with times out of order or in the future (origin 10 release 10 pickup 5 end 30",
            ),
            (
                Lie::Times("10 10 20 100000000000000"),
                "with times out of order or in the future",
            ),
            (
                Lie::Times("10 10 20 18446744073709551615"),
                "with times out of order or in the future",
            ),
            (Lie::Times("30 10 20 40"), "with times out of order"),
            (
                Lie::Credit,
                "the BEAM returned credit for 11 jobs, but was sent 10",
            ),
            (
                Lie::Drop,
                "accounting check failed: the BEAM received 10 jobs but reported 9 finished and 0 cancelled",
            ),
        ] {
            let (outcome, _) = fake_vm_lying(10, lie).await;
            let Outcome::Internal(m) = outcome else {
                panic!("{want}: {outcome:?}");
            };
            assert!(m.contains(want), "{want}: {m}");
        }
        assert_eq!(fake_vm_lying(10, Lie::None).await.0, Outcome::Finished);
    }

    /// Runs 500 jobs (jobs 100 and 200 crash, the workers holding jobs 3
    /// and 7 are killed) on the real VM; None when Erlang is missing.
    fn real_vm(max_restarts: u32) -> Option<(Outcome, proto::Done)> {
        real_vm_with(max_restarts, 500, &[100, 200])
    }

    /// Runs `n` jobs, those in `crash` crashing, on the real VM.
    fn real_vm_with(max_restarts: u32, n: u64, crash: &[u64]) -> Option<(Outcome, proto::Done)> {
        real_vm_sized(
            Config {
                max_restarts,
                ..config()
            },
            n,
            crash,
        )
    }

    /// Runs `n` jobs of `cfg`, those in `crash` crashing, on the real VM.
    fn real_vm_sized(cfg: Config, n: u64, crash: &[u64]) -> Option<(Outcome, proto::Done)> {
        if let Some(why) = unavailable_reason() {
            eprintln!("SKIP: the BEAM tests: {why}");
            return None;
        }
        let mut wl = crate::workload::Workload::start(cfg).expect("starts");
        let jobs: Vec<Job> = (0..n)
            .map(|id| Job {
                id,
                class: (id % 2) as u32,
                work_units: 1000,
                sleep_us: if id % 3 == 0 { 500 } else { 0 },
                crash: crash.contains(&id),
                intended_us: 0,
            })
            .collect();
        wl.recorder.received.fetch_add(n, Ordering::Relaxed);
        // In batches, as the session feeds it.
        for chunk in jobs.chunks(4096) {
            wl.feed(chunk.to_vec());
        }
        wl.end_of_jobs();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(30), &mut wl.finished).await
            })
            .expect("ends within 30 s")
            .unwrap();
        let mut agg = crate::recorder::Aggregator::new(2, Default::default());
        Some((outcome, agg.done(&wl.recorder, 0)))
    }

    #[test]
    fn the_real_vm_runs_jobs_and_restarts_workers() {
        let Some((outcome, done)) = real_vm(10) else {
            return;
        };
        assert_eq!(outcome, Outcome::Finished);
        let t = done.totals.unwrap();
        assert_eq!((t.completed, t.crashed, t.cancelled), (496, 4, 0));
        assert_eq!(t.restarts, 4);
        assert!(!done.restart_latency.is_empty());
        assert!(!done.lateness.is_empty());
    }

    #[test]
    fn a_cancelled_vm_counts_every_job_once() {
        if let Some(why) = unavailable_reason() {
            eprintln!("SKIP: a_cancelled_vm_counts_every_job_once: {why}");
            return;
        }
        let mut wl = crate::workload::Workload::start(config()).expect("starts");
        // 4 workers, 20 ms per job: 3,000 jobs take far longer than the test.
        let jobs: Vec<Job> = (0..3000)
            .map(|id| Job {
                id,
                sleep_us: 20_000,
                ..Default::default()
            })
            .collect();
        wl.recorder.received.fetch_add(3000, Ordering::Relaxed);
        wl.feed(jobs);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = rt.block_on(async {
            // Cancel once the VM is up and has jobs in hand (a loaded
            // machine may take a while to start it).
            let t = Instant::now();
            while wl.recorder.released.load(Ordering::Relaxed) < 8 {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "the VM never took a job"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            wl.cancel();
            tokio::time::timeout(Duration::from_secs(5), &mut wl.finished).await
        });
        assert_eq!(
            outcome.expect("ends soon after the cancel").unwrap(),
            Outcome::Finished
        );
        let mut agg = crate::recorder::Aggregator::new(2, Default::default());
        let t = agg.done(&wl.recorder, 0).totals.unwrap();
        assert!(t.cancelled > 0, "{t:?}");
        assert_eq!(t.completed + t.crashed + t.cancelled, 3000, "{t:?}");
    }

    #[test]
    fn the_real_vm_gives_up_past_the_restart_intensity() {
        let Some((outcome, done)) = real_vm(3) else {
            return;
        };
        let Outcome::PoolFailed(m) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            m.starts_with("supervisor gave up: 4 crashes within 1000 ms"),
            "{m}"
        );
        let t = done.totals.unwrap();
        assert_eq!(t.restarts, 3);
        assert_eq!(t.completed + t.crashed + t.cancelled, 500, "{t:?}");
    }

    /// The pool fails with jobs still on their way to the VM (written past
    /// its window) and many more in the agent's buffer: every job is still
    /// counted once, and the parity check holds.
    #[test]
    fn a_pool_failing_mid_stream_counts_every_job_once() {
        let Some((outcome, done)) = real_vm_with(3, 20_000, &[3000, 3001, 3002, 3003, 3004]) else {
            return;
        };
        let Outcome::PoolFailed(m) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(m.starts_with("supervisor gave up: 4 crashes"), "{m}");
        let t = done.totals.unwrap();
        assert!(t.cancelled > 10_000, "{t:?}");
        assert_eq!(t.completed + t.crashed + t.cancelled, 20_000, "{t:?}");
    }

    /// A timed closed loop on the VM: it decides at release, as the tokio
    /// producers do, so a count is exact, the rest is unreleased, and the
    /// agent learns it has stopped (to tell the coordinator).
    #[test]
    fn the_real_vm_runs_a_timed_closed_loop() {
        use crate::span::{End, Warmup};
        let cfg = Config {
            warmup: Warmup::Jobs(100),
            end: End::Jobs(1_000),
            kill_jobs: Default::default(),
            ..config()
        };
        let Some((outcome, done)) = real_vm_sized(cfg, 5_000, &[]) else {
            return;
        };
        assert_eq!(outcome, Outcome::Finished);
        let t = done.totals.unwrap();
        assert_eq!(t.measured_completed, 1_000, "{t:?}");
        assert_eq!(t.completed, 1_100, "{t:?}");
        assert_eq!(t.completed + t.unreleased + t.cancelled, 5_000, "{t:?}");
        assert!(t.unreleased >= 3_900, "{t:?}");

        // By time: a 300 ms warm-up, then 200 ms measured.
        let cfg = Config {
            warmup: Warmup::For(Duration::from_millis(300)),
            end: End::After(Duration::from_millis(200)),
            kill_jobs: Default::default(),
            ..config()
        };
        let Some((outcome, done)) = real_vm_sized(cfg, 200_000, &[]) else {
            return;
        };
        assert_eq!(outcome, Outcome::Finished);
        let t = done.totals.unwrap();
        assert!(t.measured_completed > 0, "{t:?}");
        assert!(
            t.completed > t.measured_completed,
            "warm-up jobs too: {t:?}"
        );
        assert!(t.unreleased > 0, "{t:?}");
        assert_eq!(t.completed + t.unreleased + t.cancelled, 200_000, "{t:?}");
        // The measured window: first measured release to last completion.
        let w = done.measured_window_us;
        assert!((200_000..1_500_000).contains(&w), "window {w} µs: {t:?}");
    }
}
