//! No network unless the registration asks for it; asking (`code:/dir?network=loopback`)
//! gives loopback only, never a route off the machine.

use crate::util::{RuntimeWorker, fixture};
use serde_json::json;

#[test]
fn network_is_off_unless_asked_and_then_loopback_only() {
    let w = RuntimeWorker::start(json!({}));
    let code = fixture("loopback");
    w.register("nonet", &code, 64);
    let r = w.invoke_ok("nonet", "{}");
    assert_eq!(r["result"]["body"]["loopback"], false, "no network at all by default: {r}");
    assert_eq!(r["result"]["body"]["off_machine"], false, "{r}");

    let image = format!("code:{}?network=loopback", code.display());
    let reg = w.cli_ok(&["register", "--name", "lo", "--version", "1", "--image", &image, "--isolation", "runtime"]);
    assert_eq!(reg["success"], true, "{reg}");
    let r = w.invoke_ok("lo", "{}");
    assert_eq!(r["result"]["body"]["loopback"], true, "loopback works when asked: {r}");
    assert_eq!(r["result"]["body"]["off_machine"], false, "still no route off the machine: {r}");

    let bridge = format!("code:{}?network=bridge", code.display());
    let err = w.cli_err(&["register", "--name", "br", "--version", "1", "--image", &bridge, "--isolation", "runtime"]);
    assert!(err.contains("only loopback"), "{err}");
}
