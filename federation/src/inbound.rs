//! Inbound: sessions accepted with ALPN `matrix`, each bi-directional stream served as one
//! HTTP/1.1 connection by the federation router, with the session's peer key attached to every
//! request so that `X-Matrix` origins can be tied to the overlay identity that sent them.

use axum::Router;
use grove_overlay::{session::SessionListener, tls::keys::NodeKey};
use hyper_util::rt::TokioIo;
use tower::ServiceExt;
use tracing::debug;

/// The overlay key of the node at the other end of the session a request came on.
#[derive(Debug, Clone, Copy)]
pub struct PeerKey(pub NodeKey);

/// Accepts sessions until the overlay stops.
pub async fn serve(mut listener: SessionListener, router: Router) {
    while let Some(incoming) = listener.accept().await {
        let router = router.clone();
        tokio::spawn(async move {
            let peer = incoming.remote;
            let connection = incoming.connection;
            loop {
                let (send, recv) = match connection.accept_bi().await {
                    Ok(streams) => streams,
                    Err(e) => {
                        debug!(%peer, error = %e, "federation session closed");
                        break;
                    }
                };
                let router = router.clone();
                tokio::spawn(async move {
                    let io = TokioIo::new(tokio::io::join(recv, send));
                    let service = hyper::service::service_fn(
                        move |mut request: http::Request<hyper::body::Incoming>| {
                            request.extensions_mut().insert(PeerKey(peer));
                            router.clone().oneshot(request.map(axum::body::Body::new))
                        },
                    );
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                    {
                        debug!(%peer, error = %e, "federation stream failed");
                    }
                });
            }
        });
    }
}
