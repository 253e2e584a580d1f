//! `benchmark`: cold and warm iterations of every function in a functions directory (the
//! suite in `functions/` by default); the JSON it writes is `--function-data` for `trace`.

#![allow(clippy::disallowed_methods)] // client latency is wall-clock time by definition

use crate::sending::connect::connect;
use crate::sending::target::{BenchmarkedFunction, Endpoint, FunctionData, Isolation, code_folder};
use anyhow::{Context, bail};
use iluvatar_rpc as rpc;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchmarkArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// Every folder in it holding a main.py is benchmarked; its arguments come from an
    /// args.json beside main.py, or are {}. A requirements.txt there is installed by the
    /// worker at the first registration (its time is `register_ms`).
    #[arg(long, default_value = "functions")]
    pub functions_dir: PathBuf,
    /// Only these functions (folder names, comma-separated); default: all of them.
    #[arg(long, value_delimiter = ',')]
    pub functions: Vec<String>,
    /// The backend the functions are registered with.
    #[arg(long, value_enum, default_value = "runtime")]
    pub isolation: Isolation,
    /// Cold invocations per function (each the first of a freshly registered version).
    #[arg(long, default_value_t = 10)]
    pub cold_iters: usize,
    /// Warm invocations per function.
    #[arg(long, default_value_t = 100)]
    pub warm_iters: usize,
    /// The memory (MB) every function is registered with.
    #[arg(long, default_value_t = 128)]
    pub memory_mb: u64,
    /// The JSON written (`trace --function-data`), replaced if it exists.
    #[arg(long, default_value = "results/function_data.json")]
    pub out: PathBuf,
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The function folders to measure: those holding main.py, or the ones named.
fn folders(dir: &Path, only: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("main.py").is_file())
        .collect();
    all.sort();
    if all.is_empty() {
        bail!("{}: no folder with a main.py", dir.display());
    }
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some(missing) = only.iter().find(|n| !all.iter().any(|p| &name(p) == *n)) {
        let names: Vec<String> = all.iter().map(name).collect();
        bail!("--functions: no function {missing:?} in {} (it has: {})", dir.display(), names.join(", "));
    }
    Ok(all.into_iter().filter(|p| only.is_empty() || only.contains(&name(p))).collect())
}

/// What one function's invocations measured, in milliseconds.
#[derive(Default)]
struct Samples {
    /// Client latency of cold invocations, and the worker's container start within them.
    cold: Vec<f64>,
    cold_start: Vec<f64>,
    /// Client latency of warm invocations, and the in-function time within them.
    warm: Vec<f64>,
    warm_function: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

impl Samples {
    /// Records an invocation: a cold one in a cold round, a warm one in the warm round, or
    /// (`sample` false: the warm round's own cold start) only its error if it failed.
    fn record(&mut self, r: &rpc::InvokeResponse, ms: f64, cold_round: bool, sample: bool) {
        if !r.success {
            self.errors += 1;
            self.first_error.get_or_insert_with(|| r.json_result.clone());
            return;
        }
        let timings = rpc::json_result::parse(&r.json_result).and_then(|v| v.timings);
        let us = |f: fn(&rpc::json_result::TimingsView) -> Option<f64>| timings.as_ref().and_then(f).map(|x| x / 1e3);
        if cold_round && r.container_state == rpc::ContainerState::Cold as i32 {
            self.cold.push(ms);
            self.cold_start.extend(us(|t| t.cold_start_us));
        } else if !cold_round && sample {
            self.warm.push(ms);
            self.warm_function.extend(us(|t| t.function_us));
        }
    }
}

pub async fn run(a: BenchmarkArgs) -> anyhow::Result<()> {
    let folders = folders(&a.functions_dir, &a.functions)?;
    let endpoint = a.endpoint.url();
    let mut c = connect(&endpoint).await?;
    let mut out = Vec::new();
    println!(
        "{:<18} {:>11} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "function", "register ms", "cold p50", "start p50", "warm p50", "in-fn p50", "errors"
    );
    for folder in folders {
        let code = code_folder(&folder)?;
        let name = code.file_name().and_then(|n| n.to_str()).unwrap_or("function").to_string();
        let args = match std::fs::read_to_string(code.join("args.json")) {
            Ok(t) => serde_json::from_str(&t).with_context(|| format!("{}/args.json", code.display()))?,
            Err(_) => json!({}),
        };
        let mut s = Samples::default();
        let mut register_ms = Vec::new();
        for i in 0..a.cold_iters + 1 {
            // Versions cold0.. are timed once each; the last one is then reused warm.
            let cold_round = i < a.cold_iters;
            let version = if cold_round { format!("bench-cold{i}") } else { "bench-warm".into() };
            let t0 = Instant::now();
            let r = c
                .register(rpc::RegisterRequest {
                    function_name: name.clone(),
                    function_version: version.clone(),
                    image_name: format!("code:{}", code.display()),
                    memory: a.memory_mb as i64,
                    cpus: 1,
                    isolate: if a.isolation == Isolation::Sim { rpc::isolation::SIM } else { rpc::isolation::RUNTIME },
                    language: rpc::LanguageRuntime::Python3 as i32,
                    ..Default::default()
                })
                .await?
                .into_inner();
            register_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            if !r.success {
                bail!("registering {name}-{version}: {}", r.error);
            }
            let iters = if cold_round { 1 } else { a.warm_iters + 1 };
            for k in 0..iters {
                let req = rpc::InvokeRequest {
                    function_name: name.clone(),
                    function_version: version.clone(),
                    json_args: args.to_string(),
                    transaction_id: format!("bench-{name}-{i}-{k}"),
                };
                let t0 = Instant::now();
                let r = c.invoke(req).await?.into_inner();
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                // A warm round's first call is its cold start: not a warm sample.
                s.record(&r, ms, cold_round, cold_round || k > 0);
            }
            if cold_round {
                c.clean(rpc::CleanRequest::default()).await?;
            }
        }
        let (cold_ms_p50, warm_ms_p50) = (median(s.cold.clone()), median(s.warm.clone()));
        let first_register = register_ms.first().copied().unwrap_or(0.0);
        println!(
            "{name:<18} {first_register:>11.1} {cold_ms_p50:>10.2} {:>10.2} {warm_ms_p50:>10.2} {:>10.2} {:>7}",
            median(s.cold_start.clone()),
            median(s.warm_function.clone()),
            s.errors
        );
        let p = crate::results::percentiles;
        out.push(BenchmarkedFunction {
            name,
            memory_mb: a.memory_mb,
            args,
            cold_ms_p50,
            warm_ms_p50,
            detail: json!({
                "cold_ms": p(s.cold), "cold_start_ms": p(s.cold_start),
                "warm_ms": p(s.warm), "warm_function_ms": p(s.warm_function),
                "register_ms": register_ms,
                "requirements": code.join("requirements.txt").is_file(),
                "errors": s.errors, "first_error": s.first_error,
            }),
            code,
        });
    }
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, serde_json::to_vec_pretty(&FunctionData { functions: out })?)?;
    println!("wrote {} (use it as trace --function-data)", a.out.display());
    Ok(())
}
