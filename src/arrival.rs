//! Open-loop arrival schedule maths: intended start times from the rate steps and the seed, shared by the generator and the sizing of timed runs.

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::distribution::unit_f64;
use crate::stream::{W_ARRIVAL, stream_rng};

/// Spacing of open-loop arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Process {
    #[default]
    Constant,
    Poisson,
}

/// Open-loop intended times, job after job: the one piece of arithmetic
/// both the generator and the sizing of timed runs use, so they agree.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    /// (rate, first id) steps; empty in closed loop.
    rates: Vec<(f64, u64)>,
    poisson: bool,
    /// Intended time of the next job, µs from the run start.
    t_us: f64,
    step: usize,
}

impl Arrival {
    pub(crate) fn new(rates: &[(f64, u64)], process: Process) -> Self {
        Self {
            rates: rates.to_vec(),
            poisson: process == Process::Poisson,
            t_us: 0.0,
            step: 0,
        }
    }

    /// Closed loop: no schedule.
    pub(crate) fn closed(&self) -> bool {
        self.rates.is_empty()
    }

    /// Back to job 0's time.
    pub(crate) fn rewind(&mut self) {
        self.t_us = 0.0;
        self.step = 0;
    }

    /// Intended start of job `id` (ids in order), from its arrival word.
    #[inline]
    pub(crate) fn next(&mut self, id: u64, word: u64) -> u64 {
        if self.rates.is_empty() {
            return 0;
        }
        while self.step + 1 < self.rates.len() && self.rates[self.step + 1].1 <= id {
            self.step += 1;
        }
        let mean_gap = 1e6 / self.rates[self.step].0;
        let at = self.t_us;
        self.t_us += if self.poisson {
            -mean_gap * (1.0 - unit_f64(word)).ln()
        } else {
            mean_gap
        };
        at as u64
    }
}

/// Open loop: how many jobs of the stream of `seed` with arrival `rates`
/// and `process` are intended to start before `bound_us` (from the run
/// start) — the job count of a warm-up or a measured part given as a
/// duration. None when that is more than `cap` jobs.
pub fn jobs_before(
    seed: u64,
    rates: &[(f64, u64)],
    process: Process,
    bound_us: u64,
    cap: u64,
) -> Option<u64> {
    let mut arrival = Arrival::new(rates, process);
    let mut rng = stream_rng(seed);
    let mut id = 0u64;
    // Job `id` starts at the current time; its own word only sets the gap
    // to the next one.
    while (arrival.t_us as u64) < bound_us {
        if id >= cap {
            return None;
        }
        let word = arrival_word(&arrival, &mut rng);
        arrival.next(id, word);
        id += 1;
    }
    Some(id)
}

/// Open loop: the intended start of job `id` of the same stream, µs from
/// the run start.
pub fn intended_us(seed: u64, rates: &[(f64, u64)], process: Process, id: u64) -> u64 {
    let mut arrival = Arrival::new(rates, process);
    let mut rng = stream_rng(seed);
    for k in 0..id {
        let word = arrival_word(&arrival, &mut rng);
        arrival.next(k, word);
    }
    arrival.t_us as u64
}

/// The arrival word of the next job's block (read as next_job reads it);
/// constant spacing needs none.
fn arrival_word(arrival: &Arrival, rng: &mut ChaCha20Rng) -> u64 {
    if !arrival.poisson {
        return 0;
    }
    let mut w = [0u64; 8];
    for x in &mut w {
        *x = rng.next_u64();
    }
    w[W_ARRIVAL]
}

/// Open loop: the mean number of jobs intended to start in the first
/// `span_us` of the schedule.
pub fn expected_jobs(rates: &[(f64, u64)], span_us: u64) -> f64 {
    let mut left = span_us as f64 / 1e6;
    let mut jobs = 0.0;
    for (k, &(rate, first)) in rates.iter().enumerate() {
        let step_secs = rates
            .get(k + 1)
            .map_or(f64::INFINITY, |next| (next.1 - first) as f64 / rate);
        let t = left.min(step_secs);
        jobs += t * rate;
        left -= t;
        if left <= 0.0 {
            break;
        }
    }
    jobs
}
