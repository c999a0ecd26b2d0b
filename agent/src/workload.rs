//! One run's workload: a fresh tokio runtime with the profile's threads and
//! flavor; producers that release jobs from the prefetch buffer (closed loop:
//! as fast as accepted; open loop: at each job's intended time); one of five
//! dispatch architectures; one of four compute placements; a supervisor that
//! restarts crashed workers; a scheduler-lateness probe.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cwbench::generator::Job;
use cwbench::proto;
use cwbench::spec::{Compute, Dispatch, Flavor};
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::buffers::Buffers;
use crate::compute::{ComputePool, Step, compute};
pub use crate::engine::{Config, Outcome, Workload};
use crate::engine::{Parts, Probe};
use crate::queue::Queue;
use crate::recorder::{Recorder, Timing};
use crate::span::Span;

/// The payload of an injected crash: a real panic, caught by the supervisor.
#[derive(Debug)]
pub struct InjectedCrash {
    pub job: u64,
    /// ns, agent clock.
    pub at: u64,
}

impl Workload {
    /// Builds the runtime on its own thread and starts producers and workers.
    /// Returns once the runtime exists, or the reason it could not be built.
    pub fn start(cfg: Config) -> Result<Self, String> {
        if cfg.runtime == Flavor::Beam {
            return crate::beam::start(cfg);
        }
        install_panic_hook();
        // Calibrates the TSC clock now rather than on the first job.
        let _ = crate::clock::now();
        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        let (credit_tx, credit_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let shards = cfg.workers.max(cfg.producers).min(cfg.threads.max(1) * 2);
        let recorder = Arc::new(
            Recorder::new(
                shards,
                cfg.classes,
                Arc::new(Span::new(cfg.warmup, cfg.end)),
                crate::clock::now(),
                cfg.job_log,
            )
            .with_workers(cfg.workers),
        );
        let queues: Vec<Arc<Queue<Job>>> = match cfg.dispatch {
            Dispatch::Mailbox => (0..cfg.workers)
                .map(|_| Arc::new(Queue::new(cfg.queue_bound)))
                .collect(),
            // A timed run's producer hands over chunks too: each job is
            // admitted (or the run's end decided) as it enters the queue.
            Dispatch::Pool if chunked(&cfg) && recorder.span.timed() => {
                let rec = recorder.clone();
                let gate = move |job: &Job, origin: u64| {
                    let admitted = rec.span.admit(job, origin);
                    if admitted {
                        rec.released(job, origin, origin);
                    }
                    admitted
                };
                vec![Arc::new(Queue::with_gate(cfg.queue_bound, Box::new(gate)))]
            }
            Dispatch::Pool => vec![Arc::new(Queue::new(cfg.queue_bound))],
            _ => Vec::new(),
        };
        let cancel = CancellationToken::new();
        let compute_pool = (cfg.compute == Compute::Pool)
            .then(|| ComputePool::new(cfg.compute_threads, cfg.cpus.clone()))
            .transpose()
            .map_err(|e| format!("cannot start the compute pool: {e}"))?;
        let (done_jobs_tx, done_jobs_rx) = mpsc::unbounded_channel();
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        let buffers = Arc::new(Buffers::new(cfg.recycle_jobs as usize));
        let ctx = Arc::new(Ctx {
            cfg: cfg.clone(),
            rec: recorder.clone(),
            queues: queues.clone(),
            cancel: cancel.clone(),
            rr: AtomicUsize::new(0),
            in_flight: Arc::new(Semaphore::new(cfg.queue_bound)),
            compute_pool,
            completions: done_jobs_tx,
            t0: OnceLock::new(),
            kill: kill_tx,
            stopped: Arc::default(),
            buffers: buffers.clone(),
        });
        let thread = std::thread::Builder::new()
            .name("cwbench-run".into())
            .spawn(move || {
                let mut builder = if cfg.runtime == Flavor::CurrentThread {
                    tokio::runtime::Builder::new_current_thread()
                } else {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(cfg.threads).thread_name("cwbench-work");
                    b
                };
                if let Some(cpus) = cfg.cpus.clone() {
                    // This thread runs a current-thread runtime itself.
                    if let Err(e) = crate::affinity::pin_current_thread(&cpus) {
                        let _ = built_tx.send(Err(format!("cannot pin to CPUs: {e}")));
                        return;
                    }
                    builder.on_thread_start(move || {
                        let _ = crate::affinity::pin_current_thread(&cpus);
                    });
                }
                let built = builder.enable_all().build();
                let rt = match built {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = built_tx.send(Err(format!("cannot build the runtime: {e}")));
                        return;
                    }
                };
                let _ = built_tx.send(Ok(rt.handle().clone()));
                let outcome = rt.block_on(run(ctx, feed_rx, credit_tx, done_jobs_rx, kill_rx));
                let _ = done_tx.send(outcome);
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| format!("cannot start the run thread: {e}"))?;
        let runtime = match built_rx.recv() {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("the run thread died while building the runtime".into()),
        };
        Ok(Self::from_parts(Parts {
            feed: feed_tx,
            credit: credit_rx,
            finished: done_rx,
            recorder,
            buffers,
            probe: Arc::new(TokioProbe { queues, runtime }),
            cancel,
            thread,
        }))
    }
}

/// The tokio engine's gauges: queue depth and the runtime's stable metrics.
#[derive(Debug)]
struct TokioProbe {
    queues: Vec<Arc<Queue<Job>>>,
    runtime: tokio::runtime::Handle,
}

impl Probe for TokioProbe {
    fn queue_depth(&self) -> u64 {
        self.queues.iter().map(|q| q.len() as u64).sum()
    }

