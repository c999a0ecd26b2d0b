//! Histogram snapshot codec and merge: HdrHistogram, 3 significant digits,
//! microseconds, auto-resizing; on the wire as V2 + DEFLATE bytes (the form
//! the Java and Python HdrHistogram tools read).

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

/// Latency histogram in microseconds.
pub type Hist = Histogram<u64>;

/// A new empty auto-resizing histogram with 3 significant digits.
pub fn new_hist() -> Hist {
    let mut h = Histogram::new(3).expect("3 significant digits is a valid precision");
    h.auto(true);
    h
}

/// Records `v`, growing the histogram as needed. (hdrhistogram's
/// `saturating_record` clamps to the current top instead of resizing, which
/// silently flattens every value of a fresh auto-resizing histogram.)
#[inline]
pub fn record(h: &mut Hist, v: u64) {
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

/// Encodes as V2 + DEFLATE. An empty histogram encodes to no bytes.
pub fn encode(h: &Hist) -> Vec<u8> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    // Serializing into a Vec cannot fail on I/O; a failure here would be a
    // bug in the histogram, and an empty result is the safe answer.
    if V2DeflateSerializer::new().serialize(h, &mut out).is_err() {
        out.clear();
    }
    out
}

/// A histogram that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("bad histogram encoding: {0}")]
pub struct DecodeError(String);

/// Decodes V2 or V2 + DEFLATE bytes; no bytes decode to an empty histogram.
/// The result auto-resizes (a decoded histogram does not, by itself).
pub fn decode(bytes: &[u8]) -> Result<Hist, DecodeError> {
    let mut out = new_hist();
    merge_encoded(&mut out, bytes)?;
    Ok(out)
}

/// Decodes `bytes` and adds them into `into`.
pub fn merge_encoded(into: &mut Hist, bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.is_empty() {
        return Ok(());
    }
    if let Some(r) = fast_merge(into, bytes) {
        return r;
    }
    let h: Hist = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| DecodeError(format!("{e:?}")))?;
    into.add(&h).map_err(|e| DecodeError(format!("{e:?}")))
}

const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;

thread_local! {
    /// A reused inflater and buffer: the coordinator decodes a few histograms
    /// per snapshot per host, and setting these up costs more than using them.
    #[allow(clippy::type_complexity)]
    static INFLATE: std::cell::RefCell<(
        Box<miniz_oxide::inflate::core::DecompressorOxide>,
        Vec<u8>,
        Vec<(u64, u64)>,
    )> = std::cell::RefCell::new((Box::default(), Vec::new(), Vec::new()));
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Adds V2 + DEFLATE bytes of a histogram with cwbench's layout (lowest
/// value 1, 3 significant digits) straight into `into`: one reused inflater,
/// no intermediate histogram, each non-zero count recorded once. None: not
/// that layout or not compressed — the caller falls back to the general
/// decoder (which also reports what is wrong with bad bytes).
fn fast_merge(into: &mut Hist, bytes: &[u8]) -> Option<Result<(), DecodeError>> {
    let mut adds: Vec<(u64, u64)> = Vec::new();
    fast_decode(bytes, |index, n| adds.push((index, n)))?;
    for (index, n) in adds {
        let value = value_at(index)?;
        if into.record_n(value, n).is_err() {
            return Some(Err(DecodeError(format!("value {value} out of range"))));
        }
    }
    Some(Ok(()))
}

/// The value of counts index `index` in cwbench's layout (lowest 1, 3
/// significant digits: 2048 sub-buckets, 1024 per half).
fn value_at(index: u64) -> Option<u64> {
    match (index >> 10).checked_sub(1) {
        None => Some(index),
        Some(b) if b < 53 => Some(((index & 1023) + 1024) << b),
        Some(_) => None,
    }
}

/// Counts of a histogram in cwbench's layout as a plain array: merging
/// encoded bytes into it is one addition per non-zero count. For sums that
/// are rarely read (the coordinator's fallback for a host lost before Done).
#[derive(Debug, Clone, Default)]
pub struct Dense {
    counts: Vec<u64>,
    /// Bytes that were not in cwbench's layout, merged the general way.
    other: Option<Hist>,
}

impl Dense {
    /// Decodes `bytes` and adds them in.
    pub fn merge_encoded(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let counts = &mut self.counts;
        let fast = fast_decode(bytes, |index, n| {
            if value_at(index).is_some() {
                let i = index as usize;
                if i >= counts.len() {
                    counts.resize(i + 1, 0);
                }
                counts[i] = counts[i].saturating_add(n);
            }
        });
        match fast {
            Some(()) => Ok(()),
            None => merge_encoded(self.other.get_or_insert_with(new_hist), bytes),
        }
    }

    /// The sum as a histogram.
    pub fn to_hist(&self) -> Hist {
        let mut h = self.other.clone().unwrap_or_else(new_hist);
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0
                && let Some(v) = value_at(i as u64)
            {
                let _ = h.record_n(v, n);
            }
        }
        h
    }
}

