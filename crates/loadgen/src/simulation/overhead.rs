//! The simulated controller's own time per invocation (`--controller-overhead FILE`): a
//! distribution measured on a live controller, drawn with the run's seed for every
//! invocation a simulated cluster routes, added on the virtual clock before the invocation
//! reaches its worker, and reported in the `controller_ms` column as a live controller
//! reports its own time.
//!
//! FILE is one of: a `controller-bench` report (the `controller_us` percentiles of its first
//! step); a JSON object of percentiles in microseconds (`{"p50": 40, "p99": 120, "max": 900}`:
//! keys `min`, `max`, `pX` for X in 0..=100, and `p999` for 99.9 as the report writes it;
//! `count` and `mean` are ignored); or samples in microseconds separated by spaces, commas
//! or lines. Percentiles are interpolated linearly, and below the lowest one given the
//! distribution takes that one's value.
//!
//! Virtual time advances by whole milliseconds (tokio's timer ticks), so each drawn time is
//! rounded to a neighbouring millisecond at random, up with probability its fraction of a
//! millisecond: latencies then carry the overhead's mean exactly, at the clock's resolution.

use anyhow::{Context, bail};
use iluvatar_core::{Rng, SplitMix64};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The measured distribution, in microseconds.
#[derive(Debug, Clone, PartialEq)]
enum Dist {
    /// Drawn uniformly.
    Samples(Vec<f64>),
    /// (quantile in 0..=1, value), sorted, quantiles distinct.
    Quantiles(Vec<(f64, f64)>),
}

/// The controller's own time per invocation, drawn with a seed.
pub struct ControllerOverhead {
    dist: Dist,
    rng: SplitMix64,
    source: String,
}

/// At most this many samples or this large a file: a measured distribution, not a trace.
const MAX_BYTES: u64 = 64 << 20;
/// The largest time accepted, in microseconds (an hour): beyond is a unit mistake.
const MAX_US: f64 = 3.6e9;

impl ControllerOverhead {
    /// Reads `path` (see the module's documentation for the formats); draws with `seed`.
    pub fn load(path: &Path, seed: u64) -> anyhow::Result<Self> {
        let what = || format!("controller overhead file {}", path.display());
        let len = std::fs::metadata(path).with_context(|| format!("cannot read {}", what()))?.len();
        if len > MAX_BYTES {
            bail!("{} is {len} bytes, over the {MAX_BYTES} accepted", what());
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", what()))?;
        let dist = parse(&text).with_context(what)?;
        Ok(ControllerOverhead { dist, rng: SplitMix64::new(seed), source: path.display().to_string() })
    }

    /// The next invocation's overhead: the time drawn (what `controller_ms` reports) and
    /// the whole milliseconds the virtual clock advances by.
    pub fn draw(&self) -> (Duration, Duration) {
        let u = unit(&self.rng);
        let us = match &self.dist {
            Dist::Samples(s) => s[((u * s.len() as f64) as usize).min(s.len() - 1)],
            Dist::Quantiles(q) => interpolate(q, u),
        };
        let ms = us / 1000.0;
        let whole = ms.floor() + if unit(&self.rng) < ms.fract() { 1.0 } else { 0.0 };
        (Duration::from_nanos((us * 1000.0).round() as u64), Duration::from_millis(whole as u64))
    }

    /// What a summary records of it.
    pub fn describe(&self) -> Value {
        let (kind, points) = match &self.dist {
            Dist::Samples(s) => ("samples", s.len()),
            Dist::Quantiles(q) => ("percentiles", q.len()),
        };
        json!({"file": self.source, "kind": kind, "points": points})
    }
}

/// A uniform draw in [0, 1).
fn unit(rng: &SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn interpolate(q: &[(f64, f64)], u: f64) -> f64 {
    let i = q.partition_point(|(p, _)| *p <= u);
    match (i.checked_sub(1).map(|j| q[j]), q.get(i)) {
        (None, Some(&(_, v))) | (Some((_, v)), None) => v,
        (Some((p0, v0)), Some(&(p1, v1))) => v0 + (v1 - v0) * (u - p0) / (p1 - p0),
        (None, None) => 0.0,
    }
}

fn check_us(v: f64, what: &str) -> anyhow::Result<f64> {
    if !v.is_finite() || !(0.0..=MAX_US).contains(&v) {
        bail!("{what} is {v}: a time in microseconds must lie in 0..={MAX_US}");
    }
    Ok(v)
}

fn parse(text: &str) -> anyhow::Result<Dist> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return samples(text);
    }
    let v: Value = serde_json::from_str(text).context("not valid JSON")?;
    let object = match v.get("steps") {
        Some(steps) => steps
            .get(0)
            .and_then(|s| s.get("controller_us"))
            .context("a controller-bench report without steps[0].controller_us")?,
        None => &v,
    };
    percentiles(object)
}

fn samples(text: &str) -> anyhow::Result<Dist> {
    let mut out = Vec::new();
    for (i, word) in text.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).enumerate() {
        let v: f64 = word.parse().map_err(|_| anyhow::anyhow!("sample {} is not a number: {word:?}", i + 1))?;
        out.push(check_us(v, &format!("sample {}", i + 1))?);
    }
    if out.is_empty() {
        bail!("holds no sample (expected microseconds separated by spaces, commas or lines, or a JSON object)");
    }
    Ok(Dist::Samples(out))
}

