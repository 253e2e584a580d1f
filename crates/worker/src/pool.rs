//! The container pool: idle containers kept per function and reused, cold starts through
//! the function's backend, memory accounted against the pool's size, eviction of idle
//! containers when memory is short, and removal of those idle past their keep-alive.

use crate::alarm::Alarm;
use crate::isolation::{Backends, Container, CreateRequest, IsolationBackend, IsolationError};
use crate::metrics::Metrics;
use iluvatar_core::policy::{EvictionPolicy, IdleContainer, KeepAlivePolicy};
use iluvatar_core::{ContainerState, Env, FunctionSpec};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(
        "not enough memory for {fqdn}: it needs {needed_mb} MB, {free_mb} of {total_mb} MB are free and no idle container could be evicted within {waited_ms} ms"
    )]
    NoMemory { fqdn: String, needed_mb: u64, free_mb: u64, total_mb: u64, waited_ms: u64 },
    #[error("function {fqdn} runs on the {backend} backend, which this worker does not offer")]
    NoBackend { fqdn: String, backend: String },
    #[error("cold start of {fqdn} failed: {source}")]
    Start { fqdn: String, source: IsolationError },
    #[error("the worker is shutting down")]
    Closed,
}

/// A container held by the pool, idle or lent out.
struct Entry {
    id: u64,
    fqdn: Arc<str>,
    memory_mb: u64,
    backend: Arc<dyn IsolationBackend>,
    handle: Box<dyn Container>,
    uses: u64,
    last_used: Duration,
    /// How long its start took.
    cold_start: Duration,
    /// What the eviction policy said of it at its last release.
    mark: f64,
}

impl Entry {
    /// The container as the eviction and keep-alive policies see it.
    fn view(&self) -> IdleContainer {
        IdleContainer {
            id: self.id,
            fqdn: self.fqdn.clone(),
            memory_mb: self.memory_mb,
            last_used: self.last_used,
            uses: self.uses,
            cold_start: self.cold_start,
            mark: self.mark,
        }
    }
}

/// A container lent to one invocation. Give it back with [`ContainerPool::release`].
pub struct Lease {
    entry: Entry,
    /// The state the container was in when acquired.
    pub state: ContainerState,
    /// The backend's start time, for a cold start.
    pub cold_start: Option<Duration>,
}

impl Lease {
    pub fn container(&self) -> &dyn Container {
        self.entry.handle.as_ref()
    }
}

/// Whether an acquisition may reuse an idle container.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    Invoke,
    /// Always starts a new container.
    Prewarm,
}

struct State {
    total_mb: u64,
    used_mb: u64,
    /// Idle containers per function; the most recently used is last.
    idle: HashMap<Arc<str>, Vec<Entry>>,
    idle_count: usize,
    busy: usize,
    next_id: u64,
    closed: bool,
    /// MB held by idle containers (part of `used_mb`).
    idle_mb: u64,
    usage: MemoryUsage,
}

/// Memory integrated over time, exactly, in MB·ns: at every change of the figures the time
/// since the last change times their value is added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// The time (on the Env's clock) up to which the sums run.
    pub since: Duration,
    /// MB held by containers, idle or busy (including memory reserved for a start).
    pub held_mb_ns: u128,
    /// MB held by idle containers.
    pub idle_mb_ns: u128,
}

impl MemoryUsage {
    pub fn held_mb_seconds(&self) -> f64 {
        self.held_mb_ns as f64 / 1e9
    }
    pub fn idle_mb_seconds(&self) -> f64 {
        self.idle_mb_ns as f64 / 1e9
    }
}

impl State {
    /// Brings the memory integrals up to `now`; called before every change of `used_mb` or
    /// `idle_mb`.
    fn advance(&mut self, now: Duration) {
        let dt = now.saturating_sub(self.usage.since).as_nanos();
        self.usage.held_mb_ns += self.used_mb as u128 * dt;
        self.usage.idle_mb_ns += self.idle_mb as u128 * dt;
        self.usage.since = self.usage.since.max(now);
    }

    fn push_idle(&mut self, entry: Entry) {
        self.idle_mb += entry.memory_mb;
        self.idle_count += 1;
        self.idle.entry(entry.fqdn.clone()).or_default().push(entry);
    }
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Copy)]
pub struct PoolSnapshot {
    pub used_mb: u64,
    pub total_mb: u64,
    pub idle: usize,
    pub busy: usize,
}

