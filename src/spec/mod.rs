//! The run spec: one profile and the run parameters an agent needs, and the only home of every rule about what a run may be.
//!
//! The scenario builds a [`RunSpec`] from TOML (and names TOML keys in its
//! errors), the agent from `Start` (`TryFrom`, naming wire fields); both refuse
//! through the checks here, so the two ends cannot drift. Upper bounds that are
//! safety limits (the coordinator's `--limit`, the agent's host limits) stay
//! with each end.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::proto;

mod websocket;
use websocket::websocket_from_wire;
pub use websocket::{MAX_CONNECTIONS, WS_DISPATCH, WebSocketSpec, WsRole};

/// Recovery interval: fault -> completion rate over `window_ms` back within
/// `band` of the median window of the `baseline_ms` before the fault.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySpec {
    #[serde(default = "default_window_ms")]
    pub window_ms: u32,
    #[serde(default = "default_band")]
    pub band: f64,
    #[serde(default = "default_baseline_ms")]
    pub baseline_ms: u32,
}

impl Default for RecoverySpec {
    fn default() -> Self {
        Self {
            window_ms: default_window_ms(),
            band: default_band(),
            baseline_ms: default_baseline_ms(),
        }
    }
}

fn default_window_ms() -> u32 {
    100
}
fn default_band() -> f64 {
    0.1
}
fn default_baseline_ms() -> u32 {
    1000
}

/// Workload runtime: a tokio flavor, or the BEAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavor {
    /// tokio's multi-thread runtime (`runtime = "tokio"` means this too).
    #[default]
    #[serde(alias = "tokio")]
    MultiThread,
    /// tokio's current-thread runtime (threads = 1).
    CurrentThread,
    /// An Erlang VM started by the agent (runtimes/beam/).
    Beam,
}

/// What a producer does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backpressure {
    #[default]
    Block,
    Shed,
}

/// Dispatch architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dispatch {
    /// N workers pull from one bounded queue.
    #[default]
    Pool,
    /// One bounded queue per worker, filled round robin (BEAM style).
    Mailbox,
    /// A task per job; in-flight bounded by queue_bound.
    TaskPerJob,
    /// Each producer awaits each job itself.
    Serial,
    /// Each producer spawns each job and awaits it before the next.
    SpawnAwait,
}

/// Compute placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compute {
    /// On the async worker thread.
    #[default]
    Inline,
    /// On the async worker, yielding every `yield_every` units.
    Yield,
    /// In tokio's blocking pool (spawn_blocking).
    Blocking,
    /// On a dedicated pool of `compute_threads` OS threads.
    Pool,
}

/// Supervision of crashed workers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSpec {
    /// Crashes within `restart_window_ms` past which the pool is declared
    /// failed (OTP's intensity); 0 = never give up.
    #[serde(default)]
    pub max_restarts: u32,
    /// Window of the intensity limit, milliseconds.
    #[serde(default)]
    pub restart_window_ms: u32,
    /// Delay before a crashed worker's replacement starts, milliseconds;
    /// doubles with each crash of the same worker within a second of its
    /// last, up to `max_backoff_ms`. 0 = restart immediately.
    #[serde(default)]
    pub backoff_ms: u32,
    #[serde(default)]
    pub max_backoff_ms: u32,
}

/// One point of the sweep: everything an agent needs to configure a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// None = the agent's default.
    pub threads: Option<u32>,
    pub workers: u32,
    pub queue_bound: u32,
    pub producers: u32,
    pub backpressure: Backpressure,
    pub dispatch: Dispatch,
    pub compute: Compute,
    pub runtime: Flavor,
    pub yield_every: u32,
    pub compute_threads: u32,
    /// runtime = "beam": VM scheduler threads (None = threads, or the
    /// agent's default). Always None for tokio runtimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedulers: Option<u32>,
    /// A WebSocket run: connections per client agent (None = the
    /// `[websocket]` table's). A profile key, so it can be swept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
}

