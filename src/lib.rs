//! cwbench core: the wire contract, the scenario model, the seeded job
//! generator, the histogram codec and the result types shared by the agent and
//! the coordinator.

pub mod arrival;
pub mod batch;
pub mod digest;
pub mod distribution;
pub mod generator;
pub mod histogram;
pub mod packed;
pub mod proto;
pub mod scenario;
pub mod spec;
pub mod stream;
pub mod sysinfo;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;
pub mod token;
pub mod wsproto;

/// Version of the wire protocol in `proto/cwbench/v1/agent.proto`.
pub const PROTOCOL_VERSION: u32 = 2;

/// Version of this build of cwbench (agent and coordinator share it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
