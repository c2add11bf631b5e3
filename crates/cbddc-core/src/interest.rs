//! Which collections a node replicates, and what a page of entries vouches for.

use crate::ReplicaId;
use std::collections::{BTreeMap, BTreeSet};

/// The collections a node replicates: every collection, or only some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest(Option<BTreeSet<String>>);

impl Interest {
    /// Every collection.
    pub fn all() -> Self {
        Self(None)
    }

    /// Only these collections (none listed: every collection).
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(collections: I) -> Self {
        let set: BTreeSet<String> = collections.into_iter().map(Into::into).collect();
        Self((!set.is_empty()).then_some(set))
    }

    /// The collections, or `None` for every collection.
    pub fn collections(&self) -> Option<&BTreeSet<String>> {
        self.0.as_ref()
    }

    /// True for every collection.
    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    /// Whether `collection` is replicated.
    pub fn includes(&self, collection: &str) -> bool {
        self.0.as_ref().is_none_or(|set| set.contains(collection))
    }

    /// Whether every collection of `other` is one of these.
    pub fn covers(&self, other: &Interest) -> bool {
        match (&self.0, &other.0) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(ours), Some(theirs)) => theirs.is_subset(ours),
        }
    }
}

impl std::fmt::Display for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("every collection"),
            Some(set) => {
                let names: Vec<&str> = set.iter().map(String::as_str).collect();
                write!(f, "the collections {}", names.join(", "))
            }
        }
    }
}

/// What a page of entries speaks for, per origin: `(after, upto)` says the page holds
/// every entry of that origin with a sequence number in `after + 1 ..= upto` that the
/// receiver replicates. A receiver that held `after` or more may then count itself as
/// holding `upto`, entries it does not replicate included (it never wants them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage(BTreeMap<ReplicaId, (u64, u64)>);

impl Coverage {
    /// Records that the page speaks for `origin` from `after` (exclusive) to `upto`.
    pub fn cover(&mut self, origin: &ReplicaId, after: u64, upto: u64) {
        if upto > after {
            self.0.insert(origin.clone(), (after, upto));
        }
    }

    /// The range for `origin`, if the page speaks for it.
    pub fn get(&self, origin: &ReplicaId) -> Option<(u64, u64)> {
        self.0.get(origin).copied()
    }

    /// Every origin's range.
    pub fn iter(&self) -> impl Iterator<Item = (&ReplicaId, (u64, u64))> {
        self.0.iter().map(|(k, v)| (k, *v))
    }

    /// True when the page speaks for no origin.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interests_cover_their_subsets_and_all_covers_everything() {
        let ab = Interest::only(["a", "b"]);
        let a = Interest::only(["a"]);
        assert!(Interest::all().covers(&ab));
        assert!(ab.covers(&a));
        assert!(!a.covers(&ab));
        assert!(!ab.covers(&Interest::all()));
        assert!(Interest::only(Vec::<String>::new()).is_all());
        assert!(a.includes("a") && !a.includes("b"));
        assert_eq!(ab.to_string(), "the collections a, b");
    }
}
