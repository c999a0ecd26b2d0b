//! Packed job batches (`JobBatch.packed`, encoding 1): the per-job columns
//! bit-packed, about 2–3 bytes per job for the parity scenario instead of
//! 4–5 as protobuf varints. The format is specified in docs/workload.md
//! ("Packed job batches"); the decoder checks every length and range, so
//! hostile bytes give an error, never a panic; it allocates at most the
//! n ≤ MAX_JOBS values per column the header announces (a constant column
//! is a few bytes for n values), and the agent checks n against its batch
//! limit and credit before decoding.

/// The encoding version this build writes and reads (Ready.batch_encoding).
pub const VERSION: u8 = 1;

/// The most jobs one packed batch may hold (bounds what a decoder allocates).
pub const MAX_JOBS: usize = 1 << 20;

const EMPTY: u8 = 0;
const CONST: u8 = 1;
const BITS: u8 = 2;
const DICT: u8 = 3;
const VARINT: u8 = 4;

/// Most distinct values a dictionary column may hold.
const MAX_DICT: usize = 256;
/// The encoder tries a dictionary only up to this many distinct values.
const TRY_DICT: usize = 16;

/// Why packed bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JobBatch.packed: {0}")]
pub struct PackError(pub &'static str);

/// The per-job columns of a batch (the same values as the JobBatch fields
/// work_units, sleep_us, class_ids and intended_us).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    pub work_units: Vec<u32>,
    pub sleep_us: Vec<u32>,
    /// Empty: every job is class 0.
    pub class_ids: Vec<u32>,
    /// Empty in closed loop; else delta-encoded as in JobBatch.intended_us.
    pub intended_us: Vec<u64>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn width(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// Appends `n` values of `w` bits each, least significant bit first.
fn put_bits(out: &mut Vec<u8>, values: impl Iterator<Item = u64>, w: u32) {
    if w == 0 {
        return;
    }
    let mut acc: u128 = 0;
    let mut bits = 0u32;
    for v in values {
        acc |= u128::from(v) << bits;
        bits += w;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

/// Appends one column: empty, constant, frame-of-reference bits or a
/// dictionary, whichever is smallest.
fn put_column(out: &mut Vec<u8>, col: &[u64]) {
    let Some(&first) = col.first() else {
        out.push(EMPTY);
        return;
    };
    let (mut min, mut max) = (first, first);
    let mut dict: Vec<u64> = Vec::with_capacity(TRY_DICT);
    let mut dict_ok = true;
    for &v in col {
        min = min.min(v);
        max = max.max(v);
        if dict_ok && !dict.contains(&v) {
            if dict.len() == TRY_DICT {
                dict_ok = false;
            } else {
                dict.push(v);
            }
        }
    }
    if min == max {
        out.push(CONST);
        put_varint(out, min);
        return;
    }
    let n = col.len();
    let wb = width(max - min);
    let bits_len = varint_len(min) + 1 + (n * wb as usize).div_ceil(8);
    if dict_ok {
        dict.sort_unstable();
        let wd = width(dict.len() as u64 - 1);
        let dict_len = varint_len(dict.len() as u64)
            + dict.iter().map(|&v| varint_len(v)).sum::<usize>()
            + 1
            + (n * wd as usize).div_ceil(8);
        if dict_len < bits_len {
            out.push(DICT);
            put_varint(out, dict.len() as u64);
            for &v in &dict {
                put_varint(out, v);
            }
            out.push(wd as u8);
            let index = |v: u64| dict.binary_search(&v).unwrap_or(0) as u64;
            put_bits(out, col.iter().map(|&v| index(v)), wd);
            return;
        }
    }
    // Skewed columns (a long tail) pack better as plain varints.
    let var_len: usize = col.iter().map(|&v| varint_len(v)).sum();
    if var_len < bits_len {
        out.push(VARINT);
        for &v in col {
            put_varint(out, v);
        }
        return;
    }
    out.push(BITS);
    put_varint(out, min);
    out.push(wb as u8);
    put_bits(out, col.iter().map(|&v| v - min), wb);
}

/// Packs the columns of `n` jobs. Every non-empty column must have `n` values.
pub fn pack(n: usize, c: &Columns) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + n * 3);
    out.push(VERSION);
    put_varint(&mut out, n as u64);
    let widen = |v: &[u32]| v.iter().map(|&x| u64::from(x)).collect::<Vec<u64>>();
    put_column(&mut out, &widen(&c.work_units));
    put_column(&mut out, &widen(&c.sleep_us));
    put_column(&mut out, &widen(&c.class_ids));
    put_column(&mut out, &c.intended_us);
    out
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, PackError> {
        let (&x, rest) = self.b.split_first().ok_or(PackError("truncated"))?;
        self.b = rest;
        Ok(x)
    }

    fn varint(&mut self) -> Result<u64, PackError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let x = self.byte()?;
            let part = u64::from(x & 0x7f);
            if shift == 63 && part > 1 {
                return Err(PackError("varint overflows 64 bits"));
            }
            v |= part << shift;
            if x & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PackError("varint longer than 10 bytes"))
    }

    fn take(&mut self, len: usize) -> Result<&[u8], PackError> {
        if len > self.b.len() {
            return Err(PackError("truncated"));
        }
        let (head, rest) = self.b.split_at(len);
        self.b = rest;
        Ok(head)
    }
}

