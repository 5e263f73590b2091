//! Prometheus metrics of federation: requests served by route and status, PDUs and EDUs
//! received by outcome and kind, transactions sent by result. Every label takes its values from
//! a closed set (route patterns, outcome names, known EDU types), so a hostile peer cannot grow
//! the label sets.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route pattern, never the raw path.
    endpoint: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EduLabels {
    edu_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// What a room's server ACL refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclRefusal {
    /// A request about the room.
    Request,
    /// A PDU of the room in a transaction.
    Pdu,
    /// An EDU about the room (typing, receipts).
    Edu,
}

/// What a per-origin rate limit holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// One-time and fallback key claims.
    KeyClaim,
    /// Invites.
    Invite,
}

/// Why a home's replica document, or a peer speaking for a home, was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeRefusal {
    /// A document not signed by the key its name stands for.
    Forged,
    /// A document of another home than the one it was offered for.
    OtherHome,
    /// A document not newer than the one held.
    Stale,
    /// A document too large, malformed, or listing something twice.
    Malformed,
    /// A peer speaking for a home whose newest document does not list it.
    NotReplica,
}

impl HomeRefusal {
    fn label(self) -> &'static str {
        match self {
            HomeRefusal::Forged => "forged",
            HomeRefusal::OtherHome => "other_home",
            HomeRefusal::Stale => "stale",
            HomeRefusal::Malformed => "malformed",
            HomeRefusal::NotReplica => "not_replica",
        }
    }
}

/// What became of a lookup of a home's document on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeLookup {
    /// A document was found and taken.
    Found,
    /// No record, a failed lookup, or a record refused.
    Missing,
    /// Not looked up: the home was looked up too lately.
    Skipped,
}

impl HomeLookup {
    fn label(self) -> &'static str {
        match self {
            HomeLookup::Found => "found",
            HomeLookup::Missing => "missing",
            HomeLookup::Skipped => "skipped",
        }
    }
}

/// What became of a received PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduOutcome {
    /// Stored and part of the room's timeline and state.
    Accepted,
    /// Stored, but left out of the timeline and current state (failed auth against current
    /// state only).
    SoftFailed,
    /// Stored as rejected: failed auth against its auth events or the state before it.
    Rejected,
    /// Not stored: malformed, a bad signature or hash, an unknown room, an unbridgeable gap.
    Refused,
}

impl PduOutcome {
    fn label(self) -> &'static str {
        match self {
            PduOutcome::Accepted => "accepted",
            PduOutcome::SoftFailed => "soft_failed",
            PduOutcome::Rejected => "rejected",
            PduOutcome::Refused => "refused",
        }
    }
}

/// The EDU types counted by name; every other is counted as `other`.
const KNOWN_EDUS: [&str; 7] = [
    crate::homes::REPLICA_DOCUMENT_EDU,
    "m.typing",
    "m.receipt",
    "m.presence",
    "m.device_list_update",
    "m.signing_key_update",
    "m.direct_to_device",
];

