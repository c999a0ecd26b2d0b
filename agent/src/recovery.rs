//! Recovery interval after injected faults (docs/workload.md, Metrics).
//!
//! The baseline is the median window of the span before the fault. A fault
//! dents the completion rate when, within the first window after it, the
//! jobs missing against the baseline add up to more than the band's share of
//! a window; otherwise it made "no measurable dip". A dent is over when a
//! window is back at or above the band's lower edge; the recovery instant is
//! then resolved to one 10 ms bucket: where the missing jobs, summed from
//! the fault, stopped growing. So a 300 ms stall of every worker reads
//! 300 ms, not the window's length more. Only a bounded horizon is kept.

use std::collections::VecDeque;

use cwbench::histogram::{Hist, new_hist, record};

/// Bucket width, microseconds.
pub const BUCKET_US: u64 = 10_000;
/// How long a fault may take to recover before it is reported as not
/// recovered, in buckets (30 s).
const GIVE_UP: u64 = 3_000;
/// Fault marks kept for the report's timeline.
const MAX_MARKS: usize = 256;

/// Window, band and baseline span.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Sliding window, in buckets.
    pub window: u64,
    /// Relative band, e.g. 0.1 for ±10%.
    pub band: f64,
    /// Baseline span before the fault, in buckets.
    pub baseline: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            window: 10,
            band: 0.1,
            baseline: 100,
        }
    }
}

/// One fault and how it ended: (fault time µs, recovery µs: 0 for no
/// measurable dip, None when not recovered or without a baseline).
pub type Mark = (u64, Option<u64>);

/// Tracks completions and faults; evaluates each fault once the data after
/// it is in.
#[derive(Debug)]
pub struct Recovery {
    p: Params,
    /// Completions per bucket; `ring[0]` is bucket `base`.
    ring: VecDeque<u32>,
    base: u64,
    /// Fault events not evaluated yet: their times, µs.
    pending: VecDeque<u64>,
    last_fault: Option<u64>,
    pub intervals: Hist,
    pub unrecovered: u64,
    /// Faults with too little history before them for a baseline.
    pub no_baseline: u64,
    /// Faults after which the rate never left the band.
    pub no_dip: u64,
    pub marks: Vec<Mark>,
}

/// How a fault's evaluation ended.
enum Outcome {
    NoBaseline,
    NoDip,
    /// Recovered at the start of this bucket.
    Recovered(u64),
    Unrecovered,
    /// Not enough data after it yet.
    Pending,
}

impl Recovery {
    pub fn new(p: Params) -> Self {
        Self {
            p,
            ring: VecDeque::new(),
            base: 0,
            pending: VecDeque::new(),
            last_fault: None,
            intervals: new_hist(),
            unrecovered: 0,
            no_baseline: 0,
            no_dip: 0,
            marks: Vec::new(),
        }
    }

    /// Adds completion counts for buckets `first..first + counts.len()`.
    pub fn add_completions(&mut self, first: u64, counts: &[u32]) {
        for (k, c) in counts.iter().enumerate() {
            let b = first + k as u64;
            if b < self.base {
                continue; // older than the horizon
            }
            let i = (b - self.base) as usize;
            if i >= self.ring.len() {
                self.ring.resize(i + 1, 0);
            }
            self.ring[i] += c;
        }
    }

    /// A fault at `at_us` (µs since the run started). Faults within one
    /// window of the event's first fault are the same event (a burst).
    pub fn add_fault(&mut self, at_us: u64) {
        let b = at_us / BUCKET_US;
        if self.last_fault.is_some_and(|f| b < f + self.p.window) {
            return;
        }
        self.last_fault = Some(b);
        self.pending.push_back(at_us);
    }

    fn count(&self, b: u64) -> u64 {
        if b < self.base {
            return 0;
        }
        self.ring
            .get((b - self.base) as usize)
            .map_or(0, |c| u64::from(*c))
    }

    /// Sum of the window of buckets ending at `end` (inclusive).
    fn window(&self, end: u64) -> u64 {
        let w = self.p.window;
        (end + 1 - w..=end).map(|b| self.count(b)).sum()
    }

