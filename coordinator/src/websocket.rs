//! A WebSocket run's roles (one agent serves, the others load it) and the server's row of the report: the clients' round trips merged beside the server's own figures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cwbench::histogram::{Hist, Summary, new_hist};
use cwbench::proto::{self, web_socket::Role};
use cwbench::scenario::WebSocketSpec;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::driver::{self, DriveOptions, HostOutcome, HostRun, Share, WsPart};
use crate::observer::Observers;
use crate::result::{HostResult, HostStatus, IntervalPoint, WsErrors, WsProfile};

/// Which agent hosts the server: `server` names it by its host label in
/// the report, its `--label` (the first agent with it), its address as
/// given, or its index in the agent list; None = the first.
pub fn server_index(
    server: Option<&str>,
    addrs: &[String],
    labels: &[String],
    agent_labels: &[&str],
) -> Result<usize, String> {
    let Some(name) = server else { return Ok(0) };
    let by = |names: &[&str]| names.iter().position(|n| *n == name);
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let addrs_s: Vec<&str> = addrs.iter().map(String::as_str).collect();
    if let Some(i) = by(&labels)
        .or_else(|| by(agent_labels))
        .or_else(|| by(&addrs_s))
    {
        return Ok(i);
    }
    match name.parse::<usize>() {
        Ok(i) if i < addrs.len() => Ok(i),
        _ => Err(format!(
            "websocket.server = {name:?}: no agent has that label or address, and it is not an index in 0..{}",
            addrs.len()
        )),
    }
}

/// The host part of an agent address (`host:port`, `http://host:port`).
fn host_of(addr: &str) -> &str {
    let a = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let a = a.split('/').next().unwrap_or(a);
    a.rsplit_once(':').map_or(a, |(h, _)| h)
}

/// Who serves a WebSocket run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// This agent (by index in the agent list).
    Agent(usize),
    /// A server cwbench did not start (`--target URL`): every agent loads it.
    Target(Target),
}

/// A server given by URL (`--target`), and for wss:// the CA certificates
/// (PEM, `--target-ca`) its clients trust besides the system's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub tls_ca: Vec<u8>,
}

impl Server {
    pub fn agent(&self) -> Option<usize> {
        match self {
            Server::Agent(i) => Some(*i),
            Server::Target(_) => None,
        }
    }
}

/// Starts a WebSocket run's drivers: the server agent's first (its Ready
/// gives the port, so the URL), then the clients', each fed a shard of the
/// stream; the server's EndOfJobs waits until every client is done.
/// Handles in `hosts` order, and the URL the clients load (empty when the
/// server did not start).
pub async fn spawn(
    mut hosts: Vec<HostRun>,
    server: &Server,
    spec: &WebSocketSpec,
    opts: &DriveOptions,
    observer: Option<Observers>,
) -> (Vec<JoinHandle<HostOutcome>>, String) {
    let hold = CancellationToken::new();
    // The profile's connections (a sweep), else the table's.
    let connections = hosts.first().and_then(|h| h.profile.connections);
    let tls_ca = match server {
        Server::Target(t) => t.tls_ca.clone(),
        Server::Agent(_) => Vec::new(),
    };
    let wire = |role: Role, url: String| proto::WebSocket {
        role: role as i32,
        url,
        connections: connections.unwrap_or(spec.connections),
        tls_ca: tls_ca.clone(),
        ..spec.to_proto()
    };
    let mut handles: Vec<Option<JoinHandle<HostOutcome>>> =
        (0..hosts.len()).map(|_| None).collect();
    let url = match server {
        Server::Target(t) => t.url.clone(),
        Server::Agent(i) => {
            let (port_tx, port_rx) = oneshot::channel();
            let mut s = hosts[*i].clone();
            s.ws = Some(WsPart {
                wire: wire(Role::Server, String::new()),
                port: Some(Arc::new(Mutex::new(Some(port_tx)))),
                hold: Some(hold.clone()),
            });
            let server_host = host_of(&s.addr).to_string();
            let drive = driver::drive(s, opts.clone(), observer.clone());
            handles[*i] = Some(tokio::spawn(drive));
            let wait = opts.ready_timeout + Duration::from_secs(5);
            match tokio::time::timeout(wait, port_rx).await {
                Ok(Ok(port)) => {
                    tracing::info!(
                        "WebSocket server at ws://{server_host}:{port}/ (a browser at http://{server_host}:{port}/ gives it tasks too)"
                    );
                    format!("ws://{server_host}:{port}/")
                }
                // The server failed (its own result says why): the clients
                // fail at once, saying so.
                _ => String::new(),
            }
        }
    };
    let at = server.agent();
    let clients = hosts.len() - usize::from(at.is_some());
    let left = Arc::new(AtomicUsize::new(clients));
    if clients == 0 {
        hold.cancel();
    }
    let clients_of = hosts.drain(..).enumerate().filter(|(i, _)| Some(*i) != at);
    for (k, (i, mut h)) in clients_of.enumerate() {
        h.share = Share {
            index: k as u64,
            of: clients as u64,
        };
        h.ws = Some(WsPart {
            wire: wire(Role::Client, url.clone()),
            port: None,
            hold: None,
        });
        let (left, hold, opts, observer) =
            (left.clone(), hold.clone(), opts.clone(), observer.clone());
        handles[i] = Some(tokio::spawn(async move {
            let out = driver::drive(h, opts, observer).await;
            if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                hold.cancel();
            }
            out
        }));
    }
    (handles.into_iter().flatten().collect(), url)
}

