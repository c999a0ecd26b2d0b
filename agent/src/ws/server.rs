//! The WebSocket task server under test: one of three handler architectures per connection, the tokio engine's job execution, a per-connection in-flight bound, and hostile clients closed one by one.
//!
//! A task read is counted received; it ends completed, crashed, timed out,
//! refused (read while the server shuts down) or cancelled, and each is
//! answered in the form it came in (binary or JSON text), cancelled ones
//! excepted. Tasks of a connection that is gone still run and are counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cwbench::generator::Job;
use cwbench::proto;
use cwbench::spec::Dispatch;
use cwbench::wsproto::{self, FrameError, Outcome as Answer, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, error::ProtocolError};
use tokio_util::task::TaskTracker;

use crate::buffers::Buffers;
use crate::engine::{Config, Outcome, Parts, Workload};
use crate::recorder::Recorder;
use crate::span::Span;
use crate::tokio_engine::build_runtime;
use crate::tokio_engine::ws_server::{Jobs, Ran, server_probe};
use crate::ws::page::{self, Route};

/// A client that has not finished its opening handshake by then is dropped.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// Answers that cannot be written for this long: the client is not reading.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// The close handshake, ours or the client's.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// After end of jobs: in-flight tasks finish and are answered within this,
/// or the rest is cancelled.
const DRAIN: Duration = Duration::from_secs(10);
/// After a cancel: well within the session's grace (phase::CANCEL_GRACE).
const CANCEL_WAIT: Duration = Duration::from_millis(1000);
/// Listen backlog: clients may open thousands of connections at once.
const BACKLOG: u32 = 4096;
/// Socket send buffer of each connection (inherited from the listener):
/// part of its outgoing queue. Autotuned, it would take up to 4 MiB (over
/// 100k answers) from a client that never reads before a write blocks.
const SEND_BUFFER: u32 = 64 << 10;

/// Starts the task server on its own runtime, listening on
/// `0.0.0.0:{ws.port}`. Returns the running workload (fed no jobs; it ends
/// at `end_of_jobs`) and the bound port.
pub fn start(cfg: Config, ws: &proto::WebSocket) -> Result<(Workload, u16), String> {
    let per_conn = check(&cfg, ws)?;
    let port = u16::try_from(ws.port)
        .map_err(|_| format!("websocket.port = {}: not a TCP port", ws.port))?;
    // Calibrates the TSC clock now rather than on the first task.
    let _ = crate::clock::now();
    let shards = cfg.threads.max(1) * 2;
    let rec = Arc::new(Recorder::new(
        shards,
        cfg.classes,
        Arc::new(Span::new(cfg.warmup, cfg.end)),
        crate::clock::now(),
        cfg.job_log,
    ));
    let jobs = Jobs::new(cfg.clone(), rec.clone())?;
    let cancel = jobs.cancel_token().clone();
    let srv = Server::new(jobs, super::ws_config(ws.max_message), per_conn, shards);
    let (feed_tx, feed_rx) = mpsc::unbounded_channel();
    let (credit_tx, credit_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    let (built_tx, built_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("cwbench-ws".into())
        .spawn(move || {
            on_thread(&cfg, port, srv, feed_rx, built_tx, done_tx);
            // Held to the end: a closed credit channel means nothing here.
            drop(credit_tx);
        })
        .map_err(|e| format!("cannot start the WebSocket server thread: {e}"))?;
    let (runtime, bound) = match built_rx.recv() {
        Ok(r) => r?,
        Err(_) => return Err("the WebSocket server thread died while starting".into()),
    };
    let wl = Workload::from_parts(Parts {
        feed: feed_tx,
        credit: credit_rx,
        finished: done_rx,
        recorder: rec,
        buffers: Arc::new(Buffers::new(0)),
        probe: server_probe(runtime),
        cancel,
        thread,
    });
    Ok((wl, bound))
}

type Built = Result<(tokio::runtime::Handle, u16), String>;

/// The server thread: builds the runtime, listens, says so on `built`,
/// serves until the end, says how it ended on `done`.
fn on_thread(
    cfg: &Config,
    port: u16,
    srv: Server,
    feed: mpsc::UnboundedReceiver<Vec<Job>>,
    built: std::sync::mpsc::Sender<Built>,
    done: oneshot::Sender<Outcome>,
) {
    let started = build_runtime(cfg).and_then(|rt| {
        let listener = rt.block_on(async { listen(port) })?;
        Ok((rt, listener))
    });
    let (rt, listener) = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = built.send(Err(e));
            return;
        }
    };
    let bound = listener.local_addr().map_or(port, |a| a.port());
    let _ = built.send(Ok((rt.handle().clone(), bound)));
    let _ = done.send(rt.block_on(run(Arc::new(srv), listener, feed)));
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// The profile and WebSocket fields a server needs; tasks per connection.
fn check(cfg: &Config, ws: &proto::WebSocket) -> Result<usize, String> {
    let name = match cfg.dispatch {
        Dispatch::Serial | Dispatch::SpawnAwait => return Ok(1),
        Dispatch::TaskPerJob if ws.in_flight == 0 => {
            return Err(
                "websocket.in_flight = 0: tasks in flight per connection must be at least 1".into(),
            );
        }
        Dispatch::TaskPerJob => return Ok(ws.in_flight as usize),
        Dispatch::Pool => "pool",
        Dispatch::Mailbox => "mailbox",
    };
    Err(format!(
        "profile.dispatch = {name}: a WebSocket server's handler is spawn-await, serial or task-per-job"
    ))
}

fn listen(port: u16) -> Result<TcpListener, String> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let err = |e: std::io::Error| format!("cannot listen on {addr} (websocket.port): {e}");
    let sock = TcpSocket::new_v4().map_err(err)?;
    sock.set_reuseaddr(true).map_err(err)?;
    sock.set_send_buffer_size(SEND_BUFFER).map_err(err)?;
    sock.bind(addr).map_err(err)?;
    sock.listen(BACKLOG).map_err(err)
}

