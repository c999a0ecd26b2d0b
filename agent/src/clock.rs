//! The agent's per-job clock: a calibrated TSC read (the `quanta` crate) as
//! plain nanoseconds since a base taken once per process, the base being
//! mapped onto `std::time::Instant` so the two timelines can be converted
//! where an `Instant` is needed (tokio timers, the rare paths). A TSC read
//! costs about a third of `Instant::now` here; where the CPU has no
//! invariant TSC quanta falls back to the OS monotonic clock.
//!
//! The hot path keeps timestamps as `u64` nanoseconds (`now_ns`): their
//! differences are a subtraction, where `Instant`'s are a branchy
//! seconds-and-nanoseconds `Timespec` subtraction.
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

#[inline]
fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let q = quanta::Clock::new();
        let base_raw = q.raw();
        let base = Instant::now();
        Clock { q, base_raw, base }
    })
}

/// Now, in nanoseconds on the agent's timeline (since the process's base).
#[inline]
pub fn now_ns() -> u64 {
    let c = clock();
    c.q.delta_as_nanos(c.base_raw, c.q.raw())
}

/// Now, as an `Instant` on the same timeline.
#[inline]
pub fn now() -> Instant {
    to_instant(now_ns())
}

/// The `Instant` of a nanosecond reading.
#[inline]
pub fn to_instant(ns: u64) -> Instant {
    clock().base + Duration::from_nanos(ns)
}

/// The nanosecond reading of an `Instant` (0 if before the base).
#[inline]
pub fn ns_of(t: Instant) -> u64 {
    let d = t.saturating_duration_since(clock().base);
    d.as_secs() * 1_000_000_000 + u64::from(d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_the_os_clock_and_never_goes_back() {
        let (a, s) = (now(), Instant::now());
        let mut last = now_ns();
        for _ in 0..10_000 {
            let t = now_ns();
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

    #[test]
    fn nanoseconds_and_instants_convert_both_ways() {
        let t = now_ns() + 123_456_789;
        assert_eq!(ns_of(to_instant(t)), t);
    }
}
