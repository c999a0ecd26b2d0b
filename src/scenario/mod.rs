//! The scenario model: a TOML file, parsed strictly (unknown keys are errors),
//! then validated into a [`Plan`] whose every value is in range. Errors name
//! the file, the key path, the value and the valid range.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::arrival::Process;
use crate::distribution::Dist;
use crate::proto;
use crate::spec;

mod checker;
mod limits;
mod sweep;
mod validate;

pub use crate::spec::{
    Backpressure, Compute, Dispatch, Flavor, Profile, RecoverySpec, SupervisorSpec, WebSocketSpec,
    enum_name,
};
pub use limits::{LIMIT_NAMES, Limits};
#[cfg(test)]
use validate::crash_threshold;
use validate::validate;

/// The shipped default: `scenarios/parity.toml`, compiled in so the no-flag
/// run works from any directory and from an installed binary.
pub const PARITY_TOML: &str = include_str!("../../scenarios/parity.toml");

/// Name used in errors for the compiled-in default scenario.
pub const PARITY_NAME: &str = "scenarios/parity.toml (built in)";

/// A value or a list of values; a list makes the key a sweep dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    fn values(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// The file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports and result directories.
    pub name: String,
    /// One paragraph on what the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Seed of the job stream: the stream is a pure function of (seed, scenario).
    pub seed: u64,
    pub run: RunTable,
    /// How jobs are released: closed loop (default) or open loop at a rate.
    #[serde(default)]
    pub arrival: ArrivalSpec,
    pub profile: ProfileSpec,
    #[serde(default)]
    pub supervisor: SupervisorSpec,
    /// Job classes; at least one.
    #[serde(rename = "class")]
    pub classes: Vec<ClassSpec>,
    /// Injected faults beyond each class's crash probability.
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultSpec>,
    /// How the recovery interval after a fault is measured.
    #[serde(default)]
    pub recovery: RecoverySpec,
    /// Present: the jobs travel as tasks over WebSocket connections from
    /// client agents to a server agent (docs/websocket.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocketSpec>,
}

/// A deterministic fault, placed by job id so every host meets it on the
/// same jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FaultSpec {
    /// Jobs `at_job .. at_job + jobs` all crash their workers.
    CrashBurst { at_job: u64, jobs: u64 },
    /// Open loop: every job intended to start in `at_ms .. at_ms + for_ms`
    /// (from the run's time zero) crashes its worker — a burst at a time.
    CrashWindow { at_ms: u64, for_ms: u64 },
    /// Job `at_job` hangs: its sleep becomes `stall_ms` (a job timeout
    /// shorter than that catches it).
    Stall { at_job: u64, stall_ms: u64 },
    /// The worker that picks up job `at_job` is killed from outside (its
    /// task aborted by the supervisor) while holding it; the job counts as
    /// crashed. Needs a worker pool (dispatch pool or mailbox).
    KillWorker { at_job: u64 },
}

/// How long the run is and how it is observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunTable {
    /// Jobs run first and excluded from every statistic.
    #[serde(default)]
    pub warmup_jobs: u64,
    /// Warm-up as a duration, milliseconds (instead of `warmup_jobs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_ms: Option<u64>,
    /// Measured jobs per agent (after the warm-up); exclusive with `duration_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u64>,
    /// The measured part as a duration, milliseconds; exclusive with `jobs`.
    /// Open loop: the jobs whose intended start falls in it. Closed loop:
    /// each agent releases jobs until it has passed, so each host runs a
    /// prefix of the one stream, as long as it managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Snapshot period, milliseconds.
    #[serde(default = "default_snapshot_ms")]
    pub snapshot_interval_ms: u32,
    /// `replicate` (every agent gets the same stream) or `shard` (split).
    #[serde(default)]
    pub distribution: Distribution,
    /// Jobs each agent keeps buffered ahead of its producers.
    #[serde(default = "default_prefetch")]
    pub prefetch_jobs: u32,
    /// Period of the scheduler-lateness probe, microseconds.
    #[serde(default = "crate::spec::default_probe_us")]
    pub probe_interval_us: u32,
    /// A job running longer than this (pick-up to completion) is abandoned
    /// and counted as timed out; absent = no limit.
    #[serde(default)]
    pub job_timeout_ms: Option<u32>,
}

fn default_snapshot_ms() -> u32 {
    1000
}
fn default_prefetch() -> u32 {
    65_536
}

