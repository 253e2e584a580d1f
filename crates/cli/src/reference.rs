//! The reference a registration sends (`RegisterRequest.image_name`), built from the CLI's
//! flags: `--code DIR` or `--image REF`, with `--env NAME=value` and `--network` for code
//! functions. Relative paths are made absolute here, against the current folder (the worker
//! takes absolute paths only), so they must name something on this machine.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// What `register` was given.
pub struct Flags<'a> {
    pub image: Option<&'a str>,
    pub code: Option<&'a Path>,
    pub env: &'a [String],
    pub network: Option<&'a str>,
}

/// The reference to register: `code:/abs[?NAME=value&...&network=loopback]`, an
/// `oci:`/`oci-archive:` reference with an absolute path, or `--image` as given.
pub fn build(f: &Flags) -> anyhow::Result<String> {
    let reference = match (f.image, f.code) {
        (Some(_), Some(_)) => bail!("give one of --image or --code, not both"),
        (None, None) => bail!("give --code FOLDER (a folder holding main.py) or --image REFERENCE"),
        (None, Some(dir)) => format!("code:{}", absolute(dir, "--code")?.display()),
        (Some(image), None) => absolute_reference(image)?,
    };
    if f.env.is_empty() && f.network.is_none_or(|n| n == "none") {
        return Ok(reference);
    }
    if !reference.starts_with("code:") {
        bail!(
            "--env and --network apply to code functions (--code, or --image code:...); an image's environment \
             comes from its own config"
        );
    }
    let mut pairs = Vec::new();
    for kv in f.env {
        let Some((name, value)) = kv.split_once('=') else {
            bail!("--env {kv:?} is not NAME=value");
        };
        if name.is_empty() || value.contains('&') {
            bail!("--env {kv:?}: the name must not be empty and the value cannot hold '&' (it separates variables)");
        }
        if kv.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("--env {kv:?}: a reference cannot hold whitespace or control characters");
        }
        pairs.push(kv.clone());
    }
    if let Some(network) = f.network.filter(|n| *n != "none") {
        pairs.push(format!("network={network}"));
    }
    let separator = if reference.contains('?') { '&' } else { '?' };
    Ok(format!("{reference}{separator}{}", pairs.join("&")))
}

/// `--image` with the path of a `code:`, `oci:` or `oci-archive:` reference made absolute;
/// any other reference as given.
fn absolute_reference(image: &str) -> anyhow::Result<String> {
    if let Some(rest) = image.strip_prefix("code:") {
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let path = absolute(Path::new(path), "--image code:")?;
        return Ok(match query {
            Some(q) => format!("code:{}?{q}", path.display()),
            None => format!("code:{}", path.display()),
        });
    }
    for prefix in ["oci-archive:", "oci:"] {
        if let Some(rest) = image.strip_prefix(prefix) {
            // The worker's rule: a trailing `:tag` (without '/') names the image in the layout.
            let (path, tag) = match rest.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') && !p.is_empty() => (p, Some(t)),
                _ => (rest, None),
            };
            let path = absolute(Path::new(path), &format!("--image {prefix}"))?;
            return Ok(match tag {
                Some(t) => format!("{prefix}{}:{t}", path.display()),
                None => format!("{prefix}{}", path.display()),
            });
        }
    }
    Ok(image.to_string())
}

