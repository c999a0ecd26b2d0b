//! The 64-bit job-stream digest both ends compute, so two hosts (or two
//! runtimes) can prove they ran the same jobs. The algorithm is specified in
//! docs/workload.md; it is deliberately simple to port (no byte loop, one
//! multiply per 64-bit word).

/// One job in canonical form: exactly what the digest covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CanonicalJob {
    pub id: u64,
    pub class: u32,
    pub work_units: u32,
    pub sleep_us: u32,
    pub crash: bool,
    /// Intended release time from the run start, microseconds (0 in closed loop).
    pub intended_us: u64,
}

const SEED: u64 = 0xcbf2_9ce4_8422_2325;
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// Incremental digest over jobs in id order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    state: u64,
    count: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Self::new()
    }
}

impl Digest {
    pub fn new() -> Self {
        Self {
            state: SEED,
            count: 0,
        }
    }

    #[inline]
    fn word(&mut self, w: u64) {
        self.state = (self.state.rotate_left(5) ^ w).wrapping_mul(MUL);
    }

    /// Adds one job. Jobs must be added in increasing id order.
    #[inline]
    pub fn push(&mut self, job: &CanonicalJob) {
        self.word(job.id);
        self.word(u64::from(job.work_units) | (u64::from(job.sleep_us) << 32));
        self.word(u64::from(job.class) | (u64::from(job.crash) << 32));
        self.word(job.intended_us);
        self.count += 1;
    }

    /// Jobs added so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest value: the state and the count through a splitmix64 finaliser.
    pub fn value(&self) -> u64 {
        let mut z = self.state ^ self.count.wrapping_mul(MUL);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Formats a digest the way reports print it.
pub fn hex(d: u64) -> String {
    format!("{d:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_content_matter() {
        let a = CanonicalJob {
            id: 0,
            work_units: 5,
            ..Default::default()
        };
        let b = CanonicalJob {
            id: 1,
            sleep_us: 7,
            ..Default::default()
        };
        let mut x = Digest::new();
        x.push(&a);
        x.push(&b);
        let mut y = Digest::new();
        y.push(&b);
        y.push(&a);
        assert_ne!(x.value(), y.value());
        let mut z = Digest::new();
        z.push(&a);
        z.push(&CanonicalJob { crash: true, ..b });
        assert_ne!(x.value(), z.value());
        assert_ne!(Digest::new().value(), x.value());
    }

    #[test]
    fn golden_empty_and_one() {
        // Pins the algorithm: other runtimes port it against these values.
        assert_eq!(hex(Digest::new().value()), hex(GOLDEN_EMPTY));
        let mut d = Digest::new();
        d.push(&CanonicalJob {
            id: 1,
            class: 2,
            work_units: 3,
            sleep_us: 4,
            crash: true,
            intended_us: 5,
        });
        assert_eq!(hex(d.value()), hex(GOLDEN_ONE));
    }

    const GOLDEN_EMPTY: u64 = 0xf52a15e9a9b5e89b;
    const GOLDEN_ONE: u64 = 0x4aa4b5e45aa2708c;
}
