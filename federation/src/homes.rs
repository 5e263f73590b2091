//! Homes served by several replicas. A 64-hex server name is a home key; the nodes serving
//! the home, and the keys they sign with, are listed in its replica document
//! (`grove_server::home`), which only the home key can sign. This module keeps the newest
//! document of every home met (in memory, over the `replica_documents` table), and from it
//! answers three questions:
//!
//! - may overlay peer `P` speak for home `H`? Yes when `P` is `H` itself (a home whose key is
//!   its node key) or `H`'s document lists `P` (see [`crate::keys::KeyRing::admit`], which
//!   fetches the document from `P` when the held one does not list it);
//! - which key signed for `H` under a key ID? A listed replica's key, or a revoked one for
//!   what it signed up to its `expired_ts` ([`certified_key`]);
//! - where does a request to `H` go? To the replica that answered last, then to the others in
//!   the document's order ([`Homes::replicas_of`]).
//!
//! Documents come from a peer's key server, from `org.grove.replica_document` EDUs in
//! transactions (a home's replicas send each other its new versions, see [`share`]), and
//! from records on the overlay's ring; every one goes through
//! [`Homes::offer`]: checked against the name (the name is the home key), kept only when newer
//! than the held one, and counted when refused.

mod ring;
mod share;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use grove_overlay::{driver::OverlayHandle, tls::keys::NodeKey};
use grove_server::{
    Storage,
    home::{self, DocumentError, ReplicaDocument},
};
use ruma::{OwnedServerName, ServerName, serde::Base64};
use serde_json::Value;
use tracing::{debug, info};

use crate::{
    keys,
    metrics::{HomeLookup, HomeRefusal, Metrics},
};

pub(crate) use ring::publish_forever;
pub use ring::{HomeRecordPolicy, RecordError, document_record};
pub(crate) use share::share_forever;

/// The EDU type carrying a home's replica document in transactions.
pub const REPLICA_DOCUMENT_EDU: &str = "org.grove.replica_document";

/// Homes whose document (or its absence) is kept in memory, at most; past that the memory is
/// emptied and refilled from the database as homes are met again.
const MAX_HOMES: usize = 4096;

/// How long a lookup of a home on the ring may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after a lookup a home is not looked up again.
const LOOKUP_AGAIN_AFTER: Duration = Duration::from_secs(30);