pub struct PoolPolicies {
    pub eviction: Box<dyn EvictionPolicy>,
    pub keep_alive: Box<dyn KeepAlivePolicy>,
    pub memory_wait: Duration,
}

pub struct ContainerPool {
    backends: Backends,
    env: Env,
    metrics: Arc<Metrics>,
    policies: PoolPolicies,
    /// Distinguishes this run's container ids from an earlier run's.
    boot_id: String,
    state: Mutex<State>,
    /// Signalled whenever memory is freed or a container becomes idle (evictable).
    changed: Notify,
    /// Removals under way in tasks of their own; `close` waits for them.
    removals: Arc<Removals>,
    /// Rung when a container's expiry or a pre-warm falls due before the reaper looks.
    alarm: Alarm,
}

#[derive(Default)]
struct Removals {
    running: std::sync::atomic::AtomicUsize,
    done: Notify,
}

enum Plan {
    Reuse(Entry),
    Create { id: u64, victims: Vec<Entry> },
    Wait { free_mb: u64 },
}

impl ContainerPool {
    pub fn new(total_mb: u64, backends: Backends, policies: PoolPolicies, env: Env, metrics: Arc<Metrics>) -> Self {
        let boot_id = format!("{:06x}", env.rng.next_u64() & 0xff_ffff);
        let usage = MemoryUsage { since: env.now(), ..Default::default() };
        let state = State {
            total_mb,
            used_mb: 0,
            idle: HashMap::new(),
            idle_count: 0,
            busy: 0,
            next_id: 1,
            closed: false,
            idle_mb: 0,
            usage,
        };
        ContainerPool {
            backends,
            env,
            metrics,
            policies,
            boot_id,
            state: Mutex::new(state),
            changed: Notify::new(),
            removals: Default::default(),
            alarm: Alarm::default(),
        }
    }

    /// The reaper's alarm (see [`crate::alarm`]).
    pub fn alarm(&self) -> &Alarm {
        &self.alarm
    }

    /// When the reaper next has work here: the earliest expiry of an idle container or
    /// pre-warm, by the keep-alive policy.
    pub fn next_due(&self) -> Option<Duration> {
        let ka = &self.policies.keep_alive;
        let expiry = self.state.lock().unwrap().idle.values().flatten().filter_map(|e| ka.expires_at(&e.view())).min();
        expiry.into_iter().chain(ka.next_prewarm()).min()
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let s = self.state.lock().unwrap();
        PoolSnapshot { used_mb: s.used_mb, total_mb: s.total_mb, idle: s.idle_count, busy: s.busy }
    }

    /// Memory-seconds held and idle since the pool was made, up to now.
    pub fn memory_usage(&self) -> MemoryUsage {
        let now = self.env.now();
        let mut s = self.state.lock().unwrap();
        s.advance(now);
        s.usage
    }

    pub fn has_idle(&self, fqdn: &str) -> bool {
        self.state.lock().unwrap().idle.get(fqdn).is_some_and(|v| !v.is_empty())
    }

    /// Lends a container for `spec`: an idle one if there is one (unless prewarming), else a
    /// new one, evicting idle containers or waiting up to the memory bound for memory.
    pub async fn acquire(&self, spec: &FunctionSpec, tid: &str, kind: Acquire) -> Result<Lease, PoolError> {
        self.acquire_for(spec, &spec.fqdn().0.into(), tid, kind).await
    }

    /// [`Self::acquire`] when the caller already holds the function's fqdn.
    pub async fn acquire_for(
        &self,
        spec: &FunctionSpec,
        fqdn: &Arc<str>,
        tid: &str,
        kind: Acquire,
    ) -> Result<Lease, PoolError> {
        self.acquire_in_span(spec, fqdn, tid, kind).instrument(tracing::debug_span!("acquire")).await
    }

