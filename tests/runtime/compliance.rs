//! The backend compliance suite (iluvatar_testkit::compliance::backend) on the runtime
//! backend, with real containers (as root, like tests/runtime). Its own test target without
//! the libtest harness: the backend runs in this process and re-executes it as its
//! container launcher, which works only if `main` first calls `serve_if_asked`.
//!
//! `cargo test -p iluvatar_e2e --test runtime_compliance [FILTER]`.

use iluvatar_core::FunctionSpec;
use iluvatar_testkit::compliance::backend::{BackendCase, function_spec, run_main};
use iluvatar_testkit::fixtures::shipped;
use iluvatar_worker::isolation::BackendConfig;
use iluvatar_worker::isolation::runtime::RuntimeConfig;
use std::path::Path;

struct RuntimeCase;

impl BackendCase for RuntimeCase {
    fn config() -> BackendConfig {
        // No standby containers: the suite counts what the pool's one container leaves.
        BackendConfig::Runtime(RuntimeConfig { standby: 0, launchers: 1, ..Default::default() })
    }

    fn function() -> FunctionSpec {
        let code = format!("code:{}", shipped("hello").display());
        function_spec("compliance", &code, iluvatar_rpc::isolation::RUNTIME, 64, "")
    }

    fn bad_function() -> FunctionSpec {
        FunctionSpec { image: "code:/nonexistent/iluvatar-compliance".into(), ..Self::function() }
    }

    /// The container's files under the state dir: its root, bundle, socket and log.
    fn leftovers(state_dir: &Path) -> Vec<String> {
        let mut left = Vec::new();
        for sub in ["root", "bundles", "sockets", "logs"] {
            let entries = std::fs::read_dir(state_dir.join("runtime").join(sub)).into_iter().flatten().flatten();
            left.extend(entries.map(|e| e.path().display().to_string()));
        }
        left
    }
}

fn main() {
    iluvatar_worker::isolation::runtime::launcher::serve_if_asked();
    run_main::<RuntimeCase>("runtime");
}
