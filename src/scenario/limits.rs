//! The safety limits a scenario is checked against (raised with `--limit NAME=VALUE`).

/// Upper limits that stop a typo from becoming a runaway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_jobs: u64,
    pub max_threads: u32,
    pub max_workers: u32,
    pub max_queue_bound: u32,
    pub max_producers: u32,
    pub max_work_units: u64,
    pub max_sleep_us: u64,
    pub max_profiles: usize,
    /// Open-loop jobs per second.
    pub max_rate: f64,
}

/// The names `--limit NAME=VALUE` takes.
pub const LIMIT_NAMES: &str =
    "jobs, threads, workers, queue-bound, producers, work-units, sleep-us, rate, profiles";

impl Limits {
    /// Raises (or lowers) one limit from `NAME=VALUE`, e.g. `jobs=5000000000`.
    pub fn set(&mut self, spec: &str) -> Result<(), String> {
        let bad = |what: &str| format!("--limit {spec:?}: {what}");
        let (name, value) = spec.split_once('=').ok_or_else(|| {
            bad(&format!(
                "must be NAME=VALUE with NAME one of {LIMIT_NAMES}"
            ))
        })?;
        let int = || -> Result<u64, String> {
            value
                .trim()
                .replace('_', "")
                .parse::<u64>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad("the value must be a whole number > 0"))
        };
        let small =
            |v: u64| u32::try_from(v).map_err(|_| bad("the value must be at most 4294967295"));
        match name.trim() {
            "jobs" => self.max_jobs = int()?,
            "threads" => self.max_threads = small(int()?)?,
            "workers" => self.max_workers = small(int()?)?,
            "queue-bound" => self.max_queue_bound = small(int()?)?,
            "producers" => self.max_producers = small(int()?)?,
            "work-units" => self.max_work_units = int()?.min(u64::from(u32::MAX)),
            "sleep-us" => self.max_sleep_us = int()?.min(u64::from(u32::MAX)),
            "profiles" => self.max_profiles = int()? as usize,
            "rate" => {
                self.max_rate = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| bad("the value must be a rate > 0 in jobs/s"))?;
            }
            other => {
                return Err(bad(&format!(
                    "unknown limit {other:?}; the limits are {LIMIT_NAMES}"
                )));
            }
        }
        Ok(())
    }
}

/// The `--limit` name that bounds a scenario key, if one does.
/// A distribution parameter that bounds the values drawn (and so meets the
/// work or sleep limit), unlike a shape such as `sigma` or `alpha`.
fn sampled(param: &str) -> bool {
    matches!(param, "value" | "min" | "max" | "values")
}

pub(super) fn limit_for(key: &str) -> Option<&'static str> {
    let last = key.rsplit('.').next().unwrap_or(key);
    if key.starts_with("run.jobs") || key.starts_with("run.warmup_jobs") {
        Some("jobs")
    } else if key == "profile.threads" || key == "profile.compute_threads" {
        Some("threads")
    } else if key == "profile.workers" {
        Some("workers")
    } else if key == "profile.queue_bound" {
        Some("queue-bound")
    } else if key == "profile.producers" {
        Some("producers")
    } else if key == "profile" {
        Some("profiles")
    } else if key.contains(".work_units.") && sampled(last) {
        Some("work-units")
    } else if (key.contains(".sleep_ms.") || key.contains(".sleep_us.")) && sampled(last)
        || last == "stall_ms"
    {
        Some("sleep-us")
    } else if last == "rate" {
        Some("rate")
    } else {
        None
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_jobs: 1_000_000_000,
            max_threads: 1024,
            max_workers: 100_000,
            max_queue_bound: 1 << 20,
            max_producers: 1024,
            max_work_units: 1_000_000_000,
            max_sleep_us: 60_000_000,
            max_profiles: 256,
            max_rate: 10_000_000.0,
        }
    }
}
