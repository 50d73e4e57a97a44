//! Token bytes -> id, the lookup every piece of text goes through first.
//!
//! Most pieces of ordinary text are whole tokens, so this lookup is the encoder's hottest
//! operation; on a 100k vocabulary the table is far larger than the L2 cache and every probe is
//! a cache miss. A general hash table costs several: its control bytes, the slot holding the id,
//! the id's offset into the vocabulary bytes, then those bytes for the comparison (a `memcmp`
//! call). This table keeps each token's first eight bytes and its length in the slot itself,
//! as one integer, so a piece of up to eight bytes (four in five tokens of cl100k and Llama-3,
//! and most pieces of text) is found, or found missing, by integer compares within the one
//! cache line its probe lands on. Longer tokens compare their tail against the vocabulary
//! bytes after the head and length have matched.
//!
//! Open addressing with linear probing, a power-of-two size at most half full, and a hash
//! computed once per piece that the per-thread memo of merged pieces reuses.

use std::hash::Hasher;

use crate::Rank;

/// Number of leading bytes kept in a slot.
const HEAD: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(16))]
struct Slot {
    /// The token's first `min(len, 8)` bytes, little-endian, zero-padded.
    head: u64,
    id: Rank,
    /// Byte length; 0 marks an empty slot (tokens are never empty).
    len: u32,
}

/// The probe key of a piece: its head and its hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    head: u64,
    pub(crate) hash: u64,
}

impl Key {
    #[inline(always)]
    pub(crate) fn of(bytes: &[u8]) -> Key {
        let n = bytes.len();
        let head = head_of(bytes);
        let mut h = head ^ ((n as u64) << 56).rotate_left(5);
        if n > HEAD {
            let mut fx = rustc_hash::FxHasher::default();
            fx.write(&bytes[HEAD..]);
            h ^= fx.finish().rotate_left(29);
        }
        Key {
            head,
            hash: fmix64(h),
        }
    }
}

/// The first `min(len, 8)` bytes as a little-endian integer, without reading past the slice:
/// two overlapping loads whose shared bytes agree, so OR-ing them is exact.
#[inline(always)]
fn head_of(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= HEAD {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    } else if n >= 4 {
        let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
        let hi = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]) as u64;
        lo | (hi << ((n - 4) * 8))
    } else if n >= 2 {
        let lo = u16::from_le_bytes([b[0], b[1]]) as u64;
        let hi = u16::from_le_bytes([b[n - 2], b[n - 1]]) as u64;
        lo | (hi << ((n - 2) * 8))
    } else if n == 1 {
        b[0] as u64
    } else {
        0
    }
}

