//! `ws-lib`: tokio-tungstenite against fastwebsockets, round trips of
//! cwbench task frames over loopback (docs/performance.md, "WebSocket
//! library"). Server and client in this process, on one tokio runtime;
//! every connection split into a reader and a writer task on both ends, as
//! the agent's client is, and the writer flushes when nothing more waits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cwbench::digest::CanonicalJob;
use cwbench::wsproto::{self, Outcome, Response};
use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, Role, WebSocketRead, WebSocketWrite,
};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::{cpu_us, load_avg, median};

#[derive(Debug, Clone, clap::Args)]
pub struct WsLibArgs {
    /// Connections (each with its reader and writer on both ends).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Tasks in flight per connection (closed loop).
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// Measured seconds per run (after a 0.5 s warm-up).
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Interleaved repeats of every library.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Worker threads of the one runtime (server and client share it).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Only these variants (comma-separated: tung, fws, fws-tcp; see the
    /// method in docs/performance.md).
    #[arg(long, default_value = "tung,fws,fws-tcp")]
    pub only: String,
}

/// The libraries and ways of using them measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lib {
    /// tokio-tungstenite 0.30: `accept_async` / `client_async`, split by
    /// `StreamExt::split` (a BiLock), `feed` then `flush` when idle.
    Tung,
    /// fastwebsockets 0.10 the documented way: hyper's upgrade on the
    /// server, `handshake::client` on the client, the upgraded stream split
    /// by `tokio::io::split` (a lock), the write half behind a BufWriter.
    Fws,
    /// fastwebsockets with the upgraded stream taken back as the TcpStream
    /// (`Upgraded::downcast`) and split into owned halves: no lock.
    FwsTcp,
}

impl Lib {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "tung" => Lib::Tung,
            "fws" => Lib::Fws,
            "fws-tcp" => Lib::FwsTcp,
            o => bail!("unknown ws-lib variant {o} (tung, fws, fws-tcp)"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Lib::Tung => "tokio-tungstenite 0.30",
            Lib::Fws => "fastwebsockets 0.10 (hyper upgrade, tokio::io::split)",
            Lib::FwsTcp => "fastwebsockets 0.10 (TcpStream owned halves)",
        }
    }
}

/// A connection's answered round trips, on its own cache line.
#[repr(align(128))]
#[derive(Default)]
struct Count(AtomicU64);

/// What every connection task shares.
struct Shared {
    counts: Vec<Count>,
    up: AtomicUsize,
    stop: AtomicBool,
    errors: AtomicU64,
}

impl Shared {
    fn total(&self) -> u64 {
        self.counts
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }
}

pub fn ws_lib(a: &WsLibArgs) -> Result<()> {
    let libs: Vec<Lib> = a.only.split(',').map(Lib::parse).collect::<Result<_>>()?;
    println!(
        "\n## ws-lib: echo round trips of zero-work task frames over loopback, {} connections x {} in flight, closed loop, {} runtime threads, {} x {:.1} s interleaved, load {}",
        a.connections,
        a.in_flight,
        a.threads,
        a.repeats,
        a.secs,
        load_avg()
    );
    let mut rows: Vec<(Lib, Vec<f64>, Vec<f64>)> =
        libs.iter().map(|&l| (l, Vec::new(), Vec::new())).collect();
    for rep in 0..a.repeats {
        for row in rows.iter_mut() {
            let (rate, cpu_ns) = run_once(row.0, a)?;
            println!(
                "  rep {rep} {}: {:.0} round trips/s, {:.2} µs CPU per round trip (load {})",
                row.0.name(),
                rate,
                cpu_ns / 1e3,
                load_avg()
            );
            row.1.push(rate);
            row.2.push(cpu_ns);
        }
    }
    let base = rows[0].clone();
    println!(
        "\n| library | round trips/s (median of {}) | min..max | CPU µs per round trip (median) | rate to {} (per repeat; median) | CPU to {} (per repeat; median) |",
        a.repeats,
        base.0.name(),
        base.0.name()
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (lib, rate, cpu) in &rows {
        let ratio = |x: &[f64], y: &[f64]| {
            let r: Vec<f64> = x.iter().zip(y).map(|(x, y)| x / y).collect();
            let list: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
            format!("{} ({:.2}×)", list.join(", "), median(&r))
        };
        println!(
            "| {} | {:.0} | {:.0}..{:.0} | {:.2} | {} | {} |",
            lib.name(),
            median(rate),
            rate.iter().cloned().fold(f64::MAX, f64::min),
            rate.iter().cloned().fold(0.0, f64::max),
            median(cpu) / 1e3,
            ratio(rate, &base.1),
            ratio(cpu, &base.2),
        );
    }
    Ok(())
}

/// One run: (answered round trips per second, process CPU ns per round trip).
fn run_once(lib: Lib, a: &WsLibArgs) -> Result<(f64, f64)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()?;
    let shared = Arc::new(Shared {
        counts: (0..a.connections).map(|_| Count::default()).collect(),
        up: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        errors: AtomicU64::new(0),
    });
    let r = rt.block_on(measure(lib, a, shared.clone()));
    shared.stop.store(true, Ordering::Relaxed);
    // Every connection task ends with the runtime.
    rt.shutdown_timeout(Duration::from_secs(2));
    r
}

