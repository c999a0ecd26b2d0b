//! Golden intended start times of the open loop (docs/workload.md,
//! "Intended time"): the gap between job i and job i+1 is drawn from job i's
//! own arrival word `w[6]` at job i's rate. An implementation that takes job
//! i+1's word or rate gets other values.

use cwbench::arrival::intended_us;
use cwbench::scenario::Process;

#[test]
fn a_step_changes_the_gap_after_its_first_job() {
    // Rate 1000/s for jobs 0..=2, 10/s from job 3: the gap 2 -> 3 is still
    // job 2's 1 ms; the gap 3 -> 4 is job 3's 100 ms.
    let rates = [(1000.0, 0), (10.0, 3)];
    let at: Vec<u64> = (0..6)
        .map(|id| intended_us(42, &rates, Process::Constant, id))
        .collect();
    assert_eq!(at, [0, 1000, 2000, 3000, 103_000, 203_000]);
}

#[test]
fn poisson_gaps_come_from_each_jobs_own_word() {
    let rates = [(1000.0, 0), (10.0, 3)];
    let at: Vec<u64> = (0..6)
        .map(|id| intended_us(42, &rates, Process::Poisson, id))
        .collect();
    // Gap 3 -> 4 is 81 ms: job 3's word at job 3's rate (10/s).
    assert_eq!(at, [0, 173, 3646, 5939, 87_297, 94_272]);
}
