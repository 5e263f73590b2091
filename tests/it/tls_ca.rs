//! A certificate authority made in a test, and free loopback ports, for nodes that federate
//! over TLS under `localhost:<port>` names.

use std::path::PathBuf;

/// A certificate authority made for one test, writing PEM files into a directory.
pub(crate) struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).expect("CA PEM written");
        TestCa { issuer, dir }
    }

    /// The CA certificate's PEM file.
    pub(crate) fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf certificate for `localhost` and its key, as PEM files: `(chain, key)`.
    pub(crate) fn leaf(&self, label: &str) -> (PathBuf, PathBuf) {
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf signed");
        let chain = self.dir.path().join(format!("{label}.crt"));
        let key_path = self.dir.path().join(format!("{label}.key"));
        std::fs::write(&chain, cert.pem()).expect("chain written");
        std::fs::write(&key_path, key.serialize_pem()).expect("key written");
        (chain, key_path)
    }
}

/// A free loopback TCP port (bound, then released for the node to take).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
