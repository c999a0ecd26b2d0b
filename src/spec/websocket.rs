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

    /// A WebSocket run's rules on the server's profile.
    pub fn check_profile(p: &Profile) -> Result<(), Refusal> {
        if p.runtime == Flavor::Beam {
            return Err(Refusal::new(
                Field::Runtime,
                "\"beam\"",
                "a WebSocket run's server is tokio's (\"tokio\" or \"current-thread\")",
            ));
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
    profile: &Profile,
) -> Result<(WsRole, WebSocketSpec), Refusal> {
    use proto::web_socket::Role;
    let spec = WebSocketSpec::try_from(w)?;
    let role = match Role::try_from(w.role) {
        Ok(Role::Server) => {
            WebSocketSpec::check_profile(profile)?;
            WsRole::Server
        }
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

    #[test]
    fn roles_and_settings_are_checked_with_the_field_named() {
        let tokio = |dispatch| Profile {
            dispatch,
            ..Profile::try_from(&proto::Profile::default()).unwrap()
        };
        let p = tokio(Dispatch::TaskPerJob);
        let (role, _) = websocket_from_wire(&wire(Role::Client, "ws://h:1/"), &p).unwrap();
        assert_eq!(role, WsRole::Client("ws://h:1/".into()));
        let e = websocket_from_wire(&wire(Role::Client, "http://h/"), &p).unwrap_err();
        assert_eq!(e.field, Field::WsUrl);
        let e = websocket_from_wire(&wire(Role::Unspecified, ""), &p).unwrap_err();
        assert_eq!(e.field, Field::WsRole);
        let e = websocket_from_wire(&wire(Role::Server, ""), &tokio(Dispatch::Pool)).unwrap_err();
        assert_eq!(e.field, Field::Dispatch);
        assert!(e.reason.contains("task-per-job"), "{e}");
        let mut w = wire(Role::Server, "");
        w.connections = 0;
        let e = websocket_from_wire(&w, &p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "plan.websocket.connections = 0: must be in 1..=100000"
        );
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
