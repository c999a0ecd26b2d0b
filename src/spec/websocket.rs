//! A WebSocket run's rules (`[websocket]`, docs/websocket.md): its settings, the server's profile, and an agent's role from the wire.

use serde::{Deserialize, Serialize};

use super::{Dispatch, Field, Flavor, Profile, Refusal, quoted, range};
use crate::proto;

/// A WebSocket run (`[websocket]`, docs/websocket.md): one agent serves
/// tasks with the profile's handler architecture, the others are clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSpec {
    /// The agent that hosts the server: its label, its address as given,
    /// or its index in the agent list (as a string). None = the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Connections each client agent opens.
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// Connections a client opens per second; 0 = all at once.
    #[serde(default)]
    pub connect_rate: u32,
    /// Tasks in flight per connection: the server stops reading a
    /// connection that has this many; a closed-loop client keeps this many
    /// outstanding on each.
    #[serde(default = "default_ws_in_flight")]
    pub in_flight: u32,
    /// The largest message the server accepts, bytes.
    #[serde(default = "default_max_message")]
    pub max_message: u32,
    /// JSON text frames instead of binary ones.
    #[serde(default)]
    pub json: bool,
    /// The server's TCP port; 0 = any free port.
    #[serde(default)]
    pub port: u16,
}

impl Default for WebSocketSpec {
    fn default() -> Self {
        Self {
            server: None,
            connections: default_connections(),
            connect_rate: 0,
            in_flight: default_ws_in_flight(),
            max_message: default_max_message(),
            json: false,
            port: 0,
        }
    }
}

fn default_connections() -> u32 {
    64
}
fn default_ws_in_flight() -> u32 {
    16
}
fn default_max_message() -> u32 {
    65_536
}

/// The most connections one client agent opens.
pub const MAX_CONNECTIONS: u32 = 100_000;

/// The handler architectures of a WebSocket server (the seed note's three).
pub const WS_DISPATCH: [Dispatch; 3] =
    [Dispatch::SpawnAwait, Dispatch::Serial, Dispatch::TaskPerJob];

impl WebSocketSpec {
    pub fn check(&self) -> Result<(), Refusal> {
        range(Field::Connections, self.connections, 1, MAX_CONNECTIONS)?;
        range(Field::ConnectRate, self.connect_rate, 0, 1_000_000)?;
        range(Field::WsInFlight, self.in_flight, 1, 65_536)?;
        range(Field::MaxMessage, self.max_message, 64, 64 << 20)?;
        Ok(())
    }

    /// The wire form for one agent (the coordinator sets role and url).
    pub fn to_proto(&self) -> proto::WebSocket {
        proto::WebSocket {
            role: proto::web_socket::Role::Unspecified as i32,
            url: String::new(),
            connections: self.connections,
            connect_rate: self.connect_rate,
            in_flight: self.in_flight,
            max_message: self.max_message,
            json: self.json,
            port: self.port.into(),
            tls_ca: Vec::new(),
        }
    }

    /// A WebSocket run's rules on the server's profile (called by
    /// [`Profile::check`], the one place a profile is judged).
    pub fn check_profile(p: &Profile) -> Result<(), Refusal> {
        if p.runtime == Flavor::Beam {
            // The BEAM's shape: a process per connection, one per task.
            if p.dispatch != Profile::beam_dispatch(true) {
                return Err(Refusal::new(
                    Field::Dispatch,
                    quoted(&p.dispatch),
                    "a WebSocket server on runtime = \"beam\" runs \"task-per-job\" only (a process per task)",
                ));
            }
            return Ok(());
        }
        if !WS_DISPATCH.contains(&p.dispatch) {
            return Err(Refusal::new(
                Field::Dispatch,
                quoted(&p.dispatch),
                "a WebSocket server's handler runs \"spawn-await\", \"serial\" or \"task-per-job\"",
            ));
        }
        Ok(())
    }
}

impl TryFrom<&proto::WebSocket> for WebSocketSpec {
    type Error = Refusal;

    /// The wire form, checked; the role and url are the caller's to read.
    fn try_from(w: &proto::WebSocket) -> Result<Self, Refusal> {
        let spec = WebSocketSpec {
            server: None,
            connections: w.connections,
            connect_rate: w.connect_rate,
            in_flight: w.in_flight,
            max_message: w.max_message,
            json: w.json,
            port: u16::try_from(w.port)
                .map_err(|_| Refusal::new(Field::WsPort, w.port, "must be in 0..=65535"))?,
        };
        spec.check()?;
        Ok(spec)
    }
}

/// An agent's part in a WebSocket run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsRole {
    Server,
    /// Loads the server at this URL.
    Client(String),
}

