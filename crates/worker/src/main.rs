//! `iluvatar_worker`: runs a worker from a config file, or cleans up after earlier runs.

use anyhow::Context;
use clap::{Parser, Subcommand};
use iluvatar_service::process::{init_logging, shutdown_signal};
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
    // libcgroups warns at every container about controllers this host lacks: keep it quiet.
    init_logging(&format!("{},libcgroups=error,libcontainer=error", config.log_level), config.log_spans);
    let runtime = iluvatar_service::process::runtime(config.threads)?;
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
