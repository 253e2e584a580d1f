//! Helpers shared by the load generator's test binaries: where the built binaries are, a
//! fresh temp directory, running the load generator, reading its CSV.

#![allow(dead_code)] // each test binary uses a part of these

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The target directory the test executable was built in (target/<profile>).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(p.is_file(), "{} not found: run `cargo build --workspace` first", p.display());
    p
}

/// A fresh directory, unique per process and call.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d =
        std::env::temp_dir().join(format!("lg-test-{}-{}-{tag}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs iluvatar_load_gen and shows what it printed (in the test's output on failure).
pub fn load_gen(args: &[&str]) -> Output {
    let out = Command::new(bin("iluvatar_load_gen")).args(args).output().unwrap();
    eprintln!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Rows of invocations.csv by column name (the fields these tests read hold no commas).
pub fn read_csv(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            let f: Vec<&str> = l.splitn(header.len(), ',').collect();
            assert_eq!(f.len(), header.len(), "{l}");
            header.iter().zip(f).map(|(h, v)| (h.to_string(), v.to_string())).collect()
        })
        .collect()
}
