//! Paths of the fixtures: the test functions (`tests/functions/`), the functions shipped with
//! the project (`functions/`), the image builders (`tests/images/`).

use std::path::{Path, PathBuf};

/// The `tests/` directory of the repository.
pub fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/kit lives in tests/").to_path_buf()
}

/// A fixture function of the tests: `tests/functions/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    tests_dir().join("functions").join(name)
}

/// A function shipped with the project: `functions/<name>`.
pub fn shipped(name: &str) -> PathBuf {
    let p = tests_dir().join("..").join("functions").join(name);
    p.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
