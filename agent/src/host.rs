//! This agent: its settings and limits, its one run slot, and how it describes itself.

use std::sync::Arc;
use std::time::Duration;

use cwbench::proto::AgentInfo;
use parking_lot::Mutex;

use crate::auth::AuthInterceptor;

/// Ceilings on what a run may ask of this agent, so that no coordinator can
/// exhaust its memory or threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_threads: u32,
    pub max_workers: u32,
    pub max_queue_bound: u32,
    pub max_producers: u32,
    pub max_prefetch_jobs: u32,
    pub max_batch_jobs: usize,
    pub max_classes: usize,
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_threads: 1024,
            max_workers: 100_000,
            max_queue_bound: 1 << 20,
            max_producers: 1024,
            max_prefetch_jobs: 1 << 22,
            max_batch_jobs: 1 << 20,
            max_classes: 64,
            max_message_bytes: 16 << 20,
        }
    }
}

/// How this agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Worker threads for runs whose profile leaves threads unset.
    pub threads: u32,
    pub limits: Limits,
    /// How long to wait for Start after a Run stream opens.
    pub handshake_timeout: Duration,
    /// Pin every run's workload threads to these CPUs (`--cpus`).
    pub cpus: Option<Vec<usize>>,
    /// Serve over TLS with this certificate (`--tls-cert`, `--tls-key`).
    pub tls: Option<cwbench::tls::ServerTls>,
    /// The token every rpc must carry (none: no check; loopback or
    /// `--insecure` only).
    pub auth: AuthInterceptor,
    /// The operator's name for this machine's kind (`--label`), reported in
    /// AgentInfo so the coordinator can group hosts by it.
    pub label: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            threads: cwbench::sysinfo::logical_cores(),
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(10),
            cpus: None,
            tls: None,
            auth: AuthInterceptor::default(),
            label: String::new(),
        }
    }
}

/// The run-in-progress slot.
#[derive(Debug, Default)]
pub struct Slot(Mutex<Option<String>>);

/// Holds the slot for a run; frees it when dropped.
#[derive(Debug)]
pub struct SlotGuard(Arc<Slot>);

impl Slot {
    /// Claims the slot for `run_id`, or names the run that holds it.
    pub fn claim(self: &Arc<Self>, run_id: &str) -> Result<SlotGuard, String> {
        let mut s = self.0.lock();
        if let Some(busy) = s.as_ref() {
            return Err(busy.clone());
        }
        *s = Some(run_id.to_string());
        Ok(SlotGuard(self.clone()))
    }

    pub fn busy(&self) -> Option<String> {
        self.0.lock().clone()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        *self.0.0.lock() = None;
    }
}

/// This agent's description.
pub fn agent_info(cfg: &AgentConfig, busy: Option<String>) -> AgentInfo {
    let beam_missing = crate::beam::unavailable_reason();
    let mut runtimes_available = vec!["tokio".to_string()];
    if beam_missing.is_none() {
        runtimes_available.push("beam".into());
    }
    AgentInfo {
        runtimes_available,
        beam_unavailable_reason: beam_missing.unwrap_or_default(),
        hostname: cwbench::sysinfo::hostname(),
        // Pinned: the profile this agent stands in for has that many cores.
        logical_cores: cfg
            .cpus
            .as_ref()
            .map_or_else(cwbench::sysinfo::logical_cores, |c| c.len() as u32),
        cpu_model: cwbench::sysinfo::cpu_model(),
        os: cwbench::sysinfo::os(),
        agent_version: cwbench::VERSION.to_string(),
        protocol_version: cwbench::PROTOCOL_VERSION,
        default_threads: cfg.threads,
        busy_run_id: busy.unwrap_or_default(),
        runtime: "tokio".into(),
        cpu_set: cfg
            .cpus
            .as_deref()
            .map(crate::affinity::format_cpu_list)
            .unwrap_or_default(),
        label: cfg.label.clone(),
        // Plan.class_compute is honoured (session::validate_start).
        class_compute: true,
    }
}
