//! `--dashboard`: the real coordinator binary runs a short run with the
//! live view on a loopback port; a plain HTTP client reads its event
//! stream (and replays it from a Last-Event-ID), headless Chromium watches
//! the page during the run (it prints SKIP when chromium is absent), a late
//! browser is replayed the run so far (and sees a spread past 12 hosts), and
//! the token guards a dashboard that is not on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cwbench_coordinator::report::{fmt_rate, fmt_us};
use serde_json::Value;

mod common;

use common::{coordinator, coordinator_bin, data, text};
use cwbench::testkit::{Browser, chromium};

/// One real run (or browser) at a time in this file: on a 2-core machine
/// two runs and a browser at once would starve the browser of the run it
/// is to watch.
static ONE_RUN: Mutex<()> = Mutex::new(());

/// A coordinator process with its dashboard up; killed when dropped.
struct Coord {
    child: Child,
    /// host:port of the dashboard.
    addr: String,
    stderr: Arc<Mutex<String>>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Coord {
    /// Runs the live scenario with `--dashboard 127.0.0.1:0` and a long
    /// linger (the test ends it with SIGINT); waits for the URL line.
    fn start(out: &Path, id: &str) -> Self {
        let mut child = Command::new(coordinator_bin())
            .env_remove("CWBENCH_TOKEN")
            .args(["--scenario", data("live.toml").to_str().unwrap()])
            .args(["--out", out.to_str().unwrap(), "--run-id", id])
            .args(["--local-agents", "2", "--local-threads", "1"])
            .args(["--dashboard", "127.0.0.1:0", "--dashboard-linger", "120"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the coordinator starts");
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("dashboard: http://") {
                    let _ = tx.send(url.trim_end_matches('/').to_string());
                }
                keep.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no dashboard URL; stderr:\n{}", stderr.lock().unwrap()));
        Self {
            child,
            addr,
            stderr,
            stdout: Some(stdout),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGINT (ends the linger), then waits at most 30 s for the exit.
    fn interrupt_and_wait(&mut self) -> (ExitStatus, String) {
        let st = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                let out = self.stdout.take().unwrap().join().unwrap();
                return (s, out);
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the coordinator did not exit after SIGINT; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status code, head (lower-cased) and the body (de-chunked).
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET `path` over a plain TcpStream (HTTP/1.1, `Connection: close`) and
/// reads until the server closes; every read has a deadline.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("the dashboard accepts");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("the response ends");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let rest = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Resp { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size");
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

/// One parsed event of the stream.
#[derive(Debug, Clone)]
struct Ev {
    id: u64,
    kind: String,
    data: Value,
    /// The event's bytes as sent.
    raw: String,
}

/// Splits an event stream into its events; the `retry:` preamble and
/// keep-alive comments are not events.
fn events(stream: &str) -> Vec<Ev> {
    stream
        .split_inclusive("\n\n")
        .filter(|block| block.starts_with("id: "))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {block:?}"))
                    .to_string()
            };
            Ev {
                id: field("id: ").parse().unwrap(),
                kind: field("event: "),
                data: serde_json::from_str(&field("data: ")).unwrap(),
                raw: block.to_string(),
            }
        })
        .collect()
}

fn result_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap()
}

/// (b, HTTP) A plain client reads the whole stream of a real run: numbered
/// events, every snapshot the coordinator kept (equal to result.json's
/// intervals), each host's final figures (equal to result.json's), the end
/// with the report's link; then a replay from a Last-Event-ID, 204 for a
/// browser that has the end, and report.html served after the run.
#[test]
fn the_event_stream_over_plain_http() {
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().unwrap();
    let mut c = Coord::start(out.path(), "sse");
    let addr = c.addr.clone();
    let page = get(&addr, "/", &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.head.contains("content-type: text/html"),
        "{}",
        page.head
    );
    assert!(
        page.head
            .contains("content-security-policy: default-src 'none'")
    );
    // Before the end there is no report to serve.
    let early = get(&addr, "/report.html", &[]);
    assert_eq!(early.status, 404, "{}", early.text());

    let stream = get(&addr, "/events", &[]);
    assert_eq!(stream.status, 200);
    assert!(stream.head.contains("content-type: text/event-stream"));
    let body = stream.text();
    assert!(body.starts_with("retry: 1000\n\n"), "{body:.200}");
    let evs = events(&body);
    let ids: Vec<u64> = evs.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=evs.len() as u64).collect::<Vec<_>>(), "ids");
    assert_eq!(evs[0].kind, "run");
    assert_eq!(
        evs[0].data["hosts"],
        serde_json::json!(["local-1", "local-2"])
    );
    assert_eq!(evs[1].kind, "profile");
    let end = evs.last().unwrap();
    assert_eq!(end.kind, "end");
    let dir = out.path().join("sse");
    assert_eq!(end.data["report"], "report.html");
    assert_eq!(end.data["dir"], dir.display().to_string());

    let r = result_json(&dir);
    let hosts = r["profiles"][0]["hosts"].as_array().unwrap();
    for (h, host) in hosts.iter().enumerate() {
        let snaps: Vec<&Value> = evs
            .iter()
            .filter(|e| e.kind == "snapshot" && e.data["host"] == h)
            .map(|e| &e.data)
            .collect();
        let intervals = host["intervals"].as_array().unwrap();
        assert!(intervals.len() >= 10, "a 5 s run at 200 ms");
        assert_eq!(snaps.len(), intervals.len(), "one event per snapshot");
        for (s, i) in snaps.iter().zip(intervals) {
            for (ek, rk) in [
                ("seq", "seq"),
                ("t_s", "t_s"),
                ("jobs_per_s", "jobs_per_s"),
                ("p50_us", "p50_us"),
                ("p99_us", "p99_us"),
                ("lateness_p99_us", "lateness_p99_us"),
                ("queue_depth", "queue_depth"),
            ] {
                assert_eq!(s[ek], i[rk], "host {h} snapshot {}: {ek}", s["seq"]);
            }
        }
        let fin: Vec<&Ev> = evs
            .iter()
            .filter(|e| e.kind == "host" && e.data["host"] == h)
            .collect();
        assert_eq!(fin.len(), 1);
        let f = &fin[0].data;
        assert_eq!(f["throughput"], host["throughput"]);
        assert_eq!(f["p99_us"], host["latency"]["completion"]["p99"]);
        assert_eq!(f["lateness_p99_us"], host["lateness"]["p99"]);
        for k in ["completed", "crashed", "timed_out", "shed", "cancelled"] {
            assert_eq!(f[k], host["accounting"][k], "{k}");
        }
        assert_eq!(f["faults"], host["recovery"]["faults"]);
        assert_eq!(
            f["marks"].as_array().unwrap().len(),
            host["recovery"]["marks"].as_array().unwrap().len()
        );
    }

    // A browser that saw event 3 reconnects: the same bytes from 4 on.
    let again = get(&addr, "/events", &[("Last-Event-ID", "3")]);
    let tail: String = evs[3..].iter().map(|e| e.raw.as_str()).collect();
    assert_eq!(again.text(), format!("retry: 1000\n\n{tail}"));
    // One that has the end is told to stop reconnecting.
    let done = get(&addr, "/events", &[("Last-Event-ID", &end.id.to_string())]);
    assert_eq!(done.status, 204);
    // The report, from the dashboard, as written.
    let rep = get(&addr, "/report.html", &[]);
    assert_eq!(rep.status, 200);
    assert_eq!(rep.body, std::fs::read(dir.join("report.html")).unwrap());
    assert_eq!(get(&addr, "/nope", &[]).status, 404);

    let (status, stdout) = c.interrupt_and_wait();
    let err = c.stderr();
    assert_eq!(status.code(), Some(0), "the run's exit code: {err}");
    assert!(stdout.contains("results: "), "{stdout}");
    assert!(
        err.contains("serves its final page and report.html for 120 s more"),
        "{err}"
    );
    assert!(err.contains("SIGINT: exiting"), "{err}");
}

/// What the page shows: its rows (host, profile, the cells by key), whether
/// it saw the end, the report link, the chart lines drawn and any resource
/// it loaded from elsewhere.
const READ_PAGE: &str = r#"JSON.stringify({
  rows: [...document.querySelectorAll("tr[data-host]")].map((r) => ({
    host: r.dataset.host, profile: r.dataset.profile, final: !!r.dataset.final,
    cells: Object.fromEntries([...r.querySelectorAll("td[data-k]")].map((td) => [td.dataset.k, td.textContent])),
  })),
  ended: document.body.dataset.ended === "1",
  report: (document.getElementById("report-link") || {}).href || null,
  lines: document.querySelectorAll("svg polyline").length,
  foreign: performance.getEntriesByType("resource").map((e) => e.name).filter((n) => !n.startsWith(location.origin)),
})"#;

