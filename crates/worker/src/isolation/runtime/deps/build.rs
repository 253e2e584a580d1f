//! Building one dependency layer, in two steps split by what they need:
//!
//! 1. **Download** (needs the network): `pip download --only-binary=:all:` on the host, as the
//!    unprivileged build user (the functions' host uid), into `build/<key>/in/wheels`. Wheels
//!    only: no package code runs (an sdist would run its build backend). pip's usual
//!    configuration applies (/etc/pip.conf, the worker's `PIP_*` and proxy variables, and a
//!    copy of the worker's user pip.conf, which the build user could not read).
//! 2. **Install** (runs package tooling): `pip install --no-index --find-links` inside a
//!    container of this backend, as the functions run: no network at all, user namespace,
//!    seccomp, a read-only root, memory and pid limits; only `build/<key>/out` is writable.
//!
//! Both steps have deadlines and size caps. The finished tree is given to root and renamed
//! to `layers/<key>` at once, so a layer folder exists only complete.

use super::Wanted;
use crate::isolation::runtime::container::process_alive;
use crate::isolation::runtime::launcher::Request;
use crate::isolation::runtime::{RuntimeBackend, log_tail, spec};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The pip wrapper the worker writes beside the agent (`runtimes/python/pip_step.py`).
pub(in crate::isolation::runtime) const PIP_STEP_PY: &str =
    include_str!("../../../../../../runtimes/python/pip_step.py");
pub(in crate::isolation::runtime) const PIP_STEP: &str = "pip_step.py";

/// Where the install container sees its input (wheels and requirements, read-only) and
/// output (writable).
const IN_DIR: &str = "/iluvatar/in";
const OUT_DIR: &str = "/iluvatar/out";

/// Variables of the worker's environment the download sees: pip's own settings, proxies and
/// certificates. Nothing else of the worker's environment reaches it.
fn passed_through(name: &str) -> bool {
    let pip = name.starts_with("PIP_")
        && !matches!(
            name,
            "PIP_CACHE_DIR" | "PIP_NO_CACHE_DIR" | "PIP_TARGET" | "PIP_PREFIX" | "PIP_USER" | "PIP_REQUIREMENT"
        );
    let net = matches!(name.to_ascii_lowercase().as_str(), "http_proxy" | "https_proxy" | "no_proxy" | "all_proxy");
    pip || net || matches!(name, "SSL_CERT_FILE" | "SSL_CERT_DIR" | "REQUESTS_CA_BUNDLE")
}

/// The worker's own user pip configuration (`~/.config/pip/pip.conf` or `~/.pip/pip.conf`),
/// unless `PIP_CONFIG_FILE` names one: the download runs as another user, with another HOME,
/// which would not see it (an index mirror set there, say).
fn user_pip_config() -> Option<Vec<u8>> {
    if std::env::var_os("PIP_CONFIG_FILE").is_some() {
        return None;
    }
    let home = PathBuf::from(std::env::var_os("HOME")?);
    let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".config"));
    [xdg.join("pip/pip.conf"), home.join(".pip/pip.conf")].iter().find_map(|p| {
        let meta = std::fs::metadata(p).ok()?;
        (meta.is_file() && meta.len() <= 64 * 1024).then(|| std::fs::read(p).ok()).flatten()
    })
}

/// The folders of one build, under `build/<key>`.
struct BuildDirs {
    root: PathBuf,
    /// Read-only in the install container: requirements.txt and wheels/.
    input: PathBuf,
    requirements: PathBuf,
    wheels: PathBuf,
    /// The download's HOME, temporary files and status.
    home: PathBuf,
    /// Writable in the install container: layer/, tmp/, status.
    out: PathBuf,
    log: PathBuf,
}

impl BuildDirs {
    fn new(builds: &Path, key: &str) -> Self {
        let root = builds.join(key);
        let input = root.join("in");
        BuildDirs {
            requirements: input.join("requirements.txt"),
            wheels: input.join("wheels"),
            home: root.join("home"),
            out: root.join("out"),
            log: root.join("download.log"),
            input,
            root,
        }
    }