/// The server's row, built as the hosts come in.
#[derive(Debug)]
pub struct Row {
    server: Option<usize>,
    url: String,
    round_trip: Hist,
    send_delay: Hist,
    server_parts: Option<[Hist; 2]>,
}

impl Row {
    pub fn new(server: Option<usize>, url: String) -> Self {
        Self {
            server,
            url,
            round_trip: new_hist(),
            send_delay: new_hist(),
            server_parts: None,
        }
    }

    /// Host `i`'s outcome: a client's histograms merged, the server's kept.
    pub fn add(&mut self, i: usize, h: &HostOutcome) {
        if Some(i) == self.server {
            self.server_parts = h.parts.clone();
            return;
        }
        if h.result.status != HostStatus::Ok {
            return;
        }
        let _ = self.round_trip.add(&h.completion);
        if let Some([q, _]) = &h.parts {
            let _ = self.send_delay.add(q);
        }
    }

    /// The row, once every host is in.
    pub fn finish(self, hosts: &[HostResult]) -> WsProfile {
        let server = self.server.map(|i| &hosts[i]);
        let clients: Vec<&HostResult> = hosts
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.server)
            .map(|(_, h)| h)
            .collect();
        let t = ClientTotals::of(&clients);
        let sw = server.and_then(|s| s.websocket.clone());
        let served = sw.as_ref().map(|w| {
            let sum = u64::from_str_radix(&w.task_set, 16).unwrap_or(0);
            (w.tasks, t.sent == w.tasks && t.sum == sum)
        });
        // In-process agents' CPU and RSS are the whole process's.
        let own = !clients.iter().any(|c| c.info.in_process);
        let [q, s] = self.server_parts.as_ref().map_or_else(
            || [Summary::default(), Summary::default()],
            |[q, s]| [Summary::of(q), Summary::of(s)],
        );
        WsProfile {
            server: server.map_or_else(|| self.url.clone(), |s| s.label.clone()),
            url: self.url,
            clients: clients.len(),
            connections: t.connections,
            round_trips_per_s: clients.iter().map(|c| c.throughput).sum(),
            tasks_sent: t.sent,
            tasks_served: served.map_or(0, |(n, _)| n),
            digest_match: served.map(|(_, ok)| ok),
            round_trip: Summary::of(&self.round_trip),
            send_delay: Summary::of(&self.send_delay),
            server_queue_wait: q,
            server_service: s,
            connect: t.connect,
            errors: t.errors,
            server_bytes_per_connection: server
                .filter(|_| own)
                .and_then(|s| bytes_per_connection(&s.intervals)),
            client_cpu_us_per_task: (own && t.answered > 0)
                .then(|| t.cpu_us as f64 / t.answered as f64),
            server_cpu_us_per_task: sw
                .filter(|w| own && w.tasks > 0)
                .map(|w| w.cpu_us as f64 / w.tasks as f64),
        }
    }
}

