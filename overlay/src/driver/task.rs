//! The driver task's state and loop.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::core::{CoreEvent, RoutingCore, Verdict};
use super::metrics::Metrics;
use super::statics::StaticState;
use super::{Command, Config, HandleError, MAX_HANDLE_LOOKUPS, OverlayEvent, PeerInfo};
use crate::discovery::Discovered;
use crate::hello::{Hello, Negotiated};
use crate::identity::PublicKey;
use crate::link::{
    self, Established, LinkError, LinkInput, LinkKind, LinkTx, PeerId, Queued, close,
};
use crate::session::SessionShared;
use crate::tls::{Expect, Identity};
use crate::wire::Record;

/// Link inputs queued for the driver; link readers wait when it is full.
const LINK_INPUT_LIMIT: usize = 1024;

/// Handshakes (inbound and outbound) under way at once; further inbound ones are refused.
const MAX_PENDING_HANDSHAKES: usize = 64;

/// After a failed dial to a LAN node, its beacons are ignored this long (they keep coming).
const LAN_RETRY_AFTER: Duration = Duration::from_secs(30);

/// LAN nodes remembered as failed at once.
const LAN_FAILED_LIMIT: usize = 256;

/// How often link round-trip times are passed to the routing core.
const RTT_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// How often the routing core's drop counts are copied into the metrics.
const METRICS_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Inputs taken in one go before outputs are flushed, so a busy link cannot starve the rest.
const BATCH: usize = 64;

/// How long shutdown waits for links to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Why a link is being set up.
#[derive(Debug, Clone, Copy)]
struct Origin {
    kind: LinkKind,
    static_index: Option<usize>,
    expect: Option<PublicKey>,
}

/// A finished handshake.
struct SetupResult {
    origin: Origin,
    result: Result<Established, LinkError>,
}

/// One registered link.
struct Link {
    key: PublicKey,
    kind: LinkKind,
    dialled: bool,
    conn: quinn::Connection,
    tx: LinkTx,
    negotiated: Negotiated,
}

/// Everything [`Driver::new`] takes.
pub(super) struct Parts {
    pub(super) core: Box<dyn RoutingCore>,
    pub(super) config: Config,
    pub(super) identity: Identity,
    pub(super) endpoint: quinn::Endpoint,
    pub(super) metrics: Arc<Metrics>,
    pub(super) sessions: Arc<SessionShared>,
    pub(super) session_rx: mpsc::Receiver<(PublicKey, Bytes)>,
    pub(super) beacons: Option<mpsc::Receiver<Discovered>>,
    pub(super) events: mpsc::Sender<OverlayEvent>,
}

/// The driver's state.
pub(super) struct Driver {
    core: Box<dyn RoutingCore>,
    me: PublicKey,
    hello: Hello,
    identity: Identity,
    endpoint: quinn::Endpoint,
    metrics: Arc<Metrics>,
    sessions: Arc<SessionShared>,
    session_rx: mpsc::Receiver<(PublicKey, Bytes)>,
    beacons: Option<mpsc::Receiver<Discovered>>,
    events: mpsc::Sender<OverlayEvent>,
    links: HashMap<PeerId, Link>,
    by_key: HashMap<PublicKey, PeerId>,
    next_peer: u64,
    statics: Vec<StaticState>,
    lan_dialling: HashSet<PublicKey>,
    /// LAN nodes whose last dial failed, and until when their beacons are ignored.
    lan_failed: HashMap<PublicKey, Instant>,
    handshakes: Arc<Semaphore>,
    link_tx: mpsc::Sender<LinkInput>,
    link_rx: mpsc::Receiver<LinkInput>,
    setup_tx: mpsc::Sender<SetupResult>,
    setup_rx: mpsc::Receiver<SetupResult>,
    next_rtt_report: Instant,
    next_metrics_sync: Instant,
    /// The core's drop counts as last copied, so only the growth is added.
    routing_drops_seen: HashMap<&'static str, u64>,
    /// Handles waiting for a record lookup, by the core's lookup id.
    lookups: HashMap<u64, oneshot::Sender<Result<Option<Record>, HandleError>>>,
}

