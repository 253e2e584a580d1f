//! `iluvatar_load_gen`: drives load at a worker and measures it.

use clap::{Parser, Subcommand};
use iluvatar_load_gen::target::Setup;

#[derive(Parser)]
#[command(name = "iluvatar_load_gen", version, about = "Load generation and benchmarks for Ilúvatar")]
struct Cli {
    /// Threads of the load generator's runtime; 0 means the number of cores.
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    /// A file (mode 0600) holding the bearer token sent to a live worker or controller
    /// configured with `auth.token_file` (gRPC calls and the controller's HTTP API).
    #[arg(long, global = true, env = "ILUVATAR_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replays a trace open-loop: registers every function, optionally prewarms, sends each
    /// invocation at its time, and writes per-invocation CSV, a JSON summary and SVG plots.
    Trace(iluvatar_load_gen::replay::TraceArgs),
    /// Open-loop arrivals at a given rate (Poisson or fixed gaps) over a function mix.
    Rate(iluvatar_load_gen::replay::RateArgs),
    /// Closed-loop clients stepping from --start to --end: throughput and latency per step.
    Scaling(iluvatar_load_gen::scaling::ScalingArgs),
    /// Cold and warm iterations of every function in a functions directory; writes JSON
    /// usable as `trace --function-data`.
    Benchmark(iluvatar_load_gen::benchmark::BenchmarkArgs),
    /// Writes a trace and its metadata: synthetic distributions or the Azure 2019 dataset.
    #[command(subcommand)]
    Generate(iluvatar_load_gen::generate::GenerateCommand),
    /// Pure control-plane cost: warm invokes of a zero-duration sim function over gRPC on
    /// loopback with closed-loop clients; prints p50/p99 overhead and invocations/s and
    /// writes JSON.
    ControlPlane(iluvatar_load_gen::control_plane::Args),
    /// The latency the controller adds: starts a controller and a sim worker behind it, runs
    /// closed-loop clients through the controller and straight to the worker, prints
    /// percentiles and writes JSON.
    ControllerBench(iluvatar_load_gen::controller_bench::Args),
    /// Simulation speed: replays a generated workload of about 1.3 million invocations in
    /// simulation; prints invocations per wall-clock second and peak memory, writes JSON.
    SimBench(iluvatar_load_gen::sim_bench::Args),
    /// Live vs simulated: a resampled calibration trace, metadata calibrated from a live run
    /// of it, and a per-function comparison of a live and a simulated run
    /// (scripts/fidelity.sh).
    #[command(subcommand)]
    Fidelity(iluvatar_load_gen::fidelity::Command),
    /// Simulations over a parameter grid (`--grid 'container_pool.memory_mb=1024,2048;...'`),
    /// in parallel; writes sweep.csv with a row per point.
    Sweep(iluvatar_load_gen::sweep::Args),
    /// Real containers (runtime backend): cold starts, warm overhead closed- and open-loop,
    /// idle container memory; prints a table and writes JSON.
    WorkerBench(iluvatar_load_gen::worker_bench::Args),
    /// A long mix of cold starts, warm calls and faulty functions against a live worker on
    /// real containers: calls answered and lost, the worker's RSS and descriptors over time,
    /// and what is left on the host after it stops; writes JSON.
    Soak(iluvatar_load_gen::soak::Args),
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let auth = iluvatar_rpc::auth::ClientAuth::from_file(cli.token_file.as_deref()).map_err(anyhow::Error::msg)?;
    iluvatar_load_gen::target::set_auth(auth);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if cli.threads > 0 {
        runtime.worker_threads(cli.threads);
    }
    match cli.command {
        Command::Generate(cmd) => return iluvatar_load_gen::generate::run(cmd),
        Command::Sweep(args) => return iluvatar_load_gen::sweep::run(args),
        Command::Fidelity(cmd) => return iluvatar_load_gen::fidelity::run(cmd),
        _ => {}
    }
    let simulated = match &cli.command {
        Command::Trace(a) => a.target.setup == Setup::Simulation,
        Command::Rate(a) => a.target.setup == Setup::Simulation,
        Command::SimBench(_) => true,
        _ => false,
    };
    if simulated {
        // Virtual time: one thread, a paused clock that jumps to the next timer.
        let runtime = iluvatar_load_gen::sim::runtime()?;
        return runtime.block_on(async {
            match cli.command {
                Command::Trace(args) => iluvatar_load_gen::replay::run_trace(args).await,
                Command::Rate(args) => iluvatar_load_gen::replay::run_rate(args).await,
                Command::SimBench(args) => iluvatar_load_gen::sim_bench::run(args).await,
                _ => unreachable!("only trace, rate and sim-bench simulate"),
            }
        });
    }
    if matches!(cli.command, Command::Trace(_) | Command::Rate(_))
        && std::env::var_os("ILUVATAR_LOADGEN_NO_RT").is_none()
    {
        // The runtime's threads send each request the scheduler thread hands over; at a
        // real-time priority, busy worker threads on the same cores cannot delay that.
        runtime.on_thread_start(|| {
            iluvatar_load_gen::schedule::set_realtime_priority();
        });
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Trace(args) => iluvatar_load_gen::replay::run_trace(args).await,
            Command::Rate(args) => iluvatar_load_gen::replay::run_rate(args).await,
            Command::Scaling(args) => iluvatar_load_gen::scaling::run(args).await,
            Command::Benchmark(args) => iluvatar_load_gen::benchmark::run(args).await,
            Command::Generate(_) | Command::SimBench(_) | Command::Sweep(_) | Command::Fidelity(_) => {
                unreachable!("handled above")
            }
            Command::ControlPlane(args) => iluvatar_load_gen::control_plane::run(args).await,
            Command::ControllerBench(args) => iluvatar_load_gen::controller_bench::run(args).await,
            Command::WorkerBench(args) => iluvatar_load_gen::worker_bench::run(args).await,
            Command::Soak(args) => iluvatar_load_gen::soak::run(args).await,
        }
    })
}
