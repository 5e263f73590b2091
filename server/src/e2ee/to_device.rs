//! To-device messages: an inbox per device, each message at a stream position, delivered by
//! sync and deleted once the client's next sync token shows it was received.
//!
//! One sync carries at most [`MAX_TO_DEVICE_PER_SYNC`] messages: when more wait, the sync ends
//! its whole range at the last message it carries ([`E2ee::to_device_horizon`]), so its
//! `next_batch` points just after it and the next sync delivers the rest. A device holds at
//! most one message per position, which makes "the first N messages" a position range.

use std::collections::BTreeMap;

use ruma::{
    DeviceId, OwnedServerName, OwnedUserId, ServerName, UserId, events::AnyToDeviceEvent,
    serde::Raw,
};
use serde_json::{Map, Value, json};

use crate::storage::Change;

use super::E2ee;
use crate::{Error, Result, StreamPosition, storage::WriteTxn};

/// The target of one message: one device or all of the user's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One device.
    Device(String),
    /// Every device (`*`).
    AllDevices,
}

/// The largest number of messages one request may carry.
const MAX_MESSAGES: usize = 10_000;
/// The device column of the transaction IDs remembered for messages from other servers (their
/// message IDs), which name no sending device.
const REMOTE_DEVICE: &str = "*remote*";

/// Remembers `(sender, device, txn_id)`; false when it was already there.
async fn first_time(
    txn: &mut WriteTxn<'_>,
    sender: &UserId,
    device: &str,
    txn_id: &str,
) -> Result<bool> {
    let seen: Option<(String,)> = sqlx::query_as(
        "SELECT txn_id FROM to_device_txns WHERE user_id = $1 AND device_id = $2 \
         AND txn_id = $3",
    )
    .bind(sender.as_str())
    .bind(device)
    .bind(txn_id)
    .fetch_optional(txn.conn())
    .await?;
    if seen.is_some() {
        return Ok(false);
    }
    sqlx::query("INSERT INTO to_device_txns (user_id, device_id, txn_id) VALUES ($1, $2, $3)")
        .bind(sender.as_str())
        .bind(device)
        .bind(txn_id)
        .execute(txn.conn())
        .await?;
    Ok(true)
}

/// The most to-device messages one sync response carries; the rest wait for the next sync.
pub const MAX_TO_DEVICE_PER_SYNC: usize = 100;

