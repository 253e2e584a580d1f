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
