//! A registered function: its identity (`Fqdn`), its resources, and their validation.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The fully-qualified name of a function: `name-version`, as Ilúvatar spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fqdn(pub String);

impl Fqdn {
    pub fn new(name: &str, version: &str) -> Self {
        Fqdn(format!("{name}-{version}"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fqdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The language of a code function (numbers match the protocol's `LanguageRuntime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Language {
    NoLang = 0,
    Python3 = 1,
}

/// Everything the worker knows about a registered function. Stored as is in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    pub name: String,
    pub version: String,
    /// An image or code reference that the function's backend resolves.
    pub image: String,
    pub memory_mb: u64,
    pub cpus: u32,
    pub parallel_invokes: u32,
    pub language: Language,
    /// Compute bit flags (CPU = 1).
    pub compute: u32,
    /// The one isolation backend bit this function runs on.
    pub isolation: u32,
    pub container_server: u32,
    /// The registration's resource timings, verbatim (may be empty).
    pub resource_timings_json: String,
    pub system_function: bool,
}

impl FunctionSpec {
    pub fn fqdn(&self) -> Fqdn {
        Fqdn::new(&self.name, &self.version)
    }

    /// Cold and warm durations declared at registration, if any.
    pub fn timings(&self) -> Result<Option<ResourceTimings>, SpecError> {
        ResourceTimings::parse(&self.resource_timings_json)
    }

    /// Checks every field against the worker's limits. The image reference is checked by
    /// the backend, which alone knows what it can resolve.
    pub fn validate(&self, limits: &SpecLimits) -> Result<(), SpecError> {
        check_ident("function_name", &self.name)?;
        check_ident("function_version", &self.version)?;
        if self.image.trim().is_empty() {
            return Err(SpecError::Empty("image_name"));
        }
        if self.memory_mb < limits.min_memory_mb || self.memory_mb > limits.max_memory_mb {
            return Err(SpecError::Memory {
                got: self.memory_mb as i64,
                min: limits.min_memory_mb,
                max: limits.max_memory_mb,
            });
        }
        if self.cpus == 0 || self.cpus > limits.max_cpus {
            return Err(SpecError::Cpus { got: self.cpus, max: limits.max_cpus });
        }
        if self.parallel_invokes > 1 {
            return Err(SpecError::ParallelInvokes(self.parallel_invokes));
        }
        if self.compute & !1 != 0 {
            return Err(SpecError::Compute(self.compute));
        }
        if self.container_server > 1 {
            return Err(SpecError::ContainerServer(self.container_server));
        }
        self.timings()?;
        Ok(())
    }
}

/// A reference as it may be shown: the values of the environment variables a code reference
/// carries (`code:/f?API_KEY=secret`) replaced by `<hidden>`, so that `list`, conflicts and
/// errors never echo them; `network=...` is not a secret and is kept.
pub fn shown_reference(reference: &str) -> String {
    let Some((base, query)) = reference.split_once('?') else { return reference.to_string() };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("network", v)) => format!("network={v}"),
            Some((k, _)) => format!("{k}=<hidden>"),
            None => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

fn check_ident(field: &'static str, value: &str) -> Result<(), SpecError> {
    if value.is_empty() {
        return Err(SpecError::Empty(field));
    }
    let ok = value.len() <= 128 && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(SpecError::BadIdent { field, value: value.to_string() });
    }
    Ok(())
}

/// The worker's limits on a registration.
#[derive(Debug, Clone, Copy)]
pub struct SpecLimits {
    pub min_memory_mb: u64,
    pub max_memory_mb: u64,
    pub max_cpus: u32,
}

/// A function's cold and warm durations, from `resource_timings_json`.
///
/// Two shapes are accepted: `{"cold_dur_ms": 500, "warm_dur_ms": 20}` (this project's, and
/// the trace metadata's columns), optionally with measured samples
/// `"cold_samples_ms": [..], "warm_samples_ms": [..]`, and Ilúvatar's `{"cpu":
/// {"cold_results_sec": [..], "warm_results_sec": [..]}}`, whose lists are the samples and
/// whose means are the durations. The `sim` backend draws each duration from the samples
/// when there are some (so that a simulation has the measured spread), else takes the
/// fixed durations.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceTimings {
    pub cold_ms: f64,
    pub warm_ms: f64,
    /// End-to-end times of cold invocations (container start plus the call), in ms.
    pub cold_samples_ms: Vec<f64>,
    /// Times of warm calls, in ms.
    pub warm_samples_ms: Vec<f64>,
    /// The idle time before each warm sample (the time since the function's previous call
    /// ended), in ms: empty, or one per warm sample.
    pub warm_idle_ms: Vec<f64>,
}

impl ResourceTimings {
    pub fn parse(text: &str) -> Result<Option<Self>, SpecError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| SpecError::ResourceTimings(why.to_string());
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        // A list of numbers at `key` of `obj`, each times `scale`; absent is empty.
        let list = |obj: &serde_json::Value, key: &str, what: &str, scale: f64| -> Result<Vec<f64>, SpecError> {
            match obj.get(key) {
                None => Ok(Vec::new()),
                Some(x) => {
                    let xs = x.as_array().ok_or_else(|| bad(&format!("{what} must be a list of numbers")))?;
                    xs.iter()
                        .map(|x| {
                            x.as_f64().map(|x| x * scale).ok_or_else(|| bad(&format!("{what} must hold numbers only")))
                        })
                        .collect()
                }
            }
        };
        let t = if let (Some(c), Some(w)) = (v.get("cold_dur_ms"), v.get("warm_dur_ms")) {
            let num = |x: &serde_json::Value, k: &str| x.as_f64().ok_or_else(|| bad(&format!("{k} must be a number")));
            ResourceTimings {
                cold_ms: num(c, "cold_dur_ms")?,
                warm_ms: num(w, "warm_dur_ms")?,
                cold_samples_ms: list(&v, "cold_samples_ms", "cold_samples_ms", 1.0)?,
                warm_samples_ms: list(&v, "warm_samples_ms", "warm_samples_ms", 1.0)?,
                warm_idle_ms: list(&v, "warm_idle_ms", "warm_idle_ms", 1.0)?,
            }
        } else if let Some(cpu) = v.get("cpu") {
            let samples = |k: &str| -> Result<Vec<f64>, SpecError> {
                let what = format!("cpu.{k}");
                if cpu.get(k).is_none() {
                    return Err(bad(&format!("{what} must be a list of seconds")));
                }
                let xs = list(cpu, k, &what, 1000.0)?;
                if xs.is_empty() {
                    return Err(bad(&format!("{what} has no numbers")));
                }
                Ok(xs)
            };
            let (cold, warm) = (samples("cold_results_sec")?, samples("warm_results_sec")?);
            let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
            ResourceTimings {
                cold_ms: mean(&cold),
                warm_ms: mean(&warm),
                cold_samples_ms: cold,
                warm_samples_ms: warm,
                warm_idle_ms: Vec::new(),
            }
        } else {
            return Err(bad(
                "expected {\"cold_dur_ms\", \"warm_dur_ms\"} or {\"cpu\": {\"cold_results_sec\", \"warm_results_sec\"}}",
            ));
        };
        let ok = |x: &f64| x.is_finite() && *x >= 0.0;
        let all = [t.cold_ms, t.warm_ms];
        if !all.iter().chain(&t.cold_samples_ms).chain(&t.warm_samples_ms).chain(&t.warm_idle_ms).all(ok) {
            return Err(bad("durations must be finite and not negative"));
        }
        if !t.warm_idle_ms.is_empty() && t.warm_idle_ms.len() != t.warm_samples_ms.len() {
            return Err(bad("warm_idle_ms must have one idle time per warm sample"));
        }
        Ok(Some(t))
    }
}

