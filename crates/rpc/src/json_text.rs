//! Fields that hold JSON text (`json_args`, `resource_timings_json`) as HTTP/JSON clients
//! give them: the protocol carries JSON text in a string, which inside a JSON body is a
//! string of escaped JSON. A JSON object is taken as well, and kept as its exact text (no
//! re-encoding: numbers and key order stay as sent).

use serde::de::Error;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A JSON text field from a JSON object (its text), a string (the protocol's form, taken as
/// it is) or null (empty). Anything else is kept as its text, for the worker to refuse by
/// name (`json_args must be a JSON object`) as it refuses the same text over gRPC.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = <Box<RawValue>>::deserialize(d)?;
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).map_err(D::Error::custom),
        _ if text == "null" => Ok(String::new()),
        _ => Ok(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use crate::{InvokeAsyncRequest, InvokeRequest, RegisterRequest};

    fn args(body: &str) -> String {
        serde_json::from_str::<InvokeRequest>(body).unwrap_or_else(|e| panic!("{body}: {e}")).json_args
    }

    #[test]
    fn arguments_are_an_object_or_its_text() {
        assert_eq!(
            args(r#"{"json_args": {"name": "bob", "n": 12345678901234567890123}}"#),
            r#"{"name": "bob", "n": 12345678901234567890123}"#,
            "the exact text, big numbers included"
        );
        assert_eq!(args(r#"{"json_args": "{\"name\": \"bob\"}"}"#), r#"{"name": "bob"}"#);
        assert_eq!(args(r#"{"json_args": null}"#), "");
        assert_eq!(args(r#"{"function_name": "f"}"#), "", "absent: no arguments");
        assert_eq!(args(r#"{"json_args": [1, 2]}"#), "[1, 2]", "left for the worker to refuse by name");
        assert_eq!(args(r#"{"json_args": 3}"#), "3");
        let a: InvokeAsyncRequest = serde_json::from_str(r#"{"json_args": {"k": "v"}}"#).unwrap();
        assert_eq!(a.json_args, r#"{"k": "v"}"#);
        let r: RegisterRequest = serde_json::from_str(r#"{"resource_timings_json": {"warm_dur_ms": 5}}"#).unwrap();
        assert_eq!(r.resource_timings_json, r#"{"warm_dur_ms": 5}"#);
        let r: RegisterRequest = serde_json::from_str(r#"{"resource_timings_json": "{\"warm_dur_ms\": 5}"}"#).unwrap();
        assert_eq!(r.resource_timings_json, r#"{"warm_dur_ms": 5}"#);
        // Serialized as the protocol's string, so a JSON round trip gives the same request.
        let r = InvokeRequest { json_args: r#"{"k":1}"#.into(), ..Default::default() };
        let back: InvokeRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn requests_refuse_unknown_fields_by_name() {
        let e = serde_json::from_str::<InvokeRequest>(r#"{"function_nmae": "f", "function_version": "1"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `function_nmae`") && e.contains("`function_name`"), "{e}");
        let e = serde_json::from_str::<RegisterRequest>(r#"{"memroy": 64}"#).unwrap_err().to_string();
        assert!(e.contains("`memroy`"), "{e}");
        // Responses stay lenient: a newer server may add fields.
        let r: crate::PingResponse = serde_json::from_str(r#"{"message": "Pong", "extra": 1}"#).unwrap();
        assert_eq!(r.message, "Pong");
    }
}
