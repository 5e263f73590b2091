//! Inbound: sessions accepted with ALPN `matrix`, each bi-directional stream served as one
//! HTTP/1.1 connection by the federation router, with the session's peer key attached to every
//! request so that `X-Matrix` origins can be tied to the overlay identity that sent them. Also
//! the HTTPS listener of a DNS-named node: TLS connections serving the same router, with no
//! peer key (their origins are checked against key-server keys).

use std::{net::SocketAddr, time::Duration};

use axum::Router;
use grove_overlay::{session::SessionListener, tls::keys::NodeKey};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::debug;

/// The longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The address of the client at the other end of an HTTPS federation connection.
#[derive(Debug, Clone, Copy)]
pub struct TlsPeer(pub SocketAddr);

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

/// Accepts TLS connections on `listener` and serves `router` on each, HTTP/1.1 with keep-alive,
/// until the task is stopped; stopping it also ends every connection it accepted.
pub async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    // Owned here so that aborting this task drops (and so aborts) every connection task.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most often: wait a little rather than spin.
                    debug!(error = %e, "accepting a federation connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        connections.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "federation TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "federation TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(
                move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(TlsPeer(remote));
                    router.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                debug!(%remote, error = %e, "federation connection failed");
            }
        });
    }
}
