//! The dashboard's events: what each one says (JSON), how it travels
//! (Server-Sent Events, numbered) and the bounded history a browser that
//! connects late, or reconnects, is replayed.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::observer::Slot;
use crate::report::{fmt_rate, fmt_us};
use crate::result::{HostResult, HostStatus, IntervalPoint};

/// Snapshot events kept for late joiners, across all hosts: about
/// `RECENT_SNAPSHOTS / hosts` intervals of history each (2 hosts: 2048
/// intervals; 256 hosts: 16). Each running host's latest snapshot is kept
/// beyond that, so a late joiner always sees every host's current figures.
pub const RECENT_SNAPSHOTS: usize = 4096;

/// The reconnection delay a browser is told (the `retry:` field), ms.
pub const RETRY_MS: u64 = 1000;

/// What an event is about; its SSE `event:` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The run: its id, scenario, profiles and hosts. First.
    Run,
    /// A profile starts on every host.
    Profile,
    /// A host's snapshot, as the coordinator keeps it.
    Snapshot,
    /// A host's run of a profile is over: its figures as in result.json.
    Host,
    /// The run is over: where its report is. Last; the page stops there.
    End,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Profile => "profile",
            Kind::Snapshot => "snapshot",
            Kind::Host => "host",
            Kind::End => "end",
        }
    }
}

/// One event, numbered and encoded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: u64,
    pub kind: Kind,
    /// One line of JSON.
    pub data: String,
}

impl Event {
    /// The event as Server-Sent Events text: `id`, `event`, one `data` line
    /// (JSON has no raw newline) and the blank line that ends it.
    pub fn sse(&self) -> String {
        format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            self.id,
            self.kind.name(),
            self.data
        )
    }
}

/// The `run` event's data.
#[derive(Debug, Serialize)]
pub struct RunData<'a> {
    pub run_id: &'a str,
    pub scenario: &'a str,
    /// The profiles' labels, in sweep order.
    pub profiles: Vec<String>,
    /// The hosts' labels, as in result.json.
    pub hosts: &'a [String],
    pub snapshot_interval_ms: u32,
    pub version: &'a str,
}

/// The `profile` event's data.
#[derive(Debug, Serialize)]
pub struct ProfileData {
    pub profile: usize,
}

/// The `snapshot` event's data: the interval's point and the running counts.
#[derive(Debug, Serialize)]
pub struct SnapshotData {
    pub profile: usize,
    pub host: usize,
    pub seq: u64,
    /// End of the interval, s since the host's run of the profile started
    /// (its own clock).
    pub t_s: f64,
    /// Measured jobs completed in the interval, per second.
    pub jobs_per_s: f64,
    /// Completion latency in the interval (0: no job completed).
    pub p50_us: u64,
    pub p99_us: u64,
    /// Scheduler lateness probe p99 in the interval.
    pub lateness_p99_us: u64,
    pub queue_depth: u64,
    pub in_flight: u64,
    /// Jobs finished so far, whatever their outcome.
    pub done: u64,
    /// Errors so far, by kind.
    pub crashed: u64,
    pub timed_out: u64,
    pub shed: u64,
    pub cancelled: u64,
}

impl SnapshotData {
    pub fn new(slot: Slot, c: &cwbench::proto::Counters, p: &IntervalPoint) -> Self {
        Self {
            profile: slot.profile,
            host: slot.host,
            seq: p.seq,
            t_s: p.t_s,
            jobs_per_s: p.jobs_per_s,
            p50_us: p.p50_us,
            p99_us: p.p99_us,
            lateness_p99_us: p.lateness_p99_us,
            queue_depth: p.queue_depth,
            in_flight: p.in_flight,
            done: c.completed + c.crashed + c.timed_out + c.shed + c.cancelled,
            crashed: c.crashed,
            timed_out: c.timed_out,
            shed: c.shed,
            cancelled: c.cancelled,
        }
    }
}

/// A fault on a host's timeline (result.json's `recovery.marks`).
#[derive(Debug, Serialize)]
pub struct Mark {
    pub t_s: f64,
    pub recovery_ms: Option<f64>,
}

/// The whole-run figures as the report prints them (`report::fmt_rate`,
/// `report::fmt_us`), so the page shows the report's text exactly.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub jobs_per_s: String,
    pub p50: String,
    pub p99: String,
    pub lateness_p99: String,
}

/// The `host` event's data: result.json's figures for the host.
#[derive(Debug, Serialize)]
pub struct HostData<'a> {
    pub profile: usize,
    pub host: usize,
    pub status: HostStatus,
    pub error: Option<&'a str>,
    /// Whole-run throughput over the measured window, jobs/s.
    pub throughput: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub lateness_p99_us: u64,
    pub completed: u64,
    pub crashed: u64,
    pub timed_out: u64,
    pub shed: u64,
    pub cancelled: u64,
    pub faults: u64,
    pub marks: Vec<Mark>,
    pub shown: Shown,
}

