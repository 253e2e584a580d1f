//! The one registration point of isolation backends: the config enum that names them
//! (`[[isolation.backends]] type = "..."`), its factory, and the set a worker offers.
//!
//! Adding a backend: a module implementing [`IsolationBackend`] whose config type
//! implements [`BackendFactory`], its name and bit in `iluvatar_rpc::isolation::BACKENDS`,
//! and one line in the `backends!` list below (variant, config type, bit; the variant's
//! snake-case name must be the table's name, which a test checks).

use super::{BackendContext, BackendFactory, IsolationBackend, IsolationError, runtime, sim};
use iluvatar_rpc::isolation as bits;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Writes the config enum (one variant per backend, its `type` the variant's snake-case
/// name) and the dispatch of `build` to each config's factory.
macro_rules! backends {
    ($($(#[$doc:meta])* $variant:ident($config:ty) = $flag:expr,)*) => {
        /// A backend in config: `[[isolation.backends]] type = "sim"`.
        // Read once at start: the size of its largest variant does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        pub enum BackendConfig {
            $($(#[$doc])* $variant($config),)*
        }

        impl BackendConfig {
            pub fn build(&self, ctx: &BackendContext) -> Result<Arc<dyn IsolationBackend>, IsolationError> {
                match self {
                    $(BackendConfig::$variant(c) => c.build(ctx),)*
                }
            }

            /// Whether this process can run the backend ([`BackendFactory::check_host`]).
            pub fn check_host(&self) -> Result<(), IsolationError> {
                match self {
                    $(BackendConfig::$variant(c) => c.check_host(),)*
                }
            }

            /// The bit of the backend this config builds.
            pub fn flag(&self) -> u32 {
                match self {
                    $(BackendConfig::$variant(_) => $flag,)*
                }
            }

            /// Every backend, with its default config.
            pub fn every_default() -> Vec<BackendConfig> {
                vec![$(BackendConfig::$variant(<$config>::default()),)*]
            }
        }
    };
}

backends! {
    /// Real containers through the embedded OCI runtime (libcontainer).
    Runtime(runtime::RuntimeConfig) = bits::RUNTIME,
    Sim(sim::SimConfig) = bits::SIM,
}

/// The backends a worker offers, the first being the default.
#[derive(Clone)]
pub struct Backends(Vec<Arc<dyn IsolationBackend>>);

/// Why a registration's `isolate` bits name no backend of this worker.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChooseError {
    #[error("isolate {isolate:#x} has unknown bits; known: {}", known())]
    UnknownBits { isolate: u32 },
    #[error("isolation {asked} is not offered by this worker (it offers: {offered})")]
    NotOffered { asked: String, offered: String },
}

/// `runtime=16, sim=32`: the backends this implementation has, with their bits.
fn known() -> String {
    bits::BACKENDS.iter().map(|(n, f)| format!("{n}={f}")).collect::<Vec<_>>().join(", ")
}

impl Backends {
    pub fn build(configs: &[BackendConfig], ctx: &BackendContext) -> Result<Self, IsolationError> {
        configs.iter().map(|c| c.build(ctx)).collect::<Result<Vec<_>, _>>().map(Backends)
    }

    pub fn get(&self, flag: u32) -> Option<&Arc<dyn IsolationBackend>> {
        self.0.iter().find(|b| b.flag() == flag)
    }

    pub fn all(&self) -> &[Arc<dyn IsolationBackend>] {
        &self.0
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|b| b.name()).collect()
    }

    /// Picks the backend for a registration's `isolate` bits: 0 means the default; with
    /// several bits, the first offered backend among them.
    pub fn choose(&self, isolate: u32) -> Result<&Arc<dyn IsolationBackend>, ChooseError> {
        if isolate == 0 {
            return Ok(&self.0[0]);
        }
        if isolate & !bits::defined_bits() != 0 {
            return Err(ChooseError::UnknownBits { isolate });
        }
        self.0.iter().find(|b| isolate & b.flag() != 0).ok_or_else(|| {
            let asked: Vec<String> =
                (0..u32::BITS).map(|i| 1 << i).filter(|f| isolate & f != 0).map(bits::name).collect();
            ChooseError::NotOffered { asked: asked.join("|"), offered: self.names().join(", ") }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iluvatar_core::Env;

    fn sim_only() -> Backends {
        let ctx = BackendContext {
            env: Env::new(Arc::new(iluvatar_core::env::ManualClock::default()), 1),
            state_dir: "/nonexistent".into(),
            beyond_loopback: false,
        };
        Backends::build(&[BackendConfig::Sim(Default::default())], &ctx).unwrap()
    }

    #[test]
    fn choose_names_only_real_backends() {
        let b = sim_only();
        assert_eq!(b.choose(0).unwrap().name(), "sim");
        assert_eq!(b.choose(bits::SIM | bits::RUNTIME).unwrap().name(), "sim");
        let e = b.choose(64).map(|_| ()).unwrap_err().to_string();
        assert_eq!(e, "isolate 0x40 has unknown bits; known: runtime=16, sim=32");
        let e = b.choose(bits::CONTAINERD).map(|_| ()).unwrap_err().to_string();
        assert_eq!(e, "isolation containerd is not offered by this worker (it offers: sim)");
        let e = b.choose(bits::RUNTIME | bits::DOCKER).map(|_| ()).unwrap_err().to_string();
        assert_eq!(e, "isolation docker|runtime is not offered by this worker (it offers: sim)");
    }

    #[test]
    fn every_config_type_is_its_name_in_the_rpc_table() {
        let all = BackendConfig::every_default();
        assert_eq!(all.len(), bits::BACKENDS.len(), "every backend in the table is registered here");
        for config in all {
            let written = serde_json::to_value(&config).unwrap();
            assert_eq!(written["type"].as_str(), bits::backend_name(config.flag()), "{written}");
        }
        let b = sim_only();
        assert_eq!(b.all()[0].name(), "sim");
        assert_eq!(b.all()[0].flag(), BackendConfig::Sim(Default::default()).flag());
    }
}
