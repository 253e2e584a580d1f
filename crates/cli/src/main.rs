//! `iluvatar_worker_cli`: drives a worker over gRPC. Prints readable JSON on stdout;
//! errors go to stderr with a non-zero exit code.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use iluvatar_rpc as rpc;
use iluvatar_rpc::auth::{ClientAuth, ControllerClient, WorkerClient};
use serde_json::{Value, json};
use tonic::transport::Channel;

#[derive(Parser)]
#[command(name = "iluvatar_worker_cli", version, about = "Command-line client of the Ilúvatar worker")]
struct Cli {
    /// The worker's address.
    #[arg(long, visible_alias = "host", global = true, default_value = "127.0.0.1")]
    address: String,
    /// The worker's gRPC port.
    #[arg(long, global = true, default_value_t = 8079)]
    port: u16,
    /// Talk to a controller (IluvatarController) instead of a worker: ping, register,
    /// invoke, invoke-async, invoke-async-check and prewarm.
    #[arg(long, global = true)]
    controller: bool,
    /// A file (mode 0600) holding the bearer token to send, for a worker or controller
    /// configured with `auth.token_file`.
    #[arg(long, global = true, env = "ILUVATAR_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct FunctionId {
    /// Function name.
    #[arg(long)]
    name: String,
    /// Function version.
    #[arg(long)]
    version: String,
}

#[derive(clap::Args)]
struct Arguments {
    /// An argument `key=value` (a string); repeat for more.
    #[arg(short = 'a', long = "argument")]
    args: Vec<String>,
    /// All arguments as one JSON object, e.g. '{"n": 3}'; merged under the -a ones.
    #[arg(short = 'j', long)]
    json_args: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the worker answers.
    Ping,
    /// Register a function.
    Register {
        #[command(flatten)]
        id: FunctionId,
        /// Image reference the backend resolves.
        #[arg(long, conflicts_with = "code")]
        image: Option<String>,
        /// A folder holding main.py (sent as the reference `code:/absolute/path`).
        #[arg(long)]
        code: Option<std::path::PathBuf>,
        /// Memory limit in MB.
        #[arg(long, default_value_t = 128)]
        memory: i64,
        /// CPUs.
        #[arg(long, default_value_t = 1)]
        cpu: u32,
        /// Isolation backend: runtime or sim; the worker's default if unset. containerd and
        /// docker (the reference platform's names) are sent as such: the worker serves them
        /// with its backend that runs OCI images (runtime).
        #[arg(long)]
        isolation: Option<String>,
        /// The server an image's container runs, when the image's entrypoint is not
        /// Ilúvatar's agent: http (port 8080, the reference platform's default) or unix (its
        /// Unix-socket variant). Code folders and agent images ignore it.
        #[arg(long, default_value = "http")]
        server: String,
        /// Language of a code function: python3 or none.
        #[arg(long, default_value = "python3")]
        language: String,
        /// Cold and warm durations as JSON, e.g. '{"cold_dur_ms": 500, "warm_dur_ms": 20}'.
        #[arg(long, default_value = "")]
        resource_timings_json: String,
    },
    /// Invoke a function and wait for its result.
    Invoke {
        #[command(flatten)]
        id: FunctionId,
        #[command(flatten)]
        args: Arguments,
    },
    /// Start an invocation; prints the cookie to collect its result with.
    InvokeAsync {
        #[command(flatten)]
        id: FunctionId,
        #[command(flatten)]
        args: Arguments,
    },
    /// Collect an async invocation's result (once).
    InvokeAsyncCheck {
        /// The cookie invoke-async printed.
        #[arg(long)]
        cookie: String,
    },
    /// Start a container ahead of time.
    Prewarm {
        #[command(flatten)]
        id: FunctionId,
    },
    /// The worker's load.
    Status,
    /// Whether the worker is healthy.
    Health,
    /// Registered functions.
    List,
    /// Remove every idle container.
    Clean,
}

fn tid() -> String {
    format!("cli-{}", std::process::id())
}

