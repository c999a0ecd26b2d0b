//! The browser client page (docs/websocket.md, "A browser as a client"): the task server answers any request that is not a WebSocket upgrade on its own port, with the page at `/`, so a browser pointed at the server gives it tasks.
//!
//! The page is plain HTML and script with nothing fetched from elsewhere
//! (its Content-Security-Policy allows no other source): it opens WebSockets
//! back to the server, sends seeded tasks and shows the answers as they come.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PAGE: &str = include_str!("page.html");
/// Where the server writes the run's facts into the page's script.
const RUN_MARK: &str = "/*CWBENCH-RUN*/{\"classes\": 1, \"in_flight\": 1}";
/// A request head longer than this is not ours to parse: the WebSocket
/// handshake refuses it.
const MAX_HEAD: usize = 8 << 10;
/// Between peeks at a request head that arrived in parts.
const HEAD_POLL: Duration = Duration::from_millis(2);

/// The page with this run's classes and in-flight bound written in.
pub(crate) fn render(classes: usize, in_flight: usize) -> String {
    let run = format!("{{\"classes\": {classes}, \"in_flight\": {in_flight}}}");
    PAGE.replacen(RUN_MARK, &run, 1)
}

/// What a new connection asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// A WebSocket upgrade: its request is left unread for the handshake.
    Upgrade,
    /// An HTTP request, answered here; the connection is done.
    Served,
}

/// Peeks at the request head: leaves an upgrade to the WebSocket handshake,
/// answers anything else (the page at `/`, 404 elsewhere) and closes. The
/// caller bounds the wait for a head that never completes.
pub(crate) async fn route(tcp: &mut TcpStream, page: &str) -> std::io::Result<Route> {
    let mut buf = vec![0u8; MAX_HEAD];
    let len = loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if n == buf.len() {
            return Ok(Route::Upgrade);
        }
        // The rest of the head is on its way: peek returns at once while
        // any byte is unread.
        tokio::time::sleep(HEAD_POLL).await;
    };
    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
    if is_upgrade(&head) {
        return Ok(Route::Upgrade);
    }
    tcp.read_exact(&mut buf[..len]).await?;
    tcp.write_all(&answer(&head, page)).await?;
    tcp.shutdown().await?;
    Ok(Route::Served)
}

/// Does the head ask for a WebSocket (an `Upgrade: websocket` header)?
fn is_upgrade(head: &str) -> bool {
    head.lines().skip(1).any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("upgrade") && v.to_ascii_lowercase().contains("websocket")
        })
    })
}

/// The HTTP response to a plain request.
fn answer(head: &str, page: &str) -> Vec<u8> {
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/" | "/index.html") => ("200 OK", page),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found: the page is at /\n"),
        _ => ("405 Method Not Allowed", "only GET\n"),
    };
    let kind = if status.starts_with("200") {
        "text/html; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
