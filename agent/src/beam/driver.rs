//! The driver: the VM's process lifetime, and the loop that streams it jobs within its credit and records what it sends back.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cwbench::digest::Digest;
use cwbench::generator::Job;
use parking_lot::Mutex;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::{Config, Outcome};
use crate::recorder::{Recorder, Timing};

use super::BeamGauges;
use super::line::*;
use super::toolchain::INSTALL_HINT;
/// How long a cancelled VM may take to answer END before it is killed.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_millis(1000);

/// The driver's connections to the session.
pub(crate) struct Io {
    pub feed: mpsc::UnboundedReceiver<Vec<Job>>,
    pub credit: mpsc::UnboundedSender<u64>,
    pub rec: Arc<Recorder>,
    pub gauges: Arc<BeamGauges>,
    pub cancel: CancellationToken,
}

/// Starts the VM, runs `speak` over its stdout and stdin (the workload's
/// or the server's protocol) to the end, and makes sure the VM is gone.
pub(crate) async fn run_vm<F, Fut>(
    cfg: &Config,
    dir: PathBuf,
    gauges: Arc<BeamGauges>,
    speak: F,
) -> Outcome
where
    F: FnOnce(tokio::io::BufReader<tokio::process::ChildStdout>, tokio::process::ChildStdin) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
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
    gauges.pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
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
    let mut outcome = speak(tokio::io::BufReader::new(stdout), stdin).await;
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

/// Jobs the VM may hold beyond its queue before it returns credit.
pub(crate) fn window(cfg: &Config) -> u64 {
    (2 * cfg.queue_bound as u64).clamp(1024, 65_536)
}