    fn gauges(&self) -> proto::Gauges {
        let m = self.runtime.metrics();
        let workers = m.num_workers();
        proto::Gauges {
            queue_depth: self.queue_depth(),
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
}

struct Completion {
    job: Job,
    timing: Timing,
}

struct Ctx {
    cfg: Config,
    rec: Arc<Recorder>,
    /// pool: one queue; mailbox: one per worker; other dispatches: none.
    /// Each job is queued with its latency origin (ns): the intended time
    /// in open loop, the enqueue attempt in closed loop.
    queues: Vec<Arc<Queue<Job>>>,
    cancel: CancellationToken,
    /// mailbox: round-robin cursor.
    rr: AtomicUsize,
    /// task-per-job: the in-flight bound.
    in_flight: Arc<Semaphore>,
    compute_pool: Option<ComputePool>,
    /// task-per-job: completions go to the aggregator task over a channel.
    completions: mpsc::UnboundedSender<Completion>,
    /// Open loop: time zero of the intended times (first jobs received), ns.
    t0: OnceLock<u64>,
    /// kill-worker faults: (worker, when, ns) to the supervisor, which aborts it.
    kill: mpsc::UnboundedSender<(usize, u64)>,
    /// Mirrors `cancel` for the per-job check in `run_job`/`run_now` (the
    /// token's own check takes a lock); set by a task once the token is
    /// cancelled, so it lags while no task on the runtime yields.
    stopped: Arc<std::sync::atomic::AtomicBool>,
    /// Where producers put the buffers they emptied.
    buffers: Arc<Buffers>,
}

/// Completion entries a pool worker or the task-per-job aggregator holds
/// (`recorder::Local`) before it flushes them into its shard.
const LOCAL: usize = 64;

async fn run(
    ctx: Arc<Ctx>,
    feed: mpsc::UnboundedReceiver<Vec<Job>>,
    credit: mpsc::UnboundedSender<u64>,
    mut completions: mpsc::UnboundedReceiver<Completion>,
    kills: mpsc::UnboundedReceiver<(usize, u64)>,
) -> Outcome {
    {
        let (token, flag) = (ctx.cancel.clone(), ctx.stopped.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            flag.store(true, Ordering::Release);
        });
    }
    let probe_stop = CancellationToken::new();
    let probe = tokio::spawn(probe(ctx.clone(), probe_stop.clone()));
    // task-per-job: the aggregator records what the job tasks report.
    let rec = ctx.rec.clone();
    let aggregator = tokio::spawn(async move {
        // Merged as a pool worker merges its own (recorder::Local), flushed
        // once the channel is drained and every LOCAL entries. recv_many
        // keeps to tokio's cooperative budget (try_recv would not yield).
        let mut local = crate::recorder::Local::with_capacity(LOCAL);
        let mut got = Vec::with_capacity(LOCAL);
        while completions.recv_many(&mut got, LOCAL).await > 0 {
            let drained = got.len() < LOCAL;
            for c in got.drain(..) {
                local.push(&rec, &c.job, &c.timing);
            }
            if drained || local.len() >= LOCAL {
                rec.flush(0, &mut local);
            }
        }
        rec.flush(0, &mut local);
    });
    let feed = Arc::new(tokio::sync::Mutex::new(feed));
    let mut producers = JoinSet::new();
    for i in 0..ctx.cfg.producers {
        producers.spawn(produce(ctx.clone(), i, feed.clone(), credit.clone()));
    }
    let pool = tokio::spawn(supervise(ctx.clone(), kills));
    let mut outcome = Outcome::Finished;
    while let Some(r) = producers.join_next().await {
        if let Err(e) = r {
            outcome = Outcome::Internal(format!("producer failed: {e}"));
            ctx.cancel.cancel();
        }
    }
    // Producers are done (or cancelled): no more jobs can enter a queue.
    for q in &ctx.queues {
        q.close();
    }
    // Whatever is left in the buffer after a cancel never ran.
    let mut rx = feed.lock().await;
    rx.close();
    while let Ok(jobs) = rx.try_recv() {
        ctx.rec
            .cancelled
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
    }
    let pool_outcome = match pool.await {
        Ok(o) => o,
        Err(e) => Outcome::Internal(format!("supervisor failed: {e}")),
    };
    // task-per-job: every job task has returned its permit once all are back.
    if let Ok(p) = ctx.in_flight.acquire_many(ctx.cfg.queue_bound as u32).await {
        p.forget();
    }
    if let Some(p) = &ctx.compute_pool {
        p.close();
    }
    probe_stop.cancel();
    let _ = probe.await;
    // The aggregator ends when the last sender (in ctx) is gone: the tasks
    // hold clones of ctx until they finish, so wait for the count to drop.
    drop(ctx);
    let _ = aggregator.await;
    if outcome == Outcome::Finished {
        pool_outcome
    } else {
        outcome
    }
}

/// How a producer's attempt to hand a job on ended.
enum Released {
    Queued,
    Shed,
    Cancelled,
}

/// Moves jobs from the prefetch buffer into the dispatch.
async fn produce(
    ctx: Arc<Ctx>,
    idx: usize,
    feed: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<Job>>>>,
    credit: mpsc::UnboundedSender<u64>,
) {
    let rec = &ctx.rec;
    let mut unreturned = 0u64;
    let mut fed_once = false;
    loop {
        let chunk = {
            let mut rx = feed.lock().await;
            match rx.try_recv() {
                Ok(c) => Some(c),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // About to wait: return credit first so the coordinator
                    // can refill while we wait.
                    if unreturned > 0 {
                        let _ = credit.send(unreturned);
                        unreturned = 0;
                    }
                    let t0 = crate::clock::now();
                    let c = tokio::select! {
                        c = rx.recv() => c,
                        _ = ctx.cancel.cancelled() => None,
                    };
                    // Waiting after a timed run stopped is not a feed stall.
                    if fed_once && c.is_some() && !rec.span.stopped.is_cancelled() {
                        rec.feed_stall_us.fetch_add(
                            crate::recorder::us(t0, crate::clock::now()),
                            Ordering::Relaxed,
                        );
                    }
                    c
                }
            }
        };
        let Some(mut chunk) = chunk else { break };
        fed_once = true;
        if rec.span.stopped.is_cancelled() {
            // A timed run is over: what still arrives is never released.
            rec.unreleased
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            continue;
        }
        let t0 = *ctx.t0.get_or_init(|| {
            let t = crate::clock::now_ns();
            rec.span.begin(t);
            t
        });
        if chunked(&ctx.cfg) {
            // Closed loop, one producer, one pool queue: the whole chunk is
            // handed over at once (see Queue::send_all). A timed run's jobs
            // are admitted one by one as they enter the queue (its gate).
            let n = chunk.len() as u64;
            if ctx.cancel.is_cancelled() {
                rec.cancelled.fetch_add(n, Ordering::Relaxed);
                break;
            }
            let now = crate::clock::now_ns();
            if !rec.span.timed()
                && let Some(j) = chunk.iter().find(|j| rec.is_measured(j, now))
            {
                rec.released(j, now, now);
            }
            let r = tokio::select! {
                // send_all first: its first poll takes the whole chunk (into
                // the queue or the hand), so none of it is left behind.
                biased;
                r = ctx.queues[0].send_all(&mut chunk, now) => r,
                // What is still in the producer's hand is drained and counted
                // as cancelled with the queue.
                _ = ctx.cancel.cancelled() => Ok(0),
            };
            debug_assert!(chunk.is_empty());
            ctx.buffers.give(chunk);
            // Refused by the gate: the measured part was over.
            let refused = match r {
                Ok(k) => k as u64,
                Err(left) => {
                    rec.cancelled.fetch_add(left as u64, Ordering::Relaxed);
                    0
                }
            };
            if refused > 0 {
                rec.unreleased.fetch_add(refused, Ordering::Relaxed);
            }
            rec.released.fetch_add(n - refused, Ordering::Relaxed);
            unreturned += n - refused;
            if unreturned >= ctx.cfg.credit_chunk {
                let _ = credit.send(unreturned);
                unreturned = 0;
            }
            if ctx.cancel.is_cancelled() {
                break;
            }
            continue;
        }
        let mut jobs = chunk.drain(..);
        while let Some(job) = jobs.next() {
            // The latency origin, and the moment of release (one clock
            // reading in closed loop, where the two are the same).
            let (origin, now) = if ctx.cfg.open {
                let at = t0 + job.intended_us * 1000;
                if !pace_until(at, &ctx.cancel).await {
                    rec.cancelled
                        .fetch_add(1 + jobs.len() as u64, Ordering::Relaxed);
                    break;
                }
                (at, crate::clock::now_ns())
            } else {
                let t = crate::clock::now_ns();
                (t, t)
            };
            if ctx.cancel.is_cancelled() {
                rec.cancelled
                    .fetch_add(1 + jobs.len() as u64, Ordering::Relaxed);
                break;
            }
            if !rec.span.admit(&job, origin) {
                rec.unreleased
                    .fetch_add(1 + jobs.len() as u64, Ordering::Relaxed);
                break;
            }
            rec.released(&job, origin, now);
            match release(&ctx, idx, job, origin).await {
                Released::Queued => {}
                Released::Shed => {
                    rec.shed.fetch_add(1, Ordering::Relaxed);
                }
                Released::Cancelled => {
                    rec.cancelled
                        .fetch_add(1 + jobs.len() as u64, Ordering::Relaxed);
                    break;
                }
            }
            rec.released.fetch_add(1, Ordering::Relaxed);
            unreturned += 1;
            if unreturned >= ctx.cfg.credit_chunk {
                let _ = credit.send(unreturned);
                unreturned = 0;
            }
        }
        drop(jobs);
        ctx.buffers.give(chunk);
    }
    if unreturned > 0 {
        let _ = credit.send(unreturned);
    }
}

/// Whether producers hand over whole chunks: closed loop, blocking
/// backpressure, one producer, one pool queue.
fn chunked(cfg: &Config) -> bool {
    !cfg.open && !cfg.shed && cfg.producers == 1 && matches!(cfg.dispatch, Dispatch::Pool)
}

/// Waits until `at`: tokio's timer (1 ms ticks) for the long part, then
/// yielding until the instant, so releases are not late by a timer tick.
/// Returns false if cancelled. `at`: ns, agent clock.
async fn pace_until(at: u64, cancel: &CancellationToken) -> bool {
    const SPIN: Duration = Duration::from_micros(1500);
    loop {
        let now = crate::clock::now_ns();
        if now >= at {
            return true;
        }
        if cancel.is_cancelled() {
            return false;
        }
        let left = Duration::from_nanos(at - now);
        if left > SPIN {
            tokio::select! {
                _ = tokio::time::sleep(left - Duration::from_millis(1)) => {}
                _ = cancel.cancelled() => return false,
            }
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Hands one job, with its latency origin (ns), to the configured dispatch.
async fn release(ctx: &Arc<Ctx>, producer: usize, job: Job, origin: u64) -> Released {
    let cfg = &ctx.cfg;
    match cfg.dispatch {
        Dispatch::Pool | Dispatch::Mailbox => {
            let q = if cfg.dispatch == Dispatch::Mailbox {
                &ctx.queues[ctx.rr.fetch_add(1, Ordering::Relaxed) % ctx.queues.len()]
            } else {
                &ctx.queues[0]
            };
            if cfg.shed {
                return match q.try_send(job, origin) {
                    Ok(()) => Released::Queued,
                    Err(_) => Released::Shed,
                };
            }
            tokio::select! {
                r = q.send(job, origin) => if r.is_ok() { Released::Queued } else { Released::Cancelled },
                _ = ctx.cancel.cancelled() => Released::Cancelled,
            }
        }
        Dispatch::TaskPerJob => {
            // A free permit is taken without building the waiting futures
            // (polling the token's would lock it once per job).
            let permit = match ctx.in_flight.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(TryAcquireError::Closed) => return Released::Cancelled,
                Err(TryAcquireError::NoPermits) if cfg.shed => return Released::Shed,
                Err(TryAcquireError::NoPermits) => tokio::select! {
                    p = ctx.in_flight.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return Released::Cancelled,
                    },
                    _ = ctx.cancel.cancelled() => return Released::Cancelled,
                },
            };
            tokio::spawn(job_task(ctx.clone(), job, origin, permit));
            Released::Queued
        }
        Dispatch::Serial => {
            // The handler runs the job itself; an injected crash unwinds to
            // here and the handler goes on (it is its own supervisor).
            let pickup = crate::clock::now_ns();
            let r = AssertUnwindSafe(run_job(ctx, producer, &job, origin, pickup))
                .catch_unwind()
                .await;
            after_awaited(ctx, producer, &job, r.map_err(|p| p as Box<dyn Any + Send>));
            Released::Queued
        }
        Dispatch::SpawnAwait => {
            let c = ctx.clone();
            let h = tokio::spawn(async move {
                let pickup = crate::clock::now_ns();
                run_job(&c, producer, &job, origin, pickup).await
            });
            let r = h.await.map_err(|e| {
                if e.is_panic() {
                    e.into_panic()
                } else {
                    Box::new("job task cancelled") as Box<dyn Any + Send>
                }
            });
            after_awaited(ctx, producer, &job, r);
            Released::Queued
        }
    }
}

/// Records a job a handler awaited (serial, spawn-await).
fn after_awaited(
    ctx: &Ctx,
    shard: usize,
    job: &Job,
    r: Result<Option<Timing>, Box<dyn Any + Send>>,
) {
    match r {
        Ok(Some(t)) => ctx.rec.completed(shard, job, &t),
        Ok(None) => {}
        Err(p) if p.downcast_ref::<InjectedCrash>().is_some() => {
            ctx.rec.restarts.fetch_add(1, Ordering::Relaxed);
        }
        Err(p) => {
            // Not an injected crash: a bug. Count the job so nothing is
            // lost, and stop the run.
            tracing::error!("job {} panicked: {}", job.id, panic_message(&p));
            ctx.rec.crashed(shard, crate::clock::now_ns());
            ctx.cancel.cancel();
        }
    }
}

/// task-per-job: one job in its own task; the permit bounds the in-flight.
async fn job_task(ctx: Arc<Ctx>, job: Job, origin: u64, permit: OwnedSemaphorePermit) {
    let pickup = crate::clock::now_ns();
    let timing = if never_awaits(&ctx.cfg, &job) {
        let n = &ctx.rec.in_flight;
        run_now(&ctx, |on| in_flight(n, on), 0, &job, origin, pickup)
    } else {
        // Boxed, so every task's state holds only a pointer to run_job's
        // (large) state; a job that awaits pays one allocation for it.
        Box::pin(run_job(&ctx, 0, &job, origin, pickup)).await
    };
    if let Some(timing) = timing {
        let _ = ctx.completions.send(Completion { job, timing });
    }
    drop(permit);
}

/// The shared in-flight gauge (jobs run outside pool workers).
#[inline]
fn in_flight(n: &std::sync::atomic::AtomicU64, on: bool) {
    if on {
        n.fetch_add(1, Ordering::Relaxed);
    } else {
        n.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `job` runs to its end without awaiting: no sleep, and no work or
/// its work computed inline (`run_now`).
#[inline]
fn never_awaits(cfg: &Config, job: &Job) -> bool {
    job.sleep_us == 0 && (job.work_units == 0 || matches!(cfg.compute, Compute::Inline))
}

/// Runs one job: the CPU step where the profile places it, an injected crash
/// if the job carries one, then the sleep. None if cancelled part way.
/// Timestamps: ns, agent clock.
async fn run_job(ctx: &Ctx, shard: usize, job: &Job, origin: u64, pickup: u64) -> Option<Timing> {
    let rec = &ctx.rec;
    if ctx.stopped.load(Ordering::Acquire) {
        rec.cancelled.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    rec.in_flight.fetch_add(1, Ordering::Relaxed);
    let deadline = ctx
        .cfg
        .job_timeout
        .map(|t| crate::clock::to_instant(pickup) + t);
    let mut step = if job.work_units == 0 {
        Step::Done
    } else {
        compute_step(ctx, job, deadline).await
    };
    if step == Step::Done && job.crash {
        rec.in_flight.fetch_sub(1, Ordering::Relaxed);
        crash(rec, shard, job, origin, pickup);
    }
    let mut overshoot_us = None;
    if step == Step::Done && job.sleep_us > 0 {
        let req = Duration::from_micros(u64::from(job.sleep_us));
        let t0 = crate::clock::now_ns();
        step = tokio::select! {
            _ = tokio::time::sleep(req) => Step::Done,
            _ = sleep_until(deadline) => Step::TimedOut,
            _ = ctx.cancel.cancelled() => Step::Cancelled,
        };
        let actual = crate::clock::now_ns().saturating_sub(t0);
        overshoot_us = Some(actual.saturating_sub(req.as_nanos() as u64) / 1000);
    }
    rec.in_flight.fetch_sub(1, Ordering::Relaxed);
    finish(rec, step, job, origin, pickup, overshoot_us)
}

/// A job that never awaits (`never_awaits`) run as `run_job` runs it,
/// without building a future. `busy` keeps the in-flight gauge: a pool
/// worker's own flag, or the shared count.
#[inline]
fn run_now(
    ctx: &Ctx,
    busy: impl Fn(bool),
    shard: usize,
    job: &Job,
    origin: u64,
    pickup: u64,
) -> Option<Timing> {
    let rec = &ctx.rec;
    if ctx.stopped.load(Ordering::Acquire) {
        rec.cancelled.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    busy(true);
    let step = if job.work_units == 0 {
        Step::Done
    } else {
        let deadline = ctx
            .cfg
            .job_timeout
            .map(|t| crate::clock::to_instant(pickup) + t);
        compute(job.id, job.work_units, &ctx.cancel, deadline)
    };
    busy(false);
    if step == Step::Done && job.crash {
        crash(rec, shard, job, origin, pickup);
    }
    finish(rec, step, job, origin, pickup, None)
}

/// An injected crash: counted, logged, then a real panic.
#[cold]
fn crash(rec: &Recorder, shard: usize, job: &Job, origin: u64, pickup: u64) -> ! {
    let at = crate::clock::now_ns();
    rec.crashed(shard, at);
    rec.log_job(job, origin, pickup, at, 1);
    std::panic::panic_any(InjectedCrash { job: job.id, at });
}

/// The end of a job that did not crash: its completion time, or the count
/// of how it ended otherwise.
#[inline(always)]
fn finish(
    rec: &Recorder,
    step: Step,
    job: &Job,
    origin: u64,
    pickup: u64,
    overshoot_us: Option<u64>,
) -> Option<Timing> {
    match step {
        Step::Done => {
            let done = crate::clock::now_ns();
            rec.log_job(job, origin, pickup, done, 0);
            Some(Timing {
                origin,
                pickup,
                done,
                overshoot_us,
            })
        }
        Step::Cancelled => {
            rec.cancelled.fetch_add(1, Ordering::Relaxed);
            None
        }
        Step::TimedOut => {
            rec.log_job(job, origin, pickup, crate::clock::now_ns(), 2);
            rec.timed_out.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        // Relative: the deadline is on the agent's TSC timeline.
        Some(t) => tokio::time::sleep(t.saturating_duration_since(crate::clock::now())).await,
        None => std::future::pending().await,
    }
}

/// The CPU step, placed as the profile says. False if cancelled.
async fn compute_step(ctx: &Ctx, job: &Job, deadline: Option<Instant>) -> Step {
    let (id, units) = (job.id, job.work_units);
    if units == 0 {
        return Step::Done;
    }
    match ctx.cfg.compute {
        Compute::Inline => compute(id, units, &ctx.cancel, deadline),
        Compute::Yield => {
            let mut left = units;
            while left > 0 {
                let n = left.min(ctx.cfg.yield_every);
                let step = compute(id, n, &ctx.cancel, deadline);
                if step != Step::Done {
                    return step;
                }
                left -= n;
                if left > 0 {
                    tokio::task::yield_now().await;
                }
            }
            Step::Done
        }
        Compute::Blocking => {
            let cancel = ctx.cancel.clone();
            tokio::task::spawn_blocking(move || compute(id, units, &cancel, deadline))
                .await
                .unwrap_or(Step::Cancelled)
        }
        Compute::Pool => match &ctx.compute_pool {
            Some(p) => p.run(id, units, ctx.cancel.clone(), deadline).await,
            None => compute(id, units, &ctx.cancel, deadline),
        },
    }
}

/// Runs the worker pool (pool and mailbox dispatch) and restarts workers
/// that crash. Other dispatches have no pool: it returns at once.
async fn supervise(ctx: Arc<Ctx>, mut kills: mpsc::UnboundedReceiver<(usize, u64)>) -> Outcome {
    let mut set = JoinSet::new();
    let mut who = HashMap::new();
    let mut handles: HashMap<usize, tokio::task::AbortHandle> = HashMap::new();
    let nq = ctx.queues.len();
    let workers = if nq == 0 { 0 } else { ctx.cfg.workers };
    for i in 0..workers {
        let q = ctx.queues[i % nq].clone();
        let h = set.spawn(worker(ctx.clone(), i, q, None));
        who.insert(h.id(), i);
        handles.insert(i, h);
    }
    // Times: ns, agent clock.
    let mut recent: VecDeque<u64> = VecDeque::new();
    // Per worker: (current backoff, time of its last crash).
    let mut backoff: HashMap<usize, (Duration, u64)> = HashMap::new();
    // Workers aborted on purpose (kill-worker faults), with the kill time.
    let mut killed: HashMap<usize, u64> = HashMap::new();
    let mut outcome = Outcome::Finished;
    loop {
        let res = tokio::select! {
            r = set.join_next_with_id() => match r {
                Some(r) => r,
                None => break,
            },
            Some((i, at)) = kills.recv() => {
                if let Some(h) = handles.get(&i) {
                    h.abort();
                    killed.insert(i, at);
                }
                continue;
            }
        };
        let err = match res {
            Ok((id, ())) => {
                who.remove(&id);
                continue;
            }
            Err(e) => e,
        };
        let Some(i) = who.remove(&err.id()) else {
            continue;
        };
        // (time of death, job that caused it if known)
        let (at, job) = if err.is_cancelled() {
            match killed.remove(&i) {
                Some(at) => (at, None),
                None => continue,
            }
        } else if err.is_panic() {
            let payload: Box<dyn Any + Send> = err.into_panic();
            match payload.downcast_ref::<InjectedCrash>() {
                Some(c) => (c.at, Some(c.job)),
                None => {
                    outcome = Outcome::Internal(format!(
                        "worker {i} panicked: {}",
                        panic_message(&payload)
                    ));
                    ctx.cancel.cancel();
                    continue;
                }
            }
        } else {
            continue;
        };
        if ctx.cfg.max_restarts > 0 {
            let now = crate::clock::now_ns();
            recent.push_back(now);
            let window = ctx.cfg.restart_window.as_nanos() as u64;
            while recent
                .front()
                .is_some_and(|t| now.saturating_sub(*t) > window)
            {
                recent.pop_front();
            }
            if recent.len() > ctx.cfg.max_restarts as usize {
                outcome = Outcome::PoolFailed(format!(
                    "supervisor gave up: {} crashes within {} ms (max_restarts = {}), last on job {}",
                    recent.len(),
                    ctx.cfg.restart_window.as_millis(),
                    ctx.cfg.max_restarts,
                    job.map_or_else(|| "(worker killed)".to_string(), |j| j.to_string())
                ));
                ctx.cancel.cancel();
                // The remaining workers drain their queues as cancelled.
                continue;
            }
        }
        ctx.rec.restarts.fetch_add(1, Ordering::Relaxed);
        let delay = if ctx.cfg.backoff.is_zero() {
            Duration::ZERO
        } else {
            let d = match backoff.get(&i) {
                Some((d, last)) if at.saturating_sub(*last) < 1_000_000_000 => {
                    (*d * 2).min(ctx.cfg.max_backoff)
                }
                _ => ctx.cfg.backoff,
            };
            backoff.insert(i, (d, at));
            d
        };
        let (c, q) = (ctx.clone(), ctx.queues[i % nq].clone());
        let h = set.spawn(async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = c.cancel.cancelled() => {}
                }
            }
            worker(c, i, q, Some(at)).await
        });
        who.insert(h.id(), i);
        handles.insert(i, h);
    }
    // Anything still queued after a cancel (no worker left to take it), and
    // a timed run's hand jobs the gate refused while workers drained the
    // queue after the producer had gone.
    for q in &ctx.queues {
        let (left, refused) = q.drain();
        ctx.rec
            .cancelled
            .fetch_add(left.len() as u64, Ordering::Relaxed);
        ctx.rec
            .unreleased
            .fetch_add(refused as u64, Ordering::Relaxed);
    }
    outcome
}

fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".into()
    }
}

async fn worker(ctx: Arc<Ctx>, idx: usize, queue: Arc<Queue<Job>>, mut restarted_at: Option<u64>) {
    // Completions not yet in the shard: flushed every LOCAL entries, after a
    // long job, before waiting for work, before a crash and at the end.
    const LONG_US: u64 = 100;
    const BUDGET: u32 = 128;
    const MIN_RUN_NS: u64 = 50_000;
    let busy = ctx.rec.busy(idx);
    let kills = !ctx.cfg.kill_jobs.is_empty();
    let mut since_wait = 0u32;
    let mut last_yield = crate::clock::now_ns();
    let mut local = crate::recorder::Local::with_capacity(LOCAL);
    // Back to back, the completion of one job is the pick-up of the next:
    // one clock reading serves both.
    let mut hint: Option<u64> = None;
    loop {
        // Taking from the queue never waits while it has jobs, so the
        // worker yields after BUDGET jobs, as an awaited tokio queue made it
        // (tokio's cooperative budget is 128) — or, if those took less than
        // MIN_RUN, once MIN_RUN has passed: never longer than ~50 µs without
        // yielding (far below the 1 ms timer tick the lateness probe and
        // every sleeping task run on), at a fraction of the cost of a
        // yield every 128 very short jobs.
        if since_wait >= BUDGET {
            since_wait = 0;
            let now = hint.unwrap_or_else(crate::clock::now_ns);
            if now.saturating_sub(last_yield) >= MIN_RUN_NS {
                ctx.rec.flush(idx, &mut local);
                hint = None;
                tokio::task::yield_now().await;
                last_yield = crate::clock::now_ns();
            }
        }
        since_wait += 1;
        let next = match hint.take() {
            Some(t) => queue.try_recv(t).map(|(job, origin)| (job, origin, t)),
            None => None,
        };
        let (job, origin, pickup) = match next {
            Some(x) => x,
            None => {
                ctx.rec.flush(idx, &mut local);
                match queue.recv().await {
                    Some(x) => x,
                    None => break,
                }
            }
        };
        if let Some(t) = restarted_at.take() {
            ctx.rec
                .restart_latency(idx, Duration::from_nanos(pickup.saturating_sub(t)));
        }
        if job.crash {
            ctx.rec.flush(idx, &mut local);
        }
        if kills && ctx.cfg.kill_jobs.contains(&job.id) && !ctx.cancel.is_cancelled() {
            // Killed from outside while holding the job: it counts as
            // crashed; the supervisor aborts this task and restarts it.
            ctx.rec.flush(idx, &mut local);
            ctx.rec.crashed(idx, pickup);
            ctx.rec.log_job(&job, origin, pickup, pickup, 1);
            let _ = ctx.kill.send((idx, pickup));
            std::future::pending::<()>().await;
        }
        let timing = if never_awaits(&ctx.cfg, &job) {
            run_now(&ctx, |on| busy.set(on), idx, &job, origin, pickup)
        } else {
            run_job(&ctx, idx, &job, origin, pickup).await
        };
        if let Some(t) = timing {
            let service_us = local.push(&ctx.rec, &job, &t);
            if local.len() < LOCAL && service_us < LONG_US {
                hint = Some(t.done);
            }
        }
    }
    ctx.rec.flush(idx, &mut local);
}

/// The scheduler-lateness probe: a task on the workload runtime that sleeps
/// one period at a time and records how late each wake is.
async fn probe(ctx: Arc<Ctx>, stop: CancellationToken) {
    let period = ctx.cfg.probe_interval;
    let mut next = tokio::time::Instant::now() + period;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.cancelled() => {
                // A probe starved until the end never woke: its pending wake
                // is late by now - intended, and must be counted, or total
                // starvation would read as no lateness at all.
                let now = tokio::time::Instant::now();
                if now > next + period {
                    ctx.rec.lateness(now - next);
                }
                return;
            }
        }
        let now = tokio::time::Instant::now();
        ctx.rec.lateness(now.saturating_duration_since(next));
        next += period;
        if next < now {
            // Starved for more than a period: resume from now rather than
            // firing a burst of catch-up wakes.
            next = now + period;
        }
    }
}

