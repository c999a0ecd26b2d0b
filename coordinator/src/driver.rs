//! Drives one agent through one run: Start and Ready, the run's events until
//! Done (the feeding runs beside it, `crate::feed`; dialling is
//! `crate::connection`), and what the coordinator keeps of the host
//! (`HostState`) and checks in its Done.

use std::sync::Arc;
use std::time::Duration;

use cwbench::digest::{Digest, hex};
use cwbench::histogram::{Dense, Hist, Summary, merge_encoded, new_hist, with_decoded};
use cwbench::proto::run_event::Msg as In;
use cwbench::proto::run_request::Msg as Out;
use cwbench::proto::{self, AgentInfo, RunEvent, RunRequest};
use cwbench::scenario::{Plan, Profile};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

pub use crate::connection::{
    BearerToken, Client, ClientTls, DriveOptions, SendToken, Unavailable, connect, preflight,
};
use crate::feed::{FeedSignals, feed};
pub use crate::feed::{SHARD_CHUNK, Share};
use crate::observer::{Observers, Slot};
use crate::result::{
    Accounting, ClassResult, FaultMark, HostInfo, HostResult, HostStatus, IntervalPoint, Latencies,
    RecoveryResult, WsHost,
};

/// Everything needed to run one profile on one agent.
#[derive(Debug, Clone)]
pub struct HostRun {
    pub addr: String,
    pub label: String,
    pub run_id: String,
    pub plan: Arc<Plan>,
    pub profile: Profile,
    pub share: Share,
    /// Where interval histograms go as they arrive (completion.hlog).
    pub hlog: Option<crate::hlog::HlogSink>,
    /// Where per-job records go (--job-log).
    pub job_log: Option<crate::joblog::JobLogSink>,
    /// Cancelled when the run is interrupted (SIGINT/SIGTERM).
    pub interrupt: CancellationToken,
    /// A WebSocket run: this host's part in it.
    pub ws: Option<WsPart>,
    /// Where this host and profile sit in the run, for its observers.
    pub slot: Slot,
}

/// A host's part in a WebSocket run, as the coordinator drives it.
#[derive(Debug, Clone)]
pub struct WsPart {
    /// The settings with the role (and a client's URL) filled in.
    pub wire: proto::WebSocket,
    /// Server: where its port goes once its Ready is in.
    pub port: Option<Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<u16>>>>>,
    /// Server: its EndOfJobs waits for this (the clients are done).
    pub hold: Option<CancellationToken>,
}

impl WsPart {
    fn is_server(&self) -> bool {
        self.wire.role == proto::web_socket::Role::Server as i32
    }
}

/// A host's result and its whole-run completion histogram, which the host
/// groups merge (result.json keeps only its summary).
#[derive(Debug)]
pub struct HostOutcome {
    pub result: HostResult,
    pub completion: Hist,
    /// WebSocket runs: the whole-run queue-wait and service histograms
    /// (a client's send delay and rest of the round trip; the server's own).
    pub parts: Option<[Hist; 2]>,
}

/// Why a host's run ended without a trustworthy Done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The agent failed the run: it reported an error, refused the start,
    /// broke the protocol, or its Done did not pass the checks.
    #[error("{0}")]
    Failed(String),
    /// The host was lost: it went silent, or its stream broke or closed
    /// before Done.
    #[error("{0}")]
    Lost(String),
}

impl HostError {
    /// The host's status in the result.
    pub fn status(&self) -> HostStatus {
        match self {
            HostError::Failed(_) => HostStatus::Failed,
            HostError::Lost(_) => HostStatus::Lost,
        }
    }
}

/// Runs one profile on one agent. Never fails: every problem ends up in the
/// returned result's status and error, with the data received until then.
/// Its observers see each snapshot and, last, the host's result.
pub async fn drive(run: HostRun, opts: DriveOptions, observer: Option<Observers>) -> HostOutcome {
    let mut st = HostState::new(&run);
    if let Err(e) = drive_inner(&run, &opts, &mut st, observer.as_ref()).await {
        if let HostError::Lost(m) = &e {
            tracing::warn!("host {} lost: {m}", run.label);
        }
        st.status = e.status();
        st.error = Some(e.to_string());
    }
    let outcome = st.finish(&run);
    if let Some(o) = &observer {
        o.host_finished(run.slot, &outcome.result);
    }
    outcome
}

