//! The image store, for any backend that runs OCI images: `ImageRef::parse`,
//! `ImageStore::{new, prepare, release}` and `Image` (root, command, environment, cwd).
//!
//! OCI images from a local image layout directory (`oci:/path[:tag]`), a layout archive
//! (`oci-archive:/path.tar[:tag]`) or a registry (`pull`: pulled into the worker's store of
//! pulled images, itself a layout, `blobs`), unpacked once per verified manifest digest into
//! a shared root that containers mount read-only.
//!
//! The image is not trusted:
//! - `index.json`, blobs and archives are opened without following links, regular files only
//!   (`safe::open_regular`), so a link to /dev/zero or a FIFO is refused at once;
//! - every blob (nested index, manifest, config, layers) is hashed while it is read and must
//!   match its sha256 digest; a root is cached under the digest of a manifest whose content
//!   was verified, and reused only for a manifest whose content verifies to the same digest;
//! - layers cannot write or remove anything outside the root (`layer`), archives cannot
//!   write outside their extraction directory (`archive`);
//! - sizes, entries and time are capped (`ImageLimits`); locks are per digest (per archive),
//!   held at most `unpack_timeout_ms`;
//! - everything lives under `images/`, 0711 (not listable), and is a cache of this worker run: it is
//!   emptied when the backend starts (no container runs then); while the worker runs, a root
//!   is removed once no image reference resolves to it any more (its image changed) and no
//!   container runs from it, and an archive's extraction once no reference names it.

mod archive;
mod blobs;
mod layer;
mod limits;
mod pull;
mod safe;

pub use limits::ImageLimits;
pub use pull::RegistryConfig;
pub(crate) use pull::{Puller, RegistryRef};

use iluvatar_core::Clock;
use limits::{Blob, Budget, Capped, MAX_JSON_BYTES, maybe_gunzip};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImageRef {
    pub archive: bool,
    pub path: PathBuf,
    pub tag: Option<String>,
}

impl ImageRef {
    /// `None` if the reference is not an OCI image reference at all.
    pub fn parse(reference: &str) -> Option<Result<ImageRef, String>> {
        let (archive, rest) = if let Some(r) = reference.strip_prefix("oci-archive:") {
            (true, r)
        } else {
            (false, reference.strip_prefix("oci:")?)
        };
        // A trailing ":tag" (without '/') names the image inside the layout.
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') && !p.is_empty() => (p, Some(t.to_string())),
            _ => (rest, None),
        };
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Some(Err(format!("{} is not an absolute path", path.display())));
        }
        Some(Ok(ImageRef { archive, path, tag }))
    }

    /// The cheap checks of a reference: the archive, or the layout's index.json, is a
    /// regular file (not a link, device or FIFO).
    #[cfg(test)] // Registration checks paths through roots.rs; the unit tests check the image side.
    pub fn check(&self) -> Result<(), String> {
        if self.archive {
            safe::open_regular(None, &self.path, &format!("image archive {}", self.path.display())).map(|_| ())
        } else {
            open_index(&self.path).map(|_| ())
        }
    }

    /// The identity of a reference, for the store's bookkeeping.
    fn key(&self) -> String {
        format!("{}|{}|{}", self.archive, self.path.display(), self.tag.as_deref().unwrap_or(""))
    }
}

/// An unpacked image: where its root is and how to start it.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
}

/// Who uses what under `images/`.
#[derive(Default)]
struct Uses {
    /// Reference -> the root (`sha256-<hex>`) it resolved to last.
    roots: HashMap<String, String>,
    /// Reference -> its archive's extraction (`archives/<key>`).
    archives: HashMap<String, String>,
    /// Container -> the root it runs from.
    containers: HashMap<String, String>,
}

/// Unpacks images under `dir`, once per verified manifest digest.
pub(crate) struct ImageStore {
    dir: PathBuf,
    limits: ImageLimits,
    clock: Arc<dyn Clock>,
    /// One lock per root or archive extraction being made (never one for all).
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    uses: Mutex<Uses>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ImageStore {
    /// The store in `dir` (created 0711), emptied: what an earlier run unpacked is removed.
    pub fn new(dir: PathBuf, limits: ImageLimits, clock: Arc<dyn Clock>) -> Result<Self, String> {
        safe::private_dir(&dir)?;
        let store = ImageStore { dir, limits, clock, locks: Default::default(), uses: Default::default() };
        store.clear()?;
        Ok(store)
    }

    /// Removes everything under the store's directory; returns how many things.
    fn clear(&self) -> Result<usize, String> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?.flatten() {
            remove_tree(&e.path())?;
            n += 1;
        }
        Ok(n)
    }

