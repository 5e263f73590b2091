//! Signed records on the ring and the three frames that carry them: [`Store`] (put),
//! [`Lookup`] (get) and [`LookupReply`].
//!
//! A record is stored under a 32-byte ring key at [`placement`]s of that key, one per replica;
//! replica 0 is the key itself. Store and lookup frames are key-routed toward a placement and
//! end at the node closest to it; a reply is key-routed toward the asker's own key. Every
//! frame carries a hop limit, a hop count and a ring watermark, like key-routed traffic.

use sha2::{Digest, Sha256};

use crate::identity::{NodeKeypair, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, Signature};
use crate::wire::codec::Reader;
use crate::wire::{Watermark, WireError};

#[cfg(test)]
mod tests;

/// Domain separation for record signatures.
const RECORD_DOMAIN: &[u8] = b"grove-record-v1";
/// Domain separation for the placements of a key's replicas.
const PLACEMENT_DOMAIN: &[u8] = b"grove-record-place-v1";

/// Largest record value, in bytes.
pub const MAX_RECORD_VALUE: usize = 2048;
/// Most replicas a record may be stored as (a replica index is below this).
pub const MAX_REPLICAS: u8 = 8;
/// Length of a record with an empty value: key, publisher, sequence, expiry, value length,
/// signature.
pub const RECORD_HEADER_LEN: usize = 2 * PUBLIC_KEY_LEN + 8 + 8 + 2 + SIGNATURE_LEN;

/// The ring position of replica `replica` of the records under `key`: the key itself for
/// replica 0, a hash of the key and the index for the others, so replicas land on unrelated
/// parts of the ring.
pub fn placement(key: &PublicKey, replica: u8) -> PublicKey {
    if replica == 0 {
        return *key;
    }
    let mut h = Sha256::new();
    h.update(PLACEMENT_DOMAIN);
    h.update(key.0);
    h.update([replica]);
    PublicKey(h.finalize().into())
}

/// A small value published under a ring key, signed by its publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The ring key it is stored under.
    pub key: PublicKey,
    /// Who signed it.
    pub publisher: PublicKey,
    /// A higher sequence replaces a lower one under the same key.
    pub seq: u64,
    /// When it expires, in seconds since the Unix epoch.
    pub expires: u64,
    /// Opaque bytes, at most [`MAX_RECORD_VALUE`].
    pub value: Vec<u8>,
    /// The publisher's signature over [`Record::signing_bytes`].
    pub signature: Signature,
}

impl Record {
    /// A record signed by `signer` (its key becomes the publisher).
    pub fn signed(
        signer: &NodeKeypair,
        key: PublicKey,
        seq: u64,
        expires: u64,
        value: Vec<u8>,
    ) -> Result<Record, WireError> {
        if value.len() > MAX_RECORD_VALUE {
            return Err(WireError::TooLong {
                what: "record value",
                len: value.len(),
                max: MAX_RECORD_VALUE,
            });
        }
        let publisher = signer.public_key();
        let msg = Self::signing_bytes(&key, &publisher, seq, expires, &value);
        Ok(Record {
            key,
            publisher,
            seq,
            expires,
            value,
            signature: Signature(signer.sign(&msg)),
        })
    }

    /// The bytes the publisher signs: the domain, then every field but the signature.
    pub fn signing_bytes(
        key: &PublicKey,
        publisher: &PublicKey,
        seq: u64,
        expires: u64,
        value: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_DOMAIN.len() + RECORD_HEADER_LEN + value.len());
        out.extend_from_slice(RECORD_DOMAIN);
        out.extend_from_slice(&key.0);
        out.extend_from_slice(&publisher.0);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&expires.to_be_bytes());
        // Both lengths fit: values are bounded by `MAX_RECORD_VALUE`.
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    /// Whether the publisher's signature verifies.
    pub fn verify(&self) -> bool {
        let msg = Self::signing_bytes(
            &self.key,
            &self.publisher,
            self.seq,
            self.expires,
            &self.value,
        );
        self.publisher.verify(&msg, &self.signature)
    }

    /// Bytes of its encoding (what a store counts against its budget).
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.value.len()
    }

    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.publisher.0);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.expires.to_be_bytes());
        let len = self.value.len().min(MAX_RECORD_VALUE);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(self.value.get(..len).unwrap_or_default());
        out.extend_from_slice(&self.signature.0);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Record, WireError> {
        let key = r.key()?;
        let publisher = r.key()?;
        let seq = r.u64()?;
        let expires = r.u64()?;
        let len = usize::from(r.u16()?);
        if len > MAX_RECORD_VALUE {
            return Err(WireError::TooLong {
                what: "record value",
                len,
                max: MAX_RECORD_VALUE,
            });
        }
        let value = r.take(len)?.to_vec();
        let signature = r.sig()?;
        Ok(Record {
            key,
            publisher,
            seq,
            expires,
            value,
            signature,
        })
    }
}

