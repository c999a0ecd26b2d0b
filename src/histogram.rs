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
    if bytes.is_empty() {
        return Ok(out);
    }
    let h: Hist = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| DecodeError(format!("{e:?}")))?;
    out.add(&h).map_err(|e| DecodeError(format!("{e:?}")))?;
    Ok(out)
}

/// Decodes `bytes` and adds them into `into`.
pub fn merge_encoded(into: &mut Hist, bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let h = decode(bytes)?;
    into.add(&h).map_err(|e| DecodeError(format!("{e:?}")))
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

    #[test]
    fn empty_and_garbage() {
        assert!(encode(&new_hist()).is_empty());
        assert_eq!(decode(&[]).unwrap().len(), 0);
        assert!(decode(b"not a histogram").is_err());
        assert_eq!(Summary::of(&new_hist()), Summary::default());
    }
}
