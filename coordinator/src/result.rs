//! The result of a run, as written to `result.json` (schema version 1).

use cwbench::histogram::Summary;
use serde::{Deserialize, Serialize};

/// Version of the result.json layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything a run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub schema_version: u32,
    pub run_id: String,
    pub cwbench_version: String,
    /// Wall-clock start, RFC 3339 (UTC), from the coordinator's clock.
    pub started_at: String,
    /// Scenario as run (after defaults).
    pub scenario: cwbench::scenario::Scenario,
    /// Where the scenario came from.
    pub scenario_source: String,
    /// The run's length as resolved (durations turned into jobs in open
    /// loop; timed per agent in closed loop). Absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing: Option<cwbench::scenario::Sizing>,
    /// One entry per profile of the sweep, in run order.
    pub profiles: Vec<ProfileResult>,
    /// Throughput and p99 against every dimension that varies across the
    /// groups and profiles (docs/reports.md, Scaling). Absent in older files.
    #[serde(default)]
    pub scaling: Vec<Dimension>,
    /// Problems a reader must know about, one line per cause (the hosts it
    /// hit listed once).
    pub warnings: Vec<String>,
    /// The signal that interrupted the run (`SIGINT`, `SIGTERM`); absent
    /// when it ran to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
}

/// One profile's run on every host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileResult {
    pub label: String,
    pub profile: cwbench::scenario::Profile,
    pub hosts: Vec<HostResult>,
    /// The hosts grouped by what makes them comparable (agent label,
    /// logical cores, worker threads), with their histograms merged.
    /// Absent in older files.
    #[serde(default)]
    pub groups: Vec<GroupResult>,
    /// A WebSocket run: the server's row (its hosts are also in `hosts`;
    /// the groups hold the clients only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WsProfile>,
}

/// One server configuration under load (docs/websocket.md): what the
/// clients measured, merged, beside what the server measured of itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WsProfile {
    /// The server host's label (the URL for a `--target` server) and the
    /// URL the clients loaded.
    pub server: String,
    pub url: String,
    pub clients: usize,
    /// Connections the clients held at their peak (summed).
    pub connections: u64,
    /// Round trips answered per second, all clients together.
    pub round_trips_per_s: f64,
    /// Tasks the clients sent and the server read, and whether their
    /// task-set digests add up (the same tasks, whatever the order).
    pub tasks_sent: u64,
    pub tasks_served: u64,
    /// None when cwbench did not start the server (`--target`): nothing
    /// to compare with.
    pub digest_match: Option<bool>,
    /// Client-side round trip from the intended send, all clients merged.
    pub round_trip: Summary,
    /// Client-side send delay (intended send to the frame written).
    pub send_delay: Summary,
    /// The server's own queue wait and service time.
    pub server_queue_wait: Summary,
    pub server_service: Summary,
    /// Connection set-up, the clients' worst host.
    pub connect: Summary,
    /// Tasks by how they ended, all clients.
    pub errors: WsErrors,
    /// Server RSS growth per connection while connections opened, bytes
    /// (None when every connection was open by the first snapshot, or
    /// the server ran inside the coordinator's process).
    pub server_bytes_per_connection: Option<f64>,
    /// CPU time per round trip, µs: the clients' and the server's (None
    /// for in-process agents, whose CPU figures are the whole process's).
    pub client_cpu_us_per_task: Option<f64>,
    pub server_cpu_us_per_task: Option<f64>,
}

/// A WebSocket run's tasks that did not complete, by kind.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct WsErrors {
    pub crashed: u64,
    pub timed_out: u64,
    pub refused: u64,
    pub connection_lost: u64,
    pub cancelled: u64,
    pub connect_failed: u64,
    pub reconnects: u64,
}

/// How a group's throughput combines its hosts'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThroughputBasis {
    /// Replicate: every host ran the whole stream; the mean per host.
    PerHostMean,
    /// Shard: the hosts split the stream; their sum.
    Sum,
}

/// Minimum, median and maximum of one figure across a group's hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

/// A host whose figure lies far from its group's (docs/reports.md, Outliers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outlier {
    pub host: String,
    /// `throughput` (jobs/s) or `p99` (µs).
    pub metric: String,
    pub value: f64,
    pub median: f64,
    /// Modified z-score 0.6745·(value − median)/MAD; none when the MAD is
    /// 0 (most hosts equal), where any host 10% off stands out.
    pub score: Option<f64>,
}

/// One snapshot interval of a group: its hosts' interval number k, their
/// throughput combined as the group's basis says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupPoint {
    /// Mean over the hosts of the interval's end, s since each host's start.
    pub t_s: f64,
    pub jobs_per_s: f64,
}

