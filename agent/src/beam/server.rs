//! The BEAM as a WebSocket task server (docs/websocket.md, "The BEAM server"): the VM started in server mode (`cwbench-beam-ws` header), listening itself; the agent records the tasks it reports (T lines) as the tokio server records its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cwbench::generator::Job;
use cwbench::proto;
use cwbench::spec::Dispatch;
use cwbench::wsproto::TaskSet;
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::BeamGauges;
use super::driver::{CANCEL_GRACE, State, read_line, run_vm, sleep_until, write_all};
use super::line::{Line, TaskRecord, server_header};
use super::toolchain::unavailable_reason;
use crate::buffers::Buffers;
use crate::engine::{Config, Outcome, Parts, Workload};
use crate::recorder::{Recorder, Timing};

/// From READY's absence to giving up: compiling the modules on first use
/// and starting the VM on a loaded machine.
const START_WAIT: Duration = Duration::from_secs(60);
/// After end of jobs: the VM drains for 10 s, then cancels; past this the
/// agent stops waiting for its END.
const END_WAIT: Duration = Duration::from_secs(15);

/// What the server's driver is connected to.
struct ServerIo {
    feed: mpsc::UnboundedReceiver<Vec<Job>>,
    rec: Arc<Recorder>,
    gauges: Arc<BeamGauges>,
    cancel: CancellationToken,
    /// The port the VM listens on, once it says READY.
    ready: std::sync::mpsc::Sender<Result<u16, String>>,
}

/// Starts the VM as the run's WebSocket server on `ws.port` (0 = any).
/// Returns once it listens: the running workload (fed no jobs; it ends at
/// `end_of_jobs`) and the bound port.
pub fn serve(cfg: Config, ws: &proto::WebSocket) -> Result<(Workload, u16), String> {
    serve_with(cfg, ws).map(|(wl, port, _)| (wl, port))
}

/// `serve`, and the VM's gauges (its pid while it runs).
fn serve_with(
    cfg: Config,
    ws: &proto::WebSocket,
) -> Result<(Workload, u16, Arc<BeamGauges>), String> {
    check(&cfg, ws)?;
    if let Some(r) = unavailable_reason() {
        return Err(r);
    }
    let rec = super::recorder(&cfg);
    let gauges = Arc::new(BeamGauges::default());
    let cancel = CancellationToken::new();
    let (feed_tx, feed_rx) = mpsc::unbounded_channel();
    let (_credit_tx, credit_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let io = ServerIo {
        feed: feed_rx,
        rec: rec.clone(),
        gauges: gauges.clone(),
        cancel: cancel.clone(),
        ready: ready_tx.clone(),
    };
    let ws = ws.clone();
    let thread = super::vm_thread(done_tx, move |dir| async move {
        let g = io.gauges.clone();
        let outcome = run_vm(&cfg, dir, g, |from, to| drive(&cfg, &ws, from, to, io)).await;
        // Ended before READY: start() says why.
        let _ = ready_tx.send(Err(match &outcome {
            Outcome::Internal(m) | Outcome::PoolFailed(m) => m.clone(),
            Outcome::Finished => "the BEAM server ended before it listened".into(),
        }));
        outcome
    })?;
    let wl = Workload::from_parts(Parts {
        feed: feed_tx,
        credit: credit_rx,
        finished: done_rx,
        recorder: rec,
        buffers: Arc::new(Buffers::new(0)),
        probe: gauges.clone(),
        cancel,
        thread,
    });
    // Starting the VM takes a second or so (more on a first run, which
    // compiles the modules): on a multi-thread runtime, its other tasks
    // (the agent's gRPC streams) go on meanwhile.
    let wait = || ready_rx.recv_timeout(START_WAIT);
    let ready = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    };
    match ready {
        Ok(Ok(port)) => Ok((wl, port, gauges)),
        Ok(Err(e)) => Err(e),
        // Dropping `wl` cancels the VM.
        Err(_) => Err(format!(
            "the BEAM server did not listen within {} s",
            START_WAIT.as_secs()
        )),
    }
}

/// The profile and WebSocket fields the BEAM server needs.
fn check(cfg: &Config, ws: &proto::WebSocket) -> Result<(), String> {
    if cfg.dispatch != Dispatch::TaskPerJob {
        return Err(format!(
            "profile.dispatch = {}: a WebSocket server on runtime = \"beam\" runs task-per-job (a process per task)",
            cwbench::spec::enum_name(&cfg.dispatch)
        ));
    }
    if ws.in_flight == 0 {
        return Err(
            "websocket.in_flight = 0: tasks in flight per connection must be at least 1".into(),
        );
    }
    u16::try_from(ws.port).map_err(|_| format!("websocket.port = {}: not a TCP port", ws.port))?;
    Ok(())
}

