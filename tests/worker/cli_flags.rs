//! The CLI without traps: registration flags that agree (`--env`, `--network`, relative
//! paths everywhere), errors that name the address and the likely mistake, and a `--help`
//! that says which service offers each command and describes every option.

use iluvatar_testkit::worker::run_cli;
use iluvatar_testkit::{WorkerProcess, unique_dir};
use serde_json::{Value, json};

fn stderr(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "should fail: {}", String::from_utf8_lossy(&out.stdout));
    // 1 for an error, 2 for a usage error clap found; not a crash.
    assert!(matches!(out.status.code(), Some(1 | 2)), "{}", out.status);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The reference `list` shows for `fqdn`.
fn listed(w: &WorkerProcess, fqdn: &str) -> String {
    let list = w.cli_ok(&["list"]);
    let f = list["functions"].as_array().unwrap().iter().find(|f| {
        format!("{}-{}", f["function_name"].as_str().unwrap(), f["function_version"].as_str().unwrap()) == fqdn
    });
    f.unwrap_or_else(|| panic!("{fqdn} not listed: {list}"))["image_name"].as_str().unwrap().to_string()
}

#[test]
fn env_network_and_relative_paths_reach_the_registration() {
    let w = WorkerProcess::start(json!({}));
    // A folder of this test, named relative to its parent (the CLI's current folder).
    let dir = unique_dir("cli-paths");
    std::fs::create_dir_all(dir.join("fn")).unwrap();
    std::fs::write(dir.join("fn/main.py"), "def main(args):\n    return args\n").unwrap();
    std::fs::write(dir.join("img.tar"), b"not read by the sim backend").unwrap();
    let abs = std::fs::canonicalize(&dir).unwrap();
    let ok = |args: &[&str]| -> Value {
        let out = w.cli_in(&dir, args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let reg = |name: &str, extra: &[&str]| {
        let mut args = vec!["register", "--name", name, "--version", "1", "--isolation", "sim"];
        args.extend_from_slice(extra);
        ok(&args)
    };

    let r = reg("code", &["--code", "fn", "--env", "GREETING=hi", "--env", "TOKEN=s3cret", "--network", "loopback"]);
    assert_eq!(r, json!({"success": true, "fqdn": "code-1"}));
    assert_eq!(
        listed(&w, "code-1"),
        format!("code:{}/fn?GREETING=<hidden>&TOKEN=<hidden>&network=loopback", abs.display()),
        "the values are sent (and never shown)"
    );
    reg("viaimage", &["--image", "code:./fn?A=1", "--env", "B=2"]);
    assert_eq!(listed(&w, "viaimage-1"), format!("code:{}/fn?A=<hidden>&B=<hidden>", abs.display()));
    reg("archive", &["--image", "oci-archive:img.tar:hello", "--language", "none"]);
    assert_eq!(listed(&w, "archive-1"), format!("oci-archive:{}/img.tar:hello", abs.display()));
    reg("layout", &["--image", "oci:fn", "--language", "none"]);
    assert_eq!(listed(&w, "layout-1"), format!("oci:{}/fn", abs.display()));
    reg("plain", &["--image", "anything"]);
    assert_eq!(listed(&w, "plain-1"), "anything", "other references are sent as given");

    // Mistakes are named before anything is sent.
    let err = |args: &[&str]| stderr(&w.cli_in(&dir, args));
    let e = err(&["register", "--name", "x", "--version", "1", "--code", "missing"]);
    assert!(e.contains("--code missing: not found under the current folder"), "{e}");
    let e = err(&["register", "--name", "x", "--version", "1", "--image", "oci:/abs/layout", "--env", "A=1"]);
    assert!(e.contains("--env and --network apply to code functions"), "{e}");
    let e = err(&["register", "--name", "x", "--version", "1", "--code", "fn", "--env", "NOVALUE"]);
    assert!(e.contains("is not NAME=value"), "{e}");
    let e = err(&["register", "--name", "x", "--version", "1", "--code", "fn", "--env", "A=two words"]);
    assert!(e.contains("cannot hold whitespace"), "{e}");
    let e = err(&["register", "--name", "x", "--version", "1", "--code", "fn", "--network", "bridge"]);
    assert!(e.contains("[possible values: none, loopback]"), "{e}");
    let e = err(&["register", "--name", "x", "--version", "1", "--code", "fn", "--image", "oci:x"]);
    assert!(e.contains("cannot be used with"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn connection_mistakes_name_the_address_and_the_likely_cause() {
    let w = WorkerProcess::start(json!({}));
    let http_port = w.http_addr.rsplit(':').next().unwrap().to_string();
    let grpc_port = w.grpc_port.to_string();

    // The HTTP port: the worker's HTTP side answers a gRPC call saying what it is.
    let e = stderr(&run_cli(None, &["--port", &http_port, "ping"]));
    assert!(e.contains(&format!("127.0.0.1:{http_port}")) && e.contains("not its gRPC port"), "{e}");
    // A plain HTTP server that knows nothing of gRPC.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        // A well-behaved HTTP/1.1 server: reads what came, answers, closes its side, drains.
        for mut s in plain.incoming().flatten() {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(200)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = s.shutdown(std::net::Shutdown::Write);
            while s.read(&mut buf).is_ok_and(|n| n > 0) {}
        }
    });
    let e = stderr(&run_cli(None, &["--port", &plain_port, "ping"]));
    assert!(e.contains(&format!("127.0.0.1:{plain_port}")) && e.contains("this looks like an HTTP port"), "{e}");
    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let e = stderr(&run_cli(None, &["--port", &closed, "ping"]));
    assert!(e.contains(&format!("nothing listens at 127.0.0.1:{closed} (connection refused)")), "{e}");
    let e = stderr(&run_cli(None, &["--address", "no-such-host.invalid", "ping"]));
    assert!(e.contains("cannot resolve the host \"no-such-host.invalid\""), "{e}");
    // A worker addressed as a controller, and commands of the other service.
    let e = stderr(&run_cli(None, &["--controller", "--port", &grpc_port, "ping"]));
    assert!(e.contains("is it a worker? Drop --controller"), "{e}");
    let e = stderr(&run_cli(None, &["--controller", "--port", &grpc_port, "status"]));
    assert!(e.contains("status is a worker's command"), "{e}");
    let e = stderr(&run_cli(None, &["--port", &grpc_port, "deregister-worker", "--name", "w"]));
    assert!(e.contains("deregister-worker is a controller's command: add --controller"), "{e}");
    // The worker answered all of it and still serves.
    assert_eq!(w.cli_ok(&["ping"]), json!({"message": "Pong"}));
}

/// The entries of a help text's `heading:` list (commands, options), each with its
/// description (continuation lines joined); an entry is a line indented by two spaces.
fn entries(text: &str, heading: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for l in text.lines().skip_while(|l| !l.starts_with(heading)).skip(1).take_while(|l| l.starts_with("  ")) {
        let entry = l.starts_with("  ") && !l.starts_with("   ") || l.trim_start().starts_with('-');
        match out.last_mut() {
            Some(last) if !entry => last.1 = format!("{} {}", last.1, l.trim()),
            _ => {
                let t = l.trim_start();
                // `name  description`, or `-x, --name <V>  description`.
                let (name, rest) = t.split_once("  ").unwrap_or((t, ""));
                out.push((name.trim().to_string(), rest.trim().to_string()));
            }
        }
    }
    out
}

#[test]
fn help_says_which_service_offers_each_command_and_describes_every_option() {
    let help = |args: &[&str]| {
        let out = run_cli(None, args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    let commands: Vec<_> = entries(&top, "Commands:").into_iter().filter(|(c, _)| c != "help").collect();
    assert!(commands.len() >= 11, "{commands:?}\n{top}");
    for (c, about) in &commands {
        let said = ["(worker and controller)", "(worker only)", "(controller only)"].iter().any(|w| about.contains(w));
        assert!(said, "the help of {c} does not say which service offers it: {about:?}");
        let text = help(&[c.as_str(), "--help"]);
        let options = entries(&text, "Options:").into_iter().chain(entries(&text, "Connection:"));
        for (option, description) in options {
            assert!(!description.is_empty(), "{c}: {option} has no description:\n{text}");
        }
        // The reference platform's isolation names are served, not refused: the help says by what.
        if text.contains("containerd") || text.contains("docker") {
            assert!(text.contains("serves them with its backend that runs OCI images"), "{c}:\n{text}");
        }
    }
    let register = help(&["register", "--help"]);
    for flag in ["--env <NAME=value>", "--network <NETWORK>", "--code <CODE>", "--image <IMAGE>"] {
        assert!(register.contains(flag), "{flag}:\n{register}");
    }
    assert!(register.contains("relative"), "says relative paths are taken:\n{register}");
}

/// A reader that stops early (`| grep -q`) closes the pipe: the CLI exits quietly, not with
/// a panic about a broken pipe.
#[test]
fn a_reader_that_stops_early_is_no_error() {
    let w = WorkerProcess::start(json!({}));
    let port = w.grpc_port.to_string();
    let mut child = std::process::Command::new(iluvatar_testkit::bin("iluvatar_worker_cli"))
        .args(["--address", "127.0.0.1", "--port", &port, "ping"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The read end is closed before the CLI prints its answer.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}
