//! Every example of docs/*.md runs: the ```sh blocks of a page, in order, in one bash with
//! `set -euo pipefail`, in a fresh folder, with the binaries of the tests' own profile on
//! PATH and `REPO` the repository's root (as docs/README.md tells readers to set up). A block
//! that fails names the page, the block, its line and what it printed. Blocks fenced another
//! way (```text, ```toml, ```console) are not run; the pages say why next to them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The pages and the test that runs each; `every_page_is_run` keeps the two lists equal.
const PAGES: &[&str] = &["functions", "isolation", "policies", "load-generation", "simulation", "cluster", "results"];

/// How long one page may run (wall seconds) before it is stopped and fails.
const PAGE_TIMEOUT_S: u32 = 240;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("docs")
}

/// One ```sh block: its first line's number in the page (1-based) and its text.
#[derive(Debug, PartialEq)]
struct Block {
    line: usize,
    text: String,
}

/// The ```sh blocks of a Markdown text. Another fence's content is skipped whatever it
/// holds; an unclosed fence is an error (a page cut short would otherwise run half a block).
fn sh_blocks(markdown: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    // (line of the opening fence, its backticks, whether it is a ```sh block, its text)
    let mut open: Option<(usize, String, bool, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let ticks: String = trimmed.chars().take_while(|c| *c == '`').collect();
        match &mut open {
            None if ticks.len() >= 3 => {
                let info = trimmed[ticks.len()..].trim();
                open = Some((i + 1, ticks, info == "sh", String::new()));
            }
            None => {}
            Some((start, fence, is_sh, text)) => {
                if ticks.len() >= fence.len() && trimmed[ticks.len()..].trim().is_empty() {
                    if *is_sh {
                        blocks.push(Block { line: *start + 1, text: std::mem::take(text) });
                    }
                    open = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    match open {
        Some((start, ..)) => Err(format!("the fence opened at line {start} is never closed")),
        None => Ok(blocks),
    }
}

/// A folder removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const MARK: &str = "@@docs-block";

/// Runs a page's blocks; panics naming the failing block with its output.
fn run_page(page: &str) {
    let path = docs().join(format!("{page}.md"));
    let markdown = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let blocks = sh_blocks(&markdown).unwrap_or_else(|e| panic!("docs/{page}.md: {e}"));
    assert!(!blocks.is_empty(), "docs/{page}.md has no ```sh example");

    let dir = TempDir(std::env::temp_dir().join(format!("iluvatar-docs-{page}-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let work = dir.0.join("work");
    std::fs::create_dir_all(&work).unwrap();
    // Containers run as an unprivileged user: they must be able to pass through the folder.
    Command::new("chmod").arg("755").arg(&dir.0).arg(&work).status().unwrap();

    let mut script = String::from("set -euo pipefail\n");
    for (n, b) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '{MARK} {} {}'\n", n + 1, b.line));
        script.push_str(&b.text);
    }
    let script_path = dir.0.join("page.sh");
    std::fs::write(&script_path, script).unwrap();
    let out_path = dir.0.join("output");
    let out = std::fs::File::create(&out_path).unwrap();

    let bin = iluvatar_testkit::target_dir();
    let path_var = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // A wrapper in a process group of its own runs the page under timeout(1) (in the
    // foreground: in the same group) and then stops whatever the page left running (it
    // should stop what it starts) with one signal to its own group, which it ignores itself.
    // The group is the wrapper's while it lives, so the signal reaches nothing else.
    let wrapper = format!(
        "timeout --foreground -k 10 {PAGE_TIMEOUT_S} bash \"$1\"; rc=$?; trap '' TERM; kill -TERM 0 2>/dev/null; exit $rc"
    );
    let status = Command::new("bash")
        .args(["-c", &wrapper, "page"])
        .arg(&script_path)
        .process_group(0)
        .current_dir(&work)
        .env("PATH", path_var)
        .env("REPO", docs().parent().unwrap())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .expect("bash runs");

    if status.success() {
        return;
    }
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    // The last block that started is the one that failed; its output is what follows its mark.
    let (n, tail) = match output.rfind(MARK) {
        Some(at) => {
            let rest = &output[at + MARK.len()..];
            let n: usize = rest.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(1);
            (n, rest.split_once('\n').map(|(_, t)| t).unwrap_or(""))
        }
        None => (1, output.as_str()),
    };
    let block = &blocks[n.clamp(1, blocks.len()) - 1];
    let why = if status.code() == Some(124) { format!(" (stopped after {PAGE_TIMEOUT_S} s)") } else { String::new() };
    panic!(
        "docs/{page}.md: example {n} of {} (line {}) failed: {status}{why}\n--- the example:\n{}--- its output:\n{tail}",
        blocks.len(),
        block.line,
        block.text
    );
}

#[test]
fn docs_functions() {
    run_page("functions");
}

#[test]
fn docs_isolation() {
    run_page("isolation");
}

#[test]
fn docs_policies() {
    run_page("policies");
}

#[test]
fn docs_load_generation() {
    run_page("load-generation");
}

#[test]
fn docs_simulation() {
    run_page("simulation");
}

#[test]
fn docs_cluster() {
    run_page("cluster");
}

#[test]
fn docs_results() {
    run_page("results");
}

/// A page added to docs/ without a test here would go unchecked.
#[test]
fn every_page_is_run() {
    let mut found: Vec<String> = std::fs::read_dir(docs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".md").map(str::to_string))
        .filter(|f| f != "README")
        .collect();
    found.sort();
    let mut listed: Vec<String> = PAGES.iter().map(|p| p.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "docs/*.md and the pages this test runs differ");
    // docs/README.md (the index) runs nothing but must link every page.
    let index = std::fs::read_to_string(docs().join("README.md")).unwrap();
    for page in PAGES {
        assert!(index.contains(&format!("({page}.md)")), "docs/README.md does not link {page}.md");
    }
}

#[test]
fn blocks_are_found_as_fenced() {
    let md = "a\n```sh\necho 1\n```\n```text\n```sh\nnot run\n```\n````md\n```sh\n````\n  ```sh\necho 2\n  ```\n";
    let blocks = sh_blocks(md).unwrap();
    assert_eq!(blocks, vec![Block { line: 3, text: "echo 1\n".into() }, Block { line: 13, text: "echo 2\n".into() }]);
    assert!(sh_blocks("```sh\necho 1\n").unwrap_err().contains("line 1"));
}
