//! One worker per state directory: an exclusive `flock` on `state_dir/worker.lock`, held for
//! the process's life, with the holder's pid written inside. `clean` takes the same lock, so
//! it cannot remove a running worker's containers.

use anyhow::Context;
use std::io::{Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Held while alive; the kernel releases the lock when the process ends, however it ends.
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> anyhow::Result<StateLock> {
        std::fs::create_dir_all(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
        // Only root may list or read it (image roots, sockets, logs, the registry); others may only
        // pass through (0711): a container in a user namespace is not root here, and its init
        // reaches its root and binds by these paths.
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o711);
        std::fs::set_permissions(state_dir, private)
            .with_context(|| format!("cannot chmod {}", state_dir.display()))?;
        let path = state_dir.join("worker.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        let locked = unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) } == 0;
        if !locked {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let holder = if holder.is_empty() { "unknown".to_string() } else { holder.to_string() };
            anyhow::bail!(
                "the state directory {} is in use by a running worker (pid {holder}); stop it first, or give this one another state_dir",
                state_dir.display()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = std::env::temp_dir().join(format!("iluvatar-lock-{}", std::process::id()));
        let first = StateLock::acquire(&dir).unwrap();
        // flock locks belong to the open file description: a second open is refused.
        let err = StateLock::acquire(&dir).err().expect("a second lock must be refused").to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        StateLock::acquire(&dir).expect("free again once the first is dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
