//! The node's ed25519 key: its overlay address, and the key it signs events and federation
//! requests with (certified by its home's replica document when its server name is a home
//! key). Key files hold the 32-byte seed in hex.

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
        Self::with_version(seed, KEY_VERSION.to_owned())
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
        match Self::load(path)? {
            Some(key) => Ok(key),
            None => {
                let key = Self::generate()?;
                key.store(path)?;
                Ok(key)
            }
        }
    }

    /// Reads the key stored at `path`, `None` when there is no file.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        read_seed(path)?.map(Self::from_seed).transpose()
    }

    /// Stores the key at `path`, readable by the owner only; an existing file is an error.
    pub fn store(&self, path: &Path) -> Result<()> {
        write_private(path, &hex::encode(self.seed()))
            .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))
    }

    /// The same key signing under its replica key ID, `ed25519:<first 8 hex of the public
    /// key>`: the ID a home's replica document certifies, distinct between the replicas of one
    /// home (the key ID `ed25519:grove` is kept by nodes with a DNS server name).
    pub fn with_replica_key_id(self) -> Result<Self> {
        let version = self.hex()[..8].to_owned();
        Self::with_version(self.seed(), version)
    }

    fn with_version(seed: [u8; 32], version: String) -> Result<Self> {
        let signing = SigningKey::from_bytes(&seed);
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| Error::Internal(format!("encoding node key: {e}")))?;
        let key_pair = Ed25519KeyPair::from_der(der.as_bytes(), version)
            .map_err(|e| Error::Internal(format!("loading node key: {e}")))?;
        Ok(Self { signing, key_pair })
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

    /// The key ID it signs under: `ed25519:grove`, or its replica key ID (see
    /// [`NodeKey::with_replica_key_id`]).
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.key_pair.version())
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &self.hex())
            .finish_non_exhaustive()
    }
}

/// The 32-byte seed stored in hex at `path`, `None` when there is no file.
pub(crate) fn read_seed(path: &Path) -> Result<Option<[u8; 32]>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Internal(format!("reading {}: {e}", path.display()))),
    };
    let bytes = hex::decode(text.trim())
        .map_err(|e| Error::Corrupt(format!("key {}: not hex: {e}", path.display())))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("key {}: not 32 bytes", path.display())))?;
    Ok(Some(seed))
}

/// Writes `text` and a newline to a new file at `path`, readable by the owner only.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
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