async fn drive_inner(
    run: &HostRun,
    opts: &DriveOptions,
    st: &mut HostState,
    observer: Option<&Observers>,
) -> Result<(), HostError> {
    let plan = &run.plan;
    if run
        .ws
        .as_ref()
        .is_some_and(|w| !w.is_server() && w.wire.url.is_empty())
    {
        return Err(HostError::Failed(
            "the WebSocket server did not start (see its host): nothing to load".into(),
        ));
    }
    let server = run.ws.as_ref().filter(|w| w.is_server());
    let jobs = match server {
        Some(_) => 0,
        None => run
            .share
            .jobs(plan.total_jobs(), plan.scenario.run.distribution),
    };
    let (req_tx, mut inbound, ready) = open_run(run, opts, jobs).await?;
    st.threads = ready.threads;
    if let Some(a) = &ready.agent {
        st.info = host_info(a);
    }
    if let Some(port) = server.and_then(|w| w.port.as_ref())
        && let Some(tx) = port.lock().ok().and_then(|mut p| p.take())
    {
        let _ = tx.send(ready.ws_port as u16);
    }

    // Credit: permits are jobs the agent allows us to send.
    let credit = Arc::new(Semaphore::new(0));
    credit.add_permits(ready.initial_credit.min(Semaphore::MAX_PERMITS as u64) as usize);
    let signals = FeedSignals {
        interrupt: run.interrupt.clone(),
        hold: run.ws.as_ref().and_then(|w| w.hold.clone()),
        ..FeedSignals::default()
    };
    let packed = opts.packed_batches && ready.batch_encoding >= u32::from(cwbench::packed::VERSION);
    let feeder = tokio::spawn(feed(
        run.plan.clone(),
        run.share,
        jobs,
        (opts.batch_jobs, packed),
        credit.clone(),
        signals.clone(),
        req_tx,
    ));
    let result = receive(
        run,
        opts,
        st,
        &mut inbound,
        &credit,
        &signals.stop,
        observer,
    )
    .await;
    credit.close();
    signals.over.cancel();
    let (sent, digest, cancelled) = match feeder.await {
        Ok(f) => (f.sent, f.digest.value(), f.cancelled),
        Err(_) => (0, Digest::new().value(), false),
    };
    st.accounting.sent = sent;
    if server.is_some() {
        // The clients sent the server's tasks, not the coordinator: the
        // run's task-set check compares them (run::websocket).
        st.accounting.sent = st.accounting.received;
    }
    st.digest_sent = digest;
    check_done(st, &result?)?;
    if cancelled {
        st.status = HostStatus::Interrupted;
        st.error = Some("interrupted: the agent cancelled the jobs it held".into());
    }
    Ok(())
}

/// Dials the agent, sends Start and waits for Ready; returns the request
/// stream's sender, the event stream and the Ready.
async fn open_run(
    run: &HostRun,
    opts: &DriveOptions,
    jobs: u64,
) -> Result<(mpsc::Sender<RunRequest>, Streaming<RunEvent>, proto::Ready), HostError> {
    let failed = HostError::Failed;
    let mut client = connect(&run.addr, opts)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let plan = &run.plan;
    let mut wire_plan = plan.to_proto();
    // A timed run keeps total_jobs = 0 (the agent says when it is over;
    // `jobs` only bounds the feed); otherwise it is this agent's share.
    if !plan.sizing.timed() {
        wire_plan.total_jobs = jobs;
    }
    wire_plan.job_log = run.job_log.is_some();
    wire_plan.websocket = run.ws.as_ref().map(|w| w.wire.clone());
    let start = proto::Start {
        run_id: run.run_id.clone(),
        protocol_version: cwbench::PROTOCOL_VERSION,
        profile: Some(run.profile.to_proto()),
        plan: Some(wire_plan),
    };
    let (req_tx, req_rx) = mpsc::channel::<RunRequest>(4);
    let _ = req_tx
        .send(RunRequest {
            msg: Some(Out::Start(start)),
        })
        .await;
    let resp = tokio::time::timeout(opts.ready_timeout, client.run(ReceiverStream::new(req_rx)))
        .await
        .map_err(|_| failed(format!("agent {} did not open the run stream", run.addr)))?
        .map_err(|s| failed(format!("agent {}: {}", run.addr, s.message())))?;
    let mut inbound = resp.into_inner();

    let first = tokio::time::timeout(opts.ready_timeout, inbound.message())
        .await
        .map_err(|_| {
            failed(format!(
                "agent {} sent no Ready within {} s",
                run.addr,
                opts.ready_timeout.as_secs()
            ))
        })?
        .map_err(|s| failed(format!("agent {}: {}", run.addr, s.message())))?;
    match first.and_then(|m| m.msg) {
        Some(In::Ready(r)) => Ok((req_tx, inbound, r)),
        Some(In::Error(e)) => Err(failed(agent_error(&run.addr, &e))),
        other => Err(failed(format!(
            "agent {} answered Start with {other:?} instead of Ready",
            run.addr
        ))),
    }
}

