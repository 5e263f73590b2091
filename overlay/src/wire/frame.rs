//! Routing frames: layouts, encodings and the exact bytes each signature covers.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::identity::{NodeKeypair, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, SigCache, Signature};
use crate::wire::answer::PathAnswer;
use crate::wire::codec::{Reader, put_ports};
use crate::wire::record::{Lookup, LookupReply, Store};
use crate::wire::search::{PathFind, PathHop, PathReply, PathSeek, put_path_hop};
use crate::wire::{MAX_ANNOUNCEMENT_HOPS, MAX_COORDS_LEN, MAX_FRAME_LEN, MAX_ROUTE_LEN, WireError};

/// Domain separation for tree announcement signatures.
const TREE_DOMAIN: &[u8] = b"grove-tree-v1";
/// Domain separation for bootstrap signatures.
const BOOTSTRAP_DOMAIN: &[u8] = b"grove-bootstrap-v1";

/// Traffic flag: a watermark follows the coordinates.
const FLAG_WATERMARK: u8 = 0x01;
/// Traffic flag: destination coordinates are present (tree routing).
const FLAG_DST_COORDS: u8 = 0x02;
/// Traffic flag: a hop could not follow the source route and fell back.
const FLAG_BROKEN: u8 = 0x04;
/// Traffic flag: a route probe, carrying no application data.
const FLAG_PROBE: u8 = 0x08;

/// The type byte of each routing frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameType {
    /// Spanning-tree announcement, peer to peer.
    Announce = 1,
    /// Ring bootstrap, routed by key toward the origin's successor.
    Bootstrap = 2,
    /// Application datagram.
    Traffic = 3,
    /// Path search flood.
    PathFind = 4,
    /// Signed path search answer, routed back along the flood.
    PathReply = 5,
    /// A ring route broke: removes it downstream, tells its origin upstream.
    Teardown = 6,
    /// Path search guided by the target's tree coordinates, its width split at every hop.
    PathSeek = 7,
    /// A signed record routed by key toward the node that keeps it.
    Store = 8,
    /// A record lookup routed by key toward the node that keeps it.
    Lookup = 9,
    /// The answer to a lookup, routed by key back to the asker.
    LookupReply = 10,
    /// Compact answer to a guided search: signed once by the target, walked back along the
    /// search's breadcrumbs.
    PathAnswer = 11,
}

/// Whether encoded bytes are a traffic frame flagged as a route probe, read from the first two
/// bytes without decoding the rest (for counting what a link carries).
pub fn is_probe(bytes: &[u8]) -> bool {
    bytes.first() == Some(&(FrameType::Traffic as u8))
        && bytes.get(1).is_some_and(|f| f & FLAG_PROBE != 0)
}

impl FrameType {
    /// Every frame type, for metrics tables.
    pub const ALL: [FrameType; 11] = [
        FrameType::Announce,
        FrameType::Bootstrap,
        FrameType::Traffic,
        FrameType::PathFind,
        FrameType::PathReply,
        FrameType::Teardown,
        FrameType::PathSeek,
        FrameType::Store,
        FrameType::Lookup,
        FrameType::LookupReply,
        FrameType::PathAnswer,
    ];

    /// The type named by a wire byte.
    pub fn from_byte(b: u8) -> Result<Self, WireError> {
        Ok(match b {
            1 => FrameType::Announce,
            2 => FrameType::Bootstrap,
            3 => FrameType::Traffic,
            4 => FrameType::PathFind,
            5 => FrameType::PathReply,
            6 => FrameType::Teardown,
            7 => FrameType::PathSeek,
            8 => FrameType::Store,
            9 => FrameType::Lookup,
            10 => FrameType::LookupReply,
            11 => FrameType::PathAnswer,
            other => return Err(WireError::UnknownType(other)),
        })
    }

    /// A lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameType::Announce => "announce",
            FrameType::Bootstrap => "bootstrap",
            FrameType::Traffic => "traffic",
            FrameType::PathFind => "path_find",
            FrameType::PathReply => "path_reply",
            FrameType::Teardown => "teardown",
            FrameType::PathSeek => "path_seek",
            FrameType::Store => "store",
            FrameType::Lookup => "lookup",
            FrameType::LookupReply => "lookup_reply",
            FrameType::PathAnswer => "path_answer",
        }
    }

    /// Index into per-type counter arrays.
    pub fn index(self) -> usize {
        self as usize - 1
    }
}

