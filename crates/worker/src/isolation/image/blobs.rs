//! The worker's store of pulled images: one OCI image layout (`state_dir/pulled/`) shared by
//! every function. Blobs are content-addressed (`blobs/sha256/<hex>`) and enter the store only
//! whole and verified: each is written to `tmp/`, hashed while written, and renamed into place
//! once its size and digest match. `index.json` names each pulled reference
//! (`org.opencontainers.image.ref.name`) with the manifest it resolved to, so that the image
//! store unpacks a pulled image as it does a local layout, and a restarted worker finds it.
//!
//! Unlike unpacked roots, the store outlives a worker run (it is the pull cache); only `tmp/`
//! is emptied at start.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// The annotation that names an image in a layout's index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub(super) struct BlobStore {
    dir: PathBuf,
    /// One lock per blob being fetched, so that a blob is pulled once however many pulls
    /// need it at the same time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises updates of index.json.
    index: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A blob being written: hashed and counted as it goes, removed unless committed.
pub(super) struct Incoming<'s> {
    store: &'s BlobStore,
    file: tokio::fs::File,
    path: PathBuf,
    hasher: Sha256,
    pub written: u64,
    committed: bool,
}

impl BlobStore {
    /// The store in `dir` (created 0700): an OCI layout, its `tmp/` emptied.
    pub fn open(dir: PathBuf) -> Result<Self, String> {
        let tmp = dir.join("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        for d in [&dir, &dir.join("blobs/sha256"), &tmp] {
            std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let layout = dir.join("oci-layout");
        if !layout.is_file() {
            write_atomic(&dir, &layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !dir.join("index.json").is_file() {
            write_atomic(&dir, &dir.join("index.json"), br#"{"schemaVersion":2,"manifests":[]}"#)?;
        }
        Ok(BlobStore { dir, locks: Default::default(), index: Mutex::new(()) })
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Whether the blob is in the store with this size (it entered verified).
    pub fn has(&self, hex: &str, size: u64) -> bool {
        std::fs::symlink_metadata(self.blob_path(hex)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// The lock of one blob: held while it is looked up and fetched.
    pub fn blob_lock(&self, hex: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.locks);
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(hex.to_string()).or_default().clone()
    }

    /// A new temporary file for a blob.
    pub async fn incoming(&self) -> Result<Incoming<'_>, String> {
        let path = self.dir.join("tmp").join(crate::env::os_random_id());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Incoming { store: self, file, path, hasher: Sha256::new(), written: 0, committed: false })
    }

    /// Stores a small blob already in memory (a manifest) whose digest was checked.
    pub async fn put(&self, hex: &str, bytes: &[u8]) -> Result<(), String> {
        if self.has(hex, bytes.len() as u64) {
            return Ok(());
        }
        let mut blob = self.incoming().await?;
        blob.write(bytes).await?;
        blob.commit(hex, bytes.len() as u64).await.map_err(|e| e.to_string())
    }

    /// Records that `name` (a normalised reference) resolves to the manifest `descriptor`
    /// (mediaType, digest, size), replacing what it resolved to before.
    pub fn record(&self, name: &str, descriptor: serde_json::Value) -> Result<(), String> {
        let _guard = lock(&self.index);
        let mut index = self.read_index()?;
        let manifests = index["manifests"].as_array_mut().ok_or("the store's index.json has no manifests")?;
        manifests.retain(|m| m["annotations"][REF_NAME] != name);
        let mut entry = descriptor;
        entry["annotations"] = serde_json::json!({ REF_NAME: name });
        manifests.push(entry);
        write_atomic(&self.dir, &self.dir.join("index.json"), index.to_string().as_bytes())
    }

    /// Whether `name` was pulled (the index names it).
    pub fn knows(&self, name: &str) -> bool {
        let _guard = lock(&self.index);
        self.read_index().is_ok_and(|i| {
            i["manifests"].as_array().is_some_and(|ms| ms.iter().any(|m| m["annotations"][REF_NAME] == name))
        })
    }

    fn read_index(&self) -> Result<serde_json::Value, String> {
        let p = self.dir.join("index.json");
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is not valid JSON: {e}", p.display()))
    }
}

/// What a blob's content turned out to be, when it is not what its descriptor said.
#[derive(Debug)]
pub(super) enum Mismatch {
    Size { got: u64 },
    Digest { actual: String },
    Store(String),
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Size { got } => write!(f, "{got} bytes arrived"),
            Mismatch::Digest { actual } => write!(f, "its content hashes to sha256:{actual}"),
            Mismatch::Store(e) => f.write_str(e),
        }
    }
}

impl Incoming<'_> {
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        self.file.write_all(bytes).await.map_err(|e| format!("writing {}: {e}", self.path.display()))
    }

