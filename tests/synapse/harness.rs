//! The two servers of an interop test: one Synapse for the whole test process, started from
//! the virtualenv that `scripts/synapse-install` makes, and a Grove node per test, both named
//! `localhost:<port>` and federating over TLS with certificates from one test CA.
//!
//! Synapse is shared because it takes seconds to start; every test uses its own users and
//! rooms on it, and its own Grove node (a fresh port, so a fresh destination for Synapse).

use std::{
    fmt::Write as _,
    fs,
    io::Read as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use grove::{Node, config::RegistrationMode};
use grove_server::{storage::Backend, testing::TestDb};
use ruma::serde::{Base64, base64::Standard};

use crate::api::Api;
use crate::support::{TestNode, subscribe};
use crate::tls_ca::{TestCa, free_port};

/// The Python that runs Synapse, unless `GROVE_SYNAPSE_PYTHON` names another.
fn synapse_python() -> PathBuf {
    if let Some(python) = std::env::var_os("GROVE_SYNAPSE_PYTHON") {
        return PathBuf::from(python);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    cache.join("grove-test/synapse/bin/python")
}

/// How long Synapse may take to answer after it was started (it migrates a fresh database).
const STARTUP: Duration = Duration::from_secs(120);

/// The CA and the Synapse that every test of the process shares.
pub(crate) struct Shared {
    /// Signs Synapse's and every Grove node's certificate; trusted by all of them.
    pub(crate) ca: TestCa,
    /// The running Synapse.
    pub(crate) synapse: Synapse,
}

static SHARED: tokio::sync::OnceCell<Shared> = tokio::sync::OnceCell::const_new();

/// The shared CA and Synapse, started by the first test that asks.
pub(crate) async fn shared() -> &'static Shared {
    SHARED
        .get_or_init(async || {
            subscribe();
            let ca = TestCa::new("interop");
            let synapse = tokio::task::spawn_blocking({
                let (chain, key) = ca.leaf("synapse");
                let ca_pem = ca.ca_pem();
                move || Synapse::start(&ca_pem, &chain, &key)
            })
            .await
            .expect("Synapse start task");
            Shared { ca, synapse }
        })
        .await
}

/// A Synapse process on loopback.
pub(crate) struct Synapse {
    server_name: String,
    client_url: String,
    log: PathBuf,
    /// Kept for its stdin: Synapse stops when the pipe closes (see `homeserver.py`).
    _process: Mutex<Child>,
}

impl Synapse {
    /// Starts Synapse with a configuration written for this test process and waits until its
    /// client API answers. Panics, saying what to do, when Synapse is not installed.
    fn start(ca_pem: &Path, chain: &Path, key: &Path) -> Synapse {
        let python = synapse_python();
        assert!(
            python.exists(),
            "Synapse is not installed: {} does not exist. Run scripts/synapse-install (a \
             virtualenv with matrix-synapse from PyPI), or set GROVE_SYNAPSE_PYTHON to a Python \
             that can import synapse.",
            python.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("grove-synapse-")
            .tempdir()
            .expect("Synapse's directory")
            .keep();
        let fed_port = free_port();
        let client_port = free_port();
        let server_name = format!("localhost:{fed_port}");
        let config = dir.join("homeserver.yaml");
        fs::write(
            &config,
            homeserver_yaml(
                &dir,
                &server_name,
                fed_port,
                client_port,
                ca_pem,
                chain,
                key,
            ),
        )
        .expect("homeserver.yaml written");
        fs::write(dir.join("log.yaml"), log_yaml(&dir.join("homeserver.log")))
            .expect("log.yaml written");
        let seed: [u8; 32] = rand::random();
        fs::write(
            dir.join("signing.key"),
            format!(
                "ed25519 a_test {}\n",
                Base64::<Standard>::new(seed.to_vec()).encode()
            ),
        )
        .expect("signing key written");

        let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/synapse/homeserver.py");
        // The CA's directory goes with Synapse's: both outlive every test of the process.
        let ca_dir = ca_pem.parent().expect("CA directory");
        let output = fs::File::create(dir.join("output.txt")).expect("output file");
        let mut process = Command::new(&python)
            .arg(&runner)
            .arg(&config)
            .arg(&dir)
            .arg(ca_dir)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(output.try_clone().expect("output file"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let client_url = format!("http://127.0.0.1:{client_port}");
        let log = dir.join("homeserver.log");
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = process.try_wait().expect("Synapse's status") {
                panic!(
                    "Synapse exited at start ({status}); its output:\n{}\n{}",
                    tail(&dir.join("output.txt")),
                    tail(&log)
                );
            }
            if answers(client_port) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Synapse did not answer on {client_url} within {STARTUP:?}; its log:\n{}",
                tail(&log)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "Synapse {server_name} at {client_url}, log {}",
            log.display()
        );
        Synapse {
            server_name,
            client_url,
            log,
            _process: Mutex::new(process),
        }
    }

    /// The lines of Synapse's log that hold `needle`.
    pub(crate) fn log_lines_with(&self, needle: &str) -> Vec<String> {
        let text = fs::read_to_string(&self.log).expect("Synapse's log");
        text.lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// A client of Synapse's client API, for the calling test's runtime.
    pub(crate) fn api(&self) -> Api {
        Api::new(&self.client_url, &self.server_name)
    }
}

/// Whether something answers HTTP `GET /_matrix/client/versions` on the loopback `port`.
fn answers(port: u16) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        "GET /_matrix/client/versions HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// The last lines of a file, or why it cannot be read.
fn tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Synapse's configuration: TLS federation with the test CA and nothing blocked on loopback,
/// open registration, SQLite, rate limits out of the way, no presence, no outside key servers,
/// no sync answers kept for repeats.
fn homeserver_yaml(
    dir: &Path,
    server_name: &str,
    fed_port: u16,
    client_port: u16,
    ca_pem: &Path,
    chain: &Path,
    key: &Path,
) -> String {
    let d = dir.display();
    let mut yaml = format!(
        r#"server_name: "{server_name}"
pid_file: "{d}/homeserver.pid"
public_baseurl: "http://127.0.0.1:{client_port}/"
listeners:
  - port: {fed_port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: true
    resources:
      - names: [federation]
  - port: {client_port}
    bind_addresses: ["127.0.0.1"]
    type: http
    resources:
      - names: [client]
tls_certificate_path: "{chain}"
tls_private_key_path: "{key}"
federation_verify_certificates: true
federation_custom_ca_list: ["{ca}"]
ip_range_blacklist: []
ip_range_blocklist: []
federation_ip_range_blacklist: []
database:
  name: sqlite3
  args:
    database: "{d}/homeserver.db"
log_config: "{d}/log.yaml"
media_store_path: "{d}/media"
signing_key_path: "{d}/signing.key"
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
enable_registration: true
enable_registration_without_verification: true
macaroon_secret_key: "grove interop macaroons"
form_secret: "grove interop forms"
presence:
  enabled: false
federation_rr_transactions_per_room_per_second: 1000
# A sync asked again with the same token must see what came since, not a remembered answer.
caches:
  sync_response_cache_duration: 0
"#,
        chain = chain.display(),
        key = key.display(),
        ca = ca_pem.display(),
    );
    let many = "{per_second: 1000, burst_count: 10000}";
    for limit in [
        "rc_message",
        "rc_registration",
        "rc_admin_redaction",
        "rc_joins_per_room",
        "rc_key_requests",
        "rc_3pid_validation",
        "rc_room_creation",
        "rc_delayed_event_mgmt",
    ] {
        let _ = writeln!(yaml, "{limit}: {many}");
    }
    let _ = writeln!(
        yaml,
        "rc_login: {{address: {many}, account: {many}, failed_attempts: {many}}}\n\
         rc_joins: {{local: {many}, remote: {many}}}\n\
         rc_invites: {{per_room: {many}, per_user: {many}, per_issuer: {many}}}\n\
         rc_federation: {{window_size: 1000, sleep_limit: 10000, sleep_delay: 1, \
         reject_limit: 10000, concurrent: 100}}"
    );
    yaml
}

/// Python logging for Synapse: INFO and up into one file.
fn log_yaml(file: &Path) -> String {
    format!(
        r#"version: 1
formatters:
  plain:
    format: "%(asctime)s %(name)s %(levelname)s %(message)s"
handlers:
  file:
    class: logging.FileHandler
    formatter: plain
    filename: "{}"
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"#,
        file.display()
    )
}

/// Starts a Grove node named `localhost:<port>` on `backend`, serving federation over TLS with
/// a certificate from the shared CA and trusting that CA.
pub(crate) async fn grove(shared: &Shared, backend: Backend) -> TestNode {
    subscribe();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestDb::new(backend).await;
    let port = free_port();
    let (chain, key) = shared.ca.leaf(&format!("grove-{port}"));
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let node = Node::builder()
        .data_dir(dir.path())
        .database_url(&db.url)
        .client_listen("127.0.0.1:0".parse().expect("addr"))
        .registration(RegistrationMode::Open, Vec::new())
        .overlay_listen("127.0.0.1:0".parse().expect("addr"))
        .multicast(false)
        .server_name(format!("localhost:{port}"))
        .federation_tls(listen, chain, key)
        .trusted_ca(shared.ca.ca_pem())
        .start()
        .await
        .expect("node starts");
    TestNode::running(node, dir, db)
}