    /// Creates the folders: the build user owns what it writes, root the rest.
    fn create(&self, uid: u32, requirements: &[String]) -> std::io::Result<()> {
        if std::fs::symlink_metadata(&self.root).is_ok() {
            std::fs::remove_dir_all(&self.root)?;
        }
        for (d, owner, mode) in [
            (&self.root, 0, 0o755),
            (&self.input, 0, 0o755),
            (&self.wheels, uid, 0o755),
            (&self.home, uid, 0o700),
            (&self.out, uid, 0o755),
            (&self.out.join("tmp"), uid, 0o700),
        ] {
            std::fs::create_dir(d)?;
            std::os::unix::fs::chown(d, Some(owner), Some(owner))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))?;
        }
        std::fs::write(&self.requirements, requirements.join("\n") + "\n")?;
        std::fs::set_permissions(&self.requirements, std::fs::Permissions::from_mode(0o644))?;
        if let Some(config) = user_pip_config() {
            let dir = self.home.join(".config/pip");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("pip.conf"), config)?;
            for d in [self.home.join(".config"), dir.clone(), dir.join("pip.conf")] {
                std::os::unix::fs::chown(&d, Some(uid), Some(uid))?;
            }
        }
        Ok(())
    }

    /// pip's own words from a log: its ERROR lines, or the last lines; build paths hidden.
    fn pip_says(&self, log: &str) -> String {
        let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("ERROR:")).collect();
        let lines: Vec<&str> = if errors.is_empty() {
            let all: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            all[all.len().saturating_sub(12)..].to_vec()
        } else {
            errors
        };
        let text = lines.join("\n").replace(&*self.root.to_string_lossy(), "<build>");
        let text = text.replace(IN_DIR, "<build>/in").replace(OUT_DIR, "<build>/out");
        let cut: String = text.chars().take(4000).collect();
        if cut.is_empty() { "(pip printed nothing)".into() } else { cut }
    }
}

/// The status a pip step wrote (`pip_step.py`), `None` if it wrote none.
fn read_status(path: &Path) -> Option<i32> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > 64 {
        return None;
    }
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The size of a folder tree, never following links (0 for what vanished meanwhile).
fn tree_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

/// Gives a finished tree to root: nobody who built it (the build user, which is also the
/// functions' user) owns a file of a layer. Runs once the install container is gone.
fn give_to_root(p: &Path) -> std::io::Result<u64> {
    let mut files = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::os::unix::fs::lchown(&d, Some(0), Some(0))?;
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                std::os::unix::fs::lchown(e.path(), Some(0), Some(0))?;
                files += 1;
            }
        }
    }
    Ok(files)
}

const MB: u64 = 1024 * 1024;