/// What every connection of the server shares.
struct Server {
    jobs: Jobs,
    ws_config: WebSocketConfig,
    /// Tasks in flight per connection.
    per_conn: usize,
    shards: usize,
    /// End of jobs: stop accepting, answer what is in flight, close (1001).
    drain: tokio_util::sync::CancellationToken,
    /// Connections and task-per-job tasks, awaited at the end.
    tasks: TaskTracker,
    /// The browser client page, this run's facts written in.
    page: String,
}

impl Server {
    fn new(jobs: Jobs, ws_config: WebSocketConfig, per_conn: usize, shards: usize) -> Self {
        let page = page::render(jobs.cfg().classes, per_conn);
        Self {
            page,
            jobs,
            ws_config,
            per_conn,
            shards,
            drain: Default::default(),
            tasks: TaskTracker::new(),
        }
    }

    fn rec(&self) -> &Recorder {
        self.jobs.rec()
    }
}

/// The server's life: accept until end of jobs (or a cancel), then let
/// connections finish, each wait bounded.
async fn run(
    srv: Arc<Server>,
    listener: TcpListener,
    feed: mpsc::UnboundedReceiver<Vec<Job>>,
) -> Outcome {
    let (probe_stop, probe) = srv.jobs.start_probe();
    accept(&srv, listener, feed).await;
    srv.drain.cancel();
    srv.tasks.close();
    if timeout(DRAIN, srv.tasks.wait()).await.is_err() {
        tracing::warn!(
            "tasks still running {} s after end of jobs: cancelled",
            DRAIN.as_secs()
        );
        srv.jobs.cancel_token().cancel();
    }
    if timeout(CANCEL_WAIT, srv.tasks.wait()).await.is_err() {
        tracing::warn!("tasks still running after the cancel; the run ends without them");
    }
    probe_stop.cancel();
    let _ = probe.await;
    srv.jobs.finish()
}

/// Accepts connections until the session's feed closes (end of jobs) or
/// the run is cancelled. The server is fed no jobs: any it is fed never
/// run and are counted cancelled.
async fn accept(
    srv: &Arc<Server>,
    listener: TcpListener,
    mut feed: mpsc::UnboundedReceiver<Vec<Job>>,
) {
    let cancel = srv.jobs.cancel_token().clone();
    let mut next = 0usize;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            jobs = feed.recv() => match jobs {
                None => return,
                Some(jobs) => {
                    tracing::warn!(jobs = jobs.len(), "a WebSocket server is fed no jobs: counted cancelled");
                    srv.rec().cancelled.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                }
            },
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    srv.tasks.spawn(connection(srv.clone(), tcp, peer, next % srv.shards));
                    next += 1;
                }
                Err(e) => {
                    // Out of file descriptors, typically: a pause, not a busy loop.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// One client connection, from the opening handshake to its close.
async fn connection(srv: Arc<Server>, mut tcp: TcpStream, peer: SocketAddr, shard: usize) {
    // Answers are small and latency is the measurement: no Nagle delay.
    let _ = tcp.set_nodelay(true);
    // A browser asking for the page gets it; a WebSocket goes on.
    match timeout(HANDSHAKE, page::route(&mut tcp, &srv.page)).await {
        Ok(Ok(Route::Upgrade)) => {}
        Ok(Ok(Route::Served)) => return,
        Ok(Err(e)) => return tracing::debug!(%peer, "reading a request failed: {e}"),
        Err(_) => return tracing::warn!(%peer, "no request within {HANDSHAKE:?}"),
    }
    let accepted = tokio_tungstenite::accept_async_with_config(tcp, Some(srv.ws_config));
    let ws = match timeout(HANDSHAKE, accepted).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return tracing::warn!(%peer, "WebSocket handshake failed: {e}"),
        Err(_) => return tracing::warn!(%peer, "no WebSocket handshake within {HANDSHAKE:?}"),
    };
    let _open = Gauge::up(&srv.rec().ws.connections);
    let (done_tx, done_rx) = mpsc::channel(srv.per_conn);
    let mut conn = Conn {
        srv: srv.clone(),
        ws,
        peer,
        shard,
        open: 0,
        draining: false,
        done_tx,
        done_rx,
    };
    let end = conn.serve().await;
    conn.end(end).await;
}

