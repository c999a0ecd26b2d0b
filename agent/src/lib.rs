//! cwbench agent: serves the `cwbench.v1.Agent` gRPC service and runs the
//! workload of each run on a fresh tokio runtime.

pub mod affinity;
pub mod auth;
pub mod beam;
mod buffers;
pub mod cli;
pub mod clock;
mod compute;
pub mod engine;
pub mod host;
mod phase;
mod queue;
mod recorder;
mod recovery;
pub mod server;
mod session;
pub mod span;
mod tokio_engine;
pub mod workload;
pub mod ws;

pub use auth::AuthInterceptor;
pub use host::{AgentConfig, Limits};
pub use server::{AgentService, LocalAgent, serve};
