//! Registrations and membership. A registration is sent to every worker in service, one
//! registration of a given fqdn at a time, and is a success only when each of them accepted
//! it. Each worker keeps the set of functions it accepted (cluster.rs), and no invocation
//! goes to a worker that did not accept the function. A worker name belongs to one address
//! while the worker there is alive.

use crate::api::{ControllerApi, within};
use crate::cluster::{Admission, WorkerHandle, admission};
use iluvatar_core::Fqdn;
use iluvatar_rpc as rpc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tonic::Status;

/// How one worker answered one registration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Delivery {
    Accepted,
    /// The worker's reason (e.g. it holds another spec of the fqdn, naming the difference).
    Refused(String),
    /// No answer in time, or the worker could not be reached.
    Undelivered(String),
}

/// Sends a registration to a worker under `limit` and records the worker's answer on it.
pub(crate) async fn deliver(
    w: Arc<WorkerHandle>,
    fqdn: String,
    req: rpc::RegisterRequest,
    limit: Duration,
) -> Delivery {
    match within(limit, w.client().register(req)).await {
        Ok(r) if r.success => {
            w.accepted(&fqdn);
            Delivery::Accepted
        }
        Ok(r) => {
            w.refused(&fqdn, &r.error);
            Delivery::Refused(r.error)
        }
        Err(e) => Delivery::Undelivered(e.to_string()),
    }
}

/// The answers of the workers in service to one registration, each worker named
/// `name at host:port`.
#[derive(Debug, Default)]
struct FanOut {
    accepted: Vec<String>,
    refused: Vec<(String, String)>,
}

/// What becomes of a registration after the fan-out.
#[derive(Debug, PartialEq)]
struct Verdict {
    /// Keep it in the function table and the store: a worker accepted it, or none refused
    /// it (workers out of service get it when they join).
    store: bool,
    success: bool,
    error: String,
}

/// A registration succeeds when no worker in service refused it; a refused one is kept
/// (and runs on the workers that accepted it) if any worker accepted it.
fn verdict(fqdn: &str, f: &FanOut) -> Verdict {
    if f.refused.is_empty() {
        return Verdict { store: true, success: true, error: String::new() };
    }
    let refusals: Vec<_> = f.refused.iter().map(|(w, why)| format!("worker {w} refused it: {why}")).collect();
    let outcome = if f.accepted.is_empty() {
        "no worker accepted it, so the controller did not store it".to_string()
    } else {
        format!(
            "it is stored and runs only on the workers that accepted it ({}); register a new version to run it on \
             every worker",
            f.accepted.join(", ")
        )
    };
    Verdict {
        store: !f.accepted.is_empty(),
        success: false,
        error: format!("the registration of {fqdn} was refused: {}; {outcome}", refusals.join("; ")),
    }
}

/// The fields where two registrations of one fqdn differ (the transaction id aside), in the
/// worker's words (`field: registered old, asked new`); empty when they are the same function.
fn differences(old: &rpc::RegisterRequest, new: &rpc::RegisterRequest) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return vec!["(unreadable registration)".into()];
    };
    // A reference's environment values are never shown, not even to say they differ.
    let shown = |k: &str, v: &serde_json::Value| match (k, v.as_str()) {
        ("image_name", Some(r)) => serde_json::Value::String(iluvatar_core::shown_reference(r)),
        _ => v.clone(),
    };
    old.iter()
        .filter(|(k, v)| k.as_str() != "transaction_id" && new.get(k.as_str()) != Some(v))
        .map(|(k, v)| {
            let asked = new.get(k.as_str()).map(|w| shown(k, w)).unwrap_or_default();
            format!("{k}: registered {}, asked {asked}", shown(k, v))
        })
        .collect()
}

impl ControllerApi {
    /// Sends a registration to every worker in service, then stores it. It succeeds only when
    /// none of them refused it; a refusal names the worker and its reason. A worker that does
    /// not answer in time is taken out of service (it gets the registration when it rejoins).
    /// Registrations of one fqdn run one at a time.
    pub async fn register(&self, req: rpc::RegisterRequest) -> rpc::RegisterResponse {
        self.register_outcome(req).await.0
    }

