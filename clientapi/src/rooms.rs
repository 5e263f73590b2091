//! Room creation and membership:
//!
//! - `POST /_matrix/client/v3/createRoom`
//! - `POST /_matrix/client/v3/join/{roomIdOrAlias}`, `POST .../rooms/{roomId}/join`
//! - `POST .../rooms/{roomId}/leave|invite|kick|ban|unban|forget`
//! - `GET /_matrix/client/v3/joined_rooms`
//!
//! Sending, state, redaction and reads are in `rooms/events.rs`; one room's `initialSync` in
//! `rooms/initial_sync.rs`.

mod events;
mod initial_sync;

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use grove_server::rooms::membership::MembershipChange;
use ruma::{
    RoomAliasId, RoomId, RoomOrAliasId,
    api::client::{
        membership::{
            ban_user, forget_room, invite_user, join_room_by_id, join_room_by_id_or_alias,
            joined_rooms, kick_user, leave_room, unban_user,
        },
        room::create_room,
    },
};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiResult, Ruma, RumaResponse},
};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/createRoom", post(create_room))
        .route(
            "/_matrix/client/v3/join/{room_id_or_alias}",
            post(join_by_id_or_alias),
        )
        .route("/_matrix/client/v3/rooms/{room_id}/join", post(join_by_id))
        .route("/_matrix/client/v3/rooms/{room_id}/leave", post(leave))
        .route("/_matrix/client/v3/rooms/{room_id}/invite", post(invite))
        .route("/_matrix/client/v3/rooms/{room_id}/kick", post(kick))
        .route("/_matrix/client/v3/rooms/{room_id}/ban", post(ban))
        .route("/_matrix/client/v3/rooms/{room_id}/unban", post(unban))
        .route("/_matrix/client/v3/rooms/{room_id}/forget", post(forget))
        .route("/_matrix/client/v3/joined_rooms", get(get_joined_rooms))
        .route(
            "/_matrix/client/v3/rooms/{room_id}/initialSync",
            get(initial_sync::room_initial_sync),
        )
        .merge(events::routes())
}

/// `POST /_matrix/client/v3/createRoom`
async fn create_room(
    State(app): State<AppState>,
    ruma: Ruma<create_room::v3::Request>,
) -> ApiResult<create_room::v3::Response> {
    let user = &ruma.session()?.user_id;
    let profile = app.hs.userdata.profile(user).await?;
    let room_id = app.hs.rooms.create_room(user, &ruma.body, &profile).await?;
    // The server core wrote the invites of local users; those of other servers' users go
    // through their servers, as a later `/invite` would.
    let remote_invitees = ruma
        .body
        .invite
        .iter()
        .filter(|u| u.server_name() != app.hs.config.server_name);
    for invitee in remote_invitees {
        let Some(remote) = app.hs.remote.get() else {
            break;
        };
        if let Err(e) = remote
            .invite(&room_id, user, invitee, None, ruma.body.is_direct)
            .await
        {
            // The room exists; the client can invite again. Failing the whole request would
            // leave it holding a room it was told was not created.
            tracing::warn!(%room_id, %invitee, error = %e, "invite at room creation failed");
        }
    }
    Ok(RumaResponse(create_room::v3::Response::new(room_id)))
}

async fn join(
    app: &AppState,
    user: &ruma::UserId,
    room: &RoomId,
) -> Result<ruma::OwnedRoomId, ApiError> {
    let profile = app.hs.userdata.profile(user).await?;
    Ok(app.hs.rooms.join(room, user, &profile).await?)
}

