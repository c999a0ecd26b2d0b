//! Validation: a parsed scenario checked key by key into a [`Plan`], errors naming the file, the key, the value and the valid range.

use super::checker::Checker;
use super::*;
use crate::spec;

pub(super) fn validate(s: Scenario, file: &str, limits: &Limits) -> Result<Plan, ScenarioError> {
    let c = Checker { file };
    if s.name.is_empty()
        || s.name.len() > 64
        || !s
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        return Err(c.err(
            "name",
            format!("{:?}", s.name),
            "must be 1..=64 characters of [A-Za-z0-9_-]",
        ));
    }
    let rates = validate_arrival(&c, &s.arrival, limits)?;
    let sizing = validate_sizing(&c, &s, &rates, limits)?;
    spec::check_intervals(s.run.snapshot_interval_ms, s.run.probe_interval_us)
        .map_err(|r| c.refused(r, None, None))?;
    c.range("run.prefetch_jobs", s.run.prefetch_jobs, 1024, 1 << 22)?;

    let profiles = super::sweep::expand(&c, &s.profile, s.websocket.is_some(), limits)?;
    s.supervisor.check().map_err(|r| c.refused(r, None, None))?;

    let classes = validate_classes(&c, &s.classes, limits)?;
    if classes.iter().any(|cl| cl.compute.is_some()) {
        let placed: Vec<_> = classes.iter().map(|cl| cl.compute).collect();
        for p in &profiles {
            spec::check_class_compute(p, &placed)
                .map_err(|r| c.refused(r, None, Some(&p.label())))?;
        }
    }
    spec::check_job_timeout(s.run.job_timeout_ms).map_err(|r| c.refused(r, None, None))?;
    validate_faults(&c, &s, &sizing, &profiles, limits)?;
    s.recovery.check().map_err(|r| c.refused(r, None, None))?;
    let mut s = s;
    if s.websocket.is_none() && s.profile.connections.is_some() {
        return Err(c.err(
            "profile.connections",
            "(set)",
            "only a WebSocket run has connections: add a [websocket] table",
        ));
    }
    if let Some(ws) = &s.websocket {
        ws.check().map_err(|r| c.refused(r, None, None))?;
        // The clients share one stream: the rate is the server's. (The
        // server's profile rules ran with the sweep.)
        s.run.distribution = Distribution::Shard;
    }
    Ok(Plan {
        scenario: s,
        rates,
        source: file.to_string(),
        classes,
        profiles,
        sizing,
    })
}

/// Checks the `[[class]]` tables and readies them for sampling.
fn validate_classes(
    c: &Checker<'_>,
    specs: &[ClassSpec],
    limits: &Limits,
) -> Result<Vec<Class>, ScenarioError> {
    if specs.is_empty() || specs.len() > 64 {
        return Err(c.err(
            "class",
            format!("{} classes", specs.len()),
            "must define 1..=64 [[class]] tables",
        ));
    }
    let mut classes = Vec::new();
    for (i, cs) in specs.iter().enumerate() {
        let at = |k: &str| format!("class[{i}].{k}");
        if cs.name.is_empty() || cs.name.len() > 32 {
            return Err(c.err(
                &at("name"),
                format!("{:?}", cs.name),
                "must be 1..=32 characters",
            ));
        }
        if specs[..i].iter().any(|o| o.name == cs.name) {
            return Err(c.err(
                &at("name"),
                format!("{:?}", cs.name),
                "class names must be unique",
            ));
        }
        c.range(&at("weight"), cs.weight, 1, 1_000_000)?;
        cs.work_units
            .validate(limits.max_work_units)
            .map_err(|(k, v, m)| c.err(&at(&format!("work_units.{k}")), v, m))?;
        let (sleep, scale, key) = match (&cs.sleep_ms, &cs.sleep_us) {
            (Some(_), Some(_)) => {
                return Err(c.err(
                    &at("sleep_ms"),
                    "(also sleep_us)",
                    "give the sleep in one unit only: sleep_ms or sleep_us",
                ));
            }
            (Some(d), None) => (Some(d.clone()), 1000, "sleep_ms"),
            (None, Some(d)) => (Some(d.clone()), 1, "sleep_us"),
            (None, None) => (None, 1, "sleep_us"),
        };
        if let Some(d) = &sleep {
            d.validate(limits.max_sleep_us / scale)
                .map_err(|(k, v, m)| c.err(&at(&format!("{key}.{k}")), v, m))?;
        }
        let p = cs.crash_probability;
        if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
            return Err(c.err(
                &at("crash_probability"),
                p,
                "must be a probability in 0..=1",
            ));
        }
        classes.push(Class {
            name: cs.name.clone(),
            weight: cs.weight,
            work_units: cs.work_units.clone(),
            sleep,
            sleep_scale_us: scale,
            crash_threshold: crash_threshold(p),
            crash_probability: p,
            compute: cs.compute,
        });
    }

    Ok(classes)
}

