//! The BEAM as a workload runtime: the agent starts an Erlang VM as a child
//! process (runtimes/beam/, embedded and compiled with `erlc` on first use),
//! streams it the jobs over the line protocol of docs/workload.md ("Other
//! runtimes") within the VM's credit, and feeds the per-job records it sends
//! back (timed on the VM's own monotonic clock) into the same recorder as the
//! tokio path, so snapshots, recovery and Done need no special case. The
//! same VM, started in server mode (`server`), is a WebSocket run's server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use cwbench::proto;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::buffers::Buffers;
use crate::engine::{Config, Outcome, Parts, Probe, Workload};
use crate::recorder::Recorder;

mod driver;
mod line;
mod server;
mod toolchain;

use driver::*;
pub use line::{
    Line, PROTOCOL, Record, SERVER_PROTOCOL, TaskRecord, header, parse_line, server_header,
};
pub use server::serve;
use toolchain::*;
pub use toolchain::{INSTALL_HINT, SOURCES, unavailable_reason};

/// The VM's own figures, from its `G` lines, for the session's gauges.
#[derive(Debug, Default)]
pub struct BeamGauges {
    queue_depth: AtomicU64,
    processes: AtomicU64,
    run_queue: AtomicU64,
    busy_us: AtomicU64,
    schedulers: AtomicU64,
    /// OS process id of the VM (0 before it started and once reaped).
    pid: AtomicU32,
    /// The VM's CPU times and RSS as last read: what the final snapshot,
    /// taken after the VM is gone, reports.
    cpu_user_us: AtomicU64,
    cpu_system_us: AtomicU64,
    rss_bytes: AtomicU64,
}

impl BeamGauges {
    pub fn queue_depth(&self) -> u64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    /// Gauges in the form the tokio path reports them: schedulers as
    /// runtime workers, processes as tasks alive, the run queues as the
    /// global queue, and the VM's RSS and CPU time (the aggregator adds the
    /// agent's own).
    /// Reads the VM's CPU times and RSS while it runs; keeps the last
    /// readings once it is gone (a read of an exited process gives zeros).
    fn refresh(&self) {
        let pid = self.pid.load(Ordering::Relaxed);
        if pid == 0 {
            return;
        }
        let (user, system) = cwbench::sysinfo::cpu_times_us_of(&pid.to_string());
        if user + system > 0 {
            self.cpu_user_us.store(user, Ordering::Relaxed);
            self.cpu_system_us.store(system, Ordering::Relaxed);
        }
        let rss = cwbench::sysinfo::rss_bytes_of(&pid.to_string());
        if rss > 0 {
            self.rss_bytes.store(rss, Ordering::Relaxed);
        }
    }

    pub fn to_proto(&self) -> proto::Gauges {
        self.refresh();
        proto::Gauges {
            queue_depth: self.queue_depth(),
            runtime_workers: self.schedulers.load(Ordering::Relaxed),
            alive_tasks: self.processes.load(Ordering::Relaxed),
            global_queue_depth: self.run_queue.load(Ordering::Relaxed),
            workers_busy_us: self.busy_us.load(Ordering::Relaxed),
            rss_bytes: self.rss_bytes.load(Ordering::Relaxed),
            cpu_user_us: self.cpu_user_us.load(Ordering::Relaxed),
            cpu_system_us: self.cpu_system_us.load(Ordering::Relaxed),
            ..Default::default()
        }
    }
}

impl Probe for BeamGauges {
    fn queue_depth(&self) -> u64 {
        BeamGauges::queue_depth(self)
    }

    fn gauges(&self) -> proto::Gauges {
        self.to_proto()
    }
}

