//! The dashboard's HTTP side (axum): the page, the event stream, the
//! report once written, and the token check when the address is not
//! loopback.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::events::{self, Event, History, Kind};
use super::page;

/// Event streams served at once; more get 503 (each is one task and a small
/// buffer).
pub const MAX_STREAMS: usize = 64;

/// Seconds between keep-alive comments on an idle stream (proxies close
/// silent connections).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The cookie that carries the token (hex-encoded) once the page was
/// opened with `?token=`.
const COOKIE: &str = "cwbench_dashboard";

/// What the handlers share with the run's observer.
#[derive(Debug)]
pub struct Shared {
    pub history: Mutex<History>,
    /// Every event as it is kept; a stream that falls behind catches up
    /// from `history`.
    pub tx: broadcast::Sender<Event>,
    /// The run's directory, once its files are written.
    pub dir: Mutex<Option<PathBuf>>,
    /// The token the page and the stream require (non-loopback addresses).
    pub token: Option<String>,
    streams: Arc<Semaphore>,
    page: String,
}

impl Shared {
    pub fn new(token: Option<String>) -> Self {
        Self {
            history: Mutex::new(History::default()),
            tx: broadcast::channel(1024).0,
            dir: Mutex::new(None),
            token,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            page: page::render(),
        }
    }

    /// Keeps an event and sends it to the open streams (under the history's
    /// lock, so a stream that opens meanwhile gets it exactly once).
    pub fn publish(&self, kind: Kind, slot: crate::observer::Slot, data: String) {
        let Ok(mut h) = self.history.lock() else {
            return;
        };
        let ev = h.push(kind, slot, data);
        let _ = self.tx.send(ev);
    }
}

/// The routes: `/` (the page), `/events` (the stream), `/report.html` and
/// `/result.json` (once the run wrote them).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/events", get(events))
        .route("/report.html", get(report))
        .route("/result.json", get(result))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(shared)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The value of `name` in a query string, %XX-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let raw = query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hexval),
            b.get(i + 2).copied().and_then(hexval),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether the request may see the run: always on loopback; otherwise with
/// the token as `Authorization: Bearer`, or in the cookie the page set.
/// Compared in constant time (`cwbench::token::constant_time_eq`).
fn allowed(s: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = &s.token else {
        return true;
    };
    let eq = |given: &[u8], want: &[u8]| cwbench::token::constant_time_eq(given, want);
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok()?.strip_prefix("Bearer "))
        .any(|t| eq(t.trim().as_bytes(), token.as_bytes()));
    let want = hex(token.as_bytes());
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|c| eq(c.as_bytes(), want.as_bytes()));
    bearer || cookie
}

fn denied() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CACHE_CONTROL, "no-store")],
        "this dashboard needs the fleet's token: open /?token=TOKEN once (the page keeps it in a cookie), or send Authorization: Bearer TOKEN\n",
    )
        .into_response()
}

async fn page(State(s): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    if let (Some(token), Some(given)) = (&s.token, query_param(uri.query(), "token")) {
        if !cwbench::token::constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return denied();
        }
        // Into a cookie, and out of the address bar and history.
        let cookie = format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            hex(token.as_bytes())
        );
        let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    if !allowed(&s, &headers) {
        return denied();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, page::CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        s.page.clone(),
    )
        .into_response()
}

/// A file of the run's directory, once the run wrote it.
async fn run_file(s: &Shared, headers: &HeaderMap, name: &str, kind: &'static str) -> Response {
    if !allowed(s, headers) {
        return denied();
    }
    let dir = s.dir.lock().ok().and_then(|d| d.clone());
    let Some(dir) = dir else {
        return (
            StatusCode::NOT_FOUND,
            format!("{name} is written when the run ends\n"),
        )
            .into_response();
    };
    let path = dir.join(name);
    match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, format!("{name} was not written\n")).into_response(),
    }
}

async fn report(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    run_file(&s, &headers, "report.html", "text/html; charset=utf-8").await
}

