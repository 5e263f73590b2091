//! `grove::Node`: start a whole node in-process and stop it again.
//!
//! ```no_run
//! # async fn run() -> Result<(), grove::NodeError> {
//! let node = grove::Node::builder().data_dir("/tmp/grove").start().await?;
//! println!("{} at {}", node.server_name(), node.client_url());
//! node.shutdown().await;
//! # Ok(()) }
//! ```

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use grove_clientapi::{AppState, Limits};
use grove_overlay::{
    discovery::DiscoveryConfig,
    driver::{Config as OverlayConfig, Overlay, OverlayHandle, RouterCore},
    tls::keys::NodeSecret,
};
use grove_server::{Homeserver, NodeKey, ServerConfig, config::Registration};
use ruma::{OwnedServerName, ServerName};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::info;

use crate::{
    config::{Config, RegistrationMode},
    identity::{
        DirKeys, HOME_KEY_FILE, IdentityError, IdentityInfo, NODE_KEY_FILE, ensure_document,
    },
};

/// How long a stopping node lets in-flight requests (long-polls included) finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory could not be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A configured value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The client API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The overlay could not start (its UDP address is unusable, most often).
    #[error("overlay on {addr}: {message}")]
    Overlay {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
    /// The homeserver core failed to open (key, database, migrations).
    #[error("{0}")]
    Server(#[from] grove_server::Error),
    /// The home key, node key or replica document could not be read or made.
    #[error("{0}")]
    Identity(#[from] IdentityError),
}

/// Builds a [`Node`]; every setting has a working default.
#[derive(Debug, Clone, Default)]
pub struct NodeBuilder {
    config: Config,
}

impl NodeBuilder {
    /// Starts from a whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The directory for the node key and the SQLite database.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// The address of the client API (`127.0.0.1:0` picks a free port).
    pub fn client_listen(mut self, addr: SocketAddr) -> Self {
        self.config.client.listen = addr;
        self
    }

    /// Uses this database instead of SQLite in the data directory.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.config.database_url = Some(url.into());
        self
    }

    /// Serves Prometheus metrics at `http://<addr>/metrics`.
    pub fn metrics_listen(mut self, addr: SocketAddr) -> Self {
        self.config.metrics.listen = Some(addr);
        self
    }

    /// The overlay's UDP address (`127.0.0.1:0` picks a free loopback port).
    pub fn overlay_listen(mut self, addr: SocketAddr) -> Self {
        self.config.overlay.listen = addr;
        self
    }

    /// Adds a static peer, `"<64 hex key>@host:port"` or `"host:port"`.
    pub fn static_peer(mut self, peer: impl Into<String>) -> Self {
        self.config.overlay.static_peers.push(peer.into());
        self
    }

    /// Switches LAN discovery by multicast on or off.
    pub fn multicast(mut self, on: bool) -> Self {
        self.config.overlay.multicast = on;
        self
    }

    /// Joins a closed overlay network: only nodes with the same id peer.
    pub fn network_id(mut self, id: impl Into<String>) -> Self {
        self.config.overlay.network_id = Some(id.into());
        self
    }

    /// Switches the overlay (and with it federation) on or off.
    pub fn overlay(mut self, on: bool) -> Self {
        self.config.overlay.enabled = on;
        self
    }

    /// The Matrix server name (by default the home key's hex). A DNS name federates over TLS
    /// and needs [`NodeBuilder::federation_tls`].
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.config.server_name = Some(name.into());
        self
    }

    /// Serves federation over HTTPS on `listen` with the PEM certificate chain and key at
    /// `cert` and `key` (a node with a DNS server name only).
    pub fn federation_tls(
        mut self,
        listen: SocketAddr,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.config.federation.listen = Some(listen);
        self.config.federation.tls_cert = Some(cert.into());
        self.config.federation.tls_key = Some(key.into());
        self
    }

    /// Trusts the CA certificates in this PEM file beside the webpki roots when sending
    /// federation over HTTPS (a node with a DNS server name only).
    pub fn trusted_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.federation.trusted_ca.push(path.into());
        self
    }

    /// The largest media file accepted, in bytes.
    pub fn max_upload_bytes(mut self, bytes: u64) -> Self {
        self.config.media.max_upload_bytes = bytes;
        self
    }

    /// Gives a fresh data directory a home key apart from its node key (see
    /// [`crate::config::IdentityConfig::split_home_key`]).
    pub fn split_home_key(mut self, on: bool) -> Self {
        self.config.identity.split_home_key = on;
        self
    }

    /// Who may register.
    pub fn registration(mut self, mode: RegistrationMode, tokens: Vec<String>) -> Self {
        self.config.registration.mode = mode;
        self.config.registration.tokens = tokens;
        self
    }

    /// Starts the node: data directory, key, database, client API.
    pub async fn start(self) -> Result<Node, NodeError> {
        Node::start(self.config).await
    }
}