fn isolation_flag(name: &str) -> anyhow::Result<u32> {
    match rpc::isolation::requested_flag(name) {
        Some(flag) => Ok(flag),
        None => {
            let theirs: Vec<&str> = rpc::isolation::PROTOCOL_ONLY.iter().map(|(n, _)| *n).collect();
            bail!("unknown isolation {name:?}; valid: {}, {}", rpc::isolation::names(), theirs.join(", "))
        }
    }
}

fn build_args(a: &Arguments) -> anyhow::Result<String> {
    let mut obj = match &a.json_args {
        Some(text) => match serde_json::from_str::<Value>(text).context("--json-args is not valid JSON")? {
            Value::Object(m) => m,
            _ => bail!("--json-args must be a JSON object"),
        },
        None => Default::default(),
    };
    for kv in &a.args {
        let (k, v) = kv.split_once('=').with_context(|| format!("argument {kv:?} is not key=value"))?;
        obj.insert(k.to_string(), Value::String(v.to_string()));
    }
    let text = Value::Object(obj).to_string();
    if text.len() > rpc::MAX_PAYLOAD_BYTES {
        bail!("the arguments are {} bytes, over the largest payload of {} bytes", text.len(), rpc::MAX_PAYLOAD_BYTES);
    }
    Ok(text)
}

fn state_name(s: i32) -> &'static str {
    rpc::ContainerState::try_from(s).map(|s| s.as_str_name()).unwrap_or("UNKNOWN")
}

/// An invocation's response as readable JSON; `Err` with the same JSON if it failed.
fn invoke_report(r: rpc::InvokeResponse) -> Result<Value, Value> {
    let result: Value = serde_json::from_str(&r.json_result).unwrap_or(Value::String(r.json_result.clone()));
    let report = json!({
        "success": r.success,
        "container_state": state_name(r.container_state),
        "duration_us": r.duration_us,
        "result": result,
    });
    if r.success { Ok(report) } else { Err(report) }
}

/// A worker or a controller: the calls both services offer go to either.
enum Target {
    Worker(WorkerClient),
    Controller(ControllerClient),
}

type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

macro_rules! both {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        impl Target {
            $(async fn $name(&mut self, r: $req) -> Reply<$resp> {
                match self {
                    Target::Worker(c) => c.$name(r).await,
                    Target::Controller(c) => c.$name(r).await,
                }
            })*
        }
    };
}

both! {
    ping(rpc::PingRequest) -> rpc::PingResponse;
    register(rpc::RegisterRequest) -> rpc::RegisterResponse;
    invoke(rpc::InvokeRequest) -> rpc::InvokeResponse;
    invoke_async(rpc::InvokeAsyncRequest) -> rpc::InvokeAsyncResponse;
    invoke_async_check(rpc::InvokeAsyncLookupRequest) -> rpc::InvokeResponse;
    prewarm(rpc::PrewarmRequest) -> rpc::PrewarmResponse;
}

