//! `iluvatar_load_gen`: drives load at a worker and measures it.

use clap::Parser;
use iluvatar_load_gen::commands::Cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let auth = iluvatar_rpc::auth::ClientAuth::from_file(cli.command.token_file()).map_err(anyhow::Error::msg)?;
    iluvatar_load_gen::sending::connect::set_auth(auth);
    iluvatar_load_gen::commands::run(cli.command, cli.threads)
}
