//! Tokens: token files, clients that send a token, what a refusal looks like, and a daemon
//! that must refuse to start.

use crate::{bin, output_timeout, unique_dir};
use iluvatar_rpc as rpc;
use iluvatar_rpc::auth::{ClientAuth, Token};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tonic::transport::Channel;

/// Writes `text` to `dir/name` with `mode`.
pub fn token_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// A channel to `endpoint` (`http://host:port`) and what its clients send: `token`, or no
/// header at all.
pub async fn channel(endpoint: String, token: Option<&str>) -> Result<(Channel, ClientAuth), String> {
    let channel = Channel::from_shared(endpoint.clone())
        .map_err(|e| format!("{endpoint}: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
    let auth = token.map(|t| ClientAuth::with_token(&Token::new(t).unwrap())).unwrap_or_default();
    Ok((channel, auth))
}

/// A worker client sending `token` (none: no header).
pub async fn worker_client(endpoint: String, token: Option<&str>) -> rpc::auth::WorkerClient {
    let (channel, auth) = channel(endpoint, token).await.unwrap_or_else(|e| panic!("{e}"));
    rpc::auth::worker_client(channel, auth)
}

/// A controller client sending `token` (none: no header).
pub async fn controller_client(endpoint: String, token: Option<&str>) -> rpc::auth::ControllerClient {
    let (channel, auth) = channel(endpoint, token).await.unwrap_or_else(|e| panic!("{e}"));
    rpc::auth::controller_client(channel, auth)
}

/// A ping with this transaction id.
pub fn ping(transaction_id: &str) -> rpc::PingRequest {
    rpc::PingRequest { message: "Ping".into(), transaction_id: transaction_id.into() }
}

/// Asserts a gRPC call was refused as Unauthenticated with `why` in its message.
pub fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>, why: &str, what: &str) {
    match r {
        Ok(answer) => panic!("{what} was served without the right token: {answer:?}"),
        Err(s) => {
            assert_eq!(s.code(), tonic::Code::Unauthenticated, "{what}: {s:?}");
            assert!(s.message().contains(why), "{what}: the message should say {why:?}: {s:?}");
        }
    }
}

/// Runs `binary` with `config` (its `state_dir` set to a fresh one) and expects it to refuse
/// to start within 20 s, with an exit code and no ready line; returns its stderr.
pub fn refused_start(binary: &str, config: Value) -> String {
    let dir = unique_dir("auth-start");
    let mut config = config;
    config["state_dir"] = dir.join("state").display().to_string().into();
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut cmd = Command::new(bin(binary));
    cmd.arg("-c").arg(&path).env("RUST_LIB_BACKTRACE", "0");
    let out = output_timeout(cmd, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.code().is_some_and(|c| c != 0), "{config} must be refused ({}): {stderr}", out.status);
    assert!(out.stdout.is_empty(), "no ready line: {}", String::from_utf8_lossy(&out.stdout));
    std::fs::remove_dir_all(dir).unwrap();
    stderr
}
