//! What a registration may name on the host: `code:` folders and local image paths must lie
//! under the backend's `code_roots` (compared on canonical paths), and never in (or above)
//! the worker's state dir, `/proc`, `/sys` or `/dev`. A path is opened once (`O_PATH`), and
//! where the kernel says the open file is (its `/proc/self/fd` link) is what is checked; the
//! worker then uses the path only through that handle, so a link swapped in later (the folder
//! or one of its parents replaced by a link elsewhere) changes nothing.
//!
//! Every refusal (outside the roots, refused, missing, not a folder) is one generic error, so
//! that a client cannot probe which host paths exist.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Paths no registration may name, whatever `code_roots` says (with the state dir).
const ALWAYS_REFUSED: [&str; 3] = ["/proc", "/sys", "/dev"];

/// The checked roots and the refused paths, all canonical.
#[derive(Debug)]
pub struct Roots {
    /// Empty: any path that is not refused (allowed only on loopback).
    roots: Vec<PathBuf>,
    refused: Vec<PathBuf>,
}

/// What a path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Folder,
    File,
}

/// Why a path cannot be used.
#[derive(Debug)]
pub enum Refused {
    /// Refused, missing or of the wrong kind: the caller answers one generic error.
    Path,
    /// The worker itself cannot open it now (out of file descriptors or memory).
    Worker(std::io::Error),
}

/// An opened, checked path, kept for the registration's life.
#[derive(Debug)]
pub struct Handle {
    file: std::fs::File,
    /// Where it was when it was opened (for logs only; never used to reach it).
    pub real: PathBuf,
    /// The file's device and inode: registrations of one file share one handle.
    pub id: (u64, u64),
}

impl Handle {
    /// The path that reaches exactly the opened file, in this process: the kernel follows
    /// the `/proc/self/fd` link to the open file, not to whatever its old path names now.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// Why the configured roots cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error(
        "the runtime backend's code_roots is empty, which lets clients register any host folder, and the worker \
         listens beyond loopback: set code_roots to the folders functions may come from"
    )]
    AnyFolderBeyondLoopback,
    #[error("the runtime backend's code_roots entry {}: {source}", path.display())]
    Unresolved { path: PathBuf, source: std::io::Error },
    #[error("the runtime backend's code_roots entry {} is not a folder", path.display())]
    NotAFolder { path: PathBuf },
    #[error("cannot resolve the state dir {}: {source}", path.display())]
    StateDir { path: PathBuf, source: std::io::Error },
}

impl Roots {
    /// Checks the configured roots. `beyond_loopback`: the worker listens on an address
    /// other clients can reach, where "any folder" (no roots) is not allowed.
    pub fn new(code_roots: &[PathBuf], state_dir: &Path, beyond_loopback: bool) -> Result<Roots, RootsError> {
        if code_roots.is_empty() && beyond_loopback {
            return Err(RootsError::AnyFolderBeyondLoopback);
        }
        let mut roots = Vec::new();
        for r in code_roots {
            let c = r.canonicalize().map_err(|source| RootsError::Unresolved { path: r.clone(), source })?;
            if !c.is_dir() {
                return Err(RootsError::NotAFolder { path: r.clone() });
            }
            roots.push(c);
        }
        let state = state_dir
            .canonicalize()
            .map_err(|source| RootsError::StateDir { path: state_dir.to_path_buf(), source })?;
        let mut refused = vec![state];
        refused.extend(ALWAYS_REFUSED.iter().map(|p| Path::new(p).canonicalize().unwrap_or_else(|_| PathBuf::from(p))));
        Ok(Roots { roots, refused })
    }

    /// Opens `path` and checks where it really is. Every refusal is `Refused::Path`,
    /// whatever the reason, but the worker's own shortage of descriptors or memory.
    pub fn open(&self, path: &Path, kind: Kind) -> Result<Handle, Refused> {
        use std::os::unix::fs::MetadataExt;
        // `..` is refused outright: it never names anything a plain path could not.
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(Refused::Path);
        }
        let mut flags = nix::libc::O_PATH | nix::libc::O_CLOEXEC;
        if kind == Kind::Folder {
            flags |= nix::libc::O_DIRECTORY;
        }
        let file = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| {
            match e.raw_os_error() {
                Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOMEM) => Refused::Worker(e),
                _ => Refused::Path,
            }
        })?;
        let meta = file.metadata().map_err(|_| Refused::Path)?;
        let right_kind = match kind {
            Kind::Folder => meta.is_dir(),
            Kind::File => meta.is_file(),
        };
        if !right_kind {
            return Err(Refused::Path);
        }
        // Where the kernel says the open file is: every link on the way already followed.
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|_| Refused::Path)?;
        if !self.allows(&real) {
            return Err(Refused::Path);
        }
        Ok(Handle { file, real, id: (meta.dev(), meta.ino()) })
    }

    /// Whether a canonical path may be used: under a root (if any), and neither in nor
    /// above a refused path (a folder holding the state dir would expose it).
    fn allows(&self, real: &Path) -> bool {
        // A deleted file's link ends in " (deleted)"; such a path is not canonical.
        if !real.is_absolute() || real.to_string_lossy().ends_with(" (deleted)") {
            return false;
        }
        if self.refused.iter().any(|r| real.starts_with(r) || r.starts_with(real)) {
            return false;
        }
        self.roots.is_empty() || self.roots.iter().any(|r| real.starts_with(r))
    }
}

