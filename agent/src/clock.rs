//! The agent's per-job clock: a calibrated TSC read (the `quanta` crate),
//! mapped onto `std::time::Instant` at a base taken once per process, so
//! every timestamp of a run is an `Instant` on one timeline. A TSC read costs
//! about a third of `Instant::now` here; where the CPU has no invariant TSC
//! quanta falls back to the OS monotonic clock.
//!
//! Only differences between two readings of this clock are ever taken (and
//! tokio timers are always given relative durations), so the TSC's tiny
//! rate error against the OS clock (parts per million) never shows as
//! more than a nanosecond in a latency.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Clock {
    q: quanta::Clock,
    base_raw: u64,
    base: Instant,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let q = quanta::Clock::new();
        let base_raw = q.raw();
        let base = Instant::now();
        Clock { q, base_raw, base }
    })
}

/// Now, on the run's timeline.
#[inline]
pub fn now() -> Instant {
    let c = clock();
    c.base + Duration::from_nanos(c.q.delta_as_nanos(c.base_raw, c.q.raw()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_the_os_clock_and_never_goes_back() {
        let (a, s) = (now(), Instant::now());
        let mut last = a;
        for _ in 0..10_000 {
            let t = now();
            assert!(t >= last);
            last = t;
        }
        std::thread::sleep(Duration::from_millis(20));
        let (b, e) = (now(), Instant::now());
        let ours = b - a;
        let os = e - s;
        let diff = ours.as_secs_f64() - os.as_secs_f64();
        assert!(diff.abs() < 0.002, "ours {ours:?} os {os:?}");
    }
}