/// Checks the `[[fault]]` tables against the run's length and profiles.
fn validate_faults(
    c: &Checker<'_>,
    s: &Scenario,
    sizing: &Sizing,
    profiles: &[Profile],
    limits: &Limits,
) -> Result<(), ScenarioError> {
    let total = sizing.total_jobs();
    if s.faults.len() > spec::MAX_FAULTS {
        return Err(c.err(
            "fault",
            s.faults.len(),
            format!("at most {} [[fault]] tables", spec::MAX_FAULTS),
        ));
    }
    for (i, f) in s.faults.iter().enumerate() {
        match f {
            FaultSpec::CrashWindow { at_ms, for_ms } => {
                if s.arrival.mode != ArrivalMode::Open {
                    return Err(c.err(
                        &format!("fault[{i}].kind"),
                        "\"crash-window\"",
                        "a fault placed in time needs arrival.mode = \"open\" (use crash-burst with at_job in closed loop)",
                    ));
                }
                c.range(&format!("fault[{i}].at_ms"), *at_ms, 0, 86_400_000)?;
                c.range(&format!("fault[{i}].for_ms"), *for_ms, 1, 3_600_000)?;
            }
            FaultSpec::CrashBurst { at_job, jobs } => {
                c.range(
                    &format!("fault[{i}].at_job"),
                    *at_job,
                    0,
                    total.saturating_sub(1),
                )?;
                c.range(&format!("fault[{i}].jobs"), *jobs, 1, total - at_job)?;
            }
            FaultSpec::KillWorker { at_job } => {
                c.range(
                    &format!("fault[{i}].at_job"),
                    *at_job,
                    0,
                    total.saturating_sub(1),
                )?;
                for p in profiles {
                    spec::check_kill_worker(p.dispatch).map_err(|r| {
                        c.refused(r, Some(&format!("fault[{i}].kind")), Some(&p.label()))
                    })?;
                }
            }
            FaultSpec::Stall { at_job, stall_ms } => {
                c.range(
                    &format!("fault[{i}].at_job"),
                    *at_job,
                    0,
                    total.saturating_sub(1),
                )?;
                c.range(
                    &format!("fault[{i}].stall_ms"),
                    *stall_ms,
                    1,
                    limits.max_sleep_us / 1000,
                )?;
            }
        }
    }
    Ok(())
}

/// Most a warm-up or a measured part may last, milliseconds (a day).
const MAX_SPAN_MS: u64 = 86_400_000;

/// Checks `[run]`'s length keys and resolves them (see `Sizing`).
fn validate_sizing(
    c: &Checker<'_>,
    s: &Scenario,
    rates: &[(f64, u64)],
    limits: &Limits,
) -> Result<Sizing, ScenarioError> {
    let r = &s.run;
    let jobs = match (r.jobs, r.duration_ms) {
        (Some(n), None) => Some(c.range("run.jobs", n, 1, limits.max_jobs)?),
        (None, Some(ms)) => {
            c.range("run.duration_ms", ms, 1, MAX_SPAN_MS)?;
            None
        }
        (Some(_), Some(_)) => {
            return Err(c.err(
                "run.duration_ms",
                "(with run.jobs)",
                "give the measured part as run.jobs or as run.duration_ms, not both",
            ));
        }
        (None, None) => {
            return Err(c.err(
                "run.jobs",
                "(missing)",
                "give the measured part as run.jobs (a job count) or run.duration_ms (milliseconds)",
            ));
        }
    };
    c.range("run.warmup_jobs", r.warmup_jobs, 0, limits.max_jobs)?;
    if let Some(ms) = r.warmup_ms {
        if r.warmup_jobs > 0 {
            return Err(c.err(
                "run.warmup_ms",
                "(with run.warmup_jobs)",
                "give the warm-up as run.warmup_jobs or as run.warmup_ms, not both",
            ));
        }
        c.range("run.warmup_ms", ms, 0, MAX_SPAN_MS)?;
    }
    let closed = Sizing {
        warmup_jobs: r.warmup_jobs,
        warmup_ms: r.warmup_ms.filter(|&ms| ms > 0),
        measured_jobs: jobs,
        duration_ms: r.duration_ms,
        job_cap: limits.max_jobs,
    };
    if rates.is_empty() || !closed.timed() {
        if !closed.timed() {
            let total = closed.warmup_jobs.saturating_add(jobs.unwrap_or(0));
            if total > limits.max_jobs {
                return Err(c.err(
                    "run.jobs",
                    total,
                    format!(
                        "warm-up + measured jobs must be at most {}",
                        limits.max_jobs
                    ),
                ));
            }
        }
        return Ok(closed);
    }
    open_loop_sizing(c, s, rates, jobs, limits)
}

