//! The results of an open-loop run: one CSV row per invocation, a JSON summary, SVG plots
//! and a printed table. Times in rows are milliseconds from the run's time zero (the
//! trace's 0 ms); the summary carries that instant's Unix time.
//!
//! Rows are streamed: a [`Recorder`] writes each row to invocations.csv as soon as every
//! earlier invocation has answered, and keeps only a compact [`Sample`] per invocation for
//! the summary and the plots, so a run of millions of invocations holds no text in memory.

use crate::csv::field;
use crate::plots::{Chart, Series};
use crate::trace::FunctionMeta;
use iluvatar_rpc as rpc;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// What happened to one invocation; times are nanoseconds from the run's time zero.
pub struct Outcome {
    /// The function, an index into the run's metadata.
    pub func: usize,
    pub scheduled_ns: u64,
    pub sent_ns: u64,
    pub done_ns: u64,
    pub response: Result<rpc::InvokeResponse, String>,
}

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
    pub state: State,
    pub success: bool,
    pub scheduled_ms: f64,
    pub sent_ms: f64,
    pub done_ms: f64,
    /// NaN when unknown.
    func_duration_ms: f64,
    /// NaN when unknown.
    cold_start_ms: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Cold,
    Warm,
    Prewarm,
    Unhealthy,
    Error,
}

impl State {
    fn of(s: i32) -> State {
        match rpc::ContainerState::try_from(s) {
            Ok(rpc::ContainerState::Cold) => State::Cold,
            Ok(rpc::ContainerState::Warm) => State::Warm,
            Ok(rpc::ContainerState::Prewarm) => State::Prewarm,
            Ok(rpc::ContainerState::Unhealthy) => State::Unhealthy,
            _ => State::Error,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Cold => "cold",
            State::Warm => "warm",
            State::Prewarm => "prewarm",
            State::Unhealthy => "unhealthy",
            State::Error => "error",
        }
    }
}

impl Row {
    pub fn lateness_ms(&self) -> f64 {
        (self.sent_ms - self.scheduled_ms).max(0.0)
    }
    pub fn client_latency_ms(&self) -> f64 {
        self.done_ms - self.sent_ms
    }
    pub fn latency_from_schedule_ms(&self) -> f64 {
        self.done_ms - self.scheduled_ms
    }
    pub fn overhead_ms(&self) -> Option<f64> {
        self.func_duration_ms.map(|f| self.client_latency_ms() - f)
    }

    fn sample(&self, state: State, worker: u16) -> Sample {
        Sample {
            func: self.func as u32,
            worker,
            state,
            success: self.success,
            scheduled_ms: self.scheduled_ms,
            sent_ms: self.sent_ms,
            done_ms: self.done_ms,
            func_duration_ms: self.func_duration_ms.unwrap_or(f64::NAN),
            cold_start_ms: self.cold_start_ms.unwrap_or(f64::NAN),
        }
    }
}

