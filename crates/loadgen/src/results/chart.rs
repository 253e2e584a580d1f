//! Hand-written SVG charts: lines or points on linear or logarithmic axes, with ticks,
//! labels, a legend, gaps where a series has no value, and a shaded x range. No plotting
//! crate: the charts are simple and the files small.
//!
//! A logarithmic axis spans whole decades, at most [`MAX_DECADES`] of them below its
//! largest value; smaller positive values sit on its first tick, labelled "≤". Values of
//! 0 (or below) cannot be placed on it: they get a tick of their own one decade below,
//! labelled "0", with a break mark between it and the first decade.

use std::fmt::Write;

/// How a series is drawn.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub enum Style {
    #[default]
    Line,
    /// A thicker line, for the series the chart is about.
    Bold,
    /// Points only, as small rings: extremes drawn over lines without hiding them.
    Dots,
}

#[derive(Default)]
pub struct Series {
    pub name: String,
    /// (x, y); a point with a y that is not finite is a gap (no line is drawn across it).
    pub points: Vec<(f64, f64)>,
    pub style: Style,
}

impl Series {
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points, style: Style::Line }
    }
}

#[derive(Default)]
pub struct Chart<'a> {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    /// Drawn in order (the last on top); the legend lists them in the same order.
    pub series: Vec<Series>,
    /// Lines under the legend (e.g. which series of how many are shown).
    pub legend_note: Option<String>,
    /// An x range shaded grey, with its label.
    pub shade: Option<(f64, f64, &'a str)>,
}

/// The most decades a logarithmic axis spans.
pub const MAX_DECADES: i32 = 6;

