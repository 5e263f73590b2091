//! Prometheus metrics of the client API: requests by endpoint, method and status, and their
//! latency. Served as OpenMetrics text by [`Metrics::encode`].

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
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

/// Why a request or connection was refused or cut.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: Refusal,
}

/// What a refused or cut request or connection did wrong (or what went wrong with it).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Refusal {
    /// A handler panicked; the client got `500 M_UNKNOWN`.
    Panic,
    /// Parsing the request panicked inside a library; the client got `400 M_BAD_JSON`.
    ParsePanic,
    /// The connection came over the connection cap and was answered `503`.
    ConnectionCap,
    /// The request head did not arrive within the header timeout.
    HeaderTimeout,
    /// A keep-alive connection stayed idle past the idle timeout.
    IdleTimeout,
    /// The request body did not arrive within the body timeout.
    BodyTimeout,
}

impl Refusal {
    /// The label value.
    fn as_str(self) -> &'static str {
        match self {
            Self::Panic => "panic",
            Self::ParsePanic => "parse_panic",
            Self::ConnectionCap => "connection_cap",
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::BodyTimeout => "body_timeout",
        }
    }
}

impl EncodeLabelValue for Refusal {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// The client API's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    refused: Family<RefusalLabels, Counter>,
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
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refused",
            "Client requests and connections refused or cut, by reason",
            refused.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            latency,
            refused,
        })
    }

    /// Counts one refusal.
    pub fn refuse(&self, reason: Refusal) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// How many refusals of this kind were counted.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused.get_or_create(&RefusalLabels { reason }).get()
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
