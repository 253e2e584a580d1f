//! Policies, each behind a trait and chosen in config by a `#[serde(tag = "type")]` enum
//! that builds it. A misspelt name fails when the config loads, listing the valid names.

pub mod balance;
pub mod eviction;
pub mod queue;

pub use balance::{Balancer, BalancerConfig, ClusterView, FixedCluster, Totals, WorkerView};
pub use eviction::{EvictionConfig, EvictionPolicy, IdleContainer, KeepAliveConfig, KeepAlivePolicy};
pub use queue::{QueueConfig, QueueItem, QueuePolicy};
