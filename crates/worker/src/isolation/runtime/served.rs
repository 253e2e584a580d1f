//! How the worker talks to a container: our agent (its Unix socket), or a function server
//! of the reference platform's protocol (`isolation::server`), over HTTP inside the
//! container's own network namespace or over the socket variant. Which one a container
//! runs, how the worker waits for it to answer, and one call.

use super::container::process_alive;
use super::netns::{Netns, SocketMaker};
use crate::isolation::CallResult;
use crate::isolation::agent::{AgentConnection, AgentFailure};
use crate::isolation::server::{self, HttpConnection, ServerKind, SocketConnection, Status, Window};
use iluvatar_core::Clock;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The path of our agent inside an image: an image whose entrypoint or command names it
/// runs the agent; any other runs a function server.
pub(super) const AGENT_IN_IMAGE: &str = "/iluvatar/agent/agent.py";

/// What a container's process speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Speaks {
    Agent,
    Server(ServerKind),
}

impl Speaks {
    /// The detection rule for an image (code functions always run the agent): its
    /// entrypoint or command names our agent, or else it runs the server that the
    /// registration's `container_server` names (0, the protocol's default, is HTTP).
    pub fn image(args: &[String], container_server: u32) -> Speaks {
        if args.iter().any(|a| a == AGENT_IN_IMAGE) {
            Speaks::Agent
        } else {
            Speaks::Server(ServerKind::from_container_server(container_server))
        }
    }

    /// What an image runs, for the log.
    pub fn describe(self) -> &'static str {
        match self {
            Speaks::Agent => "Ilúvatar's agent",
            Speaks::Server(ServerKind::Http) => "a function server (HTTP on port 8080)",
            Speaks::Server(ServerKind::UnixSocket) => "a function server (its Unix-socket variant)",
        }
    }

    /// What the process is called in messages.
    pub fn process(self) -> &'static str {
        match self {
            Speaks::Agent => "agent",
            Speaks::Server(_) => "function server",
        }
    }

    /// The environment the reference platform gives its servers: where to listen (every
    /// address of the container's own namespace, port 8080; the socket variant's path),
    /// and gunicorn's settings (one worker, no worker timeout: the worker's own invocation
    /// timeout applies).
    pub fn server_env(socket_in_container: &str) -> Vec<String> {
        vec![
            format!("__IL_PORT={}", server::HTTP_PORT),
            "__IL_HOST=0.0.0.0".into(),
            format!("__IL_SOCKET={socket_in_container}"),
            format!("GUNICORN_CMD_ARGS=--workers=1 --timeout=0 --bind=0.0.0.0:{}", server::HTTP_PORT),
        ]
    }
}

/// A container's connection.
pub(super) enum Conn {
    Agent(AgentConnection),
    /// `conn` is None between a connection the server closed and the next call.
    Http {
        conn: Option<HttpConnection>,
        netns: Arc<Netns>,
        maker: Arc<SocketMaker>,
        clock: Arc<dyn Clock>,
    },
    Socket {
        conn: SocketConnection,
        clock: Arc<dyn Clock>,
    },
}

impl Conn {
    pub fn agent(&mut self) -> Option<&mut AgentConnection> {
        match self {
            Conn::Agent(a) => Some(a),
            _ => None,
        }
    }

    /// One call of the function.
    pub async fn call(&mut self, args: &str, tid: &str) -> Result<CallResult, AgentFailure> {
        match self {
            Conn::Agent(a) => a.call(args, tid).await,
            Conn::Http { conn, netns, maker, clock } => {
                let sent_us = clock.unix_time_us();
                let c = match conn {
                    Some(c) if c.reusable() => c,
                    _ => {
                        let stream = dial(maker, netns).await.map_err(|e| AgentFailure::Closed(server_gone(e)))?;
                        conn.insert(HttpConnection::new(stream))
                    }
                };
                let (code, body) = c.invoke(args).await?;
                let window = Window { sent_us, received_us: clock.unix_time_us() };
                server::call_result(Some(code), body, window)
            }
            Conn::Socket { conn, clock } => {
                let sent_us = clock.unix_time_us();
                let body = conn.invoke(args).await?;
                server::call_result(None, body, Window { sent_us, received_us: clock.unix_time_us() })
            }
        }
    }
}