/// A gauge counted up while this lives.
struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn up(g: &'a AtomicU64) -> Self {
        g.fetch_add(1, Ordering::Relaxed);
        Self(g)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The form a task came in, and its answer goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Binary,
    Text,
}

/// Why a connection ends.
#[derive(Debug)]
enum End {
    /// The server closes it with this code and reason: 1001 at the end of
    /// the run, another for what the client did wrong.
    Close(u16, String),
    /// The client closed it or vanished; `lost` when it had tasks in
    /// flight or left without a close handshake.
    Gone { why: String, lost: bool },
    /// The run was cancelled: dropped at once.
    Cancelled,
}

/// One connection's handler state.
struct Conn {
    srv: Arc<Server>,
    ws: WebSocketStream<TcpStream>,
    peer: SocketAddr,
    shard: usize,
    /// Task-per-job: tasks read and not yet answered (at most per_conn).
    open: usize,
    /// End of jobs: once nothing is open, the connection closes.
    draining: bool,
    /// Task-per-job: answers from the tasks. Its bound is per_conn, which a
    /// task's slot already bounds, so a send never waits; it is the
    /// connection's outgoing queue.
    done_tx: mpsc::Sender<(Response, Form)>,
    done_rx: mpsc::Receiver<(Response, Form)>,
}

impl Conn {
    /// Reads tasks (while fewer than per_conn are open), runs them and
    /// writes answers, until the connection ends.
    async fn serve(&mut self) -> End {
        let cancel = self.srv.jobs.cancel_token().clone();
        let drain = self.srv.drain.clone();
        loop {
            if self.draining && self.open == 0 {
                return End::Close(1001, "the server is shutting down".into());
            }
            let read = self.open < self.srv.per_conn;
            let step = tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(End::Cancelled),
                Some(a) = self.done_rx.recv() => self.answer_done(a).await,
                _ = drain.cancelled(), if !self.draining => {
                    self.draining = true;
                    Ok(())
                }
                m = self.ws.next(), if read => self.on_message(m).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// One message read (None: the stream ended).
    async fn on_message(&mut self, m: Option<Result<Message, WsError>>) -> Result<(), End> {
        match m {
            None => Err(End::Gone {
                why: "closed by the client".into(),
                lost: self.open > 0,
            }),
            Some(Err(e)) => Err(read_error(e)),
            Some(Ok(Message::Binary(b))) => {
                self.on_task(wsproto::decode_task(&b), Form::Binary).await
            }
            Some(Ok(Message::Text(t))) => {
                self.on_task(wsproto::task_from_json(&t), Form::Text).await
            }
            // Pings are answered by tungstenite as it reads; a close is
            // answered too, and the next read ends the stream.
            Some(Ok(_)) => Ok(()),
        }
    }

    /// A task read: counted, run by the profile's handler architecture.
    async fn on_task(&mut self, task: Result<Job, FrameError>, form: Form) -> Result<(), End> {
        let job = task.map_err(|e| End::Close(e.close_code(), e.to_string()))?;
        let classes = self.srv.jobs.cfg().classes;
        if job.class as usize >= classes {
            let e = FrameError::Invalid {
                what: "class",
                detail: format!("{} (the run has {classes})", job.class),
            };
            return Err(End::Close(e.close_code(), e.to_string()));
        }
        let origin = crate::clock::now_ns();
        let rec = self.srv.rec();
        rec.received.fetch_add(1, Ordering::Relaxed);
        // Handed to the handler at once: nothing waits in a prefetch buffer.
        rec.released.fetch_add(1, Ordering::Relaxed);
        rec.ws.task_set.lock().push(&job);
        if self.draining {
            rec.ws.refused.fetch_add(1, Ordering::Relaxed);
            return self.write(&[(refused(job.id), form)]).await;
        }
        self.srv.jobs.begin(origin);
        rec.released(&job, origin, origin);
        let (jobs, shard) = (&self.srv.jobs, self.shard);
        let ran = match jobs.cfg().dispatch {
            Dispatch::Serial => jobs.serial(shard, &job, origin).await,
            Dispatch::SpawnAwait => jobs.spawn_await(shard, job, origin).await,
            _ => {
                self.spawn(job, origin, form);
                return Ok(());
            }
        };
        match response(job.id, origin, ran) {
            Some(r) => self.write(&[(r, form)]).await,
            None => Ok(()),
        }
    }

    /// Task-per-job: the task runs on its own and reports to this
    /// connection's channel (ignored once the connection is gone).
    fn spawn(&mut self, job: Job, origin: u64, form: Form) {
        self.open += 1;
        let tx = self.done_tx.clone();
        let reply = move |ran| {
            if let Some(r) = response(job.id, origin, ran) {
                let _ = tx.try_send((r, form));
            }
        };
        let task = self.srv.jobs.task(self.shard, job, origin, reply);
        self.srv.tasks.spawn(task);
    }

    /// Task-per-job: an answer back from a task, with any others already
    /// there, written at once.
    async fn answer_done(&mut self, first: (Response, Form)) -> Result<(), End> {
        let mut batch = vec![first];
        while let Ok(a) = self.done_rx.try_recv() {
            batch.push(a);
        }
        self.open -= batch.len();
        self.write(&batch).await
    }

    /// Writes answers and flushes them, within WRITE_DEADLINE.
    async fn write(&mut self, answers: &[(Response, Form)]) -> Result<(), End> {
        let ws = &mut self.ws;
        let send = async {
            for (r, form) in answers {
                ws.feed(encode(r, *form)).await?;
            }
            ws.flush().await
        };
        match timeout(WRITE_DEADLINE, send).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Gone {
                why: format!("writing an answer failed: {e}"),
                lost: true,
            }),
            Err(_) => Err(End::Close(
                1008,
                format!(
                    "answers unread: none could be written for {} s",
                    WRITE_DEADLINE.as_secs()
                ),
            )),
        }
    }

