//! The task servers over real sockets: a tokio-tungstenite client (or raw
//! frames) on 127.0.0.1, against the tokio server and the BEAM's (when
//! Erlang is installed; otherwise each test says SKIP on stderr).

use std::time::Instant;

use cwbench::spec::{Compute, Flavor};
use cwbench::wsproto::TaskSet;
use tokio_tungstenite::MaybeTlsStream;

use super::*;
use crate::recorder::Aggregator;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A server under test: the same protocol, accounting and hostile-input
/// tests run against each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Srv {
    Tokio,
    /// The Erlang VM in server mode (runtimes/beam/cwbench_beam_ws.erl).
    Beam,
}

/// The servers this machine can run; a missing Erlang is a SKIP line.
fn servers(test: &str) -> Vec<Srv> {
    match crate::beam::unavailable_reason() {
        None => vec![Srv::Tokio, Srv::Beam],
        Some(why) => {
            eprintln!("SKIP: {test}: the BEAM server: {why}");
            vec![Srv::Tokio]
        }
    }
}

impl Srv {
    /// The handler architectures of `want` this server runs: the BEAM's
    /// one is a process per task.
    fn dispatches(self, want: &[Dispatch]) -> Vec<Dispatch> {
        want.iter()
            .copied()
            .filter(|&d| self == Srv::Tokio || d == Dispatch::TaskPerJob)
            .collect()
    }

    /// `d`, or the BEAM's one architecture.
    fn dispatch(self, d: Dispatch) -> Dispatch {
        match self {
            Srv::Tokio => d,
            Srv::Beam => Dispatch::TaskPerJob,
        }
    }

    fn config(self, dispatch: Dispatch) -> Config {
        let mut c = config(dispatch);
        if self == Srv::Beam {
            c.runtime = Flavor::Beam;
        }
        c
    }

    /// Starts the server as a session does; the workload and its port.
    fn start(self, cfg: Config, ws: &proto::WebSocket) -> Result<(Workload, u16), String> {
        let wl = crate::workload::Workload::start(Config {
            serve: Some(ws.clone()),
            ..cfg
        })?;
        let port = wl.ws_port;
        Ok((wl, port))
    }
}

