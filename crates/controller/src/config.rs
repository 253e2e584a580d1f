//! Controller configuration: a JSON or TOML file where every field has a default and unknown
//! fields are rejected, then environment overrides `ILUVATAR_CONTROLLER__section__key=value`.
//! The loading rules are the worker's: both read through `iluvatar_service::config`.

use iluvatar_core::policy::balance::BalancerConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use iluvatar_service::config::{ConfigError, HttpConfig, ListenConfig};

pub const ENV_PREFIX: &str = "ILUVATAR_CONTROLLER__";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    pub name: String,
    /// Where the store of functions and workers (controller.redb) lives.
    pub state_dir: PathBuf,
    pub grpc: ListenConfig,
    pub http: HttpConfig,
    pub balancer: BalancerConfig,
    pub health: HealthConfig,
    pub forward: ForwardConfig,
    /// Log filter in `tracing` syntax.
    pub log_level: String,
    /// Runtime threads; 0 means the number of cores.
    pub threads: usize,
    pub auth: AuthConfig,
}

/// Bearer-token authentication (see `iluvatar_rpc::auth`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A file (mode 0600 or stricter) holding the token every gRPC call and HTTP request
    /// must carry (`authorization: Bearer <token>`), `register_worker` from workers
    /// included; empty: no token is required.
    pub token_file: PathBuf,
    /// The file of the token the controller sends to its workers (their own
    /// `auth.token_file`'s); empty: the token of `token_file`, if any.
    pub worker_token_file: PathBuf,
    /// Serve on non-loopback addresses without a token (refused otherwise).
    pub insecure: bool,
}

impl AuthConfig {
    /// `path`, unless empty.
    pub fn path(path: &Path) -> Option<&Path> {
        (!path.as_os_str().is_empty()).then_some(path)
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            name: "controller".into(),
            state_dir: PathBuf::from("/var/lib/iluvatar/controller"),
            grpc: ListenConfig { address: "127.0.0.1".into(), port: 8089 },
            http: HttpConfig { enabled: true, address: "127.0.0.1".into(), port: 8090 },
            balancer: BalancerConfig::default(),
            health: HealthConfig::default(),
            forward: ForwardConfig::default(),
            log_level: "info".into(),
            threads: 0,
            auth: AuthConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// How often every worker's health and status are asked for. Each worker is checked on
    /// its own: a slow worker never delays the checks of the others.
    pub interval_ms: u64,
    /// The deadline of `health` and of `status`; a worker that does not answer `health`
    /// within it is unhealthy.
    pub timeout_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { interval_ms: 1_000, timeout_ms: 500 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Connecting to a worker that takes longer counts as not reaching it.
    pub connect_timeout_ms: u64,
    /// A forwarded invocation or prewarm without an answer after this fails (the worker's
    /// own invocation timeout should be shorter).
    pub invoke_timeout_ms: u64,
    /// The deadline of registrations (fan-out and sync): a worker installs a function's
    /// dependencies (its requirements.txt) before it answers, which may take minutes.
    pub register_timeout_ms: u64,
    /// The deadline of every other call to a worker: `invoke_async` (which only queues) and
    /// `invoke_async_check`.
    pub control_timeout_ms: u64,
    /// Other workers tried when an invocation could not reach the chosen one.
    pub retries: usize,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            connect_timeout_ms: 1_000,
            invoke_timeout_ms: 330_000,
            register_timeout_ms: 660_000,
            control_timeout_ms: 5_000,
            retries: 2,
        }
    }
}

impl ControllerConfig {
    /// Loads the file (if any), applies the overrides, and checks the result.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let config = iluvatar_service::config::load(&ControllerConfig::default(), path, env, ENV_PREFIX)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.health.interval_ms == 0 || self.health.timeout_ms == 0 {
            return Err(ConfigError::Invalid("health.interval_ms and health.timeout_ms must be above 0".into()));
        }
        let f = &self.forward;
        if f.invoke_timeout_ms == 0 || f.connect_timeout_ms == 0 || f.control_timeout_ms == 0 {
            return Err(ConfigError::Invalid(format!(
                "forward.connect_timeout_ms, forward.invoke_timeout_ms and forward.control_timeout_ms must be \
                 above 0 (got {}, {} and {})",
                f.connect_timeout_ms, f.invoke_timeout_ms, f.control_timeout_ms
            )));
        }
        if f.register_timeout_ms == 0 {
            return Err(ConfigError::Invalid("forward.register_timeout_ms must be above 0".into()));
        }
        self.balancer.check().map_err(ConfigError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("iluvatar-controller-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_files_and_overrides() {
        assert_eq!(ControllerConfig::load(None, vec![]).unwrap(), ControllerConfig::default());
        let t = write("c.toml", "[grpc]\naddress = \"0.0.0.0\"\nport = 0\n[balancer]\ntype = \"ch_bl\"\n");
        let c = ControllerConfig::load(Some(&t), vec![]).unwrap();
        assert_eq!((c.grpc.port, c.balancer.name()), (0, "ch_bl"));
        let env = vec![
            ("ILUVATAR_CONTROLLER__health__interval_ms".to_string(), "250".to_string()),
            ("ILUVATAR_CONTROLLER__balancer__type".to_string(), "least_loaded".to_string()),
        ];
        let c = ControllerConfig::load(None, env).unwrap();
        assert_eq!((c.health.interval_ms, c.balancer.name()), (250, "least_loaded"));
    }

    #[test]
    fn unknown_fields_and_policies_are_refused_by_name() {
        let j = write("bad.json", r#"{"health": {"intervl_ms": 3}}"#);
        let e = ControllerConfig::load(Some(&j), vec![]).unwrap_err().to_string();
        assert!(e.contains("intervl_ms"), "{e}");
        let j = write("bad2.json", r#"{"balancer": {"type": "random"}}"#);
        let e = ControllerConfig::load(Some(&j), vec![]).unwrap_err().to_string();
        assert!(e.contains("random") && e.contains("ch_rlu"), "{e}");
    }

    #[test]
    fn every_worker_call_has_a_deadline_above_zero() {
        let c = ControllerConfig::default();
        assert!(c.forward.invoke_timeout_ms > 300_000, "longer than the worker's invocation timeout");
        assert_eq!(c.forward.control_timeout_ms, 5_000);
        // Above the worker's dependency build (download and install, 300 s each by default).
        assert!(c.forward.register_timeout_ms > 600_000);
        let env = vec![("ILUVATAR_CONTROLLER__forward__register_timeout_ms".to_string(), "0".to_string())];
        let e = ControllerConfig::load(None, env).unwrap_err().to_string();
        assert!(e.contains("register_timeout_ms"), "{e}");
        let env = vec![("ILUVATAR_CONTROLLER__forward__control_timeout_ms".to_string(), "0".to_string())];
        let e = ControllerConfig::load(None, env).unwrap_err().to_string();
        assert!(e.contains("control_timeout_ms"), "{e}");
    }
}
