//! The tokio engine: a fresh tokio runtime with the profile's threads and
//! flavor; producers that release jobs from the prefetch buffer (closed loop:
//! as fast as accepted; open loop: at each job's intended time); one of five
//! dispatch architectures; one of four compute placements; a supervisor that
//! restarts crashed workers; a scheduler-lateness probe.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cwbench::generator::Job;
use cwbench::proto;
use cwbench::spec::{Compute, Dispatch, Flavor};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::buffers::Buffers;
use crate::compute::ComputePool;
use crate::engine::{Config, Outcome, Workload};
use crate::engine::{Parts, Probe};
use crate::queue::Queue;
use crate::recorder::{Recorder, Timing};
use crate::span::Span;

mod job;
mod probe;
mod produce;
mod supervisor;
pub(crate) mod ws_server;

use job::*;
use probe::*;
use produce::*;
use supervisor::*;

/// The payload of an injected crash: a real panic, caught by the supervisor.
#[derive(Debug)]
pub struct InjectedCrash {
    pub job: u64,
    /// ns, agent clock.
    pub at: u64,
}

/// Builds the runtime on its own thread and starts producers and workers.
/// Returns once the runtime exists, or the reason it could not be built.
pub fn start(cfg: Config) -> Result<Workload, String> {
    install_panic_hook();
    // Calibrates the TSC clock now rather than on the first job.
    let _ = crate::clock::now();
    let (feed_tx, feed_rx) = mpsc::unbounded_channel();
    let (credit_tx, credit_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    let (built_tx, built_rx) = std::sync::mpsc::channel();
    let shards = match cfg.dispatch {
        // Job tasks record on the thread they ran on (recorder::thread_index).
        Dispatch::TaskPerJob => cfg.threads.max(1),
        _ => cfg.workers.max(cfg.producers).min(cfg.threads.max(1) * 2),
    };
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
    let compute_pool = compute_pool(&cfg)?;
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
        t0: OnceLock::new(),
        kill: kill_tx,
        stopped: Arc::default(),
        buffers: buffers.clone(),
        remote: OnceLock::new(),
    });
    let thread = std::thread::Builder::new()
        .name("cwbench-run".into())
        .spawn(move || {
            let rt = match build_runtime(&cfg) {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = built_tx.send(Err(e));
                    return;
                }
            };
            let _ = built_tx.send(Ok(rt.handle().clone()));
            let outcome = rt.block_on(run(ctx, feed_rx, credit_tx, kill_rx));
            let _ = done_tx.send(outcome);
            rt.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(|e| format!("cannot start the run thread: {e}"))?;
    let runtime = match built_rx.recv() {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("the run thread died while building the runtime".into()),
    };
    Ok(Workload::from_parts(Parts {
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

/// The profile's runtime (flavor, threads, CPU pinning), built on the
/// thread that will drive it: a current-thread runtime runs there.
pub(crate) fn build_runtime(cfg: &Config) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = if cfg.runtime == Flavor::CurrentThread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cfg.threads).thread_name("cwbench-work");
        b
    };
    if let Some(cpus) = cfg.cpus.clone() {
        // This thread runs a current-thread runtime itself.
        crate::affinity::pin_current_thread(&cpus)
            .map_err(|e| format!("cannot pin to CPUs: {e}"))?;
        builder.on_thread_start(move || {
            let _ = crate::affinity::pin_current_thread(&cpus);
        });
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build the runtime: {e}"))
}

/// The dedicated compute pool, when the profile or a class places its CPU
/// step there.
pub(crate) fn compute_pool(cfg: &Config) -> Result<Option<ComputePool>, String> {
    cfg.places_on(Compute::Pool)
        .then(|| ComputePool::new(cfg.compute_threads, cfg.cpus.clone()))
        .transpose()
        .map_err(|e| format!("cannot start the compute pool: {e}"))
}

/// The tokio engine's gauges: queue depth and the runtime's stable metrics.
#[derive(Debug)]
pub(crate) struct TokioProbe {
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

pub(crate) struct Ctx {
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
    /// A WebSocket client's connections (set once the runtime runs).
    remote: OnceLock<Arc<crate::ws::client::Connections>>,
}

/// Completion entries a pool worker holds (`recorder::Local`) before it
/// flushes them into its shard.
pub(crate) const LOCAL: usize = 64;

pub(crate) async fn run(
    ctx: Arc<Ctx>,
    feed: mpsc::UnboundedReceiver<Vec<Job>>,
    credit: mpsc::UnboundedSender<u64>,
    kills: mpsc::UnboundedReceiver<(usize, u64)>,
) -> Outcome {
    {
        let (token, flag) = (ctx.cancel.clone(), ctx.stopped.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            flag.store(true, Ordering::Release);
        });
    }
    if let Some(r) = ctx.cfg.remote.clone() {
        let conns = crate::ws::client::Connections::open(r, ctx.rec.clone(), !ctx.cfg.open);
        let _ = ctx.remote.set(conns);
    }
    let probe_stop = CancellationToken::new();
    let probe = tokio::spawn(probe(ctx.clone(), probe_stop.clone()));
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
    let remote = match ctx.remote.get() {
        Some(r) => r.close().await,
        None => Ok(()),
    };
    probe_stop.cancel();
    let _ = probe.await;
    match (outcome, pool_outcome, remote) {
        (Outcome::Finished, Outcome::Finished, Err(why)) => Outcome::Internal(why),
        (Outcome::Finished, pool, _) => pool,
        (outcome, _, _) => outcome,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::recorder::Aggregator;
    use crate::span::{End, Warmup};
    use cwbench::proto;

    fn closed_loop(workers: usize, warmup: Warmup, end: End) -> Config {
        Config {
            threads: 2,
            workers,
            warmup,
            end,
            ..Config::default()
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

    /// A class placed on the compute pool takes only its own CPU steps off
    /// the runtime: on one runtime thread, with the profile's placement
    /// inline, the light class's jobs all finish while the hot job is still
    /// computing (inline, they would all wait for it).
    #[test]
    fn a_class_on_the_compute_pool_leaves_the_runtime_to_the_others() {
        let mut cfg = closed_loop(2, Warmup::Jobs(0), End::Fed);
        cfg.runtime = Flavor::CurrentThread;
        cfg.threads = 1;
        cfg.classes = 2;
        cfg.class_compute = vec![Compute::Inline, Compute::Pool];
        cfg.compute_threads = 1;
        cfg.job_log = true;
        assert!(cfg.places_on(Compute::Pool) && !cfg.places_on(Compute::Blocking));
        let hot = Job {
            id: 0,
            class: 1,
            work_units: 50_000_000,
            ..Job::default()
        };
        let light = Job {
            class: 0,
            work_units: 10,
            ..Job::default()
        };
        assert!(never_awaits(&cfg, &light) && !never_awaits(&cfg, &hot));
        let mut wl = Workload::start(cfg).unwrap();
        let mut jobs = vec![hot];
        jobs.extend((1..=200).map(|id| Job { id, ..light }));
        wl.recorder.received.fetch_add(201, Ordering::Relaxed);
        wl.feed(jobs);
        wl.end_of_jobs();
        let finished = std::mem::replace(&mut wl.finished, oneshot::channel().1);
        assert_eq!(finished.blocking_recv().unwrap(), Outcome::Finished);
        let log = wl.recorder.take_job_log().unwrap();
        let end_of = |class: u32| {
            log.class_ids
                .iter()
                .zip(&log.end_us)
                .filter(move |&(&c, _)| c == class)
                .map(|(_, &e)| e)
        };
        assert_eq!(end_of(0).count(), 200);
        let (light_last, hot_end) = (end_of(0).max().unwrap(), end_of(1).max().unwrap());
        assert!(
            light_last < hot_end,
            "the light jobs waited for the hot one: last at {light_last} µs, hot at {hot_end} µs"
        );
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
