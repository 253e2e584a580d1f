//! Extracting an image archive (`oci-archive:`): only what an OCI layout holds is written
//! (`oci-layout`, `index.json`, `blobs/<alg>/<name>`), as new regular files in a fresh
//! directory, one name at a time and never through a link; `..` and absolute entries are
//! refused; links, devices and anything else at those names are refused; other entries are
//! skipped. Blobs are verified later, when they are read.

use super::layer;
use super::limits::{Budget, Capped, maybe_gunzip};
use super::safe;
use std::fs::File;
use std::io::BufReader;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use tar::EntryType;

/// Extracts the archive `file` into the empty directory `dst`.
pub(super) fn extract(file: File, dst: &OwnedFd, shown: &str, budget: &Budget<'_>) -> Result<(), String> {
    let stream = Capped::archive(maybe_gunzip(BufReader::new(file))?, format!("image archive {shown}"), budget);
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().map_err(|e| budget.explain(e))? {
        budget.entry(&format!("image archive {shown}"))?;
        let mut entry = entry.map_err(|e| format!("image archive {shown}: {}", budget.explain(e)))?;
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let names = layer::names(&raw, "archive entry").map_err(|e| format!("image archive {shown}: {e}"))?;
        let parts: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        let entry_shown = format!("image archive {shown}: entry {:?}", String::from_utf8_lossy(&raw));
        let wanted = matches!(parts.as_slice(), [b"oci-layout"] | [b"index.json"] | [b"blobs", _, _]);
        let is_dir = matches!(parts.as_slice(), [b"blobs"] | [b"blobs", _]);
        match kind {
            EntryType::Regular | EntryType::Continuous if wanted => {
                let (name, parents) = names.split_last().expect("wanted names are not empty");
                let dir = safe::walk(dst, parents, true, &entry_shown)?.expect("created");
                let mut out = safe::create_file(dir.as_raw_fd(), name).map_err(|e| match e {
                    nix::errno::Errno::EEXIST => format!("{entry_shown} appears twice (refused)"),
                    e => format!("{entry_shown}: {}", e.desc()),
                })?;
                std::io::copy(&mut entry, &mut out).map_err(|e| format!("{entry_shown}: {}", budget.explain(e)))?;
            }
            EntryType::Directory if is_dir || wanted => {
                safe::walk(dst, &names, true, &entry_shown)?;
            }
            _ if wanted || is_dir => {
                return Err(format!("{entry_shown} is a {kind:?} entry, not a regular file or directory (refused)"));
            }
            _ => {} // not part of an OCI layout
        }
    }
    Ok(())
}
