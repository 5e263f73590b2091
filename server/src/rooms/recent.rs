//! The newest events of the stream, every room's, held in memory.
//!
//! A message in a room of N members wakes N long-polling syncs, and each asks the same
//! things: which rooms have events since its token, and the room's events in that range. The
//! tail answers both from memory: it is read from the database once per commit, by the first
//! sync that needs it (the others wait for that read rather than making their own), so a
//! message is read and parsed once rather than once per member.
//!
//! The tail holds every accepted event with a position in `(from, to]` and nothing else; a
//! range it does not cover entirely is read from the database as before. It starts empty at
//! the position the node opened at, and old events leave it (raising `from`) once it holds
//! [`MAX_EVENTS`] or [`MAX_BYTES`]. A redaction rewrites an older event's stored PDU in the
//! write that stores the redaction (at a position above every held event), so when the tail
//! reads a redaction it reads its target again.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, RwLock},
};

use ruma::{OwnedEventId, OwnedRoomId, RoomId};
use tokio::sync::Mutex as AsyncMutex;

use super::store::{self, StoredEvent};
use crate::{Result, Storage};

/// Events held at most.
const MAX_EVENTS: usize = 512;
/// Bytes of PDU text held at most (events take about twice that once parsed).
const MAX_BYTES: usize = 1 << 20;

/// The tail of the stream, and the lock that lets one sync at a time extend it.
pub(crate) struct RecentEvents {
    tail: RwLock<Tail>,
    extending: AsyncMutex<()>,
}

struct Tail {
    /// Every accepted event with a position in `(from, to]` is held, oldest first.
    from: i64,
    to: i64,
    events: VecDeque<Arc<StoredEvent>>,
    bytes: usize,
}

impl Tail {
    fn covers(&self, after: i64, upto: i64) -> bool {
        after >= self.from && upto <= self.to
    }

    fn push(&mut self, event: Arc<StoredEvent>) {
        self.bytes += event.pdu.json.len();
        self.events.push_back(event);
        while self.events.len() > MAX_EVENTS || self.bytes > MAX_BYTES {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.bytes -= old.pdu.json.len();
            self.from = old.position.unwrap_or(self.from).max(self.from);
        }
    }

    /// Starts over, empty, covering nothing before `at`.
    fn reset(&mut self, at: i64) {
        self.events.clear();
        self.bytes = 0;
        self.from = at;
        self.to = at;
    }
}

impl RecentEvents {
    /// An empty tail at `position`, the stream's position when the node opened.
    pub(crate) fn new(position: i64) -> Self {
        Self {
            tail: RwLock::new(Tail {
                from: position,
                to: position,
                events: VecDeque::new(),
                bytes: 0,
            }),
            extending: AsyncMutex::new(()),
        }
    }

    fn to(&self) -> Option<i64> {
        self.tail.read().ok().map(|t| t.to)
    }

    /// Reads the events committed up to `upto` into the tail, unless it holds them already.
    /// Positions the notifier has not reached yet are left for later: their writes may not
    /// have committed.
    async fn extend(&self, storage: &Storage, upto: i64) -> Result<()> {
        let upto = upto.min(storage.notifier().current().0);
        if self.to().is_none_or(|to| to >= upto) {
            return Ok(());
        }
        let _one_at_a_time = self.extending.lock().await;
        let Some(to) = self.to() else {
            return Ok(());
        };
        if to >= upto {
            return Ok(());
        }
        let pool = storage.pool();
        let read = store::stream_events(pool, to, upto, MAX_EVENTS as i64 + 1).await?;
        if read.len() > MAX_EVENTS {
            // More than the tail holds arrived at once: it starts over above them.
            if let Ok(mut tail) = self.tail.write() {
                tail.reset(upto);
            }
            return Ok(());
        }
        let targets: Vec<OwnedEventId> =
            read.iter().filter_map(|e| e.pdu.redacts.clone()).collect();
        let mut redacted = if targets.is_empty() {
            Default::default()
        } else {
            store::events_by_id(pool, &targets).await?
        };
        let Ok(mut tail) = self.tail.write() else {
            return Ok(());
        };
        if !redacted.is_empty() {
            for held in tail.events.iter_mut() {
                if let Some(now) = redacted.remove(&held.pdu.event_id) {
                    *held = Arc::new(now);
                }
            }
            tail.bytes = tail.events.iter().map(|e| e.pdu.json.len()).sum();
        }
        for event in read {
            tail.push(Arc::new(event));
        }
        tail.to = upto;
        Ok(())
    }

    /// The rooms with accepted events in `(after, upto]`, when the tail covers that range.
    pub(crate) async fn rooms_between(
        &self,
        storage: &Storage,
        after: i64,
        upto: i64,
    ) -> Result<Option<HashSet<OwnedRoomId>>> {
        self.extend(storage, upto).await?;
        let Ok(tail) = self.tail.read() else {
            return Ok(None);
        };
        if !tail.covers(after, upto) {
            return Ok(None);
        }
        Ok(Some(
            newest_first(&tail.events, after, upto)
                .map(|e| e.pdu.room.clone())
                .collect(),
        ))
    }

    /// The accepted events of `room` in `(after, upto]`, newest first, at most `limit`, when
    /// the tail covers that range.
    pub(crate) async fn room_backward(
        &self,
        storage: &Storage,
        room: &RoomId,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Option<Vec<Arc<StoredEvent>>>> {
        self.extend(storage, upto).await?;
        let Ok(tail) = self.tail.read() else {
            return Ok(None);
        };
        if !tail.covers(after, upto) {
            return Ok(None);
        }
        Ok(Some(
            newest_first(&tail.events, after, upto)
                .filter(|e| e.pdu.room == room)
                .take(limit)
                .cloned()
                .collect(),
        ))
    }
}

impl RecentEvents {
    /// The position of the newest message-like event ([`store::is_bump`]) of each room that
    /// has one in `(after, upto]`, when the tail covers that range: what moves rooms up a
    /// sliding-sync list, without reading the membership index again.
    pub(crate) async fn bumps_between(
        &self,
        storage: &Storage,
        after: i64,
        upto: i64,
    ) -> Result<Option<HashMap<OwnedRoomId, i64>>> {
        self.extend(storage, upto).await?;
        let Ok(tail) = self.tail.read() else {
            return Ok(None);
        };
        if !tail.covers(after, upto) {
            return Ok(None);
        }
        let mut bumps = HashMap::new();
        for event in newest_first(&tail.events, after, upto) {
            if let Some(position) = event.position
                && position > 0
                && store::is_bump(&event.pdu.kind.to_string())
            {
                bumps.entry(event.pdu.room.clone()).or_insert(position);
            }
        }
        Ok(Some(bumps))
    }
}

/// The events of `events` (oldest first) in `(after, upto]`, newest first.
fn newest_first(
    events: &VecDeque<Arc<StoredEvent>>,
    after: i64,
    upto: i64,
) -> impl Iterator<Item = &Arc<StoredEvent>> {
    events
        .iter()
        .rev()
        .skip_while(move |e| e.position.is_some_and(|p| p > upto))
        .take_while(move |e| e.position.is_some_and(|p| p > after))
}
