//! The subcommands: [`Command`] and [`run`], which picks the runtime a command needs and
//! dispatches it. The front ends of `trace` and `rate` (replay) and of the live benchmarks
//! are here; `generate` is the workload room's, `sim-bench`, `sweep` and `fidelity` the
//! simulation room's.

pub mod benchmark;
pub mod compare;
pub mod control_plane;
pub mod controller_bench;
pub mod replay;
pub mod scaling;
pub mod soak;
pub mod worker_bench;

use crate::sending::target::Setup;
use clap::Subcommand;

/// The command line.
#[derive(clap::Parser)]
#[command(name = "iluvatar_load_gen", version, about = "Load generation and benchmarks for Ilúvatar")]
pub struct Cli {
    /// Threads of the load generator's runtime for the commands that run in real time
    /// (simulations run on one thread, `sweep` as --jobs says); 0 means the number of cores.
    #[arg(long, global = true, default_value_t = 0, help_heading = "Global")]
    pub threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// The token file given to a command that talks to a live target (`--token-file`).
    pub fn token_file(&self) -> Option<&std::path::Path> {
        match self {
            Command::Trace(a) => a.target.endpoint.token_file.as_deref(),
            Command::Rate(a) => a.target.endpoint.token_file.as_deref(),
            Command::Scaling(a) => a.endpoint.token_file.as_deref(),
            Command::Benchmark(a) => a.endpoint.token_file.as_deref(),
            _ => None,
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Replays a trace open-loop: registers every function, optionally prewarms, sends each
    /// invocation at its time, and writes per-invocation CSV, a JSON summary and SVG plots.
    Trace(replay::TraceArgs),
    /// Open-loop arrivals at a given rate (Poisson or fixed gaps) over a function mix.
    Rate(replay::RateArgs),
    /// Closed-loop clients stepping from --start to --end: throughput and latency per step.
    Scaling(scaling::ScalingArgs),
    /// Cold and warm iterations of every function in a functions directory; writes JSON
    /// usable as `trace --function-data`.
    Benchmark(benchmark::BenchmarkArgs),
    /// Writes a trace and its metadata: synthetic distributions or the Azure 2019 dataset.
    #[command(subcommand)]
    Generate(crate::workload::generate::GenerateCommand),
    /// Pure control-plane cost: warm invokes of a zero-duration sim function over gRPC on
    /// loopback with closed-loop clients; prints p50/p99 overhead and invocations/s and
    /// writes JSON.
    ControlPlane(control_plane::Args),
    /// The latency the controller adds: starts a controller and a sim worker behind it, runs
    /// closed-loop clients through the controller and straight to the worker, prints
    /// percentiles and writes JSON.
    ControllerBench(controller_bench::Args),
    /// Simulation speed: replays a generated workload (by default about 1.3 million
    /// invocations) in simulation, on one worker or on clusters (--workers 10,50,200);
    /// prints invocations per wall-clock second and peak memory, writes JSON.
    SimBench(crate::simulation::sim_bench::Args),
    /// Live vs simulated: a resampled calibration trace, metadata calibrated from a live run
    /// of it, and a per-function comparison of a live and a simulated run
    /// (scripts/fidelity.sh).
    #[command(subcommand)]
    Fidelity(crate::simulation::fidelity::Command),
    /// Simulations over a parameter grid (`--grid 'container_pool.memory_mb=1024,2048;...'`),
    /// in parallel; writes sweep.csv with a row per point.
    Sweep(crate::simulation::sweep::Args),
    /// One trace under several named worker configs (`--config NAME=FILE`, repeated), in
    /// simulation or live: a side-by-side table of cold starts, latency p50/p99 and memory
    /// held and idle (MB·s); writes compare.csv, compare.json, compare.svg and NAME/ each.
    Compare(compare::Args),
    /// Real containers (runtime backend): cold starts, warm overhead closed- and open-loop,
    /// idle container memory; prints a table and writes JSON.
    WorkerBench(worker_bench::Args),
    /// A long mix of cold starts, warm calls and faulty functions against a live worker on
    /// real containers: calls answered and lost, the worker's RSS and descriptors over time,
    /// and what is left on the host after it stops; writes JSON.
    Soak(soak::Args),
}

/// Runs `command` on the runtime it needs: virtual time (one thread, a paused clock) for
/// simulations, none for the commands that only compute, and otherwise a multi-threaded
/// runtime of `threads` threads (0: one per core), at a real-time priority for live replays.
pub fn run(command: Command, threads: usize) -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        runtime.worker_threads(threads);
    }
    match command {
        Command::Generate(cmd) => return crate::workload::generate::run(cmd),
        Command::Sweep(args) => return crate::simulation::sweep::run(args),
        Command::Compare(args) => return compare::run(args).map(|_| ()),
        Command::Fidelity(cmd) => return crate::simulation::fidelity::run(cmd),
        _ => {}
    }
    let simulated = match &command {
        Command::Trace(a) => a.target.setup == Setup::Simulation,
        Command::Rate(a) => a.target.setup == Setup::Simulation,
        Command::SimBench(_) => true,
        _ => false,
    };
    if simulated {
        // Virtual time: one thread, a paused clock that jumps to the next timer.
        let runtime = crate::simulation::worker::runtime()?;
        return runtime.block_on(async {
            match command {
                Command::Trace(args) => replay::run_trace(args).await,
                Command::Rate(args) => replay::run_rate(args).await,
                Command::SimBench(args) => crate::simulation::sim_bench::run(args).await,
                _ => unreachable!("only trace, rate and sim-bench simulate"),
            }
        });
    }
    if matches!(command, Command::Trace(_) | Command::Rate(_)) && std::env::var_os("ILUVATAR_LOADGEN_NO_RT").is_none() {
        // The runtime's threads send each request the scheduler thread hands over; at a
        // real-time priority, busy worker threads on the same cores cannot delay that.
        runtime.on_thread_start(|| {
            crate::sending::live::set_realtime_priority();
        });
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        match command {
            Command::Trace(args) => replay::run_trace(args).await,
            Command::Rate(args) => replay::run_rate(args).await,
            Command::Scaling(args) => scaling::run(args).await,
            Command::Benchmark(args) => benchmark::run(args).await,
            Command::Generate(_)
            | Command::SimBench(_)
            | Command::Sweep(_)
            | Command::Fidelity(_)
            | Command::Compare(_) => {
                unreachable!("handled above")
            }
            Command::ControlPlane(args) => control_plane::run(args).await,
            Command::ControllerBench(args) => controller_bench::run(args).await,
            Command::WorkerBench(args) => worker_bench::run(args).await,
            Command::Soak(args) => soak::run(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every subcommand, with its path (`generate synthetic`).
    fn all(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            all(sub, format!("{path} {}", sub.get_name()).trim().to_string(), out);
        }
    }

    #[test]
    fn every_option_of_every_command_is_described() {
        let mut cmds = Vec::new();
        all(&Cli::command(), String::new(), &mut cmds);
        let mut missing = Vec::new();
        for (path, cmd) in &cmds {
            if !path.is_empty() && cmd.get_about().is_none() && cmd.get_name() != "help" {
                missing.push(format!("`{path}` has no description"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("`{path}` --{id} has no description"));
                }
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn commands_offer_only_the_options_they_take() {
        let cli = Cli::command();
        let sub = |n: &str| cli.find_subcommand(n).unwrap_or_else(|| panic!("{n}")).clone();
        let ids = |c: &clap::Command| c.get_arguments().map(|a| a.get_id().to_string()).collect::<Vec<_>>();
        // scaling runs closed-loop clients in real time against one worker.
        let scaling = ids(&sub("scaling"));
        for refused in ["setup", "target", "worker_config", "workers", "controller_config", "seed"] {
            assert!(!scaling.contains(&refused.to_string()), "scaling offers --{refused}: {scaling:?}");
        }
        assert!(scaling.contains(&"function_data".to_string()) && scaling.contains(&"force".to_string()));
        // trace's options come in groups.
        let trace = sub("trace");
        let heading = |id: &str| trace.get_arguments().find(|a| a.get_id() == id).and_then(|a| a.get_help_heading());
        assert_eq!(heading("worker_config"), Some("Simulation (--setup simulation)"));
        assert_eq!(heading("prewarm_from_iat"), Some("Functions"));
        assert_eq!(heading("min_workers"), Some("Live controller (--target controller)"));
        assert_eq!(heading("warmup_s"), Some("Results"));
        assert_eq!(heading("host"), Some("Target"));
        // A token is for the commands that reach a live target, not for simulations.
        assert!(ids(&sub("sweep")).iter().all(|id| id != "token_file"));
        assert!(ids(&trace).contains(&"token_file".to_string()) && scaling.contains(&"token_file".to_string()));
        assert!(trace.get_arguments().all(|a| a.get_help_heading().is_some() || a.get_id() == "help"));
    }
}
