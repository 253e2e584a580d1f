//! A function's source for the runtime backend: its reference (`code:` folder, local OCI
//! image, or registry image) parsed and its path opened and checked once, when it is
//! registered (or reloaded at start), then kept for the registration's life. An image is
//! pulled (registry) and unpacked when it is registered (`prepare_source`), so that a bad
//! image is refused then; a cold start only looks the source up.

use super::{RuntimeBackend, roots};
use crate::isolation::{IsolationError, image};
use iluvatar_core::FunctionSpec;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a function's code comes from, as its reference says.
enum Parsed {
    /// A folder holding main.py, environment variables for the container, and whether it
    /// asked for (loopback) network.
    Code(PathBuf, Vec<String>, bool),
    Image(image::ImageRef),
    /// An image in a registry (a reference with no scheme).
    Registry(image::RegistryRef),
}

/// Where a function's code comes from: its reference parsed once, at registration (or at
/// start for a stored one), and reached only through the handle opened then.
pub(super) enum Source {
    /// The function's folder, the container's extra environment variables, and whether it
    /// asked for (loopback) network.
    Code { dir: Arc<roots::Handle>, env: Vec<String>, network: bool },
    /// A local image, reached through the handle opened at registration (`image.path` is the
    /// handle's `/proc/self/fd` path), or a pulled one, in the store of pulled images (no
    /// handle: the store is the worker's own).
    Image { _handle: Option<Arc<roots::Handle>>, image: image::ImageRef },
}

#[derive(Default)]
pub(super) struct Handles {
    /// By (fqdn, reference).
    registrations: HashMap<(String, String), Arc<Source>>,
    /// By the file's (device, inode): registrations of one folder share one descriptor.
    files: HashMap<(u64, u64), std::sync::Weak<roots::Handle>>,
}

/// What a reference names: `code:/absolute/folder` (holding main.py), a local OCI image
/// (`oci:/layout[:tag]`, `oci-archive:/file.tar[:tag]`), or, with no scheme, an image in a
/// registry (`[host[:port]/]name[:tag][@sha256:digest]`). Only the text: the path is checked
/// by `RuntimeBackend::open_local`.
fn parse(spec: &FunctionSpec) -> Result<Parsed, IsolationError> {
    let bad = |why: String| bad_reference(spec, why);
    if let Some(r) = image::ImageRef::parse(&spec.image) {
        return Ok(Parsed::Image(r.map_err(&bad)?));
    }
    let Some(rest) = spec.image.strip_prefix("code:") else {
        return image::RegistryRef::parse(&spec.image).map(Parsed::Registry).map_err(bad);
    };
    // `code:/folder?NAME=value&OTHER=value` sets environment variables of the container;
    // the lower-case `network=loopback` asks for a network (loopback only, until a bridge
    // mode exists).
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut env = Vec::new();
    let mut network = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| bad(format!("{:?} is not NAME=value", pair)))?;
        if k == "network" {
            network = match v {
                "none" => false,
                "loopback" => true,
                other => {
                    return Err(bad(format!("network={other} is not available: only loopback (no bridge mode yet)")));
                }
            };
            continue;
        }
        let ok = k.chars().next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
            && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !ok || k.starts_with("ILUVATAR_") {
            return Err(bad(format!("{k:?} is not an allowed variable name (A-Z, 0-9, _; not ILUVATAR_*)")));
        }
        env.push(pair.to_string());
    }
    let dir = PathBuf::from(path);
    if !dir.is_absolute() {
        return Err(bad(format!("{path} is not an absolute path")));
    }
    Ok(Parsed::Code(dir, env, network))
}

/// A refused reference, named without its environment values.
pub(super) fn bad_reference(spec: &FunctionSpec, why: String) -> IsolationError {
    IsolationError::BadReference { backend: "runtime", reference: iluvatar_core::shown_reference(&spec.image), why }
}