/// The role of a Start's `plan.websocket`, checked with the settings.
pub(super) fn websocket_from_wire(
    w: &proto::WebSocket,
) -> Result<(WsRole, WebSocketSpec), Refusal> {
    use proto::web_socket::Role;
    let spec = WebSocketSpec::try_from(w)?;
    let role = match Role::try_from(w.role) {
        // The server's profile is checked with the rest (RunSpec::check).
        Ok(Role::Server) => WsRole::Server,
        Ok(Role::Client) if w.url.starts_with("ws://") || w.url.starts_with("wss://") => {
            WsRole::Client(w.url.clone())
        }
        Ok(Role::Client) => {
            return Err(Refusal::new(
                Field::WsUrl,
                format!("{:?}", w.url),
                "must be a ws:// or wss:// URL",
            ));
        }
        _ => {
            return Err(Refusal::new(
                Field::WsRole,
                w.role,
                "must be 1 (server) or 2 (client)",
            ));
        }
    };
    Ok((role, spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::web_socket::Role;

    fn wire(role: Role, url: &str) -> proto::WebSocket {
        proto::WebSocket {
            role: role as i32,
            url: url.into(),
            ..WebSocketSpec::default().to_proto()
        }
    }

    fn wire_server() -> proto::WebSocket {
        wire(Role::Server, "")
    }

    fn profile(runtime: Flavor, dispatch: Dispatch) -> Profile {
        Profile {
            runtime,
            dispatch,
            workers: 1,
            producers: 1,
            ..Profile::try_from(&proto::Profile::default()).unwrap()
        }
    }

    #[test]
    fn roles_and_settings_are_checked_with_the_field_named() {
        let (role, _) = websocket_from_wire(&wire(Role::Client, "ws://h:1/")).unwrap();
        assert_eq!(role, WsRole::Client("ws://h:1/".into()));
        let e = websocket_from_wire(&wire(Role::Client, "http://h/")).unwrap_err();
        assert_eq!(e.field, Field::WsUrl);
        let e = websocket_from_wire(&wire(Role::Unspecified, "")).unwrap_err();
        assert_eq!(e.field, Field::WsRole);
        let mut w = wire(Role::Server, "");
        w.connections = 0;
        let e = websocket_from_wire(&w).unwrap_err();
        assert_eq!(
            e.to_string(),
            "plan.websocket.connections = 0: must be in 1..=100000"
        );
    }

    /// The server's handler: tokio's three architectures, the BEAM's
    /// process per task; a WebSocket run lifts the BEAM's "pool only".
    #[test]
    fn the_server_s_dispatch_is_judged_per_runtime() {
        let tokio = Flavor::MultiThread;
        let e = profile(tokio, Dispatch::Pool).check(true).unwrap_err();
        assert_eq!(e.field, Field::Dispatch);
        assert!(e.reason.contains("task-per-job"), "{e}");
        for d in WS_DISPATCH {
            assert_eq!(profile(tokio, d).check(true), Ok(()), "{d:?}");
        }
        let beam = Flavor::Beam;
        assert_eq!(profile(beam, Dispatch::TaskPerJob).check(true), Ok(()));
        for d in [Dispatch::Pool, Dispatch::Serial, Dispatch::SpawnAwait] {
            let e = profile(beam, d).check(true).unwrap_err();
            assert_eq!(e.field, Field::Dispatch, "{d:?}");
            assert!(
                e.reason
                    .contains("runtime = \"beam\" runs \"task-per-job\" only"),
                "{e}"
            );
        }
        // Outside a WebSocket run the BEAM's one dispatch is the pool.
        let e = profile(beam, Dispatch::TaskPerJob)
            .check(false)
            .unwrap_err();
        assert!(e.reason.contains("\"pool\""), "{e}");
        assert_eq!(
            profile(beam, Dispatch::TaskPerJob).label(),
            "beam s=agent task-per-job"
        );
    }

    /// A scenario whose server is the BEAM: refused with pool, accepted
    /// with task-per-job, and its spec passes the agent's check as sent.
    #[test]
    fn a_scenario_s_beam_server_runs_task_per_job() {
        let ws = crate::scenario::PARITY_TOML
            .replace("[supervisor]", "[websocket]\n\n[supervisor]")
            .replace(
                "compute = \"inline\"",
                "compute = \"inline\"\nruntime = \"beam\"",
            );
        let e = crate::scenario::parse(&ws, "ws.toml", &Default::default()).unwrap_err();
        assert!(e.to_string().contains("profile.dispatch = \"pool\""), "{e}");
        let ok = ws
            .replace("dispatch = \"pool\"", "dispatch = \"task-per-job\"")
            .replace("workers = 64", "workers = 1");
        let plan = crate::scenario::parse(&ok, "ws.toml", &Default::default()).unwrap();
        assert_eq!(plan.profiles[0].label(), "beam s=agent task-per-job");
        let mut wire = plan.to_proto();
        wire.websocket = Some(wire_server());
        let start = proto::Start {
            run_id: "r".into(),
            profile: Some(plan.profiles[0].to_proto()),
            plan: Some(wire),
            protocol_version: crate::PROTOCOL_VERSION,
        };
        let spec = super::super::RunSpec::try_from(&start).unwrap();
        assert_eq!(spec.websocket.map(|(r, _)| r), Some(WsRole::Server));
    }

    #[test]
    fn a_scenario_s_websocket_server_must_run_a_handler_architecture() {
        let toml =
            crate::scenario::PARITY_TOML.replace("[supervisor]", "[websocket]\n\n[supervisor]");
        let e = crate::scenario::parse(&toml, "ws.toml", &Default::default()).unwrap_err();
        assert!(e.to_string().contains("profile.dispatch"), "{e}");
        let toml = crate::scenario::PARITY_TOML
            .replace("[profile]\n", "[profile]\nconnections = [1, 2]\n");
        let e = crate::scenario::parse(&toml, "c.toml", &Default::default()).unwrap_err();
        assert!(e.to_string().contains("profile.connections"), "{e}");
        assert!(e.to_string().contains("[websocket]"), "{e}");
    }
}
