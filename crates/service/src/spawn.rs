//! Starting a daemon binary (worker or controller) with a config file and reading its
//! ready line: the one JSON line it prints on stdout once it serves.

use anyhow::Context;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a daemon may take to print its ready line when started by [`start_with_config`].
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes `config` to `dir/{tag}.json`, starts `bin -c` on it with stderr to
/// `dir/{tag}.log`, and waits for the ready line.
pub fn start_with_config(bin: &Path, config: &Value, dir: &Path, tag: &str) -> anyhow::Result<(Child, Value)> {
    let path = dir.join(format!("{tag}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(config)?)?;
    let log_path = dir.join(format!("{tag}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    match read_ready_line(&mut child, READY_TIMEOUT) {
        Ok(ready) => Ok((child, ready)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e).with_context(|| format!("{tag} did not start; see {}", log_path.display()))
        }
    }
}

/// Why a child printed no ready line.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("the child's stdout is not piped")]
    NotPiped,
    #[error("reading its stdout failed: {0}")]
    Read(std::io::Error),
    #[error("no ready line within {0:?}")]
    Timeout(Duration),
    #[error("the first stdout line {line:?} is not JSON: {why}")]
    NotJson { line: String, why: serde_json::Error },
    #[error("the first stdout line is not a ready event: {0}")]
    NotReady(Value),
}

/// The first line `child` prints on its (piped) stdout, which must be a JSON object with
/// `"event": "ready"`, waited for at most `timeout`. A thread reads it, then keeps
/// draining the child's stdout, so that the child never blocks on (or dies writing into)
/// a full or closed pipe.
pub fn read_ready_line(child: &mut Child, timeout: Duration) -> Result<Value, ReadyError> {
    let stdout = child.stdout.take().ok_or(ReadyError::NotPiped)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = tx.send(reader.read_line(&mut line).map(|_| line));
        let mut rest = String::new();
        while matches!(reader.read_line(&mut rest), Ok(n) if n > 0) {
            rest.clear();
        }
    });
    let line = match rx.recv_timeout(timeout) {
        Ok(r) => r.map_err(ReadyError::Read)?,
        Err(_) => return Err(ReadyError::Timeout(timeout)),
    };
    let ready: Value =
        serde_json::from_str(line.trim()).map_err(|why| ReadyError::NotJson { line: line.clone(), why })?;
    if ready["event"] != "ready" {
        return Err(ReadyError::NotReady(ready));
    }
    Ok(ready)
}

/// The port of the ready line's gRPC address (`"grpc": "host:port"`).
pub fn grpc_port(ready: &Value) -> Option<u16> {
    ready["grpc"].as_str().and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse().ok())
}

/// SIGTERM to `child` (a daemon stops gracefully on it), then waits for it to exit.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).stderr(Stdio::null()).status();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("iluvatar-service-spawn-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_the_ready_line_of_a_child() {
        // Started as `daemon.sh -c <config>`: prints a ready line naming its config.
        let script = r#"echo "{\"event\":\"ready\",\"grpc\":\"127.0.0.1:4321\",\"config\":\"$2\"}"; exec sleep 30"#;
        let d = dir("ok");
        let sh = d.join("daemon.sh");
        std::fs::write(&sh, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&sh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let (mut child, ready) = start_with_config(&sh, &serde_json::json!({"a": 1}), &d, "t").unwrap();
        assert_eq!(ready["event"], "ready");
        assert_eq!(grpc_port(&ready), Some(4321));
        assert_eq!(ready["config"], d.join("t.json").display().to_string());
        let written: Value = serde_json::from_slice(&std::fs::read(d.join("t.json")).unwrap()).unwrap();
        assert_eq!(written["a"], 1);
        terminate(&mut child);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_child_that_prints_no_ready_line_names_its_log() {
        let d = dir("bad");
        let sh = d.join("daemon.sh");
        std::fs::write(&sh, "#!/bin/sh\necho broken >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&sh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let e = format!("{:#}", start_with_config(&sh, &serde_json::json!({}), &d, "t").unwrap_err());
        assert!(e.contains("t did not start") && e.contains("t.log"), "{e}");
        assert_eq!(std::fs::read_to_string(d.join("t.log")).unwrap(), "broken\n");
        let _ = std::fs::remove_dir_all(&d);
    }

    fn child(script: &str) -> Child {
        Command::new("sh").arg("-c").arg(script).stdout(Stdio::piped()).spawn().unwrap()
    }

    #[test]
    fn a_line_that_is_not_a_ready_event_or_none_in_time_is_an_error() {
        let mut c = child(r#"echo '{"event":"hello"}'"#);
        assert!(matches!(read_ready_line(&mut c, Duration::from_secs(10)), Err(ReadyError::NotReady(_))));
        let _ = c.wait();
        let mut c = child("echo not json");
        let e = read_ready_line(&mut c, Duration::from_secs(10)).unwrap_err();
        assert!(e.to_string().starts_with("the first stdout line \"not json\\n\" is not JSON"), "{e}");
        let _ = c.wait();
        let mut c = child("exec sleep 30");
        let e = read_ready_line(&mut c, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, ReadyError::Timeout(_)), "{e}");
        let _ = c.kill();
        let _ = c.wait();
    }
}