impl Sample {
    pub fn lateness_ms(&self) -> f64 {
        (self.sent_ms - self.scheduled_ms).max(0.0)
    }
    pub fn client_latency_ms(&self) -> f64 {
        self.done_ms - self.sent_ms
    }
    pub fn latency_from_schedule_ms(&self) -> f64 {
        self.done_ms - self.scheduled_ms
    }
    pub fn overhead_ms(&self) -> Option<f64> {
        (!self.func_duration_ms.is_nan()).then(|| self.client_latency_ms() - self.func_duration_ms)
    }
    pub fn cold_start_ms(&self) -> Option<f64> {
        (!self.cold_start_ms.is_nan()).then_some(self.cold_start_ms)
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

/// Asks the kernel to back a large vector with huge pages (where transparent huge pages are
/// on "madvise"): a million-row run then takes tens of page faults instead of thousands,
/// which on a virtual machine are costly. Only a hint; the vector is returned unchanged.
pub fn huge_pages<T>(v: Vec<T>) -> Vec<T> {
    const HUGE: usize = 2 << 20;
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes >= 2 * HUGE {
        let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (v.as_ptr() as usize + bytes) & !(HUGE - 1);
        if end > start {
            // SAFETY: the range lies inside the vector's allocation; MADV_HUGEPAGE changes no
            // content and no mapping, only how the kernel may back it.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    v
}

/// What a run keeps in memory once its rows are written.
#[derive(Default)]
pub struct Recorded {
    /// One per invocation, in the arrivals' order.
    pub samples: Vec<Sample>,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The error of the earliest failed invocation.
    pub first_error: Option<String>,
    /// The workers results named, in order of first appearance ([`Sample::worker`]).
    pub workers: Vec<String>,
    /// The controller's own time per invocation (µs), where results carry it.
    pub controller_us: Vec<u32>,
}

/// Streams rows to invocations.csv in the arrivals' order, whatever order they complete in.
/// Invocations record themselves as they finish (it is shared behind a mutex, see
/// [`SharedRecorder`]), so no channel or extra task sits between them and the file.
pub struct Recorder {
    out: std::io::BufWriter<std::fs::File>,
    functions: Vec<String>,
    version: String,
    tid_prefix: String,
    start_unix_s: f64,
    /// Completed rows waiting for an earlier one; slot k is invocation `next + k`.
    waiting: VecDeque<Option<(Row, State)>>,
    next: usize,
    line: String,
    recorded: Recorded,
    worker_ids: std::collections::HashMap<String, u16>,
    /// The first write error; reported by `finish`.
    failed: Option<std::io::Error>,
}

pub type SharedRecorder = std::sync::Arc<std::sync::Mutex<Recorder>>;

impl Recorder {
    pub fn create(
        path: &Path,
        meta: &[FunctionMeta],
        version: &str,
        tid_prefix: &str,
        expected: usize,
    ) -> std::io::Result<Self> {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        out.write_all(CSV_HEADER.as_bytes())?;
        Ok(Recorder {
            out,
            functions: meta.iter().map(|f| f.name.clone()).collect(),
            version: version.into(),
            tid_prefix: tid_prefix.into(),
            start_unix_s: 0.0,
            waiting: VecDeque::new(),
            next: 0,
            line: String::with_capacity(256),
            recorded: Recorded { samples: huge_pages(Vec::with_capacity(expected)), ..Default::default() },
            worker_ids: Default::default(),
            failed: None,
        })
    }

    pub fn shared(self) -> SharedRecorder {
        std::sync::Arc::new(std::sync::Mutex::new(self))
    }

    /// Sets the Unix time (seconds) of the run's zero; in-function times are relative to it.
    pub fn set_start_unix_s(&mut self, start_unix_s: f64) {
        self.start_unix_s = start_unix_s;
    }

    /// Records invocation `i`; writes it and every following one already complete.
    pub fn record(&mut self, i: usize, o: Outcome) {
        let r = row(i, o, self.start_unix_s);
        let k = i.checked_sub(self.next).expect("each invocation is recorded once");
        if self.waiting.len() <= k {
            self.waiting.resize_with(k + 1, || None);
        }
        self.waiting[k] = Some(r);
        while let Some(Some(_)) = self.waiting.front() {
            let (row, state) = self.waiting.pop_front().flatten().expect("checked");
            self.write(row, state);
            self.next += 1;
        }
    }

    fn write(&mut self, row: Row, state: State) {
        self.line.clear();
        format_row(&mut self.line, &row, &self.functions[row.func], &self.version, &self.tid_prefix);
        if self.failed.is_none()
            && let Err(e) = self.out.write_all(self.line.as_bytes())
        {
            self.failed = Some(e);
        }
        let worker = match &row.worker {
            None => NO_WORKER,
            Some(w) => match self.worker_ids.get(w) {
                Some(&id) => id,
                None if self.recorded.workers.len() < NO_WORKER as usize => {
                    let id = self.recorded.workers.len() as u16;
                    self.recorded.workers.push(w.clone());
                    self.worker_ids.insert(w.clone(), id);
                    id
                }
                None => NO_WORKER,
            },
        };
        if let Some(c) = row.controller_ms {
            self.recorded.controller_us.push((c * 1e3).round().clamp(0.0, u32::MAX as f64) as u32);
        }
        self.recorded.samples.push(row.sample(state, worker));
        if !row.success {
            let kind = row.error.split(':').next().unwrap_or("error").to_string();
            *self.recorded.errors_by_kind.entry(kind).or_default() += 1;
            if self.recorded.first_error.is_none() {
                self.recorded.first_error = Some(row.error);
            }
        }
    }

    /// Flushes the file; every invocation must have been recorded.
    pub fn finish(mut self) -> anyhow::Result<Recorded> {
        if !self.waiting.is_empty() {
            anyhow::bail!("invocation {} never answered", self.next);
        }
        if let Some(e) = self.failed.take() {
            return Err(anyhow::Error::new(e).context("writing invocations.csv"));
        }
        self.out.flush()?;
        Ok(self.recorded)
    }

    /// Takes the recorder out of its sharing once every invocation has finished.
    pub fn unshare(shared: SharedRecorder) -> anyhow::Result<Recorded> {
        let m = std::sync::Arc::try_unwrap(shared)
            .map_err(|_| anyhow::anyhow!("an invocation still holds the recorder"))?;
        m.into_inner().map_err(|_| anyhow::anyhow!("an invocation panicked while recording"))?.finish()
    }
}

/// Exact percentiles of a sample (milliseconds in, milliseconds out).
pub fn percentiles(mut xs: Vec<f64>) -> Value {
    if xs.is_empty() {
        return json!({"count": 0});
    }
    let n = xs.len();
    let rank = |p: f64| ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
    let mean = xs.iter().sum::<f64>() / n as f64;
    let (min, max) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    // Nearest-rank quantiles by selection, in increasing rank: each selection leaves the
    // larger values above its rank, so the next one searches only those (no full sort).
    let mut q = [0.0; 4];
    let mut from = 0;
    for (i, p) in [0.50, 0.90, 0.99, 0.999].into_iter().enumerate() {
        let k = rank(p);
        if k >= from {
            xs[from..].select_nth_unstable_by(k - from, f64::total_cmp);
            from = k;
        }
        q[i] = xs[k];
    }
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "count": n,
        "mean": r(mean),
        "min": r(min),
        "p50": r(q[0]),
        "p90": r(q[1]),
        "p99": r(q[2]),
        "p999": r(q[3]),
        "max": r(max),
    })
}

fn group_stats(rows: &[&Sample]) -> Value {
    let ok: Vec<&&Sample> = rows.iter().filter(|r| r.success).collect();
    let count = |s: State| ok.iter().filter(|r| r.state == s).count();
    json!({
        "invocations": rows.len(),
        "succeeded": ok.len(),
        "failed": rows.len() - ok.len(),
        "cold": count(State::Cold),
        "warm": count(State::Warm),
        "prewarm": count(State::Prewarm),
        "cold_start_rate": if ok.is_empty() { 0.0 } else { count(State::Cold) as f64 / ok.len() as f64 },
        "client_latency_ms": percentiles(ok.iter().map(|r| r.client_latency_ms()).collect()),
        "latency_from_schedule_ms": percentiles(ok.iter().map(|r| r.latency_from_schedule_ms()).collect()),
        "overhead_ms": percentiles(ok.iter().filter_map(|r| r.overhead_ms()).collect()),
        "cold_start_ms": percentiles(ok.iter().filter(|r| r.state == State::Cold).filter_map(|r| r.cold_start_ms()).collect()),
    })
}

/// The samples of each function, by metadata index.
fn by_function(samples: &[Sample], functions: usize) -> Vec<Vec<&Sample>> {
    let mut per: Vec<Vec<&Sample>> = vec![Vec::new(); functions];
    for r in samples {
        per[r.func as usize].push(r);
    }
    per
}

/// The JSON summary: counts, errors, cold starts, percentiles overall and per function,
/// requested vs achieved rate, schedule lateness.
pub fn summary(rec: &Recorded, meta: &[FunctionMeta], wake_lateness_ns: &[u64], realtime: bool) -> Value {
    let rows = &rec.samples;
    let all: Vec<&Sample> = rows.iter().collect();
    let mut s = group_stats(&all);
    s["errors_by_kind"] = json!(rec.errors_by_kind);
    s["first_error"] = json!(rec.first_error);
    let span = |a: f64, b: f64| (b - a).max(1e-9) / 1e3;
    let first = |f: fn(&Sample) -> f64| rows.iter().map(f).fold(f64::INFINITY, f64::min);
    let last = |f: fn(&Sample) -> f64| rows.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
    let n = rows.len() as f64;
    s["requested_rate_per_s"] = json!(n / span(first(|r| r.scheduled_ms), last(|r| r.scheduled_ms)));
    s["achieved_send_rate_per_s"] = json!(n / span(first(|r| r.sent_ms), last(|r| r.sent_ms)));
    s["completion_rate_per_s"] = json!(n / span(first(|r| r.sent_ms), last(|r| r.done_ms)));
    s["duration_s"] = json!(span(0.0, last(|r| r.done_ms)));
    s["lateness_ms"] = percentiles(rows.iter().map(Sample::lateness_ms).collect());
    s["scheduler_wake_lateness_ms"] = percentiles(wake_lateness_ns.iter().map(|&x| x as f64 / 1e6).collect());
    s["scheduler_realtime_priority"] = json!(realtime);
    let mut per = serde_json::Map::new();
    for (f, mine) in meta.iter().zip(by_function(rows, meta.len())) {
        if !mine.is_empty() {
            per.insert(f.name.clone(), group_stats(&mine));
        }
    }
    s["functions"] = Value::Object(per);
    if !rec.workers.is_empty() {
        let mut per: Vec<Vec<&Sample>> = vec![Vec::new(); rec.workers.len()];
        for r in rows.iter().filter(|r| r.worker != NO_WORKER) {
            per[r.worker as usize].push(r);
        }
        let mut workers = serde_json::Map::new();
        for (name, mine) in rec.workers.iter().zip(per) {
            workers.insert(name.clone(), group_stats(&mine));
        }
        s["workers"] = Value::Object(workers);
        s["no_worker"] = json!(rows.iter().filter(|r| r.worker == NO_WORKER).count());
    }
    if !rec.controller_us.is_empty() {
        s["controller_overhead_ms"] = percentiles(rec.controller_us.iter().map(|&u| u as f64 / 1e3).collect());
    }
    s
}

/// The human-readable table printed at the end of a run.
pub fn print_table(summary: &Value) {
    let f = |v: &Value| v.as_f64().map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    let line = |name: &str, s: &Value| {
        println!(
            "{:<24} {:>8} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10}",
            name,
            s["invocations"].as_u64().unwrap_or(0),
            s["failed"].as_u64().unwrap_or(0),
            s["cold"].as_u64().unwrap_or(0),
            f(&s["client_latency_ms"]["p50"]),
            f(&s["client_latency_ms"]["p99"]),
            f(&s["overhead_ms"]["p50"]),
            f(&s["overhead_ms"]["p99"]),
        );
    };
    println!(
        "{:<24} {:>8} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "function", "invokes", "errors", "cold", "lat p50ms", "lat p99ms", "ovh p50ms", "ovh p99ms"
    );
    let mut funcs: Vec<(&String, &Value)> =
        summary["functions"].as_object().map(|m| m.iter().collect()).unwrap_or_default();
    funcs.sort_by_key(|(_, v)| std::cmp::Reverse(v["invocations"].as_u64().unwrap_or(0)));
    const SHOWN: usize = 15;
    for (name, s) in funcs.iter().take(SHOWN) {
        let short: String = name.chars().take(24).collect();
        line(&short, s);
    }
    if funcs.len() > SHOWN {
        println!("... and {} more functions (see summary.json)", funcs.len() - SHOWN);
    }
    line("ALL", summary);
    println!(
        "rate: requested {:.1}/s, sent {:.1}/s; cold-start rate {:.1}%; send lateness p50 {} ms, p99 {} ms, max {} ms",
        summary["requested_rate_per_s"].as_f64().unwrap_or(0.0),
        summary["achieved_send_rate_per_s"].as_f64().unwrap_or(0.0),
        summary["cold_start_rate"].as_f64().unwrap_or(0.0) * 100.0,
        f(&summary["lateness_ms"]["p50"]),
        f(&summary["lateness_ms"]["p99"]),
        f(&summary["lateness_ms"]["max"]),
    );
    if let Some(workers) = summary["workers"].as_object() {
        let mut list: Vec<String> =
            workers.iter().map(|(name, w)| format!("{name} {}", w["invocations"].as_u64().unwrap_or(0))).collect();
        list.sort();
        let none = summary["no_worker"].as_u64().unwrap_or(0);
        if none > 0 {
            list.push(format!("none {none}"));
        }
        println!("invocations per worker: {}", list.join(", "));
    }
    if let Some(c) = summary["controller_overhead_ms"].as_object() {
        println!(
            "controller overhead: p50 {} ms, p99 {} ms",
            f(c.get("p50").unwrap_or(&Value::Null)),
            f(c.get("p99").unwrap_or(&Value::Null))
        );
    }
    if let Some(e) = summary["first_error"].as_str() {
        println!("first error: {e}");
    }
}

/// Bucket width (seconds) for time series of a run lasting `secs`.
fn bucket_width(secs: f64) -> f64 {
    let raw = (secs / 100.0).max(0.01);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|w| *w >= raw).unwrap_or(raw)
}

/// latency_cdf.svg, overhead_over_time.svg and cold_starts_throughput.svg.
pub fn write_plots(dir: &Path, rows: &[Sample], meta: &[FunctionMeta]) -> std::io::Result<()> {
    let per = by_function(rows, meta.len());
    let mut counts: Vec<(usize, usize)> = per.iter().enumerate().map(|(i, v)| (v.len(), i)).collect();
    counts.sort_by(|a, b| b.cmp(a));
    let cdf = |xs: &mut Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        let step = (xs.len() / 400).max(1);
        let mut pts: Vec<(f64, f64)> =
            (0..xs.len()).step_by(step).map(|i| (xs[i], (i + 1) as f64 / xs.len() as f64)).collect();
        if let Some(&x) = xs.last() {
            pts.push((x, 1.0));
        }
        pts
    };
    let mut series = Vec::new();
    for &(n, i) in counts.iter().take(8).filter(|c| c.0 > 0) {
        let _ = n;
        let mut xs: Vec<f64> = per[i].iter().filter(|r| r.success).map(|r| r.client_latency_ms()).collect();
        series.push(Series { name: meta[i].name.clone(), points: cdf(&mut xs) });
    }
    if counts.iter().filter(|c| c.0 > 0).count() > 1 {
        let mut xs: Vec<f64> = rows.iter().filter(|r| r.success).map(|r| r.client_latency_ms()).collect();
        series.insert(0, Series { name: "all functions".into(), points: cdf(&mut xs) });
    }
    let chart = Chart {
        title: "Client latency CDF per function",
        x_label: "client latency (ms, log scale)",
        y_label: "fraction of invocations",
        log_x: true,
        series,
    };
    std::fs::write(dir.join("latency_cdf.svg"), chart.render())?;