    async fn acquire_in_span(
        &self,
        spec: &FunctionSpec,
        fqdn: &Arc<str>,
        tid: &str,
        kind: Acquire,
    ) -> Result<Lease, PoolError> {
        let backend = self.backends.get(spec.isolation).cloned().ok_or_else(|| PoolError::NoBackend {
            fqdn: fqdn.to_string(),
            backend: iluvatar_rpc::isolation::name(spec.isolation),
        })?;
        let started = self.env.now();
        if matches!(kind, Acquire::Invoke)
            && let Some(at) = self.policies.keep_alive.arrived(fqdn, started)
        {
            self.alarm.due(at);
        }
        loop {
            let plan = match self.plan(fqdn, spec.memory_mb, kind)? {
                Plan::Wait { .. } => {
                    // Slow path: register for wake-ups first, then look again, so that a
                    // release between the two looks is not missed.
                    let changed = self.changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    match self.plan(fqdn, spec.memory_mb, kind)? {
                        Plan::Wait { free_mb } => {
                            let waited = self.env.now().saturating_sub(started);
                            let left = self.policies.memory_wait.checked_sub(waited).filter(|d| !d.is_zero());
                            let Some(left) = left else {
                                return Err(PoolError::NoMemory {
                                    fqdn: fqdn.to_string(),
                                    needed_mb: spec.memory_mb,
                                    free_mb,
                                    total_mb: self.snapshot().total_mb,
                                    waited_ms: waited.as_millis() as u64,
                                });
                            };
                            let _ = tokio::time::timeout(left, changed).await;
                            continue;
                        }
                        plan => plan,
                    }
                }
                plan => plan,
            };
            return match plan {
                Plan::Reuse(entry) => {
                    let state = if entry.uses == 0 { ContainerState::Prewarm } else { ContainerState::Warm };
                    Ok(Lease { entry, state, cold_start: None })
                }
                Plan::Create { id, victims } => {
                    self.evict(victims).await;
                    self.create(spec, fqdn.clone(), id, backend, tid).await
                }
                Plan::Wait { .. } => unreachable!("waits are handled above"),
            };
        }
    }

    /// Decides under the lock how to serve an acquisition, reserving memory if creating.
    fn plan(&self, fqdn: &str, memory_mb: u64, kind: Acquire) -> Result<Plan, PoolError> {
        let now = self.env.now();
        let mut s = self.state.lock().unwrap();
        if s.closed {
            return Err(PoolError::Closed);
        }
        s.advance(now);
        if kind == Acquire::Invoke
            && let Some(entry) = s.idle.get_mut(fqdn).and_then(|v| v.pop())
        {
            s.idle_count -= 1;
            s.idle_mb -= entry.memory_mb;
            s.busy += 1;
            return Ok(Plan::Reuse(entry));
        }
        let free = s.total_mb - s.used_mb;
        let mut victims = Vec::new();
        if free < memory_mb {
            let candidates: Vec<IdleContainer> = s.idle.values().flatten().map(Entry::view).collect();
            let chosen = self.policies.eviction.choose_victims(&candidates, memory_mb - free);
            if chosen.is_empty() {
                return Ok(Plan::Wait { free_mb: free });
            }
            victims = take_idle(&mut s, |e| chosen.contains(&e.id));
            let freed: u64 = victims.iter().map(|e| e.memory_mb).sum();
            if free + freed < memory_mb {
                // A policy that chose too little: put nothing back half-done, give up the victims.
                s.used_mb -= freed;
                drop(s);
                self.metrics.evictions.fetch_add(victims.len() as u64, Relaxed);
                let _ = self.spawn_removals(victims);
                return Ok(Plan::Wait { free_mb: free + freed });
            }
            s.used_mb -= freed;
        }
        s.used_mb += memory_mb;
        s.busy += 1;
        let id = s.next_id;
        s.next_id += 1;
        Ok(Plan::Create { id, victims })
    }

