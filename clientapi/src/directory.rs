//! Room aliases, the public room directory and the user directory:
//!
//! - `GET|PUT|DELETE /_matrix/client/v3/directory/room/{roomAlias}`
//! - `GET /_matrix/client/v3/rooms/{roomId}/aliases`
//! - `GET|POST /_matrix/client/v3/publicRooms`
//! - `GET|PUT /_matrix/client/v3/directory/list/room/{roomId}`
//! - `POST /_matrix/client/v3/user_directory/search`

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use ruma::{
    OwnedRoomAliasId, UInt,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::{Visibility, aliases},
        user_directory::search_users,
    },
    events::StateEventType,
};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiResult, Ruma, RumaResponse},
};

/// Results a user-directory search returns at most.
const MAX_SEARCH_RESULTS: usize = 100;

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/client/v3/directory/room/{room_alias}",
            get(resolve_alias).put(set_alias).delete(remove_alias),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/aliases",
            get(room_aliases),
        )
        .route(
            "/_matrix/client/v3/publicRooms",
            get(public_rooms).post(public_rooms_filtered),
        )
        .route(
            "/_matrix/client/v3/directory/list/room/{room_id}",
            get(visibility).put(set_visibility),
        )
        .route("/_matrix/client/v3/user_directory/search", post(search))
}

/// `GET /_matrix/client/v3/directory/room/{roomAlias}`
async fn resolve_alias(
    State(app): State<AppState>,
    ruma: Ruma<get_alias::v3::Request>,
) -> ApiResult<get_alias::v3::Response> {
    let room = crate::rooms::resolve(&app, &ruma.body.room_alias).await?;
    Ok(RumaResponse(get_alias::v3::Response::new(
        room,
        vec![app.hs.config.server_name.clone()],
    )))
}

/// `PUT /_matrix/client/v3/directory/room/{roomAlias}`
async fn set_alias(
    State(app): State<AppState>,
    ruma: Ruma<create_alias::v3::Request>,
) -> ApiResult<create_alias::v3::Response> {
    let user = &ruma.session()?.user_id;
    app.hs
        .rooms
        .set_alias(&ruma.body.room_alias, &ruma.body.room_id, user)
        .await?;
    Ok(RumaResponse(create_alias::v3::Response::new()))
}

/// `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
async fn remove_alias(
    State(app): State<AppState>,
    ruma: Ruma<delete_alias::v3::Request>,
) -> ApiResult<delete_alias::v3::Response> {
    let user = &ruma.session()?.user_id;
    app.hs
        .rooms
        .delete_alias(&ruma.body.room_alias, user)
        .await?;
    Ok(RumaResponse(delete_alias::v3::Response::new()))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/aliases`
async fn room_aliases(
    State(app): State<AppState>,
    ruma: Ruma<aliases::v3::Request>,
) -> ApiResult<aliases::v3::Response> {
    let user = &ruma.session()?.user_id;
    let room = &ruma.body.room_id;
    let world_readable = app
        .hs
        .rooms
        .state_content(room, &StateEventType::RoomHistoryVisibility, "")
        .await?
        .is_some_and(|c| c["history_visibility"] == "world_readable");
    if !world_readable && !app.hs.rooms.is_joined(user, room).await? {
        return Err(ApiError::forbidden("You are not in this room"));
    }
    let list: Vec<OwnedRoomAliasId> = app
        .hs
        .rooms
        .aliases(room)
        .await?
        .into_iter()
        .filter_map(|a| a.try_into().ok())
        .collect();
    Ok(RumaResponse(aliases::v3::Response::new(list)))
}

fn to_limit(limit: Option<UInt>) -> Option<usize> {
    limit.map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
}

fn total(n: usize) -> Option<UInt> {
    UInt::try_from(n).ok()
}

/// `GET /_matrix/client/v3/publicRooms`
async fn public_rooms(
    State(app): State<AppState>,
    ruma: Ruma<get_public_rooms::v3::Request>,
) -> ApiResult<get_public_rooms::v3::Response> {
    let b = &ruma.body;
    let page = app
        .hs
        .rooms
        .public_rooms(to_limit(b.limit), b.since.as_deref(), None)
        .await?;
    let mut response = get_public_rooms::v3::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = total(page.total);
    Ok(RumaResponse(response))
}

/// `POST /_matrix/client/v3/publicRooms`
async fn public_rooms_filtered(
    State(app): State<AppState>,
    ruma: Ruma<get_public_rooms_filtered::v3::Request>,
) -> ApiResult<get_public_rooms_filtered::v3::Response> {
    let b = &ruma.body;
    let page = app
        .hs
        .rooms
        .public_rooms(
            to_limit(b.limit),
            b.since.as_deref(),
            b.filter.generic_search_term.as_deref(),
        )
        .await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = total(page.total);
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v3/directory/list/room/{roomId}`
async fn visibility(
    State(app): State<AppState>,
    ruma: Ruma<get_room_visibility::v3::Request>,
) -> ApiResult<get_room_visibility::v3::Response> {
    let published = app.hs.rooms.is_published(&ruma.body.room_id).await?;
    let visibility = if published {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(RumaResponse(get_room_visibility::v3::Response::new(
        visibility,
    )))
}

/// `PUT /_matrix/client/v3/directory/list/room/{roomId}`
async fn set_visibility(
    State(app): State<AppState>,
    ruma: Ruma<set_room_visibility::v3::Request>,
) -> ApiResult<set_room_visibility::v3::Response> {
    let user = &ruma.session()?.user_id;
    let room = &ruma.body.room_id;
    if !app
        .hs
        .rooms
        .may_send_state(room, user, &StateEventType::RoomCanonicalAlias)
        .await?
    {
        return Err(ApiError::forbidden(
            "You may not change this room's directory listing",
        ));
    }
    let publish = match &ruma.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(ApiError::invalid_param("Unknown visibility")),
    };
    app.hs.rooms.set_published(room, publish).await?;
    Ok(RumaResponse(set_room_visibility::v3::Response::new()))
}

/// `POST /_matrix/client/v3/user_directory/search`
async fn search(
    State(app): State<AppState>,
    ruma: Ruma<search_users::v3::Request>,
) -> ApiResult<search_users::v3::Response> {
    let user = &ruma.session()?.user_id;
    let limit = to_limit(Some(ruma.body.limit))
        .unwrap_or(10)
        .min(MAX_SEARCH_RESULTS);
    let (results, limited) = grove_server::rooms::directory::search_users(
        &app.hs.rooms,
        &app.hs.userdata,
        user,
        &ruma.body.search_term,
        limit,
    )
    .await?;
    Ok(RumaResponse(search_users::v3::Response::new(
        results, limited,
    )))
}
