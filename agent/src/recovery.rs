//! Recovery interval after injected faults: the time from a fault until the
//! completion rate, over a sliding window, is back within a band of its
//! pre-fault baseline (the median window of the preceding baseline span).
//! Completions are counted in 10 ms buckets; only a bounded horizon is kept.

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

/// One fault and how it ended: (fault time µs, recovery µs or None).
pub type Mark = (u64, Option<u64>);

/// Tracks completions and faults; evaluates each fault once the data after
/// it is in.
#[derive(Debug)]
pub struct Recovery {
    p: Params,
    /// Completions per bucket; `ring[0]` is bucket `base`.
    ring: VecDeque<u32>,
    base: u64,
    pending: VecDeque<u64>,
    last_fault: Option<u64>,
    pub intervals: Hist,
    pub unrecovered: u64,
    /// Faults with too little history before them for a baseline.
    pub no_baseline: u64,
    pub marks: Vec<Mark>,
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
        self.pending.push_back(b);
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
        let w = self.p.window;
        let mut still = VecDeque::new();
        while let Some(f) = self.pending.pop_front() {
            // Baseline: the median of the windows of the span before f.
            let n_windows = self.p.baseline / w;
            let mut base: Vec<u64> = (1..=n_windows)
                .filter_map(|k| {
                    let end = f.checked_sub((k - 1) * w + 1)?;
                    if end + 1 < w {
                        return None;
                    }
                    Some(self.window(end))
                })
                .collect();
            if base.len() < 3 {
                self.no_baseline += 1;
                self.mark(f, None);
                continue;
            }
            base.sort_unstable();
            let baseline = base[base.len() / 2] as f64;
            if baseline == 0.0 {
                self.no_baseline += 1;
                self.mark(f, None);
                continue;
            }
            let (lo, hi) = (
                baseline * (1.0 - self.p.band),
                baseline * (1.0 + self.p.band),
            );
            // First window wholly after the fault whose rate is in the band.
            let mut end = f + w - 1;
            let mut done = None;
            while end < now && end < f + GIVE_UP {
                let r = self.window(end) as f64;
                if r >= lo && r <= hi {
                    done = Some((end + 1 - f) * BUCKET_US);
                    break;
                }
                end += 1;
            }
            match done {
                Some(us) => {
                    record(&mut self.intervals, us);
                    self.mark(f, Some(us));
                }
                None if last || end >= f + GIVE_UP => {
                    self.unrecovered += 1;
                    self.mark(f, None);
                }
                None => still.push_back(f),
            }
        }
        self.pending = still;
        // Keep only what pending faults and future baselines can need.
        let keep_from = self
            .pending
            .front()
            .copied()
            .unwrap_or(now)
            .min(now)
            .saturating_sub(self.p.baseline + w);
        while self.base < keep_from && !self.ring.is_empty() {
            self.ring.pop_front();
            self.base += 1;
        }
        if self.ring.is_empty() {
            self.base = self.base.max(keep_from);
        }
    }

    fn mark(&mut self, f: u64, rec: Option<u64>) {
        if self.marks.len() < MAX_MARKS {
            self.marks.push((f * BUCKET_US, rec));
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
        // Window of 10 ending at bucket e is in band (>= 900) once at most
        // one dipped bucket remains: e = 238 -> (238 + 1 - 200) * 10 ms.
        assert_eq!(r.marks[0], (2_000_000, Some(390_000)));
        assert_eq!(r.intervals.len(), 1);
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
