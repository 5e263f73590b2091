//! The sender: fills the persistent per-destination queues from the event stream, and runs one
//! task per destination that sends its queue in transactions of up to 50 PDUs and 100 EDUs,
//! backing off exponentially on failure and retrying at once when the overlay reports the
//! destination reachable again.
//!
//! EDUs come in two kinds. Those that must arrive (to-device messages, device list and signing
//! key updates, receipts) are queued in the database like events, so neither side's restart
//! loses them. Those only worth having now (typing, presence) wait in memory, a bounded number
//! per destination: one with a key replaces the waiting one with the same key, so a
//! destination that was away gets the latest state rather than every step, and a failed
//! transaction puts its ephemeral EDUs back unless newer ones replaced them.
//!
//! A node serving a hex-named home adds the home's replica document as an
//! `org.grove.replica_document` EDU to the first transaction each destination task sends, and
//! again to the next one after the document changes: the destination then knows every replica
//! it may reach the home at, and which keys sign for it.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use grove_server::{Homeserver, StreamPosition};
use ruma::{OwnedServerName, ServerName};
use serde_json::{Value, json};
use tokio::{sync::Notify, task::JoinHandle};
use tracing::{debug, warn};

use crate::{
    client::{Client, segment},
    metrics::Metrics,
};

/// PDUs in one transaction, at most.
pub const MAX_PDUS_PER_TXN: i64 = 50;
/// Stream positions examined per fill step.
const FILL_BATCH: i64 = 500;
/// First retry delay after a failed transaction.
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest delay between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// How long the filler sleeps between checks when nothing wakes it.
const FILL_IDLE: Duration = Duration::from_secs(30);

/// EDUs in one transaction, at most (the receiver's limit).
pub const MAX_EDUS_PER_TXN: usize = 100;
/// EDU bytes in one transaction, at most, well inside the receiver's body limit.
const MAX_EDU_BYTES_PER_TXN: usize = 2 * 1024 * 1024;
/// Ephemeral EDUs waiting for one destination, at most; the oldest go first.
const MAX_EPHEMERAL_PER_DESTINATION: usize = 100;

struct Destination {
    work: Arc<Notify>,
    reachable: Arc<Notify>,
    /// Typing and presence EDUs not yet sent.
    ephemeral: Arc<Mutex<PendingEdus>>,
    task: JoinHandle<()>,
}

/// Ephemeral EDUs waiting for one destination, oldest first, each with its replacement key.
type PendingEdus = VecDeque<(Option<String>, Value)>;

/// Whether an EDU must survive restarts and failures until delivered.
fn is_durable(edu: &Value) -> bool {
    !matches!(edu["edu_type"].as_str(), Some("m.typing" | "m.presence"))
}

/// The outgoing side of federation.
#[derive(Clone)]
pub struct Sender {
    hs: Homeserver,
    client: Client,
    metrics: Arc<Metrics>,
    destinations: Arc<Mutex<HashMap<OwnedServerName, Destination>>>,
}

impl Sender {
    /// A sender over the node's queues.
    pub fn new(hs: Homeserver, client: Client, metrics: Arc<Metrics>) -> Self {
        Self {
            hs,
            client,
            metrics,
            destinations: Arc::default(),
        }
    }

