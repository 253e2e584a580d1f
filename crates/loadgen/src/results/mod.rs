//! The results of an open-loop run: one CSV row per invocation, a JSON summary, SVG plots
//! and a printed table. Times in rows are milliseconds from the run's time zero (the
//! trace's 0 ms); the summary carries that instant's Unix time.
//!
//! Rows are streamed: a [`Recorder`] writes each row to invocations.csv as soon as every
//! earlier invocation has answered, and keeps only a compact [`Sample`] per invocation for
//! the summary and the plots, so a run of millions of invocations holds no text in memory.

pub(crate) mod chart;
mod recorder;
mod rows;
mod summary;

pub mod out_dir;
pub mod plots;
pub mod report;

pub use recorder::{Recorded, Recorder, SharedRecorder, huge_pages};
pub use rows::{CSV_HEADER, NO_ERROR, NO_WORKER, Row, Sample, format_row, push_u64, row};
pub use summary::{RunInfo, percentiles, print_table, summary, write_results};

use iluvatar_rpc as rpc;

/// What happened to one invocation; times are nanoseconds from the run's time zero.
pub struct Outcome {
    /// The function, an index into the run's metadata.
    pub func: usize,
    pub scheduled_ns: u64,
    pub sent_ns: u64,
    pub done_ns: u64,
    pub response: Result<rpc::InvokeResponse, String>,
}

/// An invocation's times (milliseconds from the run's zero) and what follows from them,
/// written once for the rows of invocations.csv and the samples a run keeps.
pub trait Timed {
    /// When it was scheduled, sent, and answered.
    fn times_ms(&self) -> [f64; 3];
    /// The in-function time the result reported, if any.
    fn func_duration_ms(&self) -> Option<f64>;
    /// The wait in the worker's queue for a concurrency slot, if reported.
    fn queue_ms(&self) -> Option<f64>;
    /// The start of the container this invocation waited for (0 when warm), if reported.
    fn cold_start_ms(&self) -> Option<f64>;

    /// How late it was sent (never negative).
    fn lateness_ms(&self) -> f64 {
        let [scheduled, sent, _] = self.times_ms();
        (sent - scheduled).max(0.0)
    }
    fn client_latency_ms(&self) -> f64 {
        let [_, sent, done] = self.times_ms();
        done - sent
    }
    fn latency_from_schedule_ms(&self) -> f64 {
        let [scheduled, _, done] = self.times_ms();
        done - scheduled
    }
    /// What the platform added besides the function, the queue wait and the cold start:
    /// client latency - in-function time - queue wait - cold start (the RPCs, dispatch, a
    /// wait for memory, the round trip to the container). For a warm call that did not
    /// queue, the warm overhead.
    fn overhead_ms(&self) -> Option<f64> {
        let (queue, cold) = (self.queue_ms().unwrap_or(0.0), self.cold_start_ms().unwrap_or(0.0));
        self.func_duration_ms().map(|f| self.client_latency_ms() - f - queue - cold)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Cold,
    Warm,
    Prewarm,
    Unhealthy,
    Error,
}

impl State {
    pub(crate) fn of(s: i32) -> State {
        match rpc::ContainerState::try_from(s) {
            Ok(rpc::ContainerState::Cold) => State::Cold,
            Ok(rpc::ContainerState::Warm) => State::Warm,
            Ok(rpc::ContainerState::Prewarm) => State::Prewarm,
            Ok(rpc::ContainerState::Unhealthy) => State::Unhealthy,
            _ => State::Error,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Cold => "cold",
            State::Warm => "warm",
            State::Prewarm => "prewarm",
            State::Unhealthy => "unhealthy",
            State::Error => "error",
        }
    }
}
