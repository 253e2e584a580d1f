//! `iluvatar_controller`: runs a controller from a config file.

use anyhow::Context;
use clap::Parser;
use iluvatar_controller::config::ControllerConfig;
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
    init_logging(&config.log_level);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.threads > 0 {
        runtime.worker_threads(config.threads);
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        let env = iluvatar_controller::clock::live_env();
        tracing::info!(seed = env.seed, "starting controller");
        // Handlers are installed before the ready line, so that a signal arriving at any
        // point after it shuts the controller down gracefully.
        let stop = shutdown_signal()?;
        iluvatar_controller::run(config, env, stop).await.context("controller failed")
    })
}

fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

fn init_logging(level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
