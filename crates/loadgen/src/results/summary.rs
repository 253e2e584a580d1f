//! The summary of a run (summary.json), the table printed at its end, and the files a run
//! writes besides its rows.

use super::plots::write_plots;
use super::recorder::Recorded;
use super::rows::{NO_ERROR, NO_WORKER, Sample};
use super::{State, Timed, report};
use crate::workload::trace::FunctionMeta;
use serde_json::{Value, json};
use std::path::Path;

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
        "queue_ms": percentiles(ok.iter().filter_map(|r| r.queue_ms()).collect()),
        "cold_start_ms": percentiles(ok.iter().filter(|r| r.state == State::Cold).filter_map(|r| r.cold_start_ms()).collect()),
    })
}

/// The samples of each function, by metadata index.
pub(crate) fn by_function(samples: &[Sample], functions: usize) -> Vec<Vec<&Sample>> {
    let mut per: Vec<Vec<&Sample>> = vec![Vec::new(); functions];
    for r in samples {
        per[r.func as usize].push(r);
    }
    per
}

/// The JSON summary: counts, errors, cold starts, percentiles overall and per function,
/// requested vs achieved rate, schedule lateness; of the invocations scheduled at or after
/// `warmup_s` (the ones before are counted as `warmup_invocations` only).
pub fn summary(
    rec: &Recorded,
    meta: &[FunctionMeta],
    wake_lateness_ns: &[u64],
    realtime: bool,
    warmup_s: f64,
) -> Value {
    let warmup_ms = warmup_s * 1e3;
    let kept: Vec<Sample>;
    let rows: &[Sample] = if warmup_ms > 0.0 {
        kept = rec.samples.iter().filter(|r| r.scheduled_ms >= warmup_ms).copied().collect();
        &kept
    } else {
        &rec.samples
    };
    let all: Vec<&Sample> = rows.iter().collect();
    let mut s = group_stats(&all);
    s["warmup_s"] = json!(warmup_s);
    s["warmup_invocations"] = json!(rec.samples.len() - rows.len());
    let mut errors = std::collections::BTreeMap::<&str, u64>::new();
    let mut first_kind = None;
    for r in rows.iter().filter(|r| r.error != NO_ERROR) {
        let kind = rec.error_kinds[r.error as usize].as_str();
        *errors.entry(kind).or_default() += 1;
        first_kind.get_or_insert(r.error as usize);
    }
    s["errors_by_kind"] = json!(errors);
    // The message of the first error's kind as it first appeared (the messages themselves
    // are in invocations.csv).
    s["first_error"] = json!(first_kind.map(|k| &rec.first_errors[k].1));
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
            "{:<24} {:>8} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            name,
            s["invocations"].as_u64().unwrap_or(0),
            s["failed"].as_u64().unwrap_or(0),
            s["cold"].as_u64().unwrap_or(0),
            f(&s["client_latency_ms"]["p50"]),
            f(&s["client_latency_ms"]["p99"]),
            f(&s["overhead_ms"]["p50"]),
            f(&s["overhead_ms"]["p99"]),
            f(&s["queue_ms"]["p99"]),
            f(&s["cold_start_ms"]["p50"]),
        );
    };
    let warmup = summary["warmup_invocations"].as_u64().unwrap_or(0);
    if warmup > 0 {
        println!(
            "(the first {} s, {warmup} invocations, are left out: --warmup-s)",
            summary["warmup_s"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "{:<24} {:>8} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "function",
        "invokes",
        "errors",
        "cold",
        "lat p50ms",
        "lat p99ms",
        "ovh p50ms",
        "ovh p99ms",
        "queue p99",
        "cstart p50"
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
        "lat: client latency; ovh: latency - in-function - queue - cold start; queue: wait for a slot; \
         cstart: container start of cold calls (ms)"
    );
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

/// What a run adds to its results besides its rows.
pub struct RunInfo {
    /// Scheduler wake-up lateness (ns) of a live run; empty in a simulation.
    pub wake_lateness_ns: Vec<u64>,
    pub realtime: bool,
    /// The summary leaves out invocations scheduled before this (s).
    pub warmup_s: f64,
    /// What ran (the command's inputs).
    pub run: Value,
    /// What it ran against.
    pub target: Value,
}

/// summary.json and the plots; returns the summary.
pub fn write_results(out: &Path, recorded: &Recorded, meta: &[FunctionMeta], info: RunInfo) -> anyhow::Result<Value> {
    let RunInfo { wake_lateness_ns, realtime, warmup_s, run: info, target: target_info } = info;
    let s = summary(recorded, meta, &wake_lateness_ns, realtime, warmup_s);
    let mut summary = report::context();
    summary["run"] = info;
    summary["target"] = target_info;
    for (k, v) in s.as_object().expect("summary is an object") {
        summary[k] = v.clone();
    }
    std::fs::write(out.join("summary.json"), serde_json::to_vec_pretty(&summary)?)?;
    write_plots(out, &recorded.samples, meta, warmup_s)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_selection_match_a_sort() {
        let mut draw = crate::workload::dist::Draw::new(3);
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
}
