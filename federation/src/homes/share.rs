//! Replicas of one home tell each other of its new documents. A replica's custody makes a
//! new version (an import adds a replica, a revocation drops one) beside the running node;
//! the other replicas would otherwise keep serving the older version from their key servers
//! and in their transactions. Each replica sends every version it holds, once, to every node
//! listed in it or in the version it shared before (so a dropped replica learns it was
//! dropped), as an `org.grove.replica_document` EDU in a transaction of the home to that
//! node. The receiver takes it through [`super::Homes::offer`] like any document: signed by
//! the home key, newer than the one held, from a peer its held document lists.
//!
//! A replica takes a newer document that drops it: the home key signed it, and keeping the
//! older one would only make it serve a list that is no longer true. Once dropped it no
//! longer publishes the document on the ring (keepers would refuse it anyway), and what it
//! sends in the home's name is refused wherever the new document is held. What a dropped
//! replica can still do is withhold the new document and serve the older one to nodes that
//! never saw the newer; those learn the newer from the other replicas' transactions and from
//! the ring, whose records the newest version wins (see [`super::ring`]).

use std::{
    collections::HashMap,
    sync::Weak,
    time::{Duration, Instant},
};

use grove_overlay::tls::keys::NodeKey;
use grove_server::home::{self, ReplicaDocument};
use ruma::MilliSecondsSinceUnixEpoch;
use serde_json::json;
use tracing::{debug, info};

use crate::{Ctx, error::RequestError, keys};

/// How often this home's document is read for a new version.
const CHECK_EVERY: Duration = Duration::from_secs(3);
/// The first wait before a node that did not answer is tried again; doubled up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between tries of a node that does not answer.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// A node still to be told, and when to try it next.
struct Pending {
    next: Instant,
    wait: Duration,
}

/// The other nodes `doc` lists.
fn listed_others(doc: &ReplicaDocument, own: &str) -> impl Iterator<Item = NodeKey> {
    doc.replicas()
        .iter()
        .filter(|r| r.node_key != own)
        .filter_map(|r| NodeKey::from_hex(&r.node_key))
        .collect::<Vec<_>>()
        .into_iter()
}

/// Sends this home's document to its other replicas whenever its version changes, while
/// federation runs.
pub(crate) async fn share_forever(ctx: Weak<Ctx>, own: NodeKey) {
    let own_hex = own.to_hex();
    // The version being shared, the nodes still to be told of it, and the nodes it listed.
    let mut sharing: Option<ReplicaDocument> = None;
    let mut pending: HashMap<NodeKey, Pending> = HashMap::new();
    loop {
        let Some(strong) = ctx.upgrade() else { return };
        let name = strong.hs.config.server_name.clone();
        if keys::is_hex_name(&name) && name.as_str() != own_hex {
            match home::load(&strong.hs.storage, &name).await {
                Ok(Some(doc)) if sharing.as_ref().map(|d| d.version()) != Some(doc.version()) => {
                    let mut targets: Vec<NodeKey> = listed_others(&doc, &own_hex).collect();
                    if let Some(before) = &sharing {
                        targets.extend(listed_others(before, &own_hex));
                    }
                    pending = targets
                        .into_iter()
                        .map(|node| {
                            let first = Pending {
                                next: Instant::now(),
                                wait: RETRY_FIRST,
                            };
                            (node, first)
                        })
                        .collect();
                    sharing = Some(doc);
                }
                Ok(_) => {}
                Err(e) => debug!(error = %e, "this home's replica document not read"),
            }
            if let Some(doc) = &sharing {
                let due: Vec<NodeKey> = pending
                    .iter()
                    .filter(|(_, p)| p.next <= Instant::now())
                    .map(|(node, _)| *node)
                    .collect();
                for node in due {
                    if tell(&strong, node, doc).await {
                        pending.remove(&node);
                    } else if let Some(p) = pending.get_mut(&node) {
                        p.next = Instant::now() + p.wait;
                        p.wait = (p.wait * 2).min(RETRY_MAX);
                    }
                }
            }
        }
        drop(strong);
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// Sends `doc` to `node` in a transaction of the home; whether `node` answered at all (a
/// refusal is its answer: the document is not sent again).
async fn tell(ctx: &Ctx, node: NodeKey, doc: &ReplicaDocument) -> bool {
    let home = &ctx.hs.config.server_name;
    let body = json!({
        "origin": home,
        "origin_server_ts": MilliSecondsSinceUnixEpoch::now(),
        "pdus": [],
        "edus": [{ "edu_type": super::REPLICA_DOCUMENT_EDU, "content": doc.to_json() }],
    });
    let path = format!(
        "/_matrix/federation/v1/send/replica-document-{}",
        doc.version()
    );
    match ctx
        .client
        .request_at(node, home, http::Method::PUT, &path, Some(&body))
        .await
    {
        Ok(_) => {
            info!(%node, version = doc.version(), "replica document sent to a replica");
            true
        }
        Err(e @ RequestError::Remote { .. }) => {
            debug!(%node, error = %e, "replica refused the replica document");
            true
        }
        Err(e) => {
            debug!(%node, error = %e, "replica document not sent");
            false
        }
    }
}
