//! Serving the client API over TCP: [`grove_listen::serve`] with the client API's metrics
//! counting what it refuses (`grove_client_refused_total`).

use std::{future::Future, sync::Arc};

use axum::Router;
pub use grove_listen::{BodyTimedOut, MAX_REFUSERS, ServeConfig};
use tokio::net::TcpListener;

use crate::metrics::{Metrics, Refusal};

impl grove_listen::Refusals for Metrics {
    fn refuse(&self, reason: grove_listen::Refusal) {
        Metrics::refuse(
            self,
            match reason {
                grove_listen::Refusal::Panic => Refusal::Panic,
                grove_listen::Refusal::ConnectionCap => Refusal::ConnectionCap,
                grove_listen::Refusal::HeaderTimeout => Refusal::HeaderTimeout,
                grove_listen::Refusal::IdleTimeout => Refusal::IdleTimeout,
                grove_listen::Refusal::BodyTimeout => Refusal::BodyTimeout,
            },
        );
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish
/// the request they are on. Dropping the returned future (aborting its task) closes every
/// connection at once.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: ServeConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    grove_listen::serve(listener, app, config, metrics, shutdown).await;
}
