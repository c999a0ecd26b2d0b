//! The worker pool and its supervisor: workers that pull from their queue, crashes caught and restarted with backoff within the restart intensity, and the panic hook that keeps injected crashes quiet.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cwbench::generator::Job;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::engine::Outcome;
use crate::queue::Queue;

use super::*;

/// Runs the worker pool (pool and mailbox dispatch) and restarts workers
/// that crash. Other dispatches have no pool: it returns at once.
pub(super) async fn supervise(
    ctx: Arc<Ctx>,
    mut kills: mpsc::UnboundedReceiver<(usize, u64)>,
) -> Outcome {
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
            let crashes = crashes_in_window(&mut recent, &ctx.cfg, crate::clock::now_ns());
            if crashes > ctx.cfg.max_restarts as usize {
                outcome = Outcome::PoolFailed(format!(
                    "supervisor gave up: {} crashes within {} ms (max_restarts = {}), last on job {}",
                    crashes,
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
        let delay = restart_delay(&mut backoff, &ctx.cfg, i, at);
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

/// Records a crash at `now` (ns) and returns how many fell within the
/// restart window (OTP's intensity).
fn crashes_in_window(recent: &mut VecDeque<u64>, cfg: &Config, now: u64) -> usize {
    recent.push_back(now);
    let window = cfg.restart_window.as_nanos() as u64;
    while recent
        .front()
        .is_some_and(|t| now.saturating_sub(*t) > window)
    {
        recent.pop_front();
    }
    recent.len()
}

/// The delay before worker `i`, crashed at `at` (ns), restarts: the
/// backoff, doubled for each crash within a second of its last, up to the
/// cap; zero without a backoff.
fn restart_delay(
    backoff: &mut HashMap<usize, (Duration, u64)>,
    cfg: &Config,
    i: usize,
    at: u64,
) -> Duration {
    if cfg.backoff.is_zero() {
        return Duration::ZERO;
    }
    let d = match backoff.get(&i) {
        Some((d, last)) if at.saturating_sub(*last) < 1_000_000_000 => {
            (*d * 2).min(cfg.max_backoff)
        }
        _ => cfg.backoff,
    };
    backoff.insert(i, (d, at));
    d
}

pub(super) fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".into()
    }
}

/// Jobs a pool worker claims from its queue at once, at most, when they
/// are light (`light`). Measured (`cwbench-bench overhead`, zero-work jobs,
/// 2 runtime threads, interleaved on an otherwise idle 2-vCPU VM): one lock
/// per job cost 112-125 ns CPU a job with 2 workers, claims 57-63 ns. When
/// the lock is not contended (another process on one core) claims cost
/// 10-40% more: a claim's jobs merge into fewer equal records.
const CLAIM: usize = 16;

/// The most work a light job may carry: 64 black-box iterations, well
/// under a microsecond, so a claim of CLAIM light jobs holds about a
/// microsecond's work back from other workers at most.
const LIGHT_UNITS: u32 = 64;

/// Whether a worker may claim `job` beside the one it takes: it runs at
/// once to its end (no await, no crash) and carries little work.
#[inline]
fn light(cfg: &Config, job: &Job) -> bool {
    !job.crash && job.work_units <= LIGHT_UNITS && never_awaits(cfg, job)
}

pub(super) async fn worker(
    ctx: Arc<Ctx>,
    idx: usize,
    queue: Arc<Queue<Job>>,
    mut restarted_at: Option<u64>,
) {
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
    // Light jobs claimed with the one taken, run next, back to back.
    let mut held = VecDeque::with_capacity(CLAIM);
    // A worker a kill-worker fault may abort holds nothing beyond its job.
    let claim = if kills { 1 } else { CLAIM };
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
        // yield every 128 very short jobs. Never while holding claimed jobs,
        // which no other worker can take meanwhile.
        if since_wait >= BUDGET && held.is_empty() {
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
        let next = match held.pop_front() {
            Some((job, origin)) => Some((
                job,
                origin,
                hint.take().unwrap_or_else(crate::clock::now_ns),
            )),
            None => hint.take().and_then(|t| {
                queue
                    .try_recv_many(t, claim, &mut held, |j| light(&ctx.cfg, j))
                    .map(|(job, origin)| (job, origin, t))
            }),
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
            } else {
                ctx.rec.flush(idx, &mut local);
            }
        }
    }
    ctx.rec.flush(idx, &mut local);
}

/// Keeps injected crashes out of stderr (they are expected, counted and
/// reported); every other panic still reaches the previous hook.
pub(super) fn install_panic_hook() {
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
