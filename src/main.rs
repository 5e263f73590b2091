//! The `grove` daemon: runs one node until interrupted, or with `identity ...`, manages the
//! home key of its data directory.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::Parser;
use grove::{Config, Custody, Node, config::RegistrationMode};
use tracing_subscriber::EnvFilter;

/// A Matrix homeserver that needs no server room.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file.
    #[arg(long, short, env = "GROVE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the node key and the SQLite database.
    #[arg(long, env = "GROVE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the client API.
    #[arg(long, env = "GROVE_CLIENT_LISTEN", value_parser = parse_addr)]
    client_listen: Option<SocketAddr>,
    /// Base URL announced to clients.
    #[arg(long, env = "GROVE_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,
    /// Matrix server name (default: the home key in hex).
    #[arg(long, env = "GROVE_SERVER_NAME")]
    server_name: Option<String>,
    /// Database URL: sqlite://PATH or postgres://...
    #[arg(long, env = "GROVE_DATABASE_URL")]
    database_url: Option<String>,
    /// Who may register: open, token or closed.
    #[arg(long, env = "GROVE_REGISTRATION")]
    registration: Option<RegistrationMode>,
    /// Registration token (repeatable; comma-separated in the environment).
    #[arg(
        long = "registration-token",
        env = "GROVE_REGISTRATION_TOKENS",
        value_delimiter = ','
    )]
    registration_tokens: Vec<String>,
    /// Whether to join the overlay at all: true or false.
    #[arg(long, env = "GROVE_OVERLAY")]
    overlay: Option<bool>,
    /// UDP address of the overlay (default 0.0.0.0:60615).
    #[arg(long, env = "GROVE_OVERLAY_LISTEN", value_parser = parse_addr)]
    overlay_listen: Option<SocketAddr>,
    /// Static peer, `<hex key>@host:port` or `host:port` (repeatable; comma-separated in the
    /// environment).
    #[arg(
        long = "static-peer",
        env = "GROVE_STATIC_PEERS",
        value_delimiter = ','
    )]
    static_peers: Vec<String>,
    /// LAN discovery by multicast: true or false.
    #[arg(long, env = "GROVE_MULTICAST")]
    multicast: Option<bool>,
    /// Closed overlay network id: only nodes with the same id peer.
    #[arg(long, env = "GROVE_NETWORK_ID")]
    network_id: Option<String>,
    /// Where to serve Prometheus metrics (`GET /metrics`); none by default.
    #[arg(long, env = "GROVE_METRICS_LISTEN", value_parser = parse_addr)]
    metrics_listen: Option<SocketAddr>,
    /// Directory for media files (default: `media` in the data directory).
    #[arg(long, env = "GROVE_MEDIA_DIR")]
    media_dir: Option<PathBuf>,
    /// Largest media file accepted, in bytes (default 52428800, 50 MiB).
    #[arg(long, env = "GROVE_MAX_UPLOAD_BYTES")]
    max_upload_bytes: Option<u64>,
    /// One-time keys one remote server may claim per minute, per device (default 60).
    #[arg(long, env = "GROVE_FEDERATION_KEY_CLAIMS_PER_MINUTE")]
    federation_key_claims_per_minute: Option<u32>,
    /// Invites one remote server may send per minute (default 20).
    #[arg(long, env = "GROVE_FEDERATION_INVITES_PER_MINUTE")]
    federation_invites_per_minute: Option<u32>,
    /// HTTPS federation listener, such as 0.0.0.0:8448 (DNS server names only).
    #[arg(long, env = "GROVE_FEDERATION_LISTEN", value_parser = parse_addr)]
    federation_listen: Option<SocketAddr>,
    /// Certificate chain PEM for the server name (DNS server names only).
    #[arg(long, env = "GROVE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Private key PEM of the certificate (DNS server names only).
    #[arg(long, env = "GROVE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Extra trusted CA certificate PEM file (repeatable; comma-separated in the environment;
    /// DNS server names only).
    #[arg(long = "trusted-ca", env = "GROVE_TRUSTED_CA", value_delimiter = ',')]
    trusted_ca: Vec<PathBuf>,
    /// Seconds a client may take to send a request head (default 10).
    #[arg(long, env = "GROVE_HEADER_TIMEOUT_SECS")]
    header_timeout_secs: Option<u64>,
    /// Seconds a request body may go without a byte arriving (default 30).
    #[arg(long, env = "GROVE_BODY_TIMEOUT_SECS")]
    body_timeout_secs: Option<u64>,
    /// Seconds a keep-alive connection may stay idle (default 60).
    #[arg(long, env = "GROVE_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Most client connections open at once (default 4096).
    #[arg(long, env = "GROVE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Failed logins one account or address may make at once (default 10).
    #[arg(long, env = "GROVE_LOGIN_BURST")]
    login_burst: Option<u32>,
    /// Failed logins regained per second (default 0.5).
    #[arg(long, env = "GROVE_LOGIN_PER_SECOND")]
    login_per_second: Option<f64>,
    /// Registration requests one address may make at once (default 60).
    #[arg(long, env = "GROVE_REGISTER_BURST")]
    register_burst: Option<u32>,
    /// Registration requests regained per second (default 1).
    #[arg(long, env = "GROVE_REGISTER_PER_SECOND")]
    register_per_second: Option<f64>,
    /// Log filter, such as `info` or `grove=debug` (by default the state resolution library
    /// logs only warnings: it reports every passing auth check at info).
    #[arg(long, env = "GROVE_LOG", default_value = "info,ruma_state_res=warn")]
    log: String,
    /// A fresh data directory gets a home key apart from its node key: true or false
    /// (default false; such a node does not federate over the overlay yet).
    #[arg(long, env = "GROVE_SPLIT_HOME_KEY")]
    split_home_key: Option<bool>,
    /// Without a command the node runs.
    #[command(subcommand)]
    command: Option<Command>,
}

