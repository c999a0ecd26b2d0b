//! One `Run` stream: the protocol state machine. Start -> Ready, then job
//! batches within credit, snapshots on a timer, and Done (or Error) at the
//! end. Every wait has a deadline; a vanished coordinator cancels the run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cwbench::batch::for_each_job;
use cwbench::digest::Digest;
use cwbench::generator::Job;
use cwbench::proto::error::Code;
use cwbench::proto::run_event::Msg as Out;
use cwbench::proto::run_request::Msg as In;
use cwbench::proto::{self, RunEvent, RunRequest};
use cwbench::spec::{
    Backpressure, Compute, Dispatch, Flavor, RecoverySpec, RunSpec, WebSocketSpec, WsRole,
    placements,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Status, Streaming};

use crate::host::{AgentConfig, Slot, agent_info};
use crate::phase::{CANCEL_GRACE, Effect, Event, Machine, Phase};
use crate::recorder::Aggregator;
use crate::span::{End, Warmup};
use crate::workload::{Config, Outcome, Workload};

type Tx = mpsc::Sender<Result<RunEvent, Status>>;

fn ev(msg: Out) -> Result<RunEvent, Status> {
    Ok(RunEvent { msg: Some(msg) })
}

async fn fail(tx: &Tx, code: Code, message: String) {
    tracing::warn!("run rejected or failed: {message}");
    let _ = tx.send(Ok(error_event(code, message))).await;
}

/// `v` if within `min..=max`, else an error naming the field and the range.
fn range(name: &str, v: u64, min: u64, max: u64) -> Result<u64, String> {
    if v < min || v > max {
        Err(format!("{name} = {v}: must be in {min}..={max}"))
    } else {
        Ok(v)
    }
}

/// Checks a Start: the run spec's rules (`cwbench::spec`, shared with the
/// scenario), then this agent's own host limits. Returns the workload config.
pub fn validate_start(cfg: &AgentConfig, start: &proto::Start) -> Result<Config, String> {
    let spec = RunSpec::try_from(start).map_err(|r| r.to_string())?;
    let plan = start.plan.as_ref().ok_or("Start.plan is missing")?;
    let (l, p) = (&cfg.limits, &spec.profile);
    let threads = p.threads.unwrap_or(cfg.threads);
    range("profile.threads", threads.into(), 1, l.max_threads.into())?;
    let workers = range("profile.workers", p.workers.into(), 1, l.max_workers.into())?;
    let bound = range(
        "profile.queue_bound",
        p.queue_bound.into(),
        1,
        l.max_queue_bound.into(),
    )?;
    let producers = range(
        "profile.producers",
        p.producers.into(),
        1,
        l.max_producers.into(),
    )?;
    if p.runtime == Flavor::Beam
        && let Some(reason) = crate::beam::unavailable_reason()
    {
        return Err(format!(
            "profile.runtime = \"beam\": unavailable here: {reason}"
        ));
    }
    let threads = match p.schedulers {
        Some(s) => range(
            "profile.schedulers",
            s.into(),
            1,
            l.max_threads.min(1024).into(),
        )? as u32,
        None => threads,
    };
    // One entry per class when any class has its own placement (the spec
    // checked the list's length against plan.classes).
    let class_compute: Vec<Compute> = placements(p, &spec.class_compute).collect();
    let uses_pool = if class_compute.is_empty() {
        p.compute == Compute::Pool
    } else {
        class_compute.contains(&Compute::Pool)
    };
    let compute_threads = if uses_pool {
        range(
            "profile.compute_threads",
            p.compute_threads.into(),
            1,
            l.max_threads.into(),
        )? as usize
    } else {
        0
    };
    let (warmup, end) = span_of(plan, spec.open)?;
    range(
        "plan.classes (count)",
        plan.classes.len() as u64,
        1,
        l.max_classes as u64,
    )?;
    range("plan.prefetch_jobs", plan.prefetch_jobs.into(), 1, u64::MAX)?;
    let sup = &spec.supervisor;
    let mut c = Config {
        runtime: p.runtime,
        threads: if p.runtime == Flavor::CurrentThread {
            1
        } else {
            threads as usize
        },
        workers: workers as usize,
        queue_bound: bound as usize,
        producers: producers as usize,
        shed: p.backpressure == Backpressure::Shed,
        open: spec.open,
        dispatch: p.dispatch,
        compute: p.compute,
        class_compute,
        yield_every: p.yield_every.max(1),
        compute_threads,
        probe_interval: Duration::from_micros(spec.probe_interval_us.into()),
        cpus: cfg.cpus.clone(),
        job_log: plan.job_log,
        kill_jobs: spec.kill_jobs.iter().copied().collect(),
        job_timeout: spec
            .job_timeout_ms
            .map(|ms| Duration::from_millis(ms.into())),
        warmup,
        end,
        classes: plan.classes.len(),
        credit_chunk: 0, // set by the caller from the granted window
        recycle_jobs: 0, // the window too
        max_restarts: sup.max_restarts,
        restart_window: Duration::from_millis(sup.restart_window_ms.into()),
        backoff: Duration::from_millis(sup.backoff_ms.into()),
        max_backoff: Duration::from_millis(sup.max_backoff_ms.max(sup.backoff_ms).into()),
        remote: None,
        serve: None,
    };
    match &spec.websocket {
        Some((WsRole::Client(url), w)) => {
            let tls_ca = plan.websocket.as_ref().map_or(&[][..], |w| &w.tls_ca);
            let tls = crate::ws::tls_config(tls_ca)?;
            as_client(&mut c, url, w, cfg.threads, tls);
        }
        Some((WsRole::Server, _)) => c.serve = plan.websocket.clone(),
        None => {}
    }
    Ok(c)
}

