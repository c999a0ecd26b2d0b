//! The run directory's files, checked on the output of one real run (two
//! local agents in this process, real gRPC, the smoke scenario): result.json
//! against docs/result.schema.json, completion.hlog against the measured
//! counts, the CSVs, report.html (rendered by headless Chromium when it is
//! installed), and the `report` and `compare` commands on the saved result.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use base64::Engine as _;
use cwbench::histogram::Hist;
use cwbench_coordinator::cli::Cli;
use cwbench_coordinator::result::RunResult;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use serde_json::Value;

mod common;
use common::{chromium, decode_png, pixels_of, schema, schema_errors as errors, screenshot};

/// The run directory of one smoke run, shared by every test here
/// (target/tmp/outputs/outputs/).
fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under target/ so the files (and report.png) stay for a look
        // after the tests, replaced on every run.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("outputs");
        let _ = std::fs::remove_dir_all(&out);
        let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/smoke.toml");
        let cli = <Cli as clap::Parser>::try_parse_from([
            "coordinator",
            "--scenario",
            smoke.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--run-id",
            "outputs",
            "--local-agents",
            "2",
            "--local-threads",
            "1",
            "--quiet",
        ])
        .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let ran = rt
            .block_on(cwbench_coordinator::cli::execute(
                cli.run,
                cwbench_coordinator::interrupt::Interrupt::default(),
            ))
            .expect("the smoke run works");
        assert_eq!(
            cwbench_coordinator::cli::run_exit_code(&ran.result, false),
            0
        );
        ran.dir
    })
}

fn result_value() -> Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir().join("result.json")).unwrap()).unwrap()
}

fn result() -> RunResult {
    serde_json::from_value(result_value()).unwrap()
}

#[test]
fn result_json_matches_the_schema() {
    let v = schema();
    let doc = result_value();
    assert_eq!(errors(&v, &doc), Vec::<String>::new());
    let host = &doc["profiles"][0]["hosts"][0];
    assert!(host["spectrum"].as_array().is_some_and(|s| s.len() > 10));
    assert!(!host["intervals"].as_array().unwrap().is_empty());

    // Renaming any field, at any depth, must fail validation.
    let renames: [&[&str]; 6] = [
        &["run_id"],
        &["profiles", "0", "hosts", "0", "throughput"],
        &[
            "profiles",
            "0",
            "hosts",
            "0",
            "latency",
            "completion",
            "p99",
        ],
        &["profiles", "0", "hosts", "0", "intervals", "0", "p99_us"],
        &["profiles", "0", "hosts", "0", "spectrum", "0", "value_us"],
        &["scenario", "run", "jobs"],
    ];
    for path in renames {
        let mut bad = doc.clone();
        let (last, parents) = path.split_last().unwrap();
        let mut node = &mut bad;
        for p in parents {
            node = match p.parse::<usize>() {
                Ok(i) => &mut node[i],
                Err(_) => &mut node[*p],
            };
        }
        let obj = node.as_object_mut().unwrap();
        let val = obj.remove(*last).unwrap_or_else(|| panic!("{path:?}"));
        obj.insert(format!("{last}_renamed"), val);
        assert!(
            !errors(&v, &bad).is_empty(),
            "renaming {path:?} passed the schema"
        );
    }
    let mut bad = doc.clone();
    bad["profiles"][0]["hosts"][0]["status"] = "fine".into();
    assert!(!errors(&v, &bad).is_empty());

    // A class's own compute placement is echoed as written: optional, one
    // of the four placements.
    let mut placed = doc.clone();
    placed["scenario"]["class"][0]["compute"] = "pool".into();
    assert_eq!(errors(&v, &placed), Vec::<String>::new());
    placed["scenario"]["class"][0]["compute"] = "elsewhere".into();
    assert!(!errors(&v, &placed).is_empty());
}

#[test]
fn spectrum_is_monotonic_and_matches_the_summary() {
    let r = result();
    for h in &r.profiles[0].hosts {
        let s = &h.spectrum;
        assert!(
            s.windows(2)
                .all(|w| w[0].percentile < w[1].percentile && w[0].value_us <= w[1].value_us)
        );
        let at = |p: f64| s.iter().find(|x| x.percentile == p).unwrap().value_us;
        let c = &h.latency.completion;
        assert_eq!(at(50.0), c.p50);
        assert_eq!(at(99.0), c.p99);
        assert_eq!(at(99.9), c.p999);
        assert_eq!(at(100.0), c.max);
        assert_eq!(at(0.0), c.min);
    }
}