    fn key_lock(&self, key: &str) -> Arc<Mutex<()>> {
        let mut locks = lock(&self.locks);
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Resolves and (if needed) unpacks an image for the container `container`, which uses
    /// it until `release`; without a container (at registration), only unpacks it, and
    /// records no use. Blocking: call from a blocking thread.
    pub fn prepare(&self, r: &ImageRef, container: Option<&str>) -> Result<Image, String> {
        let budget = Budget::new(&self.limits, self.clock.as_ref());
        let (layout, archive_key) = if r.archive {
            let (fd, key) = self.archive_layout(&r.path, &budget)?;
            (fd, Some(key))
        } else {
            let fd =
                safe::open_dir_path(&r.path).map_err(|e| format!("image layout {}: {}", r.path.display(), e.desc()))?;
            (fd, None)
        };
        let (manifest_digest, manifest) = resolve_manifest(&layout, r.tag.as_deref(), &budget)?;
        let key = format!("sha256-{}", limits::sha256_hex(&manifest_digest)?);
        let done = self.dir.join(&key);
        let key_lock = self.key_lock(&key);
        let guard = lock(&key_lock);
        if !done.join("image.json").is_file() {
            self.unpack(&layout, &manifest_digest, &manifest, &done, &budget)?;
        }
        let meta = read_json(&done.join("image.json"))?;
        let Some(container) = container else {
            drop(guard);
            return Ok(image_of(&done, &meta));
        };
        let (old_root, old_archive) = {
            let mut uses = lock(&self.uses);
            uses.containers.insert(container.to_string(), key.clone());
            let old_root = uses.roots.insert(r.key(), key.clone()).filter(|k| *k != key);
            let old_archive = match archive_key {
                Some(a) => uses.archives.insert(r.key(), a.clone()).filter(|k| *k != a),
                None => uses.archives.remove(&r.key()),
            };
            (old_root, old_archive)
        };
        drop(guard);
        if let Some(old) = old_root {
            self.collect(&old);
        }
        if let Some(old) = old_archive {
            self.collect_archive(&old);
        }
        Ok(image_of(&done, &meta))
    }

    /// The container no longer runs: its root is removed if nothing else uses it.
    /// Blocking (it may remove a tree).
    pub fn release(&self, container: &str) {
        let root = lock(&self.uses).containers.remove(container);
        if let Some(root) = root {
            self.collect(&root);
        }
    }

    /// Removes the root `key` if no reference resolves to it and no container runs from it.
    fn collect(&self, key: &str) {
        let key_lock = self.key_lock(key);
        let guard = lock(&key_lock);
        let used = {
            let uses = lock(&self.uses);
            uses.roots.values().chain(uses.containers.values()).any(|k| k == key)
        };
        if used {
            return;
        }
        // Renamed under the lock (a prepare of the same digest then unpacks anew), removed after.
        let trash = self.dir.join(format!(".trash-{key}"));
        let moved = std::fs::rename(self.dir.join(key), &trash).is_ok();
        drop(guard);
        if moved {
            if let Err(e) = remove_tree(&trash) {
                tracing::warn!(error = %e, "cannot remove an unused image root");
            } else {
                tracing::info!(root = key, "removed an unused image root");
            }
        }
    }

    /// Removes the archive extraction `key` if no reference names it.
    fn collect_archive(&self, key: &str) {
        let lock_key = format!("archive-{key}");
        let key_lock = self.key_lock(&lock_key);
        let _guard = lock(&key_lock);
        if lock(&self.uses).archives.values().any(|k| k == key) {
            return;
        }
        let _ = remove_tree(&self.dir.join("archives").join(key));
    }

    /// Extracts an archive into a layout directory keyed by what `fstat` says of the file
    /// opened (device, inode, size, modification and change times), so that a changed
    /// archive is extracted anew, whatever path reached it (the registration's handle and
    /// the one kept for cold starts are different `/proc/self/fd` paths). Returns the layout
    /// and its key.
    fn archive_layout(&self, path: &Path, budget: &Budget<'_>) -> Result<(OwnedFd, String), String> {
        let shown = path.display().to_string();
        let (file, st) = safe::open_regular(None, path, &format!("image archive {shown}"))?;
        let id = format!(
            "{}|{}|{}|{}.{}|{}.{}",
            st.st_dev, st.st_ino, st.st_size, st.st_mtime, st.st_mtime_nsec, st.st_ctime, st.st_ctime_nsec
        );
        let key = format!("{:016x}", crate::isolation::naming::fnv1a(id.as_bytes()));
        let archives = self.dir.join("archives");
        safe::private_dir(&archives)?;
        let dst = archives.join(&key);
        let key_lock = self.key_lock(&format!("archive-{key}"));
        let _guard = lock(&key_lock);
        if !dst.is_dir() {
            let tmp = archives.join(format!(".tmp-{key}"));
            remove_tree(&tmp)?;
            safe::private_dir(&tmp)?;
            let made = safe::open_dir_path(&tmp)
                .map_err(|e| format!("{}: {}", tmp.display(), e.desc()))
                .and_then(|fd| archive::extract(file, &fd, &shown, budget))
                .and_then(|()| {
                    open_index(&tmp).map_err(|_| format!("image archive {shown} holds no OCI layout (no index.json)"))
                })
                .and_then(|_| std::fs::rename(&tmp, &dst).map_err(|e| format!("{}: {e}", dst.display())));
            if let Err(e) = made {
                let _ = remove_tree(&tmp);
                return Err(e);
            }
        }
        let fd = safe::open_dir_path(&dst).map_err(|e| format!("{}: {}", dst.display(), e.desc()))?;
        Ok((fd, key))
    }

    /// Unpacks a (verified) manifest's layers into `done/rootfs` and writes `done/image.json`.
    fn unpack(
        &self,
        layout: &OwnedFd,
        manifest_digest: &str,
        manifest: &Value,
        done: &Path,
        budget: &Budget<'_>,
    ) -> Result<(), String> {
        let name = done.file_name().unwrap_or_default().to_string_lossy();
        let tmp = self.dir.join(format!(".tmp-{name}"));
        remove_tree(&tmp)?;
        let made = self.unpack_into(layout, manifest_digest, manifest, &tmp, budget).and_then(|()| {
            remove_tree(done)?;
            std::fs::rename(&tmp, done).map_err(|e| format!("{}: {e}", done.display()))
        });
        if made.is_err() {
            let _ = remove_tree(&tmp);
        }
        made
    }

    fn unpack_into(
        &self,
        layout: &OwnedFd,
        manifest_digest: &str,
        manifest: &Value,
        tmp: &Path,
        budget: &Budget<'_>,
    ) -> Result<(), String> {
        safe::private_dir(tmp)?;
        let rootfs = tmp.join("rootfs");
        std::fs::create_dir(&rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
        let root = safe::open_dir_path(&rootfs).map_err(|e| format!("{}: {}", rootfs.display(), e.desc()))?;
        let config_digest = manifest["config"]["digest"].as_str().ok_or("the manifest has no config")?;
        let config = read_json_blob(layout, config_digest, "config", manifest["config"]["size"].as_u64(), budget)?;
        for layer in manifest["layers"].as_array().ok_or("the manifest has no layers")? {
            let digest = layer["digest"].as_str().ok_or("a layer has no digest")?;
            apply_layer(layout, digest, layer["size"].as_u64(), &root, budget)?;
        }
        for d in ["proc", "dev", "tmp", "iluvatar/sock"] {
            let names: Vec<_> = d.split('/').map(std::ffi::OsString::from).collect();
            safe::walk(&root, &names, true, &format!("the image's /{d}"))?;
        }
        let c = &config["config"];
        let list = |k: &str| c[k].as_array().cloned().unwrap_or_default();
        let mut args = list("Entrypoint");
        args.extend(list("Cmd"));
        if args.is_empty() {
            return Err(
                "the image has neither Entrypoint nor Cmd: it runs neither Ilúvatar's agent nor a function server"
                    .into(),
            );
        }
        let meta = serde_json::json!({
            "manifest": manifest_digest,
            "args": args,
            "env": list("Env"),
            "cwd": c["WorkingDir"].as_str().filter(|w| !w.is_empty()).unwrap_or("/"),
        });
        std::fs::write(tmp.join("image.json"), meta.to_string()).map_err(|e| e.to_string())
    }
}

/// An unpacked image, from the `image.json` written beside its root.
fn image_of(done: &Path, meta: &Value) -> Image {
    let strings = |k: &str| -> Vec<String> {
        meta[k].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    Image {
        rootfs: done.join("rootfs"),
        args: strings("args"),
        env: strings("env"),
        cwd: meta["cwd"].as_str().unwrap_or("/").to_string(),
    }
}

/// Removes a tree of the store's own (std does not follow links inside it); absent is fine.
fn remove_tree(p: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(|e| format!("cannot remove {}: {e}", p.display())),
        Ok(_) => std::fs::remove_file(p).map_err(|e| format!("cannot remove {}: {e}", p.display())),
    }
}

/// A file the store wrote itself.
fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))
}

