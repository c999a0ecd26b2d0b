//! Property tests: the scenario parser and the batch decoder get arbitrary
//! and mutated input; they must answer Ok or a clear error, never panic.

use cwbench::generator::for_each_job;
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
}