/// Whether every address is a loopback one (`localhost` or a loopback IP).
pub fn is_loopback(address: &str) -> bool {
    address == "localhost" || address.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("iluvatar-roots-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.canonicalize().unwrap()
    }

    #[test]
    fn paths_are_checked_where_they_really_are() {
        let base = tmp("check");
        let (root, state, outside) = (base.join("root"), base.join("state"), base.join("outside"));
        for d in [root.join("f"), state.join("runtime"), outside.join("g")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(root.join("f/main.py"), "").unwrap();
        std::os::unix::fs::symlink(outside.join("g"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("f"), outside.join("in")).unwrap();
        let r = Roots::new(std::slice::from_ref(&root), &state, true).unwrap();
        let h = r.open(&root.join("f"), Kind::Folder).expect("a folder under the root");
        assert_eq!(h.real, root.join("f"));
        assert!(h.proc_path().join("main.py").is_file());
        // A link under the root leading out is refused; a link outside leading in is allowed.
        assert!(r.open(&root.join("link"), Kind::Folder).is_err());
        let via_link = r.open(&outside.join("in"), Kind::Folder).unwrap();
        assert_eq!((via_link.real.as_path(), via_link.id), (root.join("f").as_path(), h.id));
        assert!(r.open(&outside.join("g"), Kind::Folder).is_err());
        assert!(r.open(&root.join("missing"), Kind::Folder).is_err());
        assert!(r.open(&root.join("f/main.py"), Kind::Folder).is_err(), "a file is not a folder");
        assert!(r.open(&root.join("f/main.py"), Kind::File).is_ok());
        assert!(r.open(&root.join("f/../f"), Kind::Folder).is_err(), "no ..");
        assert!(r.open(Path::new("relative"), Kind::Folder).is_err());

        // No roots: anything but the refused paths and their parents.
        let any = Roots::new(&[], &state, false).unwrap();
        assert!(any.open(&outside.join("g"), Kind::Folder).is_ok());
        for refused in [state.clone(), state.join("runtime"), base.clone(), "/proc".into(), "/proc/1".into()] {
            assert!(any.open(&refused, Kind::Folder).is_err(), "{} is refused", refused.display());
        }
        for refused in ["/sys", "/dev", "/"] {
            assert!(any.open(Path::new(refused), Kind::Folder).is_err(), "{refused} is refused");
        }
        // A root holding the state dir still refuses it.
        let wide = Roots::new(std::slice::from_ref(&base), &state, true).unwrap();
        assert!(wide.open(&state.join("runtime"), Kind::Folder).is_err());
        assert!(wide.open(&outside.join("g"), Kind::Folder).is_ok());

        let e = Roots::new(&[], &state, true).unwrap_err().to_string();
        assert!(e.contains("code_roots is empty") && e.contains("beyond loopback"), "{e}");
        let e = Roots::new(&[base.join("nope")], &state, false).unwrap_err().to_string();
        assert!(e.contains("code_roots entry") && e.contains("nope"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_handle_keeps_its_folder_when_the_path_is_swapped() {
        let base = tmp("swap");
        let (root, other) = (base.join("root"), base.join("root/other"));
        std::fs::create_dir_all(root.join("f")).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(root.join("f/main.py"), "original").unwrap();
        std::fs::write(other.join("main.py"), "swapped").unwrap();
        let r = Roots::new(std::slice::from_ref(&root), &base.join("state-x"), true);
        // The state dir must exist to be resolved.
        assert!(r.is_err());
        std::fs::create_dir_all(base.join("state")).unwrap();
        let r = Roots::new(std::slice::from_ref(&root), &base.join("state"), true).unwrap();
        let h = r.open(&root.join("f"), Kind::Folder).unwrap();
        std::fs::rename(root.join("f"), root.join("moved")).unwrap();
        std::os::unix::fs::symlink(&other, root.join("f")).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("f/main.py")).unwrap(), "swapped");
        assert_eq!(std::fs::read_to_string(h.proc_path().join("main.py")).unwrap(), "original");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn loopback_addresses() {
        for a in ["127.0.0.1", "::1", "localhost", "127.1.2.3"] {
            assert!(is_loopback(a), "{a}");
        }
        for a in ["0.0.0.0", "::", "10.0.0.1", "example.org", ""] {
            assert!(!is_loopback(a), "{a}");
        }
    }
}
