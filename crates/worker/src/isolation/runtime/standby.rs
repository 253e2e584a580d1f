//! Standby containers: started ahead of any function, with the agent listening and Python
//! and the agent already loaded. Giving one to a code function mounts the function's folder
//! into it (read-only, propagated through a shared mount), sets its cgroup limits and tells
//! the agent to import the function: a cold start without a container start.

use super::container::RuntimeContainer;
use super::served::{Conn, Speaks};
use super::{RuntimeBackend, cgroup, spec};
use crate::isolation::agent::AgentFailure;
use crate::isolation::{CreateRequest, FunctionError, IsolationError};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tracing::Instrument;

/// Why a standby container could not be given a function (it is destroyed, and the cold
/// start starts a container instead).
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error(transparent)]
    Mount(#[from] IsolationError),
    #[error(transparent)]
    Limits(#[from] cgroup::LimitError),
    #[error("the standby container has no connection")]
    NoConnection,
    #[error("the function failed to import: {}: {}", .0.kind, .0.message)]
    Import(FunctionError),
    #[error(transparent)]
    Agent(AgentFailure),
}

/// Started standby containers and whether a refill is running.
#[derive(Default)]
pub(super) struct StandbyPool {
    ready: Mutex<Vec<RuntimeContainer>>,
    refilling: AtomicBool,
    closed: AtomicBool,
    next: AtomicU64,
}

impl StandbyPool {
    /// Stops refilling, waits (up to `limit`) for a refill under way to finish, and hands
    /// back the ids of the containers left, to be destroyed.
    pub async fn close(&self, limit: std::time::Duration) -> Vec<String> {
        self.closed.store(true, Ordering::SeqCst);
        let step = std::time::Duration::from_millis(5);
        let mut waited = std::time::Duration::ZERO;
        while self.refilling.load(Ordering::SeqCst) && waited < limit {
            tokio::time::sleep(step).await;
            waited += step;
        }
        self.ready.lock().unwrap().drain(..).map(|c| c.id).collect()
    }
}

/// Makes the slots folder a shared mount, so that mounts below it propagate into the
/// containers that bind a slot (their binds are slaves of it).
pub(super) fn share_slots(slots: &Path) -> Result<(), IsolationError> {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(&*slots.to_string_lossy()));
    let fail = |what: &str, source: nix::Error| IsolationError::Sys {
        what: format!("cannot {what} {}", slots.display()),
        source,
    };
    if !mounted {
        mount(Some(slots), slots, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| fail("bind", e))?;
    }
    mount(None::<&str>, slots, None::<&str>, MsFlags::MS_SHARED, None::<&str>).map_err(|e| fail("share", e))
}

