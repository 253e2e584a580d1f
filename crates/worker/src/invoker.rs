//! The invoker: a queue (policy behind a trait) in front of a dispatcher bounded by a
//! concurrency limit. Each invocation runs in its own task, detached from the request that
//! asked for it, so a client that goes away cannot leave a container or a slot behind.

use crate::characteristics::Characteristics;
use crate::isolation::{CallRequest, FunctionError, IsolationError};
use crate::metrics::Metrics;
use crate::pool::{Acquire, ContainerPool, PoolError};
use iluvatar_core::policy::{QueueConfig, QueueItem, QueuePolicy};
use iluvatar_core::{ContainerState, Env, FunctionSpec, Timings};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot, watch};
use tracing::Instrument;

/// A finished invocation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The function's JSON result, or the error it raised.
    pub output: Result<String, FunctionError>,
    pub state: ContainerState,
    pub timings: Timings,
    pub start_unix_us: u64,
    pub end_unix_us: u64,
}

/// Why an invocation produced no result.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("{fqdn} ran past the invocation timeout of {timeout_ms} ms; its container was removed")]
    Timeout { fqdn: String, timeout_ms: u64 },
    #[error("{fqdn}: {source}")]
    Container { fqdn: String, source: IsolationError },
    #[error("the worker is shutting down; invocation of {fqdn} was not completed")]
    ShuttingDown { fqdn: String },
    #[error("the invocation queue is full ({max_queued} waiting); {fqdn} was not queued, try again later")]
    QueueFull { fqdn: String, max_queued: usize },
}

impl InvokeError {
    /// A short machine-readable name for the error.
    pub fn kind(&self) -> &'static str {
        match self {
            InvokeError::Pool(PoolError::NoMemory { .. }) => "no_memory",
            InvokeError::Pool(PoolError::Start { .. }) => "cold_start_failed",
            InvokeError::Pool(PoolError::NoBackend { .. }) => "no_backend",
            InvokeError::Pool(PoolError::Closed) | InvokeError::ShuttingDown { .. } => "shutting_down",
            InvokeError::Timeout { .. } => "timeout",
            InvokeError::QueueFull { .. } => "queue_full",
            InvokeError::Container { source: IsolationError::OutOfMemory { .. }, .. } => "out_of_memory",
            InvokeError::Container { .. } => "container_failed",
        }
    }
}

struct Job {
    spec: Arc<FunctionSpec>,
    fqdn: Arc<str>,
    args: String,
    tid: String,
    arrival: Duration,
    reply: oneshot::Sender<Result<Outcome, InvokeError>>,
    /// The job's span (a child of the caller's, which carries the tid): the task that runs
    /// the job may be another invocation's.
    span: tracing::Span,
}

/// Work run inside the future that awaits it, which must not stop midway (it holds a slot
/// and maybe a container): dropped before it is done, it goes on in a task of its own.
struct DetachOnDrop(Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>);

impl std::future::Future for DetachOnDrop {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let Some(work) = self.0.as_mut() else { return std::task::Poll::Ready(()) };
        let done = work.as_mut().poll(cx);
        if done.is_ready() {
            self.0 = None;
        }
        done
    }
}

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if let Some(work) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(work);
        }
    }
}

struct QueueState {
    queue: Box<dyn QueuePolicy<Job>>,
    running: usize,
    closed: bool,
}

pub struct InvokerSettings {
    pub concurrency: usize,
    pub queue: QueueConfig,
    pub timeout: Duration,
    /// Jobs waiting in the queue at most.
    pub max_queued: usize,
}

pub struct Invoker {
    pool: Arc<ContainerPool>,
    env: Env,
    metrics: Arc<Metrics>,
    concurrency: usize,
    timeout: Duration,
    max_queued: usize,
    state: Mutex<QueueState>,
    /// What is known of each function: for estimates, queue policies, status and metrics.
    characteristics: Characteristics,
    /// Set after the shutdown grace: running invocations fail at once.
    abort: watch::Sender<bool>,
    /// Signalled when the last running invocation finishes.
    drained: Notify,
}

impl Invoker {
    pub fn new(settings: InvokerSettings, pool: Arc<ContainerPool>, env: Env, metrics: Arc<Metrics>) -> Arc<Self> {
        let state = QueueState { queue: settings.queue.build(), running: 0, closed: false };
        Arc::new(Invoker {
            pool,
            env,
            metrics,
            concurrency: settings.concurrency.max(1),
            timeout: settings.timeout,
            max_queued: settings.max_queued,
            state: Mutex::new(state),
            characteristics: Characteristics::default(),
            abort: watch::channel(false).0,
            drained: Notify::new(),
        })
    }

    /// The per-function characteristics map.
    pub fn characteristics(&self) -> &Characteristics {
        &self.characteristics
    }

