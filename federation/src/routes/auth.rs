//! The layer in front of every federation route: the `X-Matrix` signature of each request
//! (but the public ones) checked, and its origin recorded for the handlers.

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
    // A hex origin's key is its name and its requests come over a session with its key; a DNS
    // origin's keys come from its key server, whatever the transport.
    let hex = keys::is_hex_name(&xmatrix.origin);
    let map = if hex {
        keys::request_keys(&xmatrix.origin, xmatrix.key.as_str())
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
    // The signature proves the origin; the session proves who is on the other end.
    let peer = parts.extensions.get::<PeerKey>().map(|p| p.0);
    if hex && peer != keys::node_key(&xmatrix.origin) {
        return FedError::unauthorized("origin is not the session's peer").into_response();
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(Origin(xmatrix.origin));
    next.run(request).await
}
