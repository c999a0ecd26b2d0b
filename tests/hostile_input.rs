//! Property tests: the scenario parser and the batch decoder get arbitrary
//! and mutated input; they must answer Ok or a clear error, never panic.

use cwbench::batch::{batch_len, for_each_job};
use cwbench::packed::{Columns, pack, unpack};
use cwbench::proto::JobBatch;
use cwbench::scenario::{Limits, PARITY_TOML, parse};
use proptest::prelude::*;

/// Keys and values worth aiming at: the parser's interesting corners.
fn mutation() -> impl Strategy<Value = (String, String)> {
    let keys = prop::sample::select(vec![
        "workers",
        "queue_bound",
        "jobs",
        "warmup_jobs",
        "seed",
        "producers",
        "min",
        "max",
        "crash_probability",
        "snapshot_interval_ms",
        "weight",
        "prefetch_jobs",
    ]);
    let values = prop::sample::select(vec![
        "0",
        "-1",
        "1e309",
        "nan",
        "inf",
        "-inf",
        "18446744073709551616",
        "\"x\"",
        "[]",
        "[1, 2]",
        "{}",
        "true",
        "0.5",
        "4294967296",
        "9223372036854775807",
    ]);
    (keys, values).prop_map(|(k, v)| (k.to_string(), v.to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = parse(&text, "fuzz.toml", &Limits::default());
    }

    #[test]
    fn mutated_parity_never_panics_and_errors_name_the_file(
        muts in prop::collection::vec(mutation(), 1..4)
    ) {
        let mut text = PARITY_TOML.to_string();
        for (k, v) in &muts {
            // Replace the value of the first line that sets this key.
            let needle = format!("\n{k} = ");
            if let Some(i) = text.find(&needle) {
                let start = i + needle.len();
                let end = text[start..].find('\n').map_or(text.len(), |e| start + e);
                text.replace_range(start..end, v);
            }
        }
        if let Err(e) = parse(&text, "fuzz.toml", &Limits::default()) {
            let msg = e.to_string();
            prop_assert!(msg.starts_with("fuzz.toml: "), "{}", msg);
            prop_assert!(!msg.contains('\n'), "one line: {}", msg);
        }
    }

    #[test]
    fn arbitrary_batches_never_panic(
        first_id in prop_oneof![any::<u64>(), u64::MAX - 100..=u64::MAX],
        work in prop::collection::vec(any::<u32>(), 0..64),
        sleep in prop::collection::vec(any::<u32>(), 0..64),
        classes in prop::collection::vec(any::<u32>(), 0..64),
        crash in prop::collection::vec(any::<u32>(), 0..8),
        intended in prop::collection::vec(any::<u64>(), 0..64),
        open in any::<bool>(),
    ) {
        let b = JobBatch {
            first_id,
            work_units: work,
            sleep_us: sleep,
            class_ids: classes,
            crash_at: crash,
            intended_us: intended,
            packed: Vec::new(),
        };
        let mut n = 0u64;
        let r = for_each_job(&b, 3, open, |j| {
            n += 1;
            let _ = j.id;
        });
        if r.is_ok() {
            prop_assert_eq!(n as usize, b.work_units.len());
        } else {
            prop_assert_eq!(n, 0, "a bad batch yields no job");
        }
    }

    #[test]
    fn arbitrary_packed_batches_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..96),
        version_and_small_n in any::<bool>(),
        crash in prop::collection::vec(any::<u32>(), 0..4),
        open in any::<bool>(),
    ) {
        let mut packed = bytes;
        if version_and_small_n && packed.len() >= 2 {
            // Aim past the header: a valid version and a small job count.
            packed[0] = cwbench::packed::VERSION;
            packed[1] &= 0x3f;
        }
        let b = JobBatch { first_id: 7, crash_at: crash, packed, ..Default::default() };
        let mut n = 0usize;
        let r = for_each_job(&b, 3, open, |_| n += 1);
        if r.is_ok() {
            prop_assert_eq!(Some(n), batch_len(&b).ok());
        } else {
            prop_assert_eq!(n, 0, "a bad batch yields no job");
        }
        let _ = unpack(&b.packed);
    }

    #[test]
    fn packed_columns_round_trip(
        n in 0usize..300,
        work_max in prop_oneof![Just(0u32), Just(7), Just(100_000), Just(u32::MAX)],
        sleep_pick in prop::collection::vec(0u32..5, 1..6),
        multi in any::<bool>(),
        open in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut x = seed | 1;
        let mut next = move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let c = Columns {
            work_units: (0..n).map(|_| (next() % (u64::from(work_max) + 1)) as u32).collect(),
            sleep_us: (0..n).map(|_| sleep_pick[next() as usize % sleep_pick.len()] * 1000).collect(),
            class_ids: if multi { (0..n).map(|_| (next() % 3) as u32).collect() } else { Vec::new() },
            intended_us: if open { (0..n).map(|_| next() >> (next() % 64)).collect() } else { Vec::new() },
        };
        let bytes = pack(n, &c);
        let back = unpack(&bytes).unwrap();
        if n == 0 {
            prop_assert_eq!(back, Columns::default());
        } else {
            prop_assert_eq!(back, c);
        }
    }
}