/// One signed hop of a tree announcement: `signer` sent it out of its port `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncementHop {
    /// The signer's port toward the next node.
    pub port: u16,
    /// The node that added this hop.
    pub signer: PublicKey,
    /// Signature over everything before it (see [`Announcement::signing_bytes`]).
    pub signature: Signature,
}

/// A root's announcement as it travels down the tree, one signed hop per node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The root's key.
    pub root: PublicKey,
    /// The root's sequence number; a higher one replaces a lower one.
    pub seq: u64,
    /// The path from the root, first hop signed by the root.
    pub hops: Vec<AnnouncementHop>,
}

impl Announcement {
    /// The bytes hop number `upto` signs when its signer sends out of `port`: the root, the
    /// sequence, a digest chained over the hops before it, and the port. The chain keeps each
    /// signed message short however deep the tree is.
    pub fn signing_bytes(&self, upto: usize, port: u16) -> Vec<u8> {
        let mut chain = Sha256::new();
        for h in self.hops.iter().take(upto) {
            chain_hop(&mut chain, h);
        }
        self.signing_bytes_with(&chain, port)
    }

    fn signing_bytes_with(&self, chain: &Sha256, port: u16) -> Vec<u8> {
        let digest: [u8; 32] = chain.clone().finalize().into();
        let mut out = Vec::with_capacity(TREE_DOMAIN.len() + 32 + 8 + 32 + 2);
        out.extend_from_slice(TREE_DOMAIN);
        out.extend_from_slice(&self.root.0);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&digest);
        out.extend_from_slice(&port.to_be_bytes());
        out
    }

    /// This announcement with our hop appended, as we send it out of `port`.
    pub fn extend_signed(&self, keypair: &NodeKeypair, port: u16) -> Announcement {
        let sig = Signature(keypair.sign(&self.signing_bytes(self.hops.len(), port)));
        let mut next = self.clone();
        next.hops.push(AnnouncementHop {
            port,
            signer: keypair.public_key(),
            signature: sig,
        });
        next
    }

    /// Checks the structure (root signs first, no repeated signer) and every signature.
    pub fn verify(&self) -> Result<(), WireError> {
        self.verify_cached(&mut SigCache::default())
    }

    /// As [`Announcement::verify`], skipping signatures `cache` has already seen verified.
    pub fn verify_cached(&self, cache: &mut SigCache) -> Result<(), WireError> {
        let first = self
            .hops
            .first()
            .ok_or(WireError::Invalid("announcement without hops"))?;
        if first.signer != self.root {
            return Err(WireError::Invalid(
                "first announcement hop not signed by the root",
            ));
        }
        let mut seen: Vec<&PublicKey> = Vec::with_capacity(self.hops.len());
        let mut chain = Sha256::new();
        for h in &self.hops {
            if seen.contains(&&h.signer) {
                return Err(WireError::Invalid("announcement loops"));
            }
            seen.push(&h.signer);
            if !cache.verify(
                &h.signer,
                &self.signing_bytes_with(&chain, h.port),
                &h.signature,
            ) {
                return Err(WireError::BadSignature);
            }
            chain_hop(&mut chain, h);
        }
        Ok(())
    }

    /// The last signer: the peer that sent it.
    pub fn sender(&self) -> Option<PublicKey> {
        self.hops.last().map(|h| h.signer)
    }

    /// Coordinates of the sender (every port but its own outgoing one).
    pub fn sender_coords(&self) -> Vec<u16> {
        let n = self.hops.len().saturating_sub(1);
        self.hops.iter().take(n).map(|h| h.port).collect()
    }

    /// Coordinates of the receiver if the sender is its parent.
    pub fn receiver_coords(&self) -> Vec<u16> {
        self.hops.iter().map(|h| h.port).collect()
    }

    fn encoded_body_len(&self) -> usize {
        PUBLIC_KEY_LEN + 8 + 1 + self.hops.len() * (2 + PUBLIC_KEY_LEN + SIGNATURE_LEN)
    }
}

