//! A node's keys and the custody of its home key.
//!
//! A data directory holds two keys: `home.key`, the home key whose public key in hex is the
//! server name, and `node.key`, the node key that is this device's overlay address and signs
//! its events and requests under the replica key ID its home's replica document certifies
//! ([`grove_server::home`]). A directory made before homes existed has only `node.key`: that
//! key becomes its home key too (written as `home.key` at the next start), so its server name
//! stays. A node with a DNS server name has no home and keeps only `node.key`.
//!
//! [`Custody`] is the same set of operations as `grove identity ...`: show, export the home
//! key to a passphrase-encrypted file ([`file`]), import such a file (the directory becomes
//! one more replica of that home), derive a home from a passphrase alone ([`passphrase`]),
//! revoke a replica. It works on the data directory and the database directly, whether or not
//! the node runs.

pub mod file;
pub mod passphrase;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use grove_server::{
    NodeKey, Storage,
    home::{self, DocumentError, HomeKey, Replica, ReplicaDocument},
};
use ruma::{OwnedServerName, ServerName};
use tracing::{debug, info, warn};

use crate::Config;

/// The home key's file in the data directory.
pub const HOME_KEY_FILE: &str = "home.key";
/// The node key's file in the data directory.
pub const NODE_KEY_FILE: &str = "node.key";

/// Why an identity operation failed; every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The export file could not be read or written.
    #[error(transparent)]
    File(#[from] file::FileError),
    /// No home key came from the passphrase.
    #[error(transparent)]
    Passphrase(#[from] passphrase::PassphraseError),
    /// A replica document was refused or could not be made.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The keys or the database failed.
    #[error(transparent)]
    Server(#[from] grove_server::Error),
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory serves another home already.
    #[error("{dir} already serves home {held}, not {offered}")]
    OtherHome {
        /// The data directory.
        dir: PathBuf,
        /// The home it serves.
        held: String,
        /// The home offered.
        offered: String,
    },
    /// The data directory has no keys yet.
    #[error(
        "no identity in {0}: start the node once, import a home or derive one from a passphrase"
    )]
    NoIdentity(PathBuf),
    /// The node's server name is a DNS name, which no home key owns.
    #[error("server name {0} is a DNS name, not a home key")]
    DnsName(String),
    /// No replica document is held for the home.
    #[error("no replica document is held for {0}")]
    NoDocument(String),
    /// The passphrase could not be read.
    #[error("passphrase: {0}")]
    Prompt(String),
}

/// A data directory's home key and node key.
#[derive(Debug)]
pub struct DirKeys {
    /// The home key.
    pub home: HomeKey,
    /// The node key, signing under its replica key ID.
    pub node: NodeKey,
}

impl DirKeys {
    /// The keys in `dir`, writing what is missing: a fresh directory gets a node key, and a
    /// home key that is the node key unless `split` asks for one of its own; a directory made
    /// before homes existed (a node key only) gets its node key as home key, so its server
    /// name stays.
    pub fn open(dir: &Path, split: bool) -> Result<Self, IdentityError> {
        let home_path = dir.join(HOME_KEY_FILE);
        let node_path = dir.join(NODE_KEY_FILE);
        let node = match NodeKey::load(&node_path)? {
            Some(node) => node,
            None => {
                let node = NodeKey::generate()?;
                node.store(&node_path)?;
                if HomeKey::load(&home_path)?.is_none() {
                    let home = if split {
                        HomeKey::generate()
                    } else {
                        HomeKey::from_seed(node.seed())
                    };
                    home.store(&home_path)?;
                    debug!(
                        home = %home.server_name(),
                        split,
                        "fresh data directory: home key and node key made"
                    );
                }
                node
            }
        };
        let home = match HomeKey::load(&home_path)? {
            Some(home) => home,
            None => {
                let home = HomeKey::from_seed(node.seed());
                home.store(&home_path)?;
                info!(
                    server_name = %home.server_name(),
                    "data directory made before home keys: its node key is now also its home \
                     key (home.key), and its server name stays"
                );
                home
            }
        };
        Ok(Self {
            home,
            node: node.with_replica_key_id()?,
        })
    }

    /// The keys in `dir` without writing anything; `None` when it has no node key. A
    /// directory without a home key stands for the home of its node key.
    pub fn read(dir: &Path) -> Result<Option<Self>, IdentityError> {
        let Some(node) = NodeKey::load(&dir.join(NODE_KEY_FILE))? else {
            return Ok(None);
        };
        let home = match HomeKey::load(&dir.join(HOME_KEY_FILE))? {
            Some(home) => home,
            None => HomeKey::from_seed(node.seed()),
        };
        Ok(Some(Self {
            home,
            node: node.with_replica_key_id()?,
        }))
    }

