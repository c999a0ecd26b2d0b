//! The event stream's bytes for a known run, replay from a Last-Event-ID,
//! the history's bound, and `--dashboard`'s address rules.

use std::sync::Arc;

use cwbench::proto;
use cwbench::scenario;

use super::events::{self, History, Kind};
use super::*;
use crate::driver::{HostReplay, HostRun, Share};

fn plan() -> Arc<scenario::Plan> {
    let limits = scenario::Limits::default();
    Arc::new(scenario::parse(scenario::PARITY_TOML, scenario::PARITY_NAME, &limits).unwrap())
}

/// Snapshot `seq` of a host that completes `rate` jobs a 200 ms interval
/// and crashes one job in snapshot 1.
fn snap(seq: u64, rate: u64) -> proto::Snapshot {
    let done = (seq + 1) * rate;
    proto::Snapshot {
        seq,
        elapsed_us: (seq + 1) * 200_000,
        interval_us: 200_000,
        counters: Some(proto::Counters {
            received: done + 10,
            completed: done,
            measured_completed: done,
            crashed: u64::from(seq >= 1),
            ..Default::default()
        }),
        gauges: Some(proto::Gauges {
            queue_depth: 3 + seq,
            in_flight: 2,
            ..Default::default()
        }),
        classes: Vec::new(),
        lateness: Vec::new(),
    }
}

/// Two hosts, two snapshots each, then each host's end and the run's end,
/// through the dashboard's observer as the run calls it.
fn known_run() -> Arc<Shared> {
    let shared = Arc::new(Shared::new(None));
    let live = Live(shared.clone());
    let plan = plan();
    let hosts = ["a".to_string(), "b".to_string()];
    live.run_started(&RunStart {
        run_id: "r1",
        plan: &plan,
        hosts: &hosts,
    });
    live.profile_started(0);
    let mut replays = Vec::new();
    for (h, label) in hosts.iter().enumerate() {
        let run = HostRun {
            addr: format!("127.0.0.1:{}", 7000 + h),
            label: label.clone(),
            run_id: "r1-p0".into(),
            plan: plan.clone(),
            profile: plan.profiles[0].clone(),
            share: Share { index: 0, of: 1 },
            hlog: None,
            job_log: None,
            interrupt: Default::default(),
            ws: None,
            slot: Slot {
                profile: 0,
                host: h,
            },
        };
        replays.push((run.clone(), HostReplay::new(&run)));
    }
    // Snapshots interleaved as they would arrive; the points are what the
    // coordinator keeps of them (result.json's intervals).
    for seq in 0..2 {
        for (h, (_, rep)) in replays.iter_mut().enumerate() {
            let s = snap(seq, 100 * (h as u64 + 1));
            rep.snapshot(&s);
        }
    }
    let outcomes: Vec<_> = replays
        .into_iter()
        .map(|(run, rep)| (run.clone(), rep.finish(&run)))
        .collect();
    for seq in 0..2 {
        for (h, (run, out)) in outcomes.iter().enumerate() {
            let s = snap(seq, 100 * (h as u64 + 1));
            live.snapshot(
                run.slot,
                &run.label,
                &s,
                &out.result.intervals[seq as usize],
            );
        }
    }
    for (run, out) in &outcomes {
        live.host_finished(run.slot, &out.result);
    }
    live.run_finished(&RunEnd {
        result: None,
        dir: Some(std::path::Path::new("results/r1")),
        error: None,
    });
    shared
}

fn expected() -> Vec<String> {
    let p = plan();
    let snapshot = |id: u64, h: u64, seq: u64| {
        let rate = 100 * (h + 1);
        format!(
            "id: {id}\nevent: snapshot\ndata: {{\"profile\":0,\"host\":{h},\"seq\":{seq},\"t_s\":{},\"jobs_per_s\":{}.0,\"p50_us\":0,\"p99_us\":0,\"lateness_p99_us\":0,\"queue_depth\":{},\"in_flight\":2,\"done\":{},\"crashed\":{},\"timed_out\":0,\"shed\":0,\"cancelled\":0}}\n\n",
            if seq == 0 { "0.2" } else { "0.4" },
            rate * 5,
            3 + seq,
            (seq + 1) * rate + u64::from(seq >= 1),
            u64::from(seq >= 1),
        )
    };
    // Throughput without a Done: measured jobs over the snapshots' 0.4 s.
    let host = |id: u64, h: u64, tput: &str, shown: &str| {
        format!(
            "id: {id}\nevent: host\ndata: {{\"profile\":0,\"host\":{h},\"status\":\"ok\",\"error\":null,\"throughput\":{tput},\"p50_us\":0,\"p99_us\":0,\"lateness_p99_us\":0,\"completed\":{},\"crashed\":1,\"timed_out\":0,\"shed\":0,\"cancelled\":0,\"faults\":0,\"marks\":[],\"shown\":{{\"jobs_per_s\":\"{shown}\",\"p50\":\"0µs\",\"p99\":\"0µs\",\"lateness_p99\":\"0µs\"}}}}\n\n",
            200 * (h + 1)
        )
    };
    vec![
        format!(
            "id: 1\nevent: run\ndata: {{\"run_id\":\"r1\",\"scenario\":\"{}\",\"profiles\":[\"{}\"],\"hosts\":[\"a\",\"b\"],\"snapshot_interval_ms\":{},\"version\":\"{}\"}}\n\n",
            p.scenario.name,
            p.profiles[0].label(),
            p.scenario.run.snapshot_interval_ms,
            cwbench::VERSION
        ),
        "id: 2\nevent: profile\ndata: {\"profile\":0}\n\n".to_string(),
        snapshot(3, 0, 0),
        snapshot(4, 1, 0),
        snapshot(5, 0, 1),
        snapshot(6, 1, 1),
        host(7, 0, "500.0", "500"),
        host(8, 1, "1000.0", "1000"),
        "id: 9\nevent: end\ndata: {\"report\":\"report.html\",\"dir\":\"results/r1\",\"interrupted\":null,\"error\":null,\"warnings\":[]}\n\n".to_string(),
    ]
}

