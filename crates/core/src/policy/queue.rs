//! Queueing policies: which waiting invocation runs next.
//!
//! Every policy breaks ties by the order items were pushed (first pushed, first out), so
//! that runs under virtual time, where many arrivals share an instant, are deterministic.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// A waiting invocation as a policy sees it: what SJF (the estimated duration), EEDF
/// (arrival plus estimate as a deadline), IAT (the function's inter-arrival time), cold
/// priority (whether it will likely start a container) and fair queueing (the function)
/// need.
pub struct QueueItem<T> {
    pub fqdn: Arc<str>,
    pub arrival: Duration,
    /// Its expected execution: learnt from the function's past invocations (warm if an
    /// idle container waited when it was queued, else cold), else its registration's timings.
    pub est_duration: Duration,
    /// No idle container of the function waited when it was queued: it will likely be a
    /// cold start.
    pub cold: bool,
    /// The function's smoothed inter-arrival time; `None` until it has arrived twice.
    pub iat: Option<Duration>,
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
    /// Shortest expected (execution) first: the smallest `est_duration`.
    Sjf,
    /// Earliest expected deadline first: the smallest arrival + `est_duration`, so a long
    /// call that has waited long enough goes before a short one that just came.
    Eedf,
    /// Shortest inter-arrival time first: the function invoked most often goes first
    /// (its containers are the likeliest to be warm and to be needed again soon); a
    /// function not seen twice yet goes after every known one.
    Iat,
    /// Cold starts first. A cold start's latency is mostly the container's start, and
    /// starting it earlier takes its queue wait off that latency; the container it makes
    /// then serves its function's next calls warm. Warm calls are short, so they lose
    /// little by waiting. Among cold (and among warm) items, arrival order.
    ColdPriority,
    /// Per-function fair queueing: functions with waiting items take turns, one item each,
    /// in the order they first queued; within a function, arrival order. A burst of one
    /// function cannot hold the others back.
    Fair,
}

impl QueueConfig {
    pub fn build<T: Send + 'static>(&self) -> Box<dyn QueuePolicy<T>> {
        match self {
            QueueConfig::Fcfs => Box::new(Fcfs(VecDeque::new())),
            QueueConfig::Sjf => Box::new(Keyed::new(|i: &QueueItem<T>| i.est_duration)),
            QueueConfig::Eedf => Box::new(Keyed::new(|i: &QueueItem<T>| i.arrival + i.est_duration)),
            QueueConfig::Iat => Box::new(Keyed::new(|i: &QueueItem<T>| i.iat.unwrap_or(Duration::MAX))),
            QueueConfig::ColdPriority => Box::new(Keyed::new(|i: &QueueItem<T>| (!i.cold, i.arrival))),
            QueueConfig::Fair => Box::new(Fair::default()),
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

/// The smallest key first, ties in push order: SJF, EEDF, IAT and cold priority are this
/// with another key. A binary heap: O(log n) a push or pop.
pub struct Keyed<K, T> {
    key: fn(&QueueItem<T>) -> K,
    heap: BinaryHeap<Entry<K, T>>,
    pushed: u64,
}

impl<K: Ord, T> Keyed<K, T> {
    pub fn new(key: fn(&QueueItem<T>) -> K) -> Self {
        Keyed { key, heap: BinaryHeap::new(), pushed: 0 }
    }
}

struct Entry<K, T> {
    key: K,
    seq: u64,
    item: QueueItem<T>,
}

impl<K: Ord, T> Ord for Entry<K, T> {
    /// Reversed: `BinaryHeap` pops its greatest, and the smallest (key, seq) must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        (&other.key, other.seq).cmp(&(&self.key, self.seq))
    }
}

impl<K: Ord, T> PartialOrd for Entry<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord, T> PartialEq for Entry<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K: Ord, T> Eq for Entry<K, T> {}

impl<K: Ord + Send, T: Send> QueuePolicy<T> for Keyed<K, T> {
    fn push(&mut self, item: QueueItem<T>) {
        let key = (self.key)(&item);
        self.heap.push(Entry { key, seq: self.pushed, item });
        self.pushed += 1;
    }
    fn pop(&mut self) -> Option<QueueItem<T>> {
        self.heap.pop().map(|e| e.item)
    }
    fn len(&self) -> usize {
        self.heap.len()
    }
}

/// Per-function FIFOs served in turn.
pub struct Fair<T> {
    waiting: HashMap<Arc<str>, VecDeque<QueueItem<T>>>,
    /// The functions with waiting items, the next to serve first.
    turns: VecDeque<Arc<str>>,
    len: usize,
}

impl<T> Default for Fair<T> {
    fn default() -> Self {
        Fair { waiting: HashMap::new(), turns: VecDeque::new(), len: 0 }
    }
}

impl<T: Send> QueuePolicy<T> for Fair<T> {
    fn push(&mut self, item: QueueItem<T>) {
        let q = self.waiting.entry(item.fqdn.clone()).or_default();
        if q.is_empty() {
            self.turns.push_back(item.fqdn.clone());
        }
        q.push_back(item);
        self.len += 1;
    }
    fn pop(&mut self) -> Option<QueueItem<T>> {
        let f = self.turns.pop_front()?;
        let q = self.waiting.get_mut(&f)?;
        let item = q.pop_front();
        if q.is_empty() {
            self.waiting.remove(&f);
        } else {
            self.turns.push_back(f);
        }
        self.len -= 1;
        item
    }
    fn len(&self) -> usize {
        self.len
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
            cold: false,
            iat: None,
            payload: n,
        }
    }

