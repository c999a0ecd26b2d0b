//! The page over a real server: plain HTTP requests are answered on the task port, and headless Chromium gives the server tasks from the page.

use std::time::{Duration, Instant};

use cwbench::proto;
use cwbench::testkit::{Browser, chromium};
use cwbench::wsproto::TaskSet;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::AgentConfig;
use crate::recorder::Aggregator;
use crate::workload::{Outcome, Workload};

/// A task server (task-per-job, 3 classes, 8 in flight per connection) on
/// a free port, started through the session's own validation.
fn server() -> (Workload, u16) {
    let start = proto::Start {
        run_id: "page".into(),
        protocol_version: cwbench::PROTOCOL_VERSION,
        profile: Some(proto::Profile {
            threads: 2,
            workers: 1,
            queue_bound: 8,
            producers: 1,
            dispatch: proto::Dispatch::TaskPerJob as i32,
            ..Default::default()
        }),
        plan: Some(proto::Plan {
            classes: vec!["a".into(), "b".into(), "c".into()],
            snapshot_interval_ms: 1000,
            prefetch_jobs: 65_536,
            websocket: Some(proto::WebSocket {
                role: proto::web_socket::Role::Server as i32,
                connections: 1,
                in_flight: 8,
                max_message: 65_536,
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let cfg = crate::session::validate_start(&AgentConfig::default(), &start).unwrap();
    let wl = Workload::start(cfg).unwrap();
    let port = wl.ws_port;
    (wl, port)
}

/// Ends the server's run; its final counters and task set.
fn finish(mut wl: Workload) -> (proto::Counters, TaskSet) {
    wl.end_of_jobs();
    let finished = std::mem::replace(&mut wl.finished, tokio::sync::oneshot::channel().1);
    assert_eq!(finished.blocking_recv().unwrap(), Outcome::Finished);
    let done = Aggregator::new(3, crate::recovery::Params::default()).done(&wl.recorder, 0);
    let set = TaskSet {
        sum: done.task_set,
        count: done.task_count,
    };
    (done.totals.unwrap(), set)
}

/// A raw HTTP/1.1 exchange: the response's status line and body.
async fn http(port: u16, request: &str) -> (String, String) {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw))
        .await
        .expect("the server closes after answering")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// `/` is the page with the run's facts in it, anything else a 404 or
/// 405; a head sent in two parts is read whole; none of it is a
/// connection or a task on the server.
#[test]
fn plain_requests_get_the_page_or_an_error() {
    let (wl, port) = server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (status, body) = http(port, "GET /?seed=3 HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("const RUN = {\"classes\": 3, \"in_flight\": 8};"));
        assert!(!body.contains("CWBENCH-RUN"));
        let (status, _) = http(port, "GET /favicon.ico HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, _) = http(port, "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tcp.write_all(b"st: x\r\n\r\n").await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        assert!(raw.starts_with(b"HTTP/1.1 200 OK\r\n"));
    });
    let (t, set) = finish(wl);
    assert_eq!((t.received, set.count), (0, 0), "{t:?}");
}

/// What the page shows once its run is over (null before).
const SUMMARY: &str = r#"JSON.stringify(document.body.dataset.state === "done"
  ? Object.assign(JSON.parse(document.getElementById("summary").textContent), {
      shown: Object.fromEntries([...document.querySelectorAll("td[data-k]")].map((td) => [td.dataset.k, td.textContent])),
      recent: document.getElementById("recent").rows.length - 1,
      foreign: performance.getEntriesByType("resource").map((e) => e.name).filter((n) => !n.startsWith(location.origin)),
    })
  : null)"#;

/// Opens the page with `query` in a new tab and waits (60 s at most) for
/// its run to end; its summary.
fn page_run(b: &mut Browser, port: u16, query: &str) -> Value {
    let tab = b.open(&format!("http://127.0.0.1:{port}/?{query}&run=1"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = b.eval(&tab, SUMMARY);
        if !s.is_null() {
            return s;
        }
        assert!(Instant::now() < deadline, "the page's run never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (browser) Headless Chromium loads the page from the server and gives it
/// seeded tasks over 4 connections, binary then JSON: the server read
/// exactly the tasks the page sent (the task-set digests agree), the
/// page's counts by outcome are the server's, and the page fetched nothing
/// from elsewhere. The same seed gives the same tasks again.
#[test]
fn a_browser_gives_the_server_tasks_and_both_count_the_same() {
    let Some(bin) = chromium("a_browser_gives_the_server_tasks_and_both_count_the_same") else {
        return;
    };
    let (wl, port) = server();
    let mut b = Browser::start(&bin);
    let query =
        "seed=7&tasks=3000&connections=4&in_flight=8&work_units=2000&sleep_us=100&crash=0.02";
    let binary = page_run(&mut b, port, query);
    let json = page_run(&mut b, port, &format!("{query}&json=1"));
    drop(b);
    let (t, set) = finish(wl);
    let mut page = TaskSet::default();
    for s in [&binary, &json] {
        assert_eq!(s["errors"], serde_json::json!([]), "{s}");
        assert_eq!(s["foreign"], serde_json::json!([]), "{s}");
        assert_eq!(
            (s["sent"].as_u64(), s["lost"].as_u64()),
            (Some(3000), Some(0))
        );
        assert_eq!(s["shown"]["sent"], "3000", "the table shows the run: {s}");
        assert!(s["recent"].as_u64().unwrap() > 0, "answers listed: {s}");
        let sum = u64::from_str_radix(s["task_set"].as_str().unwrap(), 16).unwrap();
        page.merge(TaskSet {
            sum,
            count: s["task_count"].as_u64().unwrap(),
        });
    }
    assert_eq!(
        binary["task_set"], json["task_set"],
        "same seed, same tasks"
    );
    assert_eq!(set, page, "the server read exactly the tasks the page sent");
    let answered =
        |k: &str| binary["answered"][k].as_u64().unwrap() + json["answered"][k].as_u64().unwrap();
    assert_eq!(t.received, 6000, "{t:?}");
    assert_eq!(
        (answered("completed"), answered("crashed")),
        (t.completed, t.crashed)
    );
    assert!(t.crashed > 60 && t.crashed < 200, "about 2% crash: {t:?}");
    assert_eq!((answered("timed_out"), answered("refused")), (0, 0));
    assert_eq!(
        t.received,
        t.completed + t.crashed,
        "nothing lost or cancelled: {t:?}"
    );
}
