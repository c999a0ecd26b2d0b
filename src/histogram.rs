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
    let h = decode_general(bytes)?;
    into.add(&h).map_err(|e| DecodeError(format!("{e:?}")))
}

/// The largest V2 encoding (header + counts) cwbench's layout can have:
/// each of its counts indexes at most one 9-byte varint.
const FAST_MAX: usize = 40 + 9 * INDEXES as usize;

/// The largest inflated V2 encoding the general decoder is given: far
/// more than any layout of sane precision needs, and a bound on what a
/// few hostile bytes (DEFLATE expands up to ~1000-fold) can make us
/// allocate.
const GENERAL_MAX: usize = 16 << 20;

/// Inflates `deflated` (zlib) into `buf`, which grows up to `cap` bytes;
/// the inflated length, or why not.
fn inflate(
    z: &mut zlib_rs::Inflate,
    deflated: &[u8],
    buf: &mut Vec<u8>,
    cap: usize,
) -> Result<usize, &'static str> {
    if buf.len() < (deflated.len() * 4 + 64).min(cap) {
        buf.resize((deflated.len() * 4 + 64).min(cap), 0);
    }
    // Straight into one flat buffer in one call (zlib then needs no
    // window); a buffer too small is doubled and the stream decoded again.
    loop {
        z.reset(true);
        match z.decompress(deflated, buf, zlib_rs::InflateFlush::Finish) {
            Ok(zlib_rs::Status::StreamEnd) => return Ok(z.total_out() as usize),
            // Output full: room to grow, or too large.
            Ok(_) if z.total_out() as usize == buf.len() => {
                if buf.len() >= cap {
                    return Err("inflates past the size limit");
                }
                let n = (buf.len() * 2).min(cap);
                buf.resize(n, 0);
            }
            // Input used up before the end of the stream.
            Ok(_) => return Err("truncated DEFLATE stream"),
            Err(_) => return Err("damaged DEFLATE stream"),
        }
    }
}

/// The general decoder (any V2 layout), behind checks: the reference
/// decoder sizes its buffer from the header's payload length before it
/// reads a byte, so a 40-byte histogram claiming 4 GiB would allocate
/// 4 GiB. Compressed bytes are inflated here, bounded, and the claimed
/// length checked against what is there.
fn decode_general(bytes: &[u8]) -> Result<Hist, DecodeError> {
    let bad = |m: &str| DecodeError(m.to_string());
    let inflated;
    let plain: &[u8] = if be32(bytes, 0) == Some(V2_COMPRESSED_COOKIE) {
        let len = be32(bytes, 4).ok_or_else(|| bad("truncated header"))? as usize;
        let deflated = bytes
            .get(8..8usize.saturating_add(len))
            .ok_or_else(|| bad("compressed length past the end"))?;
        let mut buf = Vec::new();
        let n = inflate(
            &mut zlib_rs::Inflate::new(true, 15),
            deflated,
            &mut buf,
            GENERAL_MAX,
        )
        .map_err(bad)?;
        buf.truncate(n);
        inflated = buf;
        &inflated
    } else {
        bytes
    };
    if be32(plain, 0) == Some(V2_COOKIE)
        && let Some(claimed) = be32(plain, 4)
        && claimed as usize > plain.len().saturating_sub(40)
    {
        return Err(DecodeError(format!(
            "payload length {claimed} but {} bytes follow the header",
            plain.len().saturating_sub(40)
        )));
    }
    Deserializer::new()
        .deserialize(&mut &plain[..])
        .map_err(|e| DecodeError(format!("{e:?}")))
}

const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;

/// Counts indexes of cwbench's layout (lowest 1, 3 significant digits,
/// values up to u64::MAX): those with a `value_at`.
const INDEXES: u64 = 54 << 10;

/// A reused inflater and buffers: the coordinator decodes five histograms
/// per snapshot per host, and setting these up costs more than using them.
/// zlib-rs (pure Rust): ~20% faster than miniz_oxide on these small streams.
struct Decoder {
    z: zlib_rs::Inflate,
    buf: Vec<u8>,
    /// Room for the pairs of one histogram; the first `len` are its own.
    pairs: Vec<(u64, u64)>,
    len: usize,
    total: u64,
}