/// What the driver counts of the VM's T lines, to check its END against.
#[derive(Default)]
struct Tally {
    /// The plan's classes: a task of another is the VM's error.
    classes: u32,
    tasks: TaskSet,
    cancelled: u64,
}

/// Runs the server mode's protocol until the VM's END: the header, then E
/// at end of jobs or C on a cancel; records every line the VM sends.
async fn drive<R, W>(
    cfg: &Config,
    ws: &proto::WebSocket,
    mut from: R,
    to: W,
    mut io: ServerIo,
) -> Outcome
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (wtx, wrx) = mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(write_all(to, wrx));
    let _ = wtx.send(server_header(cfg, ws).into_bytes()).await;
    let rec = io.rec.clone();
    let mut st = State::new(cfg.classes as u32);
    let mut tally = Tally {
        classes: cfg.classes as u32,
        ..Tally::default()
    };
    let (mut feed_open, mut cancel_sent) = (true, false);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut line = Vec::with_capacity(256);
    let outcome = loop {
        tokio::select! {
            biased;
            _ = io.cancel.cancelled(), if !cancel_sent => {
                cancel_sent = true;
                let _ = wtx.send(b"C\n".to_vec()).await;
                deadline = Some(tokio::time::Instant::now() + CANCEL_GRACE);
            }
            r = read_line(&mut from, &mut line) => {
                let l = match r.and_then(|t| super::parse_line(&t)) {
                    Ok(l) => l,
                    Err(e) => break Outcome::Internal(e),
                };
                match on_line(l, &mut st, &rec, &io, &mut tally) {
                    Ok(None) => {}
                    Ok(Some(end)) => break end,
                    Err(e) => break Outcome::Internal(e),
                }
            }
            jobs = io.feed.recv(), if feed_open => match jobs {
                Some(jobs) => {
                    tracing::warn!(jobs = jobs.len(), "a WebSocket server is fed no jobs: counted cancelled");
                    rec.cancelled.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                }
                None => {
                    feed_open = false;
                    if !cancel_sent {
                        let _ = wtx.send(b"E\n".to_vec()).await;
                        deadline = Some(tokio::time::Instant::now() + END_WAIT);
                    }
                }
            },
            _ = sleep_until(deadline) => {
                break Outcome::Internal(format!(
                    "the BEAM server did not end within {} ms of being told to",
                    if cancel_sent { CANCEL_GRACE } else { END_WAIT }.as_millis()
                ));
            }
        }
    };
    drop(wtx);
    writer.abort();
    outcome
}

/// One line from the VM; Some(outcome) at its END.
fn on_line(
    l: Line,
    st: &mut State,
    rec: &Recorder,
    io: &ServerIo,
    tally: &mut Tally,
) -> Result<Option<Outcome>, String> {
    match l {
        Line::Ready {
            port: Some(port), ..
        } => {
            st.apply(l, rec, &io.gauges)?;
            let _ = io.ready.send(Ok(port));
        }
        Line::Ready { port: None, .. } => {
            return Err("the BEAM server's READY names no port".into());
        }
        Line::Late(_) | Line::Gauge { .. } | Line::Error(_) => {
            st.apply(l, rec, &io.gauges)?;
        }
        Line::Task(t) => task(&t, st, rec, tally)?,
        Line::Conns { open, dropped } => {
            rec.ws.connections.store(open, Ordering::Relaxed);
            rec.ws.dropped.store(dropped, Ordering::Relaxed);
        }
        Line::End {
            digest,
            jobs,
            cancelled,
            ..
        } => return Ok(Some(end(digest, jobs, cancelled, tally))),
        other => return Err(format!("a workload's line from the BEAM server: {other:?}")),
    }
    Ok(None)
}