impl RuntimeBackend {
    /// Builds the layer of `w` into `layers/<key>` (one build at a time per permit).
    pub(super) async fn build_layer(&self, w: &Wanted) -> Result<(), String> {
        let _permit = self.deps.permits.acquire().await.map_err(|_| "the worker is shutting down".to_string())?;
        let uid = spec::host_id(self.userns_base());
        let b = BuildDirs::new(&self.deps.builds, &w.key);
        tracing::info!(requirements = ?w.requirements, "building a dependency layer");
        let t0 = self.clock.now();
        let built = async {
            b.create(uid, &w.requirements).map_err(|e| format!("the worker cannot prepare the build: {e}"))?;
            self.download(&b, uid).await?;
            let t1 = self.clock.now();
            self.install(&b, w).await?;
            let layer = b.out.join("layer");
            if std::fs::symlink_metadata(&layer).is_err() {
                // Markers may exclude every requirement on this Python: an empty layer.
                std::fs::create_dir(&layer).map_err(|e| format!("cannot create the layer: {e}"))?;
            }
            let files = give_to_root(&layer).map_err(|e| format!("cannot take over the installed files: {e}"))?;
            std::fs::set_permissions(&layer, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot set the layer's mode: {e}"))?;
            let size_mb = tree_size(&layer) / MB;
            std::fs::rename(&layer, self.deps.layer_path(&w.key))
                .map_err(|e| format!("cannot move the layer in place: {e}"))?;
            let t2 = self.clock.now();
            tracing::info!(
                download_ms = (t1 - t0).as_millis() as u64,
                install_ms = (t2 - t1).as_millis() as u64,
                files,
                size_mb,
                "dependency layer built"
            );
            Ok(())
        };
        let result: Result<(), String> = built.await;
        if let Err(why) = &result {
            tracing::warn!(error = %why, "building a dependency layer failed");
        }
        let root = b.root.clone();
        let _ = tokio::task::spawn_blocking(move || super::remove_tree(&root)).await;
        result
    }

    /// Step 1: the wheels, downloaded on the host by the unprivileged build user.
    async fn download(&self, b: &BuildDirs, uid: u32) -> Result<(), String> {
        let config = &self.deps.config;
        let log = std::fs::File::create(&b.log).map_err(|e| format!("cannot create the download log: {e}"))?;
        let err_log = log.try_clone().map_err(|e| format!("cannot create the download log: {e}"))?;
        let status_file = b.home.join("status");
        let mut cmd = tokio::process::Command::new(&self.config.python);
        cmd.arg("-I")
            .arg(self.dirs.agent.join(PIP_STEP))
            .arg(&status_file)
            .args(["download", "--only-binary=:all:", "--disable-pip-version-check", "--no-input"])
            .args(["--progress-bar", "off", "--dest"])
            .arg(&b.wheels)
            .arg("-r")
            .arg(&b.requirements)
            .env_clear()
            .envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(passed_through)))
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &b.home)
            .env("TMPDIR", &b.home)
            .env("PIP_CACHE_DIR", &self.deps.cache)
            .current_dir(&b.home)
            .uid(uid)
            .gid(uid)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start pip download as the build user (uid {uid}): {e}; every folder above the worker's \
                 state dir must be searchable by others (o+x), and {} must exist",
                self.config.python
            )
        })?;
        let group = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
        let kill = || {
            if let Some(g) = group {
                let _ = nix::sys::signal::killpg(g, nix::sys::signal::Signal::SIGKILL);
            }
        };
        let limit = Duration::from_millis(config.download_timeout_ms);
        // pip downloads into a temporary folder (in home), kept to its end, and copies each
        // finished wheel into wheels/: the larger of the two is what was downloaded.
        let too_big = || {
            (tree_size(&b.wheels).max(tree_size(&b.home)) > config.max_download_mb * MB)
                .then(|| format!("the wheels to download exceed max_download_mb ({} MB)", config.max_download_mb))
        };
        let t0 = self.clock.now();
        loop {
            let ended = tokio::select! {
                _ = child.wait() => true,
                _ = tokio::time::sleep(Duration::from_millis(250)) => false,
            };
            if let Some(why) = too_big() {
                kill();
                return Err(why);
            }
            if ended {
                break;
            }
            if self.clock.now() - t0 > limit {
                kill();
                return Err(format!("pip download did not finish within {limit:?}"));
            }
        }
        // The exit status comes from the file (the worker's zombie sweep may reap the child).
        let said = b.pip_says(&log_tail(&b.log, 64 * 1024));
        match read_status(&status_file) {
            Some(0) => Ok(()),
            Some(n) => Err(format!("pip download failed (status {n}): {said}")),
            None => Err(format!("pip download stopped before it finished: {said}")),
        }
    }

    /// Step 2: the install, in a container without network, from the downloaded wheels.
    async fn install(&self, b: &BuildDirs, w: &Wanted) -> Result<(), String> {
        let config = &self.deps.config;
        let n = self.deps.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("deps-{}-{n}", w.short());
        let key = Self::key(&id);
        let files = self.files(&key);
        let agent = format!("{}/{PIP_STEP}", spec::AGENT_DIR);
        let (wheels, target, reqs) =
            (format!("{IN_DIR}/wheels"), format!("{OUT_DIR}/layer"), format!("{IN_DIR}/requirements.txt"));
        let mut args: Vec<String> = vec![self.config.python.clone(), "-I".into(), agent, format!("{OUT_DIR}/status")];
        args.extend(
            ["install", "--no-index", "--find-links", &wheels, "--only-binary=:all:", "--target", &target]
                .map(String::from),
        );
        args.extend(
            ["--no-cache-dir", "--disable-pip-version-check", "--no-input", "--progress-bar", "off"].map(String::from),
        );
        args.extend(["--no-warn-script-location", "-r", &reqs].map(String::from));
        let env = ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"].map(String::from).to_vec();
        let env = [env, vec![format!("HOME={OUT_DIR}/tmp"), format!("TMPDIR={OUT_DIR}/tmp")]].concat();
        let binds = vec![
            (Path::new("/usr"), "/usr", false),
            (self.dirs.agent.as_path(), spec::AGENT_DIR, false),
            (b.input.as_path(), IN_DIR, false),
            (b.out.as_path(), OUT_DIR, true),
        ];
        let workload = spec::Workload {
            rootfs: &self.dirs.rootfs,
            binds,
            args,
            env,
            cwd: "/tmp",
            memory_mb: config.install_memory_mb,
            cpus: 1,
        };
        let spec = spec::build(&spec::SpecInput {
            workload,
            cgroup_path: &self.cgroup_path(&key),
            pids_limit: self.config.pids_limit,
            tmp_size_mb: self.config.tmp_size_mb,
            // The largest file pip may write: a layer's largest shared library.
            log_limit_mb: config.max_layer_mb,
            hostname: &key,
            seccomp: self.seccomp.as_ref(),
            userns_base: self.userns_base(),
        });
        let ran = async {
            std::fs::create_dir_all(&files.bundle).map_err(|e| format!("cannot create the install bundle: {e}"))?;
            let path = files.bundle.join("config.json");
            std::fs::write(&path, spec.to_string()).map_err(|e| format!("cannot write the install bundle: {e}"))?;
            let req = Request::Create {
                root: self.dirs.root.clone(),
                id: id.clone(),
                bundle: files.bundle.clone(),
                log: files.log.clone(),
                loopback: false,
            };
            let start = Duration::from_millis(self.config.start_timeout_ms);
            let pid = self
                .launchers
                .request(&req, start)
                .await
                .map_err(|e| format!("cannot start the install container: {e}"))?;
            let pid = pid.ok_or("the launcher answered no process for the install container")?;
            self.await_install(b, pid).await
        };
        let outcome = ran.await;
        let said = b.pip_says(&log_tail(&files.log, 64 * 1024));
        let _ = self.destroy(id).await;
        outcome?;
        if tree_size(&b.out) > config.max_layer_mb * MB {
            return Err(format!("the installed layer exceeds max_layer_mb ({} MB)", config.max_layer_mb));
        }
        match read_status(&b.out.join("status")) {
            Some(0) => Ok(()),
            // RLIMIT_FSIZE is max_layer_mb: Python ignores SIGXFSZ, so the write fails with EFBIG.
            Some(n) if said.contains("[Errno 27]") => Err(format!(
                "pip install failed (status {n}): a file is larger than max_layer_mb ({} MB): {said}",
                config.max_layer_mb
            )),
            Some(n) => Err(format!("pip install failed (status {n}): {said}")),
            None => Err(format!(
                "the install was killed before it finished (out of memory at install_memory_mb = {} MB, or a file \
                 over max_layer_mb = {} MB): {said}",
                config.install_memory_mb, config.max_layer_mb
            )),
        }
    }

    /// Waits for the install container's process to end, within the install timeout and the
    /// layer's size cap.
    async fn await_install(&self, b: &BuildDirs, pid: i32) -> Result<(), String> {
        let config = &self.deps.config;
        let limit = Duration::from_millis(config.install_timeout_ms);
        let t0 = self.clock.now();
        let mut polls = 0u64;
        while process_alive(pid) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            polls += 1;
            if polls.is_multiple_of(10) && tree_size(&b.out) > config.max_layer_mb * MB {
                return Err(format!("the installed layer exceeds max_layer_mb ({} MB)", config.max_layer_mb));
            }
            if self.clock.now() - t0 > limit {
                return Err(format!("pip install did not finish within {limit:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pip_proxy_and_certificate_settings_pass_through() {
        for ok in ["PIP_INDEX_URL", "PIP_FIND_LINKS", "HTTPS_PROXY", "https_proxy", "no_proxy", "SSL_CERT_FILE"] {
            assert!(passed_through(ok), "{ok}");
        }
        for no in ["PIP_CACHE_DIR", "PIP_TARGET", "PATH", "HOME", "ILUVATAR_TOKEN_FILE", "PYTHONPATH", "LD_PRELOAD"] {
            assert!(!passed_through(no), "{no}");
        }
    }

    #[test]
    fn pip_errors_are_quoted_without_build_paths() {
        let b = BuildDirs::new(Path::new("/state/runtime/deps/build"), "abc");
        let log = "Collecting x\nERROR: Could not find a version that satisfies the requirement x\n\
                   ERROR: No matching distribution found for x in /state/runtime/deps/build/abc/in/wheels\n";
        let said = b.pip_says(log);
        assert!(said.starts_with("ERROR: Could not find"), "{said}");
        assert!(said.contains("<build>/in/wheels") && !said.contains("/state"), "{said}");
        assert_eq!(b.pip_says("a\n\nb\n"), "a\nb");
        assert_eq!(b.pip_says(""), "(pip printed nothing)");
    }
}
