//! The node's ed25519 key: it signs events and federation requests, and its hex form is the
//! node's default server name.

use std::{io::Write, path::Path};

use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
use rand::RngCore;
use ruma::{OwnedServerName, ServerName, signatures::Ed25519KeyPair};

use crate::error::{Error, Result};

/// The key version used in key IDs (`ed25519:grove`).
pub const KEY_VERSION: &str = "grove";

/// The node's signing key, with the forms the rest of the server needs.
pub struct NodeKey {
    signing: SigningKey,
    key_pair: Ed25519KeyPair,
}

impl NodeKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Result<Self> {
        let signing = SigningKey::from_bytes(&seed);
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| Error::Internal(format!("encoding node key: {e}")))?;
        let key_pair = Ed25519KeyPair::from_der(der.as_bytes(), KEY_VERSION.to_owned())
            .map_err(|e| Error::Internal(format!("loading node key: {e}")))?;
        Ok(Self { signing, key_pair })
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// Reads the key stored at `path` (64 hex characters of seed), or creates and stores a new
    /// one there, readable by the owner only.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|e| {
                    Error::Corrupt(format!("node key {}: not hex: {e}", path.display()))
                })?;
                let seed: [u8; 32] = bytes.try_into().map_err(|_| {
                    Error::Corrupt(format!("node key {}: not 32 bytes", path.display()))
                })?;
                Self::from_seed(seed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                write_private(path, &hex::encode(key.seed()))
                    .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))?;
                Ok(key)
            }
            Err(e) => Err(Error::Internal(format!("reading {}: {e}", path.display()))),
        }
    }

    /// The 32-byte seed, for export.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public key bytes.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The public key as 64 lower-case hex characters: the node's default server name.
    pub fn hex(&self) -> String {
        hex::encode(self.public_bytes())
    }

    /// The server name derived from the key.
    pub fn server_name(&self) -> OwnedServerName {
        // 64 hex characters are always a valid DNS-style server name.
        ServerName::parse(self.hex()).expect("hex is a valid server name")
    }

    /// The dalek signing key, for overlay and raw signatures.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The key pair in the form ruma's signing functions take.
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }

    /// The key ID, `ed25519:grove`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{KEY_VERSION}")
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &self.hex())
            .finish_non_exhaustive()
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}
