//! Isolation backends: the trait every backend implements, the config enum that builds
//! them, and the set a worker offers. Nobody downcasts a backend; capabilities are methods.

pub mod runtime;
pub mod sim;

use iluvatar_core::{Env, FunctionSpec};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend needs to create a container.
pub struct CreateRequest<'a> {
    pub spec: &'a FunctionSpec,
    /// Unique among the worker's containers, usable as a file or cgroup name.
    pub container_id: &'a str,
    pub tid: &'a str,
}

/// One call of the function inside a container.
pub struct CallRequest<'a> {
    /// A JSON object, already validated.
    pub args: &'a str,
    pub tid: &'a str,
}

/// What the function did, as measured inside the container.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// The function's return value as JSON text, or the error it raised.
    pub output: Result<String, FunctionError>,
    pub start_unix_us: u64,
    pub end_unix_us: u64,
    /// Whether this was the container's first call.
    pub first_call: bool,
}

/// An error raised inside the function (not a platform failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionError {
    pub kind: String,
    pub message: String,
    pub traceback: String,
}

/// A running container that serves calls, one at a time.
pub trait Container: Send + Sync {
    fn id(&self) -> &str;
    fn call<'a>(&'a self, req: CallRequest<'a>) -> BoxFuture<'a, Result<CallResult, IsolationError>>;
}

pub trait IsolationBackend: Send + Sync {
    /// The name users give it (`--isolation NAME`).
    fn name(&self) -> &'static str;
    /// Its bit in `RegisterRequest.isolate`.
    fn flag(&self) -> u32;
    /// Checks at registration that the function's image or code reference can be used.
    fn check_reference(&self, spec: &FunctionSpec) -> Result<(), IsolationError>;
    /// Called once a registration is stored, and for every stored one at start: the backend
    /// may open (and check again) what the reference names and keep it for the function's
    /// life. An error leaves the function registered but unable to start containers.
    fn registered(&self, _spec: &FunctionSpec) -> Result<(), IsolationError> {
        Ok(())
    }
    fn create<'a>(&'a self, req: CreateRequest<'a>) -> BoxFuture<'a, Result<Box<dyn Container>, IsolationError>>;
    fn remove<'a>(&'a self, container: Box<dyn Container>) -> BoxFuture<'a, Result<(), IsolationError>>;
    /// Removes whatever an earlier run of the worker left behind; returns how many things.
    fn clean_leftovers(&self) -> BoxFuture<'_, Result<usize, IsolationError>>;
    /// Called once when the worker starts serving (background work may begin).
    fn start(&self) {}
    /// Called once at shutdown, after every container was removed.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("the {backend} backend cannot use reference {reference:?}: {why}")]
    BadReference { backend: &'static str, reference: String, why: String },
    #[error("container {id} failed to start: {why}")]
    Start { id: String, why: String },
    #[error("container {id} broke during the call: {why}")]
    Broken { id: String, why: String },
    #[error("the function ran out of memory (limit {limit_mb} MB) and was killed")]
    OutOfMemory { limit_mb: u64 },
    #[error("{0}")]
    Io(String),
}

/// Names and bits of every backend this project knows, built or not.
pub const KNOWN_BACKENDS: [(&str, u32); 4] = [
    ("containerd", iluvatar_rpc::isolation::CONTAINERD),
    ("docker", iluvatar_rpc::isolation::DOCKER),
    ("runtime", iluvatar_rpc::isolation::RUNTIME),
    ("sim", iluvatar_rpc::isolation::SIM),
];

pub fn flag_name(flag: u32) -> String {
    KNOWN_BACKENDS.iter().find(|(_, f)| *f == flag).map(|(n, _)| n.to_string()).unwrap_or_else(|| format!("{flag:#x}"))
}

/// A backend in config: `[[isolation.backends]] type = "sim"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackendConfig {
    /// Real containers through the embedded OCI runtime (libcontainer).
    Runtime(runtime::RuntimeConfig),
    Sim(sim::SimConfig),
}

/// What a backend's factory may use.
pub struct BackendContext {
    pub env: Env,
    pub state_dir: PathBuf,
    /// The worker listens on an address beyond loopback (others may be its clients).
    pub beyond_loopback: bool,
}

impl BackendConfig {
    pub fn build(&self, ctx: &BackendContext) -> Result<Arc<dyn IsolationBackend>, IsolationError> {
        match self {
            BackendConfig::Runtime(c) => {
                let clock = ctx.env.clock.clone();
                Ok(runtime::RuntimeBackend::new(c.clone(), &ctx.state_dir, clock, ctx.beyond_loopback)?)
            }
            BackendConfig::Sim(c) => Ok(Arc::new(sim::SimBackend::new(c.clone(), ctx.env.clone()))),
        }
    }
}

/// The backends a worker offers, the first being the default.
#[derive(Clone)]
pub struct Backends(Vec<Arc<dyn IsolationBackend>>);

impl Backends {
    pub fn build(configs: &[BackendConfig], ctx: &BackendContext) -> Result<Self, IsolationError> {
        configs.iter().map(|c| c.build(ctx)).collect::<Result<Vec<_>, _>>().map(Backends)
    }

    pub fn get(&self, flag: u32) -> Option<&Arc<dyn IsolationBackend>> {
        self.0.iter().find(|b| b.flag() == flag)
    }

    pub fn all(&self) -> &[Arc<dyn IsolationBackend>] {
        &self.0
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|b| b.name()).collect()
    }

    /// Picks the backend for a registration's `isolate` bits: 0 means the default; with
    /// several bits, the first offered backend among them.
    pub fn choose(&self, isolate: u32) -> Result<&Arc<dyn IsolationBackend>, String> {
        if isolate == 0 {
            return Ok(&self.0[0]);
        }
        let known: u32 = KNOWN_BACKENDS.iter().map(|(_, f)| f).sum();
        if isolate & !known != 0 {
            return Err(format!(
                "isolate {isolate:#x} has unknown bits; known: {}",
                KNOWN_BACKENDS.iter().map(|(n, f)| format!("{n}={f}")).collect::<Vec<_>>().join(", ")
            ));
        }
        self.0.iter().find(|b| isolate & b.flag() != 0).ok_or_else(|| {
            let asked: Vec<String> =
                KNOWN_BACKENDS.iter().filter(|(_, f)| isolate & f != 0).map(|(n, _)| n.to_string()).collect();
            format!(
                "isolation {} is not offered by this worker (it offers: {})",
                asked.join("|"),
                self.names().join(", ")
            )
        })
    }
}
