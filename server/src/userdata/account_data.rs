//! Account data (global and per room, tags included), push rules kept as the global
//! `m.push_rules` account data, and filters.

use std::collections::{BTreeMap, HashMap};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    api::client::filter::FilterDefinition,
    events::{AnyGlobalAccountDataEvent, AnyRoomAccountDataEvent},
    push::Ruleset,
    serde::Raw,
};
use serde_json::{Value, json};

use crate::storage::Change;

use super::UserData;
use crate::{Error, Result, StreamPosition};

/// The account-data type under which push rules live.
const PUSH_RULES: &str = "m.push_rules";
/// The room account-data type of tags.
const TAGS: &str = "m.tag";
/// The largest account-data content accepted, in bytes of JSON.
const MAX_CONTENT_BYTES: usize = 64 * 1024;

/// Rows of `account_data`: room ('' for global), type, content.
type DataRow = (String, String, String);

impl UserData {
    /// Stores account data of `user` (global when `room` is `None`), at a new stream position.
    pub async fn set_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        data_type: &str,
        content: &Value,
    ) -> Result<StreamPosition> {
        if !content.is_object() {
            return Err(Error::BadJson(
                "account data content must be an object".into(),
            ));
        }
        let text = serde_json::to_string(content)?;
        if text.len() > MAX_CONTENT_BYTES {
            return Err(Error::LimitExceeded("account data too large".into()));
        }
        let room = room.map_or("", RoomId::as_str);
        let mut txn = self.storage.write().await?;
        let position = txn.next_position_for(&[Change::AccountData]);
        sqlx::query(
            "DELETE FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        )
        .bind(user.as_str())
        .bind(room)
        .bind(data_type)
        .execute(txn.conn())
        .await?;
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, data_type, content, position) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.as_str())
        .bind(room)
        .bind(data_type)
        .bind(text)
        .bind(position.0)
        .execute(txn.conn())
        .await?;
        txn.commit().await?;
        if data_type == PUSH_RULES && room.is_empty() {
            self.rules.forget(user);
        }
        Ok(position)
    }

    /// One piece of account data, if set.
    pub async fn account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        data_type: &str,
    ) -> Result<Option<Value>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT content FROM account_data \
             WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        )
        .bind(user.as_str())
        .bind(room.map_or("", RoomId::as_str))
        .bind(data_type)
        .fetch_optional(self.storage.pool())
        .await?;
        row.map(|(c,)| serde_json::from_str(&c).map_err(Error::from))
            .transpose()
    }

    async fn data_since(
        &self,
        user: &UserId,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<DataRow>> {
        Ok(sqlx::query_as(
            "SELECT room_id, data_type, content FROM account_data \
             WHERE user_id = $1 AND position > $2 AND position <= $3 ORDER BY position",
        )
        .bind(user.as_str())
        .bind(since.0)
        .bind(upto.0)
        .fetch_all(self.storage.pool())
        .await?)
    }

    /// Global account data of `user` changed in `(since, upto]` (all of it when `since` is 0;
    /// the default push rules are included then even if never stored).
    pub async fn global_account_data_since(
        &self,
        user: &UserId,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<Raw<AnyGlobalAccountDataEvent>>> {
        let mut out = Vec::new();
        let mut saw_push_rules = false;
        for (room, data_type, content) in self.data_since(user, since, upto).await? {
            if !room.is_empty() {
                continue;
            }
            saw_push_rules |= data_type == PUSH_RULES;
            out.push(raw_event(&data_type, &content)?);
        }
        if since.0 == 0 && !saw_push_rules {
            let rules = json!({ "global": Ruleset::server_default(user) });
            out.push(Raw::from_json(serde_json::value::to_raw_value(&json!({
                "type": PUSH_RULES,
                "content": rules,
            }))?));
        }
        Ok(out)
    }

    /// Room account data (tags included) of `user` changed in `(since, upto]`, by room.
    pub async fn room_account_data_since(
        &self,
        user: &UserId,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<BTreeMap<OwnedRoomId, Vec<Raw<AnyRoomAccountDataEvent>>>> {
        let mut out: BTreeMap<OwnedRoomId, Vec<_>> = BTreeMap::new();
        for (room, data_type, content) in self.data_since(user, since, upto).await? {
            if room.is_empty() {
                continue;
            }
            let room =
                OwnedRoomId::try_from(room).map_err(|e| Error::Corrupt(format!("room id: {e}")))?;
            out.entry(room)
                .or_default()
                .push(raw_event(&data_type, &content)?);
        }
        Ok(out)
    }

    /// The tags of `room` for `user` (`{}` when none).
    pub async fn tags(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<serde_json::Map<String, Value>> {
        let content = self.account_data(user, Some(room), TAGS).await?;
        Ok(
            match content.and_then(|mut c| c.get_mut("tags").map(Value::take)) {
                Some(Value::Object(tags)) => tags,
                _ => serde_json::Map::new(),
            },
        )
    }

    /// Sets (`Some(info)`) or removes (`None`) one tag.
    pub async fn set_tag(
        &self,
        user: &UserId,
        room: &RoomId,
        tag: &str,
        info: Option<Value>,
    ) -> Result<()> {
        let mut tags = self.tags(user, room).await?;
        match info {
            Some(info) => {
                tags.insert(tag.to_owned(), info);
            }
            None => {
                tags.remove(tag);
            }
        }
        self.set_account_data(user, Some(room), TAGS, &json!({ "tags": tags }))
            .await?;
        Ok(())
    }

    /// The user's push rules: stored ones, or the spec's defaults.
    pub async fn push_rules(&self, user: &UserId) -> Result<Ruleset> {
        let generation = match self.rules.get(user) {
            Ok(rules) => return Ok(rules),
            Err(generation) => generation,
        };
        let stored = self.account_data(user, None, PUSH_RULES).await?;
        let rules = match stored.and_then(|mut c| c.get_mut("global").map(Value::take)) {
            Some(global) => serde_json::from_value(global)?,
            None => Ruleset::server_default(user),
        };
        self.rules.keep(user, &rules, generation);
        Ok(rules)
    }

    /// Stores the user's push rules (synced as `m.push_rules` account data).
    pub async fn set_push_rules(&self, user: &UserId, rules: &Ruleset) -> Result<()> {
        self.set_account_data(user, None, PUSH_RULES, &json!({ "global": rules }))
            .await?;
        Ok(())
    }

    /// Stores a filter and returns its ID.
    pub async fn create_filter(&self, user: &UserId, filter: &FilterDefinition) -> Result<String> {
        let text = serde_json::to_string(filter)?;
        if text.len() > MAX_CONTENT_BYTES {
            return Err(Error::LimitExceeded("filter too large".into()));
        }
        // Filter IDs count up per user; the write lock keeps two uploads from taking one ID.
        let mut txn = self.storage.write().await?;
        let last: (Option<i64>,) =
            sqlx::query_as("SELECT MAX(filter_id) FROM filters WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_one(txn.conn())
                .await?;
        let id = last.0.unwrap_or(-1) + 1;
        sqlx::query("INSERT INTO filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)")
            .bind(user.as_str())
            .bind(id)
            .bind(text)
            .execute(txn.conn())
            .await?;
        txn.commit().await?;
        Ok(id.to_string())
    }

    /// A filter the user uploaded earlier.
    pub async fn filter(&self, user: &UserId, filter_id: &str) -> Result<Option<FilterDefinition>> {
        let Ok(id) = filter_id.parse::<i64>() else {
            return Ok(None);
        };
        let row: Option<(String,)> =
            sqlx::query_as("SELECT filter_json FROM filters WHERE user_id = $1 AND filter_id = $2")
                .bind(user.as_str())
                .bind(id)
                .fetch_optional(self.storage.pool())
                .await?;
        row.map(|(f,)| serde_json::from_str(&f).map_err(Error::from))
            .transpose()
    }

    /// The user's fully-read marker in `room`, if set.
    pub async fn fully_read(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Option<ruma::OwnedEventId>> {
        let content = self.account_data(user, Some(room), "m.fully_read").await?;
        Ok(content
            .as_ref()
            .and_then(|c| c.get("event_id"))
            .and_then(Value::as_str)
            .and_then(|e| ruma::OwnedEventId::try_from(e).ok()))
    }
}

fn raw_event<T>(data_type: &str, content: &str) -> Result<Raw<T>> {
    let content: Value = serde_json::from_str(content)?;
    Ok(Raw::from_json(serde_json::value::to_raw_value(
        &json!({ "type": data_type, "content": content }),
    )?))
}

/// Users whose push rules are cached, at most; past that the cache starts again.
const MAX_CACHED_RULES: usize = 10_000;

/// Push rules by user, as last read. A change forgets the user's entry and moves the
/// generation on, so that a read which began before the change does not put back what it read.
#[derive(Default)]
pub(crate) struct RulesCache(std::sync::Mutex<(u64, HashMap<OwnedUserId, Ruleset>)>);

impl RulesCache {
    /// The cached rules of `user`, or the generation to hand to [`RulesCache::keep`].
    fn get(&self, user: &UserId) -> std::result::Result<Ruleset, u64> {
        let Ok(cache) = self.0.lock() else {
            return Err(u64::MAX);
        };
        cache.1.get(user).cloned().ok_or(cache.0)
    }

    /// Caches `rules` read for `user` since [`RulesCache::get`] gave `generation`.
    fn keep(&self, user: &UserId, rules: &Ruleset, generation: u64) {
        let Ok(mut cache) = self.0.lock() else {
            return;
        };
        if cache.0 != generation {
            return;
        }
        if cache.1.len() >= MAX_CACHED_RULES {
            cache.1.clear();
        }
        cache.1.insert(user.to_owned(), rules.clone());
    }

    fn forget(&self, user: &UserId) {
        if let Ok(mut cache) = self.0.lock() {
            cache.0 += 1;
            cache.1.remove(user);
        }
    }
}
