//! Multicast LAN discovery: signed beacons announce a node's key and QUIC port; a beacon from an
//! unknown key makes the driver dial (sender's address, advertised port).
//!
//! One task owns two UDP sockets bound to [`DiscoveryConfig::port`] (IPv4 and IPv6, address reuse
//! on, so several nodes on one host can listen). It joins [`GROUP_V4`] / [`GROUP_V6`] on every
//! suitable interface (up, multicast-capable, not loopback unless configured), sends a beacon out
//! of each of them, starting every [`INTERVAL_MIN`] and doubling up to [`INTERVAL_MAX`], and
//! starts again from the shortest interval whenever the interface set changes (checked every
//! [`INTERFACE_POLL`]). Received beacons are verified; bad ones are dropped and counted. The
//! beacon's layout is [`crate::wire::Beacon`].

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::net::if_::InterfaceFlags;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::driver::metrics::Metrics;
use crate::identity::{NodeKeypair, PublicKey};
use crate::wire::Beacon;

/// IPv4 discovery group.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 114);

/// IPv6 discovery group (link-local scope).
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x114);

/// Grove's discovery port (Pinecone uses 60606; we keep apart from it).
pub const DEFAULT_PORT: u16 = 60614;

/// First beacon interval after start or an interface change.
pub const INTERVAL_MIN: Duration = Duration::from_secs(1);

/// Longest beacon interval.
pub const INTERVAL_MAX: Duration = Duration::from_secs(15);

/// How often the interface set is read.
pub const INTERFACE_POLL: Duration = Duration::from_secs(3);

/// Discovered nodes queued for the driver before new ones are dropped.
const DISCOVERED_QUEUE_LIMIT: usize = 64;

/// LAN discovery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Whether discovery runs at all.
    pub enabled: bool,
    /// UDP port beacons are sent to and received on.
    pub port: u16,
    /// Also use loopback interfaces (for tests on one host).
    pub include_loopback: bool,
    /// If set, only these interfaces (by name) are used.
    pub only_interfaces: Option<Vec<String>>,
}

impl DiscoveryConfig {
    /// Discovery switched off.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            port: DEFAULT_PORT,
            include_loopback: false,
            only_interfaces: None,
        }
    }

    /// Discovery on every suitable interface, on the default port.
    pub fn enabled() -> Self {
        Self {
            enabled: true,
            ..Self::disabled()
        }
    }
}

/// When to send beacons: every [`INTERVAL_MIN`] at first, doubling up to [`INTERVAL_MAX`], and
/// from the start again when the interfaces change. Sans-IO: the caller passes the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeaconSchedule {
    interval: Duration,
    next: Instant,
}

impl BeaconSchedule {
    /// A schedule whose first beacon is due at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            interval: INTERVAL_MIN,
            next: now,
        }
    }

    /// When the next beacon is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// A beacon was sent at `now`: the next one waits the current interval, which then grows.
    pub fn sent(&mut self, now: Instant) {
        self.next = now + self.interval;
        self.interval = (self.interval * 2).min(INTERVAL_MAX);
    }

    /// The interfaces changed at `now`: send at once and start from the shortest interval.
    pub fn reset(&mut self, now: Instant) {
        *self = Self::new(now);
    }
}

/// A node seen on the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discovered {
    /// Its key.
    pub key: PublicKey,
    /// Where to dial it.
    pub addr: SocketAddr,
}

/// One usable interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Interface {
    index: u32,
    v4: Option<Ipv4Addr>,
    v6: bool,
}

