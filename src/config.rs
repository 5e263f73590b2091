//! The node's configuration: a TOML file, overridden by `GROVE_*` environment variables and
//! command-line flags. Unknown keys and bad values are errors, reported in one line.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

/// Where the client API listens unless told otherwise.
pub const DEFAULT_CLIENT_LISTEN: &str = "127.0.0.1:8008";
/// The data directory used when none is configured, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "grove-data";

/// Who may register accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Anyone who can reach the client API.
    #[default]
    Open,
    /// Holders of a registration token.
    Token,
    /// Nobody.
    Closed,
}

impl std::str::FromStr for RegistrationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Self::Open),
            "token" => Ok(Self::Token),
            "closed" => Ok(Self::Closed),
            other => Err(format!(
                "registration must be open, token or closed, not {other:?}"
            )),
        }
    }
}

/// The whole configuration of a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The directory holding the node key and the SQLite database.
    pub data_dir: PathBuf,
    /// The Matrix server name; by default the node key's hex form.
    pub server_name: Option<String>,
    /// `postgres://...` or `sqlite://...`; by default `grove.db` in the data directory.
    pub database_url: Option<String>,
    /// Client API settings.
    pub client: ClientConfig,
    /// Registration settings.
    pub registration: RegistrationConfig,
    /// TURN settings handed to clients.
    pub turn: TurnConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// The peer-to-peer overlay that carries federation.
    pub overlay: OverlayConfig,
    /// The media repository.
    pub media: MediaConfig,
    /// Federation over ordinary TLS (a node with a DNS server name only).
    pub federation: FederationConfig,
    /// Rate limits of logins and registrations.
    pub rate_limits: RateLimitConfig,
    /// The home key and the node key.
    pub identity: IdentityConfig,
}

/// How a fresh data directory gets its keys.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Whether a fresh data directory gets a home key apart from its node key (off by
    /// default). Until federation finds a home's replicas through its replica document, a
    /// node whose server name is not its own overlay key cannot federate over the overlay, so
    /// this is for trying replicas out; with it off, a fresh node's home key is its node key.
    /// A data directory that already has its keys keeps them either way.
    pub split_home_key: bool,
}

/// Federation over HTTPS, for a node whose server name is a DNS name (a hex-named node
/// federates over the overlay and uses none of this).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// The TCP address of the HTTPS federation listener, such as `0.0.0.0:8448`.
    #[serde(deserialize_with = "de_opt_addr")]
    pub listen: Option<SocketAddr>,
    /// The certificate chain (PEM, leaf first) for the server name.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM files) trusted beside the webpki roots.
    pub trusted_ca: Vec<PathBuf>,
    /// One-time keys one remote server may claim per minute, counted per device (default 60;
    /// any server name).
    pub key_claims_per_minute: Option<u32>,
    /// Invites one remote server may send per minute (default 20; any server name).
    pub invites_per_minute: Option<u32>,
}

impl FederationConfig {
    /// Whether any TLS option is set.
    fn any(&self) -> bool {
        self.listen.is_some()
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
            || !self.trusted_ca.is_empty()
    }
}

/// Whether a server name is an overlay key (64 lower-case hex) rather than a DNS name.
fn is_hex_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Media repository settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// The directory holding media files; by default `media` in the data directory.
    pub dir: Option<PathBuf>,
    /// The largest file accepted, uploaded or fetched from another server, in bytes.
    pub max_upload_bytes: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_upload_bytes: grove_server::config::DEFAULT_MAX_UPLOAD_BYTES,
        }
    }
}

/// The UDP port of the overlay unless told otherwise, so static peers can name it.
pub const DEFAULT_OVERLAY_PORT: u16 = 60615;

/// Overlay settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverlayConfig {
    /// Whether the node joins the overlay at all (without it, the node federates with nobody).
    pub enabled: bool,
    /// UDP address for peer links and sessions.
    #[serde(deserialize_with = "de_addr")]
    pub listen: SocketAddr,
    /// Peers to dial and keep dialling: `"<64 hex key>@host:port"` or `"host:port"`.
    pub static_peers: Vec<String>,
    /// LAN discovery by multicast beacons.
    pub multicast: bool,
    /// Closed network: only nodes configured with the same id peer with this one.
    pub network_id: Option<String>,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_OVERLAY_PORT)),
            static_peers: Vec::new(),
            multicast: true,
            network_id: None,
        }
    }
}

