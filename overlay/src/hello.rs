//! The hello exchanged first on a peer link's control stream, and its negotiation.
//!
//! Each side states the range of protocol versions it speaks, its capability bits and an optional
//! 32-byte network id. The link uses the highest version both speak and the intersection of the
//! capabilities, so an older and a newer node still peer. Closed networks: the ids must be equal
//! (both absent, or both the same), otherwise the link is refused.
//!
//! Encoding (big-endian), to be reconciled with the routing core's wire module at merge:
//! `magic "GRVH" | version_min u16 | version_max u16 | capabilities u64 | flags u8 |
//! [network id 32 if flags bit 0]`. Unknown flag bits are refused.

use bytes::{BufMut, Bytes, BytesMut};

/// Magic bytes that open every hello.
pub const HELLO_MAGIC: [u8; 4] = *b"GRVH";

/// Lowest protocol version this node speaks.
pub const VERSION_MIN: u16 = 1;

/// Highest protocol version this node speaks.
pub const VERSION_MAX: u16 = 1;

/// Capability bits this build understands (none defined yet).
pub const CAPABILITIES: u64 = 0;

/// Flag bit: a network id follows.
const FLAG_NETWORK_ID: u8 = 0x01;

/// Length of a hello without network id.
const BASE_LEN: usize = 4 + 2 + 2 + 8 + 1;

/// What one side says in its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Lowest version spoken.
    pub version_min: u16,
    /// Highest version spoken.
    pub version_max: u16,
    /// Capability bits offered.
    pub capabilities: u64,
    /// Closed-network id, if any.
    pub network_id: Option<[u8; 32]>,
}

/// What both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Negotiated {
    /// Protocol version used on the link.
    pub version: u16,
    /// Capabilities both sides have.
    pub capabilities: u64,
}

/// Why a hello was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The bytes are not a hello.
    #[error("malformed hello")]
    Malformed,
    /// No protocol version in common.
    #[error("no common protocol version")]
    Version,
    /// The network ids differ.
    #[error("network id mismatch")]
    NetworkId,
}

impl HelloError {
    /// Short label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Version => "version",
            Self::NetworkId => "network_id",
        }
    }
}

impl Hello {
    /// This build's hello for the given network id.
    pub fn ours(network_id: Option<[u8; 32]>) -> Self {
        Self {
            version_min: VERSION_MIN,
            version_max: VERSION_MAX,
            capabilities: CAPABILITIES,
            network_id,
        }
    }

    /// Encodes the hello.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(BASE_LEN + 32);
        out.put_slice(&HELLO_MAGIC);
        out.put_u16(self.version_min);
        out.put_u16(self.version_max);
        out.put_u64(self.capabilities);
        match &self.network_id {
            Some(id) => {
                out.put_u8(FLAG_NETWORK_ID);
                out.put_slice(id);
            }
            None => out.put_u8(0),
        }
        out.freeze()
    }

    /// Decodes a hello; every byte must be accounted for.
    pub fn decode(bytes: &[u8]) -> Result<Self, HelloError> {
        let head: &[u8; BASE_LEN] = bytes
            .get(..BASE_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(HelloError::Malformed)?;
        let [
            m0,
            m1,
            m2,
            m3,
            v0,
            v1,
            w0,
            w1,
            c0,
            c1,
            c2,
            c3,
            c4,
            c5,
            c6,
            c7,
            flags,
        ] = *head;
        if [m0, m1, m2, m3] != HELLO_MAGIC {
            return Err(HelloError::Malformed);
        }
        let version_min = u16::from_be_bytes([v0, v1]);
        let version_max = u16::from_be_bytes([w0, w1]);
        if version_min > version_max {
            return Err(HelloError::Malformed);
        }
        let capabilities = u64::from_be_bytes([c0, c1, c2, c3, c4, c5, c6, c7]);
        let tail = bytes.get(BASE_LEN..).ok_or(HelloError::Malformed)?;
        let network_id = match flags {
            0 if tail.is_empty() => None,
            FLAG_NETWORK_ID => Some(<[u8; 32]>::try_from(tail).map_err(|_| HelloError::Malformed)?),
            _ => return Err(HelloError::Malformed),
        };
        Ok(Self {
            version_min,
            version_max,
            capabilities,
            network_id,
        })
    }

    /// Negotiates our hello against theirs.
    pub fn negotiate(&self, theirs: &Hello) -> Result<Negotiated, HelloError> {
        if self.network_id != theirs.network_id {
            return Err(HelloError::NetworkId);
        }
        let version = self.version_max.min(theirs.version_max);
        if version < self.version_min.max(theirs.version_min) {
            return Err(HelloError::Version);
        }
        Ok(Negotiated {
            version,
            capabilities: self.capabilities & theirs.capabilities,
        })
    }
}

#[cfg(test)]
mod tests;