#[test]
fn hlog_holds_every_measured_job_per_host() {
    let r = result();
    let bytes = std::fs::read(run_dir().join("completion.hlog")).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("#[Histogram log format version 1.3]"));
    assert!(text.contains("#[BaseTime: "));
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    let mut intervals = 0;
    for e in IntervalLogIterator::new(&bytes) {
        let LogEntry::Interval(i) = e.expect("the log parses") else {
            continue;
        };
        intervals += 1;
        let tag = i
            .tag()
            .expect("every interval is tagged")
            .as_str()
            .to_string();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(i.encoded_histogram())
            .unwrap();
        // V2 + DEFLATE: cookie 0x1c849304 | 0x10 (word size).
        assert_eq!(&raw[..4], &[0x1c, 0x84, 0x93, 0x14]);
        let h: Hist = Deserializer::new().deserialize(&mut &raw[..]).unwrap();
        assert!(i.duration().as_secs_f64() > 0.0);
        *counts.entry(tag).or_default() += h.len();
    }
    assert!(intervals >= 2, "{intervals} intervals");
    for (pi, p) in r.profiles.iter().enumerate() {
        for h in &p.hosts {
            let tag = format!("host={};profile={pi};class=mixed", h.label);
            let got = counts.get(&tag).copied().unwrap_or(0);
            assert!(h.accounting.measured_completed > 0);
            assert_eq!(
                got, h.accounting.measured_completed,
                "{tag}: hlog holds {got} jobs, result.json measured {}",
                h.accounting.measured_completed
            );
            assert_eq!(got, h.latency.completion.count);
        }
    }
}

#[test]
fn csv_files_hold_the_table_and_the_intervals() {
    let r = result();
    let summary = std::fs::read_to_string(run_dir().join("summary.csv")).unwrap();
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(
        lines[0],
        "host,profile,cores,threads,status,jobs,jobs_per_s,p50_us,p95_us,p99_us,p999_us,max_us,errors"
    );
    let hosts: Vec<_> = r.profiles.iter().flat_map(|p| &p.hosts).collect();
    assert_eq!(lines.len(), 1 + hosts.len());
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first[0], hosts[0].label);
    assert_eq!(first[5], hosts[0].accounting.measured_completed.to_string());
    assert_eq!(first[9], hosts[0].latency.completion.p99.to_string());
    let tput: f64 = first[6].parse().unwrap();
    assert!((tput - hosts[0].throughput).abs() < 0.01);

    let iv = std::fs::read_to_string(run_dir().join("intervals.csv")).unwrap();
    let lines: Vec<&str> = iv.lines().collect();
    assert_eq!(
        lines[0],
        "host,profile,seq,t_s,jobs_per_s,p50_us,p99_us,max_us,queue_depth,in_flight,rss_bytes,cpu_cores"
    );
    let n: usize = hosts.iter().map(|h| h.intervals.len()).sum();
    assert_eq!(lines.len(), 1 + n);
    assert!(lines[1..].iter().all(|l| l.split(',').count() == 12));
}

