//! XDR (RFC 4506) encoding and a bounds-checked decoder over one received RPC record.
//!
//! The decoder never allocates: variable-length items are returned as slices of the record,
//! and every length read from the wire is checked against both a per-item maximum and the
//! bytes that are actually left before it is used. (The XDR decoders of `nfs3_types` and
//! `nfsserve` allocate `vec![0; len]` from the wire length first, which is how a 100-byte
//! request can ask for gigabytes.)

/// The record ended early, a length exceeded its limit, or a value was out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Garbage;

pub(crate) type XdrResult<T> = Result<T, Garbage>;

/// Reads XDR items from a byte slice.
pub(crate) struct XdrReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> XdrReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unread rest of the record (the procedure arguments after the call header).
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn take(&mut self, n: usize) -> XdrResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(Garbage);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u32(&mut self) -> XdrResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> XdrResult<u64> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    pub(crate) fn bool(&mut self) -> XdrResult<bool> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Garbage),
        }
    }

    /// Fixed-length opaque of `n` bytes (plus padding).
    pub(crate) fn fixed(&mut self, n: usize) -> XdrResult<&'a [u8]> {
        let data = self.take(n)?;
        self.take(pad(n))?;
        Ok(data)
    }

    /// Variable-length opaque or string of at most `max` bytes.
    pub(crate) fn opaque(&mut self, max: usize) -> XdrResult<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(Garbage);
        }
        self.fixed(len)
    }
}

fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Appends XDR items to a buffer.
#[derive(Default)]
pub(crate) struct XdrWriter {
    buf: Vec<u8>,
}

impl XdrWriter {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.u32(u32::from(v));
    }

    pub(crate) fn fixed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(&[0; 3][..pad(data.len())]);
    }

    /// Variable-length opaque or string. Callers keep `data` under 4 GiB (records are capped
    /// far below that).
    pub(crate) fn opaque(&mut self, data: &[u8]) {
        self.u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
        self.fixed(data);
    }

    /// Size on the wire of a variable-length opaque of `n` bytes.
    pub(crate) fn opaque_size(n: usize) -> usize {
        4 + n + pad(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let mut w = XdrWriter::default();
        w.u32(7);
        w.u64(u64::MAX - 1);
        w.opaque(b"abcde");
        w.bool(true);
        let bytes = w.into_bytes();
        assert_eq!(bytes.len(), 4 + 8 + 4 + 8 + 4);
        let mut r = XdrReader::new(&bytes);
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.u64(), Ok(u64::MAX - 1));
        assert_eq!(r.opaque(16), Ok(&b"abcde"[..]));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn lengths_are_checked_before_use() {
        // A length of 4 GiB - 1 in a 8-byte record: refused, nothing allocated.
        let bytes = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert_eq!(XdrReader::new(&bytes).opaque(usize::MAX), Err(Garbage));
        // Within the per-item limit but longer than the record.
        let bytes = [0, 0, 0, 9, 1, 2, 3, 4];
        assert_eq!(XdrReader::new(&bytes).opaque(64), Err(Garbage));
        // Over the per-item limit.
        let bytes = [0, 0, 0, 4, 1, 2, 3, 4];
        assert_eq!(XdrReader::new(&bytes).opaque(3), Err(Garbage));
        assert_eq!(XdrReader::new(&[0, 0, 0, 2]).bool(), Err(Garbage));
    }
}
