//! Inbound: sessions accepted with ALPN `matrix`, each bi-directional stream served as one
//! HTTP/1.1 connection by the federation router, with the session's peer key attached to every
//! request so that `X-Matrix` origins can be tied to the overlay identity that sent them. Also
//! the HTTPS listener of a DNS-named node: TLS connections serving the same router, with no
//! peer key (their origins are checked against key-server keys).
//!
//! Both serve through [`grove_listen::serve_connection`], under the same limits as the client
//! API's listener: a deadline for each request head, for each stretch of a body and for an
//! idle keep-alive, and a cap on what is served at once (TLS connections, or overlay streams
//! over all sessions); what comes over the cap is closed at once. Refusals are counted in
//! `grove_federation_refused_total`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use grove_listen::{Refusal, Refusals, ServeConfig};
use grove_overlay::{session::SessionListener, tls::keys::NodeKey};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

/// The longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The address of the client at the other end of an HTTPS federation connection.
#[derive(Debug, Clone, Copy)]
pub struct TlsPeer(pub SocketAddr);

/// The overlay key of the node at the other end of the session a request came on.
#[derive(Debug, Clone, Copy)]
pub struct PeerKey(pub NodeKey);

/// Accepts sessions until the overlay stops, serving each stream while fewer than
/// `config.max_connections` streams are served at once.
pub async fn serve(
    mut listener: SessionListener,
    router: Router,
    config: ServeConfig,
    refusals: Arc<dyn Refusals>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let config = Arc::new(config);
    while let Some(incoming) = listener.accept().await {
        let router = router.clone();
        let permits = permits.clone();
        let config = config.clone();
        let refusals = refusals.clone();
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
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // Dropping the stream's halves closes it unanswered.
                    refusals.refuse(Refusal::ConnectionCap);
                    continue;
                };
                let router = router.clone();
                let config = config.clone();
                let refusals = refusals.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let io = tokio::io::join(recv, send);
                    let tag = move |request: &mut http::Request<axum::body::Body>| {
                        request.extensions_mut().insert(PeerKey(peer));
                    };
                    let served = grove_listen::serve_connection(
                        io,
                        router,
                        &config,
                        refusals,
                        tag,
                        std::future::pending(),
                    );
                    if let Err(e) = served.await {
                        debug!(%peer, error = %e, "federation stream failed");
                    }
                });
            }
        });
    }
}

/// Accepts TLS connections on `listener` and serves `router` on each, HTTP/1.1 with keep-alive,
/// while fewer than `config.max_connections` are open, until the task is stopped; stopping it
/// also ends every connection it accepted.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    config: ServeConfig,
    refusals: Arc<dyn Refusals>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let config = Arc::new(config);
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refusals.refuse(Refusal::ConnectionCap);
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let config = config.clone();
        let refusals = refusals.clone();
        connections.spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "federation TLS handshake failed");
                    return;
                }
                Err(_) => {
                    refusals.refuse(Refusal::HeaderTimeout);
                    debug!(%remote, "federation TLS handshake timed out");
                    return;
                }
            };
            let tag = move |request: &mut http::Request<axum::body::Body>| {
                request.extensions_mut().insert(TlsPeer(remote));
            };
            let served = grove_listen::serve_connection(
                tls,
                router,
                &config,
                refusals,
                tag,
                std::future::pending(),
            );
            if let Err(e) = served.await {
                debug!(%remote, error = %e, "federation connection failed");
            }
        });
    }
}
