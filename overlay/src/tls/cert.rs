//! Reading the one certificate shape Grove accepts: an X.509 certificate self-signed with
//! ed25519, whose subject key is the node key.
//!
//! A tiny DER walker is enough because only this shape is accepted; anything else is refused.
//! Validity dates are not checked: the key is the identity, and the TLS handshake proves the
//! peer holds it now.

use crate::identity::{PublicKey, Signature};

/// Why a certificate was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    /// The DER structure is not a certificate of the expected shape.
    #[error("malformed certificate: {0}")]
    Malformed(&'static str),
    /// The certificate is not signed with ed25519 or its key is not ed25519.
    #[error("certificate is not ed25519")]
    NotEd25519,
    /// The self-signature does not verify with the certificate's own key.
    #[error("certificate self-signature is invalid")]
    BadSignature,
}

/// DER encoding of the ed25519 AlgorithmIdentifier (OID 1.3.101.112, no parameters).
const ED25519_ALGORITHM: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// One DER element: its tag, its content, and the whole encoding.
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Splits the first DER element off `input`.
fn element(input: &[u8]) -> Result<(Element<'_>, &[u8]), CertError> {
    let (&tag, rest) = input
        .split_first()
        .ok_or(CertError::Malformed("truncated"))?;
    let (&first, rest) = rest
        .split_first()
        .ok_or(CertError::Malformed("truncated"))?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81 => {
            let (&b, rest) = rest
                .split_first()
                .ok_or(CertError::Malformed("truncated"))?;
            (usize::from(b), rest)
        }
        0x82 => {
            let [hi, lo, rest @ ..] = rest else {
                return Err(CertError::Malformed("truncated"));
            };
            (usize::from(u16::from_be_bytes([*hi, *lo])), rest)
        }
        _ => return Err(CertError::Malformed("length form")),
    };
    let content = rest.get(..len).ok_or(CertError::Malformed("truncated"))?;
    let after = rest.get(len..).ok_or(CertError::Malformed("truncated"))?;
    let whole = input
        .get(..input.len() - after.len())
        .ok_or(CertError::Malformed("truncated"))?;
    Ok((
        Element {
            tag,
            content,
            whole,
        },
        after,
    ))
}

/// Takes the next element and checks its tag.
fn expect(input: &[u8], tag: u8) -> Result<(Element<'_>, &[u8]), CertError> {
    let (el, rest) = element(input)?;
    if el.tag != tag {
        return Err(CertError::Malformed("unexpected tag"));
    }
    Ok((el, rest))
}

/// Checks that `der` is an ed25519 self-signed certificate and returns its key.
pub fn node_key_of(der: &[u8]) -> Result<PublicKey, CertError> {
    let (cert, rest) = expect(der, 0x30)?;
    if !rest.is_empty() {
        return Err(CertError::Malformed("trailing bytes"));
    }
    let (tbs, after) = expect(cert.content, 0x30)?;
    let (sig_alg, after) = expect(after, 0x30)?;
    let (sig, after) = expect(after, 0x03)?;
    if !after.is_empty() {
        return Err(CertError::Malformed("trailing fields"));
    }
    if sig_alg.content != ED25519_ALGORITHM {
        return Err(CertError::NotEd25519);
    }
    let signature: [u8; 64] = match sig.content.split_first() {
        Some((0, bits)) => bits.try_into().map_err(|_| CertError::NotEd25519)?,
        _ => return Err(CertError::Malformed("signature bit string")),
    };
    let key = subject_key(tbs.content)?;
    if !key.verify(tbs.whole, &Signature(signature)) {
        return Err(CertError::BadSignature);
    }
    Ok(key)
}

/// Walks a TBSCertificate to its subjectPublicKeyInfo and reads the ed25519 key.
fn subject_key(tbs: &[u8]) -> Result<PublicKey, CertError> {
    let (first, mut rest) = element(tbs)?;
    // The explicit version tag [0] is optional; without it the first field is the serial.
    if first.tag == 0xa0 {
        let (_serial, r) = expect(rest, 0x02)?;
        rest = r;
    } else if first.tag != 0x02 {
        return Err(CertError::Malformed("serial"));
    }
    let (inner_alg, r) = expect(rest, 0x30)?;
    if inner_alg.content != ED25519_ALGORITHM {
        return Err(CertError::NotEd25519);
    }
    let (_issuer, r) = expect(r, 0x30)?;
    let (_validity, r) = expect(r, 0x30)?;
    let (_subject, r) = expect(r, 0x30)?;
    let (spki, _extensions) = expect(r, 0x30)?;
    let (alg, r) = expect(spki.content, 0x30)?;
    if alg.content != ED25519_ALGORITHM {
        return Err(CertError::NotEd25519);
    }
    let (bits, r) = expect(r, 0x03)?;
    if !r.is_empty() {
        return Err(CertError::Malformed("key info"));
    }
    match bits.content.split_first() {
        Some((0, key)) => {
            let key: [u8; 32] = key.try_into().map_err(|_| CertError::NotEd25519)?;
            Ok(PublicKey::from_bytes(key))
        }
        _ => Err(CertError::Malformed("key bit string")),
    }
}
