//! The sender: fills the persistent per-destination queues from the event stream, and runs one
//! task per destination that sends its queue in transactions of up to 50 PDUs, backing off
//! exponentially on failure and retrying at once when the overlay reports the destination
//! reachable again.
//!
//! EDUs that only matter while fresh (presence) ride along in the same transactions from a
//! bounded in-memory queue per destination: [`Sender::queue_edu`]. An EDU with a key replaces
//! the queued one with the same key, so a destination that was away gets the latest state
//! rather than every step; they are not kept across a restart.

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

use crate::client::{Client, segment};

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
/// EDUs in one transaction, at most (the spec's limit).
pub const MAX_EDUS_PER_TXN: usize = 100;
/// EDUs waiting for one destination, at most; the oldest are dropped beyond.
const MAX_PENDING_EDUS: usize = 1_000;

struct Destination {
    work: Arc<Notify>,
    reachable: Arc<Notify>,
    task: JoinHandle<()>,
}

/// EDUs waiting for one destination, oldest first, each with its replacement key.
type PendingEdus = VecDeque<(Option<String>, Value)>;

/// The outgoing side of federation.
#[derive(Clone)]
pub struct Sender {
    hs: Homeserver,
    client: Client,
    destinations: Arc<Mutex<HashMap<OwnedServerName, Destination>>>,
    edus: Arc<Mutex<HashMap<OwnedServerName, PendingEdus>>>,
}

impl Sender {
    /// A sender over the node's queues.
    pub fn new(hs: Homeserver, client: Client) -> Self {
        Self {
            hs,
            client,
            destinations: Arc::default(),
            edus: Arc::default(),
        }
    }

    /// Queues an EDU for `destination` and wakes its task. A queued EDU with the same `key`
    /// is replaced.
    pub fn queue_edu(&self, destination: &ServerName, key: Option<String>, edu: Value) {
        {
            let mut map = match self.edus.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            let queue = map.entry(destination.to_owned()).or_default();
            if key.is_some() {
                queue.retain(|(k, _)| *k != key);
            }
            queue.push_back((key, edu));
            while queue.len() > MAX_PENDING_EDUS {
                queue.pop_front();
            }
        }
        self.wake(destination);
    }

    /// Takes up to [`MAX_EDUS_PER_TXN`] queued EDUs of `destination`.
    fn take_edus(&self, destination: &ServerName) -> PendingEdus {
        let mut map = match self.edus.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let Some(queue) = map.get_mut(destination) else {
            return PendingEdus::new();
        };
        let n = queue.len().min(MAX_EDUS_PER_TXN);
        let taken: PendingEdus = queue.drain(..n).collect();
        if queue.is_empty() {
            map.remove(destination);
        }
        taken
    }

    /// Puts back EDUs a failed transaction carried, ahead of newer ones, unless a newer one
    /// with the same key replaced them meanwhile.
    fn return_edus(&self, destination: &ServerName, taken: PendingEdus) {
        let mut map = match self.edus.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let queue = map.entry(destination.to_owned()).or_default();
        for (key, edu) in taken.into_iter().rev() {
            if key.is_some() && queue.iter().any(|(k, _)| *k == key) {
                continue;
            }
            queue.push_front((key, edu));
        }
        while queue.len() > MAX_PENDING_EDUS {
            queue.pop_front();
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
        let mut map = match self.destinations.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(d) = map.get(destination) {
            d.work.notify_one();
            return;
        }
        let work = Arc::new(Notify::new());
        let reachable = Arc::new(Notify::new());
        work.notify_one();
        let task = tokio::spawn(self.clone().run_destination(
            destination.to_owned(),
            work.clone(),
            reachable.clone(),
        ));
        map.insert(
            destination.to_owned(),
            Destination {
                work,
                reachable,
                task,
            },
        );
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
    ) {
        let mut backoff = BACKOFF_INITIAL;
        loop {
            work.notified().await;
            loop {
                let batch = match self
                    .hs
                    .federation_queue
                    .peek(&destination, MAX_PDUS_PER_TXN)
                    .await
                {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(%destination, error = %e, "reading federation queue");
                        break;
                    }
                };
                let edus = self.take_edus(&destination);
                if batch.is_empty() && edus.is_empty() {
                    backoff = BACKOFF_INITIAL;
                    break;
                }
                let pdus: Vec<Value> = batch
                    .iter()
                    .filter_map(|q| serde_json::from_str(&q.pdu).ok())
                    .collect();
                let edu_values: Vec<&Value> = edus.iter().map(|(_, e)| e).collect();
                let txn_id = format!("{:016x}", rand::random::<u64>());
                let body = json!({
                    "origin": self.hs.config.server_name.as_str(),
                    "origin_server_ts": u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get()),
                    "pdus": pdus,
                    "edus": edu_values,
                });
                let path = format!("/_matrix/federation/v1/send/{}", segment(&txn_id));
                debug!(%destination, pdus = batch.len(), edus = edus.len(), "sending transaction");
                match self
                    .client
                    .request(&destination, http::Method::PUT, &path, Some(&body))
                    .await
                {
                    Ok(_) => {
                        debug!(%destination, pdus = batch.len(), "transaction sent");
                        let ids: Vec<_> = batch.into_iter().map(|q| q.event_id).collect();
                        if let Err(e) = self.hs.federation_queue.remove(&destination, &ids).await {
                            warn!(%destination, error = %e, "clearing federation queue");
                        }
                        backoff = BACKOFF_INITIAL;
                    }
                    Err(e) => {
                        debug!(%destination, error = %e, ?backoff, "transaction failed");
                        self.return_edus(&destination, edus);
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
}