/// The non-zero counts of one encoded histogram, for its percentiles
/// without building a histogram (the coordinator reads p50/p99/max of every
/// interval). Percentiles are exactly `Hist::value_at_quantile`'s.
#[derive(Debug, Clone)]
pub enum Counts {
    /// (counts index, count) in cwbench's layout, increasing.
    Pairs(Vec<(u64, u64)>, u64),
    /// Another layout: decoded the general way.
    Hist(Hist),
}

impl Counts {
    /// Decodes `bytes` (no bytes: empty).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut pairs = Vec::new();
        if bytes.is_empty() || fast_decode(bytes, |i, n| pairs.push((i, n))).is_some() {
            let total = pairs.iter().map(|p| p.1).fold(0u64, u64::saturating_add);
            return Ok(Counts::Pairs(pairs, total));
        }
        decode(bytes).map(Counts::Hist)
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Counts::Pairs(_, total) => *total == 0,
            Counts::Hist(h) => h.is_empty(),
        }
    }

    /// As `Hist::value_at_quantile` (q > 0).
    pub fn quantile(&self, q: f64) -> u64 {
        match self {
            Counts::Hist(h) => h.value_at_quantile(q),
            Counts::Pairs(pairs, total) => {
                let q = q.min(1.0);
                let want = ((q * *total as f64).ceil() as u64).max(1);
                let mut seen = 0u64;
                for &(i, n) in pairs {
                    seen += n;
                    if seen >= want {
                        return highest_equivalent(i);
                    }
                }
                0
            }
        }
    }

    /// As `Hist::max`.
    pub fn max(&self) -> u64 {
        match self {
            Counts::Hist(h) => h.max(),
            Counts::Pairs(pairs, _) => pairs.last().map_or(0, |&(i, _)| highest_equivalent(i)),
        }
    }
}

/// The highest value equivalent to counts index `index` (cwbench's layout).
fn highest_equivalent(index: u64) -> u64 {
    let b = (index >> 10).saturating_sub(1);
    value_at(index).map_or(u64::MAX, |v| v + (1u64 << b) - 1)
}

