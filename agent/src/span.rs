//! Which jobs a run measures, and when a timed run stops releasing jobs.
//!
//! By count (the default), job ids decide: ids below `warmup_jobs` are the
//! warm-up and the coordinator sends exactly the jobs of the run. A timed run
//! (a closed loop given `warmup_ms`, `duration_ms` or both) is decided here,
//! on the agent's clock, at the moment a producer releases a job: the
//! coordinator streams until the agent says it has stopped, so each host
//! runs a prefix of the one job stream, as long as it managed in the time.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cwbench::generator::Job;
use tokio_util::sync::CancellationToken;

/// What is warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmup {
    /// Ids below this.
    Jobs(u64),
    /// Jobs released before this long after the first release.
    For(Duration),
}

/// When the measured part ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// When the coordinator's jobs run out (EndOfJobs).
    Fed,
    /// No release later than this after the first measured release.
    After(Duration),
    /// After this many measured releases.
    Jobs(u64),
}

/// A run's measured span, shared by producers and recorder.
#[derive(Debug)]
pub struct Span {
    warmup: Warmup,
    end: End,
    /// Warmup::For: when the measured part starts. End::After: the first
    /// measured release (set once, by whichever producer gets there first).
    /// Nanoseconds on the agent's clock (crate::clock::now_ns).
    measure_from: OnceLock<u64>,
    measured_released: AtomicU64,
    /// Cancelled when the measured part is over (a timed run only).
    pub stopped: CancellationToken,
}

impl Span {
    pub fn new(warmup: Warmup, end: End) -> Self {
        Self {
            warmup,
            end,
            measure_from: OnceLock::new(),
            measured_released: AtomicU64::new(0),
            stopped: CancellationToken::new(),
        }
    }

    /// Does the agent decide when the run ends?
    pub fn timed(&self) -> bool {
        self.end != End::Fed
    }

    /// The first jobs are about to be released at `t0` (ns, agent clock).
    pub fn begin(&self, t0: u64) {
        if let Warmup::For(d) = self.warmup {
            let _ = self.measure_from.set(t0 + d.as_nanos() as u64);
        }
    }

    /// The measured part starts at `t` (ns, agent clock), as decided by a
    /// runtime outside the process (the BEAM's M line); first call wins.
    pub fn measure_from(&self, t: u64) {
        let _ = self.measure_from.set(t);
    }

    /// Is `job`, released (closed loop) or due (open loop) at `origin` (ns,
    /// agent clock), measured?
    #[inline]
    pub fn is_measured(&self, job: &Job, origin: u64) -> bool {
        match self.warmup {
            Warmup::Jobs(n) => job.id >= n,
            Warmup::For(_) => self.measure_from.get().is_some_and(|&t| origin >= t),
        }
    }

    /// A producer is about to release `job` at `origin`. False: the measured
    /// part is over; the job (and every later one) is not released.
    #[inline]
    pub fn admit(&self, job: &Job, origin: u64) -> bool {
        if self.end == End::Fed {
            return true;
        }
        if self.stopped.is_cancelled() {
            return false;
        }
        if !self.is_measured(job, origin) {
            return true;
        }
        let over = match self.end {
            End::Fed => false,
            End::After(d) => {
                origin >= *self.measure_from.get_or_init(|| origin) + d.as_nanos() as u64
            }
            End::Jobs(n) => self.measured_released.fetch_add(1, Ordering::Relaxed) >= n,
        };
        if over {
            self.stopped.cancel();
        }
        !over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64) -> Job {
        Job {
            id,
            ..Job::default()
        }
    }

    #[test]
    fn by_count_every_job_is_admitted_and_ids_decide() {
        let s = Span::new(Warmup::Jobs(10), End::Fed);
        let t = 1_000;
        assert!(!s.is_measured(&job(9), t));
        assert!(s.is_measured(&job(10), t));
        assert!(s.admit(&job(1_000_000), t + 3_600_000_000_000));
        assert!(!s.timed());
    }

    #[test]
    fn timed_warm_up_then_duration() {
        let s = Span::new(
            Warmup::For(Duration::from_millis(100)),
            End::After(Duration::from_millis(500)),
        );
        let t0 = 5_000_000_000u64;
        s.begin(t0);
        let at = |ms: u64| t0 + ms * 1_000_000;
        assert!(s.admit(&job(0), at(0)));
        assert!(!s.is_measured(&job(0), at(99)));
        assert!(s.is_measured(&job(1), at(100)));
        assert!(s.admit(&job(1), at(100)));
        assert!(s.admit(&job(2), at(599)));
        assert!(!s.stopped.is_cancelled());
        assert!(!s.admit(&job(3), at(600)));
        assert!(s.stopped.is_cancelled());
        // Once stopped, nothing more is released, warm-up or not.
        assert!(!s.admit(&job(4), at(50)));
    }

    #[test]
    fn count_warm_up_then_duration_from_the_first_measured_release() {
        let s = Span::new(Warmup::Jobs(2), End::After(Duration::from_millis(10)));
        let t0 = 5_000_000_000u64;
        s.begin(t0);
        let at = |ms: u64| t0 + ms * 1_000_000;
        assert!(s.admit(&job(0), at(0)));
        assert!(s.admit(&job(1), at(1000)));
        assert!(s.admit(&job(2), at(2000)));
        assert!(s.admit(&job(3), at(2009)));
        assert!(!s.admit(&job(4), at(2010)));
    }

    #[test]
    fn timed_warm_up_then_a_count() {
        let s = Span::new(Warmup::For(Duration::from_millis(5)), End::Jobs(2));
        let t0 = 5_000_000_000u64;
        s.begin(t0);
        let at = |ms: u64| t0 + ms * 1_000_000;
        for id in 0..100 {
            assert!(s.admit(&job(id), at(1)), "warm-up is never cut");
        }
        assert!(s.admit(&job(100), at(5)));
        assert!(s.admit(&job(101), at(6)));
        assert!(!s.admit(&job(102), at(7)));
        assert!(s.stopped.is_cancelled());
    }
}
