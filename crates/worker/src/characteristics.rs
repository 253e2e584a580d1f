//! The characteristics map: what the worker has learnt of each function (cold, warm and
//! execution times, inter-arrival time, memory), kept in one place by the invoker. It feeds
//! the queue policies' estimates and `est_invoke_time`, and is shown at `/metrics` and
//! `GET /functions/characteristics`.

use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Weight of the newest sample in the smoothed figures.
pub const EWMA: f64 = 0.2;

/// A running summary of one kind of sample, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub min_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub latest_us: f64,
    /// Exponentially weighted ([`EWMA`]); the first sample as it is.
    pub smoothed_us: f64,
}

impl Summary {
    pub fn add(&mut self, x: f64) {
        if self.count == 0 {
            *self = Summary { count: 1, min_us: x, max_us: x, mean_us: x, latest_us: x, smoothed_us: x };
            return;
        }
        self.count += 1;
        self.min_us = self.min_us.min(x);
        self.max_us = self.max_us.max(x);
        self.mean_us += (x - self.mean_us) / self.count as f64;
        self.latest_us = x;
        self.smoothed_us = self.smoothed_us * (1.0 - EWMA) + x * EWMA;
    }

    /// The smoothed figure, if there has been a sample.
    pub fn smoothed(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.smoothed_us.max(0.0) as u64))
    }
}

/// What is known of one function.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FunctionCharacteristics {
    /// The registration's memory (MB).
    pub memory_mb: u64,
    /// Worker time (container acquisition and call) of invocations that started a container.
    pub cold: Summary,
    /// Worker time of invocations served by a warm or prewarmed container.
    pub warm: Summary,
    /// The function's own running time, as the container measured it, every invocation.
    pub exec: Summary,
    /// Time between arrivals.
    pub iat: Summary,
    #[serde(skip)]
    last_arrival: Option<Duration>,
}

/// The per-function map, behind one short lock per touch.
#[derive(Default)]
pub struct Characteristics {
    map: Mutex<HashMap<Arc<str>, FunctionCharacteristics>>,
}

impl Characteristics {
    /// Records an arrival of `fqdn` at `now`; returns its smoothed inter-arrival time once
    /// it has arrived twice.
    pub fn note_arrival(&self, fqdn: &Arc<str>, memory_mb: u64, now: Duration) -> Option<Duration> {
        let mut map = self.map.lock().unwrap();
        let c = match map.get_mut(fqdn) {
            Some(c) => c,
            None => map.entry(fqdn.clone()).or_default(),
        };
        c.memory_mb = memory_mb;
        let last = c.last_arrival.replace(now)?;
        c.iat.add(now.saturating_sub(last).as_micros() as f64);
        c.iat.smoothed()
    }

    /// Records a finished invocation: its worker time (cold or warm) and the function's own
    /// running time.
    pub fn record(&self, fqdn: &Arc<str>, memory_mb: u64, cold: bool, worker: Duration, exec: Duration) {
        let mut map = self.map.lock().unwrap();
        let c = match map.get_mut(fqdn) {
            Some(c) => c,
            None => map.entry(fqdn.clone()).or_default(),
        };
        c.memory_mb = memory_mb;
        let slot = if cold { &mut c.cold } else { &mut c.warm };
        slot.add(worker.as_micros() as f64);
        c.exec.add(exec.as_micros() as f64);
    }

    /// Smoothed (cold, warm) worker times of `fqdn`, where seen.
    pub fn times(&self, fqdn: &str) -> (Option<Duration>, Option<Duration>) {
        let map = self.map.lock().unwrap();
        map.get(fqdn).map(|c| (c.cold.smoothed(), c.warm.smoothed())).unwrap_or_default()
    }

