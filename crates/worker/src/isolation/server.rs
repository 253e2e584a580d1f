//! The worker's side of the reference platform's function-server protocol, for any backend
//! whose containers run such a server instead of our agent.
//!
//! The server imports the function once and answers, over HTTP/1.1 on port 8080 or over a
//! Unix socket (the "UnixSocket" variant):
//! - a status check (`GET /`; socket command 0): `{"Status": "OK"}`, or HTTP 500 with
//!   `{"Status": "code import error", "user_error": TRACEBACK}`;
//! - an invocation (`POST /invoke` with the JSON arguments; socket command 1): `{"start",
//!   "end"` (local times formatted `%Y-%m-%d %H:%M:%S:%f+%z`), `"was_cold", "duration_sec",
//!   "user_result"` (the function's value, JSON-encoded into a string) with HTTP 200, or
//!   the same with `"user_error"` (the error, JSON-encoded) and HTTP 422; a failure of the
//!   server itself is HTTP 500 with `{"platform_error"}`.
//!
//! The socket variant frames each request as two native-endian u64 (command, length of
//! the arguments) and the arguments, and each answer as a native-endian u64 length and
//! the JSON.
//!
//! Everything the server sends is bounded: the head of an answer ([`MAX_HEAD_BYTES`]), its
//! body ([`MAX_BODY_BYTES`], whatever its framing), the result inside it (the largest
//! payload); what is not the protocol is a [`Protocol`] failure naming what was wrong. A
//! server that sends slowly or never is bounded by the caller's deadline.

use crate::isolation::agent::{AgentFailure, Closed, Protocol};
use crate::isolation::{CallResult, FunctionError};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UnixStream};

/// The port the server listens on inside the container's own network namespace.
pub(crate) const HTTP_PORT: u16 = 8080;
/// Largest status line plus headers of an HTTP answer.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest body of an answer: a result is JSON-encoded once more inside it, so its quotes
/// and backslashes are escaped (twice the bytes at most for the common text).
pub(crate) const MAX_BODY_BYTES: usize = 2 * iluvatar_rpc::MAX_PAYLOAD_BYTES + 64 * 1024;
/// Interim (1xx) answers skipped before the real one.
const MAX_INTERIM: usize = 4;
/// Longest piece of an unexpected answer quoted in an error.
const QUOTED: usize = 300;

/// The server a function's container runs, as `RegisterRequest.container_server` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerKind {
    /// HTTP on 127.0.0.1:8080 of the container's network namespace (`container_server` 0).
    Http,
    /// The socket variant, at the path the container is given in `__IL_SOCKET` (1).
    UnixSocket,
}

impl ServerKind {
    pub fn from_container_server(value: u32) -> ServerKind {
        if value == 1 { ServerKind::UnixSocket } else { ServerKind::Http }
    }
}

fn server_error(why: String) -> AgentFailure {
    AgentFailure::Protocol(Protocol::Server(why))
}

fn hangup(e: std::io::Error) -> AgentFailure {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        AgentFailure::Closed(Closed::ServerHangup("mid-call"))
    } else {
        AgentFailure::Closed(Closed::Io(e))
    }
}

/// A piece of bytes for an error message.
fn quote(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED)]).into_owned();
    if bytes.len() > QUOTED { format!("{s:?}...") } else { format!("{s:?}") }
}

/// How the status check went.
#[derive(Debug)]
pub(crate) enum Status {
    Ready,
    /// The server runs but could not import the function: its message.
    ImportError(String),
}

/// What the server's JSON says.
#[derive(Default, Deserialize)]
struct Reply {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    was_cold: Option<bool>,
    #[serde(default)]
    duration_sec: Option<f64>,
    #[serde(default)]
    user_result: Option<String>,
    #[serde(default)]
    user_error: Option<String>,
    #[serde(default)]
    platform_error: Option<serde_json::Value>,
    #[serde(default, rename = "Status")]
    status: Option<String>,
}

