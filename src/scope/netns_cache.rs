//! One value per network namespace, keyed by the namespace's identity and
//! trimmed to the live set after every discovery
//! ([`PerNamespace::retain_live`]). The fleet keeps each namespace's counts
//! and last reports here (no socket: the netns pool opens those per
//! collection), so what a namespace that is gone leaves behind is dropped at
//! the next collection, and an inode number the kernel reuses for a new
//! namespace starts afresh.

use std::collections::HashMap;

use crate::scope::netns::{Namespace, NsId};

/// Values kept per namespace, keyed by [`NsId`].
///
/// Call [`retain_live`] with each discovery's result: entries of namespaces
/// that disappeared are dropped (a dead namespace's inode number may be
/// reused by a new one, which must not inherit its entry).
///
/// [`retain_live`]: PerNamespace::retain_live
#[derive(Debug)]
pub struct PerNamespace<T> {
    /// Boxed: a fleet's entry (counts and reports) is about 1.6 KB, and a
    /// table of them inline was sized to a power of two and rebuilt on
    /// growth (old and new table at once: 1.7 MB of peak heap with 500
    /// namespaces). Boxed, the table holds pointers and an entry is
    /// allocated once.
    entries: HashMap<NsId, Box<T>>,
}

impl<T> Default for PerNamespace<T> {
    fn default() -> Self {
        PerNamespace {
            entries: HashMap::new(),
        }
    }
}

impl<T> PerNamespace<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, id: NsId) -> Option<&T> {
        self.entries.get(&id).map(|entry| &**entry)
    }

    pub fn get_mut(&mut self, id: NsId) -> Option<&mut T> {
        self.entries.get_mut(&id).map(|entry| &mut **entry)
    }

    /// The entry for `id`, created with `make` if there is none. An error
    /// from `make` is returned and nothing is stored.
    pub fn get_or_try_insert_with<E>(
        &mut self,
        id: NsId,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<&mut T, E> {
        use std::collections::hash_map::Entry;
        match self.entries.entry(id) {
            Entry::Occupied(entry) => Ok(&mut **entry.into_mut()),
            Entry::Vacant(entry) => Ok(&mut **entry.insert(Box::new(make()?))),
        }
    }

    /// Drops an entry (e.g. after its socket failed), returning it.
    pub fn remove(&mut self, id: NsId) -> Option<T> {
        self.entries.remove(&id).map(|entry| *entry)
    }

    /// Keeps only the entries whose namespace is in `live`; returns how
    /// many were dropped.
    pub fn retain_live<'a>(&mut self, live: impl IntoIterator<Item = &'a Namespace>) -> usize {
        let live: std::collections::HashSet<NsId> = live.into_iter().map(|ns| ns.id).collect();
        let before = self.entries.len();
        self.entries.retain(|id, _| live.contains(id));
        before - self.entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, id: NsId) -> bool {
        self.entries.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn id(ino: u64) -> NsId {
        NsId { dev: 4, ino }
    }

    #[test]
    fn cache_keeps_only_live_namespaces() {
        let ns = |ino| Namespace {
            id: id(ino),
            label: format!("ino:{ino}"),
            own: false,
            name: None,
            lowest_pid: None,
            processes: 0,
            path: PathBuf::new(),
        };
        let mut cache: PerNamespace<String> = PerNamespace::new();
        for ino in [1, 2, 3] {
            let v = cache
                .get_or_try_insert_with(id(ino), || Ok::<_, ()>(format!("sock{ino}")))
                .unwrap();
            assert_eq!(*v, format!("sock{ino}"));
        }
        let again = cache.get_or_try_insert_with(id(2), || Err("not called"));
        assert_eq!(again.unwrap(), "sock2");
        assert_eq!(
            cache.get_or_try_insert_with(id(9), || Err("refused")),
            Err("refused")
        );
        assert!(!cache.contains(id(9)), "a failure stores nothing");
        assert_eq!(cache.retain_live(&[ns(2), ns(3), ns(4)]), 1);
        assert!(!cache.contains(id(1)));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.remove(id(3)).as_deref(), Some("sock3"));
        assert_eq!(cache.retain_live(&[]), 1);
        assert!(cache.is_empty());
    }
}