impl Profile {
    /// Short label for reports, e.g. `t2 w64 q256 p1 pool/inline`.
    pub fn label(&self) -> String {
        let t = self
            .threads
            .map_or_else(|| "t=agent".to_string(), |t| format!("t{t}"));
        let shed = match self.backpressure {
            Backpressure::Block => "",
            Backpressure::Shed => " shed",
        };
        let t = match self.runtime {
            Flavor::MultiThread => t,
            Flavor::CurrentThread => "ct".to_string(),
            Flavor::Beam => {
                // The BEAM has one dispatch and one compute placement: the
                // label names the runtime and its schedulers instead.
                let s = self
                    .schedulers
                    .or(self.threads)
                    .map_or_else(|| "s=agent".to_string(), |s| format!("s{s}"));
                if self.dispatch == Dispatch::TaskPerJob {
                    // A WebSocket server: a process per task.
                    let conns = self
                        .connections
                        .map_or_else(String::new, |c| format!(" c{c}"));
                    return format!("beam {s} task-per-job{conns}");
                }
                return format!(
                    "beam {s} w{} q{} p{} pool{shed}",
                    self.workers, self.queue_bound, self.producers
                );
            }
        };
        let compute = match self.compute {
            Compute::Yield => format!("yield{}", self.yield_every),
            Compute::Pool => format!("pool{}", self.compute_threads),
            c => enum_name(&c),
        };
        let conns = self
            .connections
            .map_or_else(String::new, |c| format!(" c{c}"));
        format!(
            "{t} w{} q{} p{} {}/{compute}{shed}{conns}",
            self.workers,
            self.queue_bound,
            self.producers,
            enum_name(&self.dispatch),
        )
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::Profile {
        proto::Profile {
            threads: self.threads.unwrap_or(0),
            workers: self.workers,
            queue_bound: self.queue_bound,
            producers: self.producers,
            backpressure: match self.backpressure {
                Backpressure::Block => proto::Backpressure::Block,
                Backpressure::Shed => proto::Backpressure::Shed,
            } as i32,
            dispatch: match self.dispatch {
                Dispatch::Pool => proto::Dispatch::Pool,
                Dispatch::Mailbox => proto::Dispatch::Mailbox,
                Dispatch::TaskPerJob => proto::Dispatch::TaskPerJob,
                Dispatch::Serial => proto::Dispatch::Serial,
                Dispatch::SpawnAwait => proto::Dispatch::SpawnAwait,
            } as i32,
            compute: self.compute.to_proto() as i32,
            yield_every: self.yield_every,
            compute_threads: self.compute_threads,
            current_thread: self.runtime == Flavor::CurrentThread,
            label: self.label(),
            runtime: if self.runtime == Flavor::Beam {
                "beam"
            } else {
                "tokio"
            }
            .into(),
            schedulers: self.schedulers.unwrap_or(0),
        }
    }
}

/// The kebab-case name serde gives a unit enum value.
pub fn enum_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

impl Compute {
    /// The wire form.
    pub fn to_proto(self) -> proto::Compute {
        match self {
            Compute::Inline => proto::Compute::Inline,
            Compute::Yield => proto::Compute::Yield,
            Compute::Blocking => proto::Compute::Blocking,
            Compute::Pool => proto::Compute::Pool,
        }
    }
}

impl Dispatch {
    /// Does this architecture have a pool of worker tasks (that a
    /// `kill-worker` fault can kill from, and that `workers` sizes)?
    pub fn has_worker_pool(self) -> bool {
        matches!(self, Dispatch::Pool | Dispatch::Mailbox)
    }
}

/// A field of the run spec, named in refusals: as a scenario key
/// ([`Field::toml_key`]) or as a wire field ([`Field::wire_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Start,
    RunId,
    Threads,
    Workers,
    QueueBound,
    Producers,
    Backpressure,
    Dispatch,
    Compute,
    Runtime,
    Schedulers,
    YieldEvery,
    ComputeThreads,
    Arrival,
    KillJobs,
    JobTimeout,
    SnapshotInterval,
    ProbeInterval,
    RecoveryWindow,
    RecoveryBand,
    RecoveryBaseline,
    Backoff,
    MaxBackoff,
    RestartWindow,
    /// The compute placement of the class with this index.
    ClassCompute(usize),
    /// The list of class placements as a whole (its length).
    ClassComputes,
    /// `[websocket]` keys (docs/websocket.md).
    Connections,
    ConnectRate,
    WsInFlight,
    MaxMessage,
    WsRole,
    WsUrl,
    WsPort,
    ProfileConnections,
}

