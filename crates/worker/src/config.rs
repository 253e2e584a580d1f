//! Worker configuration: a JSON or TOML file where every field has a default and unknown
//! fields are rejected, then environment overrides `ILUVATAR_WORKER__section__key=value`.

use iluvatar_core::policy::{EvictionConfig, KeepAliveConfig, QueueConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use iluvatar_service::config::{ConfigError, HttpConfig, ListenConfig};

pub const ENV_PREFIX: &str = "ILUVATAR_WORKER__";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// The worker's name, reported by `status`.
    pub name: String,
    /// Where the registry and every container's files live.
    pub state_dir: PathBuf,
    pub grpc: ListenConfig,
    pub http: HttpConfig,
    pub limits: LimitsConfig,
    pub invoker: InvokerConfig,
    pub container_pool: PoolConfig,
    pub isolation: IsolationConfig,
    pub shutdown: ShutdownConfig,
    /// Log filter in `tracing` syntax (`info`, `iluvatar_worker=debug`, ...).
    pub log_level: String,
    /// Also log each span (API call, queue wait, pool acquire, container create, call) when
    /// it closes, with its transaction id and busy/idle time; spans are at debug level, so
    /// `log_level` must let them through (e.g. `iluvatar_worker=debug`).
    pub log_spans: bool,
    /// Threads serving the APIs and invocations; 0 means the number of cores. On small
    /// machines one thread avoids cross-core wake-ups and gives the lowest latency.
    pub threads: usize,
    /// The controller this worker registers with at start; none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerLink>,
    pub auth: AuthConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: "worker".into(),
            state_dir: PathBuf::from("/var/lib/iluvatar/worker"),
            grpc: ListenConfig { address: "127.0.0.1".into(), port: 8079 },
            http: HttpConfig { enabled: true, address: "127.0.0.1".into(), port: 8080 },
            limits: LimitsConfig::default(),
            invoker: InvokerConfig::default(),
            container_pool: PoolConfig::default(),
            isolation: IsolationConfig::default(),
            shutdown: ShutdownConfig::default(),
            log_level: "info".into(),
            log_spans: false,
            threads: 0,
            controller: None,
            auth: AuthConfig::default(),
        }
    }
}

/// Where the controller is, and how it should reach this worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerLink {
    /// The controller's gRPC address and port.
    pub address: String,
    pub port: u16,
    /// The host the controller should call this worker at; empty means `grpc.address`.
    pub advertise_host: String,
    /// Pause between registration attempts while the controller cannot be reached.
    pub retry_ms: u64,
    /// Once registered, the worker registers again every `heartbeat_ms` (the controller
    /// ignores a member registering again), so that a controller that lost its state
    /// learns the worker again; 0 registers once only.
    pub heartbeat_ms: u64,
}

impl Default for ControllerLink {
    fn default() -> Self {
        ControllerLink {
            address: "127.0.0.1".into(),
            port: 8089,
            advertise_host: String::new(),
            retry_ms: 1_000,
            heartbeat_ms: 5_000,
        }
    }
}

/// Bearer-token authentication (see `iluvatar_rpc::auth`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A file (mode 0600 or stricter) holding the token every gRPC call and HTTP request
    /// must carry (`authorization: Bearer <token>`); empty: no token is required.
    pub token_file: PathBuf,
    /// The file of the token sent to the controller (`register_worker`); empty: the token
    /// of `token_file`, if any.
    pub controller_token_file: PathBuf,
    /// Serve on non-loopback addresses without a token (refused otherwise).
    pub insecure: bool,
}

impl AuthConfig {
    /// `path`, unless empty.
    pub fn path(path: &Path) -> Option<&Path> {
        (!path.as_os_str().is_empty()).then_some(path)
    }
}