/// A running node. Dropping it without [`Node::shutdown`] leaves its tasks running until the
/// runtime stops.
pub struct Node {
    hs: Homeserver,
    client_addr: SocketAddr,
    client_url: String,
    metrics_url: Option<String>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    serve: Option<JoinHandle<()>>,
    overlay: Option<OverlayHandle>,
    federation: Option<grove_federation::Federation>,
}

impl Node {
    /// A builder with defaults: `./grove-data`, SQLite, client API on 127.0.0.1:8008.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    async fn start(config: Config) -> Result<Node, NodeError> {
        // A start that fails leaves no trace: what did not exist before is removed again.
        let fresh = FreshFiles::note(&config.data_dir, config.database_url.is_none());
        let result = Self::start_fresh(config).await;
        if result.is_err() {
            fresh.remove();
        }
        result
    }

    async fn start_fresh(config: Config) -> Result<Node, NodeError> {
        let data_dir = config.data_dir.clone();
        // Bind before opening the database so a busy port fails fast and touches nothing.
        let listener = TcpListener::bind(config.client.listen)
            .await
            .map_err(|source| NodeError::Listen {
                addr: config.client.listen,
                source,
            })?;
        let client_addr = listener.local_addr().map_err(|source| NodeError::Listen {
            addr: config.client.listen,
            source,
        })?;
        let client_url = format!("http://{client_addr}");

        let metrics_listener = match config.metrics.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::Listen { addr, source })?,
            ),
            None => None,
        };

        config.check().map_err(NodeError::Config)?;
        let static_peers = config
            .overlay
            .static_peers
            .iter()
            .map(|p| crate::config::parse_static_peer(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(NodeError::Config)?;
        // Read before the database opens: a missing or bad PEM file fails fast.
        let tls = match (
            &config.federation.listen,
            &config.federation.tls_cert,
            &config.federation.tls_key,
        ) {
            (Some(listen), Some(cert), Some(key)) => Some(
                grove_federation::tls::TlsSettings::from_pem_files(
                    *listen,
                    cert,
                    key,
                    &config.federation.trusted_ca,
                )
                .map_err(|e| NodeError::Config(format!("federation TLS: {e}")))?,
            ),
            _ => None,
        };
        // Only now, with the ports bound and the settings checked, is anything written.
        create_private_dir(&data_dir).map_err(|source| NodeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        // A configured (DNS) name is not a key: such a node has a node key and no home.
        let (key, home, server_name): (NodeKey, Option<DirKeys>, OwnedServerName) =
            match &config.server_name {
                Some(name) => (
                    NodeKey::load_or_create(&data_dir.join(NODE_KEY_FILE))?,
                    None,
                    ServerName::parse(name)
                        .map_err(|e| NodeError::Config(format!("server_name {name:?}: {e}")))?,
                ),
                None => {
                    let keys = DirKeys::open(&data_dir, config.identity.split_home_key)?;
                    let node = NodeKey::from_seed(keys.node.seed())?.with_replica_key_id()?;
                    let name = keys.home.server_name();
                    (node, Some(keys), name)
                }
            };
        let database_url = match &config.database_url {
            Some(url) => url.clone(),
            None => {
                let path = data_dir.join("grove.db");
                make_private_database(&path).map_err(|source| NodeError::DataDir {
                    path: path.clone(),
                    source,
                })?;
                format!("sqlite://{}", path.display())
            }
        };
        let mut server_config = ServerConfig::new(server_name.clone(), database_url);
        server_config.registration = match config.registration.mode {
            RegistrationMode::Open => Registration::Open,
            RegistrationMode::Token => Registration::Token,
            RegistrationMode::Closed => Registration::Closed,
        };
        server_config.registration_tokens = config.registration.tokens.clone();
        server_config.turn_uris = config.turn.uris.clone();
        server_config.turn_shared_secret = config.turn.shared_secret.clone();
        server_config.turn_ttl_secs = config.turn.ttl_secs;
        server_config.media_dir = Some(
            config
                .media
                .dir
                .clone()
                .unwrap_or_else(|| data_dir.join("media")),
        );
        server_config.max_upload_bytes = config.media.max_upload_bytes;
        let limits = &mut server_config.remote_limits;
        if let Some(n) = config.federation.key_claims_per_minute {
            limits.key_claims_per_minute = n;
        }
        if let Some(n) = config.federation.invites_per_minute {
            limits.invites_per_minute = n;
        }
        server_config.rate_limits = config.rate_limits.to_server();

        let seed = key.seed();
        let hs = Homeserver::open(server_config, key).await?;
        if let Some(keys) = &home
            && let Err(e) = ensure_document(&hs.storage, keys).await
        {
            hs.close().await;
            return Err(e.into());
        }
        let (overlay, federation) = if config.overlay.enabled {
            let mut overlay_config =
                OverlayConfig::new(NodeSecret::from_seed(seed), config.overlay.listen);
            overlay_config.static_peers = static_peers;
            overlay_config.network_id = config.overlay.network_id.as_deref().map(network_id);
            if config.overlay.multicast {
                overlay_config.discovery = DiscoveryConfig::enabled();
            }
            let mut core = RouterCore::new(&overlay_config.secret, rand::random(), Instant::now());
            // Homes' documents may be published under the home key by the replicas they list.
            core.router_mut()
                .set_record_policy(Box::new(grove_federation::homes::HomeRecordPolicy));
            let (overlay, events) = match Overlay::start(overlay_config, core) {
                Ok(started) => started,
                Err(e) => {
                    hs.close().await;
                    return Err(NodeError::Overlay {
                        addr: config.overlay.listen,
                        message: e.to_string(),
                    });
                }
            };
            let federation = match grove_federation::Federation::start_with_tls(
                hs.clone(),
                overlay.clone(),
                events,
                tls,
                // Federation's listeners take the client API's connection limits.
                config.client.serve_config(),
            ) {
                Ok(federation) => federation,
                Err(e) => {
                    let _ = overlay.shutdown().await;
                    hs.close().await;
                    return Err(NodeError::Config(format!("federation: {e}")));
                }
            };
            info!(overlay = %overlay.local_addr(), "overlay started");
            (Some(overlay), Some(federation))
        } else {
            (None, None)
        };
        let metrics = grove_clientapi::metrics::Metrics::new();
        let state = AppState {
            hs: hs.clone(),
            limits: Arc::new(Limits {
                max_body_bytes: config.client.max_body_bytes,
                ..Limits::default()
            }),
            public_base_url: config
                .client
                .public_base_url
                .clone()
                .unwrap_or_else(|| client_url.clone())
                .into(),
            metrics: metrics.clone(),
        };
        let app = grove_clientapi::router(state);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut metrics_url = None;
        if let Some(listener) = metrics_listener {
            let addr = listener.local_addr().map_err(|source| NodeError::Listen {
                addr: client_addr,
                source,
            })?;
            metrics_url = Some(format!("http://{addr}/metrics"));
            let sources = Arc::new(MetricSources {
                client: metrics.clone(),
                federation: federation.as_ref().map(|f| f.ctx().metrics.clone()),
                overlay: overlay.clone(),
            });
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let text = sources.encode();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        )
                    }
                }),
            );
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                    .await;
            });
        }
        let mut stop = stop_rx;
        let serve_config = config.client.serve_config();
        let serve = tokio::spawn(grove_clientapi::serve::serve(
            listener,
            app,
            serve_config,
            metrics,
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            },
        ));
        info!(%server_name, %client_url, "node started");
        Ok(Node {
            hs,
            client_addr,
            client_url,
            metrics_url,
            stop: Some(stop_tx),
            serve: Some(serve),
            overlay,
            federation,
        })
    }

    /// The client API base URL, such as `http://127.0.0.1:8008`.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The address the client API is bound to.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The Prometheus metrics URL, when metrics are served.
    pub fn metrics_url(&self) -> Option<&str> {
        self.metrics_url.as_deref()
    }

    /// The node's Matrix server name.
    pub fn server_name(&self) -> &ServerName {
        &self.hs.config.server_name
    }

    /// The server name, this node's key and the newest replica document held (none for a
    /// node with a DNS server name).
    pub async fn identity(&self) -> Result<IdentityInfo, NodeError> {
        let server_name = self.hs.config.server_name.clone();
        let document = if grove_federation::keys::is_hex_name(&server_name) {
            grove_server::home::load(&self.hs.storage, &server_name).await?
        } else {
            None
        };
        Ok(IdentityInfo {
            server_name,
            node_key: self.hs.key.hex(),
            document,
        })
    }

    /// The overlay, when it runs: peer controls, sessions and counters.
    pub fn overlay(&self) -> Option<&OverlayHandle> {
        self.overlay.as_ref()
    }

    /// The overlay's UDP address, when it runs (static peers of other nodes name it).
    pub fn overlay_addr(&self) -> Option<SocketAddr> {
        self.overlay.as_ref().map(|o| o.local_addr())
    }

    /// This node as a static peer for others: `"<hex key>@<overlay address>"`.
    pub fn peer_address(&self) -> Option<String> {
        self.overlay
            .as_ref()
            .map(|o| format!("{}@{}", o.public_key().to_hex(), o.local_addr()))
    }

    /// The address of the HTTPS federation listener, when the node has one.
    pub fn federation_addr(&self) -> Option<SocketAddr> {
        self.federation.as_ref().and_then(|f| f.https_addr())
    }

    /// Federation's shared context (its key ring, homes and metrics), when the overlay runs.
    pub fn federation(&self) -> Option<&Arc<grove_federation::Ctx>> {
        self.federation.as_ref().map(|f| f.ctx())
    }

    /// The homeserver core, for embedding applications that act without HTTP.
    pub fn homeserver(&self) -> &Homeserver {
        &self.hs
    }

    /// Stops accepting requests, lets in-flight ones finish for a short grace period (so
    /// that acknowledged writes are complete), then closes the database.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(mut serve) = self.serve.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut serve)
                .await
                .is_err()
        {
            // Long-polling syncs hold connections open; they have nothing unacknowledged.
            serve.abort();
            let _ = serve.await;
        }
        if let Some(federation) = self.federation.take() {
            federation.shutdown().await;
        }
        if let Some(overlay) = self.overlay.take() {
            let _ = overlay.shutdown().await;
        }
        self.hs.close().await;
        info!("node stopped");
    }
}