impl Field {
    /// The key path in a scenario file.
    pub fn toml_key(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Field::ClassCompute(i) => return Cow::Owned(format!("class[{i}].compute")),
            Field::ClassComputes => "class",
            Field::Start => "",
            Field::RunId => "name",
            Field::Threads => "profile.threads",
            Field::Workers => "profile.workers",
            Field::QueueBound => "profile.queue_bound",
            Field::Producers => "profile.producers",
            Field::Backpressure => "profile.backpressure",
            Field::Dispatch => "profile.dispatch",
            Field::Compute => "profile.compute",
            Field::Runtime => "profile.runtime",
            Field::Schedulers => "profile.schedulers",
            Field::YieldEvery => "profile.yield_every",
            Field::ComputeThreads => "profile.compute_threads",
            Field::Arrival => "arrival.mode",
            Field::KillJobs => "fault",
            Field::JobTimeout => "run.job_timeout_ms",
            Field::SnapshotInterval => "run.snapshot_interval_ms",
            Field::ProbeInterval => "run.probe_interval_us",
            Field::RecoveryWindow => "recovery.window_ms",
            Field::RecoveryBand => "recovery.band",
            Field::RecoveryBaseline => "recovery.baseline_ms",
            Field::Backoff => "supervisor.backoff_ms",
            Field::MaxBackoff => "supervisor.max_backoff_ms",
            Field::RestartWindow => "supervisor.restart_window_ms",
            Field::Connections => "websocket.connections",
            Field::ConnectRate => "websocket.connect_rate",
            Field::WsInFlight => "websocket.in_flight",
            Field::MaxMessage => "websocket.max_message",
            Field::WsRole => "websocket.role",
            Field::WsUrl => "websocket.url",
            Field::WsPort => "websocket.port",
            Field::ProfileConnections => "profile.connections",
        })
    }

    /// The field of `Start` (proto `Profile` or `Plan`).
    pub fn wire_name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Field::ClassCompute(i) => return Cow::Owned(format!("plan.class_compute[{i}]")),
            Field::ClassComputes => "plan.class_compute",
            Field::Start => "Start",
            Field::RunId => "Start.run_id",
            Field::Arrival => "plan.arrival",
            Field::KillJobs => "plan.kill_jobs",
            Field::JobTimeout => "plan.job_timeout_ms",
            Field::SnapshotInterval => "plan.snapshot_interval_ms",
            Field::ProbeInterval => "plan.probe_interval_us",
            Field::RecoveryWindow => "plan.recovery_window_ms",
            Field::RecoveryBand => "plan.recovery_band",
            Field::RecoveryBaseline => "plan.recovery_baseline_ms",
            Field::Backoff => "plan.backoff_ms",
            Field::MaxBackoff => "plan.max_backoff_ms",
            Field::RestartWindow => "plan.restart_window_ms",
            Field::Connections => "plan.websocket.connections",
            Field::ConnectRate => "plan.websocket.connect_rate",
            Field::WsInFlight => "plan.websocket.in_flight",
            Field::MaxMessage => "plan.websocket.max_message",
            Field::WsRole => "plan.websocket.role",
            Field::WsUrl => "plan.websocket.url",
            Field::WsPort => "plan.websocket.port",
            Field::ProfileConnections => "plan.websocket.connections",
            // Profile fields have the same path on both sides.
            f => return f.toml_key(),
        })
    }
}

/// Why a run spec is refused: the field, its value as written, and the
/// reason (the same words whichever end refuses).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} = {value}: {reason}", field.wire_name())]
pub struct Refusal {
    pub field: Field,
    pub value: String,
    pub reason: String,
}