    /// This node's entry in its home's replica document.
    pub fn replica(&self) -> Replica {
        Replica::for_node(&self.node)
    }
}

/// Makes sure a replica document of `keys`' home is held: the first one, listing this node,
/// when none is. A held document that does not list this node is left as it is (the node was
/// revoked, or is not added yet), with a warning.
pub async fn ensure_document(
    storage: &Storage,
    keys: &DirKeys,
) -> Result<ReplicaDocument, IdentityError> {
    let name = keys.home.server_name();
    if let Some(held) = home::load(storage, &name).await? {
        if held.replica(&keys.node.hex()) != Some(&keys.replica()) {
            warn!(
                node = %keys.node.hex(),
                version = held.version(),
                "this node is not a replica in its home's replica document"
            );
        }
        return Ok(held);
    }
    let doc = ReplicaDocument::first(&keys.home, keys.replica(), now_ms())?;
    home::store(storage, &doc).await?;
    debug!(
        version = doc.version(),
        "first replica document of the home"
    );
    Ok(doc)
}

/// What `grove identity show` prints.
#[derive(Debug, Clone)]
pub struct IdentityInfo {
    /// The Matrix server name.
    pub server_name: OwnedServerName,
    /// This node's key, hex.
    pub node_key: String,
    /// The newest replica document held (none for a DNS-named node).
    pub document: Option<ReplicaDocument>,
}

impl fmt::Display for IdentityInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "server name: {}", self.server_name)?;
        writeln!(f, "this node:   {}", self.node_key)?;
        let Some(doc) = &self.document else {
            return writeln!(f, "replicas:    (no replica document)");
        };
        writeln!(
            f,
            "document:    version {}, issued at {} ms",
            doc.version(),
            doc.issued_ts()
        )?;
        for replica in doc.replicas() {
            let this = if replica.node_key == self.node_key {
                "  (this node)"
            } else {
                ""
            };
            writeln!(
                f,
                "replica:     {} {}{this}",
                replica.node_key, replica.key_id
            )?;
        }
        for revoked in doc.revoked() {
            writeln!(
                f,
                "revoked:     {} {} since {} ms",
                revoked.key_id, revoked.key, revoked.expired_ts
            )?;
        }
        Ok(())
    }
}

/// The identity operations on one data directory and its database: what
/// `grove identity ...` does, for embedding applications.
#[derive(Debug, Clone)]
pub struct Custody {
    data_dir: PathBuf,
    database_url: Option<String>,
    server_name: Option<String>,
}

impl Custody {
    /// The operations on the data directory and database `config` names.
    pub fn new(config: &Config) -> Self {
        Self {
            data_dir: config.data_dir.clone(),
            database_url: config.database_url.clone(),
            server_name: config.server_name.clone(),
        }
    }

    /// The server name, this node's key and the replicas of the held document.
    pub async fn show(&self) -> Result<IdentityInfo, IdentityError> {
        let keys = DirKeys::read(&self.data_dir)?.ok_or(IdentityError::NoIdentity(self.dir()))?;
        if let Some(name) = &self.server_name {
            let server_name =
                ServerName::parse(name).map_err(|_| IdentityError::DnsName(name.clone()))?;
            return Ok(IdentityInfo {
                server_name,
                node_key: keys.node.hex(),
                document: None,
            });
        }
        let storage = self.storage().await?;
        let document = home::load(&storage, &keys.home.server_name()).await;
        storage.close().await;
        Ok(IdentityInfo {
            server_name: keys.home.server_name(),
            node_key: keys.node.hex(),
            document: document?,
        })
    }

    /// The export file of the home key and its current document, encrypted with
    /// `passphrase` (see [`file`]).
    pub async fn export(&self, passphrase: &str) -> Result<Vec<u8>, IdentityError> {
        self.no_dns_name()?;
        let keys = DirKeys::read(&self.data_dir)?.ok_or(IdentityError::NoIdentity(self.dir()))?;
        let storage = self.storage().await?;
        let document = ensure_document(&storage, &keys).await;
        storage.close().await;
        let document = document?;
        let passphrase = passphrase.to_owned();
        blocking(move || file::seal(&keys.home, &document, &passphrase).map_err(Into::into)).await
    }

    /// Makes this data directory a replica of the home in the export file `bytes`: it keeps
    /// (or gets) a node key of its own, and a document listing it, signed with the imported
    /// key, becomes the newest it holds.
    pub async fn import(
        &self,
        bytes: Vec<u8>,
        passphrase: &str,
    ) -> Result<IdentityInfo, IdentityError> {
        self.no_dns_name()?;
        let passphrase = passphrase.to_owned();
        let (home, document) =
            blocking(move || file::open(&bytes, &passphrase).map_err(Into::into)).await?;
        self.adopt(home, Some(document)).await
    }

