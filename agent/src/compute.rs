//! The CPU step of a job, and the dedicated compute pool (`compute = "pool"`):
//! P OS threads outside the tokio runtime, results back over a oneshot.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Iterations between cancellation checks (~tens of µs).
const SLICE: u32 = 1 << 16;

/// How a CPU step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Done,
    Cancelled,
    /// Past the job's deadline (job timeout).
    TimedOut,
}

/// `units` iterations of a loop the optimiser cannot remove: the seed
/// harness's `black_box(id ^ work_units)` loop (docs/workload.md). Checks
/// for cancellation and the deadline between slices.
#[inline]
pub fn compute(id: u64, units: u32, cancel: &CancellationToken, deadline: Option<Instant>) -> Step {
    let mut left = units;
    while left > 0 {
        let n = left.min(SLICE);
        for _ in 0..n {
            std::hint::black_box(id ^ u64::from(units));
        }
        left -= n;
        if left > 0 {
            if cancel.is_cancelled() {
                return Step::Cancelled;
            }
            if deadline.is_some_and(|d| crate::clock::now() >= d) {
                return Step::TimedOut;
            }
        }
    }
    Step::Done
}

type Task = (
    u64,
    u32,
    CancellationToken,
    Option<Instant>,
    oneshot::Sender<Step>,
);

/// A fixed pool of compute threads fed through one channel.
#[derive(Debug)]
pub struct ComputePool {
    tx: Mutex<Option<std_mpsc::Sender<Task>>>,
}

impl ComputePool {
    pub fn new(threads: usize, cpus: Option<Vec<usize>>) -> std::io::Result<Self> {
        let (tx, rx) = std_mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let cpus = cpus.clone();
            std::thread::Builder::new()
                .name(format!("cwbench-compute-{i}"))
                .spawn(move || {
                    if let Some(c) = &cpus {
                        let _ = crate::affinity::pin_current_thread(c);
                    }
                    loop {
                        // Holding the lock only to receive: one idle thread
                        // waits on the channel, the others on the lock.
                        let task = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok((id, units, cancel, deadline, reply)) = task else {
                            return;
                        };
                        let _ = reply.send(compute(id, units, &cancel, deadline));
                    }
                })?;
        }
        Ok(Self {
            tx: Mutex::new(Some(tx)),
        })
    }

    /// Runs the step on a pool thread; Cancelled if the pool is closed.
    pub async fn run(
        &self,
        id: u64,
        units: u32,
        cancel: CancellationToken,
        deadline: Option<Instant>,
    ) -> Step {
        let (reply, rx) = oneshot::channel();
        let sent = match self.tx.lock() {
            Ok(g) => g
                .as_ref()
                .is_some_and(|tx| tx.send((id, units, cancel, deadline, reply)).is_ok()),
            Err(_) => false,
        };
        if !sent {
            return Step::Cancelled;
        }
        rx.await.unwrap_or(Step::Cancelled)
    }

    /// Lets the threads exit once the queued work is done.
    pub fn close(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
    }
}

impl Drop for ComputePool {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pool_runs_and_cancels() {
        let p = ComputePool::new(2, None).unwrap();
        let c = CancellationToken::new();
        assert_eq!(p.run(1, 1000, c.clone(), None).await, Step::Done);
        let past = Some(crate::clock::now());
        assert_eq!(p.run(1, 10 * SLICE, c.clone(), past).await, Step::TimedOut);
        c.cancel();
        assert_eq!(p.run(1, 10 * SLICE, c, None).await, Step::Cancelled);
        p.close();
        assert_eq!(
            p.run(1, 10, CancellationToken::new(), None).await,
            Step::Cancelled
        );
    }
}