fn reply(body: &[u8]) -> Result<Reply, AgentFailure> {
    serde_json::from_slice(body)
        .map_err(|e| server_error(format!("sent an answer that is not JSON ({e}): {}", quote(body))))
}

/// Reads a status answer (`http`: its HTTP status, if any).
fn status_of(http: Option<u16>, body: &[u8]) -> Result<Status, AgentFailure> {
    let r = reply(body);
    match (http, r) {
        (Some(200) | None, Ok(Reply { status: Some(s), .. })) if s == "OK" => Ok(Status::Ready),
        (_, Ok(Reply { user_error: Some(e), .. })) => Ok(Status::ImportError(e)),
        (Some(code), _) => Err(server_error(format!("answered HTTP {code} to its status check: {}", quote(body)))),
        (None, _) => Err(server_error(format!("sent an unexpected status answer: {}", quote(body)))),
    }
}

/// When the call ran, on the worker's clock: `sent_us` and `received_us` bound it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub sent_us: u64,
    pub received_us: u64,
}

/// Turns an invocation's answer into the call's result (`http`: its HTTP status, if any).
/// A whole answer of another HTTP status, or one that reports a `platform_error`, fails the
/// call but not the container: the server runs and keeps to the protocol's framing (Flask
/// answers a function's unserialisable error with an HTML 500). What is not the protocol
/// is a failure of the container.
pub(crate) fn call_result(http: Option<u16>, body: &[u8], window: Window) -> Result<CallResult, AgentFailure> {
    let expected = matches!(http, Some(200 | 422) | None);
    let r = match reply(body) {
        Ok(r) => r,
        Err(e) if expected => return Err(e),
        Err(_) => Reply::default(),
    };
    let Reply { start, end, was_cold, duration_sec, user_result, user_error, platform_error, .. } = r;
    let failed =
        |kind: &str, message: String| Err(FunctionError { kind: kind.into(), message, traceback: String::new() });
    let output = match (user_result, user_error, http) {
        (Some(v), None, Some(200) | None) => {
            if v.len() > iluvatar_rpc::MAX_PAYLOAD_BYTES {
                return Err(AgentFailure::Protocol(Protocol::TooLarge));
            }
            // The body is written into the worker's answer as is: it must be JSON.
            let raw: &RawValue = serde_json::from_str(&v).map_err(|e| {
                server_error(format!("sent a user_result that is not JSON ({e}): {}", quote(v.as_bytes())))
            })?;
            Ok(raw.get().to_string())
        }
        (None, Some(e), Some(422) | None) => Err(function_error(&e)),
        _ if platform_error.is_some() => {
            let e = platform_error.unwrap_or_default();
            failed("platform_error", format!("the function server reports a platform error: {e}"))
        }
        (.., Some(code)) if !expected => {
            failed("server_error", format!("the function server answered HTTP {code}: {}", quote(body)))
        }
        _ => {
            let code = http.map(|c| format!(" with HTTP {c}")).unwrap_or_default();
            return Err(server_error(format!(
                "answered{code} without the one of user_result and user_error it should carry: {}",
                quote(body)
            )));
        }
    };
    let (start_unix_us, end_unix_us) = place(start.as_deref(), end.as_deref(), duration_sec, window);
    Ok(CallResult { output, start_unix_us, end_unix_us, first_call: was_cold.unwrap_or(false) })
}

/// The error a function raised, from `user_error` (its value JSON-encoded): an object with
/// `kind`/`message`/`traceback` keeps them; anything else is the message.
fn function_error(user_error: &str) -> FunctionError {
    #[derive(Deserialize)]
    struct Shaped {
        kind: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        traceback: String,
    }
    if let Ok(s) = serde_json::from_str::<Shaped>(user_error) {
        return FunctionError { kind: s.kind, message: s.message, traceback: s.traceback };
    }
    let message = match serde_json::from_str::<serde_json::Value>(user_error) {
        Ok(serde_json::Value::String(s)) => s,
        _ => user_error.to_string(),
    };
    FunctionError { kind: "user_error".into(), message, traceback: String::new() }
}