    /// payload, fqdn, arrival ms, estimate ms, cold, iat ms.
    type Spec<'a> = (u32, &'a str, u64, u64, bool, Option<u64>);

    /// Pushes `items` and pops them all.
    fn order(config: QueueConfig, items: &[Spec]) -> Vec<u32> {
        let mut q = config.build::<u32>();
        for &(n, f, at, est, cold, iat) in items {
            q.push(QueueItem {
                fqdn: Arc::from(f),
                arrival: Duration::from_millis(at),
                est_duration: Duration::from_millis(est),
                cold,
                iat: iat.map(Duration::from_millis),
                payload: n,
            });
        }
        std::iter::from_fn(|| q.pop()).map(|i| i.payload).collect()
    }

    #[test]
    fn sjf_takes_the_shortest_estimate_first_and_ties_in_push_order() {
        let items = [(1, "a", 0, 300, false, None), (2, "b", 1, 10, false, None), (3, "c", 2, 10, false, None)];
        assert_eq!(order(QueueConfig::Sjf, &items), vec![2, 3, 1]);
    }

    #[test]
    fn eedf_takes_the_earliest_arrival_plus_estimate_first() {
        // Deadlines 300, 1010, 60: the long call that came first beats the short late one.
        let items = [(1, "a", 0, 300, false, None), (2, "b", 1000, 10, false, None), (3, "c", 50, 10, false, None)];
        assert_eq!(order(QueueConfig::Eedf, &items), vec![3, 1, 2]);
    }

    #[test]
    fn iat_takes_the_most_frequent_function_first_and_unknown_last() {
        let items = [(1, "a", 0, 1, false, None), (2, "b", 1, 1, false, Some(500)), (3, "c", 2, 1, false, Some(20))];
        assert_eq!(order(QueueConfig::Iat, &items), vec![3, 2, 1]);
    }

    #[test]
    fn cold_priority_takes_cold_starts_first_then_arrival_order() {
        let items = [(1, "a", 0, 1, false, None), (2, "b", 1, 1, true, None), (3, "c", 2, 1, false, None)];
        let items = [items[0], items[1], items[2], (4, "d", 3, 1, true, None)];
        assert_eq!(order(QueueConfig::ColdPriority, &items), vec![2, 4, 1, 3]);
    }

    #[test]
    fn fair_serves_functions_in_turn() {
        // A burst of a, then one b and one c: b and c do not wait for the whole burst.
        let mut items: Vec<_> = (1..=4).map(|n| (n, "a", n as u64, 1, false, None)).collect();
        items.push((5, "b", 5, 1, false, None));
        items.push((6, "c", 6, 1, false, None));
        assert_eq!(order(QueueConfig::Fair, &items), vec![1, 5, 6, 2, 3, 4]);
    }

    #[test]
    fn equal_keys_pop_in_push_order_for_every_policy() {
        let same: Vec<_> = (1..=6).map(|n| (n, "f", 7, 7, true, Some(7))).collect();
        for config in [
            QueueConfig::Fcfs,
            QueueConfig::Sjf,
            QueueConfig::Eedf,
            QueueConfig::Iat,
            QueueConfig::ColdPriority,
            QueueConfig::Fair,
        ] {
            assert_eq!(order(config.clone(), &same), vec![1, 2, 3, 4, 5, 6], "{config:?}");
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
