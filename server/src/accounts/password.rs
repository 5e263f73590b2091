//! Password hashing with argon2id, run on the blocking pool so a hash never stalls the runtime.
//!
//! Argon2 is memory-hard: each hash fills [`MEMORY_KIB`] of blocks. Allocated afresh per hash
//! on whichever blocking thread runs it, that memory lands in a different allocator arena per
//! thread and stays with the process after the hash is done (a node that saw 100 sign-ups held
//! over 100 MB). So a [`Hasher`] runs at most [`MAX_CONCURRENT_HASHES`] hashes at a time, each
//! in a block buffer allocated once and kept for the next hash: the memory passwords cost is
//! bounded by that many buffers, whatever the number of logins.

use std::sync::{Arc, Mutex};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString},
};
use tokio::sync::Semaphore;

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
/// Hashes computed at once; others wait their turn. Each holds one buffer of [`MEMORY_KIB`].
pub(crate) const MAX_CONCURRENT_HASHES: usize = 2;
/// The largest memory cost of a stored hash that is checked (KiB); a larger one is refused
/// rather than allocated.
const MAX_STORED_MEMORY_KIB: u32 = 64 * 1024;

fn params() -> Result<Params> {
    Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))
}

/// Hashes and checks passwords in a bounded number of reused block buffers.
#[derive(Clone)]
pub(crate) struct Hasher {
    permits: Arc<Semaphore>,
    /// Buffers not in use; at most [`MAX_CONCURRENT_HASHES`] exist, made on first need.
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl Default for Hasher {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_HASHES)),
            buffers: Arc::default(),
        }
    }
}

impl Hasher {
    /// Hashes `password` into a PHC string.
    pub(crate) async fn hash(&self, password: String) -> Result<String> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let params = params()?;
        let output = self
            .run(
                Algorithm::Argon2id,
                Version::V0x13,
                params.clone(),
                password,
                salt.clone(),
            )
            .await?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params)
                .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the stored PHC string `hash`.
    pub(crate) async fn verify(&self, password: String, hash: String) -> Result<bool> {
        let corrupt =
            |e: &dyn std::fmt::Display| Error::Corrupt(format!("stored password hash: {e}"));
        let parsed = PasswordHash::new(&hash).map_err(|e| corrupt(&e))?;
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| corrupt(&e))?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(|e| corrupt(&e))?
            .unwrap_or_default();
        let params = Params::try_from(&parsed).map_err(|e| corrupt(&e))?;
        if params.m_cost() > MAX_STORED_MEMORY_KIB {
            return Err(corrupt(&"memory cost too large"));
        }
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(corrupt(&"no salt or hash"));
        };
        let salt = SaltString::from_b64(salt.as_str()).map_err(|e| corrupt(&e))?;
        let computed = self.run(algorithm, version, params, password, salt).await?;
        // `Output` compares in constant time.
        Ok(computed == expected)
    }

    /// Computes one argon2 output on the blocking pool, in a reused buffer.
    async fn run(
        &self,
        algorithm: Algorithm,
        version: Version,
        params: Params,
        password: String,
        salt: SaltString,
    ) -> Result<Output> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::Internal(format!("password hasher closed: {e}")))?;
        let buffers = self.buffers.clone();
        tokio::task::spawn_blocking(move || {
            let mut blocks = buffers
                .lock()
                .ok()
                .and_then(|mut b| b.pop())
                .unwrap_or_default();
            let needed = params.block_count();
            if blocks.len() < needed {
                blocks.resize(needed, Block::default());
            }
            let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
            let argon2 = Argon2::new(algorithm, version, params);
            let mut salt_bytes = [0u8; 64];
            let result = salt
                .decode_b64(&mut salt_bytes)
                .map_err(|e| Error::Internal(format!("password salt: {e}")))
                .and_then(|salt| {
                    Output::init_with(output_len, |out| {
                        argon2
                            .hash_password_into_with_memory(
                                password.as_bytes(),
                                salt,
                                out,
                                &mut blocks[..],
                            )
                            .map_err(Into::into)
                    })
                    .map_err(|e| Error::Internal(format!("hashing password: {e}")))
                });
            // A buffer grown for an old hash's larger cost is not kept.
            if blocks.len() <= MEMORY_KIB as usize
                && let Ok(mut b) = buffers.lock()
            {
                b.push(blocks);
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("hashing task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[tokio::test]
    async fn hashes_match_the_standard_encoding_both_ways() {
        let hasher = Hasher::default();
        // A hash made the standard way (as stored before) is checked here.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let standard = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            params().expect("params"),
        )
        .hash_password(b"correct horse", &salt)
        .expect("hash")
        .to_string();
        assert!(
            hasher
                .verify("correct horse".into(), standard.clone())
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("wrong horse".into(), standard)
                .await
                .expect("verify")
        );
        // A hash made here is checked the standard way.
        let ours = hasher.hash("battery staple".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(b"battery staple", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"battery", &parsed)
                .is_err()
        );
    }

    #[tokio::test]
    async fn concurrent_hashes_share_a_bounded_set_of_buffers() {
        let hasher = Hasher::default();
        let jobs: Vec<_> = (0..8)
            .map(|i| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(format!("password {i}")).await })
            })
            .collect();
        for job in jobs {
            job.await.expect("task").expect("hash");
        }
        let kept = hasher.buffers.lock().map(|b| b.len()).unwrap_or(usize::MAX);
        assert!(
            (1..=MAX_CONCURRENT_HASHES).contains(&kept),
            "{kept} buffers kept"
        );
    }

    #[tokio::test]
    async fn a_stored_hash_asking_for_huge_memory_is_refused() {
        let hasher = Hasher::default();
        let stored = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$\
                      c2FsdHNhbHRzYWx0c2FsdHNhbHRzYWx0c2FsdHNhbHQ";
        assert!(matches!(
            hasher.verify("x".into(), stored.into()).await,
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            hasher.verify("x".into(), "not a hash".into()).await,
            Err(Error::Corrupt(_))
        ));
    }
}