fn server_gone(e: std::io::Error) -> crate::isolation::agent::Closed {
    crate::isolation::agent::Closed::Io(std::io::Error::new(
        e.kind(),
        format!("connecting to the function server: {e}"),
    ))
}

/// A new TCP connection to the server on 127.0.0.1:8080 of the container's namespace.
async fn dial(maker: &SocketMaker, netns: &Arc<Netns>) -> std::io::Result<tokio::net::TcpStream> {
    let socket = maker.tcp(netns).await?;
    socket.set_nodelay(true)?;
    socket.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, server::HTTP_PORT))).await
}

/// Why a started container's server could not be reached.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotServing {
    #[error("connecting to the function server failed: {0}")]
    Connect(std::io::Error),
    #[error("the function server exited before answering its status check")]
    Exited,
    #[error("the function server could not import the function: {0}")]
    Import(String),
    #[error("{0}")]
    Protocol(AgentFailure),
    #[error("the socket's peer (process {peer:?}) is not in the container")]
    WrongPeer { peer: Option<i32> },
}

/// How long to wait before trying a server that does not listen yet again.
const RETRY: Duration = Duration::from_millis(1);

/// Waits until the HTTP server answers `GET /` (with "OK": ready; with an import error:
/// failed), or the container's process exits. The caller bounds the wait.
pub(super) async fn wait_for_http(
    maker: Arc<SocketMaker>,
    netns: Arc<Netns>,
    pid: i32,
    clock: Arc<dyn Clock>,
) -> Result<Conn, NotServing> {
    loop {
        match dial(&maker, &netns).await {
            Ok(stream) => {
                let mut c = HttpConnection::new(stream);
                match c.status().await {
                    Ok(Status::Ready) => return Ok(Conn::Http { conn: Some(c), netns, maker, clock }),
                    Ok(Status::ImportError(e)) => return Err(NotServing::Import(e)),
                    // Accepted, then closed: a server still starting (gunicorn's master
                    // listens before its worker has imported the app).
                    Err(AgentFailure::Closed(_)) => {}
                    Err(e) => return Err(NotServing::Protocol(e)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(NotServing::Connect(e)),
        }
        if !process_alive(pid) {
            return Err(NotServing::Exited);
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Waits until the socket variant's server answers its status check at `socket` (the host
/// side of the path it was given). Its peer must be a process of the container (the
/// server may be a child of its init, as gunicorn's worker is).
pub(super) async fn wait_for_socket(socket: &Path, pid: i32, clock: Arc<dyn Clock>) -> Result<Conn, NotServing> {
    loop {
        let is_socket = std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket());
        if is_socket {
            match tokio::net::UnixStream::connect(socket).await {
                Ok(stream) => {
                    let peer = stream.peer_cred().ok().and_then(|c| c.pid());
                    if !peer.is_some_and(|p| same_pid_namespace(p, pid)) {
                        return Err(NotServing::WrongPeer { peer });
                    }
                    let mut conn = SocketConnection::new(stream);
                    match conn.status().await {
                        Ok(Status::Ready) => return Ok(Conn::Socket { conn, clock }),
                        Ok(Status::ImportError(e)) => return Err(NotServing::Import(e)),
                        Err(AgentFailure::Closed(_)) => {}
                        Err(e) => return Err(NotServing::Protocol(e)),
                    }
                }
                // Bound but not yet listening.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(NotServing::Connect(e)),
            }
        }
        if !process_alive(pid) {
            return Err(NotServing::Exited);
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Whether process `a` is in the pid namespace of process `b`.
fn same_pid_namespace(a: i32, b: i32) -> bool {
    let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    matches!((ns(a), ns(b)), (Some(x), Some(y)) if x == y)
}
