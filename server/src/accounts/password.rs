//! Password hashing with argon2id, run on the blocking pool so a hash never stalls the runtime.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::SaltString,
};

use crate::{Error, Result};

/// Memory cost in KiB. 8 MiB with three passes costs a few milliseconds on a phone-class core:
/// enough to make offline guessing expensive, small enough for an embedded node that logs in
/// rarely. Stored hashes carry their own parameters, so raising these later keeps old hashes
/// valid.
const MEMORY_KIB: u32 = 8 * 1024;
/// Passes over the memory.
const ITERATIONS: u32 = 3;
/// Lanes; one, since a node has few cores to spare.
const PARALLELISM: u32 = 1;

fn argon2() -> Result<Argon2<'static>> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` into a PHC string.
pub(crate) async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        argon2()?
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("hashing password: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(format!("hashing task: {e}")))?
}

/// Whether `password` matches the stored PHC string `hash`.
pub(crate) async fn verify(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| Error::Corrupt(format!("stored password hash: {e}")))?;
        Ok(argon2()?
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| Error::Internal(format!("verifying task: {e}")))?
}
