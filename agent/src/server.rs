//! The agent's gRPC service: `Describe`, and `Run` streams handed to a
//! session task each. One run at a time per agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cwbench::proto::agent_server::{Agent, AgentServer};
use cwbench::proto::{AgentInfo, DescribeRequest, RunEvent, RunRequest};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

/// How long a coordinator may leave a keepalive ping unanswered before its
/// run is cancelled. A coordinator busy with many agents answers late: at
/// 2 s, 3 to 14 of 256 healthy agents on one 2-core machine were cut off per
/// run (coordinator/tests/fleet.rs); at 6 s, none in six runs, even at load
/// average 190. Only a partitioned or frozen coordinator waits this long: a
/// dead one resets the connection at once.
pub const COORDINATOR_SILENCE: Duration = Duration::from_secs(6);

use crate::host::{AgentConfig, Slot, agent_info};
use crate::session;

/// The service implementation.
#[derive(Debug, Clone)]
pub struct AgentService {
    cfg: Arc<AgentConfig>,
    slot: Arc<Slot>,
}

impl AgentService {
    pub fn new(cfg: AgentConfig) -> Self {
        Self {
            cfg: Arc::new(cfg),
            slot: Arc::new(Slot::default()),
        }
    }

    /// The tonic server wrapper, with the message size limit applied.
    pub fn into_server(self) -> AgentServer<Self> {
        let max = self.cfg.limits.max_message_bytes;
        AgentServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn describe(
        &self,
        _req: Request<DescribeRequest>,
    ) -> Result<Response<AgentInfo>, Status> {
        Ok(Response::new(agent_info(&self.cfg, self.slot.busy())))
    }

    type RunStream = ReceiverStream<Result<RunEvent, Status>>;

    async fn run(
        &self,
        req: Request<Streaming<RunRequest>>,
    ) -> Result<Response<Self::RunStream>, Status> {
        // Answer at once and work in a task: the client's call completes only
        // once response headers are sent.
        let (tx, rx) = mpsc::channel(64);
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        tokio::spawn(session::run(
            self.cfg.clone(),
            self.slot.clone(),
            req.into_inner(),
            tx,
            peer,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves the agent on `listener` until `shutdown` resolves. With a token in
/// `cfg.auth`, every rpc (Describe and Run) is checked before it reaches the
/// service.
pub async fn serve(
    listener: TcpListener,
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let auth = cfg.auth.clone();
    let tls = cfg.tls.clone();
    let svc = InterceptedService::new(AgentService::new(cfg).into_server(), auth);
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        builder = builder.tls_config(t.config())?;
    }
    builder
        // Keepalives find a coordinator whose network vanished without a
        // reset (one whose process dies resets the connection at once).
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(COORDINATOR_SILENCE))
        .tcp_nodelay(true)
        .add_service(svc)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

/// The agent's server runtime: one thread is plenty for the gRPC side; the
/// workload gets its own runtime per run.
pub fn io_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cwbench-agent-io")
        .enable_all()
        .build()
}

/// An agent running in this process on its own runtime and thread (the
/// coordinator's local mode, and tests).
#[derive(Debug)]
pub struct LocalAgent {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalAgent {
    /// Binds `127.0.0.1:0` and serves on a new runtime with `server_threads`
    /// threads (the workload gets its own runtime per run).
    pub fn spawn(cfg: AgentConfig) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("cwbench-agent-{}", addr.port()))
            .spawn(move || {
                let rt = match io_runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let r = serve(listener, cfg, async {
                        let _ = stop_rx.await;
                    })
                    .await;
                    if let Err(e) = r {
                        tracing::error!("local agent on {addr} stopped: {e}");
                    }
                });
            })?;
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("local agent thread died"))??;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