/// Bounds on what a registration may ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub min_memory_mb: u64,
    /// 0 means the container pool's size.
    pub max_memory_mb: u64,
    /// 0 means the number of cores.
    pub max_cpus: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { min_memory_mb: 5, max_memory_mb: 0, max_cpus: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvokerConfig {
    /// Invocations running at once; 0 means the number of cores.
    pub concurrency: usize,
    pub queue: QueueConfig,
    /// How long an invocation waits for memory to become free before it fails.
    pub memory_wait_ms: u64,
    /// An invocation running longer is failed and its container replaced.
    pub invocation_timeout_ms: u64,
    /// Results of async invocations kept until collected; more are refused.
    pub max_pending_async: usize,
    /// An async result not collected within this time is dropped.
    pub async_result_ttl_ms: u64,
    /// Invocations waiting in the queue at most; past it, an invocation fails at once with
    /// kind `queue_full`.
    pub max_queued: usize,
}

impl Default for InvokerConfig {
    fn default() -> Self {
        InvokerConfig {
            concurrency: 0,
            queue: QueueConfig::Fcfs,
            memory_wait_ms: 5_000,
            invocation_timeout_ms: 300_000,
            max_pending_async: 100_000,
            async_result_ttl_ms: 600_000,
            max_queued: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Memory all containers together may use.
    pub memory_mb: u64,
    pub keep_alive: KeepAliveConfig,
    pub eviction: EvictionConfig,
    /// How often expired idle containers are looked for.
    pub reap_interval_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            memory_mb: 4096,
            keep_alive: KeepAliveConfig::default(),
            eviction: EvictionConfig::Lru,
            reap_interval_ms: 1_000,
        }
    }
}

/// The isolation backends this worker offers; the first is the default for registrations
/// that do not name one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsolationConfig {
    pub backends: Vec<crate::isolation::BackendConfig>,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        use crate::isolation::BackendConfig;
        IsolationConfig {
            backends: vec![BackendConfig::Runtime(Default::default()), BackendConfig::Sim(Default::default())],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight invocations may finish after SIGINT/SIGTERM before they fail.
    pub grace_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace_ms: 10_000 }
    }
}