/// What to do instead of running the node.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The home key and the replicas serving it.
    #[command(subcommand)]
    Identity(IdentityCommand),
}

/// Custody of the home key. Passphrases come from `GROVE_PASSPHRASE` or the terminal.
#[derive(Debug, clap::Subcommand)]
enum IdentityCommand {
    /// Prints the server name, this node's key and the replicas of the home.
    Show,
    /// Writes the home key and its replica document to FILE, encrypted with a passphrase.
    Export {
        /// The file to write (it must not exist).
        file: PathBuf,
    },
    /// Makes this data directory a new replica of the home exported in FILE.
    Import {
        /// An export file.
        file: PathBuf,
    },
    /// Makes or recovers a home from a passphrase alone (five random words or stronger).
    FromPassphrase,
    /// Stops vouching for a replica: a new document without it, its key revoked from now.
    Revoke {
        /// The replica's node key, 64 hex characters.
        node_key: String,
    },
}

fn main() -> ExitCode {
    let mut args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("grove: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = match EnvFilter::try_new(&args.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("grove: invalid --log filter {:?}: {e}", args.log);
            return ExitCode::from(2);
        }
    };
    // Logs go to stderr so that stdout carries only what the node prints for its user.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    let command = args.command.take();
    let config = match load_config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("grove: {}", error_line(&e));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("grove: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match command {
        None => runtime.block_on(run(config)),
        Some(Command::Identity(command)) => runtime.block_on(identity(config, command)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grove: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.client_listen {
        config.client.listen = listen;
    }
    if let Some(url) = args.public_base_url {
        config.client.public_base_url = Some(url);
    }
    if let Some(name) = args.server_name {
        config.server_name = Some(name);
    }
    if let Some(url) = args.database_url {
        config.database_url = Some(url);
    }
    if let Some(mode) = args.registration {
        config.registration.mode = mode;
    }
    if !args.registration_tokens.is_empty() {
        config.registration.tokens = args.registration_tokens;
    }
    if let Some(enabled) = args.overlay {
        config.overlay.enabled = enabled;
    }
    if let Some(listen) = args.overlay_listen {
        config.overlay.listen = listen;
    }
    if !args.static_peers.is_empty() {
        config.overlay.static_peers = args.static_peers;
    }
    if let Some(multicast) = args.multicast {
        config.overlay.multicast = multicast;
    }
    if let Some(id) = args.network_id {
        config.overlay.network_id = Some(id);
    }
    if let Some(listen) = args.metrics_listen {
        config.metrics.listen = Some(listen);
    }
    if let Some(dir) = args.media_dir {
        config.media.dir = Some(dir);
    }
    if let Some(split) = args.split_home_key {
        config.identity.split_home_key = split;
    }
    if let Some(bytes) = args.max_upload_bytes {
        config.media.max_upload_bytes = bytes;
    }
    if let Some(n) = args.federation_key_claims_per_minute {
        config.federation.key_claims_per_minute = Some(n);
    }
    if let Some(n) = args.federation_invites_per_minute {
        config.federation.invites_per_minute = Some(n);
    }
    if let Some(listen) = args.federation_listen {
        config.federation.listen = Some(listen);
    }
    if let Some(path) = args.tls_cert {
        config.federation.tls_cert = Some(path);
    }
    if let Some(path) = args.tls_key {
        config.federation.tls_key = Some(path);
    }
    if !args.trusted_ca.is_empty() {
        config.federation.trusted_ca = args.trusted_ca;
    }
    let client = &mut config.client;
    set(&mut client.header_timeout_secs, args.header_timeout_secs);
    set(&mut client.body_timeout_secs, args.body_timeout_secs);
    set(&mut client.idle_timeout_secs, args.idle_timeout_secs);
    set(&mut client.max_connections, args.max_connections);
    let limits = &mut config.rate_limits;
    set(&mut limits.login_burst, args.login_burst);
    set(&mut limits.login_per_second, args.login_per_second);
    set(&mut limits.register_burst, args.register_burst);
    set(&mut limits.register_per_second, args.register_per_second);
    config.check().map_err(anyhow::Error::msg)?;
    if config.registration.mode == RegistrationMode::Token && config.registration.tokens.is_empty()
    {
        anyhow::bail!("registration mode is token but no registration token is configured");
    }
    Ok(config)
}

/// Overrides `slot` with a value given by flag or environment.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    grove::config::parse_addr(text)
}

