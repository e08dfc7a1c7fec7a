//! A bounded map from SHA-256 digests to small values that expire: the memory behind the
//! per-credential caches (remembered verifications, minted tokens).
//!
//! Why not moka, which the grants cache uses: its bookkeeping (node, timer wheel, access-order
//! deque) cost about 420 bytes per entry, more than the value it kept, and a cache of 100,000
//! credentials paid that twice. Here an entry is its key and value in the hash table itself,
//! plus one control byte. The policy is simpler to match: an entry whose time is up is dropped
//! when it is met — on a read, or in a sweep of its shard (at most once a second when the shard
//! is full, once a minute otherwise); a full shard with nothing expired drops an arbitrary entry
//! to make room, which, keys being digests, is a random one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A SHA-256 digest: the key of every entry.
pub type Digest = [u8; 32];

/// A value that knows when it stops being useful, and what it holds on the heap.
pub trait Expiring {
    /// True when the entry must not be served at `now` (Unix seconds).
    fn expired(&self, now: u64) -> bool;

    /// Bytes the value owns outside the table (allocator headers included).
    fn heap_bytes(&self) -> usize {
        0
    }
}

/// Shards: enough that two cores never queue on one lock.
const SHARDS: usize = 32;
/// A full shard sweeps out expired entries at most this often (seconds)…
const SWEEP_WHEN_FULL: u64 = 1;
/// …and any shard this often, so memory of a past burst is given back.
const SWEEP_ALWAYS: u64 = 60;

struct Shard<V> {
    entries: HashMap<Digest, V>,
    /// What the entries cost, by [`DigestMap::cost`].
    bytes: usize,
    swept_at: u64,
}

impl<V: Expiring> Shard<V> {
    fn remove(&mut self, key: &Digest) {
        if let Some(value) = self.entries.remove(key) {
            self.bytes -= DigestMap::cost(&value);
        }
    }

    fn sweep(&mut self, now: u64) {
        let mut freed = 0;
        self.entries.retain(|_, value| {
            let expired = value.expired(now);
            if expired {
                freed += DigestMap::cost(value);
            }
            !expired
        });
        self.bytes -= freed;
        self.swept_at = now;
    }

    fn has_room(&self, key: &Digest, cost: usize, limits: (usize, usize)) -> bool {
        self.entries.contains_key(key)
            || (self.entries.len() < limits.0 && self.bytes + cost <= limits.1)
    }
}

/// The map. Every operation takes one shard's lock for a few hashes' time.
pub struct DigestMap<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    /// Entries and bytes per shard.
    limits: (usize, usize),
}

