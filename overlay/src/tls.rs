//! TLS 1.3 for peer links and sessions: self-signed ed25519 certificates carrying the node key,
//! verified the same way on both sides.
//!
//! Both ends present a certificate (client authentication is mandatory). A certificate is
//! accepted only if it is an ed25519 certificate self-signed by its own key; the key it carries is
//! the peer's identity. A dialler that knows whom it dials ([`Expect::Key`]) refuses any other key;
//! one that does not ([`Expect::AnyKey`], LAN or address-only static peers) learns it from
//! [`peer_key`] once the handshake is done.

pub mod cert;
pub mod keys;

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::{NodeKeypair, PublicKey, Signature};

/// ALPN of peer links.
pub const PEER_ALPN: &[u8] = b"grove-peer/1";

/// Server name put in the client hello; SNI is switched off, so it never leaves the node.
const SERVER_NAME: &str = "grove.invalid";

/// Errors while building TLS configurations or reading a peer's identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The certificate could not be generated.
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    /// quinn refused the TLS configuration.
    #[error("quic tls configuration: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The connection carries no usable peer certificate.
    #[error("peer presented no usable certificate")]
    NoPeerCertificate,
}

/// Which key a dialler accepts from the node it dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Only this key; anything else fails the handshake.
    Key(PublicKey),
    /// Any valid node key; the caller reads it with [`peer_key`] afterwards.
    AnyKey,
}

/// The crypto provider used everywhere (ring: builds without system packages).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The signing half of the node key, as rcgen needs it to self-sign.
struct CertSigner<'a>(&'a NodeKeypair, [u8; 32]);

impl rcgen::PublicKeyData for CertSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.1
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for CertSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.0.sign(msg).to_vec())
    }
}

/// The node's certificate and private key, as rustls wants them.
#[derive(Debug)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Builds the self-signed certificate for `secret`.
    pub fn new(secret: &NodeKeypair) -> Result<Self, TlsError> {
        let public = *secret.public_key().as_bytes();
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, secret.public_key().to_hex());
        // Without rcgen's hashing feature the serial must be given; the key's first bytes
        // (high bit cleared, so the DER integer stays positive) make it unique per node.
        let mut serial = public.get(..16).map(<[u8]>::to_vec).unwrap_or_default();
        if let Some(first) = serial.first_mut() {
            *first &= 0x7f;
        }
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.self_signed(&CertSigner(secret, public))?;
        Ok(Self {
            cert: cert.der().clone(),
            key: pkcs8_of(secret),
        })
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// PKCS#8 v1 encoding of an ed25519 seed (RFC 8410): a fixed prefix and the 32 bytes.
fn pkcs8_of(secret: &NodeKeypair) -> PrivatePkcs8KeyDer<'static> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(&secret.to_seed());
    PrivatePkcs8KeyDer::from(der)
}

/// Reads the peer's node key from an established connection.
pub fn peer_key(conn: &quinn::Connection) -> Result<PublicKey, TlsError> {
    let identity = conn.peer_identity().ok_or(TlsError::NoPeerCertificate)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoPeerCertificate)?;
    let first = certs.first().ok_or(TlsError::NoPeerCertificate)?;
    cert::node_key_of(first).map_err(|_| TlsError::NoPeerCertificate)
}

/// rustls client configuration for dialling a node.
pub fn client_config(
    identity: &Identity,
    expect: Expect,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeCertVerifier { expect }))
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key_der())?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.enable_sni = false;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// rustls server configuration accepting any node key, for the given ALPNs.
pub fn server_config(
    identity: &Identity,
    alpns: &[Vec<u8>],
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(NodeCertVerifier {
            expect: Expect::AnyKey,
        }))
        .with_single_cert(vec![identity.cert.clone()], identity.key_der())?;
    tls.alpn_protocols = alpns.to_vec();
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

/// The server name to pass to quinn's `connect`; it is never checked.
pub fn server_name() -> &'static str {
    SERVER_NAME
}

/// Certificate verifier for both directions: ed25519 self-signed, optionally pinned to a key.
#[derive(Debug)]
struct NodeCertVerifier {
    expect: Expect,
}

impl NodeCertVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ));
        }
        let key = cert::node_key_of(end_entity).map_err(|e| {
            tracing::debug!(error = %e, "refusing peer certificate");
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        match self.expect {
            Expect::Key(expected) if expected != key => {
                tracing::debug!(?expected, got = ?key, "peer presented another key");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(()),
        }
    }

    fn verify_signature(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        let key = cert::node_key_of(cert).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let signature: [u8; 64] = dss.signature().try_into().map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        })?;
        if key.verify(message, &Signature(signature)) {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature,
            ))
        }
    }
}

impl ServerCertVerifier for NodeCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for NodeCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests;
