//! The columnar job batch codec: jobs into `JobBatch` (plain or packed columns) and a received batch checked and back into jobs.

use crate::digest::CanonicalJob as Job;
use crate::proto::JobBatch;

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
