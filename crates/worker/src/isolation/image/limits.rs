//! What an image may cost (layer and image sizes, entries, time) and the readers that
//! enforce it: `Blob` hashes what it reads and checks it against the blob's digest, `Capped`
//! counts the uncompressed bytes.

use super::safe;
use iluvatar_core::Clock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

const MIB: u64 = 1 << 20;
/// Largest index, manifest or config (JSON) read.
pub(super) const MAX_JSON_BYTES: u64 = 4 * MIB;

/// The runtime backend's caps on images (`[isolation.backends] images = {...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLimits {
    /// Largest layer, compressed and uncompressed (its tar stream).
    pub max_layer_mb: u64,
    /// Largest image: all its layers uncompressed; also the largest image archive.
    pub max_image_mb: u64,
    /// Most tar entries in an image (all layers) or in an image archive.
    pub max_entries: u64,
    /// Longest an image may take to be extracted and unpacked.
    pub unpack_timeout_ms: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits { max_layer_mb: 1024, max_image_mb: 4096, max_entries: 200_000, unpack_timeout_ms: 120_000 }
    }
}

/// One preparation's spending against the limits. The first limit hit is remembered, so
/// that it is reported even when the tar reader wraps the error in its own words.
pub(super) struct Budget<'a> {
    pub limits: &'a ImageLimits,
    clock: &'a dyn Clock,
    deadline: Duration,
    image_bytes: Cell<u64>,
    entries: Cell<u64>,
    fault: RefCell<Option<String>>,
}

impl<'a> Budget<'a> {
    pub fn new(limits: &'a ImageLimits, clock: &'a dyn Clock) -> Self {
        Budget {
            limits,
            clock,
            deadline: clock.now() + Duration::from_millis(limits.unpack_timeout_ms),
            image_bytes: Cell::new(0),
            entries: Cell::new(0),
            fault: RefCell::new(None),
        }
    }

    fn fail(&self, msg: String) -> String {
        self.fault.borrow_mut().get_or_insert(msg).clone()
    }

    /// The limit that was hit, if one was, else `e`.
    pub fn explain(&self, e: impl std::fmt::Display) -> String {
        self.fault.borrow().clone().unwrap_or_else(|| e.to_string())
    }

    pub fn faulted(&self) -> bool {
        self.fault.borrow().is_some()
    }

    pub fn check_time(&self) -> Result<(), String> {
        if self.clock.now() > self.deadline {
            let ms = self.limits.unpack_timeout_ms;
            return Err(self.fail(format!("unpacking the image took longer than {ms} ms (images.unpack_timeout_ms)")));
        }
        Ok(())
    }

    /// One more tar entry (of `what`: "the image" or an archive).
    pub fn entry(&self, what: &str) -> Result<(), String> {
        self.check_time()?;
        self.entries.set(self.entries.get() + 1);
        if self.entries.get() > self.limits.max_entries {
            let max = self.limits.max_entries;
            return Err(self.fail(format!("{what} has more than {max} entries (images.max_entries)")));
        }
        Ok(())
    }

    /// An entry's header: refused at once if its layer (`layer_read` bytes with it) or the
    /// image (`size` more bytes) would be over its limit.
    pub fn announce(&self, what: &str, layer_read: u64, size: u64) -> Result<(), String> {
        let (layer_max, image_max) = (self.limits.max_layer_mb * MIB, self.limits.max_image_mb * MIB);
        if layer_read > layer_max {
            let mb = self.limits.max_layer_mb;
            return Err(self.fail(format!("{what} takes the layer past the limit of {mb} MiB (images.max_layer_mb)")));
        }
        if self.image_bytes.get().saturating_add(size) > image_max {
            let mb = self.limits.max_image_mb;
            return Err(self.fail(format!("{what} takes the image past the limit of {mb} MiB (images.max_image_mb)")));
        }
        Ok(())
    }
}

/// The hex of a `sha256:` digest; other algorithms are refused.
pub(super) fn sha256_hex(digest: &str) -> Result<&str, String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| format!("unsupported digest {digest:?} (only sha256:)"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!("malformed digest {digest:?}"));
    }
    Ok(hex)
}

/// A blob being read: every byte is hashed, and `finish` checks the digest.
pub(super) struct Blob<'b> {
    file: File,
    hasher: Sha256,
    read: u64,
    pub size: u64,
    digest: String,
    what: String,
    budget: &'b Budget<'b>,
}