    /// A registration's answer and, when it failed, the failure's kind (for the HTTP
    /// status): `bad_request`, `conflict` (another spec of the fqdn is registered),
    /// `refused` (a worker refused it) or `internal` (the store failed).
    pub async fn register_outcome(&self, req: rpc::RegisterRequest) -> (rpc::RegisterResponse, &'static str) {
        if req.function_name.is_empty() || req.function_version.is_empty() {
            let error = "function_name and function_version must not be empty".to_string();
            return (rpc::RegisterResponse { success: false, fqdn: String::new(), error }, "bad_request");
        }
        let fqdn = Fqdn::new(&req.function_name, &req.function_version).0;
        let lock = self.registering.lock().unwrap().entry(fqdn.clone()).or_default().clone();
        let response = {
            let _one_at_a_time = lock.lock().await;
            self.register_now(&fqdn, req).await
        };
        drop(lock);
        let mut locks = self.registering.lock().unwrap();
        if locks.get(&fqdn).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&fqdn);
        }
        response
    }

    async fn register_now(&self, fqdn: &str, req: rpc::RegisterRequest) -> (rpc::RegisterResponse, &'static str) {
        let fail = |error: String, kind| (rpc::RegisterResponse { success: false, fqdn: String::new(), error }, kind);
        if let Some(old) = self.functions.read().unwrap().get(fqdn) {
            let diff = differences(old, &req);
            if !diff.is_empty() {
                let error = format!(
                    "function {fqdn} is already registered with different fields ({}); register a new version \
                     instead",
                    diff.join("; ")
                );
                return fail(error, "conflict");
            }
        }
        let members = self.cluster.snapshot();
        let targets: Vec<_> = members.workers.iter().filter(|w| w.is_healthy()).cloned().collect();
        let limit = self.control_timeout();
        let tasks: Vec<_> =
            targets.iter().map(|w| tokio::spawn(deliver(w.clone(), fqdn.to_string(), req.clone(), limit))).collect();
        let mut fan = FanOut::default();
        for (w, t) in targets.iter().zip(tasks) {
            let who = format!("{} at {}", w.name, w.address);
            match t.await.unwrap_or_else(|e| Delivery::Undelivered(format!("the call's task failed: {e}"))) {
                Delivery::Accepted => fan.accepted.push(who),
                Delivery::Refused(why) => fan.refused.push((who, why)),
                Delivery::Undelivered(why) => {
                    if w.set_healthy(false) {
                        tracing::warn!(worker = %w.name, address = w.address, fqdn, why,
                            "registration not delivered: worker out of service until it answers and is synced");
                    }
                }
            }
        }
        let v = verdict(fqdn, &fan);
        if v.store {
            if let Err(e) = self.store.put_function(fqdn, &req).await {
                return fail(e.to_string(), "internal");
            }
            self.functions.write().unwrap().insert(fqdn.to_string(), req.clone());
            self.push_to_joined(fqdn, &req).await;
        }
        if v.success {
            self.metrics.registrations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(fqdn, accepted = fan.accepted.len(), "registered");
        } else {
            tracing::warn!(fqdn, error = v.error, "registration refused");
        }
        let response = rpc::RegisterResponse {
            success: v.success,
            fqdn: if v.store { fqdn.to_string() } else { String::new() },
            error: v.error,
        };
        (response, "refused")
    }

    /// Sends a registration, now in the function table, to the workers that came into service
    /// during the fan-out (their sync may have read the table before it held this one). The
    /// health checks would send it within an interval; this makes it prompt.
    async fn push_to_joined(&self, fqdn: &str, req: &rpc::RegisterRequest) {
        let members = self.cluster.snapshot();
        let limit = self.control_timeout();
        let tasks: Vec<_> = members
            .workers
            .iter()
            .filter(|w| w.is_healthy() && !w.answered(fqdn))
            .map(|w| (w.clone(), tokio::spawn(deliver(w.clone(), fqdn.to_string(), req.clone(), limit))))
            .collect();
        for (w, t) in tasks {
            if let Ok(Delivery::Refused(why)) = t.await {
                tracing::warn!(worker = %w.name, fqdn, why, "a worker that just joined refused a registration");
            }
        }
    }

    /// Adds a worker, stores it, and brings it into service once it has every registration.
    /// The same worker registering again (same address and figures, as its heartbeat does)
    /// changes nothing. Another worker of the same name at another address is refused while
    /// the member answers; a member that does not answer is replaced.
    pub async fn register_worker(self: &Arc<Self>, req: rpc::RegisterWorkerRequest) -> Result<(), Status> {
        if req.name.is_empty() || req.host.is_empty() || req.port == 0 || req.port > u16::MAX as u32 {
            return Err(Status::invalid_argument(format!(
                "a worker needs a name, a host and a port (got name {:?}, host {:?}, port {})",
                req.name, req.host, req.port
            )));
        }
        let _one_at_a_time = self.joining.lock().await;
        let existing = self.cluster.snapshot().get(&req.name).cloned();
        match admission(existing.as_ref().map(|w| &w.info), &req) {
            Admission::Same => {
                tracing::debug!(worker = req.name, "worker registered again: already a member");
                return Ok(());
            }
            Admission::OtherAddress => {
                let old = existing.expect("a member of that name");
                let new_address = format!("{}:{}", req.host, req.port);
                let answer = within(self.health_timeout(), old.client().health(rpc::HealthRequest::default())).await;
                if answer.is_ok() {
                    return Err(Status::already_exists(format!(
                        "a worker named {:?} is already a member at {} and answers there; the worker at \
                         {new_address} needs another name (or that worker must stop first)",
                        req.name, old.address
                    )));
                }
                tracing::warn!(
                    worker = req.name,
                    old = old.address,
                    new = new_address,
                    "replacing a member that does not answer at its old address"
                );
            }
            Admission::New | Admission::Replace => {}
        }
        self.store.put_worker(&req).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let handle = self.cluster.upsert(req).map_err(Status::invalid_argument)?;
        self.metrics.worker_registrations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(worker = %handle.name, address = handle.address, "worker registered");
        let api = self.clone();
        tokio::spawn(async move { api.check(&handle).await });
        Ok(())
    }
}