async fn measure(lib: Lib, a: &WsLibArgs, shared: Arc<Shared>) -> Result<(f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(lib, listener, shared.clone()));
    for i in 0..a.connections {
        let (s, k) = (shared.clone(), a.in_flight);
        tokio::spawn(async move {
            if let Err(e) = client(lib, addr, i, k, s.clone()).await
                && !s.stop.load(Ordering::Relaxed)
            {
                eprintln!("  client {i}: {e:#}");
                s.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.up.load(Ordering::Relaxed) < a.connections {
        if Instant::now() > deadline || shared.errors.load(Ordering::Relaxed) > 0 {
            bail!(
                "{}: {} of {} connections up",
                lib.name(),
                shared.up.load(Ordering::Relaxed),
                a.connections
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (c0, n0, t0) = (cpu_us(), shared.total(), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    let (c1, n1, secs) = (cpu_us(), shared.total(), t0.elapsed().as_secs_f64());
    shared.stop.store(true, Ordering::Relaxed);
    if shared.errors.load(Ordering::Relaxed) > 0 {
        bail!("{}: connection errors", lib.name());
    }
    let n = n1 - n0;
    if n == 0 {
        bail!("{}: no round trips", lib.name());
    }
    Ok((n as f64 / secs, (c1 - c0) as f64 * 1e3 / n as f64))
}

/// The task frame for a connection's `seq`-th task.
fn task(conn: usize, seq: u64, buf: &mut Vec<u8>) {
    buf.clear();
    wsproto::encode_task(
        &CanonicalJob {
            id: (conn as u64) << 40 | seq,
            ..CanonicalJob::default()
        },
        buf,
    );
}

/// The server's answer to a task frame (zero work: completed at once).
fn answer(frame: &[u8]) -> Result<Vec<u8>> {
    let job = wsproto::decode_task(frame)?;
    let mut out = Vec::with_capacity(wsproto::RESPONSE_LEN);
    wsproto::encode_response(
        &Response {
            id: job.id,
            outcome: Outcome::Completed,
            queue_wait_ns: 0,
            service_ns: 0,
        },
        &mut out,
    );
    Ok(out)
}

/// Checks an answer frame; counts it.
fn answered(frame: &[u8], shared: &Shared, conn: usize, n: &mut u64) -> Result<()> {
    let r = wsproto::decode_response(frame)?;
    if r.outcome != Outcome::Completed || (r.id >> 40) as usize != conn {
        bail!("wrong answer {r:?}");
    }
    *n += 1;
    shared.counts[conn].0.store(*n, Ordering::Relaxed);
    Ok(())
}

async fn serve(lib: Lib, listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((tcp, _)) = listener.accept().await {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let _ = tcp.set_nodelay(true);
        let s = shared.clone();
        tokio::spawn(async move {
            let r = match lib {
                Lib::Tung => serve_tung(tcp, &s).await,
                Lib::Fws | Lib::FwsTcp => serve_fws(lib, tcp, s.clone()).await,
            };
            if let Err(e) = r
                && !s.stop.load(Ordering::Relaxed)
            {
                eprintln!("  server connection: {e:#}");
                s.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

async fn client(
    lib: Lib,
    addr: std::net::SocketAddr,
    conn: usize,
    k: usize,
    shared: Arc<Shared>,
) -> Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    match lib {
        Lib::Tung => client_tung(tcp, addr, conn, k, shared).await,
        Lib::Fws | Lib::FwsTcp => client_fws(lib, tcp, addr, conn, k, shared).await,
    }
}

// ---- tokio-tungstenite ----

async fn serve_tung(tcp: TcpStream, shared: &Shared) -> Result<()> {
    let ws = tokio_tungstenite::accept_async(tcp).await?;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = async move {
        while let Some(out) = rx.recv().await {
            sink.feed(Message::binary(out)).await?;
            if rx.is_empty() {
                sink.flush().await?;
            }
        }
        anyhow::Ok(())
    };
    let reader = async move {
        while let Some(msg) = stream.next().await {
            match msg? {
                Message::Binary(b) => {
                    let out = answer(&b)?;
                    if tx.send(out).is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        anyhow::Ok(())
    };
    let (w, r) = tokio::join!(tokio::spawn(writer), reader);
    r?;
    w??;
    Ok(())
}

async fn client_tung(
    tcp: TcpStream,
    addr: std::net::SocketAddr,
    conn: usize,
    k: usize,
    shared: Arc<Shared>,
) -> Result<()> {
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp).await?;
    shared.up.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let s = shared.clone();
    let writer = async move {
        let mut buf = Vec::with_capacity(wsproto::TASK_LEN);
        let mut seq = 0u64;
        for _ in 0..k {
            task(conn, seq, &mut buf);
            seq += 1;
            sink.feed(Message::binary(buf.clone())).await?;
        }
        sink.flush().await?;
        while rx.recv().await.is_some() {
            if s.stop.load(Ordering::Relaxed) {
                break;
            }
            task(conn, seq, &mut buf);
            seq += 1;
            sink.feed(Message::binary(buf.clone())).await?;
            if rx.is_empty() {
                sink.flush().await?;
            }
        }
        anyhow::Ok(())
    };
    let reader = async move {
        let mut n = 0u64;
        while let Some(msg) = stream.next().await {
            match msg? {
                Message::Binary(b) => answered(&b, &shared, conn, &mut n)?,
                Message::Close(_) => break,
                _ => continue,
            }
            if shared.stop.load(Ordering::Relaxed) || tx.send(()).is_err() {
                break;
            }
        }
        anyhow::Ok(())
    };
    let (w, r) = tokio::join!(tokio::spawn(writer), reader);
    r?;
    w??;
    Ok(())
}

// ---- fastwebsockets ----

/// Runs hyper's client connection task (the handshake helper needs one).
struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

type Boxed<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

async fn serve_fws(lib: Lib, tcp: TcpStream, shared: Arc<Shared>) -> Result<()> {
    let (up_tx, up_rx) = tokio::sync::oneshot::channel();
    let up_tx = parking_lot::Mutex::new(Some(up_tx));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let r = fastwebsockets::upgrade::upgrade(&mut req).map(|(response, fut)| {
            if let Some(tx) = up_tx.lock().take() {
                let _ = tx.send(fut);
            }
            response
        });
        async move { r }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::spawn(conn);
    let fut = tokio::time::timeout(Duration::from_secs(10), up_rx)
        .await
        .context("no upgrade request")??;
    let ws = fut.await?;
    match lib {
        Lib::FwsTcp => {
            let (r, w) = owned_halves(ws.into_inner().into_inner())?;
            let (rd, wr) =
                fastwebsockets::after_handshake_split(r, BufWriter::new(w), Role::Server);
            serve_fws_halves(rd, wr, shared).await
        }
        _ => {
            let (r, w) = tokio::io::split(ws.into_inner());
            let (rd, wr) =
                fastwebsockets::after_handshake_split(r, BufWriter::new(w), Role::Server);
            serve_fws_halves(rd, wr, shared).await
        }
    }
}

/// The TcpStream under an upgraded connection, as owned halves.
fn owned_halves(
    up: hyper::upgrade::Upgraded,
) -> Result<(
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
)> {
    let parts = up
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| anyhow::anyhow!("the upgraded stream is not a TcpStream"))?;
    if !parts.read_buf.is_empty() {
        bail!("bytes read ahead during the handshake");
    }
    Ok(parts.io.into_inner().into_split())
}

async fn serve_fws_halves<R, W>(
    rd: WebSocketRead<R>,
    mut wr: WebSocketWrite<BufWriter<W>>,
    shared: Arc<Shared>,
) -> Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut rd = FragmentCollectorRead::new(rd);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer: Boxed<()> = Box::pin(async move {
        while let Some(mut out) = rx.recv().await {
            wr.write_frame(Frame::binary(Payload::BorrowedMut(&mut out)))
                .await?;
            if rx.is_empty() {
                wr.flush().await?;
            }
        }
        Ok(())
    });
    let w = tokio::spawn(writer);
    loop {
        // No pings in this benchmark: nothing owed to the peer is dropped.
        let frame = rd
            .read_frame(&mut |_| async { Ok::<_, std::io::Error>(()) })
            .await?;
        match frame.opcode {
            OpCode::Binary => {
                let out = answer(&frame.payload)?;
                if tx.send(out).is_err() {
                    break;
                }
            }
            OpCode::Close => break,
            _ => {}
        }
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    drop(tx);
    w.await??;
    Ok(())
}

async fn client_fws(
    lib: Lib,
    tcp: TcpStream,
    addr: std::net::SocketAddr,
    conn: usize,
    k: usize,
    shared: Arc<Shared>,
) -> Result<()> {
    let req = hyper::Request::builder()
        .method("GET")
        .uri(format!("http://{addr}/"))
        .header("Host", addr.to_string())
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())?;
    let (ws, _) = fastwebsockets::handshake::client(&SpawnExecutor, req, tcp).await?;
    shared.up.fetch_add(1, Ordering::Relaxed);
    match lib {
        Lib::FwsTcp => {
            let (r, w) = owned_halves(ws.into_inner().into_inner())?;
            let (rd, wr) =
                fastwebsockets::after_handshake_split(r, BufWriter::new(w), Role::Client);
            client_fws_halves(rd, wr, conn, k, shared).await
        }
        _ => {
            let (r, w) = tokio::io::split(ws.into_inner());
            let (rd, wr) =
                fastwebsockets::after_handshake_split(r, BufWriter::new(w), Role::Client);
            client_fws_halves(rd, wr, conn, k, shared).await
        }
    }
}

async fn client_fws_halves<R, W>(
    rd: WebSocketRead<R>,
    mut wr: WebSocketWrite<BufWriter<W>>,
    conn: usize,
    k: usize,
    shared: Arc<Shared>,
) -> Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut rd = FragmentCollectorRead::new(rd);
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let s = shared.clone();
    let writer: Boxed<()> = Box::pin(async move {
        let mut buf = Vec::with_capacity(wsproto::TASK_LEN);
        let mut seq = 0u64;
        for _ in 0..k {
            task(conn, seq, &mut buf);
            seq += 1;
            // Masked in place (the client's frames are masked).
            wr.write_frame(Frame::binary(Payload::BorrowedMut(&mut buf)))
                .await?;
        }
        wr.flush().await?;
        while rx.recv().await.is_some() {
            if s.stop.load(Ordering::Relaxed) {
                break;
            }
            task(conn, seq, &mut buf);
            seq += 1;
            wr.write_frame(Frame::binary(Payload::BorrowedMut(&mut buf)))
                .await?;
            if rx.is_empty() {
                wr.flush().await?;
            }
        }
        Ok(())
    });
    let w = tokio::spawn(writer);
    let mut n = 0u64;
    loop {
        let frame = rd
            .read_frame(&mut |_| async { Ok::<_, std::io::Error>(()) })
            .await?;
        match frame.opcode {
            OpCode::Binary => answered(&frame.payload, &shared, conn, &mut n)?,
            OpCode::Close => break,
            _ => continue,
        }
        if shared.stop.load(Ordering::Relaxed) || tx.send(()).is_err() {
            break;
        }
    }
    drop(tx);
    w.await??;
    Ok(())
}