/// Hosts of one profile that share agent label, logical cores and worker
/// threads, merged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupResult {
    /// What identifies the group across runs (host names change, this does
    /// not): `4c/4t`, or `LABEL 4c/4t` for labelled agents.
    pub name: String,
    /// The agents' `--label`, empty if none.
    pub label: String,
    pub cores: u32,
    pub threads: u32,
    /// Every host of the group, in run order.
    pub hosts: Vec<String>,
    /// Hosts whose run ended ok: only they are merged below.
    pub hosts_ok: u32,
    pub throughput: f64,
    pub throughput_basis: ThroughputBasis,
    /// Summed over the merged hosts.
    pub accounting: Accounting,
    /// Completion latency of the merged hosts: the HdrHistogram sum of their
    /// whole-run histograms (never an average of percentiles).
    pub completion: Summary,
    pub spectrum: Vec<SpectrumPoint>,
    /// Across the merged hosts: per-host throughput (jobs/s) and p99 (µs).
    pub throughput_spread: Spread,
    pub p99_spread: Spread,
    pub outliers: Vec<Outlier>,
    /// Throughput over time, interval by interval.
    pub intervals: Vec<GroupPoint>,
}

/// How a host's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostStatus {
    /// Done received; accounting and digest checked.
    Ok,
    /// The agent reported an error, or a check failed.
    Failed,
    /// The agent stopped answering; data up to then is kept.
    Lost,
    /// The run was interrupted (SIGINT/SIGTERM) before this host's Done:
    /// the agent cancelled the jobs it held; what ran is measured, and the
    /// accounting and digest are checked.
    Interrupted,
}

impl HostStatus {
    /// Done received and checked: the host's figures are whole for what it
    /// ran (ok, or cut short by an interrupt).
    pub fn checked(self) -> bool {
        matches!(self, HostStatus::Ok | HostStatus::Interrupted)
    }
}

/// Facts about the agent's machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub logical_cores: u32,
    pub cpu_model: String,
    pub os: String,
    pub agent_version: String,
    pub runtime: String,
    /// CPU set the agent's workload was pinned to (`--cpus`), empty if none.
    #[serde(default)]
    pub cpu_set: String,
    /// The agent's `--label`, empty if none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// An agent the coordinator started in its own process (no agents
    /// named): its RSS and CPU figures are the whole process's, shared with
    /// the coordinator and the other local agents, not its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_process: bool,
}

/// Counters as the agent reported them, and what the coordinator sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    pub sent: u64,
    pub received: u64,
    pub completed: u64,
    pub crashed: u64,
    pub timed_out: u64,
    pub shed: u64,
    pub cancelled: u64,
    /// Timed runs: received but never released, the measured part being
    /// over (not an error). Absent in files written before it existed.
    #[serde(default)]
    pub unreleased: u64,
    pub measured_completed: u64,
    pub restarts: u64,
    /// WebSocket clients: tasks the server refused, and tasks whose
    /// connection failed before their answer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub connection_lost: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Accounting {
    /// sent = completed + failed + shed + cancelled + unreleased (failed =
    /// crashed + timed out).
    pub fn balances(&self) -> bool {
        self.sent == self.received
            && self.received
                == self.completed
                    + self.crashed
                    + self.timed_out
                    + self.shed
                    + self.cancelled
                    + self.unreleased
                    + self.refused
                    + self.connection_lost
    }

    pub fn errors(&self) -> u64 {
        self.crashed
            + self.timed_out
            + self.shed
            + self.cancelled
            + self.refused
            + self.connection_lost
    }
}

/// Latency summaries of a set of jobs (microseconds).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latencies {
    pub completion: Summary,
    pub queue_wait: Summary,
    pub service: Summary,
    pub sleep_overshoot: Summary,
}

/// One job class on one host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassResult {
    pub class: String,
    pub latency: Latencies,
}

/// One snapshot interval on one host.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct IntervalPoint {
    pub seq: u64,
    /// End of the interval, seconds since the host's run start (its clock).
    pub t_s: f64,
    /// Measured jobs completed in the interval, per second.
    pub jobs_per_s: f64,
    /// Completion latency in the interval, µs (0 when no job completed).
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub queue_depth: u64,
    pub in_flight: u64,
    pub rss_bytes: u64,
    /// CPU time used by the agent process in the interval, as a share of one
    /// core (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Scheduler lateness probe in the interval, µs.
    pub lateness_p50_us: u64,
    pub lateness_p99_us: u64,
    /// Workload runtime: tasks alive, global queue depth, and busy time of
    /// its workers in the interval as a share of one core.
    pub alive_tasks: u64,
    pub global_queue_depth: u64,
    pub runtime_busy_cores: f64,
    /// WebSocket runs: open connections at the interval's end.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub connections: u64,
}