    /// Evaluates pending faults with data up to bucket `now` (exclusive: the
    /// current bucket is still filling). `last` = the run is over.
    pub fn evaluate(&mut self, now: u64, last: bool) {
        let mut still = VecDeque::new();
        while let Some(at_us) = self.pending.pop_front() {
            let f = at_us / BUCKET_US;
            match self.outcome(f, now, last) {
                Outcome::NoBaseline => {
                    self.no_baseline += 1;
                    self.mark(at_us, None);
                }
                Outcome::NoDip => {
                    self.no_dip += 1;
                    self.mark(at_us, Some(0));
                }
                Outcome::Recovered(bucket) => {
                    // From the fault itself, not its bucket's start.
                    let us = (bucket * BUCKET_US).saturating_sub(at_us).max(1);
                    record(&mut self.intervals, us);
                    self.mark(at_us, Some(us));
                }
                Outcome::Unrecovered => {
                    self.unrecovered += 1;
                    self.mark(at_us, None);
                }
                Outcome::Pending => still.push_back(at_us),
            }
        }
        self.pending = still;
        self.trim(now);
    }

    /// The baseline of a fault at bucket `f`: the median window of the
    /// baseline span before it; None with fewer than 3 windows or no jobs.
    fn baseline(&self, f: u64) -> Option<f64> {
        let w = self.p.window;
        let mut base: Vec<u64> = (1..=self.p.baseline / w)
            .filter_map(|k| {
                let end = f.checked_sub((k - 1) * w + 1)?;
                (end + 1 >= w).then(|| self.window(end))
            })
            .collect();
        if base.len() < 3 {
            return None;
        }
        base.sort_unstable();
        let median = base[base.len() / 2] as f64;
        (median > 0.0).then_some(median)
    }

    fn outcome(&self, f: u64, now: u64, last: bool) -> Outcome {
        let w = self.p.window;
        let Some(baseline) = self.baseline(f) else {
            return Outcome::NoBaseline;
        };
        if f + w > now {
            return if last {
                Outcome::Unrecovered
            } else {
                Outcome::Pending
            };
        }
        // A dent: within the first window after the fault, the jobs missing
        // against the baseline add up to more than the band's share of a
        // window (a window's sum alone misses a dent shorter than the window
        // whose backlog completes inside it).
        let per_bucket = baseline / w as f64;
        let mut missing: f64 = 0.0;
        let mut most: f64 = 0.0;
        for b in f..f + w {
            missing += per_bucket - self.count(b) as f64;
            most = most.max(missing);
        }
        if most <= self.p.band * baseline {
            return Outcome::NoDip;
        }
        // Over at the first window back at or above the band's lower edge
        // (a catch-up above the band counts as recovered).
        let lo = baseline * (1.0 - self.p.band);
        let mut end = f + w - 1;
        while end < now && end < f + GIVE_UP {
            if self.window(end) as f64 >= lo {
                return Outcome::Recovered(f + self.deficit_stops(f, end, per_bucket));
            }
            end += 1;
        }
        if last || end >= f + GIVE_UP {
            Outcome::Unrecovered
        } else {
            Outcome::Pending
        }
    }

    /// Buckets from `f` to where the jobs missing against `per_bucket`
    /// (summed from `f`) stopped growing, within half a bucket's jobs: the
    /// end of the dent, searched up to the window ending at `end`. At least
    /// one bucket.
    fn deficit_stops(&self, f: u64, end: u64, per_bucket: f64) -> u64 {
        let mut deficit = Vec::with_capacity((end + 2 - f) as usize);
        let mut d = 0.0;
        deficit.push(d);
        for b in f..=end {
            d += per_bucket - self.count(b) as f64;
            deficit.push(d);
        }
        let max = deficit.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let at = deficit
            .iter()
            .position(|&d| d >= max - per_bucket / 2.0)
            .unwrap_or(0);
        (at as u64).max(1)
    }

    /// Keeps only what pending faults and future baselines can need.
    fn trim(&mut self, now: u64) {
        let keep_from = self
            .pending
            .front()
            .map(|at| at / BUCKET_US)
            .unwrap_or(now)
            .min(now)
            .saturating_sub(self.p.baseline + self.p.window);
        while self.base < keep_from && !self.ring.is_empty() {
            self.ring.pop_front();
            self.base += 1;
        }
        if self.ring.is_empty() {
            self.base = self.base.max(keep_from);
        }
    }

