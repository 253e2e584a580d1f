//! The results of an open-loop run: one CSV row per invocation, a JSON summary, SVG plots
//! and a printed table. Times in rows are milliseconds from the run's time zero (the
//! trace's 0 ms); the summary carries that instant's Unix time.

use crate::csv::record;
use crate::plots::{Chart, Series};
use crate::schedule::Run;
use crate::trace::{Arrival, FunctionMeta};
use iluvatar_rpc as rpc;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// One invocation, as written to invocations.csv.
pub struct Row {
    pub func: usize,
    pub tid: String,
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
}

pub const CSV_HEADER: &str = "function,version,transaction_id,scheduled_ms,sent_ms,lateness_ms,client_latency_ms,\
latency_from_schedule_ms,worker_duration_ms,func_start_ms,func_end_ms,func_duration_ms,container_state,queue_ms,\
cold_start_ms,overhead_ms,success,error\n";

fn state_name(s: i32) -> &'static str {
    match rpc::ContainerState::try_from(s) {
        Ok(rpc::ContainerState::Cold) => "cold",
        Ok(rpc::ContainerState::Warm) => "warm",
        Ok(rpc::ContainerState::Prewarm) => "prewarm",
        Ok(rpc::ContainerState::Unhealthy) => "unhealthy",
        _ => "error",
    }
}

/// Turns the raw outcomes into rows.
pub fn rows(run: Run, arrivals: &[Arrival], tid_prefix: &str) -> Vec<Row> {
    let ms = |ns: u64| ns as f64 / 1e6;
    run.outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let mut row = Row {
                func: arrivals[i].func,
                tid: format!("{tid_prefix}-{i}"),
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
            };
            match o.response {
                Err(e) => row.error = e,
                Ok(r) => {
                    let v: Value = serde_json::from_str(&r.json_result).unwrap_or(Value::Null);
                    row.success = r.success;
                    row.state = state_name(r.container_state);
                    row.worker_duration_ms = (r.duration_us > 0).then(|| r.duration_us as f64 / 1e3);
                    if r.success {
                        let rel = |k: &str| v[k].as_f64().map(|t| (t - run.start_unix_s) * 1e3);
                        let us = |k: &str| v["timings"][k].as_f64().map(|t| t / 1e3);
                        row.func_start_ms = rel("start");
                        row.func_end_ms = rel("end");
                        row.func_duration_ms = us("function_us");
                        row.queue_ms = us("queue_us");
                        row.cold_start_ms = us("cold_start_us");
                    } else {
                        let kind = v["kind"].as_str().unwrap_or("error");
                        let msg = v["Error"].as_str().map(str::to_string).unwrap_or(r.json_result);
                        row.error = format!("{kind}: {msg}");
                    }
                }
            }
            row
        })
        .collect()
}

fn opt(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_default()
}

pub fn write_csv(path: &Path, rows: &[Row], meta: &[FunctionMeta], version: &str) -> std::io::Result<()> {
    let mut s = String::with_capacity(rows.len() * 160 + 256);
    s.push_str(CSV_HEADER);
    for r in rows {
        s.push_str(&record(&[
            meta[r.func].name.clone(),
            version.to_string(),
            r.tid.clone(),
            format!("{:.3}", r.scheduled_ms),
            format!("{:.3}", r.sent_ms),
            format!("{:.3}", r.lateness_ms()),
            format!("{:.3}", r.client_latency_ms()),
            format!("{:.3}", r.latency_from_schedule_ms()),
            opt(r.worker_duration_ms),
            opt(r.func_start_ms),
            opt(r.func_end_ms),
            opt(r.func_duration_ms),
            r.state.to_string(),
            opt(r.queue_ms),
            opt(r.cold_start_ms),
            opt(r.overhead_ms()),
            r.success.to_string(),
            r.error.clone(),
        ]));
    }
    std::fs::write(path, s)
}