/// Paths a starting node may create, noted before it starts: those absent then are removed
/// again when the start fails, so a failed start leaves nothing behind.
struct FreshFiles {
    dir: PathBuf,
    dir_absent: bool,
    absent: Vec<PathBuf>,
}

impl FreshFiles {
    fn note(dir: &Path, sqlite: bool) -> Self {
        let mut candidates = vec![
            dir.join(NODE_KEY_FILE),
            dir.join(HOME_KEY_FILE),
            dir.join("media"),
        ];
        if sqlite {
            for name in ["grove.db", "grove.db-wal", "grove.db-shm"] {
                candidates.push(dir.join(name));
            }
        }
        Self {
            dir: dir.to_owned(),
            dir_absent: !dir.exists(),
            absent: candidates.into_iter().filter(|p| !p.exists()).collect(),
        }
    }

    fn remove(self) {
        if self.dir_absent {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        for path in self.absent {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Creates the data directory readable by its owner only (it holds the node key and, by
/// default, the database).
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the SQLite database file readable by its owner only, before SQLite opens it (its
/// `-wal` and `-shm` files take the database file's mode), and narrows files left wider.
pub(crate) fn make_private_database(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let file = PathBuf::from(file);
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The addresses another node can reach a socket bound to `addr` at: `addr` itself, or when it
/// is the unspecified address, the address of each interface of its family (loopback last).
pub fn reachable_addrs(addr: SocketAddr) -> Vec<SocketAddr> {
    if !addr.ip().is_unspecified() {
        return vec![addr];
    }
    let mut out: Vec<SocketAddr> = interface_ips()
        .into_iter()
        .filter(|ip| ip.is_ipv4() == addr.is_ipv4() || addr.is_ipv6())
        // Link-local IPv6 addresses need a scope to be dialled; they are left out.
        .filter(|ip| match ip {
            std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            std::net::IpAddr::V4(_) => true,
        })
        .map(|ip| SocketAddr::new(ip, addr.port()))
        .collect();
    out.sort_by_key(|a| (a.ip().is_loopback(), a.is_ipv6()));
    out.dedup();
    if out.is_empty() {
        out.push(addr);
    }
    out
}

#[cfg(unix)]
fn interface_ips() -> Vec<std::net::IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifaddr| ifaddr.address)
        .filter_map(|addr| {
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(std::net::IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6()
                    .map(|v6| std::net::IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

#[cfg(not(unix))]
fn interface_ips() -> Vec<std::net::IpAddr> {
    Vec::new()
}

/// The overlay's 32-byte network id from the configured text.
fn network_id(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// Everything a node counts, served as one OpenMetrics text.
struct MetricSources {
    client: Arc<grove_clientapi::metrics::Metrics>,
    federation: Option<Arc<grove_federation::metrics::Metrics>>,
    overlay: Option<OverlayHandle>,
}

impl MetricSources {
    /// The client API's, federation's and the overlay's metrics, with one end-of-text marker.
    fn encode(&self) -> String {
        let mut parts = vec![self.client.encode()];
        parts.extend(self.federation.as_ref().map(|f| f.encode()));
        parts.extend(self.overlay.as_ref().map(|o| o.metrics()));
        let mut out = String::new();
        for part in parts {
            for line in part.lines().filter(|l| *l != "# EOF") {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str("# EOF\n");
        out
    }
}
