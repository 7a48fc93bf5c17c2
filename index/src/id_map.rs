//! The writer's map of one segment's event ids to their positions, in memory until the
//! segment is sealed and its id file written (see [`crate::ids`]).
//!
//! Built for the append path, where every event's id is looked up (is it stored already?)
//! and then inserted, at random places of a table of up to millions of ids: each look-up is a
//! miss of the processor's caches. The map is split so that those misses can overlap:
//!
//! - `entries`: the ids and their positions, in the order they were inserted (one write at
//!   the end, no miss);
//! - `slots`: an open-addressing table (linear probing, at most 60% full) of 8-byte slots,
//!   eight to a cache line, each holding 24 bits of the id's hash and the index of its entry.
//!   Its size is not rounded to a power of two (the low 32 bits of the hash are scaled to it),
//!   so that a segment's table is about the size of a hash map's.
//!
//! The caller hashes a whole batch of ids first ([`IdMap::hash`]) and touches their slots
//! ([`IdMap::touch`]), so that the misses of a hundred ids are in flight together; the
//! look-ups and inserts that follow ([`IdMap::get_hashed`], [`IdMap::insert_hashed`]) find
//! their cache lines loaded. A slot's hash bits settle most non-matching probes without
//! reading the entry; an entry is read only to confirm a match.
//!
//! ```
//! use orchestrix_index::ids::IdMap;
//!
//! let mut m = IdMap::default();
//! let (a, b) = ([1u8; 16], [2u8; 16]);
//! let h = m.hash(&a);
//! m.touch(h);
//! assert_eq!(m.get_hashed(h, &a), None);
//! m.insert_hashed(h, a, 7);
//! m.insert(b, 8);
//! assert_eq!(m.get(&a), Some(7));
//! assert_eq!(m.get(&b), Some(8));
//! assert_eq!(m.len(), 2);
//! ```

use std::hash::BuildHasher;

/// Fewest slots of a table that holds anything.
const SLOTS_MIN: usize = 16;
/// Bits of a slot holding its entry's index + 1 (0: the slot is empty).
const INDEX_BITS: u32 = 40;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// The most slots a table has (a home is the hash's low 32 bits scaled to the table).
const SLOTS_MAX: usize = 1 << 32;
/// The most entries a map holds (60% of the most slots).
const ENTRIES_MAX: usize = SLOTS_MAX / 5 * 3;
/// Load: a table is grown before more than `LOAD_NUM / LOAD_DEN` of its slots are used.
const LOAD_NUM: usize = 3;
const LOAD_DEN: usize = 5;

