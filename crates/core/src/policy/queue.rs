//! Queueing policies: which waiting invocation runs next.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// A waiting invocation as a policy sees it. The fields are what SJF (estimated duration),
/// EEDF (arrival plus estimate as a deadline) and fair queueing (the function) need.
pub struct QueueItem<T> {
    pub fqdn: Arc<str>,
    pub arrival: Duration,
    pub est_duration: Duration,
    pub payload: T,
}

/// Orders waiting invocations. `pop` returns the one to dispatch next.
pub trait QueuePolicy<T>: Send {
    fn push(&mut self, item: QueueItem<T>);
    fn pop(&mut self) -> Option<QueueItem<T>>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Removes every waiting item (shutdown).
    fn drain(&mut self) -> Vec<QueueItem<T>> {
        std::iter::from_fn(|| self.pop()).collect()
    }
}

/// The queue policy in config: `queue = { type = "fcfs" }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum QueueConfig {
    /// First come, first served.
    #[default]
    Fcfs,
}

impl QueueConfig {
    pub fn build<T: Send + 'static>(&self) -> Box<dyn QueuePolicy<T>> {
        match self {
            QueueConfig::Fcfs => Box::new(Fcfs(VecDeque::new())),
        }
    }
}

/// First come, first served.
pub struct Fcfs<T>(VecDeque<QueueItem<T>>);

impl<T: Send> QueuePolicy<T> for Fcfs<T> {
    fn push(&mut self, item: QueueItem<T>) {
        self.0.push_back(item);
    }
    fn pop(&mut self) -> Option<QueueItem<T>> {
        self.0.pop_front()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u32, at_ms: u64) -> QueueItem<u32> {
        QueueItem {
            fqdn: Arc::from("f-1"),
            arrival: Duration::from_millis(at_ms),
            est_duration: Duration::from_millis(100 - at_ms),
            payload: n,
        }
    }

    #[test]
    fn fcfs_pops_in_arrival_order() {
        let mut q = QueueConfig::Fcfs.build::<u32>();
        for (n, at) in [(1, 0), (2, 5), (3, 9)] {
            q.push(item(n, at));
        }
        assert_eq!(q.len(), 3);
        let order: Vec<u32> = q.drain().into_iter().map(|i| i.payload).collect();
        assert_eq!(order, vec![1, 2, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn unknown_policy_name_lists_valid_ones() {
        let err = serde_json::from_str::<QueueConfig>(r#"{"type": "fcsf"}"#).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("fcsf") && msg.contains("fcfs"), "{msg}");
    }
}
