//! `iluvatar_worker`: runs a worker from a config file, or cleans up after earlier runs.

use anyhow::Context;
use clap::{Parser, Subcommand};
use iluvatar_worker::config::WorkerConfig;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "iluvatar_worker", version, about = "The Ilúvatar worker daemon")]
struct Args {
    /// Config file (JSON, or TOML with a .toml extension); every field has a default.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Remove everything earlier runs left behind (containers, their files); keeps registrations.
    Clean,
}

fn main() -> anyhow::Result<()> {
    // Re-executed as a container launcher: serve and exit, before any thread exists.
    iluvatar_worker::isolation::runtime::launcher::serve_if_asked();
    let args = Args::parse();
    let config = WorkerConfig::load(args.config.as_deref(), std::env::vars())?;
    init_logging(&config.log_level);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.threads > 0 {
        runtime.worker_threads(config.threads);
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        let env = iluvatar_worker::env::live_env();
        match args.command {
            Some(Command::Clean) => {
                let removed = iluvatar_worker::clean(&config, env).await?;
                let report: serde_json::Map<String, serde_json::Value> =
                    removed.into_iter().map(|(k, v)| (k, v.into())).collect();
                println!("{}", serde_json::json!({"event": "clean", "removed": report}));
                Ok(())
            }
            None => {
                tracing::info!(seed = env.seed, "starting worker");
                // Handlers are installed now, before the worker says it is ready, so that a
                // signal arriving at any point after that shuts it down gracefully.
                let stop = shutdown_signal()?;
                iluvatar_worker::run(config, env, stop).await.context("worker failed")
            }
        }
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
    use tracing_subscriber::EnvFilter;
    // libcgroups warns at every container about controllers this host lacks: keep it quiet.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},libcgroups=error,libcontainer=error")));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
