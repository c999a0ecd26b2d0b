//! `--dashboard`: a live view of the run in a browser, served by the
//! coordinator over HTTP with Server-Sent Events, fed by the run's observer
//! seam (`crate::observer`), kept to a bounded history.

pub mod events;
mod page;
pub mod server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cwbench::proto;

use crate::interrupt::Interrupt;
use crate::observer::{Observer, Observers, RunEnd, RunStart, Slot};
use crate::result::{HostResult, IntervalPoint};
use events::{EndData, HostData, Kind, ProfileData, RunData, SnapshotData};
use server::Shared;

/// Where the dashboard listens, and the token it requires (set for an
/// address other than loopback, and only then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

/// Why `--dashboard` cannot be used as given.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "--dashboard {0:?}: not an address to listen on; give IP:PORT, e.g. 127.0.0.1:8080 (port 0: any free port)"
    )]
    Unparseable(String),
    #[error(
        "--dashboard {0}: not a loopback address, and no token is set: set CWBENCH_TOKEN (or --token), which the page and its stream then require, or listen on 127.0.0.1"
    )]
    NoToken(SocketAddr),
    #[error("--dashboard {0}: cannot listen: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// Reads `--dashboard`'s value: `IP:PORT`, `[IPv6]:PORT` or
/// `localhost:PORT`. An address other than loopback is refused unless the
/// fleet's `token` is set, and then requires it.
pub fn parse_bind(value: &str, token: Option<&str>) -> Result<Bind, BindError> {
    let v = value.trim();
    let addr = match v.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p)),
        None => v.parse::<SocketAddr>().ok(),
    }
    .ok_or_else(|| BindError::Unparseable(value.to_string()))?;
    if addr.ip().is_loopback() {
        return Ok(Bind { addr, token: None });
    }
    match token {
        Some(t) => Ok(Bind {
            addr,
            token: Some(t.to_string()),
        }),
        None => Err(BindError::NoToken(addr)),
    }
}

/// A running dashboard: its server task and the state its observer feeds.
#[derive(Debug)]
pub struct Dashboard {
    addr: SocketAddr,
    shared: Arc<Shared>,
    linger: Duration,
    guarded: bool,
}

impl Dashboard {
    /// Listens on `bind` and serves until the process exits. `linger`: how
    /// long `linger` keeps serving after the run.
    pub async fn start(bind: Bind, linger: Duration) -> Result<Self, BindError> {
        let listener = tokio::net::TcpListener::bind(bind.addr)
            .await
            .map_err(|e| BindError::Listen(bind.addr, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BindError::Listen(bind.addr, e))?;
        let guarded = bind.token.is_some();
        let shared = Arc::new(Shared::new(bind.token));
        let app = server::router(shared.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("dashboard server stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            shared,
            linger,
            guarded,
        })
    }

    /// The address it listens on (the port chosen when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The line printed at start: the URL, and how to pass the token when
    /// one is required (never the token itself).
    pub fn announcement(&self) -> String {
        if self.guarded {
            format!(
                "dashboard: {} (open {}?token=<CWBENCH_TOKEN> once; the page then keeps it in a cookie)",
                self.url(),
                self.url()
            )
        } else {
            format!("dashboard: {}", self.url())
        }
    }

    /// The listener the run tells what happens.
    pub fn observer(&self) -> Observers {
        Arc::new(Live(self.shared.clone()))
    }

    /// After the run: keeps serving the final page and report.html for the
    /// linger time, or until SIGINT/SIGTERM (at once when the run was
    /// interrupted). Never longer: the wait has its deadline.
    pub async fn linger(self, interrupt: &Interrupt) {
        if self.linger.is_zero() || interrupt.token().is_cancelled() {
            return;
        }
        eprintln!(
            "dashboard: the run is over; {} serves its final page and report.html for {} s more (Ctrl-C to exit now)",
            self.url(),
            self.linger.as_secs()
        );
        tokio::select! {
            () = tokio::time::sleep(self.linger) => {}
            () = interrupt.token().cancelled() => {}
        }
    }
}

/// The dashboard's observer: turns what the run tells into events.
struct Live(Arc<Shared>);

impl Live {
    fn publish(&self, kind: Kind, slot: Slot, data: &impl serde::Serialize) {
        match serde_json::to_string(data) {
            Ok(json) => self.0.publish(kind, slot, json),
            Err(e) => tracing::warn!("dashboard: cannot encode a {} event: {e}", kind.name()),
        }
    }
}

impl Observer for Live {
    fn run_started(&self, run: &RunStart<'_>) {
        let data = RunData {
            run_id: run.run_id,
            scenario: &run.plan.scenario.name,
            profiles: run.plan.profiles.iter().map(|p| p.label()).collect(),
            hosts: run.hosts,
            snapshot_interval_ms: run.plan.scenario.run.snapshot_interval_ms,
            version: cwbench::VERSION,
        };
        self.publish(Kind::Run, Slot::default(), &data);
    }

    fn profile_started(&self, profile: usize) {
        self.publish(Kind::Profile, Slot::default(), &ProfileData { profile });
    }

    fn snapshot(&self, slot: Slot, _label: &str, s: &proto::Snapshot, point: &IntervalPoint) {
        let c = s.counters.unwrap_or_default();
        self.publish(Kind::Snapshot, slot, &SnapshotData::new(slot, &c, point));
    }

    fn host_finished(&self, slot: Slot, host: &HostResult) {
        self.publish(Kind::Host, slot, &HostData::new(slot, host));
    }

    fn run_finished(&self, end: &RunEnd<'_>) {
        if let (Some(dir), Ok(mut d)) = (end.dir, self.0.dir.lock()) {
            *d = Some(dir.to_path_buf());
        }
        let data = EndData {
            report: end.dir.map(|_| "report.html".to_string()),
            dir: end.dir.map(|d| d.display().to_string()),
            interrupted: end.result.and_then(|r| r.interrupted.clone()),
            error: end.error.map(String::from),
            warnings: end.result.map(|r| r.warnings.clone()).unwrap_or_default(),
        };
        self.publish(Kind::End, Slot::default(), &data);
    }
}

#[cfg(test)]
mod tests;
