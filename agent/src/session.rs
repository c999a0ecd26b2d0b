//! One `Run` stream: the protocol state machine. Start -> Ready, then job
//! batches within credit, snapshots on a timer, and Done (or Error) at the
//! end. Every wait has a deadline; a vanished coordinator cancels the run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cwbench::digest::Digest;
use cwbench::generator::{Job, for_each_job};
use cwbench::proto::error::Code;
use cwbench::proto::run_event::Msg as Out;
use cwbench::proto::run_request::Msg as In;
use cwbench::proto::{self, RunEvent, RunRequest};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::recorder::Aggregator;
use crate::server::{AgentConfig, Slot, agent_info, error_event};
use crate::span::{End, Warmup};
use crate::workload::{Config, Outcome, Runtime, Workload};

type Tx = mpsc::Sender<Result<RunEvent, Status>>;

/// How long a cancelled workload may take to stop before the agent reports
/// and moves on regardless.
const CANCEL_GRACE: Duration = Duration::from_millis(1500);

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

/// Checks a Start against the agent's limits; returns the workload config.
pub fn validate_start(cfg: &AgentConfig, start: &proto::Start) -> Result<Config, String> {
    let l = &cfg.limits;
    let p = start.profile.as_ref().ok_or("Start.profile is missing")?;
    let plan = start.plan.as_ref().ok_or("Start.plan is missing")?;
    if start.run_id.is_empty() || start.run_id.len() > 128 {
        return Err("Start.run_id: must be 1..=128 characters".into());
    }
    let threads = if p.threads == 0 {
        cfg.threads
    } else {
        p.threads
    };
    range("profile.threads", threads.into(), 1, l.max_threads.into())?;
    let runtime = match p.runtime.as_str() {
        "" | "tokio" => Runtime::Tokio,
        "beam" => Runtime::Beam,
        other => {
            return Err(format!(
                "profile.runtime = {other:?}: must be \"tokio\" or \"beam\""
            ));
        }
    };
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
    let dispatch = match proto::Dispatch::try_from(p.dispatch) {
        Ok(proto::Dispatch::Unspecified) => proto::Dispatch::Pool,
        Ok(d) => d,
        Err(_) => return Err(format!("profile.dispatch = {}: must be 0..=5", p.dispatch)),
    };
    let compute = match proto::Compute::try_from(p.compute) {
        Ok(proto::Compute::Unspecified) => proto::Compute::Inline,
        Ok(c) => c,
        Err(_) => return Err(format!("profile.compute = {}: must be 0..=4", p.compute)),
    };
    let no_pool = matches!(
        dispatch,
        proto::Dispatch::TaskPerJob | proto::Dispatch::Serial | proto::Dispatch::SpawnAwait
    );
    if no_pool && workers != 1 {
        return Err(format!(
            "profile.workers = {workers}: dispatch {} has no worker pool, must be 1",
            dispatch.as_str_name()
        ));
    }
    if runtime == Runtime::Beam {
        if let Some(reason) = crate::beam::unavailable_reason() {
            return Err(format!(
                "profile.runtime = \"beam\": unavailable here: {reason}"
            ));
        }
        let beam_only = |what: &str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(format!("profile.runtime = \"beam\" takes {what} only"))
            }
        };
        beam_only("dispatch pool", dispatch == proto::Dispatch::Pool)?;
        beam_only("compute inline", compute == proto::Compute::Inline)?;
        beam_only(
            "backpressure block",
            p.backpressure != proto::Backpressure::Shed as i32,
        )?;
        beam_only("producers = 1", producers == 1)?;
        beam_only("a multi-thread runtime", !p.current_thread)?;
    }
    let threads = if runtime == Runtime::Beam && p.schedulers != 0 {
        range(
            "profile.schedulers",
            p.schedulers.into(),
            1,
            l.max_threads.min(1024).into(),
        )? as u32
    } else {
        threads
    };
    if p.current_thread && threads != 1 && p.threads != 0 {
        return Err(format!(
            "profile.threads = {threads}: a current-thread runtime has exactly 1"
        ));
    }
    let yield_every = if compute == proto::Compute::Yield {
        range(
            "profile.yield_every",
            p.yield_every.into(),
            1,
            u64::from(u32::MAX),
        )? as u32
    } else {
        p.yield_every.max(1)
    };
    let compute_threads = if compute == proto::Compute::Pool {
        range(
            "profile.compute_threads",
            p.compute_threads.into(),
            1,
            l.max_threads.into(),
        )? as usize
    } else {
        0
    };
    let shed = match proto::Backpressure::try_from(p.backpressure) {
        Ok(proto::Backpressure::Shed) => true,
        Ok(_) => false,
        Err(_) => {
            return Err(format!(
                "profile.backpressure = {}: must be 0..=2",
                p.backpressure
            ));
        }
    };
    let open = match proto::Arrival::try_from(plan.arrival) {
        Ok(proto::Arrival::Closed | proto::Arrival::Unspecified) => false,
        Ok(proto::Arrival::Open) => true,
        Err(_) => return Err(format!("plan.arrival = {}: must be 0..=2", plan.arrival)),
    };
    recovery_params(plan)?;
    let (warmup, end) = span_of(plan, open)?;
    range(
        "plan.kill_jobs (count)",
        plan.kill_jobs.len() as u64,
        0,
        1024,
    )?;
    if !plan.kill_jobs.is_empty() && no_pool {
        return Err(format!(
            "plan.kill_jobs: dispatch {} has no worker to kill",
            dispatch.as_str_name()
        ));
    }
    let probe_us = if plan.probe_interval_us == 0 {
        1000
    } else {
        range(
            "plan.probe_interval_us",
            plan.probe_interval_us.into(),
            100,
            1_000_000,
        )?
    };
    range(
        "plan.snapshot_interval_ms",
        plan.snapshot_interval_ms.into(),
        100,
        60_000,
    )?;
    range(
        "plan.classes (count)",
        plan.classes.len() as u64,
        1,
        l.max_classes as u64,
    )?;
    range("plan.prefetch_jobs", plan.prefetch_jobs.into(), 1, u64::MAX)?;
    if plan.max_restarts > 0 {
        range(
            "plan.restart_window_ms",
            plan.restart_window_ms.into(),
            1,
            3_600_000,
        )?;
    }
    Ok(Config {
        runtime,
        threads: if p.current_thread {
            1
        } else {
            threads as usize
        },
        current_thread: p.current_thread,
        workers: workers as usize,
        queue_bound: bound as usize,
        producers: producers as usize,
        shed,
        open,
        dispatch,
        compute,
        yield_every,
        compute_threads,
        probe_interval: Duration::from_micros(probe_us),
        cpus: cfg.cpus.clone(),
        job_log: plan.job_log,
        kill_jobs: plan.kill_jobs.iter().copied().collect(),
        job_timeout: (plan.job_timeout_ms > 0)
            .then(|| Duration::from_millis(plan.job_timeout_ms.into())),
        warmup,
        end,
        classes: plan.classes.len(),
        credit_chunk: 0, // set by the caller from the granted window
        recycle_jobs: 0, // the window too
        max_restarts: plan.max_restarts,
        restart_window: Duration::from_millis(plan.restart_window_ms.into()),
        backoff: Duration::from_millis(range(
            "plan.backoff_ms",
            plan.backoff_ms.into(),
            0,
            60_000,
        )?),
        max_backoff: Duration::from_millis(
            range(
                "plan.max_backoff_ms",
                plan.max_backoff_ms.into(),
                0,
                600_000,
            )?
            .max(plan.backoff_ms.into()),
        ),
    })
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
    let d = crate::recovery::Params::default();
    let bucket_ms = crate::recovery::BUCKET_US / 1000;
    let window = match plan.recovery_window_ms {
        0 => d.window,
        w if (10..=60_000).contains(&w) && u64::from(w) % bucket_ms == 0 => {
            u64::from(w) / bucket_ms
        }
        w => {
            return Err(format!(
                "plan.recovery_window_ms = {w}: must be a multiple of 10 in 10..=60000"
            ));
        }
    };
    let band = match plan.recovery_band {
        0.0 => d.band,
        b if b.is_finite() && b > 0.0 && b < 1.0 => b,
        b => return Err(format!("plan.recovery_band = {b}: must be in (0, 1)")),
    };
    let baseline = match plan.recovery_baseline_ms {
        0 => d.baseline,
        b if u64::from(b) >= 3 * window * bucket_ms && b <= 600_000 => u64::from(b) / bucket_ms,
        b => {
            return Err(format!(
                "plan.recovery_baseline_ms = {b}: must be in {}..=600000 (three windows)",
                3 * window * bucket_ms
            ));
        }
    };
    Ok(crate::recovery::Params {
        window,
        band,
        baseline,
    })
}

