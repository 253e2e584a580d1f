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
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::ControlPlane(args) => iluvatar_load_gen::control_plane::run(args).await,
            Command::WorkerBench(args) => iluvatar_load_gen::worker_bench::run(args).await,
        }
    })
}
