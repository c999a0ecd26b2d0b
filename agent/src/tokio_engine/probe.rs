//! The scheduler-lateness probe: how late the workload runtime wakes a task that sleeps one period at a time.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::*;

/// The scheduler-lateness probe: a task on the workload runtime that sleeps
/// one period at a time and records how late each wake is.
pub(super) async fn probe(ctx: Arc<Ctx>, stop: CancellationToken) {
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
