//! The load generator's library run in process, under the virtual-time runtime, as its
//! binary runs it: the one place these tests use the library's API (the other tests run the
//! binary).

use clap::Parser;
use iluvatar_load_gen::commands::replay::{RateArgs, TraceArgs};
use iluvatar_load_gen::sending::target::Setup;
pub use iluvatar_load_gen::workload::generate::{SyntheticArgs, synthetic_workload, write};
use iluvatar_testkit::s;
use std::path::Path;

#[derive(Parser)]
struct TraceCli {
    #[command(flatten)]
    args: TraceArgs,
}

#[derive(Parser)]
struct RateCli {
    #[command(flatten)]
    args: RateArgs,
}

#[derive(Parser)]
struct FidelityCli {
    #[command(subcommand)]
    cmd: iluvatar_load_gen::simulation::fidelity::Command,
}

/// The arguments of `trace ARGV...` as the binary parses them.
pub fn trace_args(argv: &[&str]) -> TraceArgs {
    TraceCli::try_parse_from(argv).unwrap().args
}

/// Runs a trace; the error if it fails.
pub fn try_trace(args: TraceArgs) -> Result<(), String> {
    let rt = iluvatar_load_gen::simulation::worker::runtime().unwrap();
    rt.block_on(iluvatar_load_gen::commands::replay::run_trace(args)).map_err(|e| format!("{e:#}"))
}

/// Runs a trace; a failure names the seed.
pub fn run_trace(args: TraceArgs, seed: &str) {
    let rt = iluvatar_load_gen::simulation::worker::runtime().unwrap();
    rt.block_on(iluvatar_load_gen::commands::replay::run_trace(args))
        .unwrap_or_else(|e| panic!("seed {seed}: simulation failed: {e:#}"));
}

/// `trace --setup simulation --quiet` over `dir`'s trace.csv and metadata.csv with the
/// worker config `worker`, results in `out`, and `extra` arguments; a failure names the seed.
pub fn simulate(dir: &Path, worker: &Path, out: &Path, seed: u64, extra: &[&str]) {
    let seed = seed.to_string();
    let (trace, metadata) = (dir.join("trace.csv"), dir.join("metadata.csv"));
    let mut argv = vec!["trace", "--setup", "simulation", "--quiet", "--worker-config", s(worker)];
    argv.extend(["--input", s(&trace), "--metadata", s(&metadata), "--out", s(out), "--seed", &seed]);
    argv.extend(extra);
    let args = trace_args(&argv);
    assert!(args.target.setup == Setup::Simulation);
    run_trace(args, &seed);
}

/// Runs `rate ARGV...`; a failure names the seed.
pub fn run_rate(argv: &[&str], seed: &str) {
    let args = RateCli::try_parse_from(argv).unwrap().args;
    let rt = iluvatar_load_gen::simulation::worker::runtime().unwrap();
    rt.block_on(iluvatar_load_gen::commands::replay::run_rate(args)).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
}

/// Runs `fidelity ARGS...`; a failure names the seed.
pub fn fidelity(args: &[&str], seed: u64) {
    let argv = std::iter::once("fidelity").chain(args.iter().copied());
    let cli = FidelityCli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
    iluvatar_load_gen::simulation::fidelity::run(cli.cmd)
        .unwrap_or_else(|e| panic!("seed {seed}: fidelity {args:?}: {e:#}"));
}

#[derive(Parser)]
struct CompareCli {
    #[command(flatten)]
    args: iluvatar_load_gen::commands::compare::Args,
}

/// Runs `compare ARGV...` (a synchronous command: it builds its runtimes); a failure names
/// the seed.
pub fn compare(argv: &[&str], seed: u64) -> Vec<iluvatar_load_gen::commands::compare::Row> {
    let args = CompareCli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}")).args;
    iluvatar_load_gen::commands::compare::run(args).unwrap_or_else(|e| panic!("seed {seed}: compare {argv:?}: {e:#}"))
}

#[derive(Parser)]
struct SimBenchCli {
    #[command(flatten)]
    args: iluvatar_load_gen::simulation::sim_bench::Args,
}

/// Runs `sim-bench ARGV...` in the virtual-time runtime, as the binary runs it.
pub fn sim_bench(argv: &[&str]) {
    let argv = std::iter::once("sim-bench").chain(argv.iter().copied());
    let args = SimBenchCli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}")).args;
    let rt = iluvatar_load_gen::simulation::worker::runtime().unwrap();
    rt.block_on(iluvatar_load_gen::simulation::sim_bench::run(args)).unwrap_or_else(|e| panic!("sim-bench: {e:#}"));
}
