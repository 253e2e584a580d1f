//! The worker's side of the agent protocol, for any backend whose containers run the agent:
//! one persistent Unix-socket connection per container, one JSON request per line, one
//! JSON response per line.
//!
//! Request `{"args": {...}, "tid": "..."}`; response `{"ok": true, "result": VALUE,
//! "start_us", "end_us", "first_call"}` or `{"ok": false, "error": {"kind", "message",
//! "traceback"}, ...}`.

use crate::isolation::{CallResult, FunctionError};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Largest response line accepted: a result past the largest payload every hop accepts
/// (plus room for the response's other fields) is refused, not buffered without end.
pub(crate) const MAX_RESPONSE_BYTES: usize = iluvatar_rpc::MAX_PAYLOAD_BYTES + 4096;

pub(crate) struct AgentConnection {
    /// The process at the other end, as the kernel says.
    peer_pid: Option<i32>,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: Vec<u8>,
    request: Vec<u8>,
}

#[derive(Deserialize)]
struct Response<'a> {
    ok: bool,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    error: Option<FunctionError>,
    #[serde(default)]
    start_us: u64,
    #[serde(default)]
    end_us: u64,
    #[serde(default)]
    first_call: bool,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentFailure {
    /// The connection closed or failed: the agent process is gone or broken.
    #[error(transparent)]
    Closed(Closed),
    /// The agent answered something that is not the protocol.
    #[error(transparent)]
    Protocol(Protocol),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Closed {
    #[error("{0}")]
    Io(std::io::Error),
    /// The connection ended (`mid-call`, `while importing`).
    #[error("the agent closed the connection {0}")]
    Hangup(&'static str),
    /// The same, of a function server.
    #[error("the function server closed the connection {0}")]
    ServerHangup(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Protocol {
    #[error("the function's result exceeds the largest payload of {} bytes", iluvatar_rpc::MAX_PAYLOAD_BYTES)]
    TooLarge,
    /// A response (`""`) or load response (`"load "`) that is not JSON of the protocol.
    #[error("unreadable {0}response ({1})")]
    Unreadable(&'static str, serde_json::Error),
    #[error("{0}")]
    Encode(serde_json::Error),
    /// A failure without the error it should carry.
    #[error("{0}")]
    Incomplete(&'static str),
    /// A function server's answer that is not the protocol: what it did.
    #[error("the function server {0}")]
    Server(String),
}

fn closed(e: std::io::Error) -> AgentFailure {
    AgentFailure::Closed(Closed::Io(e))
}

impl AgentConnection {
    pub async fn connect(path: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(path).await?;
        let peer_pid = stream.peer_cred()?.pid();
        let (r, w) = stream.into_split();
        Ok(AgentConnection {
            peer_pid,
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: w,
            line: Vec::with_capacity(4096),
            request: Vec::with_capacity(4096),
        })
    }

    pub fn peer_pid(&self) -> Option<i32> {
        self.peer_pid
    }

    /// Sends one call and reads its answer.
    pub async fn call(&mut self, args: &str, tid: &str) -> Result<CallResult, AgentFailure> {
        self.request.clear();
        self.request.extend_from_slice(b"{\"args\":");
        self.request.extend_from_slice(args.as_bytes());
        self.request.extend_from_slice(b",\"tid\":");
        serde_json::to_writer(&mut self.request, tid).map_err(|e| AgentFailure::Protocol(Protocol::Encode(e)))?;
        self.request.extend_from_slice(b"}\n");
        self.writer.write_all(&self.request).await.map_err(closed)?;
        self.line.clear();
        let n = (&mut self.reader)
            .take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_until(b'\n', &mut self.line)
            .await
            .map_err(closed)?;
        if n == 0 || self.line.last() != Some(&b'\n') {
            if self.line.len() > MAX_RESPONSE_BYTES {
                return Err(AgentFailure::Protocol(Protocol::TooLarge));
            }
            return Err(AgentFailure::Closed(Closed::Hangup("mid-call")));
        }
        let r: Response<'_> =
            serde_json::from_slice(&self.line).map_err(|e| AgentFailure::Protocol(Protocol::Unreadable("", e)))?;
        let output = match (r.ok, r.result, r.error) {
            (true, Some(v), _) => Ok(v.get().to_string()),
            (true, None, _) => Ok("null".to_string()),
            (false, _, Some(e)) => Err(e),
            (false, _, None) => {
                return Err(AgentFailure::Protocol(Protocol::Incomplete("an error response without an error")));
            }
        };
        Ok(CallResult { output, start_unix_us: r.start_us, end_unix_us: r.end_us, first_call: r.first_call })
    }
}

impl AgentConnection {
    /// Tells a standby agent to import its function with `env` set; returns the agent's
    /// import time, or the error the import raised.
    pub async fn load(&mut self, env: &[String]) -> Result<f64, Result<FunctionError, AgentFailure>> {
        let vars: serde_json::Map<String, serde_json::Value> = env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let mut line = serde_json::json!({"load": {"env": vars}}).to_string().into_bytes();
        line.push(b'\n');
        self.writer.write_all(&line).await.map_err(|e| Err(closed(e)))?;
        self.line.clear();
        let n =
            (&mut self.reader).take(1024 * 1024).read_until(b'\n', &mut self.line).await.map_err(|e| Err(closed(e)))?;
        if n == 0 {
            return Err(Err(AgentFailure::Closed(Closed::Hangup("while importing"))));
        }
        #[derive(Deserialize)]
        struct Loaded {
            ok: bool,
            #[serde(default)]
            import_ms: f64,
            error: Option<FunctionError>,
        }
        let r: Loaded = serde_json::from_slice(&self.line)
            .map_err(|e| Err(AgentFailure::Protocol(Protocol::Unreadable("load ", e))))?;
        match (r.ok, r.error) {
            (true, _) => Ok(r.import_ms),
            (false, Some(e)) => Err(Ok(e)),
            (false, None) => Err(Err(AgentFailure::Protocol(Protocol::Incomplete("a failed load without an error")))),
        }
    }
}
