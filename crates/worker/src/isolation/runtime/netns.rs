//! TCP sockets inside a container's own network namespace, for the worker to reach the
//! function server there on 127.0.0.1 (no bridge, no veth, no CNI).
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole
//! life, whichever thread uses it afterwards. So one dedicated thread joins a container's
//! namespace (`setns`, which moves only the calling thread), creates the socket and returns
//! to the worker's namespace (staying would keep a removed container's namespace alive);
//! the worker's async code connects and uses the socket. The thread does nothing else, so
//! no other work of the worker ever runs in a container's namespace (a tokio blocking
//! thread would carry the namespace into whatever it runs next). It creates no process: the
//! rule that nothing is cloned from the threaded worker is kept.

use nix::sched::{CloneFlags, setns};
use std::fs::File;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::net::TcpSocket;
use tokio::sync::oneshot;

/// A container's network namespace, opened once (`/proc/PID/ns/net`) while its process
/// lives, and kept for reconnections.
pub(crate) struct Netns(File);

impl Netns {
    pub fn of_process(pid: i32) -> std::io::Result<Arc<Netns>> {
        Ok(Arc::new(Netns(File::open(format!("/proc/{pid}/ns/net"))?)))
    }
}

struct Job {
    ns: Arc<Netns>,
    reply: oneshot::Sender<std::io::Result<TcpSocket>>,
}

/// The thread that creates sockets in containers' namespaces, started at first use and
/// again if it ever died.
#[derive(Default)]
pub(crate) struct SocketMaker {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl SocketMaker {
    /// A new (unconnected, non-blocking) IPv4 TCP socket in `ns`.
    pub async fn tcp(&self, ns: &Arc<Netns>) -> std::io::Result<TcpSocket> {
        let (reply, answer) = oneshot::channel();
        self.send(Job { ns: ns.clone(), reply })?;
        answer.await.map_err(|_| std::io::Error::other("the worker's namespace socket thread stopped"))?
    }

    fn send(&self, job: Job) -> std::io::Result<()> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let job = match jobs.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::channel();
        // The worker's own namespace, to return to after each socket.
        let home = File::open("/proc/thread-self/ns/net")?;
        std::thread::Builder::new().name("iluvatar-netns".into()).spawn(move || serve(rx, home))?;
        tx.send(job).map_err(|_| std::io::Error::other("the worker's namespace socket thread stopped"))?;
        *jobs = Some(tx);
        Ok(())
    }
}

fn serve(jobs: mpsc::Receiver<Job>, home: File) {
    while let Ok(job) = jobs.recv() {
        let made = setns(&job.ns.0, CloneFlags::CLONE_NEWNET)
            .map_err(|e| std::io::Error::other(format!("cannot join the container's network namespace: {e}")))
            .and_then(|()| TcpSocket::new_v4());
        if setns(&home, CloneFlags::CLONE_NEWNET).is_err() {
            // Never make a socket from the wrong namespace: this thread ends, the sender
            // fails, and the next request starts a new thread.
            tracing::error!("the namespace socket thread cannot return to the worker's network namespace");
            let _ = job.reply.send(Err(std::io::Error::other("the namespace socket thread failed")));
            return;
        }
        let _ = job.reply.send(made);
    }
}
