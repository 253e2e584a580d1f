//! Running `iluvatar_load_gen` from the target directory and reading what it wrote.

use crate::{Proc, bin};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

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

/// A daemon for the load generator to drive (`iluvatar_worker`, `iluvatar_controller`) with
/// its files (`<binary>.json`, `<binary>.log`) in the test's `dir`.
pub fn daemon(binary: &str, dir: &Path, config: Value) -> Proc {
    Proc::start_in(binary, binary, &config, dir.to_path_buf())
}
