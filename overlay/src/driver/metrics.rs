//! Prometheus counters of the overlay's IO side.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::link::Channel;

/// Label set naming a reason or result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The reason.
    pub reason: &'static str,
}

/// Label set naming a frame channel.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    /// `control` or `datagram`.
    pub channel: &'static str,
}

/// All counters; cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    /// Links currently up.
    pub peers: Gauge,
    /// Frames received, by channel.
    pub frames_in: Family<ChannelLabel, Counter>,
    /// Frames sent, by channel.
    pub frames_out: Family<ChannelLabel, Counter>,
    /// Bytes received in frames, by channel.
    pub bytes_in: Family<ChannelLabel, Counter>,
    /// Bytes sent in frames, by channel.
    pub bytes_out: Family<ChannelLabel, Counter>,
    /// Frames, packets or peers dropped, by reason.
    pub drops: Family<Reason, Counter>,
    /// Hellos refused (by either side), by reason.
    pub hello_refused: Family<Reason, Counter>,
    /// Link set-ups that failed, by reason.
    pub link_failures: Family<Reason, Counter>,
    /// Discovery beacons received, by result.
    pub beacons: Family<Reason, Counter>,
    /// Discovery beacons sent.
    pub beacons_sent: Counter<u64, AtomicU64>,
    /// The per-channel counters of the four frame families, looked up once: they are counted
    /// per packet, and a family lookup hashes its labels each time. Indexed by [`slot`].
    per_channel: [[Counter; 2]; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        let (frames_in, frames_out, bytes_in, bytes_out) = Default::default();
        let cached = |f: &Family<ChannelLabel, Counter>| {
            [Channel::Control, Channel::Datagram].map(|c| f.get_or_create(&channel(c)).clone())
        };
        let per_channel = [
            cached(&frames_in),
            cached(&frames_out),
            cached(&bytes_in),
            cached(&bytes_out),
        ];
        Self {
            peers: Gauge::default(),
            frames_in,
            frames_out,
            bytes_in,
            bytes_out,
            drops: Family::default(),
            hello_refused: Family::default(),
            link_failures: Family::default(),
            beacons: Family::default(),
            beacons_sent: Counter::default(),
            per_channel,
        }
    }
}

/// Index of a channel in [`Metrics::per_channel`].
fn slot(c: Channel) -> usize {
    match c {
        Channel::Control => 0,
        Channel::Datagram => 1,
    }
}

fn channel(c: Channel) -> ChannelLabel {
    ChannelLabel {
        channel: match c {
            Channel::Control => "control",
            Channel::Datagram => "datagram",
        },
    }
}

impl Metrics {
    /// Counts a received frame.
    pub fn frame_in(&self, c: Channel, len: usize) {
        self.per_channel[0][slot(c)].inc();
        self.per_channel[2][slot(c)].inc_by(len as u64);
    }

    /// Counts a sent frame.
    pub fn frame_out(&self, c: Channel, len: usize) {
        self.per_channel[1][slot(c)].inc();
        self.per_channel[3][slot(c)].inc_by(len as u64);
    }

    /// Counts a drop.
    pub fn drop_reason(&self, reason: &'static str) {
        self.drops.get_or_create(&Reason { reason }).inc();
    }

    /// Current count of drops for `reason` (for tests and the snapshot).
    pub fn drops_for(&self, reason: &'static str) -> u64 {
        self.drops.get_or_create(&Reason { reason }).get()
    }

    /// Counts a refused hello.
    pub fn hello_refused(&self, reason: &'static str) {
        self.hello_refused.get_or_create(&Reason { reason }).inc();
    }

    /// Counts a beacon by result.
    pub fn beacon(&self, result: &'static str) {
        self.beacons.get_or_create(&Reason { reason: result }).inc();
    }

    /// Renders all counters in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut registry = Registry::with_prefix("grove_overlay");
        registry.register("peers", "Peer links up", self.peers.clone());
        registry.register("frames_in", "Frames received", self.frames_in.clone());
        registry.register("frames_out", "Frames sent", self.frames_out.clone());
        registry.register("bytes_in", "Frame bytes received", self.bytes_in.clone());
        registry.register("bytes_out", "Frame bytes sent", self.bytes_out.clone());
        registry.register(
            "drops",
            "Frames, packets or peers dropped",
            self.drops.clone(),
        );
        registry.register(
            "hello_refused",
            "Peer hellos refused",
            self.hello_refused.clone(),
        );
        registry.register(
            "link_failures",
            "Link set-ups that failed",
            self.link_failures.clone(),
        );
        registry.register(
            "beacons",
            "Discovery beacons received",
            self.beacons.clone(),
        );
        registry.register(
            "beacons_sent",
            "Discovery beacons sent",
            self.beacons_sent.clone(),
        );
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            tracing::error!("encoding metrics failed");
        }
        out
    }
}