/// MurmurHash3's finaliser: every output bit depends on every input bit, so both the slot
/// index (top bits) and the memo's filter bits (middle bits) are well spread.
#[inline(always)]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Asks Linux to back `[addr, addr + len)` with 2 MiB pages where it can. The table is
/// probed at random over several MiB, so with 4 KiB pages most probes also miss the TLB.
/// Only advice: it changes no contents, and where it is not granted nothing changes.
#[cfg(target_os = "linux")]
fn advise_huge_pages(addr: usize, len: usize) {
    const PAGE: usize = 4096;
    if len < (2 << 20) {
        return;
    }
    let start = (addr + PAGE - 1) & !(PAGE - 1);
    let end = (addr + len) & !(PAGE - 1);
    if end > start {
        // SAFETY: the range lies inside one live allocation owned by the caller, and
        // MADV_HUGEPAGE only changes how its not-yet-touched pages will be backed.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_addr: usize, _len: usize) {}

#[derive(Debug, Clone)]
pub(crate) struct TokenTable {
    slots: Vec<Slot>,
    shift: u32,
    len: usize,
    /// A one-word Bloom filter of the tokens (two bits per token in one `u64`, four bits per
    /// slot of `slots`: 128 KiB for a 100k vocabulary). Pieces that are not tokens (most pieces
    /// of random text such as base64, every one a probe into `slots` that misses the cache)
    /// are turned away here, in a table small enough to stay in L2, with about 3% false
    /// positives. The bits come from the low end of the hash; the slot index from the top.
    filter: Vec<u64>,
}

/// The filter word and the two bits of `hash`.
#[inline(always)]
fn filter_probe(hash: u64, words: usize) -> (usize, u64) {
    let word = (hash as usize) & (words - 1);
    let bits = (1u64 << ((hash >> 32) & 63)) | (1u64 << ((hash >> 38) & 63));
    (word, bits)
}

impl TokenTable {
    pub(crate) fn with_capacity(n: usize) -> TokenTable {
        let size = (2 * n).next_power_of_two().max(16);
        let mut slots = Vec::with_capacity(size);
        advise_huge_pages(slots.as_ptr() as usize, size * std::mem::size_of::<Slot>());
        // Written only now, so the pages are faulted in after the advice.
        slots.resize(size, Slot::default());
        TokenTable {
            slots,
            shift: 64 - size.trailing_zeros(),
            len: 0,
            filter: vec![0; (size / 16).max(1)],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Inserts `token -> id`, or returns the id already holding these bytes.
    /// `bytes_of` gives the bytes of ids already inserted. Keeps the table at most half full.
    pub(crate) fn insert<'a>(
        &mut self,
        token: &[u8],
        id: Rank,
        bytes_of: impl Fn(Rank) -> &'a [u8],
    ) -> Result<(), Rank> {
        debug_assert!(!token.is_empty() && token.len() <= u32::MAX as usize);
        let key = Key::of(token);
        if let Some(prev) = self.get(token, key, &bytes_of) {
            return Err(prev);
        }
        if 2 * (self.len + 1) > self.slots.len() {
            let old = std::mem::replace(self, TokenTable::with_capacity(self.slots.len()));
            for s in old.slots.into_iter().filter(|s| s.len != 0) {
                self.place(Key::of(bytes_of(s.id)), s);
            }
        }
        self.place(
            key,
            Slot {
                head: key.head,
                id,
                len: token.len() as u32,
            },
        );
        Ok(())
    }

    /// Puts `slot` into the first empty slot of its probe sequence.
    fn place(&mut self, key: Key, slot: Slot) {
        let mask = self.slots.len() - 1;
        let mut i = (key.hash >> self.shift) as usize;
        while self.slots[i].len != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
        self.len += 1;
        let (word, bits) = filter_probe(key.hash, self.filter.len());
        self.filter[word] |= bits;
    }

    #[inline(always)]
    fn matches<'a>(
        &self,
        s: Slot,
        piece: &[u8],
        key: Key,
        bytes_of: &impl Fn(Rank) -> &'a [u8],
    ) -> bool {
        s.head == key.head
            && s.len as usize == piece.len()
            && (piece.len() <= HEAD || bytes_of(s.id)[HEAD..] == piece[HEAD..])
    }

    /// The id of the token whose bytes are `piece` (`key` must be `Key::of(piece)`).
    #[inline(always)]
    pub(crate) fn get<'a>(
        &self,
        piece: &[u8],
        key: Key,
        bytes_of: impl Fn(Rank) -> &'a [u8],
    ) -> Option<Rank> {
        let (word, bits) = filter_probe(key.hash, self.filter.len());
        if self.filter[word] & bits != bits {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = (key.hash >> self.shift) as usize;
        loop {
            let s = self.slots[i];
            if s.len == 0 {
                return None;
            }
            if self.matches(s, piece, key, &bytes_of) {
                return Some(s.id);
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_exact_for_every_length() {
        let data: Vec<u8> = (1..=20u8).collect();
        for n in 0..=HEAD {
            let mut padded = [0u8; 8];
            padded[..n].copy_from_slice(&data[..n]);
            assert_eq!(
                head_of(&data[..n]),
                u64::from_le_bytes(padded),
                "length {n}"
            );
        }
        assert_eq!(head_of(&data), head_of(&data[..8]));
    }

    /// Tokens that differ only in trailing zero bytes, or only after their first eight bytes,
    /// or are each other's prefixes, must all stay apart; absent pieces must miss.
    #[test]
    fn lookups_agree_with_a_map() {
        let mut tokens: Vec<Vec<u8>> = vec![
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"a\0\0".to_vec(),
            b"\0".to_vec(),
            b"\0\0\0\0\0\0\0\0".to_vec(),
            b"\0\0\0\0\0\0\0\0\0".to_vec(),
            b"abcdefgh".to_vec(),
            b"abcdefghi".to_vec(),
            b"abcdefghj".to_vec(),
            b"abcdefghij".to_vec(),
        ];
        // Runs of spaces share their head: only the length and tail tell them apart.
        tokens.extend((1..40).map(|n| vec![b' '; n]));
        let mut state = 7u64;
        for _ in 0..3000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = 1 + (state >> 59) as usize;
            let t: Vec<u8> = (0..len).map(|k| (state >> (k % 7 * 8)) as u8 % 5).collect();
            if !tokens.contains(&t) {
                tokens.push(t);
            }
        }
        // Starting small exercises growth.
        let mut table = TokenTable::with_capacity(4);
        let bytes_of = |id: Rank| tokens[id as usize].as_slice();
        for (id, t) in tokens.iter().enumerate() {
            assert_eq!(table.insert(t, id as Rank, bytes_of), Ok(()));
        }
        assert_eq!(table.len(), tokens.len());
        assert_eq!(table.insert(b"a\0", 99, bytes_of), Err(1));
        for (id, t) in tokens.iter().enumerate() {
            assert_eq!(table.get(t, Key::of(t), bytes_of), Some(id as Rank));
            let mut longer = t.clone();
            longer.push(200);
            assert_eq!(table.get(&longer, Key::of(&longer), bytes_of), None);
        }
        assert_eq!(table.get(b"", Key::of(b""), bytes_of), None);
    }
}
