//! One job run where its class places its CPU step: compute, injected crash, sleep, and how it ended.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cwbench::generator::Job;
use cwbench::spec::Compute;

use crate::compute::{Step, compute};
use crate::engine::Config;
use crate::recorder::{Recorder, Timing};

use super::*;

/// The shared in-flight gauge (jobs run outside pool workers).
#[inline]
pub(super) fn in_flight(n: &std::sync::atomic::AtomicU64, on: bool) {
    if on {
        n.fetch_add(1, Ordering::Relaxed);
    } else {
        n.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `job` runs to its end without awaiting: no sleep, and no work or
/// its work computed inline (`run_now`) where its class places it.
#[inline]
pub(super) fn never_awaits(cfg: &Config, job: &Job) -> bool {
    job.sleep_us == 0 && (job.work_units == 0 || cfg.placement(job.class) == Compute::Inline)
}

/// Runs one job: the CPU step where its class places it, an injected crash
/// if the job carries one, then the sleep. None if cancelled part way.
/// Timestamps: ns, agent clock.
pub(super) async fn run_job(
    ctx: &Ctx,
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
pub(super) fn run_now(
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
pub(super) fn crash(rec: &Recorder, shard: usize, job: &Job, origin: u64, pickup: u64) -> ! {
    let at = crate::clock::now_ns();
    rec.crashed(shard, at);
    rec.log_job(job, origin, pickup, at, 1);
    std::panic::panic_any(InjectedCrash { job: job.id, at });
}

/// The end of a job that did not crash: its completion time, or the count
/// of how it ended otherwise.
#[inline(always)]
pub(super) fn finish(
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

pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        // Relative: the deadline is on the agent's TSC timeline.
        Some(t) => tokio::time::sleep(t.saturating_duration_since(crate::clock::now())).await,
        None => std::future::pending().await,
    }
}

/// The CPU step, placed as the job's class says (its own placement or the
/// profile's).
pub(super) async fn compute_step(ctx: &Ctx, job: &Job, deadline: Option<Instant>) -> Step {
    let (id, units) = (job.id, job.work_units);
    if units == 0 {
        return Step::Done;
    }
    match ctx.cfg.placement(job.class) {
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

/// A WebSocket client's job: the task's round trip to the server, timed
/// from `origin` (pickup = the frame written, done = the answer read); how
/// it ended otherwise, counted.
pub(super) async fn remote_job(
    ctx: &Ctx,
    remote: &crate::ws::client::Connections,
    job: Job,
    origin: u64,
) -> Option<Timing> {
    use crate::ws::client::Answer;
    use cwbench::wsproto::Outcome as O;
    let rec = &ctx.rec;
    rec.in_flight.fetch_add(1, Ordering::Relaxed);
    let answer = match ctx.cfg.job_timeout {
        None => remote.round_trip(job, &ctx.cancel).await,
        Some(t) => match tokio::time::timeout(t, remote.round_trip(job, &ctx.cancel)).await {
            Ok(a) => a,
            Err(_) => {
                rec.in_flight.fetch_sub(1, Ordering::Relaxed);
                rec.log_job(&job, origin, origin, crate::clock::now_ns(), 2);
                rec.timed_out.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        },
    };
    rec.in_flight.fetch_sub(1, Ordering::Relaxed);
    let (sent, done, outcome) = match answer {
        Answer::Answered {
            sent,
            done,
            response,
        } => (sent.max(origin), done, response.outcome),
        Answer::Lost => {
            rec.ws.connection_lost.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Answer::Cancelled => {
            rec.cancelled.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    match outcome {
        O::Completed => {
            rec.log_job(&job, origin, sent, done, 0);
            return Some(Timing {
                origin,
                pickup: sent,
                done,
                overshoot_us: None,
            });
        }
        O::Crashed => {
            rec.log_job(&job, origin, sent, done, 1);
            rec.crashed(0, done);
        }
        O::TimedOut => {
            rec.log_job(&job, origin, sent, done, 2);
            rec.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        O::Refused => {
            rec.ws.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    None
}