impl E2ee {
    /// Queues messages from `sender`'s `sender_device`. Repeating a transaction ID from the
    /// same device does nothing. Messages for other servers' users go to them as
    /// `m.direct_to_device` EDUs through federation (dropped when it is not running).
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        event_type: &str,
        txn_id: &str,
        messages: &BTreeMap<OwnedUserId, Vec<(Target, Value)>>,
    ) -> Result<()> {
        if messages.values().map(Vec::len).sum::<usize>() > MAX_MESSAGES {
            return Err(Error::LimitExceeded("too many to-device messages".into()));
        }
        let mut txn = self.storage.write().await?;
        if !first_time(&mut txn, sender, sender_device.as_str(), txn_id).await? {
            return Ok(());
        }
        let position = txn.next_position_for(&[Change::ToDevice]);
        let mut remote: BTreeMap<OwnedServerName, Map<String, Value>> = BTreeMap::new();
        for (user, targets) in messages {
            if user.server_name() != sender.server_name() {
                let by_user = remote.entry(user.server_name().to_owned()).or_default();
                let mut by_device = Map::new();
                for (target, content) in targets {
                    let key = match target {
                        Target::AllDevices => "*".to_owned(),
                        Target::Device(d) => d.clone(),
                    };
                    by_device.insert(key, content.clone());
                }
                by_user.insert(user.to_string(), Value::Object(by_device));
                continue;
            }
            self.deliver(&mut txn, sender, event_type, user, targets, position)
                .await?;
        }
        txn.commit().await?;
        if let Some(hook) = self.remote.get() {
            for (server, messages) in remote {
                hook.send_to_device(
                    &server,
                    json!({
                        "sender": sender,
                        "type": event_type,
                        "message_id": format!("{:016x}{:016x}", rand::random::<u64>(),
                            rand::random::<u64>()),
                        "messages": messages,
                    }),
                )
                .await;
            }
        }
        Ok(())
    }

    /// Stores an `m.direct_to_device` EDU from `origin` into the inboxes of this node's
    /// (`local`) users. The sender must be a user of `origin`; a message ID seen before from
    /// the same sender is ignored.
    pub async fn receive_to_device(
        &self,
        local: &ServerName,
        origin: &ServerName,
        content: &Value,
    ) -> Result<()> {
        let sender = content["sender"]
            .as_str()
            .and_then(|s| UserId::parse(s).ok())
            .ok_or_else(|| Error::BadJson("to-device EDU without a valid sender".into()))?;
        if sender.server_name() != origin {
            return Err(Error::Forbidden(
                "to-device sender is not a user of the origin".into(),
            ));
        }
        let (Some(event_type), Some(message_id), Some(users)) = (
            content["type"].as_str(),
            content["message_id"].as_str(),
            content["messages"].as_object(),
        ) else {
            return Err(Error::BadJson(
                "to-device EDU needs type, message_id and messages".into(),
            ));
        };
        let mut messages: Vec<(OwnedUserId, Vec<(Target, Value)>)> = Vec::new();
        let mut count = 0usize;
        for (user, devices) in users {
            let Ok(user) = UserId::parse(user.as_str()) else {
                continue;
            };
            let Some(devices) = devices.as_object() else {
                continue;
            };
            if user.server_name() != local {
                continue;
            }
            count += devices.len();
            let targets = devices
                .iter()
                .map(|(d, c)| {
                    let target = if d == "*" {
                        Target::AllDevices
                    } else {
                        Target::Device(d.clone())
                    };
                    (target, c.clone())
                })
                .collect();
            messages.push((user, targets));
        }
        if count > MAX_MESSAGES {
            return Err(Error::LimitExceeded("too many to-device messages".into()));
        }
        let mut txn = self.storage.write().await?;
        if !first_time(&mut txn, &sender, REMOTE_DEVICE, message_id).await? {
            return Ok(());
        }
        let position = txn.next_position_for(&[Change::ToDevice]);
        for (user, targets) in &messages {
            self.deliver(&mut txn, &sender, event_type, user, targets, position)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Puts one message per target device of `user` into its inbox at `position`.
    async fn deliver(
        &self,
        txn: &mut WriteTxn<'_>,
        sender: &UserId,
        event_type: &str,
        user: &UserId,
        targets: &[(Target, Value)],
        position: StreamPosition,
    ) -> Result<()> {
        let devices: Vec<(String,)> =
            sqlx::query_as("SELECT device_id FROM devices WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_all(txn.conn())
                .await?;
        for (target, content) in targets {
            let event = serde_json::to_string(&json!({
                "type": event_type,
                "sender": sender,
                "content": content,
            }))?;
            for (device,) in &devices {
                let hit = match target {
                    Target::AllDevices => true,
                    Target::Device(d) => d == device,
                };
                if !hit {
                    continue;
                }
                let (pending,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM to_device_messages WHERE user_id = $1 \
                     AND device_id = $2",
                )
                .bind(user.as_str())
                .bind(device)
                .fetch_one(txn.conn())
                .await?;
                // Dropping the transaction rolls back the whole request, so a sender can
                // retry once the device has synced.
                if pending >= self.max_to_device_inbox {
                    return Err(Error::LimitExceeded(format!(
                        "the to-device inbox of {user} {device} is full"
                    )));
                }
                // One message per device per request; a later target for the same
                // device replaces the earlier one.
                sqlx::query(
                    "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 \
                     AND position = $3",
                )
                .bind(user.as_str())
                .bind(device)
                .bind(position.0)
                .execute(txn.conn())
                .await?;
                sqlx::query(
                    "INSERT INTO to_device_messages (user_id, device_id, position, \
                     event_json) VALUES ($1, $2, $3, $4)",
                )
                .bind(user.as_str())
                .bind(device)
                .bind(position.0)
                .bind(&event)
                .execute(txn.conn())
                .await?;
            }
        }
        Ok(())
    }

    /// Where a sync of `(since, upto]` must end so that it carries at most
    /// [`MAX_TO_DEVICE_PER_SYNC`] to-device messages for the device: `upto` itself, or the
    /// position of the last message that fits when more are waiting.
    pub async fn to_device_horizon(
        &self,
        user: &UserId,
        device: &DeviceId,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<StreamPosition> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT position FROM to_device_messages WHERE user_id = $1 AND device_id = $2 \
             AND position > $3 AND position <= $4 ORDER BY position LIMIT $5",
        )
        .bind(user.as_str())
        .bind(device.as_str())
        .bind(since.0)
        .bind(upto.0)
        .bind(i64::try_from(MAX_TO_DEVICE_PER_SYNC + 1).unwrap_or(i64::MAX))
        .fetch_all(self.storage.pool())
        .await?;
        if rows.len() > MAX_TO_DEVICE_PER_SYNC
            && let Some((last,)) = rows.get(MAX_TO_DEVICE_PER_SYNC - 1)
        {
            return Ok(StreamPosition(*last));
        }
        Ok(upto)
    }

    /// To-device messages for a device with positions in `(since, upto]`; messages at or before
    /// `since` were acknowledged by the client's sync token and are deleted. Callers bound
    /// `upto` with [`E2ee::to_device_horizon`] first.
    pub async fn sync_to_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<Raw<AnyToDeviceEvent>>> {
        if since.0 > 0 {
            sqlx::query(
                "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 \
                 AND position <= $3",
            )
            .bind(user.as_str())
            .bind(device.as_str())
            .bind(since.0)
            .execute(self.storage.pool())
            .await?;
        }
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT event_json FROM to_device_messages WHERE user_id = $1 AND device_id = $2 \
             AND position > $3 AND position <= $4 ORDER BY position",
        )
        .bind(user.as_str())
        .bind(device.as_str())
        .bind(since.0)
        .bind(upto.0)
        .fetch_all(self.storage.pool())
        .await?;
        rows.into_iter()
            .map(|(e,)| {
                serde_json::value::RawValue::from_string(e)
                    .map(Raw::from_json)
                    .map_err(Error::from)
            })
            .collect()
    }
}
