//! Images from registries: references as users write them, pulled over the OCI distribution
//! API (the `oci-client` crate) into the worker's store of pulled images (`blobs`).
//!
//! - `name:tag` is Docker Hub's `docker.io/library/name:tag`; `user/name`, `host[:port]/name`
//!   and `@sha256:` digests read as Docker reads them; no tag means `latest`;
//! - pulls are anonymous (the client fetches the bearer token a public registry asks for);
//!   plain HTTP only for loopback registries and those listed in `registry.plain_http`;
//! - an image index (manifest list) is resolved to this platform, `linux/<arch>`;
//! - the manifest, the config and every layer are checked against their digests and sizes
//!   before they enter the store, sizes are capped by `ImageLimits`, and a blob is fetched
//!   once however many pulls want it at the same time;
//! - a pull runs in a task of its own, bounded by `registry.pull_timeout_ms`, so a
//!   registration that gives up leaves no half-written blob and does not fail others waiting
//!   for the same blob.

use super::ImageLimits;
use super::blobs::{BlobStore, Mismatch};
use super::limits::{MAX_JSON_BYTES, sha256_hex};
use futures_util::StreamExt;
use iluvatar_core::Clock;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest as media;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::Instrument;

/// Most layers an image may have.
const MAX_LAYERS: usize = 500;
/// The manifest types asked for (Docker's and OCI's, single images and indexes).
const ACCEPTED: [&str; 4] = [
    media::OCI_IMAGE_MEDIA_TYPE,
    media::IMAGE_MANIFEST_MEDIA_TYPE,
    media::OCI_IMAGE_INDEX_MEDIA_TYPE,
    media::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// How the runtime backend reaches registries (`[isolation.backends] registry = {...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registries (`host:port`, as references name them) reached over plain HTTP. Loopback
    /// registries (`127.0.0.1:5000`, `localhost:5000`) always are; every other one is
    /// reached over HTTPS.
    pub plain_http: Vec<String>,
    /// Longest a pull (manifests, config and every layer) may take.
    pub pull_timeout_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { plain_http: Vec::new(), pull_timeout_ms: 600_000 }
    }
}

/// A registry reference, parsed.
#[derive(Debug, Clone)]
pub(crate) struct RegistryRef(Reference);

impl RegistryRef {
    /// A reference as Docker reads it; only sha256 digests.
    pub fn parse(text: &str) -> Result<Self, String> {
        let r: Reference = text.parse().map_err(|e| {
            format!(
                "bad reference syntax ({e}): expected [host[:port]/]name[:tag][@sha256:digest], code:/folder, \
                 oci:/layout[:tag] or oci-archive:/file.tar[:tag]"
            )
        })?;
        if let Some(d) = r.digest() {
            sha256_hex(d).map_err(|e| format!("bad reference syntax: {e}"))?;
        }
        Ok(RegistryRef(r))
    }

    /// The reference in full (`docker.io/library/name:tag`): its name in the store.
    pub fn name(&self) -> String {
        self.0.whole()
    }

    fn shown(&self) -> String {
        match (self.0.tag(), self.0.digest()) {
            (_, Some(d)) => format!("{}@{d}", self.0.repository()),
            (Some(t), None) => format!("{}:{t}", self.0.repository()),
            (None, None) => self.0.repository().to_string(),
        }
    }
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    #[error("registry {registry} is unreachable: {why}")]
    Unreachable { registry: String, why: String },
    #[error("unknown repository or tag: registry {registry} has no {image} ({why})")]
    Unknown { registry: String, image: String, why: String },
    #[error(
        "unknown repository or tag, or a private one: registry {registry} refused anonymous access to {image} ({why})"
    )]
    Unauthorized { registry: String, image: String, why: String },
    #[error("digest mismatch: {0}")]
    Digest(String),
    #[error("size mismatch: {0}")]
    Size(String),
    #[error("no image for this platform ({platform}): the image index offers {offered}")]
    NoPlatform { platform: String, offered: String },
    #[error("the pull took longer than {0} ms (registry.pull_timeout_ms)")]
    Timeout(u64),
    /// The image breaks a limit or is of a kind the worker cannot run.
    #[error("{0}")]
    Refused(String),
    #[error("registry {registry} answered: {why}")]
    Registry { registry: String, why: String },
    #[error("the worker's image store: {0}")]
    Store(String),
}

