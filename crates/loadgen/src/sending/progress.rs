//! Progress of a long run: a bar redrawn in place when stdout is a terminal, plain periodic
//! lines when it is not (CI logs, pipes).

#![allow(clippy::disallowed_methods)] // elapsed time shown to the user

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    total: u64,
    sent: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    start: Instant,
    tty: bool,
    quiet: bool,
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Self {
        Progress {
            inner: Arc::new(Inner {
                total,
                sent: AtomicU64::new(0),
                done: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                start: Instant::now(),
                tty: std::io::stdout().is_terminal(),
                quiet,
            }),
        }
    }

    pub fn sent(&self) {
        self.inner.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn done(&self, success: bool) {
        self.inner.done.fetch_add(1, Ordering::Relaxed);
        if !success {
            self.inner.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Redraws the bar every 200 ms on a terminal, prints a line every 5 s otherwise.
    pub fn start_ticker(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            if me.inner.quiet {
                return;
            }
            let every = if me.inner.tty { Duration::from_millis(200) } else { Duration::from_secs(5) };
            loop {
                tokio::time::sleep(every).await;
                me.draw();
            }
        })
    }

    fn draw(&self) {
        let i = &self.inner;
        let (sent, done, errors) =
            (i.sent.load(Ordering::Relaxed), i.done.load(Ordering::Relaxed), i.errors.load(Ordering::Relaxed));
        let secs = i.start.elapsed().as_secs_f64();
        let frac = if i.total == 0 { 1.0 } else { done as f64 / i.total as f64 };
        let mut out = std::io::stdout().lock();
        if i.tty {
            let width = 30;
            let filled = (frac * width as f64).round() as usize;
            let _ = write!(
                out,
                "\r[{}{}] {:>5.1}% sent {sent}/{} done {done} errors {errors} {secs:.0}s ",
                "#".repeat(filled),
                "-".repeat(width - filled.min(width)),
                frac * 100.0,
                i.total
            );
        } else {
            let _ = writeln!(
                out,
                "progress: {:.1}% sent {sent}/{} done {done} errors {errors} after {secs:.0}s",
                frac * 100.0,
                i.total
            );
        }
        let _ = out.flush();
    }

    pub fn finish(&self) {
        if self.inner.quiet {
            return;
        }
        self.draw();
        if self.inner.tty {
            println!();
        }
    }
}