impl<'a> HostData<'a> {
    pub fn new(slot: Slot, h: &'a HostResult) -> Self {
        let a = &h.accounting;
        let c = &h.latency.completion;
        Self {
            profile: slot.profile,
            host: slot.host,
            status: h.status,
            error: h.error.as_deref(),
            throughput: h.throughput,
            p50_us: c.p50,
            p99_us: c.p99,
            lateness_p99_us: h.lateness.p99,
            completed: a.completed,
            crashed: a.crashed,
            timed_out: a.timed_out,
            shed: a.shed,
            cancelled: a.cancelled,
            faults: h.recovery.faults,
            marks: h
                .recovery
                .marks
                .iter()
                .map(|m| Mark {
                    t_s: m.t_s,
                    recovery_ms: m.recovery_ms,
                })
                .collect(),
            shown: Shown {
                jobs_per_s: fmt_rate(h.throughput),
                p50: fmt_us(c.p50),
                p99: fmt_us(c.p99),
                lateness_p99: fmt_us(h.lateness.p99),
            },
        }
    }
}

/// The `end` event's data.
#[derive(Debug, Default, Serialize)]
pub struct EndData {
    /// The report's link on the dashboard (relative to the page), when it
    /// was written.
    pub report: Option<String>,
    /// The run's directory on the coordinator's disk.
    pub dir: Option<String>,
    /// SIGINT or SIGTERM when the run was interrupted.
    pub interrupted: Option<String>,
    /// Why the run did not finish or its files were not written.
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

/// The events a browser can still be sent: every `run`, `profile`, `host`
/// and `end` event (their number is bounded by the plan: profiles × hosts),
/// the last `RECENT_SNAPSHOTS` snapshot events, and each running host's
/// latest snapshot (dropped when its `host` event supersedes it). Memory
/// does not grow with the run's length.
#[derive(Debug)]
pub struct History {
    next_id: u64,
    cap: usize,
    log: BTreeMap<u64, Event>,
    /// Snapshot events within the recent window, oldest first.
    window: VecDeque<(u64, Slot)>,
    /// Each running host's latest snapshot event.
    latest: HashMap<Slot, u64>,
    end: Option<u64>,
}

impl Default for History {
    fn default() -> Self {
        Self::new(RECENT_SNAPSHOTS)
    }
}

impl History {
    /// A history keeping `cap` recent snapshot events (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            next_id: 1,
            cap: cap.max(1),
            log: BTreeMap::new(),
            window: VecDeque::new(),
            latest: HashMap::new(),
            end: None,
        }
    }

    fn in_window(&self, id: u64) -> bool {
        self.window.front().is_some_and(|&(first, _)| id >= first)
    }

    /// Drops a snapshot event that left the window and is no host's latest.
    fn forget(&mut self, id: u64) {
        if !self.in_window(id) {
            self.log.remove(&id);
        }
    }

    /// Numbers and keeps an event (`slot`: the host a snapshot or host event
    /// is about); returns it. Ids start at 1 and only grow.
    pub fn push(&mut self, kind: Kind, slot: Slot, data: String) -> Event {
        let id = self.next_id;
        self.next_id += 1;
        let ev = Event { id, kind, data };
        self.log.insert(id, ev.clone());
        match kind {
            Kind::Snapshot => {
                if let Some(old) = self.latest.insert(slot, id) {
                    self.forget(old);
                }
                self.window.push_back((id, slot));
                while self.window.len() > self.cap {
                    let Some((old, s)) = self.window.pop_front() else {
                        break;
                    };
                    if self.latest.get(&s) != Some(&old) {
                        self.log.remove(&old);
                    }
                }
            }
            Kind::Host => {
                if let Some(old) = self.latest.remove(&slot) {
                    self.forget(old);
                }
            }
            Kind::End => self.end = Some(id),
            Kind::Run | Kind::Profile => {}
        }
        ev
    }

    /// The kept events after `last` (all of them for `None`, and for an id
    /// this history never gave: a browser left over from another run), in
    /// order.
    pub fn since(&self, last: Option<u64>) -> Vec<Event> {
        let from = match last {
            Some(l) if l < self.next_id => l + 1,
            _ => 0,
        };
        self.log.range(from..).map(|(_, e)| e.clone()).collect()
    }

    /// The `end` event's id, once the run is over.
    pub fn end(&self) -> Option<u64> {
        self.end
    }

    /// Events kept.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }
}

/// What a connection is sent first: the reconnection delay, then the kept
/// events after `last` (the browser's `Last-Event-ID`).
pub fn opening(h: &History, last: Option<u64>) -> (String, Vec<Event>) {
    let events = h.since(last);
    let mut text = format!("retry: {RETRY_MS}\n\n");
    for e in &events {
        text.push_str(&e.sse());
    }
    (text, events)
}

/// A `Last-Event-ID` header's value: the id, or `None` when absent or not
/// a number (then the browser is replayed everything kept).
pub fn parse_last_id(v: Option<&str>) -> Option<u64> {
    v.and_then(|s| s.trim().parse().ok())
}
