//! The profile sweep: `[profile]`'s lists expanded into the profiles of a run.

use super::checker::{Checker, nonempty};
use super::*;

/// Checks `[profile]` and expands its sweep lists into profiles (the
/// cartesian product), each checked against the run spec's rules.
pub(super) fn expand(
    c: &Checker<'_>,
    p: &ProfileSpec,
    websocket: bool,
    limits: &Limits,
) -> Result<Vec<Profile>, ScenarioError> {
    let threads: Vec<Option<u32>> = match &p.threads {
        None => vec![None],
        Some(t) => c
            .list("profile.threads", t, 1, limits.max_threads)?
            .into_iter()
            .map(Some)
            .collect(),
    };
    let workers = c.list("profile.workers", &p.workers, 1, limits.max_workers)?;
    let bounds = c.list(
        "profile.queue_bound",
        &p.queue_bound,
        1,
        limits.max_queue_bound,
    )?;
    let producers = c.list("profile.producers", &p.producers, 1, limits.max_producers)?;
    let backpressure = nonempty(c, "profile.backpressure", p.backpressure.values())?;
    let dispatch = nonempty(c, "profile.dispatch", p.dispatch.values())?;
    let compute = nonempty(c, "profile.compute", p.compute.values())?;
    let flavors = nonempty(c, "profile.runtime", p.runtime.values())?;
    c.range("profile.yield_every", p.yield_every, 1, u32::MAX)?;
    if let Some(sch) = p.schedulers {
        c.range("profile.schedulers", sch, 1, limits.max_threads.min(1024))?;
    }
    c.range(
        "profile.compute_threads",
        p.compute_threads,
        1,
        limits.max_threads,
    )?;

    let mut profiles = Vec::new();
    for &t in &threads {
        for &w in &workers {
            for &q in &bounds {
                for &pr in &producers {
                    for &b in &backpressure {
                        for &d in &dispatch {
                            for &cp in &compute {
                                for &f in &flavors {
                                    let beam = f == Flavor::Beam;
                                    // A sweep that puts the BEAM beside tokio
                                    // variants keeps one BEAM row: it has one
                                    // dispatch and computes inline.
                                    let one = Profile::beam_dispatch(websocket);
                                    if beam
                                        && ((d != one && dispatch.contains(&one))
                                            || (cp != Compute::Inline
                                                && compute.contains(&Compute::Inline)))
                                    {
                                        continue;
                                    }
                                    let prof = Profile {
                                        threads: t,
                                        workers: w,
                                        queue_bound: q,
                                        producers: pr,
                                        backpressure: b,
                                        dispatch: d,
                                        compute: cp,
                                        runtime: f,
                                        yield_every: p.yield_every,
                                        compute_threads: p.compute_threads,
                                        schedulers: if beam { p.schedulers } else { None },
                                        connections: None,
                                    };
                                    prof.check(websocket)
                                        .map_err(|r| c.refused(r, None, Some(&prof.label())))?;
                                    profiles.push(prof);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let profiles = with_connections(c, p, profiles)?;
    if profiles.len() > limits.max_profiles {
        return Err(c.err(
            "profile",
            format!("{} combinations", profiles.len()),
            format!(
                "a sweep may expand to at most {} profiles",
                limits.max_profiles
            ),
        ));
    }

    Ok(profiles)
}

/// `profile.connections`: each profile once per value (a WebSocket run's
/// connections per client; the caller checks there is a `[websocket]`).
fn with_connections(
    c: &Checker<'_>,
    p: &ProfileSpec,
    profiles: Vec<Profile>,
) -> Result<Vec<Profile>, ScenarioError> {
    let Some(list) = &p.connections else {
        return Ok(profiles);
    };
    let max = crate::spec::MAX_CONNECTIONS;
    let conns = c.list("profile.connections", list, 1, max)?;
    Ok(profiles
        .into_iter()
        .flat_map(|prof| {
            conns.iter().map(move |&n| Profile {
                connections: Some(n),
                ..prof.clone()
            })
        })
        .collect())
}
