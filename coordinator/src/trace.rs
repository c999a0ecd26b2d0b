//! `coordinator trace`: writes the exact job stream of a scenario as JSON
//! Lines, so a harness in any language can replay it (docs/workload.md).

use std::io::{self, Write};

use serde::Serialize;

use cwbench::digest::Digest;
use cwbench::generator::Generator;
use cwbench::scenario::Plan;

/// One line of the trace (JSON Lines); the field order is part of the
/// format.
#[derive(Serialize)]
struct TraceLine<'a> {
    id: u64,
    class: &'a str,
    class_id: u32,
    work_units: u32,
    sleep_us: u32,
    crash: bool,
    intended_us: u64,
}

/// Writes the first `jobs` jobs (default: the scenario's total) and returns
/// their digest and count. `out` is best buffered.
pub fn write_trace(plan: &Plan, jobs: Option<u64>, out: &mut dyn Write) -> io::Result<(u64, u64)> {
    let n = jobs.unwrap_or_else(|| plan.total_jobs());
    let mut g = Generator::new(plan);
    let mut d = Digest::new();
    for _ in 0..n {
        let j = g.next_job();
        d.push(&j);
        let line = TraceLine {
            id: j.id,
            class: plan.classes.get(j.class as usize).map_or("", |c| &c.name),
            class_id: j.class,
            work_units: j.work_units,
            sleep_us: j.sleep_us,
            crash: j.crash,
            intended_us: j.intended_us,
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
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