/// Joins a room known here, or through federation a room (or alias) of another server.
async fn join_any(
    app: &AppState,
    user: &ruma::UserId,
    target: &RoomOrAliasId,
    via: &[ruma::OwnedServerName],
) -> Result<ruma::OwnedRoomId, ApiError> {
    let local = match <&RoomId>::try_from(target) {
        Ok(room) => Some(room.to_owned()),
        Err(alias) if alias.server_name() == app.hs.config.server_name => {
            Some(resolve(app, alias).await?)
        }
        Err(_) => None,
    };
    // A room with no user of this node joined is joined through a server still in it
    // (federation decides; it joins here when no other server is in the room).
    if let Some(room) = &local
        && app.hs.rooms.is_known(room).await?
        && (app.hs.remote.get().is_none() || app.hs.rooms.has_local_member(room).await?)
    {
        return join(app, user, room).await;
    }
    if let Some(remote) = app.hs.remote.get() {
        return Ok(remote.join(user, target, via).await?);
    }
    match local {
        Some(room) => join(app, user, &room).await,
        None => Err(ApiError::not_found("Room alias not found")),
    }
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`
async fn join_by_id_or_alias(
    State(app): State<AppState>,
    ruma: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> ApiResult<join_room_by_id_or_alias::v3::Response> {
    let user = &ruma.session()?.user_id;
    let target: &RoomOrAliasId = &ruma.body.room_id_or_alias;
    let room_id = join_any(&app, user, target, &ruma.body.via).await?;
    Ok(RumaResponse(join_room_by_id_or_alias::v3::Response::new(
        room_id,
    )))
}

/// A local alias's room, or `M_NOT_FOUND`.
pub(crate) async fn resolve(
    app: &AppState,
    alias: &RoomAliasId,
) -> Result<ruma::OwnedRoomId, ApiError> {
    app.hs
        .rooms
        .resolve_alias(alias)
        .await?
        .ok_or_else(|| ApiError::not_found("Room alias not found"))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/join`
async fn join_by_id(
    State(app): State<AppState>,
    ruma: Ruma<join_room_by_id::v3::Request>,
) -> ApiResult<join_room_by_id::v3::Response> {
    let user = &ruma.session()?.user_id;
    let target = ruma::OwnedRoomOrAliasId::from(ruma.body.room_id.clone());
    let room_id = join_any(&app, user, &target, &[]).await?;
    Ok(RumaResponse(join_room_by_id::v3::Response::new(room_id)))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave`
async fn leave(
    State(app): State<AppState>,
    ruma: Ruma<leave_room::v3::Request>,
) -> ApiResult<leave_room::v3::Response> {
    let user = &ruma.session()?.user_id;
    if !app.hs.rooms.is_known(&ruma.body.room_id).await?
        && let Some(remote) = app.hs.remote.get()
    {
        remote
            .leave(&ruma.body.room_id, user, ruma.body.reason.as_deref())
            .await?;
        return Ok(RumaResponse(leave_room::v3::Response::new()));
    }
    app.hs
        .rooms
        .leave(&ruma.body.room_id, user, ruma.body.reason.as_deref())
        .await?;
    Ok(RumaResponse(leave_room::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`
async fn invite(
    State(app): State<AppState>,
    ruma: Ruma<invite_user::v3::Request>,
) -> ApiResult<invite_user::v3::Response> {
    let user = &ruma.session()?.user_id;
    let invite_user::v3::InvitationRecipient::UserId(invitee) = &ruma.body.recipient else {
        return Err(ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "M_UNRECOGNIZED",
            "Third-party invites are not supported",
        ));
    };
    if invitee.user_id.server_name() != app.hs.config.server_name
        && let Some(remote) = app.hs.remote.get()
    {
        remote
            .invite(
                &ruma.body.room_id,
                user,
                &invitee.user_id,
                invitee.reason.as_deref(),
                false,
            )
            .await?;
        return Ok(RumaResponse(invite_user::v3::Response::new()));
    }
    change(
        &app,
        &ruma,
        &ruma.body.room_id,
        &invitee.user_id,
        MembershipChange::Invite,
        invitee.reason.as_deref(),
    )
    .await?;
    Ok(RumaResponse(invite_user::v3::Response::new()))
}

/// The sender of `ruma` changes `target`'s membership of `room` on this node.
async fn change<T>(
    app: &AppState,
    ruma: &Ruma<T>,
    room: &RoomId,
    target: &ruma::UserId,
    change: MembershipChange,
    reason: Option<&str>,
) -> Result<(), ApiError> {
    let sender = &ruma.session()?.user_id;
    app.hs
        .rooms
        .change_membership(room, sender, target, change, reason, false)
        .await?;
    Ok(())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`
async fn kick(
    State(app): State<AppState>,
    ruma: Ruma<kick_user::v3::Request>,
) -> ApiResult<kick_user::v3::Response> {
    let b = &ruma.body;
    change(
        &app,
        &ruma,
        &b.room_id,
        &b.user_id,
        MembershipChange::Kick,
        b.reason.as_deref(),
    )
    .await?;
    Ok(RumaResponse(kick_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
async fn ban(
    State(app): State<AppState>,
    ruma: Ruma<ban_user::v3::Request>,
) -> ApiResult<ban_user::v3::Response> {
    let b = &ruma.body;
    change(
        &app,
        &ruma,
        &b.room_id,
        &b.user_id,
        MembershipChange::Ban,
        b.reason.as_deref(),
    )
    .await?;
    Ok(RumaResponse(ban_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`
async fn unban(
    State(app): State<AppState>,
    ruma: Ruma<unban_user::v3::Request>,
) -> ApiResult<unban_user::v3::Response> {
    let b = &ruma.body;
    change(
        &app,
        &ruma,
        &b.room_id,
        &b.user_id,
        MembershipChange::Unban,
        b.reason.as_deref(),
    )
    .await?;
    Ok(RumaResponse(unban_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/forget`
async fn forget(
    State(app): State<AppState>,
    ruma: Ruma<forget_room::v3::Request>,
) -> ApiResult<forget_room::v3::Response> {
    let user = &ruma.session()?.user_id;
    app.hs.rooms.forget(&ruma.body.room_id, user).await?;
    Ok(RumaResponse(forget_room::v3::Response::new()))
}

/// `GET /_matrix/client/v3/joined_rooms`
async fn get_joined_rooms(
    State(app): State<AppState>,
    ruma: Ruma<joined_rooms::v3::Request>,
) -> ApiResult<joined_rooms::v3::Response> {
    let user = &ruma.session()?.user_id;
    let rooms = app.hs.rooms.joined_rooms(user).await?;
    Ok(RumaResponse(joined_rooms::v3::Response::new(rooms)))
}