fn chain_hop(chain: &mut Sha256, h: &AnnouncementHop) {
    chain.update(h.port.to_be_bytes());
    chain.update(h.signer.0);
    chain.update(h.signature.0);
}

fn put_hop(out: &mut Vec<u8>, h: &AnnouncementHop) {
    out.extend_from_slice(&h.port.to_be_bytes());
    out.extend_from_slice(&h.signer.0);
    out.extend_from_slice(&h.signature.0);
}

/// A loop guard carried by key-routed frames: the best ring entry used so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// Key of the ring entry.
    pub key: PublicKey,
    /// Bootstrap sequence of that entry.
    pub seq: u64,
}

/// A ring bootstrap: the origin looks for its successor on the key ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The node bootstrapping (the frame is routed toward this key, excluding the origin).
    pub origin: PublicKey,
    /// Origin's bootstrap sequence; entries only move forward.
    pub seq: u64,
    /// The tree root the origin had when it sent this.
    pub root: PublicKey,
    /// That root's sequence.
    pub root_seq: u64,
    /// Origin's signature over (origin, seq, root, root_seq).
    pub signature: Signature,
    /// Hops left before the frame is dropped.
    pub hop_limit: u8,
    /// Loop guard.
    pub watermark: Option<Watermark>,
}

impl Bootstrap {
    /// The bytes the origin signs.
    pub fn signing_bytes(origin: &PublicKey, seq: u64, root: &PublicKey, root_seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(BOOTSTRAP_DOMAIN.len() + 80);
        out.extend_from_slice(BOOTSTRAP_DOMAIN);
        out.extend_from_slice(&origin.0);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&root.0);
        out.extend_from_slice(&root_seq.to_be_bytes());
        out
    }

    /// Checks the origin's signature.
    pub fn verify(&self) -> bool {
        let msg = Self::signing_bytes(&self.origin, self.seq, &self.root, self.root_seq);
        self.origin.verify(&msg, &self.signature)
    }
}

/// An application datagram with its routing header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    /// Hops left before the frame is dropped.
    pub hop_limit: u8,
    /// Hops taken so far (for stretch measurement and diagnostics).
    pub hops: u8,
    /// Set by a hop that could not follow the source route.
    pub broken: bool,
    /// A probe teaches the receiver the way back and is not delivered to the application.
    pub probe: bool,
    /// Sender's key.
    pub src: PublicKey,
    /// Destination key.
    pub dst: PublicKey,
    /// Sender's tree coordinates, so the receiver can answer on the tree.
    pub src_coords: Vec<u16>,
    /// Destination's coordinates; `None` routes by key on the ring.
    pub dst_coords: Option<Vec<u16>>,
    /// Ring loop guard (key routing only).
    pub watermark: Option<Watermark>,
    /// Source route: the port each hop leaves by; empty for none.
    pub route: Vec<u16>,
    /// Index into `route` of the next hop's port.
    pub route_pos: u8,
    /// Ports the frame arrived on, hop by hop: reversed, the way back.
    pub reverse: Vec<u16>,
    /// The datagram.
    pub payload: Vec<u8>,
}

impl Traffic {
    /// Sheds optional header parts until the encoded frame is at most `max` bytes: first the
    /// recorded way back and the source route (the frame then goes by tree or key), then the
    /// destination's coordinates (it goes by key), then the sender's coordinates (the receiver
    /// learns none). Returns whether it fits; it always does when the payload is at most
    /// `max - TRAFFIC_MIN_HEADER`.
    pub fn shrink_to(&mut self, max: usize) -> bool {
        let len = |t: &Traffic| Frame::traffic_len(t);
        if len(self) <= max {
            return true;
        }
        self.reverse.clear();
        if len(self) <= max {
            return true;
        }
        // Not marked broken: the route is sound, only too long to carry here.
        self.route.clear();
        self.route_pos = 0;
        if len(self) <= max {
            return true;
        }
        self.dst_coords = None;
        if len(self) <= max {
            return true;
        }
        self.src_coords.clear();
        len(self) <= max
    }
}