impl Target {
    /// The worker client, for the calls only a worker offers.
    fn worker(&mut self) -> anyhow::Result<&mut WorkerClient> {
        match self {
            Target::Worker(c) => Ok(c),
            Target::Controller(_) => {
                bail!("the controller offers ping, register, invoke, invoke-async, invoke-async-check and prewarm")
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Value> {
    let auth = ClientAuth::from_file(cli.token_file.as_deref()).map_err(anyhow::Error::msg)?;
    let endpoint = format!("http://{}:{}", cli.address, cli.port);
    let channel = Channel::from_shared(endpoint.clone())?.connect().await.with_context(|| {
        format!("cannot reach the {} at {endpoint}", if cli.controller { "controller" } else { "worker" })
    })?;
    let mut c = if cli.controller {
        Target::Controller(rpc::auth::controller_client(channel, auth))
    } else {
        Target::Worker(rpc::auth::worker_client(channel, auth))
    };
    let tid = tid();
    let out = match cli.command {
        Command::Ping => {
            let r = c.ping(rpc::PingRequest { message: "Ping".into(), transaction_id: tid }).await?.into_inner();
            json!({"message": r.message})
        }
        Command::Register { id, image, code, memory, cpu, isolation, server, language, resource_timings_json } => {
            let image_name = match (image, code) {
                (Some(i), None) => i,
                (None, Some(dir)) => {
                    let abs = std::fs::canonicalize(&dir)
                        .with_context(|| format!("code folder {} not found", dir.display()))?;
                    format!("code:{}", abs.display())
                }
                _ => bail!("give one of --image or --code"),
            };
            let language = match language.as_str() {
                "python3" => rpc::LanguageRuntime::Python3,
                "none" | "nolang" => rpc::LanguageRuntime::Nolang,
                other => bail!("unknown language {other:?}; valid: python3, none"),
            };
            let req = rpc::RegisterRequest {
                function_name: id.name,
                function_version: id.version,
                image_name,
                memory,
                cpus: cpu,
                parallel_invokes: 1,
                transaction_id: tid,
                language: language as i32,
                compute: rpc::compute::CPU,
                isolate: isolation.as_deref().map(isolation_flag).transpose()?.unwrap_or(0),
                container_server: rpc::container_server::parse(&server)
                    .with_context(|| format!("unknown --server {server:?}; valid: http, unix"))?,
                resource_timings_json,
                system_function: false,
            };
            let r = c.register(req).await?.into_inner();
            if !r.success {
                bail!("registration failed: {}", r.error);
            }
            json!({"success": true, "fqdn": r.fqdn})
        }
        Command::Invoke { id, args } => {
            let req = rpc::InvokeRequest {
                function_name: id.name,
                function_version: id.version,
                json_args: build_args(&args)?,
                transaction_id: tid,
            };
            match invoke_report(c.invoke(req).await?.into_inner()) {
                Ok(v) => v,
                Err(v) => bail!("invocation failed: {}", serde_json::to_string_pretty(&v)?),
            }
        }
        Command::InvokeAsync { id, args } => {
            let req = rpc::InvokeAsyncRequest {
                function_name: id.name,
                function_version: id.version,
                json_args: build_args(&args)?,
                transaction_id: tid,
            };
            let r = c.invoke_async(req).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner();
            json!({"success": r.success, "cookie": r.lookup_cookie})
        }
        Command::InvokeAsyncCheck { cookie } => {
            let req = rpc::InvokeAsyncLookupRequest { lookup_cookie: cookie, transaction_id: tid };
            let r = c.invoke_async_check(req).await?.into_inner();
            let pending = rpc::json_result::parse(&r.json_result).and_then(|v| v.pending);
            match (pending, invoke_report(r)) {
                (Some(msg), _) => json!({"success": false, "pending": true, "message": msg}),
                (None, Ok(v)) => v,
                (None, Err(v)) => bail!("invocation failed: {}", serde_json::to_string_pretty(&v)?),
            }
        }
        Command::Prewarm { id } => {
            let req = rpc::PrewarmRequest {
                function_name: id.name,
                function_version: id.version,
                transaction_id: tid,
                compute: rpc::compute::CPU,
            };
            let r = c.prewarm(req).await?.into_inner();
            if !r.success {
                bail!("prewarm failed: {}", r.message);
            }
            json!({"success": true, "message": r.message})
        }
        Command::Status => {
            let r = c.worker()?.status(rpc::StatusRequest { transaction_id: tid }).await?.into_inner();
            serde_json::to_value(r)?
        }
        Command::Health => {
            let r = c.worker()?.health(rpc::HealthRequest { transaction_id: tid }).await?.into_inner();
            let status = rpc::RpcHealthStatus::try_from(r.status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
            json!({"status": status})
        }
        Command::List => {
            let r =
                c.worker()?.list_registered_funcs(rpc::ListFunctionRequest { transaction_id: tid }).await?.into_inner();
            serde_json::to_value(r)?
        }
        Command::Clean => {
            c.worker()?.clean(rpc::CleanRequest { transaction_id: tid }).await?;
            json!({"success": true})
        }
    };
    Ok(out)
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
