//! `coordinator trace`: writes the exact job stream of a scenario as JSON
//! Lines, so a harness in any language can replay it (docs/workload.md).

use std::io::{self, Write};

use cwbench::digest::Digest;
use cwbench::generator::Generator;
use cwbench::scenario::Plan;

/// Writes the first `jobs` jobs (default: the scenario's total) and returns
/// their digest and count.
pub fn write_trace(plan: &Plan, jobs: Option<u64>, out: &mut dyn Write) -> io::Result<(u64, u64)> {
    let n = jobs.unwrap_or_else(|| plan.total_jobs());
    let mut g = Generator::new(plan);
    let mut d = Digest::new();
    let mut line = String::with_capacity(160);
    for _ in 0..n {
        let j = g.next_job();
        d.push(&j);
        line.clear();
        // Hand-formatted: the field order is part of the format, and class
        // names are validated to need no escaping beyond JSON's.
        use std::fmt::Write as _;
        let _ = write!(
            line,
            "{{\"id\":{},\"class\":{},\"class_id\":{},\"work_units\":{},\"sleep_us\":{},\"crash\":{},\"intended_us\":{}}}",
            j.id,
            serde_json::to_string(&plan.classes[j.class as usize].name).unwrap_or_default(),
            j.class,
            j.work_units,
            j.sleep_us,
            j.crash,
            j.intended_us
        );
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    Ok((d.value(), d.count()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwbench::scenario::{Limits, PARITY_NAME, PARITY_TOML, parse};

    /// Golden: the format and the first jobs of the parity stream.
    #[test]
    fn golden_parity_trace() {
        let plan = parse(PARITY_TOML, PARITY_NAME, &Limits::default()).unwrap();
        let mut out = Vec::new();
        let (digest, n) = write_trace(&plan, Some(3), &mut out).unwrap();
        assert_eq!(n, 3);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            concat!(
                "{\"id\":0,\"class\":\"mixed\",\"class_id\":0,\"work_units\":70965,\"sleep_us\":0,\"crash\":false,\"intended_us\":0}\n",
                "{\"id\":1,\"class\":\"mixed\",\"class_id\":0,\"work_units\":36625,\"sleep_us\":1000,\"crash\":false,\"intended_us\":0}\n",
                "{\"id\":2,\"class\":\"mixed\",\"class_id\":0,\"work_units\":66546,\"sleep_us\":0,\"crash\":false,\"intended_us\":0}\n",
            )
        );
        // Every line is JSON, and the digest is the stream digest.
        for l in text.lines() {
            let _: serde_json::Value = serde_json::from_str(l).unwrap();
        }
        assert_eq!(digest, cwbench::generator::stream_digest(&plan, 3));
    }
}
