//! The WebSocket task protocol (docs/websocket.md): a task is one job, a
//! response its id, outcome and the server's own queue wait and service
//! time. Binary frames by default, a JSON text form for clients and servers
//! that cannot pack bytes (browsers' test pages, scripts). A server answers
//! in the form the task came in.

use serde::{Deserialize, Serialize};

use crate::digest::{CanonicalJob, Digest};

/// First byte of a binary task frame.
pub const TASK: u8 = 0x01;
/// First byte of a binary response frame.
pub const RESPONSE: u8 = 0x02;
/// A binary task frame: type, id, class, work units, sleep, flags, intended.
pub const TASK_LEN: usize = 1 + 8 + 4 + 4 + 4 + 1 + 8;
/// A binary response frame: type, id, outcome, queue wait, service.
pub const RESPONSE_LEN: usize = 1 + 8 + 1 + 8 + 8;
/// The only flag bit defined: the task carries an injected crash.
const CRASH: u8 = 0x01;

/// How a task ended on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed = 0,
    /// Its injected crash ran: the task failed, the connection lives on.
    Crashed = 1,
    /// It ran past the server's job timeout.
    TimedOut = 2,
    /// The server would not run it (shutting down).
    Refused = 3,
}

impl Outcome {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Outcome::Completed,
            1 => Outcome::Crashed,
            2 => Outcome::TimedOut,
            3 => Outcome::Refused,
            _ => return None,
        })
    }
}

/// A server's answer to one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub id: u64,
    pub outcome: Outcome,
    /// From the server reading the task to starting it, ns.
    pub queue_wait_ns: u64,
    /// From starting the task to its end, ns.
    pub service_ns: u64,
}

/// Why a frame is not a valid message; the close reason a server sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame type 0x{0:02x} (task = 0x01)")]
    UnknownType(u8),
    #[error("empty frame")]
    Empty,
    #[error("{what} frame is {got} bytes, expected {want}")]
    Short {
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error("unknown task fields: {0}")]
    UnknownFields(String),
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl FrameError {
    /// The WebSocket close code (RFC 6455 §7.4.1) a server closes with.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::UnknownType(_) => 1003,
            FrameError::UnknownFields(_) => 1008,
            _ => 1007,
        }
    }
}

/// Packs a task as a binary frame.
pub fn encode_task(job: &CanonicalJob, out: &mut Vec<u8>) {
    out.reserve(TASK_LEN);
    out.push(TASK);
    out.extend_from_slice(&job.id.to_le_bytes());
    out.extend_from_slice(&job.class.to_le_bytes());
    out.extend_from_slice(&job.work_units.to_le_bytes());
    out.extend_from_slice(&job.sleep_us.to_le_bytes());
    out.push(if job.crash { CRASH } else { 0 });
    out.extend_from_slice(&job.intended_us.to_le_bytes());
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Checks a binary frame's type and length.
fn framed(b: &[u8], kind: u8, what: &'static str, want: usize) -> Result<(), FrameError> {
    match b.first() {
        None => return Err(FrameError::Empty),
        Some(&t) if t != kind => return Err(FrameError::UnknownType(t)),
        Some(_) => {}
    }
    if b.len() < want {
        return Err(FrameError::Short {
            what,
            got: b.len(),
            want,
        });
    }
    if b.len() > want {
        return Err(FrameError::UnknownFields(format!(
            "{} bytes after the {want}-byte {what}",
            b.len() - want
        )));
    }
    Ok(())
}

/// Reads a binary task frame.
pub fn decode_task(b: &[u8]) -> Result<CanonicalJob, FrameError> {
    framed(b, TASK, "task", TASK_LEN)?;
    let flags = b[21];
    if flags & !CRASH != 0 {
        return Err(FrameError::UnknownFields(format!(
            "flag bits 0x{:02x}",
            flags & !CRASH
        )));
    }
    Ok(CanonicalJob {
        id: u64_at(b, 1),
        class: u32_at(b, 9),
        work_units: u32_at(b, 13),
        sleep_us: u32_at(b, 17),
        crash: flags & CRASH != 0,
        intended_us: u64_at(b, 22),
    })
}

/// Packs a response as a binary frame.
pub fn encode_response(r: &Response, out: &mut Vec<u8>) {
    out.reserve(RESPONSE_LEN);
    out.push(RESPONSE);
    out.extend_from_slice(&r.id.to_le_bytes());
    out.push(r.outcome as u8);
    out.extend_from_slice(&r.queue_wait_ns.to_le_bytes());
    out.extend_from_slice(&r.service_ns.to_le_bytes());
}

/// Reads a binary response frame.
pub fn decode_response(b: &[u8]) -> Result<Response, FrameError> {
    framed(b, RESPONSE, "response", RESPONSE_LEN)?;
    let outcome = Outcome::from_byte(b[9]).ok_or_else(|| FrameError::Invalid {
        what: "outcome",
        detail: format!("{} (0..=3)", b[9]),
    })?;
    Ok(Response {
        id: u64_at(b, 1),
        outcome,
        queue_wait_ns: u64_at(b, 10),
        service_ns: u64_at(b, 18),
    })
}

/// A task in the JSON text form: the job's fields by name, none other.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskJson {
    id: u64,
    class: u32,
    work_units: u32,
    sleep_us: u32,
    crash: bool,
    intended_us: u64,
}

/// A task as a JSON text frame.
pub fn task_json(job: &CanonicalJob) -> String {
    let t = TaskJson {
        id: job.id,
        class: job.class,
        work_units: job.work_units,
        sleep_us: job.sleep_us,
        crash: job.crash,
        intended_us: job.intended_us,
    };
    serde_json::to_string(&t).unwrap_or_default()
}

