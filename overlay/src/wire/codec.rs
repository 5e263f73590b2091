//! Byte cursor helpers shared by every decoder: each read checks the remaining length and
//! returns a typed error instead of panicking.

use crate::identity::{PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, Signature};
use crate::wire::WireError;

/// A read cursor over one frame.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Takes the next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    /// Takes a fixed-size array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a big-endian u16.
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u32.
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u64.
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a public key.
    pub(crate) fn key(&mut self) -> Result<PublicKey, WireError> {
        Ok(PublicKey(self.array::<PUBLIC_KEY_LEN>()?))
    }

    /// Reads a signature.
    pub(crate) fn sig(&mut self) -> Result<Signature, WireError> {
        Ok(Signature(self.array::<SIGNATURE_LEN>()?))
    }

    /// Reads a u8 count followed by that many non-zero u16 ports, refusing more than `max`.
    pub(crate) fn ports(&mut self, max: usize, what: &'static str) -> Result<Vec<u16>, WireError> {
        let n = usize::from(self.u8()?);
        if n > max {
            return Err(WireError::TooLong { what, len: n, max });
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let p = self.u16()?;
            if p == 0 {
                return Err(WireError::ZeroPort);
            }
            out.push(p);
        }
        Ok(out)
    }

    /// Everything not yet read.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        out
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes(self.buf.len() - self.pos))
        }
    }
}

/// Appends a u8 count and the ports; callers keep lists within the u8 range.
pub(crate) fn put_ports(out: &mut Vec<u8>, ports: &[u16]) {
    out.push(u8::try_from(ports.len()).unwrap_or(u8::MAX));
    for p in ports.iter().take(usize::from(u8::MAX)) {
        out.extend_from_slice(&p.to_be_bytes());
    }
}