/// The run's events until Done: credit, snapshots, job records, and a
/// timed run's StopFeeding. Silence past two snapshot intervals and the
/// grace is a lost host.
async fn receive(
    run: &HostRun,
    opts: &DriveOptions,
    st: &mut HostState,
    inbound: &mut Streaming<RunEvent>,
    credit: &Semaphore,
    stop: &CancellationToken,
    observer: Option<&Observers>,
) -> Result<proto::Done, HostError> {
    let failed = HostError::Failed;
    let timed = run.plan.sizing.timed();
    let silence = Duration::from_millis(2 * u64::from(run.plan.scenario.run.snapshot_interval_ms))
        + opts.silence_grace;
    let mut last_msg = std::time::Instant::now();
    loop {
        let msg = match tokio::time::timeout(silence, inbound.message()).await {
            Err(_) => {
                return Err(HostError::Lost(format!(
                    "agent {} went silent for {:.1} s (no snapshot); marked lost",
                    run.addr,
                    silence.as_secs_f64()
                )));
            }
            Ok(Err(s)) => {
                return Err(HostError::Lost(format!(
                    "agent {} connection lost {:.1} s after its last message: {}",
                    run.addr,
                    last_msg.elapsed().as_secs_f64(),
                    s.message()
                )));
            }
            Ok(Ok(None)) => {
                return Err(HostError::Lost(format!(
                    "agent {} closed the run stream before Done",
                    run.addr
                )));
            }
            Ok(Ok(Some(m))) => {
                last_msg = std::time::Instant::now();
                m
            }
        };
        match msg.msg {
            Some(In::Credit(c)) => {
                let room = Semaphore::MAX_PERMITS.saturating_sub(credit.available_permits());
                credit.add_permits((c.jobs as usize).min(room));
            }
            Some(In::Snapshot(s)) => {
                st.snapshot(&s);
                if let (Some(o), Some(point)) = (observer, st.intervals.last()) {
                    o.snapshot(run.slot, &run.label, &s, point);
                }
            }
            Some(In::JobRecords(r)) => match &run.job_log {
                Some(sink) => {
                    if let Err(e) = sink.write(&r) {
                        st.error = Some(format!("cannot write the job log: {e}"));
                    }
                }
                None => {
                    return Err(failed(format!(
                        "agent {} sent job records nobody asked for",
                        run.addr
                    )));
                }
            },
            Some(In::StopFeeding(s)) if timed => {
                tracing::debug!(host = %run.label, released = s.released, "stop feeding");
                stop.cancel();
            }
            Some(In::StopFeeding(_)) => {
                return Err(failed(format!(
                    "agent {} sent StopFeeding in a run sized in jobs",
                    run.addr
                )));
            }
            Some(In::Done(d)) => return Ok(d),
            Some(In::Error(e)) => return Err(failed(agent_error(&run.addr, &e))),
            Some(In::Ready(_)) => {
                return Err(failed(format!("agent {} sent a second Ready", run.addr)));
            }
            None => return Err(failed(format!("agent {} sent an empty message", run.addr))),
        }
    }
}

/// Takes in the Done and runs the checks that make a run trustworthy.
fn check_done(st: &mut HostState, done: &proto::Done) -> Result<(), HostError> {
    st.done(done).map_err(HostError::Failed)?;
    if !st.accounting.balances() {
        return Err(HostError::Failed(format!(
            "accounting does not balance: {:?}",
            st.accounting
        )));
    }
    if done.digest != st.digest_sent {
        return Err(HostError::Failed(format!(
            "job digest mismatch: sent {}, agent received {}",
            hex(st.digest_sent),
            hex(done.digest)
        )));
    }
    Ok(())
}

fn agent_error(addr: &str, e: &proto::Error) -> String {
    let code = proto::error::Code::try_from(e.code).map_or_else(
        |_| format!("code {}", e.code),
        |c| c.as_str_name().to_string(),
    );
    format!("agent {addr}: {} ({code})", e.message)
}

