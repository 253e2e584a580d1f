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

/// Where a live target listens.
#[derive(clap::Args, Clone)]
pub struct Endpoint {
    /// The target's gRPC host.
    #[arg(long, default_value = "127.0.0.1", help_heading = "Target")]
    pub host: String,
    /// The target's gRPC port.
    #[arg(long, default_value_t = 8079, help_heading = "Target")]
    pub port: u16,
    /// A file (mode 0600) holding the bearer token sent to a live worker or controller
    /// configured with `auth.token_file` (gRPC calls and the controller's HTTP API).
    #[arg(long, env = "ILUVATAR_TOKEN_FILE", help_heading = "Target")]
    pub token_file: Option<PathBuf>,
}

impl Endpoint {
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }
}

/// How a workload's functions are registered and prewarmed.
#[derive(clap::Args, Clone)]
pub struct FunctionArgs {
    /// The backend functions are registered with (live; a simulation always uses `sim`):
    /// `runtime` registers functions/synthetic parameterised from the metadata
    /// (compute_ms = warm_dur_ms, resident_mb = mem_mb: a working set the container's first
    /// call allocates and keeps, and an import cost of cold_dur_ms - warm_dur_ms), or the
    /// metadata's image_name; `sim` registers simulated functions taking
    /// cold_dur_ms/warm_dur_ms (or drawn from the metadata's samples). (A worker also
    /// accepts the reference platform's containerd and docker, served by its runtime
    /// backend: `iluvatar_worker_cli register --isolation containerd`.)
    #[arg(long, value_enum, default_value = "runtime", help_heading = "Functions")]
    pub isolation: Isolation,
    /// The folder holding the example functions (synthetic/ for the runtime backend).
    #[arg(long, default_value = "functions", help_heading = "Functions")]
    pub functions_dir: PathBuf,
    /// JSON written by `benchmark`: with it, each function without an image_name runs the
    /// benchmarked real function whose warm time is closest to its warm_dur_ms (runtime
    /// backend).
    #[arg(long, help_heading = "Functions")]
    pub function_data: Option<PathBuf>,
    /// Extra memory (MB) registered above mem_mb for functions/synthetic, for the Python
    /// interpreter itself, so that touching mem_mb does not hit the container's limit.
    #[arg(long, default_value_t = 32, help_heading = "Functions")]
    pub runtime_headroom_mb: u64,
    /// The version every function is registered as.
    #[arg(long, default_value = "1", help_heading = "Functions")]
    pub version: String,
    /// Containers to prewarm per function before the load starts, for functions whose
    /// metadata has no `prewarms` (nor a `mean_iat`, with --prewarm-from-iat).
    #[arg(long, default_value_t = 0, help_heading = "Functions")]
    pub prewarm: u32,
    /// Prewarm, for each function with a `mean_iat` (ms) and no `prewarms` in the metadata,
    /// the calls expected during one cold start: ceil(cold_dur_ms / mean_iat), at most
    /// --max-prewarms.
    #[arg(long, help_heading = "Functions")]
    pub prewarm_from_iat: bool,
    /// The most containers --prewarm-from-iat prewarms for one function.
    #[arg(long, default_value_t = 5, help_heading = "Functions")]
    pub max_prewarms: u32,
}

/// Options shared by every command that sends load to a target.
#[derive(clap::Args, Clone)]
pub struct TargetArgs {
    /// What to send load to.
    #[arg(long, value_enum, default_value = "worker", help_heading = "Target")]
    pub target: TargetKind,
    /// Live load, or a simulation of it.
    #[arg(long, value_enum, default_value = "live", help_heading = "Target")]
    pub setup: Setup,
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// gRPC connections the invocations are spread over (live).
    #[arg(long, default_value_t = 4, help_heading = "Target")]
    pub connections: usize,
    #[command(flatten)]
    pub functions: FunctionArgs,
    /// The worker's config file (JSON or TOML, as for iluvatar_worker); its isolation
    /// backends are replaced by its `sim` one (or a default `sim`); its registry is kept in
    /// memory (its state directory is not used). It must set invoker.concurrency (0, the
    /// live default, would mean this machine's cores).
    #[arg(long, help_heading = "Simulation (--setup simulation)")]
    pub worker_config: Option<PathBuf>,
    /// A simulated cluster: the controller's config file (JSON or TOML, as for
    /// iluvatar_controller); its `balancer` routes every invocation. Implies a cluster
    /// (as do --target controller and --workers).
    #[arg(long, help_heading = "Simulation (--setup simulation)")]
    pub controller_config: Option<PathBuf>,
    /// A simulated cluster: the number of simulated workers (each configured by
    /// --worker-config, with a seed derived from --seed).
    #[arg(long, help_heading = "Simulation (--setup simulation)")]
    pub workers: Option<usize>,
    /// A simulated cluster: the controller's own time per invocation, drawn from this
    /// measured distribution (a `controller-bench` report, a JSON object of percentiles in
    /// µs such as {"p50": 40, "p99": 120}, or samples in µs) and added on the virtual clock
    /// before each invocation reaches its worker; reported as controller_ms.
    #[arg(long, help_heading = "Simulation (--setup simulation)")]
    pub controller_overhead: Option<PathBuf>,
    /// The controller's HTTP address (HOST:PORT), asked for its healthy workers
    /// (GET /workers) before any load. Default: --host at --port + 1 (the controller's
    /// default layout), used only if it answers.
    #[arg(long, help_heading = "Live controller (--target controller)")]
    pub controller_http: Option<String>,
    /// Healthy workers to wait for before registering.
    #[arg(long, default_value_t = 1, help_heading = "Live controller (--target controller)")]
    pub min_workers: usize,
    /// How long to wait for --min-workers healthy workers.
    #[arg(long, default_value_t = 30.0, help_heading = "Live controller (--target controller)")]
    pub wait_workers_s: f64,
    /// No progress output.
    #[arg(long, help_heading = "Results")]
    pub quiet: bool,
    /// Seconds from the start left out of the summary, the table and the latency CDF (the
    /// start-up transient: cold starts of every function, queues filling); the time plots
    /// show them shaded, invocations.csv keeps every row.
    #[arg(long, default_value_t = 0.0, help_heading = "Results")]
    pub warmup_s: f64,
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

/// How one workload function is registered, prewarmed and invoked.
pub struct Plan {
    pub register: rpc::RegisterRequest,
    pub json_args: String,
    /// Containers to prewarm before the load.
    pub prewarm: u32,
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
        if !(self.warmup_s >= 0.0 && self.warmup_s.is_finite()) {
            bail!("--warmup-s must be a number of seconds >= 0");
        }
        Ok(())
    }