/// A ring route that broke. Unsigned: a node acts on it only when it arrives over the link
/// the route itself uses, so a peer can only tear down routes that run through it (which it
/// could break anyway by dropping what they carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Teardown {
    /// The origin of the bootstrap that laid the route.
    pub origin: PublicKey,
    /// The newest bootstrap sequence the teardown applies to; newer routes stay.
    pub seq: u64,
    /// `false`: travels with the bootstrap's direction, removing entries; `true`: travels back
    /// toward the origin, which bootstraps again at once.
    pub upstream: bool,
}

/// Any routing frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`Announcement`].
    Announce(Announcement),
    /// See [`Bootstrap`].
    Bootstrap(Bootstrap),
    /// See [`Traffic`].
    Traffic(Traffic),
    /// See [`PathFind`].
    PathFind(PathFind),
    /// See [`PathReply`].
    PathReply(PathReply),
    /// See [`Teardown`].
    Teardown(Teardown),
    /// See [`PathSeek`].
    PathSeek(PathSeek),
    /// See [`Store`].
    Store(Store),
    /// See [`Lookup`].
    Lookup(Lookup),
    /// See [`LookupReply`].
    LookupReply(LookupReply),
    /// See [`PathAnswer`].
    PathAnswer(PathAnswer),
}

fn ports_len(p: &[u16]) -> usize {
    1 + 2 * p.len()
}

