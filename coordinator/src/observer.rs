//! The run's one observer seam: what a run tells its listeners (the progress
//! lines, the live dashboard) as it happens, from its start to its end.

use std::path::Path;
use std::sync::Arc;

use cwbench::proto;
use cwbench::scenario::Plan;

use crate::result::{HostResult, IntervalPoint, RunResult};

/// Progress callback: (host label, snapshot) as each arrives (an observer
/// through [`lines`]).
pub type Progress = Arc<dyn Fn(&str, &proto::Snapshot) + Send + Sync>;

/// Which profile of the sweep (0-based, in the plan's order) and which host
/// (0-based, in the order of the run's labels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Slot {
    pub profile: usize,
    pub host: usize,
}

/// What is about to run: told once, before the first profile.
#[derive(Debug)]
pub struct RunStart<'a> {
    pub run_id: &'a str,
    pub plan: &'a Plan,
    /// The hosts' labels (as in result.json), in `Slot::host` order.
    pub hosts: &'a [String],
}

/// How the run ended: told once, after the files are written (or when the
/// run could not start or its files could not be written: `error`).
#[derive(Debug)]
pub struct RunEnd<'a> {
    pub result: Option<&'a RunResult>,
    /// The run's directory, once its files are in it.
    pub dir: Option<&'a Path>,
    pub error: Option<&'a str>,
}

/// A listener to a run. Every method has an empty default; calls come from
/// the hosts' driver tasks at once, so implementations lock what they share
/// and return quickly (they run on the path that receives snapshots).
pub trait Observer: Send + Sync {
    /// The agents answered; the sweep is about to start.
    fn run_started(&self, _run: &RunStart<'_>) {}
    /// Profile `profile` starts on every host.
    fn profile_started(&self, _profile: usize) {}
    /// A host's snapshot arrived; `point` is what the coordinator keeps of it
    /// (the same point result.json's `intervals` gets).
    fn snapshot(&self, _slot: Slot, _label: &str, _s: &proto::Snapshot, _point: &IntervalPoint) {}
    /// A host's run of a profile is over: its figures as result.json has them.
    fn host_finished(&self, _slot: Slot, _host: &HostResult) {}
    /// The run is over.
    fn run_finished(&self, _end: &RunEnd<'_>) {}
}

/// The listeners of a run, shared by its tasks.
pub type Observers = Arc<dyn Observer>;

/// The progress callback (`crate::progress`) as a listener to snapshots.
struct Lines(Progress);

impl Observer for Lines {
    fn snapshot(&self, _slot: Slot, label: &str, s: &proto::Snapshot, _point: &IntervalPoint) {
        (self.0)(label, s);
    }
}

/// A progress callback as an observer.
pub fn lines(p: Progress) -> Observers {
    Arc::new(Lines(p))
}

/// Several listeners as one, told in order.
struct Fanout(Vec<Observers>);

impl Observer for Fanout {
    fn run_started(&self, run: &RunStart<'_>) {
        self.0.iter().for_each(|o| o.run_started(run));
    }
    fn profile_started(&self, profile: usize) {
        self.0.iter().for_each(|o| o.profile_started(profile));
    }
    fn snapshot(&self, slot: Slot, label: &str, s: &proto::Snapshot, point: &IntervalPoint) {
        self.0
            .iter()
            .for_each(|o| o.snapshot(slot, label, s, point));
    }
    fn host_finished(&self, slot: Slot, host: &HostResult) {
        self.0.iter().for_each(|o| o.host_finished(slot, host));
    }
    fn run_finished(&self, end: &RunEnd<'_>) {
        self.0.iter().for_each(|o| o.run_finished(end));
    }
}

/// The listeners given, as one (None when there are none).
pub fn all(mut observers: Vec<Observers>) -> Option<Observers> {
    match observers.len() {
        0 => None,
        1 => observers.pop(),
        _ => Some(Arc::new(Fanout(observers))),
    }
}
