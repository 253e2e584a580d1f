//! Applying one layer (a tar stream) to a root, with OCI whiteouts, where the image cannot
//! reach anything outside the root:
//! - an entry with a `..` component, an absolute path, or over `MAX_DEPTH` names is refused;
//! - every entry is created from the root's directory handle, one name at a time, never
//!   through a link (`safe::walk`): a link from an earlier layer (or earlier in this one) is
//!   data, but nothing is ever written or removed through it;
//! - a hard link's target is resolved the same way, so it is always a file in the root;
//! - setuid and setgid bits are dropped; device nodes and FIFOs are not created (the
//!   container's /dev is its own); owners are kept as the image gives them (the root lives
//!   in a 0711 directory and is mounted read-only).

use super::limits::Budget;
use super::safe;
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use tar::EntryType;

/// Most names in an entry's path.
pub(super) const MAX_DEPTH: usize = 128;
/// Longest entry path.
const MAX_PATH: usize = 4096;
const OPAQUE: &[u8] = b".wh..opq";

/// An entry's path as names: refused if absolute or with a `..` component; `.` and empty
/// names are dropped.
pub(super) fn names(raw: &[u8], what: &str) -> Result<Vec<OsString>, String> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.starts_with(b"/") {
        return Err(format!("{what} {:?} is an absolute path (refused)", shown()));
    }
    if raw.len() > MAX_PATH || raw.contains(&0) {
        return Err(format!("{what} {:?} is not a valid path (over {MAX_PATH} bytes or a NUL byte)", shown()));
    }
    let mut out = Vec::new();
    for n in raw.split(|b| *b == b'/').filter(|n| !n.is_empty() && *n != b".") {
        if n == b".." {
            return Err(format!("{what} {:?} has a '..' component (refused)", shown()));
        }
        out.push(OsStr::from_bytes(n).to_os_string());
    }
    if out.len() > MAX_DEPTH {
        return Err(format!("{what} {:?} is deeper than {MAX_DEPTH} directories", shown()));
    }
    Ok(out)
}

fn joined(names: &[OsString]) -> Vec<u8> {
    names.iter().map(|n| n.as_bytes()).collect::<Vec<_>>().join(&b'/')
}

