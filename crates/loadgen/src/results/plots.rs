//! The three plots of a run: the client latency CDF (overall and the most invoked
//! functions), the overhead over time, and throughput with cold starts over time.

use super::rows::Sample;
use super::summary::by_function;
use super::{State, Timed};
use crate::workload::trace::FunctionMeta;
use std::path::Path;

pub use super::chart::{Chart, Series, Style};

/// Functions drawn in the latency CDF besides "all functions".
const CDF_FUNCTIONS: usize = 8;

/// Bucket width (seconds) for time series of a run lasting `secs`.
fn bucket_width(secs: f64) -> f64 {
    let raw = (secs / 100.0).max(0.01);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|w| *w >= raw).unwrap_or(raw)
}

/// A CDF's points: at most ~400 of the sorted values, and the last.
fn cdf(mut xs: Vec<f64>) -> Vec<(f64, f64)> {
    xs.sort_by(f64::total_cmp);
    let step = (xs.len() / 400).max(1);
    let mut pts: Vec<(f64, f64)> =
        (0..xs.len()).step_by(step).map(|i| (xs[i], (i + 1) as f64 / xs.len() as f64)).collect();
    if let Some(&x) = xs.last() {
        pts.push((x, 1.0));
    }
    pts
}

/// latency_cdf.svg, overhead_over_time.svg and cold_starts_throughput.svg. The CDF leaves
/// out the invocations scheduled in the first `warmup_s` seconds, as the summary does; the
/// time plots show them, shaded.
pub fn write_plots(dir: &Path, rows: &[Sample], meta: &[FunctionMeta], warmup_s: f64) -> std::io::Result<()> {
    std::fs::write(dir.join("latency_cdf.svg"), latency_cdf(rows, meta, warmup_s).render())?;
    let (overhead, throughput) = over_time(rows, warmup_s);
    std::fs::write(dir.join("overhead_over_time.svg"), overhead.render())?;
    std::fs::write(dir.join("cold_starts_throughput.svg"), throughput.render())
}

fn latency_cdf(rows: &[Sample], meta: &[FunctionMeta], warmup_s: f64) -> Chart<'static> {
    let after: Vec<Sample>;
    let kept = if warmup_s > 0.0 {
        after = rows.iter().filter(|r| r.scheduled_ms >= warmup_s * 1e3).copied().collect();
        &after[..]
    } else {
        rows
    };
    let per = by_function(kept, meta.len());
    let mut counts: Vec<(usize, usize)> =
        per.iter().enumerate().map(|(i, v)| (v.len(), i)).filter(|c| c.0 > 0).collect();
    counts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let latencies = |rows: &[&Sample]| rows.iter().filter(|r| r.success).map(|r| r.client_latency_ms()).collect();
    let mut series = Vec::new();
    if counts.len() > 1 {
        let all = kept.iter().filter(|r| r.success).map(|r| r.client_latency_ms()).collect();
        series.push(Series { name: "all functions".into(), points: cdf(all), style: Style::Bold });
    }
    for &(_, i) in counts.iter().take(CDF_FUNCTIONS) {
        series.push(Series::line(meta[i].name.clone(), cdf(latencies(&per[i]))));
    }
    let legend_note = (counts.len() > CDF_FUNCTIONS)
        .then(|| format!("top {CDF_FUNCTIONS} of {} functions\n(the most invoked)", counts.len()));
    Chart {
        title: if warmup_s > 0.0 { "Client latency CDF (after the warm-up)" } else { "Client latency CDF" }.into(),
        x_label: "client latency (ms, log scale)".into(),
        y_label: "fraction of invocations".into(),
        log_x: true,
        series,
        legend_note,
        ..Default::default()
    }
}

/// The overhead (p50, p99, max) and the throughput with cold starts, per time bin.
fn over_time(rows: &[Sample], warmup_s: f64) -> (Chart<'static>, Chart<'static>) {
    let end_s = rows.iter().map(|r| r.done_ms).fold(0.0, f64::max) / 1e3;
    let w = bucket_width(end_s);
    // Bins in whole milliseconds (at least 10), so that a time on a bin's edge (300 ms in
    // bins of 0.1 s) falls in the bin it starts, not in the one before by a rounding error.
    let w_ms = (w * 1e3).round();
    let nb = (end_s * 1e3 / w_ms).ceil() as usize + 1;
    let mut ovh: Vec<Vec<f64>> = vec![Vec::new(); nb];
    let (mut done, mut cold) = (vec![0u64; nb], vec![0u64; nb]);
    for r in rows {
        let b = (r.sent_ms / w_ms) as usize;
        if let Some(o) = r.overhead_ms() {
            ovh[b.min(nb - 1)].push(o);
        }
        let d = (r.done_ms / w_ms) as usize;
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
    // A bin without invocations is a gap in the lines, not a zero.
    let (mut p50, mut p99, mut max) = (Vec::new(), Vec::new(), Vec::new());
    for (b, v) in ovh.iter_mut().enumerate() {
        let t = b as f64 * w;
        if v.is_empty() {
            p50.push((t, f64::NAN));
            p99.push((t, f64::NAN));
        } else {
            p50.push((t, q(v, 0.5)));
            p99.push((t, q(v, 0.99)));
            max.push((t, q(v, 1.0)));
        }
    }
    let shade = (warmup_s > 0.0).then_some((0.0, warmup_s, "warm-up (not in the summary)"));
    let overhead = Chart {
        title: "Overhead: client latency - in-function - queue - cold start".into(),
        x_label: format!("time since start (s), bins of {w} s"),
        y_label: "overhead (ms, log scale)".into(),
        log_y: true,
        // p99 bold, the maximum as rings over it: both visible where they are the same (in
        // a bin of fewer than 100 invocations, p99 is the maximum).
        series: vec![
            Series::line("p50", p50),
            Series { name: "p99".into(), points: p99, style: Style::Bold },
            Series { name: "max".into(), points: max, style: Style::Dots },
        ],
        legend_note: Some("p99 = max in bins of\nfewer than 100 calls".into()),
        shade,
        ..Default::default()
    };
    let per_s = |v: &[u64]| v.iter().enumerate().map(|(b, &c)| (b as f64 * w, c as f64 / w)).collect();
    let throughput = Chart {
        title: "Throughput and cold starts".into(),
        x_label: format!("time since start (s), bins of {w} s"),
        y_label: "per second".into(),
        series: vec![Series::line("completed/s", per_s(&done)), Series::line("cold starts/s", per_s(&cold))],
        shade,
        ..Default::default()
    };
    (overhead, throughput)
}