/// Reads the interfaces that should carry beacons, keyed by name.
fn interfaces(config: &DiscoveryConfig) -> BTreeMap<String, Interface> {
    let mut out: BTreeMap<String, Interface> = BTreeMap::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let loopback = a.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        if !a.flags.contains(InterfaceFlags::IFF_UP)
            || (loopback && !config.include_loopback)
            // Loopback interfaces do not advertise multicast, yet carry it on Linux.
            || (!loopback && !a.flags.contains(InterfaceFlags::IFF_MULTICAST))
        {
            continue;
        }
        if config
            .only_interfaces
            .as_ref()
            .is_some_and(|only| !only.contains(&a.interface_name))
        {
            continue;
        }
        let Ok(index) = nix::net::if_::if_nametoindex(a.interface_name.as_str()) else {
            continue;
        };
        let entry = out.entry(a.interface_name.clone()).or_insert(Interface {
            index,
            v4: None,
            v6: false,
        });
        if let Some(addr) = &a.address {
            if let Some(v4) = addr.as_sockaddr_in() {
                entry.v4.get_or_insert(v4.ip());
            } else if addr.as_sockaddr_in6().is_some() {
                entry.v6 = true;
            }
        }
    }
    out
}

/// A UDP socket bound to `port` on the wildcard address with address reuse.
fn bind(domain: Domain, port: u16) -> io::Result<UdpSocket> {
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    let addr: SocketAddr = if domain == Domain::IPV6 {
        socket.set_only_v6(true)?;
        socket.set_multicast_loop_v6(true)?;
        SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0).into()
    } else {
        socket.set_multicast_loop_v4(true)?;
        socket.set_multicast_ttl_v4(1)?;
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into()
    };
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Starts discovery if enabled; the receiver yields beacons from other nodes.
pub fn spawn(
    config: &DiscoveryConfig,
    secret: &NodeKeypair,
    quic_port: u16,
    network_id: Option<[u8; 32]>,
    metrics: Arc<Metrics>,
) -> io::Result<Option<mpsc::Receiver<Discovered>>> {
    if !config.enabled {
        return Ok(None);
    }
    let v4 = bind(Domain::IPV4, config.port)?;
    // IPv6 may be absent (disabled in the kernel); IPv4 alone still works.
    let v6 = bind(Domain::IPV6, config.port)
        .inspect_err(|e| tracing::info!(error = %e, "no IPv6 discovery socket"))
        .ok();
    let network = Beacon::network_hash(network_id.as_ref());
    let beacon = Beacon::new(secret.public_key(), quic_port, network_id.as_ref())
        .encode_signed(secret)
        .map_err(io::Error::other)?;
    let state = Task {
        config: config.clone(),
        me: secret.public_key(),
        beacon,
        network,
        v4,
        v6,
        metrics,
        interfaces: BTreeMap::new(),
    };
    let (tx, rx) = mpsc::channel(DISCOVERED_QUEUE_LIMIT);
    tokio::spawn(state.run(tx));
    Ok(Some(rx))
}

/// The discovery task's state.
struct Task {
    config: DiscoveryConfig,
    me: PublicKey,
    beacon: Vec<u8>,
    network: [u8; 32],
    v4: UdpSocket,
    v6: Option<UdpSocket>,
    metrics: Arc<Metrics>,
    interfaces: BTreeMap<String, Interface>,
}