/// A WebSocket client's engine: each job a task sent to the server, on
/// the agent's own threads (the profile is the server's), task-per-job
/// with `connections x in_flight` tasks outstanding at most.
fn as_client(
    c: &mut Config,
    url: &str,
    w: &WebSocketSpec,
    threads: u32,
    tls: Option<Arc<rustls::ClientConfig>>,
) {
    c.runtime = Flavor::MultiThread;
    c.threads = threads.max(1) as usize;
    c.dispatch = Dispatch::TaskPerJob;
    (c.workers, c.producers, c.shed) = (1, 1, false);
    (c.compute, c.compute_threads) = (Compute::Inline, 0);
    c.class_compute.clear();
    c.kill_jobs.clear();
    c.queue_bound = (w.connections as usize * w.in_flight as usize).min(1 << 20);
    c.remote = Some(crate::ws::client::Remote {
        url: url.to_string(),
        connections: w.connections as usize,
        connect_rate: w.connect_rate,
        in_flight: w.in_flight as usize,
        json: w.json,
        tls,
    });
}

/// What a plan measures and when it ends (see `crate::span`), validated.
fn span_of(plan: &proto::Plan, open: bool) -> Result<(Warmup, End), String> {
    const MAX_MS: u64 = 86_400_000;
    let timed = plan.warmup_ms > 0 || plan.duration_ms > 0 || plan.measured_jobs > 0;
    if !timed {
        return Ok((Warmup::Jobs(plan.warmup_jobs), End::Fed));
    }
    if open {
        return Err(
            "plan.duration_ms/warmup_ms/measured_jobs: a timed run must be closed loop (the coordinator sizes an open loop in jobs)"
                .into(),
        );
    }
    let warmup = match plan.warmup_ms {
        0 => Warmup::Jobs(plan.warmup_jobs),
        ms => Warmup::For(Duration::from_millis(range(
            "plan.warmup_ms",
            ms.into(),
            1,
            MAX_MS,
        )?)),
    };
    let end = match (plan.duration_ms, plan.measured_jobs) {
        (0, 0) => {
            return Err(format!(
                "plan.warmup_ms = {}: a timed warm-up needs duration_ms or measured_jobs",
                plan.warmup_ms
            ));
        }
        (0, n) if plan.warmup_ms == 0 => {
            return Err(format!(
                "plan.measured_jobs = {n}: only with warmup_ms (otherwise total_jobs says it)"
            ));
        }
        (0, n) => End::Jobs(n),
        (ms, 0) => End::After(Duration::from_millis(range(
            "plan.duration_ms",
            ms.into(),
            1,
            MAX_MS,
        )?)),
        (ms, n) => {
            return Err(format!(
                "plan.duration_ms = {ms} with measured_jobs = {n}: give one of them"
            ));
        }
    };
    Ok((warmup, end))
}

