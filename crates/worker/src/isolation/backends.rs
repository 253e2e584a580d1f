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
use std::sync::atomic::{AtomicU32, Ordering};

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
pub struct Backends(Vec<Arc<dyn IsolationBackend>>, Arc<AtomicU32>);

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
        let built = configs.iter().map(|c| c.build(ctx)).collect::<Result<Vec<_>, _>>()?;
        Ok(Backends(built, Default::default()))
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
    /// several bits, the first offered backend among them. Bits that name only backends
    /// this implementation does not have (the reference platform's containerd and docker)
    /// are served by the first backend that runs OCI images, else the default, and the log
    /// says so once per bit.
    pub fn choose(&self, isolate: u32) -> Result<&Arc<dyn IsolationBackend>, ChooseError> {
        if isolate == 0 {
            return Ok(&self.0[0]);
        }
        if isolate & !bits::defined_bits() != 0 {
            return Err(ChooseError::UnknownBits { isolate });
        }
        let asked = |bits: u32| -> Vec<String> {
            (0..u32::BITS).map(|i| 1 << i).filter(|f| bits & f != 0).map(bits::name).collect()
        };
        if let Some(b) = self.0.iter().find(|b| isolate & b.flag() != 0) {
            return Ok(b);
        }
        let ours = bits::BACKENDS.iter().fold(0, |acc, (_, f)| acc | f);
        if isolate & ours != 0 {
            return Err(ChooseError::NotOffered { asked: asked(isolate).join("|"), offered: self.names().join(", ") });
        }
        let b = self.0.iter().find(|b| b.runs_images()).unwrap_or(&self.0[0]);
        if self.1.fetch_or(isolate, Ordering::Relaxed) & isolate != isolate {
            let names = asked(isolate).join("|");
            tracing::info!(
                asked = names,
                served_by = b.name(),
                "registrations asking for isolation {names} (a backend of the reference platform this worker does \
                 not have) are served by the {} backend",
                b.name()
            );
        }
        Ok(b)
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
        // The reference platform's names are never refused: without a backend that runs
        // images, the default serves them.
        assert_eq!(b.choose(bits::CONTAINERD).unwrap().name(), "sim");
        assert_eq!(b.choose(bits::DOCKER | bits::CONTAINERD).unwrap().name(), "sim");
        let e = b.choose(bits::RUNTIME).map(|_| ()).unwrap_err().to_string();
        assert_eq!(e, "isolation runtime is not offered by this worker (it offers: sim)");
        let e = b.choose(bits::RUNTIME | bits::DOCKER).map(|_| ()).unwrap_err().to_string();
        assert_eq!(e, "isolation docker|runtime is not offered by this worker (it offers: sim)");
    }

    /// A backend that runs images, in name only.
    struct Oci;

    impl IsolationBackend for Oci {
        fn flag(&self) -> u32 {
            bits::RUNTIME
        }
        fn runs_images(&self) -> bool {
            true
        }
        fn check_reference(&self, _: &iluvatar_core::FunctionSpec) -> Result<(), IsolationError> {
            Ok(())
        }
        fn create<'a>(
            &'a self,
            _: crate::isolation::CreateRequest<'a>,
        ) -> crate::isolation::BoxFuture<'a, Result<Box<dyn crate::isolation::Container>, IsolationError>> {
            Box::pin(async { Err(IsolationError::Config("no containers here".into())) })
        }
        fn remove<'a>(
            &'a self,
            _: Box<dyn crate::isolation::Container>,
        ) -> crate::isolation::BoxFuture<'a, Result<(), IsolationError>> {
            Box::pin(async { Ok(()) })
        }
        fn clean_leftovers(&self) -> crate::isolation::BoxFuture<'_, Result<usize, IsolationError>> {
            Box::pin(async { Ok(0) })
        }
    }

    #[test]
    fn the_reference_platforms_names_go_to_a_backend_that_runs_images() {
        let sim = sim_only().0.remove(0);
        let b = Backends(vec![sim, Arc::new(Oci)], Default::default());
        assert_eq!(b.choose(0).unwrap().name(), "sim", "the default stays the default");
        assert_eq!(b.choose(bits::CONTAINERD).unwrap().name(), "runtime");
        assert_eq!(b.choose(bits::DOCKER).unwrap().name(), "runtime");
        assert_eq!(b.choose(bits::CONTAINERD | bits::SIM).unwrap().name(), "sim", "a backend of ours named wins");
        assert_eq!(b.1.load(Ordering::Relaxed), bits::CONTAINERD | bits::DOCKER, "each said once");
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
