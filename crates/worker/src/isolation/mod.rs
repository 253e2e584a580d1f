//! Isolation backends: the traits every backend implements, the requests they take and the
//! errors they answer. Nobody downcasts a backend; capabilities are methods.
//!
//! The backends are registered in one place, [`backends`] (the config enum, its factory and
//! the set a worker offers); the agent client ([`agent`]), the client of the reference
//! platform's function servers ([`server`]) and the image store ([`image`]) are for any
//! backend to use.

pub(crate) mod agent;
pub mod backends;
pub(crate) mod image;
pub(crate) mod naming;
pub mod runtime;
pub(crate) mod server;
pub mod sim;

pub use backends::{BackendConfig, Backends, ChooseError};

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
    /// Its bit in `RegisterRequest.isolate`.
    fn flag(&self) -> u32;
    /// The name users give it (`--isolation NAME`), from the one name-to-bit table
    /// (`iluvatar_rpc::isolation::BACKENDS`).
    fn name(&self) -> &'static str {
        iluvatar_rpc::isolation::backend_name(self.flag()).unwrap_or("unnamed")
    }
    /// Whether it runs OCI images: a registration asking for a backend of the reference
    /// platform that this implementation does not have (containerd, docker) is served by
    /// one that does.
    fn runs_images(&self) -> bool {
        false
    }
    /// Checks at registration that the function's image or code reference can be used.
    fn check_reference(&self, spec: &FunctionSpec) -> Result<(), IsolationError>;
    /// Makes what the reference names ready before the registration is stored (an image
    /// pulled from its registry, an image unpacked, a code folder's requirements.txt installed
    /// into a dependency layer), so that no invocation waits for it, and refuses it if it
    /// cannot be used. Answers what it did, for the log. Work shared with other registrations
    /// must not stop if this future is dropped.
    fn prepare<'a>(&'a self, _spec: &'a FunctionSpec) -> BoxFuture<'a, Result<Option<String>, IsolationError>> {
        Box::pin(async { Ok(None) })
    }
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
    /// Removes what no registered function uses any more (the runtime backend's dependency
    /// layers), for the `clean` call; returns how many things.
    fn remove_unused(&self) -> BoxFuture<'_, usize> {
        Box::pin(async { 0 })
    }
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
    /// An image could not be pulled from its registry.
    #[error("cannot pull image {reference}: {source}")]
    Pull {
        reference: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("container {id} failed to start: {why}")]
    Start { id: String, why: String },
    /// A code folder's requirements.txt could not be installed (pip's words in `why`).
    #[error("the dependencies of {reference:?} cannot be installed: {why}")]
    Dependencies { reference: String, why: String },
    #[error("container {id} broke during the call: {why}")]
    Broken { id: String, why: String },
    #[error("the function ran out of memory (limit {limit_mb} MB) and was killed")]
    OutOfMemory { limit_mb: u64 },
    /// A file-system operation on the backend's own files failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A call into the kernel failed (a mount, a process setting).
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// The backend's configuration cannot be used on this host.
    #[error("{0}")]
    Config(Box<dyn std::error::Error + Send + Sync>),
    /// The worker lacks a resource right now (file descriptors, memory).
    #[error("the worker cannot open the path now: {0}")]
    Exhausted(#[source] std::io::Error),
    /// The helper process that creates and removes containers does not answer at all.
    #[error(
        "the container launcher does not answer ({0}); if this program is not iluvatar_worker, it must call \
         iluvatar_worker::isolation::runtime::launcher::serve_if_asked() first thing in main"
    )]
    NoLauncher(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The helper process that creates and removes containers failed a request.
    #[error("{what}: {source}")]
    Launcher {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl IsolationError {
    /// An `Io` error, as `map_err(IsolationError::io("cannot write", &path))`.
    pub fn io<'p>(op: &'static str, path: &'p std::path::Path) -> impl FnOnce(std::io::Error) -> IsolationError + 'p {
        move |source| IsolationError::Io { op, path: path.to_path_buf(), source }
    }
}

/// What a backend's factory may use.
pub struct BackendContext {
    pub env: Env,
    pub state_dir: PathBuf,
    /// The worker listens on an address beyond loopback (others may be its clients).
    pub beyond_loopback: bool,
}

/// A backend's config builds the backend: implemented by each backend's config type, called
/// from the registration point ([`backends`]).
pub trait BackendFactory {
    fn build(&self, ctx: &BackendContext) -> Result<Arc<dyn IsolationBackend>, IsolationError>;

    /// Whether this process can run the backend at all (e.g. it needs root), checked when
    /// the worker starts, before it makes anything: `Err` says what is missing.
    fn check_host(&self) -> Result<(), IsolationError> {
        Ok(())
    }
}
