//! Embeds the commit the load generator is built from (`ILUVATAR_GIT_COMMIT`), which every
//! results file records: reports then name their code wherever the binary runs. From
//! `git rev-parse HEAD` when the source is a git checkout and git is installed; else from
//! the ILUVATAR_GIT_COMMIT variable at build time (a source archive's builder may set it);
//! else "unknown". It is the commit HEAD named when the binary was built: uncommitted
//! changes are not recorded.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-env-changed=ILUVATAR_GIT_COMMIT");
    let commit = match git(&dir, &["rev-parse", "HEAD"]) {
        Some(head) => {
            // Rebuilt when HEAD moves: a checkout changes HEAD, a commit its branch's ref
            // (a loose file, or packed-refs). Only existing files are watched: cargo would
            // rerun this script at every build for a missing one.
            let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
            watched.extend(git(&dir, &["symbolic-ref", "-q", "HEAD"]));
            for what in watched {
                if let Some(p) = git(&dir, &["rev-parse", "--path-format=absolute", "--git-path", &what])
                    && Path::new(&p).exists()
                {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            head
        }
        None => std::env::var("ILUVATAR_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty()).unwrap_or("unknown".into()),
    };
    println!("cargo:rustc-env=ILUVATAR_GIT_COMMIT={commit}");
}
