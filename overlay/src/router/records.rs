//! Signed records on the ring: a small distributed store keyed like the ring itself.
//!
//! A record under key `K` is kept as `record_replicas` replicas; replica `i` lives at the node
//! closest to `wire::placement(K, i)` by the ring's own notion of closeness (the key routing
//! of `ring`), replica 0 at `K` itself. A store or lookup frame is key-routed toward a
//! placement, so it ends where a bootstrap toward that key would: at the node that keeps it.
//! Replies are key-routed back to the asker's key. Placements spread over the ring, so one
//! node (or one neighbourhood) leaving loses at most one replica of a record, and a lookup
//! asks every placement at once and keeps the newest record any of them returns.
//!
//! Records are checked where they are kept (lifetime, the [`RecordPolicy`] the crate's user
//! supplies, then the signature) and nowhere on the way, so a forged record costs the nodes it
//! passes no signature check, and a peer that passes one on is not blamed for it.
//!
//! Keeping records fresh:
//! - the publishing node sends its records again every `record_republish` (at most half
//!   their lifetime at publication), so nodes that took a placement since get them;
//! - a keeper whose ring changed (a peer came or went, a new predecessor bootstrapped to it)
//!   checks each record it keeps: a placement that a closer node now owns is handed over by
//!   a store toward it. The keeper keeps its copy until expiry: if that node leaves again, the
//!   placement comes back here, record included;
//! - expired records are dropped on the records timer.
//!
//! Bounds: the store's bytes, records per publisher, the longest lifetime, this node's own
//! publications, lookups in flight, and stores and lookups accepted per origin per second.
//! This node paces its own stores (republished or handed over) to half the per-origin rate,
//! so its neighbours' limits never drop what it sends in a burst.

mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::identity::PublicKey;
use crate::router::metrics::DropReason;
use crate::router::ring::KeyHop;
use crate::router::timer::Timer;
use crate::router::{Event, PeerId, Router};
use crate::wire::{Frame, Lookup, LookupReply, MAX_REPLICAS, Record, Store, placement};

use store::{Limits, RecordStore, Stored};
pub use store::{RecordPolicy, SelfCertifying};

/// How long after a ring change a keeper checks what to hand over: lets a burst of changes
/// settle into one pass.
const HANDOVER_DELAY: Duration = Duration::from_secs(2);

/// How soon the records timer runs again when this node's own stores were paced.
const PACE: Duration = Duration::from_secs(1);

/// A lookup's number: [`Router::lookup`] returns it and [`Event::LookupDone`] names it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// Why a record was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The record itself is refused (see the reason: bad signature or lifetime, a publisher
    /// the policy does not allow, a sequence older than one published before).
    #[error("record refused: {}", .0.as_str())]
    Refused(DropReason),
    /// This node already publishes `max_own_records` records under other keys.
    #[error("too many records published by this node")]
    TooMany,
}

/// One of this node's own publications.
#[derive(Debug)]
struct Published {
    record: Record,
    /// When it was last sent to its placements.
    sent: Option<Instant>,
    /// How often it is sent again.
    every: Duration,
}

/// A lookup this node started.
#[derive(Debug)]
struct Pending {
    key: PublicKey,
    deadline: Instant,
    answers: u8,
    best: Option<Record>,
    hops: u8,
}

/// What one handover pass decided for one record: the placements kept here, and the stores
/// toward closer nodes.
struct Handover {
    key: PublicKey,
    replicas: u8,
    stores: Vec<(PeerId, Store)>,
}

/// What an origin asks of this node, each kind rate-limited on its own.
#[derive(Debug, Clone, Copy)]
enum Work {
    Store,
    Lookup,
}

/// Fixed one-second windows of accepted frames per origin, bounded in origins.
#[derive(Debug, Default)]
struct OriginRates {
    windows: HashMap<PublicKey, (Instant, u32)>,
}

impl OriginRates {
    fn allow(&mut self, origin: PublicKey, limit: u32, max_origins: usize, now: Instant) -> bool {
        let second = Duration::from_secs(1);
        if !self.windows.contains_key(&origin) && self.windows.len() >= max_origins {
            self.windows.retain(|_, (start, _)| *start + second > now);
            if self.windows.len() >= max_origins {
                return false;
            }
        }
        let w = self.windows.entry(origin).or_insert((now, 0));
        if w.0 + second <= now {
            *w = (now, 0);
        }
        if w.1 >= limit {
            return false;
        }
        w.1 += 1;
        true
    }
}