    /// A simulation of a cluster behind the controller's balancer (rather than one worker).
    pub fn simulated_cluster(&self) -> bool {
        self.setup == Setup::Simulation
            && (self.target == TargetKind::Controller || self.controller_config.is_some() || self.workers.is_some())
    }

    pub fn endpoint(&self) -> String {
        self.endpoint.url()
    }

    /// The registration plans of a workload's functions, validated before any load.
    pub fn plans(&self, meta: &[FunctionMeta]) -> anyhow::Result<Vec<Plan>> {
        self.functions.plans(self.setup, meta)
    }
}

impl FunctionArgs {
    /// The backend functions are registered with: always `sim` in a simulation.
    pub fn isolation(&self, setup: Setup) -> Isolation {
        match setup {
            Setup::Simulation => Isolation::Sim,
            Setup::Live => self.isolation,
        }
    }

    /// The registration plans of a workload's functions, validated before any load.
    pub fn plans(&self, setup: Setup, meta: &[FunctionMeta]) -> anyhow::Result<Vec<Plan>> {
        let isolation = self.isolation(setup);
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
        let needs_synthetic = meta.iter().any(|f| f.image_name.is_none());
        let synthetic = match (isolation, &data) {
            (Isolation::Runtime, None) if needs_synthetic => Some(code_folder(&self.functions_dir.join("synthetic"))?),
            _ => None,
        };
        Ok(meta.iter().map(|f| self.plan(isolation, f, data.as_ref(), synthetic.as_deref())).collect())
    }

    /// Containers to prewarm for `f`: the metadata's `prewarms`; else, with
    /// --prewarm-from-iat and a `mean_iat`, the calls expected during one cold start
    /// (at most --max-prewarms); else --prewarm.
    pub fn prewarm_of(&self, f: &FunctionMeta) -> u32 {
        match (f.prewarms, f.mean_iat_ms) {
            (Some(n), _) => n,
            (None, Some(iat)) if self.prewarm_from_iat => {
                ((f.cold_dur_ms / iat).ceil().min(u32::MAX as f64) as u32).min(self.max_prewarms)
            }
            _ => self.prewarm,
        }
    }

    fn plan(
        &self,
        isolation: Isolation,
        f: &FunctionMeta,
        data: Option<&FunctionData>,
        synthetic: Option<&Path>,
    ) -> Plan {
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
        match (isolation, &f.image_name, data) {
            (Isolation::Sim, _, _) => {
                register.image_name = "sim:synthetic".into();
                register.isolate = rpc::isolation::SIM;
                json_args = "{}".to_string();
            }
            (Isolation::Runtime, Some(image), _) => {
                // The metadata names the function's code or image: registered as it is, with
                // the metadata's memory, invoked without arguments.
                register.image_name = image.clone();
                register.isolate = rpc::isolation::RUNTIME;
                register.language = rpc::LanguageRuntime::Python3 as i32;
                json_args = "{}".to_string();
            }
            (Isolation::Runtime, None, Some(d)) => {
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
            (Isolation::Runtime, None, None) => {
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
        Plan { register, json_args, prewarm: self.prewarm_of(f) }
    }
}

/// The containers prewarmed per function, for the results: `{name: count}` of those with any.
pub fn prewarmed(plans: &[Plan]) -> serde_json::Value {
    let m: serde_json::Map<String, serde_json::Value> =
        plans.iter().filter(|p| p.prewarm > 0).map(|p| (p.register.function_name.clone(), p.prewarm.into())).collect();
    serde_json::Value::Object(m)
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