/// One host's run of one profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostResult {
    /// Short unique name in this report.
    pub label: String,
    /// Address the coordinator dialled.
    pub addr: String,
    pub info: HostInfo,
    /// Worker threads the agent used.
    pub threads: u32,
    pub status: HostStatus,
    /// Why the status is not ok.
    pub error: Option<String>,
    pub accounting: Accounting,
    /// Digest of the jobs the coordinator sent, and the agent's digest of the
    /// jobs it received (hex); equal on a sound run.
    pub digest_sent: String,
    pub digest_received: Option<String>,
    /// Measured window (first measured release to last measured completion), s.
    pub window_s: f64,
    /// Measured completed jobs ÷ window.
    pub throughput: f64,
    /// Over all classes.
    pub latency: Latencies,
    pub classes: Vec<ClassResult>,
    pub restart_latency: Summary,
    /// Time the agent's producers waited for jobs from the coordinator, ms.
    pub feed_stall_ms: f64,
    pub snapshots: u64,
    pub intervals: Vec<IntervalPoint>,
    /// Completion latency at a fixed ladder of percentiles over the whole
    /// measured run (HdrHistogram-style percentile spectrum); empty when no
    /// job was measured. Absent in files written before it existed.
    #[serde(default)]
    pub spectrum: Vec<SpectrumPoint>,
    /// Scheduler lateness of the probe task over the whole run, µs.
    pub lateness: Summary,
    /// Recovery after injected faults.
    pub recovery: RecoveryResult,
    /// A WebSocket run: this host's part in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WsHost>,
}

/// A host's part in a WebSocket run (docs/websocket.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WsHost {
    /// "server" or "client".
    pub role: String,
    /// Tasks it sent (client) or read (server), and their order-independent
    /// digest (hex).
    pub tasks: u64,
    pub task_set: String,
    /// Most connections open at a snapshot.
    pub peak_connections: u64,
    /// Client: connection set-up (TCP connect + handshake), µs.
    pub connect: Summary,
    pub reconnects: u64,
    pub connect_failed: u64,
    /// The agent process's CPU time over the run, µs.
    pub cpu_us: u64,
}

/// Recovery intervals after injected faults (docs/workload.md, Metrics).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecoveryResult {
    /// Fault events (crashes within one recovery window of an event's first
    /// crash belong to it).
    pub faults: u64,
    /// Recovery intervals of the events that recovered, µs.
    pub interval: Summary,
    /// Events whose rate did not come back within 30 s or before the end.
    pub unrecovered: u64,
    /// Events too early in the run for a baseline.
    pub no_baseline: u64,
    /// Events after which the rate never left the band: no measurable dip.
    /// Absent in older files.
    #[serde(default)]
    pub no_dip: u64,
    /// The first events: (time since the host's run start in s, recovery in
    /// ms when measured: 0 for no measurable dip), for timelines.
    pub marks: Vec<FaultMark>,
}

/// One fault event on a host's timeline.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FaultMark {
    pub t_s: f64,
    pub recovery_ms: Option<f64>,
}

/// One point of a latency percentile spectrum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SpectrumPoint {
    /// Percentile, 0..=100 (100 = the maximum).
    pub percentile: f64,
    /// Completion latency at that percentile, µs.
    pub value_us: u64,
}

/// Percentiles of the spectrum: the usual report points plus five points per
/// decade of 1/(1−p) up to 99.999, so the curve is smooth on a log axis.
pub fn spectrum_percentiles() -> Vec<f64> {
    let mut p: Vec<f64> = vec![
        0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
    ];
    for i in 1..25 {
        let x = 10f64.powf(f64::from(i) / 5.0);
        // Rounded to 4 decimals so the ladder prints cleanly.
        p.push(((1.0 - 1.0 / x) * 100.0 * 1e4).round() / 1e4);
    }
    p.sort_by(f64::total_cmp);
    p.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    p
}

/// The spectrum of a histogram (µs); empty for an empty histogram.
pub fn spectrum(h: &cwbench::histogram::Hist) -> Vec<SpectrumPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    spectrum_percentiles()
        .into_iter()
        .map(|percentile| SpectrumPoint {
            percentile,
            value_us: if percentile >= 100.0 {
                h.max()
            } else if percentile <= 0.0 {
                h.min()
            } else {
                h.value_at_quantile(percentile / 100.0)
            },
        })
        .collect()
}