impl Refusal {
    fn new(field: Field, value: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Self {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// `v` if within `min..=max`, else a refusal naming the range.
pub fn range<T: PartialOrd + std::fmt::Display + Copy>(
    field: Field,
    v: T,
    min: T,
    max: T,
) -> Result<T, Refusal> {
    if v < min || v > max {
        Err(Refusal::new(field, v, format!("must be in {min}..={max}")))
    } else {
        Ok(v)
    }
}

/// A quoted kebab-case enum value, as a scenario writes it.
fn quoted<T: Serialize>(v: &T) -> String {
    format!("\"{}\"", enum_name(v))
}

impl Profile {
    /// The BEAM's one dispatch: worker processes pulling from one bounded
    /// queue (a workload run), or a process per task (a WebSocket server).
    pub fn beam_dispatch(websocket: bool) -> Dispatch {
        if websocket {
            Dispatch::TaskPerJob
        } else {
            Dispatch::Pool
        }
    }

    /// Refuses combinations that make no sense, with the reason. Upper
    /// limits are each end's own (see the module doc). `websocket`: the
    /// profile is a WebSocket run's server's, whose handler architectures
    /// are WebSocketSpec::check_profile's to judge.
    pub fn check(&self, websocket: bool) -> Result<(), Refusal> {
        if websocket {
            WebSocketSpec::check_profile(self)?;
        }
        if self.runtime == Flavor::Beam {
            let why = |field, value: String, reason: &str| {
                Err(Refusal::new(
                    field,
                    value,
                    format!("runtime = \"beam\" {reason}"),
                ))
            };
            if self.dispatch != Self::beam_dispatch(false) && !websocket {
                return why(
                    Field::Dispatch,
                    quoted(&self.dispatch),
                    "has one dispatch: \"pool\" (worker processes pulling from one bounded queue); the others are tokio architectures",
                );
            }
            if self.compute != Compute::Inline {
                return why(Field::Compute, quoted(&self.compute), BEAM_INLINE_ONLY);
            }
            if self.backpressure == Backpressure::Shed {
                return why(
                    Field::Backpressure,
                    quoted(&self.backpressure),
                    "supports \"block\" only",
                );
            }
            if self.producers != 1 {
                return why(
                    Field::Producers,
                    self.producers.to_string(),
                    "is fed over one pipe by one producer: set producers = 1",
                );
            }
        }
        if self.runtime == Flavor::CurrentThread && self.threads.is_some_and(|t| t != 1) {
            return Err(Refusal::new(
                Field::Threads,
                self.threads.unwrap_or(0),
                "runtime = \"current-thread\" runs on exactly 1 thread: set threads = 1 or leave it out",
            ));
        }
        if !self.dispatch.has_worker_pool() && self.workers != 1 {
            return Err(Refusal::new(
                Field::Workers,
                self.workers,
                format!(
                    "dispatch = \"{}\" has no worker pool (concurrency comes from {}): set workers = 1",
                    enum_name(&self.dispatch),
                    if self.dispatch == Dispatch::TaskPerJob {
                        "queue_bound, the in-flight bound"
                    } else {
                        "producers, one job at a time each"
                    }
                ),
            ));
        }
        if matches!(self.dispatch, Dispatch::Serial | Dispatch::SpawnAwait)
            && self.backpressure == Backpressure::Shed
        {
            return Err(Refusal::new(
                Field::Backpressure,
                quoted(&self.backpressure),
                "serial and spawn-await have no queue to shed from: use block",
            ));
        }
        if self.compute == Compute::Yield && self.yield_every == 0 {
            return Err(Refusal::new(
                Field::YieldEvery,
                0,
                format!("must be in 1..={}", u32::MAX),
            ));
        }
        if self.compute == Compute::Pool && self.compute_threads == 0 {
            return Err(Refusal::new(
                Field::ComputeThreads,
                0,
                "must be at least 1 with compute = \"pool\"",
            ));
        }
        Ok(())
    }
}

/// Why the BEAM refuses a compute placement other than inline (the
/// profile's or a class's).
const BEAM_INLINE_ONLY: &str = "computes \"inline\" only: its schedulers preempt, there is no blocking pool to move the CPU step to";

/// Where the CPU step of each class runs: the class's own placement, or
/// the profile's (`None`).
pub fn placements<'a>(
    profile: &'a Profile,
    class_compute: &'a [Option<Compute>],
) -> impl Iterator<Item = Compute> + 'a {
    class_compute.iter().map(|c| c.unwrap_or(profile.compute))
}

/// Class placements against the profile: the BEAM computes inline only,
/// whoever asks; a class that yields or computes on the dedicated pool
/// needs `yield_every` or `compute_threads` as the profile would (the pool
/// exists when the profile or any class places work on it, sized by the
/// profile's `compute_threads`).
pub fn check_class_compute(
    profile: &Profile,
    class_compute: &[Option<Compute>],
) -> Result<(), Refusal> {
    for (i, c) in class_compute.iter().enumerate() {
        if profile.runtime == Flavor::Beam
            && let Some(c) = c.filter(|&c| c != Compute::Inline)
        {
            return Err(Refusal::new(
                Field::ClassCompute(i),
                quoted(&c),
                format!("runtime = \"beam\" {BEAM_INLINE_ONLY}"),
            ));
        }
    }
    let uses = |want| placements(profile, class_compute).any(|c| c == want);
    if uses(Compute::Yield) && profile.yield_every == 0 {
        return Err(Refusal::new(
            Field::YieldEvery,
            0,
            format!(
                "must be in 1..={} when a class computes with \"yield\"",
                u32::MAX
            ),
        ));
    }
    if uses(Compute::Pool) && profile.compute_threads == 0 {
        return Err(Refusal::new(
            Field::ComputeThreads,
            0,
            "must be at least 1 when a class computes on the \"pool\"",
        ));
    }
    Ok(())
}

/// A `kill-worker` fault needs a worker to kill.
pub fn check_kill_worker(dispatch: Dispatch) -> Result<(), Refusal> {
    if dispatch.has_worker_pool() {
        Ok(())
    } else {
        Err(Refusal::new(
            Field::KillJobs,
            "\"kill-worker\"",
            format!(
                "needs a worker pool to kill from, but dispatch = \"{}\" has none",
                enum_name(&dispatch)
            ),
        ))
    }
}

/// At most this many `kill-worker` faults (and `[[fault]]` tables).
pub const MAX_FAULTS: usize = 1024;

/// A job timeout, if any, is 1 ms to an hour.
pub fn check_job_timeout(ms: Option<u32>) -> Result<(), Refusal> {
    if let Some(t) = ms {
        range(Field::JobTimeout, t, 1, 3_600_000)?;
    }
    Ok(())
}

/// The snapshot period (ms) and the scheduler probe's period (µs).
pub fn check_intervals(snapshot_ms: u32, probe_us: u32) -> Result<(), Refusal> {
    range(Field::SnapshotInterval, snapshot_ms, 100, 60_000)?;
    range(Field::ProbeInterval, probe_us, 100, 1_000_000)?;
    Ok(())
}

/// A wire value where 0 means "the default".
fn or_default(v: u32, default: u32) -> u32 {
    if v == 0 { default } else { v }
}

impl RecoverySpec {
    /// The plan's recovery parameters, 0 meaning the default (not yet
    /// checked).
    pub fn from_wire(plan: &proto::Plan) -> Self {
        let d = RecoverySpec::default();
        RecoverySpec {
            window_ms: or_default(plan.recovery_window_ms, d.window_ms),
            band: if plan.recovery_band == 0.0 {
                d.band
            } else {
                plan.recovery_band
            },
            baseline_ms: or_default(plan.recovery_baseline_ms, d.baseline_ms),
        }
    }