/// An absolute path as given (it may name a path on the worker's machine); a relative one
/// resolved against the current folder, where it must exist.
fn absolute(path: &Path, flag: &str) -> anyhow::Result<PathBuf> {
    if path.as_os_str().is_empty() {
        bail!("{flag} needs a path");
    }
    let resolved = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let here = std::env::current_dir().context("cannot read the current folder")?;
        std::fs::canonicalize(path).with_context(|| {
            format!(
                "{flag} {}: not found under the current folder {} (relative paths are made absolute here, so they \
                 must exist on this machine)",
                path.display(),
                here.display()
            )
        })?
    };
    if resolved.to_string_lossy().contains('?') {
        bail!("{flag} {}: a path holding '?' cannot be sent (it starts a reference's variables)", resolved.display());
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>(image: Option<&'a str>, code: Option<&'a Path>, env: &'a [String]) -> Flags<'a> {
        Flags { image, code, env, network: None }
    }

    /// A folder under the current one (the crate's folder when cargo runs the tests).
    fn here_dir() -> (tempdir::Dir, String) {
        let d = tempdir::Dir::new();
        let rel = d.rel.clone();
        (d, rel)
    }

    mod tempdir {
        /// `target-cli-reference-<pid>-<n>/sub` under the current folder, removed on drop.
        pub struct Dir {
            pub rel: String,
            top: std::path::PathBuf,
        }

        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let top = format!("target-cli-reference-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
                let rel = format!("{top}/sub");
                std::fs::create_dir_all(&rel).unwrap();
                Dir { rel, top: top.into() }
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.top);
            }
        }
    }

    #[test]
    fn code_folders_become_absolute_with_their_variables_and_network() {
        let (_d, rel) = here_dir();
        let abs = std::fs::canonicalize(&rel).unwrap();
        let env = vec!["A=1".to_string(), "B=x=y".to_string()];
        let mut f = flags(None, Some(Path::new(&rel)), &env);
        f.network = Some("loopback");
        assert_eq!(build(&f).unwrap(), format!("code:{}?A=1&B=x=y&network=loopback", abs.display()));
        // The same through --image code:, whose own variables are kept.
        let image = format!("code:{rel}?C=3");
        let f = Flags { image: Some(&image), code: None, env: &env, network: Some("none") };
        assert_eq!(build(&f).unwrap(), format!("code:{}?C=3&A=1&B=x=y", abs.display()));
        // An absolute path is sent as given (it may be on the worker's machine).
        assert_eq!(build(&flags(None, Some(Path::new("/srv/f")), &[])).unwrap(), "code:/srv/f");
    }

    #[test]
    fn image_paths_become_absolute_and_keep_their_tag() {
        let (_d, rel) = here_dir();
        let abs = std::fs::canonicalize(&rel).unwrap().display().to_string();
        for (given, want) in [
            (format!("oci:{rel}"), format!("oci:{abs}")),
            (format!("oci:{rel}:v1"), format!("oci:{abs}:v1")),
            (format!("oci-archive:{rel}:hello"), format!("oci-archive:{abs}:hello")),
            (format!("oci-archive:./{rel}"), format!("oci-archive:{abs}")),
            ("oci:/abs/layout:tag".to_string(), "oci:/abs/layout:tag".to_string()),
            ("anything".to_string(), "anything".to_string()),
        ] {
            assert_eq!(build(&flags(Some(&given), None, &[])).unwrap(), want, "{given}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let err = |f: Flags| build(&f).unwrap_err().to_string();
        let missing = err(flags(None, Some(Path::new("no/such/folder")), &[]));
        assert!(missing.contains("--code no/such/folder: not found under the current folder"), "{missing}");
        let missing = err(flags(Some("oci:no/such/layout:v1"), None, &[]));
        assert!(missing.contains("--image oci: no/such/layout: not found"), "{missing}");
        let env = vec!["A=1".to_string()];
        let e = err(flags(Some("oci:/abs/layout"), None, &env));
        assert!(e.contains("--env and --network apply to code functions"), "{e}");
        let bad = vec!["NOVALUE".to_string()];
        assert!(err(flags(None, Some(Path::new("/f")), &bad)).contains("is not NAME=value"));
        let amp = vec!["A=x&B=y".to_string()];
        assert!(err(flags(None, Some(Path::new("/f")), &amp)).contains("cannot hold '&'"));
        let space = vec!["A=x y".to_string()];
        assert!(err(flags(None, Some(Path::new("/f")), &space)).contains("cannot hold whitespace"));
        assert!(err(flags(None, None, &[])).contains("give --code FOLDER"));
        assert!(err(flags(Some("x"), Some(Path::new("/f")), &[])).contains("not both"));
    }
}
