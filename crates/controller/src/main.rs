//! `iluvatar_controller`: runs a controller from a config file, or benchmarks one.

use anyhow::Context;
use clap::{Parser, Subcommand};
use iluvatar_controller::config::ControllerConfig;
use iluvatar_service::process::{init_logging, shutdown_signal};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "iluvatar_controller", version, about = "The Ilúvatar controller (load balancer)")]
struct Args {
    /// Config file (JSON, or TOML with a .toml extension); every field has a default.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the latency the controller adds: starts a worker and a controller, runs
    /// closed-loop clients through the controller, prints percentiles and writes JSON.
    Bench(iluvatar_controller::bench::Args),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Bench(b)) = args.command {
        init_logging("warn");
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return runtime.block_on(iluvatar_controller::bench::run(b));
    }
    let config = ControllerConfig::load(args.config.as_deref(), std::env::vars())?;
    init_logging(&config.log_level);
    let runtime = iluvatar_service::process::runtime(config.threads)?;
    runtime.block_on(async {
        let env = iluvatar_service::clock::live_env();
        tracing::info!(seed = env.seed, "starting controller");
        // Handlers are installed before the ready line, so that a signal arriving at any
        // point after it shuts the controller down gracefully.
        let stop = shutdown_signal()?;
        iluvatar_controller::run(config, env, stop).await.context("controller failed")
    })
}
