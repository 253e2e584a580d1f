//! A daemon's process: its tokio runtime, its logging, and the signals that stop it.

use anyhow::Context;
use std::future::Future;

/// A multi-threaded runtime with `threads` worker threads (0: one per core).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()
}

/// Resolves at the first SIGTERM or SIGINT. The handlers are installed by this call, so a
/// daemon calls it before it says it is ready: a signal arriving at any point after that
/// stops it gracefully.
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
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

/// Logs to stderr (in colour on a terminal) through `RUST_LOG` if it is set, else through
/// `filter` (`tracing` syntax: `info`, `info,some_crate=error`, ...). With `spans`, every
/// span the filter lets through also logs a line when it closes, with its fields and its
/// busy and idle time (where an invocation's time goes; costs a line per span).
pub fn init_logging(filter: &str, spans: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::format::FmtSpan;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(if spans { FmtSpan::CLOSE } else { FmtSpan::NONE })
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