/// Ids of one segment, as the writer collects them: id -> position.
#[derive(Clone, Default)]
pub struct IdMap {
    entries: Vec<([u8; 16], u64)>,
    /// Empty, or at least [`SLOTS_MIN`] slots, at most 60% of them used.
    slots: Vec<u64>,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for IdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdMap")
            .field("len", &self.entries.len())
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl IdMap {
    /// An empty map hashing as `self` does (so that hashes made by one serve the other).
    pub fn empty_like(&self) -> IdMap {
        IdMap {
            entries: Vec::new(),
            slots: Vec::new(),
            hasher: self.hasher.clone(),
        }
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map holds no id.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many ids the map holds without growing its table.
    pub fn capacity(&self) -> usize {
        self.slots.len() * LOAD_NUM / LOAD_DEN
    }

    /// Removes every id, keeping the room made.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.slots.fill(0);
    }

    /// Makes room for `additional` more ids, so that inserting them does not grow the table
    /// (each growth re-places every id).
    ///
    /// The table's memory is written now (see [`IdMap::reserve_lazily`] for the difference).
    pub fn reserve(&mut self, additional: usize) {
        self.make_room(additional, Table::Written);
    }

    /// Makes room like [`IdMap::reserve`], but leaves the table's memory untouched: its pages
    /// become resident as ids land in them, so that a map that stays small costs little
    /// memory. The price is paid if it fills: a probe that reads a page before any insert has
    /// written it maps the kernel's shared zero page, and the insert then takes a
    /// copy-on-write fault whose TLB flush interrupts every other CPU running the process.
    pub fn reserve_lazily(&mut self, additional: usize) {
        self.make_room(additional, Table::Lazy);
    }

    fn make_room(&mut self, additional: usize, table: Table) {
        let want = self.entries.len().saturating_add(additional);
        self.entries.reserve(additional);
        let slots = slots_for(want);
        if slots > self.slots.len() {
            self.rebuild(slots, table);
        }
    }

    /// The hash of `id` in this map (and in maps made by [`IdMap::empty_like`] from it).
    #[inline]
    pub fn hash(&self, id: &[u8; 16]) -> u64 {
        self.hasher.hash_one(id)
    }

    /// Loads the cache line of the first slot `hash` probes, without waiting for it: touching
    /// the slots of many ids before looking them up lets their cache misses overlap.
    #[inline]
    pub fn touch(&self, hash: u64) {
        if let Some(s) = self.slots.get(self.home(hash)) {
            prefetch(s);
        }
    }

    /// The position of `id`.
    pub fn get(&self, id: &[u8; 16]) -> Option<u64> {
        self.get_hashed(self.hash(id), id)
    }

    /// The position of `id`, whose [`IdMap::hash`] is `hash`.
    #[inline]
    pub fn get_hashed(&self, hash: u64, id: &[u8; 16]) -> Option<u64> {
        self.find(hash, id).map(|(_, e)| self.entries[e].1)
    }

    /// Sets the position of `id` (replacing its old one if it is there).
    pub fn insert(&mut self, id: [u8; 16], position: u64) {
        self.insert_hashed(self.hash(&id), id, position);
    }

    /// Sets the position of `id`, whose [`IdMap::hash`] is `hash`.
    #[inline]
    pub fn insert_hashed(&mut self, hash: u64, id: [u8; 16], position: u64) {
        if let Some((_, e)) = self.find(hash, &id) {
            self.entries[e].1 = position;
            return;
        }
        assert!(
            self.entries.len() < ENTRIES_MAX,
            "more than {ENTRIES_MAX} ids in one segment"
        );
        if (self.entries.len() + 1) * LOAD_DEN > self.slots.len() * LOAD_NUM {
            // Growing: the ids placed again touch most of the table anyway.
            self.rebuild(slots_for(2 * self.entries.len() + 1), Table::Written);
        }
        self.entries.push((id, position));
        let index = self.entries.len() as u64;
        self.place(hash, index);
    }

    /// Every id with its position, in the order they were first inserted.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8; 16], u64)> + '_ {
        self.entries.iter().map(|(id, p)| (id, *p))
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // The low 32 bits, scaled to the table, pick the slot; the high ones are the tag
        // (independent bits). Below `slots.len()` (at most 2^32): the product's top half.
        (((hash & 0xffff_ffff) * self.slots.len() as u64) >> 32) as usize
    }

    /// The slot and entry index of `id`, if it is in the map.
    #[inline]
    fn find(&self, hash: u64, id: &[u8; 16]) -> Option<(usize, usize)> {
        if self.slots.is_empty() {
            return None;
        }
        let len = self.slots.len();
        let tag = tag_of(hash);
        let mut i = self.home(hash);
        loop {
            // In range: `home` is below `len` and `next` wraps. The table is never full, so an
            // empty slot ends every probe sequence.
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if s >> INDEX_BITS == tag {
                let e = ((s & INDEX_MASK) - 1) as usize;
                if self.entries.get(e).is_some_and(|(k, _)| k == id) {
                    return Some((i, e));
                }
            }
            i = next(i, len);
        }
    }

    /// Puts entry `index` (1-based) in the first free slot from `hash`'s home.
    #[inline]
    fn place(&mut self, hash: u64, index: u64) {
        let len = self.slots.len();
        let mut i = self.home(hash);
        while self.slots[i] != 0 {
            i = next(i, len);
        }
        self.slots[i] = tag_of(hash) << INDEX_BITS | index;
    }

    /// A table of `slots` slots holding every entry again.
    fn rebuild(&mut self, slots: usize, table: Table) {
        self.slots = match table {
            Table::Written => crate::written_zeros(slots),
            Table::Lazy => vec![0; slots],
        };
        for e in 0..self.entries.len() {
            let h = self.hash(&self.entries[e].0);
            self.place(h, e as u64 + 1);
        }
    }
}

/// How a new table's memory is allocated.
#[derive(Clone, Copy)]
enum Table {
    /// Zeros written ([`crate::written_zeros`]): every page resident now.
    Written,
    /// A zeroed allocation: pages mapped as they are first touched.
    Lazy,
}

/// Asks for the cache line holding `slot` (a hint: nothing waits for it).
#[inline]
fn prefetch(slot: &u64) {
    // SAFETY: SSE is part of every x86_64 target; a prefetch never faults and changes no
    // memory, and the address is a live reference's.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (slot as *const u64).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::hint::black_box(*slot);
}

/// The 24 bits of a hash kept in its slot (the top ones; the bottom ones pick the slot).
#[inline]
fn tag_of(hash: u64) -> u64 {
    hash >> INDEX_BITS
}