    /// (queue length, running invocations).
    pub fn load(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        (s.queue.len(), s.running)
    }

    /// Runs `spec` with `args` (a JSON object) and waits for its outcome.
    pub async fn invoke(
        self: &Arc<Self>,
        spec: Arc<FunctionSpec>,
        args: String,
        tid: String,
    ) -> Result<Outcome, InvokeError> {
        let (reply, outcome) = oneshot::channel();
        let fqdn: Arc<str> = spec.fqdn().0.into();
        let name = fqdn.clone();
        let span = tracing::debug_span!("queue", fqdn = %fqdn);
        let arrival = self.env.now();
        let iat = self.characteristics.note_arrival(&fqdn, spec.memory_mb, arrival);
        let job = Job { spec, fqdn: fqdn.clone(), args, tid, arrival, reply, span };
        let now = {
            let mut s = self.state.lock().unwrap();
            if s.closed {
                return Err(InvokeError::ShuttingDown { fqdn: fqdn.to_string() });
            }
            if s.queue.is_empty() && s.running < self.concurrency {
                s.running += 1;
                if s.running == 1 {
                    Some(job)
                } else {
                    // Others run: a task of its own runs in parallel with theirs.
                    tokio::spawn(self.clone().run_chain(job));
                    None
                }
            } else {
                if s.queue.len() >= self.max_queued {
                    drop(s);
                    self.metrics.invocations_failed.fetch_add(1, Relaxed);
                    return Err(InvokeError::QueueFull { fqdn: fqdn.to_string(), max_queued: self.max_queued });
                }
                let cold = !self.pool.has_idle(&fqdn);
                let est_duration = self.estimate_exec(&job.spec, &fqdn, cold);
                s.queue.push(QueueItem { fqdn, arrival, est_duration, cold, iat, payload: job });
                None
            }
        };
        if let Some(job) = now {
            // Alone, it runs in the caller's task: a task spawned for it would be one more hop
            // between tasks, which past tokio's three LIFO polls per tick sends the request's
            // tasks to the other worker thread (a cross-thread wake-up per invocation).
            // Detached if the caller is dropped midway.
            DetachOnDrop(Some(Box::pin(self.clone().run_first(job)))).await;
        }
        outcome.await.unwrap_or_else(|_| Err(InvokeError::ShuttingDown { fqdn: name.to_string() }))
    }

    /// Runs a job that took a free slot, then hands the slot to a task of its own if jobs
    /// queued meanwhile (the caller's answer does not wait for theirs).
    async fn run_first(self: Arc<Self>, job: Job) {
        if let Some(next) = self.run_one(job).await {
            tokio::spawn(self.run_chain(next));
        }
    }

    /// Runs a job, then keeps taking jobs from the queue while there are any; the slot is
    /// given back when the queue is empty.
    async fn run_chain(self: Arc<Self>, mut job: Job) {
        while let Some(next) = self.run_one(job).await {
            job = next;
        }
    }

    /// Runs a job and answers it; returns the next queued job, which keeps the slot, or
    /// gives the slot back.
    async fn run_one(&self, job: Job) -> Option<Job> {
        let result = self.execute(&job).instrument(job.span.clone()).await;
        job.span.in_scope(|| self.record(&job, &result));
        let _ = job.reply.send(result);
        let mut s = self.state.lock().unwrap();
        let next = s.queue.pop();
        if next.is_none() {
            s.running -= 1;
            if s.running == 0 {
                self.drained.notify_waiters();
            }
        }
        next.map(|item| item.payload)
    }

    async fn execute(&self, job: &Job) -> Result<Outcome, InvokeError> {
        let fqdn = || job.fqdn.to_string();
        let mut abort = self.abort.subscribe();
        if *abort.borrow() {
            return Err(InvokeError::ShuttingDown { fqdn: fqdn() });
        }
        let dequeued = self.env.now();
        let lease = self.pool.acquire_for(&job.spec, &job.fqdn, &job.tid, Acquire::Invoke).await?;
        let acquired = self.env.now();
        let span = tracing::debug_span!("call", container = lease.container().id());
        let call = lease.container().call(CallRequest { args: &job.args, tid: &job.tid }).instrument(span);
        let call = tokio::time::timeout(self.timeout, call);
        let result = tokio::select! {
            r = call => Some(r),
            _ = abort.wait_for(|a| *a) => None,
        };
        let Some(result) = result else {
            self.pool.release(lease, false);
            return Err(InvokeError::ShuttingDown { fqdn: fqdn() });
        };
        let done = self.env.now();
        let call = match result {
            Ok(Ok(call)) => {
                let state = lease.state;
                let cold_start = lease.cold_start;
                self.pool.release(lease, true);
                (call, state, cold_start)
            }
            Ok(Err(source)) => {
                self.pool.release(lease, false);
                return Err(InvokeError::Container { fqdn: fqdn(), source });
            }
            Err(_) => {
                self.pool.release(lease, false);
                return Err(InvokeError::Timeout { fqdn: fqdn(), timeout_ms: self.timeout.as_millis() as u64 });
            }
        };
        let (call, state, cold_start) = call;
        let us = |d: Duration| d.as_micros() as u64;
        let timings = Timings {
            queue_us: us(dequeued.saturating_sub(job.arrival)),
            acquire_us: us(acquired - dequeued),
            cold_start_us: cold_start.map(us).unwrap_or(0),
            container_us: us(done - acquired),
            function_us: call.end_unix_us.saturating_sub(call.start_unix_us),
            total_us: us(done.saturating_sub(job.arrival)),
        };
        Ok(Outcome {
            output: call.output,
            state,
            timings,
            start_unix_us: call.start_unix_us,
            end_unix_us: call.end_unix_us,
        })
    }