    /// Makes this data directory a replica of the home a passphrase stands for (see
    /// [`passphrase`]); refused when the passphrase is too weak.
    pub async fn from_passphrase(&self, phrase: &str) -> Result<IdentityInfo, IdentityError> {
        self.no_dns_name()?;
        let phrase = phrase.to_owned();
        let home =
            blocking(move || passphrase::derive_home_key(&phrase).map_err(Into::into)).await?;
        self.adopt(home, None).await
    }

    /// Issues a document without the replica whose node key is `node_key` (hex); its signing
    /// key is listed as revoked from now on.
    pub async fn revoke(&self, node_key: &str) -> Result<IdentityInfo, IdentityError> {
        self.no_dns_name()?;
        let keys = DirKeys::read(&self.data_dir)?.ok_or(IdentityError::NoIdentity(self.dir()))?;
        let name = keys.home.server_name();
        let storage = self.storage().await?;
        let result = async {
            let held = home::load(&storage, &name)
                .await?
                .ok_or_else(|| IdentityError::NoDocument(name.to_string()))?;
            let next = held.without_replica(&keys.home, node_key, now_ms())?;
            home::store(&storage, &next).await?;
            info!(node = node_key, version = next.version(), "replica revoked");
            Ok::<_, IdentityError>(next)
        }
        .await;
        storage.close().await;
        Ok(IdentityInfo {
            server_name: name,
            node_key: keys.node.hex(),
            document: Some(result?),
        })
    }

    /// Makes the data directory serve `home`, adding this node to the newest of the held
    /// document and `offered` (or to a first document when there is neither).
    async fn adopt(
        &self,
        home: HomeKey,
        offered: Option<ReplicaDocument>,
    ) -> Result<IdentityInfo, IdentityError> {
        let name = home.server_name();
        if let Some(keys) = DirKeys::read(&self.data_dir)?
            && keys.home.public_bytes() != home.public_bytes()
        {
            return Err(IdentityError::OtherHome {
                dir: self.dir(),
                held: keys.home.server_name().to_string(),
                offered: name.to_string(),
            });
        }
        crate::node::create_private_dir(&self.data_dir).map_err(|source| IdentityError::Io {
            path: self.dir(),
            source,
        })?;
        let home_path = self.data_dir.join(HOME_KEY_FILE);
        if HomeKey::load(&home_path)?.is_none() {
            home.store(&home_path)?;
        }
        let node_path = self.data_dir.join(NODE_KEY_FILE);
        if NodeKey::load(&node_path)?.is_none() {
            NodeKey::generate()?.store(&node_path)?;
        }
        let keys = DirKeys::read(&self.data_dir)?.ok_or(IdentityError::NoIdentity(self.dir()))?;
        let storage = self.storage().await?;
        let result = async {
            let held = home::load(&storage, &name).await?;
            let newest = match (held, offered) {
                (Some(a), Some(b)) => Some(if a.version() >= b.version() { a } else { b }),
                (a, b) => a.or(b),
            };
            let replica = keys.replica();
            let doc = match newest {
                None => ReplicaDocument::first(&keys.home, replica, now_ms())?,
                Some(doc) if doc.replica(&replica.node_key) == Some(&replica) => doc,
                Some(doc) => doc.with_replica(&keys.home, replica, now_ms())?,
            };
            home::store(&storage, &doc).await?;
            info!(home = %name, version = doc.version(), "this data directory serves the home");
            Ok::<_, IdentityError>(doc)
        }
        .await;
        storage.close().await;
        Ok(IdentityInfo {
            server_name: name,
            node_key: keys.node.hex(),
            document: Some(result?),
        })
    }

    fn no_dns_name(&self) -> Result<(), IdentityError> {
        match &self.server_name {
            Some(name) => Err(IdentityError::DnsName(name.clone())),
            None => Ok(()),
        }
    }

    fn dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// The node's database, as the node opens it.
    async fn storage(&self) -> Result<Storage, IdentityError> {
        let url = match &self.database_url {
            Some(url) => url.clone(),
            None => {
                crate::node::create_private_dir(&self.data_dir).map_err(|source| {
                    IdentityError::Io {
                        path: self.dir(),
                        source,
                    }
                })?;
                let path = self.data_dir.join("grove.db");
                crate::node::make_private_database(&path).map_err(|source| IdentityError::Io {
                    path: path.clone(),
                    source,
                })?;
                format!("sqlite://{}", path.display())
            }
        };
        Ok(Storage::connect(&url).await?)
    }
}

/// Runs CPU-heavy work (Argon2id) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, IdentityError> + Send + 'static,
) -> Result<T, IdentityError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| grove_server::Error::Internal(format!("key derivation stopped: {e}")))?
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