/// Put: a record on its way to the node closest to one of its placements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// Hops left before the frame is dropped.
    pub hop_limit: u8,
    /// Hops taken so far.
    pub hops: u8,
    /// Loop guard.
    pub watermark: Option<Watermark>,
    /// Which placement of the record's key this is routed toward (below [`MAX_REPLICAS`]).
    pub replica: u8,
    /// The node that sent it (the publisher's node, or a holder handing it over).
    pub origin: PublicKey,
    /// The record.
    pub record: Record,
}

/// Get: asks the node closest to a placement of `key` for the record it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// Hops left before the frame is dropped.
    pub hop_limit: u8,
    /// Hops taken so far.
    pub hops: u8,
    /// Loop guard.
    pub watermark: Option<Watermark>,
    /// Which placement of `key` this is routed toward (below [`MAX_REPLICAS`]).
    pub replica: u8,
    /// The asking node; the reply is routed to it.
    pub origin: PublicKey,
    /// The asker's number for this lookup, echoed in the reply.
    pub nonce: u64,
    /// The ring key asked for.
    pub key: PublicKey,
}

/// The answer to a [`Lookup`], routed by key back to the asker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupReply {
    /// Hops left before the frame is dropped.
    pub hop_limit: u8,
    /// Hops taken so far by the reply.
    pub hops: u8,
    /// Hops the lookup took to reach the answering node.
    pub lookup_hops: u8,
    /// Loop guard.
    pub watermark: Option<Watermark>,
    /// The node that asked.
    pub asker: PublicKey,
    /// The lookup's nonce.
    pub nonce: u64,
    /// The ring key asked for.
    pub key: PublicKey,
    /// The record held, if any.
    pub record: Option<Record>,
}

fn watermark_len(w: &Option<Watermark>) -> usize {
    1 + w.map_or(0, |_| PUBLIC_KEY_LEN + 8)
}

fn put_watermark(out: &mut Vec<u8>, w: &Option<Watermark>) {
    match w {
        Some(w) => {
            out.push(1);
            out.extend_from_slice(&w.key.0);
            out.extend_from_slice(&w.seq.to_be_bytes());
        }
        None => out.push(0),
    }
}

fn read_watermark(r: &mut Reader<'_>) -> Result<Option<Watermark>, WireError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(Watermark {
            key: r.key()?,
            seq: r.u64()?,
        })),
        _ => Err(WireError::Invalid("watermark marker")),
    }
}

fn read_replica(r: &mut Reader<'_>) -> Result<u8, WireError> {
    let replica = r.u8()?;
    if replica >= MAX_REPLICAS {
        return Err(WireError::Invalid("replica index"));
    }
    Ok(replica)
}

impl Store {
    /// Length of the body (without the type byte).
    pub(crate) fn body_len(&self) -> usize {
        2 + watermark_len(&self.watermark) + 1 + PUBLIC_KEY_LEN + self.record.encoded_len()
    }

    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        out.push(self.hop_limit);
        out.push(self.hops);
        put_watermark(out, &self.watermark);
        out.push(self.replica);
        out.extend_from_slice(&self.origin.0);
        self.record.put(out);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Store, WireError> {
        Ok(Store {
            hop_limit: r.u8()?,
            hops: r.u8()?,
            watermark: read_watermark(r)?,
            replica: read_replica(r)?,
            origin: r.key()?,
            record: Record::read(r)?,
        })
    }
}

impl Lookup {
    /// Length of the body (without the type byte).
    pub(crate) fn body_len(&self) -> usize {
        2 + watermark_len(&self.watermark) + 1 + 2 * PUBLIC_KEY_LEN + 8
    }

    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        out.push(self.hop_limit);
        out.push(self.hops);
        put_watermark(out, &self.watermark);
        out.push(self.replica);
        out.extend_from_slice(&self.origin.0);
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.key.0);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Lookup, WireError> {
        Ok(Lookup {
            hop_limit: r.u8()?,
            hops: r.u8()?,
            watermark: read_watermark(r)?,
            replica: read_replica(r)?,
            origin: r.key()?,
            nonce: r.u64()?,
            key: r.key()?,
        })
    }
}

impl LookupReply {
    /// Length of the body (without the type byte).
    pub(crate) fn body_len(&self) -> usize {
        3 + watermark_len(&self.watermark)
            + 2 * PUBLIC_KEY_LEN
            + 8
            + 1
            + self.record.as_ref().map_or(0, Record::encoded_len)
    }

    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        out.push(self.hop_limit);
        out.push(self.hops);
        out.push(self.lookup_hops);
        put_watermark(out, &self.watermark);
        out.extend_from_slice(&self.asker.0);
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.key.0);
        match &self.record {
            Some(rec) => {
                out.push(1);
                rec.put(out);
            }
            None => out.push(0),
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<LookupReply, WireError> {
        Ok(LookupReply {
            hop_limit: r.u8()?,
            hops: r.u8()?,
            lookup_hops: r.u8()?,
            watermark: read_watermark(r)?,
            asker: r.key()?,
            nonce: r.u64()?,
            key: r.key()?,
            record: match r.u8()? {
                0 => None,
                1 => Some(Record::read(r)?),
                _ => return Err(WireError::Invalid("record marker")),
            },
        })
    }
}
