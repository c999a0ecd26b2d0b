//! A WebSocket client's connections: opened at the configured rate, one
//! writer and one reader task each, tasks matched to answers by id; a lost
//! connection fails its outstanding tasks (counted, never dropped) and is
//! opened again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cwbench::generator::Job;
use cwbench::wsproto::{self, Response, TaskSet};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::recorder::Recorder;

/// A client's settings (plan.websocket, role client).
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    pub connections: usize,
    /// Connections opened per second; 0 = all at once.
    pub connect_rate: u32,
    /// Closed loop: tasks outstanding per connection.
    pub in_flight: usize,
    pub json: bool,
    /// wss:// with CAs of the run's own besides the system's (built once,
    /// when the run is accepted); None: plain, or the system's CAs only.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// How one task's round trip ended.
#[derive(Debug)]
pub enum Answer {
    /// The server answered. ns, agent clock: when the frame was written
    /// and when the answer was read.
    Answered {
        sent: u64,
        done: u64,
        response: Response,
    },
    /// Its connection failed or closed before the answer, or no connection
    /// could take it.
    Lost,
    /// The run was cancelled first.
    Cancelled,
}

/// A task on its way to a writer.
struct Request {
    job: Job,
    reply: oneshot::Sender<Answer>,
}

/// Outstanding tasks of one connection, by id: the reply and when the
/// frame was written (0 = not yet).
type Pending = Arc<Mutex<HashMap<u64, (oneshot::Sender<Answer>, u64)>>>;

/// A connection's place: the sender to its writer while it is up, and its
/// closed-loop in-flight bound.
struct Slot {
    tx: Mutex<Option<mpsc::UnboundedSender<Request>>>,
    credit: Arc<Semaphore>,
}

/// How long a client waits for a first connection, and for one connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnects of one slot before it gives up for the rest of the run.
const MAX_RECONNECTS: u32 = 5;