/// Parses a static peer, `"<64 hex key>@host:port"` or `"host:port"`; the error is one line.
pub fn parse_static_peer(text: &str) -> Result<grove_overlay::driver::statics::StaticPeer, String> {
    use std::net::ToSocketAddrs;
    let (key, addr) = match text.split_once('@') {
        Some((key, addr)) => {
            let key = grove_overlay::tls::keys::NodeKey::from_hex(key).ok_or_else(|| {
                format!("static peer {text:?}: the key must be 64 hex characters")
            })?;
            (Some(key), addr)
        }
        None => (None, text),
    };
    let addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("static peer {text:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("static peer {text:?}: no address"))?;
    Ok(grove_overlay::driver::statics::StaticPeer { addr, key })
}

/// Parses `host:port`, where the host is an IP address or a name to resolve (an IPv4 address
/// of the name is preferred, as `localhost` is mostly meant as 127.0.0.1); the error is one
/// line.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !text.contains(':') {
        return Err(format!("{text:?} is not host:port (a port is needed)"));
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{text:?}: the name has no address"))
}

fn de_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_addr(&text).map_err(serde::de::Error::custom)
}

fn de_opt_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_addr(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Prometheus metrics settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics`; none (the default) serves no metrics.
    #[serde(deserialize_with = "de_opt_addr")]
    pub listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            server_name: None,
            database_url: None,
            client: ClientConfig::default(),
            registration: RegistrationConfig::default(),
            turn: TurnConfig::default(),
            metrics: MetricsConfig::default(),
            overlay: OverlayConfig::default(),
            media: MediaConfig::default(),
            federation: FederationConfig::default(),
            rate_limits: RateLimitConfig::default(),
            identity: IdentityConfig::default(),
        }
    }
}

/// Client API settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// The address to serve the client API on.
    #[serde(deserialize_with = "de_addr")]
    pub listen: SocketAddr,
    /// The base URL clients are told to use; by default `http://<listen>`.
    pub public_base_url: Option<String>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds a client may take to send a request head, from its first byte.
    pub header_timeout_secs: u64,
    /// Seconds a request body may go without a byte arriving.
    pub body_timeout_secs: u64,
    /// Seconds a keep-alive connection may stay idle between requests.
    pub idle_timeout_secs: u64,
    /// The most client connections open at once; more are answered `503` and closed.
    pub max_connections: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let serve = grove_clientapi::serve::ServeConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            public_base_url: None,
            max_body_bytes: 1024 * 1024,
            header_timeout_secs: serve.header_timeout.as_secs(),
            body_timeout_secs: serve.body_timeout.as_secs(),
            idle_timeout_secs: serve.idle_timeout.as_secs(),
            max_connections: serve.max_connections,
        }
    }
}

impl ClientConfig {
    /// The listener's connection limits.
    pub fn serve_config(&self) -> grove_clientapi::serve::ServeConfig {
        grove_clientapi::serve::ServeConfig {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections,
        }
    }
}

/// Rate limits (token buckets: a burst, then a steady rate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Failed logins one account (or one address other than loopback) may make at once.
    pub login_burst: u32,
    /// Failed logins regained per second.
    pub login_per_second: f64,
    /// Registration requests one address may make at once (a registration takes two).
    pub register_burst: u32,
    /// Registration requests regained per second.
    pub register_per_second: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let d = grove_server::config::RateLimits::default();
        Self {
            login_burst: d.login_burst,
            login_per_second: d.login_per_second,
            register_burst: d.register_burst,
            register_per_second: d.register_per_second,
        }
    }
}

