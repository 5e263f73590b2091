//! Membership handshakes: `make_join`/`send_join`, `make_leave`/`send_leave` and invites.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, UserId,
    events::TimelineEventType,
};
use serde_json::{Value, json};

use super::{
    Answer, Ctxt, MAX_INVITE_STATE, Origin, json_object, pdu_value, query_pairs, require_acl,
    room_id,
};
use crate::{Ctx, error::FedError};

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
pub(super) async fn make_join(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path((room, user)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Answer {
    make_membership(&ctx, &origin, &room, &user, query.as_deref(), "join").await
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
pub(super) async fn make_leave(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path((room, user)): Path<(String, String)>,
) -> Answer {
    make_membership(&ctx, &origin, &room, &user, None, "leave").await
}

async fn make_membership(
    ctx: &Ctx,
    origin: &Origin,
    room: &str,
    user: &str,
    query: Option<&str>,
    membership: &str,
) -> Answer {
    let room = room_id(room)?;
    let user = UserId::parse(user).map_err(|e| FedError::bad_json(format!("user ID: {e}")))?;
    if user.server_name() != origin.0 {
        return Err(FedError::forbidden("the user is not on your server"));
    }
    if !ctx.hs.rooms.is_known(room).await? {
        return Err(FedError::not_found("unknown room"));
    }
    require_acl(ctx, &origin.0, room).await?;
    let (version, template) = ctx
        .hs
        .rooms
        .membership_template(room, &user, membership)
        .await?;
    let offered: Vec<String> = query_pairs(query)
        .into_iter()
        .filter(|(k, _)| k == "ver")
        .map(|(_, v)| v)
        .collect();
    if membership == "join" && !offered.iter().any(|v| v == version.as_str()) {
        return Err(FedError::new(
            http::StatusCode::BAD_REQUEST,
            "M_INCOMPATIBLE_ROOM_VERSION",
            format!("the room has version {version}"),
        ));
    }
    Ok(Json(
        json!({ "room_version": version.as_str(), "event": template }),
    ))
}

/// Checks a membership event a remote server completed and signed, and adds our signature.
async fn take_membership(
    ctx: &Ctx,
    origin: &Origin,
    room: &RoomId,
    path_event: &str,
    body: &[u8],
    membership: &str,
) -> Result<(CanonicalJsonObject, OwnedEventId), FedError> {
    require_acl(ctx, &origin.0, room).await?;
    let mut object = json_object(body)?;
    let version = ctx.hs.rooms.room_version(room).await?;
    let rules = grove_server::rooms::builder::rules_for(&version)?;
    let id = grove_server::rooms::builder::event_id_of(&object, &rules)?;
    if id.as_str() != path_event {
        return Err(FedError::bad_json("event ID does not match the event"));
    }
    ctx.keys
        .check_event(&object, &rules)
        .await
        .map_err(|e| FedError::forbidden(e.to_string()))?;
    let field = |name: &str| match object.get(name) {
        Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let sender = field("sender").unwrap_or_default();
    let content_membership = match object.get("content") {
        Some(CanonicalJsonValue::Object(c)) => match c.get("membership") {
            Some(CanonicalJsonValue::String(m)) => m.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    if field("type").as_deref() != Some("m.room.member")
        || field("state_key").as_deref() != Some(sender.as_str())
        || content_membership != membership
        || field("room_id").as_deref() != Some(room.as_str())
    {
        return Err(FedError::bad_json(format!(
            "not a {membership} event for this room"
        )));
    }
    if UserId::parse(sender.as_str())
        .map(|u| u.server_name() != origin.0)
        .unwrap_or(true)
    {
        return Err(FedError::forbidden("the sender is not on your server"));
    }
    ruma::signatures::sign_event(
        ctx.hs.config.server_name.as_str(),
        ctx.hs.key.key_pair(),
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| FedError::bad_json(format!("cannot sign: {e}")))?;
    match ctx.hs.rooms.add_pdu(room, object.clone()).await? {
        grove_server::rooms::auth::RemoteVerdict::Rejected(why)
        | grove_server::rooms::auth::RemoteVerdict::SoftFailed(why) => {
            Err(FedError::forbidden(why))
        }
        grove_server::rooms::auth::RemoteVerdict::Accepted => Ok((object, id)),
    }
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
pub(super) async fn send_join(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path((room, event)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let room = room_id(&room)?;
    if !ctx.hs.rooms.is_known(room).await? {
        return Err(FedError::not_found("unknown room"));
    }
    let (object, id) = take_membership(&ctx, &origin, room, &event, &body, "join").await?;
    let (state, chain) = ctx.hs.rooms.state_and_auth_chain(room, &id).await?;
    Ok(Json(json!({
        "origin": ctx.hs.config.server_name.as_str(),
        "event": object,
        "state": state.iter().map(pdu_value).collect::<Vec<_>>(),
        "auth_chain": chain.iter().map(pdu_value).collect::<Vec<_>>(),
        "members_omitted": false,
    })))
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
pub(super) async fn send_leave(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path((room, event)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let room = room_id(&room)?;
    if !ctx.hs.rooms.is_known(room).await? {
        return Err(FedError::not_found("unknown room"));
    }
    let (_, id) = take_membership(&ctx, &origin, room, &event, &body, "leave").await?;
    // Others in the room hear of the leave from us: the leaving server may not know them.
    ctx.push_to_room(room, &id, &origin.0).await;
    Ok(Json(json!({})))
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
pub(super) async fn invite(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path((room, event)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let room = room_id(&room)?;
    let body = json_object(&body)?;
    let version = match body.get("room_version") {
        Some(CanonicalJsonValue::String(v)) => ruma::RoomVersionId::try_from(v.as_str())
            .map_err(|e| FedError::bad_json(format!("room_version: {e}")))?,
        _ => return Err(FedError::bad_json("room_version missing")),
    };
    let rules = grove_server::rooms::builder::rules_for(&version).map_err(|_| {
        FedError::new(
            http::StatusCode::BAD_REQUEST,
            "M_INCOMPATIBLE_ROOM_VERSION",
            "unsupported room version",
        )
    })?;
    let mut object = match body.get("event") {
        Some(CanonicalJsonValue::Object(e)) => e.clone(),
        _ => return Err(FedError::bad_json("event missing")),
    };
    let id = grove_server::rooms::builder::event_id_of(&object, &rules)?;
    if id.as_str() != event {
        return Err(FedError::bad_json("event ID does not match the event"));
    }
    ctx.keys
        .check_event(&object, &rules)
        .await
        .map_err(|e| FedError::forbidden(e.to_string()))?;
    let text = serde_json::to_string(&object).map_err(|e| FedError::bad_json(e.to_string()))?;
    let pdu = grove_server::rooms::Pdu::parse(id.clone(), Some(room), &text)?;
    let target = pdu
        .state_key
        .as_deref()
        .and_then(|k| UserId::parse(k).ok())
        .ok_or_else(|| FedError::bad_json("invite without a target"))?;
    if pdu.kind != TimelineEventType::RoomMember
        || pdu.content_str("membership").as_deref() != Some("invite")
        || pdu.room != room
    {
        return Err(FedError::bad_json("not an invite for this room"));
    }
    if target.server_name() != ctx.hs.config.server_name {
        return Err(FedError::bad_json("the invited user is not on this server"));
    }
    if pdu.sender.server_name() != origin.0 {
        return Err(FedError::forbidden("the sender is not on your server"));
    }
    if let Err(wait) = ctx.invites.take(&origin.0, 1, std::time::Instant::now()) {
        ctx.metrics.rate_limited(crate::metrics::Limited::Invite);
        return Err(FedError::limited(
            "too many invites from your server",
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        ));
    }
    ruma::signatures::sign_event(
        ctx.hs.config.server_name.as_str(),
        ctx.hs.key.key_pair(),
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| FedError::bad_json(format!("cannot sign: {e}")))?;
    if ctx.hs.rooms.is_known(room).await? {
        require_acl(&ctx, &origin.0, room).await?;
        // We are in the room already: the invite takes effect here at once.
        if let grove_server::rooms::auth::RemoteVerdict::Rejected(why) =
            ctx.hs.rooms.add_pdu(room, object.clone()).await?
        {
            return Err(FedError::forbidden(why));
        }
    } else {
        let stripped: Vec<Value> = match body.get("invite_room_state") {
            Some(CanonicalJsonValue::Array(a)) => a
                .iter()
                .take(MAX_INVITE_STATE)
                .filter_map(|v| serde_json::to_value(v).ok())
                .collect(),
            _ => Vec::new(),
        };
        ctx.hs
            .rooms
            .store_remote_invite(room, &version, &object, &stripped)
            .await?;
    }
    Ok(Json(json!({ "event": object })))
}
