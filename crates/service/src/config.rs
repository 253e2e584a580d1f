//! Reading a daemon's config: a JSON or TOML file where every field has a default and
//! unknown fields are rejected, then environment overrides `PREFIX` + `section__key=value`
//! (the layering itself is `iluvatar_core::layered`, which does no IO). Also the listen
//! sections both daemons share.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid {format}: {message}")]
    Parse { path: PathBuf, format: &'static str, message: String },
    #[error("config is invalid: {0}")]
    Invalid(String),
    #[error("environment override {var} is invalid: {why}")]
    Override { var: String, why: String },
    /// A value of the file refused at `key` (dotted).
    #[error("config file {path}: {key}: {message}")]
    FileField { path: PathBuf, key: String, message: String },
    /// A value an environment override set, refused at `key` (a misspelled key is one).
    #[error("environment override {var}: {key}: {message}")]
    EnvField { var: String, key: String, message: String },
}

impl ConfigError {
    fn of(e: iluvatar_core::layered::LayerError, file: Option<&Path>) -> Self {
        use iluvatar_core::layered::{LayerError, Origin};
        match e {
            LayerError::Override { var, why } => ConfigError::Override { var, why },
            LayerError::Invalid(m) => ConfigError::Invalid(m),
            LayerError::Field { key, origin: Origin::Env(var), message } => ConfigError::EnvField { var, key, message },
            LayerError::Field { key, origin: Origin::File, message } => match file {
                Some(path) => ConfigError::FileField { path: path.to_path_buf(), key, message },
                None => ConfigError::Invalid(format!("{key}: {message}")),
            },
            LayerError::Field { key, origin: Origin::Merged, message } => {
                ConfigError::Invalid(format!("{key}: {message}"))
            }
        }
    }
}

/// `defaults`, overlaid by the file at `path` (if any), then by the variables of `env` that
/// start with `prefix`. The caller checks the result's values. A refused value is named by
/// its key and by what set it: the file (named) or the environment variable.
pub fn load<T: Serialize + DeserializeOwned>(
    defaults: &T,
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    prefix: &str,
) -> Result<T, ConfigError> {
    let file = path.map(read_file).transpose()?;
    iluvatar_core::layered::layer(defaults, file, env, prefix).map_err(|e| ConfigError::of(e, path))
}

/// A config file's values: TOML with a `.toml` extension, else JSON.
pub fn read_file(path: &Path) -> Result<Value, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let toml = path.extension().is_some_and(|e| e == "toml");
    iluvatar_core::layered::parse(&text, toml).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        format: if toml { "TOML" } else { "JSON" },
        message,
    })
}

/// Where the gRPC API listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    pub address: String,
    /// 0 picks a free port; the ready line says the one bound.
    pub port: u16,
}

/// Where the HTTP/JSON API listens, if at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    pub address: String,
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct C {
        grpc: ListenConfig,
        http: HttpConfig,
    }

    impl Default for C {
        fn default() -> Self {
            C {
                grpc: ListenConfig { address: "127.0.0.1".into(), port: 1 },
                http: HttpConfig { enabled: true, address: "127.0.0.1".into(), port: 2 },
            }
        }
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("iluvatar-service-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn files_then_overrides_over_defaults() {
        assert_eq!(load(&C::default(), None, vec![], "P__").unwrap(), C::default());
        let t = write("c.toml", "[grpc]\naddress = \"0.0.0.0\"\nport = 0\n");
        let env = vec![("P__http__enabled".to_string(), "false".to_string())];
        let c = load(&C::default(), Some(&t), env, "P__").unwrap();
        assert_eq!((c.grpc.address.as_str(), c.grpc.port, c.http.enabled), ("0.0.0.0", 0, false));
        let j = write("c.json", r#"{"http": {"port": 7}}"#);
        assert_eq!(load(&C::default(), Some(&j), vec![], "P__").unwrap().http.port, 7);
    }

    #[test]
    fn every_refusal_names_its_cause() {
        let missing = Path::new("/nonexistent/iluvatar.json");
        let e = load(&C::default(), Some(missing), vec![], "P__").unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }) && e.to_string().contains("/nonexistent"), "{e}");
        let bad = write("bad.toml", "[grpc\n");
        let e = load(&C::default(), Some(&bad), vec![], "P__").unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
        let bad = write("bad.json", r#"{"grpc": {"adress": "x"}}"#);
        let e = load(&C::default(), Some(&bad), vec![], "P__").unwrap_err();
        assert!(matches!(e, ConfigError::FileField { .. }) && e.to_string().contains("adress"), "{e}");
        let e = load(&C::default(), None, vec![("P__a____b".into(), "1".into())], "P__").unwrap_err();
        assert!(matches!(e, ConfigError::Override { .. }), "{e}");
    }

    #[test]
    fn a_refused_value_names_its_key_and_where_it_came_from() {
        let port = |v: &str| vec![("P__grpc__port".to_string(), v.to_string())];
        let e = load(&C::default(), None, port("abc"), "P__").unwrap_err().to_string();
        assert_eq!(e, "environment override P__grpc__port: grpc.port: invalid type: string \"abc\", expected u16");
        let file = write("typed.toml", "[http]\nport = \"abc\"\n");
        let e = load(&C::default(), Some(&file), vec![], "P__").unwrap_err().to_string();
        let want = format!("config file {}: http.port: invalid type: string \"abc\", expected u16", file.display());
        assert_eq!(e, want);
        // A misspelled override is the variable's fault, not the (valid) file's.
        let typo = vec![("P__grpc__prot".to_string(), "9000".to_string())];
        let e = load(&C::default(), Some(&file), typo, "P__").unwrap_err();
        assert!(matches!(&e, ConfigError::EnvField { var, .. } if var == "P__grpc__prot"), "{e}");
        assert!(e.to_string().contains("unknown field `prot`"), "{e}");
        let good = write("good.json", r#"{"http": {"port": 7}}"#);
        let e = load(&C::default(), Some(&good), vec![("P__http__enabled".into(), "maybe".into())], "P__");
        let e = e.unwrap_err().to_string();
        assert!(e.starts_with("environment override P__http__enabled: http.enabled: invalid type"), "{e}");
    }
}