    /// Starts the task that fills the queues, and a task for every destination with queued
    /// events.
    pub fn start(&self) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            match this.hs.federation_queue.destinations().await {
                Ok(list) => {
                    for d in list {
                        this.wake(&d);
                    }
                }
                Err(e) => warn!(error = %e, "reading federation queues"),
            }
            this.fill_forever().await;
        })
    }

    async fn fill_forever(&self) {
        let ours = self.hs.config.server_name.clone();
        loop {
            // Taken before filling, so a commit during the fill wakes the wait below at once.
            let before: StreamPosition = self.hs.notifier.current();
            loop {
                match self.hs.federation_queue.fill(&ours, FILL_BATCH).await {
                    Ok((touched, more)) => {
                        for d in &touched {
                            self.wake(d);
                        }
                        if !more {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "filling federation queues");
                        tokio::time::sleep(BACKOFF_INITIAL).await;
                        break;
                    }
                }
            }
            self.hs.notifier.wait_beyond(before, FILL_IDLE).await;
        }
    }

    /// Tells the destination's task there is work, starting the task if needed.
    pub fn wake(&self, destination: &ServerName) {
        self.destination(destination).work.notify_one();
    }

    /// Queues EDUs for `destination`: durable kinds in the database (sent even after a
    /// restart), typing and presence in memory. They go out in the destination's next
    /// transaction.
    pub async fn queue_edus(&self, destination: &ServerName, edus: Vec<Value>) {
        if destination == self.hs.config.server_name {
            return;
        }
        let (durable, ephemeral): (Vec<Value>, Vec<Value>) = edus.into_iter().partition(is_durable);
        if !durable.is_empty() {
            let texts: Vec<String> = durable.iter().map(Value::to_string).collect();
            match self
                .hs
                .federation_queue
                .push_edus(destination, &texts)
                .await
            {
                Ok(()) => self.wake(destination),
                Err(e) => warn!(%destination, error = %e, "queueing EDUs"),
            }
        }
        for edu in ephemeral {
            // A user's typing in a room is one state: the newest replaces what waits.
            let key = (edu["edu_type"] == "m.typing").then(|| {
                format!(
                    "m.typing {} {}",
                    edu["content"]["room_id"].as_str().unwrap_or_default(),
                    edu["content"]["user_id"].as_str().unwrap_or_default()
                )
            });
            self.queue_edu(destination, key, edu);
        }
    }

    /// Queues an ephemeral EDU for `destination`, in memory; one with a `key` replaces the
    /// waiting EDU with the same key.
    pub fn queue_edu(&self, destination: &ServerName, key: Option<String>, edu: Value) {
        if destination == self.hs.config.server_name {
            return;
        }
        let handles = self.destination(destination);
        {
            let mut waiting = match handles.ephemeral.lock() {
                Ok(w) => w,
                Err(p) => p.into_inner(),
            };
            if key.is_some() {
                waiting.retain(|(k, _)| *k != key);
            }
            waiting.push_back((key, edu));
            while waiting.len() > MAX_EPHEMERAL_PER_DESTINATION {
                waiting.pop_front();
            }
        }
        handles.work.notify_one();
    }

    /// The destination's handles, starting its task if needed.
    fn destination(&self, destination: &ServerName) -> Handles {
        let mut map = match self.destinations.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(d) = map.get(destination) {
            return Handles {
                work: d.work.clone(),
                ephemeral: d.ephemeral.clone(),
            };
        }
        let work = Arc::new(Notify::new());
        let reachable = Arc::new(Notify::new());
        let ephemeral = Arc::new(Mutex::new(VecDeque::new()));
        let task = tokio::spawn(self.clone().run_destination(
            destination.to_owned(),
            work.clone(),
            reachable.clone(),
            ephemeral.clone(),
        ));
        map.insert(
            destination.to_owned(),
            Destination {
                work: work.clone(),
                reachable,
                ephemeral: ephemeral.clone(),
                task,
            },
        );
        Handles { work, ephemeral }
    }

    /// The destination became reachable: retry now instead of after the back-off.
    pub fn reachable(&self, destination: &ServerName) {
        let map = match self.destinations.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(d) = map.get(destination) {
            d.reachable.notify_one();
        }
    }

    /// Stops every task.
    pub fn stop(&self) {
        let mut map = match self.destinations.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for (_, d) in map.drain() {
            d.task.abort();
        }
    }

    async fn run_destination(
        self,
        destination: OwnedServerName,
        work: Arc<Notify>,
        reachable: Arc<Notify>,
        ephemeral: Arc<Mutex<PendingEdus>>,
    ) {
        let mut backoff = BACKOFF_INITIAL;
        // The first pass sends whatever was queued before this task started.
        let mut pending = true;
        // The version of this home's document the destination was last given.
        let mut document_sent: Option<u64> = None;
        loop {
            if !pending {
                work.notified().await;
            }
            pending = false;
            loop {
                let txn = match self.next_transaction(&destination, &ephemeral).await {
                    Ok(Some(txn)) => txn,
                    Ok(None) => {
                        backoff = BACKOFF_INITIAL;
                        break;
                    }
                    Err(e) => {
                        warn!(%destination, error = %e, "reading federation queue");
                        break;
                    }
                };
                let txn_id = format!("{:016x}", rand::random::<u64>());
                let mut edus: Vec<&Value> = txn
                    .edus
                    .iter()
                    .chain(txn.ephemeral.iter().map(|(_, e)| e))
                    .collect();
                // A full transaction leaves the document to the next one.
                let document = match self.document_edu(document_sent).await {
                    Some(document) if edus.len() < MAX_EDUS_PER_TXN => Some(document),
                    _ => None,
                };
                if let Some((_, edu)) = &document {
                    edus.push(edu);
                }
                let body = json!({
                    "origin": self.hs.config.server_name.as_str(),
                    "origin_server_ts": u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get()),
                    "pdus": txn.pdus,
                    "edus": edus,
                });
                let document_version = document.map(|(version, _)| version);
                let path = format!("/_matrix/federation/v1/send/{}", segment(&txn_id));
                let pdus = txn.pdu_ids.len();
                let edus = txn.edus.len() + txn.ephemeral.len();
                debug!(%destination, pdus, edus, "sending transaction");
                match self
                    .client
                    .request(&destination, http::Method::PUT, &path, Some(&body))
                    .await
                {
                    Ok(_) => {
                        debug!(%destination, pdus, "transaction sent");
                        self.metrics.transaction_sent(pdus, true);
                        let queue = &self.hs.federation_queue;
                        if let Err(e) = queue.remove(&destination, &txn.pdu_ids).await {
                            warn!(%destination, error = %e, "clearing federation queue");
                        }
                        if let Some(upto) = txn.last_edu
                            && let Err(e) = queue.remove_edus(&destination, upto).await
                        {
                            warn!(%destination, error = %e, "clearing EDU queue");
                        }
                        backoff = BACKOFF_INITIAL;
                        if document_version.is_some() {
                            document_sent = document_version;
                        }
                    }
                    Err(e) => {
                        debug!(%destination, error = %e, ?backoff, "transaction failed");
                        self.metrics.transaction_sent(pdus, false);
                        return_edus(&ephemeral, txn.ephemeral);
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = reachable.notified() => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// This home's replica document as an EDU with its version, when it is not the version
    /// `sent` (a node without a hex name has none).
    async fn document_edu(&self, sent: Option<u64>) -> Option<(u64, Value)> {
        let name = &self.hs.config.server_name;
        if !crate::keys::is_hex_name(name) {
            return None;
        }
        // Read each time: custody commands change the document beside the running node.
        let doc = match grove_server::home::load(&self.hs.storage, name).await {
            Ok(doc) => doc?,
            Err(e) => {
                debug!(error = %e, "this home's replica document not read");
                return None;
            }
        };
        if sent == Some(doc.version()) {
            return None;
        }
        let edu =
            json!({ "edu_type": crate::homes::REPLICA_DOCUMENT_EDU, "content": doc.to_json() });
        Some((doc.version(), edu))
    }

    /// The next transaction for `destination`: its oldest queued events, its oldest durable
    /// EDUs and the waiting ephemeral ones (taken: a failed send puts them back). None when
    /// there is nothing to send.
    async fn next_transaction(
        &self,
        destination: &ServerName,
        ephemeral: &Mutex<PendingEdus>,
    ) -> grove_server::Result<Option<Transaction>> {
        let queue = &self.hs.federation_queue;
        let batch = queue.peek(destination, MAX_PDUS_PER_TXN).await?;
        let durable = queue
            .peek_edus(destination, MAX_EDUS_PER_TXN as i64)
            .await?;
        let mut edus = Vec::new();
        let mut bytes = 0;
        let mut last_edu = None;
        for queued in durable {
            // The first EDU goes even over the budget: each came in a client request far
            // smaller than the receiver's body limit, so it fits a transaction alone.
            if !edus.is_empty() && bytes + queued.edu.len() > MAX_EDU_BYTES_PER_TXN {
                break;
            }
            bytes += queued.edu.len();
            last_edu = Some(queued.id);
            match serde_json::from_str::<Value>(&queued.edu) {
                Ok(edu) => edus.push(edu),
                Err(e) => warn!(%destination, error = %e, "dropping an unreadable queued EDU"),
            }
        }
        let taken: PendingEdus = {
            let mut waiting = match ephemeral.lock() {
                Ok(w) => w,
                Err(p) => p.into_inner(),
            };
            let n = waiting
                .len()
                .min(MAX_EDUS_PER_TXN.saturating_sub(edus.len()));
            waiting.drain(..n).collect()
        };
        if batch.is_empty() && edus.is_empty() && taken.is_empty() && last_edu.is_none() {
            return Ok(None);
        }
        // What a room's server ACL denies the destination is left out (and leaves the queue
        // with the rest when the transaction is delivered).
        let mut pdus = Vec::with_capacity(batch.len());
        for queued in &batch {
            let Ok(pdu) = serde_json::from_str::<Value>(&queued.pdu) else {
                continue;
            };
            if self.room_allows(&pdu["room_id"], destination).await {
                pdus.push(pdu);
            } else {
                debug!(%destination, event = %queued.event_id, "withheld by the room's server ACL");
            }
        }
        let mut allowed_edus = Vec::with_capacity(edus.len());
        for edu in edus {
            if let Some(edu) = self.acl_filtered(edu, destination).await {
                allowed_edus.push(edu);
            }
        }
        let edus = allowed_edus;
        let mut allowed_taken = PendingEdus::new();
        for (key, edu) in taken {
            if let Some(edu) = self.acl_filtered(edu, destination).await {
                allowed_taken.push_back((key, edu));
            }
        }
        let taken = allowed_taken;
        Ok(Some(Transaction {
            pdus,
            pdu_ids: batch.into_iter().map(|q| q.event_id).collect(),
            edus,
            ephemeral: taken,
            last_edu,
        }))
    }
}

impl Sender {
    /// Whether the room named by `room_id` (a JSON string; anything else names no room) lets
    /// `destination` take part.
    async fn room_allows(&self, room_id: &Value, destination: &ServerName) -> bool {
        let Some(room) = room_id.as_str().and_then(|r| ruma::RoomId::parse(r).ok()) else {
            return true;
        };
        self.hs
            .rooms
            .server_allowed(&room, destination)
            .await
            .unwrap_or(false)
    }

    /// An EDU about rooms (typing, receipts) without what those rooms' server ACLs deny
    /// `destination`; None when nothing is left. Other EDUs pass whole.
    async fn acl_filtered(&self, mut edu: Value, destination: &ServerName) -> Option<Value> {
        match edu["edu_type"].as_str() {
            Some("m.typing") => self
                .room_allows(&edu["content"]["room_id"], destination)
                .await
                .then_some(edu),
            Some("m.receipt") => {
                let rooms: Vec<String> = edu["content"]
                    .as_object()
                    .map(|c| c.keys().cloned().collect())
                    .unwrap_or_default();
                for room in rooms {
                    if !self
                        .room_allows(&Value::String(room.clone()), destination)
                        .await
                        && let Some(content) = edu["content"].as_object_mut()
                    {
                        content.remove(&room);
                    }
                }
                let empty = edu["content"].as_object().is_none_or(|c| c.is_empty());
                (!empty).then_some(edu)
            }
            _ => Some(edu),
        }
    }
}

/// Puts back the ephemeral EDUs of a failed transaction, ahead of newer ones, unless a newer
/// one with the same key replaced them meanwhile.
fn return_edus(waiting: &Mutex<PendingEdus>, taken: PendingEdus) {
    let mut waiting = match waiting.lock() {
        Ok(w) => w,
        Err(p) => p.into_inner(),
    };
    for (key, edu) in taken.into_iter().rev() {
        if key.is_some() && waiting.iter().any(|(k, _)| *k == key) {
            continue;
        }
        waiting.push_front((key, edu));
    }
    while waiting.len() > MAX_EPHEMERAL_PER_DESTINATION {
        waiting.pop_front();
    }
}

/// The parts of a destination's state that queueing needs.
struct Handles {
    work: Arc<Notify>,
    ephemeral: Arc<Mutex<PendingEdus>>,
}

/// One transaction to send.
struct Transaction {
    pdus: Vec<Value>,
    pdu_ids: Vec<ruma::OwnedEventId>,
    edus: Vec<Value>,
    /// The ephemeral EDUs in it, with their keys.
    ephemeral: PendingEdus,
    /// The queue ID of the last durable EDU in it.
    last_edu: Option<i64>,
}
