//! The export file: a home key and its replica document, encrypted with a passphrase.
//!
//! Layout, integers little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 8 | [`MAGIC`], `GROVEHK` and a zero byte |
//! | 1 | format version, [`FORMAT_VERSION`] |
//! | 12 | Argon2id memory (KiB), passes, lanes: three `u32` |
//! | 16 | Argon2id salt, random |
//! | 24 | XChaCha20-Poly1305 nonce, random |
//! | 4 | ciphertext length `n` (`u32`) |
//! | n | ciphertext of the JSON `{"home_key": <hex seed>, "document": <replica document>}` with its 16-byte tag |
//! | 32 | SHA-256 of everything before it |
//!
//! The key is Argon2id of the passphrase with the salt and costs of the file; everything before
//! the ciphertext is associated data, so no header byte can be changed unnoticed. The closing
//! checksum tells a damaged or cut file ([`FileError::Corrupt`]) from a wrong passphrase
//! ([`FileError::WrongPassphrase`]), which the AEAD alone cannot. Costs read from a file are
//! bounded, so a crafted file cannot make the reader allocate gigabytes.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use grove_server::home::{HomeKey, ReplicaDocument};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The first bytes of every export file.
pub const MAGIC: &[u8; 8] = b"GROVEHK\0";
/// The format written; the only one read.
pub const FORMAT_VERSION: u8 = 1;

const HEADER_LEN: usize = 8 + 1 + 12 + 16 + 24 + 4;
const CHECKSUM_LEN: usize = 32;
/// The largest ciphertext read: a key and a document of at most 16 KiB, with room to spare.
const MAX_CIPHERTEXT: usize = 64 * 1024;

/// Argon2id's cost when writing: 64 MiB, 3 passes, one lane.
const WRITE_COST: (u32, u32, u32) = (64 * 1024, 3, 1);
/// The most memory a file may ask for, in KiB (1 GiB).
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// The most passes a file may ask for.
const MAX_PASSES: u32 = 16;
/// The most lanes a file may ask for.
const MAX_LANES: u32 = 8;

/// Why an export file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The passphrase does not open the file.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The file is damaged, cut short or not an export file.
    #[error("corrupt export file: {0}")]
    Corrupt(String),
    /// Encryption or key derivation failed.
    #[error("encrypting: {0}")]
    Crypto(String),
}

/// What an export file holds.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    home_key: String,
    document: serde_json::Value,
}

/// The export file of `home` and `document`, encrypted with `passphrase`.
pub fn seal(
    home: &HomeKey,
    document: &ReplicaDocument,
    passphrase: &str,
) -> Result<Vec<u8>, FileError> {
    let contents = Contents {
        home_key: hex::encode(home.seed()),
        document: document.to_json(),
    };
    let plaintext = serde_json::to_vec(&contents).map_err(|e| FileError::Crypto(e.to_string()))?;
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let (memory, passes, lanes) = WRITE_COST;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16 + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    for n in [memory, passes, lanes] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let length =
        u32::try_from(plaintext.len() + 16).map_err(|e| FileError::Crypto(e.to_string()))?;
    out.extend_from_slice(&length.to_le_bytes());
    let cipher = cipher(passphrase, &salt, WRITE_COST).map_err(FileError::Crypto)?;
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: &out,
            },
        )
        .map_err(|e| FileError::Crypto(e.to_string()))?;
    out.extend_from_slice(&ciphertext);
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    Ok(out)
}

/// The home key and document in an export file, checked: the document must be signed by the
/// key it comes with.
pub fn open(bytes: &[u8], passphrase: &str) -> Result<(HomeKey, ReplicaDocument), FileError> {
    let corrupt = |what: &str| FileError::Corrupt(what.to_owned());
    if !bytes.starts_with(MAGIC) {
        return Err(corrupt("not a Grove home key export"));
    }
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(corrupt("truncated"));
    }
    let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(corrupt("checksum mismatch (damaged or truncated)"));
    }
    let (header, ciphertext) = body.split_at(HEADER_LEN);
    let mut reader = Reader(&header[MAGIC.len()..]);
    let version = reader.u8()?;
    if version != FORMAT_VERSION {
        return Err(FileError::Corrupt(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let cost = (reader.u32()?, reader.u32()?, reader.u32()?);
    if !(8..=MAX_MEMORY_KIB).contains(&cost.0)
        || !(1..=MAX_PASSES).contains(&cost.1)
        || !(1..=MAX_LANES).contains(&cost.2)
    {
        return Err(corrupt("key derivation cost out of bounds"));
    }
    let salt = reader.take(16)?;
    let nonce = reader.take(24)?;
    let length = reader.u32()? as usize;
    if length != ciphertext.len() || length > MAX_CIPHERTEXT {
        return Err(corrupt("ciphertext length does not match"));
    }
    let cipher = cipher(passphrase, salt, cost).map_err(FileError::Corrupt)?;
    let plaintext = cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: header,
            },
        )
        .map_err(|_| FileError::WrongPassphrase)?;
    let contents: Contents = serde_json::from_slice(&plaintext)
        .map_err(|e| FileError::Corrupt(format!("contents: {e}")))?;
    let seed: [u8; 32] = hex::decode(&contents.home_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("home key is not 32 bytes of hex"))?;
    let home = HomeKey::from_seed(seed);
    let document = ReplicaDocument::from_value(&contents.document)
        .map_err(|e| FileError::Corrupt(e.to_string()))?;
    if document.server_name() != home.server_name().as_str() {
        return Err(corrupt("the document is of another home than the key"));
    }
    Ok((home, document))
}

/// The AEAD keyed by Argon2id of `passphrase`.
fn cipher(
    passphrase: &str,
    salt: &[u8],
    (memory, passes, lanes): (u32, u32, u32),
) -> Result<XChaCha20Poly1305, String> {
    let params = Params::new(memory, passes, lanes, Some(32)).map_err(|e| e.to_string())?;
    let mut key = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| e.to_string())?;
    XChaCha20Poly1305::new_from_slice(&key).map_err(|e| e.to_string())
}

/// Reads the fixed header fields in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FileError> {
        if self.0.len() < n {
            return Err(FileError::Corrupt("truncated header".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FileError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, FileError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}
