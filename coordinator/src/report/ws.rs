//! A WebSocket run's table: one row per server configuration, the clients' round trips merged beside the server's own queue and service times.

use super::{Table, fmt_rate, fmt_us};
use crate::result::{RunResult, WsErrors};

/// Errors by kind, in words (`—` when none).
fn errors(e: &WsErrors) -> String {
    let parts: Vec<String> = [
        ("crashed", e.crashed),
        ("timed out", e.timed_out),
        ("refused", e.refused),
        ("lost", e.connection_lost),
        ("cancelled", e.cancelled),
        ("connect failed", e.connect_failed),
        ("reconnects", e.reconnects),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{n} {k}"))
    .collect();
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join(", ")
    }
}

fn opt(v: Option<f64>, show: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "—".into(), show)
}

/// The servers under load, when the run is a WebSocket run.
pub fn websocket_table(r: &RunResult) -> Option<Table> {
    if r.profiles.iter().all(|p| p.websocket.is_none()) {
        return None;
    }
    let mut t = Table::new(
        "WebSocket servers",
        &[
            "profile",
            "server",
            "clients × conns",
            "round trips/s",
            "rt p50",
            "rt p99",
            "rt max",
            "send delay p99",
            "server queue p99",
            "server service p99",
            "connect p99",
            "errors",
            "tasks",
            "server B/conn",
            "CPU µs/task client / server",
        ],
        &[3, 4, 5, 6, 7, 8, 9, 10, 13],
    );
    for p in &r.profiles {
        let Some(w) = &p.websocket else { continue };
        let tasks = match w.digest_match {
            Some(true) => format!("{} (digest ok)", w.tasks_sent),
            Some(false) => format!(
                "sent {}, served {}: digest differs",
                w.tasks_sent, w.tasks_served
            ),
            None => format!("{} (not our server: no digest)", w.tasks_sent),
        };
        t.bad
            .push(w.digest_match == Some(false) || w.errors.connection_lost > 0);
        t.rows.push(vec![
            p.label.clone(),
            w.server.clone(),
            format!(
                "{} × {}",
                w.clients,
                w.connections / w.clients.max(1) as u64
            ),
            fmt_rate(w.round_trips_per_s),
            fmt_us(w.round_trip.p50),
            fmt_us(w.round_trip.p99),
            fmt_us(w.round_trip.max),
            fmt_us(w.send_delay.p99),
            fmt_us(w.server_queue_wait.p99),
            fmt_us(w.server_service.p99),
            fmt_us(w.connect.p99),
            errors(&w.errors),
            tasks,
            opt(w.server_bytes_per_connection, |b| format!("{:.0}", b)),
            format!(
                "{} / {}",
                opt(w.client_cpu_us_per_task, |c| format!("{c:.1}")),
                opt(w.server_cpu_us_per_task, |c| format!("{c:.1}"))
            ),
        ]);
    }
    t.note = Some(
        "Round trips (rt) are timed by the clients from each task's intended send, so a stalled server is charged in full; send delay is the part before the frame was written (TCP backpressure shows here). Server queue and service are the server's own. Digest ok: the tasks the clients sent are exactly those the server read (docs/websocket.md). B/conn: server RSS growth per connection while connections opened; CPU per task needs agents in their own processes.".into(),
    );
    Some(t)
}
