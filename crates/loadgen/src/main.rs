//! `iluvatar_load_gen`: drives load at a worker and measures it.

use clap::Parser;
use iluvatar_load_gen::commands::Command;

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

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let auth = iluvatar_rpc::auth::ClientAuth::from_file(cli.token_file.as_deref()).map_err(anyhow::Error::msg)?;
    iluvatar_load_gen::sending::connect::set_auth(auth);
    iluvatar_load_gen::commands::run(cli.command, cli.threads)
}