/// Calls `f(index, count)` for each non-zero count of V2 + DEFLATE bytes in
/// cwbench's layout; None if the bytes are not that (or are damaged).
fn fast_decode(bytes: &[u8], mut f: impl FnMut(u64, u64)) -> Option<()> {
    if be32(bytes, 0)? != V2_COMPRESSED_COOKIE {
        return None;
    }
    let len = be32(bytes, 4)? as usize;
    let deflated = bytes.get(8..8 + len)?;
    INFLATE.with(|cell| {
        use miniz_oxide::inflate::TINFLStatus;
        use miniz_oxide::inflate::core::{decompress, inflate_flags};
        let (z, buf, adds) = &mut *cell.borrow_mut();
        adds.clear();
        let flags = inflate_flags::TINFL_FLAG_PARSE_ZLIB_HEADER
            | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        if buf.len() < deflated.len() * 4 + 64 {
            buf.resize(deflated.len() * 4 + 64, 0);
        }
        // Straight into one flat buffer (no window to copy out of); a
        // buffer too small is doubled and the stream decoded again.
        let out_len = loop {
            z.init();
            match decompress(z, deflated, buf, 0, flags) {
                (TINFLStatus::Done, _, n) => break n,
                (TINFLStatus::HasMoreOutput, _, _) if buf.len() < 64 << 20 => {
                    let n = buf.len() * 2;
                    buf.resize(n, 0);
                }
                _ => return None,
            }
        };
        let p = &buf[..out_len];
        // Inner V2 header: cookie, payload length, normalizing offset,
        // significant digits, lowest, highest, integer-to-double ratio.
        if be32(p, 0)? != V2_COOKIE || be32(p, 8)? != 0 || be32(p, 12)? != 3 || be64(p, 16)? != 1 {
            return None;
        }
        let payload = p.get(40..40 + be32(p, 4)? as usize)?;
        let mut i = 0usize;
        let mut index: u64 = 0;
        // Parse everything first: damaged bytes add nothing.
        while i < payload.len() {
            // HdrHistogram's LEB128 variant: the 9th byte carries 8 bits.
            let mut v: u64 = 0;
            let mut k = 0;
            // Most counts are one byte.
            if payload[i] < 0x80 {
                v = u64::from(payload[i]);
                i += 1;
                k = 9;
            }
            while k < 9 {
                let b = *payload.get(i)?;
                i += 1;
                if k == 8 {
                    v |= u64::from(b) << 56;
                    break;
                }
                v |= u64::from(b & 0x7f) << (7 * k);
                k += 1;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let n = ((v >> 1) as i64) ^ -((v & 1) as i64);
            if n < 0 {
                index = index.checked_add(n.unsigned_abs())?;
            } else {
                if n > 0 {
                    value_at(index)?;
                    adds.push((index, n as u64));
                }
                index = index.checked_add(1)?;
            }
        }
        for &(index, n) in adds.iter() {
            f(index, n);
        }
        Some(())
    })
}

/// The figures a report prints of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Summary {
    pub fn of(h: &Hist) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_count() {
        let mut h = new_hist();
        for v in 1..=100_000u64 {
            h.record(v * 7 % 50_000 + 1).unwrap();
        }
        h.record(3_600_000_000).unwrap(); // an hour: auto-resize
        let bytes = encode(&h);
        assert!(!bytes.is_empty());
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), h.len());
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.99), h.value_at_quantile(0.99));
        // Decoded histograms must keep auto-resizing for later merges.
        let mut m = back;
        m.record(u64::MAX / 4).unwrap();
    }

    #[test]
    fn merge_sums_counts_and_keeps_extremes() {
        let mut a = new_hist();
        let mut b = new_hist();
        for v in 1..=1000 {
            a.record(v).unwrap();
            b.record(v * 1000).unwrap();
        }
        let mut m = new_hist();
        merge_encoded(&mut m, &encode(&a)).unwrap();
        merge_encoded(&mut m, &encode(&b)).unwrap();
        merge_encoded(&mut m, &[]).unwrap();
        assert_eq!(m.len(), 2000);
        assert_eq!(m.min(), 1);
        assert!(m.max() >= 999_000);
        let s = Summary::of(&m);
        assert_eq!(s.count, 2000);
        assert!(s.p50 <= 1000 && s.p99 > 900_000);
    }

    #[test]
    fn record_grows_a_fresh_histogram() {
        let mut h = new_hist();
        record(&mut h, 5_000_000);
        record(&mut h, 7);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= 4_990_000, "{}", h.max());
        assert_eq!(h.min(), 7);
    }

    /// The fast path adds exactly what the general decoder does.
    #[test]
    fn fast_merge_equals_the_general_decoder() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..20u64 {
            let mut h = new_hist();
            for _ in 0..(round * 500 + 1) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                record(&mut h, (x >> (x % 60)) % (1 << (10 + round * 2)));
            }
            let bytes = encode(&h);
            let mut fast = new_hist();
            fast.record(3).unwrap();
            let r = fast_merge(&mut fast, &bytes);
            assert!(r.is_some(), "round {round}: {:?} {:?}", r, &bytes[..16]);
            let mut slow = new_hist();
            slow.record(3).unwrap();
            let g: Hist = Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
            slow.add(&g).unwrap();
            assert_eq!(fast, slow, "round {round}");
            assert_eq!(fast.len(), h.len() + 1);
            let c = Counts::decode(&bytes).unwrap();
            assert!(matches!(c, Counts::Pairs(..)));
            for q in [0.001, 0.5, 0.9, 0.99, 0.999, 1.0] {
                assert_eq!(c.quantile(q), h.value_at_quantile(q), "round {round} q {q}");
            }
            assert_eq!(c.max(), h.max(), "round {round}");
            let mut dense = Dense::default();
            dense.merge_encoded(&bytes).unwrap();
            dense.merge_encoded(&encode(&h)).unwrap();
            let mut twice = h.clone();
            twice.add(&h).unwrap();
            assert_eq!(dense.to_hist(), twice, "round {round}");
        }
        // Truncated or corrupted: never a panic, and the fallback says why.
        let bytes = encode(&{
            let mut h = new_hist();
            record(&mut h, 12345);
            h
        });
        for cut in 0..bytes.len() {
            let mut m = new_hist();
            let _ = merge_encoded(&mut m, &bytes[..cut]);
        }
    }

    #[test]
    fn empty_and_garbage() {
        assert!(encode(&new_hist()).is_empty());
        assert_eq!(decode(&[]).unwrap().len(), 0);
        assert!(decode(b"not a histogram").is_err());
        assert_eq!(Summary::of(&new_hist()), Summary::default());
    }
}
