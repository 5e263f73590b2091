//! Wire formats of everything the overlay sends: routing frames (tree announcements, ring
//! bootstraps and teardowns, traffic, path search, signed records and their lookups), the peer
//! hello and the LAN beacon.
//!
//! Every routing frame is one type byte followed by a fixed layout of big-endian integers,
//! 32-byte keys, 64-byte signatures and u8-counted lists of u16 ports. The transport delimits
//! frames (a QUIC datagram, or a length prefix on the control stream), so a frame carries no
//! length of its own. Decoding checks every length and never panics; a frame longer than
//! [`MAX_FRAME_LEN`] is refused before it is parsed.

mod answer;
mod beacon;
mod codec;
mod frame;
mod hello;
mod record;
mod search;
#[cfg(test)]
mod tests;

pub use answer::{AnswerHop, KEY_PREFIX_LEN, PathAnswer, key_prefix};
pub use beacon::{BEACON_LEN, BEACON_MAGIC, BEACON_VERSION, Beacon};
pub use frame::{
    Announcement, AnnouncementHop, Bootstrap, Frame, FrameType, Teardown, Traffic, Watermark,
    is_probe,
};
pub use hello::{
    CAP_COMPACT_REPLY, CAP_GUIDED_SEARCH, CAP_PATH_SEARCH, CAP_RECORDS, CAP_SOURCE_ROUTING,
    CAP_TEARDOWN, CAPABILITIES, HELLO_LEN, HELLO_MAGIC, Hello, HelloError, MIN_VERSION, Negotiated,
    VERSION, negotiate,
};
pub use record::{
    Lookup, LookupReply, MAX_RECORD_VALUE, MAX_REPLICAS, RECORD_HEADER_LEN, Record, Store,
    placement,
};
pub use search::{PathFind, PathHop, PathReply, PathSeek};

/// Largest routing frame accepted or produced, in bytes.
pub const MAX_FRAME_LEN: usize = 16 * 1024;
/// Most ports in a tree coordinate (so the deepest tree node we can address).
pub const MAX_COORDS_LEN: usize = 255;
/// Most hops in a recorded source route or path reply.
pub const MAX_ROUTE_LEN: usize = 64;
/// Widest a guided path search may be ([`PathSeek::width`]): what one search can cost the
/// network is at most this many frames per hop.
pub const MAX_SEEK_WIDTH: u8 = 16;
/// Most hops in a tree announcement.
pub const MAX_ANNOUNCEMENT_HOPS: usize = 255;
/// Largest traffic frame put on a link. Traffic travels as one QUIC datagram, so this must not
/// exceed what a peer link at its minimum MTU carries in one (`link` proves it with a test). The
/// router sheds optional header parts (the way back, the source route, the destination's
/// coordinates, then its own coordinates) until a frame fits.
pub const MAX_TRAFFIC_FRAME: usize = 1340;
/// Header of the smallest traffic frame the router may shrink a frame to: type, flags, hop
/// limit, hop count, both keys, a watermark, and four empty lists or counters.
pub const TRAFFIC_MIN_HEADER: usize = 4 + 2 * 32 + 32 + 8 + 1 + 1 + 1 + 1;
/// Largest payload a traffic frame always carries whatever its routing header held.
pub const MAX_TRAFFIC_PAYLOAD: usize = MAX_TRAFFIC_FRAME - TRAFFIC_MIN_HEADER;

/// Why bytes are not a valid frame, hello or beacon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended before the layout did.
    #[error("frame truncated")]
    Truncated,
    /// Bytes were left over after the layout ended.
    #[error("{0} trailing bytes after the frame")]
    TrailingBytes(usize),
    /// The first byte names no frame type.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The input is longer than [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes is over the limit")]
    Oversized(usize),
    /// A list is longer than its limit.
    #[error("{what} has {len} entries, more than {max}")]
    TooLong {
        /// Which list.
        what: &'static str,
        /// Its length on the wire.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A port number 0 (ports start at 1).
    #[error("port 0 on the wire")]
    ZeroPort,
    /// A magic number other than ours.
    #[error("bad magic")]
    BadMagic,
    /// A flag bit we do not know.
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    /// A field holds a value its layout forbids.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    /// A signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Asked to sign a beacon for another key.
    #[error("beacon key differs from the signing key")]
    KeyMismatch,
}

impl WireError {
    /// Short label used in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            WireError::Oversized(_) => "oversized",
            WireError::BadSignature => "bad_signature",
            WireError::KeyMismatch => "key_mismatch",
            WireError::Invalid("beacon version") => "unknown_version",
            _ => "malformed",
        }
    }
}