/// Federation's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    pdus: Family<OutcomeLabels, Counter>,
    edus: Family<EduLabels, Counter>,
    transactions_in: Family<OutcomeLabels, Counter>,
    transactions_waiting: Gauge,
    transactions_out: Family<OutcomeLabels, Counter>,
    pdus_out: Counter,
    pdus_redacted: Counter,
    acl_refused: Family<KindLabels, Counter>,
    rate_limited: Family<KindLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    homes_refused: Family<ReasonLabels, Counter>,
    home_lookups: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    /// A registry with every federation metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("grove_federation");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Federation requests answered", requests.clone());
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0, 30.0])
        });
        registry.register(
            "request_seconds",
            "Federation request latency",
            latency.clone(),
        );
        let pdus = Family::<OutcomeLabels, Counter>::default();
        registry.register("pdus_received", "PDUs received, by outcome", pdus.clone());
        let edus = Family::<EduLabels, Counter>::default();
        registry.register("edus_received", "EDUs received, by type", edus.clone());
        let transactions_in = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "transactions_received",
            "Transactions received, by outcome",
            transactions_in.clone(),
        );
        let transactions_waiting = Gauge::default();
        registry.register(
            "transactions_waiting",
            "Received transactions waiting behind an earlier one from the same origin",
            transactions_waiting.clone(),
        );
        let transactions_out = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "transactions_sent",
            "Transactions sent, by result",
            transactions_out.clone(),
        );
        let pdus_out = Counter::default();
        registry.register(
            "pdus_sent",
            "PDUs delivered in transactions",
            pdus_out.clone(),
        );
        let pdus_redacted = Counter::default();
        registry.register(
            "pdus_redacted",
            "PDUs kept in redacted form because their content hash did not match",
            pdus_redacted.clone(),
        );
        let acl_refused = Family::<KindLabels, Counter>::default();
        registry.register(
            "acl_refused",
            "Requests, PDUs and EDUs refused by a room's server ACL",
            acl_refused.clone(),
        );
        let rate_limited = Family::<KindLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a per-origin rate limit, by kind",
            rate_limited.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refused",
            "Federation requests, connections and streams refused or cut by the listeners, by reason",
            refused.clone(),
        );
        let homes_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "homes_refused",
            "Replica documents, and peers speaking for a home, refused, by reason",
            homes_refused.clone(),
        );
        let home_lookups = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "home_lookups",
            "Homes' replica documents looked up on the ring, by outcome",
            home_lookups.clone(),
        );
        Arc::new(Self {
            refused,
            homes_refused,
            home_lookups,
            registry,
            requests,
            latency,
            pdus,
            edus,
            transactions_in,
            transactions_waiting,
            transactions_out,
            pdus_out,
            pdus_redacted,
            acl_refused,
            rate_limited,
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

    /// Counts a received PDU.
    pub fn pdu(&self, outcome: PduOutcome) {
        self.pdus
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts a received PDU kept redacted.
    pub fn pdu_redacted(&self) {
        self.pdus_redacted.inc();
    }

    /// Counts something a server ACL refused.
    pub fn acl_refused(&self, what: AclRefusal) {
        let kind = match what {
            AclRefusal::Request => "request",
            AclRefusal::Pdu => "pdu",
            AclRefusal::Edu => "edu",
        };
        self.acl_refused.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts a request a rate limit refused.
    pub fn rate_limited(&self, what: Limited) {
        let kind = match what {
            Limited::KeyClaim => "key_claim",
            Limited::Invite => "invite",
        };
        self.rate_limited.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts a refused replica document or replica.
    pub fn home_refused(&self, why: HomeRefusal) {
        self.homes_refused
            .get_or_create(&ReasonLabels {
                reason: why.label(),
            })
            .inc();
    }

    /// Counts a lookup of a home's document on the ring.
    pub fn home_lookup(&self, outcome: HomeLookup) {
        self.home_lookups
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts a received EDU of `edu_type`.
    pub fn edu(&self, edu_type: Option<&str>) {
        let edu_type = KNOWN_EDUS
            .iter()
            .find(|known| Some(**known) == edu_type)
            .copied()
            .unwrap_or("other");
        self.edus.get_or_create(&EduLabels { edu_type }).inc();
    }

    /// Counts a received transaction: `processed`, `duplicate` or `refused`.
    pub fn transaction_received(&self, outcome: &'static str) {
        self.transactions_in
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts a received transaction as waiting for its turn until the guard is dropped
    /// (also when its request is abandoned while it waits).
    pub fn transaction_waiting(&self) -> WaitingGuard {
        self.transactions_waiting.inc();
        WaitingGuard(self.transactions_waiting.clone())
    }

    /// Counts a sent transaction of `pdus` PDUs and whether the destination took it.
    pub fn transaction_sent(&self, pdus: usize, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "failed" };
        self.transactions_out
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if delivered {
            self.pdus_out.inc_by(pdus as u64);
        }
    }
}

impl grove_listen::Refusals for Metrics {
    fn refuse(&self, reason: grove_listen::Refusal) {
        let reason = match reason {
            grove_listen::Refusal::Panic => "panic",
            grove_listen::Refusal::ConnectionCap => "connection_cap",
            grove_listen::Refusal::HeaderTimeout => "header_timeout",
            grove_listen::Refusal::IdleTimeout => "idle_timeout",
            grove_listen::Refusal::BodyTimeout => "body_timeout",
        };
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }
}

/// Holds one count of [`Metrics::transaction_waiting`].
pub struct WaitingGuard(Gauge);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware recording every request served.
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