/// (a) The exact bytes a browser receives for a known sequence: from the
/// start, and replayed after a Last-Event-ID.
#[test]
fn the_event_stream_is_exactly_this() {
    let shared = known_run();
    let h = shared.history.lock().unwrap();
    let want = expected();
    let (text, sent) = events::opening(&h, None);
    assert_eq!(text, format!("retry: 1000\n\n{}", want.concat()));
    assert_eq!(sent.len(), 9);
    assert_eq!(h.end(), Some(9));

    // A browser that saw event 4 reconnects: 5..=9, nothing before.
    let (text, sent) = events::opening(&h, events::parse_last_id(Some("4")));
    assert_eq!(text, format!("retry: 1000\n\n{}", want[4..].concat()));
    assert_eq!(sent.first().map(|e| e.id), Some(5));
    // One that has everything gets nothing more (the server answers 204).
    assert_eq!(events::opening(&h, Some(9)).0, "retry: 1000\n\n");
    // An id this history never gave (another run's page), or garbage:
    // everything.
    assert_eq!(h.since(Some(1000)).len(), 9);
    assert_eq!(events::parse_last_id(Some("x7")), None);
    assert_eq!(events::parse_last_id(Some(" 7 ")), Some(7));
}

/// The history keeps the pinned events, the last `cap` snapshots and each
/// running host's latest, however long the run.
#[test]
fn the_history_is_bounded() {
    let mut h = History::new(4);
    h.push(Kind::Run, Slot::default(), "{}".into());
    h.push(Kind::Profile, Slot::default(), "{}".into());
    let (a, b) = (
        Slot {
            profile: 0,
            host: 0,
        },
        Slot {
            profile: 0,
            host: 1,
        },
    );
    // Host b sends one snapshot, then only host a, for a long time.
    let b_id = h.push(Kind::Snapshot, b, "b".into()).id;
    for i in 0..10_000 {
        h.push(Kind::Snapshot, a, format!("a{i}"));
    }
    // Run + profile + 4 recent (a's) + b's latest.
    assert_eq!(h.len(), 7);
    let kept: Vec<String> = h.since(None).into_iter().map(|e| e.data).collect();
    assert_eq!(kept, ["{}", "{}", "b", "a9996", "a9997", "a9998", "a9999"]);
    // b's end supersedes its latest snapshot (outside the window).
    h.push(Kind::Host, b, "b done".into());
    assert!(h.since(None).iter().all(|e| e.id != b_id));
    assert_eq!(h.len(), 7);
    for _ in 0..10 {
        h.push(Kind::Snapshot, a, "a".into());
    }
    h.push(Kind::Host, a, "a done".into());
    h.push(Kind::End, Slot::default(), "{}".into());
    // Pinned: run, profile, two host events, end; and the 4 recent ones.
    assert_eq!(h.len(), 9);
    assert_eq!(h.since(None).last().map(|e| e.kind), Some(Kind::End));
}

#[test]
fn dashboard_addresses() {
    let b = parse_bind("127.0.0.1:0", None).unwrap();
    assert_eq!((b.addr.to_string(), b.token), ("127.0.0.1:0".into(), None));
    let b = parse_bind("localhost:8080", Some("t")).unwrap();
    // Loopback never asks for the token.
    assert_eq!(
        (b.addr.to_string(), b.token),
        ("127.0.0.1:8080".into(), None)
    );
    assert!(parse_bind("[::1]:9", None).is_ok());
    let b = parse_bind("0.0.0.0:8080", Some("t")).unwrap();
    assert_eq!(b.token.as_deref(), Some("t"));
    for bad in ["", "8080", "127.0.0.1", "example.com:80", "127.0.0.1:99999"] {
        let e = parse_bind(bad, None).unwrap_err().to_string();
        assert!(
            e.starts_with("--dashboard ") && e.contains("IP:PORT"),
            "{e}"
        );
    }
    let e = parse_bind("0.0.0.0:8080", None).unwrap_err().to_string();
    assert!(
        e.contains("--dashboard 0.0.0.0:8080") && e.contains("CWBENCH_TOKEN"),
        "{e}"
    );
}

/// 256 hosts, ten minutes of one-second snapshots: the history holds the
/// last `RECENT_SNAPSHOTS` (16 intervals a host), not 153,600.
#[test]
fn a_fleet_of_256_hosts_keeps_a_fixed_history() {
    let mut h = History::default();
    h.push(Kind::Run, Slot::default(), "{}".into());
    h.push(Kind::Profile, Slot::default(), "{}".into());
    for _ in 0..600 {
        for host in 0..256 {
            h.push(Kind::Snapshot, Slot { profile: 0, host }, String::new());
        }
    }
    assert_eq!(h.len(), 2 + events::RECENT_SNAPSHOTS);
    for host in 0..256 {
        h.push(Kind::Host, Slot { profile: 0, host }, String::new());
    }
    h.push(Kind::End, Slot::default(), "{}".into());
    assert_eq!(h.len(), 2 + events::RECENT_SNAPSHOTS + 256 + 1);
}
