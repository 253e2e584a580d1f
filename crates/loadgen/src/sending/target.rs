//! Where load goes and how functions get there: the target's arguments (live or
//! simulated, a worker or a controller), and the registration plan of each function of a
//! workload (connecting is `sending::connect`).

use crate::workload::trace::FunctionMeta;
use anyhow::{Context, bail};
use iluvatar_rpc as rpc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// One worker, over its gRPC API.
    Worker,
    /// A controller in front of workers, over its gRPC API (live); in simulation, a
    /// simulated cluster behind the controller's balancer (see --controller-config).
    Controller,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Setup {
    /// Real load against a running target.
    Live,
    /// The same workload in virtual time: the real worker code in this process, with the
    /// `sim` backend, configured by --worker-config, seeded by --seed.
    Simulation,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Isolation {
    /// Real containers running functions/synthetic (or --function-data's functions).
    Runtime,
    /// Simulated containers that take the metadata's cold and warm durations.
    Sim,
}

/// Options shared by every command that sends load to a target.
#[derive(clap::Args, Clone)]
pub struct TargetArgs {
    /// What to send load to.
    #[arg(long, value_enum, default_value = "worker")]
    pub target: TargetKind,
    /// Live load, or a simulation of it.
    #[arg(long, value_enum, default_value = "live")]
    pub setup: Setup,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8079)]
    pub port: u16,
    /// The backend functions are registered with: `runtime` registers functions/synthetic
    /// parameterised from the metadata (compute_ms = warm_dur_ms, resident_mb = mem_mb: a
    /// working set the container's first call allocates and keeps, and an import cost of
    /// cold_dur_ms - warm_dur_ms); `sim` registers simulated functions taking
    /// cold_dur_ms/warm_dur_ms (or drawn from the metadata's samples).
    #[arg(long, value_enum, default_value = "runtime")]
    pub isolation: Isolation,
    /// The folder holding the example functions (synthetic/ for the runtime backend).
    #[arg(long, default_value = "functions")]
    pub functions_dir: PathBuf,
    /// JSON written by `benchmark`: with it, each function runs the benchmarked real
    /// function whose warm time is closest to its warm_dur_ms (runtime backend).
    #[arg(long)]
    pub function_data: Option<PathBuf>,
    /// Extra memory (MB) registered above mem_mb for the runtime backend, for the Python
    /// interpreter itself, so that touching mem_mb does not hit the container's limit.
    #[arg(long, default_value_t = 32)]
    pub runtime_headroom_mb: u64,
    /// The version every function is registered as.
    #[arg(long, default_value = "1")]
    pub version: String,
    /// Containers to prewarm per function before the load starts.
    #[arg(long, default_value_t = 0)]
    pub prewarm: u32,
    /// gRPC connections the invocations are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    /// Simulation: the worker's config file (JSON or TOML, as for iluvatar_worker); its
    /// isolation backends are replaced by its `sim` one (or a default `sim`); its registry is
    /// kept in memory (its state directory is not used). No file means the worker's defaults.
    #[arg(long)]
    pub worker_config: Option<PathBuf>,
    /// Simulation of a cluster: the controller's config file (JSON or TOML, as for
    /// iluvatar_controller); its `balancer` routes every invocation. Implies a cluster
    /// (as do --target controller and --workers).
    #[arg(long)]
    pub controller_config: Option<PathBuf>,
    /// Simulation of a cluster: the number of simulated workers (each configured by
    /// --worker-config, with a seed derived from --seed).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Simulation of a cluster: the controller's own time per invocation, drawn from this
    /// measured distribution (a `controller-bench` report, a JSON object of percentiles in
    /// µs such as {"p50": 40, "p99": 120}, or samples in µs) and added on the virtual clock
    /// before each invocation reaches its worker; reported as controller_ms.
    #[arg(long)]
    pub controller_overhead: Option<PathBuf>,
    /// Live --target controller: the controller's HTTP address (HOST:PORT), asked for its
    /// healthy workers (GET /workers) before any load. Default: --host at --port + 1 (the
    /// controller's default layout), used only if it answers.
    #[arg(long)]
    pub controller_http: Option<String>,
    /// Live --target controller: healthy workers to wait for before registering.
    #[arg(long, default_value_t = 1)]
    pub min_workers: usize,
    /// Live --target controller: how long to wait for --min-workers healthy workers.
    #[arg(long, default_value_t = 30.0)]
    pub wait_workers_s: f64,
}

/// One function measured by `benchmark`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct BenchmarkedFunction {
    pub name: String,
    /// The code folder (absolute).
    pub code: PathBuf,
    pub memory_mb: u64,
    /// The arguments it was benchmarked with.
    pub args: serde_json::Value,
    pub cold_ms_p50: f64,
    pub warm_ms_p50: f64,
    #[serde(default)]
    pub detail: serde_json::Value,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct FunctionData {
    pub functions: Vec<BenchmarkedFunction>,
}

/// How one workload function is registered and invoked.
pub struct Plan {
    pub register: rpc::RegisterRequest,
    pub json_args: String,
}

