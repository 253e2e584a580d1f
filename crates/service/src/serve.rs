//! Serving a daemon's APIs: gRPC always, HTTP/JSON when enabled, the ready line once both
//! listen, and a graceful stop (requests in flight finish; no new connection is taken).

use crate::config::{HttpConfig, ListenConfig};
use anyhow::Context;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The bound sockets of a daemon, before it serves on them.
pub struct Listeners {
    grpc: TcpListener,
    http: Option<TcpListener>,
    pub grpc_local: SocketAddr,
    pub http_local: Option<SocketAddr>,
}

impl Listeners {
    /// Binds the gRPC address, and the HTTP one when enabled: a port that is taken fails
    /// the start here, before the daemon makes anything.
    pub async fn bind(grpc: &ListenConfig, http: &HttpConfig) -> anyhow::Result<Self> {
        let grpc_addr = format!("{}:{}", grpc.address, grpc.port);
        let grpc =
            TcpListener::bind(&grpc_addr).await.with_context(|| format!("cannot listen for gRPC on {grpc_addr}"))?;
        let grpc_local = grpc.local_addr()?;
        let (http_local, http) = if http.enabled {
            let addr = format!("{}:{}", http.address, http.port);
            let l = TcpListener::bind(&addr).await.with_context(|| format!("cannot listen for HTTP on {addr}"))?;
            (Some(l.local_addr()?), Some(l))
        } else {
            (None, None)
        };
        Ok(Listeners { grpc, http, grpc_local, http_local })
    }

    /// Serves `grpc` (with the token check already in front of it) and, when HTTP is
    /// enabled, `http` (the token check is added here) until [`Serving::stop`].
    pub fn serve(
        self,
        grpc: tonic::service::Routes,
        http: axum::Router,
        auth: &iluvatar_rpc::auth::ServerAuth,
    ) -> Serving {
        let (stop, stopped) = watch::channel(false);
        let wait_stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let incoming = tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true));
        let grpc = tonic::transport::Server::builder()
            .add_routes(grpc)
            .serve_with_incoming_shutdown(incoming, wait_stop(stopped.clone()));
        let grpc = tokio::spawn(grpc);
        let http = self.http.map(|l| {
            let app = crate::http::require_token(http, auth.clone());
            let stopped = wait_stop(stopped.clone());
            tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(stopped).await })
        });
        Serving {
            stop,
            grpc,
            http,
            grpc_local: self.grpc_local,
            http_local: self.http_local,
            requires_token: auth.requires_token(),
        }
    }
}

/// A daemon's servers, running.
pub struct Serving {
    stop: watch::Sender<bool>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    pub grpc_local: SocketAddr,
    pub http_local: Option<SocketAddr>,
    requires_token: bool,
}

impl Serving {
    /// The ready line: `{"event": "ready", "name", "grpc", "http", "pid", "auth"}` and the
    /// daemon's own `fields` (an object).
    pub fn ready_line(&self, name: &str, fields: Value) -> Value {
        let mut line = Map::new();
        line.insert("event".into(), "ready".into());
        line.insert("name".into(), name.into());
        line.insert("grpc".into(), self.grpc_local.to_string().into());
        line.insert("http".into(), self.http_local.map(|a| a.to_string()).into());
        if let Value::Object(fields) = fields {
            line.extend(fields);
        }
        line.insert("pid".into(), std::process::id().into());
        line.insert("auth".into(), self.requires_token.into());
        Value::Object(line)
    }

    /// Prints the ready line on stdout: whoever started the daemon may use it from now on.
    pub fn announce(&self, name: &str, fields: Value) {
        println!("{}", self.ready_line(name, fields));
    }

    /// Stops taking connections and waits for the requests in flight; with `drain`, an
    /// idle client connection holds the stop at most that long (then it is logged and the
    /// servers are left to the runtime's end).
    pub async fn stop(self, drain: Option<Duration>) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        let (grpc, http) = (self.grpc, self.http);
        let servers = async {
            grpc.await?.context("gRPC server failed")?;
            if let Some(h) = http {
                h.await?.context("HTTP server failed")?;
            }
            anyhow::Ok(())
        };
        match drain {
            None => servers.await,
            Some(limit) => match tokio::time::timeout(limit, servers).await {
                Ok(_) => Ok(()),
                Err(_) => {
                    tracing::warn!("client connections still open after {} s; closing them", limit.as_secs());
                    Ok(())
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
        s.write_all(format!("GET {path} HTTP/1.0\r\nhost: x\r\n{auth}\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_announces_and_stops() {
        let grpc = ListenConfig { address: "127.0.0.1".into(), port: 0 };
        let http = HttpConfig { enabled: true, address: "127.0.0.1".into(), port: 0 };
        let listeners = Listeners::bind(&grpc, &http).await.unwrap();
        let taken = ListenConfig { address: "127.0.0.1".into(), port: listeners.grpc_local.port() };
        let off = HttpConfig { enabled: false, ..http.clone() };
        let e = Listeners::bind(&taken, &off).await.err().unwrap().to_string();
        assert!(e.contains("cannot listen for gRPC"), "{e}");

        let token = iluvatar_rpc::auth::Token::new("s3cret-token-for-the-serve-test").unwrap();
        let auth = iluvatar_rpc::auth::ServerAuth::with_token(token);
        let router = axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
        let serving = listeners.serve(tonic::service::Routes::default(), router, &auth);
        let http_local = serving.http_local.unwrap();
        let line = serving.ready_line("svc", serde_json::json!({"extra": 3}));
        assert_eq!(line["event"], "ready");
        assert_eq!(line["name"], "svc");
        assert_eq!(line["grpc"], serving.grpc_local.to_string());
        assert_eq!(line["http"], http_local.to_string());
        assert_eq!((line["extra"].as_u64(), line["auth"].as_bool()), (Some(3), Some(true)));
        assert_eq!(line["pid"].as_u64(), Some(std::process::id() as u64));

        assert!(get(http_local, "/ping", None).await.starts_with("HTTP/1.0 401"));
        let ok = get(http_local, "/ping", Some("s3cret-token-for-the-serve-test")).await;
        assert!(ok.starts_with("HTTP/1.0 200") && ok.ends_with("pong"), "{ok}");
        serving.stop(None).await.unwrap();
    }
}