/// Arrival process.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalSpec {
    /// `closed` (as fast as the queue accepts) or `open` (at intended times).
    #[serde(default)]
    pub mode: ArrivalMode,
    /// Open loop: `constant` spacing or `poisson` (exponential gaps).
    #[serde(default)]
    pub process: Process,
    /// Open loop: jobs per second (per agent in replicate mode; in all in
    /// shard mode). Exclusive with `steps`.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Open loop: a rate per span of jobs; the last step's rate holds to the end.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One step of a stepped open-loop arrival.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Jobs per second.
    pub rate: f64,
    /// Jobs released at this rate.
    pub jobs: u64,
}

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArrivalMode {
    #[default]
    Closed,
    Open,
}

/// How the stream is spread over agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Every agent gets the identical stream: the comparison.
    #[default]
    Replicate,
    /// The stream is split between agents: aggregate capacity.
    Shard,
}

/// Execution profile; a list in any key makes a sweep (cartesian product).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Worker threads of the agent's runtime; absent = the agent's own setting.
    #[serde(default)]
    pub threads: Option<OneOrMany<u32>>,
    /// Worker tasks.
    pub workers: OneOrMany<u32>,
    /// Bounded queue capacity, in jobs.
    #[serde(default = "default_bound")]
    pub queue_bound: OneOrMany<u32>,
    /// Producer tasks feeding the queue.
    #[serde(default = "default_one")]
    pub producers: OneOrMany<u32>,
    /// `block` or `shed`.
    #[serde(default)]
    pub backpressure: OneOrMany<Backpressure>,
    /// Dispatch architecture.
    #[serde(default)]
    pub dispatch: OneOrMany<Dispatch>,
    /// Compute placement.
    #[serde(default)]
    pub compute: OneOrMany<Compute>,
    /// Workload runtime: `multi-thread` (alias `tokio`) or `current-thread`
    /// (threads = 1) tokio runtimes in the agent, or `beam`: an Erlang VM
    /// the agent starts and drives (dispatch pool, compute inline only).
    #[serde(default)]
    pub runtime: OneOrMany<Flavor>,
    /// runtime = "beam": scheduler threads of the VM (`erl +S N:N`), the
    /// BEAM's counterpart of `threads`; absent = threads (or the agent's
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedulers: Option<u32>,
    /// A WebSocket run (`[websocket]`): connections per client agent, in
    /// place of `websocket.connections`; a list sweeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<OneOrMany<u32>>,
    /// compute = "yield": yield to the scheduler every this many work units.
    #[serde(default = "default_yield_every")]
    pub yield_every: u32,
    /// compute = "pool": OS threads of the dedicated compute pool.
    #[serde(default = "default_compute_threads")]
    pub compute_threads: u32,
}

fn default_yield_every() -> u32 {
    10_000
}
fn default_compute_threads() -> u32 {
    2
}

fn default_bound() -> OneOrMany<u32> {
    OneOrMany::One(256)
}
fn default_one() -> OneOrMany<u32> {
    OneOrMany::One(1)
}

impl<T: Default> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany::One(T::default())
    }
}

/// A job class: its share of the stream and its own distributions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    pub name: String,
    /// Relative weight in the stream.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Iterations of the black-box loop.
    pub work_units: Dist,
    /// Sleep in milliseconds (exclusive with `sleep_us`); absent = no sleep.
    #[serde(default)]
    pub sleep_ms: Option<Dist>,
    /// Sleep in microseconds (exclusive with `sleep_ms`).
    #[serde(default)]
    pub sleep_us: Option<Dist>,
    /// Probability that a job of this class crashes its worker, in [0, 1].
    #[serde(default)]
    pub crash_probability: f64,
    /// Where this class's CPU step runs, overriding `profile.compute` (the
    /// default) in every profile of the sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<Compute>,
}

fn default_weight() -> u32 {
    1
}

/// A validation or loading failure.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {key} = {value}: {expected}")]
    Invalid {
        file: String,
        key: String,
        value: String,
        expected: String,
    },
}

/// A class ready for sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub name: String,
    pub weight: u32,
    pub work_units: Dist,
    /// Sleep distribution in its own unit; multiply samples by `sleep_scale_us`.
    pub sleep: Option<Dist>,
    pub sleep_scale_us: u64,
    /// A job crashes when its crash word is below this threshold.
    pub crash_threshold: u64,
    pub crash_probability: f64,
    /// Its own compute placement; None = the profile's.
    pub compute: Option<Compute>,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The scenario as written (for result.json).
    pub scenario: Scenario,
    /// Open loop: (rate in jobs/s, first job id at that rate), ascending ids.
    /// Empty in closed loop.
    pub rates: Vec<(f64, u64)>,
    /// Where it came from, for messages.
    pub source: String,
    pub classes: Vec<Class>,
    /// The sweep, expanded; at least one.
    pub profiles: Vec<Profile>,
    /// How long the run is, resolved.
    pub sizing: Sizing,
}

