//! The producers: jobs from the prefetch buffer released into the dispatch (closed loop as fast as accepted, open loop at their intended times), and the handlers that await their own jobs.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cwbench::generator::Job;
use cwbench::spec::Dispatch;
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError, mpsc};
use tokio_util::sync::CancellationToken;

use crate::engine::Config;
use crate::recorder::Timing;

use super::*;

/// How a producer's attempt to hand a job on ended.
pub(super) enum Released {
    Queued,
    Shed,
    Cancelled,
}

/// Moves jobs from the prefetch buffer into the dispatch.
pub(super) async fn produce(
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
            let Some(released) = hand_over(&ctx, chunk).await else {
                break;
            };
            unreturned += released;
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
            // The token's own check takes a lock: per job its mirror, and
            // the token every 64 jobs (the mirror lags while no task
            // yields). A job released after the cancel is counted as
            // cancelled where it runs.
            if ctx.stopped.load(Ordering::Acquire)
                || (jobs.len().is_multiple_of(64) && ctx.cancel.is_cancelled())
            {
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

/// Closed loop, one producer, one pool queue: the whole chunk is handed
/// over at once (see Queue::send_all). A timed run's jobs are admitted one
/// by one as they enter the queue (its gate). Returns the jobs released;
/// None if the run was cancelled before.
async fn hand_over(ctx: &Ctx, mut chunk: Vec<Job>) -> Option<u64> {
    let rec = &ctx.rec;
    let n = chunk.len() as u64;
    if ctx.cancel.is_cancelled() {
        rec.cancelled.fetch_add(n, Ordering::Relaxed);
        return None;
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
    Some(n - refused)
}

/// Whether producers hand over whole chunks: closed loop, blocking
/// backpressure, one producer, one pool queue.
pub(super) fn chunked(cfg: &Config) -> bool {
    !cfg.open && !cfg.shed && cfg.producers == 1 && matches!(cfg.dispatch, Dispatch::Pool)
}

/// Waits until `at`: tokio's timer (1 ms ticks) for the long part, then
/// yielding until the instant, so releases are not late by a timer tick.
/// Returns false if cancelled. `at`: ns, agent clock.
pub(super) async fn pace_until(at: u64, cancel: &CancellationToken) -> bool {
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
pub(super) async fn release(ctx: &Arc<Ctx>, producer: usize, job: Job, origin: u64) -> Released {
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
pub(super) fn after_awaited(
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
pub(super) async fn job_task(ctx: Arc<Ctx>, job: Job, origin: u64, permit: OwnedSemaphorePermit) {
    let pickup = crate::clock::now_ns();
    let timing = if let Some(remote) = ctx.remote.get() {
        Box::pin(remote_job(&ctx, remote, job, origin)).await
    } else if never_awaits(&ctx.cfg, &job) {
        let n = &ctx.rec.in_flight;
        run_now(&ctx, |on| in_flight(n, on), 0, &job, origin, pickup)
    } else {
        // Boxed, so every task's state holds only a pointer to run_job's
        // (large) state; a job that awaits pays one allocation for it.
        Box::pin(run_job(&ctx, 0, &job, origin, pickup)).await
    };
    if let Some(timing) = timing {
        // Recorded here, into the shard of the thread the task ran on: a
        // channel to an aggregator task cost more than the job's own task
        // (tokio's list channel push 12% of samples, its wake-ups more).
        ctx.rec
            .completed(crate::recorder::thread_index(), &job, &timing);
    }
    drop(permit);
}
