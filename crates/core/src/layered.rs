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
    /// The target type refused the value at `key` (dotted, `[i]` for list items), which
    /// `origin` set.
    #[error("{}", field_message(origin, key, message))]
    Field { key: String, origin: Origin, message: String },
}

/// Which layer set a value the target type refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The config file.
    File,
    /// An environment override: the variable's name.
    Env(String),
    /// Neither alone (a default merged with a file's section).
    Merged,
}

fn field_message(origin: &Origin, key: &str, message: &str) -> String {
    match origin {
        Origin::File => format!("config file: {key}: {message}"),
        Origin::Env(var) => format!("environment override {var}: {key}: {message}"),
        Origin::Merged => format!("config is invalid: {key}: {message}"),
    }
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
    if let Some(file) = &file {
        merge(&mut merged, file.clone());
    }
    let mut overrides: Vec<(String, Vec<String>)> = Vec::new();
    // A variable that starts like the prefix but is not it (one underscore short) is a
    // misspelled override, not someone else's variable: refused rather than ignored.
    let stem = prefix.trim_end_matches('_');
    for (var, value) in env {
        if let Some(rest) = var.strip_prefix(prefix) {
            apply_override(&mut merged, rest, &value).map_err(|why| LayerError::Override { var: var.clone(), why })?;
            overrides.push((var.clone(), rest.split("__").map(str::to_string).collect()));
        } else if !stem.is_empty() && var.strip_prefix(stem).is_some_and(|r| r.starts_with('_')) {
            let why =
                format!("overrides are named {prefix}section__key (two underscores after {stem} and between keys)");
            return Err(LayerError::Override { var, why });
        }
    }
    serde_path_to_error::deserialize(merged).map_err(|e| {
        let path = e.path().clone();
        let message = e.into_inner().to_string();
        let keys: Vec<Key> = path
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(Key::Name(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Key::Index(*index)),
                _ => None,
            })
            .collect();
        if keys.is_empty() {
            return LayerError::Invalid(message);
        }
        LayerError::Field { key: dotted(&keys), origin: origin(&keys, file.as_ref(), &overrides), message }
    })
}

/// One step of the path to a refused value.
enum Key {
    Name(String),
    Index(usize),
}

fn dotted(keys: &[Key]) -> String {
    let mut s = String::new();
    for k in keys {
        match k {
            Key::Name(n) if s.is_empty() => s.push_str(n),
            Key::Name(n) => {
                s.push('.');
                s.push_str(n);
            }
            Key::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The layer that set the value at `keys`: the last environment override on that path
/// (or inside it), else the file if it holds the value (or a tagged section or a plain
/// value on the way, which replaced the default whole), else neither alone.
fn origin(keys: &[Key], file: Option<&Value>, overrides: &[(String, Vec<String>)]) -> Origin {
    let names: Vec<&str> = keys
        .iter()
        .map_while(|k| match k {
            Key::Name(n) => Some(n.as_str()),
            Key::Index(_) => None,
        })
        .collect();
    for (var, path) in overrides.iter().rev() {
        let n = names.len().min(path.len());
        if n > 0 && names[..n] == path.iter().map(String::as_str).collect::<Vec<_>>()[..n] {
            return Origin::Env(var.clone());
        }
    }
    let Some(mut node) = file else { return Origin::Merged };
    for (depth, key) in keys.iter().enumerate() {
        let next = match (key, node) {
            (Key::Name(n), Value::Object(o)) => o.get(n),
            (Key::Index(i), Value::Array(a)) => a.get(*i),
            _ => return if depth > 0 { Origin::File } else { Origin::Merged },
        };
        match next {
            Some(v) => node = v,
            None if depth > 0 && node.get("type").is_some() => return Origin::File,
            None => return Origin::Merged,
        }
        if node.get("type").is_some() || !(node.is_object() || node.is_array()) {
            return Origin::File;
        }
    }
    Origin::File
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
        let e = layer(&C::default(), None, vec![("P_port".to_string(), "1".to_string())], "P__").unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment override P_port is invalid: overrides are named P__section__key (two underscores after P and between keys)"
        );
        let other = vec![("PATH".to_string(), "/bin".to_string()), ("PX_port".to_string(), "1".to_string())];
        assert_eq!(layer(&C::default(), None, other, "P__").unwrap(), C::default(), "other variables are not ours");
    }

    fn refused(file: Option<&str>, env: &[(&str, &str)]) -> LayerError {
        let file = file.map(|f| parse(f, true).unwrap());
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        layer(&C::default(), file, env, "P__").unwrap_err()
    }

    fn field(key: &str, origin: Origin, message: &str) -> LayerError {
        LayerError::Field { key: key.into(), origin, message: message.into() }
    }

    #[test]
    fn refusals_name_the_key_and_the_layer_that_set_it() {
        let e = refused(Some("prt = 9\n"), &[]);
        assert_eq!(e, field("prt", Origin::File, "unknown field `prt`, expected one of `name`, `port`, `policy`"));
        let e = refused(Some("port = 9\n"), &[("P__prt", "1")]);
        let env = Origin::Env("P__prt".into());
        assert_eq!(e, field("prt", env, "unknown field `prt`, expected one of `name`, `port`, `policy`"));
        let e = refused(None, &[("P__port", "x")]);
        assert_eq!(e, field("port", Origin::Env("P__port".into()), "invalid type: string \"x\", expected u16"));
        // Inside a tagged section the file replaced whole (serde reads a tagged section
        // through a buffer, so the path ends at the section).
        let e = refused(Some("[policy]\ntype = \"b\"\nk = -1\n"), &[]);
        assert_eq!(e, field("policy", Origin::File, "invalid value: integer `-1`, expected u32"));
        let e = refused(Some("[policy]\ntype = \"b\"\n"), &[]);
        assert_eq!(e, field("policy", Origin::File, "missing field `k`"));
        let e = refused(Some("port = 1\n"), &[("P__policy__type", "c")]);
        assert!(matches!(&e, LayerError::Field { key, origin: Origin::Env(_), .. } if key == "policy.type"), "{e}");
        let want = "environment override P__policy__type: policy.type: unknown variant `c`, expected `a` or `b`";
        assert_eq!(e.to_string(), want);
        let e = refused(Some("[policy]\ntype = \"b\"\nk = 1\n"), &[("P__policy__k", "-1")]);
        assert!(matches!(&e, LayerError::Field { key, origin: Origin::Env(_), .. } if key == "policy"), "{e}");
    }
}
