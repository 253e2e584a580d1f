//! Which idle containers go: eviction when memory is short, and keep-alive expiry.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// An idle container as a policy sees it.
#[derive(Debug, Clone)]
pub struct IdleContainer {
    pub id: u64,
    pub fqdn: Arc<str>,
    pub memory_mb: u64,
    pub last_used: Duration,
    pub uses: u64,
}

/// Chooses idle containers to remove so that `needed_mb` more memory becomes free.
pub trait EvictionPolicy: Send + Sync {
    /// Returns the ids to evict, or an empty list if evicting every candidate would not
    /// free enough (then nothing is evicted).
    fn choose_victims(&self, idle: &[IdleContainer], needed_mb: u64) -> Vec<u64>;
}

/// The eviction policy in config: `eviction = { type = "lru" }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvictionConfig {
    /// Least recently used first.
    #[default]
    Lru,
}

impl EvictionConfig {
    pub fn build(&self) -> Box<dyn EvictionPolicy> {
        match self {
            EvictionConfig::Lru => Box::new(Lru),
        }
    }
}

pub struct Lru;

impl EvictionPolicy for Lru {
    fn choose_victims(&self, idle: &[IdleContainer], needed_mb: u64) -> Vec<u64> {
        let mut by_age: Vec<&IdleContainer> = idle.iter().collect();
        by_age.sort_by_key(|c| (c.last_used, c.id));
        let mut freed = 0;
        let mut victims = Vec::new();
        for c in by_age {
            if freed >= needed_mb {
                break;
            }
            freed += c.memory_mb;
            victims.push(c.id);
        }
        if freed >= needed_mb { victims } else { Vec::new() }
    }
}

/// Decides when an idle container has been kept long enough.
pub trait KeepAlivePolicy: Send + Sync {
    fn expired(&self, c: &IdleContainer, now: Duration) -> bool;
}

/// The keep-alive policy in config: `keep_alive = { type = "fixed", ttl_ms = 600000 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeepAliveConfig {
    /// Remove a container idle for longer than `ttl_ms`.
    Fixed { ttl_ms: u64 },
}

impl Default for KeepAliveConfig {
    fn default() -> Self {
        KeepAliveConfig::Fixed { ttl_ms: 10 * 60 * 1000 }
    }
}

impl KeepAliveConfig {
    pub fn build(&self) -> Box<dyn KeepAlivePolicy> {
        match *self {
            KeepAliveConfig::Fixed { ttl_ms } => Box::new(FixedTtl(Duration::from_millis(ttl_ms))),
        }
    }
}

pub struct FixedTtl(pub Duration);

impl KeepAlivePolicy for FixedTtl {
    fn expired(&self, c: &IdleContainer, now: Duration) -> bool {
        now.saturating_sub(c.last_used) > self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(id: u64, mem: u64, last_ms: u64) -> IdleContainer {
        IdleContainer { id, fqdn: Arc::from("f-1"), memory_mb: mem, last_used: Duration::from_millis(last_ms), uses: 1 }
    }

    #[test]
    fn lru_takes_oldest_until_enough() {
        let pool = [idle(1, 100, 30), idle(2, 100, 10), idle(3, 100, 20)];
        assert_eq!(Lru.choose_victims(&pool, 150), vec![2, 3]);
        assert_eq!(Lru.choose_victims(&pool, 100), vec![2]);
    }

    #[test]
    fn lru_evicts_nothing_when_it_cannot_free_enough() {
        let pool = [idle(1, 100, 30), idle(2, 100, 10)];
        assert!(Lru.choose_victims(&pool, 300).is_empty());
    }

    #[test]
    fn fixed_ttl_expires_after_ttl() {
        let ka = KeepAliveConfig::Fixed { ttl_ms: 100 }.build();
        let c = idle(1, 10, 50);
        assert!(!ka.expired(&c, Duration::from_millis(150)));
        assert!(ka.expired(&c, Duration::from_millis(151)));
    }
}
