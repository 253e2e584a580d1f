//! A function's source for the runtime backend: its reference (`code:` folder or OCI image)
//! parsed and its path opened and checked once, when it is registered (or reloaded at
//! start), then kept for the registration's life. A cold start only looks it up.

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
}

/// Where a function's code comes from: its reference parsed once, at registration (or at
/// start for a stored one), and reached only through the handle opened then.
pub(super) enum Source {
    /// The function's folder, the container's extra environment variables, and whether it
    /// asked for (loopback) network.
    Code { dir: Arc<roots::Handle>, env: Vec<String>, network: bool },
    /// An image; `image.path` is the handle's `/proc/self/fd` path.
    Image { _handle: Arc<roots::Handle>, image: image::ImageRef },
}

#[derive(Default)]
pub(super) struct Handles {
    /// By (fqdn, reference).
    registrations: HashMap<(String, String), Arc<Source>>,
    /// By the file's (device, inode): registrations of one folder share one descriptor.
    files: HashMap<(u64, u64), std::sync::Weak<roots::Handle>>,
}

/// What a reference names: `code:/absolute/folder` (holding main.py), or an OCI image
/// (`oci:/layout[:tag]`, `oci-archive:/file.tar[:tag]`). Only the text: the path is checked
/// by `RuntimeBackend::open_source`.
fn parse(spec: &FunctionSpec) -> Result<Parsed, IsolationError> {
    let bad = |why: String| bad_reference(spec, why);
    if let Some(r) = image::ImageRef::parse(&spec.image) {
        return Ok(Parsed::Image(r.map_err(&bad)?));
    }
    let Some(rest) = spec.image.strip_prefix("code:") else {
        return Err(bad("expected code:/absolute/folder, oci:/layout[:tag] or oci-archive:/file.tar[:tag]".into()));
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
    };
    bad_reference(spec, why)
}

impl RuntimeBackend {
    /// Parses a reference and opens its path, checked against the roots: the handle every
    /// later use goes through.
    fn open_source(&self, spec: &FunctionSpec) -> Result<(Arc<roots::Handle>, Parsed), IsolationError> {
        let parsed = parse(spec)?;
        let (path, kind) = match &parsed {
            Parsed::Code(dir, ..) => (dir.as_path(), roots::Kind::Folder),
            Parsed::Image(r) if r.archive => (r.path.as_path(), roots::Kind::File),
            Parsed::Image(r) => (r.path.as_path(), roots::Kind::Folder),
        };
        let handle = self.roots.open(path, kind).map_err(|refused| match refused {
            roots::Refused::Path => refused_path(spec, &parsed),
            roots::Refused::Worker(e) => IsolationError::Exhausted(e),
        })?;
        // A regular file, not a link: the folder's contents are checked through the handle.
        let inside = |name: &str| std::fs::symlink_metadata(handle.proc_path().join(name)).is_ok_and(|m| m.is_file());
        let complete = match &parsed {
            Parsed::Code(..) => inside("main.py"),
            Parsed::Image(r) => r.archive || inside("index.json"),
        };
        if !complete {
            return Err(refused_path(spec, &parsed));
        }
        Ok((Arc::new(handle), parsed))
    }

    /// Checks at registration that a reference can be used: parsed, opened and checked,
    /// then let go (the registration, once stored, opens it again to keep); an image must
    /// run something.
    pub(super) fn check_source(&self, spec: &FunctionSpec) -> Result<(), IsolationError> {
        let (handle, parsed) = self.open_source(spec)?;
        if let Parsed::Image(mut image) = parsed {
            image.path = handle.proc_path();
            self.check_image(spec, &image)?;
        }
        Ok(())
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
        let (opened, parsed) = self.open_source(spec)?;
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
                Source::Image { _handle: handle, image }
            }
        };
        handles.registrations.entry(key).or_insert(Arc::new(source));
        Ok(())
    }
}