/// Record state of one node.
pub(crate) struct RecordState {
    store: RecordStore,
    own: BTreeMap<PublicKey, Published>,
    pending: HashMap<u64, Pending>,
    policy: Box<dyn RecordPolicy>,
    /// A moment and the Unix time (seconds) at it: record expiries are wall-clock times.
    unix_base: (Instant, u64),
    store_rates: OriginRates,
    lookup_rates: OriginRates,
    /// The ring changed since the last handover pass.
    ring_dirty: bool,
}

impl RecordState {
    /// Empty, with the self-certifying policy and the Unix clock at 0 until told.
    pub(crate) fn new(now: Instant) -> Self {
        RecordState {
            store: RecordStore::default(),
            own: BTreeMap::new(),
            pending: HashMap::new(),
            policy: Box::new(SelfCertifying),
            unix_base: (now, 0),
            store_rates: OriginRates::default(),
            lookup_rates: OriginRates::default(),
            ring_dirty: false,
        }
    }

    /// Bytes of records kept for others.
    pub(crate) fn bytes(&self) -> usize {
        self.store.bytes()
    }
}

impl Router {
    /// Tells the router the wall-clock time: `unix_secs` seconds since the Unix epoch at
    /// `now`. Record expiries are wall-clock times; the driver calls this at start.
    pub fn set_unix_time(&mut self, now: Instant, unix_secs: u64) {
        self.records.unix_base = (now, unix_secs);
    }

    /// The wall-clock time at `now`, in seconds since the Unix epoch.
    pub fn unix_time(&self, now: Instant) -> u64 {
        let (at, secs) = self.records.unix_base;
        match now.checked_duration_since(at) {
            Some(d) => secs.saturating_add(d.as_secs()),
            None => secs.saturating_sub(at.duration_since(now).as_secs()),
        }
    }

    /// Replaces the policy deciding who may publish under which key (default:
    /// [`SelfCertifying`]). Records already kept stay.
    pub fn set_record_policy(&mut self, policy: Box<dyn RecordPolicy>) {
        self.records.policy = policy;
    }

    /// The live record this node keeps for others under `key`.
    pub fn held_record(&self, key: &PublicKey, now: Instant) -> Option<&Record> {
        self.records.store.get(key, self.unix_time(now))
    }

    /// Records this node keeps for others.
    pub fn records_held(&self) -> usize {
        self.records.store.len()
    }

    /// Publishes `record` (signed by its publisher, who must pass the record policy) at its
    /// placements, and keeps sending it there until it expires or a newer one replaces it.
    /// To extend its life, publish a new record with a higher sequence.
    pub fn publish(&mut self, record: Record, now: Instant) -> Result<(), PublishError> {
        let unix = self.unix_time(now);
        let limits = self.record_limits();
        store::check(&record, unix, &limits, self.records.policy.as_ref())
            .map_err(PublishError::Refused)?;
        match self.records.own.get(&record.key) {
            Some(p) if p.record.seq > record.seq => {
                return Err(PublishError::Refused(DropReason::RecordStale));
            }
            None if self.records.own.len() >= self.config.max_own_records => {
                return Err(PublishError::TooMany);
            }
            _ => {}
        }
        let life = Duration::from_secs(record.expires.saturating_sub(unix));
        let every = self
            .config
            .record_republish
            .min(life / 2)
            .max(Duration::from_secs(1));
        let key = record.key;
        self.records.own.insert(
            key,
            Published {
                record,
                sent: None,
                every,
            },
        );
        self.republish_due(now);
        self.arm_records(now + self.config.record_tick);
        Ok(())
    }

