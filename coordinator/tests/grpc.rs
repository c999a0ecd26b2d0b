//! Integration: the coordinator library drives real agents over real gRPC on
//! loopback sockets.

use std::path::Path;
use std::time::{Duration, Instant};

use cwbench::generator::stream_digest;
use cwbench::proto::agent_client::AgentClient;
use cwbench::proto::run_event::Msg as Ev;
use cwbench::proto::run_request::Msg as Req;
use cwbench::proto::{self, DescribeRequest, RunEvent, RunRequest};
use cwbench::scenario::{self, Distribution, Limits, Plan};
use cwbench_coordinator::driver::Unavailable;
use cwbench_coordinator::local::{AgentConfig, LocalAgent};
use cwbench_coordinator::result::HostStatus;
use cwbench_coordinator::run::{self, Agents, RunError, RunOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn smoke() -> Plan {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/smoke.toml");
    scenario::load(&path, &Limits::default()).expect("smoke scenario")
}

fn agent() -> LocalAgent {
    LocalAgent::spawn(AgentConfig {
        threads: 2,
        ..AgentConfig::default()
    })
    .expect("agent starts")
}

fn remote(agents: &[&LocalAgent]) -> RunOptions {
    RunOptions {
        agents: Agents::Remote(agents.iter().map(|a| a.addr.to_string()).collect()),
        ..RunOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_run_balances_and_digests_match() {
    let (a, b) = (agent(), agent());
    let plan = smoke();
    let total = plan.total_jobs();
    let want = cwbench::digest::hex(stream_digest(&plan, total));
    let r = run::run(plan, remote(&[&a, &b]), None).await.expect("run");
    let hosts = &r.profiles[0].hosts;
    assert_eq!(hosts.len(), 2);
    for h in hosts {
        assert_eq!(h.status, HostStatus::Ok, "{:?}", h.error);
        let acc = &h.accounting;
        assert_eq!(acc.sent, total);
        assert!(acc.balances(), "{acc:?}");
        assert!(acc.crashed > 0, "1% crash rate over {total} jobs");
        assert_eq!(acc.restarts, acc.crashed);
        assert_eq!(h.digest_sent, want);
        assert_eq!(h.digest_received.as_deref(), Some(want.as_str()));
        assert_eq!(acc.completed + acc.crashed, total);
        // Warm-up jobs complete but are not measured.
        assert!(acc.measured_completed <= 6000 && acc.measured_completed + acc.crashed >= 6000);
        assert!(h.latency.completion.count > 0 && h.throughput > 0.0);
        assert!(h.restart_latency.count > 0);
        assert!(h.snapshots >= 1 && !h.intervals.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_mode_splits_the_stream() {
    let (a, b) = (agent(), agent());
    let mut plan = smoke();
    plan.scenario.run.distribution = Distribution::Shard;
    let total = plan.total_jobs();
    let r = run::run(plan, remote(&[&a, &b]), None).await.expect("run");
    let hosts = &r.profiles[0].hosts;
    let sent: u64 = hosts.iter().map(|h| h.accounting.sent).sum();
    assert_eq!(sent, total);
    for h in hosts {
        assert_eq!(h.status, HostStatus::Ok, "{:?}", h.error);
        assert!(h.accounting.balances());
        assert_eq!(h.digest_received.as_deref(), Some(h.digest_sent.as_str()));
    }
    assert_ne!(hosts[0].digest_sent, hosts[1].digest_sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_agent_is_named() {
    // Bind then drop: a loopback port with nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut opts = RunOptions {
        agents: Agents::Remote(vec![format!("127.0.0.1:{port}")]),
        ..RunOptions::default()
    };
    opts.connect_attempts = 2;
    let t = Instant::now();
    let e = run::run(smoke(), opts, None).await.expect_err("must fail");
    assert!(t.elapsed() < Duration::from_secs(10));
    let msg = e.to_string();
    assert!(matches!(
        e,
        RunError::Unavailable(Unavailable::Unreachable { .. })
    ));
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}

/// Opens a raw Run stream and sends `msgs`; returns the agent's events.
async fn raw_run(addr: &str, msgs: Vec<RunRequest>, keep_open: bool) -> Vec<Ev> {
    let mut c = AgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    let mut s = c.run(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut out = Vec::new();
    let hold = if keep_open { Some(tx) } else { None };
    while let Ok(Ok(Some(m))) = tokio::time::timeout(Duration::from_secs(15), s.message()).await {
        let m = m.msg.unwrap();
        let end = matches!(m, Ev::Done(_) | Ev::Error(_));
        out.push(m);
        if end {
            break;
        }
    }
    drop(hold);
    out
}

fn start(plan: &Plan, run_id: &str) -> RunRequest {
    RunRequest {
        msg: Some(Req::Start(proto::Start {
            run_id: run_id.into(),
            protocol_version: cwbench::PROTOCOL_VERSION,
            profile: Some(plan.profiles[0].to_proto()),
            plan: Some(plan.to_proto()),
        })),
    }
}

fn last_error(ev: &[Ev]) -> (i32, String) {
    match ev.last() {
        Some(Ev::Error(e)) => (e.code, e.message.clone()),
        other => panic!("expected an Error, got {other:?}"),
    }
}

async fn idle(addr: &str) -> bool {
    let mut c = AgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let info = c
        .describe(DescribeRequest {
            protocol_version: cwbench::PROTOCOL_VERSION,
        })
        .await
        .unwrap()
        .into_inner();
    info.busy_run_id.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_get_errors_and_the_agent_keeps_serving() {
    let a = agent();
    let addr = a.addr.to_string();
    let plan = smoke();
    use proto::error::Code;

    // Jobs before Start.
    let jobs = RunRequest {
        msg: Some(Req::Jobs(proto::JobBatch {
            work_units: vec![1],
            sleep_us: vec![0],
            ..Default::default()
        })),
    };
    let (code, msg) = last_error(&raw_run(&addr, vec![jobs.clone()], true).await);
    assert_eq!(code, Code::Protocol as i32);
    assert!(msg.contains("first message"), "{msg}");

    // Wrong protocol version names both.
    let mut s = start(&plan, "v");
    if let Some(Req::Start(st)) = &mut s.msg {
        st.protocol_version = 99;
    }
    let (code, msg) = last_error(&raw_run(&addr, vec![s], true).await);
    assert_eq!(code, Code::Version as i32);
    assert!(
        msg.contains("99") && msg.contains(&format!("speaks {}", cwbench::PROTOCOL_VERSION)),
        "{msg}"
    );

    // Out-of-range profile names the field and range.
    let mut s = start(&plan, "r");
    if let Some(Req::Start(st)) = &mut s.msg {
        st.profile.as_mut().unwrap().workers = 0;
    }
    let (code, msg) = last_error(&raw_run(&addr, vec![s], true).await);
    assert_eq!(code, Code::Invalid as i32);
    assert!(
        msg.contains("profile.workers = 0: must be in 1..="),
        "{msg}"
    );

    // A batch larger than the credit granted.
    let mut small = plan.clone();
    small.scenario.run.prefetch_jobs = 1024;
    let big = RunRequest {
        msg: Some(Req::Jobs(proto::JobBatch {
            work_units: vec![1; 5000],
            sleep_us: vec![0; 5000],
            ..Default::default()
        })),
    };
    let ev = raw_run(&addr, vec![start(&small, "c"), big], true).await;
    assert!(matches!(ev.first(), Some(Ev::Ready(_))));
    let (code, msg) = last_error(&ev);
    assert_eq!(code, Code::Protocol as i32);
    assert!(msg.contains("credit exceeded"), "{msg}");

    // A second Start.
    let ev = raw_run(&addr, vec![start(&plan, "s1"), start(&plan, "s2")], true).await;
    let (code, _) = last_error(&ev);
    assert_eq!(code, Code::Protocol as i32);

    // Garbage on the port, and a connection dropped half way.
    {
        use tokio::io::AsyncWriteExt;
        let mut t = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let _ = t
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage")
            .await;
        let mut t2 = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let _ = t2.write_all(&[0x50, 0x52, 0x49]).await; // a third of the HTTP/2 preface
    }

    // An oversized message (over the 16 MiB limit) is refused.
    let huge = RunRequest {
        msg: Some(Req::Jobs(proto::JobBatch {
            work_units: vec![u32::MAX; 5_000_000],
            sleep_us: vec![u32::MAX; 5_000_000],
            ..Default::default()
        })),
    };
    let mut c = AgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel(4);
    tx.send(start(&plan, "huge")).await.unwrap();
    tx.send(huge).await.unwrap();
    // Whatever the agent answers (an error on the call, on the stream, or an
    // Error event), it never takes those jobs in.
    let mut received = 0;
    let mut ended = false;
    let mut st = match c.run(ReceiverStream::new(rx)).await {
        Ok(r) => Some(r.into_inner()),
        Err(_) => {
            ended = true;
            None
        }
    };
    while let Some(s) = st.as_mut()
        && let Ok(r) = tokio::time::timeout(Duration::from_secs(10), s.message()).await
    {
        match r {
            Ok(Some(RunEvent { msg: Some(m) })) => {
                let c = match &m {
                    Ev::Snapshot(s) => s.counters,
                    Ev::Done(d) => d.totals,
                    _ => None,
                };
                received = received.max(c.map_or(0, |c| c.received));
                if matches!(m, Ev::Done(_) | Ev::Error(_)) {
                    ended = true;
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    drop(tx);
    assert!(ended, "the oversized message ends the run");
    assert_eq!(received, 0, "no job of the oversized batch was accepted");

    // Still serving: a full run afterwards succeeds.
    wait_idle(&addr).await;
    let r = run::run(plan, remote(&[&a]), None).await.expect("run");
    assert_eq!(r.profiles[0].hosts[0].status, HostStatus::Ok);
}

async fn wait_idle(addr: &str) {
    let t = Instant::now();
    while !idle(addr).await {
        assert!(t.elapsed() < Duration::from_secs(3), "agent still busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_agent_names_the_run_and_a_vanished_coordinator_frees_it() {
    let a = agent();
    let addr = a.addr.to_string();
    let plan = smoke();
    // Hold a run open (Start, no jobs, stream kept open).
    let mut c = AgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(start(&plan, "holder-run")).await.unwrap();
    let mut s = c.run(ReceiverStream::new(rx)).await.unwrap().into_inner();
    assert!(matches!(
        s.message().await.unwrap().unwrap().msg,
        Some(Ev::Ready(_))
    ));
    assert!(!idle(&addr).await);

    let e = run::run(plan.clone(), remote(&[&a]), None)
        .await
        .expect_err("busy");
    let msg = e.to_string();
    assert!(msg.contains("busy with run holder-run"), "{msg}");
    // The raw path names it too.
    let ev = raw_run(&addr, vec![start(&plan, "second")], true).await;
    let (code, msg) = last_error(&ev);
    assert_eq!(code, proto::error::Code::Busy as i32);
    assert!(msg.contains("holder-run"), "{msg}");

    // The holder vanishes: the agent is idle again within 2 s.
    drop(tx);
    drop(s);
    drop(c);
    let t = Instant::now();
    while !idle(&addr).await {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "agent still busy after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_needs_the_token_and_the_coordinator_sends_it() {
    let token = "grpc-test-token-0123";
    let a = LocalAgent::spawn(AgentConfig {
        threads: 1,
        auth: cwbench_coordinator::local::AuthInterceptor::new(Some(token)),
        ..AgentConfig::default()
    })
    .expect("agent starts");
    let addr = a.addr.to_string();
    let mut raw = AgentClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    // Describe without a token.
    let e = raw
        .describe(DescribeRequest {
            protocol_version: cwbench::PROTOCOL_VERSION,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().starts_with("missing token"), "{}", e.message());
    // Run without a token: refused before any session starts.
    let plan = smoke();
    let (tx, rx) = mpsc::channel(1);
    tx.send(start(&plan, "no-token")).await.unwrap();
    let e = raw.run(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // Run with a wrong token.
    let (tx, rx) = mpsc::channel(1);
    tx.send(start(&plan, "wrong-token")).await.unwrap();
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    let e = raw.run(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().starts_with("wrong token"), "{}", e.message());
    assert!(!e.message().contains(token));
    assert!(idle_with_token(&addr, token).await);

    // The coordinator library: no token -> Unauthenticated; right token -> a run.
    let opts = remote(&[&a]);
    match run::run(smoke(), opts.clone(), None).await {
        Err(RunError::Unavailable(Unavailable::Unauthenticated { addr: got, reason })) => {
            assert_eq!(got, addr);
            assert!(reason.contains("the token was missing"), "{reason}");
        }
        other => panic!("want Unauthenticated, got {other:?}"),
    }
    let mut opts = opts;
    opts.drive.token = Some(cwbench_coordinator::driver::BearerToken::new(token).unwrap());
    let r = run::run(smoke(), opts, None).await.expect("run");
    assert_eq!(r.profiles[0].hosts[0].status, HostStatus::Ok);
}

async fn idle_with_token(addr: &str, token: &str) -> bool {
    let mut c = AgentClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let mut req = tonic::Request::new(DescribeRequest {
        protocol_version: cwbench::PROTOCOL_VERSION,
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    c.describe(req)
        .await
        .expect("describe")
        .into_inner()
        .busy_run_id
        .is_empty()
}