    /// The sha256 of what was written so far (hex).
    pub fn actual(&self) -> String {
        format!("{:x}", self.hasher.clone().finalize())
    }

    /// Puts the blob in place if it is `size` bytes hashing to `hex`; else it is removed.
    pub async fn commit(mut self, hex: &str, size: u64) -> Result<(), Mismatch> {
        if self.written != size {
            return Err(Mismatch::Size { got: self.written });
        }
        let actual = self.actual();
        if actual != hex {
            return Err(Mismatch::Digest { actual });
        }
        let synced = self.file.flush().await.and(self.file.sync_all().await);
        synced.map_err(|e| Mismatch::Store(format!("writing {}: {e}", self.path.display())))?;
        let dst = self.store.blob_path(hex);
        tokio::fs::rename(&self.path, &dst)
            .await
            .map_err(|e| Mismatch::Store(format!("cannot move a blob to {}: {e}", dst.display())))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Incoming<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes a file of the store's own through a temporary file and a rename.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = dir.join("tmp").join(crate::env::os_random_id());
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        format!("{:x}", Sha256::digest(bytes))
    }

    #[tokio::test]
    async fn only_whole_verified_blobs_enter_the_store() {
        let dir = std::env::temp_dir().join(format!("iluvatar-blobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = BlobStore::open(dir.clone()).unwrap();
        let (good, bad) = (b"good content".as_slice(), b"evil content".as_slice());

        let mut b = store.incoming().await.unwrap();
        b.write(bad).await.unwrap();
        let e = b.commit(&hex(good), good.len() as u64).await.unwrap_err();
        assert!(matches!(&e, Mismatch::Digest { actual } if *actual == hex(bad)), "{e:?}");
        let mut b = store.incoming().await.unwrap();
        b.write(good).await.unwrap();
        b.write(b"more").await.unwrap();
        assert!(matches!(b.commit(&hex(good), good.len() as u64).await, Err(Mismatch::Size { got: 16 })));
        assert!(!store.has(&hex(good), good.len() as u64));
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0, "refused blobs are removed");

        store.put(&hex(good), good).await.unwrap();
        assert!(store.has(&hex(good), good.len() as u64));
        assert!(!store.has(&hex(good), 3), "a blob of another size is not the one asked for");

        let desc = |d: &str| serde_json::json!({"mediaType": "m", "digest": format!("sha256:{d}"), "size": 1});
        store.record("reg/a:1", desc("aa")).unwrap();
        store.record("reg/b:1", desc("bb")).unwrap();
        store.record("reg/a:1", desc("cc")).unwrap();
        assert!(store.knows("reg/a:1") && store.knows("reg/b:1") && !store.knows("reg/c:1"));
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let digests: Vec<_> = index["manifests"].as_array().unwrap().iter().map(|m| m["digest"].clone()).collect();
        assert_eq!(digests, ["sha256:bb", "sha256:cc"], "a name resolves to what it was pulled as last");

        drop(store);
        std::fs::write(dir.join("tmp/leftover"), b"x").unwrap();
        let store = BlobStore::open(dir.clone()).unwrap();
        assert!(store.knows("reg/b:1") && store.has(&hex(good), good.len() as u64), "the store outlives a run");
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0, "tmp/ is emptied at start");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
