//! The shape shared by the store's two weighted caches (loaded documents in [`super::cache`],
//! their materialised JSON in [`super::json_cache`]): a `quick_cache` split into shards by key
//! hash, each shard evicting in place, under its own lock, on the insert that overflows it.
//!
//! Both were moka caches before. moka queues every insert on a bounded channel that one thread at
//! a time drains into its eviction policy; once the channel is full, each inserting thread sleeps
//! and retries until that drain is done. On two cores with 32 concurrent queries filling the JSON
//! cache, a draining thread preempted mid-drain stalled every other one: with the 64 MiB JSON
//! cache, range queries over 1,000,000 documents had a p99 four times their p50, against twice
//! without any cache, and the bulk load ran 28% slower (`benches/query_load.rs`, BENCHMARKS.md).
//! quick_cache's policy (S3-FIFO) also suits both caches: a new entry starts in a probationary
//! queue and is promoted only when read again, so a query's page of documents read once does not
//! push out what `GET`s read again and again.

use quick_cache::sync::DefaultLifecycle;
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};

pub type Sharded<K, V, W> =
    quick_cache::sync::Cache<K, V, W, DefaultHashBuilder, DefaultLifecycle<K, V>>;

/// Shards per core: enough that threads rarely meet on one shard's lock.
const SHARDS_PER_CORE: u64 = 4;

/// A cache holding at most `max_bytes` by `weighter`'s measure, that can hold an entry of
/// `largest_entry` bytes: a shard refuses an entry above ~97% of its share (its hot queue's
/// target), so there are never more shards than `max_bytes / largest_entry`, however many
/// cores. `typical_entry` sizes the memory of recently evicted keys (a key seen again soon after
/// its eviction is admitted straight to the hot queue).
pub fn new<K, V, W>(
    max_bytes: u64,
    largest_entry: u64,
    typical_entry: u64,
    weighter: W,
) -> Sharded<K, V, W>
where
    K: Eq + std::hash::Hash,
    V: Clone,
    W: Weighter<K, V> + Clone,
{
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let shards = (cores * SHARDS_PER_CORE)
        .min(max_bytes / largest_entry.max(1))
        .max(1);
    // quick_cache rounds a shard count up to a power of two; round down so none is too small.
    let shards = 1u64 << shards.ilog2();
    let mut options = OptionsBuilder::new();
    options
        .shards(shards as usize)
        .weight_capacity(max_bytes)
        .estimated_items_capacity((max_bytes / typical_entry.max(1)).max(1) as usize);
    match options.build() {
        Ok(options) => Sharded::with_options(
            options,
            weighter,
            DefaultHashBuilder::default(),
            DefaultLifecycle::default(),
        ),
        // Only an unset capacity fails, and both are set above.
        Err(_) => Sharded::with_weighter(
            (max_bytes / typical_entry.max(1)).max(1) as usize,
            max_bytes,
            weighter,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Len;

    impl Weighter<u64, Vec<u8>> for Len {
        fn weight(&self, _k: &u64, v: &Vec<u8>) -> u64 {
            v.len() as u64
        }
    }

    #[test]
    fn holds_an_entry_as_large_as_promised() {
        let cache = new(256 << 20, 64 << 20, 8 << 10, Len);
        assert!(cache.num_shards() <= 4, "{} shards", cache.num_shards());
        cache.insert(1, vec![0; 60 << 20]);
        assert!(
            cache.get(&1).is_some(),
            "a 60 MiB entry fits a 64 MiB shard"
        );
    }

    #[test]
    fn never_holds_more_than_its_bound() {
        let cache = new(1 << 20, 4 << 10, 100, Len);
        for i in 0..10_000u64 {
            cache.insert(i, vec![0; 100 + (i % 300) as usize]);
            assert!(cache.weight() <= 1 << 20, "{} bytes held", cache.weight());
        }
        assert!(
            cache.len() > 2_000,
            "the cache fills up: {} entries",
            cache.len()
        );
    }
}