/// Runs the protocol over the VM's stdout (`from`) and stdin (`to`) until
/// its END line; records everything into `io.rec`.
pub(crate) async fn drive<R, W>(cfg: &Config, mut from: R, to: W, mut io: Io) -> Outcome
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
    let mut st = State::new(cfg.classes as u32);
    let mut out = Outbox {
        wtx,
        buf: VecDeque::new(),
        credit: window(cfg),
        sent: Digest::new(),
        ended_sent: false,
        cancel_sent: false,
        cancel_deadline: None,
        agent_cancelled: 0,
        vm_stopped: false,
        agent_unreleased: 0,
    };
    let mut feed_open = true;
    let mut fed_once = false;
    let mut stall_since: Option<Instant> = None;
    let mut line = Vec::with_capacity(256);
    let outcome = loop {
        out.flush(feed_open, &io.credit).await;
        if fed_once && out.waits_for_jobs(feed_open) {
            stall_since.get_or_insert_with(Instant::now);
        }
        tokio::select! {
            biased;
            _ = io.cancel.cancelled(), if !out.cancel_sent => out.cancel(&mut io.feed).await,
            r = read_line(&mut from, &mut line) => {
                let text = match r {
                    Ok(t) => t,
                    Err(e) => break Outcome::Internal(e),
                };
                match parse_line(&text).and_then(|l| st.apply(l, &rec, &io.gauges)) {
                    Ok(Some(Line::Credit(n))) => {
                        if st.credited > out.sent.count() {
                            break Outcome::Internal(format!(
                                "the BEAM returned credit for {} jobs, but was sent {}",
                                st.credited,
                                out.sent.count()
                            ));
                        }
                        out.credit += n;
                    }
                    // The pool failed: the VM reads on until told to end,
                    // so every job written is accounted for in its END.
                    Ok(Some(Line::Failed(_))) if !out.cancel_sent => out.cancel(&mut io.feed).await,
                    Ok(Some(Line::Stopped)) => {
                        // The session tells the coordinator to stop feeding.
                        out.vm_stopped = true;
                        stall_since = None;
                        rec.span.stopped.cancel();
                    }
                    Ok(Some(Line::End { digest, jobs, cancelled, unreleased })) => {
                        rec.cancelled.fetch_add(out.agent_cancelled + cancelled, Ordering::Relaxed);
                        rec.unreleased.fetch_add(out.agent_unreleased + unreleased, Ordering::Relaxed);
                        break st.end(digest, jobs, cancelled.saturating_add(unreleased), &out.sent);
                    }
                    Ok(Some(l @ (Line::Task(_) | Line::Conns { .. }))) => {
                        break Outcome::Internal(format!("a server's line from the BEAM in a workload run: {l:?}"));
                    }
                    Ok(_) => {}
                    Err(e) => break Outcome::Internal(e),
                }
            }
            jobs = io.feed.recv(), if feed_open && !out.cancel_sent => match jobs {
                Some(jobs) => {
                    if let Some(t) = stall_since.take() {
                        rec.feed_stall_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                    fed_once = true;
                    out.buf.extend(jobs);
                }
                None => {
                    feed_open = false;
                    stall_since = None;
                }
            },
            _ = sleep_until(out.cancel_deadline) => {
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
        let unwritten = drop_unwritten(&mut io.feed, &mut out.buf);
        rec.cancelled.fetch_add(unwritten, Ordering::Relaxed);
    }
    drop(out);
    writer.abort();
    outcome
}

/// The agent's side of the VM's stdin: jobs held until the VM has credit
/// for them, and what was written.
struct Outbox {
    wtx: mpsc::Sender<Vec<u8>>,
    buf: VecDeque<Job>,
    /// Jobs the VM may still take.
    credit: u64,
    /// Digest of the jobs written.
    sent: Digest,
    ended_sent: bool,
    cancel_sent: bool,
    cancel_deadline: Option<tokio::time::Instant>,
    /// Jobs dropped by the agent on a cancel, never written.
    agent_cancelled: u64,
    /// A timed run whose measured part is over: nothing more is written;
    /// what the agent still holds or receives is unreleased.
    vm_stopped: bool,
    agent_unreleased: u64,
}

impl Outbox {
    /// Writes what the VM has credit for (that credit goes back to the
    /// coordinator), then E once the feed is over and drained.
    async fn flush(&mut self, feed_open: bool, coordinator: &mpsc::UnboundedSender<u64>) {
        if self.vm_stopped && !self.buf.is_empty() {
            self.agent_unreleased += self.buf.len() as u64;
            self.buf.clear();
        }
        if !self.cancel_sent && !self.vm_stopped && self.credit > 0 && !self.buf.is_empty() {
            let n = (self.credit as usize).min(self.buf.len());
            let mut out = Vec::with_capacity(n * 40);
            for j in self.buf.drain(..n) {
                self.sent.push(&j);
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
            self.credit -= n as u64;
            let _ = self.wtx.send(out).await;
            // The jobs left the agent's buffer: the coordinator may refill it.
            let _ = coordinator.send(n as u64);
        }
        if !feed_open && self.buf.is_empty() && !self.ended_sent && !self.cancel_sent {
            self.ended_sent = true;
            let _ = self.wtx.send(b"E\n".to_vec()).await;
        }
    }

    /// Is the VM waiting for jobs the agent does not have (a feed stall)?
    fn waits_for_jobs(&self, feed_open: bool) -> bool {
        feed_open && self.buf.is_empty() && self.credit > 0 && !self.cancel_sent && !self.vm_stopped
    }

    /// Tells the VM to cancel and drops what was never written; the VM has
    /// CANCEL_GRACE to answer.
    async fn cancel(&mut self, feed: &mut mpsc::UnboundedReceiver<Vec<Job>>) {
        self.cancel_sent = true;
        let _ = self.wtx.send(b"C\n".to_vec()).await;
        self.agent_cancelled += drop_unwritten(feed, &mut self.buf);
        self.cancel_deadline = Some(tokio::time::Instant::now() + CANCEL_GRACE);
    }
}

/// Stops the feed and drops the jobs not yet written to the VM; how many.
pub(crate) fn drop_unwritten(
    feed: &mut mpsc::UnboundedReceiver<Vec<Job>>,
    buf: &mut VecDeque<Job>,
) -> u64 {
    feed.close();
    let mut n = buf.len() as u64;
    buf.clear();
    while let Ok(jobs) = feed.try_recv() {
        n += jobs.len() as u64;
    }
    n
}

/// The next line from the VM, without its newline. Cancel-safe: a partly
/// read line stays in `line` for the next call.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    from: &mut R,
    line: &mut Vec<u8>,
) -> Result<String, String> {
    loop {
        let mut limited = (&mut *from).take(MAX_LINE + 1 - line.len() as u64);
        match limited.read_until(b'\n', line).await {
            Ok(0) => return Err("the BEAM VM exited before its END line".into()),
            Ok(_) if line.last() != Some(&b'\n') => {
                if line.len() as u64 > MAX_LINE {
                    return Err(format!(
                        "a line from the BEAM is longer than {MAX_LINE} bytes"
                    ));
                }
            }
            Ok(_) => {
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                line.clear();
                return Ok(text);
            }
            Err(e) => return Err(format!("reading from the BEAM: {e}")),
        }
    }
}

pub(crate) async fn write_all<W: AsyncWrite + Unpin>(mut to: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(chunk) = rx.recv().await {
        if to.write_all(&chunk).await.is_err() || to.flush().await.is_err() {
            return;
        }
    }
}

pub(crate) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// What the driver remembers between lines.
pub(crate) struct State {
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
pub(crate) const CLOCK_SLACK: Duration = Duration::from_secs(1);

impl State {
    pub(crate) fn new(nclasses: u32) -> Self {
        Self {
            anchor: None,
            failed: None,
            nclasses,
            records: 0,
            credited: 0,
        }
    }

    /// The VM's `us` since READY as ns on the agent's clock.
    pub(crate) fn vm_ns(&self, us: u64) -> Result<u64, String> {
        self.anchor
            .map(|a| crate::clock::ns_of(a) + us * 1000)
            .ok_or_else(|| "the BEAM sent a timestamp before READY".to_string())
    }

    /// Are these VM times (µs) in order and not past the agent's clock
    /// (plus CLOCK_SLACK)? A wrong one would land in a far-off recovery
    /// bucket or a bogus latency, and a huge one would overflow.
    pub(crate) fn in_order(&self, times: &[u64]) -> bool {
        let now_us = self
            .anchor
            .map_or(0, |a| (a.elapsed() + CLOCK_SLACK).as_micros() as u64);
        times.windows(2).all(|w| w[0] <= w[1]) && times.last().is_none_or(|&t| t <= now_us)
    }

    /// Records one line; returns the lines the loop acts on (credit, end).
    pub(crate) fn apply(
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
            Line::Ready { schedulers, .. } => {
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
                if !self.in_order(&[r.origin, r.release, r.pickup, r.end]) {
                    return Err(format!(
                        "the BEAM reported job {} with times out of order or in the future (origin {} release {} pickup {} end {} µs; now {} µs)",
                        r.id,
                        r.origin,
                        r.release,
                        r.pickup,
                        r.end,
                        self.anchor.map_or(0, |a| a.elapsed().as_micros() as u64)
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
            // The server's lines: its driver (beam::server) handles them.
            Line::Task(_) | Line::Conns { .. } => return Ok(Some(line)),
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