/// A timestamp may be off by this much and still be taken as the container's clock (the
/// container shares the host's clock; a time zone is off by 15 minutes at least).
const SLACK_US: u64 = 2_000_000;

/// The in-function start and end in Unix microseconds. The server writes its local time
/// (with its UTC offset when it knows it, else none: then UTC is assumed); when the result
/// does not fall inside the call's window on the worker's clock (a container in another time
/// zone), the call is placed at the end of the window, lasting `duration_sec`.
fn place(start: Option<&str>, end: Option<&str>, duration_sec: Option<f64>, w: Window) -> (u64, u64) {
    let within = |t: u64| t + SLACK_US >= w.sent_us && t <= w.received_us + SLACK_US;
    if let (Some(s), Some(e)) = (start.and_then(parse_time), end.and_then(parse_time))
        && s <= e
        && within(s)
        && within(e)
    {
        return (s, e);
    }
    let span = w.received_us.saturating_sub(w.sent_us);
    let d = duration_sec.filter(|d| d.is_finite() && *d >= 0.0).map(|d| (d * 1e6) as u64).unwrap_or(span);
    let d = d.min(span);
    (w.received_us - d, w.received_us)
}

/// Parses `YYYY-MM-DD HH:MM:SS:ffffff+` followed by an optional UTC offset (`+HHMM`,
/// `-HH:MM`, ...): the reference format `%Y-%m-%d %H:%M:%S:%f+%z`. Unix microseconds.
pub(crate) fn parse_time(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = text.get(from..from + len)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b' ') && sep(13, b':') && sep(16, b':') && sep(19, b':')) {
        return None;
    }
    let (y, mo, d, h, mi, s) = (num(0, 4)?, num(5, 2)?, num(8, 2)?, num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let digits = b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let frac = &text[20..20 + digits.min(6)];
    let micros: i64 = frac.parse::<i64>().ok()? * 10_i64.pow(6 - frac.len() as u32);
    let rest = &text[20 + digits..];
    let offset_s = match rest.strip_prefix('+')? {
        "" => 0,
        z => {
            let sign = match z.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let z = z[1..].replace(':', "");
            let hh: i64 = z.get(0..2)?.parse().ok()?;
            let mm: i64 = z.get(2..4)?.parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    let unix_s = days * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    u64::try_from(unix_s * 1_000_000 + micros).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One HTTP/1.1 connection to a function server, kept alive across calls while the server
/// keeps it (gunicorn's sync workers close it after every answer).
pub(crate) struct HttpConnection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    request: Vec<u8>,
    head: Vec<u8>,
    body: Vec<u8>,
    /// The server may take another request on this connection.
    reusable: bool,
}

/// What the head of an answer says about its body.
struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
    close: bool,
}

impl HttpConnection {
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        HttpConnection {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: w,
            request: Vec::with_capacity(4096),
            head: Vec::with_capacity(1024),
            body: Vec::with_capacity(4096),
            reusable: true,
        }
    }

    /// Whether another request can be sent: the server keeps the connection, has not
    /// closed it since, and sent nothing unasked.
    pub fn reusable(&self) -> bool {
        if !self.reusable || !self.reader.buffer().is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.reader.get_ref().try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// `GET /`: whether the server runs and imported the function.
    pub async fn status(&mut self) -> Result<Status, AgentFailure> {
        self.request.clear();
        self.request.extend_from_slice(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: application/json\r\n\r\n");
        let code = self.exchange().await?;
        status_of(Some(code), &self.body)
    }

    /// `POST /invoke` with `args` (a JSON object): the answer's HTTP status and body.
    pub async fn invoke(&mut self, args: &str) -> Result<(u16, &[u8]), AgentFailure> {
        self.request.clear();
        self.request.extend_from_slice(
            b"POST /invoke HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\nContent-Length: ",
        );
        self.request.extend_from_slice(args.len().to_string().as_bytes());
        self.request.extend_from_slice(b"\r\n\r\n");
        self.request.extend_from_slice(args.as_bytes());
        let code = self.exchange().await?;
        Ok((code, &self.body))
    }

    async fn exchange(&mut self) -> Result<u16, AgentFailure> {
        self.reusable = false; // Until an answer is read whole and lets it be.
        self.writer.write_all(&self.request).await.map_err(hangup)?;
        for _ in 0..=MAX_INTERIM {
            let head = self.read_head().await?;
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            self.read_body(&head).await?;
            self.reusable = !head.close;
            return Ok(head.status);
        }
        Err(server_error(format!("sent more than {MAX_INTERIM} interim (1xx) answers")))
    }

    /// Reads the status line and headers (at most [`MAX_HEAD_BYTES`]).
    async fn read_head(&mut self) -> Result<Head, AgentFailure> {
        self.head.clear();
        let mut skipped = 0;
        loop {
            let room = (MAX_HEAD_BYTES + 1).saturating_sub(self.head.len()) as u64;
            let start = self.head.len();
            let n = (&mut self.reader).take(room).read_until(b'\n', &mut self.head).await.map_err(hangup)?;
            if n == 0 {
                if self.head.len() > MAX_HEAD_BYTES {
                    return Err(server_error(format!("sent an answer head over {MAX_HEAD_BYTES} bytes")));
                }
                return Err(AgentFailure::Closed(Closed::ServerHangup("mid-call")));
            }
            if self.head.last() != Some(&b'\n') {
                continue; // Only at the cap, checked above on the next round.
            }
            let line = &self.head[start..];
            if line == b"\r\n" || line == b"\n" {
                if start == 0 && skipped < MAX_HEAD_BYTES {
                    skipped += n; // A stray empty line before the status line.
                    self.head.clear();
                    continue;
                }
                break;
            }
        }
        parse_head(&self.head)
    }

    async fn read_body(&mut self, head: &Head) -> Result<(), AgentFailure> {
        self.body.clear();
        if head.status == 204 || head.status == 304 {
            return Ok(());
        }
        let too_large = || AgentFailure::Protocol(Protocol::TooLarge);
        if head.chunked {
            return self.read_chunks().await;
        }
        match head.length {
            Some(n) if n > MAX_BODY_BYTES => Err(too_large()),
            Some(n) => {
                self.body.resize(n, 0);
                self.reader.read_exact(&mut self.body).await.map_err(hangup)?;
                Ok(())
            }
            None => {
                // Delimited by the end of the connection.
                let cap = MAX_BODY_BYTES as u64 + 1;
                (&mut self.reader).take(cap).read_to_end(&mut self.body).await.map_err(hangup)?;
                if self.body.len() > MAX_BODY_BYTES { Err(too_large()) } else { Ok(()) }
            }
        }
    }

    async fn read_chunks(&mut self) -> Result<(), AgentFailure> {
        let mut line = Vec::with_capacity(32);
        loop {
            line.clear();
            (&mut self.reader).take(1024).read_until(b'\n', &mut line).await.map_err(hangup)?;
            if line.last() != Some(&b'\n') {
                return Err(server_error(format!("sent a chunk size line that does not end: {}", quote(&line))));
            }
            let text = String::from_utf8_lossy(&line);
            let size = text.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| server_error(format!("sent a chunk size that is not a number: {}", quote(&line))))?;
            if size == 0 {
                break;
            }
            if self.body.len().saturating_add(size) > MAX_BODY_BYTES {
                return Err(AgentFailure::Protocol(Protocol::TooLarge));
            }
            let at = self.body.len();
            self.body.resize(at + size, 0);
            self.reader.read_exact(&mut self.body[at..]).await.map_err(hangup)?;
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf).await.map_err(hangup)?;
            if &crlf != b"\r\n" {
                return Err(server_error("sent a chunk not followed by CRLF".into()));
            }
        }
        // Trailers, up to the empty line.
        let mut total = 0;
        loop {
            line.clear();
            let n = (&mut self.reader).take(1024).read_until(b'\n', &mut line).await.map_err(hangup)?;
            total += n;
            if n == 0 || total > MAX_HEAD_BYTES {
                return Err(server_error("sent chunked trailers that do not end".into()));
            }
            if line == b"\r\n" || line == b"\n" {
                return Ok(());
            }
        }
    }
}