fn config(dispatch: Dispatch) -> Config {
    Config {
        threads: 2,
        dispatch,
        classes: 2,
        probe_interval: Duration::from_millis(5),
        job_log: true,
        ..Config::default()
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

/// Ends the run, which must finish cleanly; its final counters.
async fn finished_totals(wl: Workload) -> proto::Counters {
    let (outcome, done) = finish(wl).await;
    assert_eq!(outcome, Outcome::Finished);
    done.totals.unwrap()
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
    for srv in servers("the_three_handler_architectures_on_one_connection") {
        let all = [Dispatch::Serial, Dispatch::SpawnAwait, Dispatch::TaskPerJob];
        for dispatch in srv.dispatches(&all) {
            two_tasks_on_one_connection(srv, dispatch).await;
        }
    }
}

async fn two_tasks_on_one_connection(srv: Srv, dispatch: Dispatch) {
    let together = dispatch == Dispatch::TaskPerJob;
    let (wl, port) = srv.start(srv.config(dispatch), &ws(4, 0)).unwrap();
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
    let t = finished_totals(wl).await;
    assert_eq!(
        (t.received, t.completed),
        (2, 2),
        "{srv:?} {dispatch:?}: {t:?}"
    );
}

/// An injected crash is answered Crashed and the connection keeps
/// working; answers come in the form their task came in.
#[tokio::test]
async fn a_crash_is_answered_and_the_connection_lives_on_in_both_forms() {
    for srv in servers("a_crash_is_answered_and_the_connection_lives_on_in_both_forms") {
        let all = [Dispatch::Serial, Dispatch::SpawnAwait, Dispatch::TaskPerJob];
        for dispatch in srv.dispatches(&all) {
            a_crash_on(srv, dispatch).await;
        }
    }
}

async fn a_crash_on(srv: Srv, dispatch: Dispatch) {
    let (wl, port) = srv.start(srv.config(dispatch), &ws(1, 0)).unwrap();
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
    let t = finished_totals(wl).await;
    assert_eq!((t.received, t.completed, t.crashed), (3, 2, 1), "{t:?}");
    let restarts = u64::from(dispatch != Dispatch::TaskPerJob);
    assert_eq!(t.restarts, restarts, "{srv:?} {dispatch:?}");
    assert!(balanced(&t), "{t:?}");
}

/// Every task sent over two connections is answered, and the server's
/// accounting and task set after end of jobs are what the client sent.
#[tokio::test]
async fn accounting_and_task_set_match_what_the_clients_sent() {
    for srv in servers("accounting_and_task_set_match_what_the_clients_sent") {
        accounting_on(srv).await;
    }
}

async fn accounting_on(srv: Srv) {
    let (wl, port) = srv
        .start(srv.config(Dispatch::TaskPerJob), &ws(8, 0))
        .unwrap();
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
    // A snapshot carries the server's gauges (the BEAM's tasks in flight
    // come with its gauge lines).
    until("no task in flight", || wl.recorder.in_flight() == 0).await;
    let mut agg = Aggregator::new(2, crate::recovery::Params::default());
    let g = agg.snapshot(&wl.recorder, wl.gauges()).gauges.unwrap();
    assert_eq!((g.connections, g.runtime_workers), (2, 2), "{srv:?}: {g:?}");
    assert_eq!((g.in_flight, g.prefetch_depth), (0, 0), "{g:?}");
    for mut c in conns {
        c.close(None).await.unwrap();
    }
    let (outcome, done) = finish_with(wl, agg).await;
    assert_eq!(outcome, Outcome::Finished);
    let t = done.totals.unwrap();
    assert_eq!((t.received, t.completed), (160, 160), "{srv:?}: {t:?}");
    assert!(balanced(&t), "{t:?}");
    assert_eq!((done.task_set, done.task_count), (sent.sum, sent.count));
    assert_eq!(done.classes.len(), 2, "queue-wait and service per class");
}

/// End of jobs with a task in flight: it finishes and is answered (a task
/// read meanwhile is refused), then the connection is closed with 1001.
#[tokio::test]
async fn end_of_jobs_answers_what_is_in_flight_then_closes_with_1001() {
    for srv in servers("end_of_jobs_answers_what_is_in_flight_then_closes_with_1001") {
        end_of_jobs_on(srv).await;
    }
}

async fn end_of_jobs_on(srv: Srv) {
    let (mut wl, port) = srv
        .start(srv.config(Dispatch::TaskPerJob), &ws(4, 0))
        .unwrap();
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
    assert_eq!(
        (t.received, t.completed, t.refused),
        (2, 1, 1),
        "{srv:?}: {t:?}"
    );
    assert!(balanced(&t), "{t:?}");
    assert_eq!(done.task_count, 2);
}

/// A cancel stops at once: the task in flight is counted cancelled.
#[tokio::test]
async fn a_cancel_counts_the_task_in_flight_cancelled() {
    for srv in servers("a_cancel_counts_the_task_in_flight_cancelled") {
        for dispatch in srv.dispatches(&[Dispatch::Serial, Dispatch::TaskPerJob]) {
            a_cancel_on(srv, dispatch).await;
        }
    }
}

async fn a_cancel_on(srv: Srv, dispatch: Dispatch) {
    let (mut wl, port) = srv.start(srv.config(dispatch), &ws(4, 0)).unwrap();
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
    assert_eq!(
        (t.received, t.cancelled),
        (1, 1),
        "{srv:?} {dispatch:?}: {t:?}"
    );
}

/// The tokio server runs the three architectures, the BEAM's task-per-job
/// only; each says which field is wrong.
#[test]
fn only_the_handler_architectures_serve() {
    for srv in [Srv::Tokio, Srv::Beam] {
        let (refused, valid): (&[Dispatch], _) = match srv {
            Srv::Tokio => (
                &[Dispatch::Pool, Dispatch::Mailbox],
                "spawn-await, serial or task-per-job",
            ),
            Srv::Beam => (
                &[Dispatch::Pool, Dispatch::Serial, Dispatch::SpawnAwait],
                "runs task-per-job",
            ),
        };
        for &d in refused {
            let e = srv.start(srv.config(d), &ws(1, 0)).unwrap_err();
            assert!(e.contains("profile.dispatch"), "{srv:?}: {e}");
            assert!(e.contains(valid), "{srv:?}: {e}");
        }
        let e = srv
            .start(srv.config(Dispatch::TaskPerJob), &ws(0, 0))
            .unwrap_err();
        assert!(e.contains("websocket.in_flight"), "{srv:?}: {e}");
    }
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
    for srv in servers("hostile_messages_close_only_their_connection_with_their_code") {
        hostile_messages_on(srv).await;
    }
}

async fn hostile_messages_on(srv: Srv) {
    let (wl, port) = srv
        .start(srv.config(Dispatch::TaskPerJob), &ws(4, 1024))
        .unwrap();
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
        assert_eq!(got, code, "{srv:?} {reason}: closed with {got} ({why})");
        assert!(why.contains(reason), "{srv:?} {code}: {why:?}");
        still_served(&mut good, k as u64).await;
    }
    until("every hostile connection closed", || {
        wl.recorder.ws.connections.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(wl.recorder.ws.dropped.load(Ordering::Relaxed), n);
    good.close(None).await.unwrap();
    let t = finished_totals(wl).await;
    assert_eq!((t.received, t.completed), (2 * n, 2 * n), "{t:?}");
}

/// A client that never reads its answers: once none can be written for
/// the write deadline, the server closes that connection (the tasks it
/// read still count); another connection keeps being answered.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_and_others_are_served() {
    for srv in servers("a_client_that_never_reads_is_closed_and_others_are_served") {
        a_deaf_client_on(srv).await;
    }
}

async fn a_deaf_client_on(srv: Srv) {
    let (wl, port) = srv
        .start(srv.config(Dispatch::TaskPerJob), &ws(64, 0))
        .unwrap();
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
    let t = finished_totals(wl).await;
    assert!(t.received > 100, "{t:?}");
    assert!(balanced(&t), "{t:?}");
}

/// A client that vanishes mid-task: its connection is counted lost, its
/// task still runs to the end and is counted.
#[tokio::test]
async fn a_client_that_vanishes_mid_task_loses_nothing() {
    for srv in servers("a_client_that_vanishes_mid_task_loses_nothing") {
        for dispatch in srv.dispatches(&[Dispatch::Serial, Dispatch::TaskPerJob]) {
            a_vanishing_client_on(srv, dispatch).await;
        }
    }
}

async fn a_vanishing_client_on(srv: Srv, dispatch: Dispatch) {
    let (wl, port) = srv.start(srv.config(dispatch), &ws(4, 0)).unwrap();
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
    let t = finished_totals(wl).await;
    assert_eq!(
        (t.received, t.completed),
        (1, 1),
        "{srv:?} {dispatch:?}: {t:?}"
    );
}

/// With one task in flight per connection, task-per-job stops reading: the
/// second task starts only once the first has been answered.
#[tokio::test]
async fn a_full_connection_is_not_read_until_an_answer_goes_out() {
    for srv in servers("a_full_connection_is_not_read_until_an_answer_goes_out") {
        a_full_connection_on(srv).await;
    }
}

async fn a_full_connection_on(srv: Srv) {
    let (wl, port) = srv
        .start(srv.config(Dispatch::TaskPerJob), &ws(1, 0))
        .unwrap();
    let mut c = connect(port).await;
    send(&mut c, &task(1, 200), Form::Binary).await;
    send(&mut c, &task(2, 200), Form::Binary).await;
    let (a, _) = recv(&mut c).await.unwrap();
    let first = Instant::now();
    let (b, _) = recv(&mut c).await.unwrap();
    assert_eq!((a.id, b.id), (1, 2));
    assert!(first.elapsed() >= Duration::from_millis(150));
    // The BEAM reports a task to the agent beside its answer.
    until("both tasks recorded", || {
        wl.recorder.received.load(Ordering::Relaxed) == 2
    })
    .await;
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
    for srv in servers("a_task_past_the_job_timeout_is_answered_timed_out_and_pings_are_answered") {
        a_timeout_on(srv).await;
    }
}

async fn a_timeout_on(srv: Srv) {
    let mut cfg = srv.config(srv.dispatch(Dispatch::SpawnAwait));
    cfg.job_timeout = Some(Duration::from_millis(100));
    let (wl, port) = srv.start(cfg, &ws(1, 0)).unwrap();
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

/// A raw client: the opening handshake by hand, then any bytes at all.
async fn raw(port: u16) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "{}", String::from_utf8_lossy(&head));
        let b = timeout(Duration::from_secs(3), tcp.read_u8()).await;
        head.push(b.expect("no handshake answer within 3 s").unwrap());
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    tcp
}

/// A client frame (`first`: FIN, RSV and opcode), masked.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![first, 0x80 | payload.len() as u8];
    f.extend(key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// The next data frame's payload from the server, or Err(close code) (0:
/// the stream ended without a close frame).
async fn raw_next(tcp: &mut TcpStream) -> Result<Vec<u8>, u16> {
    use tokio::io::AsyncReadExt;
    let read = async {
        loop {
            let mut h = [0u8; 2];
            if tcp.read_exact(&mut h).await.is_err() {
                return Err(0);
            }
            assert_eq!(h[1] & 0x80, 0, "a server frame is not masked");
            let len = match h[1] & 0x7f {
                126 => usize::from(tcp.read_u16().await.map_err(|_| 0u16)?),
                n => usize::from(n),
            };
            let mut p = vec![0; len];
            tcp.read_exact(&mut p).await.map_err(|_| 0u16)?;
            match h[0] & 0x0f {
                8 if p.len() >= 2 => return Err(u16::from_be_bytes([p[0], p[1]])),
                8 => return Err(0),
                1 | 2 => return Ok(p),
                _ => {}
            }
        }
    };
    timeout(Duration::from_secs(4), read)
        .await
        .expect("no frame within 4 s")
}

/// Framing a client library would never send: each closes its own
/// connection with its code; a fragmented task is put back together and
/// answered; another connection is served throughout.
#[tokio::test]
async fn bad_framing_closes_its_connection_and_fragments_are_joined() {
    for srv in servers("bad_framing_closes_its_connection_and_fragments_are_joined") {
        bad_framing_on(srv).await;
    }
}

async fn bad_framing_on(srv: Srv) {
    use tokio::io::AsyncWriteExt;
    let (wl, port) = srv
        .start(srv.config(Dispatch::TaskPerJob), &ws(4, 0))
        .unwrap();
    let mut good = connect(port).await;
    let mut t = Vec::new();
    wsproto::encode_task(&task(1, 0), &mut t);
    let mut unmasked = vec![0x82, t.len() as u8];
    unmasked.extend(&t);
    let mut flags = t.clone();
    flags[21] = 0x02;
    let mut trailing = t.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", unmasked, 1002),
        ("reserved bits", masked(0x82 | 0x40, &t), 1002),
        ("unknown opcode", masked(0x83, b"x"), 1002),
        ("continuation first", masked(0x80, &t), 1002),
        ("fragmented ping", masked(0x09, b"p"), 1002),
        ("text not UTF-8", masked(0x81, &[0xff, 0xfe]), 1007),
        ("empty task", masked(0x82, &[]), 1007),
        ("unknown flag bits", masked(0x82, &flags), 1008),
        ("bytes after the task", masked(0x82, &trailing), 1008),
    ];
    let n = cases.len() as u64;
    for (k, (what, bytes, code)) in cases.into_iter().enumerate() {
        let mut c = raw(port).await;
        c.write_all(&bytes).await.unwrap();
        assert_eq!(raw_next(&mut c).await, Err(code), "{srv:?}: {what}");
        still_served(&mut good, 10 + k as u64).await;
    }
    // A task in two fragments, a ping between them: answered, pong first.
    let mut c = raw(port).await;
    let mut split = masked(0x02, &t[..10]);
    split.extend(masked(0x89, b"hi"));
    split.extend(masked(0x80, &t[10..]));
    c.write_all(&split).await.unwrap();
    let answer = raw_next(&mut c).await.expect("an answer");
    let r = wsproto::decode_response(&answer).unwrap();
    assert_eq!((r.id, r.outcome), (1, Answer::Completed), "{srv:?}");
    c.write_all(&masked(0x88, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    assert_eq!(raw_next(&mut c).await, Err(1000), "{srv:?}: close echoed");
    // Both gauges settle (a BEAM server reports them in one line, which
    // the agent stores as two).
    let ws = &wl.recorder.ws;
    until(
        "every raw connection closed, each bad one counted dropped",
        || ws.connections.load(Ordering::Relaxed) == 1 && ws.dropped.load(Ordering::Relaxed) >= n,
    )
    .await;
    assert_eq!(ws.dropped.load(Ordering::Relaxed), n, "{srv:?}");
    good.close(None).await.unwrap();
    let t = finished_totals(wl).await;
    assert_eq!((t.received, t.completed), (n + 1, n + 1), "{srv:?}: {t:?}");
}
