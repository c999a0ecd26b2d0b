//! The task server over real sockets: a tokio-tungstenite client on 127.0.0.1.

use std::time::Instant;

use cwbench::spec::{Compute, Flavor};
use cwbench::wsproto::TaskSet;
use tokio_tungstenite::MaybeTlsStream;

use super::*;
use crate::recorder::Aggregator;
use crate::span::{End as SpanEnd, Warmup};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn config(dispatch: Dispatch) -> Config {
    Config {
        runtime: Flavor::MultiThread,
        threads: 2,
        workers: 1,
        queue_bound: 16,
        producers: 1,
        shed: false,
        open: false,
        dispatch,
        compute: Compute::Inline,
        class_compute: Vec::new(),
        yield_every: 1,
        compute_threads: 0,
        warmup: Warmup::Jobs(0),
        end: SpanEnd::Fed,
        classes: 2,
        credit_chunk: 1024,
        recycle_jobs: 0,
        max_restarts: 0,
        restart_window: Duration::from_secs(1),
        backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        probe_interval: Duration::from_millis(5),
        job_timeout: None,
        cpus: None,
        job_log: true,
        kill_jobs: std::collections::HashSet::new(),
        remote: None,
        serve: None,
    }
}

fn ws(in_flight: u32, max_message: u32) -> proto::WebSocket {
    proto::WebSocket {
        role: proto::web_socket::Role::Server as i32,
        in_flight,
        max_message,
        ..Default::default()
    }
}

fn task(id: u64, sleep_ms: u32) -> Job {
    Job {
        id,
        sleep_us: sleep_ms * 1000,
        work_units: 1_000,
        ..Job::default()
    }
}

