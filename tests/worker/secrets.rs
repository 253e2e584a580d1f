//! Environment values in a code reference are never shown (list over gRPC and HTTP, a
//! conflicting registration's error), and the registry file is its owner's only.

use iluvatar_rpc as rpc;
use iluvatar_testkit::{WorkerProcess, register_req};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn environment_values_are_never_echoed_and_the_registry_is_private() {
    let w = WorkerProcess::start(json!({}));
    let mut c = w.client().await;
    let mut req = register_req("withenv", "1", 128, "");
    req.image_name = "code:/srv/f?API_KEY=s3cret-value&network=loopback&OTHER=x".into();
    let r = c.register(req.clone()).await.unwrap().into_inner();
    assert!(r.success, "{r:?}");

    let list = c.list_registered_funcs(rpc::ListFunctionRequest::default()).await.unwrap().into_inner();
    let shown: Vec<_> = list.functions.iter().map(|f| f.image_name.as_str()).collect();
    assert_eq!(shown, ["code:/srv/f?API_KEY=<hidden>&network=loopback&OTHER=<hidden>"]);
    let (code, body) = w.http_get("/functions");
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("s3cret") && body.contains("API_KEY=<hidden>"), "{body}");
    let cli = w.cli_ok(&["list"]).to_string();
    assert!(!cli.contains("s3cret") && cli.contains("API_KEY=<hidden>"), "{cli}");

    // A conflicting registration names the field, not the value.
    req.image_name = "code:/srv/f?API_KEY=other-value".into();
    let r = c.register(req).await.unwrap().into_inner();
    assert!(!r.success && r.error.contains("image"), "{r:?}");
    assert!(!r.error.contains("s3cret") && !r.error.contains("other-value"), "{}", r.error);

    let mode = std::fs::metadata(w.state_dir.join("registry.redb")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the registry is readable by its owner only");
}
