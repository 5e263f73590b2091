//! The Matrix server-server API of a Grove node. The transport follows the server name: a
//! 64-hex name (an overlay key) is reached over overlay sessions; a DNS name (a static peer on
//! the classic network) over ordinary HTTPS, as Matrix homeservers do. Requests carry the
//! `X-Matrix` signature either way.
//!
//! - [`backfill`]: older history fetched for clients paging back past what this node holds.
//! - [`client`]: signed HTTP/1.1 requests, over overlay sessions with ALPN `matrix` or, for
//!   DNS names, over HTTPS ([`https`]: server discovery, rustls, one pool of connections).
//! - [`inbound`] and [`routes`]: the federation router served on accepted sessions and, for a
//!   DNS-named node, on its HTTPS listener.
//! - [`keys`]: self-certifying names (a 64-hex server name is its own verify key, never
//!   fetched) and the key ring of DNS names (keys fetched from `/_matrix/key/v2/server`, the
//!   self-signature checked, kept in memory and in the database until `valid_until_ts`).
//! - [`homes`]: hex-named homes served by several replicas: their replica documents, which
//!   peers speak for them, which keys sign for them, which replica a request goes to.
//! - [`limits`]: per-origin rate limits on key claims and invites.
//! - [`tls`]: a DNS-named node's certificate, key and trusted roots (webpki plus extra CAs).
//! - [`receive`]: checking and adding PDUs received in transactions.
//! - [`sender`]: the persistent per-destination queues and their back-off.
//! - [`remote`]: joins, invites and alias lookups the client API asks for.
//! - [`e2ee`]: keys and to-device messages of users on different nodes.
//! - [`metrics`]: Prometheus counters of what was received and sent.
//! - [`media`]: serving this node's media to other servers and fetching theirs.
//! - [`presence`]: presence sent to and received from the servers sharing rooms.
//!
//! It depends on the server core and the overlay; the overlay knows nothing of it, and it knows
//! nothing of the client API (which reaches it through `grove_server::federation::Remote`).

pub mod backfill;
pub mod client;
pub mod e2ee;
pub mod error;
pub mod homes;
pub mod https;
pub mod inbound;
pub mod keys;
pub mod limits;
pub mod media;
pub mod metrics;
pub mod presence;
pub mod receive;
pub mod remote;
pub mod routes;
pub mod sender;
pub mod tls;

use std::{
    collections::BTreeSet,
    sync::{Arc, Weak},
    time::Duration,
};

use grove_overlay::driver::{OverlayEvent, OverlayHandle};
use grove_server::{Homeserver, StreamPosition};
use ruma::{EventId, OwnedServerName, RoomId, ServerName, UserId};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{debug, warn};

/// What every part of federation reaches: the server core, the client and the sender.
pub struct Ctx {
    /// The homeserver core.
    pub hs: Homeserver,
    /// Outbound requests.
    pub client: client::Client,
    /// Server keys: hex names' from the names, DNS names' fetched and cached.
    pub keys: keys::KeyRing,
    /// The outgoing queues.
    pub sender: sender::Sender,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Key claims per origin.
    pub key_claims: limits::RateLimiter,
    /// Invites per origin.
    pub invites: limits::RateLimiter,
    /// One lock per origin with a transaction in hand: an origin's transactions are handled
    /// one at a time, so a flood from one peer queues instead of multiplying the work.
    pub(crate) inbound_origins: std::sync::Mutex<
        std::collections::HashMap<
            ruma::OwnedServerName,
            Arc<tokio::sync::Mutex<routes::RecentTxns>>,
        >,
    >,
}

impl Ctx {
    /// The other servers sharing a joined room with `user`.
    pub async fn servers_sharing_with(&self, user: &UserId) -> BTreeSet<OwnedServerName> {
        let mut servers = BTreeSet::new();
        for room in self.hs.rooms.joined_rooms(user).await.unwrap_or_default() {
            servers.extend(
                self.hs
                    .rooms
                    .servers_in_room(&room)
                    .await
                    .unwrap_or_default(),
            );
        }
        servers.remove(&self.hs.config.server_name);
        servers
    }