/// Exact percentiles of a sample (milliseconds in, milliseconds out).
pub fn percentiles(mut xs: Vec<f64>) -> Value {
    if xs.is_empty() {
        return json!({"count": 0});
    }
    xs.sort_by(f64::total_cmp);
    let q = |p: f64| xs[((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1];
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "count": xs.len(),
        "mean": r(xs.iter().sum::<f64>() / xs.len() as f64),
        "min": r(xs[0]),
        "p50": r(q(0.50)),
        "p90": r(q(0.90)),
        "p99": r(q(0.99)),
        "p999": r(q(0.999)),
        "max": r(xs[xs.len() - 1]),
    })
}

fn group_stats(rows: &[&Row]) -> Value {
    let ok: Vec<&&Row> = rows.iter().filter(|r| r.success).collect();
    let count = |s: &str| rows.iter().filter(|r| r.success && r.state == s).count();
    json!({
        "invocations": rows.len(),
        "succeeded": ok.len(),
        "failed": rows.len() - ok.len(),
        "cold": count("cold"),
        "warm": count("warm"),
        "prewarm": count("prewarm"),
        "cold_start_rate": if ok.is_empty() { 0.0 } else { count("cold") as f64 / ok.len() as f64 },
        "client_latency_ms": percentiles(ok.iter().map(|r| r.client_latency_ms()).collect()),
        "latency_from_schedule_ms": percentiles(ok.iter().map(|r| r.latency_from_schedule_ms()).collect()),
        "overhead_ms": percentiles(ok.iter().filter_map(|r| r.overhead_ms()).collect()),
        "cold_start_ms": percentiles(ok.iter().filter(|r| r.state == "cold").filter_map(|r| r.cold_start_ms).collect()),
    })
}

/// The JSON summary: counts, errors, cold starts, percentiles overall and per function,
/// requested vs achieved rate, schedule lateness.
pub fn summary(rows: &[Row], meta: &[FunctionMeta], wake_lateness_ns: &[u64], realtime: bool) -> Value {
    let all: Vec<&Row> = rows.iter().collect();
    let mut s = group_stats(&all);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.success) {
        let kind = r.error.split(':').next().unwrap_or("error").to_string();
        *errors.entry(kind).or_default() += 1;
    }
    s["errors_by_kind"] = json!(errors);
    s["first_error"] = json!(rows.iter().find(|r| !r.success).map(|r| r.error.clone()));
    let span = |a: f64, b: f64| (b - a).max(1e-9) / 1e3;
    let first = |f: fn(&Row) -> f64| rows.iter().map(f).fold(f64::INFINITY, f64::min);
    let last = |f: fn(&Row) -> f64| rows.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
    let n = rows.len() as f64;
    s["requested_rate_per_s"] = json!(n / span(first(|r| r.scheduled_ms), last(|r| r.scheduled_ms)));
    s["achieved_send_rate_per_s"] = json!(n / span(first(|r| r.sent_ms), last(|r| r.sent_ms)));
    s["completion_rate_per_s"] = json!(n / span(first(|r| r.sent_ms), last(|r| r.done_ms)));
    s["duration_s"] = json!(span(0.0, last(|r| r.done_ms)));
    s["lateness_ms"] = percentiles(rows.iter().map(Row::lateness_ms).collect());
    s["scheduler_wake_lateness_ms"] = percentiles(wake_lateness_ns.iter().map(|&x| x as f64 / 1e6).collect());
    s["scheduler_realtime_priority"] = json!(realtime);
    let mut per = serde_json::Map::new();
    for (i, f) in meta.iter().enumerate() {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.func == i).collect();
        if !mine.is_empty() {
            per.insert(f.name.clone(), group_stats(&mine));
        }
    }
    s["functions"] = Value::Object(per);
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
pub fn write_plots(dir: &Path, rows: &[Row], meta: &[FunctionMeta]) -> std::io::Result<()> {
    let mut counts: Vec<(usize, usize)> =
        (0..meta.len()).map(|i| (rows.iter().filter(|r| r.func == i).count(), i)).collect();
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
        let mut xs: Vec<f64> =
            rows.iter().filter(|r| r.func == i && r.success).map(|r| r.client_latency_ms()).collect();
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
        if r.state == "cold" {
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