/// A run's length, resolved from `[run]`. Open loop turns durations into
/// job counts through the arrival schedule (every host gets the same jobs);
/// a closed loop given any duration is timed by each agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizing {
    /// Warm-up jobs (0 when a closed loop warms up for `warmup_ms`).
    pub warmup_jobs: u64,
    /// Closed loop: warm-up by time, milliseconds from the first job.
    pub warmup_ms: Option<u64>,
    /// Measured jobs; None when a closed loop measures for `duration_ms`.
    pub measured_jobs: Option<u64>,
    /// Closed loop: the measured part by time, milliseconds.
    pub duration_ms: Option<u64>,
    /// Timed runs: the most jobs the coordinator feeds one agent (the jobs
    /// safety limit), so a run can never go on for ever.
    pub job_cap: u64,
}

impl Sizing {
    /// Jobs the coordinator generates (warm-up + measured); for a timed run
    /// the most it may feed one agent.
    pub fn total_jobs(&self) -> u64 {
        match (self.timed(), self.measured_jobs) {
            (false, Some(n)) => self.warmup_jobs + n,
            _ => self.job_cap,
        }
    }

    /// Does each agent decide when the run ends (a closed loop with a
    /// warm-up or measured part given as a duration)?
    pub fn timed(&self) -> bool {
        self.warmup_ms.is_some() || self.duration_ms.is_some()
    }

    /// The run's length in words, for messages and reports.
    pub fn describe(&self) -> String {
        let warm = match self.warmup_ms {
            Some(ms) => format!("a {} warm-up", fmt_ms(ms)),
            None => format!("{} warm-up jobs", self.warmup_jobs),
        };
        match (self.measured_jobs, self.duration_ms) {
            (Some(n), _) => format!("{n} measured jobs after {warm}"),
            (None, Some(ms)) => format!("measured for {} after {warm}", fmt_ms(ms)),
            (None, None) => warm,
        }
    }
}

fn fmt_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

impl Plan {
    /// Total jobs the coordinator generates (warm-up + measured), per agent in
    /// replicate mode, in all in shard mode. Timed runs: the most it may
    /// feed (the agents end the run before that).
    pub fn total_jobs(&self) -> u64 {
        self.sizing.total_jobs()
    }

    /// The run parameters in wire form (the profile travels separately).
    pub fn to_proto(&self) -> proto::Plan {
        let s = &self.scenario;
        proto::Plan {
            scenario: s.name.clone(),
            seed: s.seed,
            warmup_jobs: self.sizing.warmup_jobs,
            total_jobs: if self.sizing.timed() {
                0
            } else {
                self.total_jobs()
            },
            // Validated at most MAX_SPAN_MS, far below u32::MAX.
            warmup_ms: self.sizing.warmup_ms.unwrap_or(0) as u32,
            duration_ms: self.sizing.duration_ms.unwrap_or(0) as u32,
            measured_jobs: if self.sizing.timed() {
                self.sizing.measured_jobs.unwrap_or(0)
            } else {
                0
            },
            snapshot_interval_ms: s.run.snapshot_interval_ms,
            classes: self.classes.iter().map(|c| c.name.clone()).collect(),
            class_compute: self
                .class_compute()
                .iter()
                .map(|c| c.map_or(0, |c| c.to_proto() as i32))
                .collect(),
            prefetch_jobs: s.run.prefetch_jobs,
            probe_interval_us: s.run.probe_interval_us,
            job_timeout_ms: s.run.job_timeout_ms.unwrap_or(0),
            recovery_window_ms: s.recovery.window_ms,
            recovery_band: s.recovery.band,
            recovery_baseline_ms: s.recovery.baseline_ms,
            arrival: if self.is_open() {
                proto::Arrival::Open
            } else {
                proto::Arrival::Closed
            } as i32,
            max_restarts: s.supervisor.max_restarts,
            restart_window_ms: s.supervisor.restart_window_ms,
            backoff_ms: s.supervisor.backoff_ms,
            max_backoff_ms: s.supervisor.max_backoff_ms.max(s.supervisor.backoff_ms),
            // Set by the coordinator's --job-log, not by the scenario.
            job_log: false,
            kill_jobs: s
                .faults
                .iter()
                .filter_map(|f| match f {
                    FaultSpec::KillWorker { at_job } => Some(*at_job),
                    _ => None,
                })
                .collect(),
            // Set per host by the coordinator (its role in the run).
            websocket: None,
        }
    }