/// Open loop: the arrival schedule says which jobs fall in the warm-up and
/// the measured part given as durations (every host gets the same jobs).
fn open_loop_sizing(
    c: &Checker<'_>,
    s: &Scenario,
    rates: &[(f64, u64)],
    jobs: Option<u64>,
    limits: &Limits,
) -> Result<Sizing, ScenarioError> {
    let r = &s.run;
    let (seed, process) = (s.seed, s.arrival.process);
    let key = if r.duration_ms.is_some() {
        "run.duration_ms"
    } else {
        "run.warmup_ms"
    };
    let too_many = || {
        c.err(
            key,
            r.duration_ms.or(r.warmup_ms).unwrap_or(0),
            format!(
                "at the arrival rate that is more than {} jobs, must be at most that",
                limits.max_jobs
            ),
        )
    };
    let cap = limits.max_jobs;
    // Counting walks the schedule job by job: refuse at once what is far
    // over the limit on average, so a typo does not cost minutes here.
    let span_us = r
        .warmup_ms
        .unwrap_or(0)
        .saturating_add(r.duration_ms.unwrap_or(0))
        * 1000;
    if crate::arrival::expected_jobs(rates, span_us) > 2.0 * cap as f64 {
        return Err(too_many());
    }
    let (warmup_jobs, measure_from_us) = match r.warmup_ms {
        Some(ms) => {
            let n = crate::arrival::jobs_before(seed, rates, process, ms * 1000, cap)
                .ok_or_else(too_many)?;
            (n, ms * 1000)
        }
        None => (
            r.warmup_jobs,
            crate::arrival::intended_us(seed, rates, process, r.warmup_jobs),
        ),
    };
    let measured = match (jobs, r.duration_ms) {
        (Some(n), _) => n,
        (None, Some(ms)) => {
            let end =
                crate::arrival::jobs_before(seed, rates, process, measure_from_us + ms * 1000, cap)
                    .ok_or_else(too_many)?;
            end.saturating_sub(warmup_jobs)
        }
        (None, None) => unreachable!("validated above: jobs or duration_ms"),
    };
    if measured == 0 {
        return Err(c.err(
            "run.duration_ms",
            r.duration_ms.unwrap_or(0),
            "no job is intended to start in it at the arrival rate; make it longer",
        ));
    }
    if warmup_jobs.saturating_add(measured) > limits.max_jobs {
        return Err(too_many());
    }
    Ok(Sizing {
        warmup_jobs,
        warmup_ms: None,
        measured_jobs: Some(measured),
        duration_ms: None,
        job_cap: limits.max_jobs,
    })
}

fn validate_arrival(
    c: &Checker<'_>,
    a: &ArrivalSpec,
    limits: &Limits,
) -> Result<Vec<(f64, u64)>, ScenarioError> {
    let rate_ok = |key: &str, r: f64| -> Result<f64, ScenarioError> {
        if r.is_finite() && r >= 0.001 && r <= limits.max_rate {
            Ok(r)
        } else {
            Err(c.err(
                key,
                r,
                format!("must be a rate in 0.001..={} jobs/s", limits.max_rate),
            ))
        }
    };
    match a.mode {
        ArrivalMode::Closed => {
            if a.rate.is_some() || !a.steps.is_empty() || a.process != Process::Constant {
                return Err(c.err(
                    "arrival.mode",
                    "\"closed\"",
                    "rate, steps and process apply to mode = \"open\" only",
                ));
            }
            Ok(Vec::new())
        }
        ArrivalMode::Open => match (a.rate, a.steps.is_empty()) {
            (Some(r), true) => Ok(vec![(rate_ok("arrival.rate", r)?, 0)]),
            (None, false) => {
                let mut out = Vec::new();
                let mut first = 0u64;
                for (i, st) in a.steps.iter().enumerate() {
                    out.push((
                        rate_ok(&format!("arrival.steps[{i}].rate"), st.rate)?,
                        first,
                    ));
                    c.range(
                        &format!("arrival.steps[{i}].jobs"),
                        st.jobs,
                        1,
                        limits.max_jobs,
                    )?;
                    first = first.saturating_add(st.jobs);
                }
                Ok(out)
            }
            (Some(_), false) => Err(c.err(
                "arrival.rate",
                "(with steps)",
                "give either rate or steps, not both",
            )),
            (None, true) => Err(c.err(
                "arrival.rate",
                "(missing)",
                "open loop needs a rate in jobs/s, or steps",
            )),
        },
    }
}

/// p in [0,1] -> threshold on a uniform 64-bit word (crash iff word < threshold).
pub(super) fn crash_threshold(p: f64) -> u64 {
    if p >= 1.0 {
        u64::MAX
    } else {
        (p * 18_446_744_073_709_551_616.0) as u64
    }
}
