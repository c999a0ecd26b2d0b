//! The seeded job generator. Job `i` is drawn from ChaCha20 block `i` (key =
//! the seed, little-endian, zero-padded to 32 bytes; nonce 0): eight 64-bit
//! words, each with a fixed role. So the stream is a pure function of
//! (seed, scenario), any job can be generated without its predecessors, and
//! shards are cheap to cut.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::digest::{CanonicalJob, Digest};
use crate::distribution::{Dist, below, unit_f64};
use crate::proto::JobBatch;
use crate::scenario::{Class, FaultSpec, Plan, Process};

/// A generated job (see [`CanonicalJob`]; the same fields).
pub type Job = CanonicalJob;

/// Word roles within a job's block (docs/workload.md, "Generation").
const W_CLASS: usize = 0;
const W_WORK: usize = 1; // and 2
const W_SLEEP: usize = 3; // and 4
const W_CRASH: usize = 5;
const W_ARRIVAL: usize = 6; // 7 is reserved

/// Generates the job stream of a plan, in id order, from any starting id.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: ChaCha20Rng,
    classes: Vec<Class>,
    weight_total: u64,
    next_id: u64,
    arrival: Arrival,
    faults: Vec<FaultSpec>,
    /// Whether any job reads a word of its block. When none does (one
    /// class, constant values, no crash probability, no Poisson arrivals),
    /// the blocks are not computed at all: the jobs are the same, and the
    /// keystream is most of the generator's cost.
    draws: bool,
}

/// Open-loop intended times, job after job: the one piece of arithmetic
/// both the generator and the sizing of timed runs use, so they agree.
#[derive(Debug, Clone)]
struct Arrival {
    /// (rate, first id) steps; empty in closed loop.
    rates: Vec<(f64, u64)>,
    poisson: bool,
    /// Intended time of the next job, µs from the run start.
    t_us: f64,
    step: usize,
}

impl Arrival {
    fn new(rates: &[(f64, u64)], process: Process) -> Self {
        Self {
            rates: rates.to_vec(),
            poisson: process == Process::Poisson,
            t_us: 0.0,
            step: 0,
        }
    }

