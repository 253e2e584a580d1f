//! Bare HTTP/1.1 exchanges (no client library: the tests see exactly what goes over the
//! wire) and reading Prometheus text.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The value of a series in Prometheus text (`name` or `name{labels}` as printed).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

/// The metric names (`# TYPE` lines) of Prometheus text.
pub fn metric_names(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(String::from)).collect()
}

/// A bare HTTP/1.1 exchange; returns (status code, body).
fn http_request(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (code, _, body) = http_exchange(addr, method, path, &[], body);
    (code, body)
}

/// A bare HTTP/1.1 exchange with extra request headers; returns (status code, the
/// response's header lines, body).
pub fn http_exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    // A server may answer a body it refuses (too large) and close before reading all of it:
    // the write then fails, but the answer is there to read.
    let sent = s.write_all(req.as_bytes());
    if let Err(e) = &sent {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        assert!(matches!(e.kind(), BrokenPipe | ConnectionReset), "{method} {path}: cannot send: {e}");
    }
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        // After a refused write, a reset may also cut what was read short.
        assert!(sent.is_err() && !raw.is_empty(), "{method} {path}: cannot read the response: {e} (sent: {sent:?})");
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) =
        text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{method} {path}: no header end: {text:?}"));
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line: {head:?}"));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    (code, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// `GET path` on `addr` (`host:port`); returns (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None)
}

/// `POST path` with a JSON body; returns (status code, body).
pub fn http_post_json(addr: &str, path: &str, body: &str) -> (u16, String) {
    http_request(addr, "POST", path, Some(body))
}
