//! Hand-written SVG charts: lines or points on linear or logarithmic x axes, with ticks,
//! labels and a legend. No plotting crate: the charts are simple and the files small. And
//! the three plots of a run.

use super::rows::Sample;
use super::summary::by_function;
use super::{State, Timed};
use crate::workload::trace::FunctionMeta;
use std::fmt::Write;
use std::path::Path;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_x: bool,
    pub series: Vec<Series>,
}

const W: f64 = 820.0;
const H: f64 = 480.0;
const L: f64 = 70.0;
const R: f64 = 190.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// About five round tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e5 || v.abs() < 1e-3 {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

impl Chart<'_> {
    pub fn render(&self) -> String {
        let tx = |x: f64| if self.log_x { x.max(1e-9).log10() } else { x };
        let pts = || self.series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
        let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for &(x, y) in pts() {
            x0 = x0.min(tx(x));
            x1 = x1.max(tx(x));
            y1 = y1.max(y);
        }
        if !x0.is_finite() {
            (x0, x1, y1) = (0.0, 1.0, 1.0);
        }
        if self.log_x {
            (x0, x1) = (x0.floor(), x1.ceil().max(x0.floor() + 1.0));
        } else if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let y0 = 0.0;
        if y1 <= y0 {
            y1 = 1.0;
        }
        y1 *= 1.05;
        let (pw, ph) = (W - L - R, H - T - B);
        let sx = |x: f64| L + (tx(x) - x0) / (x1 - x0) * pw;
        let sy = |y: f64| T + ph - (y - y0) / (y1 - y0) * ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            L + pw / 2.0,
            esc(self.title)
        );
        let _ = writeln!(s, r##"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
        let xt: Vec<f64> =
            if self.log_x { (x0 as i32..=x1 as i32).map(|e| 10f64.powi(e)).collect() } else { ticks(x0, x1) };
        for v in xt {
            let x = sx(v);
            let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##, T + ph);
            let _ =
                writeln!(s, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, T + ph + 16.0, label(v));
        }
        for v in ticks(y0, y1) {
            let y = sy(v);
            let _ = writeln!(s, r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##, L + pw);
            let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, L - 6.0, y + 4.0, label(v));
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            L + pw / 2.0,
            H - 12.0,
            esc(self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
            T + ph / 2.0,
            T + ph / 2.0,
            esc(self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = series
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            if path.len() == 1 {
                let _ = writeln!(s, r#"<circle cx="{}" r="3" fill="{color}"/>"#, path[0].replace(',', "\" cy=\""));
            } else if !path.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    path.join(" ")
                );
            }
            let ly = T + 10.0 + i as f64 * 18.0;
            let lx = L + pw + 12.0;
            let _ = writeln!(s, r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{color}"/>"#, ly - 9.0);
            let mut name = series.name.clone();
            if name.chars().count() > 24 {
                name = name.chars().take(23).collect::<String>() + "…";
            }
            let _ = writeln!(s, r#"<text x="{}" y="{:.1}">{}</text>"#, lx + 18.0, ly + 1.0, esc(&name));
        }
        s.push_str("</svg>\n");
        s
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
    fn renders_balanced_svg() {
        let c = Chart {
            title: "a <b>",
            x_label: "x",
            y_label: "y",
            log_x: true,
            series: vec![Series { name: "s".into(), points: vec![(0.5, 0.1), (20.0, 1.0)] }],
        };
        let svg = c.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;b&gt;"));
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    }
}