    /// The measurement's resolution: 10 ms buckets, windows of whole
    /// buckets, a baseline of at least three windows.
    pub fn check(&self) -> Result<(), Refusal> {
        range(Field::RecoveryWindow, self.window_ms, 10, 60_000)?;
        if !self.window_ms.is_multiple_of(10) {
            return Err(Refusal::new(
                Field::RecoveryWindow,
                self.window_ms,
                "must be a multiple of 10",
            ));
        }
        if !(self.band.is_finite() && self.band > 0.0 && self.band < 1.0) {
            return Err(Refusal::new(
                Field::RecoveryBand,
                self.band,
                "must be in (0, 1), e.g. 0.1 for ±10%",
            ));
        }
        range(
            Field::RecoveryBaseline,
            self.baseline_ms,
            3 * self.window_ms,
            600_000,
        )?;
        Ok(())
    }
}

impl SupervisorSpec {
    /// Backoffs up to a minute (cap ten), a restart window when restarts
    /// are limited.
    pub fn check(&self) -> Result<(), Refusal> {
        range(Field::Backoff, self.backoff_ms, 0, 60_000)?;
        range(Field::MaxBackoff, self.max_backoff_ms, 0, 600_000)?;
        if self.max_restarts > 0 {
            range(Field::RestartWindow, self.restart_window_ms, 1, 3_600_000)?;
        }
        Ok(())
    }
}

/// What one run of one profile is, as an agent needs it (the job stream's
/// own parameters, classes and length, travel beside it).
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub run_id: String,
    pub profile: Profile,
    /// Open loop: jobs are released at their intended times.
    pub open: bool,
    /// Jobs whose worker is killed from outside.
    pub kill_jobs: Vec<u64>,
    pub job_timeout_ms: Option<u32>,
    pub snapshot_interval_ms: u32,
    pub probe_interval_us: u32,
    pub recovery: RecoverySpec,
    pub supervisor: SupervisorSpec,
    /// Per job class (by class id): where its CPU step runs, `None` = the
    /// profile's `compute`. Empty = every class takes the profile's.
    pub class_compute: Vec<Option<Compute>>,
    /// A WebSocket run: this agent's role and the run's settings.
    pub websocket: Option<(WsRole, WebSocketSpec)>,
}

