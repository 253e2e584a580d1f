//! `iluvatar_load_gen`: drives load at a worker and measures it.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "iluvatar_load_gen", version, about = "Load generation and benchmarks for Ilúvatar")]
struct Cli {
    /// Threads of the load generator's runtime; 0 means the number of cores.
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
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
    /// Real containers (runtime backend): cold starts, warm overhead closed- and open-loop,
    /// idle container memory; prints a table and writes JSON.
    WorkerBench(iluvatar_load_gen::worker_bench::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if cli.threads > 0 {
        runtime.worker_threads(cli.threads);
    }
    if let Command::Generate(cmd) = cli.command {
        return iluvatar_load_gen::generate::run(cmd);
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
            Command::Generate(_) => unreachable!("handled above"),
            Command::ControlPlane(args) => iluvatar_load_gen::control_plane::run(args).await,
            Command::WorkerBench(args) => iluvatar_load_gen::worker_bench::run(args).await,
        }
    })
}
