//! The records a node keeps for others, bounded in bytes, per publisher and in lifetime.
//!
//! Pure data: no routing and no clock. Every record is checked before it is kept (lifetime,
//! the validation policy, then the signature, cheapest first); a newer sequence replaces an
//! older one under the same key, anything else is refused.

use std::collections::HashMap;

use crate::identity::PublicKey;
use crate::router::metrics::DropReason;
use crate::wire::{MAX_RECORD_VALUE, Record};

/// How far ahead of this node's clock a record's expiry may be beyond the longest lifetime,
/// in seconds: publishers' clocks differ a little.
pub(crate) const CLOCK_SKEW_SECS: u64 = 300;

/// Bytes counted per record beyond its encoding (the map entry and its bookkeeping).
const ENTRY_OVERHEAD: usize = 96;

/// Decides who may publish under which key: the crate's user supplies it (for example, a
/// home's records may be published by any replica its document names).
pub trait RecordPolicy: Send {
    /// Whether `publisher` may publish a record under `key`.
    fn may_publish(&self, key: &PublicKey, publisher: &PublicKey) -> bool;

    /// Whether `record` may be kept (checked before its signature): by default, whether its
    /// publisher may publish under its key. A policy may read the value too, say for a
    /// signature of the key itself inside it that names the publisher.
    fn may_keep(&self, record: &Record) -> bool {
        self.may_publish(&record.key, &record.publisher)
    }
}

/// The default policy: self-certifying records, whose publisher is the key itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelfCertifying;

impl RecordPolicy for SelfCertifying {
    fn may_publish(&self, key: &PublicKey, publisher: &PublicKey) -> bool {
        key == publisher
    }
}

/// What a store keeps at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Total bytes of the records kept.
    pub(crate) max_bytes: usize,
    /// Records kept per publisher.
    pub(crate) max_per_publisher: usize,
    /// Longest lifetime accepted, in seconds from now.
    pub(crate) max_ttl_secs: u64,
}

/// What a successful put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// A record under a key not held before.
    New,
    /// A newer record replaced the one held.
    Replaced,
    /// The very record held already (a refresh or a handover of a copy).
    Same,
}

/// One record kept, with the placements it is kept for.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The record.
    pub(crate) record: Record,
    /// Bit `i` set: this node took it as replica `i` and is responsible for handing it over.
    pub(crate) replicas: u8,
}

/// The records kept for others, by ring key.
#[derive(Debug, Default)]
pub(crate) struct RecordStore {
    held: HashMap<PublicKey, Held>,
    per_publisher: HashMap<PublicKey, usize>,
    bytes: usize,
}

fn cost(r: &Record) -> usize {
    r.encoded_len() + ENTRY_OVERHEAD
}

/// Checks a record on its own: alive, not too long-lived, allowed, signed.
pub(crate) fn check(
    record: &Record,
    unix_now: u64,
    limits: &Limits,
    policy: &dyn RecordPolicy,
) -> Result<(), DropReason> {
    if record.value.len() > MAX_RECORD_VALUE {
        return Err(DropReason::RecordInvalid);
    }
    if record.expires <= unix_now
        || record.expires - unix_now > limits.max_ttl_secs.saturating_add(CLOCK_SKEW_SECS)
    {
        return Err(DropReason::RecordInvalid);
    }
    if !policy.may_keep(record) {
        return Err(DropReason::RecordForbidden);
    }
    if !record.verify() {
        return Err(DropReason::RecordInvalid);
    }
    Ok(())
}

impl RecordStore {
    /// Keeps `record` as replica `replica`, if it passes [`check`] and the bounds.
    pub(crate) fn put(
        &mut self,
        replica: u8,
        record: Record,
        unix_now: u64,
        limits: &Limits,
        policy: &dyn RecordPolicy,
    ) -> Result<Stored, DropReason> {
        let bit = 1u8.checked_shl(u32::from(replica)).unwrap_or(0);
        // A copy of what is held costs no signature check.
        if let Some(h) = self.held.get_mut(&record.key) {
            if h.record == record {
                if record.expires <= unix_now {
                    return Err(DropReason::RecordInvalid);
                }
                h.replicas |= bit;
                return Ok(Stored::Same);
            }
            if h.record.seq >= record.seq {
                return Err(DropReason::RecordStale);
            }
        }
        check(&record, unix_now, limits, policy)?;
        let new_cost = cost(&record);
        let (old_cost, old_publisher, replicas) = match self.held.get(&record.key) {
            Some(h) => (cost(&h.record), Some(h.record.publisher), h.replicas),
            None => (0, None, 0),
        };
        if self.bytes - old_cost + new_cost > limits.max_bytes {
            return Err(DropReason::RecordQuota);
        }
        if old_publisher != Some(record.publisher)
            && self
                .per_publisher
                .get(&record.publisher)
                .copied()
                .unwrap_or(0)
                >= limits.max_per_publisher
        {
            return Err(DropReason::RecordQuota);
        }
        if let Some(p) = old_publisher {
            self.release(&p);
        }
        *self.per_publisher.entry(record.publisher).or_default() += 1;
        self.bytes = self.bytes - old_cost + new_cost;
        let outcome = if old_publisher.is_some() {
            Stored::Replaced
        } else {
            Stored::New
        };
        self.held.insert(
            record.key,
            Held {
                record,
                replicas: replicas | bit,
            },
        );
        Ok(outcome)
    }

    /// The live record under `key`.
    pub(crate) fn get(&self, key: &PublicKey, unix_now: u64) -> Option<&Record> {
        self.held
            .get(key)
            .map(|h| &h.record)
            .filter(|r| r.expires > unix_now)
    }

    /// Drops every record expired at `unix_now`.
    pub(crate) fn expire(&mut self, unix_now: u64) {
        let gone: Vec<PublicKey> = self
            .held
            .iter()
            .filter(|(_, h)| h.record.expires <= unix_now)
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(h) = self.held.remove(&k) {
                self.bytes -= cost(&h.record);
                self.release(&h.record.publisher);
            }
        }
    }

    fn release(&mut self, publisher: &PublicKey) {
        if let Some(n) = self.per_publisher.get_mut(publisher) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_publisher.remove(publisher);
            }
        }
    }

    /// Every record kept, with its placements, for handing over.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Held> {
        self.held.values()
    }

    /// Sets the placements the record under `key` is kept for.
    pub(crate) fn set_replicas(&mut self, key: &PublicKey, replicas: u8) {
        if let Some(h) = self.held.get_mut(key) {
            h.replicas = replicas;
        }
    }

    /// Records kept.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Bytes counted against the budget.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}