impl Driver {
    pub(super) fn new(parts: Parts) -> Self {
        let now = Instant::now();
        let (link_tx, link_rx) = mpsc::channel(LINK_INPUT_LIMIT);
        let (setup_tx, setup_rx) = mpsc::channel(MAX_PENDING_HANDSHAKES);
        let statics = parts
            .config
            .static_peers
            .iter()
            .cloned()
            .map(|p| StaticState::new(p, now))
            .collect();
        Self {
            core: parts.core,
            me: parts.config.secret.public_key(),
            hello: Hello::ours(parts.config.network_id),
            identity: parts.identity,
            endpoint: parts.endpoint,
            metrics: parts.metrics,
            sessions: parts.sessions,
            session_rx: parts.session_rx,
            beacons: parts.beacons,
            events: parts.events,
            links: HashMap::new(),
            by_key: HashMap::new(),
            next_peer: 1,
            statics,
            lan_dialling: HashSet::new(),
            lan_failed: HashMap::new(),
            handshakes: Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES)),
            link_tx,
            link_rx,
            setup_tx,
            setup_rx,
            next_rtt_report: now + RTT_REPORT_INTERVAL,
            next_metrics_sync: now + METRICS_SYNC_INTERVAL,
            routing_drops_seen: HashMap::new(),
            lookups: HashMap::new(),
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        self.spawn_acceptor();
        loop {
            self.dial_due_statics();
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                Some(result) = self.setup_rx.recv() => self.on_setup(result),
                Some(input) = self.link_rx.recv() => {
                    self.on_link_input(input);
                    for _ in 1..BATCH {
                        let Ok(input) = self.link_rx.try_recv() else { break };
                        self.on_link_input(input);
                    }
                }
                Some((to, packet)) = self.session_rx.recv() => {
                    self.on_session_packet(to, packet);
                    for _ in 1..BATCH {
                        let Ok((to, packet)) = self.session_rx.try_recv() else { break };
                        self.on_session_packet(to, packet);
                    }
                    self.sessions.notify_writable();
                }
                Some(found) = recv_beacon(&mut self.beacons) => self.on_beacon(found),
                () = tokio::time::sleep_until(deadline.into()) => self.on_timers(),
            }
            self.flush();
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut next = self.next_rtt_report.min(self.next_metrics_sync);
        if let Some(t) = self.core.poll_timeout() {
            next = next.min(t);
        }
        for s in &self.statics {
            if let Some(t) = s.next_dial {
                next = next.min(t);
            }
        }
        next
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        if self.next_metrics_sync <= now {
            self.next_metrics_sync = now + METRICS_SYNC_INTERVAL;
            self.sync_routing_drops();
        }
        if self.next_rtt_report <= now {
            self.next_rtt_report = now + RTT_REPORT_INTERVAL;
            for (peer, link) in &self.links {
                self.core.handle_peer_rtt(*peer, link.conn.rtt(), now);
            }
        }
    }

    /// Adds what the core dropped since the last call to the exported counters.
    fn sync_routing_drops(&mut self) {
        for (reason, count) in self.core.drop_counts() {
            let seen = self.routing_drops_seen.entry(reason).or_insert(0);
            if count > *seen {
                self.metrics
                    .routing_drops
                    .get_or_create(&super::metrics::Reason { reason })
                    .inc_by(count - *seen);
                *seen = count;
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::AddStaticPeer(peer) => {
                self.statics.push(StaticState::new(peer, Instant::now()))
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_infos());
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Publish(record, reply) => {
                let _ = reply.send(self.core.publish(record, Instant::now()));
            }
            Command::Lookup(key, reply) => {
                // Handles that gave up are forgotten first; the core ends every lookup by its
                // own timeout, so the rest are answered soon.
                self.lookups.retain(|_, tx| !tx.is_closed());
                if self.lookups.len() >= MAX_HANDLE_LOOKUPS {
                    let _ = reply.send(Err(HandleError::Busy));
                    return;
                }
                match self.core.lookup(key, Instant::now()) {
                    Some(id) => {
                        self.lookups.insert(id, reply);
                    }
                    None => {
                        let _ = reply.send(Ok(None));
                    }
                }
            }
            Command::Shutdown(_) => {}
        }
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut peers: Vec<PeerInfo> = self
            .links
            .values()
            .map(|l| PeerInfo {
                key: l.key,
                kind: l.kind,
                addr: l.conn.remote_address(),
                rtt: l.conn.rtt(),
                negotiated: l.negotiated,
            })
            .collect();
        peers.sort_by_key(|p| p.key);
        peers
    }

    fn snapshot(&self) -> serde_json::Value {
        let peers: Vec<serde_json::Value> = self
            .peer_infos()
            .into_iter()
            .map(|p| {
                serde_json::json!({
                    "key": p.key.to_hex(),
                    "kind": p.kind,
                    "addr": p.addr.to_string(),
                    "rtt_us": u64::try_from(p.rtt.as_micros()).unwrap_or(u64::MAX),
                    "version": p.negotiated.version,
                    "capabilities": p.negotiated.capabilities,
                })
            })
            .collect();
        let statics: Vec<serde_json::Value> = self
            .statics
            .iter()
            .map(|s| {
                serde_json::json!({
                    "addr": s.peer.addr.to_string(),
                    "key": s.peer.key.map(|k| k.to_hex()),
                    "linked": s.peer.key.is_some_and(|k| self.by_key.contains_key(&k)),
                    "backoff_ms": u64::try_from(s.backoff.as_millis()).unwrap_or(u64::MAX),
                })
            })
            .collect();
        serde_json::json!({
            "public_key": self.me.to_hex(),
            "local_addr": self.endpoint.local_addr().map(|a| a.to_string()).ok(),
            "peers": peers,
            "static_peers": statics,
            "session_nodes": self.sessions.node_count(),
            "routing": self.core.snapshot(),
        })
    }

    fn spawn_acceptor(&self) {
        let endpoint = self.endpoint.clone();
        let (permits, setup, metrics, hello) = (
            self.handshakes.clone(),
            self.setup_tx.clone(),
            self.metrics.clone(),
            self.hello,
        );
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    metrics.drop_reason("handshake_limit");
                    incoming.refuse();
                    continue;
                };
                let setup = setup.clone();
                tokio::spawn(async move {
                    let result = link::accept(incoming, hello).await;
                    drop(permit);
                    let origin = Origin {
                        kind: LinkKind::Inbound,
                        static_index: None,
                        expect: None,
                    };
                    let _ = setup.send(SetupResult { origin, result }).await;
                });
            }
        });
    }

    fn dial(&self, addr: SocketAddr, origin: Origin) {
        let (endpoint, identity, setup, hello) = (
            self.endpoint.clone(),
            self.identity.clone(),
            self.setup_tx.clone(),
            self.hello,
        );
        let permits = self.handshakes.clone();
        tokio::spawn(async move {
            let expect = origin.expect.map_or(Expect::AnyKey, Expect::Key);
            let result = match permits.acquire_owned().await {
                Ok(_permit) => {
                    link::dial(&endpoint, &identity, expect, addr, origin.kind, hello).await
                }
                Err(_) => Err(LinkError::Timeout),
            };
            let _ = setup.send(SetupResult { origin, result }).await;
        });
    }

    fn dial_due_statics(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for (i, s) in self.statics.iter_mut().enumerate() {
            if s.next_dial.is_some_and(|t| t <= now) {
                if s.peer.key.is_some_and(|k| self.by_key.contains_key(&k)) {
                    s.linked();
                    continue;
                }
                s.next_dial = None;
                s.dialling = true;
                due.push((
                    s.peer.addr,
                    Origin {
                        kind: LinkKind::Static,
                        static_index: Some(i),
                        expect: s.peer.key,
                    },
                ));
            }
        }
        for (addr, origin) in due {
            tracing::debug!(%addr, "dialling static peer");
            self.dial(addr, origin);
        }
    }

    fn on_beacon(&mut self, found: Discovered) {
        let now = Instant::now();
        if found.key == self.me
            || self.by_key.contains_key(&found.key)
            || self.lan_dialling.contains(&found.key)
            || self
                .lan_failed
                .get(&found.key)
                .is_some_and(|until| *until > now)
        {
            return;
        }
        // An IPv4-only endpoint cannot dial an IPv6 sender; the node's IPv4 beacon will do.
        let local_v4 = self.endpoint.local_addr().is_ok_and(|a| a.is_ipv4());
        if local_v4 && found.addr.is_ipv6() {
            return;
        }
        if self.lan_dialling.len() >= MAX_PENDING_HANDSHAKES {
            self.metrics.drop_reason("lan_dial_limit");
            return;
        }
        tracing::debug!(key = ?found.key, addr = %found.addr, "dialling node seen on the LAN");
        self.lan_dialling.insert(found.key);
        self.dial(
            found.addr,
            Origin {
                kind: LinkKind::Lan,
                static_index: None,
                expect: Some(found.key),
            },
        );
    }

    fn on_setup(&mut self, SetupResult { origin, result }: SetupResult) {
        let now = Instant::now();
        let lan_key = origin.expect.filter(|_| origin.kind == LinkKind::Lan);
        if let Some(key) = lan_key {
            self.lan_dialling.remove(&key);
        }
        let established = match result {
            Ok(e) => e,
            Err(error) => {
                tracing::info!(kind = origin.kind.label(), %error, "peer link set-up failed");
                self.metrics
                    .link_failures
                    .get_or_create(&super::metrics::Reason {
                        reason: error.label(),
                    })
                    .inc();
                match &error {
                    LinkError::Hello(e) => self.metrics.hello_refused(e.label()),
                    LinkError::RefusedByPeer(reason) => {
                        self.metrics.hello_refused(peer_reason(reason))
                    }
                    _ => {}
                }
                if let Some(s) = origin.static_index.and_then(|i| self.statics.get_mut(i)) {
                    s.failed(now);
                }
                if let Some(key) = lan_key {
                    if self.lan_failed.len() >= LAN_FAILED_LIMIT {
                        self.lan_failed.retain(|_, until| *until > now);
                    }
                    if self.lan_failed.len() < LAN_FAILED_LIMIT {
                        self.lan_failed.insert(key, now + LAN_RETRY_AFTER);
                    }
                }
                return;
            }
        };
        let key = established.key;
        if let Some(s) = origin.static_index.and_then(|i| self.statics.get_mut(i)) {
            s.peer.key.get_or_insert(key);
            s.linked();
        }
        if key == self.me {
            established.conn.close(close::SELF_LINK.into(), b"self");
            return;
        }
        if let Some(&old) = self.by_key.get(&key) {
            if !self.replaces(&established, old) {
                tracing::debug!(?key, "keeping the existing link to this peer");
                established
                    .conn
                    .close(close::DUPLICATE.into(), b"duplicate");
                return;
            }
            if let Some(l) = self.links.get(&old) {
                l.conn.close(close::DUPLICATE.into(), b"duplicate");
            }
            self.remove_link(old, now);
        }
        let peer = PeerId(self.next_peer);
        self.next_peer += 1;
        let (kind, dialled, negotiated, conn) = (
            established.kind,
            established.dialled,
            established.negotiated,
            established.conn.clone(),
        );
        let tx = link::spawn(
            peer,
            established,
            self.link_tx.clone(),
            self.metrics.clone(),
        );
        tracing::info!(?key, kind = kind.label(), remote = %conn.remote_address(), "peer link up");
        self.links.insert(
            peer,
            Link {
                key,
                kind,
                dialled,
                conn,
                tx,
                negotiated,
            },
        );
        self.by_key.insert(key, peer);
        self.metrics.peers.inc();
        self.core
            .handle_peer_up_negotiated(peer, key, negotiated.capabilities, now);
        self.emit(OverlayEvent::PeerUp { key, kind });
    }

    /// Whether a new link to the same key replaces the existing one. Both ends must agree
    /// without talking: keep the link dialled by the higher key; if both links were dialled by
    /// the same side, the newer one wins (the older is usually a dead link not yet noticed).
    fn replaces(&self, new: &Established, old: PeerId) -> bool {
        let Some(old) = self.links.get(&old) else {
            return true;
        };
        if old.dialled == new.dialled {
            return true;
        }
        let preferred_dialler_is_me = self.me > new.key;
        new.dialled == preferred_dialler_is_me
    }

    fn remove_link(&mut self, peer: PeerId, now: Instant) {
        let Some(link) = self.links.remove(&peer) else {
            return;
        };
        if self.by_key.get(&link.key) == Some(&peer) {
            self.by_key.remove(&link.key);
        }
        self.metrics.peers.dec();
        self.core.handle_peer_down(peer, now);
        tracing::info!(key = ?link.key, kind = link.kind.label(), "peer link down");
        self.emit(OverlayEvent::PeerDown {
            key: link.key,
            kind: link.kind,
        });
        if !self.by_key.contains_key(&link.key) {
            for s in self
                .statics
                .iter_mut()
                .filter(|s| s.peer.key == Some(link.key))
            {
                s.lost(now);
            }
        }
    }

    fn on_link_input(&mut self, input: LinkInput) {
        let now = Instant::now();
        match input {
            LinkInput::Frame { peer, bytes, .. } => {
                if !self.links.contains_key(&peer) {
                    return;
                }
                if let Err(rejected) = self.core.handle_frame(peer, &bytes, now) {
                    self.metrics.drop_reason(rejected.reason);
                    if rejected.verdict == Verdict::DropPeer {
                        tracing::warn!(
                            ?peer,
                            reason = rejected.reason,
                            "dropping peer after a bad frame"
                        );
                        if let Some(l) = self.links.get(&peer) {
                            l.conn
                                .close(close::PROTOCOL.into(), rejected.reason.as_bytes());
                        }
                        self.remove_link(peer, now);
                    }
                }
            }
            LinkInput::Closed { peer, reason } => {
                if self.links.contains_key(&peer) {
                    tracing::debug!(?peer, %reason, "link closed");
                    self.remove_link(peer, now);
                }
            }
        }
    }

    fn on_session_packet(&mut self, to: PublicKey, packet: Bytes) {
        if let Err(rejected) = self.core.send(to, packet, Instant::now()) {
            self.metrics.drop_reason(rejected.reason);
        }
    }

    /// Drains the core's outputs.
    fn flush(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.core.poll_transmit() {
            let Some(link) = self.links.get(&t.peer) else {
                self.metrics.drop_reason("no_such_peer");
                continue;
            };
            match link.tx.send(t.bytes, t.reliable) {
                Queued::Yes => {}
                Queued::Dropped(reason) => self.metrics.drop_reason(reason),
                Queued::Stalled => {
                    self.metrics.drop_reason("control_queue_full");
                    tracing::warn!(peer = ?t.peer, "peer stalled on control frames; dropping it");
                    link.conn.close(close::STALLED.into(), b"stalled");
                    self.remove_link(t.peer, now);
                }
            }
        }
        while let Some(event) = self.core.poll_event() {
            match event {
                CoreEvent::Delivered { from, payload } => self.sessions.deliver(from, payload),
                CoreEvent::NodeReachable(key) => self.emit(OverlayEvent::NodeReachable(key)),
                CoreEvent::TreeParentChanged(parent) => {
                    self.emit(OverlayEvent::TreeParentChanged(parent))
                }
                CoreEvent::LookupDone { id, record } => {
                    if let Some(tx) = self.lookups.remove(&id) {
                        let _ = tx.send(Ok(record));
                    }
                }
            }
        }
    }

    fn emit(&self, event: OverlayEvent) {
        if self.events.try_send(event).is_err() {
            self.metrics.drop_reason("event_queue_full");
        }
    }

    async fn shutdown(&mut self) {
        let now = Instant::now();
        let peers: Vec<PeerId> = self.links.keys().copied().collect();
        for peer in peers {
            if let Some(l) = self.links.get(&peer) {
                l.conn.close(close::NORMAL.into(), b"shutdown");
            }
            self.remove_link(peer, now);
        }
        self.endpoint.close(close::NORMAL.into(), b"shutdown");
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.endpoint.wait_idle()).await;
    }
}

/// The next beacon, or never when discovery is off.
async fn recv_beacon(beacons: &mut Option<mpsc::Receiver<Discovered>>) -> Option<Discovered> {
    match beacons {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Maps a refusal reason sent by a peer to one of our metric labels.
fn peer_reason(reason: &str) -> &'static str {
    match reason {
        "network_id" => "network_id",
        "version" => "version",
        "malformed" => "malformed",
        _ => "other",
    }
}
