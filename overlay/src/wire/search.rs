//! Path search frames: the searches that look for short routes and the signed replies that
//! carry a route back (the compact reply is in `answer`).

use crate::identity::{NodeKeypair, PublicKey, Signature};
use crate::wire::WireError;

/// Domain separation for path reply signatures.
const PATH_DOMAIN: &[u8] = b"grove-path-v1";
/// A bounded flood looking for short paths from `searcher` to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFind {
    /// The node searching (replies go back to it).
    pub searcher: PublicKey,
    /// The node sought.
    pub target: PublicKey,
    /// Identifies this search.
    pub nonce: u64,
    /// Hops left.
    pub hop_limit: u8,
    /// Hops taken.
    pub hops: u8,
}

/// A path search that costs in proportion to the path: it knows where the target sits on the
/// tree and goes only toward it. A node passes it to at most `width` peers, those closest to
/// the target's coordinates that can still reach it within the hop limit, and splits the width
/// among them; so the frames at any hop count never exceed the searcher's width, and the whole
/// search at most width × hop limit. The target answers with a [`PathReply`] as for
/// [`PathFind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSeek {
    /// The node searching (replies go back to it).
    pub searcher: PublicKey,
    /// The node sought.
    pub target: PublicKey,
    /// Identifies this search.
    pub nonce: u64,
    /// Most hops the search may take.
    pub hop_limit: u8,
    /// Hops taken.
    pub hops: u8,
    /// How many ways this branch of the search may still split into.
    pub width: u8,
    /// The target's tree coordinates.
    pub target_coords: Vec<u16>,
}

/// One signed hop of a path reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathHop {
    /// The hop's key.
    pub key: PublicKey,
    /// Port the reply arrived on (0 at the target, which started it).
    pub in_port: u16,
    /// Port the reply left by.
    pub out_port: u16,
    /// Signature over everything before it (see [`PathReply::signing_bytes`]).
    pub signature: Signature,
}

/// The target's answer to a path search, recorded and signed hop by hop on its way back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathReply {
    /// The node that searched.
    pub searcher: PublicKey,
    /// The node that answered.
    pub target: PublicKey,
    /// The search's nonce.
    pub nonce: u64,
    /// Hops from the target toward the searcher.
    pub hops: Vec<PathHop>,
}

impl PathReply {
    /// The bytes hop `upto` signs, given its own fields.
    pub fn signing_bytes(
        &self,
        upto: usize,
        key: &PublicKey,
        in_port: u16,
        out_port: u16,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(PATH_DOMAIN.len() + 72 + (upto + 1) * 100);
        out.extend_from_slice(PATH_DOMAIN);
        out.extend_from_slice(&self.searcher.0);
        out.extend_from_slice(&self.target.0);
        out.extend_from_slice(&self.nonce.to_be_bytes());
        for h in self.hops.iter().take(upto) {
            put_path_hop(&mut out, h);
        }
        out.extend_from_slice(&key.0);
        out.extend_from_slice(&in_port.to_be_bytes());
        out.extend_from_slice(&out_port.to_be_bytes());
        out
    }

    /// Appends our signed hop.
    pub fn push_signed(&mut self, keypair: &NodeKeypair, in_port: u16, out_port: u16) {
        let key = keypair.public_key();
        let sig =
            Signature(keypair.sign(&self.signing_bytes(self.hops.len(), &key, in_port, out_port)));
        self.hops.push(PathHop {
            key,
            in_port,
            out_port,
            signature: sig,
        });
    }

    /// Checks the chain: starts at the target, no repeated hop, every signature good.
    pub fn verify(&self) -> Result<(), WireError> {
        let first = self
            .hops
            .first()
            .ok_or(WireError::Invalid("path reply without hops"))?;
        if first.key != self.target || first.in_port != 0 {
            return Err(WireError::Invalid(
                "path reply does not start at the target",
            ));
        }
        let mut seen: Vec<&PublicKey> = Vec::with_capacity(self.hops.len());
        for (i, h) in self.hops.iter().enumerate() {
            if seen.contains(&&h.key) || h.key == self.searcher {
                return Err(WireError::Invalid("path reply repeats a hop"));
            }
            if h.out_port == 0 || (i > 0 && h.in_port == 0) {
                return Err(WireError::ZeroPort);
            }
            seen.push(&h.key);
            let msg = self.signing_bytes(i, &h.key, h.in_port, h.out_port);
            if !h.key.verify(&msg, &h.signature) {
                return Err(WireError::BadSignature);
            }
        }
        Ok(())
    }
}

pub(super) fn put_path_hop(out: &mut Vec<u8>, h: &PathHop) {
    out.extend_from_slice(&h.key.0);
    out.extend_from_slice(&h.in_port.to_be_bytes());
    out.extend_from_slice(&h.out_port.to_be_bytes());
    out.extend_from_slice(&h.signature.0);
}