    /// Intended start of job `id` (ids in order), from its arrival word.
    #[inline]
    fn next(&mut self, id: u64, word: u64) -> u64 {
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

/// The generator's random stream for a seed: the seed's little-endian bytes
/// as the first 8 of the ChaCha20 key, the rest zero.
fn stream_rng(seed: u64) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    ChaCha20Rng::from_seed(key)
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

impl Generator {
    pub fn new(plan: &Plan) -> Self {
        let random = |d: &crate::distribution::Dist| !matches!(d, Dist::Constant { .. });
        let draws = plan.classes.len() > 1
            || plan.scenario.arrival.process == Process::Poisson && !plan.rates.is_empty()
            || plan.classes.iter().any(|c| {
                random(&c.work_units)
                    || c.sleep.as_ref().is_some_and(random)
                    || c.crash_threshold > 0
            });
        Self {
            draws,
            rng: stream_rng(plan.scenario.seed),
            classes: plan.classes.clone(),
            weight_total: plan.classes.iter().map(|c| u64::from(c.weight)).sum(),
            next_id: 0,
            arrival: Arrival::new(&plan.rates, plan.scenario.arrival.process),
            faults: plan.scenario.faults.clone(),
        }
    }

    /// Positions the generator so the next job is `id`. Constant time in
    /// closed loop; in open loop intended times accumulate, so it replays
    /// the stream from the start.
    pub fn seek(&mut self, id: u64) {
        if self.arrival.rates.is_empty() {
            // 16 32-bit words per ChaCha block, one block per job.
            self.rng.set_word_pos(u128::from(id) * 16);
            self.next_id = id;
            return;
        }
        if id < self.next_id {
            self.rng.set_word_pos(0);
            self.next_id = 0;
            self.arrival.t_us = 0.0;
            self.arrival.step = 0;
        }
        while self.next_id < id {
            self.next_job();
        }
    }

    /// Id of the job `next` will return.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// The next job.
    #[inline]
    pub fn next_job(&mut self) -> Job {
        let mut w = [0u64; 8];
        if self.draws {
            for x in &mut w {
                *x = self.rng.next_u64();
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let class_idx = pick_class(&self.classes, self.weight_total, w[W_CLASS]);
        let class = &self.classes[class_idx];
        let work = class.work_units.sample(w[W_WORK], w[W_WORK + 1]);
        let sleep = class.sleep.as_ref().map_or(0, |d| {
            d.sample(w[W_SLEEP], w[W_SLEEP + 1]) * class.sleep_scale_us
        });
        let intended_us = self.arrival.next(id, w[W_ARRIVAL]);
        let mut job = Job {
            id,
            class: class_idx as u32,
            // Validation bounds both far below u32::MAX.
            work_units: work.min(u64::from(u32::MAX)) as u32,
            sleep_us: sleep.min(u64::from(u32::MAX)) as u32,
            crash: w[W_CRASH] < class.crash_threshold,
            intended_us,
        };
        for f in &self.faults {
            match *f {
                FaultSpec::CrashBurst { at_job, jobs } if (at_job..at_job + jobs).contains(&id) => {
                    job.crash = true;
                }
                FaultSpec::CrashWindow { at_ms, for_ms }
                    if (at_ms * 1000..(at_ms + for_ms) * 1000).contains(&job.intended_us) =>
                {
                    job.crash = true;
                }
                FaultSpec::Stall { at_job, stall_ms } if at_job == id => {
                    job.sleep_us = (stall_ms * 1000).min(u64::from(u32::MAX)) as u32;
                }
                _ => {}
            }
        }
        job
    }
}

fn pick_class(classes: &[Class], total: u64, w: u64) -> usize {
    if classes.len() == 1 {
        return 0;
    }
    let mut r = below(w, total);
    for (i, c) in classes.iter().enumerate() {
        let cw = u64::from(c.weight);
        if r < cw {
            return i;
        }
        r -= cw;
    }
    classes.len() - 1
}

/// Appends jobs to a columnar batch. The first job pushed sets `first_id`;
/// ids must then be consecutive.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    batch: JobBatch,
    multi_class: bool,
    open: bool,
    last_intended: u64,
    /// Take batches with the columns in `JobBatch.packed`.
    packed: bool,
}

impl BatchBuilder {
    /// `open`: the jobs carry intended times (open loop).
    pub fn new(multi_class: bool, open: bool, capacity: usize) -> Self {
        let mut batch = JobBatch::default();
        batch.work_units.reserve(capacity);
        batch.sleep_us.reserve(capacity);
        if multi_class {
            batch.class_ids.reserve(capacity);
        }
        if open {
            batch.intended_us.reserve(capacity);
        }
        Self {
            batch,
            multi_class,
            open,
            last_intended: 0,
            packed: false,
        }
    }

    /// Batches taken from now on carry their columns packed
    /// (`JobBatch.packed`, docs/workload.md) when `on`.
    pub fn packed(mut self, on: bool) -> Self {
        self.packed = on;
        self
    }

    pub fn len(&self) -> usize {
        self.batch.work_units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn push(&mut self, job: &Job) {
        let pos = self.len() as u32;
        if pos == 0 {
            self.batch.first_id = job.id;
        }
        debug_assert_eq!(job.id, self.batch.first_id + u64::from(pos));
        self.batch.work_units.push(job.work_units);
        self.batch.sleep_us.push(job.sleep_us);
        if self.multi_class {
            self.batch.class_ids.push(job.class);
        }
        if job.crash {
            self.batch.crash_at.push(pos);
        }
        if self.open {
            // Delta-encoded: the first value absolute, then differences.
            let base = if pos == 0 { 0 } else { self.last_intended };
            self.batch.intended_us.push(job.intended_us - base);
            self.last_intended = job.intended_us;
        }
    }

    /// Takes the batch out, leaving the builder empty.
    pub fn take(&mut self) -> JobBatch {
        if self.packed {
            let n = self.len();
            let b = &mut self.batch;
            let cols = crate::packed::Columns {
                work_units: std::mem::take(&mut b.work_units),
                sleep_us: std::mem::take(&mut b.sleep_us),
                class_ids: std::mem::take(&mut b.class_ids),
                intended_us: std::mem::take(&mut b.intended_us),
            };
            let out = JobBatch {
                first_id: b.first_id,
                crash_at: std::mem::take(&mut b.crash_at),
                packed: crate::packed::pack(n, &cols),
                ..JobBatch::default()
            };
            // Keep the column buffers for the next batch.
            let mut cols = cols;
            cols.work_units.clear();
            cols.sleep_us.clear();
            cols.class_ids.clear();
            cols.intended_us.clear();
            b.work_units = cols.work_units;
            b.sleep_us = cols.sleep_us;
            b.class_ids = cols.class_ids;
            b.intended_us = cols.intended_us;
            return out;
        }
        let cap = self.batch.work_units.capacity();
        let mut fresh = Self::new(self.multi_class, self.open, cap);
        std::mem::swap(&mut fresh.batch, &mut self.batch);
        fresh.batch
    }
}

/// Why a received batch is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("JobBatch.{field} has {got} entries, expected {want} (one per job)")]
    ColumnLength {
        field: &'static str,
        got: usize,
        want: usize,
    },
    #[error("JobBatch.crash_at must be increasing positions below {len}")]
    CrashAt { len: usize },
    #[error("JobBatch.class_ids holds class {class}, but the plan has {classes} classes")]
    Class { class: u32, classes: usize },
    #[error("JobBatch.first_id {got} goes backwards (next expected id is at least {want})")]
    Order { got: u64, want: u64 },
    #[error("JobBatch.intended_us: {0}")]
    Intended(&'static str),
    #[error("JobBatch.first_id {0}: the batch's ids overflow 64 bits")]
    IdOverflow(u64),
    #[error(transparent)]
    Packed(#[from] crate::packed::PackError),
    #[error("JobBatch.packed is set, so JobBatch.{0} must be empty")]
    PackedAndPlain(&'static str),
}

/// The number of jobs in a batch, plain or packed (reads only the packed
/// header), before anything else is decoded.
pub fn batch_len(b: &JobBatch) -> Result<usize, BatchError> {
    if b.packed.is_empty() {
        Ok(b.work_units.len())
    } else {
        Ok(crate::packed::jobs(&b.packed)?)
    }
}

/// Checks a received batch and calls `f` with each job, in order.
pub fn for_each_job(
    b: &JobBatch,
    classes: usize,
    open: bool,
    mut f: impl FnMut(Job),
) -> Result<(), BatchError> {
    if !b.packed.is_empty() {
        for (field, empty) in [
            ("work_units", b.work_units.is_empty()),
            ("sleep_us", b.sleep_us.is_empty()),
            ("class_ids", b.class_ids.is_empty()),
            ("intended_us", b.intended_us.is_empty()),
        ] {
            if !empty {
                return Err(BatchError::PackedAndPlain(field));
            }
        }
        let c = crate::packed::unpack(&b.packed)?;
        let plain = JobBatch {
            first_id: b.first_id,
            work_units: c.work_units,
            sleep_us: c.sleep_us,
            class_ids: c.class_ids,
            crash_at: b.crash_at.clone(),
            intended_us: c.intended_us,
            packed: Vec::new(),
        };
        return for_each_job(&plain, classes, open, f);
    }
    let n = b.work_units.len();
    if b.first_id.checked_add(n as u64).is_none() {
        return Err(BatchError::IdOverflow(b.first_id));
    }
    if b.sleep_us.len() != n {
        return Err(BatchError::ColumnLength {
            field: "sleep_us",
            got: b.sleep_us.len(),
            want: n,
        });
    }
    if !b.class_ids.is_empty() && b.class_ids.len() != n {
        return Err(BatchError::ColumnLength {
            field: "class_ids",
            got: b.class_ids.len(),
            want: n,
        });
    }
    if let Some(&c) = b.class_ids.iter().find(|&&c| c as usize >= classes) {
        return Err(BatchError::Class { class: c, classes });
    }
    if b.crash_at.windows(2).any(|w| w[0] >= w[1])
        || b.crash_at.last().is_some_and(|&p| p as usize >= n)
    {
        return Err(BatchError::CrashAt { len: n });
    }
    if open && b.intended_us.len() != n {
        return Err(BatchError::ColumnLength {
            field: "intended_us",
            got: b.intended_us.len(),
            want: n,
        });
    }
    if !open && !b.intended_us.is_empty() {
        return Err(BatchError::Intended("must be empty in closed loop"));
    }
    let mut intended = 0u64;
    if open {
        // Absolute times must fit; overflow means a hostile or broken peer.
        let mut t = 0u64;
        for d in &b.intended_us {
            t = t
                .checked_add(*d)
                .ok_or(BatchError::Intended("overflows 64 bits"))?;
        }
    }
    let mut crashes = b.crash_at.iter().peekable();
    for k in 0..n {
        let crash = crashes.next_if(|&&p| p as usize == k).is_some();
        if open {
            intended += b.intended_us[k];
        }
        f(Job {
            id: b.first_id + k as u64,
            class: b.class_ids.get(k).copied().unwrap_or(0),
            work_units: b.work_units[k],
            sleep_us: b.sleep_us[k],
            crash,
            intended_us: intended,
        });
    }
    Ok(())
}

/// Digest of the first `n` jobs of a plan's stream (what an agent that ran
/// them all must report).
pub fn stream_digest(plan: &Plan, n: u64) -> u64 {
    let mut g = Generator::new(plan);
    let mut d = Digest::new();
    for _ in 0..n {
        d.push(&g.next_job());
    }
    d.value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Limits, PARITY_NAME, PARITY_TOML, parse};

    fn parity() -> Plan {
        parse(PARITY_TOML, PARITY_NAME, &Limits::default()).unwrap()
    }

    /// Pins the parity stream of seed 42: any accidental change to the
    /// generator, the distributions or the scenario fails here.
    #[test]
    fn golden_parity_seed_42() {
        let plan = parity();
        assert_eq!(plan.scenario.seed, 42);
        let mut g = Generator::new(&plan);
        let first: Vec<String> = (0..5)
            .map(|_| {
                let j = g.next_job();
                format!(
                    "{} {} {} {} {}",
                    j.id, j.class, j.work_units, j.sleep_us, j.crash
                )
            })
            .collect();
        assert_eq!(first.join("\n"), GOLDEN_FIRST.trim());
        assert_eq!(
            crate::digest::hex(stream_digest(&plan, 100_000)),
            GOLDEN_DIGEST_100K
        );
    }

    const GOLDEN_FIRST: &str = "
0 0 70965 0 false
1 0 36625 1000 false
2 0 66546 0 false
3 0 50227 0 false
4 0 21170 0 false
";
    const GOLDEN_DIGEST_100K: &str = "7b4f1cae8160166b";

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let plan = parity();
        assert_eq!(stream_digest(&plan, 10_000), stream_digest(&plan, 10_000));
        let mut other = plan.clone();
        other.scenario.seed = 43;
        assert_ne!(stream_digest(&plan, 10_000), stream_digest(&other, 10_000));
        let (mut a, mut b) = (Generator::new(&plan), Generator::new(&plan));
        for _ in 0..1000 {
            assert_eq!(a.next_job(), b.next_job());
        }
    }

    #[test]
    fn seek_gives_the_same_job_as_sequential() {
        let plan = parity();
        let mut seq = Generator::new(&plan);
        let jobs: Vec<Job> = (0..300).map(|_| seq.next_job()).collect();
        let mut g = Generator::new(&plan);
        g.seek(257);
        assert_eq!(g.next_job(), jobs[257]);
        assert_eq!(g.next_job(), jobs[258]);
    }

    #[test]
    fn batch_round_trip_preserves_jobs_and_digest() {
        let mut plan = parity();
        plan.classes[0].crash_threshold = u64::MAX / 10; // plenty of crashes
        let mut g = Generator::new(&plan);
        let mut b = BatchBuilder::new(false, false, 64);
        let mut want = Digest::new();
        let mut jobs = Vec::new();
        for _ in 0..500 {
            let j = g.next_job();
            want.push(&j);
            jobs.push(j);
            b.push(&j);
        }
        let batch = b.take();
        assert!(b.is_empty());
        assert!(!batch.crash_at.is_empty());
        // The same jobs packed (JobBatch.packed) decode to the same stream.
        let mut p = BatchBuilder::new(false, false, 64).packed(true);
        for j in &jobs {
            p.push(j);
        }
        let packed = p.take();
        assert!(packed.work_units.is_empty() && !packed.packed.is_empty());
        let mut back = Vec::new();
        for_each_job(&packed, 1, false, |j| back.push(j)).unwrap();
        assert_eq!(back, jobs);
        let mixed = JobBatch {
            sleep_us: vec![1],
            ..packed.clone()
        };
        assert_eq!(
            for_each_job(&mixed, 1, false, |_| {}),
            Err(BatchError::PackedAndPlain("sleep_us"))
        );
        let mut got = Digest::new();
        let mut back = Vec::new();
        for_each_job(&batch, 1, false, |j| {
            got.push(&j);
            back.push(j);
        })
        .unwrap();
        assert_eq!(back, jobs);
        assert_eq!(got.value(), want.value());
    }

    fn open(process: &str) -> Plan {
        let text = PARITY_TOML.replace(
            "[profile]",
            &format!("[arrival]\nmode = \"open\"\nprocess = \"{process}\"\nsteps = [{{ rate = 1000.0, jobs = 100 }}, {{ rate = 4000.0, jobs = 100 }}]\n\n[profile]"),
        );
        parse(&text, "t", &Limits::default()).unwrap()
    }

    #[test]
    fn open_loop_intended_times_follow_the_rate() {
        let plan = open("constant");
        let mut g = Generator::new(&plan);
        let jobs: Vec<Job> = (0..300).map(|_| g.next_job()).collect();
        assert_eq!(jobs[0].intended_us, 0);
        assert_eq!(jobs[1].intended_us, 1000);
        assert_eq!(jobs[100].intended_us, 100_000);
        assert_eq!(jobs[101].intended_us, 100_250);
        let plan = open("poisson");
        let mut g = Generator::new(&plan);
        let jobs: Vec<Job> = (0..100).map(|_| g.next_job()).collect();
        let mean = jobs[99].intended_us as f64 / 99.0;
        assert!((700.0..1300.0).contains(&mean), "mean gap {mean}");
        assert!(
            jobs.windows(2)
                .all(|w| w[0].intended_us <= w[1].intended_us)
        );
        // Seeking replays the accumulated times.
        let mut s = Generator::new(&plan);
        s.seek(57);
        assert_eq!(s.next_job(), jobs[57]);
        s.seek(3);
        assert_eq!(s.next_job(), jobs[3]);
    }

    #[test]
    fn open_loop_batches_round_trip() {
        let plan = open("poisson");
        let mut g = Generator::new(&plan);
        let jobs: Vec<Job> = (0..250).map(|_| g.next_job()).collect();
        for packed in [false, true] {
            let mut b = BatchBuilder::new(false, true, 64).packed(packed);
            for chunk in jobs.chunks(64) {
                for j in chunk {
                    b.push(j);
                }
                let batch = b.take();
                assert_eq!(batch.packed.is_empty(), !packed);
                assert_eq!(batch_len(&batch), Ok(chunk.len()));
                let mut back = Vec::new();
                for_each_job(&batch, 1, true, |j| back.push(j)).unwrap();
                assert_eq!(back, chunk);
            }
        }
        let bad = JobBatch {
            work_units: vec![1, 2],
            sleep_us: vec![1, 2],
            intended_us: vec![u64::MAX, 5],
            ..Default::default()
        };
        assert!(for_each_job(&bad, 1, true, |_| {}).is_err());
        assert!(for_each_job(&bad, 1, false, |_| {}).is_err());
    }

    /// A plan whose jobs read no word skips the keystream; the jobs must be
    /// exactly those of a generator that computes every block.
    #[test]
    fn skipping_unread_blocks_changes_no_job() {
        let mixed = r#"work_units = { dist = "uniform", min = 1000, max = 100000 }
sleep_ms = { dist = "discrete", values = [0, 1, 2, 5, 10], weights = [40, 25, 15, 15, 5] }
crash_probability = 0.0005"#;
        let constant = "work_units = { dist = \"constant\", value = 0 }";
        assert!(PARITY_TOML.contains(mixed));
        let two_classes = format!(
            "{constant}\n\n[[class]]\nname = \"b\"\nwork_units = {{ dist = \"constant\", value = 5 }}"
        );
        let cases = [
            (PARITY_TOML.to_string(), true),
            (PARITY_TOML.replace(mixed, constant), false),
            (
                PARITY_TOML.replace(
                    mixed,
                    &format!("{constant}\nsleep_us = {{ dist = \"constant\", value = 7 }}"),
                ),
                false,
            ),
            (
                PARITY_TOML.replace(mixed, &format!("{constant}\ncrash_probability = 0.01")),
                true,
            ),
            (PARITY_TOML.replace(mixed, &two_classes), true),
            (
                PARITY_TOML.replace(
                    mixed,
                    "work_units = { dist = \"uniform\", min = 0, max = 9 }",
                ),
                true,
            ),
        ];
        for (text, draws) in cases {
            let plan = parse(&text, "t", &Limits::default()).unwrap();
            let mut g = Generator::new(&plan);
            assert_eq!(g.draws, draws, "{text}");
            let mut every_block = Generator::new(&plan);
            every_block.draws = true;
            for _ in 0..2_000 {
                assert_eq!(g.next_job(), every_block.next_job());
            }
            g.seek(70_000);
            every_block.seek(70_000);
            assert_eq!(g.next_job(), every_block.next_job());
        }
        // Open loop: constant spacing reads no word, Poisson does.
        for (process, draws) in [("constant", false), ("poisson", true)] {
            let text = PARITY_TOML.replace(mixed, constant).replace(
                "[profile]",
                &format!("[arrival]\nmode = \"open\"\nprocess = \"{process}\"\nrate = 1000.0\n\n[profile]"),
            );
            let plan = parse(&text, "t", &Limits::default()).unwrap();
            let mut g = Generator::new(&plan);
            assert_eq!(g.draws, draws, "{process}");
            let mut every_block = Generator::new(&plan);
            every_block.draws = true;
            for _ in 0..2_000 {
                assert_eq!(g.next_job(), every_block.next_job());
            }
        }
    }

    #[test]
    fn faults_land_on_the_same_jobs() {
        let text = PARITY_TOML.to_string()
            + "\n[[fault]]\nkind = \"crash-burst\"\nat_job = 10\njobs = 3\n\n[[fault]]\nkind = \"stall\"\nat_job = 20\nstall_ms = 250\n";
        let plan = parse(&text, "t", &Limits::default()).unwrap();
        let mut g = Generator::new(&plan);
        let jobs: Vec<Job> = (0..30).map(|_| g.next_job()).collect();
        assert!(jobs[10].crash && jobs[11].crash && jobs[12].crash);
        assert_eq!(jobs[20].sleep_us, 250_000);
        let e = parse(
            &text.replace("at_job = 10", "at_job = 99999999"),
            "t",
            &Limits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("fault[0].at_job = 99999999"), "{e}");
    }

    #[test]
    fn malformed_batches_are_rejected() {
        let bad = JobBatch {
            first_id: 0,
            work_units: vec![1, 2],
            sleep_us: vec![1],
            ..Default::default()
        };
        assert!(matches!(
            for_each_job(&bad, 1, false, |_| {}),
            Err(BatchError::ColumnLength {
                field: "sleep_us",
                ..
            })
        ));
        let bad = JobBatch {
            work_units: vec![1, 2],
            sleep_us: vec![1, 2],
            crash_at: vec![1, 1],
            ..Default::default()
        };
        assert!(matches!(
            for_each_job(&bad, 1, false, |_| {}),
            Err(BatchError::CrashAt { .. })
        ));
        let bad = JobBatch {
            work_units: vec![1],
            sleep_us: vec![1],
            class_ids: vec![3],
            ..Default::default()
        };
        assert!(matches!(
            for_each_job(&bad, 2, false, |_| {}),
            Err(BatchError::Class { .. })
        ));
    }
}
