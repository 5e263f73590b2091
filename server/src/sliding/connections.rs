//! What each sliding-sync connection has been told, kept in memory per `(user, device,
//! conn_id)` and looked up by the `pos` the client sends back.
//!
//! A response's `pos` names the state of the connection after it. The client sends it with its
//! next request, or sends an older one again when a response was lost; either is answered from
//! the state it names, and states older than the one used are dropped. Nothing here survives a
//! restart: a `pos` from before it is unknown, the client is told `M_UNKNOWN_POS` and starts
//! the connection over.
//!
//! Bounds: [`MAX_STATES`] per connection, [`MAX_CONNECTIONS_PER_DEVICE`] per device and
//! [`MAX_CONNECTIONS`] per node, the least recently used connection going first; one state
//! holds an entry per room the connection has sent and one per room of the user's list, so a
//! connection costs at most what the user's rooms and subscriptions cost.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};

use super::lists::Entry;
use crate::StreamPosition;

/// States kept per connection: the newest ones, so a retried request still finds its `pos`.
pub const MAX_STATES: usize = 3;
/// Connections kept per device; a client opens two or three (room list, encryption, ...).
pub const MAX_CONNECTIONS_PER_DEVICE: usize = 8;
/// Connections kept per node.
pub const MAX_CONNECTIONS: usize = 1_024;

/// What the client holds of one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SentRoom {
    /// The stream position the client's copy of the room is current to.
    pub(crate) upto: i64,
    /// A digest of the required state and timeline limit it was sent with; a different one
    /// sends the room's required state again.
    pub(crate) spec: u64,
}

/// The state of a connection after one response.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ConnState {
    /// The stream position the response was read up to.
    pub(crate) stream: StreamPosition,
    /// The rooms the client holds, and how current each is.
    pub(crate) rooms: HashMap<OwnedRoomId, SentRoom>,
    /// The room count last reported for each list.
    pub(crate) counts: HashMap<String, usize>,
    /// The user's rooms in list order as of `stream`, so the next request re-sorts them in
    /// memory rather than reading the membership index again (shared by the states that did
    /// not change them).
    pub(crate) listed: Option<Arc<Vec<Entry>>>,
}

/// Who a connection belongs to, and its name.
pub(crate) type ConnKey = (OwnedUserId, OwnedDeviceId, String);

#[derive(Debug)]
struct Connection {
    last_used: Instant,
    /// `(pos, state)`, oldest first.
    states: VecDeque<(u64, Arc<ConnState>)>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The next `pos` handed out; positions are unique across all connections.
    next_pos: u64,
    conns: HashMap<ConnKey, Connection>,
}

/// The node's sliding-sync connections.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    inner: Arc<Mutex<Inner>>,
}

/// Why a connection state was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnknownPos;

impl Connections {
    /// The state `pos` names on the connection `key`.
    pub(crate) fn state(
        &self,
        key: &ConnKey,
        pos: u64,
        now: Instant,
    ) -> Result<Arc<ConnState>, UnknownPos> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = inner.conns.get_mut(key).ok_or(UnknownPos)?;
        let state = conn
            .states
            .iter()
            .find(|(p, _)| *p == pos)
            .map(|(_, s)| s.clone())
            .ok_or(UnknownPos)?;
        conn.last_used = now;
        // The client has what `pos` names, so nothing before it will be asked for again.
        conn.states.retain(|(p, _)| *p >= pos);
        Ok(state)
    }

    /// Forgets the connection `key` (a request without `pos` starts it over).
    pub(crate) fn reset(&self, key: &ConnKey) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.conns.remove(key);
    }

    /// Keeps `state` as the connection's newest and returns the `pos` naming it.
    pub(crate) fn store(&self, key: &ConnKey, state: ConnState, now: Instant) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.next_pos += 1;
        let pos = inner.next_pos;
        if !inner.conns.contains_key(key) {
            make_room_for(&mut inner, key);
        }
        let conn = inner
            .conns
            .entry(key.clone())
            .or_insert_with(|| Connection {
                last_used: now,
                states: VecDeque::new(),
            });
        conn.last_used = now;
        conn.states.push_back((pos, Arc::new(state)));
        while conn.states.len() > MAX_STATES {
            conn.states.pop_front();
        }
        pos
    }

    /// The number of connections kept, and of states across them.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let states = inner.conns.values().map(|c| c.states.len()).sum();
        (inner.conns.len(), states)
    }
}