/// Recovery-interval parameters of a plan (0 = default), validated.
pub fn recovery_params(plan: &proto::Plan) -> Result<crate::recovery::Params, String> {
    let r = RecoverySpec::from_wire(plan);
    r.check().map_err(|e| e.to_string())?;
    let bucket_ms = crate::recovery::BUCKET_US / 1000;
    Ok(crate::recovery::Params {
        window: u64::from(r.window_ms) / bucket_ms,
        band: r.band,
        baseline: u64::from(r.baseline_ms) / bucket_ms,
    })
}

/// An Error event, the terminal message of a failed run.
pub fn error_event(code: proto::error::Code, message: impl Into<String>) -> RunEvent {
    RunEvent {
        msg: Some(proto::run_event::Msg::Error(proto::Error {
            code: code as i32,
            message: message.into(),
        })),
    }
}

/// Waits for the Start that opens a Run stream and checks its protocol
/// version; None once the stream was answered with an error or is gone.
async fn first_start(
    cfg: &AgentConfig,
    inbound: &mut Streaming<RunRequest>,
    tx: &Tx,
) -> Option<proto::Start> {
    let first = tokio::time::timeout(cfg.handshake_timeout, inbound.message()).await;
    let start = match first {
        Ok(Ok(Some(RunRequest {
            msg: Some(In::Start(s)),
        }))) => s,
        Ok(Ok(Some(_))) => {
            let m = "the first message of a Run must be Start";
            fail(tx, Code::Protocol, m.into()).await;
            return None;
        }
        Ok(Ok(None)) | Ok(Err(_)) => return None,
        Err(_) => {
            let secs = cfg.handshake_timeout.as_secs();
            let m = format!("no Start within {secs} s of opening the Run stream");
            fail(tx, Code::Protocol, m).await;
            return None;
        }
    };
    if start.protocol_version != cwbench::PROTOCOL_VERSION {
        let m = format!(
            "protocol version mismatch: coordinator speaks {}, agent {} speaks {}",
            start.protocol_version,
            cwbench::VERSION,
            cwbench::PROTOCOL_VERSION
        );
        fail(tx, Code::Version, m).await;
        return None;
    }
    Some(start)
}

/// Drives one Run stream to its end: the handshake (Start, checks, the
/// slot, the workload, Ready), then [`drive`], then the report.
pub async fn run(
    cfg: Arc<AgentConfig>,
    slot: Arc<Slot>,
    mut inbound: Streaming<RunRequest>,
    tx: Tx,
    peer: String,
) {
    let Some(start) = first_start(&cfg, &mut inbound, &tx).await else {
        return;
    };
    let mut wcfg = match validate_start(&cfg, &start) {
        Ok(c) => c,
        Err(e) => return fail(&tx, Code::Invalid, e).await,
    };
    let run_id = start.run_id.clone();
    let _guard = match slot.claim(&run_id) {
        Ok(g) => g,
        Err(busy) => {
            let m = format!("agent is busy with run {busy}; run {run_id} refused");
            return fail(&tx, Code::Busy, m).await;
        }
    };
    let plan = start.plan.unwrap_or_default();
    let window = u64::from(plan.prefetch_jobs.min(cfg.limits.max_prefetch_jobs));
    wcfg.credit_chunk = (window / (4 * wcfg.producers as u64)).max(1);
    wcfg.recycle_jobs = window;
    let threads = wcfg.threads as u32;
    let mut s = Session {
        credit: window,
        digest: Digest::new(),
        next_id: 0,
        nclasses: wcfg.classes,
        open: wcfg.open,
        max_batch: cfg.limits.max_batch_jobs,
    };
    let runtime = wcfg.runtime;
    if wcfg.remote.is_some() || wcfg.serve.is_some() {
        let fds = crate::ws::raise_fd_limit();
        tracing::info!(run = %run_id, ?fds, "open-file limit for a WebSocket run");
    }
    let mut wl = match Workload::start(wcfg) {
        Ok(w) => w,
        Err(e) => return fail(&tx, Code::Internal, e).await,
    };
    tracing::info!(run = %run_id, %peer, threads, "run started");
    let mut info = agent_info(&cfg, Some(run_id.clone()));
    if runtime == Flavor::Beam {
        // This run's runtime, for the report's host table.
        info.runtime = "beam".into();
    }
    let ready = proto::Ready {
        agent: Some(info),
        threads,
        initial_credit: window,
        batch_encoding: cwbench::packed::VERSION.into(),
        ws_port: wl.ws_port.into(),
    };
    if tx.send(ev(Out::Ready(ready))).await.is_err() {
        return;
    }
    let mut agg = Aggregator::new(s.nclasses, recovery_params(&plan).unwrap_or_default());
    let period = Duration::from_millis(plan.snapshot_interval_ms.into());
    let (outcome, m) = drive(
        &mut s,
        &mut wl,
        &mut agg,
        &mut inbound,
        &tx,
        period,
        &run_id,
    )
    .await;
    report(&s, &wl, &mut agg, &tx, &run_id, outcome, m).await;
    // Dropping the workload (and the slot guard) ends the run.
    drop(wl);
    // A client that is gone must not keep this alive: dropping tx closes the stream.
}

