//! WebSocket runs (docs/websocket.md): the task server (the system under test) and the client that loads it.

pub mod client;