/// A layout's `index.json`: a regular file of at most `MAX_JSON_BYTES`.
fn open_index(layout: &Path) -> Result<(OwnedFd, Vec<u8>), String> {
    let shown = layout.display();
    let dir = safe::open_dir_path(layout).map_err(|e| format!("image layout {shown}: {}", e.desc()))?;
    let bytes = read_index(&dir, &format!("{shown} is not an OCI image layout: its index.json"))?;
    Ok((dir, bytes))
}

fn read_index(layout: &OwnedFd, what: &str) -> Result<Vec<u8>, String> {
    let (file, st) = safe::open_regular(Some(layout.as_raw_fd()), Path::new("index.json"), what)?;
    if st.st_size as u64 > MAX_JSON_BYTES {
        return Err(format!("{what} is over {MAX_JSON_BYTES} bytes"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES).read_to_end(&mut bytes).map_err(|e| format!("{what}: {e}"))?;
    Ok(bytes)
}

/// A JSON blob (index, manifest, config), verified against its digest.
fn read_json_blob(
    layout: &OwnedFd,
    digest: &str,
    what: &str,
    size: Option<u64>,
    budget: &Budget<'_>,
) -> Result<Value, String> {
    let blob = Blob::open(layout, digest, what, MAX_JSON_BYTES, budget)?;
    blob.expect_size(size)?;
    let bytes = blob.read_verified()?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{what} {digest} is not valid JSON: {e}"))
}

/// Finds the manifest for `tag` (or the only one) in the layout's index, following one
/// level of image index; returns its digest and its (verified) content.
fn resolve_manifest(layout: &OwnedFd, tag: Option<&str>, budget: &Budget<'_>) -> Result<(String, Value), String> {
    let bytes = read_index(layout, "the layout's index.json")?;
    let index: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("the layout's index.json is not valid JSON: {e}"))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let chosen = match tag {
        Some(t) => manifests.iter().find(|m| m["annotations"][REF_NAME] == t).ok_or_else(|| {
            let tags: Vec<&str> = manifests.iter().filter_map(|m| m["annotations"][REF_NAME].as_str()).collect();
            format!("the layout has no image tagged {t:?} (tags: {})", tags.join(", "))
        })?,
        None if manifests.len() == 1 => &manifests[0],
        None => return Err(format!("the layout holds {} images: name one with :TAG", manifests.len())),
    };
    let mut desc = chosen.clone();
    if desc["mediaType"].as_str().is_some_and(|m| m.contains("index")) {
        let digest = desc["digest"].as_str().ok_or("an index entry has no digest")?;
        let nested = read_json_blob(layout, digest, "image index", desc["size"].as_u64(), budget)?;
        let entries = nested["manifests"].as_array().map(Vec::as_slice).unwrap_or_default();
        desc = pull::for_this_platform(entries).map_err(|e| e.to_string())?.clone();
    }
    let digest = desc["digest"].as_str().ok_or("an index entry has no digest")?.to_string();
    let manifest = read_json_blob(layout, &digest, "manifest", desc["size"].as_u64(), budget)?;
    Ok((digest, manifest))
}

/// Applies one layer (tar, possibly gzipped), verifying its digest.
fn apply_layer(
    layout: &OwnedFd,
    digest: &str,
    size: Option<u64>,
    root: &OwnedFd,
    budget: &Budget<'_>,
) -> Result<(), String> {
    let max = budget.limits.max_layer_mb << 20;
    let mut blob = Blob::open(layout, digest, "layer", max, budget)?;
    blob.expect_size(size)?;
    let what = format!("layer {digest}");
    let applied = maybe_gunzip(BufReader::new(&mut blob))
        .and_then(|stream| layer::apply(root, Capped::layer(stream, what.clone(), budget), &what, budget));
    match applied {
        Ok(()) => blob.finish(),
        // A limit or the deadline: reading on would only cost more.
        Err(e) if budget.faulted() => Err(e),
        // A tampered layer fails its digest: say so rather than how its tar looked.
        Err(e) => blob.finish().and(Err(e)),
    }
}

#[cfg(test)]
mod tests;