fn parse_head(head: &[u8]) -> Result<Head, AgentFailure> {
    let text = std::str::from_utf8(head)
        .map_err(|_| server_error(format!("sent an answer head that is not text: {}", quote(head))))?;
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    let status = match (version, code.parse::<u16>()) {
        ("HTTP/1.1" | "HTTP/1.0", Ok(c)) if code.len() == 3 && (100..600).contains(&c) => c,
        _ => {
            return Err(server_error(format!(
                "sent an answer that is not HTTP/1.x: {}",
                quote(status_line.as_bytes())
            )));
        }
    };
    let mut h = Head { status, length: None, chunked: false, close: version == "HTTP/1.0" };
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(server_error(format!("sent a header line without a colon: {}", quote(line.as_bytes()))));
        };
        let value = value.trim();
        let lower = value.to_ascii_lowercase();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value.parse::<usize>().map_err(|_| server_error(format!("sent Content-Length {value:?}")))?;
            if h.length.is_some_and(|m| m != n) {
                return Err(server_error("sent two different Content-Length headers".into()));
            }
            h.length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = lower.split(',').any(|t| t.trim() == "chunked");
            if !h.chunked {
                return Err(server_error(format!("sent Transfer-Encoding {value:?} (only chunked is read)")));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if lower.split(',').any(|t| t.trim() == "close") {
                h.close = true;
            } else if lower.split(',').any(|t| t.trim() == "keep-alive") {
                h.close = false;
            }
        }
    }
    if h.status == 101 {
        return Err(server_error("switched protocols (HTTP 101)".into()));
    }
    Ok(h)
}