/// The client's connections.
pub struct Connections {
    cfg: Remote,
    slots: Vec<Slot>,
    /// Slots whose connection has been started (in order): a task looks
    /// for a connection among these only, not among all (during a ramp to
    /// 10,000 most slots are still down).
    opened: AtomicUsize,
    next: AtomicUsize,
    /// Signalled when a connection comes up, or the last one gives up.
    up: Notify,
    /// Slots that gave up (MAX_RECONNECTS failed): once all have, a task
    /// is lost at once instead of waiting CONNECT_TIMEOUT for none.
    dead: AtomicUsize,
    /// Why the first connect failed (a refused certificate, a refused
    /// connection): logged once, the rest counted; the run's failure when
    /// no connection ever opened.
    first_error: Mutex<Option<String>>,
    /// A connection opened at least once.
    ever_up: std::sync::atomic::AtomicBool,
    rec: Arc<Recorder>,
    /// Stops the connection tasks at the end of the run.
    close: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("url", &self.cfg.url)
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Connections {
    /// Starts opening the connections (on the current runtime), at the
    /// configured rate.
    pub fn open(cfg: Remote, rec: Arc<Recorder>, closed_loop: bool) -> Arc<Self> {
        let per = if closed_loop {
            cfg.in_flight.max(1)
        } else {
            Semaphore::MAX_PERMITS
        };
        let c = Arc::new(Self {
            slots: (0..cfg.connections.max(1))
                .map(|_| Slot {
                    tx: Mutex::new(None),
                    credit: Arc::new(Semaphore::new(per)),
                })
                .collect(),
            cfg,
            opened: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            up: Notify::new(),
            dead: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            ever_up: Default::default(),
            rec,
            close: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let opener = c.clone();
        let h = tokio::spawn(async move { opener.open_all().await });
        c.tasks.lock().push(h);
        c
    }

    async fn open_all(self: Arc<Self>) {
        let gap = match self.cfg.connect_rate {
            0 => Duration::ZERO,
            r => Duration::from_secs_f64(1.0 / f64::from(r)),
        };
        let start = tokio::time::Instant::now();
        for i in 0..self.slots.len() {
            if !gap.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep_until(start + gap * i as u32) => {}
                    _ = self.close.cancelled() => return,
                }
            }
            let c = self.clone();
            let h = tokio::spawn(async move { c.keep(i).await });
            self.tasks.lock().push(h);
            self.opened.store(i + 1, Ordering::Release);
        }
    }

    /// Slot `i`'s connection for the run: opened, served, opened again
    /// when lost (up to MAX_RECONNECTS times).
    async fn keep(self: Arc<Self>, i: usize) {
        let mut attempts = 0u32;
        loop {
            let started = crate::clock::now();
            // No Nagle: a task must not wait for the next to fill a packet.
            let cfg = Some(super::ws_config(0));
            let dial = tokio_tungstenite::connect_async_tls_with_config(
                self.cfg.url.as_str(),
                cfg,
                true,
                self.cfg.tls.clone().map(Connector::Rustls),
            );
            let ws = tokio::select! {
                r = tokio::time::timeout(CONNECT_TIMEOUT, dial) => r,
                _ = self.close.cancelled() => return,
            };
            match ws {
                Ok(Ok((ws, _))) => {
                    self.ever_up.store(true, Ordering::Relaxed);
                    let us = crate::recorder::us(started, crate::clock::now());
                    cwbench::histogram::record(&mut self.rec.ws.connect.lock(), us);
                    self.serve(i, ws).await;
                }
                Ok(Err(e)) => self.connect_failed(e.to_string()),
                Err(_) => self.connect_failed(format!("no handshake within {CONNECT_TIMEOUT:?}")),
            }
            if self.close.is_cancelled() {
                return;
            }
            if attempts >= MAX_RECONNECTS {
                if self.dead.fetch_add(1, Ordering::AcqRel) + 1 == self.slots.len() {
                    self.up.notify_waiters();
                }
                return;
            }
            attempts += 1;
            self.rec.ws.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50 << attempts.min(5))).await;
        }
    }

    /// Serves one open connection until it closes or the run ends.
    async fn serve(
        &self,
        i: usize,
        ws: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) {
        let (sink, stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        *self.slots[i].tx.lock() = Some(tx);
        self.rec.ws.connections.fetch_add(1, Ordering::Relaxed);
        self.up.notify_waiters();
        let mut set = TaskSet::default();
        let writer = write(
            sink,
            rx,
            pending.clone(),
            self.cfg.json,
            &mut set,
            &self.close,
        );
        let reader = read(stream, pending.clone());
        tokio::select! {
            _ = writer => {}
            _ = reader => {}
        }
        self.rec.ws.task_set.lock().merge(set);
        // Down: new tasks go elsewhere; what was outstanding is lost.
        *self.slots[i].tx.lock() = None;
        self.rec.ws.connections.fetch_sub(1, Ordering::Relaxed);
        for (_, (reply, _)) in pending.lock().drain() {
            let _ = reply.send(Answer::Lost);
        }
    }

    /// Sends `job` on the next connection that is up and waits for its
    /// answer (a closed loop first waits for that connection's credit).
    pub async fn round_trip(&self, job: Job, cancel: &CancellationToken) -> Answer {
        let Some((tx, _permit)) = self.pick(cancel).await else {
            return if cancel.is_cancelled() {
                Answer::Cancelled
            } else {
                Answer::Lost
            };
        };
        let (reply, answer) = oneshot::channel();
        if tx.send(Request { job, reply }).is_err() {
            return Answer::Lost;
        }
        tokio::select! {
            a = answer => a.unwrap_or(Answer::Lost),
            _ = cancel.cancelled() => Answer::Cancelled,
        }
    }

    /// The next connection that is up, round robin, with its credit; waits
    /// for one to come up (at most CONNECT_TIMEOUT).
    async fn pick(
        &self,
        cancel: &CancellationToken,
    ) -> Option<(
        mpsc::UnboundedSender<Request>,
        tokio::sync::OwnedSemaphorePermit,
    )> {
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        loop {
            if self.dead.load(Ordering::Acquire) == self.slots.len() {
                return None;
            }
            let n = self.opened.load(Ordering::Acquire).max(1);
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            for k in 0..n {
                let slot = &self.slots[(start + k) % n];
                let Some(tx) = slot.tx.lock().clone() else {
                    continue;
                };
                let permit = tokio::select! {
                    p = slot.credit.clone().acquire_owned() => p.ok()?,
                    _ = cancel.cancelled() => return None,
                };
                return Some((tx, permit));
            }
            let up = self.up.notified();
            tokio::select! {
                _ = up => {}
                _ = tokio::time::sleep_until(deadline) => return None,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = cancel.cancelled() => return None,
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// A connect failed: counted; the first one's reason logged and kept.
    fn connect_failed(&self, why: String) {
        self.rec.ws.connect_failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock();
        if first.is_none() {
            tracing::warn!("connecting to {} failed: {why}", self.cfg.url);
            *first = Some(why);
        }
    }

    /// Closes every connection (after the last task's answer) and waits
    /// for their tasks, at most a few seconds. An error when no connection
    /// ever opened: the run measured nothing of the server.
    pub async fn close(&self) -> Result<(), String> {
        self.close.cancel();
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock());
        let all = futures_util::future::join_all(tasks);
        let _ = tokio::time::timeout(Duration::from_secs(5), all).await;
        match self.first_error.lock().take() {
            Some(why) if !self.ever_up.load(Ordering::Relaxed) => Err(format!(
                "no WebSocket connection to {} could be opened: {why}",
                self.cfg.url
            )),
            _ => Ok(()),
        }
    }
}

/// Writes each task as a frame, flushing when no more are waiting; stamps
/// its send time; adds it to the connection's task set. Ends on a write error or
/// at the end of the run (with a close frame).
async fn write<S>(
    mut sink: S,
    mut rx: mpsc::UnboundedReceiver<Request>,
    pending: Pending,
    json: bool,
    set: &mut TaskSet,
    close: &CancellationToken,
) where
    S: futures_util::Sink<Message> + Unpin,
{
    let mut buf = Vec::new();
    loop {
        let req = tokio::select! {
            r = rx.recv() => r,
            _ = close.cancelled() => None,
        };
        let Some(Request { job, reply }) = req else {
            let _ = sink.send(Message::Close(None)).await;
            break;
        };
        let id = job.id;
        pending.lock().insert(id, (reply, 0));
        let msg = if json {
            Message::text(wsproto::task_json(&job))
        } else {
            buf.clear();
            wsproto::encode_task(&job, &mut buf);
            Message::binary(buf.clone())
        };
        let r = if rx.is_empty() {
            sink.send(msg).await
        } else {
            sink.feed(msg).await
        };
        if r.is_err() {
            break;
        }
        set.push(&job);
        if let Some(e) = pending.lock().get_mut(&id) {
            e.1 = crate::clock::now_ns();
        }
    }
}

/// Reads answers and hands each to its task. Ends when the connection
/// closes or sends what is not an answer.
async fn read<S>(mut stream: S, pending: Pending)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(msg)) = stream.next().await {
        let done = crate::clock::now_ns();
        let response = match &msg {
            Message::Binary(b) => wsproto::decode_response(b),
            Message::Text(t) => wsproto::response_from_json(t),
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(response) = response else {
            tracing::warn!(
                "the server sent what is not an answer: {:?}",
                response.err()
            );
            break;
        };
        if let Some((reply, sent)) = pending.lock().remove(&response.id) {
            let sent = if sent == 0 { done } else { sent };
            let _ = reply.send(Answer::Answered {
                sent,
                done,
                response,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use cwbench::proto;
    use cwbench::wsproto::{Outcome, Response, TaskSet};
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;

    use crate::host::AgentConfig;
    use crate::recorder::Aggregator;
    use crate::workload::{Outcome as End, Workload};

    /// A server that answers every task at once: crashes as Crashed, and
    /// closes each connection after its `close_after`-th task (0 = never),
    /// unanswered, to lose it.
    async fn answering_server(close_after: usize) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                    let mut n = 0;
                    while let Some(Ok(Message::Binary(b))) = ws.next().await {
                        n += 1;
                        if n == close_after {
                            return;
                        }
                        let job = cwbench::wsproto::decode_task(&b).unwrap();
                        let r = Response {
                            id: job.id,
                            outcome: if job.crash {
                                Outcome::Crashed
                            } else {
                                Outcome::Completed
                            },
                            queue_wait_ns: 0,
                            service_ns: 0,
                        };
                        let mut out = Vec::new();
                        cwbench::wsproto::encode_response(&r, &mut out);
                        if ws.send(Message::binary(out)).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        url
    }

    fn start(url: &str, connections: u32) -> proto::Start {
        proto::Start {
            run_id: "ws".into(),
            protocol_version: cwbench::PROTOCOL_VERSION,
            profile: Some(proto::Profile {
                workers: 1,
                queue_bound: 8,
                producers: 1,
                dispatch: proto::Dispatch::TaskPerJob as i32,
                ..Default::default()
            }),
            plan: Some(proto::Plan {
                classes: vec!["c".into()],
                snapshot_interval_ms: 1000,
                prefetch_jobs: 65_536,
                websocket: Some(proto::WebSocket {
                    role: proto::web_socket::Role::Client as i32,
                    url: url.into(),
                    connections,
                    in_flight: 4,
                    max_message: 65_536,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    /// Runs `n` jobs (every 7th crashing) through a client against the
    /// server at `url`; the final counters and the task set.
    fn run(url: &str, n: u64) -> (proto::Counters, TaskSet, TaskSet) {
        let (end, c, got, want) = run_to(url, n);
        assert_eq!(end, End::Finished);
        (c, got, want)
    }

    /// `run`, and how the run ended.
    fn run_to(url: &str, n: u64) -> (End, proto::Counters, TaskSet, TaskSet) {
        let cfg = crate::session::validate_start(&AgentConfig::default(), &start(url, 3)).unwrap();
        let mut wl = Workload::start(cfg).unwrap();
        let jobs: Vec<_> = (0..n)
            .map(|id| cwbench::generator::Job {
                id,
                work_units: id as u32,
                crash: id % 7 == 3,
                ..Default::default()
            })
            .collect();
        let mut want = TaskSet::default();
        jobs.iter().for_each(|j| want.push(j));
        wl.recorder.received.fetch_add(n, Ordering::Relaxed);
        wl.feed(jobs);
        wl.end_of_jobs();
        let finished = std::mem::replace(&mut wl.finished, tokio::sync::oneshot::channel().1);
        let end = finished.blocking_recv().unwrap();
        let mut agg = Aggregator::new(1, crate::recovery::Params::default());
        let done = agg.done(&wl.recorder, 0);
        let got = TaskSet {
            sum: done.task_set,
            count: done.task_count,
        };
        (end, done.totals.unwrap(), got, want)
    }

    #[test]
    fn every_task_is_answered_and_counted_by_outcome() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let url = rt.block_on(answering_server(0));
        let (c, got, want) = run(&url, 2_000);
        let crashed = (0..2_000).filter(|id| id % 7 == 3).count() as u64;
        assert_eq!(
            (c.completed, c.crashed),
            (2_000 - crashed, crashed),
            "{c:?}"
        );
        assert_eq!((c.connection_lost, c.cancelled), (0, 0), "{c:?}");
        assert_eq!(got, want);
    }

    #[test]
    fn a_lost_connection_s_tasks_are_counted_and_it_is_opened_again() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let url = rt.block_on(answering_server(50));
        let (c, got, _) = run(&url, 1_000);
        assert!(c.connection_lost > 0 && c.reconnects > 0, "{c:?}");
        assert_eq!(
            c.received,
            c.completed + c.crashed + c.connection_lost + c.cancelled,
            "{c:?}"
        );
        assert!(got.count <= 1_000);
    }

    /// No server at all: once every connection has given up, the rest of
    /// the tasks are lost at once rather than each waiting for a
    /// connection (1,000 tasks 64 at a time would take minutes), and the
    /// run fails with the reason.
    #[test]
    fn with_every_connection_given_up_tasks_are_lost_at_once() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/", free.local_addr().unwrap());
        drop(free);
        let t = std::time::Instant::now();
        let (end, c, _, _) = run_to(&url, 1_000);
        let End::Internal(why) = end else {
            panic!("{end:?}")
        };
        assert!(
            why.starts_with(&format!(
                "no WebSocket connection to {url} could be opened: "
            )),
            "{why}"
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "{:?}",
            t.elapsed()
        );
        assert_eq!((c.connection_lost, c.completed), (1_000, 0), "{c:?}");
        assert_eq!(
            c.connect_failed,
            3 * (u64::from(super::MAX_RECONNECTS) + 1),
            "{c:?}"
        );
    }
}