    /// Closes the connection as `end` says, within CLOSE_WAIT; counts and
    /// logs a connection that ended badly.
    async fn end(mut self, end: End) {
        let rec = self.srv.rec();
        let peer = self.peer;
        match &end {
            End::Cancelled => return,
            End::Close(1001, _) => {}
            End::Close(code, why) => {
                rec.ws.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, code, "closing a WebSocket connection: {why}");
            }
            End::Gone { why, lost: true } => {
                rec.ws.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, open = self.open, "WebSocket connection lost: {why}");
            }
            End::Gone { .. } => {}
        }
        if let End::Close(code, why) = end {
            let frame = CloseFrame {
                code: code.into(),
                reason: close_reason(&why).into(),
            };
            // Then the client's close, or the end of the stream.
            let _ = timeout(CLOSE_WAIT, async {
                if self.ws.close(Some(frame)).await.is_ok() {
                    while let Some(Ok(_)) = self.ws.next().await {}
                }
            })
            .await;
        }
    }
}

/// How a read error ends a connection.
fn read_error(e: WsError) -> End {
    match e {
        WsError::Capacity(c) => End::Close(1009, format!("message too big: {c}")),
        WsError::Utf8(m) => End::Close(1007, format!("text frame is not UTF-8: {m}")),
        WsError::Io(_) | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            End::Gone {
                why: e.to_string(),
                lost: true,
            }
        }
        WsError::Protocol(p) => End::Close(1002, format!("protocol error: {p}")),
        e => End::Gone {
            why: e.to_string(),
            lost: true,
        },
    }
}

/// A close reason fits a control frame: 123 bytes after the code.
fn close_reason(why: &str) -> String {
    let mut end = why.len().min(123);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    why[..end].to_string()
}

/// The answer to a task that ran (none for a cancelled one).
fn response(id: u64, origin: u64, ran: Ran) -> Option<Response> {
    let (outcome, pickup, done) = match ran {
        Ran::Completed(t) => (Answer::Completed, t.pickup, t.done),
        Ran::Crashed { pickup, at } => (Answer::Crashed, pickup, at),
        Ran::TimedOut { pickup, at } => (Answer::TimedOut, pickup, at),
        Ran::Cancelled => return None,
    };
    Some(Response {
        id,
        outcome,
        queue_wait_ns: pickup.saturating_sub(origin),
        service_ns: done.saturating_sub(pickup),
    })
}

fn refused(id: u64) -> Response {
    Response {
        id,
        outcome: Answer::Refused,
        queue_wait_ns: 0,
        service_ns: 0,
    }
}

fn encode(r: &Response, form: Form) -> Message {
    match form {
        Form::Binary => {
            let mut b = Vec::with_capacity(wsproto::RESPONSE_LEN);
            wsproto::encode_response(r, &mut b);
            Message::Binary(b.into())
        }
        Form::Text => Message::text(wsproto::response_json(r)),
    }
}

#[cfg(test)]
mod tests;