impl RateLimitConfig {
    /// The limits as the server core takes them.
    pub fn to_server(&self) -> grove_server::config::RateLimits {
        grove_server::config::RateLimits {
            login_burst: self.login_burst,
            login_per_second: self.login_per_second,
            register_burst: self.register_burst,
            register_per_second: self.register_per_second,
        }
    }
}

/// Registration settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Who may register.
    pub mode: RegistrationMode,
    /// Tokens accepted when `mode = "token"`.
    pub tokens: Vec<String>,
}

/// TURN settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// TURN URIs; none means `voip/turnServer` answers with an empty object.
    pub uris: Vec<String>,
    /// Shared secret for time-limited credentials.
    pub shared_secret: Option<String>,
    /// Credential lifetime in seconds.
    pub ttl_secs: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            uris: Vec::new(),
            shared_secret: None,
            ttl_secs: 86_400,
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid, or has an unknown key or a bad value.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, on one line.
        message: String,
    },
}

impl Config {
    /// Reads a TOML configuration file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error is one line naming the offending line.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let message = e.message().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
                    format!("line {line_no} ({line}): {}", message.trim())
                }
                None => message.trim().to_owned(),
            }
        })?;
        config.check()?;
        Ok(config)
    }

    /// Checks values that parse but cannot be used; the error is one line.
    pub fn check(&self) -> Result<(), String> {
        for peer in &self.overlay.static_peers {
            parse_static_peer(peer).map(drop)?;
        }
        if self.overlay.network_id.as_deref() == Some("") {
            return Err("overlay network_id must not be empty".into());
        }
        if self.media.max_upload_bytes == 0 {
            return Err("media max_upload_bytes must be at least 1".into());
        }
        if self.federation.key_claims_per_minute == Some(0)
            || self.federation.invites_per_minute == Some(0)
        {
            return Err(
                "federation key_claims_per_minute and invites_per_minute must be at least 1".into(),
            );
        }
        let client = &self.client;
        for (name, secs) in [
            ("header_timeout_secs", client.header_timeout_secs),
            ("body_timeout_secs", client.body_timeout_secs),
            ("idle_timeout_secs", client.idle_timeout_secs),
        ] {
            if secs == 0 {
                return Err(format!("client {name} must be at least 1"));
            }
        }
        if client.max_connections == 0 {
            return Err("client max_connections must be at least 1".into());
        }
        let limits = &self.rate_limits;
        if limits.login_burst == 0 || limits.register_burst == 0 {
            return Err("rate_limits login_burst and register_burst must be at least 1".into());
        }
        let positive = |rate: f64| rate > 0.0 && rate.is_finite();
        if !positive(limits.login_per_second) || !positive(limits.register_per_second) {
            return Err(
                "rate_limits login_per_second and register_per_second must be above 0".into(),
            );
        }
        self.check_federation()
    }

    /// A DNS-named node that federates needs its TLS listener, certificate and key; a
    /// hex-named one takes none of them.
    fn check_federation(&self) -> Result<(), String> {
        let fed = &self.federation;
        let dns_name = self.server_name.as_deref().filter(|n| !is_hex_name(n));
        let Some(name) = dns_name else {
            if fed.any() {
                return Err(
                    "[federation] listen, tls_cert, tls_key and trusted_ca are only for a \
                            node whose server_name is a DNS name; this node is named by its key"
                        .into(),
                );
            }
            return Ok(());
        };
        if !self.overlay.enabled {
            if fed.any() {
                return Err(
                    "[federation] needs [overlay] enabled = true: federation runs with \
                            the overlay (its multicast and static peers may stay off)"
                        .into(),
                );
            }
            // No federation at all: a local-only node may take any name.
            return Ok(());
        }
        let mut missing = Vec::new();
        if fed.listen.is_none() {
            missing.push("listen");
        }
        if fed.tls_cert.is_none() {
            missing.push("tls_cert");
        }
        if fed.tls_key.is_none() {
            missing.push("tls_key");
        }
        if !missing.is_empty() {
            return Err(format!(
                "server_name {name:?} is a DNS name, which federates over TLS: set [federation] {}",
                missing.join(", ")
            ));
        }
        Ok(())
    }
}