/// Why a home's document or a peer speaking for it was refused.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// The document itself is refused: forged, malformed, of another home, or older than the
    /// one held.
    #[error("{0}")]
    Document(#[from] DocumentError),
    /// The peer is not listed as a replica of the home by the newest document known.
    #[error("{peer} is not a replica of {home}")]
    NotReplica {
        /// The home.
        home: OwnedServerName,
        /// The peer's overlay key, hex.
        peer: String,
    },
    /// The peer's key server gave no document of the home.
    #[error("no replica document of {home} from {peer}: {reason}")]
    Fetch {
        /// The home.
        home: OwnedServerName,
        /// The peer's overlay key, hex.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The document could not be read or kept.
    #[error("replica documents: {0}")]
    Storage(#[from] grove_server::Error),
}

impl HomeError {
    /// The label this refusal is counted under.
    fn refusal(&self) -> HomeRefusal {
        match self {
            HomeError::Document(DocumentError::BadSignature) => HomeRefusal::Forged,
            HomeError::Document(DocumentError::OtherHome { .. }) => HomeRefusal::OtherHome,
            HomeError::Document(DocumentError::NotNewer { .. }) => HomeRefusal::Stale,
            HomeError::Document(_) => HomeRefusal::Malformed,
            HomeError::NotReplica { .. } | HomeError::Fetch { .. } => HomeRefusal::NotReplica,
            HomeError::Storage(_) => HomeRefusal::Malformed,
        }
    }
}

/// The newest replica documents of the homes this node met, and the replica of each that
/// answered last.
pub struct Homes {
    storage: Storage,
    /// This node's own home, whose document custody commands change beside the running node:
    /// always read from the database.
    own: OwnedServerName,
    metrics: Arc<Metrics>,
    /// Home to its newest document, or `None` when the database holds none.
    documents: Mutex<HashMap<OwnedServerName, Option<Arc<ReplicaDocument>>>>,
    /// Home to the replica a request last reached.
    answered: Mutex<HashMap<OwnedServerName, NodeKey>>,
    /// Home to when it was last looked up on the ring.
    lookups: Mutex<HashMap<OwnedServerName, Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Homes {
    /// Homes kept in `storage`, refusals counted in `metrics`; `own` is this node's home.
    pub fn new(storage: Storage, metrics: Arc<Metrics>, own: OwnedServerName) -> Self {
        Self {
            storage,
            own,
            metrics,
            documents: Mutex::default(),
            answered: Mutex::default(),
            lookups: Mutex::default(),
        }
    }

    /// The newest document held for `home` (a hex name), from memory or the database.
    pub async fn document(&self, home: &ServerName) -> Option<Arc<ReplicaDocument>> {
        if !keys::is_hex_name(home) {
            return None;
        }
        if home.as_str() != self.own.as_str()
            && let Some(known) = lock(&self.documents).get(home)
        {
            return known.clone();
        }
        let loaded = match home::load(&self.storage, home).await {
            Ok(doc) => doc.map(Arc::new),
            Err(e) => {
                debug!(%home, error = %e, "replica document not read");
                return None;
            }
        };
        self.remember(home, loaded.clone());
        loaded
    }

    /// Keeps `doc` in memory as `home`'s, unless a newer one is there already.
    fn remember(&self, home: &ServerName, doc: Option<Arc<ReplicaDocument>>) {
        let mut documents = lock(&self.documents);
        if documents.len() >= MAX_HOMES && !documents.contains_key(home) {
            // Only a cache: the database keeps every document.
            documents.clear();
        }
        if let (Some(Some(held)), Some(new)) = (documents.get(home), &doc)
            && held.version() >= new.version()
        {
            return;
        }
        documents.insert(home.to_owned(), doc);
    }

    /// Checks `value` as a replica document of `home` and keeps it when it is newer than the
    /// one held. The document held is answered when `value` is that very document; anything
    /// else that is not newer is refused ([`DocumentError::NotNewer`]). Refusals are counted.
    pub async fn offer(
        &self,
        home: &ServerName,
        value: &Value,
    ) -> Result<Arc<ReplicaDocument>, HomeError> {
        let offered = self.check_and_keep(home, value).await;
        if let Err(e) = &offered {
            self.refused(e);
        }
        offered
    }

    /// Counts a refusal and says why in the log.
    pub(crate) fn refused(&self, error: &HomeError) {
        debug!(error = %error, "replica document or replica refused");
        self.metrics.home_refused(error.refusal());
    }

    async fn check_and_keep(
        &self,
        home: &ServerName,
        value: &Value,
    ) -> Result<Arc<ReplicaDocument>, HomeError> {
        let doc = ReplicaDocument::from_value(value)?;
        if doc.server_name() != home.as_str() {
            return Err(DocumentError::OtherHome {
                expected: home.to_string(),
                found: doc.server_name().to_owned(),
            }
            .into());
        }
        let held = self.document(home).await;
        if let Some(held) = &held
            && **held == doc
        {
            return Ok(held.clone());
        }
        doc.newer_than(held.as_ref().map(|h| h.version()))?;
        if !home::store(&self.storage, &doc).await? {
            // Another task stored a newer one meanwhile: read it back rather than guess.
            lock(&self.documents).remove(home);
            let newest = self.document(home).await.map_or(0, |d| d.version());
            return Err(DocumentError::NotNewer {
                held: newest,
                got: doc.version(),
            }
            .into());
        }
        info!(%home, version = doc.version(), replicas = doc.replicas().len(), "replica document taken");
        let doc = Arc::new(doc);
        self.remember(home, Some(doc.clone()));
        Ok(doc)
    }

    /// The nodes a request to `home` may go to, the one that answered last first, then the
    /// others in the document's order. Without a document: the node the name itself is.
    pub async fn replicas_of(&self, home: &ServerName) -> Vec<NodeKey> {
        let mut nodes: Vec<NodeKey> = match self.document(home).await {
            Some(doc) => doc
                .replicas()
                .iter()
                .filter_map(|r| NodeKey::from_hex(&r.node_key))
                .collect(),
            None => Vec::new(),
        };
        if nodes.is_empty() {
            nodes.extend(keys::node_key(home));
        }
        if let Some(last) = lock(&self.answered).get(home)
            && let Some(at) = nodes.iter().position(|n| n == last)
        {
            nodes[..=at].rotate_right(1);
        }
        nodes
    }

    /// The document of `home`: the one held, else the one its replicas published on the
    /// ring (checked and kept as any other; at most one lookup per home in
    /// [`LOOKUP_AGAIN_AFTER`]).
    pub async fn look_up(
        &self,
        overlay: &OverlayHandle,
        home: &ServerName,
    ) -> Option<Arc<ReplicaDocument>> {
        if let Some(doc) = self.document(home).await {
            return Some(doc);
        }
        let key = keys::node_key(home)?;
        {
            let mut lookups = lock(&self.lookups);
            if lookups
                .get(home)
                .is_some_and(|at| at.elapsed() < LOOKUP_AGAIN_AFTER)
            {
                self.metrics.home_lookup(HomeLookup::Skipped);
                return None;
            }
            if lookups.len() >= MAX_HOMES {
                lookups.retain(|_, at| at.elapsed() < LOOKUP_AGAIN_AFTER);
            }
            lookups.insert(home.to_owned(), Instant::now());
        }
        let found = self.look_up_record(overlay, home, key).await;
        self.metrics.home_lookup(if found.is_some() {
            HomeLookup::Found
        } else {
            HomeLookup::Missing
        });
        found
    }

    async fn look_up_record(
        &self,
        overlay: &OverlayHandle,
        home: &ServerName,
        key: NodeKey,
    ) -> Option<Arc<ReplicaDocument>> {
        let record = match overlay.lookup(key, LOOKUP_TIMEOUT).await {
            Ok(record) => record?,
            Err(e) => {
                debug!(%home, error = %e, "ring lookup failed");
                return None;
            }
        };
        let value = match serde_json::from_slice::<Value>(&record.value) {
            Ok(value) => value,
            Err(e) => {
                self.refused(&HomeError::Document(DocumentError::Malformed(
                    e.to_string(),
                )));
                return None;
            }
        };
        self.offer(home, &value).await.ok()
    }

    /// Notes that `node` answered a request to `home`: the next request goes there first.
    pub fn answered(&self, home: &ServerName, node: NodeKey) {
        let mut answered = lock(&self.answered);
        if answered.len() >= MAX_HOMES && !answered.contains_key(home) {
            answered.clear();
        }
        answered.insert(home.to_owned(), node);
    }

    /// The homes held in memory whose document lists `node` (to wake their senders when it
    /// becomes reachable).
    pub fn homes_served_by(&self, node: &NodeKey) -> Vec<OwnedServerName> {
        let hex = node.to_hex();
        lock(&self.documents)
            .iter()
            .filter(|(_, doc)| doc.as_ref().is_some_and(|d| d.replica(&hex).is_some()))
            .map(|(home, _)| home.clone())
            .collect()
    }
}

/// The key `doc` certifies under `key_id` for something signed at `at_ms`: a listed replica's
/// key at any time, a revoked key only up to its `expired_ts`.
pub fn certified_key(doc: &ReplicaDocument, key_id: &str, at_ms: u64) -> Option<Base64> {
    let key = doc
        .replicas()
        .iter()
        .find(|r| r.key_id == key_id)
        .map(|r| r.key.as_str())
        .or_else(|| {
            doc.revoked()
                .iter()
                .find(|r| r.key_id == key_id && at_ms <= r.expired_ts)
                .map(|r| r.key.as_str())
        })?;
    Base64::parse(key).ok()
}

/// Whether `doc` names `key_id`, listed or revoked.
pub fn names_key_id(doc: &ReplicaDocument, key_id: &str) -> bool {
    doc.replicas().iter().any(|r| r.key_id == key_id)
        || doc.revoked().iter().any(|r| r.key_id == key_id)
}
