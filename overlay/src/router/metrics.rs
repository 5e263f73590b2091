//! Counters the router keeps as plain data; the driver turns them into Prometheus metrics.

use serde::Serialize;

use crate::wire::FrameType;

/// Why a frame (or an event) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Bytes that do not decode as a frame.
    Malformed,
    /// A frame over [`crate::wire::MAX_FRAME_LEN`].
    Oversized,
    /// A signature that does not verify.
    BadSignature,
    /// A frame from a peer the router does not know (not up, or already down).
    UnknownPeer,
    /// A tree announcement older than one already held from that peer, or otherwise invalid.
    BadAnnouncement,
    /// A ring bootstrap for another tree root.
    RootMismatch,
    /// A ring bootstrap whose sequence was already seen (a loop or a replay).
    DuplicateBootstrap,
    /// The frame's hop limit ran out.
    HopLimit,
    /// No next hop brings the frame closer.
    NoRoute,
    /// A per-peer queue was full.
    QueueFull,
    /// A path reply for a search this node did not see.
    NoBreadcrumb,
    /// A path reply whose recorded path is invalid.
    BadPath,
    /// A peer exceeded a rate limit.
    RateLimited,
    /// A path search origin exceeded its rate limit (the peer passing it on is not at fault).
    OriginRateLimited,
    /// The application event queue was full.
    EventOverflow,
    /// Traffic too large to send.
    PayloadTooLarge,
    /// A record (or a lookup answer) whose signature does not verify, that has expired, lives
    /// longer than a store keeps records, or answers another key. Not held against the peer
    /// that passed it on: records are checked only where they are kept.
    RecordInvalid,
    /// A record whose publisher may not publish under its key (the validation policy).
    RecordForbidden,
    /// A record no newer than the one held under its key (a replay or a late copy).
    RecordStale,
    /// A record over its publisher's quota or the store's byte budget.
    RecordQuota,
}

impl DropReason {
    /// Every reason, for metrics tables.
    pub const ALL: [DropReason; 20] = [
        DropReason::Malformed,
        DropReason::Oversized,
        DropReason::BadSignature,
        DropReason::UnknownPeer,
        DropReason::BadAnnouncement,
        DropReason::RootMismatch,
        DropReason::DuplicateBootstrap,
        DropReason::HopLimit,
        DropReason::NoRoute,
        DropReason::QueueFull,
        DropReason::NoBreadcrumb,
        DropReason::BadPath,
        DropReason::RateLimited,
        DropReason::OriginRateLimited,
        DropReason::EventOverflow,
        DropReason::PayloadTooLarge,
        DropReason::RecordInvalid,
        DropReason::RecordForbidden,
        DropReason::RecordStale,
        DropReason::RecordQuota,
    ];

    /// A lower-case name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Oversized => "oversized",
            DropReason::BadSignature => "bad_signature",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::BadAnnouncement => "bad_announcement",
            DropReason::RootMismatch => "root_mismatch",
            DropReason::DuplicateBootstrap => "duplicate_bootstrap",
            DropReason::HopLimit => "hop_limit",
            DropReason::NoRoute => "no_route",
            DropReason::QueueFull => "queue_full",
            DropReason::NoBreadcrumb => "no_breadcrumb",
            DropReason::BadPath => "bad_path",
            DropReason::RateLimited => "rate_limited",
            DropReason::OriginRateLimited => "origin_rate_limited",
            DropReason::EventOverflow => "event_overflow",
            DropReason::PayloadTooLarge => "payload_too_large",
            DropReason::RecordInvalid => "record_invalid",
            DropReason::RecordForbidden => "record_forbidden",
            DropReason::RecordStale => "record_stale",
            DropReason::RecordQuota => "record_quota",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Frame, byte and drop counters since the router started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// Frames received, by [`FrameType::index`].
    pub frames_in: [u64; 11],
    /// Frames sent, by [`FrameType::index`].
    pub frames_out: [u64; 11],
    /// Bytes received in frames.
    pub bytes_in: u64,
    /// Bytes sent in frames.
    pub bytes_out: u64,
    /// Drops, by reason (see [`Metrics::drops`]).
    pub drops: [u64; 20],
    /// Application datagrams delivered here.
    pub delivered: u64,
    /// Path searches started.
    pub searches_started: u64,
    /// Path replies this node cut short through a peer nearer the target.
    pub route_shortcuts: u64,
    /// Searches that met the other end's search and followed its breadcrumbs.
    pub search_meetings: u64,
    /// Source routes installed.
    pub routes_learned: u64,
    /// Ring routes of a peer found to lead through us to nothing, and torn down.
    pub stale_ring_routes: u64,
    /// Records this node took into its store (new, or newer than the one held).
    pub records_stored: u64,
    /// Records handed to a node closer to one of their placements.
    pub records_handed_over: u64,
    /// Lookups this node answered as the node closest to a placement.
    pub lookups_answered: u64,
    /// Lookups this node started.
    pub lookups_started: u64,
    /// Lookups this node started that found a record.
    pub lookups_found: u64,
}

impl Metrics {
    /// Counts a received frame.
    pub(crate) fn frame_in(&mut self, ty: FrameType, len: usize) {
        if let Some(c) = self.frames_in.get_mut(ty.index()) {
            *c += 1;
        }
        self.bytes_in += len as u64;
    }

    /// Counts a sent frame.
    pub(crate) fn frame_out(&mut self, ty: FrameType, len: usize) {
        if let Some(c) = self.frames_out.get_mut(ty.index()) {
            *c += 1;
        }
        self.bytes_out += len as u64;
    }

    /// Counts a drop.
    pub(crate) fn drop(&mut self, reason: DropReason) {
        if let Some(c) = self.drops.get_mut(reason.index()) {
            *c += 1;
        }
    }

    /// Drops so far for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }

    /// Frames received of type `ty`.
    pub fn frames_in(&self, ty: FrameType) -> u64 {
        self.frames_in.get(ty.index()).copied().unwrap_or(0)
    }

    /// Frames sent of type `ty`.
    pub fn frames_out(&self, ty: FrameType) -> u64 {
        self.frames_out.get(ty.index()).copied().unwrap_or(0)
    }
}
