//! Which engine runs a workload: the one place that knows every engine (a new engine is a module below `crate::engine` and an arm here).

use cwbench::spec::Flavor;

pub use crate::engine::{Config, Outcome, Workload};

impl Workload {
    /// Starts the profile's engine on its own thread. Returns once it runs,
    /// or the reason it could not start.
    pub fn start(cfg: Config) -> Result<Self, String> {
        if let Some(ws) = cfg.serve.clone() {
            // A WebSocket server: its tasks come over its connections.
            let (mut wl, port) = match cfg.runtime {
                Flavor::Beam => crate::beam::serve(cfg, &ws)?,
                Flavor::MultiThread | Flavor::CurrentThread => crate::ws::server::start(cfg, &ws)?,
            };
            wl.ws_port = port;
            return Ok(wl);
        }
        match cfg.runtime {
            Flavor::Beam => crate::beam::start(cfg),
            Flavor::MultiThread | Flavor::CurrentThread => crate::tokio_engine::start(cfg),
        }
    }
}
