//! Room aliases, the public room directory and the user directory:
//!
//! - `GET|PUT|DELETE /_matrix/client/v3/directory/room/{roomAlias}`
//! - `GET /_matrix/client/v3/rooms/{roomId}/aliases`
//! - `GET|POST /_matrix/client/v3/publicRooms` (`?server=` another node's, over federation)
//! - `GET|PUT /_matrix/client/v3/directory/list/room/{roomId}`
//! - `POST /_matrix/client/v3/user_directory/search`
//! - `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` (rooms of a space, those on other nodes
//!   over federation)

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use grove_server::rooms::{
    directory::{PublicRoomsPage, PublicRoomsQuery},
    hierarchy::{
        DEFAULT_HIERARCHY_LIMIT, HierarchyQuery, MAX_HIERARCHY_DEPTH, hierarchy, parse_from,
    },
};
use ruma::{
    OwnedRoomAliasId, ServerName, UInt,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::{Visibility, aliases},
        space::{SpaceHierarchyRoomsChunk, get_hierarchy},
        user_directory::search_users,
    },
    directory::RoomNetwork,
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
        .route(
            "/_matrix/client/v1/rooms/{room_id}/hierarchy",
            get(space_hierarchy),
        )
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

/// A page of the public room directory of this node, or of `server` over federation.
async fn directory_page(
    app: &AppState,
    server: Option<&ServerName>,
    query: &PublicRoomsQuery,
) -> Result<PublicRoomsPage, ApiError> {
    match server {
        Some(server) if server != app.hs.config.server_name => {
            let remote = app
                .hs
                .remote
                .get()
                .ok_or_else(|| ApiError::not_found("This node does not federate"))?;
            Ok(remote.public_rooms(server, query).await?)
        }
        _ => Ok(app
            .hs
            .rooms
            .public_rooms(query.limit, query.since.as_deref(), query.search.as_deref())
            .await?),
    }
}

/// `GET /_matrix/client/v3/publicRooms`
async fn public_rooms(
    State(app): State<AppState>,
    ruma: Ruma<get_public_rooms::v3::Request>,
) -> ApiResult<get_public_rooms::v3::Response> {
    let b = &ruma.body;
    let query = PublicRoomsQuery {
        limit: to_limit(b.limit),
        since: b.since.clone(),
        search: None,
        include_all_networks: false,
    };
    let page = directory_page(&app, b.server.as_deref(), &query).await?;
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
    let query = PublicRoomsQuery {
        limit: to_limit(b.limit),
        since: b.since.clone(),
        search: b.filter.generic_search_term.clone(),
        include_all_networks: matches!(b.room_network, RoomNetwork::All),
    };
    let page = directory_page(&app, b.server.as_deref(), &query).await?;
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

/// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
async fn space_hierarchy(
    State(app): State<AppState>,
    ruma: Ruma<get_hierarchy::v1::Request>,
) -> ApiResult<get_hierarchy::v1::Response> {
    let user = &ruma.session()?.user_id;
    let b = &ruma.body;
    let query = HierarchyQuery {
        max_depth: to_limit(b.max_depth).unwrap_or(MAX_HIERARCHY_DEPTH),
        limit: to_limit(b.limit).unwrap_or(DEFAULT_HIERARCHY_LIMIT),
        skip: b.from.as_deref().map(parse_from).transpose()?.unwrap_or(0),
        suggested_only: b.suggested_only,
    };
    let page = hierarchy(&app.hs.rooms, app.hs.remote.get(), user, &b.room_id, &query).await?;
    let mut response = get_hierarchy::v1::Response::new();
    // A room another server described oddly is left out rather than failing the page.
    response.rooms = page
        .rooms
        .into_iter()
        .filter_map(|r| serde_json::from_value::<SpaceHierarchyRoomsChunk>(r).ok())
        .collect();
    response.next_batch = page.next_batch;
    Ok(RumaResponse(response))
}