/// (b, browser) Headless Chromium opens the dashboard during a real run,
/// sees the numbers change as snapshots arrive, and at the end shows each
/// host's figures exactly as result.json has them (in the report's format).
#[test]
fn the_page_in_headless_chromium_follows_the_run() {
    let Some(bin) = chromium("the_page_in_headless_chromium_follows_the_run") else {
        return;
    };
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    // The browser first: its start-up is not taken from the run's seconds.
    let mut b = Browser::start(&bin);
    b.call(None, "Browser.getVersion", serde_json::json!({}));
    let out = tempfile::tempdir().unwrap();
    let mut c = Coord::start(out.path(), "browser");
    let tab = b.open(&format!("http://{}/", c.addr));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen_done: Vec<String> = Vec::new();
    let page = loop {
        let p = b.eval(&tab, READ_PAGE);
        if p["ended"] == true {
            break p;
        }
        // Jobs done of the first host's live row, as the page shows it.
        if let Some(row) = p["rows"].as_array().and_then(|r| r.first())
            && row["final"] == false
            && let Some(d) = row["cells"]["done"].as_str()
            && seen_done.last().map(String::as_str) != Some(d)
        {
            seen_done.push(d.to_string());
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed the end; stderr:\n{}",
            c.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        seen_done.len() >= 3,
        "the live numbers changed only {} times: {seen_done:?}",
        seen_done.len()
    );
    let dir = out.path().join("browser");
    let r = result_json(&dir);
    let hosts = r["profiles"][0]["hosts"].as_array().unwrap();
    let rows = page["rows"].as_array().unwrap();
    assert_eq!(rows.len(), hosts.len(), "{page}");
    for host in hosts {
        let label = host["label"].as_str().unwrap();
        let row = rows
            .iter()
            .find(|r| r["host"] == label)
            .unwrap_or_else(|| panic!("no row for {label}: {page}"));
        assert_eq!(row["final"], true);
        let cell = |k: &str| row["cells"][k].as_str().unwrap().to_string();
        let us = |v: &Value| fmt_us(v.as_u64().unwrap());
        assert_eq!(cell("status"), "ok");
        assert_eq!(cell("tput"), fmt_rate(host["throughput"].as_f64().unwrap()));
        assert_eq!(cell("p50"), us(&host["latency"]["completion"]["p50"]));
        assert_eq!(cell("p99"), us(&host["latency"]["completion"]["p99"]));
        assert_eq!(cell("late"), us(&host["lateness"]["p99"]));
        for k in ["crashed", "timed_out", "shed", "cancelled"] {
            assert_eq!(cell(k), host["accounting"][k].to_string(), "{k}");
        }
        assert_eq!(cell("faults"), host["recovery"]["faults"].to_string());
    }
    assert!(page["lines"].as_u64().unwrap() >= 4, "charts drawn: {page}");
    assert_eq!(
        page["foreign"],
        serde_json::json!([]),
        "nothing fetched from elsewhere"
    );
    let link = page["report"].as_str().unwrap();
    assert_eq!(link, format!("http://{}/report.html", c.addr));
    let (status, _) = c.interrupt_and_wait();
    assert_eq!(status.code(), Some(0), "{}", c.stderr());
}

/// Bad `--dashboard` values fail before anything runs, naming the flag,
/// with the bad-input exit code.
#[test]
fn bad_dashboard_flags_are_refused() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let smoke = data("smoke.toml");
    let smoke = smoke.to_str().unwrap();
    for (flags, says) in [
        (
            vec!["--dashboard", "nowhere"],
            "--dashboard \"nowhere\": not an address",
        ),
        (vec!["--dashboard", "0.0.0.0:0"], "CWBENCH_TOKEN"),
        (vec!["--dashboard", taken.as_str()], "cannot listen"),
        (vec!["--dashboard-linger", "5"], "--dashboard"),
    ] {
        let mut args = vec!["--scenario", smoke, "--out", "/nonexistent/never"];
        args.extend(flags.iter().copied());
        let o = coordinator(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(says), "{flags:?}: {err}");
        assert!(!Path::new("/nonexistent/never").exists());
    }
}