/// Drives one Run stream to its end.
pub async fn run(
    cfg: Arc<AgentConfig>,
    slot: Arc<Slot>,
    mut inbound: Streaming<RunRequest>,
    tx: Tx,
    peer: String,
) {
    let first = tokio::time::timeout(cfg.handshake_timeout, inbound.message()).await;
    let start = match first {
        Ok(Ok(Some(RunRequest {
            msg: Some(In::Start(s)),
        }))) => s,
        Ok(Ok(Some(_))) => {
            return fail(
                &tx,
                Code::Protocol,
                "the first message of a Run must be Start".into(),
            )
            .await;
        }
        Ok(Ok(None)) | Ok(Err(_)) => return,
        Err(_) => {
            return fail(
                &tx,
                Code::Protocol,
                format!(
                    "no Start within {} s of opening the Run stream",
                    cfg.handshake_timeout.as_secs()
                ),
            )
            .await;
        }
    };
    if start.protocol_version != cwbench::PROTOCOL_VERSION {
        return fail(
            &tx,
            Code::Version,
            format!(
                "protocol version mismatch: coordinator speaks {}, agent {} speaks {}",
                start.protocol_version,
                cwbench::VERSION,
                cwbench::PROTOCOL_VERSION
            ),
        )
        .await;
    }
    let mut wcfg = match validate_start(&cfg, &start) {
        Ok(c) => c,
        Err(e) => return fail(&tx, Code::Invalid, e).await,
    };
    let run_id = start.run_id.clone();
    let _guard = match slot.claim(&run_id) {
        Ok(g) => g,
        Err(busy) => {
            return fail(
                &tx,
                Code::Busy,
                format!("agent is busy with run {busy}; run {run_id} refused"),
            )
            .await;
        }
    };
    let plan = start.plan.unwrap_or_default();
    let window = u64::from(plan.prefetch_jobs.min(cfg.limits.max_prefetch_jobs));
    wcfg.credit_chunk = (window / (4 * wcfg.producers as u64)).max(1);
    wcfg.recycle_jobs = window;
    let threads = wcfg.threads as u32;
    let nclasses = wcfg.classes;
    let wcfg_open = wcfg.open;
    let runtime = wcfg.runtime;
    let mut wl = match Workload::start(wcfg) {
        Ok(w) => w,
        Err(e) => return fail(&tx, Code::Internal, e).await,
    };
    tracing::info!(run = %run_id, %peer, threads, "run started");
    let mut info = agent_info(&cfg, Some(run_id.clone()));
    if runtime == Runtime::Beam {
        // This run's runtime, for the report's host table.
        info.runtime = "beam".into();
    }
    let ready = proto::Ready {
        agent: Some(info),
        threads,
        initial_credit: window,
        batch_encoding: cwbench::packed::VERSION.into(),
    };
    if tx.send(ev(Out::Ready(ready))).await.is_err() {
        return;
    }

    let mut s = Session {
        credit: window,
        digest: Digest::new(),
        next_id: 0,
        ended: false,
        nclasses,
        open: wcfg_open,
        max_batch: cfg.limits.max_batch_jobs,
    };
    let mut agg = Aggregator::new(nclasses, recovery_params(&plan).unwrap_or_default());
    let period = Duration::from_millis(plan.snapshot_interval_ms.into());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inbound_open = true;
    let mut failure: Option<(Code, String)> = None;
    let mut cancel_deadline: Option<tokio::time::Instant> = None;
    let stopped = wl.stopped.clone();
    let mut stop_sent = false;

    let outcome = loop {
        tokio::select! {
            msg = inbound.message(), if inbound_open => {
                match s.handle(msg, &mut wl) {
                    Ok(true) => {}
                    Ok(false) => inbound_open = false,
                    Err((code, m)) => {
                        inbound_open = false;
                        if failure.is_none() {
                            failure = Some((code, m));
                        }
                        wl.cancel();
                    }
                }
                if wl.is_cancelled() && cancel_deadline.is_none() {
                    cancel_deadline = Some(tokio::time::Instant::now() + CANCEL_GRACE);
                }
            }
            Some(n) = wl.credit.recv() => {
                s.credit += n;
                if tx.send(ev(Out::Credit(proto::Credit { jobs: n }))).await.is_err() {
                    wl.cancel();
                }
            }
            _ = stopped.cancelled(), if !stop_sent => {
                stop_sent = true;
                let released = wl.recorder.released.load(Ordering::Relaxed);
                tracing::info!(run = %run_id, released, "measured part over; stop feeding");
                let stop = proto::StopFeeding { released };
                if tx.send(ev(Out::StopFeeding(stop))).await.is_err() {
                    wl.cancel();
                }
            }
            _ = tick.tick() => {
                send_job_log(&tx, &wl).await;
                let snap = agg.snapshot(&wl.recorder, gauges(&wl));
                if tx.send(ev(Out::Snapshot(snap))).await.is_err() {
                    tracing::warn!(run = %run_id, "coordinator gone; cancelling");
                    wl.cancel();
                    inbound_open = false;
                }
            }
            r = &mut wl.finished => {
                break r.unwrap_or_else(|_| Outcome::Internal("the run thread died".into()));
            }
            _ = sleep_until(cancel_deadline) => {
                break Outcome::Internal(format!(
                    "the workload did not stop within {} ms of being cancelled",
                    CANCEL_GRACE.as_millis()
                ));
            }
        }
    };

    let snap = agg.snapshot(&wl.recorder, gauges(&wl));
    let _ = tx.send(ev(Out::Snapshot(snap))).await;
    // The pool has stopped: this drains every record left.
    send_job_log(&tx, &wl).await;
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
    let terminal = match (failure, outcome) {
        (Some((code, m)), _) => error_event(code, m),
        (None, Outcome::PoolFailed(m)) => error_event(Code::PoolFailed, m),
        (None, Outcome::Internal(m)) => error_event(Code::Internal, m),
        (None, Outcome::Finished) => RunEvent {
            msg: Some(Out::Done(done)),
        },
    };
    let _ = tx.send(Ok(terminal)).await;
    // Dropping the workload (and the slot guard) ends the run.
    drop(wl);
    // A client that is gone must not keep this alive: dropping tx closes the stream.
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

/// Gauges only the session can read: queue depth and the workload
/// runtime's stable metrics.
fn gauges(wl: &Workload) -> proto::Gauges {
    if let Some(b) = &wl.beam {
        return b.to_proto();
    }
    let Some(rt) = &wl.runtime else {
        return proto::Gauges::default();
    };
    let m = rt.metrics();
    let workers = m.num_workers();
    proto::Gauges {
        queue_depth: wl.queue_depth(),
        runtime_workers: workers as u64,
        alive_tasks: m.num_alive_tasks() as u64,
        global_queue_depth: m.global_queue_depth() as u64,
        workers_busy_us: (0..workers)
            .map(|i| m.worker_total_busy_duration(i).as_micros() as u64)
            .sum(),
        workers_park_count: (0..workers).map(|i| m.worker_park_count(i)).sum(),
        ..Default::default()
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct Session {
    credit: u64,
    digest: Digest,
    next_id: u64,
    ended: bool,
    nclasses: usize,
    open: bool,
    max_batch: usize,
}

impl Session {
    /// Handles one inbound message. Ok(false): the inbound side is finished.
    fn handle(
        &mut self,
        msg: Result<Option<RunRequest>, Status>,
        wl: &mut Workload,
    ) -> Result<bool, (Code, String)> {
        let msg = match msg {
            Ok(Some(RunRequest { msg: Some(m) })) => m,
            Ok(Some(RunRequest { msg: None })) => {
                return Err((Code::Protocol, "empty RunRequest".into()));
            }
            Ok(None) | Err(_) => {
                if !self.ended {
                    // The coordinator vanished mid-run.
                    tracing::warn!("coordinator stream ended before EndOfJobs; cancelling");
                    wl.cancel();
                }
                return Ok(false);
            }
        };
        match msg {
            In::Jobs(b) => {
                if self.ended {
                    return Err((Code::Protocol, "JobBatch after EndOfJobs".into()));
                }
                let n = cwbench::generator::batch_len(&b)
                    .map_err(|e| (Code::Protocol, e.to_string()))?;
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
                for_each_job(&b, self.nclasses, self.open, |j| {
                    digest.push(&j);
                    jobs.push(j);
                })
                .map_err(|e| (Code::Protocol, e.to_string()))?;
                self.credit -= n as u64;
                self.next_id = b.first_id + n as u64;
                wl.recorder.received.fetch_add(n as u64, Ordering::Relaxed);
                wl.feed(jobs);
                Ok(true)
            }
            In::End(_) => {
                self.ended = true;
                wl.end_of_jobs();
                Ok(true)
            }
            In::Cancel(c) => {
                tracing::info!("run cancelled by the coordinator: {}", c.reason);
                self.ended = true;
                wl.cancel();
                Ok(true)
            }
            In::Start(_) => Err((
                Code::Protocol,
                "a second Start on the same Run stream".into(),
            )),
        }
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
