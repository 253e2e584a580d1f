//! Generates the protocol code with a pure-Rust protobuf compiler (protox), so that a fresh
//! clone builds with cargo alone.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/iluvatar_rpc.proto");
    let fds = protox::compile(["iluvatar_rpc.proto"], ["proto"])?;
    // HTTP/JSON carries the same messages: missing fields default, as in proto3.
    let mut config = tonic_prost_build::configure()
        .message_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]");
    // A request naming a field that does not exist (a typo) is refused, naming the field,
    // rather than run with that field at its default.
    for file in &fds.file {
        for message in file.message_type.iter().filter(|m| m.name().ends_with("Request")) {
            let path = format!(".{}.{}", file.package(), message.name());
            config = config.message_attribute(path, "#[serde(deny_unknown_fields)]");
        }
    }
    // Fields of JSON text may be given as a JSON object, or as the protocol's text in a string.
    for field in ["InvokeRequest.json_args", "InvokeAsyncRequest.json_args", "RegisterRequest.resource_timings_json"] {
        config = config.field_attribute(
            format!(".iluvatar_rpc.{field}"),
            "#[serde(deserialize_with = \"crate::json_text::deserialize\")]",
        );
    }
    config.compile_fds(fds)?;
    Ok(())
}