/// A dashboard that is not on loopback requires the token (here on
/// loopback with the token set, as `--dashboard 0.0.0.0:PORT` would).
#[test]
fn the_token_guards_the_page_and_the_stream() {
    use cwbench_coordinator::dashboard::{Bind, Dashboard};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bind = Bind {
        addr: "127.0.0.1:0".parse().unwrap(),
        token: Some("s3cret+/=".into()),
    };
    let d = rt
        .block_on(Dashboard::start(bind, Duration::ZERO))
        .expect("it listens");
    assert!(d.announcement().contains("?token=<CWBENCH_TOKEN>"));
    let addr = d.addr().to_string();
    assert_eq!(get(&addr, "/", &[]).status, 401);
    assert_eq!(get(&addr, "/events", &[]).status, 401);
    assert_eq!(get(&addr, "/report.html", &[]).status, 401);
    assert_eq!(get(&addr, "/?token=wrong", &[]).status, 401);
    let ok = get(&addr, "/", &[("Authorization", "Bearer s3cret+/=")]);
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("EventSource"));
    // The link with the token sets the cookie and sends the browser on.
    let link = get(&addr, "/?token=s3cret%2B%2F%3D", &[]);
    assert_eq!(link.status, 303);
    let cookie = link
        .head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(link.head.contains("httponly") && link.head.contains("samesite=strict"));
    assert!(
        !cookie.contains("s3cret"),
        "the token itself is not the cookie"
    );
    // With the cookie, the stream opens (it would run until the run ends:
    // read its head and first bytes only).
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&got).contains("retry: 1000") {
        let n = s.read(&mut buf).expect("the stream starts");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    drop(d);
}

