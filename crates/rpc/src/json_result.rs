//! The format of `InvokeResponse.json_result`: a JSON object in a string, written by the
//! worker, annotated by the controller and read by the load generator and the CLI. This
//! module is the one place that writes, annotates and parses it.
//!
//! It takes one of three forms:
//! - a result: `{"body":<the function's value>,"start":<Unix s>,"end":<Unix s>,
//!   "was_cold":<bool>,"timings":{"queue_us":..,"acquire_us":..,"cold_start_us":..,
//!   "container_us":..,"function_us":..,"total_us":..}}`, `start` and `end` being the
//!   in-function times with six decimals, `timings` last and flat ([`success`]);
//! - an error: `{"Error":<message>,"kind":<kind>}`, with the worker's `timings` and the
//!   function's `function_error` when the function ran and raised ([`error`]);
//! - an async invocation still running: `{"Pending":<message>}` ([`pending`]).
//!
//! A controller adds `"worker":<name>` at the top level and, for invocations it timed,
//! `controller_us` (its own time) and `worker_rpc_us` (the call to the worker) inside
//! `timings` ([`annotate`]). [`parse`] reads every form into a [`View`].

use iluvatar_core::Timings;
use serde::Deserialize;
use serde_json::{Value, json};

/// A function's result `body` (valid JSON) with its in-function start and end (Unix
/// microseconds), whether its container was cold, and the worker's timings. Written
/// directly: this runs for every invocation, and integer formatting is several times
/// cheaper than floats and serde.
pub fn success(body: &str, start_unix_us: u64, end_unix_us: u64, was_cold: bool, t: &Timings) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(body.len() + 200);
    let _ = write!(
        s,
        r#"{{"body":{body},"start":{}.{:06},"end":{}.{:06},"was_cold":{},"timings":{{"queue_us":{},"acquire_us":{},"cold_start_us":{},"container_us":{},"function_us":{},"total_us":{}}}}}"#,
        start_unix_us / 1_000_000,
        start_unix_us % 1_000_000,
        end_unix_us / 1_000_000,
        end_unix_us % 1_000_000,
        was_cold,
        t.queue_us,
        t.acquire_us,
        t.cold_start_us,
        t.container_us,
        t.function_us,
        t.total_us,
    );
    s
}

/// An error of `kind` (a stable snake_case name) with a readable `message`; with the
/// worker's `timings` and the error the function raised, when it ran.
pub fn error(kind: &str, message: &str, timings: Option<&Timings>, function_error: Option<Value>) -> String {
    let mut body = json!({"Error": message, "kind": kind});
    if let Some(t) = timings {
        body["timings"] = json!(t);
    }
    if let Some(fe) = function_error {
        body["function_error"] = fe;
    }
    body.to_string()
}

/// An async invocation that has not finished yet.
pub fn pending(message: &str) -> String {
    json!({ "Pending": message }).to_string()
}

/// Adds the worker's name and the controller's timings (`(controller_us, worker_rpc_us)`)
/// to a worker's result without parsing it: `"worker"` at the top level, and the timings
/// inside `"timings"`, which the worker writes last and flat. Anything that is not a JSON
/// object is left as it is.
pub fn annotate(json: &mut String, worker: &str, timings: Option<(u64, u64)>) {
    if !json.ends_with('}') {
        return;
    }
    if let Some((controller_us, worker_rpc_us)) = timings {
        let fields = format!("\"controller_us\":{controller_us},\"worker_rpc_us\":{worker_rpc_us}");
        match json.rfind("\"timings\":{").and_then(|at| json[at..].find('}').map(|end| at + end)) {
            Some(end) if json[..end].ends_with('{') => json.insert_str(end, &fields),
            Some(end) => json.insert_str(end, &format!(",{fields}")),
            None => json.insert_str(json.len() - 1, &format!(",\"timings\":{{{fields}}}")),
        }
    }
    let name = serde_json::to_string(worker).unwrap_or_default();
    json.insert_str(json.len() - 1, &format!(",\"worker\":{name}"));
}

/// A `json_result` as read: every field of every form, each optional (the body is
/// skipped). Numbers are read as floats, so that a worker writing them as such is read too.
#[derive(Debug, Default, Deserialize)]
pub struct View {
    /// In-function start and end, Unix seconds.
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub was_cold: Option<bool>,
    pub timings: Option<TimingsView>,
    pub kind: Option<String>,
    #[serde(rename = "Error")]
    pub error: Option<String>,
    #[serde(rename = "Pending")]
    pub pending: Option<String>,
    /// Added by a controller.
    pub worker: Option<String>,
}

