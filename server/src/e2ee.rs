//! End-to-end encryption support: device keys, one-time and fallback keys, cross-signing keys
//! and signatures, to-device messages, device-list changes and server-side key backup.
//!
//! Every change others must learn of (device keys, cross-signing keys, signatures) records a
//! device-list change at a stream position ([`E2ee::users_with_key_changes`]); to-device
//! messages take a position too ([`E2ee::sync_to_device`]). Device and cross-signing keys are
//! stored as the clients sent them (clients verify the signatures inside); signatures uploaded
//! on their own are verified before they are stored ([`E2ee::upload_signatures`]). Who shares
//! an encrypted room with whom, at any position, decides `device_lists.left`
//! ([`E2ee::sharing_change`]). Keys of other servers' users and to-device messages to them go
//! through [`RemoteKeys`], which federation installs ([`E2ee::remote`]); nothing of them is
//! cached here.

mod backup;
mod cross_signing;
mod device_keys;
mod device_lists;
mod remote;
mod to_device;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

pub use backup::{BackupVersion, KeyScope, WrongVersion};
pub use cross_signing::CrossSigningUpload;
pub use device_keys::KeysQuery;
pub use device_lists::SharingChange;
pub use remote::{RemoteKeys, RemoteKeysHook};
use ruma::{DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId, ServerName, UInt, UserId};
use serde_json::{Value, json};
use sqlx::AnyPool;
pub use to_device::{MAX_TO_DEVICE_PER_SYNC, Target};

use crate::{Result, Storage, StreamPosition, storage::Change};

/// Key storage and to-device delivery.
#[derive(Clone)]
pub struct E2ee {
    storage: Storage,
    /// The most undelivered to-device messages one device may hold.
    max_to_device_inbox: i64,
    /// Federation's key operations, once installed.
    remote: RemoteKeysHook,
    /// The key counts every sync reports, as last read per device.
    counts: Arc<KeyCounts>,
}

/// A device's one-time key counts per algorithm, and its unused fallback key algorithms.
pub type OneTimeKeyCounts = (
    BTreeMap<OneTimeKeyAlgorithm, UInt>,
    Vec<OneTimeKeyAlgorithm>,
);

/// Key counts kept per device, each with the generation and the committed position it was
/// read at: good while no upload or claim committed since (each takes a new generation) and no
/// device was added or removed (a device-list change).
#[derive(Default)]
struct KeyCounts {
    generation: AtomicU64,
    kept: Mutex<HashMap<(OwnedUserId, OwnedDeviceId), KeptCounts>>,
}

/// A device's key counts with the generation and committed position they were read at.
type KeptCounts = (u64, i64, OneTimeKeyCounts);

/// Devices whose counts are kept, at most; past that the cache starts again.
const MAX_KEPT_COUNTS: usize = 10_000;