/// One connection to a function server's Unix socket (the reference's socket variant).
pub(crate) struct SocketConnection {
    stream: UnixStream,
    request: Vec<u8>,
    body: Vec<u8>,
}

const CHECK: u64 = 0;
const INVOKE: u64 = 1;

impl SocketConnection {
    pub fn new(stream: UnixStream) -> Self {
        SocketConnection { stream, request: Vec::with_capacity(4096), body: Vec::with_capacity(4096) }
    }

    /// Command 0: whether the server runs and imported the function.
    pub async fn status(&mut self) -> Result<Status, AgentFailure> {
        self.exchange(CHECK, b"").await?;
        status_of(None, &self.body)
    }

    /// Command 1 with `args`: the answer's JSON.
    pub async fn invoke(&mut self, args: &str) -> Result<&[u8], AgentFailure> {
        self.exchange(INVOKE, args.as_bytes()).await?;
        Ok(&self.body)
    }

    async fn exchange(&mut self, command: u64, payload: &[u8]) -> Result<(), AgentFailure> {
        self.request.clear();
        self.request.extend_from_slice(&command.to_ne_bytes());
        self.request.extend_from_slice(&(payload.len() as u64).to_ne_bytes());
        self.request.extend_from_slice(payload);
        self.stream.write_all(&self.request).await.map_err(hangup)?;
        let mut len = [0u8; 8];
        self.stream.read_exact(&mut len).await.map_err(hangup)?;
        let len = u64::from_ne_bytes(len);
        if len > MAX_BODY_BYTES as u64 {
            return Err(AgentFailure::Protocol(Protocol::TooLarge));
        }
        self.body.resize(len as usize, 0);
        self.stream.read_exact(&mut self.body).await.map_err(hangup)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
