//! Rows: one per invocation, as invocations.csv holds it, made from an outcome and its
//! result's JSON; and the compact sample a run keeps of each.

use super::{Outcome, State, Timed};
use crate::workload::csv::field;
use iluvatar_rpc as rpc;
use std::fmt::Write as _;

/// One invocation, as written to invocations.csv.
pub struct Row {
    pub func: usize,
    /// The invocation's index in the run; its transaction id is `{prefix}-{index}`.
    pub index: usize,
    pub scheduled_ms: f64,
    pub sent_ms: f64,
    pub done_ms: f64,
    pub worker_duration_ms: Option<f64>,
    pub func_start_ms: Option<f64>,
    pub func_end_ms: Option<f64>,
    pub func_duration_ms: Option<f64>,
    pub state: &'static str,
    pub queue_ms: Option<f64>,
    pub cold_start_ms: Option<f64>,
    pub success: bool,
    pub error: String,
    /// The worker that ran it, when a controller (live or simulated) names it.
    pub worker: Option<String>,
    /// The controller's own time (`timings.controller_us`) and its call to the worker
    /// (`timings.worker_rpc_us`), for runs through a live controller.
    pub controller_ms: Option<f64>,
    pub worker_rpc_ms: Option<f64>,
}

/// No worker named (a [`Sample`]'s `worker`).
pub const NO_WORKER: u16 = u16::MAX;

/// What the summary and the plots need of a row: numbers only (48 bytes).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub func: u32,
    /// Index into [`Recorded::workers`], or [`NO_WORKER`].
    pub worker: u16,
    /// Index into [`Recorded::error_kinds`] for a failed invocation, or [`NO_ERROR`].
    pub error: u16,
    pub state: State,
    pub success: bool,
    pub scheduled_ms: f64,
    pub sent_ms: f64,
    pub done_ms: f64,
    /// Microseconds as the worker reports them ([`UNKNOWN_US`] when it did not).
    func_us: u32,
    cold_start_us: u32,
    queue_us: u32,
}

/// No error (a [`Sample`]'s `error`).
pub const NO_ERROR: u16 = u16::MAX;

/// A duration the result did not report.
const UNKNOWN_US: u32 = u32::MAX;

fn to_us(ms: Option<f64>) -> u32 {
    match ms {
        Some(ms) if ms.is_finite() && ms >= 0.0 => (ms * 1e3).round().min((UNKNOWN_US - 1) as f64) as u32,
        _ => UNKNOWN_US,
    }
}

fn to_ms(us: u32) -> Option<f64> {
    (us != UNKNOWN_US).then(|| us as f64 / 1e3)
}

impl Row {
    pub(crate) fn sample(&self, state: State, worker: u16) -> Sample {
        Sample {
            func: self.func as u32,
            worker,
            error: NO_ERROR,
            state,
            success: self.success,
            scheduled_ms: self.scheduled_ms,
            sent_ms: self.sent_ms,
            done_ms: self.done_ms,
            func_us: to_us(self.func_duration_ms),
            cold_start_us: to_us(self.cold_start_ms),
            queue_us: to_us(self.queue_ms),
        }
    }
}

impl Timed for Row {
    fn times_ms(&self) -> [f64; 3] {
        [self.scheduled_ms, self.sent_ms, self.done_ms]
    }
    fn func_duration_ms(&self) -> Option<f64> {
        self.func_duration_ms
    }
    fn queue_ms(&self) -> Option<f64> {
        self.queue_ms
    }
    fn cold_start_ms(&self) -> Option<f64> {
        self.cold_start_ms
    }
}

impl Timed for Sample {
    fn times_ms(&self) -> [f64; 3] {
        [self.scheduled_ms, self.sent_ms, self.done_ms]
    }
    fn func_duration_ms(&self) -> Option<f64> {
        to_ms(self.func_us)
    }
    fn queue_ms(&self) -> Option<f64> {
        to_ms(self.queue_us)
    }
    fn cold_start_ms(&self) -> Option<f64> {
        to_ms(self.cold_start_us)
    }
}

pub const CSV_HEADER: &str = "function,version,transaction_id,scheduled_ms,sent_ms,lateness_ms,client_latency_ms,\
latency_from_schedule_ms,worker_duration_ms,func_start_ms,func_end_ms,func_duration_ms,container_state,queue_ms,\
cold_start_ms,overhead_ms,success,error,worker,controller_ms,worker_rpc_ms\n";

