//! The agent's gRPC service: `Describe`, and `Run` streams handed to a
//! session task each. One run at a time per agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cwbench::proto::agent_server::{Agent, AgentServer};
use cwbench::proto::{self, AgentInfo, DescribeRequest, RunEvent, RunRequest};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::AuthInterceptor;
use crate::session;

/// Ceilings on what a run may ask of this agent, so that no coordinator can
/// exhaust its memory or threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_threads: u32,
    pub max_workers: u32,
    pub max_queue_bound: u32,
    pub max_producers: u32,
    pub max_prefetch_jobs: u32,
    pub max_batch_jobs: usize,
    pub max_classes: usize,
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_threads: 1024,
            max_workers: 100_000,
            max_queue_bound: 1 << 20,
            max_producers: 1024,
            max_prefetch_jobs: 1 << 22,
            max_batch_jobs: 1 << 20,
            max_classes: 64,
            max_message_bytes: 16 << 20,
        }
    }
}

/// How this agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Worker threads for runs whose profile leaves threads unset.
    pub threads: u32,
    pub limits: Limits,
    /// How long to wait for Start after a Run stream opens.
    pub handshake_timeout: Duration,
    /// Pin every run's workload threads to these CPUs (`--cpus`).
    pub cpus: Option<Vec<usize>>,
    /// Serve over TLS with this certificate (`--tls-cert`, `--tls-key`).
    pub tls: Option<cwbench::tls::ServerTls>,
    /// The token every rpc must carry (none: no check; loopback or
    /// `--insecure` only).
    pub auth: AuthInterceptor,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            threads: cwbench::sysinfo::logical_cores(),
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(10),
            cpus: None,
            tls: None,
            auth: AuthInterceptor::default(),
        }
    }
}

/// The run-in-progress slot.
#[derive(Debug, Default)]
pub struct Slot(Mutex<Option<String>>);

/// Holds the slot for a run; frees it when dropped.
#[derive(Debug)]
pub struct SlotGuard(Arc<Slot>);

impl Slot {
    /// Claims the slot for `run_id`, or names the run that holds it.
    pub fn claim(self: &Arc<Self>, run_id: &str) -> Result<SlotGuard, String> {
        let mut s = self.0.lock();
        if let Some(busy) = s.as_ref() {
            return Err(busy.clone());
        }
        *s = Some(run_id.to_string());
        Ok(SlotGuard(self.clone()))
    }

    pub fn busy(&self) -> Option<String> {
        self.0.lock().clone()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        *self.0.0.lock() = None;
    }
}

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

/// This agent's description.
pub fn agent_info(cfg: &AgentConfig, busy: Option<String>) -> AgentInfo {
    let beam_missing = crate::beam::unavailable_reason();
    let mut runtimes_available = vec!["tokio".to_string()];
    if beam_missing.is_none() {
        runtimes_available.push("beam".into());
    }
    AgentInfo {
        runtimes_available,
        beam_unavailable_reason: beam_missing.unwrap_or_default(),
        hostname: cwbench::sysinfo::hostname(),
        // Pinned: the profile this agent stands in for has that many cores.
        logical_cores: cfg
            .cpus
            .as_ref()
            .map_or_else(cwbench::sysinfo::logical_cores, |c| c.len() as u32),
        cpu_model: cwbench::sysinfo::cpu_model(),
        os: cwbench::sysinfo::os(),
        agent_version: cwbench::VERSION.to_string(),
        protocol_version: cwbench::PROTOCOL_VERSION,
        default_threads: cfg.threads,
        busy_run_id: busy.unwrap_or_default(),
        runtime: "tokio".into(),
        cpu_set: cfg
            .cpus
            .as_deref()
            .map(crate::affinity::format_cpu_list)
            .unwrap_or_default(),
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
        // Keepalives find a coordinator whose network vanished without a reset.
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(2)))
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

/// Shorthand used by sessions to build an Error event.
pub fn error_event(code: proto::error::Code, message: impl Into<String>) -> RunEvent {
    RunEvent {
        msg: Some(proto::run_event::Msg::Error(proto::Error {
            code: code as i32,
            message: message.into(),
        })),
    }
}