    async fn create(
        &self,
        spec: &FunctionSpec,
        fqdn: Arc<str>,
        id: u64,
        backend: Arc<dyn IsolationBackend>,
        tid: &str,
    ) -> Result<Lease, PoolError> {
        let container_id = format!("{fqdn}-{}-{id}", self.boot_id);
        let t0 = self.env.now();
        let span = tracing::debug_span!("create", backend = backend.name(), container = %container_id);
        let created = backend.create(CreateRequest { spec, container_id: &container_id, tid }).instrument(span).await;
        let took = self.env.now().saturating_sub(t0);
        match created {
            Ok(handle) => {
                self.metrics.cold_starts.fetch_add(1, Relaxed);
                self.metrics.cold_start.observe_us(took.as_micros() as u64);
                tracing::debug!(took_us = took.as_micros() as u64, "cold start");
                let entry = Entry {
                    id,
                    fqdn,
                    memory_mb: spec.memory_mb,
                    backend,
                    handle,
                    uses: 0,
                    last_used: self.env.now(),
                    cold_start: took,
                    mark: 0.0,
                };
                Ok(Lease { entry, state: ContainerState::Cold, cold_start: Some(took) })
            }
            Err(source) => {
                self.metrics.failed_cold_starts.fetch_add(1, Relaxed);
                self.forget(spec.memory_mb);
                tracing::warn!(tid, container_id, error = %source, "cold start failed");
                Err(PoolError::Start { fqdn: fqdn.to_string(), source })
            }
        }
    }

    /// Takes back a container after an invocation: kept idle if it is healthy, removed
    /// otherwise.
    pub fn release(&self, lease: Lease, healthy: bool) {
        let mut entry = lease.entry;
        let now = self.env.now();
        let mut s = self.state.lock().unwrap();
        s.advance(now);
        s.busy -= 1;
        if healthy && !s.closed {
            entry.uses += 1;
            entry.last_used = now;
            entry.mark = self.policies.eviction.mark(&entry.view());
            let expires = self.policies.keep_alive.expires_at(&entry.view());
            s.push_idle(entry);
            drop(s);
            if let Some(at) = expires {
                self.alarm.due(at);
            }
        } else {
            s.used_mb -= entry.memory_mb;
            drop(s);
            let _ = self.spawn_removals(vec![entry]);
        }
        self.changed.notify_waiters();
    }

    /// Puts a freshly prewarmed container into the idle set without counting a use.
    pub fn release_prewarmed(&self, lease: Lease) {
        let mut entry = lease.entry;
        let now = self.env.now();
        entry.last_used = now;
        let mut s = self.state.lock().unwrap();
        s.advance(now);
        s.busy -= 1;
        if s.closed {
            s.used_mb -= entry.memory_mb;
            drop(s);
            let _ = self.spawn_removals(vec![entry]);
        } else {
            let expires = self.policies.keep_alive.expires_at(&entry.view());
            s.push_idle(entry);
            drop(s);
            if let Some(at) = expires {
                self.alarm.due(at);
            }
        }
        self.changed.notify_waiters();
    }

    /// Starts a container for each function the keep-alive policy says is due for a
    /// pre-warm and has none idle (`spec_of` finds its registration); returns how many
    /// started. A pre-warm that fails (no memory) is logged and skipped.
    pub async fn prewarm_due(&self, spec_of: impl Fn(&str) -> Option<Arc<FunctionSpec>>) -> usize {
        let due = self.policies.keep_alive.prewarm_due(self.env.now());
        let mut started = 0;
        for fqdn in due {
            if self.has_idle(&fqdn) {
                continue;
            }
            let Some(spec) = spec_of(&fqdn) else { continue };
            match self.acquire_for(&spec, &fqdn, "keep-alive-prewarm", Acquire::Prewarm).await {
                Ok(lease) => {
                    self.release_prewarmed(lease);
                    started += 1;
                }
                Err(error) => tracing::info!(%fqdn, %error, "the keep-alive policy's pre-warm failed"),
            }
        }
        started
    }

    /// Removes idle containers past their keep-alive; returns how many.
    pub async fn reap_expired(&self) -> usize {
        let now = self.env.now();
        let expired = {
            let mut s = self.state.lock().unwrap();
            s.advance(now);
            let ka = &self.policies.keep_alive;
            let expired = take_idle(&mut s, |e| ka.expired(&e.view(), now));
            s.used_mb -= expired.iter().map(|e| e.memory_mb).sum::<u64>();
            expired
        };
        let n = expired.len();
        if n > 0 {
            self.metrics.expirations.fetch_add(n as u64, Relaxed);
            self.remove(expired).await;
            self.changed.notify_waiters();
        }
        n
    }

