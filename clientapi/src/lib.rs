//! The Matrix client-server API of a Grove node: an axum router that parses requests with ruma,
//! authenticates them, calls the server core and maps the results onto the wire.
//!
//! Handlers are thin: parse (the [`extract::Ruma`] extractor), call `grove_server`, map the
//! result. This crate holds no SQL and no Matrix logic of its own, and knows nothing of the
//! overlay. Every failure reaches the client as a Matrix error body ([`error::ApiError`]).

mod account;
pub mod cors;
mod devices;
mod directory;
mod discovery;
pub mod error;
pub mod extract;
mod keys;
mod media;
pub mod metrics;
mod profile;
mod rooms;
pub mod serve;
mod session;
mod sync;
mod userdata;

use std::sync::Arc;

use axum::{
    Router,
    extract::Request,
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
};
use grove_server::Homeserver;

use crate::error::ApiError;

/// Limits applied to client requests.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest request body accepted; larger ones get `413 M_TOO_LARGE`.
    pub max_body_bytes: usize,
    /// The longest a `/sync` long-poll may wait, whatever the client asks.
    pub max_sync_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_sync_timeout_ms: 60_000,
        }
    }
}

/// What every handler may reach: the homeserver core and the request limits.
#[derive(Clone)]
pub struct AppState {
    /// The homeserver core.
    pub hs: Homeserver,
    /// Request limits.
    pub limits: Arc<Limits>,
    /// The client-facing base URL, for `.well-known/matrix/client`.
    pub public_base_url: Arc<str>,
    /// Request metrics.
    pub metrics: Arc<metrics::Metrics>,
}

/// The client API router, with CORS and Matrix-shaped fallbacks, ready to serve.
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .merge(discovery::routes())
        .merge(session::routes())
        .merge(account::routes())
        .merge(devices::routes())
        .merge(profile::routes())
        .merge(userdata::routes())
        .merge(keys::routes())
        .merge(rooms::routes())
        .merge(directory::routes())
        .merge(sync::routes())
        .merge(media::routes())
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::record,
        ))
        .layer(grove_listen::panic_net(metrics))
        .layer(axum::middleware::from_fn(cors::cors))
        .with_state(state)
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
        "Method not allowed",
    )
    .into_response()
}

async fn unrecognized(request: Request) -> Response {
    if request.method() == Method::OPTIONS {
        return StatusCode::OK.into_response();
    }
    ApiError::unrecognized().into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{Router, routing::get};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use crate::{
        metrics::{Metrics, Refusal},
        serve::{ServeConfig, serve},
    };

    /// Reads one response with a `content-length` from `stream`.
    async fn read_response(stream: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")?
                            .parse::<usize>()
                            .ok()
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("answer in time")
                .expect("read");
            assert!(n > 0, "connection closed after {text:?}");
            got.extend_from_slice(&buf[..n]);
        }
    }

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_keeps_the_connection() {
        let metrics = Metrics::new();
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(grove_listen::panic_net(metrics.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(
            listener,
            app,
            ServeConfig::default(),
            metrics.clone(),
            std::future::pending(),
        ));
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(answer.contains("\"M_UNKNOWN\""), "{answer}");
        assert!(!answer.contains("handler bug"), "detail leaked: {answer}");
        stream
            .write_all(b"GET /fine HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(metrics.refused(Refusal::Panic), 1);
        server.abort();
    }
}
