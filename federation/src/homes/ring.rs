//! Replica documents as records on the overlay's ring, so a node that never met a home can
//! find its replicas. The record's ring key is the home key, its value the document; any
//! replica the document lists publishes it. The overlay knows nothing of documents: the root
//! package installs [`HomeRecordPolicy`] into the routing core, which keeps a record under a
//! key only when its publisher is that key or the value is a document signed by that key
//! (the name is the key) listing the publisher.

use std::{
    sync::Weak,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use grove_overlay::{
    driver::OverlayHandle,
    identity::{NodeKeypair, PublicKey},
    router::RecordPolicy,
    wire::{MAX_RECORD_VALUE, Record, WireError},
};
use grove_server::home::{self, ReplicaDocument};
use tracing::{debug, info, warn};

use crate::{Ctx, keys};

/// How often a replica checks whether its home's document changed.
const CHECK_EVERY: Duration = Duration::from_secs(30);
/// How often a replica that has not published yet looks again (for a peer, a document).
const FIRST_CHECKS: Duration = Duration::from_secs(2);
/// A record's lifetime (the overlay's longest).
const RECORD_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A record this old is published again with a new lifetime.
const RENEW_AFTER: Duration = Duration::from_secs(12 * 3600);

/// The record policy of a node that federates: self-certifying records, and homes' documents
/// published by their replicas.
#[derive(Debug, Clone, Copy, Default)]
pub struct HomeRecordPolicy;

impl RecordPolicy for HomeRecordPolicy {
    fn may_publish(&self, key: &PublicKey, publisher: &PublicKey) -> bool {
        key == publisher
    }

    fn may_keep(&self, record: &Record) -> bool {
        if record.key == record.publisher {
            return true;
        }
        // Parsing checks the home key's signature over the document.
        match ReplicaDocument::parse(&record.value) {
            Ok(doc) => {
                doc.server_name() == record.key.to_hex()
                    && doc.replica(&record.publisher.to_hex()).is_some()
            }
            Err(_) => false,
        }
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Why a document could not be made a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The document's server name is not a key.
    #[error("{0} is not a home key")]
    NotAKey(String),
    /// The document's version is too large to lead a record's sequence number (versions are
    /// milliseconds since the epoch: this is centuries away).
    #[error("version {0} too large for a record sequence")]
    VersionTooLarge(u64),
    /// The record could not be made (its value is too long).
    #[error("{0}")]
    Wire(#[from] WireError),
}

/// Bits of a record's sequence number given to renewals of one document version.
const RENEWAL_BITS: u32 = 20;

/// The sequence number of a record of `doc` made at `now_ms`: the document's version, then
/// the minutes since it was issued. A keeper replaces a record only with a higher sequence,
/// so a replica still publishing an older version never displaces a newer one, whenever it
/// publishes; renewals of one version replace each other in time order.
fn record_seq(doc: &ReplicaDocument, now_ms: u64) -> Result<u64, RecordError> {
    let minutes = (now_ms.saturating_sub(doc.issued_ts()) / 60_000).min((1 << RENEWAL_BITS) - 1);
    doc.version()
        .checked_mul(1 << RENEWAL_BITS)
        .map(|seq| seq | minutes)
        .ok_or(RecordError::VersionTooLarge(doc.version()))
}

/// The record publishing `doc` under its home key, signed by `node`.
pub fn document_record(node: &NodeKeypair, doc: &ReplicaDocument) -> Result<Record, RecordError> {
    let key = PublicKey::from_hex(doc.server_name())
        .ok_or_else(|| RecordError::NotAKey(doc.server_name().to_owned()))?;
    let now = unix_now();
    let seq = record_seq(doc, u64::try_from(now.as_millis()).unwrap_or(u64::MAX))?;
    let expires = (now + RECORD_LIFETIME).as_secs();
    Ok(Record::signed(
        node,
        key,
        seq,
        expires,
        doc.to_json_string().into_bytes(),
    )?)
}

/// Publishes this node's home's document on the ring while federation runs, again when it
/// changes and before the record expires. A home whose key is this node's key needs none:
/// its name is where it is.
pub(crate) async fn publish_forever(ctx: Weak<Ctx>, overlay: OverlayHandle, node: NodeKeypair) {
    let mut published: Option<(u64, Duration)> = None;
    loop {
        let Some(strong) = ctx.upgrade() else { return };
        let name = strong.hs.config.server_name.clone();
        let storage = strong.hs.storage.clone();
        drop(strong);
        // Published into a ring of one, a record would wait for the next republication to
        // reach its keepers: wait for a peer first.
        let linked = overlay.peers().await.is_ok_and(|peers| !peers.is_empty());
        if linked && keys::is_hex_name(&name) && name.as_str() != node.public_key().to_hex() {
            match home::load(&storage, &name).await {
                // A replica the document dropped publishes it no more: keepers would refuse it.
                Ok(Some(doc)) if doc.replica(&node.public_key().to_hex()).is_some() => {
                    let due = match published {
                        Some((version, at)) => {
                            version != doc.version() || unix_now() >= at + RENEW_AFTER
                        }
                        None => true,
                    };
                    if due && doc.to_json_string().len() > MAX_RECORD_VALUE {
                        warn!(
                            home = %name,
                            "replica document too large for a ring record: not published"
                        );
                        published = Some((doc.version(), unix_now()));
                    } else if due {
                        match document_record(&node, &doc) {
                            Ok(record) => match overlay.publish(record).await {
                                Ok(()) => {
                                    info!(home = %name, version = doc.version(), "replica document published on the ring");
                                    published = Some((doc.version(), unix_now()));
                                }
                                Err(e) => debug!(error = %e, "replica document not published"),
                            },
                            Err(e) => debug!(error = %e, "replica document record not made"),
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => debug!(error = %e, "this home's replica document not read"),
            }
        }
        let wait = if published.is_some() {
            CHECK_EVERY
        } else {
            FIRST_CHECKS
        };
        tokio::time::sleep(wait).await;
    }
}