impl RunSpec {
    /// Where the CPU step of class `class` runs.
    pub fn placement(&self, class: usize) -> Compute {
        self.class_compute
            .get(class)
            .copied()
            .flatten()
            .unwrap_or(self.profile.compute)
    }

    /// Every rule, in the order the scenario meets them.
    pub fn check(&self) -> Result<(), Refusal> {
        if self.run_id.is_empty() || self.run_id.len() > 128 {
            return Err(Refusal::new(
                Field::RunId,
                format!("{:?}", self.run_id),
                "must be 1..=128 characters",
            ));
        }
        check_intervals(self.snapshot_interval_ms, self.probe_interval_us)?;
        self.profile.check(self.websocket.is_some())?;
        check_class_compute(&self.profile, &self.class_compute)?;
        self.supervisor.check()?;
        check_job_timeout(self.job_timeout_ms)?;
        range(Field::KillJobs, self.kill_jobs.len(), 0, MAX_FAULTS)?;
        if !self.kill_jobs.is_empty() {
            check_kill_worker(self.profile.dispatch)?;
        }
        self.recovery.check()
    }
}

/// A wire enum value, 0 (unset) meaning the default.
fn wire_enum<T: Copy>(field: Field, v: i32, values: &[T]) -> Result<T, Refusal> {
    usize::try_from(v)
        .ok()
        .and_then(|i| values.get(i.saturating_sub(1)))
        .copied()
        .ok_or_else(|| Refusal::new(field, v, format!("must be 0..={}", values.len())))
}

impl TryFrom<&proto::Profile> for Profile {
    type Error = Refusal;

    /// The wire form, its unset values resolved (0 = the default), not yet
    /// checked (see [`Profile::check`]).
    fn try_from(p: &proto::Profile) -> Result<Self, Refusal> {
        use Backpressure as B;
        use Dispatch as D;
        let runtime = match (p.runtime.as_str(), p.current_thread) {
            ("" | "tokio", false) => Flavor::MultiThread,
            ("" | "tokio", true) => Flavor::CurrentThread,
            ("beam", false) => Flavor::Beam,
            ("beam", true) => {
                return Err(Refusal::new(
                    Field::Runtime,
                    "\"beam\"",
                    "runtime = \"beam\" takes a multi-thread runtime only (current_thread is set)",
                ));
            }
            (other, _) => {
                return Err(Refusal::new(
                    Field::Runtime,
                    format!("{other:?}"),
                    "must be \"tokio\" or \"beam\"",
                ));
            }
        };
        // Wire order: proto enums number their values from 1.
        let dispatch = wire_enum(
            Field::Dispatch,
            p.dispatch,
            &[D::Pool, D::Mailbox, D::TaskPerJob, D::Serial, D::SpawnAwait],
        )?;
        let compute = wire_enum(Field::Compute, p.compute, &WIRE_COMPUTE)?;
        let backpressure = wire_enum(Field::Backpressure, p.backpressure, &[B::Block, B::Shed])?;
        let beam = runtime == Flavor::Beam;
        Ok(Profile {
            threads: (p.threads != 0).then_some(p.threads),
            workers: p.workers,
            queue_bound: p.queue_bound,
            producers: p.producers,
            backpressure,
            dispatch,
            compute,
            runtime,
            yield_every: p.yield_every,
            compute_threads: p.compute_threads,
            schedulers: (beam && p.schedulers != 0).then_some(p.schedulers),
            // Travels in plan.websocket.connections.
            connections: None,
        })
    }
}

