//! cwbench agent: serves the `cwbench.v1.Agent` gRPC service and runs the
//! workload of each run on a fresh tokio runtime.

pub mod auth;
pub mod cli;
mod queue;
mod recorder;
pub mod server;
mod session;
pub mod workload;

pub use auth::AuthInterceptor;
pub use server::{AgentConfig, AgentService, Limits, LocalAgent, serve};
