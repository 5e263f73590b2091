//! The compact path reply: one signature from the target, and per hop only a key prefix and
//! a port, so its size grows with the path, not with its square.

use crate::identity::{NodeKeypair, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, Signature};
use crate::wire::codec::Reader;
use crate::wire::{MAX_ROUTE_LEN, WireError};

/// Domain separation for the target's signature on a compact reply.
const ANSWER_DOMAIN: &[u8] = b"grove-path-answer-v1";
/// Bytes of a key a hop of a compact reply carries: enough to tell a node's peers apart
/// (finding another node's 64-bit prefix means about 2^64 key generations).
pub const KEY_PREFIX_LEN: usize = 8;
/// Encoded length of one [`AnswerHop`].
const HOP_LEN: usize = KEY_PREFIX_LEN + 2;

/// The first [`KEY_PREFIX_LEN`] bytes of a key.
pub fn key_prefix(key: &PublicKey) -> [u8; KEY_PREFIX_LEN] {
    let mut p = [0; KEY_PREFIX_LEN];
    p.copy_from_slice(&key.0[..KEY_PREFIX_LEN]);
    p
}

/// One hop of a [`PathAnswer`], unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerHop {
    /// The hop's key prefix ([`key_prefix`]).
    pub prefix: [u8; KEY_PREFIX_LEN],
    /// The hop's port toward the hop before it, nearer the target (0 at the target).
    pub in_port: u16,
}

/// The target's answer to a guided search, recorded hop by hop on its way back like
/// [`PathReply`](crate::wire::PathReply), but only the target signs (that it answered this
/// search); the hops are checked by the probe that travels the route they describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathAnswer {
    /// The node that searched.
    pub searcher: PublicKey,
    /// The node that answered.
    pub target: PublicKey,
    /// The search's nonce.
    pub nonce: u64,
    /// The target's signature over searcher, target and nonce.
    pub signature: Signature,
    /// Hops from the target toward the searcher, the target first.
    pub hops: Vec<AnswerHop>,
}

impl PathAnswer {
    /// The bytes the target signs.
    fn signing_bytes(searcher: &PublicKey, target: &PublicKey, nonce: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(ANSWER_DOMAIN.len() + 2 * PUBLIC_KEY_LEN + 8);
        out.extend_from_slice(ANSWER_DOMAIN);
        out.extend_from_slice(&searcher.0);
        out.extend_from_slice(&target.0);
        out.extend_from_slice(&nonce.to_be_bytes());
        out
    }

    /// The target's answer to `searcher`'s search `nonce`, holding the target's own hop.
    pub fn new(keypair: &NodeKeypair, searcher: PublicKey, nonce: u64) -> Self {
        let target = keypair.public_key();
        let signature = Signature(keypair.sign(&Self::signing_bytes(&searcher, &target, nonce)));
        PathAnswer {
            searcher,
            target,
            nonce,
            signature,
            hops: vec![AnswerHop {
                prefix: key_prefix(&target),
                in_port: 0,
            }],
        }
    }

    /// Checks what the searcher can: the target signed, the hops start at the target, no hop
    /// repeats or is the searcher, every relay names a port.
    pub fn verify(&self) -> Result<(), WireError> {
        let first = self
            .hops
            .first()
            .ok_or(WireError::Invalid("path answer without hops"))?;
        if first.prefix != key_prefix(&self.target) || first.in_port != 0 {
            return Err(WireError::Invalid(
                "path answer does not start at the target",
            ));
        }
        let searcher = key_prefix(&self.searcher);
        for (i, h) in self.hops.iter().enumerate() {
            if h.prefix == searcher || self.hops[..i].iter().any(|o| o.prefix == h.prefix) {
                return Err(WireError::Invalid("path answer repeats a hop"));
            }
            if i > 0 && h.in_port == 0 {
                return Err(WireError::ZeroPort);
            }
        }
        let msg = Self::signing_bytes(&self.searcher, &self.target, self.nonce);
        if !self.target.verify(&msg, &self.signature) {
            return Err(WireError::BadSignature);
        }
        Ok(())
    }

    /// Length of the encoding without the type byte.
    pub(crate) fn body_len(&self) -> usize {
        2 * PUBLIC_KEY_LEN + 8 + SIGNATURE_LEN + 1 + self.hops.len() * HOP_LEN
    }

    /// Appends the encoding without the type byte.
    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.searcher.0);
        out.extend_from_slice(&self.target.0);
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.signature.0);
        out.push(u8::try_from(self.hops.len()).unwrap_or(u8::MAX));
        for h in self.hops.iter().take(usize::from(u8::MAX)) {
            out.extend_from_slice(&h.prefix);
            out.extend_from_slice(&h.in_port.to_be_bytes());
        }
    }

    /// Parses the encoding after the type byte.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<PathAnswer, WireError> {
        let searcher = r.key()?;
        let target = r.key()?;
        let nonce = r.u64()?;
        let signature = r.sig()?;
        let n = usize::from(r.u8()?);
        if n > MAX_ROUTE_LEN {
            return Err(WireError::TooLong {
                what: "path answer",
                len: n,
                max: MAX_ROUTE_LEN,
            });
        }
        let mut hops = Vec::with_capacity(n);
        for _ in 0..n {
            hops.push(AnswerHop {
                prefix: r.array()?,
                in_port: r.u16()?,
            });
        }
        Ok(PathAnswer {
            searcher,
            target,
            nonce,
            signature,
            hops,
        })
    }
}
