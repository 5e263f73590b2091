//! Sessions: end-to-end QUIC connections between nodes, carried in overlay packets.
//!
//! ```text
//!  application ─ quinn::Endpoint ─ SessionSocket ──try_send──► bounded outbound queue ─► driver
//!                                                              ─► RoutingCore::send(key, packet)
//!  driver ◄─ CoreEvent::Delivered(from, packet) ─ deliver() ─► bounded inbound queue ─► poll_recv
//! ```
//!
//! quinn speaks to socket addresses, so every node key gets a synthetic IPv6 address (`fd00::/8`
//! followed by 120 bits of the key's SHA-256, port [`SESSION_PORT`]); the table maps both ways.
//! The address is only a label: TLS is pinned to the destination key, so a colliding label can
//! misroute packets but never impersonate a node. Packets are at most [`SESSION_MTU`] bytes so
//! that one fits in a link datagram together with the routing header.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};

use crate::driver::metrics::Metrics;
use crate::identity::PublicKey;
use crate::tls::{self, Expect, Identity, TlsError};

/// Size of every session QUIC packet (QUIC's minimum; path MTU discovery is off).
pub const SESSION_MTU: u16 = 1200;

/// The port of every synthetic session address.
pub const SESSION_PORT: u16 = 1;

/// Packets received and not yet read by quinn, before new ones are dropped.
pub const SESSION_INBOUND_LIMIT: usize = 1024;

/// Packets written by quinn and not yet taken by the driver; quinn waits when it is full.
pub const SESSION_OUTBOUND_LIMIT: usize = 256;

/// Packets quinn may hand over in one call.
const SESSION_BATCH: usize = 16;

/// Nodes with a synthetic address at once; packets from further nodes are dropped.
pub const MAX_SESSION_NODES: usize = 16 * 1024;

/// Incoming sessions queued per listener before new ones are refused.
pub const ACCEPT_QUEUE_LIMIT: usize = 64;

/// Time allowed to open a session before giving up (quinn alone would wait its idle timeout).
pub const SESSION_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors opening or accepting sessions.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// TLS configuration or peer identity failed.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// quinn refused to start the connection.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The session table is full.
    #[error("too many session nodes")]
    TableFull,
    /// The node did not answer within [`SESSION_CONNECT_TIMEOUT`].
    #[error("session set-up timed out")]
    Timeout,
    /// The endpoint could not be created.
    #[error("endpoint: {0}")]
    Io(#[from] io::Error),
}

/// The synthetic address of `key`.
pub fn address_of(key: &PublicKey) -> SocketAddr {
    let digest = Sha256::digest(key.as_bytes());
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    for (o, d) in octets.iter_mut().skip(1).zip(digest.iter()) {
        *o = *d;
    }
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), SESSION_PORT)
}

/// Key ↔ address table.
#[derive(Debug, Default)]
struct Table {
    by_key: HashMap<PublicKey, SocketAddr>,
    by_addr: HashMap<SocketAddr, PublicKey>,
}

impl Table {
    /// Registers `key`, returning its address, or `None` when the table is full or the label
    /// collides with another key.
    fn insert(&mut self, key: PublicKey) -> Option<SocketAddr> {
        if let Some(addr) = self.by_key.get(&key) {
            return Some(*addr);
        }
        let addr = address_of(&key);
        if self.by_key.len() >= MAX_SESSION_NODES || self.by_addr.contains_key(&addr) {
            return None;
        }
        self.by_key.insert(key, addr);
        self.by_addr.insert(addr, key);
        Some(addr)
    }
}

/// Inbound packets and the task waiting for them.
#[derive(Debug, Default)]
struct Inbound {
    queue: std::collections::VecDeque<(SocketAddr, Bytes)>,
    waker: Option<Waker>,
}