    /// Queues a stored event for every server in the room but `except` and this one.
    pub async fn push_to_room(&self, room: &RoomId, event: &EventId, except: &ServerName) {
        let servers = match self.hs.rooms.servers_in_room(room).await {
            Ok(s) => s,
            Err(e) => {
                warn!(%room, error = %e, "listing the servers of a room");
                return;
            }
        };
        for server in servers {
            if server == except || server == self.hs.config.server_name {
                continue;
            }
            if !self
                .hs
                .rooms
                .server_allowed(room, &server)
                .await
                .unwrap_or(false)
            {
                continue;
            }
            if let Err(e) = self.hs.federation_queue.push(&server, event.as_str()).await {
                warn!(%server, error = %e, "queueing an event");
                continue;
            }
            self.sender.wake(&server);
        }
    }
}

/// Why federation could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The overlay refused the `matrix` listener.
    #[error("cannot listen for sessions: {0}")]
    Listen(String),
    /// The TLS settings of a DNS-named node could not be used.
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
}

/// Running federation: the inbound server, the sender and the overlay event watcher.
pub struct Federation {
    ctx: Arc<Ctx>,
    tasks: Vec<JoinHandle<()>>,
    https_addr: Option<std::net::SocketAddr>,
}

/// Binds the HTTPS listener (inside the runtime, without waiting).
fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, tls::TlsError> {
    let listen_error = |e: std::io::Error| tls::TlsError::Listen {
        addr,
        message: e.to_string(),
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(listen_error)?;
    // A restarted node takes its port back while old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(listen_error)?;
    socket.bind(addr).map_err(listen_error)?;
    socket.listen(1024).map_err(listen_error)
}

impl Federation {
    /// Starts serving and sending over `overlay`, and installs the remote operations into the
    /// homeserver for the client API. `events` is the overlay's event stream.
    pub fn start(
        hs: Homeserver,
        overlay: OverlayHandle,
        events: mpsc::Receiver<OverlayEvent>,
    ) -> Result<Self, StartError> {
        Self::start_with_tls(
            hs,
            overlay,
            events,
            None,
            grove_listen::ServeConfig::default(),
        )
    }

    /// As [`Federation::start`], and for a DNS-named node with `tls`, also serves federation
    /// over HTTPS on `tls.listen` and trusts `tls.extra_roots` beside the webpki roots when
    /// sending. Both listeners serve under `serve`'s limits.
    pub fn start_with_tls(
        hs: Homeserver,
        overlay: OverlayHandle,
        mut events: mpsc::Receiver<OverlayEvent>,
        tls: Option<tls::TlsSettings>,
        serve: grove_listen::ServeConfig,
    ) -> Result<Self, StartError> {
        let metrics = metrics::Metrics::new();
        let homes = Arc::new(homes::Homes::new(
            hs.storage.clone(),
            metrics.clone(),
            hs.config.server_name.clone(),
        ));
        let mut client = client::Client::new(
            overlay.clone(),
            hs.key.clone(),
            hs.config.server_name.clone(),
        )
        .with_homes(homes.clone());
        let https_listener = match &tls {
            Some(settings) => {
                client = client.with_tls(tls::client_config(&settings.extra_roots)?);
                let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(settings)?);
                let listener = bind(settings.listen)?;
                Some((listener, acceptor))
            }
            None => None,
        };
        let sender = sender::Sender::new(hs.clone(), client.clone(), metrics.clone());
        let ctx = Arc::new(Ctx {
            hs: hs.clone(),
            keys: keys::KeyRing::new(client.clone(), hs.storage.clone(), homes.clone()),
            client,
            sender: sender.clone(),
            metrics,
            key_claims: limits::RateLimiter::new(hs.config.remote_limits.key_claims_per_minute),
            invites: limits::RateLimiter::new(hs.config.remote_limits.invites_per_minute),
            inbound_origins: Default::default(),
        });
        let listener = overlay
            .listen(client::ALPN)
            .map_err(|e| StartError::Listen(e.to_string()))?;
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(inbound::serve(
            listener,
            routes::router(ctx.clone()),
            serve.clone(),
            ctx.metrics.clone(),
        )));
        let mut https_addr = None;
        if let Some((listener, acceptor)) = https_listener {
            https_addr = listener.local_addr().ok();
            tasks.push(tokio::spawn(inbound::serve_tls(
                listener,
                acceptor,
                routes::router(ctx.clone()),
                serve,
                ctx.metrics.clone(),
            )));
        }
        tasks.push(sender.start());
        let watcher = sender.clone();
        let sessions = ctx.client.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let key = match event {
                    OverlayEvent::NodeReachable(key) | OverlayEvent::PeerUp { key, .. } => key,
                    OverlayEvent::PeerDown { key, .. } => {
                        // A session over a link that went down may be dead: open afresh.
                        sessions.forget(&key).await;
                        continue;
                    }
                    _ => continue,
                };
                if let Ok(name) = ServerName::parse(key.to_hex()) {
                    watcher.reachable(&name);
                }
                for home in homes.homes_served_by(&key) {
                    watcher.reachable(&home);
                }
            }
        }));
        hs.remote.install(Arc::new(remote::RemoteRooms::new(&ctx)));
        hs.e2ee
            .remote()
            .install(Arc::new(e2ee::FederatedKeys::new(&ctx)));
        tasks.push(tokio::spawn(e2ee::announce_key_changes(Arc::downgrade(
            &ctx,
        ))));
        tasks.push(tokio::spawn(presence::announce_presence(Arc::downgrade(
            &ctx,
        ))));
        tasks.push(tokio::spawn(homes::share_forever(
            Arc::downgrade(&ctx),
            grove_overlay::tls::keys::NodeKey::from_bytes(hs.key.public_bytes()),
        )));
        tasks.push(tokio::spawn(homes::publish_forever(
            Arc::downgrade(&ctx),
            overlay,
            grove_overlay::identity::NodeKeypair::from_seed(hs.key.seed()),
        )));
        Ok(Self {
            ctx,
            tasks,
            https_addr,
        })
    }

    /// The address of the HTTPS listener, when there is one.
    pub fn https_addr(&self) -> Option<std::net::SocketAddr> {
        self.https_addr
    }

    /// The shared context (for tests and embedding).
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Stops every federation task.
    pub async fn shutdown(self) {
        self.ctx.sender.stop();
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Calls `step` with each new range `(from, upto]` of the node's stream in which a write
/// touched `kind`, as commits arrive (or every `idle` at least), until federation stops. A
/// range whose step fails is offered again with the next one.
pub(crate) async fn follow_stream(
    ctx: Weak<Ctx>,
    idle: Duration,
    kind: grove_server::storage::Change,
    mut step: impl AsyncFnMut(&Arc<Ctx>, StreamPosition, StreamPosition) -> Result<(), String>,
) {
    let Some(mut cursor) = ctx.upgrade().map(|c| c.hs.notifier.current()) else {
        return;
    };
    loop {
        let notifier = match ctx.upgrade() {
            Some(c) => c.hs.notifier.clone(),
            None => return,
        };
        notifier.wait_beyond(cursor, idle).await;
        let Some(ctx) = ctx.upgrade() else { return };
        let upto = ctx.hs.notifier.current();
        if upto <= cursor {
            continue;
        }
        // Most positions are messages: a step whose kind no write touched would read nothing.
        if !ctx.hs.storage.changed_since(kind, cursor) {
            cursor = upto;
            continue;
        }
        match step(&ctx, cursor, upto).await {
            Ok(()) => cursor = upto,
            Err(e) => debug!(error = %e, "following the stream"),
        }
    }
}