/// A browser that joins late is replayed the run so far and then follows
/// it live; past 12 hosts the charts draw the min, median and max host.
/// (The dashboard in this process, fed through its observer as a run would
/// feed it: no agents needed.)
#[test]
fn a_late_browser_is_replayed_and_many_hosts_draw_a_spread() {
    use cwbench::proto;
    use cwbench_coordinator::dashboard::{Bind, Dashboard};
    use cwbench_coordinator::observer::{RunEnd, RunStart, Slot};
    use cwbench_coordinator::result::IntervalPoint;
    let Some(bin) = chromium("a_late_browser_is_replayed_and_many_hosts_draw_a_spread") else {
        return;
    };
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bind = Bind {
        addr: "127.0.0.1:0".parse().unwrap(),
        token: None,
    };
    let d = rt.block_on(Dashboard::start(bind, Duration::ZERO)).unwrap();
    let obs = d.observer();
    let limits = cwbench::scenario::Limits::default();
    let plan = cwbench::scenario::load(&data("smoke.toml"), &limits).unwrap();
    let hosts: Vec<String> = (1..=13).map(|i| format!("h{i:02}")).collect();
    obs.run_started(&RunStart {
        run_id: "late",
        plan: &plan,
        hosts: &hosts,
    });
    obs.profile_started(0);
    let snapshot = |seq: u64| {
        for (h, label) in hosts.iter().enumerate() {
            let s = proto::Snapshot {
                seq,
                counters: Some(proto::Counters {
                    completed: (seq + 1) * 100,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let p = IntervalPoint {
                seq,
                t_s: (seq + 1) as f64 * 0.2,
                jobs_per_s: 500.0 + h as f64,
                p50_us: 800,
                p99_us: 1000 * (h as u64 + 1),
                queue_depth: h as u64,
                ..Default::default()
            };
            obs.snapshot(
                Slot {
                    profile: 0,
                    host: h,
                },
                label,
                &s,
                &p,
            );
        }
    };
    for seq in 0..5 {
        snapshot(seq);
    }
    // The browser comes now, after 2 + 65 events.
    let mut b = Browser::start(&bin);
    let tab = b.open(&d.url());
    let read = r#"JSON.stringify({
      rows: document.querySelectorAll("tr[data-host]").length,
      done: (document.querySelector('tr[data-host="h13"] td[data-k="done"]') || {}).textContent || null,
      lines: document.querySelectorAll("[data-chart] polyline").length,
      titles: [...document.querySelectorAll("[data-chart] svg > title")].map((t) => t.textContent),
      legend: [...document.querySelectorAll('[data-chart="tput"] .legend-item text')].map((t) => t.textContent),
      state: document.getElementById("state").textContent,
      end: document.getElementById("end").textContent,
    })"#;
    let until = |b: &mut Browser, what: &str, ok: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = b.eval(&tab, read);
            if ok(&p) {
                return p;
            }
            assert!(Instant::now() < deadline, "{what}: the page shows {p}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let p = until(&mut b, "the replay", &|p| {
        p["rows"] == 13 && p["lines"] == 12
    });
    assert_eq!(p["done"], "500", "host 13 after 5 snapshots: {p}");
    assert_eq!(
        p["legend"],
        serde_json::json!(["min host", "median host", "max host"])
    );
    assert!(
        p["titles"][0]
            .as_str()
            .unwrap()
            .ends_with("across 13 hosts"),
        "{p}"
    );
    assert_eq!(p["state"], "running profile 1 of 1");
    // Live from here: a new snapshot, then the end.
    snapshot(5);
    until(&mut b, "the live snapshot", &|p| p["done"] == "600");
    obs.run_finished(&RunEnd {
        result: None,
        dir: None,
        error: Some("cannot write results to /x: disk full"),
    });
    let p = until(&mut b, "the end", &|p| p["state"] == "failed");
    assert!(p["end"].as_str().unwrap().contains("disk full"), "{p}");
}