impl TryFrom<&proto::Start> for RunSpec {
    type Error = Refusal;

    /// A `Start`, its unset values resolved and every rule checked.
    fn try_from(start: &proto::Start) -> Result<Self, Refusal> {
        let missing = |what: &str| {
            Refusal::new(
                Field::Start,
                format!("(no {what})"),
                "a Start carries a profile and a plan",
            )
        };
        let p = start.profile.as_ref().ok_or_else(|| missing("profile"))?;
        let plan = start.plan.as_ref().ok_or_else(|| missing("plan"))?;
        let open = match proto::Arrival::try_from(plan.arrival) {
            Ok(proto::Arrival::Closed | proto::Arrival::Unspecified) => false,
            Ok(proto::Arrival::Open) => true,
            Err(_) => return Err(Refusal::new(Field::Arrival, plan.arrival, "must be 0..=2")),
        };
        let class_compute = class_compute_from_wire(plan)?;
        let profile = Profile::try_from(p)?;
        let websocket = match &plan.websocket {
            Some(w) => Some(websocket_from_wire(w)?),
            None => None,
        };
        let spec = RunSpec {
            class_compute,
            websocket,
            run_id: start.run_id.clone(),
            profile,
            open,
            kill_jobs: plan.kill_jobs.clone(),
            job_timeout_ms: (plan.job_timeout_ms > 0).then_some(plan.job_timeout_ms),
            snapshot_interval_ms: plan.snapshot_interval_ms,
            probe_interval_us: or_default(plan.probe_interval_us, default_probe_us()),
            recovery: RecoverySpec::from_wire(plan),
            supervisor: SupervisorSpec {
                max_restarts: plan.max_restarts,
                restart_window_ms: plan.restart_window_ms,
                backoff_ms: plan.backoff_ms,
                max_backoff_ms: plan.max_backoff_ms,
            },
        };
        spec.check()?;
        Ok(spec)
    }
}

/// Compute placements in wire order (proto enums number values from 1).
const WIRE_COMPUTE: [Compute; 4] = [
    Compute::Inline,
    Compute::Yield,
    Compute::Blocking,
    Compute::Pool,
];

/// `Plan.class_compute`: empty, or one entry per class, 0 (unset) meaning
/// the profile's placement.
fn class_compute_from_wire(plan: &proto::Plan) -> Result<Vec<Option<Compute>>, Refusal> {
    let n = plan.class_compute.len();
    if n != 0 && n != plan.classes.len() {
        return Err(Refusal::new(
            Field::ClassComputes,
            format!("({n} entries)"),
            format!(
                "must be empty or hold one entry per class ({})",
                plan.classes.len()
            ),
        ));
    }
    plan.class_compute
        .iter()
        .enumerate()
        .map(|(i, &v)| match v {
            0 => Ok(None),
            v => wire_enum(Field::ClassCompute(i), v, &WIRE_COMPUTE).map(Some),
        })
        .collect()
}

