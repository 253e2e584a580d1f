//! OCI images from a local image layout directory (`oci:/path[:tag]`) or a layout archive
//! (`oci-archive:/path.tar[:tag]`), unpacked once per manifest digest into a shared root
//! that containers mount read-only.

use serde_json::Value;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Unpacking writes shared directories: one at a time.
static UNPACK: Mutex<()> = Mutex::new(());

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRef {
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
}

/// An unpacked image: where its root is and how to start it.
#[derive(Debug, Clone)]
pub struct Image {
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
}

/// Unpacks images under `dir`, once per manifest digest.
pub struct ImageStore {
    dir: PathBuf,
}

impl ImageStore {
    pub fn new(dir: PathBuf) -> Self {
        ImageStore { dir }
    }

    /// Resolves and (if needed) unpacks an image. Blocking: call from a blocking thread.
    pub fn prepare(&self, r: &ImageRef) -> Result<Image, String> {
        let _one = UNPACK.lock().unwrap_or_else(|p| p.into_inner());
        let layout = if r.archive { self.extract_archive(&r.path)? } else { r.path.clone() };
        let manifest_digest = resolve_manifest(&layout, r.tag.as_deref())?;
        let key = manifest_digest.replace(':', "-");
        let done = self.dir.join(&key);
        if !done.join("image.json").is_file() {
            unpack(&layout, &manifest_digest, &done)?;
        }
        let meta: Value = read_json(&done.join("image.json"))?;
        let strings = |k: &str| -> Vec<String> {
            meta[k]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        Ok(Image {
            rootfs: done.join("rootfs"),
            args: strings("args"),
            env: strings("env"),
            cwd: meta["cwd"].as_str().unwrap_or("/").to_string(),
        })
    }

    /// Extracts an archive into a layout directory keyed by the archive file's identity
    /// (device and inode: the path is the registration's `/proc/self/fd/N` handle, whose
    /// number means nothing after a restart), size and modification time, so that a changed
    /// archive is extracted anew.
    fn extract_archive(&self, path: &Path) -> Result<PathBuf, String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("image archive {}: {e}", path.display()))?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
        let id = format!("{}:{}|{}|{}", meta.dev(), meta.ino(), meta.len(), mtime.as_nanos());
        let dst = self.dir.join("archives").join(format!("{:016x}", super::fnv1a(id.as_bytes())));
        if dst.join("index.json").is_file() {
            return Ok(dst);
        }
        let tmp = dst.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        let file = File::open(path).map_err(|e| format!("image archive {}: {e}", path.display()))?;
        tar::Archive::new(maybe_gunzip(BufReader::new(file))?)
            .unpack(&tmp)
            .map_err(|e| format!("image archive {} cannot be extracted: {e}", path.display()))?;
        if !tmp.join("index.json").is_file() {
            return Err(format!("image archive {} holds no OCI layout (no index.json)", path.display()));
        }
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::rename(&tmp, &dst).map_err(|e| e.to_string())?;
        Ok(dst)
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, String> {
    let (alg, hex) = digest.split_once(':').ok_or_else(|| format!("malformed digest {digest:?}"))?;
    if alg.contains('/') || hex.contains('/') || hex.contains("..") {
        return Err(format!("malformed digest {digest:?}"));
    }
    Ok(layout.join("blobs").join(alg).join(hex))
}

/// Finds the manifest for `tag` (or the only one) in the layout's index, following one
/// level of image index.
fn resolve_manifest(layout: &Path, tag: Option<&str>) -> Result<String, String> {
    let index = read_json(&layout.join("index.json"))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let chosen = match tag {
        Some(t) => manifests.iter().find(|m| m["annotations"][REF_NAME] == t).ok_or_else(|| {
            let tags: Vec<&str> = manifests.iter().filter_map(|m| m["annotations"][REF_NAME].as_str()).collect();
            format!("the layout has no image tagged {t:?} (tags: {})", tags.join(", "))
        })?,
        None if manifests.len() == 1 => &manifests[0],
        None => return Err(format!("the layout holds {} images: name one with :TAG", manifests.len())),
    };
    let digest = chosen["digest"].as_str().ok_or("an index entry has no digest")?.to_string();
    if chosen["mediaType"].as_str().is_some_and(|m| m.contains("index")) {
        let nested = read_json(&blob_path(layout, &digest)?)?;
        let first = nested["manifests"]
            .as_array()
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m["platform"]["architecture"] == std::env::consts::ARCH.replace("x86_64", "amd64"))
                    .or(ms.first())
            })
            .ok_or("the nested image index is empty")?;
        return Ok(first["digest"].as_str().ok_or("a nested index entry has no digest")?.to_string());
    }
    Ok(digest)
}