    fn record(&self, job: &Job, result: &Result<Outcome, InvokeError>) {
        let total_us = match result {
            Ok(o) => o.timings.total_us,
            Err(_) => self.env.now().saturating_sub(job.arrival).as_micros() as u64,
        };
        self.metrics.latency.observe_us(total_us);
        match result {
            Ok(o) => {
                self.metrics.invocations_ok.fetch_add(1, Relaxed);
                self.metrics.queue_wait.observe_us(o.timings.queue_us);
                let worker = Duration::from_micros(o.timings.acquire_us + o.timings.container_us);
                let exec = Duration::from_micros(o.timings.function_us);
                let cold = o.state == ContainerState::Cold;
                self.characteristics.record(&job.fqdn, job.spec.memory_mb, cold, worker, exec);
            }
            Err(e) => {
                self.metrics.invocations_failed.fetch_add(1, Relaxed);
                tracing::info!(tid = job.tid, fqdn = %job.spec.fqdn(), error = %e, "invocation failed");
            }
        }
    }

    /// Expected execution time of a function: warm if an idle container waits, cold if
    /// not. Learnt from past invocations (the other kind when this one has not been seen),
    /// else from the registration's timings, else zero: a function never run is not taken
    /// for the shortest.
    fn estimate_exec(&self, spec: &FunctionSpec, fqdn: &str, cold: bool) -> Duration {
        let (learnt_cold, learnt_warm) = self.characteristics.times(fqdn);
        let (own, other) = if cold { (learnt_cold, learnt_warm) } else { (learnt_warm, learnt_cold) };
        // A cold start not seen yet takes at least a warm call; a warm call is not taken
        // for a cold start's length while the registration says better.
        if let Some(own) = own {
            return own;
        }
        if cold && let Some(warm) = other {
            return warm;
        }
        match spec.timings() {
            Ok(Some(t)) => Duration::from_secs_f64((if cold { t.cold_ms } else { t.warm_ms }).max(0.0) / 1000.0),
            _ => other.unwrap_or_default(),
        }
    }

    /// Estimated end-to-end time of invoking `spec` now: the queue ahead spread over the
    /// concurrency slots, plus its own execution.
    pub fn estimate(&self, spec: &FunctionSpec) -> Duration {
        let fqdn = spec.fqdn().0;
        let own = self.estimate_exec(spec, &fqdn, !self.pool.has_idle(&fqdn));
        let (queued, _) = self.load();
        let avg = self.characteristics.mean_longest().as_micros() as f64;
        own + Duration::from_micros((queued as f64 * avg / self.concurrency as f64) as u64)
    }

    /// Stops taking invocations, lets those queued or running finish within `grace`, then
    /// fails the rest with a clear error.
    pub async fn shutdown(&self, grace: Duration) {
        self.state.lock().unwrap().closed = true;
        if !self.wait_drained(grace).await {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown grace over; failing in-flight invocations");
            self.abort.send_replace(true);
            let waiting = self.state.lock().unwrap().queue.drain();
            for item in waiting {
                let fqdn = item.payload.spec.fqdn().0;
                let _ = item.payload.reply.send(Err(InvokeError::ShuttingDown { fqdn }));
            }
            self.wait_drained(Duration::from_secs(5)).await;
        }
    }

    async fn wait_drained(&self, within: Duration) -> bool {
        let deadline = self.env.now() + within;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.state.lock().unwrap().running == 0 {
                return true;
            }
            let Some(left) = deadline.checked_sub(self.env.now()) else { return false };
            if tokio::time::timeout(left, drained).await.is_err() {
                return self.state.lock().unwrap().running == 0;
            }
        }
    }
}