impl Decoder {
    fn new() -> Self {
        Self {
            z: zlib_rs::Inflate::new(true, 15),
            buf: Vec::new(),
            pairs: Vec::new(),
            len: 0,
            total: 0,
        }
    }

    /// Inflates and parses V2 + DEFLATE bytes in cwbench's layout into
    /// `self.pairs`; None if the bytes are not that (or are damaged).
    fn decode(&mut self, bytes: &[u8]) -> Option<()> {
        // Damaged bytes add nothing.
        (self.len, self.total) = (0, 0);
        if be32(bytes, 0)? != V2_COMPRESSED_COOKIE {
            return None;
        }
        let len = be32(bytes, 4)? as usize;
        let deflated = bytes.get(8..8usize.saturating_add(len))?;
        // Larger than cwbench's layout can be: not it (the general decoder
        // says what it is). The buffer stays under FAST_MAX for good.
        let out_len = inflate(&mut self.z, deflated, &mut self.buf, FAST_MAX).ok()?;
        let p = &self.buf[..out_len];
        // Inner V2 header: cookie, payload length, normalizing offset,
        // significant digits, lowest, highest, integer-to-double ratio.
        if be32(p, 0)? != V2_COOKIE
            || be32(p, 8)? != 0
            || be32(p, 12)? != 3
            || be64(p, 16)? != 1
            || be64(p, 24)? < 2
            || be64(p, 32)? != 1.0f64.to_bits()
        {
            return None;
        }
        let payload = p.get(40..40 + be32(p, 4)? as usize)?;
        (self.len, self.total) = parse_counts(payload, &mut self.pairs)?;
        Some(())
    }

    fn counts(&self) -> Counts<'_> {
        Counts {
            pairs: &self.pairs[..self.len],
            total: self.total,
        }
    }
}

/// Reads HdrHistogram's V2 counts (ZigZag LEB128; a negative number is a
/// run of zero counts) into (index, count) pairs of the non-zero counts,
/// increasing, at the start of `pairs` (grown to room for one pair per
/// byte). Returns how many and their sum; None if damaged or an index is
/// outside cwbench's layout.
fn parse_counts(payload: &[u8], pairs: &mut Vec<(u64, u64)>) -> Option<(usize, u64)> {
    // Kept pairs have distinct indexes below INDEXES: room for that many
    // (plus the one always written), however long the payload.
    let room = payload.len().min(INDEXES as usize + 8);
    if pairs.len() < room {
        pairs.resize(room, (0, 0));
    }
    let n = payload.len();
    let out = &mut pairs[..room];
    let mut len = 0usize;
    let mut index: u64 = 0;
    // Sums of one-byte counts (< 64 each, so no overflow) and of the others.
    let (mut small, mut large) = (0u64, 0u64);
    let mut i = 0usize;
    // ZigZag without branches (counts and zero runs alternate at random):
    // odd is negative, -n = magnitude + 1 zero counts; even is a count n at
    // `index`. The pair is always written, and kept (len advanced) only
    // when the count is not zero.
    while i < n {
        // Most varints are one byte (counts below 64, short zero runs):
        // eight at a time when the next eight are.
        if let Some(word) = payload.get(i..i + 8)
            && index < 1 << 40
        {
            let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
            if w & 0x8080_8080_8080_8080 == 0 {
                for k in 0..8 {
                    let v = (w >> (8 * k)) & 0x7f;
                    let negative = v & 1;
                    let magnitude = v >> 1;
                    let keep = negative == 0 && magnitude != 0;
                    // Past the room: more pairs than indexes, refused below.
                    if let Some(slot) = out.get_mut(len) {
                        *slot = (index, magnitude);
                    }
                    len += usize::from(keep);
                    small += magnitude & u64::from(keep).wrapping_neg();
                    // At most 8 x 64 added to an index below 2^40.
                    index += 1 + (magnitude & negative.wrapping_neg());
                }
                i += 8;
                continue;
            }
        }
        let b = payload[i];
        let v = if b < 0x80 {
            i += 1;
            u64::from(b)
        } else {
            long_varint(payload, &mut i)?
        };
        let negative = v & 1;
        let magnitude = v >> 1;
        let keep = negative == 0 && magnitude != 0;
        *out.get_mut(len)? = (index, magnitude);
        len += usize::from(keep);
        large = large.saturating_add(magnitude & u64::from(keep).wrapping_neg());
        index = index.checked_add(1 + (magnitude & negative.wrapping_neg()))?;
    }
    // More pairs than the layout has indexes, or (indexes increase) the
    // last one outside it.
    if len > out.len() || (len > 0 && out[len - 1].0 >= INDEXES) {
        return None;
    }
    Some((len, small.saturating_add(large)))
}