/// The quantile a percentile key names.
fn quantile(key: &str) -> Option<f64> {
    match key {
        "min" => Some(0.0),
        "max" => Some(1.0),
        "p999" => Some(0.999),
        _ => key.strip_prefix('p')?.parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)).map(|p| p / 100.0),
    }
}

fn percentiles(object: &Value) -> anyhow::Result<Dist> {
    let map = object.as_object().context("percentiles must be a JSON object")?;
    let mut points = Vec::new();
    for (k, v) in map {
        if k == "count" || k == "mean" {
            continue;
        }
        let q = quantile(k)
            .with_context(|| format!("unknown key {k:?}: percentiles are min, max, pX (X in 0..=100) or p999"))?;
        let us = v.as_f64().with_context(|| format!("{k} is not a number: {v}"))?;
        points.push((q, check_us(us, k)?));
    }
    if points.is_empty() {
        bail!("holds no percentile (expected keys such as p50, p99, max)");
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    for w in points.windows(2) {
        if w[0].0 == w[1].0 {
            bail!("two keys name the quantile {}", w[0].0);
        }
        if w[1].1 < w[0].1 {
            bail!("percentiles must not decrease: {} us at quantile {}, {} us at {}", w[0].1, w[0].0, w[1].1, w[1].0);
        }
    }
    Ok(Dist::Quantiles(points))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(text: &str) -> Dist {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e:#}"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).expect_err(text))
    }

    #[test]
    fn every_format_is_read() {
        assert_eq!(dist("40 50\n60,70\n"), Dist::Samples(vec![40.0, 50.0, 60.0, 70.0]));
        assert_eq!(
            dist(r#"{"count": 9, "mean": 3, "p50": 40, "p999": 300, "max": 900, "p99.5": 200}"#),
            Dist::Quantiles(vec![(0.5, 40.0), (0.995, 200.0), (0.999, 300.0), (1.0, 900.0)])
        );
        let report = r#"{"steps": [{"clients": 1, "controller_us": {"count": 5, "p50": 41.5, "p99": 90}},
                                   {"clients": 4, "controller_us": {"p50": 400}}]}"#;
        assert_eq!(dist(report), Dist::Quantiles(vec![(0.5, 41.5), (0.99, 90.0)]));
    }

    #[test]
    fn hostile_files_are_refused_with_the_reason() {
        assert!(err("").contains("no sample"), "{}", err(""));
        assert!(err("40 x").contains("sample 2 is not a number"), "{}", err("40 x"));
        assert!(err("40 -1").contains("sample 2 is -1"), "{}", err("40 -1"));
        assert!(err("NaN").contains("must lie in"), "{}", err("NaN"));
        assert!(err("1e300").contains("must lie in"), "{}", err("1e300"));
        assert!(err("{").contains("not valid JSON"), "{}", err("{"));
        assert!(err(r#"{"p50": 40, "q": 1}"#).contains("unknown key \"q\""));
        assert!(err(r#"{"p150": 40}"#).contains("unknown key"));
        assert!(err(r#"{"p50": 90, "p99": 40}"#).contains("must not decrease"));
        assert!(err(r#"{"p50": "fast"}"#).contains("p50 is not a number"));
        assert!(err(r#"{"count": 3}"#).contains("no percentile"));
        assert!(err(r#"{"steps": []}"#).contains("without steps[0].controller_us"));
    }

    #[test]
    fn draws_follow_the_distribution_and_the_clock_keeps_its_mean() {
        let q = vec![(0.5, 1000.0), (1.0, 3000.0)];
        assert_eq!(interpolate(&q, 0.1), 1000.0, "below the lowest percentile, its value");
        assert_eq!(interpolate(&q, 0.75), 2000.0);
        assert_eq!(interpolate(&q, 1.0), 3000.0);
        let o =
            ControllerOverhead { dist: Dist::Samples(vec![2500.0]), rng: SplitMix64::new(7), source: String::new() };
        let n = 10_000;
        let mut clock_ms = 0;
        for _ in 0..n {
            let (drawn, advance) = o.draw();
            assert_eq!(drawn, Duration::from_micros(2500));
            assert!([2, 3].contains(&advance.as_millis()), "{advance:?}");
            clock_ms += advance.as_millis();
        }
        let mean = clock_ms as f64 / n as f64;
        assert!((mean - 2.5).abs() < 0.03, "the clock advanced {mean} ms on average for 2.5 ms drawn");
        let seq = |seed| {
            let o = ControllerOverhead {
                dist: Dist::Quantiles(q.clone()),
                rng: SplitMix64::new(seed),
                source: String::new(),
            };
            (0..100).map(|_| o.draw()).collect::<Vec<_>>()
        };
        assert_eq!(seq(1), seq(1), "the same seed draws the same");
        assert_ne!(seq(1), seq(2));
        assert!(seq(1).iter().all(|(d, _)| (1000..=3000).contains(&d.as_micros())));
    }
}
