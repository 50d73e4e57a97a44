//! A `tokenizer.json` vocabulary's strings, by id and by string, in two flat arrays.
//!
//! Both directions used to be a `String` per token, twice (a `Vec<Option<String>>` and a
//! `HashMap<String, Rank>`): for Llama-3's 128k tokens about 19 MiB of small allocations
//! (a loaded tokenizer went from 47 to 28 MiB without them), each also made at load. Here the
//! strings sit end to end in one buffer, `offsets` gives each id's range, and the reverse
//! index is a table of ids hashed by their strings.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::Rank;

#[derive(Debug, Clone, Default)]
pub(crate) struct StrTable {
    text: String,
    /// `offsets[id]..offsets[id + 1]` is the string of `id`, if `present[id]`.
    offsets: Vec<usize>,
    present: Vec<bool>,
    by_str: HashTable<Rank>,
}

fn hash_of(s: &str) -> u64 {
    FxBuildHasher.hash_one(s)
}

impl StrTable {
    /// From `(string, id)` pairs with ids below `n_ids`, not yet indexed by string (see
    /// [`StrTable::index`]). An id given twice is an error: `(id, first string, second)`.
    pub(crate) fn new<'a, I>(tokens: I, n_ids: usize) -> Result<StrTable, (Rank, String, String)>
    where
        I: IntoIterator<Item = (&'a str, Rank)>,
    {
        let mut by_id: Vec<Option<&'a str>> = vec![None; n_ids];
        let mut table = StrTable::default();
        for (s, id) in tokens {
            let slot = &mut by_id[id as usize];
            if let Some(prev) = slot {
                return Err((id, prev.to_string(), s.to_string()));
            }
            *slot = Some(s);
        }
        table.offsets.reserve(n_ids + 1);
        table.offsets.push(0);
        for s in &by_id {
            table.text.push_str(s.unwrap_or(""));
            table.offsets.push(table.text.len());
            table.present.push(s.is_some());
        }
        table.by_str = HashTable::with_capacity(by_id.iter().flatten().count());
        Ok(table)
    }

    /// Indexes the strings by value; `order` gives the ids in the order the file listed them,
    /// so that a string listed twice ends up with its later id.
    pub(crate) fn index(&mut self, order: impl IntoIterator<Item = Rank>) {
        let text = &self.text;
        let offsets = &self.offsets;
        let str_of = |id: Rank| &text[offsets[id as usize]..offsets[id as usize + 1]];
        for id in order {
            let s = str_of(id);
            let h = hash_of(s);
            match self.by_str.find_mut(h, |&other| str_of(other) == s) {
                Some(slot) => *slot = id,
                None => {
                    self.by_str
                        .insert_unique(h, id, |&other| hash_of(str_of(other)));
                }
            }
        }
    }

    /// Number of distinct strings.
    pub(crate) fn len(&self) -> usize {
        self.by_str.len()
    }

    pub(crate) fn str_of(&self, id: Rank) -> Option<&str> {
        let i = id as usize;
        if !*self.present.get(i)? {
            return None;
        }
        Some(&self.text[self.offsets[i]..self.offsets[i + 1]])
    }

    pub(crate) fn id_of(&self, s: &str) -> Option<Rank> {
        self.by_str
            .find(hash_of(s), |&id| self.str_of(id) == Some(s))
            .copied()
    }

    /// Every distinct string with its id (a string listed twice: its later id).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, Rank)> + '_ {
        self.by_str
            .iter()
            .map(|&id| (self.str_of(id).unwrap_or_default(), id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_agree_with_maps() {
        let tokens = [("a", 3u32), ("", 0), ("Ġthe", 7), ("a", 5), ("é", 1)];
        let mut t = StrTable::new(tokens.iter().copied(), 9).unwrap();
        t.index(tokens.iter().map(|&(_, id)| id));
        assert_eq!(t.len(), 4);
        assert_eq!(
            t.id_of("a"),
            Some(5),
            "a string listed twice keeps its later id"
        );
        assert_eq!(t.str_of(3), Some("a"));
        assert_eq!(t.str_of(5), Some("a"));
        assert_eq!(t.id_of(""), Some(0));
        assert_eq!(t.str_of(0), Some(""));
        assert_eq!(t.id_of("Ġthe"), Some(7));
        assert_eq!(t.id_of("é"), Some(1));
        assert_eq!(t.id_of("b"), None);
        for missing in [2, 4, 6, 8, 9, 100] {
            assert_eq!(t.str_of(missing), None, "id {missing}");
        }
        let mut all: Vec<_> = t.iter().collect();
        all.sort_by_key(|&(_, id)| id);
        assert_eq!(all, [("", 0), ("é", 1), ("a", 5), ("Ġthe", 7)]);
        assert_eq!(
            StrTable::new([("x", 2u32), ("y", 2)], 3).unwrap_err(),
            (2, "x".to_string(), "y".to_string())
        );
    }
}
