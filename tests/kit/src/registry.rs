//! A real OCI registry on loopback for the tests of registry images: Debian's
//! `docker-registry` (the CNCF distribution server) started from here with its own config, a
//! free port and a temporary storage directory, and images pushed to it by a real client,
//! Debian's `skopeo`. Nothing leaves the host. `.ci/run` installs both packages.
//!
//! The registry's access log tells how often each blob was fetched ([`Registry::blob_gets`]);
//! its storage directory holds each blob as a file, to corrupt ([`Registry::blob_data`]).

use crate::{POLL, output_timeout, steps, tail, unique_dir, wait_timeout};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const REGISTRY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";

/// A registry process and its files; dropping it stops the registry and removes them.
pub struct Registry {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until it answers `GET /v2/`.
    pub fn start() -> Registry {
        for tool in [REGISTRY, SKOPEO] {
            assert!(
                Path::new(tool).is_file(),
                "{tool} is missing: the registry tests need Debian's docker-registry and skopeo \
                 (apt-get install docker-registry skopeo; .ci/run installs them)"
            );
        }
        let dir = unique_dir("registry");
        // A port just free may be taken before the registry binds it: try again then.
        for _ in 0..3 {
            let port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("storage").display()
            );
            std::fs::write(dir.join("config.yml"), config).unwrap();
            let log = std::fs::File::create(dir.join("registry.log")).unwrap();
            let mut child = Command::new(REGISTRY)
                .arg("serve")
                .arg(dir.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {REGISTRY}: {e}"));
            let host = format!("127.0.0.1:{port}");
            for _ in 0..steps(Duration::from_secs(10)) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                // Connected first: http_get panics on a refused connection.
                if std::net::TcpStream::connect(&host).is_ok() && crate::http_get(&host, "/v2/").0 == 200 {
                    return Registry { child, dir, port };
                }
                std::thread::sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = tail(&dir.join("registry.log"), 20);
            if !log.contains("address already in use") {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("the registry did not answer within 10 s; its log:\n{log}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("the registry found no free port in 3 attempts");
    }

    /// `127.0.0.1:PORT`, as references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/name_tag`.
    pub fn reference(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.host())
    }

    /// Pushes `source` (a skopeo source: `oci-archive:/x.tar:tag`, `oci:/layout:tag`) as
    /// `name:tag`; with `all`, every image of an image index.
    pub fn push(&self, source: &str, name_tag: &str, all: bool) {
        let mut cmd = Command::new(SKOPEO);
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        cmd.arg(source).arg(format!("docker://{}", self.reference(name_tag)));
        let out = output_timeout(cmd, Duration::from_secs(120));
        assert!(out.status.success(), "skopeo copy {source} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The digest of the manifest (or index) `repository:tag` names in the registry.
    pub fn manifest_digest(&self, repository: &str, tag: &str) -> String {
        let link = self.storage().join(format!("repositories/{repository}/_manifests/tags/{tag}/current/link"));
        std::fs::read_to_string(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display())).trim().to_string()
    }

    /// A JSON blob (a manifest or an index) from the registry's storage.
    pub fn json_blob(&self, digest: &str) -> serde_json::Value {
        let bytes = std::fs::read(self.blob_data(digest)).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The file holding a blob in the registry's storage.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage().join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    /// How many times the blob was fetched (`GET /v2/<repository>/blobs/<digest>` answered).
    pub fn blob_gets(&self, repository: &str, digest: &str) -> usize {
        let needle = format!("\"GET /v2/{repository}/blobs/{digest} HTTP/1.1\" 200 ");
        let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains(&needle)).count()
    }

    /// The registry's log, for failure messages.
    pub fn log(&self) -> String {
        tail(&self.dir.join("registry.log"), 40)
    }

    fn storage(&self) -> PathBuf {
        self.dir.join("storage/docker/registry/v2")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = wait_timeout(&mut self.child, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on (just now).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
