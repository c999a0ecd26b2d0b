//! Which engine runs a workload: the one place that knows every engine (a new engine is a module below `crate::engine` and an arm here).

use cwbench::spec::Flavor;

pub use crate::engine::{Config, Outcome, Workload};

impl Workload {
    /// Starts the profile's engine on its own thread. Returns once it runs,
    /// or the reason it could not start.
    pub fn start(cfg: Config) -> Result<Self, String> {
        match cfg.runtime {
            Flavor::Beam => crate::beam::start(cfg),
            Flavor::MultiThread | Flavor::CurrentThread => crate::tokio_engine::start(cfg),
        }
    }
}
