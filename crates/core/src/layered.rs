//! Layered configuration, shared by the worker and the controller: defaults, then a file's
//! values, then environment overrides `PREFIX` + `section__key=value`, all as JSON values,
//! deserialised once at the end (so unknown fields are refused by the target type).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LayerError {
    #[error("environment override {var} is invalid: {why}")]
    Override { var: String, why: String },
    #[error("config is invalid: {0}")]
    Invalid(String),
}

/// Parses a config file's text: TOML if `toml`, else JSON.
pub fn parse(text: &str, toml: bool) -> Result<Value, String> {
    if toml {
        ::toml::from_str::<Value>(text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str::<Value>(text).map_err(|e| e.to_string())
    }
}

/// `defaults`, overlaid by `file`, then by every variable of `env` that starts with `prefix`.
pub fn layer<T: Serialize + DeserializeOwned>(
    defaults: &T,
    file: Option<Value>,
    env: impl IntoIterator<Item = (String, String)>,
    prefix: &str,
) -> Result<T, LayerError> {
    let mut merged = serde_json::to_value(defaults).map_err(|e| LayerError::Invalid(e.to_string()))?;
    if let Some(file) = file {
        merge(&mut merged, file);
    }
    for (var, value) in env {
        if let Some(rest) = var.strip_prefix(prefix) {
            apply_override(&mut merged, rest, &value).map_err(|why| LayerError::Override { var: var.clone(), why })?;
        }
    }
    serde_json::from_value(merged).map_err(|e| LayerError::Invalid(e.to_string()))
}

/// Overlays `top` on `base`. A tagged object (one with a "type") replaces the default
/// whole, so that one variant's default fields do not leak into another.
pub fn merge(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) if v.is_object() && v.get("type").is_none() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, top) => *slot = top,
    }
}

/// `section__key` sets `{"section": {"key": value}}`. The value keeps the type of the
/// field it replaces: text for strings, JSON for everything else.
pub fn apply_override(root: &mut Value, path: &str, value: &str) -> Result<(), String> {
    let keys: Vec<&str> = path.split("__").collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err("empty key between '__' separators".into());
    }
    let mut node = root;
    for key in &keys[..keys.len() - 1] {
        node = node
            .as_object_mut()
            .ok_or_else(|| format!("{key} is inside a value that is not a section"))?
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    let obj = node.as_object_mut().ok_or("parent is not a section")?;
    let last = keys[keys.len() - 1];
    let new = match obj.get(last) {
        Some(Value::String(_)) => Value::String(value.to_string()),
        _ => serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string())),
    };
    obj.insert(last.to_string(), new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct C {
        name: String,
        port: u16,
        policy: Policy,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
    enum Policy {
        #[default]
        A,
        B {
            k: u32,
        },
    }

    #[test]
    fn file_then_env_over_defaults() {
        let file = parse("port = 9\n[policy]\ntype = \"b\"\nk = 3\n", true).unwrap();
        let env = vec![("P__name".to_string(), "42".to_string()), ("X__port".to_string(), "1".to_string())];
        let c: C = layer(&C::default(), Some(file), env, "P__").unwrap();
        assert_eq!(c, C { name: "42".into(), port: 9, policy: Policy::B { k: 3 } });
        let e = layer(&C::default(), None, vec![("P__prt".to_string(), "1".to_string())], "P__").unwrap_err();
        assert!(e.to_string().contains("prt"), "{e}");
        let e = layer(&C::default(), None, vec![("P__a____b".to_string(), "1".to_string())], "P__").unwrap_err();
        assert!(matches!(e, LayerError::Override { .. }), "{e}");
    }
}