/// The one answer for a path that is refused, missing, of the wrong kind, or without its
/// main.py or index.json: it does not tell a client which host paths exist.
fn refused_path(spec: &FunctionSpec, parsed: &Parsed) -> IsolationError {
    let why = match parsed {
        Parsed::Code(dir, ..) => format!(
            "code:{} is not a folder holding main.py under the configured code_roots (or does not exist)",
            dir.display()
        ),
        Parsed::Image(r) if r.archive => {
            format!(
                "oci-archive:{} is not a file under the configured code_roots (or does not exist)",
                r.path.display()
            )
        }
        Parsed::Image(r) => format!(
            "oci:{} is not an OCI image layout (with index.json) under the configured code_roots (or does not exist)",
            r.path.display()
        ),
        Parsed::Registry(r) => {
            format!("{} is not in this worker's store of pulled images: register it again to pull it", r.name())
        }
    };
    bad_reference(spec, why)
}

impl RuntimeBackend {
    /// Opens the path of a parsed reference, checked against the roots: the handle every
    /// later use goes through.
    fn open_local(&self, spec: &FunctionSpec, parsed: &Parsed) -> Result<Arc<roots::Handle>, IsolationError> {
        let (path, kind) = match parsed {
            Parsed::Code(dir, ..) => (dir.as_path(), roots::Kind::Folder),
            Parsed::Image(r) if r.archive => (r.path.as_path(), roots::Kind::File),
            Parsed::Image(r) => (r.path.as_path(), roots::Kind::Folder),
            Parsed::Registry(_) => return Err(bad_reference(spec, "a registry image has no local path".into())),
        };
        let handle = self.roots.open(path, kind).map_err(|refused| match refused {
            roots::Refused::Path => refused_path(spec, parsed),
            roots::Refused::Worker(e) => IsolationError::Exhausted(e),
        })?;
        // A regular file, not a link: the folder's contents are checked through the handle.
        let inside = |name: &str| std::fs::symlink_metadata(handle.proc_path().join(name)).is_ok_and(|m| m.is_file());
        let complete = match parsed {
            Parsed::Code(..) => inside("main.py"),
            Parsed::Image(r) => r.archive || inside("index.json"),
            Parsed::Registry(_) => false,
        };
        if !complete {
            return Err(refused_path(spec, parsed));
        }
        Ok(Arc::new(handle))
    }

    /// Checks at registration that a reference can be used: parsed, and its path opened and
    /// checked, then let go (the registration, once stored, opens it again to keep). A
    /// registry reference is only parsed here; `prepare_source` pulls it.
    pub(super) fn check_source(&self, spec: &FunctionSpec) -> Result<(), IsolationError> {
        match parse(spec)? {
            Parsed::Registry(_) => Ok(()),
            parsed => self.open_local(spec, &parsed).map(|_| ()),
        }
    }

    /// Where a pulled image is: the store, under its full reference.
    fn pulled_image(&self, r: &image::RegistryRef) -> image::ImageRef {
        image::ImageRef { archive: false, path: self.puller.layout().to_path_buf(), tag: Some(r.name()) }
    }