/// State shared by the socket (used by quinn) and the driver.
pub struct SessionShared {
    local: SocketAddr,
    table: Mutex<Table>,
    inbound: Mutex<Inbound>,
    outbound: mpsc::Sender<(PublicKey, Bytes)>,
    writable: Notify,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for SessionShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionShared")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl SessionShared {
    /// Hands a packet delivered by the overlay to quinn.
    pub fn deliver(&self, from: PublicKey, packet: Bytes) {
        let Some(addr) = self.table.lock().ok().and_then(|mut t| t.insert(from)) else {
            self.metrics.drop_reason("session_table_full");
            return;
        };
        let Ok(mut inbound) = self.inbound.lock() else {
            return;
        };
        if inbound.queue.len() >= SESSION_INBOUND_LIMIT {
            self.metrics.drop_reason("session_inbound_full");
            return;
        }
        inbound.queue.push_back((addr, packet));
        if let Some(w) = inbound.waker.take() {
            w.wake();
        }
    }

    /// Tells quinn there is room in the outbound queue again (the driver took packets).
    pub fn notify_writable(&self) {
        self.writable.notify_waiters();
    }

    /// Number of nodes with a session address.
    pub fn node_count(&self) -> usize {
        self.table.lock().map(|t| t.by_key.len()).unwrap_or(0)
    }
}

/// The `AsyncUdpSocket` whose datagrams are overlay packets.
#[derive(Debug)]
struct SessionSocket(Arc<SessionShared>);

impl quinn::AsyncUdpSocket for SessionSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(Poller {
            shared: self.0.clone(),
            wait: None,
        })
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> io::Result<()> {
        let key = self
            .0
            .table
            .lock()
            .ok()
            .and_then(|t| t.by_addr.get(&transmit.destination).copied());
        let Some(key) = key else {
            // quinn only sends to addresses we gave it; an unknown one is a stale label.
            self.0.metrics.drop_reason("session_unknown_address");
            return Ok(());
        };
        // quinn may hand over several packets at once (as for UDP segmentation offload); each
        // becomes one overlay packet. Take all or none, so quinn retries whole batches.
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let count = transmit.contents.len().div_ceil(size);
        if self.0.outbound.is_closed() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.0.outbound.capacity() < count {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        for packet in transmit.contents.chunks(size) {
            if self
                .0
                .outbound
                .try_send((key, Bytes::copy_from_slice(packet)))
                .is_err()
            {
                // Another connection took the room in between; the rest is lost like on a wire.
                self.0.metrics.drop_reason("session_outbound_full");
                break;
            }
        }
        Ok(())
    }

    fn max_transmit_segments(&self) -> usize {
        SESSION_BATCH
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let Ok(mut inbound) = self.0.inbound.lock() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        let mut filled = 0;
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
            let Some((addr, packet)) = inbound.queue.pop_front() else {
                break;
            };
            let Some(dst) = buf.get_mut(..packet.len()) else {
                self.0.metrics.drop_reason("session_packet_too_large");
                continue;
            };
            dst.copy_from_slice(&packet);
            *m = quinn::udp::RecvMeta {
                addr,
                len: packet.len(),
                stride: packet.len(),
                ecn: None,
                dst_ip: None,
            };
            filled += 1;
        }
        if filled > 0 {
            return Poll::Ready(Ok(filled));
        }
        inbound.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.local)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// Waits for room in the outbound queue.
struct Poller {
    shared: Arc<SessionShared>,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller").finish_non_exhaustive()
    }
}

impl quinn::UdpPoller for Poller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let shared = this.shared.clone();
        let wait = this.wait.get_or_insert_with(|| {
            Box::pin(async move {
                let notified = shared.writable.notified();
                tokio::pin!(notified);
                // Register before checking, so a notification in between is not lost. Wait for
                // room for a whole batch: `try_send` takes all of a batch or nothing, and a
                // smaller gap would have quinn retry in a tight loop.
                notified.as_mut().enable();
                if shared.outbound.capacity() >= SESSION_BATCH || shared.outbound.is_closed() {
                    return;
                }
                notified.await;
            })
        });
        match wait.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.wait = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A session opened by another node.
#[derive(Debug)]
pub struct IncomingSession {
    /// The node that opened it (its certificate key).
    pub remote: PublicKey,
    /// The QUIC connection.
    pub connection: quinn::Connection,
}

/// Incoming sessions for one ALPN.
#[derive(Debug)]
pub struct SessionListener {
    rx: mpsc::Receiver<IncomingSession>,
}

impl SessionListener {
    /// The next incoming session; `None` once the overlay has stopped.
    pub async fn accept(&mut self) -> Option<IncomingSession> {
        self.rx.recv().await
    }
}

