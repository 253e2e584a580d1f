//! `iluvatar_worker_cli`: drives a worker (or, with `--controller`, a controller) over gRPC.
//! Prints readable JSON on stdout; errors go to stderr with a non-zero exit code, naming the
//! address and the likely mistake (explain.rs).

mod explain;
mod reference;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use explain::Target as Place;
use iluvatar_rpc as rpc;
use iluvatar_rpc::auth::{ClientAuth, ClusterAdminClient, ControllerClient, WorkerClient};
use serde_json::{Value, json};
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "iluvatar_worker_cli",
    version,
    about = "Command-line client of the Ilúvatar worker and controller (over gRPC)",
    after_help = "Each command says which service offers it. Output is JSON on stdout; errors go to stderr \
                  with exit code 1."
)]
struct Cli {
    /// The worker's (or controller's) host name or IP address.
    #[arg(long, visible_alias = "host", global = true, default_value = "127.0.0.1", help_heading = "Connection")]
    address: String,
    /// The gRPC port (grpc.port in the service's config, printed in its ready line); not
    /// the HTTP port. [default: 8079, or 8089 with --controller]
    #[arg(long, global = true, help_heading = "Connection")]
    port: Option<u16>,
    /// Talk to a controller instead of a worker (commands marked "worker and controller",
    /// and deregister-worker).
    #[arg(long, global = true, help_heading = "Connection")]
    controller: bool,
    /// A file (mode 0600) holding the bearer token to send, for a worker or controller
    /// configured with `auth.token_file`.
    #[arg(long, global = true, env = "ILUVATAR_TOKEN_FILE", help_heading = "Connection")]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct FunctionId {
    /// Function name (A-Z, a-z, 0-9, '.', '_', '-').
    #[arg(long)]
    name: String,
    /// Function version (same characters); the function is known as NAME-VERSION.
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
    /// Check that the service answers (worker and controller).
    Ping,
    /// Register a function (worker and controller).
    Register {
        #[command(flatten)]
        id: FunctionId,
        /// A folder holding main.py; a relative path is taken from the current folder (sent
        /// as the reference `code:/absolute/path`).
        #[arg(long, conflicts_with = "image")]
        code: Option<std::path::PathBuf>,
        /// An image reference: `oci:DIR[:tag]` (an OCI layout) or `oci-archive:FILE[:tag]`,
        /// relative paths taken from the current folder; `code:DIR[?NAME=value&...]`; for
        /// the sim backend, any name.
        #[arg(long)]
        image: Option<String>,
        /// An environment variable `NAME=value` of the function's containers (code functions;
        /// names A-Z, 0-9, _, not ILUVATAR_*); repeat for more. `list` shows NAME=<hidden>.
        #[arg(long = "env", value_name = "NAME=value")]
        env: Vec<String>,
        /// Network of a code function's containers: none (the default) or loopback (lo up,
        /// no route off the machine).
        #[arg(long, value_parser = ["none", "loopback"])]
        network: Option<String>,
        /// Memory limit of each container, in MB.
        #[arg(long, default_value_t = 128)]
        memory: i64,
        /// CPUs of each container (its CPU quota).
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
        #[arg(long, default_value = "http", value_parser = ["http", "unix"])]
        server: String,
        /// Language of a code function: python3, or none for an image.
        #[arg(long, default_value = "python3", value_parser = ["python3", "none"])]
        language: String,
        /// Expected cold and warm durations as JSON, e.g. '{"cold_dur_ms": 500, "warm_dur_ms": 20}':
        /// what the sim backend takes, and the queue policies' first estimates.
        #[arg(long, default_value = "")]
        resource_timings_json: String,
    },
    /// Invoke a function and wait for its result (worker and controller).
    Invoke {
        #[command(flatten)]
        id: FunctionId,
        #[command(flatten)]
        args: Arguments,
    },
    /// Start an invocation; prints the cookie to collect its result with (worker and controller).
    InvokeAsync {
        #[command(flatten)]
        id: FunctionId,
        #[command(flatten)]
        args: Arguments,
    },
    /// Collect an async invocation's result, once (worker and controller).
    InvokeAsyncCheck {
        /// The cookie invoke-async printed.
        #[arg(long)]
        cookie: String,
    },
    /// Start a container ahead of time (worker and controller).
    Prewarm {
        #[command(flatten)]
        id: FunctionId,
    },
    /// The worker's load (worker only).
    Status {
        /// Also what the worker learnt of each function (the characteristics map: cold, warm,
        /// execution and inter-arrival times, memory).
        #[arg(long)]
        functions: bool,
    },
    /// Whether the worker is healthy (worker only).
    Health,
    /// Registered functions (worker only).
    List,
    /// Remove every idle container (worker only).
    Clean,
    /// Forget a worker, by the name it registered with (controller only).
    ///
    /// No invocation goes to it any more and the controller's store drops it. A worker that
    /// still runs with a heartbeat registers itself again: stop it first.
    DeregisterWorker {
        /// The worker's name (`GET /workers` on the controller's HTTP port lists them).
        #[arg(long)]
        name: String,
    },
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
enum Client {
    Worker(WorkerClient),
    Controller(ControllerClient, Box<ClusterAdminClient>),
}

macro_rules! both {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        impl Client {
            $(async fn $name(&mut self, r: $req, place: &Place) -> anyhow::Result<$resp> {
                let answer = match self {
                    Client::Worker(c) => c.$name(r).await,
                    Client::Controller(c, _) => c.$name(r).await,
                };
                answer.map(tonic::Response::into_inner).map_err(|s| place.failed(s))
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

impl Client {
    /// The worker client, for the calls only a worker offers.
    fn worker(&mut self, command: &str) -> anyhow::Result<&mut WorkerClient> {
        match self {
            Client::Worker(c) => Ok(c),
            Client::Controller(..) => bail!(
                "{command} is a worker's command; the controller offers ping, register, invoke, invoke-async, \
                 invoke-async-check, prewarm and deregister-worker"
            ),
        }
    }

    /// The controller's membership client, for the calls only a controller offers.
    fn admin(&mut self, command: &str) -> anyhow::Result<&mut ClusterAdminClient> {
        match self {
            Client::Controller(_, a) => Ok(a),
            Client::Worker(_) => bail!("{command} is a controller's command: add --controller (and its gRPC port)"),
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Value> {
    let auth = ClientAuth::from_file(cli.token_file.as_deref()).map_err(anyhow::Error::msg)?;
    let port = cli.port.unwrap_or(if cli.controller { 8089 } else { 8079 });
    let place = Place { address: format!("{}:{port}", cli.address), controller: cli.controller };
    let endpoint = format!("http://{}", place.address);
    let channel = Channel::from_shared(endpoint)
        .with_context(|| format!("{:?} is not a host name or address (--address)", cli.address))?
        .connect_timeout(explain::CONNECT_TIMEOUT)
        .connect()
        .await
        .map_err(|e| place.unreachable(&e))?;
    let mut c = if cli.controller {
        Client::Controller(
            rpc::auth::controller_client(channel.clone(), auth.clone()),
            Box::new(rpc::auth::cluster_admin_client(channel, auth)),
        )
    } else {
        Client::Worker(rpc::auth::worker_client(channel, auth))
    };
    let tid = tid();
    let p = &place;
    let failed = |s: tonic::Status| place.failed(s);
    let out = match cli.command {
        Command::Ping => {
            let r = c.ping(rpc::PingRequest { message: "Ping".into(), transaction_id: tid }, p).await?;
            json!({"message": r.message})
        }
        Command::Register {
            id,
            image,
            code,
            env,
            network,
            memory,
            cpu,
            isolation,
            server,
            language,
            resource_timings_json,
        } => {
            let flags = reference::Flags {
                image: image.as_deref(),
                code: code.as_deref(),
                env: &env,
                network: network.as_deref(),
            };
            let image_name = reference::build(&flags)?;
            let language = match language.as_str() {
                "python3" => rpc::LanguageRuntime::Python3,
                _ => rpc::LanguageRuntime::Nolang,
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
                container_server: rpc::container_server::parse(&server).unwrap_or_default(),
                resource_timings_json,
                system_function: false,
            };
            let r = c.register(req, p).await?;
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
            match invoke_report(c.invoke(req, p).await?) {
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
            let r = c.invoke_async(req, p).await?;
            json!({"success": r.success, "cookie": r.lookup_cookie})
        }
        Command::InvokeAsyncCheck { cookie } => {
            let req = rpc::InvokeAsyncLookupRequest { lookup_cookie: cookie, transaction_id: tid };
            let r = c.invoke_async_check(req, p).await?;
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
            let r = c.prewarm(req, p).await?;
            if !r.success {
                bail!("prewarm failed: {}", r.message);
            }
            json!({"success": true, "message": r.message})
        }
        Command::Status { functions } => {
            let req = rpc::StatusRequest { transaction_id: tid, functions };
            let r = c.worker("status")?.status(req).await.map_err(failed)?.into_inner();
            let mut v = serde_json::to_value(&r)?;
            if let Some(o) = v.as_object_mut() {
                o.remove("functions_json");
                if functions {
                    let map: serde_json::Value = serde_json::from_str(&r.functions_json)
                        .map_err(|e| anyhow::anyhow!("the worker's functions_json is not JSON: {e}"))?;
                    o.insert("functions".into(), map["functions"].clone());
                }
            }
            v
        }
        Command::Health => {
            let r = c.worker("health")?.health(rpc::HealthRequest { transaction_id: tid }).await.map_err(failed)?;
            let status = rpc::RpcHealthStatus::try_from(r.into_inner().status);
            json!({"status": status.map(|s| s.as_str_name()).unwrap_or("UNKNOWN")})
        }
        Command::List => {
            let req = rpc::ListFunctionRequest { transaction_id: tid };
            let r = c.worker("list")?.list_registered_funcs(req).await.map_err(failed)?;
            serde_json::to_value(r.into_inner())?
        }
        Command::Clean => {
            c.worker("clean")?.clean(rpc::CleanRequest { transaction_id: tid }).await.map_err(failed)?;
            json!({"success": true})
        }
        Command::DeregisterWorker { name } => {
            let req = rpc::DeregisterWorkerRequest { name: name.clone(), transaction_id: tid };
            let r = c.admin("deregister-worker")?.deregister_worker(req).await.map_err(failed)?.into_inner();
            json!({"success": true, "name": name, "address": r.address})
        }
    };
    Ok(out)
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(v) => {
            use std::io::Write;
            let text = serde_json::to_string_pretty(&v).unwrap_or_default();
            // A reader that stops early (`| grep -q`, `| head`) is not an error of ours.
            match writeln!(std::io::stdout().lock(), "{text}") {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: cannot print the answer: {e}");
                    std::process::exit(1);
                }
                _ => {}
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
