//! The recorder: streams rows to invocations.csv in the arrivals' order and keeps what the
//! summary and the plots need.

use super::rows::{CSV_HEADER, NO_ERROR, NO_WORKER, Row, Sample, format_row, row};
use super::{Outcome, State};
use crate::workload::trace::FunctionMeta;
use std::collections::VecDeque;
use std::io::Write as _;
use std::path::Path;

/// Asks the kernel to back a large vector with huge pages (where transparent huge pages are
/// on "madvise"): a million-row run then takes tens of page faults instead of thousands,
/// which on a virtual machine are costly. Only a hint; the vector is returned unchanged.
pub fn huge_pages<T>(v: Vec<T>) -> Vec<T> {
    const HUGE: usize = 2 << 20;
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes >= 2 * HUGE {
        let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (v.as_ptr() as usize + bytes) & !(HUGE - 1);
        if end > start {
            // SAFETY: the range lies inside the vector's allocation; MADV_HUGEPAGE changes no
            // content and no mapping, only how the kernel may back it.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    v
}

/// What a run keeps in memory once its rows are written.
#[derive(Default)]
pub struct Recorded {
    /// One per invocation, in the arrivals' order.
    pub samples: Vec<Sample>,
    /// The kinds of error seen, in order of first appearance ([`Sample::error`]).
    pub error_kinds: Vec<String>,
    /// Each kind's first error: the invocation's index and the message.
    pub first_errors: Vec<(usize, String)>,
    /// The workers results named, in order of first appearance ([`Sample::worker`]).
    pub workers: Vec<String>,
    /// The controller's own time per invocation (µs), where results carry it.
    pub controller_us: Vec<u32>,
}

/// Streams rows to invocations.csv in the arrivals' order, whatever order they complete in.
/// Invocations record themselves as they finish (it is shared behind a mutex, see
/// [`SharedRecorder`]), so no channel or extra task sits between them and the file.
pub struct Recorder {
    out: std::io::BufWriter<std::fs::File>,
    functions: Vec<String>,
    version: String,
    tid_prefix: String,
    start_unix_s: f64,
    /// Completed rows waiting for an earlier one; slot k is invocation `next + k`.
    waiting: VecDeque<Option<(Row, State)>>,
    next: usize,
    line: String,
    recorded: Recorded,
    worker_ids: std::collections::HashMap<String, u16>,
    /// The first write error; reported by `finish`.
    failed: Option<std::io::Error>,
}

pub type SharedRecorder = std::sync::Arc<std::sync::Mutex<Recorder>>;

impl Recorder {
    pub fn create(
        path: &Path,
        meta: &[FunctionMeta],
        version: &str,
        tid_prefix: &str,
        expected: usize,
    ) -> std::io::Result<Self> {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        out.write_all(CSV_HEADER.as_bytes())?;
        Ok(Recorder {
            out,
            functions: meta.iter().map(|f| f.name.clone()).collect(),
            version: version.into(),
            tid_prefix: tid_prefix.into(),
            start_unix_s: 0.0,
            waiting: VecDeque::new(),
            next: 0,
            line: String::with_capacity(256),
            recorded: Recorded { samples: huge_pages(Vec::with_capacity(expected)), ..Default::default() },
            worker_ids: Default::default(),
            failed: None,
        })
    }

    pub fn shared(self) -> SharedRecorder {
        std::sync::Arc::new(std::sync::Mutex::new(self))
    }

    /// Sets the Unix time (seconds) of the run's zero; in-function times are relative to it.
    pub fn set_start_unix_s(&mut self, start_unix_s: f64) {
        self.start_unix_s = start_unix_s;
    }

    /// Records invocation `i`; writes it and every following one already complete.
    pub fn record(&mut self, i: usize, o: Outcome) {
        let r = row(i, o, self.start_unix_s);
        let k = i.checked_sub(self.next).expect("each invocation is recorded once");
        if self.waiting.len() <= k {
            self.waiting.resize_with(k + 1, || None);
        }
        self.waiting[k] = Some(r);
        while let Some(Some(_)) = self.waiting.front() {
            let (row, state) = self.waiting.pop_front().flatten().expect("checked");
            self.write(row, state);
            self.next += 1;
        }
    }

    fn write(&mut self, row: Row, state: State) {
        self.line.clear();
        format_row(&mut self.line, &row, &self.functions[row.func], &self.version, &self.tid_prefix);
        if self.failed.is_none()
            && let Err(e) = self.out.write_all(self.line.as_bytes())
        {
            self.failed = Some(e);
        }
        let worker = match &row.worker {
            None => NO_WORKER,
            Some(w) => match self.worker_ids.get(w) {
                Some(&id) => id,
                None if self.recorded.workers.len() < NO_WORKER as usize => {
                    let id = self.recorded.workers.len() as u16;
                    self.recorded.workers.push(w.clone());
                    self.worker_ids.insert(w.clone(), id);
                    id
                }
                None => NO_WORKER,
            },
        };
        if let Some(c) = row.controller_ms {
            self.recorded.controller_us.push((c * 1e3).round().clamp(0.0, u32::MAX as f64) as u32);
        }
        let mut sample = row.sample(state, worker);
        if !row.success {
            let kind = row.error.split(':').next().unwrap_or("error");
            let r = &mut self.recorded;
            let id = match r.error_kinds.iter().position(|k| k == kind) {
                Some(id) => id,
                None if r.error_kinds.len() < (NO_ERROR - 1) as usize => {
                    r.error_kinds.push(kind.to_string());
                    r.first_errors.push((r.samples.len(), row.error.clone()));
                    r.error_kinds.len() - 1
                }
                // Past 65,534 kinds (never, in practice), the rest share the last.
                None => r.error_kinds.len() - 1,
            };
            sample.error = id as u16;
        }
        self.recorded.samples.push(sample);
    }

    /// Flushes the file; every invocation must have been recorded.
    pub fn finish(mut self) -> anyhow::Result<Recorded> {
        if !self.waiting.is_empty() {
            anyhow::bail!("invocation {} never answered", self.next);
        }
        if let Some(e) = self.failed.take() {
            return Err(anyhow::Error::new(e).context("writing invocations.csv"));
        }
        self.out.flush()?;
        Ok(self.recorded)
    }

    /// Takes the recorder out of its sharing once every invocation has finished.
    pub fn unshare(shared: SharedRecorder) -> anyhow::Result<Recorded> {
        let m = std::sync::Arc::try_unwrap(shared)
            .map_err(|_| anyhow::anyhow!("an invocation still holds the recorder"))?;
        m.into_inner().map_err(|_| anyhow::anyhow!("an invocation panicked while recording"))?.finish()
    }
}