impl<V: Expiring> DigestMap<V> {
    /// A map holding at most about `max_entries` entries costing at most about `max_bytes`.
    pub fn new(max_entries: u64, max_bytes: u64) -> Self {
        let per_shard = |total: u64| usize::try_from(total.div_ceil(SHARDS as u64).max(1));
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashMap::new(),
                    bytes: 0,
                    swept_at: 0,
                })
            })
            .collect();
        Self {
            shards,
            limits: (
                per_shard(max_entries).unwrap_or(usize::MAX),
                per_shard(max_bytes).unwrap_or(usize::MAX),
            ),
        }
    }

    /// What an entry costs: its slot in the table at a typical three-quarters load, and what
    /// the value owns on the heap.
    pub fn cost(value: &V) -> usize {
        (std::mem::size_of::<(Digest, V)>() + 1) * 4 / 3 + value.heap_bytes()
    }

    fn shard(&self, key: &Digest) -> MutexGuard<'_, Shard<V>> {
        // The digest's own bits spread the keys; a panic elsewhere never poisons the cache.
        self.shards[usize::from(key[31]) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls `read` with the entry of `key` unless it is missing or expired at `now` (an
    /// expired entry is dropped).
    pub fn read<R>(&self, key: &Digest, now: u64, read: impl FnOnce(&mut V) -> R) -> Option<R> {
        let mut shard = self.shard(key);
        let entry = shard.entries.get_mut(key)?;
        if entry.expired(now) {
            shard.remove(key);
            return None;
        }
        Some(read(entry))
    }

    /// Inserts or replaces the entry of `key`; returns how many live entries were dropped to
    /// make room.
    pub fn insert(&self, key: Digest, value: V, now: u64) -> usize {
        let cost = Self::cost(&value);
        let mut shard = self.shard(&key);
        let full = !shard.has_room(&key, cost, self.limits);
        let sweep_after = if full { SWEEP_WHEN_FULL } else { SWEEP_ALWAYS };
        if now >= shard.swept_at.saturating_add(sweep_after) {
            shard.sweep(now);
        }
        let mut dropped = 0;
        while !shard.has_room(&key, cost, self.limits) {
            let Some(victim) = shard.entries.keys().next().copied() else {
                break;
            };
            shard.remove(&victim);
            dropped += 1;
        }
        shard.remove(&key);
        shard.bytes += cost;
        shard.entries.insert(key, value);
        dropped
    }

    /// Drops every entry and gives their memory back.
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.entries = HashMap::new();
            shard.bytes = 0;
        }
    }

    /// How many entries are held (expired ones not yet met included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }

    /// What the held entries cost, by [`Self::cost`].
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }

    #[cfg(test)]
    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value that expires at a given second.
    struct Until(u64);

    impl Expiring for Until {
        fn expired(&self, now: u64) -> bool {
            now >= self.0
        }
    }

    fn key(i: u32) -> Digest {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_be_bytes());
        key[31] = i as u8;
        key
    }

    #[test]
    fn an_entry_is_served_until_it_expires_and_then_dropped() {
        let map = DigestMap::new(100, u64::MAX);
        map.insert(key(1), Until(1_000), 10);
        assert_eq!(map.read(&key(1), 999, |v| v.0), Some(1_000));
        assert_eq!(map.read(&key(1), 1_000, |v| v.0), None);
        assert!(map.is_empty(), "the expired entry was dropped when met");
    }

    #[test]
    fn the_map_never_holds_more_than_its_capacity_and_drops_expired_entries_first() {
        let map = DigestMap::new(SHARDS as u64 * 4, u64::MAX);
        // Fill every shard with entries that expire at 50, then add live ones at 60.
        for i in 0..(SHARDS * 4) as u32 {
            map.insert(key(i), Until(50), 10);
        }
        let mut dropped_live = 0;
        for i in 1_000..1_000 + (SHARDS * 4) as u32 {
            dropped_live += map.insert(key(i), Until(500), 60);
        }
        assert_eq!(dropped_live, 0, "expired entries made the room");
        assert_eq!(map.len(), SHARDS * 4);
        // Nothing expired now: more inserts drop live entries, and the bound holds.
        for i in 5_000..5_000 + (SHARDS * 8) as u32 {
            map.insert(key(i), Until(500), 61);
        }
        assert_eq!(map.len(), SHARDS * 4);
    }

    /// A value owning `.0` bytes.
    struct Owning(usize);

    impl Expiring for Owning {
        fn expired(&self, _now: u64) -> bool {
            false
        }

        fn heap_bytes(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn the_map_stays_within_its_bytes_whatever_the_values_own() {
        let map = DigestMap::new(u64::MAX, 100_000);
        for i in 0..1_000 {
            map.insert(key(i), Owning(1_000), 0);
        }
        let held = map.bytes();
        assert!(held <= 100_000, "{held} bytes held");
        assert!(map.len() >= 64, "{} entries held", map.len());
        assert_eq!(held, map.len() * DigestMap::cost(&Owning(1_000)));
    }

    #[test]
    fn clear_empties_every_shard() {
        let map = DigestMap::new(1_000, u64::MAX);
        for i in 0..500 {
            map.insert(key(i), Until(u64::MAX), 0);
        }
        assert_eq!(map.len(), 500);
        map.clear();
        assert!(map.is_empty());
        assert_eq!(map.read(&key(7), 0, |_| ()), None);
    }
}