pub(crate) fn host_info(a: &AgentInfo) -> HostInfo {
    HostInfo {
        hostname: a.hostname.clone(),
        logical_cores: a.logical_cores,
        cpu_model: a.cpu_model.clone(),
        os: a.os.clone(),
        agent_version: a.agent_version.clone(),
        runtime: a.runtime.clone(),
        cpu_set: a.cpu_set.clone(),
        label: a.label.clone(),
        in_process: false,
    }
}

/// Worker threads of the coordinator's runtime: one per core, at most 8.
/// Each host is its own `drive` task, so hosts decode and merge their
/// snapshots in parallel; idle threads cost nothing, so local agents on the
/// same machine lose no CPU to them. Beyond 8, merging even 256 hosts'
/// snapshots in bulk gains little and each thread keeps its own decoder.
pub fn runtime_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Feeds a host's events to the coordinator's own merge code without a
/// network: what `cwbench-bench coord-scale` times (256 hosts, 10 minutes of
/// snapshots each) to show the coordinator stays thin.
pub struct HostReplay {
    st: HostState,
}

impl HostReplay {
    pub fn new(run: &HostRun) -> Self {
        Self {
            st: HostState::new(run),
        }
    }

    /// One Snapshot, as `drive` handles it.
    pub fn snapshot(&mut self, s: &proto::Snapshot) {
        self.st.snapshot(s);
    }

    /// The Done, as `drive` handles it.
    pub fn done(&mut self, d: &proto::Done) -> Result<(), String> {
        self.st.done(d)
    }

    /// The host's result and histogram, as `drive` returns them.
    pub fn finish(self, run: &HostRun) -> HostOutcome {
        self.st.finish(run)
    }
}

impl std::fmt::Debug for HostReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostReplay").finish_non_exhaustive()
    }
}

/// What the coordinator keeps of a host while it runs: fixed-size
/// histograms and one small point per snapshot.
struct HostState {
    info: HostInfo,
    threads: u32,
    status: HostStatus,
    error: Option<String>,
    accounting: Accounting,
    digest_sent: u64,
    digest_received: Option<u64>,
    window_s: f64,
    classes: Vec<(Latencies, bool)>,
    overall: [Hist; 4],
    /// The same, summed from interval snapshots (used when Done never came),
    /// as plain count arrays: cheap to add to, read at most once.
    from_intervals: [Dense; 4],
    /// The interval's completion over several classes (reused).
    merged: Hist,
    restart: Summary,
    feed_stall_us: u64,
    snapshots: u64,
    next_seq: u64,
    intervals: Vec<IntervalPoint>,
    last_cpu_us: u64,
    last_busy_us: u64,
    class_names: Vec<String>,
    lateness: Summary,
    recovery: RecoveryResult,
    hlog: Option<crate::hlog::HlogSink>,
    /// A WebSocket run's figures (role set by `new`).
    ws: Option<WsHost>,
}

impl HostState {
    fn new(run: &HostRun) -> Self {
        Self {
            info: HostInfo::default(),
            threads: 0,
            status: HostStatus::Ok,
            error: None,
            accounting: Accounting::default(),
            digest_sent: 0,
            digest_received: None,
            window_s: 0.0,
            classes: Vec::new(),
            overall: [new_hist(), new_hist(), new_hist(), new_hist()],
            from_intervals: Default::default(),
            merged: new_hist(),
            restart: Summary::default(),
            feed_stall_us: 0,
            snapshots: 0,
            next_seq: 0,
            intervals: Vec::new(),
            last_cpu_us: 0,
            last_busy_us: 0,
            lateness: Summary::default(),
            recovery: RecoveryResult::default(),
            class_names: run.plan.classes.iter().map(|c| c.name.clone()).collect(),
            hlog: run.hlog.clone(),
            ws: run.ws.as_ref().map(|w| WsHost {
                role: if w.is_server() { "server" } else { "client" }.into(),
                // The empty set's digest, until Done says otherwise (a
                // failed host never does).
                task_set: hex(0),
                ..WsHost::default()
            }),
        }
    }

