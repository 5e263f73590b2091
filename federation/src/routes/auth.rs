//! The layer in front of every federation route: the `X-Matrix` signature of each request
//! (but the public ones) checked, a hex origin tied to the overlay peer that sent it (the
//! home's own key or a replica its document lists), and the origin recorded for the handlers.

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ruma::{OwnedServerName, api::federation::authentication::XMatrix};

use super::{Ctxt, MAX_BODY_BYTES};
use crate::{error::FedError, inbound::PeerKey, keys};

/// The authenticated origin of a request.
#[derive(Debug, Clone)]
pub struct Origin(pub OwnedServerName);

/// Checks `X-Matrix` on every request but the public ones, and records the origin.
pub(super) async fn authenticate(State(ctx): Ctxt, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/_matrix/federation/v1/version" || path.starts_with("/_matrix/key/") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return FedError::new(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "request body too large",
        )
        .into_response();
    };
    let xmatrix = match XMatrix::extract_from_http_headers(&parts.headers) {
        Ok(x) => x,
        Err(e) => return FedError::unauthorized(format!("X-Matrix: {e}")).into_response(),
    };
    // A hex origin is a home: its requests come over a session with one of its replicas (the
    // home's own key, or a node its replica document lists) and are signed by that replica's
    // own key as the document lists it (the name itself for the home's own key). A DNS origin's keys come from its key
    // server, whatever the transport.
    let map = if keys::is_hex_name(&xmatrix.origin) {
        let Some(PeerKey(peer)) = parts.extensions.get::<PeerKey>().copied() else {
            return FedError::unauthorized("a hex origin speaks over an overlay session")
                .into_response();
        };
        if let Err(e) = ctx.keys.admit(&xmatrix.origin, &peer).await {
            return FedError::unauthorized(format!("origin is not the session's peer: {e}"))
                .into_response();
        }
        ctx.keys
            .peer_request_keys(&xmatrix.origin, xmatrix.key.as_str(), &peer)
            .await
    } else {
        ctx.keys
            .request_keys(&xmatrix.origin, xmatrix.key.as_str())
            .await
    };
    let Some(map) = map else {
        return FedError::unauthorized(format!(
            "no key {} known for {}",
            xmatrix.key, xmatrix.origin
        ))
        .into_response();
    };
    let check = match http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .body(bytes.to_vec())
    {
        Ok(r) => r,
        Err(_) => return FedError::bad_json("bad request").into_response(),
    };
    if let Err(e) = xmatrix.verify_http_request(&check, &ctx.hs.config.server_name, &map) {
        return FedError::unauthorized(format!("X-Matrix signature: {e}")).into_response();
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(Origin(xmatrix.origin));
    next.run(request).await
}