impl Task {
    async fn run(mut self, tx: mpsc::Sender<Discovered>) {
        let mut schedule = BeaconSchedule::new(Instant::now());
        let mut next_poll = tokio::time::Instant::now();
        let mut buf4 = [0u8; 512];
        let mut buf6 = [0u8; 512];
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_poll) => {
                    next_poll += INTERFACE_POLL;
                    if self.refresh_interfaces() {
                        schedule.reset(Instant::now());
                    }
                }
                () = tokio::time::sleep_until(schedule.next().into()) => {
                    self.send_beacons().await;
                    schedule.sent(Instant::now());
                }
                r = self.v4.recv_from(&mut buf4) => {
                    if let Ok((len, from)) = r
                        && !self.on_datagram(buf4.get(..len).unwrap_or_default(), from, &tx)
                    {
                        return;
                    }
                }
                r = recv_v6(self.v6.as_ref(), &mut buf6) => {
                    if let Ok((len, from)) = r
                        && !self.on_datagram(buf6.get(..len).unwrap_or_default(), from, &tx)
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Re-reads the interfaces and joins the groups on new ones; `true` if the set changed.
    fn refresh_interfaces(&mut self) -> bool {
        let now = interfaces(&self.config);
        if now == self.interfaces {
            return false;
        }
        for (name, iface) in &now {
            if self.interfaces.get(name) == Some(iface) {
                continue;
            }
            if let Some(v4) = iface.v4
                && let Err(e) = self.v4.join_multicast_v4(GROUP_V4, v4)
            {
                tracing::debug!(%name, error = %e, "joining the IPv4 discovery group failed");
            }
            if let (true, Some(v6)) = (iface.v6, &self.v6)
                && let Err(e) = v6.join_multicast_v6(&GROUP_V6, iface.index)
            {
                tracing::debug!(%name, error = %e, "joining the IPv6 discovery group failed");
            }
        }
        tracing::debug!(interfaces = ?now.keys().collect::<Vec<_>>(), "discovery interfaces changed");
        self.interfaces = now;
        true
    }

    async fn send_beacons(&self) {
        for (name, iface) in &self.interfaces {
            if let Some(v4) = iface.v4 {
                let sent = match SockRef::from(&self.v4).set_multicast_if_v4(&v4) {
                    Ok(()) => self
                        .v4
                        .send_to(&self.beacon, (GROUP_V4, self.config.port))
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                };
                self.count_send(name, sent);
            }
            if let (true, Some(v6)) = (iface.v6, &self.v6) {
                let dest = SocketAddrV6::new(GROUP_V6, self.config.port, 0, iface.index);
                let sent = match SockRef::from(v6).set_multicast_if_v6(iface.index) {
                    Ok(()) => v6.send_to(&self.beacon, dest).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                self.count_send(name, sent);
            }
        }
    }

    fn count_send(&self, name: &str, sent: io::Result<()>) {
        match sent {
            Ok(()) => {
                self.metrics.beacons_sent.inc();
            }
            Err(e) => tracing::debug!(%name, error = %e, "sending a beacon failed"),
        }
    }

    /// Handles one received datagram; `false` once the driver is gone.
    fn on_datagram(&self, bytes: &[u8], from: SocketAddr, tx: &mpsc::Sender<Discovered>) -> bool {
        let found = match Beacon::decode_verified(bytes) {
            Ok(b) => b,
            Err(e) => {
                self.metrics.beacon(e.label());
                return true;
            }
        };
        if found.public_key == self.me {
            self.metrics.beacon("own");
            return true;
        }
        if found.network_hash != self.network {
            self.metrics.beacon("other_network");
            return true;
        }
        if found.quic_port == 0 {
            self.metrics.beacon("malformed");
            return true;
        }
        self.metrics.beacon("accepted");
        let addr = match from {
            SocketAddr::V4(a) => SocketAddr::new(IpAddr::V4(*a.ip()), found.quic_port),
            SocketAddr::V6(a) => {
                SocketAddrV6::new(*a.ip(), found.quic_port, 0, a.scope_id()).into()
            }
        };
        match tx.try_send(Discovered {
            key: found.public_key,
            addr,
        }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.drop_reason("discovered_queue_full");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Receives on the IPv6 socket, or never if there is none.
async fn recv_v6(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beacon_interval_grows_to_the_cap_and_resets() {
        let t0 = Instant::now();
        let mut s = BeaconSchedule::new(t0);
        assert_eq!(s.next(), t0);
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..7 {
            s.sent(now);
            gaps.push((s.next() - now).as_secs());
            now = s.next();
        }
        assert_eq!(gaps, [1, 2, 4, 8, 15, 15, 15]);
        s.reset(now);
        assert_eq!(s.next(), now);
        s.sent(now);
        assert_eq!(s.next() - now, INTERVAL_MIN);
    }
}