    /// At registration, before it is stored: pulls a registry image into the store (only
    /// the blobs it lacks) and unpacks an image (once per manifest digest), refusing the
    /// registration if either fails. Answers what it did, for the log.
    pub(super) async fn prepare_source(&self, spec: &FunctionSpec) -> Result<Option<String>, IsolationError> {
        let (image, handle, pulled) = match parse(spec)? {
            Parsed::Code(..) => return Ok(None),
            Parsed::Image(mut r) => {
                let handle = self.open_local(spec, &Parsed::Image(r.clone()))?;
                r.path = handle.proc_path();
                (r, Some(handle), None)
            }
            Parsed::Registry(r) => {
                let pulled = self.puller.pull(&r).await.map_err(|e| IsolationError::Pull {
                    reference: iluvatar_core::shown_reference(&spec.image),
                    source: Box::new(e),
                })?;
                tracing::info!(reference = %pulled.name, manifest = %pulled.manifest, fetched = pulled.fetched,
                    cached = pulled.cached, bytes = pulled.bytes, pull_ms = pulled.took.as_millis() as u64, "image pulled");
                (self.pulled_image(&r), None, Some(pulled))
            }
        };
        let (store, start) = (self.images.clone(), self.clock.now());
        let unpacked = tokio::task::spawn_blocking(move || {
            let _open_until_unpacked = handle;
            store.prepare(&image, None)
        })
        .await
        .map_err(|e| bad_reference(spec, format!("unpacking the image stopped: {e}")))?;
        let unpacked = unpacked.map_err(|e| bad_reference(spec, format!("the image cannot be used: {e}")))?;
        let speaks = super::served::Speaks::image(&unpacked.args, spec.container_server);
        let unpack = format!(
            "unpacked in {} ms; runs {}",
            self.clock.now().saturating_sub(start).as_millis(),
            speaks.describe()
        );
        Ok(Some(match pulled {
            Some(p) => format!("{p}; {unpack}"),
            None => unpack,
        }))
    }

    /// The registered source of a function: its reference's settings and the handle opened
    /// when it was registered, kept since (nothing is parsed or checked again). A function
    /// whose path could not be opened again at start (moved, refused since) fails here, with
    /// the same generic error.
    pub(super) fn source(&self, spec: &FunctionSpec) -> Result<Arc<Source>, IsolationError> {
        let key = (spec.fqdn().0, spec.image.clone());
        if let Some(source) = self.handles.lock().unwrap().registrations.get(&key).cloned() {
            return Ok(source);
        }
        Err(refused_path(spec, &parse(spec)?))
    }

    /// Opens and keeps the source of a registration (once per fqdn and reference): its
    /// reference parsed, its path opened and checked.
    pub(super) fn register_source(&self, spec: &FunctionSpec) -> Result<(), IsolationError> {
        let key = (spec.fqdn().0, spec.image.clone());
        if self.handles.lock().unwrap().registrations.contains_key(&key) {
            return Ok(());
        }
        let parsed = parse(spec)?;
        if let Parsed::Registry(r) = &parsed {
            // Nothing to open: the image is in the store (or must be pulled again).
            if !self.puller.has(r) {
                return Err(refused_path(spec, &parsed));
            }
            let source = Source::Image { _handle: None, image: self.pulled_image(r) };
            self.handles.lock().unwrap().registrations.insert(key, Arc::new(source));
            return Ok(());
        }
        let opened = self.open_local(spec, &parsed)?;
        tracing::debug!(fqdn = key.0, path = %opened.real.display(), "registered path opened");
        let mut handles = self.handles.lock().unwrap();
        let handle = match handles.files.get(&opened.id).and_then(std::sync::Weak::upgrade) {
            Some(same) => same,
            None => {
                handles.files.insert(opened.id, Arc::downgrade(&opened));
                opened
            }
        };
        let source = match parsed {
            Parsed::Code(_, env, network) => Source::Code { dir: handle, env, network },
            Parsed::Image(mut image) => {
                image.path = handle.proc_path();
                Source::Image { _handle: Some(handle), image }
            }
            Parsed::Registry(_) => unreachable!("registry images are registered above"),
        };
        handles.registrations.entry(key).or_insert(Arc::new(source));
        Ok(())
    }

    /// The folder of a `code:` reference, opened and checked; `None` for an image.
    pub(super) fn open_code_dir(&self, spec: &FunctionSpec) -> Result<Option<Arc<roots::Handle>>, IsolationError> {
        match parse(spec)? {
            parsed @ Parsed::Code(..) => self.open_local(spec, &parsed).map(Some),
            Parsed::Image(_) | Parsed::Registry(_) => Ok(None),
        }
    }
}