    /// Looks up the record under `key` at every placement; [`Event::LookupDone`] brings the
    /// newest valid one found (or none) once every placement answered, shortly after the
    /// first record arrived, or at `lookup_timeout`.
    pub fn lookup(&mut self, key: PublicKey, now: Instant) -> LookupId {
        if self.records.pending.len() >= self.config.max_pending_lookups
            && let Some(oldest) = self
                .records
                .pending
                .iter()
                .min_by_key(|(_, p)| p.deadline)
                .map(|(n, _)| *n)
        {
            self.finish_lookup(oldest);
        }
        let mut nonce: u64 = self.rng.r#gen();
        while self.records.pending.contains_key(&nonce) {
            nonce = self.rng.r#gen();
        }
        let deadline = now + self.config.lookup_timeout;
        self.records.pending.insert(
            nonce,
            Pending {
                key,
                deadline,
                answers: 0,
                best: None,
                hops: 0,
            },
        );
        self.metrics.lookups_started += 1;
        self.arm_records(deadline);
        for replica in 0..self.replicas() {
            let l = Lookup {
                hop_limit: self.config.hop_limit,
                hops: 0,
                watermark: None,
                replica,
                origin: self.key,
                nonce,
                key,
            };
            // Our own frames pass our own checks.
            let _ = self.route_lookup(l, now);
        }
        LookupId(nonce)
    }

    /// A store frame arrived from `peer`.
    pub(super) fn handle_store(
        &mut self,
        peer: PeerId,
        mut s: Store,
        now: Instant,
    ) -> Result<(), DropReason> {
        self.admit(peer, s.origin, s.hops, Work::Store, now)?;
        if s.hop_limit == 0 {
            return Err(DropReason::HopLimit);
        }
        s.hop_limit -= 1;
        s.hops = s.hops.saturating_add(1);
        let target = placement(&s.record.key, s.replica);
        self.check_watermark(peer, &target, false, s.watermark, now);
        self.route_store(s, now)
    }

    /// A lookup frame arrived from `peer`.
    pub(super) fn handle_lookup(
        &mut self,
        peer: PeerId,
        mut l: Lookup,
        now: Instant,
    ) -> Result<(), DropReason> {
        self.admit(peer, l.origin, l.hops, Work::Lookup, now)?;
        if l.hop_limit == 0 {
            return Err(DropReason::HopLimit);
        }
        l.hop_limit -= 1;
        l.hops = l.hops.saturating_add(1);
        let target = placement(&l.key, l.replica);
        self.check_watermark(peer, &target, false, l.watermark, now);
        self.route_lookup(l, now)
    }

    /// A lookup reply arrived from `peer`.
    pub(super) fn handle_lookup_reply(
        &mut self,
        peer: PeerId,
        mut r: LookupReply,
        now: Instant,
    ) -> Result<(), DropReason> {
        if r.hop_limit == 0 {
            return Err(DropReason::HopLimit);
        }
        r.hop_limit -= 1;
        r.hops = r.hops.saturating_add(1);
        self.check_watermark(peer, &r.asker, false, r.watermark, now);
        self.route_reply(r, now)
    }