    /// The same scenario with another seed, validated again (an open loop's
    /// durations resolve to the jobs of the seed's schedule).
    pub fn reseed(&self, seed: u64, limits: &Limits) -> Result<Plan, ScenarioError> {
        let mut s = self.scenario.clone();
        s.seed = seed;
        validate(s, &self.source, limits)
    }

    /// The run spec of one profile of this plan (what `to_proto` and the
    /// profile's `to_proto` carry to an agent).
    pub fn run_spec(&self, profile: &Profile, run_id: &str) -> spec::RunSpec {
        let s = &self.scenario;
        spec::RunSpec {
            run_id: run_id.to_string(),
            profile: profile.clone(),
            open: self.is_open(),
            kill_jobs: self.to_proto().kill_jobs,
            job_timeout_ms: s.run.job_timeout_ms,
            snapshot_interval_ms: s.run.snapshot_interval_ms,
            probe_interval_us: s.run.probe_interval_us,
            recovery: s.recovery,
            supervisor: s.supervisor.clone(),
            class_compute: self.class_compute(),
            websocket: None,
        }
    }

    /// Each class's own compute placement (None = the profile's), by class
    /// id; empty when no class has one, as the wire leaves it.
    pub fn class_compute(&self) -> Vec<Option<Compute>> {
        if self.classes.iter().all(|c| c.compute.is_none()) {
            return Vec::new();
        }
        self.classes.iter().map(|c| c.compute).collect()
    }

    /// Open-loop arrival?
    pub fn is_open(&self) -> bool {
        !self.rates.is_empty()
    }

    /// Seconds one profile should take on one agent, and how the figure was
    /// made. Open loop: the arrival schedule's length (exact for a constant
    /// rate, expected for Poisson). Closed loop: a rough bound from the mean
    /// job — work at ~1 ns per unit spread over the threads, or sleep spread
    /// over the workers, whichever is longer.
    pub fn estimate_secs(&self, p: &Profile, default_threads: u32) -> (f64, &'static str) {
        let z = &self.sizing;
        if let (Some(warm), Some(d)) = (z.warmup_ms, z.duration_ms) {
            return ((warm + d) as f64 / 1000.0, "timed: warm-up + duration");
        }
        let total = self.total_jobs();
        if self.is_open() {
            let mut secs = 0.0;
            for (k, &(rate, first)) in self.rates.iter().enumerate() {
                let end = self.rates.get(k + 1).map_or(total, |r| r.1.min(total));
                if end > first {
                    secs += (end - first) as f64 / rate;
                }
            }
            return (secs, "open loop: the arrival schedule");
        }
        let (work, sleep_us) = self.mean_job();
        let threads = f64::from(p.schedulers.or(p.threads).unwrap_or(default_threads).max(1));
        // The BEAM's loop costs about 5 ns a unit (docs/beam.md).
        let ns_per_unit = if p.runtime == Flavor::Beam {
            5e-9
        } else {
            1e-9
        };
        let concurrency = match p.dispatch {
            Dispatch::Pool | Dispatch::Mailbox => f64::from(p.workers),
            Dispatch::TaskPerJob => f64::from(p.queue_bound),
            Dispatch::Serial | Dispatch::SpawnAwait => f64::from(p.producers),
        };
        let secs = |jobs: u64| {
            let cpu = jobs as f64 * work * ns_per_unit / threads;
            let io = jobs as f64 * sleep_us * 1e-6 / concurrency.max(1.0);
            cpu.max(io)
        };
        match (z.warmup_ms, z.duration_ms, z.measured_jobs) {
            (None, Some(d), _) => (
                secs(z.warmup_jobs) + d as f64 / 1000.0,
                "timed: a rough bound for the warm-up jobs + the duration",
            ),
            (Some(w), None, Some(n)) => (
                w as f64 / 1000.0 + secs(n),
                "timed warm-up + a rough bound for the measured jobs",
            ),
            _ => (secs(total), "closed loop: a rough bound from the mean job"),
        }
    }

    /// Mean work units and mean sleep (µs) over the class mix, for estimates.
    pub fn mean_job(&self) -> (f64, f64) {
        let total: f64 = self.classes.iter().map(|c| f64::from(c.weight)).sum();
        let mut work = 0.0;
        let mut sleep = 0.0;
        for c in &self.classes {
            let share = f64::from(c.weight) / total;
            work += share * c.work_units.mean();
            sleep += share * c.sleep.as_ref().map_or(0.0, |d| d.mean()) * c.sleep_scale_us as f64;
        }
        (work, sleep)
    }
}