impl KeyCounts {
    /// Called after a write to one-time or fallback keys has committed.
    fn forget(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl E2ee {
    /// The encryption component over `storage`; a device holds at most `max_to_device_inbox`
    /// undelivered to-device messages.
    pub fn new(storage: Storage, max_to_device_inbox: usize) -> Self {
        Self {
            storage,
            max_to_device_inbox: i64::try_from(max_to_device_inbox).unwrap_or(i64::MAX),
            remote: RemoteKeysHook::default(),
            counts: Arc::default(),
        }
    }

    /// The slot for federation's key operations (keys of other servers' users, to-device
    /// messages to them).
    pub fn remote(&self) -> &RemoteKeysHook {
        &self.remote
    }

    /// Records that the devices or keys of `user` (a user of another server) changed, so that
    /// local clients sharing a room with them refetch their keys.
    pub async fn remote_keys_changed(&self, user: &UserId) -> Result<()> {
        let mut txn = self.storage.write().await?;
        let position = txn.next_position().0;
        crate::accounts::record_device_change(txn.conn(), user, position).await?;
        // What was cached is stale now; the next query asks the user's server again.
        sqlx::query("DELETE FROM remote_key_cache WHERE user_id = $1")
            .bind(user.as_str())
            .execute(txn.conn())
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Keeps what `server` answered to a keys query for the users asked with all their
    /// devices (`whole_users`), for when it cannot be reached.
    pub async fn cache_remote_keys(
        &self,
        server: &ServerName,
        whole_users: &[&UserId],
        answer: &Value,
    ) -> Result<()> {
        let now = crate::accounts::ids::now_ms();
        let mut txn = self.storage.pool().begin().await?;
        for user in whole_users {
            if user.server_name() != server {
                continue;
            }
            let Some(devices) = answer["device_keys"].get(user.as_str()) else {
                continue;
            };
            let entry = json!({
                "device_keys": devices,
                "master_key": answer["master_keys"].get(user.as_str()),
                "self_signing_key": answer["self_signing_keys"].get(user.as_str()),
            });
            sqlx::query(
                "INSERT INTO remote_key_cache (user_id, keys_json, fetched_ts) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET keys_json = $2, fetched_ts = $3",
            )
            .bind(user.as_str())
            .bind(entry.to_string())
            .bind(now)
            .execute(&mut *txn)
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// The cached keys of `users`, shaped as a keys query answer (`device_keys`,
    /// `master_keys`, `self_signing_keys`), and whether every one of them was cached.
    pub async fn cached_remote_keys(&self, users: &[&UserId]) -> Result<(Value, bool)> {
        let mut answer = json!({ "device_keys": {}, "master_keys": {}, "self_signing_keys": {} });
        let mut all = true;
        for user in users {
            let row: Option<(String,)> =
                sqlx::query_as("SELECT keys_json FROM remote_key_cache WHERE user_id = $1")
                    .bind(user.as_str())
                    .fetch_optional(self.storage.pool())
                    .await?;
            let Some(entry) = row.and_then(|(text,)| serde_json::from_str::<Value>(&text).ok())
            else {
                all = false;
                continue;
            };
            for (field, key) in [
                ("device_keys", "device_keys"),
                ("master_keys", "master_key"),
                ("self_signing_keys", "self_signing_key"),
            ] {
                if !entry[key].is_null() {
                    answer[field][user.as_str()] = entry[key].clone();
                }
            }
        }
        Ok((answer, all))
    }

    /// Users whose device list or cross-signing keys changed in `(since, upto]`.
    pub async fn users_with_key_changes(
        &self,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<OwnedUserId>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT user_id FROM device_list_changes \
             WHERE position > $1 AND position <= $2 ORDER BY user_id",
        )
        .bind(since.0)
        .bind(upto.0)
        .fetch_all(self.storage.pool())
        .await?;
        rows.into_iter()
            .map(|(u,)| {
                OwnedUserId::try_from(u).map_err(|e| crate::Error::Corrupt(format!("user id: {e}")))
            })
            .collect()
    }

    /// The device's count of one-time keys per algorithm, and the algorithms of its fallback
    /// keys not used yet (what every sync reports), in one query.
    pub async fn key_counts(&self, user: &UserId, device: &DeviceId) -> Result<OneTimeKeyCounts> {
        let key = (user.to_owned(), device.to_owned());
        let generation = self.counts.generation.load(Ordering::Acquire);
        if let Ok(kept) = self.counts.kept.lock()
            && let Some((g, read_at, counts)) = kept.get(&key)
            && *g == generation
            && !self
                .storage
                .changed_since(Change::DeviceLists, StreamPosition(*read_at))
        {
            return Ok(counts.clone());
        }
        // Read before the query: a write committing after it moves one or the other on.
        let read_at = self.storage.notifier().current().0;
        let counts = self.read_key_counts(user, device).await?;
        if let Ok(mut kept) = self.counts.kept.lock() {
            if kept.len() >= MAX_KEPT_COUNTS {
                kept.clear();
            }
            kept.insert(key, (generation, read_at, counts.clone()));
        }
        Ok(counts)
    }

    async fn read_key_counts(&self, user: &UserId, device: &DeviceId) -> Result<OneTimeKeyCounts> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT 0, algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 \
             AND device_id = $2 GROUP BY algorithm \
             UNION ALL SELECT 1, algorithm, 0 FROM fallback_keys WHERE user_id = $1 \
             AND device_id = $2 AND used = 0",
        )
        .bind(user.as_str())
        .bind(device.as_str())
        .fetch_all(self.storage.pool())
        .await?;
        let mut counts = BTreeMap::new();
        counts.insert(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN);
        let mut fallback = Vec::new();
        for (kind, algorithm, count) in rows {
            let algorithm = OneTimeKeyAlgorithm::from(algorithm.as_str());
            if kind == 0 {
                counts.insert(algorithm, UInt::try_from(count).unwrap_or(UInt::MIN));
            } else {
                fallback.push(algorithm);
            }
        }
        fallback.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok((counts, fallback))
    }
}

/// Stored signatures on `(user, key_id)`: signer user, signer key, signature.
async fn signatures_for(
    pool: &AnyPool,
    user: &UserId,
    key_id: &str,
) -> Result<Vec<(String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT signer_user_id, signer_key_id, signature FROM key_signatures \
         WHERE target_user_id = $1 AND target_key_id = $2",
    )
    .bind(user.as_str())
    .bind(key_id)
    .fetch_all(pool)
    .await?)
}