    /// The origin check and rate limit of a store or lookup: a frame's first hop must come
    /// from its origin (no node stores or asks in another's name), and each origin gets a
    /// bounded share of this node's work.
    fn admit(
        &mut self,
        peer: PeerId,
        origin: PublicKey,
        hops: u8,
        work: Work,
        now: Instant,
    ) -> Result<(), DropReason> {
        if hops == 0 && self.peers.get(&peer).is_none_or(|p| p.key != origin) {
            return Err(DropReason::BadPath);
        }
        let max = self.config.max_record_origins;
        let allowed = match work {
            Work::Store => {
                let limit = self.config.stores_per_origin_per_sec;
                self.records.store_rates.allow(origin, limit, max, now)
            }
            Work::Lookup => {
                let limit = self.config.lookups_per_origin_per_sec;
                self.records.lookup_rates.allow(origin, limit, max, now)
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(DropReason::OriginRateLimited)
        }
    }

    fn route_store(&mut self, mut s: Store, now: Instant) -> Result<(), DropReason> {
        let target = placement(&s.record.key, s.replica);
        match self.key_next_hop(&target, false, s.watermark, now) {
            KeyHop::Local => self.keep_record(s.replica, s.record, now),
            KeyHop::Peer(next, wm) => {
                s.watermark = wm;
                self.enqueue(next, &Frame::Store(s));
                Ok(())
            }
        }
    }

    fn keep_record(&mut self, replica: u8, record: Record, now: Instant) -> Result<(), DropReason> {
        let unix = self.unix_time(now);
        let limits = self.record_limits();
        let rs = &mut self.records;
        match rs
            .store
            .put(replica, record, unix, &limits, rs.policy.as_ref())?
        {
            Stored::New | Stored::Replaced => {
                self.metrics.records_stored += 1;
                self.arm_records(now + self.config.record_tick);
            }
            Stored::Same => {}
        }
        Ok(())
    }

    fn route_lookup(&mut self, mut l: Lookup, now: Instant) -> Result<(), DropReason> {
        let target = placement(&l.key, l.replica);
        match self.key_next_hop(&target, false, l.watermark, now) {
            KeyHop::Local => {
                self.metrics.lookups_answered += 1;
                let record = self.records.store.get(&l.key, self.unix_time(now)).cloned();
                let reply = LookupReply {
                    hop_limit: self.config.hop_limit,
                    hops: 0,
                    lookup_hops: l.hops,
                    watermark: None,
                    asker: l.origin,
                    nonce: l.nonce,
                    key: l.key,
                    record,
                };
                self.route_reply(reply, now)
            }
            KeyHop::Peer(next, wm) => {
                l.watermark = wm;
                self.enqueue(next, &Frame::Lookup(l));
                Ok(())
            }
        }
    }

    fn route_reply(&mut self, mut r: LookupReply, now: Instant) -> Result<(), DropReason> {
        if r.asker == self.key {
            return self.lookup_answered(r, now);
        }
        match self.key_next_hop(&r.asker, false, r.watermark, now) {
            KeyHop::Local => Err(DropReason::NoRoute),
            KeyHop::Peer(next, wm) => {
                r.watermark = wm;
                self.enqueue(next, &Frame::LookupReply(r));
                Ok(())
            }
        }
    }

    /// An answer to one of our lookups (late answers to finished lookups are ignored).
    fn lookup_answered(&mut self, r: LookupReply, now: Instant) -> Result<(), DropReason> {
        let unix = self.unix_time(now);
        let limits = self.record_limits();
        let Some(p) = self.records.pending.get_mut(&r.nonce) else {
            return Ok(());
        };
        if p.key != r.key {
            return Err(DropReason::RecordInvalid);
        }
        p.answers = p.answers.saturating_add(1);
        let mut result = Ok(());
        if let Some(rec) = r.record {
            let valid = if rec.key != p.key {
                Err(DropReason::RecordInvalid)
            } else {
                store::check(&rec, unix, &limits, self.records.policy.as_ref())
            };
            match valid {
                Ok(()) if p.best.as_ref().is_none_or(|b| b.seq < rec.seq) => {
                    p.hops = r.lookup_hops.saturating_add(r.hops);
                    p.best = Some(rec);
                }
                Ok(()) => {}
                Err(reason) => result = Err(reason),
            }
        }
        if p.answers >= self.config.record_replicas.clamp(1, MAX_REPLICAS) {
            self.finish_lookup(r.nonce);
        } else if p.best.is_some() {
            // A record is in hand: wait only a moment for a newer one from the others.
            let soon = now + self.config.lookup_grace;
            if soon < p.deadline {
                p.deadline = soon;
                self.arm_records(soon);
            }
        }
        result
    }

    fn finish_lookup(&mut self, nonce: u64) {
        let Some(p) = self.records.pending.remove(&nonce) else {
            return;
        };
        if p.best.is_some() {
            self.metrics.lookups_found += 1;
        }
        self.push_event(Event::LookupDone {
            id: LookupId(nonce),
            key: p.key,
            record: p.best,
            hops: p.hops,
        });
    }

    /// The ring around us changed: records may have a closer keeper now.
    pub(super) fn records_ring_changed(&mut self, now: Instant) {
        self.records.ring_dirty = true;
        if !self.records.store.is_empty() {
            self.arm_records(now + HANDOVER_DELAY);
        }
    }

    /// The records timer: expire, republish, hand over, end overdue lookups, re-arm.
    pub(super) fn records_tick(&mut self, now: Instant) {
        let unix = self.unix_time(now);
        self.records.store.expire(unix);
        self.records.own.retain(|_, p| p.record.expires > unix);
        let sent = self.republish_due(now);
        if self.records.ring_dirty {
            let budget = self.store_budget().saturating_sub(sent);
            if budget > 0 && self.hand_over(budget, now) {
                self.records.ring_dirty = false;
            } else {
                self.arm_records(now + PACE);
            }
        }
        let overdue: Vec<u64> = self
            .records
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in overdue {
            self.finish_lookup(n);
        }
        let rs = &self.records;
        let mut next = rs.pending.values().map(|p| p.deadline).min();
        if !rs.store.is_empty() || !rs.own.is_empty() {
            let tick = now + self.config.record_tick;
            next = Some(next.map_or(tick, |n| n.min(tick)));
        }
        // The timer that brought us here is disarmed; pacing above may have armed it again.
        if let Some(at) = next {
            self.arm_records(at);
        }
    }

    /// Sends each of our publications that is due to every placement, as many as the store
    /// budget allows; the rest go on the next tick, a moment later. Returns the stores sent.
    fn republish_due(&mut self, now: Instant) -> usize {
        let replicas = self.replicas();
        let records = (self.store_budget() / usize::from(replicas)).max(1);
        let mut due = 0;
        let picked: Vec<Record> = self
            .records
            .own
            .values_mut()
            .filter(|p| p.sent.is_none_or(|s| s + p.every <= now))
            .filter_map(|p| {
                due += 1;
                (due <= records).then(|| {
                    p.sent = Some(now);
                    p.record.clone()
                })
            })
            .collect();
        if due > records {
            self.arm_records(now + PACE);
        }
        let sent = picked.len() * usize::from(replicas);
        for record in picked {
            for replica in 0..replicas {
                let s = Store {
                    hop_limit: self.config.hop_limit,
                    hops: 0,
                    watermark: None,
                    replica,
                    origin: self.key,
                    record: record.clone(),
                };
                // A refusal here (our own store full) is counted; the other placements
                // still get it.
                if let Err(reason) = self.route_store(s, now) {
                    self.metrics.drop(reason);
                }
            }
        }
        sent
    }

    /// Hands each placement a closer node now owns to that node, and takes on each placement
    /// that has come back here, sending at most `budget` stores. False when the budget ran
    /// out before every record was seen (the rest wait for the next pass).
    fn hand_over(&mut self, budget: usize, now: Instant) -> bool {
        let unix = self.unix_time(now);
        let held: Vec<(PublicKey, u8)> = self
            .records
            .store
            .iter()
            .filter(|h| h.record.expires > unix)
            .map(|h| (h.record.key, h.replicas))
            .collect();
        let mut changes: Vec<Handover> = Vec::new();
        let mut left = budget;
        let mut done = true;
        for (key, mut replicas) in held {
            if left == 0 {
                done = false;
                break;
            }
            let mut sends = Vec::new();
            for replica in 0..self.replicas() {
                let bit = 1u8 << replica;
                let target = placement(&key, replica);
                match self.key_next_hop(&target, false, None, now) {
                    KeyHop::Local => replicas |= bit,
                    KeyHop::Peer(next, wm) if replicas & bit != 0 => {
                        replicas &= !bit;
                        sends.push((next, replica, wm));
                    }
                    KeyHop::Peer(..) => {}
                }
            }
            let stores = sends
                .into_iter()
                .filter_map(|(next, replica, watermark)| {
                    let record = self.records.store.get(&key, unix)?.clone();
                    Some((
                        next,
                        Store {
                            hop_limit: self.config.hop_limit,
                            hops: 0,
                            watermark,
                            replica,
                            origin: self.key,
                            record,
                        },
                    ))
                })
                .collect::<Vec<_>>();
            left = left.saturating_sub(stores.len());
            changes.push(Handover {
                key,
                replicas,
                stores,
            });
        }
        for Handover {
            key,
            replicas,
            stores,
        } in changes
        {
            self.records.store.set_replicas(&key, replicas);
            for (next, s) in stores {
                self.metrics.records_handed_over += 1;
                self.enqueue(next, &Frame::Store(s));
            }
        }
        done
    }

    /// Placements per record, within what the wire carries.
    fn replicas(&self) -> u8 {
        self.config.record_replicas.clamp(1, MAX_REPLICAS)
    }

    /// Stores this node sends of its own per records tick (republished or handed over).
    fn store_budget(&self) -> usize {
        (self.config.stores_per_origin_per_sec as usize / 2).max(1)
    }

    fn arm_records(&mut self, at: Instant) {
        if self.timers.get(Timer::Records).is_none_or(|t| t > at) {
            self.timers.set(Timer::Records, at);
        }
    }

    fn record_limits(&self) -> Limits {
        Limits {
            max_bytes: self.config.record_store_bytes,
            max_per_publisher: self.config.records_per_publisher,
            max_ttl_secs: self.config.record_max_ttl.as_secs(),
        }
    }
}