/// Unpacks a manifest's layers into `done/rootfs` and writes `done/image.json`.
fn unpack(layout: &Path, manifest_digest: &str, done: &Path) -> Result<(), String> {
    let manifest = read_json(&blob_path(layout, manifest_digest)?)?;
    let config_digest = manifest["config"]["digest"].as_str().ok_or("the manifest has no config")?;
    let config = read_json(&blob_path(layout, config_digest)?)?;
    let tmp = done.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let rootfs = tmp.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| e.to_string())?;
    for layer in manifest["layers"].as_array().ok_or("the manifest has no layers")? {
        let digest = layer["digest"].as_str().ok_or("a layer has no digest")?;
        apply_layer(&blob_path(layout, digest)?, &rootfs).map_err(|e| format!("layer {digest}: {e}"))?;
    }
    for d in ["proc", "dev", "tmp", "iluvatar/sock"] {
        std::fs::create_dir_all(rootfs.join(d)).map_err(|e| format!("cannot create /{d} in the image: {e}"))?;
    }
    let c = &config["config"];
    let list = |k: &str| c[k].as_array().cloned().unwrap_or_default();
    let mut args = list("Entrypoint");
    args.extend(list("Cmd"));
    if args.is_empty() {
        return Err("the image has neither Entrypoint nor Cmd".into());
    }
    let meta = serde_json::json!({
        "manifest": manifest_digest,
        "args": args,
        "env": list("Env"),
        "cwd": c["WorkingDir"].as_str().filter(|w| !w.is_empty()).unwrap_or("/"),
    });
    std::fs::write(tmp.join("image.json"), meta.to_string()).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(done);
    std::fs::rename(&tmp, done).map_err(|e| e.to_string())
}

fn maybe_gunzip<R: std::io::BufRead + 'static>(mut r: R) -> Result<Box<dyn Read>, String> {
    let head = r.fill_buf().map_err(|e| e.to_string())?;
    if head.starts_with(&[0x1f, 0x8b]) { Ok(Box::new(flate2::bufread::GzDecoder::new(r))) } else { Ok(Box::new(r)) }
}

/// Applies one layer (tar, possibly gzipped) with OCI whiteouts.
fn apply_layer(blob: &Path, rootfs: &Path) -> Result<(), String> {
    let file = File::open(blob).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(maybe_gunzip(BufReader::new(file))?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(true);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = rootfs.join(path.parent().unwrap_or(Path::new("")));
            if !parent.starts_with(rootfs) || hidden.contains("..") {
                return Err(format!("whiteout {} escapes the root", path.display()));
            }
            if hidden == ".wh..opq" {
                for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                    remove_any(&e.path());
                }
            } else {
                remove_any(&parent.join(hidden));
            }
            continue;
        }
        entry.unpack_in(rootfs).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn remove_any(p: &Path) {
    let _ = if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_and_without_tags() {
        let r = ImageRef::parse("oci:/images/py:v1").unwrap().unwrap();
        assert_eq!((r.archive, r.path.as_path(), r.tag.as_deref()), (false, Path::new("/images/py"), Some("v1")));
        let r = ImageRef::parse("oci-archive:/images/py.tar").unwrap().unwrap();
        assert_eq!((r.archive, r.tag), (true, None));
        assert!(ImageRef::parse("oci:relative/path").unwrap().is_err());
        assert!(ImageRef::parse("code:/x").is_none());
    }
}