/// What a pull did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pulled {
    pub name: String,
    pub manifest: String,
    /// Blobs fetched from the registry, and their bytes.
    pub fetched: usize,
    pub bytes: u64,
    /// Blobs the store had already.
    pub cached: usize,
    pub took: Duration,
}

impl std::fmt::Display for Pulled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pulled {} ({}) in {} ms: {} blobs fetched ({} bytes), {} already in the store",
            self.name,
            self.manifest,
            self.took.as_millis(),
            self.fetched,
            self.bytes,
            self.cached
        )
    }
}

/// A blob a manifest names.
struct Blob {
    what: &'static str,
    digest: String,
    size: u64,
}

struct Clients {
    https: Client,
    http: Client,
}

/// Pulls images into the store; shared by every registration.
pub(crate) struct Puller {
    store: BlobStore,
    config: RegistryConfig,
    limits: ImageLimits,
    clock: Arc<dyn Clock>,
    /// Built at the first pull (it reads the host's root certificates).
    clients: OnceLock<Clients>,
}

impl Puller {
    pub fn new(
        dir: PathBuf,
        config: RegistryConfig,
        limits: ImageLimits,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        Ok(Puller { store: BlobStore::open(dir)?, config, limits, clock, clients: OnceLock::new() })
    }

    /// The store: an OCI layout whose index names every pulled reference.
    pub fn layout(&self) -> &Path {
        self.store.dir()
    }

    /// Whether `r` was pulled into the store (by this run or an earlier one).
    pub fn has(&self, r: &RegistryRef) -> bool {
        self.store.knows(&r.name())
    }

    /// Pulls `r` into the store (only the blobs it lacks), in a task of its own.
    pub async fn pull(self: &Arc<Self>, r: &RegistryRef) -> Result<Pulled, PullError> {
        let (me, r) = (self.clone(), r.clone());
        let ms = self.config.pull_timeout_ms;
        let task = async move {
            let start = me.clock.now();
            let pulled = tokio::time::timeout(Duration::from_millis(ms), me.pull_now(&r)).await;
            let mut pulled = pulled.map_err(|_| PullError::Timeout(ms))??;
            pulled.took = me.clock.now().saturating_sub(start);
            Ok(pulled)
        };
        tokio::spawn(task.in_current_span()).await.map_err(|e| PullError::Store(format!("the pull stopped: {e}")))?
    }