impl ControllerApi {
    /// Forgets a worker: out of the membership (the balancer and the health checks no longer
    /// see it; invocations already on it finish) and out of the store, so a restarted
    /// controller does not bring it back. A worker that still runs with a heartbeat
    /// registers itself again: stop it (or drop `controller` from its config) first.
    pub async fn deregister_worker(
        &self,
        req: rpc::DeregisterWorkerRequest,
    ) -> Result<rpc::DeregisterWorkerResponse, Status> {
        let _one_at_a_time = self.joining.lock().await;
        let members = self.cluster.snapshot();
        let Some(w) = members.get(&req.name) else {
            let names: Vec<_> = members.workers.iter().map(|w| format!("{:?}", &*w.name)).collect();
            let names = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            return Err(Status::not_found(format!("no worker named {:?} is a member (members: {names})", req.name)));
        };
        self.store.remove_worker(&req.name).await.map_err(|e| Status::unavailable(e.to_string()))?;
        self.cluster.remove(&req.name);
        self.metrics.worker_deregistrations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(worker = %w.name, address = w.address, tid = req.transaction_id, "worker deregistered");
        Ok(rpc::DeregisterWorkerResponse { address: w.address.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fan(accepted: &[&str], refused: &[(&str, &str)]) -> FanOut {
        FanOut {
            accepted: accepted.iter().map(|s| s.to_string()).collect(),
            refused: refused.iter().map(|(w, why)| (w.to_string(), why.to_string())).collect(),
        }
    }

    #[test]
    fn a_registration_succeeds_only_when_no_worker_in_service_refused_it() {
        assert_eq!(
            verdict("f-1", &fan(&["w0 at a:1", "w1 at b:1"], &[])),
            Verdict { store: true, success: true, error: String::new() }
        );
        // No worker in service: stored, sent to workers as they join.
        assert!(verdict("f-1", &fan(&[], &[])).success);

        let v = verdict("f-1", &fan(&["w0 at a:1"], &[("w1 at b:1", "memory_mb: registered 32, asked 16")]));
        assert!(!v.success && v.store, "{v:?}");
        assert!(v.error.contains("worker w1 at b:1 refused it: memory_mb: registered 32, asked 16"), "{}", v.error);
        assert!(v.error.contains("runs only on the workers that accepted it (w0 at a:1)"), "{}", v.error);

        let v = verdict("f-1", &fan(&[], &[("w1 at b:1", "no")]));
        assert!(!v.success && !v.store, "{v:?}");
        assert!(v.error.contains("did not store it"), "{}", v.error);
    }

    #[test]
    fn differences_name_the_fields_and_ignore_the_transaction_id() {
        let a = rpc::RegisterRequest {
            function_name: "f".into(),
            function_version: "1".into(),
            memory: 16,
            transaction_id: "a".into(),
            ..Default::default()
        };
        let b = rpc::RegisterRequest { transaction_id: "b".into(), ..a.clone() };
        assert!(differences(&a, &b).is_empty());
        let c = rpc::RegisterRequest { memory: 32, ..a.clone() };
        assert_eq!(differences(&a, &c), ["memory: registered 16, asked 32"]);
        let d = rpc::RegisterRequest { image_name: "code:/f?KEY=old-secret".into(), ..a.clone() };
        let e = rpc::RegisterRequest { image_name: "code:/f?KEY=new-secret".into(), ..a.clone() };
        let diff = differences(&d, &e).join("; ");
        assert!(!diff.contains("secret") && diff.contains("KEY=<hidden>"), "{diff}");
    }
}
