//! The seeded stream's layout: job `i` is ChaCha20 block `i` of the seed's key, eight 64-bit words each with a fixed role.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Word roles within a job's block (docs/workload.md, "Generation").
pub const W_CLASS: usize = 0;
pub const W_WORK: usize = 1; // and 2
pub const W_SLEEP: usize = 3; // and 4
pub const W_CRASH: usize = 5;
pub const W_ARRIVAL: usize = 6; // 7 is reserved

/// The generator's random stream for a seed: the seed's little-endian bytes
/// as the first 8 of the ChaCha20 key, the rest zero.
pub fn stream_rng(seed: u64) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    ChaCha20Rng::from_seed(key)
}
