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
async fn finish(mut wl: Workload) -> (Outcome, proto::Done) {
    wl.end_of_jobs();
    let finished = std::mem::replace(&mut wl.finished, oneshot::channel().1);
    let outcome = timeout(Duration::from_secs(5), finished)
        .await
        .expect("the server did not finish within 5 s")
        .expect("the server thread died");
    let mut agg = Aggregator::new(2, crate::recovery::Params::default());
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
    assert_eq!(wl.recorder.ws.connections.load(Ordering::Relaxed), 2);
    for mut c in conns {
        c.close(None).await.unwrap();
    }
    let (outcome, done) = finish(wl).await;
    assert_eq!(outcome, Outcome::Finished);
    let t = done.totals.unwrap();
    assert_eq!((t.received, t.completed), (160, 160), "{t:?}");
    assert!(balanced(&t), "{t:?}");
    assert_eq!((done.task_set, done.task_count), (sent.sum, sent.count));
    assert_eq!(done.classes.len(), 2, "queue-wait and service per class");
}

/// End of jobs with a task in flight: it finishes and is answered, then
/// the connection is closed with 1001.
#[tokio::test]
async fn end_of_jobs_answers_what_is_in_flight_then_closes_with_1001() {
    let (mut wl, port) = start(config(Dispatch::TaskPerJob), &ws(4, 0)).unwrap();
    let mut c = connect(port).await;
    send(&mut c, &task(7, 300), Form::Binary).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    wl.end_of_jobs();
    let (r, _) = recv(&mut c).await.unwrap();
    assert_eq!((r.id, r.outcome), (7, Answer::Completed));
    assert_eq!(recv(&mut c).await.unwrap_err().0, 1001);
    let (outcome, done) = finish(wl).await;
    assert_eq!(outcome, Outcome::Finished);
    let t = done.totals.unwrap();
    assert_eq!((t.received, t.completed), (1, 1));
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