/// Drops the least recently used connections until a new one for `key` fits both bounds.
fn make_room_for(inner: &mut Inner, key: &ConnKey) {
    let same_device = |k: &ConnKey| k.0 == key.0 && k.1 == key.1;
    loop {
        let on_device = inner.conns.keys().filter(|k| same_device(k)).count();
        let victim = if on_device >= MAX_CONNECTIONS_PER_DEVICE {
            oldest(inner, |k| same_device(k))
        } else if inner.conns.len() >= MAX_CONNECTIONS {
            oldest(inner, |_| true)
        } else {
            return;
        };
        match victim {
            Some(victim) => {
                inner.conns.remove(&victim);
            }
            None => return,
        }
    }
}

fn oldest(inner: &Inner, pick: impl Fn(&ConnKey) -> bool) -> Option<ConnKey> {
    inner
        .conns
        .iter()
        .filter(|(k, _)| pick(k))
        .min_by_key(|(_, c)| c.last_used)
        .map(|(k, _)| k.clone())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ruma::owned_user_id;

    use super::*;

    fn key(device: &str, conn: &str) -> ConnKey {
        (
            owned_user_id!("@a:x"),
            OwnedDeviceId::from(device),
            conn.to_owned(),
        )
    }

    #[test]
    fn a_pos_names_its_state_until_a_newer_one_is_used() {
        let conns = Connections::default();
        let now = Instant::now();
        let k = key("D", "room-list");
        let first = conns.store(&k, ConnState::default(), now);
        let second = conns.store(&k, ConnState::default(), now);
        // The first response was lost: the client asks again from `first`.
        assert!(conns.state(&k, first, now).is_ok());
        assert!(conns.state(&k, second, now).is_ok());
        // Using `second` acknowledges it: `first` is gone.
        assert_eq!(conns.state(&k, first, now), Err(UnknownPos));
        assert_eq!(conns.state(&k, 999, now), Err(UnknownPos));
        // Another device or connection name does not see this connection's positions.
        assert_eq!(
            conns.state(&key("E", "room-list"), second, now),
            Err(UnknownPos)
        );
        assert_eq!(
            conns.state(&key("D", "other"), second, now),
            Err(UnknownPos)
        );
    }

    #[test]
    fn states_and_connections_are_bounded() {
        let conns = Connections::default();
        let start = Instant::now();
        let k = key("D", "c");
        for _ in 0..10 {
            conns.store(&k, ConnState::default(), start);
        }
        assert_eq!(conns.usage(), (1, MAX_STATES));
        // A device opening connection after connection keeps only the newest few.
        let mut last = 0;
        for i in 0..(MAX_CONNECTIONS_PER_DEVICE * 3) {
            let now = start + Duration::from_millis(i as u64 + 1);
            last = conns.store(&key("D", &format!("c{i}")), ConnState::default(), now);
        }
        assert_eq!(conns.usage().0, MAX_CONNECTIONS_PER_DEVICE);
        let newest = key("D", &format!("c{}", MAX_CONNECTIONS_PER_DEVICE * 3 - 1));
        assert!(conns.state(&newest, last, start).is_ok());
        // Many devices: the node-wide bound holds.
        for i in 0..(MAX_CONNECTIONS + 50) {
            let now = start + Duration::from_secs(10 + i as u64);
            conns.store(&key(&format!("D{i}"), "c"), ConnState::default(), now);
        }
        assert_eq!(conns.usage().0, MAX_CONNECTIONS);
    }

    #[test]
    fn reset_forgets_every_state() {
        let conns = Connections::default();
        let now = Instant::now();
        let k = key("D", "c");
        let pos = conns.store(&k, ConnState::default(), now);
        conns.reset(&k);
        assert_eq!(conns.state(&k, pos, now), Err(UnknownPos));
    }
}