async fn result(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    run_file(&s, &headers, "result.json", "application/json").await
}

/// The event stream: the kept events after the browser's `Last-Event-ID`,
/// then each new one, until the `end` event. A browser that already has
/// the `end` event gets 204, which tells it to stop reconnecting.
async fn events(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !allowed(&s, &headers) {
        return denied();
    }
    let last = events::parse_last_id(headers.get("last-event-id").and_then(|v| v.to_str().ok()));
    let Ok(permit) = s.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "too many open event streams\n",
        )
            .into_response();
    };
    let (opening, sent, rx) = {
        let Ok(h) = s.history.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        if let (Some(end), Some(l)) = (h.end(), last)
            && l >= end
            && h.since(Some(l)).is_empty()
        {
            return StatusCode::NO_CONTENT.into_response();
        }
        let (text, sent) = events::opening(&h, last);
        (text, sent, s.tx.subscribe())
    };
    let (tx, body) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    let last_id = sent.last().map(|e| e.id).or(last).unwrap_or(0);
    let over = sent.iter().any(|e| e.kind == Kind::End);
    tokio::spawn(async move {
        let _permit = permit;
        if tx.send(Ok(Bytes::from(opening))).await.is_err() || over {
            return;
        }
        pump(&s, rx, &tx, last_id).await;
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(ReceiverStream::new(body)),
    )
        .into_response()
}

/// Sends new events (after `last`) until the `end` event, the client
/// leaving or the coordinator closing; a keep-alive comment when idle. A
/// stream that fell behind the broadcast catches up from the history.
async fn pump(
    s: &Shared,
    mut rx: broadcast::Receiver<Event>,
    tx: &mpsc::Sender<Result<Bytes, Infallible>>,
    mut last: u64,
) {
    let mut idle = tokio::time::interval(KEEP_ALIVE);
    idle.tick().await;
    loop {
        let batch = tokio::select! {
            r = rx.recv() => match r {
                Ok(ev) => vec![ev],
                Err(broadcast::error::RecvError::Lagged(_)) => match s.history.lock() {
                    Ok(h) => h.since(Some(last)),
                    Err(_) => return,
                },
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = idle.tick() => {
                if tx.send(Ok(Bytes::from_static(b": keep-alive\n\n"))).await.is_err() {
                    return;
                }
                continue;
            }
            () = tx.closed() => return,
        };
        for ev in batch {
            if ev.id <= last {
                continue;
            }
            last = ev.id;
            if tx.send(Ok(Bytes::from(ev.sse()))).await.is_err() || ev.kind == Kind::End {
                return;
            }
        }
        idle.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tokens_are_decoded() {
        assert_eq!(
            query_param(Some("token=a%2Bb%25"), "token").as_deref(),
            Some("a+b%")
        );
        assert_eq!(
            query_param(Some("x=1&token=t"), "token").as_deref(),
            Some("t")
        );
        assert_eq!(query_param(Some("tokens=t"), "token"), None);
        assert_eq!(query_param(None, "token"), None);
    }

    #[test]
    fn only_the_token_opens_a_guarded_dashboard() {
        let s = Shared::new(Some("s3cret".into()));
        let with = |k: header::HeaderName, v: &str| {
            let mut h = HeaderMap::new();
            h.insert(k, HeaderValue::from_str(v).unwrap());
            allowed(&s, &h)
        };
        assert!(!allowed(&s, &HeaderMap::new()));
        assert!(with(header::AUTHORIZATION, "Bearer s3cret"));
        assert!(!with(header::AUTHORIZATION, "Bearer s3cre"));
        assert!(with(
            header::COOKIE,
            &format!("a=b; {COOKIE}={}", hex(b"s3cret"))
        ));
        assert!(!with(header::COOKIE, &format!("{COOKIE}=s3cret")));
        assert!(allowed(&Shared::new(None), &HeaderMap::new()));
    }
}
