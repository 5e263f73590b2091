//! Ordinary TLS for a node with a DNS server name: its certificate and key, the roots it trusts
//! (the webpki roots plus any extra CA files), and the rustls configurations built from them.
//!
//! Hex-named nodes never use any of this: their federation runs over overlay sessions pinned
//! to their keys.

use std::{net::SocketAddr, path::Path, sync::Arc};

pub use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{RootCertStore, crypto::CryptoProvider, pki_types::pem::PemObject};

/// The ALPN offered and accepted on federation TLS connections.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing usable.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the certificate chain or key.
    #[error("certificate or key refused: {0}")]
    Rustls(String),
    /// The HTTPS listener could not be bound.
    #[error("cannot listen for federation TLS on {addr}: {message}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
}

/// What a DNS-named node needs to serve and send federation over HTTPS.
#[derive(Debug)]
pub struct TlsSettings {
    /// Where to accept federation over HTTPS.
    pub listen: SocketAddr,
    /// Our certificate chain, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The private key of the leaf.
    pub key: PrivateKeyDer<'static>,
    /// CAs trusted beside the webpki roots (a private deployment's or a test's own CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl TlsSettings {
    /// Reads the chain, key and extra CA PEM files.
    pub fn from_pem_files(
        listen: SocketAddr,
        cert_chain: &Path,
        key: &Path,
        extra_roots: &[impl AsRef<Path>],
    ) -> Result<Self, TlsError> {
        let mut roots = Vec::new();
        for path in extra_roots {
            roots.extend(certificates(path.as_ref())?);
        }
        Ok(Self {
            listen,
            cert_chain: certificates(cert_chain)?,
            key: PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
                path: key.display().to_string(),
                message: format!("no usable private key: {e}"),
            })?,
            extra_roots: roots,
        })
    }
}

/// Every certificate in a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |message: String| TlsError::Pem {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no certificate in the file".into()));
    }
    Ok(certs)
}

/// Every certificate in PEM text (at least one).
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |message: String| TlsError::Pem {
        path: "PEM text".into(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no certificate".into()));
    }
    Ok(certs)
}

/// The crypto provider (ring, as the overlay uses: builds without system packages).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration: the webpki roots plus `extra_roots`, HTTP/1.1.
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots
            .add(root.clone())
            .map_err(|e| TlsError::Rustls(format!("extra CA: {e}")))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// The server configuration serving `settings`' chain, HTTP/1.1.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(settings.cert_chain.clone(), settings.key.clone_key())
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}
