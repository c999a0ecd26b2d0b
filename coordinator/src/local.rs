//! In-process agents on loopback ports (the coordinator's no-flag mode), behind the `local-agents` cargo feature, on by default.
//!
//! Without the feature the coordinator links no agent code (no embedded
//! Erlang sources, TSC clock or CPU pinning) and asks for `--agent`.

#[cfg(feature = "local-agents")]
pub use cwbench_agent::{AgentConfig, AuthInterceptor, LocalAgent};

/// Agents started in this process; dropping this stops them.
#[derive(Debug, Default)]
pub struct LocalAgents {
    /// Held only to keep them serving.
    #[cfg(feature = "local-agents")]
    _agents: Vec<LocalAgent>,
}

impl LocalAgents {
    /// Stops them (each agent ends its server and joins its thread).
    pub fn stop(self) {}

    /// Starts `count` agents, each with `threads` worker threads for
    /// profiles that leave threads unset; returns them and their addresses.
    #[cfg(feature = "local-agents")]
    pub fn start(count: usize, threads: u32) -> std::io::Result<(Self, Vec<String>)> {
        let mut agents = Vec::with_capacity(count);
        for _ in 0..count {
            let cfg = AgentConfig {
                threads,
                ..AgentConfig::default()
            };
            agents.push(LocalAgent::spawn(cfg)?);
        }
        let addrs = agents.iter().map(|a| a.addr.to_string()).collect();
        Ok((Self { _agents: agents }, addrs))
    }

    /// Whether this process may hold `need` open files (raising its limit
    /// as far as it may): in-process agents share one limit, and a
    /// WebSocket run's server and clients each hold a descriptor per
    /// connection. The limit when it is too low.
    #[cfg(feature = "local-agents")]
    pub fn fd_limit_below(need: u64) -> Option<u64> {
        cwbench_agent::ws::raise_fd_limit().filter(|&limit| limit < need)
    }

    #[cfg(not(feature = "local-agents"))]
    pub fn fd_limit_below(_need: u64) -> Option<u64> {
        None
    }

    /// This build has no agent to start.
    #[cfg(not(feature = "local-agents"))]
    pub fn start(_count: usize, _threads: u32) -> std::io::Result<(Self, Vec<String>)> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this coordinator was built without the local-agents feature: name the agents with --agent",
        ))
    }
}
