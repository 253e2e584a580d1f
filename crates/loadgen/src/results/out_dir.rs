//! Results folders: a run writes into a new or empty folder, so that its results never sit
//! beside an earlier run's; `--force` replaces what an earlier run of the command wrote.

use anyhow::{Context, bail};
use std::path::Path;

/// What `trace` and `rate` write into their folder (`rate` also writes its trace).
pub const RUN_FILES: [&str; 5] =
    ["invocations.csv", "summary.json", "latency_cdf.svg", "overhead_over_time.svg", "cold_starts_throughput.svg"];

/// The `--force` option every command with a results folder takes.
pub const FORCE_HELP: &str = "Write into a --out folder that is not empty: what this command writes there \
    (files and folders of the same names) is removed first, the rest is kept";

/// Makes `dir` ready for a command's results. A missing folder is created and an empty one
/// used; one that holds anything is refused unless `force`, and then the entries named in
/// `ours` (the files and folders the command writes) are removed first, so that nothing of
/// an earlier run stays beside the new results; other entries are kept.
pub fn prepare(dir: &Path, force: bool, ours: &[&str]) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()));
        }
        Err(e) => return Err(e).with_context(|| format!("{} is not a readable folder", dir.display())),
        Ok(entries) => entries,
    };
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into()).collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    if !force {
        let shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        let more = if names.len() > 5 { format!(" and {} more", names.len() - 5) } else { String::new() };
        bail!(
            "{} is not empty (it holds {shown}{more}): new results would mix with what is there. Give a new or \
             empty folder as --out, or --force to replace what this command writes there ({}) and keep the rest",
            dir.display(),
            ours.join(", ")
        );
    }
    for name in ours {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => continue,
        }
        .with_context(|| format!("--force: removing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_with_anything_in_it_needs_force_which_replaces_only_ours() {
        let dir = std::env::temp_dir().join(format!("lg-out-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        prepare(&dir, false, &["a.csv"]).unwrap();
        assert!(dir.is_dir(), "a missing folder is created");
        prepare(&dir, false, &["a.csv"]).unwrap();
        std::fs::write(dir.join("a.csv"), "old").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        std::fs::create_dir_all(dir.join("points/007")).unwrap();
        let e = prepare(&dir, false, &["a.csv", "points"]).unwrap_err().to_string();
        assert!(e.contains("is not empty (it holds a.csv, notes.txt, points)") && e.contains("--force"), "{e}");
        assert_eq!(std::fs::read_to_string(dir.join("a.csv")).unwrap(), "old", "a refusal changes nothing");
        prepare(&dir, true, &["a.csv", "points", "absent.json"]).unwrap();
        assert!(!dir.join("a.csv").exists() && !dir.join("points").exists());
        assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine", "other files are kept");
        let file = dir.join("notes.txt");
        assert!(prepare(&file, true, &[]).unwrap_err().to_string().contains("not a readable folder"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
