//! Health checks: each worker is checked on its own task, at most one check of a worker at a
//! time, every call under its deadline, so that a worker that accepts connections and never
//! answers cannot delay the checks (or the service) of the others. A worker coming (back)
//! into service is first sent every registration; one in service is sent those it has not
//! answered yet.

use crate::api::{ControllerApi, within};
use crate::cluster::{Checking, StatusFigures, WorkerHandle};
use crate::register::{Delivery, deliver};
use iluvatar_rpc as rpc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl ControllerApi {
    /// Sends a worker every registration in the function table it has not answered yet;
    /// false if one could not be delivered (the worker is then not fit for service).
    async fn sync(&self, w: &Arc<WorkerHandle>) -> bool {
        let missing: Vec<(String, rpc::RegisterRequest)> = {
            let functions = self.functions.read().unwrap();
            functions.iter().filter(|(fqdn, _)| !w.answered(fqdn)).map(|(f, r)| (f.clone(), r.clone())).collect()
        };
        for (fqdn, r) in missing {
            match deliver(w.clone(), fqdn.clone(), r, self.control_timeout()).await {
                Delivery::Accepted => {}
                Delivery::Refused(why) => tracing::warn!(worker = %w.name, fqdn, why,
                    "worker refused a registration: it gets no invocation of that function"),
                Delivery::Undelivered(why) => {
                    tracing::warn!(worker = %w.name, fqdn, why, "cannot sync registrations");
                    return false;
                }
            }
        }
        true
    }

    /// One health check of `w`, unless one is already running.
    pub async fn check(&self, w: &Arc<WorkerHandle>) {
        if let Some(checking) = w.begin_check() {
            self.check_held(w, checking).await;
        }
    }

    /// One health check: health, then status; a worker coming (back) into service is synced
    /// from scratch first, one in service gets the registrations it lacks.
    async fn check_held(&self, w: &Arc<WorkerHandle>, _checking: Checking) {
        let timeout = self.health_timeout();
        let tid = || "health".to_string();
        let health = within(timeout, w.client().health(rpc::HealthRequest { transaction_id: tid() })).await;
        let healthy = matches!(&health, Ok(r) if r.status == rpc::RpcHealthStatus::Healthy as i32);
        if healthy {
            w.first_check();
        }
        if !healthy {
            // A worker that never answered (e.g. it refuses the controller's token) says why
            // once, although its health did not change.
            if w.set_healthy(false) | w.first_check() {
                let why = match health {
                    Ok(_) => "it reports itself unhealthy".to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(worker = %w.name, address = w.address, why, "worker out of service");
            }
            return;
        }
        // Started first: one that starts between the two reads is then counted (twice at
        // worst, which only hides load), never missed.
        let started_before = w.forwarded.load(Ordering::SeqCst);
        let inflight_before = w.inflight();
        if let Ok(s) =
            within(timeout, w.client().status(rpc::StatusRequest { transaction_id: tid(), functions: false })).await
        {
            // Keep only the load that is not this controller's own in-flight invocations:
            // those are counted exactly, and a status taken while one of them ran would
            // otherwise count it again until the next poll (and push CH off its home). Those
            // that may have run while the worker answered are the ones in flight when it was
            // asked plus those started since; one that ended before the answer came back is
            // among them, so it is never counted twice.
            let started = w.forwarded.load(Ordering::SeqCst).saturating_sub(started_before);
            let mine = inflight_before + started;
            let running = s.num_running_funcs as u64;
            w.set_status(StatusFigures {
                queued: s.cpu_queue_len.saturating_sub(mine.saturating_sub(running)),
                running: running.saturating_sub(mine),
                load_avg: s.cpu_load_avg,
                cpu_pct: s.cpu_util,
                mem_pct: s.used_mem_pct,
            });
        }
        let joining = !w.is_healthy();
        if joining {
            // It may have restarted and lost its registrations: send it every one again.
            w.forget_registrations();
        }
        if !self.sync(w).await {
            if w.set_healthy(false) {
                tracing::warn!(worker = %w.name, address = w.address, "worker out of service: registrations not delivered");
            }
            return;
        }
        if joining && w.set_healthy(true) {
            tracing::info!(worker = %w.name, address = w.address, "worker in service");
            // A registration stored while the sync ran was not in its list, and its fan-out
            // did not count this worker yet.
            self.sync(w).await;
        }
    }

    /// Checks every worker every `health.interval_ms`, forever; each check runs on its own
    /// task, and a worker whose previous check still runs is skipped this round.
    pub fn spawn_health_checks(self: &Arc<Self>) {
        let api = self.clone();
        let every = Duration::from_millis(self.config.health.interval_ms);
        tokio::spawn(async move {
            loop {
                for w in api.cluster.snapshot().workers.iter() {
                    if let Some(checking) = w.begin_check() {
                        let (api, w) = (api.clone(), w.clone());
                        tokio::spawn(async move { api.check_held(&w, checking).await });
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
    }
}