/// The run's loop: inbound messages, credit, snapshots on a timer, and the
/// end of a timed run's measured part, until the workload finishes (or a
/// cancelled one overstays its grace).
async fn drive(
    s: &mut Session,
    wl: &mut Workload,
    agg: &mut Aggregator,
    inbound: &mut Streaming<RunRequest>,
    tx: &Tx,
    period: Duration,
    run_id: &str,
) -> (Outcome, Machine) {
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut m = Machine::default();
    let stopped = wl.stopped.clone();
    let outcome = loop {
        let event = tokio::select! {
            msg = inbound.message(), if m.inbound_open => s.inbound(msg, &m, wl),
            Some(n) = wl.credit.recv() => {
                s.credit += n;
                match tx.send(ev(Out::Credit(proto::Credit { jobs: n }))).await {
                    Ok(()) => continue,
                    Err(_) => Event::OutboundGone,
                }
            }
            _ = stopped.cancelled(), if !m.stop_sent() => Event::MeasuredPartOver,
            _ = tick.tick() => {
                send_job_log(tx, wl).await;
                let snap = agg.snapshot(&wl.recorder, wl.gauges());
                if tx.send(ev(Out::Snapshot(snap))).await.is_ok() {
                    continue;
                }
                tracing::warn!(run = %run_id, "coordinator gone; cancelling");
                Event::OutboundGone
            }
            r = &mut wl.finished => {
                break r.unwrap_or_else(|_| Outcome::Internal("the run thread died".into()));
            }
            _ = sleep_until(m.deadline()) => {
                break Outcome::Internal(format!(
                    "the workload did not stop within {} ms of being cancelled",
                    CANCEL_GRACE.as_millis()
                ));
            }
        };
        match m.on(event, Instant::now()) {
            Effect::Nothing => {}
            Effect::EndJobs => wl.end_of_jobs(),
            Effect::Cancel => wl.cancel(),
            Effect::SendStopFeeding => {
                let released = wl.recorder.released.load(Ordering::Relaxed);
                tracing::info!(run = %run_id, released, "measured part over; stop feeding");
                let stop = proto::StopFeeding { released };
                if tx.send(ev(Out::StopFeeding(stop))).await.is_err()
                    && m.on(Event::OutboundGone, Instant::now()) == Effect::Cancel
                {
                    wl.cancel();
                }
            }
        }
    };
    (outcome, m)
}