fn json_error(e: serde_json::Error, what: &'static str) -> FrameError {
    let m = e.to_string();
    if m.starts_with("unknown field") {
        FrameError::UnknownFields(m)
    } else {
        FrameError::Invalid { what, detail: m }
    }
}

/// Reads a JSON text task.
pub fn task_from_json(s: &str) -> Result<CanonicalJob, FrameError> {
    let t: TaskJson = serde_json::from_str(s).map_err(|e| json_error(e, "task"))?;
    Ok(CanonicalJob {
        id: t.id,
        class: t.class,
        work_units: t.work_units,
        sleep_us: t.sleep_us,
        crash: t.crash,
        intended_us: t.intended_us,
    })
}

/// A response as a JSON text frame.
pub fn response_json(r: &Response) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

/// Reads a JSON text response.
pub fn response_from_json(s: &str) -> Result<Response, FrameError> {
    serde_json::from_str(s).map_err(|e| json_error(e, "response"))
}

/// The order-independent digest of a set of tasks: the wrapping sum of
/// each task's one-job [`Digest`]. Tasks spread over connections arrive in
/// any order; the clients' sums add up to the server's when both saw the
/// same tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskSet {
    pub sum: u64,
    pub count: u64,
}

impl TaskSet {
    #[inline]
    pub fn push(&mut self, job: &CanonicalJob) {
        let mut d = Digest::new();
        d.push(job);
        self.sum = self.sum.wrapping_add(d.value());
        self.count += 1;
    }

    /// Adds another set (disjoint tasks: another connection or client).
    pub fn merge(&mut self, o: TaskSet) {
        self.sum = self.sum.wrapping_add(o.sum);
        self.count += o.count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> CanonicalJob {
        CanonicalJob {
            id: 0x0102_0304_0506_0708,
            class: 3,
            work_units: 1_000,
            sleep_us: 250,
            crash: true,
            intended_us: 42,
        }
    }

    #[test]
    fn tasks_and_responses_round_trip_in_both_forms() {
        let mut b = Vec::new();
        encode_task(&job(), &mut b);
        assert_eq!(b.len(), TASK_LEN);
        assert_eq!(decode_task(&b), Ok(job()));
        assert_eq!(task_from_json(&task_json(&job())), Ok(job()));
        let r = Response {
            id: 7,
            outcome: Outcome::TimedOut,
            queue_wait_ns: 1_500,
            service_ns: 9_000_000_000,
        };
        let mut b = Vec::new();
        encode_response(&r, &mut b);
        assert_eq!(b.len(), RESPONSE_LEN);
        assert_eq!(decode_response(&b), Ok(r));
        assert_eq!(response_from_json(&response_json(&r)), Ok(r));
    }

    /// Pins the layout other implementations port (docs/websocket.md).
    #[test]
    fn golden_task_bytes() {
        let mut b = Vec::new();
        encode_task(&job(), &mut b);
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(
            hex,
            "01080706050403020103000000e8030000fa00000001\
             2a00000000000000"
        );
        assert_eq!(
            task_json(&job()),
            r#"{"id":72623859790382856,"class":3,"work_units":1000,"sleep_us":250,"crash":true,"intended_us":42}"#
        );
    }

    #[test]
    fn malformed_frames_are_named_with_their_close_code() {
        let mut b = Vec::new();
        encode_task(&job(), &mut b);
        let e = decode_task(&b[..10]).unwrap_err();
        assert_eq!(e.to_string(), "task frame is 10 bytes, expected 30");
        assert_eq!(e.close_code(), 1007);
        let mut long = b.clone();
        long.push(0);
        let e = decode_task(&long).unwrap_err();
        assert_eq!(e.close_code(), 1008, "{e}");
        let mut flags = b.clone();
        flags[21] |= 0x80;
        assert!(matches!(
            decode_task(&flags),
            Err(FrameError::UnknownFields(_))
        ));
        assert_eq!(decode_task(&[9]).unwrap_err().close_code(), 1003);
        assert_eq!(decode_task(&[]), Err(FrameError::Empty));
        let e = task_from_json(r#"{"id":1,"class":0,"work_units":0,"sleep_us":0,"crash":false,"intended_us":0,"priority":1}"#)
            .unwrap_err();
        assert!(
            matches!(&e, FrameError::UnknownFields(m) if m.contains("priority")),
            "{e}"
        );
        let e = task_from_json(r#"{"id":1}"#).unwrap_err();
        assert_eq!(e.close_code(), 1007, "{e}");
        let mut r = vec![0u8; RESPONSE_LEN];
        r[0] = RESPONSE;
        r[9] = 4;
        assert!(decode_response(&r).is_err());
    }

    #[test]
    fn the_task_set_digest_ignores_order_and_adds_up() {
        let jobs: Vec<CanonicalJob> = (0..100)
            .map(|id| CanonicalJob {
                id,
                work_units: id as u32 * 3,
                ..Default::default()
            })
            .collect();
        let (mut all, mut rev, mut a, mut b) = Default::default();
        for j in &jobs {
            TaskSet::push(&mut all, j);
        }
        for j in jobs.iter().rev() {
            TaskSet::push(&mut rev, j);
        }
        for j in &jobs[..40] {
            TaskSet::push(&mut a, j);
        }
        for j in &jobs[40..] {
            TaskSet::push(&mut b, j);
        }
        let mut merged: TaskSet = a;
        merged.merge(b);
        assert_eq!(all, rev);
        assert_eq!(all, merged);
        let mut other = TaskSet::default();
        for j in &jobs[1..] {
            other.push(j);
        }
        other.push(&CanonicalJob {
            crash: true,
            ..jobs[0]
        });
        assert_ne!(all.sum, other.sum);
    }
}