/// What the clients add up to.
#[derive(Debug, Default)]
struct ClientTotals {
    sent: u64,
    /// Their task-set digests, summed (mod 2^64).
    sum: u64,
    connections: u64,
    cpu_us: u64,
    /// Tasks the server answered.
    answered: u64,
    errors: WsErrors,
    /// The worst client's connection set-up.
    connect: Summary,
}

impl ClientTotals {
    fn of(clients: &[&HostResult]) -> Self {
        let mut t = Self::default();
        for c in clients {
            let a = &c.accounting;
            let e = &mut t.errors;
            e.crashed += a.crashed;
            e.timed_out += a.timed_out;
            e.refused += a.refused;
            e.connection_lost += a.connection_lost;
            e.cancelled += a.cancelled;
            t.answered += a.completed + a.crashed + a.timed_out + a.refused;
            let Some(w) = &c.websocket else { continue };
            t.sent += w.tasks;
            t.sum = t
                .sum
                .wrapping_add(u64::from_str_radix(&w.task_set, 16).unwrap_or(0));
            t.connections += w.peak_connections;
            t.cpu_us += w.cpu_us;
            e.connect_failed += w.connect_failed;
            e.reconnects += w.reconnects;
            if w.connect.p99 >= t.connect.p99 {
                t.connect = w.connect;
            }
        }
        t
    }
}

/// The server's RSS growth per connection over the ramp: from the
/// snapshot with the fewest connections before the first with the most, to
/// that one (at least 10% apart; not after the peak, when connections
/// close and memory may not be returned).
fn bytes_per_connection(iv: &[IntervalPoint]) -> Option<f64> {
    let peak = iv.iter().map(|p| p.connections).max()?;
    let at = iv.iter().position(|p| p.connections == peak)?;
    let hi = &iv[at];
    let lo = iv[..at].iter().min_by_key(|p| p.connections)?;
    let dc = hi.connections - lo.connections;
    if dc == 0 || dc * 10 < hi.connections {
        return None;
    }
    Some((hi.rss_bytes as f64 - lo.rss_bytes as f64) / dc as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_named_by_label_address_or_index() {
        let addrs = vec!["10.0.0.1:7070".to_string(), "http://b:7070".to_string()];
        let labels = vec!["a".to_string(), "big".to_string()];
        let agent = ["", "srv"];
        let at = |name| server_index(name, &addrs, &labels, &agent);
        assert_eq!(at(None), Ok(0));
        assert_eq!(at(Some("big")), Ok(1));
        assert_eq!(at(Some("srv")), Ok(1));
        assert_eq!(at(Some("http://b:7070")), Ok(1));
        assert_eq!(at(Some("1")), Ok(1));
        let e = at(Some("7")).unwrap_err();
        assert!(e.starts_with("websocket.server = \"7\""), "{e}");
        assert_eq!(host_of("10.0.0.1:7070"), "10.0.0.1");
        assert_eq!(host_of("http://b:7070"), "b");
        assert_eq!(host_of("https://[::1]:7070/"), "[::1]");
    }

    /// Memory per connection is read over the ramp, never across the
    /// close at the end, and not at all when every connection was open by
    /// the first snapshot.
    #[test]
    fn memory_per_connection_is_the_ramp_s_slope() {
        use crate::result::IntervalPoint;
        let iv = |points: &[(u64, u64)]| -> Vec<IntervalPoint> {
            points
                .iter()
                .map(|&(connections, rss_bytes)| IntervalPoint {
                    connections,
                    rss_bytes,
                    ..IntervalPoint::default()
                })
                .collect()
        };
        let ramp = iv(&[
            (1_000, 10 << 20),
            (5_000, 20 << 20),
            (9_000, 30 << 20),
            (0, 25 << 20),
        ]);
        let slope = (20 << 20) as f64 / 8_000.0;
        assert_eq!(bytes_per_connection(&ramp), Some(slope));
        let at_once = iv(&[(64, 10 << 20), (64, 11 << 20), (0, 9 << 20)]);
        assert_eq!(bytes_per_connection(&at_once), None);
    }
}