    fn client(&self, r: &RegistryRef) -> &Client {
        let clients = self.clients.get_or_init(|| {
            // reqwest is built without a crypto provider of its own: ring is ours.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = |protocol| oci_client::client::ClientConfig {
                protocol,
                connect_timeout: Some(Duration::from_secs(10)),
                read_timeout: Some(Duration::from_secs(60)),
                platform_resolver: None,
                ..Default::default()
            };
            Clients {
                https: Client::new(config(oci_client::client::ClientProtocol::Https)),
                http: Client::new(config(oci_client::client::ClientProtocol::Http)),
            }
        });
        let registry = r.0.registry();
        if loopback(registry) || self.config.plain_http.iter().any(|h| h == registry) {
            &clients.http
        } else {
            &clients.https
        }
    }

    async fn pull_now(&self, r: &RegistryRef) -> Result<Pulled, PullError> {
        let client = self.client(r);
        let (mut bytes, mut digest) = self.manifest(client, r, &r.0).await?;
        let mut doc = json(&bytes, "the manifest")?;
        if is_index(&doc) {
            let chosen = choose_platform(&doc)?;
            (bytes, digest) = self.manifest(client, r, &r.0.clone_with_digest(chosen)).await?;
            doc = json(&bytes, "the platform's manifest")?;
            if is_index(&doc) {
                return Err(PullError::Refused("the image index names another index for this platform".into()));
            }
        }
        let blobs = self.blobs_of(&doc)?;
        let mut pulled = Pulled { name: r.name(), manifest: digest.clone(), ..Default::default() };
        for blob in &blobs {
            self.fetch(client, r, blob, &mut pulled).await?;
        }
        let hex = sha256_hex(&digest).map_err(PullError::Refused)?;
        self.store.put(hex, &bytes).await.map_err(PullError::Store)?;
        let media_type = doc["mediaType"].as_str().unwrap_or(media::OCI_IMAGE_MEDIA_TYPE);
        let descriptor = serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()});
        self.store.record(&pulled.name, descriptor).map_err(PullError::Store)?;
        Ok(pulled)
    }

    /// A manifest or index, checked against the digest the reference names, if it names
    /// one; returns it with its digest (computed here).
    async fn manifest(&self, client: &Client, r: &RegistryRef, at: &Reference) -> Result<(Vec<u8>, String), PullError> {
        let (bytes, _) =
            client.pull_manifest_raw(at, &RegistryAuth::Anonymous, &ACCEPTED).await.map_err(|e| classify(e, r))?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(PullError::Refused(format!("the manifest is over {MAX_JSON_BYTES} bytes")));
        }
        let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
        if let Some(want) = at.digest().filter(|want| *want != digest) {
            return Err(PullError::Digest(format!("manifest {want}: its content hashes to {digest} (refused)")));
        }
        Ok((bytes.to_vec(), digest))
    }

    /// The config and layers of a manifest, within the limits.
    fn blobs_of(&self, doc: &Value) -> Result<Vec<Blob>, PullError> {
        let refused = |why: String| PullError::Refused(why);
        let blob = |d: &Value, what: &'static str| -> Result<Blob, PullError> {
            let digest = d["digest"].as_str().ok_or_else(|| refused(format!("a {what} has no digest")))?;
            sha256_hex(digest).map_err(|e| refused(format!("{what}: {e}")))?;
            let size = d["size"].as_u64().ok_or_else(|| refused(format!("{what} {digest} has no size")))?;
            Ok(Blob { what, digest: digest.to_string(), size })
        };
        let config = blob(&doc["config"], "config")?;
        if config.size > MAX_JSON_BYTES {
            return Err(refused(format!("its config is over {MAX_JSON_BYTES} bytes")));
        }
        let layers = doc["layers"].as_array().ok_or_else(|| refused("the manifest has no layers".into()))?;
        if layers.len() > MAX_LAYERS {
            return Err(refused(format!("the image has {} layers, more than {MAX_LAYERS}", layers.len())));
        }
        let (layer_max, image_max) = (self.limits.max_layer_mb << 20, self.limits.max_image_mb << 20);
        let mut blobs = vec![config];
        let mut total = 0u64;
        for l in layers {
            let layer = blob(l, "layer")?;
            if l["mediaType"].as_str().is_some_and(|m| m.contains("zstd")) {
                return Err(refused(format!(
                    "layer {} is zstd-compressed: only tar and gzip are supported",
                    layer.digest
                )));
            }
            if layer.size > layer_max {
                let mb = self.limits.max_layer_mb;
                return Err(refused(format!("layer {} is over {mb} MiB (images.max_layer_mb)", layer.digest)));
            }
            total = total.saturating_add(layer.size);
            if total > image_max {
                let mb = self.limits.max_image_mb;
                return Err(refused(format!("the image's layers are over {mb} MiB (images.max_image_mb)")));
            }
            blobs.push(layer);
        }
        Ok(blobs)
    }

    /// Fetches one blob into the store unless it is there; one fetch per blob at a time.
    async fn fetch(&self, client: &Client, r: &RegistryRef, blob: &Blob, pulled: &mut Pulled) -> Result<(), PullError> {
        let hex = sha256_hex(&blob.digest).map_err(PullError::Refused)?;
        let lock = self.store.blob_lock(hex);
        let _one_at_a_time = lock.lock().await;
        if self.store.has(hex, blob.size) {
            pulled.cached += 1;
            return Ok(());
        }
        let shown = format!("{} {}", blob.what, blob.digest);
        let mut stream = client.pull_blob_stream(&r.0, blob.digest.as_str()).await.map_err(|e| classify(e, r))?;
        let mut incoming = self.store.incoming().await.map_err(PullError::Store)?;
        let mut verified_by_client = false;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    if incoming.written + bytes.len() as u64 > blob.size {
                        return Err(PullError::Size(format!(
                            "{shown}: the registry sent more than the {} bytes its descriptor says (refused)",
                            blob.size
                        )));
                    }
                    incoming.write(&bytes).await.map_err(PullError::Store)?;
                }
                // The client checks the digest too, at the end: the commit below says how.
                Err(e) if e.get_ref().is_some_and(|inner| inner.is::<oci_client::errors::DigestError>()) => {
                    verified_by_client = true;
                    break;
                }
                Err(e) => {
                    let registry = r.0.registry().to_string();
                    return Err(PullError::Unreachable {
                        registry,
                        why: format!("the download of {shown} broke: {e}"),
                    });
                }
            }
        }
        let size = incoming.written;
        incoming.commit(hex, blob.size).await.map_err(|m| match m {
            Mismatch::Store(e) => PullError::Store(e),
            m @ Mismatch::Size { .. } => {
                PullError::Size(format!("{shown}: its descriptor says {} bytes, {m} (refused)", blob.size))
            }
            m @ Mismatch::Digest { .. } => PullError::Digest(format!("{shown} does not match: {m} (refused)")),
        })?;
        if verified_by_client {
            // Its content matched after all: the registry's Docker-Content-Digest header did not.
            return Err(PullError::Digest(format!("{shown}: the registry's digest header does not match it")));
        }
        pulled.fetched += 1;
        pulled.bytes += size;
        Ok(())
    }
}