/// Reads `n` values of `w` bits from `bytes` (exactly ceil(n*w/8) of them).
fn get_bits(
    bytes: &[u8],
    n: usize,
    w: u32,
    mut f: impl FnMut(u64) -> Result<(), PackError>,
) -> Result<(), PackError> {
    let mask: u128 = if w == 64 {
        u128::from(u64::MAX)
    } else {
        (1u128 << w) - 1
    };
    let mut acc: u128 = 0;
    let mut bits = 0u32;
    let mut it = bytes.iter();
    for _ in 0..n {
        while bits < w {
            let &x = it.next().ok_or(PackError("truncated bits"))?;
            acc |= u128::from(x) << bits;
            bits += 8;
        }
        f((acc & mask) as u64)?;
        acc >>= w;
        bits -= w;
    }
    Ok(())
}

fn get_column(r: &mut Reader<'_>, n: usize, max: u64) -> Result<Vec<u64>, PackError> {
    let mode = r.byte()?;
    let mut out = Vec::new();
    match mode {
        EMPTY => {}
        CONST => {
            let v = r.varint()?;
            if v > max {
                return Err(PackError("value out of range"));
            }
            out = vec![v; n];
        }
        BITS => {
            let base = r.varint()?;
            let w = u32::from(r.byte()?);
            if w == 0 || w > 64 {
                return Err(PackError("bit width must be 1..=64"));
            }
            let bytes = r.take((n * w as usize).div_ceil(8))?;
            out.reserve_exact(n);
            get_bits(bytes, n, w, |d| {
                let v = base.checked_add(d).filter(|&v| v <= max);
                out.push(v.ok_or(PackError("value out of range"))?);
                Ok(())
            })?;
        }
        DICT => {
            let k = r.varint()?;
            if k == 0 || k > MAX_DICT as u64 {
                return Err(PackError("dictionary must hold 1..=256 values"));
            }
            let mut dict = Vec::with_capacity(k as usize);
            for _ in 0..k {
                let v = r.varint()?;
                if v > max {
                    return Err(PackError("value out of range"));
                }
                dict.push(v);
            }
            let w = u32::from(r.byte()?);
            if w > 8 {
                return Err(PackError("dictionary index width must be 0..=8"));
            }
            let bytes = r.take((n * w as usize).div_ceil(8))?;
            out.reserve_exact(n);
            if w == 0 {
                out.resize(n, dict[0]);
            } else {
                get_bits(bytes, n, w, |i| {
                    let v = dict
                        .get(i as usize)
                        .ok_or(PackError("dictionary index out of range"))?;
                    out.push(*v);
                    Ok(())
                })?;
            }
        }
        VARINT => {
            // Each value takes at least one byte: a short input cannot make
            // a large allocation.
            if n > r.b.len() {
                return Err(PackError("truncated"));
            }
            out.reserve_exact(n);
            for _ in 0..n {
                let v = r.varint()?;
                if v > max {
                    return Err(PackError("value out of range"));
                }
                out.push(v);
            }
        }
        _ => return Err(PackError("unknown column mode")),
    }
    Ok(out)
}

