//! Other servers' verify keys, as their key servers last gave them (DNS-named servers only: a
//! hex name is its own key and never stored). Federation fetches and checks them; this keeps
//! them across restarts.

use std::collections::BTreeMap;

use ruma::ServerName;

use crate::{Result, Storage, storage::Batch};

/// One server's keys: key ID to unpadded base64 public key, and when they stop being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKeys {
    /// Key ID (`ed25519:...`) to the public key in unpadded base64.
    pub keys: BTreeMap<String, String>,
    /// The document's `valid_until_ts`, in milliseconds since the epoch.
    pub valid_until_ms: u64,
}

/// The keys last stored for `server`, if any.
pub async fn load(storage: &Storage, server: &ServerName) -> Result<Option<StoredKeys>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT key_id, public_key, valid_until_ms FROM server_keys WHERE server_name = $1",
    )
    .bind(server.as_str())
    .fetch_all(storage.pool())
    .await?;
    let Some(valid_until) = rows.iter().map(|(_, _, until)| *until).min() else {
        return Ok(None);
    };
    Ok(Some(StoredKeys {
        keys: rows.into_iter().map(|(id, key, _)| (id, key)).collect(),
        valid_until_ms: u64::try_from(valid_until).unwrap_or(0),
    }))
}

/// Replaces the keys stored for `server` with `keys`.
pub async fn store(storage: &Storage, server: &ServerName, keys: &StoredKeys) -> Result<()> {
    let until = i64::try_from(keys.valid_until_ms).unwrap_or(i64::MAX);
    let mut batch = Batch::default();
    batch.push(
        "DELETE FROM server_keys WHERE server_name = $1",
        vec![server.as_str().into()],
    );
    for (id, key) in &keys.keys {
        batch.push(
            "INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ms) \
             VALUES ($1, $2, $3, $4)",
            vec![
                server.as_str().into(),
                id.as_str().into(),
                key.as_str().into(),
                until.into(),
            ],
        );
    }
    // A write of its own, with no stream position: nothing a client syncs changes.
    let txn = storage.write_batched().await?;
    txn.commit_batch(batch).await?;
    Ok(())
}
