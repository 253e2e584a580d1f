//! Generates the protocol code with a pure-Rust protobuf compiler (protox), so that a fresh
//! clone builds with cargo alone.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/iluvatar_rpc.proto");
    let fds = protox::compile(["iluvatar_rpc.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // HTTP/JSON carries the same messages: missing fields default, as in proto3.
        .message_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]")
        .compile_fds(fds)?;
    Ok(())
}