/// Starts a BEAM run: the thread that compiles the modules if needed and
/// owns the VM. Errors say what is missing and how to install it.
pub fn start(cfg: Config) -> Result<Workload, String> {
    if let Some(r) = unavailable_reason() {
        return Err(r);
    }
    let (feed_tx, feed_rx) = mpsc::unbounded_channel();
    let (credit_tx, credit_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    let recorder = recorder(&cfg);
    let gauges = Arc::new(BeamGauges::default());
    let cancel = CancellationToken::new();
    let io = Io {
        feed: feed_rx,
        credit: credit_tx,
        rec: recorder.clone(),
        gauges: gauges.clone(),
        cancel: cancel.clone(),
    };
    let thread = vm_thread(done_tx, move |dir| async move {
        let g = io.gauges.clone();
        run_vm(&cfg, dir, g, |from, to| drive(&cfg, from, to, io)).await
    })?;
    Ok(Workload::from_parts(Parts {
        feed: feed_tx,
        credit: credit_rx,
        finished: done_rx,
        recorder,
        buffers: Arc::new(Buffers::new(0)),
        probe: gauges,
        cancel,
        thread,
    }))
}

/// The recorder a VM's records go to: one shard (one driver records). A
/// timed run's span is decided in the VM (M and X lines) and mirrored
/// here, so the recorder tells measured jobs as for tokio.
pub(crate) fn recorder(cfg: &Config) -> Arc<Recorder> {
    Arc::new(Recorder::new(
        1,
        cfg.classes,
        Arc::new(crate::span::Span::new(cfg.warmup, cfg.end)),
        Instant::now(),
        cfg.job_log,
    ))
}

/// The thread that owns a VM: compiles the modules if needed, runs `run`
/// (given the modules' directory) on a runtime of its own, and sends how
/// it ended on `done`. Shared by the workload and the server mode.
pub(crate) fn vm_thread<F, Fut>(
    done: oneshot::Sender<Outcome>,
    run: F,
) -> Result<std::thread::JoinHandle<()>, String>
where
    F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Outcome>,
{
    std::thread::Builder::new()
        .name("cwbench-beam".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = done.send(Outcome::Internal(format!(
                        "cannot build the BEAM driver's runtime: {e}"
                    )));
                    return;
                }
            };
            // Compiling takes a second or so: here, not on the server's
            // runtime, whose HTTP/2 keepalives must keep being answered.
            let outcome = match compiled_dir() {
                Ok(dir) => rt.block_on(run(dir)),
                Err(e) => Outcome::Internal(format!("cannot build the BEAM modules: {e}")),
            };
            let _ = done.send(outcome);
        })
        .map_err(|e| format!("cannot start the BEAM driver thread: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cwbench::digest::Digest;
    use cwbench::generator::Job;
    use tokio::io::AsyncWriteExt;

    use super::*;
    use tokio::io::AsyncBufReadExt;

    /// The module cache is keyed on the installation: another `erlc` (a
    /// different place or a replaced file) gives another id.
    #[test]
    fn installation_id_follows_the_erlang_binaries() {
        let base = std::env::temp_dir().join(format!("cwbench-otp-id-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("erl"), "vm").unwrap();
            std::fs::write(d.join("erlc"), "compiler 25").unwrap();
        }
        let id_a = installation_id_in(a.as_os_str());
        assert!(id_a.contains("erlc"), "{id_a}");
        assert_eq!(id_a, installation_id_in(a.as_os_str()));
        assert_ne!(id_a, installation_id_in(b.as_os_str()));
        std::fs::write(a.join("erlc"), "compiler 26.2").unwrap();
        assert_ne!(id_a, installation_id_in(a.as_os_str()));
        assert_eq!(installation_id_in(base.join("none").as_os_str()), "");
        std::fs::remove_dir_all(&base).unwrap();
    }

    pub(super) fn config() -> Config {
        Config {
            runtime: cwbench::spec::Flavor::Beam,
            workers: 4,
            queue_bound: 8,
            classes: 2,
            credit_chunk: 1,
            max_restarts: 3,
            kill_jobs: [7, 3].into_iter().collect(),
            ..Config::default()
        }
    }

    #[test]
    fn lines_parse() {
        assert_eq!(
            parse_line("READY otp=25 schedulers=2"),
            Ok(Line::Ready {
                schedulers: 2,
                port: None
            })
        );
        assert_eq!(
            parse_line("READY otp=25 schedulers=2 port=4100"),
            Ok(Line::Ready {
                schedulers: 2,
                port: Some(4100)
            })
        );
        assert_eq!(
            parse_line("T 7 1 1000 250 1 42 3 10 11 12"),
            Ok(Line::Task(TaskRecord {
                job: cwbench::generator::Job {
                    id: 7,
                    class: 1,
                    work_units: 1000,
                    sleep_us: 250,
                    crash: true,
                    intended_us: 42,
                },
                outcome: 3,
                read: 10,
                pickup: 11,
                end: 12,
            }))
        );
        assert_eq!(
            parse_line("W 3 1"),
            Ok(Line::Conns {
                open: 3,
                dropped: 1
            })
        );
        assert_eq!(parse_line("K 12"), Ok(Line::Credit(12)));
        assert_eq!(parse_line("L 1033"), Ok(Line::Late(1033)));
        assert_eq!(parse_line("S 5"), Ok(Line::Restart(5)));
        assert_eq!(parse_line("R 40"), Ok(Line::RestartLatency(40)));
        assert_eq!(
            parse_line("D 9 1 0 100 101 150 2300 2000 2150"),
            Ok(Line::Job(Record {
                id: 9,
                class: 1,
                outcome: 0,
                origin: 100,
                release: 101,
                pickup: 150,
                end: 2300,
                sleep_req: 2000,
                sleep_act: 2150,
            }))
        );
        assert_eq!(
            parse_line("G 3 4 80 1 123456"),
            Ok(Line::Gauge {
                queue: 3,
                in_flight: 4,
                processes: 80,
                run_queue: 1,
                busy_us: 123456
            })
        );
        assert_eq!(
            parse_line("END 4aa4b5e45aa2708c 1 0 0"),
            Ok(Line::End {
                digest: 0x4aa4_b5e4_5aa2_708c,
                jobs: 1,
                cancelled: 0,
                unreleased: 0
            })
        );
        assert_eq!(parse_line("M 1500"), Ok(Line::MeasureFrom(1500)));
        assert_eq!(parse_line("X"), Ok(Line::Stopped));
        assert_eq!(
            parse_line("F supervisor gave up: 4 crashes"),
            Ok(Line::Failed("supervisor gave up: 4 crashes".into()))
        );
        for bad in [
            "",
            "K",
            "K -1",
            "K 1 2",
            "D 1 2 3",
            "D 1 0 3 1 1 1 1 0 0",
            "END xyz 1 0 0",
            "END 4aa4b5e45aa2708c 1 0",
            "END 4aa4b5e45aa2708c 1 0 0 0",
            "X 1",
            "M",
            "READY otp=25",
            "READY otp=25 schedulers=1 port=70000",
            "T 1 0 0 0 2 0 0 1 2 3",
            "T 1 0 0 0 0 0 5 1 2 3",
            "T 1 4294967296 0 0 0 0 0 1 2 3",
            "T 1 0 0 0 0 0 0 1 2",
            "W 1",
            "HELLO 1",
        ] {
            let e = parse_line(bad).unwrap_err();
            assert!(e.contains("malformed line from the BEAM"), "{bad}: {e}");
        }
    }

    #[test]
    fn header_names_the_plan() {
        assert_eq!(
            header(&config()),
            "cwbench-beam 2 workers=4 bound=8 open=0 max_restarts=3 restart_window_ms=1000 backoff_ms=0 max_backoff_ms=0 probe_us=1000 timeout_ms=0 gauge_ms=100 warmup_jobs=0 warmup_us=0 end_us=0 end_jobs=0 kill=3,7\n"
        );
        let timed = Config {
            warmup: crate::span::Warmup::For(Duration::from_millis(250)),
            end: crate::span::End::After(Duration::from_secs(2)),
            ..config()
        };
        assert!(
            header(&timed).contains(" warmup_jobs=0 warmup_us=250000 end_us=2000000 end_jobs=0 "),
            "{}",
            header(&timed)
        );
    }

    /// A stand-in VM on in-memory pipes: completes every job it is sent and
    /// ends with `digest` (None: the right one).
    /// How a fake VM departs from the protocol.
    #[derive(Clone, Copy)]
    enum Lie {
        None,
        Digest(u64),
        /// The times of every `D` line: origin release pickup end.
        Times(&'static str),
        /// Five more jobs of credit than it was sent, once.
        Credit,
        /// No `D` line for job 0 (END still says it received every job).
        Drop,
    }

    async fn fake_vm(n: u64, digest: Option<u64>) -> (Outcome, Arc<Recorder>) {
        fake_vm_lying(n, digest.map_or(Lie::None, Lie::Digest)).await
    }

    async fn fake_vm_lying(n: u64, lie: Lie) -> (Outcome, Arc<Recorder>) {
        let (agent_side, vm_side) = tokio::io::duplex(1 << 16);
        let (vm_in, mut vm_out) = tokio::io::split(vm_side);
        let (agent_in, agent_out) = tokio::io::split(agent_side);
        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        let (credit_tx, _credit_rx) = mpsc::unbounded_channel();
        let span = crate::span::Span::new(crate::span::Warmup::Jobs(0), crate::span::End::Fed);
        let rec = Arc::new(Recorder::new(1, 2, Arc::new(span), Instant::now(), false));
        let io = Io {
            feed: feed_rx,
            credit: credit_tx,
            rec: rec.clone(),
            gauges: Arc::new(BeamGauges::default()),
            cancel: CancellationToken::new(),
        };
        let jobs: Vec<Job> = (0..n)
            .map(|id| Job {
                id,
                class: (id % 2) as u32,
                work_units: 10,
                sleep_us: 0,
                crash: false,
                intended_us: 0,
            })
            .collect();
        let mut d = Digest::new();
        jobs.iter().for_each(|j| d.push(j));
        let end_digest = match lie {
            Lie::Digest(x) => x,
            _ => d.value(),
        };
        feed_tx.send(jobs).unwrap();
        drop(feed_tx);
        let vm = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(vm_in).lines();
            let header = lines.next_line().await.unwrap().unwrap();
            assert!(header.starts_with("cwbench-beam 2 "), "{header}");
            vm_out
                .write_all(b"READY otp=25 schedulers=1\n")
                .await
                .unwrap();
            while let Ok(Some(l)) = lines.next_line().await {
                if l == "E" {
                    break;
                }
                let f: Vec<u64> = l[2..].split(' ').map(|x| x.parse().unwrap()).collect();
                let times = match lie {
                    Lie::Times(t) => t,
                    _ => "10 10 20 30",
                };
                let mut out = match lie {
                    Lie::Credit if f[0] == 0 => "K 6\n".to_string(),
                    _ => "K 1\n".to_string(),
                };
                if !matches!(lie, Lie::Drop if f[0] == 0) {
                    out += &format!("D {} {} 0 {times} 0 0\n", f[0], f[1]);
                }
                if vm_out.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
            let end = format!("G 0 0 40 0 1000\nEND {end_digest:016x} {n} 0 0\n");
            let _ = vm_out.write_all(end.as_bytes()).await;
        });
        let outcome = drive(
            &config(),
            tokio::io::BufReader::new(agent_in),
            agent_out,
            io,
        )
        .await;
        vm.await.unwrap();
        (outcome, rec)
    }

    #[tokio::test]
    async fn records_from_the_vm_land_in_the_recorder() {
        // More jobs than the VM's window: credit must flow back.
        let (outcome, rec) = fake_vm(3000, None).await;
        assert_eq!(outcome, Outcome::Finished);
        let mut agg = crate::recorder::Aggregator::new(2, Default::default());
        let done = agg.done(&rec, 0);
        let t = done.totals.unwrap();
        assert_eq!((t.completed, t.crashed, t.cancelled), (3000, 0, 0));
        assert_eq!(done.classes.len(), 2);
    }

    #[tokio::test]
    async fn a_wrong_digest_from_the_vm_is_an_error() {
        let (outcome, _) = fake_vm(10, Some(0x1234)).await;
        let Outcome::Internal(m) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            m.starts_with("parity check failed: the BEAM ran 10 jobs with digest 0000000000001234, the agent sent it 10 with digest "),
            "{m}"
        );
    }

    /// What a runtime says is checked: times in order and not in the
    /// future, credit for no more jobs than it was sent, and every job
    /// accounted for at END.
    #[tokio::test]
    async fn a_vm_that_lies_is_an_error() {
        for (lie, want) in [
            (
                Lie::Times("10 10 5 30"),
                "with times out of order or in the future (origin 10 release 10 pickup 5 end 30",
            ),
            (
                Lie::Times("10 10 20 100000000000000"),
                "with times out of order or in the future",
            ),
            (
                Lie::Times("10 10 20 18446744073709551615"),
                "with times out of order or in the future",
            ),
            (Lie::Times("30 10 20 40"), "with times out of order"),
            (
                Lie::Credit,
                "the BEAM returned credit for 11 jobs, but was sent 10",
            ),
            (
                Lie::Drop,
                "accounting check failed: the BEAM received 10 jobs but reported 9 finished and 0 cancelled",
            ),
        ] {
            let (outcome, _) = fake_vm_lying(10, lie).await;
            let Outcome::Internal(m) = outcome else {
                panic!("{want}: {outcome:?}");
            };
            assert!(m.contains(want), "{want}: {m}");
        }
        assert_eq!(fake_vm_lying(10, Lie::None).await.0, Outcome::Finished);
    }

    /// Runs 500 jobs (jobs 100 and 200 crash, the workers holding jobs 3
    /// and 7 are killed) on the real VM; None when Erlang is missing.
    fn real_vm(max_restarts: u32) -> Option<(Outcome, proto::Done)> {
        real_vm_with(max_restarts, 500, &[100, 200])
    }

    /// Runs `n` jobs, those in `crash` crashing, on the real VM.
    fn real_vm_with(max_restarts: u32, n: u64, crash: &[u64]) -> Option<(Outcome, proto::Done)> {
        real_vm_sized(
            Config {
                max_restarts,
                ..config()
            },
            n,
            crash,
        )
    }

    /// Runs `n` jobs of `cfg`, those in `crash` crashing, on the real VM.
    fn real_vm_sized(cfg: Config, n: u64, crash: &[u64]) -> Option<(Outcome, proto::Done)> {
        if let Some(why) = unavailable_reason() {
            eprintln!("SKIP: the BEAM tests: {why}");
            return None;
        }
        let mut wl = crate::workload::Workload::start(cfg).expect("starts");
        let jobs: Vec<Job> = (0..n)
            .map(|id| Job {
                id,
                class: (id % 2) as u32,
                work_units: 1000,
                sleep_us: if id % 3 == 0 { 500 } else { 0 },
                crash: crash.contains(&id),
                intended_us: 0,
            })
            .collect();
        wl.recorder.received.fetch_add(n, Ordering::Relaxed);
        // In batches, as the session feeds it.
        for chunk in jobs.chunks(4096) {
            wl.feed(chunk.to_vec());
        }
        wl.end_of_jobs();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(30), &mut wl.finished).await
            })
            .expect("ends within 30 s")
            .unwrap();
        let mut agg = crate::recorder::Aggregator::new(2, Default::default());
        Some((outcome, agg.done(&wl.recorder, 0)))
    }

    #[test]
    fn the_real_vm_runs_jobs_and_restarts_workers() {
        let Some((outcome, done)) = real_vm(10) else {
            return;
        };
        assert_eq!(outcome, Outcome::Finished);
        let t = done.totals.unwrap();
        assert_eq!((t.completed, t.crashed, t.cancelled), (496, 4, 0));
        assert_eq!(t.restarts, 4);
        assert!(!done.restart_latency.is_empty());
        assert!(!done.lateness.is_empty());
    }

    #[test]
    fn a_cancelled_vm_counts_every_job_once() {
        if let Some(why) = unavailable_reason() {
            eprintln!("SKIP: a_cancelled_vm_counts_every_job_once: {why}");
            return;
        }
        let mut wl = crate::workload::Workload::start(config()).expect("starts");
        // 4 workers, 20 ms per job: 3,000 jobs take far longer than the test.
        let jobs: Vec<Job> = (0..3000)
            .map(|id| Job {
                id,
                sleep_us: 20_000,
                ..Default::default()
            })
            .collect();
        wl.recorder.received.fetch_add(3000, Ordering::Relaxed);
        wl.feed(jobs);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = rt.block_on(async {
            // Cancel once the VM is up and has jobs in hand (a loaded
            // machine may take a while to start it).
            let t = Instant::now();
            while wl.recorder.released.load(Ordering::Relaxed) < 8 {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "the VM never took a job"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            wl.cancel();
            tokio::time::timeout(Duration::from_secs(5), &mut wl.finished).await
        });
        assert_eq!(
            outcome.expect("ends soon after the cancel").unwrap(),
            Outcome::Finished
        );
        let mut agg = crate::recorder::Aggregator::new(2, Default::default());
        let t = agg.done(&wl.recorder, 0).totals.unwrap();
        assert!(t.cancelled > 0, "{t:?}");
        assert_eq!(t.completed + t.crashed + t.cancelled, 3000, "{t:?}");
    }

    #[test]
    fn the_real_vm_gives_up_past_the_restart_intensity() {
        let Some((outcome, done)) = real_vm(3) else {
            return;
        };
        let Outcome::PoolFailed(m) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            m.starts_with("supervisor gave up: 4 crashes within 1000 ms"),
            "{m}"
        );
        let t = done.totals.unwrap();
        assert_eq!(t.restarts, 3);
        assert_eq!(t.completed + t.crashed + t.cancelled, 500, "{t:?}");
    }

    /// The pool fails with jobs still on their way to the VM (written past
    /// its window) and many more in the agent's buffer: every job is still
    /// counted once, and the parity check holds.
    #[test]
    fn a_pool_failing_mid_stream_counts_every_job_once() {
        let Some((outcome, done)) = real_vm_with(3, 20_000, &[3000, 3001, 3002, 3003, 3004]) else {
            return;
        };
        let Outcome::PoolFailed(m) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(m.starts_with("supervisor gave up: 4 crashes"), "{m}");
        let t = done.totals.unwrap();
        assert!(t.cancelled > 10_000, "{t:?}");
        assert_eq!(t.completed + t.crashed + t.cancelled, 20_000, "{t:?}");
    }

    /// A timed closed loop on the VM: it decides at release, as the tokio
    /// producers do, so a count is exact, the rest is unreleased, and the
    /// agent learns it has stopped (to tell the coordinator).
    #[test]
    fn the_real_vm_runs_a_timed_closed_loop() {
        use crate::span::{End, Warmup};
        let cfg = Config {
            warmup: Warmup::Jobs(100),
            end: End::Jobs(1_000),
            kill_jobs: Default::default(),
            ..config()
        };
        let Some((outcome, done)) = real_vm_sized(cfg, 5_000, &[]) else {
            return;
        };
        assert_eq!(outcome, Outcome::Finished);
        let t = done.totals.unwrap();
        assert_eq!(t.measured_completed, 1_000, "{t:?}");
        assert_eq!(t.completed, 1_100, "{t:?}");
        assert_eq!(t.completed + t.unreleased + t.cancelled, 5_000, "{t:?}");
        assert!(t.unreleased >= 3_900, "{t:?}");

        // By time: a 300 ms warm-up, then 200 ms measured.
        let cfg = Config {
            warmup: Warmup::For(Duration::from_millis(300)),
            end: End::After(Duration::from_millis(200)),
            kill_jobs: Default::default(),
            ..config()
        };
        let Some((outcome, done)) = real_vm_sized(cfg, 200_000, &[]) else {
            return;
        };
        assert_eq!(outcome, Outcome::Finished);
        let t = done.totals.unwrap();
        assert!(t.measured_completed > 0, "{t:?}");
        assert!(
            t.completed > t.measured_completed,
            "warm-up jobs too: {t:?}"
        );
        assert!(t.unreleased > 0, "{t:?}");
        assert_eq!(t.completed + t.unreleased + t.cancelled, 200_000, "{t:?}");
        // The measured window: first measured release to last completion.
        let w = done.measured_window_us;
        assert!((200_000..1_500_000).contains(&w), "window {w} µs: {t:?}");
    }
}