#[test]
fn html_is_self_contained() {
    let html = std::fs::read_to_string(run_dir().join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for banned in ["<script", "src=", "href=", "@import", "url(", "<link"] {
        assert!(!html.contains(banned), "report.html contains {banned}");
    }
    // The only URL is the SVG namespace.
    assert_eq!(
        html.matches("http://").count() + html.matches("https://").count(),
        html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    // The one group's throughput, p99, spectrum and throughput over time
    // (4), then per host: comparison (2) + spectrum, throughput, p99 and
    // scheduler lateness for the one profile (4).
    assert_eq!(html.matches("<svg").count(), 10);
    let groups = html.find("Host groups").expect("the groups come first");
    assert!(groups < html.find("Per host").unwrap());
    assert!(html.contains("Latency by percentile, groups overlaid"));
    assert!(html.contains("Scheduler lateness over time"));
    assert!(html.contains("Latency by percentile"));
    assert!(html.contains("<polyline"));
    assert!(html.contains("Breakdown and accounting"));
}

#[test]
fn html_renders_in_headless_chromium() {
    let Some(bin) = chromium("html_renders_in_headless_chromium") else {
        return;
    };
    let html = run_dir().join("report.html");
    let png = run_dir().join("report.png");
    let bytes = screenshot(&bin, &html, &png, (1400, 3000));
    assert!(
        bytes.len() > 50_000,
        "screenshot is only {} bytes",
        bytes.len()
    );
    let (w, h, px) = decode_png(&bytes);
    assert_eq!((w, h), (1400, 3000));
    // Each host's colour (the first two of the palette) must cover a fair
    // number of pixels: lines, markers and bars were drawn.
    for name in ["#4e79a7", "#f28e2b"] {
        let n = pixels_of(&px, name);
        assert!(n > 3000, "colour {name}: only {n} pixels");
    }
    // Mostly light background, some dark text.
    let dark = px
        .iter()
        .filter(|p| p[0] < 80 && p[1] < 80 && p[2] < 80)
        .count();
    assert!(dark > 5000, "little text drawn: {dark} dark pixels");
    eprintln!("screenshot: {}", png.display());
}

fn coordinator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn report_command_rerenders_a_saved_result() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("result.json");
    std::fs::copy(run_dir().join("result.json"), &copy).unwrap();
    let out = tmp.path().join("again");
    let o = coordinator(&[
        "report",
        copy.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("jobs/s"));
    for f in ["report.md", "report.html", "summary.csv", "intervals.csv"] {
        let again = std::fs::read_to_string(out.join(f)).unwrap();
        let orig = std::fs::read_to_string(run_dir().join(f)).unwrap();
        assert_eq!(again, orig, "{f} differs when re-rendered");
    }
    // Default --out: beside the file.
    let o = coordinator(&["report", copy.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(tmp.path().join("report.html").exists());

    let missing = tmp.path().join("nope.json");
    let o = coordinator(&["report", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nope.json"), "{err}");

    let bad = tmp.path().join("bad.json");
    for body in ["{ not json", "{\"schema_version\": 1}", "[1,2]", ""] {
        std::fs::write(&bad, body).unwrap();
        let o = coordinator(&["report", bad.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{body}");
        let err = text(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("bad.json"), "{err}");
    }
}

/// Writes a copy of the run's result.json changed by `f`.
fn variant(dir: &Path, name: &str, f: impl Fn(&mut Value)) -> PathBuf {
    let mut v = result_value();
    f(&mut v);
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    p
}

fn hosts_mut(v: &mut Value) -> impl Iterator<Item = &mut Value> {
    v["profiles"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .flat_map(|p| p["hosts"].as_array_mut().unwrap().iter_mut())
}

#[test]
fn compare_passes_on_an_unchanged_result() {
    let base = run_dir().join("result.json");
    let b = base.to_str().unwrap();
    let o = coordinator(&[
        "compare",
        b,
        b,
        "--fail-if",
        "p99>+10%",
        "--fail-if",
        "throughput<-5%",
    ]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    for m in ["throughput", "p50", "p95", "p99", "p99.9", "max", "errors"] {
        assert!(out.contains(m), "{m} missing:\n{out}");
    }
    assert!(
        out.contains("+0.0%") && out.contains("all 2 gate(s) passed"),
        "{out}"
    );
}

#[test]
fn compare_trips_a_gate_on_a_regression() {
    let tmp = tempfile::tempdir().unwrap();
    let base = run_dir().join("result.json");
    let slower = variant(tmp.path(), "slower.json", |v| {
        for h in hosts_mut(v) {
            let p99 = h["latency"]["completion"]["p99"].as_u64().unwrap();
            h["latency"]["completion"]["p99"] = (p99 * 3 / 2).into();
            let t = h["throughput"].as_f64().unwrap();
            h["throughput"] = (t * 0.97).into();
        }
    });
    let (b, n) = (base.to_str().unwrap(), slower.to_str().unwrap());
    let o = coordinator(&[
        "compare",
        b,
        n,
        "--fail-if",
        "p99>+10%",
        "--fail-if",
        "throughput<-5%",
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("+50.0%") && out.contains("FAIL p99>+10%"),
        "{out}"
    );
    assert!(err.contains("gate tripped: p99>+10%"), "{err}");
    // A 3% throughput drop is within the 5% gate.
    assert!(!err.contains("throughput<-5%"), "{err}");

    // Bad gates: exit 2, naming the gate.
    for g in ["p99>10%", "latency>+1%", "p99>+10"] {
        let o = coordinator(&["compare", b, n, "--fail-if", g]);
        assert_eq!(o.status.code(), Some(2), "{g}");
        assert!(
            text(&o.stderr).contains(&format!("{g:?}")),
            "{}",
            text(&o.stderr)
        );
    }

    // Different workloads: refused unless allowed.
    let other = variant(tmp.path(), "other.json", |v| {
        v["scenario"]["seed"] = 8.into();
        for h in hosts_mut(v) {
            h["digest_sent"] = "0123456789abcdef".into();
        }
    });
    let o = coordinator(&["compare", b, other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("different workloads") && err.contains("--allow-digest-mismatch"),
        "{err}"
    );
    let o = coordinator(&[
        "compare",
        b,
        other.to_str().unwrap(),
        "--allow-digest-mismatch",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    let o = coordinator(&["compare", b, "/nonexistent/new.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("/nonexistent/new.json"));
}