/// Keeps injected crashes out of stderr (they are expected, counted and
/// reported); every other panic still reaches the previous hook.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<InjectedCrash>().is_none() {
                prev(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Aggregator;
    use crate::span::{End, Warmup};
    use cwbench::proto;

    fn closed_loop(workers: usize, warmup: Warmup, end: End) -> Config {
        Config {
            runtime: Flavor::MultiThread,
            threads: 2,
            workers,
            queue_bound: 16,
            producers: 1,
            shed: false,
            open: false,
            dispatch: Dispatch::Pool,
            compute: Compute::Inline,
            yield_every: 1,
            compute_threads: 0,
            warmup,
            end,
            classes: 1,
            credit_chunk: 1024,
            recycle_jobs: 0,
            max_restarts: 0,
            restart_window: Duration::from_secs(1),
            backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            probe_interval: Duration::from_millis(1),
            job_timeout: None,
            cpus: None,
            job_log: false,
            kill_jobs: std::collections::HashSet::new(),
        }
    }

    /// Feeds `chunks` chunks of `size` zero-work jobs, then the end; the
    /// run's final counters.
    fn run(cfg: Config, chunks: u64, size: u64) -> proto::Counters {
        let mut wl = Workload::start(cfg).unwrap();
        for c in 0..chunks {
            let jobs: Vec<Job> = (c * size..(c + 1) * size)
                .map(|id| Job {
                    id,
                    work_units: (id % 3) as u32,
                    ..Job::default()
                })
                .collect();
            wl.recorder.received.fetch_add(size, Ordering::Relaxed);
            wl.feed(jobs);
        }
        wl.end_of_jobs();
        let finished = std::mem::replace(&mut wl.finished, oneshot::channel().1);
        assert_eq!(finished.blocking_recv().unwrap(), Outcome::Finished);
        let mut agg = Aggregator::new(1, crate::recovery::Params::default());
        agg.done(&wl.recorder, 0).totals.unwrap()
    }

    /// A timed closed loop with one producer hands over whole chunks; each
    /// job is still admitted one by one as it enters the queue, so a count
    /// is exact and every job is accounted for.
    #[test]
    fn a_timed_closed_loop_hands_over_chunks_and_stops_job_by_job() {
        for workers in [1, 4] {
            let c = run(
                closed_loop(workers, Warmup::Jobs(100), End::Jobs(1_000)),
                10,
                500,
            );
            assert_eq!(c.measured_completed, 1_000, "{c:?}");
            assert_eq!(c.completed, 1_100, "{c:?}");
            assert_eq!(c.received, 5_000);
            assert_eq!(c.completed + c.unreleased + c.cancelled, 5_000, "{c:?}");
            assert!(c.unreleased >= 3_900, "{c:?}");
        }
    }

    /// The producers give back the buffers they emptied, chunked or job by
    /// job, and `buffer` hands them out again: the prefetch window's memory
    /// is reused, never more of it kept than `recycle_jobs`.
    #[test]
    fn emptied_buffers_come_back_for_the_next_batch() {
        for dispatch in [Dispatch::Pool, Dispatch::TaskPerJob] {
            let mut cfg = closed_loop(2, Warmup::Jobs(0), End::Fed);
            cfg.dispatch = dispatch;
            cfg.recycle_jobs = 2_048;
            let mut wl = Workload::start(cfg).unwrap();
            // One buffer at a time: it must come back, and be the next one.
            let mut last = None;
            for c in 0..20u64 {
                let mut jobs = wl.buffer(1_000);
                assert!(jobs.is_empty() && jobs.capacity() >= 1_000);
                if let Some(p) = last {
                    assert_eq!(jobs.as_ptr(), p, "{dispatch:?}: batch {c} not reused");
                    assert_eq!(wl.buffers.kept(), (0, 0), "{dispatch:?}");
                }
                jobs.extend((c * 1_000..(c + 1) * 1_000).map(|id| Job {
                    id,
                    ..Job::default()
                }));
                last = Some(jobs.as_ptr());
                wl.recorder.received.fetch_add(1_000, Ordering::Relaxed);
                wl.feed(jobs);
                let deadline = Instant::now() + Duration::from_secs(10);
                while wl.buffers.kept().0 == 0 {
                    assert!(
                        Instant::now() < deadline,
                        "{dispatch:?}: batch {c} not back"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                let (n, jobs) = wl.buffers.kept();
                assert!(
                    n == 1 && jobs <= 2_048,
                    "{dispatch:?}: {jobs} jobs kept in {n}"
                );
            }
            wl.end_of_jobs();
            let finished = std::mem::replace(&mut wl.finished, oneshot::channel().1);
            assert_eq!(finished.blocking_recv().unwrap(), Outcome::Finished);
            let mut agg = Aggregator::new(1, crate::recovery::Params::default());
            let c = agg.done(&wl.recorder, 0).totals.unwrap();
            assert_eq!(c.completed, 20_000, "{dispatch:?}: {c:?}");
        }
    }

    #[test]
    fn a_timed_closed_loop_by_duration_accounts_for_every_job() {
        let c = run(
            closed_loop(2, Warmup::Jobs(0), End::After(Duration::from_millis(20))),
            200,
            8_192,
        );
        assert!(c.unreleased > 0, "{c:?}");
        assert!(c.measured_completed > 0, "{c:?}");
        assert_eq!(
            c.completed + c.unreleased + c.cancelled,
            200 * 8_192,
            "{c:?}"
        );
    }
}