impl TargetArgs {
    /// Refuses what is not implemented, before anything else happens.
    pub fn check_supported(&self) -> anyhow::Result<()> {
        if self.setup == Setup::Live && self.worker_config.is_some() {
            bail!("--worker-config configures a simulated worker; it needs --setup simulation");
        }
        if self.setup == Setup::Live && (self.controller_config.is_some() || self.workers.is_some()) {
            bail!("--controller-config and --workers describe a simulated cluster; they need --setup simulation");
        }
        if self.workers == Some(0) {
            bail!("--workers must be at least 1");
        }
        if self.controller_overhead.is_some() && !self.simulated_cluster() {
            bail!(
                "--controller-overhead simulates a controller's own time: it needs a simulated cluster (--setup simulation with --workers, --controller-config or --target controller)"
            );
        }
        if self.target == TargetKind::Worker && self.controller_http.is_some() {
            bail!("--controller-http needs --target controller");
        }
        Ok(())
    }

    /// A simulation of a cluster behind the controller's balancer (rather than one worker).
    pub fn simulated_cluster(&self) -> bool {
        self.setup == Setup::Simulation
            && (self.target == TargetKind::Controller || self.controller_config.is_some() || self.workers.is_some())
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The registration plans of a workload's functions, validated before any load.
    pub fn plans(&self, meta: &[FunctionMeta]) -> anyhow::Result<Vec<Plan>> {
        let data = match &self.function_data {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
                let d: FunctionData =
                    serde_json::from_str(&text).with_context(|| format!("{}: not a benchmark JSON", p.display()))?;
                if d.functions.is_empty() {
                    bail!("{}: holds no function", p.display());
                }
                Some(d)
            }
            None => None,
        };
        let synthetic = match (self.isolation(), &data) {
            (Isolation::Runtime, None) => Some(code_folder(&self.functions_dir.join("synthetic"))?),
            _ => None,
        };
        Ok(meta.iter().map(|f| self.plan(f, data.as_ref(), synthetic.as_deref())).collect())
    }

    /// The backend functions are registered with: always `sim` in a simulation.
    pub fn isolation(&self) -> Isolation {
        match self.setup {
            Setup::Simulation => Isolation::Sim,
            Setup::Live => self.isolation,
        }
    }

    fn plan(&self, f: &FunctionMeta, data: Option<&FunctionData>, synthetic: Option<&Path>) -> Plan {
        let mut timings = json!({"cold_dur_ms": f.cold_dur_ms, "warm_dur_ms": f.warm_dur_ms});
        if !f.cold_samples_ms.is_empty() {
            timings["cold_samples_ms"] = json!(f.cold_samples_ms);
        }
        if !f.warm_samples_ms.is_empty() {
            timings["warm_samples_ms"] = json!(f.warm_samples_ms);
        }
        if !f.warm_idle_ms.is_empty() {
            timings["warm_idle_ms"] = json!(f.warm_idle_ms);
        }
        let timings = timings.to_string();
        let mut register = rpc::RegisterRequest {
            function_name: f.name.clone(),
            function_version: self.version.clone(),
            memory: f.mem_mb as i64,
            cpus: 1,
            resource_timings_json: timings,
            transaction_id: format!("register-{}", f.name),
            ..Default::default()
        };
        let json_args;
        match (self.isolation(), data) {
            (Isolation::Sim, _) => {
                register.image_name = "sim:synthetic".into();
                register.isolate = rpc::isolation::SIM;
                json_args = "{}".to_string();
            }
            (Isolation::Runtime, Some(d)) => {
                let best = d
                    .functions
                    .iter()
                    .min_by(|a, b| {
                        (a.warm_ms_p50 - f.warm_dur_ms).abs().total_cmp(&(b.warm_ms_p50 - f.warm_dur_ms).abs())
                    })
                    .expect("function data is not empty");
                register.image_name = format!("code:{}", best.code.display());
                register.isolate = rpc::isolation::RUNTIME;
                register.language = rpc::LanguageRuntime::Python3 as i32;
                register.memory = register.memory.max(best.memory_mb as i64);
                json_args = best.args.to_string();
            }
            (Isolation::Runtime, None) => {
                // The cold-start cost beyond the warm time is paid at import, per function.
                let import_ms = (f.cold_dur_ms - f.warm_dur_ms).max(0.0).round();
                let folder = synthetic.expect("synthetic folder").display();
                register.image_name = format!("code:{folder}?SYNTHETIC_IMPORT_MS={import_ms}");
                register.isolate = rpc::isolation::RUNTIME;
                register.language = rpc::LanguageRuntime::Python3 as i32;
                register.memory = (f.mem_mb + self.runtime_headroom_mb) as i64;
                json_args = json!({"compute_ms": f.warm_dur_ms, "resident_mb": f.mem_mb}).to_string();
            }
        }
        Plan { register, json_args }
    }
}

/// The absolute path of a function folder, which must hold main.py.
pub fn code_folder(path: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::fs::canonicalize(path)
        .with_context(|| format!("{}: no such function folder (set --functions-dir)", path.display()))?;
    if !abs.join("main.py").is_file() {
        bail!("{}: holds no main.py", abs.display());
    }
    Ok(abs)
}

/// The invoke request of each plan.
pub fn requests(plans: &[Plan]) -> Vec<rpc::InvokeRequest> {
    plans
        .iter()
        .map(|p| rpc::InvokeRequest {
            function_name: p.register.function_name.clone(),
            function_version: p.register.function_version.clone(),
            json_args: p.json_args.clone(),
            transaction_id: String::new(),
        })
        .collect()
}
