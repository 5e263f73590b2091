//! Access tokens already resolved, so that a request costs no database round trip to
//! authenticate.
//!
//! Every path that deletes or replaces tokens calls [`TokenCache::forget_all`] after its
//! transaction commits. A lookup that raced with such a change is not cached: it notes the
//! generation before reading the database and inserts only if the generation is unchanged.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use super::Session;

/// Resolved tokens kept at most; past it the cache starts again empty.
const MAX_CACHED_TOKENS: usize = 10_000;

/// Token hash → session, for tokens known to be live.
#[derive(Default)]
pub(super) struct TokenCache {
    entries: Mutex<HashMap<String, Session>>,
    generation: AtomicU64,
}

impl TokenCache {
    /// The session of a cached token hash.
    pub(super) fn get(&self, hash: &str) -> Option<Session> {
        self.entries.lock().ok()?.get(hash).cloned()
    }

    /// The generation to pass to [`TokenCache::insert`] after reading the database.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches a session read from the database, unless tokens were revoked since `generation`.
    pub(super) fn insert(&self, generation: u64, hash: String, session: Session) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        // Checked under the lock that `forget_all` also takes, so a revocation cannot slip
        // between the check and the insert.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MAX_CACHED_TOKENS {
            entries.clear();
        }
        entries.insert(hash, session);
    }

    /// Drops every cached token; called after any commit that deletes or replaces tokens.
    pub(super) fn forget_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }
}
