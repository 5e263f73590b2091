//! The tokio driver: owns the peer endpoint, the discovery socket, the session endpoint and the
//! timers, and runs a [`RoutingCore`] with their input.
//!
//! ```text
//!            OverlayHandle ──commands──►┐
//!  accept task ─┐                       │
//!  dial tasks ──┴─(set-up results)─────►│
//!  link tasks ─────(frames, closed)────►│  driver task: RoutingCore + link table + static peers
//!  discovery task ──(beacons)──────────►│      │ poll_transmit ─► link writers
//!  session socket ──(packets)──────────►┘      │ poll_event ──► Delivered ─► session socket
//!                                              └──────────────► OverlayEvent channel
//! ```
//!
//! Everything the driver owns is touched by the driver task only; other tasks talk to it through
//! bounded channels.

pub mod core;
pub mod metrics;
pub mod router_core;
pub mod statics;
mod task;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use self::core::{RecordRejected, RoutingCore};
use self::metrics::Metrics;
pub use self::router_core::RouterCore;
use self::statics::StaticPeer;
use crate::discovery::DiscoveryConfig;
use crate::hello::Negotiated;
use crate::identity::{NodeKeypair, PublicKey};
use crate::link::{LinkKind, LinkSetupError};
use crate::session::{SessionError, SessionListener, Sessions};
use crate::tls::{Identity, TlsError};
use crate::wire::Record;

/// Events queued for the application before new ones are dropped (and counted).
pub const EVENT_QUEUE_LIMIT: usize = 1024;

/// Commands from handles queued before callers wait.
const COMMAND_QUEUE_LIMIT: usize = 64;

/// Record lookups awaited through handles at once; more are refused at once.
const MAX_HANDLE_LOOKUPS: usize = 256;

/// How the overlay is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node key.
    pub secret: NodeKeypair,
    /// UDP address for peer links (port 0: any).
    pub bind: SocketAddr,
    /// Peers to dial and keep dialling.
    pub static_peers: Vec<StaticPeer>,
    /// Closed-network id: only nodes with the same id (or both none) peer.
    pub network_id: Option<[u8; 32]>,
    /// LAN discovery.
    pub discovery: DiscoveryConfig,
    /// Tunables of the routing core [`Overlay::start_default`] runs.
    pub routing: crate::router::Config,
}

impl Config {
    /// A node with `secret` on `bind`, no static peers, open network, discovery off.
    pub fn new(secret: NodeKeypair, bind: SocketAddr) -> Self {
        Self {
            secret,
            bind,
            static_peers: Vec::new(),
            network_id: None,
            discovery: DiscoveryConfig::disabled(),
            routing: crate::router::Config::default(),
        }
    }
}

/// What the overlay tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayEvent {
    /// A link to a neighbour came up.
    PeerUp {
        /// The neighbour.
        key: PublicKey,
        /// How the link came to be.
        kind: LinkKind,
    },
    /// A link to a neighbour went down.
    PeerDown {
        /// The neighbour.
        key: PublicKey,
        /// How the link came to be.
        kind: LinkKind,
    },
    /// A node became reachable through the overlay.
    NodeReachable(PublicKey),
    /// The spanning-tree parent changed.
    TreeParentChanged(Option<PublicKey>),
}

/// One neighbour, as [`OverlayHandle::peers`] reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerInfo {
    /// Its key.
    pub key: PublicKey,
    /// How the link came to be.
    pub kind: LinkKind,
    /// Its UDP address.
    pub addr: SocketAddr,
    /// Latest round-trip estimate.
    pub rtt: Duration,
    /// The negotiated version and capabilities.
    pub negotiated: Negotiated,
}