/// One task the VM read, recorded as the tokio server records its own.
fn task(t: &TaskRecord, st: &State, rec: &Recorder, tally: &mut Tally) -> Result<(), String> {
    let job = &t.job;
    if job.class >= tally.classes {
        return Err(format!(
            "the BEAM server reported task {} of class {}, but the plan has {} classes",
            job.id, job.class, tally.classes
        ));
    }
    if !st.in_order(&[t.read, t.pickup, t.end]) {
        return Err(format!(
            "the BEAM server reported task {} with times out of order or in the future (read {} pickup {} end {} µs)",
            job.id, t.read, t.pickup, t.end
        ));
    }
    let (read, pickup, end) = (st.vm_ns(t.read)?, st.vm_ns(t.pickup)?, st.vm_ns(t.end)?);
    tally.tasks.push(job);
    rec.received.fetch_add(1, Ordering::Relaxed);
    rec.released.fetch_add(1, Ordering::Relaxed);
    rec.ws.task_set.lock().push(job);
    rec.span.begin(read);
    match t.outcome {
        3 => {
            rec.ws.refused.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        4 => {
            tally.cancelled += 1;
            rec.cancelled.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        _ => {}
    }
    rec.released(job, read, read);
    rec.log_job(job, read, pickup, end, t.outcome);
    match t.outcome {
        0 => rec.completed(
            0,
            job,
            &Timing {
                origin: read,
                pickup,
                done: end,
                overshoot_us: None,
            },
        ),
        1 => rec.crashed(0, end),
        _ => {
            rec.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// The VM's END against its T lines: every task it read reported once.
fn end(digest: u64, tasks: u64, cancelled: u64, tally: &Tally) -> Outcome {
    let t = tally.tasks;
    if digest != t.sum || tasks != t.count {
        return Outcome::Internal(format!(
            "parity check failed: the BEAM server read {tasks} tasks with task-set digest {digest:016x}, its task lines carry {} with {:016x}",
            t.count, t.sum
        ));
    }
    if cancelled != tally.cancelled {
        return Outcome::Internal(format!(
            "accounting check failed: the BEAM server cancelled {cancelled} tasks, its task lines say {}",
            tally.cancelled
        ));
    }
    Outcome::Finished
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A cancel mid-task ends the run within the grace, with the task
    /// counted cancelled, and the VM is gone (reaped) when it has ended.
    #[test]
    fn a_cancelled_server_leaves_no_vm() {
        if let Some(why) = unavailable_reason() {
            eprintln!("SKIP: a_cancelled_server_leaves_no_vm: {why}");
            return;
        }
        let cfg = Config {
            dispatch: Dispatch::TaskPerJob,
            ..super::super::tests::config()
        };
        let ws = proto::WebSocket {
            in_flight: 4,
            ..Default::default()
        };
        let (mut wl, port, gauges) = serve_with(cfg, &ws).unwrap();
        let pid = gauges.pid.load(Ordering::Relaxed);
        assert!(pid > 0);
        let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
        assert!(alive());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = rt.block_on(async {
            use futures_util::SinkExt;
            let url = format!("ws://127.0.0.1:{port}/");
            let (mut c, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let mut b = Vec::new();
            let job = Job {
                id: 1,
                sleep_us: 5_000_000,
                ..Default::default()
            };
            cwbench::wsproto::encode_task(&job, &mut b);
            c.send(tokio_tungstenite::tungstenite::Message::Binary(b.into()))
                .await
                .unwrap();
            let t = Instant::now();
            while wl.recorder.in_flight() == 0 {
                assert!(t.elapsed() < Duration::from_secs(5), "the task never ran");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            wl.cancel();
            tokio::time::timeout(Duration::from_millis(2500), &mut wl.finished).await
        });
        assert_eq!(
            outcome.expect("ends soon after the cancel").unwrap(),
            Outcome::Finished
        );
        assert!(!alive(), "the VM (pid {pid}) outlived its run");
        let mut agg = crate::recorder::Aggregator::new(2, Default::default());
        let t = agg.done(&wl.recorder, 0).totals.unwrap();
        assert_eq!((t.received, t.cancelled), (1, 1), "{t:?}");
    }

    /// A port already taken: the start fails, naming the field.
    #[test]
    fn a_taken_port_is_a_clear_error() {
        if let Some(why) = unavailable_reason() {
            eprintln!("SKIP: a_taken_port_is_a_clear_error: {why}");
            return;
        }
        let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let cfg = Config {
            dispatch: Dispatch::TaskPerJob,
            ..super::super::tests::config()
        };
        let ws = proto::WebSocket {
            in_flight: 4,
            port: taken.local_addr().unwrap().port().into(),
            ..Default::default()
        };
        let e = serve(cfg, &ws).map(|_| ()).unwrap_err();
        assert!(e.contains("cannot listen on 0.0.0.0:"), "{e}");
        assert!(e.contains("(websocket.port)"), "{e}");
    }
}