const W: f64 = 820.0;
const H: f64 = 480.0;
const L: f64 = 70.0;
const R: f64 = 190.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// The opening of an SVG document of `width` x `height`: a white background and `title`
/// (escaped here) centred at `title_x`. The caller closes it with `</svg>`.
pub fn open_svg(width: f64, height: f64, title_x: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{title_x}" y="22" text-anchor="middle" font-size="15">{}</text>"#, esc(title));
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// About five round tick values covering [lo, hi].
pub(crate) fn ticks(lo: f64, hi: f64) -> Vec<f64> {
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

/// One axis: the values' range and how a value maps to [0, 1] along it.
#[derive(Debug, PartialEq)]
pub(crate) struct Axis {
    log: bool,
    /// Linear: the range's ends. Logarithmic: the decades of the first and last ticks.
    lo: f64,
    hi: f64,
    /// Logarithmic: values <= 0 occur (they get the tick below `lo`).
    zero: bool,
    /// Logarithmic: positive values below 10^lo occur (clamped to it).
    clamped: bool,
    /// Logarithmic: no value is positive (only the zero tick is labelled).
    empty: bool,
}

impl Axis {
    pub(crate) fn new(log: bool, values: impl Iterator<Item = f64>) -> Axis {
        let values: Vec<f64> = values.filter(|v| v.is_finite()).collect();
        if !log {
            let lo = values.iter().copied().fold(0.0, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let hi = if hi > lo { hi + (hi - lo) * 0.05 } else { lo + 1.0 };
            return Axis { log, lo, hi, zero: false, clamped: false, empty: false };
        }
        let positive = || values.iter().copied().filter(|v| *v > 0.0);
        let zero = values.iter().any(|v| *v <= 0.0);
        let (min, max) = positive().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if !min.is_finite() {
            return Axis { log, lo: 0.0, hi: 1.0, zero, clamped: false, empty: true };
        }
        let hi = max.log10().ceil();
        let mut lo = min.log10().floor();
        let hi = if hi > lo { hi } else { lo + 1.0 };
        let clamped = hi - lo > MAX_DECADES as f64;
        if clamped {
            lo = hi - MAX_DECADES as f64;
        }
        Axis { log, lo, hi, zero, clamped, empty: false }
    }

    /// Where the axis starts, in its own units: with zeros, a little before their tick a
    /// decade below `lo`, so that they are not drawn on the frame.
    fn start(&self) -> f64 {
        if self.zero { self.lo - 1.25 } else { self.lo }
    }

    /// `v`'s position along the axis, 0 at its start and 1 at its end.
    pub(crate) fn pos(&self, v: f64) -> f64 {
        let u = if !self.log {
            v
        } else if v <= 0.0 {
            self.lo - 1.0
        } else {
            v.log10().max(self.lo)
        };
        (u - self.start()) / (self.hi - self.start())
    }

    /// The ticks: (value, label).
    pub(crate) fn ticks(&self) -> Vec<(f64, String)> {
        if !self.log {
            return ticks(self.lo, self.hi).into_iter().map(|v| (v, label(v))).collect();
        }
        let mut out = Vec::new();
        if self.zero {
            out.push((0.0, "0".to_string()));
        }
        if self.empty && self.zero {
            return out;
        }
        let (lo, hi) = (self.lo as i32, self.hi as i32);
        let minor = hi - lo <= 2;
        for e in lo..=hi {
            let v = 10f64.powi(e);
            let prefix = if e == lo && self.clamped { "≤" } else { "" };
            out.push((v, format!("{prefix}{}", label(v))));
            if minor && e < hi {
                out.extend([2.0, 5.0].map(|m| (m * v, label(m * v))));
            }
        }
        out
    }
}

impl Chart<'_> {
    pub fn render(&self) -> String {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let xa = Axis::new(self.log_x, points().map(|p| p.0));
        let ya = Axis::new(self.log_y, points().filter(|p| p.0.is_finite()).map(|p| p.1));
        let (pw, ph) = (W - L - R, H - T - B);
        let sx = |x: f64| L + xa.pos(x) * pw;
        let sy = |y: f64| T + ph - ya.pos(y) * ph;
        let mut s = open_svg(W, H, L + pw / 2.0, &self.title);
        if let Some((a, b, what)) = self.shade {
            let (x0, x1) = (sx(a).clamp(L, L + pw), sx(b).clamp(L, L + pw));
            if x1 > x0 {
                let _ =
                    writeln!(s, r##"<rect x="{x0:.1}" y="{T}" width="{:.1}" height="{ph}" fill="#eeeeee"/>"##, x1 - x0);
                let _ =
                    writeln!(s, r##"<text x="{:.1}" y="{:.1}" fill="#777">{}</text>"##, x0 + 4.0, T + 14.0, esc(what));
            }
        }
        let _ = writeln!(s, r##"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
        for (v, text) in xa.ticks() {
            let x = sx(v);
            let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##, T + ph);
            let _ =
                writeln!(s, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, T + ph + 16.0, esc(&text));
        }
        if xa.zero && !xa.empty {
            // The axis break between the zero tick and the first decade.
            let x = (sx(0.0) + sx(10f64.powf(xa.lo))) / 2.0;
            let y = T + ph;
            let _ = writeln!(
                s,
                r##"<path d="M{:.1},{:.1} l6,-10 M{:.1},{:.1} l6,-10" stroke="#333" fill="none"/>"##,
                x - 5.0,
                y + 5.0,
                x - 1.0,
                y + 5.0
            );
        }
        for (v, text) in ya.ticks() {
            let y = sy(v);
            let _ = writeln!(s, r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##, L + pw);
            let _ =
                writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, L - 6.0, y + 4.0, esc(&text));
        }
        if ya.zero && !ya.empty {
            let y = (sy(0.0) + sy(10f64.powf(ya.lo))) / 2.0;
            let _ = writeln!(
                s,
                r##"<path d="M{:.1},{:.1} l10,-6 M{:.1},{:.1} l10,-6" stroke="#333" fill="none"/>"##,
                L - 5.0,
                y + 5.0,
                L - 5.0,
                y + 1.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            L + pw / 2.0,
            H - 12.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
            T + ph / 2.0,
            T + ph / 2.0,
            esc(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            draw_series(&mut s, series, color, &sx, &sy);
            let ly = T + 10.0 + i as f64 * 18.0;
            let lx = L + pw + 12.0;
            match series.style {
                Style::Dots => {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="none" stroke="{color}"/>"#,
                        lx + 6.0,
                        ly - 3.0
                    );
                }
                _ => {
                    let _ =
                        writeln!(s, r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{color}"/>"#, ly - 9.0);
                }
            }
            let mut name = series.name.clone();
            if name.chars().count() > 24 {
                name = name.chars().take(23).collect::<String>() + "…";
            }
            let _ = writeln!(s, r#"<text x="{}" y="{:.1}">{}</text>"#, lx + 18.0, ly + 1.0, esc(&name));
        }
        if let Some(note) = &self.legend_note {
            for (i, line) in note.lines().enumerate() {
                let ly = T + 10.0 + (self.series.len() + i) as f64 * 18.0 + 6.0;
                let _ = writeln!(s, r##"<text x="{}" y="{ly:.1}" fill="#555">{}</text>"##, L + pw + 12.0, esc(line));
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

/// One series: polylines broken at its gaps (a lone point becomes a dot), or dots.
fn draw_series(s: &mut String, series: &Series, color: &str, sx: &dyn Fn(f64) -> f64, sy: &dyn Fn(f64) -> f64) {
    let mut runs: Vec<Vec<String>> = vec![Vec::new()];
    for &(x, y) in &series.points {
        if x.is_finite() && y.is_finite() {
            runs.last_mut().expect("one run at least").push(format!("{:.1},{:.1}", sx(x), sy(y)));
        } else if !runs.last().expect("one run at least").is_empty() {
            runs.push(Vec::new());
        }
    }
    let width = if series.style == Style::Bold { 2.5 } else { 1.5 };
    for run in runs.iter().filter(|r| !r.is_empty()) {
        if series.style == Style::Dots {
            for p in run {
                let (x, y) = p.split_once(',').expect("x,y");
                let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="2.5" fill="none" stroke="{color}"/>"#);
            }
        } else if run.len() == 1 {
            let (x, y) = run[0].split_once(',').expect("x,y");
            let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>"#);
        } else {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{}"/>"#,
                run.join(" ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_balanced_svg() {
        let c = Chart {
            title: "a <b>".into(),
            log_x: true,
            series: vec![Series::line("s", vec![(0.5, 0.1), (20.0, 1.0)])],
            ..Default::default()
        };
        let svg = c.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;b&gt;"));
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    }

    #[test]
    fn a_log_axis_shows_zeros_on_a_tick_of_their_own() {
        // Simulated latencies: exact zeros and whole milliseconds.
        let a = Axis::new(true, [0.0, 0.0, 1.0, 3.0, 250.0].into_iter());
        assert_eq!((a.lo, a.hi, a.zero, a.clamped), (0.0, 3.0, true, false));
        let labels: Vec<String> = a.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0", "1", "10", "100", "1000"]);
        assert!(a.pos(0.0) > 0.0 && a.pos(0.0) < 0.1, "zeros are inside the frame, near its start");
        assert_eq!(a.pos(1000.0), 1.0);
        assert!((a.pos(1.0) - 1.25 / 4.25).abs() < 1e-12, "1 is a decade and a quarter from the axis start");
        // No decade of 1e-9 for a value clamped from an exact zero (the old axis did that).
        assert!(a.pos(1e-9) >= a.pos(1.0));
        let zeros = Axis::new(true, [0.0, 0.0].into_iter());
        assert_eq!(zeros.ticks(), [(0.0, "0".to_string())], "nothing but zeros: no decades");
    }

    #[test]
    fn a_log_axis_spans_at_most_six_decades() {
        let a = Axis::new(true, [1e-7, 0.5, 2000.0].into_iter());
        assert_eq!((a.lo, a.hi, a.zero, a.clamped), (-2.0, 4.0, false, true));
        assert_eq!(a.ticks()[0].1, "≤0.01");
        assert_eq!(a.pos(1e-7), 0.0);
        let narrow = Axis::new(true, [2.0, 30.0].into_iter());
        let labels: Vec<String> = narrow.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["1", "2", "5", "10", "20", "50", "100"], "minor ticks when few decades");
    }

    #[test]
    fn gaps_break_the_line() {
        let c = Chart {
            series: vec![Series::line("p50", vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN), (3.0, 2.0), (4.0, 1.0)])],
            ..Default::default()
        };
        let svg = c.render();
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        let lone = Chart {
            series: vec![Series::line("x", vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0)])],
            ..Default::default()
        };
        assert_eq!(lone.render().matches("<circle").count(), 2);
    }
}
