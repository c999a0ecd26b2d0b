//! Emptied job buffers kept for the next batch: the prefetch window's memory
//! is reused instead of handed back to the allocator (which returns large
//! blocks to the OS and faults them in again for the next batch).

use cwbench::generator::Job;
use parking_lot::Mutex;

/// A bounded stock of empty `Vec<Job>`s.
#[derive(Debug)]
pub struct Buffers {
    /// Empty buffers, and the jobs of capacity they hold in all.
    free: Mutex<(Vec<Vec<Job>>, usize)>,
    /// At most this many jobs of capacity are kept: the credit window, as
    /// no more jobs than that are ever buffered at once.
    limit: usize,
}

impl Buffers {
    pub fn new(limit: usize) -> Self {
        Self {
            free: Mutex::new((Vec::new(), 0)),
            limit,
        }
    }

    /// An empty buffer with room for at least `n` jobs, and for at most
    /// twice that (or `SMALL`): a large buffer is not spent on a small batch,
    /// so the jobs buffered never hold much more memory than they need.
    pub fn take(&self, n: usize) -> Vec<Job> {
        const SMALL: usize = 1024;
        let kept = {
            let mut g = self.free.lock();
            let v = g.0.pop();
            if let Some(v) = &v {
                g.1 -= v.capacity();
            }
            v
        };
        match kept {
            Some(mut v) if v.capacity() <= 2 * n.max(SMALL) => {
                v.reserve(n);
                v
            }
            _ => Vec::with_capacity(n),
        }
    }

    /// Keeps `v` (emptied) for a later `take`, unless the stock is full.
    pub fn give(&self, mut v: Vec<Job>) {
        v.clear();
        let cap = v.capacity();
        if cap == 0 {
            return;
        }
        let mut g = self.free.lock();
        if g.1 + cap <= self.limit {
            g.1 += cap;
            g.0.push(v);
        }
    }
}

#[cfg(test)]
impl Buffers {
    /// Buffers kept, and the jobs of capacity they hold.
    pub fn kept(&self) -> (usize, usize) {
        let g = self.free.lock();
        (g.0.len(), g.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_up_to_the_limit() {
        let b = Buffers::new(300);
        let v = b.take(100);
        assert!(v.is_empty() && v.capacity() >= 100);
        let p = v.as_ptr();
        let mut v = v;
        v.push(Job::default());
        b.give(v);
        // The same allocation comes back, emptied.
        let w = b.take(50);
        assert_eq!((w.as_ptr(), w.len()), (p, 0));
        // A buffer too small grows; three of 100 do not fit a limit of 300
        // with a fourth: the stock never holds more than the limit.
        let (x, y, z) = (b.take(100), b.take(100), b.take(100));
        for v in [w, x, y, z] {
            b.give(v);
        }
        let g = b.free.lock();
        assert!(g.1 <= 300 && g.0.len() < 4, "{} jobs in {}", g.1, g.0.len());
        assert_eq!(g.1, g.0.iter().map(Vec::capacity).sum::<usize>());
    }

    #[test]
    fn a_large_buffer_is_not_spent_on_a_small_batch() {
        let b = Buffers::new(1 << 20);
        b.give(Vec::with_capacity(100_000));
        let v = b.take(10);
        assert!(
            v.capacity() >= 10 && v.capacity() <= 2 * 1024,
            "{}",
            v.capacity()
        );
        // Dropped, not kept for later.
        assert_eq!(b.kept(), (0, 0));
        b.give(Vec::with_capacity(100_000));
        assert_eq!(b.take(60_000).capacity(), 100_000);
    }
}
