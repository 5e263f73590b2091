//! `GET /_matrix/client/v3/rooms/{roomId}/initialSync`: one room's latest messages, state,
//! receipts and the user's account data in one answer, as the user may see them (the room's
//! history visibility decides the messages; a non-member of a room that is not world-readable
//! is refused). Deprecated by the spec, still called by clients after each reload.

use axum::{
    Json,
    extract::{Path, State},
    http::request::Parts,
};
use grove_server::{
    StreamPosition,
    rooms::{Direction, timeline::Viewer},
};
use ruma::api::client::filter::RoomEventFilter;
use serde_json::{Value, json};

use super::events::{room_of, session_of};
use crate::{AppState, error::ApiError};

/// Messages in the answer, as Synapse gives.
const MESSAGES: usize = 20;

/// `GET /_matrix/client/v3/rooms/{roomId}/initialSync`
pub(super) async fn room_initial_sync(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    parts: Parts,
) -> Result<Json<Value>, ApiError> {
    let user = session_of(&app, &parts).await?;
    let room = room_of(&room_id)?;
    let rooms = &app.hs.rooms;
    let viewer = Viewer {
        user: &user,
        device: None,
    };
    let now = app.hs.notifier.current();
    let page = rooms
        .messages(
            &room,
            viewer,
            Some(&now.0.to_string()),
            None,
            Direction::Backward,
            MESSAGES,
            &RoomEventFilter::default(),
        )
        .await?;
    let mut chunk = page.chunk;
    chunk.reverse();
    let state = rooms.room_state(&room, &user).await?;
    let membership = rooms.membership_of(&room, &user).await?;
    let rooms_list = [room.clone()];
    let (receipts, account_data) = tokio::try_join!(
        app.hs
            .userdata
            .ephemeral_since(&user, &rooms_list, StreamPosition(0), now),
        app.hs
            .userdata
            .room_account_data_since(&user, StreamPosition(0), now),
    )?;
    let receipts: Vec<_> = receipts
        .get(&room)
        .into_iter()
        .flatten()
        .filter(|e| e.get_field::<String>("type").ok().flatten().as_deref() == Some("m.receipt"))
        .collect();
    let visibility = if rooms.is_published(&room).await? {
        "public"
    } else {
        "private"
    };
    let mut answer = json!({
        "room_id": room,
        "messages": {
            "chunk": chunk,
            // Paging back from `start` continues where the chunk ends.
            "start": page.end.unwrap_or_else(|| i64::MIN.to_string()),
            "end": now.0.to_string(),
        },
        "state": state,
        "presence": [],
        "receipts": receipts,
        "account_data": account_data.get(&room).cloned().unwrap_or_default(),
        "visibility": visibility,
    });
    if let Some(membership) = membership {
        answer["membership"] = membership.into();
    }
    Ok(Json(answer))
}
