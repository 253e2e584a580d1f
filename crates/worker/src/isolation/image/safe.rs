//! File operations that never follow a symbolic link an image could have planted: paths are
//! walked one name at a time from a directory handle with `O_NOFOLLOW`, so that no entry, no
//! whiteout and no blob lookup can be led out of the directory it starts from.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::UnlinkatFlags;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub(super) fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn kind_name(k: SFlag) -> &'static str {
    match k {
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFCHR | SFlag::S_IFBLK => "a device",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFREG => "a regular file",
        _ => "not a regular file",
    }
}

/// A directory named by the operator's (absolute) path.
pub(super) fn open_dir_path(p: &Path) -> nix::Result<OwnedFd> {
    openat(None, p, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map(own)
}

/// The directory `name` inside `dir`, never through a link.
pub(super) fn open_dir_at(dir: RawFd, name: &OsStr) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(Some(dir), name, flags, Mode::empty()).map(own)
}

/// A regular file to read, at `name` in `dir` (or an absolute path when `dir` is `None`):
/// refused if it is a link, a device, a FIFO or anything but a regular file. It is looked at
/// before it is opened (so a device is never opened), opened with `O_NOFOLLOW | O_NONBLOCK`
/// (a FIFO swapped in meanwhile cannot block) and checked again on the open handle.
pub(super) fn open_regular(dir: Option<RawFd>, name: &Path, what: &str) -> Result<(File, FileStat), String> {
    let check = |st: &FileStat| match kind(st) {
        SFlag::S_IFREG => Ok(()),
        k => Err(format!("{what} is {}, not a regular file (refused)", kind_name(k))),
    };
    // The worker's own registration handle (`/proc/self/fd/N`, opened and checked against
    // `code_roots` at registration) is a link by nature: it is followed, to the file opened then.
    let handle = dir.is_none() && name.starts_with("/proc/self/fd/");
    let at = if handle { AtFlags::empty() } else { AtFlags::AT_SYMLINK_NOFOLLOW };
    let st = fstatat(dir, name, at).map_err(|e| match e {
        Errno::ENOENT => format!("{what} does not exist"),
        e => format!("{what}: {}", e.desc()),
    })?;
    check(&st)?;
    let nofollow = if handle { OFlag::empty() } else { OFlag::O_NOFOLLOW };
    let flags = OFlag::O_RDONLY | nofollow | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty()).map(own).map_err(|e| format!("{what}: {}", e.desc()))?;
    let st = fstat(fd.as_raw_fd()).map_err(|e| format!("{what}: {}", e.desc()))?;
    check(&st)?;
    Ok((File::from(fd), st))
}

/// The directory at `names` under `root`, one name at a time, never through a link. With
/// `create`, missing directories are made (0755); without, a missing one gives `None`.
/// `shown` names the entry in errors.
pub(super) fn walk(root: &OwnedFd, names: &[OsString], create: bool, shown: &str) -> Result<Option<OwnedFd>, String> {
    let mut cur: Option<OwnedFd> = None;
    for (i, name) in names.iter().enumerate() {
        let dir = cur.as_ref().unwrap_or(root).as_raw_fd();
        let prefix = || {
            let parts: Vec<_> = names[..=i].iter().map(|n| n.to_string_lossy()).collect();
            parts.join("/")
        };
        let next = match open_dir_at(dir, name) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match nix::sys::stat::mkdirat(Some(dir), name.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(format!("{shown}: cannot create {}: {}", prefix(), e.desc())),
                }
                open_dir_at(dir, name).map_err(|e| format!("{shown}: {}: {}", prefix(), e.desc()))?
            }
            Err(Errno::ENOENT) => return Ok(None),
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                let what = fstatat(Some(dir), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map(|st| kind_name(kind(&st)))
                    .unwrap_or(e.desc());
                return Err(format!(
                    "{shown} goes through {} ({what}): entries are never written or removed through links",
                    prefix()
                ));
            }
            Err(e) => return Err(format!("{shown}: {}: {}", prefix(), e.desc())),
        };
        cur = Some(next);
    }
    match cur {
        Some(fd) => Ok(Some(fd)),
        None => nix::unistd::dup(root.as_raw_fd()).map(|fd| Some(own(fd))).map_err(|e| e.desc().to_string()),
    }
}

/// The names in a directory (without `.` and `..`).
pub(super) fn list(dir: &OwnedFd) -> nix::Result<Vec<OsString>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut d = nix::dir::Dir::openat(Some(dir.as_raw_fd()), ".", flags, Mode::empty())?;
    let mut names = Vec::new();
    for e in d.iter() {
        let name = e?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(&name).to_os_string());
        }
    }
    Ok(names)
}

/// What is at `name` in `dir`, without following a link; `None` if nothing is.
pub(super) fn stat_at(dir: RawFd, name: &OsStr) -> nix::Result<Option<FileStat>> {
    match fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `name` in `dir` (a directory with everything in it), never following a link.
/// Depth is bounded by the entries' (see `layer::MAX_DEPTH`).
pub(super) fn remove_at(dir: RawFd, name: &OsStr) -> nix::Result<()> {
    let Some(st) = stat_at(dir, name)? else { return Ok(()) };
    if kind(&st) == SFlag::S_IFDIR {
        let sub = open_dir_at(dir, name)?;
        for child in list(&sub)? {
            remove_at(sub.as_raw_fd(), &child)?;
        }
        nix::unistd::unlinkat(Some(dir), name, UnlinkatFlags::RemoveDir)
    } else {
        nix::unistd::unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir)
    }
}

/// Creates a new file `name` in `dir` for writing (it must not exist; never a link's target).
pub(super) fn create_file(dir: RawFd, name: &OsStr) -> nix::Result<File> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(Some(dir), name, flags, Mode::from_bits_truncate(0o600)).map(|fd| File::from(own(fd)))
}

/// A directory of the worker's own, created (or made) 0711: not listable by others, but a
/// container in a user namespace (not root on the host) can pass through to its image root.
pub(super) fn private_dir(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(p)
        .and_then(|()| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711)))
        .map_err(|e| format!("cannot create {}: {e}", p.display()))
}
