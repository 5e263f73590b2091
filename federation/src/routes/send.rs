//! `PUT /_matrix/federation/v1/send/{txnId}`: transactions of PDUs and EDUs, one at a time
//! per origin, a retried transaction answered from memory.

use std::sync::Arc;

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, State},
};
use ruma::{CanonicalJsonValue, ServerName};
use serde_json::{Value, json};

use super::{Answer, Ctxt, Origin};
use crate::{Ctx, error::FedError, receive};

/// PDUs in one transaction, at most (the spec's limit).
const MAX_TXN_PDUS: usize = 50;
/// EDUs in one transaction, at most (the spec's limit).
const MAX_TXN_EDUS: usize = 100;

/// The PDUs and EDUs of a transaction body, as sent.
#[derive(Debug)]
pub struct TransactionBody {
    /// The PDUs (not yet checked: each may be anything JSON).
    pub pdus: Vec<Value>,
    /// The EDUs.
    pub edus: Vec<Value>,
}

/// Parses a transaction body: JSON, at most 50 PDUs and 100 EDUs (missing lists are empty).
pub fn parse_transaction(body: &[u8]) -> Result<TransactionBody, FedError> {
    let mut body: Value =
        serde_json::from_slice(body).map_err(|e| FedError::bad_json(format!("not JSON: {e}")))?;
    let mut list = |name: &str| match body.get_mut(name).map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let pdus = list("pdus");
    let edus = list("edus");
    if pdus.len() > MAX_TXN_PDUS || edus.len() > MAX_TXN_EDUS {
        return Err(FedError::bad_json(
            "too many PDUs or EDUs in one transaction",
        ));
    }
    Ok(TransactionBody { pdus, edus })
}

/// `PUT /_matrix/federation/v1/send/{txnId}`
pub(super) async fn send_transaction(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path(txn_id): Path<String>,
    body: Bytes,
) -> Answer {
    let TransactionBody { pdus, edus } = parse_transaction(&body).inspect_err(|_| {
        ctx.metrics.transaction_received("refused");
    })?;
    let origin_lock = origin_txns(&ctx, &origin.0);
    let waiting = ctx.metrics.transaction_waiting();
    let mut recent = origin_lock.lock().await;
    drop(waiting);
    if let Some(answer) = recent.get(&txn_id) {
        ctx.metrics.transaction_received("duplicate");
        return Ok(Json(answer));
    }
    let mut results = serde_json::Map::new();
    let gap_deadline = tokio::time::Instant::now() + receive::TRANSACTION_GAP_BUDGET;
    for pdu in pdus {
        let object = match CanonicalJsonValue::try_from(pdu) {
            Ok(CanonicalJsonValue::Object(o)) => o,
            _ => {
                ctx.metrics.pdu(crate::metrics::PduOutcome::Refused);
                continue;
            }
        };
        let (id, outcome) = receive::handle_pdu(&ctx, &origin.0, object, gap_deadline).await;
        if let Some(id) = id {
            let entry = match outcome {
                Ok(()) => json!({}),
                Err(e) => json!({ "error": e }),
            };
            results.insert(id.to_string(), entry);
        }
    }
    // Typing, read receipts, presence and the E2EE kinds are applied; others are accepted
    // and ignored.
    for edu in &edus {
        ctx.metrics.edu(edu["edu_type"].as_str());
        receive::handle_edu(&ctx, &origin.0, edu).await;
    }
    let answer = json!({ "pdus": results });
    recent.insert(txn_id, answer.clone());
    ctx.metrics.transaction_received("processed");
    Ok(Json(answer))
}

/// Origins remembered at once; past this, those with no transaction in hand are forgotten.
const MAX_TRACKED_ORIGINS: usize = 1024;
/// Transaction answers remembered per origin, so a retried transaction gets the same answer.
const RECENT_TXNS_PER_ORIGIN: usize = 16;

/// The answers to an origin's most recent transactions.
#[derive(Default)]
pub(crate) struct RecentTxns(std::collections::VecDeque<(String, Value)>);

impl RecentTxns {
    fn get(&self, txn_id: &str) -> Option<Value> {
        self.0
            .iter()
            .find(|(id, _)| id == txn_id)
            .map(|(_, answer)| answer.clone())
    }

    fn insert(&mut self, txn_id: String, answer: Value) {
        if self.0.len() == RECENT_TXNS_PER_ORIGIN {
            self.0.pop_front();
        }
        self.0.push_back((txn_id, answer));
    }
}

/// The lock (and recent answers) of `origin`'s transactions.
fn origin_txns(ctx: &Ctx, origin: &ServerName) -> Arc<tokio::sync::Mutex<RecentTxns>> {
    let mut origins = match ctx.inbound_origins.lock() {
        Ok(o) => o,
        Err(poisoned) => poisoned.into_inner(),
    };
    if origins.len() >= MAX_TRACKED_ORIGINS && !origins.contains_key(origin) {
        origins.retain(|_, lock| Arc::strong_count(lock) > 1);
    }
    origins.entry(origin.to_owned()).or_default().clone()
}