/// The session endpoint of one node.
#[derive(Debug)]
pub struct Sessions {
    shared: Arc<SessionShared>,
    endpoint: quinn::Endpoint,
    identity: Identity,
    listeners: Arc<Mutex<HashMap<Vec<u8>, mpsc::Sender<IncomingSession>>>>,
}

/// Transport settings of sessions: fixed 1,200-byte packets.
fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.initial_mtu(SESSION_MTU)
        .min_mtu(SESSION_MTU)
        .mtu_discovery_config(None);
    t
}

impl Sessions {
    /// Creates the session endpoint; the receiver yields packets for the driver to send.
    pub fn new(
        local: PublicKey,
        identity: Identity,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, mpsc::Receiver<(PublicKey, Bytes)>), SessionError> {
        let (outbound, rx) = mpsc::channel(SESSION_OUTBOUND_LIMIT);
        let shared = Arc::new(SessionShared {
            local: address_of(&local),
            table: Mutex::new(Table::default()),
            inbound: Mutex::new(Inbound::default()),
            outbound,
            writable: Notify::new(),
            metrics,
        });
        let socket = Arc::new(SessionSocket(shared.clone()));
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let sessions = Self {
            shared,
            endpoint,
            identity,
            listeners: Arc::default(),
        };
        sessions.spawn_acceptor();
        Ok((sessions, rx))
    }

    /// The state the driver needs.
    pub fn shared(&self) -> Arc<SessionShared> {
        self.shared.clone()
    }

    /// Opens a session to `key` for the protocol `alpn`.
    pub async fn open(
        &self,
        key: PublicKey,
        alpn: &[u8],
    ) -> Result<quinn::Connection, SessionError> {
        let addr = self
            .shared
            .table
            .lock()
            .ok()
            .and_then(|mut t| t.insert(key))
            .ok_or(SessionError::TableFull)?;
        let mut config = tls::client_config(&self.identity, Expect::Key(key), alpn)?;
        config.transport_config(Arc::new(transport_config()));
        let connecting = self
            .endpoint
            .connect_with(config, addr, tls::server_name())?;
        match tokio::time::timeout(SESSION_CONNECT_TIMEOUT, connecting).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SessionError::Timeout),
        }
    }

    /// Accepts sessions for `alpn`; a second call for the same ALPN replaces the first listener.
    pub fn listen(&self, alpn: &[u8]) -> Result<SessionListener, SessionError> {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE_LIMIT);
        let alpns: Vec<Vec<u8>> = {
            let Ok(mut listeners) = self.listeners.lock() else {
                return Err(SessionError::Io(io::ErrorKind::BrokenPipe.into()));
            };
            listeners.insert(alpn.to_vec(), tx);
            listeners.keys().cloned().collect()
        };
        let mut server = tls::server_config(&self.identity, &alpns)?;
        server.transport_config(Arc::new(transport_config()));
        self.endpoint.set_server_config(Some(server));
        Ok(SessionListener { rx })
    }

    /// Closes every session.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }

    fn spawn_acceptor(&self) {
        let endpoint = self.endpoint.clone();
        let listeners = self.listeners.clone();
        let metrics = self.shared.metrics.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let (listeners, metrics) = (listeners.clone(), metrics.clone());
                tokio::spawn(async move {
                    let conn = match incoming.await {
                        Ok(conn) => conn,
                        Err(e) => {
                            tracing::debug!(error = %e, "incoming session failed");
                            return;
                        }
                    };
                    let alpn = conn
                        .handshake_data()
                        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                        .and_then(|d| d.protocol);
                    let remote = tls::peer_key(&conn);
                    let listener =
                        alpn.and_then(|a| listeners.lock().ok().and_then(|l| l.get(&a).cloned()));
                    match (remote, listener) {
                        (Ok(remote), Some(tx)) => {
                            if tx
                                .try_send(IncomingSession {
                                    remote,
                                    connection: conn.clone(),
                                })
                                .is_err()
                            {
                                metrics.drop_reason("session_accept_queue_full");
                                conn.close(1u32.into(), b"busy");
                            }
                        }
                        _ => conn.close(2u32.into(), b"no listener"),
                    }
                });
            }
        });
    }
}