/// The `timings` of a result or an error, in microseconds.
#[derive(Debug, Default, Deserialize)]
pub struct TimingsView {
    pub queue_us: Option<f64>,
    pub acquire_us: Option<f64>,
    pub cold_start_us: Option<f64>,
    pub container_us: Option<f64>,
    pub function_us: Option<f64>,
    pub total_us: Option<f64>,
    /// Added by a controller.
    pub controller_us: Option<f64>,
    pub worker_rpc_us: Option<f64>,
}

/// Reads a `json_result`; `None` if it is not a JSON object of the format (a foreign
/// worker's free text, say).
pub fn parse(json: &str) -> Option<View> {
    serde_json::from_str(json).ok()
}

impl View {
    /// The in-function time and the worker's total, in microseconds, when both are there.
    pub fn function_and_total_us(&self) -> Option<(u64, u64)> {
        let t = self.timings.as_ref()?;
        Some((t.function_us? as u64, t.total_us? as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings() -> Timings {
        Timings { queue_us: 1, acquire_us: 2, cold_start_us: 3, container_us: 4, function_us: 5, total_us: 6 }
    }

    #[test]
    fn a_result_round_trips_through_the_controller() {
        let mut s = success(r#"{"x":[1,"}"]}"#, 10_000_005, 12_500_000, true, &timings());
        assert_eq!(
            s,
            r#"{"body":{"x":[1,"}"]},"start":10.000005,"end":12.500000,"was_cold":true,"timings":{"queue_us":1,"acquire_us":2,"cold_start_us":3,"container_us":4,"function_us":5,"total_us":6}}"#
        );
        let v = parse(&s).unwrap();
        assert_eq!((v.start, v.end, v.was_cold), (Some(10.000005), Some(12.5), Some(true)));
        assert_eq!(v.function_and_total_us(), Some((5, 6)));
        assert!(v.worker.is_none() && v.error.is_none() && v.pending.is_none());
        annotate(&mut s, "w\"1", Some((42, 100)));
        let v = parse(&s).unwrap();
        let t = v.timings.as_ref().unwrap();
        assert_eq!(
            (t.queue_us, t.acquire_us, t.cold_start_us, t.container_us),
            (Some(1.), Some(2.), Some(3.), Some(4.))
        );
        assert_eq!((t.controller_us, t.worker_rpc_us), (Some(42.), Some(100.)));
        assert_eq!(v.worker.as_deref(), Some("w\"1"));
        assert_eq!(v.function_and_total_us(), Some((5, 6)));
        let body: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(body["body"]["x"][1], "}");
    }

    #[test]
    fn errors_and_pending_round_trip() {
        let s = error("no_worker", "no healthy \"worker\"", None, None);
        assert_eq!(s, r#"{"Error":"no healthy \"worker\"","kind":"no_worker"}"#);
        let v = parse(&s).unwrap();
        assert_eq!((v.kind.as_deref(), v.error.as_deref()), (Some("no_worker"), Some("no healthy \"worker\"")));
        assert!(v.timings.is_none());
        let s = error("function_error", "raised", Some(&timings()), Some(json!({"kind": "ValueError"})));
        let v = parse(&s).unwrap();
        assert_eq!(v.timings.as_ref().and_then(|t| t.container_us), Some(4.));
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap()["function_error"]["kind"], "ValueError");
        let mut s = pending("invocation c1 is still running");
        assert_eq!(s, r#"{"Pending":"invocation c1 is still running"}"#);
        annotate(&mut s, "w2", None);
        let v = parse(&s).unwrap();
        assert_eq!((v.pending.as_deref(), v.worker.as_deref()), (Some("invocation c1 is still running"), Some("w2")));
        assert!(parse("not json").is_none());
        let mut text = "free text".to_string();
        annotate(&mut text, "w", Some((1, 2)));
        assert_eq!(text, "free text");
    }

    #[test]
    fn annotate_keeps_the_json_valid() {
        let cases = [
            r#"{"body":{"timings":{"x":1}},"start":1.0,"timings":{"queue_us":3,"total_us":9}}"#,
            r#"{"Error":"x","kind":"timeout","timings":{}}"#,
            r#"{"Error":"x","kind":"timeout"}"#,
        ];
        for c in cases {
            let mut s = c.to_string();
            annotate(&mut s, "w\"1", Some((5, 40)));
            let v: Value = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(v["timings"]["controller_us"], 5, "{s}");
            assert_eq!(v["timings"]["worker_rpc_us"], 40, "{s}");
            assert_eq!(v["worker"], "w\"1", "{s}");
        }
        let mut s = r#"{"body":1,"timings":{"queue_us":3}}"#.to_string();
        annotate(&mut s, "w", Some((1, 2)));
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["timings"]["queue_us"], 3);
    }
}