    fn counters(&mut self, c: &proto::Counters) {
        let a = &mut self.accounting;
        a.received = c.received;
        a.completed = c.completed;
        a.crashed = c.crashed;
        a.timed_out = c.timed_out;
        a.shed = c.shed;
        a.cancelled = c.cancelled;
        a.unreleased = c.unreleased;
        a.measured_completed = c.measured_completed;
        a.restarts = c.restarts;
        a.refused = c.refused;
        a.connection_lost = c.connection_lost;
        self.feed_stall_us = c.feed_stall_us;
        // From snapshots too: a client that fails sends no Done.
        if let Some(w) = &mut self.ws {
            (w.reconnects, w.connect_failed) = (c.reconnects, c.connect_failed);
        }
    }

    fn snapshot(&mut self, s: &proto::Snapshot) {
        if s.seq != self.next_seq {
            self.error = Some(format!(
                "snapshot {} arrived when {} was expected",
                s.seq, self.next_seq
            ));
        }
        self.next_seq = s.seq + 1;
        self.snapshots += 1;
        let before = self.accounting.measured_completed;
        if let Some(c) = &s.counters {
            self.counters(c);
        }
        // Each histogram is decoded once, straight from the bytes: the
        // interval's completion gives the point's p50/p99/max (summed over
        // the classes when there are several), and every part goes into
        // the fallback sums, so a host lost before Done still has all its
        // latencies.
        let one_class = s.classes.len() == 1;
        let mut completion = [0u64; 3];
        if !one_class {
            self.merged.reset();
        }
        for c in &s.classes {
            let parts = [&c.completion, &c.queue_wait, &c.service, &c.sleep_overshoot];
            let (sums, merged) = (&mut self.from_intervals, &mut self.merged);
            let hlog = self.hlog.is_some();
            let decoded = with_decoded(&c.completion, |v| {
                v.add_to(&mut sums[0]);
                if one_class {
                    let [p50, p99] = v.quantiles([0.5, 0.99]);
                    completion = [p50, p99, v.max()];
                } else {
                    let _ = v.record_into(merged);
                }
                hlog.then(|| {
                    let mut h = new_hist();
                    v.record_into(&mut h).map(|()| h)
                })
            });
            for (k, bytes) in parts.iter().enumerate().skip(1) {
                let _ = self.from_intervals[k].merge_encoded(bytes);
            }
            if let (Some(sink), Ok(Some(Ok(ch)))) = (&self.hlog, decoded) {
                let class = self
                    .class_names
                    .get(c.class_id as usize)
                    .map_or_else(|| format!("class{}", c.class_id), Clone::clone);
                sink.interval(
                    &class,
                    Duration::from_micros(s.elapsed_us),
                    Duration::from_micros(s.interval_us),
                    ch,
                );
            }
        }
        if !one_class && !self.merged.is_empty() {
            let h = &self.merged;
            completion = [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()];
        }
        let g = s.gauges.unwrap_or_default();
        let cpu = g.cpu_user_us + g.cpu_system_us;
        let secs = s.interval_us as f64 / 1e6;
        let p = IntervalPoint {
            seq: s.seq,
            t_s: s.elapsed_us as f64 / 1e6,
            jobs_per_s: if secs > 0.0 {
                (self.accounting.measured_completed - before) as f64 / secs
            } else {
                0.0
            },
            p50_us: completion[0],
            p99_us: completion[1],
            max_us: completion[2],
            queue_depth: g.queue_depth,
            in_flight: g.in_flight,
            rss_bytes: g.rss_bytes,
            cpu_cores: if secs > 0.0 {
                cpu.saturating_sub(self.last_cpu_us) as f64 / 1e6 / secs
            } else {
                0.0
            },
            ..IntervalPoint::default()
        };
        let [late_p50, late_p99] =
            with_decoded(&s.lateness, |v| v.quantiles([0.5, 0.99])).unwrap_or([0, 0]);
        let p = IntervalPoint {
            lateness_p50_us: late_p50,
            lateness_p99_us: late_p99,
            connections: g.connections,
            alive_tasks: g.alive_tasks,
            global_queue_depth: g.global_queue_depth,
            runtime_busy_cores: if secs > 0.0 {
                g.workers_busy_us.saturating_sub(self.last_busy_us) as f64 / 1e6 / secs
            } else {
                0.0
            },
            ..p
        };
        self.last_busy_us = g.workers_busy_us;
        self.last_cpu_us = cpu;
        if let Some(w) = &mut self.ws {
            w.peak_connections = w.peak_connections.max(g.connections);
            w.cpu_us = cpu;
        }
        self.intervals.push(p);
    }