async fn connect(port: u16) -> Client {
    let url = format!("ws://127.0.0.1:{port}/");
    let (c, _) = timeout(
        Duration::from_secs(3),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("connect timed out")
    .expect("connect");
    c
}

async fn send(c: &mut Client, job: &Job, form: Form) {
    let m = match form {
        Form::Binary => {
            let mut b = Vec::new();
            wsproto::encode_task(job, &mut b);
            Message::Binary(b.into())
        }
        Form::Text => Message::text(wsproto::task_json(job)),
    };
    c.send(m).await.expect("send");
}

/// The next answer, in the form it came in; or the close frame's code and
/// reason (code 0: the stream ended without one).
async fn recv(c: &mut Client) -> Result<(Response, Form), (u16, String)> {
    loop {
        let m = timeout(Duration::from_secs(4), c.next())
            .await
            .expect("no answer within 4 s");
        match m {
            Some(Ok(Message::Binary(b))) => {
                return Ok((wsproto::decode_response(&b).unwrap(), Form::Binary));
            }
            Some(Ok(Message::Text(t))) => {
                return Ok((wsproto::response_from_json(&t).unwrap(), Form::Text));
            }
            Some(Ok(Message::Close(Some(f)))) => return Err((f.code.into(), f.reason.to_string())),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                return Err((0, String::new()));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Ends the run (end of jobs); its outcome and final counters.
async fn finish(wl: Workload) -> (Outcome, proto::Done) {
    finish_with(wl, Aggregator::new(2, crate::recovery::Params::default())).await
}

/// `finish` with the aggregator that took the run's snapshots.
async fn finish_with(mut wl: Workload, mut agg: Aggregator) -> (Outcome, proto::Done) {
    wl.end_of_jobs();
    let finished = std::mem::replace(&mut wl.finished, oneshot::channel().1);
    let outcome = timeout(Duration::from_secs(5), finished)
        .await
        .expect("the server did not finish within 5 s")
        .expect("the server thread died");
    (outcome, agg.done(&wl.recorder, 0))
}

fn balanced(c: &proto::Counters) -> bool {
    c.received == c.completed + c.crashed + c.timed_out + c.refused + c.cancelled
}

/// Two 200 ms tasks on one connection: serial and spawn-await answer the
/// second a task's length after the first; task-per-job runs them
/// together and answers both at about the same time.
#[tokio::test]
async fn the_three_handler_architectures_on_one_connection() {
    for (dispatch, together) in [
        (Dispatch::Serial, false),
        (Dispatch::SpawnAwait, false),
        (Dispatch::TaskPerJob, true),
    ] {
        let (wl, port) = start(config(dispatch), &ws(4, 0)).unwrap();
        let mut c = connect(port).await;
        send(&mut c, &task(1, 200), Form::Binary).await;
        send(&mut c, &task(2, 200), Form::Binary).await;
        let (a, _) = recv(&mut c).await.unwrap();
        let first = Instant::now();
        let (b, _) = recv(&mut c).await.unwrap();
        let gap = first.elapsed();
        assert_eq!(
            (a.outcome, b.outcome),
            (Answer::Completed, Answer::Completed)
        );
        if together {
            assert!(
                gap < Duration::from_millis(120),
                "{dispatch:?}: {gap:?} apart"
            );
            assert!(b.queue_wait_ns < 50_000_000, "{dispatch:?}: {b:?}");
        } else {
            assert_eq!((a.id, b.id), (1, 2), "{dispatch:?}");
            assert!(
                gap >= Duration::from_millis(150),
                "{dispatch:?}: {gap:?} apart"
            );
        }
        for r in [a, b] {
            assert!(r.service_ns >= 200_000_000, "{dispatch:?}: {r:?}");
        }
        drop(c);
        let (outcome, done) = finish(wl).await;
        assert_eq!(outcome, Outcome::Finished);
        let t = done.totals.unwrap();
        assert_eq!((t.received, t.completed), (2, 2), "{dispatch:?}: {t:?}");
    }
}

/// An injected crash is answered Crashed and the connection keeps
/// working; answers come in the form their task came in.
#[tokio::test]
async fn a_crash_is_answered_and_the_connection_lives_on_in_both_forms() {
    for dispatch in [Dispatch::Serial, Dispatch::SpawnAwait, Dispatch::TaskPerJob] {
        let (wl, port) = start(config(dispatch), &ws(1, 0)).unwrap();
        let mut c = connect(port).await;
        let crash = Job {
            crash: true,
            ..task(1, 0)
        };
        send(&mut c, &crash, Form::Text).await;
        let (r, form) = recv(&mut c).await.unwrap();
        assert_eq!((r.id, r.outcome, form), (1, Answer::Crashed, Form::Text));
        send(&mut c, &task(2, 1), Form::Binary).await;
        let (r, form) = recv(&mut c).await.unwrap();
        assert_eq!(
            (r.id, r.outcome, form),
            (2, Answer::Completed, Form::Binary)
        );
        send(&mut c, &task(3, 0), Form::Text).await;
        let (r, form) = recv(&mut c).await.unwrap();
        assert_eq!((r.id, r.outcome, form), (3, Answer::Completed, Form::Text));
        c.close(None).await.unwrap();
        let (outcome, done) = finish(wl).await;
        assert_eq!(outcome, Outcome::Finished);
        let t = done.totals.unwrap();
        assert_eq!((t.received, t.completed, t.crashed), (3, 2, 1), "{t:?}");
        let restarts = u64::from(dispatch != Dispatch::TaskPerJob);
        assert_eq!(t.restarts, restarts, "{dispatch:?}");
        assert!(balanced(&t), "{t:?}");
    }
}

/// Every task sent over two connections is answered, and the server's
/// accounting and task set after end of jobs are what the client sent.
#[tokio::test]
async fn accounting_and_task_set_match_what_the_clients_sent() {
    let (wl, port) = start(config(Dispatch::TaskPerJob), &ws(8, 0)).unwrap();
    let mut sent = TaskSet::default();
    let mut conns = vec![connect(port).await, connect(port).await];
    for round in 0..10u64 {
        for (k, c) in conns.iter_mut().enumerate() {
            let ids: Vec<u64> = (0..8).map(|i| round * 100 + k as u64 * 10 + i).collect();
            for &id in &ids {
                let job = Job {
                    class: (id % 2) as u32,
                    ..task(id, (id % 3) as u32)
                };
                sent.push(&job);
                let form = if id % 2 == 0 {
                    Form::Binary
                } else {
                    Form::Text
                };
                send(c, &job, form).await;
            }
            let mut got: Vec<u64> = Vec::new();
            for _ in &ids {
                let (r, form) = recv(c).await.unwrap();
                assert_eq!(form == Form::Binary, r.id % 2 == 0, "{r:?}");
                assert_eq!(r.outcome, Answer::Completed);
                got.push(r.id);
            }
            got.sort_unstable();
            assert_eq!(got, ids);
        }
    }
    // A snapshot carries the server's gauges.
    let mut agg = Aggregator::new(2, crate::recovery::Params::default());
    let g = agg.snapshot(&wl.recorder, wl.gauges()).gauges.unwrap();
    assert_eq!((g.connections, g.runtime_workers), (2, 2), "{g:?}");
    assert_eq!((g.in_flight, g.prefetch_depth), (0, 0), "{g:?}");
    for mut c in conns {
        c.close(None).await.unwrap();
    }
    let (outcome, done) = finish_with(wl, agg).await;
    assert_eq!(outcome, Outcome::Finished);
    let t = done.totals.unwrap();
    assert_eq!((t.received, t.completed), (160, 160), "{t:?}");
    assert!(balanced(&t), "{t:?}");
    assert_eq!((done.task_set, done.task_count), (sent.sum, sent.count));
    assert_eq!(done.classes.len(), 2, "queue-wait and service per class");
}

/// End of jobs with a task in flight: it finishes and is answered (a task
/// read meanwhile is refused), then the connection is closed with 1001.
#[tokio::test]
async fn end_of_jobs_answers_what_is_in_flight_then_closes_with_1001() {
    let (mut wl, port) = start(config(Dispatch::TaskPerJob), &ws(4, 0)).unwrap();
    let mut c = connect(port).await;
    send(&mut c, &task(7, 300), Form::Binary).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    wl.end_of_jobs();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Read while the server shuts down: refused, and answered so.
    send(&mut c, &task(8, 0), Form::Text).await;
    let (r, form) = recv(&mut c).await.unwrap();
    assert_eq!((r.id, r.outcome, form), (8, Answer::Refused, Form::Text));
    let (r, _) = recv(&mut c).await.unwrap();
    assert_eq!((r.id, r.outcome), (7, Answer::Completed));
    let (code, why) = recv(&mut c).await.unwrap_err();
    assert_eq!(code, 1001, "{why}");
    let (outcome, done) = finish(wl).await;
    assert_eq!(outcome, Outcome::Finished);
    let t = done.totals.unwrap();
    assert_eq!((t.received, t.completed, t.refused), (2, 1, 1), "{t:?}");
    assert!(balanced(&t), "{t:?}");
    assert_eq!(done.task_count, 2);
}

/// A cancel stops at once: the task in flight is counted cancelled.
#[tokio::test]
async fn a_cancel_counts_the_task_in_flight_cancelled() {
    for dispatch in [Dispatch::Serial, Dispatch::TaskPerJob] {
        let (mut wl, port) = start(config(dispatch), &ws(4, 0)).unwrap();
        let mut c = connect(port).await;
        send(&mut c, &task(1, 3_000), Form::Binary).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = Instant::now();
        wl.cancel();
        let finished = std::mem::replace(&mut wl.finished, oneshot::channel().1);
        let outcome = timeout(Duration::from_millis(1500), finished).await;
        assert_eq!(outcome.unwrap().unwrap(), Outcome::Finished, "{dispatch:?}");
        assert!(t0.elapsed() < Duration::from_millis(1500));
        let mut agg = Aggregator::new(2, crate::recovery::Params::default());
        let t = agg.done(&wl.recorder, 0).totals.unwrap();
        assert_eq!((t.received, t.cancelled), (1, 1), "{dispatch:?}: {t:?}");
    }
}

#[test]
fn only_the_three_handler_architectures_serve() {
    for d in [Dispatch::Pool, Dispatch::Mailbox] {
        let e = start(config(d), &ws(1, 0)).unwrap_err();
        assert!(e.contains("profile.dispatch"), "{e}");
        assert!(e.contains("spawn-await, serial or task-per-job"), "{e}");
    }
    let e = start(config(Dispatch::TaskPerJob), &ws(0, 0)).unwrap_err();
    assert!(e.contains("websocket.in_flight"), "{e}");
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(4);
    while !f() {
        assert!(Instant::now() < deadline, "not within 4 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A task answered on `c`: the connection still serves.
async fn still_served(c: &mut Client, id: u64) {
    send(c, &task(id, 0), Form::Binary).await;
    let (r, _) = recv(c).await.unwrap();
    assert_eq!((r.id, r.outcome), (id, Answer::Completed));
}

/// Each hostile message closes its own connection with the code that
/// names what was wrong, and a reason; another connection keeps being
/// answered, and nothing it sent is lost.
#[tokio::test]
async fn hostile_messages_close_only_their_connection_with_their_code() {
    let (wl, port) = start(config(Dispatch::TaskPerJob), &ws(4, 1024)).unwrap();
    let mut good = connect(port).await;
    let mut short = Vec::new();
    wsproto::encode_task(&task(1, 0), &mut short);
    short.truncate(10);
    let bad_class = Job {
        class: 9,
        ..task(1, 0)
    };
    let cases: Vec<(Message, u16, &str)> = vec![
        (Message::Binary(short.into()), 1007, "expected 30"),
        (
            Message::Binary(vec![9u8; 30].into()),
            1003,
            "unknown frame type",
        ),
        (
            Message::text(
                r#"{"id":1,"class":0,"work_units":0,"sleep_us":0,"crash":false,"intended_us":0,"priority":1}"#,
            ),
            1008,
            "priority",
        ),
        (Message::text("{not json"), 1007, "invalid task"),
        (Message::text(wsproto::task_json(&bad_class)), 1007, "class"),
        (Message::Binary(vec![1u8; 2_000].into()), 1009, "too big"),
    ];
    let n = cases.len() as u64;
    for (k, (m, code, reason)) in cases.into_iter().enumerate() {
        let mut c = connect(port).await;
        still_served(&mut c, 100 + k as u64).await;
        c.send(m).await.unwrap();
        let (got, why) = recv(&mut c).await.unwrap_err();
        assert_eq!(got, code, "{reason}: closed with {got} ({why})");
        assert!(why.contains(reason), "{code}: {why:?}");
        still_served(&mut good, k as u64).await;
    }
    until("every hostile connection closed", || {
        wl.recorder.ws.connections.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(wl.recorder.ws.dropped.load(Ordering::Relaxed), n);
    good.close(None).await.unwrap();
    let (outcome, done) = finish(wl).await;
    assert_eq!(outcome, Outcome::Finished);
    let t = done.totals.unwrap();
    assert_eq!((t.received, t.completed), (2 * n, 2 * n), "{t:?}");
}

/// A client that never reads its answers: once none can be written for
/// the write deadline, the server closes that connection (the tasks it
/// read still count); another connection keeps being answered.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_and_others_are_served() {
    let (wl, port) = start(config(Dispatch::TaskPerJob), &ws(64, 0)).unwrap();
    let mut good = connect(port).await;
    // A small receive window, so the server's writes back up soon.
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let url = format!("ws://127.0.0.1:{port}/");
    let (mut deaf, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    let writer = tokio::spawn(async move {
        let mut b = Vec::new();
        for id in 0..1_000_000u64 {
            b.clear();
            wsproto::encode_task(&task(id, 0), &mut b);
            let sent = timeout(
                Duration::from_secs(3),
                deaf.send(Message::Binary(b.clone().into())),
            );
            if !matches!(sent.await, Ok(Ok(()))) {
                break;
            }
        }
        deaf
    });
    let dropped = || wl.recorder.ws.dropped.load(Ordering::Relaxed);
    until("the deaf client dropped", || dropped() == 1).await;
    still_served(&mut good, 1 << 40).await;
    drop(writer.await.unwrap());
    good.close(None).await.unwrap();
    let (outcome, done) = finish(wl).await;
    assert_eq!(outcome, Outcome::Finished);
    let t = done.totals.unwrap();
    assert!(t.received > 100, "{t:?}");
    assert!(balanced(&t), "{t:?}");
}

/// A client that vanishes mid-task: its connection is counted lost, its
/// task still runs to the end and is counted.
#[tokio::test]
async fn a_client_that_vanishes_mid_task_loses_nothing() {
    for dispatch in [Dispatch::Serial, Dispatch::TaskPerJob] {
        let (wl, port) = start(config(dispatch), &ws(4, 0)).unwrap();
        let mut c = connect(port).await;
        send(&mut c, &task(1, 300), Form::Binary).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // No close handshake: the socket just goes.
        drop(c);
        let rec = wl.recorder.clone();
        until("the connection counted lost", || {
            rec.ws.dropped.load(Ordering::Relaxed) == 1
        })
        .await;
        until("its task done", || rec.in_flight() == 0).await;
        let (outcome, done) = finish(wl).await;
        assert_eq!(outcome, Outcome::Finished);
        let t = done.totals.unwrap();
        assert_eq!((t.received, t.completed), (1, 1), "{dispatch:?}: {t:?}");
    }
}

/// With one task in flight per connection, task-per-job stops reading: the
/// second task starts only once the first has been answered.
#[tokio::test]
async fn a_full_connection_is_not_read_until_an_answer_goes_out() {
    let (wl, port) = start(config(Dispatch::TaskPerJob), &ws(1, 0)).unwrap();
    let mut c = connect(port).await;
    send(&mut c, &task(1, 200), Form::Binary).await;
    send(&mut c, &task(2, 200), Form::Binary).await;
    let (a, _) = recv(&mut c).await.unwrap();
    let first = Instant::now();
    let (b, _) = recv(&mut c).await.unwrap();
    assert_eq!((a.id, b.id), (1, 2));
    assert!(first.elapsed() >= Duration::from_millis(150));
    let log = wl.recorder.take_job_log().unwrap();
    let at = |id: u64| log.ids.iter().position(|&i| i == id).unwrap();
    let (one, two) = (at(1), at(2));
    assert!(
        log.start_us[two] >= log.end_us[one],
        "task 2 started at {} µs, task 1 ended at {} µs",
        log.start_us[two],
        log.end_us[one]
    );
    c.close(None).await.unwrap();
    assert_eq!(finish(wl).await.0, Outcome::Finished);
}

/// A task past the job timeout is answered TimedOut; pings are answered
/// between tasks.
#[tokio::test]
async fn a_task_past_the_job_timeout_is_answered_timed_out_and_pings_are_answered() {
    let mut cfg = config(Dispatch::SpawnAwait);
    cfg.job_timeout = Some(Duration::from_millis(100));
    let (wl, port) = start(cfg, &ws(1, 0)).unwrap();
    let mut c = connect(port).await;
    c.send(Message::Ping(vec![7, 7].into())).await.unwrap();
    let pong = timeout(Duration::from_secs(3), c.next()).await.unwrap();
    assert!(matches!(pong, Some(Ok(Message::Pong(p))) if p[..] == [7, 7]));
    send(&mut c, &task(1, 1_000), Form::Text).await;
    let (r, _) = recv(&mut c).await.unwrap();
    assert_eq!(r.outcome, Answer::TimedOut, "{r:?}");
    assert!(
        r.service_ns >= 100_000_000 && r.service_ns < 900_000_000,
        "{r:?}"
    );
    still_served(&mut c, 2).await;
    c.close(None).await.unwrap();
    let (_, done) = finish(wl).await;
    let t = done.totals.unwrap();
    assert_eq!((t.received, t.timed_out, t.completed), (2, 1, 1), "{t:?}");
}

/// The CPU step runs where the class's placement says, on either runtime
/// flavor: every placement answers.
#[tokio::test]
async fn every_compute_placement_serves_on_either_runtime() {
    for (runtime, compute) in [
        (Flavor::CurrentThread, Compute::Yield),
        (Flavor::CurrentThread, Compute::Blocking),
        (Flavor::MultiThread, Compute::Pool),
    ] {
        let mut cfg = config(Dispatch::TaskPerJob);
        (cfg.runtime, cfg.threads, cfg.compute) = (runtime, 1, compute);
        cfg.compute_threads = 1;
        cfg.yield_every = 100;
        let (wl, port) = start(cfg, &ws(2, 0)).unwrap();
        let mut c = connect(port).await;
        for id in 0..4 {
            send(&mut c, &task(id, 1), Form::Binary).await;
        }
        for _ in 0..4 {
            let (r, _) = recv(&mut c).await.unwrap();
            assert_eq!(r.outcome, Answer::Completed, "{compute:?}: {r:?}");
        }
        c.close(None).await.unwrap();
        let (outcome, done) = finish(wl).await;
        assert_eq!(outcome, Outcome::Finished, "{compute:?}");
        assert_eq!(done.totals.unwrap().completed, 4, "{compute:?}");
    }
}