    fn mark(&mut self, at_us: u64, rec: Option<u64>) {
        if self.marks.len() < MAX_MARKS {
            self.marks.push((at_us, rec));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 completions per bucket, a dip to 20 for 30 buckets after a fault
    /// at bucket 200, then back to 100: recovered when the first full window
    /// after the dip is in band.
    #[test]
    fn measures_a_dip() {
        let mut r = Recovery::new(Params::default());
        let mut counts = vec![100u32; 400];
        for c in &mut counts[200..230] {
            *c = 20;
        }
        r.add_completions(0, &counts);
        r.add_fault(200 * BUCKET_US + 5);
        r.add_fault(200 * BUCKET_US + 7); // same burst
        r.add_fault(209 * BUCKET_US); // still within the first window
        r.evaluate(400, true);
        assert_eq!(r.marks.len(), 1);
        // The dent is 30 buckets long: 300 ms, not 300 ms plus the part of
        // the window that had to fill again.
        assert_eq!(r.marks[0], (2_000_005, Some(299_995)));
        assert_eq!(r.intervals.len(), 1);
    }

    /// A steady rate of about `per` jobs a bucket, with deterministic noise
    /// of up to ±8%, `len` buckets long.
    fn noisy(per: u32, len: usize) -> Vec<u32> {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let jitter = (x % 17) as i64 - 8; // -8..=8 %
                (i64::from(per) + i64::from(per) * jitter / 100) as u32
            })
            .collect()
    }

    /// Every worker stalled for `stall` buckets from bucket 200; returns the
    /// recovery interval, ms.
    fn stall_reads(stall: usize, catch_up: bool) -> Option<f64> {
        let mut counts = noisy(240, 600);
        for c in &mut counts[200..200 + stall] {
            *c = 0;
        }
        if catch_up {
            // Open loop: the backlog completes fast once the workers are back.
            for c in &mut counts[200 + stall..200 + stall + 10] {
                *c *= 2;
            }
        }
        let mut r = Recovery::new(Params::default());
        r.add_completions(0, &counts);
        r.add_fault(200 * BUCKET_US + 3_000);
        r.evaluate(600, true);
        assert_eq!(r.marks.len(), 1);
        r.marks[0].1.map(|us| us as f64 / 1000.0)
    }

    #[test]
    fn stalls_of_known_length_read_their_length() {
        for (stall, ms) in [(30, 300.0), (5, 50.0), (12, 120.0)] {
            for catch_up in [false, true] {
                let got = stall_reads(stall, catch_up).expect("recovered");
                assert!(
                    (got - ms).abs() <= ms * 0.1,
                    "a {ms} ms stall (catch-up {catch_up}) read {got} ms"
                );
            }
        }
    }

    #[test]
    fn a_crash_that_does_not_dent_the_rate_is_no_dip() {
        // One worker of 64 lost for 50 ms: 1/64 of the rate, inside the band.
        let mut counts = noisy(640, 400);
        for c in &mut counts[200..205] {
            *c -= 10;
        }
        let mut r = Recovery::new(Params::default());
        r.add_completions(0, &counts);
        r.add_fault(200 * BUCKET_US);
        r.evaluate(400, true);
        assert_eq!((r.no_dip, r.intervals.len()), (1, 0));
        assert_eq!(r.marks[0].1, Some(0));
    }

    #[test]
    fn never_recovering_and_no_baseline() {
        let mut r = Recovery::new(Params::default());
        let mut counts = vec![100u32; 300];
        for c in &mut counts[150..] {
            *c = 10;
        }
        r.add_completions(0, &counts);
        r.add_fault(BUCKET_US); // too early for a baseline
        r.add_fault(150 * BUCKET_US);
        r.evaluate(300, false);
        assert_eq!(r.pending.len(), 1, "still waiting");
        r.evaluate(300, true);
        assert_eq!(r.unrecovered, 1);
        assert_eq!(r.no_baseline, 1);
    }

    #[test]
    fn horizon_is_bounded() {
        let mut r = Recovery::new(Params::default());
        for k in 0..100u64 {
            r.add_completions(k * 100, &[5; 100]);
            r.evaluate(k * 100 + 100, false);
        }
        assert!(r.ring.len() <= 300, "{}", r.ring.len());
    }
}