/// Applies the tar stream `layer` to `root`. `what` names the layer in errors.
pub(super) fn apply(root: &OwnedFd, layer: impl Read, what: &str, budget: &Budget<'_>) -> Result<(), String> {
    let mut archive = tar::Archive::new(layer);
    let mut this = Layer { root, added: HashSet::new(), as_root: nix::unistd::geteuid().is_root() };
    let mut read: u64 = 0;
    for entry in archive.entries().map_err(|e| budget.explain(e))? {
        budget.entry("the image")?;
        let mut entry = entry.map_err(|e| budget.explain(e))?;
        // Refused on its header, before a byte of it is written.
        let size = entry.size();
        read = read.saturating_add(512).saturating_add(size);
        let shown = format!("{what}: entry {:?} ({size} bytes)", String::from_utf8_lossy(&entry.path_bytes()));
        budget.announce(&shown, read, size)?;
        this.entry(&mut entry, budget).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

struct Layer<'r> {
    root: &'r OwnedFd,
    /// The paths this layer has created, and their parents: whiteouts only hide what lower
    /// layers made.
    added: HashSet<Vec<u8>>,
    as_root: bool,
}

impl Layer<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, budget: &Budget<'_>) -> Result<(), String> {
        let raw = entry.path_bytes().into_owned();
        let shown = format!("entry {:?}", String::from_utf8_lossy(&raw));
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() || kind.is_gnu_longname() {
            return Ok(());
        }
        let names = names(&raw, "entry")?;
        let Some((name, parents)) = names.split_last() else {
            return Ok(()); // the root itself
        };
        if let Some(hidden) = name.as_bytes().strip_prefix(b".wh.") {
            return self.whiteout(parents, hidden, &shown);
        }
        for i in 1..=names.len() {
            self.added.insert(joined(&names[..i]));
        }
        let dir = safe::walk(self.root, parents, true, &shown)?.expect("created");
        let d = dir.as_raw_fd();
        let h = entry.header();
        let mode = h.mode().map_err(|e| format!("{shown}: {e}"))?;
        let owner = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        let mtime = h.mtime().unwrap_or(0) as i64;
        let io = |e: nix::errno::Errno| format!("{shown}: {}", e.desc());
        match kind {
            EntryType::Directory => {
                match safe::stat_at(d, name).map_err(io)? {
                    Some(st) if safe::kind(&st) == SFlag::S_IFDIR => {}
                    existing => {
                        if existing.is_some() {
                            safe::remove_at(d, name).map_err(io)?;
                        }
                        nix::sys::stat::mkdirat(Some(d), name.as_os_str(), Mode::from_bits_truncate(0o755))
                            .map_err(io)?;
                    }
                }
                let sub = safe::open_dir_at(d, name).map_err(io)?;
                self.own(sub.as_raw_fd(), owner).map_err(io)?;
                // The sticky bit stays (a /tmp); setuid and setgid do not.
                nix::sys::stat::fchmod(sub.as_raw_fd(), Mode::from_bits_truncate(mode & 0o1777)).map_err(io)?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                safe::remove_at(d, name).map_err(io)?;
                let mut file = safe::create_file(d, name).map_err(io)?;
                std::io::copy(entry, &mut file).map_err(|e| format!("{shown}: {}", budget.explain(e)))?;
                let fd = file.as_raw_fd();
                self.own(fd, owner).map_err(io)?;
                nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode & 0o777)).map_err(io)?;
                let t = TimeSpec::new(mtime, 0);
                nix::sys::stat::futimens(fd, &t, &t).map_err(io)?;
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| format!("{shown}: a link without a target"))?;
                safe::remove_at(d, name).map_err(io)?;
                // The target is data: it is never followed while unpacking.
                nix::unistd::symlinkat(OsStr::from_bytes(&target), Some(d), name.as_os_str()).map_err(io)?;
                if self.as_root {
                    let (u, g) = (Some(Uid::from_raw(owner.0)), Some(Gid::from_raw(owner.1)));
                    let nofollow = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
                    nix::unistd::fchownat(Some(d), name.as_os_str(), u, g, nofollow).map_err(io)?;
                }
            }
            EntryType::Link => {
                let raw_target =
                    entry.link_name_bytes().ok_or_else(|| format!("{shown}: a hard link without a target"))?;
                let target = self::names(&raw_target, "hard link target")?;
                let Some((tname, tparents)) = target.split_last() else {
                    return Err(format!("{shown}: a hard link to the root"));
                };
                if target == names {
                    return Err(format!("{shown}: a hard link to itself"));
                }
                let tshown = format!("{shown} (a hard link to {:?})", String::from_utf8_lossy(&raw_target));
                let tdir = safe::walk(self.root, tparents, false, &tshown)?
                    .ok_or_else(|| format!("{tshown}: the target does not exist"))?;
                match safe::stat_at(tdir.as_raw_fd(), tname).map_err(io)? {
                    Some(st) if safe::kind(&st) != SFlag::S_IFDIR => {}
                    _ => return Err(format!("{tshown}: the target is not a file in the image")),
                }
                safe::remove_at(d, name).map_err(io)?;
                nix::unistd::linkat(
                    Some(tdir.as_raw_fd()),
                    tname.as_os_str(),
                    Some(d),
                    name.as_os_str(),
                    nix::fcntl::AtFlags::empty(),
                )
                .map_err(io)?;
            }
            // Not created: devices would give access to the host's; a FIFO has no use here.
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.added.remove(&joined(&names));
            }
            other => return Err(format!("{shown}: unsupported entry type {other:?}")),
        }
        Ok(())
    }

    fn own(&self, fd: i32, (uid, gid): (u32, u32)) -> nix::Result<()> {
        if !self.as_root {
            return Ok(()); // unit tests, unprivileged: the files are the caller's
        }
        nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
    }

    /// `.wh.NAME` hides NAME of lower layers; `.wh..wh..opq` hides everything lower layers
    /// put in its directory. Other `.wh..wh.` names (AUFS bookkeeping) are skipped.
    fn whiteout(&mut self, parents: &[OsString], hidden: &[u8], shown: &str) -> Result<(), String> {
        let io = |e: nix::errno::Errno| format!("{shown}: {}", e.desc());
        if hidden == OPAQUE {
            let Some(dir) = safe::walk(self.root, parents, false, shown)? else { return Ok(()) };
            return self.clear_lower(&dir, joined(parents)).map_err(io);
        }
        if hidden.starts_with(b".wh.") {
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(format!("{shown}: a whiteout of {:?} (refused)", String::from_utf8_lossy(hidden)));
        }
        let mut path = joined(parents);
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(hidden);
        if self.added.contains(&path) {
            return Ok(()); // this layer's own entry
        }
        let Some(dir) = safe::walk(self.root, parents, false, shown)? else { return Ok(()) };
        safe::remove_at(dir.as_raw_fd(), OsStr::from_bytes(hidden)).map_err(io)
    }

    /// Removes what lower layers left under `dir` (at `path`), keeping this layer's entries.
    fn clear_lower(&self, dir: &OwnedFd, path: Vec<u8>) -> nix::Result<()> {
        for child in safe::list(dir)? {
            let mut p = path.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(child.as_bytes());
            if !self.added.contains(&p) {
                safe::remove_at(dir.as_raw_fd(), &child)?;
            } else if safe::stat_at(dir.as_raw_fd(), &child)?.is_some_and(|st| safe::kind(&st) == SFlag::S_IFDIR) {
                let sub = safe::open_dir_at(dir.as_raw_fd(), &child)?;
                self.clear_lower(&sub, p)?;
            }
        }
        Ok(())
    }
}
