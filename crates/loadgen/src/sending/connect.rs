//! Reaching a live target: the token every call carries, gRPC channels to a worker or a
//! controller (failing early, with a ping, when it is unreachable), and the controller's
//! list of healthy workers over its HTTP API.

use crate::sending::lean::LeanClient;
use crate::sending::target::TargetArgs;
use anyhow::{Context, bail};
use iluvatar_rpc as rpc;
use std::time::Duration;
use tonic::transport::Channel;

/// The token every call to a live worker or controller carries (`--token-file`); none
/// until [`set_auth`] is called.
static AUTH: std::sync::OnceLock<rpc::auth::ClientAuth> = std::sync::OnceLock::new();

/// Sets the token sent to live targets (once, at start).
pub fn set_auth(auth: rpc::auth::ClientAuth) {
    let _ = AUTH.set(auth);
}

/// The token sent to live targets, if any.
pub fn auth() -> rpc::auth::ClientAuth {
    AUTH.get().cloned().unwrap_or_default()
}

/// Opens a gRPC channel to `endpoint`; an unreachable target fails here.
async fn channel(endpoint: &str, what: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(endpoint.to_string())
        .with_context(|| format!("bad target address {endpoint}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot reach the {what} at {endpoint} (is it running? see --host/--port)"))
}

fn ping() -> rpc::PingRequest {
    rpc::PingRequest { message: "loadgen".into(), transaction_id: "loadgen-ping".into() }
}

fn no_pong(what: &str, endpoint: &str) -> anyhow::Error {
    anyhow::anyhow!("the {what} at {endpoint} accepted a connection but did not answer a ping in 5 s")
}

/// Connects a gRPC channel and pings the worker; an unreachable target fails here, before
/// any load is sent.
pub async fn connect(endpoint: &str) -> anyhow::Result<rpc::auth::WorkerClient> {
    let client = rpc::auth::worker_client(channel(endpoint, "worker").await?, auth());
    tokio::time::timeout(Duration::from_secs(5), client.clone().ping(ping()))
        .await
        .map_err(|_| no_pong("worker", endpoint))?
        .with_context(|| format!("the target at {endpoint} does not answer the worker protocol"))?;
    Ok(client)
}

/// Opens `n` lean connections ([`LeanClient`]) to `endpoint`, for invocations.
pub async fn lean(endpoint: &str, n: usize) -> anyhow::Result<Vec<LeanClient>> {
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        out.push(LeanClient::connect(endpoint, &auth()).await.with_context(|| format!("connecting to {endpoint}"))?);
    }
    Ok(out)
}

/// Connects a gRPC channel to a controller and pings it.
pub async fn connect_controller(endpoint: &str) -> anyhow::Result<rpc::auth::ControllerClient> {
    let client = rpc::auth::controller_client(channel(endpoint, "controller").await?, auth());
    tokio::time::timeout(Duration::from_secs(5), client.clone().ping(ping()))
        .await
        .map_err(|_| no_pong("controller", endpoint))?
        .with_context(|| {
            format!("the target at {endpoint} does not answer the controller protocol (a worker? use --target worker)")
        })?;
    Ok(client)
}

/// `GET path` over plain HTTP/1.1 at `address` (HOST:PORT): the body, if the status is 200.
pub async fn http_get(address: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(address).await?;
    let authorization = auth().header_value().map(|v| format!("Authorization: {v}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("not an HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        // The body says why (e.g. a 401's "missing token"), when it is short.
        let why = if body.len() <= 300 { body.trim() } else { "" };
        bail!("{} {why}", head.lines().next().unwrap_or(""));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        bail!("chunked answers are not read");
    }
    Ok(body.to_string())
}

/// The healthy workers a controller lists at `GET /workers` on `address`.
pub async fn healthy_workers(address: &str) -> anyhow::Result<Vec<String>> {
    let body = tokio::time::timeout(Duration::from_secs(3), http_get(address, "/workers")).await??;
    let v: serde_json::Value = serde_json::from_str(&body).context("GET /workers: not JSON")?;
    let list = v["workers"].as_array().context("GET /workers: no \"workers\" list (not a controller?)")?;
    Ok(list
        .iter()
        .filter(|w| w["healthy"].as_bool() == Some(true))
        .filter_map(|w| w["name"].as_str().map(String::from))
        .collect())
}

impl TargetArgs {
    /// Waits until the controller lists at least --min-workers healthy workers, asking its
    /// HTTP API (--controller-http, or --port + 1 if that answers as a controller). Returns
    /// the healthy workers, or `None` when there is no HTTP API to ask (the run goes on;
    /// invocations then fail with `no_worker` while the controller has none).
    pub async fn wait_for_workers(&self) -> anyhow::Result<Option<Vec<String>>> {
        let (address, explicit) = match &self.controller_http {
            Some(a) => (a.clone(), true),
            None => (format!("{}:{}", self.endpoint.host, self.endpoint.port.wrapping_add(1)), false),
        };
        // Polls every 100 ms, so many times (each poll's own time aside).
        let polls = (self.wait_workers_s.max(0.0) * 10.0).ceil() as u64;
        let mut last = match healthy_workers(&address).await {
            Ok(w) => w,
            Err(e) if !explicit => {
                eprintln!(
                    "note: cannot list the controller's workers at http://{address}/workers ({e:#}); not waiting for \
                     workers (set --controller-http)"
                );
                return Ok(None);
            }
            Err(e) => return Err(e.context(format!("asking the controller for its workers at http://{address}"))),
        };
        let mut said = false;
        for poll in 0.. {
            if last.len() >= self.min_workers {
                break;
            }
            if poll >= polls {
                bail!(
                    "the controller at http://{address} has {} healthy worker(s) ({}) after {} s; --min-workers is {}. \
                     Are the workers started with the controller in their config?",
                    last.len(),
                    last.join(", "),
                    self.wait_workers_s,
                    self.min_workers
                );
            }
            if !said && !self.quiet {
                println!("waiting for {} healthy worker(s) at the controller (has {})", self.min_workers, last.len());
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            last = healthy_workers(&address).await.unwrap_or_default();
        }
        Ok(Some(last))
    }
}
