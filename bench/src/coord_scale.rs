//! The coordinator at fleet scale: hundreds of hosts' snapshots replayed into its merge code and reports, no network (docs/performance.md).

use super::*;

/// Synthetic interval histograms shaped like one second of the parity
/// scenario on this machine (README: ~22k jobs/s, completion p50 ~14 ms,
/// max ~30 ms): 22,000 jobs, completion 1–30 ms, queue wait ~60% of it,
/// service ~40%, and a timer overshoot of 1.0–1.3 ms for the 60% that slept.
/// Different per variant.
fn synthetic_class(variant: u64) -> proto::ClassHistograms {
    let mut hs = [new_hist(), new_hist(), new_hist(), new_hist()];
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (variant + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..22_000 {
        let u = (next() + next() + next()) / 3.0;
        let completion = 1000 + (u * 29_000.0) as u64;
        let wait = (completion as f64 * (0.5 + 0.2 * next())) as u64;
        record(&mut hs[0], completion);
        record(&mut hs[1], wait);
        record(&mut hs[2], completion - wait);
        if next() < 0.6 {
            record(&mut hs[3], 1000 + (300.0 * next()) as u64);
        }
    }
    proto::ClassHistograms {
        class_id: 0,
        completion: encode(&hs[0]),
        queue_wait: encode(&hs[1]),
        service: encode(&hs[2]),
        sleep_overshoot: encode(&hs[3]),
    }
}

/// One host's snapshots and Done, fed to the coordinator's own merge code
/// (no network): `snapshots` one-second snapshots of class variant
/// `a + seq` mod 8.
fn replay_host(
    plan: &Arc<Plan>,
    a: usize,
    snapshots: u64,
    variants: &[proto::ClassHistograms],
    lateness: &[u8],
) -> Result<cwbench_coordinator::driver::HostOutcome> {
    let run = HostRun {
        addr: format!("10.0.{}.{}:7070", a / 250, a % 250),
        label: format!("agent-{a}"),
        run_id: "bench".into(),
        plan: plan.clone(),
        profile: plan.profiles[0].clone(),
        share: Share { index: 0, of: 1 },
        hlog: None,
        job_log: None,
        interrupt: Default::default(),
        ws: None,
        slot: Default::default(),
    };
    let mut rep = HostReplay::new(&run);
    for seq in 0..snapshots {
        let done = (seq + 1) * 20_000;
        let s = proto::Snapshot {
            seq,
            elapsed_us: (seq + 1) * 1_000_000,
            interval_us: 1_000_000,
            counters: Some(proto::Counters {
                received: done + 1000,
                completed: done,
                measured_completed: done,
                ..Default::default()
            }),
            gauges: Some(proto::Gauges {
                rss_bytes: 20 << 20,
                cpu_user_us: seq * 900_000,
                ..Default::default()
            }),
            classes: vec![variants[((seq + a as u64) % 8) as usize].clone()],
            lateness: lateness.to_vec(),
        };
        rep.snapshot(&s);
    }
    let total = snapshots * 20_000;
    let d = proto::Done {
        totals: Some(proto::Counters {
            received: total,
            completed: total,
            measured_completed: total,
            ..Default::default()
        }),
        classes: vec![variants[a % 8].clone()],
        digest: 0,
        measured_window_us: snapshots * 1_000_000,
        snapshots,
        elapsed_us: snapshots * 1_000_000,
        lateness: lateness.to_vec(),
        ..Default::default()
    };
    rep.done(&d).map_err(anyhow::Error::msg)?;
    Ok(rep.finish(&run))
}

pub(crate) fn coord_scale(agents: usize, snapshots: u64) -> Result<()> {
    println!(
        "\n## coord-scale: {agents} in-process hosts x {snapshots} one-second snapshots, load {}",
        load_avg()
    );
    let plan = Arc::new(parity()?);
    let variants: Vec<proto::ClassHistograms> = (0..8).map(synthetic_class).collect();
    let lateness = {
        let mut h = new_hist();
        for v in 0..2000u64 {
            record(&mut h, 1000 + v % 300);
        }
        encode(&h)
    };
    // The coordinator's parallelism exactly: its runtime has this many
    // worker threads and each host is its own task, so hosts are replayed
    // on that many threads, each taking every n-th host.
    let threads = cwbench_coordinator::driver::runtime_threads();
    println!(
        "  {threads} merge thread(s): the coordinator runtime's worker threads (cores, at most 8)"
    );
    let replay = |a: usize| replay_host(&plan, a, snapshots, &variants, &lateness);
    let rss0 = cwbench::sysinfo::rss_bytes();
    let t0 = Instant::now();
    let mut hosts: Vec<Option<cwbench_coordinator::driver::HostOutcome>> =
        (0..agents).map(|_| None).collect();
    std::thread::scope(|scope| -> Result<()> {
        let shards: Vec<_> = (0..threads)
            .map(|t| {
                let replay = &replay;
                scope.spawn(move || {
                    (t..agents)
                        .step_by(threads)
                        .map(|a| Ok((a, replay(a)?)))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        for shard in shards {
            let done = shard
                .join()
                .map_err(|_| anyhow::anyhow!("a replay thread panicked"))??;
            for (a, h) in done {
                hosts[a] = Some(h);
            }
        }
        Ok(())
    })?;
    // The groups merge the hosts' histograms, as `run` does.
    let mut groups = Grouper::new(ThroughputBasis::PerHostMean);
    let hosts: Vec<_> = hosts
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, h)| {
            groups.add(i, &h.result, &h.completion);
            h.result
        })
        .collect();
    let groups = groups.finish(&hosts);
    let merged = t0.elapsed();
    let result = RunResult {
        schema_version: SCHEMA_VERSION,
        run_id: "bench".into(),
        cwbench_version: cwbench::VERSION.into(),
        started_at: cwbench_coordinator::run::rfc3339_now(),
        scenario: plan.scenario.clone(),
        scenario_source: plan.source.clone(),
        sizing: Some(plan.sizing),
        profiles: vec![ProfileResult {
            label: plan.profiles[0].label(),
            profile: plan.profiles[0].clone(),
            websocket: None,
            hosts,
            groups,
        }],
        scaling: Vec::new(),
        warnings: Vec::new(),
        interrupted: None,
    };
    let dir = std::env::temp_dir().join(format!("cwbench-coord-scale-{}", std::process::id()));
    cwbench_coordinator::output::write_all(&result, &dir)?;
    let total = t0.elapsed();
    let size: u64 = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "  merge {:.2} s, merge + reports {:.2} s; peak RSS {:.0} MiB (before {:.0} MiB); reports {:.1} MiB",
        merged.as_secs_f64(),
        total.as_secs_f64(),
        peak_rss() as f64 / (1 << 20) as f64,
        rss0 as f64 / (1 << 20) as f64,
        size as f64 / (1 << 20) as f64
    );
    Ok(())
}
