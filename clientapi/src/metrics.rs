//! Prometheus metrics of the client API: requests by endpoint, method and status, and their
//! latency. Served as OpenMetrics text by [`Metrics::encode`].

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// The labels of one request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route pattern (`/_matrix/client/v3/rooms/{roomId}/send/...`), never the raw path,
    /// so the label set stays bounded.
    endpoint: String,
    status: u16,
}

/// The client API's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
}

impl Metrics {
    /// A registry with every client-API metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("grove_client");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Client API requests answered", requests.clone());
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0, 30.0,
            ])
        });
        registry.register(
            "request_seconds",
            "Client API request latency",
            latency.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            latency,
        })
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Middleware recording every request.
pub(crate) async fn record(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = RequestLabels {
        method,
        endpoint,
        status: response.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
