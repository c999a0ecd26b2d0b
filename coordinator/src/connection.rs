//! Reaching an agent: the drive options, transport (HTTP/2, TLS), the shared token, and why an agent cannot take part.

use std::time::Duration;

use cwbench::proto::agent_client::AgentClient;
use cwbench::proto::{AgentInfo, DescribeRequest};
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Timeouts and sizes of the coordinator side of a run.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    pub connect_timeout: Duration,
    /// Start -> Ready.
    pub ready_timeout: Duration,
    /// Added to two snapshot intervals: silence longer than this is a lost host.
    pub silence_grace: Duration,
    /// Jobs per JobBatch message.
    pub batch_jobs: usize,
    /// Send job columns packed (JobBatch.packed) to agents that read them.
    pub packed_batches: bool,
    pub max_message_bytes: usize,
    /// Shared token sent as `authorization: Bearer <token>` on every call.
    pub token: Option<BearerToken>,
    /// Dial over TLS.
    pub tls: Option<ClientTls>,
}

/// TLS settings for dialling agents (PEM bytes).
#[derive(Clone)]
pub struct ClientTls {
    /// The CA that signed the agents' certificates.
    pub ca: Vec<u8>,
    /// Expected certificate name; default: the host part of the address.
    pub domain: Option<String>,
    /// Client certificate and key, for agents that require one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("domain", &self.domain)
            .field("client_identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    fn config(&self, addr: &str) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut c = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name(self.domain.clone().unwrap_or_else(|| host.to_string()));
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        c
    }
}

/// A shared token ready to be sent; its Debug output never shows it.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    /// Checks `token` (non-empty printable ASCII) and builds the header value.
    pub fn new(token: &str) -> Result<Self, cwbench::token::TokenError> {
        cwbench::token::validate_token(token)?;
        let v = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| cwbench::token::TokenError::NotPrintable)?;
        Ok(Self(v))
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<hidden>)")
    }
}

/// Adds the token (if any) to every outgoing request.
#[derive(Debug, Clone)]
pub struct SendToken(Option<BearerToken>);

impl Interceptor for SendToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut()
                .insert(cwbench::token::METADATA_KEY, t.0.clone());
        }
        Ok(req)
    }
}

/// The coordinator's client of one agent.
pub type Client = AgentClient<InterceptedService<Channel, SendToken>>;

impl Default for DriveOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(30),
            silence_grace: Duration::from_secs(5),
            batch_jobs: 8192,
            packed_batches: true,
            max_message_bytes: 16 << 20,
            token: None,
            tls: None,
        }
    }
}

/// Why an agent cannot take part.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("cannot reach agent {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("agent {addr} refused us: {reason}")]
    Unauthenticated { addr: String, reason: String },
    #[error("agent {addr} is busy with run {run}")]
    Busy { addr: String, run: String },
    #[error(
        "agent {addr} speaks protocol {agent} (cwbench {agent_version}); this coordinator speaks {ours} (cwbench {our_version})"
    )]
    Version {
        addr: String,
        agent: u32,
        agent_version: String,
        ours: u32,
        our_version: String,
    },
    #[error("agent {addr} cannot run {runtime} (profile {profile}): {reason}")]
    Runtime {
        addr: String,
        runtime: String,
        profile: String,
        reason: String,
    },
}

/// Opens a channel to an agent (HTTP/2 over TCP).
pub async fn connect(addr: &str, opts: &DriveOptions) -> Result<Client, Unavailable> {
    let unreachable = |reason: String| Unavailable::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| unreachable(format!("bad address: {e}")))?;
    if let Some(t) = &opts.tls {
        ep = ep
            .tls_config(t.config(addr))
            .map_err(|e| unreachable(format!("TLS set-up: {}", error_chain(&e))))?;
    }
    let ep = ep
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        // A backstop only: the run loop marks an agent lost when it is
        // silent past two snapshot intervals plus a grace. A 2 s timeout
        // here threw away healthy hosts whenever the coordinator itself
        // fell behind (half of 256 agents on one 2-core machine).
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let ch = tokio::time::timeout(opts.connect_timeout, ep.connect())
        .await
        .map_err(|_| {
            unreachable(format!(
                "no connection within {} s",
                opts.connect_timeout.as_secs()
            ))
        })?
        .map_err(|e| unreachable(error_chain(&e)))?;
    Ok(
        AgentClient::with_interceptor(ch, SendToken(opts.token.clone()))
            .max_decoding_message_size(opts.max_message_bytes)
            .max_encoding_message_size(opts.max_message_bytes),
    )
}

/// Describes an agent and checks it can take a run.
pub async fn preflight(addr: &str, opts: &DriveOptions) -> Result<AgentInfo, Unavailable> {
    let mut client = connect(addr, opts).await?;
    let info = tokio::time::timeout(
        opts.connect_timeout,
        client.describe(DescribeRequest {
            protocol_version: cwbench::PROTOCOL_VERSION,
        }),
    )
    .await
    .map_err(|_| Unavailable::Unreachable {
        addr: addr.into(),
        reason: format!(
            "no answer to Describe within {} s",
            opts.connect_timeout.as_secs()
        ),
    })?
    .map_err(|s| {
        if s.code() == tonic::Code::Unauthenticated {
            Unavailable::Unauthenticated {
                addr: addr.into(),
                reason: unauthenticated_reason(opts.token.is_some(), s.message()),
            }
        } else {
            Unavailable::Unreachable {
                addr: addr.into(),
                reason: format!("Describe failed: {}", s.message()),
            }
        }
    })?
    .into_inner();
    if info.protocol_version != cwbench::PROTOCOL_VERSION {
        return Err(Unavailable::Version {
            addr: addr.into(),
            agent: info.protocol_version,
            agent_version: info.agent_version,
            ours: cwbench::PROTOCOL_VERSION,
            our_version: cwbench::VERSION.into(),
        });
    }
    if !info.busy_run_id.is_empty() {
        return Err(Unavailable::Busy {
            addr: addr.into(),
            run: info.busy_run_id,
        });
    }
    Ok(info)
}

/// What to tell the user when an agent answers UNAUTHENTICATED.
fn unauthenticated_reason(sent_token: bool, agent_says: &str) -> String {
    if sent_token {
        format!("the token was rejected (agent says: {agent_says}); check --token / CWBENCH_TOKEN")
    } else {
        format!("the token was missing (agent says: {agent_says}); set --token or CWBENCH_TOKEN")
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let m = x.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = x.source();
    }
    s
}