/// A varint of more than one byte at `*i`, HdrHistogram's LEB128 variant
/// (the 9th byte carries 8 bits); None if cut short.
fn long_varint(payload: &[u8], i: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for k in 0..9 {
        let b = *payload.get(*i)?;
        *i += 1;
        if k == 8 {
            v |= u64::from(b) << 56;
            break;
        }
        v |= u64::from(b & 0x7f) << (7 * k);
        if b & 0x80 == 0 {
            break;
        }
    }
    Some(v)
}

thread_local! {
    /// One decoder per thread: hosts merge on the coordinator's runtime
    /// threads, each decode is done before the next starts.
    static DECODER: std::cell::RefCell<Decoder> = std::cell::RefCell::new(Decoder::new());
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes `bytes` (no bytes: empty) and hands the histogram to `f`:
/// straight from the bytes when they are in cwbench's layout (lowest 1, 3
/// significant digits, V2 + DEFLATE), with no histogram built; decoded the
/// general way otherwise (which also says what is wrong with bad bytes).
pub fn with_decoded<R>(bytes: &[u8], f: impl FnOnce(View<'_>) -> R) -> Result<R, DecodeError> {
    if bytes.is_empty() {
        return Ok(f(View::Fast(Counts::EMPTY)));
    }
    DECODER.with(|cell| {
        // A decode inside `f` (not done today) gets a decoder of its own.
        let mut fresh = None;
        let mut guard = cell.try_borrow_mut().ok();
        let d = match &mut guard {
            Some(g) => &mut **g,
            None => fresh.insert(Decoder::new()),
        };
        if d.decode(bytes).is_some() {
            return Ok(f(View::Fast(d.counts())));
        }
        drop(guard);
        let h = decode_general(bytes)?;
        Ok(f(View::Hist(&h)))
    })
}

/// Adds V2 + DEFLATE bytes of a histogram with cwbench's layout straight
/// into `into`: no intermediate histogram, each non-zero count recorded
/// once. None: not that layout — the caller falls back to the general
/// decoder.
fn fast_merge(into: &mut Hist, bytes: &[u8]) -> Option<Result<(), DecodeError>> {
    DECODER.with(|cell| {
        let mut d = cell.try_borrow_mut().ok()?;
        d.decode(bytes)?;
        Some(d.counts().record_into(into))
    })
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

/// The highest value equivalent to counts index `index` (cwbench's layout).
fn highest_equivalent(index: u64) -> u64 {
    let b = (index >> 10).saturating_sub(1);
    value_at(index).map_or(u64::MAX, |v| v + (1u64 << b) - 1)
}

/// A decoded histogram, as `with_decoded` hands it over.
#[derive(Debug, Clone, Copy)]
pub enum View<'a> {
    /// Cwbench's layout, read straight from the bytes.
    Fast(Counts<'a>),
    /// Another layout, decoded the general way.
    Hist(&'a Hist),
}

impl View<'_> {
    pub fn is_empty(&self) -> bool {
        match self {
            View::Fast(c) => c.total == 0,
            View::Hist(h) => h.is_empty(),
        }
    }

    /// `Hist::value_at_quantile` of each of `qs` (increasing, > 0), read in
    /// one pass; zeros when empty.
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [u64; N] {
        if self.is_empty() {
            return [0; N];
        }
        match self {
            View::Fast(c) => c.quantiles(qs),
            View::Hist(h) => qs.map(|q| h.value_at_quantile(q)),
        }
    }

    /// As `Hist::max`; zero when empty.
    pub fn max(&self) -> u64 {
        match self {
            View::Fast(c) => c.pairs.last().map_or(0, |&(i, _)| highest_equivalent(i)),
            View::Hist(h) => h.max(),
        }
    }

    /// Adds every count into `into`.
    pub fn add_to(&self, into: &mut Dense) {
        match self {
            View::Fast(c) => into.add(c),
            View::Hist(h) => {
                let _ = into.other.get_or_insert_with(new_hist).add(*h);
            }
        }
    }

    /// Records every count into `into`.
    pub fn record_into(&self, into: &mut Hist) -> Result<(), DecodeError> {
        match self {
            View::Fast(c) => c.record_into(into),
            View::Hist(h) => into.add(*h).map_err(|e| DecodeError(format!("{e:?}"))),
        }
    }
}

/// The non-zero counts of one histogram in cwbench's layout.
#[derive(Debug, Clone, Copy)]
pub struct Counts<'a> {
    /// (counts index, count), increasing index.
    pairs: &'a [(u64, u64)],
    total: u64,
}

impl Counts<'_> {
    const EMPTY: Counts<'static> = Counts {
        pairs: &[],
        total: 0,
    };

    /// Exactly `Hist::value_at_quantile` for each q (increasing, > 0).
    fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [u64; N] {
        let want = qs.map(|q| ((q.min(1.0) * self.total as f64).ceil() as u64).max(1));
        let mut out = [0u64; N];
        let mut k = 0;
        let mut seen = 0u64;
        for &(i, n) in self.pairs {
            seen = seen.saturating_add(n);
            while k < N && seen >= want[k] {
                out[k] = highest_equivalent(i);
                k += 1;
            }
            if k == N {
                break;
            }
        }
        out
    }

    fn record_into(&self, into: &mut Hist) -> Result<(), DecodeError> {
        for &(index, n) in self.pairs {
            // Indexes were checked against the layout while parsing.
            let value = value_at(index).unwrap_or(u64::MAX);
            if into.record_n(value, n).is_err() {
                return Err(DecodeError(format!("value {value} out of range")));
            }
        }
        Ok(())
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
        with_decoded(bytes, |v| v.add_to(self))
    }

    fn add(&mut self, c: &Counts<'_>) {
        let Some(&(last, _)) = c.pairs.last() else {
            return;
        };
        let need = last as usize + 1; // < INDEXES
        if self.counts.len() < need {
            self.counts.resize(need, 0);
        }
        for &(i, n) in c.pairs {
            let slot = &mut self.counts[i as usize];
            *slot = slot.saturating_add(n);
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

    /// A V2 header: cookie, payload length, offset 0, 3 digits, lowest 1,
    /// highest 2^62, ratio 1.0.
    fn v2_header(payload_len: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&V2_COOKIE.to_be_bytes());
        h.extend_from_slice(&payload_len.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes());
        h.extend_from_slice(&3u32.to_be_bytes());
        h.extend_from_slice(&1u64.to_be_bytes());
        h.extend_from_slice(&(1u64 << 62).to_be_bytes());
        h.extend_from_slice(&1.0f64.to_bits().to_be_bytes());
        h
    }

    fn deflate_v2(plain: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(plain).unwrap();
        let z = e.finish().unwrap();
        let mut out = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        out.extend_from_slice(&(z.len() as u32).to_be_bytes());
        out.extend_from_slice(&z);
        out
    }

    fn fast_buffer_len() -> usize {
        DECODER.with(|d| d.borrow().buf.len())
    }

    /// Bytes from the network that claim much and hold little are refused
    /// without the allocation they claim: a 40-byte header of a 4 GiB
    /// payload, a few KB that inflate to megabytes of zeros, a cut stream.
    #[test]
    fn hostile_histograms_are_refused_without_large_allocations() {
        // Plain and compressed: a header claiming 4 GiB, nothing after it.
        let e = decode(&v2_header(u32::MAX)).unwrap_err().to_string();
        assert!(e.contains("payload length 4294967295 but 0 bytes"), "{e}");
        let e = decode(&deflate_v2(&v2_header(u32::MAX)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("payload length 4294967295 but 0 bytes"), "{e}");
        // 20 MiB of zero counts, a few KB deflated: past both limits.
        let mut big = v2_header(20 << 20);
        big.resize(40 + (20 << 20), 0);
        let z = deflate_v2(&big);
        assert!(z.len() < 100_000, "{}", z.len());
        let e = decode(&z).unwrap_err().to_string();
        assert!(e.contains("inflates past the size limit"), "{e}");
        assert!(with_decoded(&z, |_| ()).is_err());
        // 400 KB of zero counts (within the fast path's bound): an empty
        // histogram, as the general decoder reads it, with room for no more
        // pairs than the layout has indexes.
        let mut wide = v2_header(400_000);
        wide.resize(40 + 400_000, 0);
        assert!(decode(&deflate_v2(&wide)).unwrap().is_empty());
        assert!(DECODER.with(|d| d.borrow().pairs.len()) <= INDEXES as usize + 8);
        // A valid histogram cut short.
        let mut h = new_hist();
        for v in 1..5000u64 {
            h.record(v * 13).unwrap();
        }
        let good = encode(&h);
        let mut cut = good[..good.len() / 2].to_vec();
        let n = (cut.len() - 8) as u32;
        cut[4..8].copy_from_slice(&n.to_be_bytes());
        let e = decode(&cut).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        // The thread's fast-path buffer never grew past its bound.
        assert!(fast_buffer_len() <= FAST_MAX, "{}", fast_buffer_len());
        assert_eq!(decode(&good).unwrap().len(), h.len());
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
            let qs = [0.001, 0.5, 0.9, 0.99, 0.999, 1.0];
            let (got, max) = with_decoded(&bytes, |v| {
                assert!(matches!(v, View::Fast(..)), "round {round}");
                (v.quantiles(qs), v.max())
            })
            .unwrap();
            assert_eq!(got, qs.map(|q| h.value_at_quantile(q)), "round {round}");
            assert_eq!(max, h.max(), "round {round}");
            // Quantiles one at a time, and the general decoder's view.
            for q in qs {
                assert_eq!(
                    with_decoded(&bytes, |v| v.quantiles([q])).unwrap(),
                    [h.value_at_quantile(q)]
                );
                assert_eq!(View::Hist(&h).quantiles([q]), [h.value_at_quantile(q)]);
            }
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

    /// The counts reader against a plain one (the one before the fast
    /// paths), on histograms' payloads and on arbitrary bytes.
    #[test]
    fn parse_counts_equals_a_plain_reader() {
        fn plain(payload: &[u8]) -> Option<Vec<(u64, u64)>> {
            let (mut i, mut index, mut pairs) = (0usize, 0u64, Vec::new());
            while i < payload.len() {
                let (mut v, mut k) = (0u64, 0);
                loop {
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
                        pairs.push((index, n as u64));
                    }
                    index = index.checked_add(1)?;
                }
            }
            Some(pairs)
        }
        let check = |payload: &[u8]| {
            let mut pairs = vec![(7, 7); 3];
            let got = parse_counts(payload, &mut pairs).map(|(len, total)| {
                let p = pairs[..len].to_vec();
                let sum = p.iter().map(|x| x.1).fold(0u64, u64::saturating_add);
                assert_eq!(total, sum, "{payload:?}");
                p
            });
            assert_eq!(got, plain(payload), "{payload:?}");
        };
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            let len = (next() % 200) as usize;
            // Mostly one-byte varints, some long ones, some of 9 bytes.
            let bytes: Vec<u8> = (0..len)
                .map(|_| match next() % 16 {
                    0 => 0xff,
                    1..=3 => 0x80 | (next() as u8),
                    _ => (next() as u8) & if round % 2 == 0 { 0x7f } else { 0x0f },
                })
                .collect();
            check(&bytes);
        }
        // Real payloads: counts of every size, runs past the layout's end.
        for counts in [1u64, 63, 64, 1000, 1 << 40] {
            let mut h = new_hist();
            for v in [
                1u64,
                2,
                1000,
                2047,
                2048,
                5000,
                1 << 20,
                1 << 40,
                u64::MAX / 4,
            ] {
                h.record_n(v, counts + v % 3).unwrap();
            }
            let bytes = encode(&h);
            let got = with_decoded(&bytes, |v| {
                let mut back = new_hist();
                v.record_into(&mut back).unwrap();
                back
            })
            .unwrap();
            assert_eq!(got, h);
        }
        check(&[0x01, 0x02]);
        check(&[0xff; 9]);
        check(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x02]);
        check(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
    }

    #[test]
    fn empty_and_garbage() {
        assert!(encode(&new_hist()).is_empty());
        assert_eq!(decode(&[]).unwrap().len(), 0);
        assert!(decode(b"not a histogram").is_err());
        assert_eq!(Summary::of(&new_hist()), Summary::default());
    }
}