/// The number of jobs in packed bytes (reads the header only).
pub fn jobs(bytes: &[u8]) -> Result<usize, PackError> {
    let mut r = Reader { b: bytes };
    if r.byte()? != VERSION {
        return Err(PackError("unknown encoding version"));
    }
    let n = r.varint()?;
    if n > MAX_JOBS as u64 {
        return Err(PackError("more than 1048576 jobs"));
    }
    Ok(n as usize)
}

/// Unpacks the columns; the first two always hold one value per job.
pub fn unpack(bytes: &[u8]) -> Result<Columns, PackError> {
    let n = jobs(bytes)?;
    let mut r = Reader { b: bytes };
    r.byte()?;
    r.varint()?;
    let narrow = |v: Vec<u64>| v.into_iter().map(|x| x as u32).collect::<Vec<u32>>();
    let u32max = u64::from(u32::MAX);
    let work = get_column(&mut r, n, u32max)?;
    let sleep = get_column(&mut r, n, u32max)?;
    let class = get_column(&mut r, n, u32max)?;
    let intended = get_column(&mut r, n, u64::MAX)?;
    if !r.b.is_empty() {
        return Err(PackError("trailing bytes"));
    }
    if n > 0 && (work.is_empty() || sleep.is_empty()) {
        return Err(PackError("work_units and sleep_us must not be empty"));
    }
    Ok(Columns {
        work_units: narrow(work),
        sleep_us: narrow(sleep),
        class_ids: narrow(class),
        intended_us: intended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(n: usize, c: &Columns) -> usize {
        let bytes = pack(n, c);
        assert_eq!(jobs(&bytes), Ok(n));
        assert_eq!(&unpack(&bytes).unwrap(), c);
        bytes.len()
    }

    #[test]
    fn every_mode_round_trips() {
        let n = 1000;
        let c = Columns {
            work_units: (0..n).map(|i| 1000 + (i * 7919) % 99_000).collect(),
            sleep_us: (0..n)
                .map(|i| [0, 1000, 2000, 5000, 10_000][i as usize % 5])
                .collect(),
            class_ids: vec![3; n as usize],
            intended_us: (0..n).map(|i| u64::MAX / 2 + u64::from(i)).collect(),
        };
        let len = round_trip(n as usize, &c);
        // 17 bits + 3 bits + 0 + 10 bits per job, plus headers.
        assert!(len < n as usize * 4 + 64, "{len}");
        round_trip(0, &Columns::default());
        let one = Columns {
            work_units: vec![u32::MAX],
            sleep_us: vec![0],
            ..Columns::default()
        };
        round_trip(1, &one);
        let wide = Columns {
            work_units: vec![0, u32::MAX],
            sleep_us: vec![5, 5],
            intended_us: vec![0, u64::MAX],
            ..Columns::default()
        };
        round_trip(2, &wide);
        // A long tail: plain varints.
        let tail = Columns {
            work_units: (0..100).map(|i| if i == 7 { 1 << 30 } else { i }).collect(),
            sleep_us: vec![0; 100],
            ..Columns::default()
        };
        let bytes = pack(100, &tail);
        assert_eq!(bytes[2], VARINT);
        round_trip(100, &tail);
    }

    #[test]
    fn hostile_bytes_are_errors() {
        assert!(unpack(&[]).is_err());
        assert!(unpack(&[9, 0, 0, 0, 0, 0]).is_err());
        // 2^21 jobs: over the cap, refused before any allocation.
        assert!(jobs(&[VERSION, 0x80, 0x80, 0x80, 0x01]).is_err());
        // Constant work of u32::MAX + 1.
        assert!(
            unpack(&[
                VERSION, 1, CONST, 0x80, 0x80, 0x80, 0x80, 0x10, CONST, 0, EMPTY, EMPTY
            ])
            .is_err()
        );
        // Bits truncated.
        assert!(unpack(&[VERSION, 4, BITS, 0, 8, 1, CONST, 0, EMPTY, EMPTY]).is_err());
        // Dictionary index past the end.
        assert!(unpack(&[VERSION, 1, DICT, 1, 5, 1, 0xff, CONST, 0, EMPTY, EMPTY]).is_err());
        // Trailing garbage.
        assert!(unpack(&[VERSION, 1, CONST, 1, CONST, 0, EMPTY, EMPTY, 0]).is_err());
    }
}
