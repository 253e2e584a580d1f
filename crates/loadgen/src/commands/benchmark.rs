//! `benchmark`: cold and warm iterations of every function in a functions directory; the
//! JSON it writes is `--function-data` for `trace`.

#![allow(clippy::disallowed_methods)] // client latency is wall-clock time by definition

use crate::sending::connect::connect;
use crate::sending::target::{BenchmarkedFunction, Endpoint, FunctionData, Isolation, code_folder};
use anyhow::{Context, bail};
use iluvatar_rpc as rpc;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchmarkArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// Every folder in it holding a main.py is benchmarked; its arguments come from an
    /// args.json beside main.py, or are {}.
    #[arg(long, default_value = "functions")]
    pub functions_dir: PathBuf,
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

pub async fn run(a: BenchmarkArgs) -> anyhow::Result<()> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&a.functions_dir)
        .with_context(|| format!("{}: cannot list", a.functions_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("main.py").is_file())
        .collect();
    folders.sort();
    if folders.is_empty() {
        bail!("{}: no folder with a main.py", a.functions_dir.display());
    }
    let endpoint = a.endpoint.url();
    let mut c = connect(&endpoint, 1).await?.remove(0);
    let mut out = Vec::new();
    println!("{:<16} {:>10} {:>10} {:>7}", "function", "cold p50ms", "warm p50ms", "errors");
    for folder in folders {
        let code = code_folder(&folder)?;
        let name = code.file_name().and_then(|n| n.to_str()).unwrap_or("function").to_string();
        let args = match std::fs::read_to_string(code.join("args.json")) {
            Ok(t) => serde_json::from_str(&t).with_context(|| format!("{}/args.json", code.display()))?,
            Err(_) => json!({}),
        };
        let (mut cold, mut warm, mut errors) = (Vec::new(), Vec::new(), 0usize);
        let mut first_error = None;
        for i in 0..a.cold_iters + 1 {
            // Versions cold0.. are timed once each; the last one is then reused warm.
            let version = if i < a.cold_iters { format!("bench-cold{i}") } else { "bench-warm".into() };
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
            if !r.success {
                bail!("registering {name}-{version}: {}", r.error);
            }
            let iters = if i < a.cold_iters { 1 } else { a.warm_iters + 1 };
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
                if !r.success {
                    errors += 1;
                    first_error.get_or_insert(r.json_result);
                } else if i < a.cold_iters && r.container_state == rpc::ContainerState::Cold as i32 {
                    cold.push(ms);
                } else if k > 0 {
                    warm.push(ms);
                }
            }
            if i < a.cold_iters {
                c.clean(rpc::CleanRequest::default()).await?;
            }
        }
        let (cold_ms_p50, warm_ms_p50) = (median(cold.clone()), median(warm.clone()));
        println!("{name:<16} {cold_ms_p50:>10.2} {warm_ms_p50:>10.2} {errors:>7}");
        out.push(BenchmarkedFunction {
            name,
            code,
            memory_mb: a.memory_mb,
            args,
            cold_ms_p50,
            warm_ms_p50,
            detail: json!({"cold_ms": crate::results::percentiles(cold), "warm_ms": crate::results::percentiles(warm),
                "errors": errors, "first_error": first_error}),
        });
    }
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, serde_json::to_vec_pretty(&FunctionData { functions: out })?)?;
    println!("wrote {} (use it as trace --function-data)", a.out.display());
    Ok(())
}