/// Period of the scheduler-lateness probe when none is given, µs.
pub fn default_probe_us() -> u32 {
    1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_wire_values_are_the_defaults_and_unknown_ones_are_refused() {
        let p = Profile::try_from(&proto::Profile::default()).unwrap();
        assert_eq!(p.dispatch, Dispatch::Pool);
        assert_eq!(p.compute, Compute::Inline);
        assert_eq!(p.backpressure, Backpressure::Block);
        assert_eq!(p.runtime, Flavor::MultiThread);
        assert_eq!((p.threads, p.schedulers), (None, None));
        let wire = proto::Profile {
            dispatch: proto::Dispatch::SpawnAwait as i32,
            compute: proto::Compute::Pool as i32,
            backpressure: proto::Backpressure::Shed as i32,
            ..Default::default()
        };
        let p = Profile::try_from(&wire).unwrap();
        assert_eq!(
            (p.dispatch, p.compute, p.backpressure),
            (Dispatch::SpawnAwait, Compute::Pool, Backpressure::Shed)
        );
        let bad = proto::Profile {
            dispatch: 6,
            ..Default::default()
        };
        let e = Profile::try_from(&bad).unwrap_err();
        assert_eq!(e.to_string(), "profile.dispatch = 6: must be 0..=5");
        let bad = proto::Profile {
            runtime: "beam".into(),
            current_thread: true,
            ..Default::default()
        };
        assert_eq!(Profile::try_from(&bad).unwrap_err().field, Field::Runtime);
    }

    fn start_with(profile: proto::Profile, class_compute: Vec<i32>) -> proto::Start {
        proto::Start {
            run_id: "r".into(),
            protocol_version: crate::PROTOCOL_VERSION,
            profile: Some(proto::Profile {
                workers: 4,
                queue_bound: 8,
                producers: 1,
                ..profile
            }),
            plan: Some(proto::Plan {
                classes: vec!["hot".into(), "sleepy".into()],
                class_compute,
                snapshot_interval_ms: 1000,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_class_placement_overrides_the_profile_s_and_unset_means_the_profile_s() {
        let pool = proto::Compute::Pool as i32;
        let tokio = || proto::Profile {
            compute_threads: 1,
            ..Default::default()
        };
        // Older coordinators send no list: every class takes the profile's.
        let spec = RunSpec::try_from(&start_with(tokio(), vec![])).unwrap();
        assert_eq!(spec.class_compute, vec![]);
        assert_eq!(
            (spec.placement(0), spec.placement(1)),
            (Compute::Inline, Compute::Inline)
        );
        let spec = RunSpec::try_from(&start_with(tokio(), vec![pool, 0])).unwrap();
        assert_eq!(spec.class_compute, vec![Some(Compute::Pool), None]);
        assert_eq!(
            (spec.placement(0), spec.placement(1)),
            (Compute::Pool, Compute::Inline)
        );

        let refused = |p, cc| {
            RunSpec::try_from(&start_with(p, cc))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused(tokio(), vec![pool]),
            "plan.class_compute = (1 entries): must be empty or hold one entry per class (2)"
        );
        assert_eq!(
            refused(tokio(), vec![0, 9]),
            "plan.class_compute[1] = 9: must be 0..=4"
        );
        // The pool exists for a class even when the profile computes inline.
        let no_threads = proto::Profile::default();
        assert_eq!(
            refused(no_threads, vec![0, pool]),
            "profile.compute_threads = 0: must be at least 1 when a class computes on the \"pool\""
        );
        let beam = proto::Profile {
            runtime: "beam".into(),
            ..Default::default()
        };
        assert_eq!(
            refused(beam.clone(), vec![0, proto::Compute::Yield as i32]),
            "plan.class_compute[1] = \"yield\": runtime = \"beam\" computes \"inline\" only: its schedulers preempt, there is no blocking pool to move the CPU step to"
        );
        let inline = proto::Compute::Inline as i32;
        assert!(RunSpec::try_from(&start_with(beam, vec![inline, 0])).is_ok());
    }

    #[test]
    fn every_wire_enum_value_round_trips_through_the_scenario_s_names() {
        for d in [
            Dispatch::Pool,
            Dispatch::Mailbox,
            Dispatch::TaskPerJob,
            Dispatch::Serial,
            Dispatch::SpawnAwait,
        ] {
            let p = Profile {
                threads: None,
                workers: 1,
                queue_bound: 1,
                producers: 1,
                backpressure: Backpressure::Block,
                dispatch: d,
                compute: Compute::Yield,
                runtime: Flavor::CurrentThread,
                yield_every: 3,
                compute_threads: 2,
                schedulers: None,
                connections: None,
            };
            assert_eq!(Profile::try_from(&p.to_proto()), Ok(p));
        }
    }
}
