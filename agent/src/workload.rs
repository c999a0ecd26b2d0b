//! One run's workload: a fresh tokio runtime with the profile's worker
//! threads, producers that release jobs from the prefetch buffer into the
//! bounded queue, a supervised pool of worker tasks that run them.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cwbench::generator::Job;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::queue::Queue;
use crate::recorder::{Recorder, Timing};

/// A validated execution configuration (see proto `Profile`).
#[derive(Debug, Clone)]
pub struct Config {
    pub threads: usize,
    pub workers: usize,
    pub queue_bound: usize,
    pub producers: usize,
    pub shed: bool,
    pub warmup_jobs: u64,
    pub classes: usize,
    /// Jobs a producer releases before it returns them as credit.
    pub credit_chunk: u64,
    pub max_restarts: u32,
    pub restart_window: Duration,
}

/// How a run's workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every job was run, shed or cancelled.
    Finished,
    /// The supervisor gave up (restart intensity exceeded).
    PoolFailed(String),
    /// A worker failed for a reason other than an injected crash.
    Internal(String),
}

/// The payload of an injected crash: a real panic, caught by the supervisor.
#[derive(Debug)]
pub struct InjectedCrash {
    pub job: u64,
    pub at: Instant,
}

/// The handle the session keeps on a running workload.
#[derive(Debug)]
pub struct Workload {
    feed: Option<mpsc::UnboundedSender<Vec<Job>>>,
    pub credit: mpsc::UnboundedReceiver<u64>,
    pub finished: oneshot::Receiver<Outcome>,
    pub recorder: Arc<Recorder>,
    pub queue: Arc<Queue<(Job, Instant)>>,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Workload {
    /// Builds the runtime on its own thread and starts producers and workers.
    /// Returns once the runtime exists, or the reason it could not be built.
    pub fn start(cfg: Config) -> Result<Self, String> {
        install_panic_hook();
        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        let (credit_tx, credit_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let shards = cfg.workers.min(cfg.threads.max(1) * 2);
        let recorder = Arc::new(Recorder::new(
            shards,
            cfg.classes,
            cfg.warmup_jobs,
            Instant::now(),
        ));
        let queue = Arc::new(Queue::new(cfg.queue_bound));
        let cancel = CancellationToken::new();
        let ctx = Arc::new(Ctx {
            cfg: cfg.clone(),
            rec: recorder.clone(),
            queue: queue.clone(),
            cancel: cancel.clone(),
        });
        let thread = std::thread::Builder::new()
            .name("cwbench-run".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(cfg.threads)
                    .thread_name("cwbench-work")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = built_tx.send(Err(format!("cannot build the runtime: {e}")));
                        return;
                    }
                };
                let _ = built_tx.send(Ok(()));
                let outcome = rt.block_on(run(ctx, feed_rx, credit_tx));
                let _ = done_tx.send(outcome);
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| format!("cannot start the run thread: {e}"))?;
        match built_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("the run thread died while building the runtime".into()),
        }
        Ok(Self {
            feed: Some(feed_tx),
            credit: credit_rx,
            finished: done_rx,
            recorder,
            queue,
            cancel,
            thread: Some(thread),
        })
    }

    /// Hands received jobs to the producers.
    pub fn feed(&self, jobs: Vec<Job>) {
        if let Some(f) = &self.feed {
            // Fails only once producers are gone (cancelled): those jobs were
            // counted as received and must be counted as cancelled.
            if let Err(e) = f.send(jobs) {
                self.recorder
                    .cancelled
                    .fetch_add(e.0.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// No more jobs: producers finish what is buffered, then the pool drains.
    pub fn end_of_jobs(&mut self) {
        self.feed = None;
    }

    /// Stops the run: everything not yet done is counted as cancelled.
    pub fn cancel(&mut self) {
        self.cancel.cancel();
        self.feed = None;
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.feed = None;
        if let Some(t) = self.thread.take() {
            // The runtime thread ends within the cancel bound; joining on
            // another thread keeps a server task from blocking on it.
            std::thread::spawn(move || {
                let _ = t.join();
            });
        }
    }
}

struct Ctx {
    cfg: Config,
    rec: Arc<Recorder>,
    queue: Arc<Queue<(Job, Instant)>>,
    cancel: CancellationToken,
}

async fn run(
    ctx: Arc<Ctx>,
    feed: mpsc::UnboundedReceiver<Vec<Job>>,
    credit: mpsc::UnboundedSender<u64>,
) -> Outcome {
    let feed = Arc::new(tokio::sync::Mutex::new(feed));
    let mut producers = JoinSet::new();
    for _ in 0..ctx.cfg.producers {
        producers.spawn(produce(ctx.clone(), feed.clone(), credit.clone()));
    }
    let pool = tokio::spawn(supervise(ctx.clone()));
    while producers.join_next().await.is_some() {}
    // Producers are done (or cancelled): no more jobs can enter the queue.
    ctx.queue.close();
    // Whatever is left in the buffer after a cancel never ran.
    let mut rx = feed.lock().await;
    rx.close();
    while let Ok(jobs) = rx.try_recv() {
        ctx.rec
            .cancelled
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
    }
    match pool.await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Internal(format!("supervisor failed: {e}")),
    }
}

/// Moves jobs from the prefetch buffer into the bounded queue.
async fn produce(
    ctx: Arc<Ctx>,
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
                    let t0 = Instant::now();
                    let c = tokio::select! {
                        c = rx.recv() => c,
                        _ = ctx.cancel.cancelled() => None,
                    };
                    if fed_once && c.is_some() {
                        rec.feed_stall_us
                            .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                    c
                }
            }
        };
        let Some(chunk) = chunk else { break };
        fed_once = true;
        let mut jobs = chunk.into_iter();
        while let Some(job) = jobs.next() {
            if ctx.cancel.is_cancelled() {
                rec.cancelled
                    .fetch_add(1 + jobs.len() as u64, Ordering::Relaxed);
                break;
            }
            let t_enq = Instant::now();
            rec.released(&job, t_enq);
            if ctx.cfg.shed {
                if ctx.queue.try_send((job, t_enq)).is_err() {
                    rec.shed.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                let sent = tokio::select! {
                    r = ctx.queue.send((job, t_enq)) => r.is_ok(),
                    _ = ctx.cancel.cancelled() => false,
                };
                if !sent {
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
    }
    if unreturned > 0 {
        let _ = credit.send(unreturned);
    }
}

/// Runs the worker pool and restarts workers that crash.
async fn supervise(ctx: Arc<Ctx>) -> Outcome {
    let mut set = JoinSet::new();
    let mut who = HashMap::new();
    for i in 0..ctx.cfg.workers {
        let h = set.spawn(worker(ctx.clone(), i, None));
        who.insert(h.id(), i);
    }
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let mut outcome = Outcome::Finished;
    while let Some(res) = set.join_next_with_id().await {
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
        if !err.is_panic() {
            continue;
        }
        let payload: Box<dyn Any + Send> = err.into_panic();
        let Some(crash) = payload.downcast_ref::<InjectedCrash>() else {
            let msg = panic_message(&payload);
            outcome = Outcome::Internal(format!("worker {i} panicked: {msg}"));
            ctx.cancel.cancel();
            continue;
        };
        if ctx.cfg.max_restarts > 0 {
            let now = Instant::now();
            recent.push_back(now);
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > ctx.cfg.restart_window)
            {
                recent.pop_front();
            }
            if recent.len() > ctx.cfg.max_restarts as usize {
                outcome = Outcome::PoolFailed(format!(
                    "supervisor gave up: {} crashes within {} ms (max_restarts = {}), last on job {}",
                    recent.len(),
                    ctx.cfg.restart_window.as_millis(),
                    ctx.cfg.max_restarts,
                    crash.job
                ));
                ctx.cancel.cancel();
                // The remaining workers drain the queue as cancelled.
                continue;
            }
        }
        ctx.rec.restarts.fetch_add(1, Ordering::Relaxed);
        let h = set.spawn(worker(ctx.clone(), i, Some(crash.at)));
        who.insert(h.id(), i);
    }
    // Anything still queued after a cancel (no worker left to take it).
    let left = ctx.queue.drain().len() as u64;
    ctx.rec.cancelled.fetch_add(left, Ordering::Relaxed);
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

/// Iterations between cancellation checks in the compute loop (~tens of µs).
const COMPUTE_SLICE: u32 = 1 << 16;

/// The CPU step: `units` iterations of a loop the optimiser cannot remove
/// (the seed harness's loop). Returns false if cancelled part way.
#[inline]
pub fn compute(id: u64, units: u32, cancel: &CancellationToken) -> bool {
    let mut left = units;
    while left > 0 {
        let n = left.min(COMPUTE_SLICE);
        for _ in 0..n {
            std::hint::black_box(id ^ u64::from(units));
        }
        left -= n;
        if left > 0 && cancel.is_cancelled() {
            return false;
        }
    }
    true
}

async fn worker(ctx: Arc<Ctx>, idx: usize, mut restarted_at: Option<Instant>) {
    let rec = &ctx.rec;
    while let Some((job, t_enq)) = ctx.queue.recv().await {
        let pickup = Instant::now();
        if let Some(t) = restarted_at.take() {
            rec.restart_latency(idx, pickup.saturating_duration_since(t));
        }
        if ctx.cancel.is_cancelled() {
            rec.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        rec.in_flight.fetch_add(1, Ordering::Relaxed);
        let ok = compute(job.id, job.work_units, &ctx.cancel);
        if ok && job.crash {
            rec.in_flight.fetch_sub(1, Ordering::Relaxed);
            rec.crashed(idx);
            std::panic::panic_any(InjectedCrash {
                job: job.id,
                at: Instant::now(),
            });
        }
        let mut sleep = None;
        let mut ok = ok;
        if ok && job.sleep_us > 0 {
            let req = Duration::from_micros(u64::from(job.sleep_us));
            let t0 = Instant::now();
            ok = tokio::select! {
                _ = tokio::time::sleep(req) => true,
                _ = ctx.cancel.cancelled() => false,
            };
            sleep = Some((req, t0.elapsed()));
        }
        rec.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !ok {
            rec.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let done = Instant::now();
        rec.completed(
            idx,
            &job,
            &Timing {
                origin: t_enq,
                pickup,
                done,
                sleep,
            },
        );
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
