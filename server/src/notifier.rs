//! Stream positions and the wake-up of waiting syncs.
//!
//! Every change a client may sync (a room event, a to-device message, an account-data change,
//! a receipt, a typing change, a device-list change) takes the next position of one node-wide
//! counter, persisted with the change. A sync token is that position; a long-polling `/sync`
//! waits on the notifier until the committed position passes its `since`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// A position in the node-wide stream of changes; larger is later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamPosition(pub i64);

/// Publishes the last committed stream position and wakes those waiting for it to move.
#[derive(Clone)]
pub struct Notifier {
    tx: Arc<watch::Sender<StreamPosition>>,
}

impl Notifier {
    /// A notifier starting at `position`.
    pub fn new(position: StreamPosition) -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(position)),
        }
    }

    /// The last committed position.
    pub fn current(&self) -> StreamPosition {
        *self.tx.borrow()
    }

    /// Publishes a newly committed position.
    pub(crate) fn advance(&self, position: StreamPosition) {
        self.tx.send_if_modified(|current| {
            if position > *current {
                *current = position;
                true
            } else {
                false
            }
        });
    }

    /// Waits until the committed position is past `since` or `timeout` has elapsed, and
    /// returns the committed position at that moment.
    pub async fn wait_beyond(&self, since: StreamPosition, timeout: Duration) -> StreamPosition {
        let deadline = Instant::now() + timeout;
        let mut rx = self.tx.subscribe();
        loop {
            let current = *rx.borrow_and_update();
            if current > since {
                return current;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return current;
            }
            match tokio::time::timeout(remaining, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return *rx.borrow(),
            }
        }
    }
}