/// Errors starting the overlay.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS set-up failed.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The peer endpoint could not be created.
    #[error("links: {0}")]
    Link(#[from] LinkSetupError),
    /// The session endpoint could not be created.
    #[error("sessions: {0}")]
    Session(#[from] SessionError),
    /// The discovery socket could not be created.
    #[error("discovery: {0}")]
    Discovery(#[from] std::io::Error),
}

/// Errors from handle calls.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The overlay has stopped.
    #[error("the overlay has stopped")]
    Stopped,
    /// The routing core refused a record.
    #[error(transparent)]
    Record(#[from] RecordRejected),
    /// Too many lookups are awaited at once.
    #[error("too many lookups in flight")]
    Busy,
}

/// Requests from handles to the driver.
#[derive(Debug)]
enum Command {
    AddStaticPeer(StaticPeer),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Snapshot(oneshot::Sender<serde_json::Value>),
    Publish(Record, oneshot::Sender<Result<(), RecordRejected>>),
    Lookup(
        PublicKey,
        oneshot::Sender<Result<Option<Record>, HandleError>>,
    ),
    Shutdown(oneshot::Sender<()>),
}

/// Starts overlays.
#[derive(Debug)]
pub struct Overlay;

impl Overlay {
    /// Starts with the shipped routing core ([`RouterCore`], tuned by `config.routing`, its
    /// jitter seeded from the OS). Must be called inside a tokio runtime.
    pub fn start_default(
        config: Config,
    ) -> Result<(OverlayHandle, mpsc::Receiver<OverlayEvent>), StartError> {
        let core = RouterCore::from_entropy(&config.secret, config.routing.clone());
        Self::start(config, core)
    }

    /// Binds the sockets and starts the driver running `core`. Must be called inside a tokio
    /// runtime.
    pub fn start(
        config: Config,
        core: impl RoutingCore,
    ) -> Result<(OverlayHandle, mpsc::Receiver<OverlayEvent>), StartError> {
        let metrics = Arc::new(Metrics::default());
        let identity = Identity::new(&config.secret)?;
        let public_key = config.secret.public_key();
        let endpoint = crate::link::endpoint(&identity, config.bind)?;
        let local_addr = endpoint.local_addr().map_err(LinkSetupError::Io)?;
        let (sessions, session_rx) = Sessions::new(public_key, identity.clone(), metrics.clone())?;
        let beacons = crate::discovery::spawn(
            &config.discovery,
            &config.secret,
            local_addr.port(),
            config.network_id,
            metrics.clone(),
        )?;
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE_LIMIT);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE_LIMIT);
        let driver = task::Driver::new(task::Parts {
            core: Box::new(core),
            config,
            identity,
            endpoint,
            metrics: metrics.clone(),
            sessions: sessions.shared(),
            session_rx,
            beacons,
            events: events_tx,
        });
        tokio::spawn(driver.run(command_rx));
        let handle = OverlayHandle {
            inner: Arc::new(Inner {
                public_key,
                local_addr,
                commands,
                metrics,
                sessions,
            }),
        };
        Ok((handle, events_rx))
    }
}

#[derive(Debug)]
struct Inner {
    public_key: PublicKey,
    local_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    sessions: Sessions,
}

/// Controls a running overlay; cheap to clone.
#[derive(Debug, Clone)]
pub struct OverlayHandle {
    inner: Arc<Inner>,
}

impl OverlayHandle {
    /// This node's key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.public_key
    }

    /// The UDP address peer links are accepted on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Adds a peer to dial now and keep dialling.
    pub async fn add_static_peer(&self, peer: StaticPeer) -> Result<(), HandleError> {
        self.command(Command::AddStaticPeer(peer)).await
    }

    /// The neighbours currently linked.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, HandleError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Peers(tx)).await?;
        rx.await.map_err(|_| HandleError::Stopped)
    }

    /// The admin view: this node, its links, sessions and the routing core's state.
    pub async fn snapshot(&self) -> Result<serde_json::Value, HandleError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Snapshot(tx)).await?;
        rx.await.map_err(|_| HandleError::Stopped)
    }

    /// Publishes a signed record on the ring, at the nodes closest to its key's placements,
    /// and keeps it there until it expires (publish a higher sequence to replace or extend
    /// it). Refused when the record does not verify, its publisher may not publish under its
    /// key (the core's record policy), or its lifetime is over the limit.
    pub async fn publish(&self, record: Record) -> Result<(), HandleError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Publish(record, tx)).await?;
        Ok(rx.await.map_err(|_| HandleError::Stopped)??)
    }

    /// Looks up the record under `key` on the ring. `Ok(None)`: no placement returned a
    /// valid record before the routing core's lookup timeout, or `timeout` passed first.
    pub async fn lookup(
        &self,
        key: PublicKey,
        timeout: Duration,
    ) -> Result<Option<Record>, HandleError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Lookup(key, tx)).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(answer) => answer.map_err(|_| HandleError::Stopped)?,
            Err(_) => Ok(None),
        }
    }

    /// All counters in the Prometheus text format.
    pub fn metrics(&self) -> String {
        self.inner.metrics.encode()
    }

    /// The counters themselves (for tests and embedding).
    pub fn counters(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Opens an end-to-end session to `key` speaking `alpn`.
    pub async fn open_session(
        &self,
        key: PublicKey,
        alpn: &[u8],
    ) -> Result<quinn::Connection, SessionError> {
        self.inner.sessions.open(key, alpn).await
    }

    /// Accepts sessions speaking `alpn`.
    pub fn listen(&self, alpn: &[u8]) -> Result<SessionListener, SessionError> {
        self.inner.sessions.listen(alpn)
    }

    /// Closes all sessions and links and stops the driver. Waits until the links are closed so
    /// peers learn at once instead of after their idle timeout.
    pub async fn shutdown(&self) -> Result<(), HandleError> {
        self.inner.sessions.close();
        let (tx, rx) = oneshot::channel();
        self.command(Command::Shutdown(tx)).await?;
        rx.await.map_err(|_| HandleError::Stopped)
    }

    async fn command(&self, command: Command) -> Result<(), HandleError> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| HandleError::Stopped)
    }
}
