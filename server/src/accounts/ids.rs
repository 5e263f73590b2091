//! Random identifiers and the wall clock, shared by the account and key stores.

use rand::{Rng, distributions::Alphanumeric};
use sha2::{Digest, Sha256};

/// `len` random ASCII letters and digits.
pub(crate) fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A new device ID: ten upper-case letters, as clients commonly show them.
pub(crate) fn device_id() -> String {
    let mut rng = rand::thread_rng();
    (0..10)
        .map(|_| char::from(b'A' + rng.gen_range(0..26u8)))
        .collect()
}

/// The hex SHA-256 of an access token, the form tokens are stored in.
pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