/// Turns one raw outcome into a row; `start_unix_s` is the Unix time of the run's zero.
pub fn row(i: usize, o: Outcome, start_unix_s: f64) -> (Row, State) {
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut row = Row {
        func: o.func,
        index: i,
        scheduled_ms: ms(o.scheduled_ns),
        sent_ms: ms(o.sent_ns),
        done_ms: ms(o.done_ns),
        worker_duration_ms: None,
        func_start_ms: None,
        func_end_ms: None,
        func_duration_ms: None,
        state: "error",
        queue_ms: None,
        cold_start_ms: None,
        success: false,
        error: String::new(),
        worker: None,
        controller_ms: None,
        worker_rpc_ms: None,
    };
    let mut state = State::Error;
    match o.response {
        Err(e) => row.error = e,
        Ok(r) => {
            let v = rpc::json_result::parse(&r.json_result);
            row.success = r.success;
            state = State::of(r.container_state);
            row.state = state.name();
            row.worker_duration_ms = (r.duration_us > 0).then(|| r.duration_us as f64 / 1e3);
            let mut v = v;
            if let Some(v) = v.as_mut() {
                row.worker = v.worker.take();
                if let Some(t) = &v.timings {
                    row.controller_ms = t.controller_us.map(|t| t / 1e3);
                    row.worker_rpc_ms = t.worker_rpc_us.map(|t| t / 1e3);
                }
            }
            match (r.success, v) {
                (true, Some(v)) => {
                    let rel = |t: Option<f64>| t.map(|t| (t - start_unix_s) * 1e3);
                    let us = |t: Option<f64>| t.map(|t| t / 1e3);
                    row.func_start_ms = rel(v.start);
                    row.func_end_ms = rel(v.end);
                    if let Some(t) = v.timings {
                        row.func_duration_ms = us(t.function_us);
                        row.queue_ms = us(t.queue_us);
                        row.cold_start_ms = us(t.cold_start_us);
                    }
                }
                (true, None) => {}
                (false, v) => {
                    let (kind, msg) = v.map(|v| (v.kind, v.error)).unwrap_or_default();
                    let kind = kind.unwrap_or_else(|| "error".into());
                    row.error = format!("{kind}: {}", msg.unwrap_or(r.json_result));
                }
            }
        }
    }
    (row, state)
}

/// `x` with three decimals, as `{:.3}` writes it (but without the float formatting
/// machinery, which dominated the cost of writing rows).
fn fixed3(s: &mut String, x: f64) {
    let m = (x * 1000.0).round();
    if m.is_nan() || m.abs() >= 9e15 {
        let _ = write!(s, "{x:.3}");
        return;
    }
    let m = m as i64;
    if m < 0 {
        s.push('-');
    }
    let a = m.unsigned_abs();
    push_u64(s, a / 1000);
    let f = a % 1000;
    s.push('.');
    for d in [f / 100, f / 10 % 10, f % 10] {
        s.push((b'0' + d as u8) as char);
    }
}

/// Appends `n` in decimal (without the formatting machinery: rows are written by millions).
pub fn push_u64(s: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.push_str(std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
}

fn opt(s: &mut String, x: Option<f64>) {
    if let Some(v) = x {
        fixed3(s, v);
    }
}

/// Appends a row of invocations.csv to `s`; `function` is the row's function name.
pub fn format_row(s: &mut String, r: &Row, function: &str, version: &str, tid_prefix: &str) {
    s.push_str(&field(function));
    s.push(',');
    s.push_str(&field(version));
    s.push(',');
    s.push_str(&field(tid_prefix));
    s.push('-');
    push_u64(s, r.index as u64);
    for x in [r.scheduled_ms, r.sent_ms, r.lateness_ms(), r.client_latency_ms(), r.latency_from_schedule_ms()] {
        s.push(',');
        fixed3(s, x);
    }
    s.push(',');
    for x in [r.worker_duration_ms, r.func_start_ms, r.func_end_ms, r.func_duration_ms] {
        opt(s, x);
        s.push(',');
    }
    s.push_str(r.state);
    for x in [r.queue_ms, r.cold_start_ms, r.overhead_ms()] {
        s.push(',');
        opt(s, x);
    }
    s.push_str(if r.success { ",true," } else { ",false," });
    s.push_str(&field(&r.error));
    s.push(',');
    if let Some(w) = &r.worker {
        s.push_str(&field(w));
    }
    for x in [r.controller_ms, r.worker_rpc_ms] {
        s.push(',');
        opt(s, x);
    }
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_with_three_decimals() {
        let cases = [
            (0.0, "0.000"),
            (1.5, "1.500"),
            (0.0004, "0.000"),
            (0.0005, "0.001"),
            (12.3456, "12.346"),
            (-2.05, "-2.050"),
            (1234567.891, "1234567.891"),
            (f64::NAN, "NaN"),
        ];
        for (x, want) in cases {
            let mut s = String::new();
            fixed3(&mut s, x);
            assert_eq!(s, want, "{x}");
        }
        for n in [0u64, 7, 10, 99, 1000, 18_446_744_073_709_551_615] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn a_sample_stays_small() {
        assert!(std::mem::size_of::<Sample>() <= 48);
    }

    #[test]
    fn controller_annotations_become_columns() {
        let mut json =
            r#"{"body":{},"start":10.5,"end":10.6,"timings":{"function_us":100000,"queue_us":0}}"#.to_string();
        rpc::json_result::annotate(&mut json, "w1", Some((42, 100500)));
        let response =
            rpc::InvokeResponse { json_result: json, success: true, duration_us: 100100, ..Default::default() };
        let o = Outcome { func: 0, scheduled_ns: 0, sent_ns: 0, done_ns: 101_000_000, response: Ok(response) };
        let (r, _) = row(0, o, 10.0);
        assert_eq!((r.worker.as_deref(), r.controller_ms, r.worker_rpc_ms), (Some("w1"), Some(0.042), Some(100.5)));
        let mut line = String::new();
        format_row(&mut line, &r, "f", "1", "lg");
        assert!(line.ends_with(",true,,w1,0.042,100.500\n"), "{line}");
        assert_eq!(line.split(',').count(), CSV_HEADER.split(',').count());
        let failed = rpc::InvokeResponse {
            json_result: r#"{"Error":"no healthy worker","kind":"no_worker"}"#.into(),
            ..Default::default()
        };
        let o = Outcome { func: 0, scheduled_ns: 0, sent_ns: 0, done_ns: 1, response: Ok(failed) };
        let (r, _) = row(1, o, 10.0);
        assert_eq!((r.worker, r.error.as_str()), (None, "no_worker: no healthy worker"));
    }
}