impl Frame {
    /// The frame's type byte.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Announce(_) => FrameType::Announce,
            Frame::Bootstrap(_) => FrameType::Bootstrap,
            Frame::Traffic(_) => FrameType::Traffic,
            Frame::PathFind(_) => FrameType::PathFind,
            Frame::PathReply(_) => FrameType::PathReply,
            Frame::Teardown(_) => FrameType::Teardown,
            Frame::PathSeek(_) => FrameType::PathSeek,
            Frame::Store(_) => FrameType::Store,
            Frame::Lookup(_) => FrameType::Lookup,
            Frame::LookupReply(_) => FrameType::LookupReply,
            Frame::PathAnswer(_) => FrameType::PathAnswer,
        }
    }

    /// Length of [`Frame::encode`]'s output, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Frame::Announce(a) => a.encoded_body_len(),
            Frame::Bootstrap(b) => {
                2 * PUBLIC_KEY_LEN
                    + 16
                    + SIGNATURE_LEN
                    + 2
                    + b.watermark.map_or(0, |_| PUBLIC_KEY_LEN + 8)
            }
            Frame::Traffic(t) => Self::traffic_len(t) - 1,
            Frame::PathFind(_) => 2 * PUBLIC_KEY_LEN + 8 + 2,
            Frame::Teardown(_) => PUBLIC_KEY_LEN + 8 + 1,
            Frame::PathSeek(p) => 2 * PUBLIC_KEY_LEN + 8 + 3 + ports_len(&p.target_coords),
            Frame::PathReply(r) => {
                2 * PUBLIC_KEY_LEN + 8 + 1 + r.hops.len() * (PUBLIC_KEY_LEN + 4 + SIGNATURE_LEN)
            }
            Frame::Store(s) => s.body_len(),
            Frame::Lookup(l) => l.body_len(),
            Frame::LookupReply(r) => r.body_len(),
            Frame::PathAnswer(a) => a.body_len(),
        }
    }

    /// Length of a traffic frame's encoding, type byte included.
    fn traffic_len(t: &Traffic) -> usize {
        4 + 2 * PUBLIC_KEY_LEN
            + ports_len(&t.src_coords)
            + t.dst_coords.as_ref().map_or(0, |c| ports_len(c))
            + t.watermark.map_or(0, |_| PUBLIC_KEY_LEN + 8)
            + ports_len(&t.route)
            + 1
            + ports_len(&t.reverse)
            + t.payload.len()
    }

    /// The wire bytes. Lists over their limits are cut to fit (the router never builds such).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(self.frame_type() as u8);
        match self {
            Frame::Announce(a) => {
                out.extend_from_slice(&a.root.0);
                out.extend_from_slice(&a.seq.to_be_bytes());
                out.push(u8::try_from(a.hops.len()).unwrap_or(u8::MAX));
                for h in a.hops.iter().take(MAX_ANNOUNCEMENT_HOPS) {
                    put_hop(&mut out, h);
                }
            }
            Frame::Bootstrap(b) => {
                out.extend_from_slice(&b.origin.0);
                out.extend_from_slice(&b.seq.to_be_bytes());
                out.extend_from_slice(&b.root.0);
                out.extend_from_slice(&b.root_seq.to_be_bytes());
                out.extend_from_slice(&b.signature.0);
                out.push(b.hop_limit);
                match b.watermark {
                    Some(w) => {
                        out.push(1);
                        out.extend_from_slice(&w.key.0);
                        out.extend_from_slice(&w.seq.to_be_bytes());
                    }
                    None => out.push(0),
                }
            }
            Frame::Traffic(t) => {
                let mut flags = 0;
                if t.watermark.is_some() {
                    flags |= FLAG_WATERMARK;
                }
                if t.dst_coords.is_some() {
                    flags |= FLAG_DST_COORDS;
                }
                if t.broken {
                    flags |= FLAG_BROKEN;
                }
                if t.probe {
                    flags |= FLAG_PROBE;
                }
                out.push(flags);
                out.push(t.hop_limit);
                out.push(t.hops);
                out.extend_from_slice(&t.src.0);
                out.extend_from_slice(&t.dst.0);
                put_ports(&mut out, &t.src_coords);
                if let Some(c) = &t.dst_coords {
                    put_ports(&mut out, c);
                }
                if let Some(w) = t.watermark {
                    out.extend_from_slice(&w.key.0);
                    out.extend_from_slice(&w.seq.to_be_bytes());
                }
                put_ports(&mut out, &t.route);
                out.push(t.route_pos);
                put_ports(&mut out, &t.reverse);
                out.extend_from_slice(&t.payload);
            }
            Frame::Teardown(t) => {
                out.extend_from_slice(&t.origin.0);
                out.extend_from_slice(&t.seq.to_be_bytes());
                out.push(u8::from(t.upstream));
            }
            Frame::PathFind(p) => {
                out.extend_from_slice(&p.searcher.0);
                out.extend_from_slice(&p.target.0);
                out.extend_from_slice(&p.nonce.to_be_bytes());
                out.push(p.hop_limit);
                out.push(p.hops);
            }
            Frame::PathSeek(p) => {
                out.extend_from_slice(&p.searcher.0);
                out.extend_from_slice(&p.target.0);
                out.extend_from_slice(&p.nonce.to_be_bytes());
                out.push(p.hop_limit);
                out.push(p.hops);
                out.push(p.width);
                put_ports(&mut out, &p.target_coords);
            }
            Frame::PathReply(r) => {
                out.extend_from_slice(&r.searcher.0);
                out.extend_from_slice(&r.target.0);
                out.extend_from_slice(&r.nonce.to_be_bytes());
                out.push(u8::try_from(r.hops.len()).unwrap_or(u8::MAX));
                for h in r.hops.iter().take(usize::from(u8::MAX)) {
                    put_path_hop(&mut out, h);
                }
            }
            Frame::Store(s) => s.put(&mut out),
            Frame::Lookup(l) => l.put(&mut out),
            Frame::LookupReply(r) => r.put(&mut out),
            Frame::PathAnswer(a) => a.put(&mut out),
        }
        out
    }

    /// Parses one frame; every byte must belong to it.
    pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
        if bytes.len() > MAX_FRAME_LEN {
            return Err(WireError::Oversized(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        let ty = FrameType::from_byte(r.u8()?)?;
        let frame = match ty {
            FrameType::Announce => {
                let root = r.key()?;
                let seq = r.u64()?;
                let n = usize::from(r.u8()?);
                let mut hops = Vec::with_capacity(n);
                for _ in 0..n {
                    let port = r.u16()?;
                    if port == 0 {
                        return Err(WireError::ZeroPort);
                    }
                    hops.push(AnnouncementHop {
                        port,
                        signer: r.key()?,
                        signature: r.sig()?,
                    });
                }
                Frame::Announce(Announcement { root, seq, hops })
            }
            FrameType::Bootstrap => {
                let origin = r.key()?;
                let seq = r.u64()?;
                let root = r.key()?;
                let root_seq = r.u64()?;
                let signature = r.sig()?;
                let hop_limit = r.u8()?;
                let watermark = match r.u8()? {
                    0 => None,
                    1 => Some(Watermark {
                        key: r.key()?,
                        seq: r.u64()?,
                    }),
                    _ => return Err(WireError::Invalid("watermark marker")),
                };
                Frame::Bootstrap(Bootstrap {
                    origin,
                    seq,
                    root,
                    root_seq,
                    signature,
                    hop_limit,
                    watermark,
                })
            }
            FrameType::Traffic => {
                let flags = r.u8()?;
                if flags & !(FLAG_WATERMARK | FLAG_DST_COORDS | FLAG_BROKEN | FLAG_PROBE) != 0 {
                    return Err(WireError::UnknownFlags(flags));
                }
                let hop_limit = r.u8()?;
                let hops = r.u8()?;
                let src = r.key()?;
                let dst = r.key()?;
                let src_coords = r.ports(MAX_COORDS_LEN, "source coordinates")?;
                let dst_coords = if flags & FLAG_DST_COORDS != 0 {
                    Some(r.ports(MAX_COORDS_LEN, "destination coordinates")?)
                } else {
                    None
                };
                let watermark = if flags & FLAG_WATERMARK != 0 {
                    Some(Watermark {
                        key: r.key()?,
                        seq: r.u64()?,
                    })
                } else {
                    None
                };
                let route = r.ports(MAX_ROUTE_LEN, "source route")?;
                let route_pos = r.u8()?;
                if usize::from(route_pos) > route.len() {
                    return Err(WireError::Invalid("source route position past its end"));
                }
                let reverse = r.ports(MAX_ROUTE_LEN, "reverse route")?;
                let payload = r.rest().to_vec();
                Frame::Traffic(Traffic {
                    hop_limit,
                    hops,
                    broken: flags & FLAG_BROKEN != 0,
                    probe: flags & FLAG_PROBE != 0,
                    src,
                    dst,
                    src_coords,
                    dst_coords,
                    watermark,
                    route,
                    route_pos,
                    reverse,
                    payload,
                })
            }
            FrameType::Teardown => Frame::Teardown(Teardown {
                origin: r.key()?,
                seq: r.u64()?,
                upstream: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(WireError::Invalid("teardown direction")),
                },
            }),
            FrameType::PathFind => Frame::PathFind(PathFind {
                searcher: r.key()?,
                target: r.key()?,
                nonce: r.u64()?,
                hop_limit: r.u8()?,
                hops: r.u8()?,
            }),
            FrameType::PathSeek => Frame::PathSeek(PathSeek {
                searcher: r.key()?,
                target: r.key()?,
                nonce: r.u64()?,
                hop_limit: r.u8()?,
                hops: r.u8()?,
                width: r.u8()?,
                target_coords: r.ports(MAX_COORDS_LEN, "target coordinates")?,
            }),
            FrameType::PathReply => {
                let searcher = r.key()?;
                let target = r.key()?;
                let nonce = r.u64()?;
                let n = usize::from(r.u8()?);
                if n > MAX_ROUTE_LEN {
                    return Err(WireError::TooLong {
                        what: "path reply",
                        len: n,
                        max: MAX_ROUTE_LEN,
                    });
                }
                let mut hops = Vec::with_capacity(n);
                for _ in 0..n {
                    hops.push(PathHop {
                        key: r.key()?,
                        in_port: r.u16()?,
                        out_port: r.u16()?,
                        signature: r.sig()?,
                    });
                }
                Frame::PathReply(PathReply {
                    searcher,
                    target,
                    nonce,
                    hops,
                })
            }
            FrameType::Store => Frame::Store(Store::read(&mut r)?),
            FrameType::Lookup => Frame::Lookup(Lookup::read(&mut r)?),
            FrameType::LookupReply => Frame::LookupReply(LookupReply::read(&mut r)?),
            FrameType::PathAnswer => Frame::PathAnswer(PathAnswer::read(&mut r)?),
        };
        r.finish()?;
        Ok(frame)
    }
}