/// A result.json that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct LoadError {
    pub path: String,
    pub reason: String,
}

/// Reads a saved result.json.
pub fn load(path: &std::path::Path) -> Result<RunResult, LoadError> {
    let err = |reason: String| LoadError {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
    match v.get("schema_version").and_then(serde_json::Value::as_u64) {
        Some(n) if n <= u64::from(SCHEMA_VERSION) => {}
        Some(n) => {
            return Err(err(format!(
                "schema_version {n} is newer than this coordinator reads ({SCHEMA_VERSION})"
            )));
        }
        None => return Err(err("not a cwbench result: no schema_version".into())),
    }
    serde_json::from_value(v).map_err(|e| err(format!("not a cwbench result: {e}")))
}

// The scaling section's types (computed in `crate::scaling`).

/// A USL fit with R² under this is called poor.
pub const USL_POOR_R2: f64 = 0.9;
/// Fewest points of cores or threads for a USL fit.
pub const USL_MIN_POINTS: usize = 3;

/// One dimension of the run and how the figures move along it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dimension {
    /// `cores`, `threads`, `workers`, `queue_bound`, `producers`,
    /// `compute_threads`, `yield_every`, `connections`, `dispatch`, `compute`,
    /// `backpressure`, `runtime`, `schedulers` or `label`.
    pub name: String,
    /// Ordered numbers (speedup from the smallest) or categories (relative
    /// to the first in run order).
    pub numeric: bool,
    /// Dimensions that move with this one: each is determined by it in this
    /// run (a fleet's threads follow its cores), so they are not held fixed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<String>,
    pub series: Vec<ScalingSeries>,
}

impl Dimension {
    /// `cores`, or `cores (with threads, label)`.
    pub fn title(&self) -> String {
        if self.with.is_empty() {
            self.name.clone()
        } else {
            format!("{} (with {})", self.name, self.with.join(", "))
        }
    }
}

/// Points that differ only in the dimension.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalingSeries {
    /// The values of the other dimensions that vary in the run, held fixed
    /// here, e.g. `workers=8`; empty when nothing else varies.
    pub fixed: String,
    pub points: Vec<ScalingPoint>,
    /// cores or threads with at least `USL_MIN_POINTS` points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usl: Option<UslFit>,
}

/// One group of one profile, placed on the dimension.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalingPoint {
    pub value: String,
    pub profile: String,
    pub group: String,
    pub throughput: f64,
    pub throughput_basis: ThroughputBasis,
    pub p99_us: u64,
    /// Throughput ÷ the first point's (the smallest, when numeric).
    pub speedup: f64,
    /// cores and threads: speedup ÷ (N / N₀), 1 = linear scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficiency: Option<f64>,
}

/// X(N) = λN / (1 + σ(N−1) + κN(N−1)), least squares on throughput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UslFit {
    /// Throughput of one unit without contention or coherency cost.
    pub lambda: f64,
    /// Contention (serial fraction), 0..=1.
    pub sigma: f64,
    /// Coherency (crosstalk) cost, ≥ 0.
    pub kappa: f64,
    pub r2: f64,
    pub points: usize,
    /// N* = √((1−σ)/κ), where throughput peaks; none when κ = 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_n: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_throughput: Option<f64>,
}

impl UslFit {
    /// Predicted throughput at `n`.
    pub fn at(&self, n: f64) -> f64 {
        self.lambda * usl_shape(n, self.sigma, self.kappa)
    }

    pub fn poor(&self) -> bool {
        self.r2 < USL_POOR_R2
    }

    /// What a reader must know to trust the fit, in words.
    pub fn caveats(&self, max_n: f64) -> Vec<String> {
        let mut c = Vec::new();
        if self.points == 3 {
            c.push("3 points for 3 coefficients: the curve passes through them, so R² does not test the model; measure more points".into());
        }
        if self.poor() {
            c.push(format!(
                "poor fit (R² {:.2} < {USL_POOR_R2}): throughput does not follow the USL here, so σ and κ mean little",
                self.r2
            ));
        }
        match self.peak_n {
            None => c.push("no coherency cost measured (κ = 0): no peak predicted".into()),
            Some(p) if p > max_n => c.push(format!(
                "the predicted peak N* ≈ {p:.1} lies beyond the measured range (≤ {max_n}): an extrapolation"
            )),
            Some(_) => {}
        }
        c
    }
}

pub(crate) fn usl_shape(n: f64, sigma: f64, kappa: f64) -> f64 {
    n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))
}