impl<'b> Blob<'b> {
    /// Opens `blobs/sha256/<hex>` in a layout, regular files only, at most `max` bytes.
    pub fn open(layout: &OwnedFd, digest: &str, what: &str, max: u64, budget: &'b Budget<'b>) -> Result<Self, String> {
        let hex = sha256_hex(digest).map_err(|e| format!("{what}: {e}"))?;
        let shown = format!("{what} {digest}");
        let missing = |e: nix::errno::Errno| format!("{shown}: blobs/sha256: {}", e.desc());
        let blobs = safe::open_dir_at(layout.as_raw_fd(), "blobs".as_ref()).map_err(missing)?;
        let sha = safe::open_dir_at(blobs.as_raw_fd(), "sha256".as_ref()).map_err(missing)?;
        let (file, st) = safe::open_regular(Some(sha.as_raw_fd()), Path::new(hex), &format!("the blob of {shown}"))?;
        let size = st.st_size as u64;
        if size > max {
            return Err(budget.fail(format!("{shown} is {size} bytes, more than the limit of {} MiB", max / MIB)));
        }
        let what = what.to_string();
        Ok(Blob { file, hasher: Sha256::new(), read: 0, size, digest: digest.to_string(), what, budget })
    }

    /// Checks the size a descriptor gave, if it gave one.
    pub fn expect_size(&self, size: Option<u64>) -> Result<(), String> {
        match size {
            Some(s) if s != self.size => {
                Err(format!("{} {} is {} bytes, but its descriptor says {s}", self.what, self.digest, self.size))
            }
            _ => Ok(()),
        }
    }

    /// Reads what is left and checks the whole blob's sha256 against its digest.
    pub fn finish(mut self) -> Result<(), String> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| self.budget.explain(e))?;
        let actual = format!("{:x}", self.hasher.finalize_reset());
        if Some(actual.as_str()) != self.digest.strip_prefix("sha256:") {
            return Err(format!(
                "{} {} does not match its digest: its content hashes to sha256:{actual} (refused)",
                self.what, self.digest
            ));
        }
        Ok(())
    }

    /// The whole (small) blob, verified.
    pub fn read_verified(mut self) -> Result<Vec<u8>, String> {
        let mut bytes = Vec::with_capacity(self.size as usize);
        self.read_to_end(&mut bytes).map_err(|e| self.budget.explain(e))?;
        self.finish()?;
        Ok(bytes)
    }
}

impl Read for Blob<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.budget.check_time().map_err(io::Error::other)?;
        // The file may have grown since it was measured: never read past the size checked.
        let left = self.size.saturating_sub(self.read);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read(&mut buf[..want])?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Counts the bytes of an uncompressed stream, failing past `max` (and, for a layer, past
/// what is left of the image's limit) or past the deadline.
pub(super) struct Capped<'b, R> {
    inner: R,
    pub read: Cell<u64>,
    max: u64,
    what: String,
    in_image: bool,
    budget: &'b Budget<'b>,
}

impl<'b, R: Read> Capped<'b, R> {
    /// A layer's stream: counted against the layer's and the image's limits.
    pub fn layer(inner: R, what: String, budget: &'b Budget<'b>) -> Self {
        let max = budget.limits.max_layer_mb * MIB;
        Capped { inner, read: Cell::new(0), max, what, in_image: true, budget }
    }

    /// An image archive's stream: counted against the image's limit.
    pub fn archive(inner: R, what: String, budget: &'b Budget<'b>) -> Self {
        let max = budget.limits.max_image_mb * MIB;
        Capped { inner, read: Cell::new(0), max, what, in_image: false, budget }
    }
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.budget.check_time().map_err(io::Error::other)?;
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        if self.read.get() > self.max {
            let (mb, key) = if self.in_image {
                (self.budget.limits.max_layer_mb, "images.max_layer_mb")
            } else {
                (self.budget.limits.max_image_mb, "images.max_image_mb")
            };
            let msg = format!("{} is larger than {mb} MiB uncompressed ({key})", self.what);
            return Err(io::Error::other(self.budget.fail(msg)));
        }
        if self.in_image {
            let total = self.budget.image_bytes.get() + n as u64;
            self.budget.image_bytes.set(total);
            if total > self.budget.limits.max_image_mb * MIB {
                let mb = self.budget.limits.max_image_mb;
                let msg = format!("the image is larger than {mb} MiB uncompressed (images.max_image_mb)");
                return Err(io::Error::other(self.budget.fail(msg)));
            }
        }
        Ok(n)
    }
}

/// A reader that transparently gunzips a gzip stream.
pub(super) fn maybe_gunzip<'r, R: io::BufRead + 'r>(mut r: R) -> Result<Box<dyn Read + 'r>, String> {
    let head = r.fill_buf().map_err(|e| e.to_string())?;
    if head.starts_with(&[0x1f, 0x8b]) { Ok(Box::new(flate2::bufread::GzDecoder::new(r))) } else { Ok(Box::new(r)) }
}