    fn done(&mut self, d: &proto::Done) -> Result<(), String> {
        if let Some(c) = &d.totals {
            self.counters(c);
        }
        self.digest_received = Some(d.digest);
        if let Some(w) = &mut self.ws {
            w.tasks = d.task_count;
            w.task_set = hex(d.task_set);
            let mut h = new_hist();
            merge_encoded(&mut h, &d.connect).map_err(|e| e.to_string())?;
            w.connect = Summary::of(&h);
        }
        self.window_s = d.measured_window_us as f64 / 1e6;
        self.classes = vec![(Latencies::default(), false); self.class_names.len()];
        for c in &d.classes {
            let idx = c.class_id as usize;
            if idx >= self.classes.len() {
                return Err(format!(
                    "Done names class {idx}, the plan has {}",
                    self.classes.len()
                ));
            }
            let mut hs = [new_hist(), new_hist(), new_hist(), new_hist()];
            let parts = [&c.completion, &c.queue_wait, &c.service, &c.sleep_overshoot];
            for (k, bytes) in parts.iter().enumerate() {
                merge_encoded(&mut hs[k], bytes).map_err(|e| e.to_string())?;
                let _ = self.overall[k].add(&hs[k]);
            }
            self.classes[idx] = (latencies(&hs), true);
        }
        let mut r = new_hist();
        merge_encoded(&mut r, &d.restart_latency).map_err(|e| e.to_string())?;
        self.restart = Summary::of(&r);
        let mut l = new_hist();
        merge_encoded(&mut l, &d.lateness).map_err(|e| e.to_string())?;
        self.lateness = Summary::of(&l);
        let mut rv = new_hist();
        merge_encoded(&mut rv, &d.recovery).map_err(|e| e.to_string())?;
        self.recovery = RecoveryResult {
            faults: d.faults,
            interval: Summary::of(&rv),
            unrecovered: d.unrecovered,
            no_baseline: d.no_baseline,
            no_dip: d.no_dip,
            marks: d
                .marks
                .iter()
                .map(|m| FaultMark {
                    t_s: m.at_us as f64 / 1e6,
                    recovery_ms: m.recovery_us.map(|r| r as f64 / 1000.0),
                })
                .collect(),
        };
        Ok(())
    }

    fn finish(mut self, run: &HostRun) -> HostOutcome {
        if self.digest_received.is_none() && self.overall[0].is_empty() {
            // No Done: what the snapshots told us is all there is. The window
            // is then the time covered by the snapshots.
            let f = &self.from_intervals;
            self.overall = [
                f[0].to_hist(),
                f[1].to_hist(),
                f[2].to_hist(),
                f[3].to_hist(),
            ];
            if let Some(last) = self.intervals.last() {
                self.window_s = last.t_s;
            }
        }
        let throughput = if self.window_s > 0.0 {
            self.accounting.measured_completed as f64 / self.window_s
        } else {
            0.0
        };
        let result = HostResult {
            label: run.label.clone(),
            addr: run.addr.clone(),
            info: self.info,
            threads: self.threads,
            status: self.status,
            error: self.error,
            accounting: self.accounting,
            digest_sent: hex(self.digest_sent),
            digest_received: self.digest_received.map(hex),
            window_s: self.window_s,
            throughput,
            latency: latencies(&self.overall),
            classes: self
                .classes
                .iter()
                .zip(&self.class_names)
                .filter(|((_, seen), _)| *seen)
                .map(|((l, _), n)| ClassResult {
                    class: n.clone(),
                    latency: *l,
                })
                .collect(),
            restart_latency: self.restart,
            feed_stall_ms: self.feed_stall_us as f64 / 1000.0,
            snapshots: self.snapshots,
            intervals: self.intervals,
            lateness: self.lateness,
            recovery: self.recovery,
            spectrum: crate::result::spectrum(&self.overall[0]),
            websocket: self.ws,
        };
        let ws = result.websocket.is_some();
        let [completion, queue_wait, service, _] = self.overall;
        HostOutcome {
            result,
            completion,
            parts: ws.then_some([queue_wait, service]),
        }
    }
}

fn latencies(h: &[Hist; 4]) -> Latencies {
    Latencies {
        completion: Summary::of(&h[0]),
        queue_wait: Summary::of(&h[1]),
        service: Summary::of(&h[2]),
        sleep_overshoot: Summary::of(&h[3]),
    }
}