    /// The mean over functions that ran of their longer smoothed time (cold or warm).
    pub fn mean_longest(&self) -> Duration {
        let map = self.map.lock().unwrap();
        let xs: Vec<f64> =
            map.values().map(|c| c.warm.smoothed_us.max(c.cold.smoothed_us)).filter(|x| *x > 0.0).collect();
        if xs.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_micros((xs.iter().sum::<f64>() / xs.len() as f64) as u64)
        }
    }

    pub fn get(&self, fqdn: &str) -> Option<FunctionCharacteristics> {
        self.map.lock().unwrap().get(fqdn).cloned()
    }

    /// Every function's characteristics, by fqdn.
    pub fn snapshot(&self) -> Vec<(String, FunctionCharacteristics)> {
        let map = self.map.lock().unwrap();
        let mut all: Vec<_> = map.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Appends the map in the Prometheus text format: times in seconds labelled by fqdn,
    /// kind (cold, warm, exec, iat) and stat (min, max, mean, latest, smoothed); sample
    /// counts; memory.
    pub fn render(&self, out: &mut String) {
        let all = self.snapshot();
        if all.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP iluvatar_function_time_seconds What the worker learnt of each function's times.\n# TYPE iluvatar_function_time_seconds gauge"
        );
        for (fqdn, c) in &all {
            let fqdn = escape(fqdn);
            for (kind, s) in [("cold", &c.cold), ("warm", &c.warm), ("exec", &c.exec), ("iat", &c.iat)] {
                if s.count == 0 {
                    continue;
                }
                for (stat, v) in [
                    ("min", s.min_us),
                    ("max", s.max_us),
                    ("mean", s.mean_us),
                    ("latest", s.latest_us),
                    ("smoothed", s.smoothed_us),
                ] {
                    let _ = writeln!(
                        out,
                        "iluvatar_function_time_seconds{{fqdn=\"{fqdn}\",kind=\"{kind}\",stat=\"{stat}\"}} {:.6}",
                        v / 1e6
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP iluvatar_function_samples Samples behind each function's figures.\n# TYPE iluvatar_function_samples gauge"
        );
        for (fqdn, c) in &all {
            let fqdn = escape(fqdn);
            for (kind, s) in [("cold", &c.cold), ("warm", &c.warm), ("exec", &c.exec), ("iat", &c.iat)] {
                let _ = writeln!(out, "iluvatar_function_samples{{fqdn=\"{fqdn}\",kind=\"{kind}\"}} {}", s.count);
            }
        }
        let _ = writeln!(
            out,
            "# HELP iluvatar_function_memory_mb Each function's registered memory (MB).\n# TYPE iluvatar_function_memory_mb gauge"
        );
        for (fqdn, c) in &all {
            let _ = writeln!(out, "iluvatar_function_memory_mb{{fqdn=\"{}\"}} {}", escape(fqdn), c.memory_mb);
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn summary_keeps_min_max_mean_latest_and_smoothed() {
        let mut s = Summary::default();
        assert_eq!(s.smoothed(), None);
        for x in [100.0, 300.0, 200.0] {
            s.add(x);
        }
        assert_eq!((s.count, s.min_us, s.max_us, s.mean_us, s.latest_us), (3, 100.0, 300.0, 200.0, 200.0));
        // 100, then 100*0.8 + 300*0.2 = 140, then 140*0.8 + 200*0.2 = 152.
        assert!((s.smoothed_us - 152.0).abs() < 1e-9, "{}", s.smoothed_us);
    }

    #[test]
    fn arrivals_give_inter_arrival_times_from_the_second_on() {
        let c = Characteristics::default();
        let f: Arc<str> = "f-1".into();
        assert_eq!(c.note_arrival(&f, 128, ms(1000)), None);
        assert_eq!(c.note_arrival(&f, 128, ms(1500)), Some(ms(500)));
        assert_eq!(c.note_arrival(&f, 128, ms(3000)), Some(ms(700)), "500*0.8 + 1500*0.2");
        let got = c.get("f-1").unwrap();
        assert_eq!((got.iat.count, got.iat.min_us, got.iat.max_us, got.memory_mb), (2, 500e3, 1500e3, 128));
        assert_eq!(got.iat.mean_us, 1000e3);
    }

    #[test]
    fn cold_and_warm_are_kept_apart_and_exec_takes_both() {
        let c = Characteristics::default();
        let f: Arc<str> = "f-1".into();
        assert_eq!(c.times("f-1"), (None, None));
        c.record(&f, 64, true, ms(500), ms(20));
        c.record(&f, 64, false, ms(30), ms(25));
        c.record(&f, 64, false, ms(40), ms(35));
        assert_eq!(c.times("f-1"), (Some(ms(500)), Some(ms(32))));
        let got = c.get("f-1").unwrap();
        assert_eq!((got.cold.count, got.warm.count, got.exec.count), (1, 2, 3));
        assert_eq!((got.exec.min_us, got.exec.max_us, got.exec.latest_us), (20e3, 35e3, 35e3));
        // The longer smoothed time of each function, averaged.
        c.record(&"g-1".into(), 64, false, ms(100), ms(90));
        assert_eq!(c.mean_longest(), ms(300));
    }

    #[test]
    fn renders_labelled_by_fqdn() {
        let c = Characteristics::default();
        let mut out = String::new();
        c.render(&mut out);
        assert_eq!(out, "", "nothing before a function is seen");
        let f: Arc<str> = "f-1".into();
        c.note_arrival(&f, 256, ms(0));
        c.record(&f, 256, true, ms(1500), ms(250));
        c.render(&mut out);
        for line in [
            "iluvatar_function_time_seconds{fqdn=\"f-1\",kind=\"cold\",stat=\"max\"} 1.500000",
            "iluvatar_function_time_seconds{fqdn=\"f-1\",kind=\"exec\",stat=\"smoothed\"} 0.250000",
            "iluvatar_function_samples{fqdn=\"f-1\",kind=\"warm\"} 0",
            "iluvatar_function_samples{fqdn=\"f-1\",kind=\"cold\"} 1",
            "iluvatar_function_memory_mb{fqdn=\"f-1\"} 256",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
        }
        assert!(!out.contains("kind=\"warm\",stat"), "no figures without samples:\n{out}");
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
    }
}
