//! The extensions of a sliding-sync response: to-device messages (with their own `since`
//! token), end-to-end encryption (device lists, one-time key counts, unused fallback keys),
//! account data (global and per room), receipts and typing.
//!
//! The per-room extensions cover the rooms of the lists and subscriptions they name (all of
//! them when they name none); a list name the request does not have is ignored, as the MSC
//! says.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ruma::{
    OwnedRoomId,
    api::client::sync::sync_events::v5::{
        Request,
        request::ExtensionRoomConfig,
        response::{AccountData, E2EE, Extensions, Receipts, ToDevice, Typing},
    },
    serde::Raw,
};

use crate::{Error, Homeserver, Result, StreamPosition, storage::Change};

/// The rooms each list's window and the subscriptions hold in this response.
#[derive(Debug, Default)]
pub(crate) struct Scope {
    /// List name to the rooms its ranges cover.
    pub(crate) lists: BTreeMap<String, Vec<OwnedRoomId>>,
    /// Rooms the request subscribes to (that the user may see).
    pub(crate) subscribed: Vec<OwnedRoomId>,
    /// Rooms sent whole in this response: their per-room data is sent whole too.
    pub(crate) initial: HashSet<OwnedRoomId>,
}

impl Scope {
    /// The rooms an extension with these `lists` and `rooms` settings covers.
    fn rooms(
        &self,
        lists: Option<&Vec<String>>,
        rooms: Option<&Vec<ExtensionRoomConfig>>,
    ) -> Vec<OwnedRoomId> {
        let mut out: BTreeSet<OwnedRoomId> = BTreeSet::new();
        match lists {
            None => out.extend(self.lists.values().flatten().cloned()),
            Some(names) => {
                for name in names {
                    if name == "*" {
                        out.extend(self.lists.values().flatten().cloned());
                    } else if let Some(list) = self.lists.get(name) {
                        out.extend(list.iter().cloned());
                    }
                }
            }
        }
        match rooms {
            None => out.extend(self.subscribed.iter().cloned()),
            Some(configs) => {
                for config in configs {
                    match config {
                        ExtensionRoomConfig::AllSubscribed => {
                            out.extend(self.subscribed.iter().cloned())
                        }
                        ExtensionRoomConfig::Room(room) if self.subscribed.contains(room) => {
                            out.insert(room.clone());
                        }
                        _ => {}
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

/// Where the extensions read between: the connection's last position and this response's.
pub(crate) struct Range {
    /// The connection's previous position (0 on its first request).
    pub(crate) since: StreamPosition,
    /// This response's position.
    pub(crate) upto: StreamPosition,
}

/// The extensions the request turns on.
pub(crate) async fn extensions(
    hs: &Homeserver,
    (user, device): (&ruma::UserId, &ruma::DeviceId),
    request: &Request,
    scope: &Scope,
    range: Range,
) -> Result<Extensions> {
    let asked = &request.extensions;
    let mut out = Extensions::default();
    let Range { since, upto } = range;
    let changed = |kind: Change| since.0 == 0 || hs.storage.changed_since(kind, since);
    if asked.to_device.enabled == Some(true) {
        let from = match asked.to_device.since.as_deref() {
            None => StreamPosition(0),
            Some(token) => token
                .parse::<i64>()
                .ok()
                .filter(|p| *p >= 0)
                .map(|p| StreamPosition(p.min(upto.0)))
                .ok_or_else(|| Error::InvalidParam(format!("bad to-device token {token:?}")))?,
        };
        let horizon = hs.e2ee.to_device_horizon(user, device, from, upto).await?;
        let events = hs.e2ee.sync_to_device(user, device, from, horizon).await?;
        let mut to_device = ToDevice::default();
        to_device.next_batch = horizon.0.to_string();
        to_device.events = events;
        out.to_device = Some(to_device);
    }
    if asked.e2ee.enabled == Some(true) {
        let mut e2ee = E2EE::default();
        let (counts, fallback) = hs.e2ee.key_counts(user, device).await?;
        if since.0 > 0 && changed(Change::DeviceLists) {
            e2ee.device_lists = crate::sync::key_changes(hs, user, since, upto).await?;
        }
        e2ee.device_one_time_keys_count = counts;
        e2ee.device_unused_fallback_key_types = Some(fallback);
        out.e2ee = e2ee;
    }
    if asked.account_data.enabled == Some(true) {
        let rooms = scope.rooms(
            asked.account_data.lists.as_ref(),
            asked.account_data.rooms.as_ref(),
        );
        out.account_data = account_data(hs, user, &rooms, scope, (since, upto)).await?;
    }
    let receipts_on = asked.receipts.enabled == Some(true);
    let typing_on = asked.typing.enabled == Some(true);
    if receipts_on {
        let rooms = scope.rooms(asked.receipts.lists.as_ref(), asked.receipts.rooms.as_ref());
        out.receipts = receipts(
            hs,
            user,
            &rooms,
            scope,
            (since, upto),
            changed(Change::Ephemeral),
        )
        .await?;
    }
    if typing_on && changed(Change::Ephemeral) {
        let rooms = scope.rooms(asked.typing.lists.as_ref(), asked.typing.rooms.as_ref());
        let mut typing = Typing::default();
        for (room, event) in hs.userdata.typing_since(&rooms, since, upto)? {
            typing.rooms.insert(room, Raw::from_json(event.into_json()));
        }
        out.typing = typing;
    }
    Ok(out)
}

async fn account_data(
    hs: &Homeserver,
    user: &ruma::UserId,
    rooms: &[OwnedRoomId],
    scope: &Scope,
    (since, upto): (StreamPosition, StreamPosition),
) -> Result<AccountData> {
    let mut out = AccountData::default();
    let changed = since.0 == 0 || hs.storage.changed_since(Change::AccountData, since);
    if changed {
        out.global = hs
            .userdata
            .global_account_data_since(user, since, upto)
            .await?;
    }
    let wanted: HashSet<&OwnedRoomId> = rooms.iter().collect();
    if changed {
        for (room, events) in hs
            .userdata
            .room_account_data_since(user, since, upto)
            .await?
        {
            if wanted.contains(&room) {
                out.rooms.insert(room, events);
            }
        }
    }
    // Rooms sent whole get all their data, not only what changed since the last response.
    let fresh = rooms.iter().any(|r| scope.initial.contains(r));
    if since.0 > 0 && fresh {
        for (room, events) in hs
            .userdata
            .room_account_data_since(user, StreamPosition(0), upto)
            .await?
        {
            if wanted.contains(&room) && scope.initial.contains(&room) {
                out.rooms.insert(room, events);
            }
        }
    }
    Ok(out)
}

async fn receipts(
    hs: &Homeserver,
    user: &ruma::UserId,
    rooms: &[OwnedRoomId],
    scope: &Scope,
    (since, upto): (StreamPosition, StreamPosition),
    changed: bool,
) -> Result<Receipts> {
    let mut out = Receipts::default();
    let fresh: Vec<OwnedRoomId> = rooms
        .iter()
        .filter(|r| since.0 == 0 || scope.initial.contains(*r))
        .cloned()
        .collect();
    let mut read = vec![(fresh, StreamPosition(0))];
    if since.0 > 0 && changed {
        let moved: HashSet<OwnedRoomId> = hs
            .userdata
            .rooms_with_receipts(since, upto)
            .await?
            .into_iter()
            .collect();
        let rest = rooms
            .iter()
            .filter(|r| moved.contains(*r) && !scope.initial.contains(*r))
            .cloned()
            .collect();
        read.push((rest, since));
    }
    for (rooms, from) in read {
        if rooms.is_empty() {
            continue;
        }
        for (room, events) in hs
            .userdata
            .ephemeral_since(user, &rooms, from, upto)
            .await?
        {
            for event in events {
                if event.get_field::<String>("type").ok().flatten().as_deref() == Some("m.receipt")
                {
                    out.rooms
                        .insert(room.clone(), Raw::from_json(event.into_json()));
                }
            }
        }
    }
    Ok(out)
}

/// Whether the extensions carry nothing a waiting client needs to be woken for (key counts are
/// in every response and do not count).
pub(crate) fn is_quiet(e: &Extensions) -> bool {
    e.to_device.as_ref().is_none_or(|t| t.events.is_empty())
        && e.e2ee.device_lists.is_empty()
        && e.account_data.is_empty()
        && e.receipts.is_empty()
        && e.typing.is_empty()
}