/// Why a registration is refused. Messages name the field and the bound.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{field} {value:?} may only hold letters, digits, '.', '_' and '-' (at most 128)")]
    BadIdent { field: &'static str, value: String },
    #[error("memory {got} MB is outside the allowed range {min}..={max} MB")]
    Memory { got: i64, min: u64, max: u64 },
    #[error("cpus {got} is outside the allowed range 1..={max}")]
    Cpus { got: u32, max: u32 },
    #[error("parallel_invokes {0} is not supported: a container runs one invocation at a time (use 0 or 1)")]
    ParallelInvokes(u32),
    #[error("compute {0:#x} is not available: this worker offers CPU (1) only")]
    Compute(u32),
    #[error("container_server {0} is unknown (HTTP = 0, UnixSocket = 1)")]
    ContainerServer(u32),
    #[error("language {0} is unknown (NOLANG = 0, PYTHON3 = 1)")]
    Language(i32),
    #[error("resource_timings_json is invalid: {0}")]
    ResourceTimings(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_references_hide_environment_values_only() {
        assert_eq!(shown_reference("code:/f"), "code:/f");
        assert_eq!(
            shown_reference("code:/f?API_KEY=s3cret&network=loopback&X=a=b"),
            "code:/f?API_KEY=<hidden>&network=loopback&X=<hidden>"
        );
        assert_eq!(shown_reference("oci:/img:latest"), "oci:/img:latest");
    }

    fn spec() -> FunctionSpec {
        FunctionSpec {
            name: "hello".into(),
            version: "1".into(),
            image: "img".into(),
            memory_mb: 128,
            cpus: 1,
            parallel_invokes: 1,
            language: Language::Python3,
            compute: 1,
            isolation: 32,
            container_server: 1,
            resource_timings_json: String::new(),
            system_function: false,
        }
    }
    const LIMITS: SpecLimits = SpecLimits { min_memory_mb: 5, max_memory_mb: 1024, max_cpus: 2 };

    #[test]
    fn valid_spec_passes_and_fqdn_joins_name_and_version() {
        assert_eq!(spec().validate(&LIMITS), Ok(()));
        assert_eq!(spec().fqdn().as_str(), "hello-1");
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = Box<dyn Fn(&mut FunctionSpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.name.clear()), "function_name must not be empty"),
            (Box::new(|s| s.version = "a b".into()), "function_version"),
            (Box::new(|s| s.image = " ".into()), "image_name must not be empty"),
            (Box::new(|s| s.memory_mb = 4096), "memory 4096 MB"),
            (Box::new(|s| s.cpus = 0), "cpus 0"),
            (Box::new(|s| s.parallel_invokes = 4), "parallel_invokes 4"),
            (Box::new(|s| s.compute = 2), "compute"),
            (Box::new(|s| s.resource_timings_json = "{".into()), "resource_timings_json"),
        ];
        for (mutate, expect) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = s.validate(&LIMITS).unwrap_err().to_string();
            assert!(err.contains(expect), "{err:?} should contain {expect:?}");
        }
    }

    #[test]
    fn resource_timings_both_shapes() {
        let a = ResourceTimings::parse(r#"{"cold_dur_ms": 500, "warm_dur_ms": 20}"#).unwrap();
        let fixed = ResourceTimings { cold_ms: 500.0, warm_ms: 20.0, ..Default::default() };
        assert_eq!(a, Some(fixed.clone()));
        let s = r#"{"cold_dur_ms": 500, "warm_dur_ms": 20, "cold_samples_ms": [450, 550], "warm_samples_ms": [19]}"#;
        let s = ResourceTimings::parse(s).unwrap().unwrap();
        assert_eq!((s.cold_samples_ms, s.warm_samples_ms), (vec![450.0, 550.0], vec![19.0]));
        let b =
            ResourceTimings::parse(r#"{"cpu": {"cold_results_sec": [0.4, 0.6], "warm_results_sec": [0.01, 0.03]}}"#)
                .unwrap()
                .unwrap();
        assert!((b.cold_ms - 500.0).abs() < 1e-9 && (b.warm_ms - 20.0).abs() < 1e-9);
        assert!((b.cold_samples_ms[1] - 600.0).abs() < 1e-9 && b.warm_samples_ms.len() == 2);
        assert_eq!(ResourceTimings::parse("").unwrap(), None);
        assert!(ResourceTimings::parse(r#"{"cold_dur_ms": -1, "warm_dur_ms": 0}"#).is_err());
        assert!(ResourceTimings::parse(r#"{"x": 1}"#).is_err());
        let idle = r#"{"cold_dur_ms": 5, "warm_dur_ms": 1, "warm_samples_ms": [1, 2], "warm_idle_ms": [0, 900]}"#;
        assert_eq!(ResourceTimings::parse(idle).unwrap().unwrap().warm_idle_ms, vec![0.0, 900.0]);
        for bad in [
            r#""warm_samples_ms": [1, -2]"#,
            r#""cold_samples_ms": 5"#,
            r#""cold_samples_ms": ["a"]"#,
            r#""warm_samples_ms": [1, 2], "warm_idle_ms": [3]"#,
        ] {
            let text = format!(r#"{{"cold_dur_ms": 5, "warm_dur_ms": 1, {bad}}}"#);
            let e = ResourceTimings::parse(&text).unwrap_err().to_string();
            assert!(e.contains("samples") || e.contains("negative") || e.contains("idle"), "{bad}: {e}");
        }
    }
}
