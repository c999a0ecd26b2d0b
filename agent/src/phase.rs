//! The session's state machine once a run has started: its phase, and pure transitions from what happens to what the session must do.
//!
//! The handshake before it (Start, Ready) is plain sequential code in
//! `crate::session`; this holds what used to be loose flags of its loop.

use std::time::Duration;

use cwbench::proto::error::Code;
use tokio::time::Instant;

/// How long a cancelled workload may take to stop before the agent reports
/// and moves on regardless.
pub const CANCEL_GRACE: Duration = Duration::from_millis(1500);

/// Where a started run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Job batches arrive within credit.
    Feeding,
    /// EndOfJobs came: the workload runs out what it holds.
    Draining,
    /// The run was stopped: the workload has until `deadline` to stop,
    /// then the agent reports regardless.
    Cancelling { deadline: Instant },
}

/// What happened, as the session's loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A job batch was accepted and fed.
    Fed,
    /// The coordinator sent EndOfJobs.
    EndOfJobs,
    /// The coordinator sent Cancel.
    Cancelled,
    /// The inbound stream ended or broke.
    InboundClosed,
    /// The coordinator broke the protocol (or sent something out of range).
    Violation(Code, String),
    /// The coordinator can no longer be written to.
    OutboundGone,
    /// A timed run's measured part is over.
    MeasuredPartOver,
}

/// What the session must do about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Nothing,
    /// No more jobs: the workload drains.
    EndJobs,
    /// Stop the workload: everything not done counts as cancelled.
    Cancel,
    /// Tell the coordinator to stop feeding (once).
    SendStopFeeding,
}

/// The session's state between events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub phase: Phase,
    /// Whether the inbound stream is still read.
    pub inbound_open: bool,
    /// The first failure, reported instead of Done.
    pub failure: Option<(Code, String)>,
    stop_sent: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Self {
            phase: Phase::Feeding,
            inbound_open: true,
            failure: None,
            stop_sent: false,
        }
    }
}

impl Machine {
    /// May a job batch come now? Only before EndOfJobs or Cancel.
    pub fn accepts_jobs(&self) -> bool {
        self.phase == Phase::Feeding
    }

    /// When the session stops waiting for a cancelled workload.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Cancelling { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// Applies one event at `now`.
    pub fn on(&mut self, event: Event, now: Instant) -> Effect {
        match event {
            Event::Fed => Effect::Nothing,
            Event::EndOfJobs => {
                if self.phase == Phase::Feeding {
                    self.phase = Phase::Draining;
                }
                Effect::EndJobs
            }
            Event::Cancelled => self.cancel(now),
            Event::InboundClosed => {
                self.inbound_open = false;
                // Before EndOfJobs, the coordinator vanished mid-run.
                if self.phase == Phase::Feeding {
                    self.cancel(now)
                } else {
                    Effect::Nothing
                }
            }
            Event::Violation(code, message) => {
                self.inbound_open = false;
                self.failure.get_or_insert((code, message));
                self.cancel(now)
            }
            Event::OutboundGone => {
                self.inbound_open = false;
                self.cancel(now)
            }
            Event::MeasuredPartOver => {
                if self.stop_sent {
                    Effect::Nothing
                } else {
                    self.stop_sent = true;
                    Effect::SendStopFeeding
                }
            }
        }
    }

    /// Has StopFeeding gone out?
    pub fn stop_sent(&self) -> bool {
        self.stop_sent
    }

    fn cancel(&mut self, now: Instant) -> Effect {
        // The first cancel sets the deadline; later ones do not extend it.
        if !matches!(self.phase, Phase::Cancelling { .. }) {
            self.phase = Phase::Cancelling {
                deadline: now + CANCEL_GRACE,
            };
        }
        Effect::Cancel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_jobs_then_close_drains_without_cancelling() {
        let (mut m, now) = (Machine::default(), Instant::now());
        assert!(m.accepts_jobs());
        assert_eq!(m.on(Event::Fed, now), Effect::Nothing);
        assert_eq!(m.on(Event::EndOfJobs, now), Effect::EndJobs);
        assert_eq!(m.phase, Phase::Draining);
        assert!(!m.accepts_jobs());
        assert_eq!(m.on(Event::InboundClosed, now), Effect::Nothing);
        assert!(!m.inbound_open);
        assert_eq!(
            (m.phase, m.deadline(), m.failure),
            (Phase::Draining, None, None)
        );
    }

    #[test]
    fn a_coordinator_that_vanishes_mid_run_cancels_it_within_the_grace() {
        let (mut m, now) = (Machine::default(), Instant::now());
        assert_eq!(m.on(Event::InboundClosed, now), Effect::Cancel);
        assert_eq!(m.deadline(), Some(now + CANCEL_GRACE));
        assert!(!m.inbound_open);
        assert_eq!(m.failure, None);
    }

    #[test]
    fn a_violation_is_the_first_failure_and_stops_reading() {
        let (mut m, now) = (Machine::default(), Instant::now());
        let first = Event::Violation(Code::Protocol, "credit exceeded".into());
        assert_eq!(m.on(first, now), Effect::Cancel);
        let later = now + Duration::from_millis(700);
        let second = Event::Violation(Code::Protocol, "empty RunRequest".into());
        assert_eq!(m.on(second, later), Effect::Cancel);
        assert_eq!(m.failure, Some((Code::Protocol, "credit exceeded".into())));
        // The deadline counts from the first cancel.
        assert_eq!(m.deadline(), Some(now + CANCEL_GRACE));
        assert!(!m.inbound_open);
    }

    #[test]
    fn a_cancel_from_the_coordinator_is_no_failure() {
        let (mut m, now) = (Machine::default(), Instant::now());
        assert_eq!(m.on(Event::Cancelled, now), Effect::Cancel);
        assert!(!m.accepts_jobs());
        assert!(m.inbound_open, "the stream is read until it closes");
        assert_eq!(m.on(Event::InboundClosed, now), Effect::Nothing);
        assert_eq!(m.failure, None);
    }

    #[test]
    fn end_of_jobs_after_a_cancel_stays_cancelling() {
        let (mut m, now) = (Machine::default(), Instant::now());
        m.on(Event::OutboundGone, now);
        assert_eq!(m.on(Event::EndOfJobs, now), Effect::EndJobs);
        assert_eq!(m.deadline(), Some(now + CANCEL_GRACE));
    }

    #[test]
    fn stop_feeding_goes_out_once() {
        let (mut m, now) = (Machine::default(), Instant::now());
        assert!(!m.stop_sent());
        assert_eq!(m.on(Event::MeasuredPartOver, now), Effect::SendStopFeeding);
        assert_eq!(m.on(Event::MeasuredPartOver, now), Effect::Nothing);
        assert!(m.stop_sent());
        assert_eq!(m.phase, Phase::Feeding);
    }
}