/// The end of a run: the last snapshot and job records, then Done (or the
/// first failure as an Error).
async fn report(
    s: &Session,
    wl: &Workload,
    agg: &mut Aggregator,
    tx: &Tx,
    run_id: &str,
    outcome: Outcome,
    m: Machine,
) {
    let snap = agg.snapshot(&wl.recorder, wl.gauges());
    let _ = tx.send(ev(Out::Snapshot(snap))).await;
    // The pool has stopped: this drains every record left.
    send_job_log(tx, wl).await;
    let done = agg.done(&wl.recorder, s.digest.value());
    let t = done.totals.unwrap_or_default();
    tracing::info!(
        run = %run_id,
        received = t.received,
        completed = t.completed,
        crashed = t.crashed,
        cancelled = t.cancelled,
        "run ended"
    );
    let terminal = match (m.failure, outcome) {
        (Some((code, m)), _) => error_event(code, m),
        (None, Outcome::PoolFailed(m)) => error_event(Code::PoolFailed, m),
        (None, Outcome::Internal(m)) => error_event(Code::Internal, m),
        (None, Outcome::Finished) => RunEvent {
            msg: Some(Out::Done(done)),
        },
    };
    let _ = tx.send(Ok(terminal)).await;
}

/// Sends the job records logged since the last call, in messages of at most
/// 65,536 jobs (about 2 MiB).
async fn send_job_log(tx: &Tx, wl: &Workload) {
    let Some(all) = wl.recorder.take_job_log() else {
        return;
    };
    const CHUNK: usize = 65_536;
    let n = all.ids.len();
    for at in (0..n).step_by(CHUNK) {
        let r = at..(at + CHUNK).min(n);
        let part = proto::JobRecords {
            ids: all.ids[r.clone()].to_vec(),
            class_ids: all.class_ids[r.clone()].to_vec(),
            origin_us: all.origin_us[r.clone()].to_vec(),
            start_us: all.start_us[r.clone()].to_vec(),
            end_us: all.end_us[r.clone()].to_vec(),
            outcomes: all.outcomes[r].to_vec(),
        };
        if tx.send(ev(Out::JobRecords(part))).await.is_err() {
            return;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// What the session tracks of the job stream: credit, the digest, ids.
struct Session {
    credit: u64,
    digest: Digest,
    next_id: u64,
    nclasses: usize,
    open: bool,
    max_batch: usize,
}

impl Session {
    /// One inbound message as an event of the run (a batch is checked and
    /// fed on the way).
    fn inbound(
        &mut self,
        msg: Result<Option<RunRequest>, Status>,
        m: &Machine,
        wl: &mut Workload,
    ) -> Event {
        let msg = match msg {
            Ok(Some(RunRequest { msg: Some(msg) })) => msg,
            Ok(Some(RunRequest { msg: None })) => {
                return Event::Violation(Code::Protocol, "empty RunRequest".into());
            }
            Ok(None) | Err(_) => {
                if m.phase == Phase::Feeding {
                    tracing::warn!("coordinator stream ended before EndOfJobs; cancelling");
                }
                return Event::InboundClosed;
            }
        };
        match msg {
            In::Jobs(_) if !m.accepts_jobs() => {
                Event::Violation(Code::Protocol, "JobBatch after EndOfJobs".into())
            }
            In::Jobs(b) => match self.jobs(&b, wl) {
                Ok(()) => Event::Fed,
                Err((code, message)) => Event::Violation(code, message),
            },
            In::End(_) => Event::EndOfJobs,
            In::Cancel(c) => {
                tracing::info!("run cancelled by the coordinator: {}", c.reason);
                Event::Cancelled
            }
            In::Start(_) => Event::Violation(
                Code::Protocol,
                "a second Start on the same Run stream".into(),
            ),
        }
    }

    /// Checks a batch against the credit and the ids so far, decodes it
    /// into the digest and feeds it.
    fn jobs(&mut self, b: &proto::JobBatch, wl: &mut Workload) -> Result<(), (Code, String)> {
        let n = cwbench::batch::batch_len(b).map_err(|e| (Code::Protocol, e.to_string()))?;
        if n > self.max_batch {
            return Err((
                Code::Protocol,
                format!("JobBatch of {n} jobs: must be at most {}", self.max_batch),
            ));
        }
        if n as u64 > self.credit {
            return Err((
                Code::Protocol,
                format!(
                    "credit exceeded: batch of {n} jobs with {} jobs of credit left",
                    self.credit
                ),
            ));
        }
        if b.first_id < self.next_id {
            return Err((
                Code::Protocol,
                format!(
                    "JobBatch.first_id {} goes backwards (next id at least {})",
                    b.first_id, self.next_id
                ),
            ));
        }
        let mut jobs: Vec<Job> = wl.buffer(n);
        let digest = &mut self.digest;
        for_each_job(b, self.nclasses, self.open, |j| {
            digest.push(&j);
            jobs.push(j);
        })
        .map_err(|e| (Code::Protocol, e.to_string()))?;
        self.credit -= n as u64;
        self.next_id = b.first_id + n as u64;
        wl.recorder.received.fetch_add(n as u64, Ordering::Relaxed);
        wl.feed(jobs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(warmup_jobs: u64, warmup_ms: u32, duration_ms: u32, measured_jobs: u64) -> proto::Plan {
        proto::Plan {
            warmup_jobs,
            warmup_ms,
            duration_ms,
            measured_jobs,
            ..Default::default()
        }
    }

    #[test]
    fn a_plan_s_span_by_count_or_by_time() {
        let ms = Duration::from_millis;
        assert_eq!(
            span_of(&plan(7, 0, 0, 0), true),
            Ok((Warmup::Jobs(7), End::Fed))
        );
        assert_eq!(
            span_of(&plan(0, 200, 1000, 0), false),
            Ok((Warmup::For(ms(200)), End::After(ms(1000))))
        );
        assert_eq!(
            span_of(&plan(5, 0, 1000, 0), false),
            Ok((Warmup::Jobs(5), End::After(ms(1000))))
        );
        assert_eq!(
            span_of(&plan(0, 200, 0, 9), false),
            Ok((Warmup::For(ms(200)), End::Jobs(9)))
        );
    }

    #[test]
    fn senseless_spans_are_refused_with_the_field() {
        let e = span_of(&plan(0, 200, 1000, 0), true).unwrap_err();
        assert!(e.contains("closed loop"), "{e}");
        let e = span_of(&plan(0, 200, 0, 0), false).unwrap_err();
        assert!(e.starts_with("plan.warmup_ms = 200"), "{e}");
        let e = span_of(&plan(0, 0, 0, 9), false).unwrap_err();
        assert!(e.starts_with("plan.measured_jobs = 9"), "{e}");
        let e = span_of(&plan(0, 1, 5, 9), false).unwrap_err();
        assert!(e.contains("give one of them"), "{e}");
        let e = span_of(&plan(0, 0, 86_400_001, 0), false).unwrap_err();
        assert_eq!(e, "plan.duration_ms = 86400001: must be in 1..=86400000");
    }
}

/// The run spec's rules reached from both ends: a scenario file (the
/// coordinator) and a `Start` (the agent) must refuse the same bad runs for
/// the same reason.
#[cfg(test)]
mod two_paths {
    use cwbench::scenario::{self, Limits, PARITY_TOML, ScenarioError};
    use cwbench::spec::{Backpressure, Compute, Dispatch, Flavor, Profile, RunSpec};

    use super::*;

    type Edit = fn(&mut Profile, &mut proto::Plan);
    /// (what, TOML replacements on the parity scenario, the scenario key
    /// refused, the same change on the wire).
    type Row = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        &'static str,
        Edit,
    );

    fn rows() -> Vec<Row> {
        let workers1 = ("workers = 64", "workers = 1");
        vec![
            (
                "shed with serial",
                vec![
                    workers1,
                    ("\"block\"", "\"shed\""),
                    ("\"pool\"", "\"serial\""),
                ],
                "profile.backpressure",
                |p, _| {
                    p.workers = 1;
                    p.backpressure = Backpressure::Shed;
                    p.dispatch = Dispatch::Serial;
                },
            ),
            (
                "shed with spawn-await",
                vec![
                    workers1,
                    ("\"block\"", "\"shed\""),
                    ("\"pool\"", "\"spawn-await\""),
                ],
                "profile.backpressure",
                |p, _| {
                    p.workers = 1;
                    p.backpressure = Backpressure::Shed;
                    p.dispatch = Dispatch::SpawnAwait;
                },
            ),
            (
                "a worker pool size without a pool",
                vec![("\"pool\"", "\"task-per-job\"")],
                "profile.workers",
                |p, _| p.dispatch = Dispatch::TaskPerJob,
            ),
            (
                "the BEAM with a mailbox",
                vec![("\"pool\"", "\"mailbox\"\nruntime = \"beam\"")],
                "profile.dispatch",
                |p, _| {
                    p.runtime = Flavor::Beam;
                    p.dispatch = Dispatch::Mailbox;
                },
            ),
            (
                "a BEAM WebSocket server pulling from a pool",
                vec![
                    ("[supervisor]", "[websocket]\n\n[supervisor]"),
                    (
                        "compute = \"inline\"",
                        "compute = \"inline\"\nruntime = \"beam\"",
                    ),
                ],
                "profile.dispatch",
                |p, plan| {
                    p.runtime = Flavor::Beam;
                    plan.websocket = Some(proto::WebSocket {
                        role: proto::web_socket::Role::Server as i32,
                        ..cwbench::spec::WebSocketSpec::default().to_proto()
                    });
                },
            ),
            (
                "the BEAM computing in a blocking pool",
                vec![("\"inline\"", "\"blocking\"\nruntime = \"beam\"")],
                "profile.compute",
                |p, _| {
                    p.runtime = Flavor::Beam;
                    p.compute = Compute::Blocking;
                },
            ),
            (
                "the BEAM with a class computing in a blocking pool",
                vec![
                    (
                        "compute = \"inline\"",
                        "compute = \"inline\"\nruntime = \"beam\"",
                    ),
                    (
                        "crash_probability = 0.0005",
                        "crash_probability = 0.0005\ncompute = \"blocking\"",
                    ),
                ],
                "class[0].compute",
                |p, plan| {
                    p.runtime = Flavor::Beam;
                    plan.class_compute = vec![proto::Compute::Blocking as i32];
                },
            ),
            (
                "the BEAM shedding",
                vec![("\"block\"", "\"shed\"\nruntime = \"beam\"")],
                "profile.backpressure",
                |p, _| {
                    p.runtime = Flavor::Beam;
                    p.backpressure = Backpressure::Shed;
                },
            ),
            (
                "the BEAM with two producers",
                vec![("producers = 1", "producers = 2\nruntime = \"beam\"")],
                "profile.producers",
                |p, _| {
                    p.runtime = Flavor::Beam;
                    p.producers = 2;
                },
            ),
            (
                "a current-thread runtime on two threads",
                vec![(
                    "workers = 64",
                    "workers = 64\nthreads = 2\nruntime = \"current-thread\"",
                )],
                "profile.threads",
                |p, _| {
                    p.runtime = Flavor::CurrentThread;
                    p.threads = Some(2);
                },
            ),
            (
                "killing a worker where there is none",
                vec![
                    workers1,
                    ("\"pool\"", "\"task-per-job\""),
                    (
                        "[[class]]",
                        "[[fault]]\nkind = \"kill-worker\"\nat_job = 5\n\n[[class]]",
                    ),
                ],
                "fault[0].kind",
                |p, plan| {
                    p.workers = 1;
                    p.dispatch = Dispatch::TaskPerJob;
                    plan.kill_jobs = vec![5];
                },
            ),
            (
                "a recovery window of part of a bucket",
                vec![("[supervisor]", "[recovery]\nwindow_ms = 15\n\n[supervisor]")],
                "recovery.window_ms",
                |_, plan| plan.recovery_window_ms = 15,
            ),
            (
                "a recovery band of 150%",
                vec![("[supervisor]", "[recovery]\nband = 1.5\n\n[supervisor]")],
                "recovery.band",
                |_, plan| plan.recovery_band = 1.5,
            ),
            (
                "a short baseline",
                vec![(
                    "[supervisor]",
                    "[recovery]\nbaseline_ms = 200\n\n[supervisor]",
                )],
                "recovery.baseline_ms",
                |_, plan| plan.recovery_baseline_ms = 200,
            ),
            (
                "a restart backoff over a minute",
                vec![("max_restarts = 0", "max_restarts = 0\nbackoff_ms = 70000")],
                "supervisor.backoff_ms",
                |_, plan| plan.backoff_ms = 70_000,
            ),
            (
                "restarts limited in no window",
                vec![("max_restarts = 0", "max_restarts = 3")],
                "supervisor.restart_window_ms",
                |_, plan| plan.max_restarts = 3,
            ),
            (
                "a job timeout over an hour",
                vec![("[profile]", "job_timeout_ms = 3600001\n\n[profile]")],
                "run.job_timeout_ms",
                |_, plan| plan.job_timeout_ms = 3_600_001,
            ),
            (
                "snapshots too often",
                vec![("snapshot_interval_ms = 1000", "snapshot_interval_ms = 50")],
                "run.snapshot_interval_ms",
                |_, plan| plan.snapshot_interval_ms = 50,
            ),
        ]
    }

    #[test]
    fn both_ends_refuse_the_same_runs_for_the_same_reason() {
        let base = scenario::parse(PARITY_TOML, "parity.toml", &Limits::default()).unwrap();
        for (what, edits, key, edit) in rows() {
            let mut text = PARITY_TOML.to_string();
            for (from, to) in edits {
                assert!(
                    text.contains(from),
                    "{what}: {from:?} not in the parity scenario"
                );
                text = text.replacen(from, to, 1);
            }
            let (toml_key, expected) = match scenario::parse(&text, "t.toml", &Limits::default()) {
                Err(ScenarioError::Invalid { key, expected, .. }) => (key, expected),
                other => panic!("{what}: the scenario was not refused: {other:?}"),
            };
            assert_eq!(toml_key, key, "{what}: {expected}");

            let mut profile = base.profiles[0].clone();
            let mut plan = base.to_proto();
            edit(&mut profile, &mut plan);
            let start = proto::Start {
                run_id: "two-paths".into(),
                profile: Some(profile.to_proto()),
                plan: Some(plan),
                protocol_version: cwbench::PROTOCOL_VERSION,
            };
            let refusal = RunSpec::try_from(&start).expect_err(what);
            assert_eq!(refusal.reason, expected, "{what}");
            let agent = validate_start(&AgentConfig::default(), &start).expect_err(what);
            assert_eq!(agent, refusal.to_string(), "{what}");
        }
    }

    #[test]
    fn the_scenario_s_spec_passes_the_agent_s_check() {
        let base = scenario::parse(PARITY_TOML, "parity.toml", &Limits::default()).unwrap();
        let spec = base.run_spec(&base.profiles[0], "r");
        let start = proto::Start {
            run_id: "r".into(),
            profile: Some(base.profiles[0].to_proto()),
            plan: Some(base.to_proto()),
            protocol_version: cwbench::PROTOCOL_VERSION,
        };
        assert_eq!(RunSpec::try_from(&start), Ok(spec));
    }

    /// Per-class placements reach the engine resolved, one per class; the
    /// compute pool is sized when any class uses it, even with the
    /// profile's placement inline, and only then.
    #[test]
    fn class_placements_reach_the_engine_with_the_pool_they_need() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/starvation.toml");
        let base = scenario::load(std::path::Path::new(path), &Limits::default()).unwrap();
        assert_eq!(base.classes[1].name, "sleepy");
        for profile in &base.profiles {
            let start = proto::Start {
                run_id: "r".into(),
                profile: Some(profile.to_proto()),
                plan: Some(base.to_proto()),
                protocol_version: cwbench::PROTOCOL_VERSION,
            };
            assert_eq!(RunSpec::try_from(&start), Ok(base.run_spec(profile, "r")));
            let cfg = validate_start(&AgentConfig::default(), &start).unwrap();
            assert_eq!(cfg.class_compute, [profile.compute, Compute::Inline]);
            let pool = profile.compute == Compute::Pool;
            assert_eq!(
                cfg.compute_threads,
                if pool { 1 } else { 0 },
                "{}",
                profile.label()
            );
        }
        // The other way round: the profile inline, one class on the pool.
        let mut plan = base.to_proto();
        plan.class_compute = vec![proto::Compute::Pool as i32, 0];
        let start = proto::Start {
            run_id: "r".into(),
            profile: Some(base.profiles[0].to_proto()),
            plan: Some(plan),
            protocol_version: cwbench::PROTOCOL_VERSION,
        };
        let cfg = validate_start(&AgentConfig::default(), &start).unwrap();
        assert_eq!(cfg.compute, Compute::Inline);
        assert_eq!(cfg.class_compute, [Compute::Pool, Compute::Inline]);
        assert_eq!(cfg.compute_threads, 1);
    }
}