impl RuntimeBackend {
    /// Starts standby containers in the background until there are as many as configured.
    pub(super) fn refill_standby(&self) {
        let pool = &self.standby;
        if self.config.standby == 0 || pool.closed.load(Ordering::SeqCst) || pool.refilling.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        // Not part of the invocation that may have started it: a root span of its own.
        let span = tracing::debug_span!(parent: None, "standby_refill");
        let refill = async move {
            let pool = &me.standby;
            while !pool.closed.load(Ordering::SeqCst) && pool.ready.lock().unwrap().len() < me.config.standby {
                match me.start_standby().await {
                    Ok(c) if !pool.closed.load(Ordering::SeqCst) => pool.ready.lock().unwrap().push(c),
                    Ok(c) => {
                        let _ = me.destroy(c.id).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "starting a standby container failed; cold starts start containers");
                        break;
                    }
                }
            }
            pool.refilling.store(false, Ordering::SeqCst);
        };
        tokio::spawn(refill.instrument(span));
    }

    async fn start_standby(&self) -> Result<RuntimeContainer, IsolationError> {
        let n = self.standby.next.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "standby-{:08x}-{n}",
            crate::isolation::naming::fnv1a(self.dirs.root.to_string_lossy().as_bytes()) as u32
        );
        let key = Self::key(&id);
        let files = self.files(&key);
        let started = async {
            self.prepare_dirs(&files)?;
            for slot in [&files.slot, &files.deps_slot] {
                std::fs::create_dir_all(slot).map_err(IsolationError::io("cannot create", slot))?;
            }
            let (mut binds, args, mut env) =
                spec::code_function(&files.slot, None, &self.dirs.agent, &files.sockets, &self.config.python);
            // Empty until a function with a dependency layer is given the container.
            binds.push((&files.deps_slot, spec::DEPS_DIR, false));
            env.push("ILUVATAR_STANDBY=1".into());
            let memory = self.config.standby_memory_mb;
            let (rootfs, cwd) = (self.dirs.rootfs.as_path(), "/tmp");
            let config = self.spec(&key, spec::Workload { rootfs, binds, args, env, cwd, memory_mb: memory, cpus: 1 });
            self.boot(&id, &files, config, memory, Speaks::Agent, false).await
        };
        match started.await {
            Ok(c) => Ok(c),
            Err(e) => {
                let _ = self.destroy(id).await;
                Err(e)
            }
        }
    }

    /// Gives a standby container to a code function (with its dependency layer at `deps`),
    /// `Ok(None)` if there is none (or it could not be given: then it is destroyed and the
    /// caller starts a container). A function whose import outlasts `start_timeout_ms` fails
    /// the cold start: a fresh container would hang the same way.
    pub(super) async fn take_standby(
        &self,
        req: &CreateRequest<'_>,
        code: &Path,
        env: &[String],
        deps: Option<&Path>,
    ) -> Result<Option<RuntimeContainer>, IsolationError> {
        let Some(mut c) = self.standby.ready.lock().unwrap().pop() else { return Ok(None) };
        self.refill_standby();
        let limit = std::time::Duration::from_millis(self.config.start_timeout_ms);
        let why = match tokio::time::timeout(limit, self.assign(&mut c, req, code, env, deps)).await {
            Ok(Ok(())) => return Ok(Some(c)),
            Ok(Err(why)) => why,
            Err(_) => {
                let _ = self.destroy(c.id.clone()).await;
                let why = format!("the function did not finish importing within {limit:?}");
                return Err(IsolationError::Start { id: req.container_id.to_string(), why });
            }
        };
        tracing::warn!(tid = req.tid, container = c.id, why = %why, "a standby container could not be used");
        let _ = self.destroy(c.id).await;
        Ok(None)
    }

    async fn assign(
        &self,
        c: &mut RuntimeContainer,
        req: &CreateRequest<'_>,
        code: &Path,
        env: &[String],
        deps: Option<&Path>,
    ) -> Result<(), Unusable> {
        let files = self.files(&Self::key(&c.id));
        self.mount_read_only(code, &files.slot)?;
        let mut env = env.to_vec();
        if let Some(layer) = deps {
            self.mount_read_only(layer, &files.deps_slot)?;
            env.push(spec::deps_env());
        }
        cgroup::set_limits(&c.cgroup_path, req.spec.memory_mb, req.spec.cpus)?;
        c.memory_mb = req.spec.memory_mb;
        let mut guard = c.conn.lock().await;
        let conn = guard.as_mut().and_then(Conn::agent).ok_or(Unusable::NoConnection)?;
        match conn.load(&env).await {
            Ok(import_ms) => {
                tracing::debug!(standby = c.id, import_ms, "standby container given a function");
                Ok(())
            }
            Err(Ok(fe)) => Err(Unusable::Import(fe)),
            Err(Err(failure)) => Err(Unusable::Agent(failure)),
        }
    }

    /// Mounts `code` (a function's folder or layer) read-only at one of the container's slots.
    /// The mount is made read-only before it reaches the slot, because a remount does not
    /// propagate to the container's copy.
    fn mount_read_only(&self, code: &Path, slot: &Path) -> Result<(), IsolationError> {
        let stage = self.dirs.staging.join(slot.file_name().unwrap_or_default());
        std::fs::create_dir_all(&stage).map_err(IsolationError::io("creating", &stage))?;
        let result = (|| {
            fn err(what: &'static str) -> impl Fn(nix::Error) -> IsolationError {
                move |source| IsolationError::Sys { what: what.into(), source }
            }
            mount(Some(code), &stage, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(err("binding the code"))?;
            let ro =
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            mount(None::<&str>, &stage, None::<&str>, ro, None::<&str>).map_err(err("making it read-only"))?;
            mount(Some(&stage), slot, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(err("binding it at the slot"))
        })();
        let _ = umount2(&stage, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&stage);
        result
    }
}