    let end_s = rows.iter().map(|r| r.done_ms).fold(0.0, f64::max) / 1e3;
    let w = bucket_width(end_s);
    let nb = (end_s / w).ceil() as usize + 1;
    let mut ovh: Vec<Vec<f64>> = vec![Vec::new(); nb];
    let (mut done, mut cold) = (vec![0u64; nb], vec![0u64; nb]);
    for r in rows {
        let b = ((r.sent_ms / 1e3) / w) as usize;
        if let Some(o) = r.overhead_ms() {
            ovh[b.min(nb - 1)].push(o);
        }
        let d = ((r.done_ms / 1e3) / w) as usize;
        if r.success {
            done[d.min(nb - 1)] += 1;
        }
        if r.state == State::Cold {
            cold[d.min(nb - 1)] += 1;
        }
    }
    let q = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
    };
    let (mut p50, mut p99, mut max) = (Vec::new(), Vec::new(), Vec::new());
    for (b, v) in ovh.iter_mut().enumerate() {
        if !v.is_empty() {
            let t = b as f64 * w;
            p50.push((t, q(v, 0.5)));
            p99.push((t, q(v, 0.99)));
            max.push((t, q(v, 1.0)));
        }
    }
    let chart = Chart {
        title: &format!("Overhead (client latency - in-function time) per {w} s"),
        x_label: "time since start (s)",
        y_label: "overhead (ms)",
        log_x: false,
        series: vec![
            Series { name: "p50".into(), points: p50 },
            Series { name: "p99".into(), points: p99 },
            Series { name: "max".into(), points: max },
        ],
    };
    std::fs::write(dir.join("overhead_over_time.svg"), chart.render())?;
    let per_s = |v: &[u64]| v.iter().enumerate().map(|(b, &c)| (b as f64 * w, c as f64 / w)).collect();
    let chart = Chart {
        title: &format!("Throughput and cold starts per {w} s"),
        x_label: "time since start (s)",
        y_label: "per second",
        log_x: false,
        series: vec![
            Series { name: "completed/s".into(), points: per_s(&done) },
            Series { name: "cold starts/s".into(), points: per_s(&cold) },
        ],
    };
    std::fs::write(dir.join("cold_starts_throughput.svg"), chart.render())
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
    fn percentiles_by_selection_match_a_sort() {
        let mut draw = crate::dist::Draw::new(3);
        for n in [1usize, 2, 7, 100, 1001, 5000] {
            let xs: Vec<f64> = (0..n).map(|_| (draw.uniform() * 1e4).round() / 10.0).collect();
            let mut sorted = xs.clone();
            sorted.sort_by(f64::total_cmp);
            let q = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
            let got = percentiles(xs);
            for (k, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
                assert_eq!(got[k].as_f64().unwrap(), (q(p) * 1000.0).round() / 1000.0, "n {n} {k}");
            }
            assert_eq!(got["min"].as_f64().unwrap(), sorted[0]);
            assert_eq!(got["max"].as_f64().unwrap(), sorted[n - 1]);
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
