//! `iluvatar_controller`: runs a controller from a config file.

use anyhow::Context;
use clap::Parser;
use iluvatar_controller::config::ControllerConfig;
use iluvatar_service::process::{init_logging, shutdown_signal};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "iluvatar_controller", version, about = "The Ilúvatar controller (load balancer)")]
struct Args {
    /// Config file (JSON, or TOML with a .toml extension); every field has a default.
    #[arg(short, long)]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = ControllerConfig::load(args.config.as_deref(), std::env::vars())?;
    init_logging(&config.log_level, false);
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