/// Whether a registry (`host[:port]`) is on this host.
fn loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

fn json(bytes: &[u8], what: &str) -> Result<Value, PullError> {
    serde_json::from_slice(bytes).map_err(|e| PullError::Refused(format!("{what} is not valid JSON: {e}")))
}

fn is_index(doc: &Value) -> bool {
    match doc["mediaType"].as_str() {
        Some(m) => m == media::OCI_IMAGE_INDEX_MEDIA_TYPE || m == media::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
        None => doc["manifests"].is_array() && !doc["layers"].is_array(),
    }
}

/// This machine's platform as images name it.
pub(super) fn platform_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The entry of an index for linux on this architecture (or its only entry, if that names
/// no platform).
pub(super) fn for_this_platform(entries: &[Value]) -> Result<&Value, PullError> {
    let arch = platform_arch();
    let matches = |m: &&Value| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch;
    if let Some(m) = entries.iter().find(matches) {
        return Ok(m);
    }
    if let [only] = entries
        && only.get("platform").is_none()
    {
        return Ok(only);
    }
    let offered: Vec<String> = entries
        .iter()
        .map(|m| {
            let p = &m["platform"];
            format!("{}/{}", p["os"].as_str().unwrap_or("?"), p["architecture"].as_str().unwrap_or("?"))
        })
        .collect();
    let offered = if offered.is_empty() { "nothing".to_string() } else { offered.join(", ") };
    Err(PullError::NoPlatform { platform: format!("linux/{arch}"), offered })
}

/// The digest of the index's manifest for this platform.
fn choose_platform(index: &Value) -> Result<String, PullError> {
    let entries = index["manifests"].as_array().map(Vec::as_slice).unwrap_or_default();
    let entry = for_this_platform(entries)?;
    let digest = entry["digest"].as_str().ok_or_else(|| PullError::Refused("an index entry has no digest".into()))?;
    Ok(digest.to_string())
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// The client's error, as the problem it is.
fn classify(e: OciDistributionError, r: &RegistryRef) -> PullError {
    let registry = r.0.registry().to_string();
    let image = r.shown();
    match e {
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            PullError::Unreachable { registry, why: chain(&e) }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let unknown = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            });
            let why = envelope.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; ");
            if unknown { PullError::Unknown { registry, image, why } } else { PullError::Registry { registry, why } }
        }
        OciDistributionError::ServerError { code: 404, message, .. } => {
            PullError::Unknown { registry, image, why: format!("404 {}", message.trim()) }
        }
        OciDistributionError::UnauthorizedError { .. } => {
            PullError::Unauthorized { registry, image, why: "401 Unauthorized".into() }
        }
        OciDistributionError::DigestError(e) => PullError::Digest(format!("{e} (refused)")),
        e => PullError::Registry { registry, why: chain(&e) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_as_docker_reads_them() {
        let name = |s: &str| RegistryRef::parse(s).map(|r| r.name());
        assert_eq!(name("hello").unwrap(), "docker.io/library/hello:latest");
        assert_eq!(name("hello:1.0").unwrap(), "docker.io/library/hello:1.0");
        assert_eq!(
            name("docker.io/alfuerst/hello-iluvatar-action:latest").unwrap(),
            "docker.io/alfuerst/hello-iluvatar-action:latest"
        );
        assert_eq!(name("127.0.0.1:5000/hello:v1").unwrap(), "127.0.0.1:5000/hello:v1");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(name(&format!("localhost:5000/x/y@{d}")).unwrap(), format!("localhost:5000/x/y@{d}"));
        for bad in ["", "Hello:1", "/abs/path", "a b", "x:tag:more", "name@sha256:abc"] {
            let e = RegistryRef::parse(bad).unwrap_err();
            assert!(e.starts_with("bad reference syntax"), "{bad:?}: {e}");
        }
        let e = RegistryRef::parse(&format!("x@sha512:{}", "a".repeat(128))).unwrap_err();
        assert!(e.contains("only sha256"), "{e}");
    }

    #[test]
    fn only_loopback_registries_are_plain_http_by_default() {
        for (r, plain) in [
            ("127.0.0.1:5000", true),
            ("localhost:5000", true),
            ("localhost", true),
            ("127.1.2.3", true),
            ("docker.io", false),
            ("10.0.0.1:5000", false),
            ("registry.example:5000", false),
        ] {
            assert_eq!(loopback(r), plain, "{r}");
        }
    }

    #[test]
    fn an_index_resolves_to_this_platform_or_says_what_it_offers() {
        let arch = platform_arch();
        let entry =
            |os: &str, a: &str, d: &str| serde_json::json!({"digest": d, "platform": {"os": os, "architecture": a}});
        let index = serde_json::json!({"mediaType": media::OCI_IMAGE_INDEX_MEDIA_TYPE, "manifests": [
            entry("linux", "s390x", "sha256:1"), entry("windows", arch, "sha256:2"), entry("linux", arch, "sha256:3")]});
        assert!(is_index(&index));
        assert_eq!(choose_platform(&index).unwrap(), "sha256:3");
        let other = serde_json::json!({"manifests": [entry("linux", "s390x", "sha256:1")]});
        assert!(is_index(&other), "an index without a mediaType is known by its manifests");
        let e = choose_platform(&other).unwrap_err().to_string();
        assert_eq!(e, format!("no image for this platform (linux/{arch}): the image index offers linux/s390x"));
        assert!(!is_index(&serde_json::json!({"mediaType": media::IMAGE_MANIFEST_MEDIA_TYPE, "layers": []})));
    }
}