/// The slot after `i` in a table of `len`.
#[inline]
fn next(i: usize, len: usize) -> usize {
    if i + 1 == len {
        0
    } else {
        i + 1
    }
}

/// Slots for `n` ids: enough that they fill at most 60% of them.
fn slots_for(n: usize) -> usize {
    (n.saturating_mul(LOAD_DEN) / LOAD_NUM + 1).clamp(SLOTS_MIN, SLOTS_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn id(n: u64) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        k[8..].copy_from_slice(&n.to_le_bytes());
        k
    }

    #[test]
    fn agrees_with_a_hash_map_through_growth_and_replacement() {
        let mut m = IdMap::default();
        let mut reference = HashMap::new();
        for n in 0..20_000u64 {
            let k = id(n % 15_000);
            m.insert(k, n);
            reference.insert(k, n);
            if n % 97 == 0 {
                for probe in [n, n + 1, n * 3 + 20_000] {
                    assert_eq!(m.get(&id(probe)), reference.get(&id(probe)).copied());
                }
            }
        }
        assert_eq!(m.len(), reference.len());
        for (k, v) in &reference {
            assert_eq!(m.get(k), Some(*v));
        }
        assert_eq!(m.iter().count(), reference.len());
        for (k, v) in m.iter() {
            assert_eq!(reference.get(k), Some(&v));
        }
        assert!(m.slots.len() * LOAD_NUM >= m.len() * LOAD_DEN);
    }

    #[test]
    fn hashes_serve_a_map_made_like_it_and_reserve_keeps_entries() {
        let mut a = IdMap::default();
        a.insert(id(1), 1);
        let mut b = a.empty_like();
        assert!(b.is_empty());
        let h = a.hash(&id(2));
        assert_eq!(h, b.hash(&id(2)));
        b.insert_hashed(h, id(2), 2);
        assert_eq!(b.get(&id(2)), Some(2));
        assert_eq!(b.get(&id(1)), None);
        a.reserve(1000);
        let slots = a.slots.len();
        assert!(slots * LOAD_NUM >= 1001 * LOAD_DEN);
        assert!(a.capacity() >= 1001);
        for n in 2..1000 {
            a.insert(id(n), n);
        }
        assert_eq!(a.slots.len(), slots, "reserved room does not grow");
        assert_eq!(a.get(&id(1)), Some(1));
        assert_eq!(a.get(&id(999)), Some(999));
        a.clear();
        assert!(a.is_empty());
        assert_eq!(a.slots.len(), slots, "clear keeps the room");
        assert_eq!(a.get(&id(1)), None);
        a.insert(id(5), 6);
        assert_eq!(a.get(&id(5)), Some(6));
    }

    #[test]
    fn room_made_lazily_holds_like_room_written() {
        for lazy in [false, true] {
            let mut m = IdMap::default();
            m.insert(id(1), 1);
            if lazy {
                m.reserve_lazily(5000);
            } else {
                m.reserve(5000);
            }
            let slots = m.slots.len();
            assert!(m.capacity() >= 5001, "lazy {lazy}");
            assert_eq!(
                m.get(&id(1)),
                Some(1),
                "lazy {lazy}: kept across the new table"
            );
            for n in 2..=5001 {
                let h = m.hash(&id(n));
                m.touch(h);
                assert_eq!(m.get_hashed(h, &id(n)), None);
                m.insert_hashed(h, id(n), n * 10);
            }
            assert_eq!(
                m.slots.len(),
                slots,
                "lazy {lazy}: the room made does not grow"
            );
            assert!(
                (2..=5001).all(|n| m.get(&id(n)) == Some(n * 10)),
                "lazy {lazy}"
            );
            assert_eq!(m.len(), 5001);
        }
    }

    #[test]
    fn ids_sharing_a_home_and_a_tag_are_told_apart_by_their_bytes() {
        // Every id hashed to the same value: one probe sequence, equal tags.
        let mut m = IdMap::default();
        m.reserve(8);
        for n in 0..8 {
            m.insert_hashed(42, id(n), n);
        }
        for n in 0..8 {
            assert_eq!(m.get_hashed(42, &id(n)), Some(n));
        }
        assert_eq!(m.get_hashed(42, &id(8)), None);
        m.insert_hashed(42, id(3), 30);
        assert_eq!(m.get_hashed(42, &id(3)), Some(30));
        assert_eq!(m.len(), 8);
    }

    #[test]
    fn an_empty_map_answers_none_and_touching_it_is_harmless() {
        let m = IdMap::default();
        m.touch(m.hash(&id(1)));
        assert_eq!(m.get(&id(1)), None);
        assert_eq!(m.iter().len(), 0);
    }
}
