//! The hello each side of a peer link sends first: protocol version, capability bits and an
//! optional network id. Negotiation takes the lower version and the intersection of
//! capabilities, so an older and a newer node still peer (rolling upgrades).

use crate::wire::WireError;
use crate::wire::codec::Reader;

/// Magic at the start of a hello.
pub const HELLO_MAGIC: [u8; 4] = *b"GRVH";
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// The oldest version this build still peers with.
pub const MIN_VERSION: u8 = 1;
/// Capability: source-routed traffic.
pub const CAP_SOURCE_ROUTING: u32 = 1 << 0;
/// Capability: path search floods and signed replies.
pub const CAP_PATH_SEARCH: u32 = 1 << 1;
/// Capability: ring teardown frames (a broken or superseded ring route is reported at once
/// instead of timing out).
pub const CAP_TEARDOWN: u32 = 1 << 2;
/// Capability: guided path search ([`PathSeek`](crate::wire::PathSeek)), whose cost grows with
/// the path instead of the network.
pub const CAP_GUIDED_SEARCH: u32 = 1 << 3;
/// Capability: signed records on the ring ([`Store`](crate::wire::Store),
/// [`Lookup`](crate::wire::Lookup), [`LookupReply`](crate::wire::LookupReply)). A peer
/// without it refuses those frame types as unknown, so they are never sent to it.
pub const CAP_RECORDS: u32 = 1 << 4;
/// Capability: compact path answers ([`PathAnswer`](crate::wire::PathAnswer), type 11),
/// signed once by the target instead of once per hop. A peer without it would refuse the
/// frame type as unknown, so it is never sent one.
pub const CAP_COMPACT_REPLY: u32 = 1 << 5;
/// Every capability this build has. A peer is sent a frame (or a frame part) beyond the base
/// protocol only if the link negotiated its bit; the base protocol is tree announcements,
/// ring bootstraps and traffic routed by tree or key.
pub const CAPABILITIES: u32 = CAP_SOURCE_ROUTING
    | CAP_PATH_SEARCH
    | CAP_TEARDOWN
    | CAP_GUIDED_SEARCH
    | CAP_RECORDS
    | CAP_COMPACT_REPLY;
/// Length of an encoded hello without a network id (33 more with one).
pub const HELLO_LEN: usize = 4 + 1 + 4 + 1;

/// A peer's opening message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Highest protocol version the sender speaks.
    pub version: u8,
    /// Capability bits the sender has.
    pub capabilities: u32,
    /// Closed network the sender belongs to, if any.
    pub network_id: Option<[u8; 32]>,
}

/// What both sides of a link agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Negotiated {
    /// The version both speak.
    pub version: u8,
    /// Capabilities both have.
    pub capabilities: u32,
}

/// Why a hello is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The bytes are not a hello.
    #[error("malformed hello: {0}")]
    Malformed(#[from] WireError),
    /// No version both sides speak.
    #[error("peer speaks version {theirs}, we need at least {min}")]
    Version {
        /// The peer's version.
        theirs: u8,
        /// Our minimum.
        min: u8,
    },
    /// The two sides belong to different networks (or one to none).
    #[error("peer belongs to another network")]
    NetworkMismatch,
}

impl HelloError {
    /// Short label used in metrics and sent as the reason when a link is refused.
    pub fn label(&self) -> &'static str {
        match self {
            HelloError::Malformed(_) => "malformed",
            HelloError::Version { .. } => "version",
            HelloError::NetworkMismatch => "network_id",
        }
    }
}

impl Hello {
    /// Agrees on a version and capabilities with the peer's hello `theirs` (see [`negotiate`]).
    pub fn negotiate(&self, theirs: &Hello) -> Result<Negotiated, HelloError> {
        negotiate(self, theirs)
    }

    /// This build's hello for `network_id`.
    pub fn ours(network_id: Option<[u8; 32]>) -> Self {
        Hello {
            version: VERSION,
            capabilities: CAPABILITIES,
            network_id,
        }
    }

    /// Length of [`Hello::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        HELLO_LEN + self.network_id.map_or(0, |_| 32)
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&HELLO_MAGIC);
        out.push(self.version);
        out.extend_from_slice(&self.capabilities.to_be_bytes());
        match &self.network_id {
            Some(id) => {
                out.push(1);
                out.extend_from_slice(id);
            }
            None => out.push(0),
        }
        out
    }

    /// Parses a hello; every byte must belong to it.
    pub fn decode(bytes: &[u8]) -> Result<Hello, WireError> {
        let mut r = Reader::new(bytes);
        if r.array::<4>()? != HELLO_MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = r.u8()?;
        let capabilities = r.u32()?;
        let network_id = match r.u8()? {
            0 => None,
            1 => Some(r.array::<32>()?),
            _ => return Err(WireError::Invalid("network id marker")),
        };
        r.finish()?;
        Ok(Hello {
            version,
            capabilities,
            network_id,
        })
    }
}

/// Agrees on a version and capabilities, or says why the peer is refused.
pub fn negotiate(ours: &Hello, theirs: &Hello) -> Result<Negotiated, HelloError> {
    if ours.network_id != theirs.network_id {
        return Err(HelloError::NetworkMismatch);
    }
    let version = ours.version.min(theirs.version);
    if version < MIN_VERSION {
        return Err(HelloError::Version {
            theirs: theirs.version,
            min: MIN_VERSION,
        });
    }
    Ok(Negotiated {
        version,
        capabilities: ours.capabilities & theirs.capabilities,
    })
}