/// Parses the command line and the environment. A bad value that came from a `GROVE_*`
/// variable is reported under the variable's name: the user set no flag.
fn parse_args() -> Result<Args, String> {
    use clap::{CommandFactory, error::ContextKind};
    let err = match Args::try_parse() {
        Ok(args) => return Ok(args),
        Err(err) => err,
    };
    let Some(arg) = err.get(ContextKind::InvalidArg).map(ToString::to_string) else {
        err.exit();
    };
    let flag = arg.split_whitespace().next().unwrap_or_default();
    let given_as_flag = std::env::args_os().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    let command = Args::command();
    let env = command
        .get_arguments()
        .find(|a| a.get_long().is_some_and(|long| flag == format!("--{long}")))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned());
    match env {
        Some(var) if !given_as_flag && std::env::var_os(&var).is_some() => {
            let value = err
                .get(ContextKind::InvalidValue)
                .map(ToString::to_string)
                .unwrap_or_default();
            let reason = std::error::Error::source(&err)
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            Err(format!(
                "environment variable {var}: invalid value {value:?}{reason}"
            ))
        }
        _ => err.exit(),
    }
}

/// An error and its causes on one line, each cause once: a message that already quotes its
/// cause is not followed by it again.
fn error_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out.replace('\n', " ")
}

async fn run(config: Config) -> anyhow::Result<()> {
    let node = Node::builder().config(config).start().await?;
    println!("Grove is running.");
    println!("  server name: {}", node.server_name());
    println!("  client URL:  {}", node.client_url());
    if let Some(addr) = node.overlay_addr() {
        let addrs: Vec<String> = grove::reachable_addrs(addr)
            .iter()
            .map(ToString::to_string)
            .collect();
        println!("  overlay:     udp {}", addrs.join(", "));
    }
    if let Some(addr) = node.federation_addr() {
        println!("  federation:  https {addr}");
    }
    std::io::Write::flush(&mut std::io::stdout())?;
    shutdown_signal().await;
    node.shutdown().await;
    Ok(())
}

/// Runs one `grove identity` command and prints its outcome.
async fn identity(config: Config, command: IdentityCommand) -> anyhow::Result<()> {
    let custody = Custody::new(&config);
    let info = match command {
        IdentityCommand::Show => custody.show().await?,
        IdentityCommand::Export { file } => {
            let passphrase = passphrase(Confirm::Twice)?;
            let bytes = custody.export(&passphrase).await?;
            write_new_private(&file, &bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            println!("exported the home key to {}", file.display());
            custody.show().await?
        }
        IdentityCommand::Import { file } => {
            let bytes =
                std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let passphrase = passphrase(Confirm::Once)?;
            custody.import(bytes, &passphrase).await?
        }
        IdentityCommand::FromPassphrase => {
            let passphrase = passphrase(Confirm::Twice)?;
            custody.from_passphrase(&passphrase).await?
        }
        IdentityCommand::Revoke { node_key } => custody.revoke(&node_key).await?,
    };
    print!("{info}");
    Ok(())
}

/// Whether a passphrase typed on the terminal is asked for again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirm {
    Once,
    Twice,
}

/// The passphrase from `GROVE_PASSPHRASE`, or else typed on the terminal without echo.
fn passphrase(confirm: Confirm) -> anyhow::Result<String> {
    if let Ok(passphrase) = std::env::var("GROVE_PASSPHRASE") {
        return Ok(passphrase);
    }
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| {
            anyhow::anyhow!(
                "cannot read a passphrase ({e}): set GROVE_PASSPHRASE or use a terminal"
            )
        })
    };
    let first = read("Passphrase: ")?;
    if confirm == Confirm::Twice && read("Passphrase again: ")? != first {
        anyhow::bail!("the passphrases differ");
    }
    Ok(first)
}

/// Writes `bytes` to a new file readable by its owner only.
fn write_new_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