    /// Takes every idle container out of the pool, its memory counted free.
    fn take_all_idle(&self) -> Vec<Entry> {
        let now = self.env.now();
        let mut s = self.state.lock().unwrap();
        s.advance(now);
        let idle = take_idle(&mut s, |_| true);
        s.used_mb -= idle.iter().map(|e| e.memory_mb).sum::<u64>();
        idle
    }

    /// Removes every idle container (the `clean` operation); returns how many.
    pub async fn remove_idle(&self) -> usize {
        let idle = self.take_all_idle();
        let n = idle.len();
        self.remove(idle).await;
        self.changed.notify_waiters();
        n
    }

    /// Stops lending containers and removes the idle ones; busy ones are removed when
    /// they come back. Waits (up to `bound` in all) for these and every other removal under
    /// way, so that none is cut short by the process ending; a removal still running then
    /// goes on in its own task.
    pub async fn close(&self, bound: Duration) -> usize {
        self.state.lock().unwrap().closed = true;
        self.changed.notify_waiters();
        let idle = self.take_all_idle();
        let n = idle.len();
        let _ = self.spawn_removals(idle);
        self.changed.notify_waiters();
        let all_done = async {
            loop {
                let done = self.removals.done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if self.removals.running.load(Relaxed) == 0 {
                    return;
                }
                done.await;
            }
        };
        if tokio::time::timeout(bound, all_done).await.is_err() {
            tracing::warn!(left = self.removals.running.load(Relaxed), "container removals still running at close");
        }
        n
    }

    /// Removes evicted containers before the new one starts: their memory counts as free
    /// already, so starting first could take the host past the pool's size.
    async fn evict(&self, victims: Vec<Entry>) {
        if victims.is_empty() {
            return;
        }
        self.metrics.evictions.fetch_add(victims.len() as u64, Relaxed);
        self.remove(victims).await;
    }

    fn forget(&self, memory_mb: u64) {
        let now = self.env.now();
        let mut s = self.state.lock().unwrap();
        s.advance(now);
        s.used_mb -= memory_mb;
        s.busy -= 1;
        drop(s);
        self.changed.notify_waiters();
    }

    /// Removes containers in a task of its own, counted until done (`close` waits for it);
    /// awaiting the handle is optional.
    fn spawn_removals(&self, entries: Vec<Entry>) -> Option<tokio::task::JoinHandle<()>> {
        if entries.is_empty() {
            return None;
        }
        let removals = self.removals.clone();
        removals.running.fetch_add(1, Relaxed);
        // In the span of whatever asked (an invocation's, for a container that broke).
        let work = async move {
            remove_all(entries).await;
            removals.running.fetch_sub(1, Relaxed);
            removals.done.notify_waiters();
        };
        Some(tokio::spawn(work.in_current_span()))
    }

    /// Removes containers and waits for it; a caller dropped midway leaves the removal
    /// running.
    async fn remove(&self, entries: Vec<Entry>) {
        if let Some(h) = self.spawn_removals(entries) {
            let _ = h.await;
        }
    }
}

/// Takes the idle containers matching `pick` out of the idle set.
fn take_idle(s: &mut State, pick: impl Fn(&Entry) -> bool) -> Vec<Entry> {
    let mut taken = Vec::new();
    for list in s.idle.values_mut() {
        let mut i = 0;
        while i < list.len() {
            if pick(&list[i]) { taken.push(list.remove(i)) } else { i += 1 }
        }
    }
    s.idle.retain(|_, v| !v.is_empty());
    s.idle_count -= taken.len();
    s.idle_mb -= taken.iter().map(|e| e.memory_mb).sum::<u64>();
    taken
}

/// Removes containers, each in a task of its own: they go in parallel (as far as the
/// backend allows), and a caller that is dropped midway cannot orphan any of them (a
/// dropped `JoinHandle` detaches its task).
async fn remove_all(entries: Vec<Entry>) {
    let removals: Vec<_> = entries
        .into_iter()
        .map(|e| {
            let span = tracing::debug_span!("remove", backend = e.backend.name(), container = e.handle.id());
            let work = async move {
                let id = e.handle.id().to_string();
                if let Err(error) = e.backend.remove(e.handle).await {
                    tracing::warn!(container = id, %error, "removing a container failed");
                }
            };
            tokio::spawn(work.instrument(span))
        })
        .collect();
    for r in removals {
        let _ = r.await;
    }
}