impl WorkerConfig {
    /// Loads the file (if any), applies the overrides, and checks the result.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut config: WorkerConfig = iluvatar_service::config::load(&WorkerConfig::default(), path, env, ENV_PREFIX)?;
        config.check()?;
        // A relative state_dir is taken from the current folder, once: container bundles and
        // mounts need absolute paths.
        config.state_dir = std::path::absolute(&config.state_dir).map_err(|e| {
            ConfigError::Invalid(format!("state_dir {}: cannot make it absolute: {e}", config.state_dir.display()))
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.isolation.backends.is_empty() {
            return Err(ConfigError::Invalid("isolation.backends must name at least one backend".into()));
        }
        if self.container_pool.memory_mb == 0 {
            return Err(ConfigError::Invalid("container_pool.memory_mb must be above 0".into()));
        }
        if self.container_pool.reap_interval_ms == 0 {
            return Err(ConfigError::Invalid("container_pool.reap_interval_ms must be above 0".into()));
        }
        Ok(())
    }

    pub fn cores() -> usize {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }

    pub fn concurrency(&self) -> usize {
        match self.invoker.concurrency {
            0 => Self::cores(),
            n => n,
        }
    }

    pub fn spec_limits(&self) -> iluvatar_core::SpecLimits {
        let max_memory_mb = match self.limits.max_memory_mb {
            0 => self.container_pool.memory_mb,
            n => n.min(self.container_pool.memory_mb),
        };
        let max_cpus = match self.limits.max_cpus {
            0 => Self::cores() as u32,
            n => n,
        };
        iluvatar_core::SpecLimits { min_memory_mb: self.limits.min_memory_mb, max_memory_mb, max_cpus }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("iluvatar-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_relative_state_dir_is_made_absolute_from_the_current_folder() {
        let c =
            WorkerConfig::load(None, [("ILUVATAR_WORKER__state_dir".to_string(), "rel/state".to_string())]).unwrap();
        assert_eq!(c.state_dir, std::env::current_dir().unwrap().join("rel/state"));
        let c =
            WorkerConfig::load(None, [("ILUVATAR_WORKER__state_dir".to_string(), "/abs/state".to_string())]).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/abs/state"));
    }

    #[test]
    fn defaults_when_no_file() {
        let c = WorkerConfig::load(None, vec![]).unwrap();
        assert_eq!(c, WorkerConfig::default());
        assert_eq!(c.grpc.port, 8079);
    }

    #[test]
    fn toml_and_json_files_are_read() {
        let t = write(
            "w.toml",
            "name = \"t\"\n[grpc]\naddress = \"127.0.0.1\"\nport = 9000\n[container_pool]\nmemory_mb = 512\n",
        );
        let c = WorkerConfig::load(Some(&t), vec![]).unwrap();
        assert_eq!((c.name.as_str(), c.grpc.port, c.container_pool.memory_mb), ("t", 9000, 512));
        assert_eq!(c.container_pool.reap_interval_ms, 1_000, "unset fields keep defaults");
        let j = write("w.json", r#"{"invoker": {"queue": {"type": "fcfs"}, "concurrency": 3}}"#);
        assert_eq!(WorkerConfig::load(Some(&j), vec![]).unwrap().concurrency(), 3);
    }

    #[test]
    fn unknown_fields_and_policies_are_refused_by_name() {
        let j = write("bad.json", r#"{"invoker": {"concurrensy": 3}}"#);
        let e = WorkerConfig::load(Some(&j), vec![]).unwrap_err().to_string();
        assert!(e.contains("concurrensy"), "{e}");
        let j = write("bad2.json", r#"{"container_pool": {"eviction": {"type": "lrux"}}}"#);
        let e = WorkerConfig::load(Some(&j), vec![]).unwrap_err().to_string();
        assert!(e.contains("lrux") && e.contains("gdsf"), "{e}");
    }

    #[test]
    fn environment_overrides_keep_field_types() {
        let env = vec![
            ("ILUVATAR_WORKER__name".to_string(), "123".to_string()),
            ("ILUVATAR_WORKER__grpc__port".to_string(), "9100".to_string()),
            ("ILUVATAR_WORKER__container_pool__keep_alive__ttl_ms".to_string(), "50".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = WorkerConfig::load(None, env).unwrap();
        assert_eq!(c.name, "123");
        assert_eq!(c.grpc.port, 9100);
        assert_eq!(c.container_pool.keep_alive, KeepAliveConfig::Fixed { ttl_ms: 50 });
        let e =
            WorkerConfig::load(None, vec![("ILUVATAR_WORKER__grpc__prt".into(), "1".into())]).unwrap_err().to_string();
        assert!(e.contains("prt"), "{e}");
    }

    #[test]
    fn the_auth_section_defaults_to_no_token_and_is_overridable() {
        let c = WorkerConfig::load(None, vec![]).unwrap();
        assert_eq!(c.auth, AuthConfig::default());
        assert_eq!(AuthConfig::path(&c.auth.token_file), None);
        let env = vec![
            ("ILUVATAR_WORKER__auth__token_file".to_string(), "/etc/iluvatar/token".to_string()),
            ("ILUVATAR_WORKER__auth__insecure".to_string(), "true".to_string()),
        ];
        let c = WorkerConfig::load(None, env).unwrap();
        assert_eq!(AuthConfig::path(&c.auth.token_file), Some(Path::new("/etc/iluvatar/token")));
        assert!(c.auth.insecure);
        let j = write("auth.json", r#"{"auth": {"token": "x"}}"#);
        let e = WorkerConfig::load(Some(&j), vec![]).unwrap_err().to_string();
        assert!(e.contains("token"), "{e}");
    }

    #[test]
    fn the_controller_link_is_optional_and_overridable() {
        assert_eq!(WorkerConfig::default().controller, None);
        let env = vec![("ILUVATAR_WORKER__controller__port".to_string(), "9089".to_string())];
        let link = WorkerConfig::load(None, env).unwrap().controller.unwrap();
        assert_eq!((link.address.as_str(), link.port, link.retry_ms), ("127.0.0.1", 9089, 1_000));
    }
}