/// Reads and validates a scenario file.
pub fn load(path: &Path, limits: &Limits) -> Result<Plan, ScenarioError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
        file: file.clone(),
        source,
    })?;
    parse(&text, &file, limits)
}

/// Parses and validates scenario text; `file` names it in errors.
pub fn parse(text: &str, file: &str, limits: &Limits) -> Result<Plan, ScenarioError> {
    let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
        file: file.to_string(),
        message: one_line(&e),
    })?;
    validate(scenario, file, limits)
}

/// Flattens toml's multi-line error (with its source excerpt) into one line.
fn one_line(e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => format!("{msg} (at byte {})", span.start),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parity() -> Plan {
        parse(PARITY_TOML, PARITY_NAME, &Limits::default()).expect("parity parses")
    }

    #[test]
    fn parity_is_valid() {
        let p = parity();
        assert_eq!(p.profiles.len(), 1);
        assert_eq!(p.profiles[0].queue_bound, 256);
        assert!(p.total_jobs() > 0);
    }

    fn err_of(text: &str) -> String {
        parse(text, "t.toml", &Limits::default())
            .expect_err("must be rejected")
            .to_string()
    }

    fn with(replace: &str, by: &str) -> String {
        assert!(PARITY_TOML.contains(replace), "{replace}");
        PARITY_TOML.replacen(replace, by, 1)
    }

    fn run_keys(keys: &str) -> String {
        with("warmup_jobs = 10000\njobs = 200000", keys)
    }

    #[test]
    fn warm_up_and_measured_part_by_count_or_duration() {
        let l = Limits::default();
        let p = parse(&run_keys("warmup_ms = 2000\nduration_ms = 10000"), "t", &l).unwrap();
        assert!(p.sizing.timed());
        assert_eq!(p.sizing.describe(), "measured for 10 s after a 2 s warm-up");
        let w = p.to_proto();
        assert_eq!((w.warmup_ms, w.duration_ms, w.total_jobs), (2000, 10000, 0));
        assert_eq!(p.estimate_secs(&p.profiles[0], 2).0, 12.0);
        let p = parse(&run_keys("warmup_jobs = 100\nduration_ms = 1500"), "t", &l).unwrap();
        assert_eq!(
            p.sizing.describe(),
            "measured for 1500 ms after 100 warm-up jobs"
        );
        assert_eq!(p.to_proto().warmup_jobs, 100);
        let p = parse(&run_keys("warmup_ms = 500\njobs = 7"), "t", &l).unwrap();
        assert_eq!(p.to_proto().measured_jobs, 7);
        assert!(p.sizing.timed());
        // By count, nothing changes on the wire.
        let p = parse(&run_keys("warmup_jobs = 3\njobs = 7"), "t", &l).unwrap();
        assert!(!p.sizing.timed());
        let w = p.to_proto();
        assert_eq!(
            (w.total_jobs, w.warmup_ms, w.duration_ms, w.measured_jobs),
            (10, 0, 0, 0)
        );
    }

    #[test]
    fn length_keys_are_exclusive_and_bounded() {
        let e = err_of(&run_keys("jobs = 5\nduration_ms = 1000"));
        assert!(
            e.contains("run.duration_ms") && e.contains("not both"),
            "{e}"
        );
        let e = err_of(&run_keys("warmup_jobs = 5\nwarmup_ms = 1000\njobs = 5"));
        assert!(e.contains("run.warmup_ms") && e.contains("not both"), "{e}");
        let e = err_of(&run_keys("warmup_jobs = 5"));
        assert!(
            e.contains("run.jobs = (missing)") && e.contains("run.duration_ms"),
            "{e}"
        );
        let e = err_of(&run_keys("duration_ms = 0"));
        assert!(
            e.contains("run.duration_ms = 0: must be in 1..=86400000"),
            "{e}"
        );
        let e = err_of(&run_keys("warmup_ms = 86400001\njobs = 1"));
        assert!(
            e.contains("run.warmup_ms = 86400001: must be in 0..=86400000"),
            "{e}"
        );
    }

    #[test]
    fn open_loop_durations_become_the_jobs_of_the_schedule() {
        let l = Limits::default();
        let open = |run: &str, arrival: &str| {
            run_keys(run).replacen(
                "[profile]",
                &format!("[arrival]\nmode = \"open\"\n{arrival}\n\n[profile]"),
                1,
            )
        };
        // 1000 jobs/s: one job every 1000 µs, the first at 0.
        let p = parse(
            &open("warmup_ms = 500\nduration_ms = 2000", "rate = 1000.0"),
            "t",
            &l,
        )
        .unwrap();
        assert!(!p.sizing.timed(), "open loop is sized in jobs");
        assert_eq!(
            (p.sizing.warmup_jobs, p.sizing.measured_jobs),
            (500, Some(2000))
        );
        assert_eq!(p.total_jobs(), 2500);
        // A count warm-up: the duration starts at the first measured job's
        // intended time (job 250 at 250 ms), up to 1250 ms.
        let p = parse(
            &open("warmup_jobs = 250\nduration_ms = 1000", "rate = 1000.0"),
            "t",
            &l,
        )
        .unwrap();
        assert_eq!(
            (p.sizing.warmup_jobs, p.sizing.measured_jobs),
            (250, Some(1000))
        );
        // Poisson: the counts are those of the generator's intended times.
        let p = parse(
            &open(
                "warmup_ms = 300\nduration_ms = 700",
                "process = \"poisson\"\nrate = 2000.0",
            ),
            "t",
            &l,
        )
        .unwrap();
        let mut g = crate::generator::Generator::new(&p);
        let times: Vec<u64> = (0..4000).map(|_| g.next_job().intended_us).collect();
        let before = |us: u64| times.iter().take_while(|&&t| t < us).count() as u64;
        assert_eq!(p.sizing.warmup_jobs, before(300_000));
        assert_eq!(
            p.sizing.warmup_jobs + p.sizing.measured_jobs.unwrap(),
            before(1_000_000)
        );
        // Too many jobs for the limit, and a span with no job at all.
        let e = err_of(&open("duration_ms = 86400000", "rate = 100000.0"));
        assert!(
            e.contains("run.duration_ms = 86400000") && e.contains("more than 1000000000 jobs"),
            "{e}"
        );
        let e = err_of(&open("warmup_ms = 10\nduration_ms = 1", "rate = 0.5"));
        assert!(e.contains("run.duration_ms = 1: no job"), "{e}");
    }

    #[test]
    fn errors_name_file_key_value_and_range() {
        let e = err_of(&with("workers = 64", "workers = 0"));
        assert_eq!(
            e,
            "t.toml: profile.workers = 0: must be in 1..=100000 (a safety limit: raise it with --limit workers=N)"
        );
        let e = err_of(&with("queue_bound = 256", "queue_bound = 99999999"));
        assert!(
            e.contains("profile.queue_bound = 99999999: must be in 1..=1048576"),
            "{e}"
        );
        let e = err_of(&with(
            "snapshot_interval_ms = 1000",
            "snapshot_interval_ms = 5",
        ));
        assert!(
            e.contains("run.snapshot_interval_ms = 5: must be in 100..=60000"),
            "{e}"
        );
        let e = err_of(&with(
            "crash_probability = 0.0005",
            "crash_probability = 1.5",
        ));
        assert!(e.contains("class[0].crash_probability = 1.5"), "{e}");
        let e = err_of(&with("seed = 42", "seed = 42\nbogus = 1"));
        assert!(e.starts_with("t.toml: unknown field `bogus`"), "{e}");
        let e = err_of(&with("workers = 64", "workers = -3"));
        assert!(e.starts_with("t.toml: "), "{e}");
        let e = err_of(&with(r#"name = "parity""#, r#"name = "a b""#));
        assert!(e.contains("name = \"a b\""), "{e}");
    }

    #[test]
    fn distribution_errors_name_the_parameter() {
        let e = err_of(&with("min = 1000, max = 100000", "min = 1000, max = 10"));
        assert!(
            e.contains("class[0].work_units.max = 10: must be >= min (1000)"),
            "{e}"
        );
        // The value once, and no --limit hint for a shape parameter.
        let log_normal = r#"{ dist = "log-normal", median = 100.0, sigma = 100.0, max = 1000 }"#;
        let e = err_of(&with(
            r#"{ dist = "uniform", min = 1000, max = 100000 }"#,
            log_normal,
        ));
        assert_eq!(
            e,
            "t.toml: class[0].work_units.sigma = 100: must be in 0..=10",
        );
        // A drawn value's bound is a safety limit, and says so.
        let e = err_of(&with(
            "min = 1000, max = 100000",
            "min = 1000, max = 10000000000",
        ));
        assert!(
            e.ends_with("(a safety limit: raise it with --limit work-units=N)"),
            "{e}"
        );
    }

    #[test]
    fn sweeps_expand_to_the_cartesian_product() {
        let p = parse(
            &with("workers = 64", "workers = [1, 8, 64]")
                .replace("producers = 1", "producers = [1, 2]"),
            "t.toml",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(p.profiles.len(), 6);
        assert_eq!(p.profiles[5].workers, 64);
        assert_eq!(p.profiles[5].producers, 2);
    }

    #[test]
    fn arrival_is_validated() {
        let open = |a: &str| with("[profile]", &format!("[arrival]\n{a}\n\n[profile]"));
        let p = parse(
            &open("mode = \"open\"\nrate = 500.0"),
            "t",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(p.rates, vec![(500.0, 0)]);
        let p = parse(
            &open("mode = \"open\"\nprocess = \"poisson\"\nsteps = [{ rate = 10.0, jobs = 5 }, { rate = 20.0, jobs = 7 }]"),
            "t",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(p.rates, vec![(10.0, 0), (20.0, 5)]);
        let e = err_of(&open("mode = \"open\""));
        assert!(e.contains("arrival.rate = (missing)"), "{e}");
        let e = err_of(&open("mode = \"open\"\nrate = -1.0"));
        assert!(
            e.contains("arrival.rate = -1: must be a rate in 0.001..=10000000"),
            "{e}"
        );
        let e = err_of(&open("mode = \"open\"\nrate = nan"));
        assert!(e.contains("arrival.rate = NaN"), "{e}");
        let e = err_of(&open("rate = 5.0"));
        assert!(e.contains("arrival.mode"), "{e}");
        let e = err_of(&open("mode = \"open\"\nsteps = [{ rate = 1.0, jobs = 0 }]"));
        assert!(e.contains("arrival.steps[0].jobs = 0"), "{e}");
    }

    #[test]
    fn senseless_combinations_are_rejected_with_a_reason() {
        let e = err_of(&with(
            "dispatch = \"pool\"",
            "dispatch = [\"pool\", \"serial\"]",
        ));
        assert!(e.contains("profile.workers = 64"), "{e}");
        assert!(e.contains("has no worker pool"), "{e}");
        let e = err_of(&with(
            "workers = 64",
            "workers = 1\nthreads = 2\nruntime = \"current-thread\"",
        ));
        assert!(e.contains("profile.threads = 2"), "{e}");
        let ok = parse(
            &with("workers = 64", "workers = 1")
                .replace("dispatch = \"pool\"", "dispatch = [\"pool\", \"mailbox\", \"task-per-job\", \"serial\", \"spawn-await\"]")
                .replace("compute = \"inline\"", "compute = [\"inline\", \"yield\", \"blocking\", \"pool\"]"),
            "t",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(ok.profiles.len(), 20);
    }

    #[test]
    fn beam_profiles_are_swept_beside_tokio_and_checked() {
        let p = parse(
            &with(
                "compute = \"inline\"",
                "compute = [\"pool\", \"inline\"]\nruntime = [\"tokio\", \"beam\"]\nschedulers = 2",
            ),
            "t",
            &Limits::default(),
        )
        .unwrap();
        // tokio pool, tokio inline, and one BEAM row (its only compute).
        let labels: Vec<String> = p.profiles.iter().map(Profile::label).collect();
        assert_eq!(
            labels,
            [
                "t=agent w64 q256 p1 pool/pool2",
                "t=agent w64 q256 p1 pool/inline",
                "beam s2 w64 q256 p1 pool"
            ]
        );
        let beam = p.profiles[2].to_proto();
        assert_eq!((beam.runtime.as_str(), beam.schedulers), ("beam", 2));
        let tokio = p.profiles[0].to_proto();
        assert_eq!((tokio.runtime.as_str(), tokio.schedulers), ("tokio", 0));

        let beam_with = |k: &str, v: &str| {
            err_of(&with(k, v).replacen("[profile]", "[profile]\nruntime = \"beam\"", 1))
        };
        let e = beam_with("compute = \"inline\"", "compute = \"pool\"");
        assert!(
            e.contains("profile.compute = \"pool\" (profile beam s=agent w64 q256 p1 pool): runtime = \"beam\" computes \"inline\" only"),
            "{e}"
        );
        let e = beam_with("dispatch = \"pool\"", "dispatch = \"mailbox\"");
        assert!(e.contains("profile.dispatch = \"mailbox\""), "{e}");
        let e = beam_with("producers = 1", "producers = 2");
        assert!(e.contains("profile.producers = 2"), "{e}");
        let e = beam_with("backpressure = \"block\"", "backpressure = \"shed\"");
        assert!(e.contains("profile.backpressure = \"shed\""), "{e}");
        // Timed closed loops run on the BEAM too (the VM decides at release).
        let timed = with("jobs = 200000", "duration_ms = 5000").replacen(
            "[profile]",
            "[profile]\nruntime = \"beam\"",
            1,
        );
        parse(&timed, "t", &Limits::default()).expect("a timed BEAM run is valid");
        let e = beam_with("workers = 64", "workers = 64\nschedulers = 0");
        assert!(e.contains("profile.schedulers = 0: must be in 1..="), "{e}");
    }

    #[test]
    fn a_class_may_place_its_cpu_step_and_the_profile_s_is_the_default() {
        let l = Limits::default();
        let two = with(
            "[[class]]",
            "[[class]]\nname = \"hot\"\nwork_units = { dist = \"constant\", value = 5 }\ncompute = \"pool\"\n\n[[class]]",
        );
        let p = parse(&two, "t.toml", &l).unwrap();
        assert_eq!(p.classes[0].compute, Some(Compute::Pool));
        assert_eq!(p.classes[1].compute, None);
        assert_eq!(p.class_compute(), vec![Some(Compute::Pool), None]);
        assert_eq!(
            p.to_proto().class_compute,
            vec![proto::Compute::Pool as i32, 0]
        );
        let spec = p.run_spec(&p.profiles[0], "r");
        assert_eq!(
            (spec.placement(0), spec.placement(1)),
            (Compute::Pool, Compute::Inline)
        );
        // Echoed as written: the key only where a class has it.
        let echo = serde_json::to_value(&p.scenario).unwrap();
        assert_eq!(echo["class"][0]["compute"], "pool");
        assert!(echo["class"][1].get("compute").is_none());
        // Without any, the wire list stays empty (as older coordinators send).
        assert!(parity().to_proto().class_compute.is_empty());

        let e = err_of(&two.replacen("[profile]", "[profile]\nruntime = \"beam\"", 1));
        assert!(
            e.starts_with("t.toml: class[0].compute = \"pool\" (profile beam s=agent w64 q256 p1 pool): runtime = \"beam\" computes \"inline\" only"),
            "{e}"
        );
        let e = err_of(&two.replace("compute = \"pool\"", "compute = \"elsewhere\""));
        assert!(e.contains("unknown variant `elsewhere`"), "{e}");
    }

    #[test]
    fn every_shipped_scenario_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let plan = load(&p, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
                let text = std::fs::read_to_string(&p).unwrap();
                assert!(
                    text.starts_with("# "),
                    "{}: document it in a header",
                    p.display()
                );
                assert_eq!(
                    p.file_stem().unwrap().to_str().unwrap(),
                    plan.scenario.name,
                    "file name = scenario name"
                );
                n += 1;
            }
        }
        assert!(n >= 5, "{n} scenarios");
    }

    #[test]
    fn estimates() {
        let p = parity();
        let (secs, how) = p.estimate_secs(&p.profiles[0], 1);
        // 210,000 jobs x 50,500 units x 1 ns on one thread.
        assert!((secs - 10.6).abs() < 0.1, "{secs} {how}");
        let open = parse(
            &with("[profile]", "[arrival]\nmode = \"open\"\nsteps = [{ rate = 1000.0, jobs = 10000 }, { rate = 2000.0, jobs = 1 }]\n\n[profile]"),
            "t",
            &Limits::default(),
        )
        .unwrap();
        let (secs, _) = open.estimate_secs(&open.profiles[0], 1);
        assert!((secs - (10.0 + 200_000.0 / 2000.0)).abs() < 1e-6, "{secs}");
    }

    #[test]
    fn limits_are_named_and_can_be_raised() {
        let big = with("jobs = 200000", "jobs = 2000000000");
        let e = err_of(&big);
        assert!(
            e.contains("run.jobs = 2000000000: must be in 1..=1000000000 (a safety limit: raise it with --limit jobs=N)"),
            "{e}"
        );
        let mut l = Limits::default();
        l.set("jobs=3000000000").unwrap();
        assert!(parse(&big, "t", &l).is_ok());
        let e = err_of(&with("workers = 64", "workers = 0"));
        assert!(
            e.ends_with("must be in 1..=100000 (a safety limit: raise it with --limit workers=N)"),
            "{e}"
        );
        l.set("rate=2.5e7").unwrap();
        assert_eq!(l.max_rate, 2.5e7);
        for bad in [
            "jobs",
            "jobs=0",
            "jobs=-1",
            "nope=5",
            "rate=nan",
            "threads=99999999999",
        ] {
            let e = Limits::default().set(bad).unwrap_err();
            assert!(e.starts_with(&format!("--limit {bad:?}")), "{e}");
        }
    }

    #[test]
    fn crash_threshold_edges() {
        assert_eq!(crash_threshold(0.0), 0);
        assert_eq!(crash_threshold(1.0), u64::MAX);
        assert_eq!(crash_threshold(0.5), 1 << 63);
    }
}
