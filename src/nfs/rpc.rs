//! ONC RPC v2 (RFC 5531) over TCP: record marking with a size cap, call headers with
//! `AUTH_UNIX` credentials, and reply headers.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::xdr::{Garbage, XdrReader, XdrResult, XdrWriter};

/// Largest READ or WRITE payload the server moves in one call (advertised as rtmax/wtmax).
pub(crate) const MAX_IO: u32 = 1024 * 1024;

/// Largest RPC record accepted: a full WRITE payload plus generous room for headers. The
/// length in each fragment header is checked against this *before* any buffer grows, so a
/// peer cannot make the server allocate more than this per request.
pub(crate) const MAX_RECORD: usize = MAX_IO as usize + 64 * 1024;

const LAST_FRAGMENT: u32 = 0x8000_0000;

/// Why a record could not be read; the connection is closed in every case.
#[derive(Debug)]
pub(crate) enum RecordError {
    Io,
    /// The fragments announced more than [`MAX_RECORD`] bytes.
    TooLarge,
}

/// Reads one complete record (all fragments) into `buf`. `Ok(false)` is a clean end of
/// stream between records.
pub(crate) async fn read_record<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<bool, RecordError> {
    buf.clear();
    loop {
        let mut header = [0u8; 4];
        match r.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && buf.is_empty() => {
                return Ok(false);
            }
            Err(_) => return Err(RecordError::Io),
        }
        let header = u32::from_be_bytes(header);
        let len = (header & !LAST_FRAGMENT) as usize;
        let total = buf.len() + len;
        if total > MAX_RECORD {
            return Err(RecordError::TooLarge);
        }
        let start = buf.len();
        buf.resize(total, 0);
        r.read_exact(&mut buf[start..])
            .await
            .map_err(|_| RecordError::Io)?;
        if header & LAST_FRAGMENT != 0 {
            return Ok(true);
        }
    }
}

/// Writes `body` as one last-fragment record.
pub(crate) async fn write_record<W: AsyncWrite + Unpin>(
    w: &mut W,
    body: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX) & !LAST_FRAGMENT;
    w.write_all(&(len | LAST_FRAGMENT).to_be_bytes()).await?;
    w.write_all(body).await
}

const AUTH_UNIX: u32 = 1;

/// The caller's identity as sent in `AUTH_UNIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cred {
    pub uid: u32,
    pub gid: u32,
}

/// The call's credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    Unix(Cred),
    /// An `AUTH_UNIX` body that does not parse.
    Bad,
    /// Another flavor (`AUTH_NONE`, …).
    Weak,
}

/// `auth_stat` of a call refused for its credential (RFC 5531 §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthStat {
    /// Bad credential (seal broken).
    BadCred = 1,
    /// Rejected for security reasons.
    TooWeak = 5,
}

/// A parsed call header; `args` is the undecoded procedure argument block.
pub(crate) struct Call<'a> {
    pub xid: u32,
    pub rpcvers: u32,
    pub prog: u32,
    pub vers: u32,
    pub proc_: u32,
    pub auth: Auth,
    pub args: &'a [u8],
}

/// Parses a call. `Err` carries the xid when it could be read, so a GARBAGE_ARGS reply can
/// still be sent.
pub(crate) fn parse_call(record: &[u8]) -> Result<Call<'_>, Option<u32>> {
    let mut r = XdrReader::new(record);
    let xid = r.u32().map_err(|_| None)?;
    parse_call_body(&mut r, xid).map_err(|Garbage| Some(xid))
}

fn parse_call_body<'a>(r: &mut XdrReader<'a>, xid: u32) -> XdrResult<Call<'a>> {
    if r.u32()? != 0 {
        return Err(Garbage); // a REPLY sent to the server
    }
    let rpcvers = r.u32()?;
    let prog = r.u32()?;
    let vers = r.u32()?;
    let proc_ = r.u32()?;
    let flavor = r.u32()?;
    let body = r.opaque(400)?;
    let auth = if flavor == AUTH_UNIX {
        parse_auth_unix(body).map_or(Auth::Bad, Auth::Unix)
    } else {
        Auth::Weak
    };
    let _verf_flavor = r.u32()?;
    r.opaque(400)?;
    Ok(Call {
        xid,
        rpcvers,
        prog,
        vers,
        proc_,
        auth,
        args: r.rest(),
    })
}

fn parse_auth_unix(body: &[u8]) -> XdrResult<Cred> {
    let mut r = XdrReader::new(body);
    let _stamp = r.u32()?;
    r.opaque(255)?;
    let uid = r.u32()?;
    let gid = r.u32()?;
    let ngids = r.u32()?;
    if ngids > 16 {
        return Err(Garbage);
    }
    for _ in 0..ngids {
        r.u32()?;
    }
    Ok(Cred { uid, gid })
}

/// `accept_stat` values of an accepted reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accept {
    Success = 0,
    ProgUnavail = 1,
    ProgMismatch = 2,
    ProcUnavail = 3,
    GarbageArgs = 4,
}

/// Starts an accepted reply; for `Success` the caller appends the results. For
/// `ProgMismatch`, `mismatch` is the supported (low, high) version range.
pub(crate) fn accepted(xid: u32, stat: Accept, mismatch: (u32, u32)) -> XdrWriter {
    let mut w = XdrWriter::with_capacity(256);
    w.u32(xid);
    w.u32(1); // REPLY
    w.u32(0); // MSG_ACCEPTED
    w.u32(0); // verifier AUTH_NONE
    w.u32(0);
    w.u32(stat as u32);
    if stat == Accept::ProgMismatch {
        w.u32(mismatch.0);
        w.u32(mismatch.1);
    }
    w
}

/// A denied reply for a call whose credential is refused.
pub(crate) fn auth_error(xid: u32, stat: AuthStat) -> XdrWriter {
    let mut w = XdrWriter::with_capacity(16);
    w.u32(xid);
    w.u32(1); // REPLY
    w.u32(1); // MSG_DENIED
    w.u32(1); // AUTH_ERROR
    w.u32(stat as u32);
    w
}

/// A denied reply for an RPC version other than 2.
pub(crate) fn rpc_mismatch(xid: u32) -> XdrWriter {
    let mut w = XdrWriter::with_capacity(24);
    w.u32(xid);
    w.u32(1); // REPLY
    w.u32(1); // MSG_DENIED
    w.u32(0); // RPC_MISMATCH
    w.u32(2);
    w.u32(2);
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn record_over_cap_is_refused_before_allocation() {
        let header = (u32::MAX).to_be_bytes(); // last fragment, 2 GiB long
        let mut input: &[u8] = &header;
        let mut buf = Vec::new();
        assert!(matches!(
            read_record(&mut input, &mut buf).await,
            Err(RecordError::TooLarge)
        ));
        assert_eq!(buf.capacity(), 0);
    }

    #[tokio::test]
    async fn fragments_are_joined_and_capped_in_total() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&3u32.to_be_bytes());
        stream.extend_from_slice(b"abc");
        stream.extend_from_slice(&(2 | LAST_FRAGMENT).to_be_bytes());
        stream.extend_from_slice(b"de");
        let mut input: &[u8] = &stream;
        let mut buf = Vec::new();
        assert!(read_record(&mut input, &mut buf).await.unwrap());
        assert_eq!(buf, b"abcde");
        assert!(!read_record(&mut input, &mut buf).await.unwrap());

        // Many small non-final fragments adding up past the cap.
        let mut stream = Vec::new();
        let chunk = vec![0u8; 512 * 1024];
        for _ in 0..3 {
            stream.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            stream.extend_from_slice(&chunk);
        }
        let mut input: &[u8] = &stream;
        assert!(matches!(
            read_record(&mut input, &mut buf).await,
            Err(RecordError::TooLarge)
        ));
        assert!(buf.len() <= MAX_RECORD);
    }
}
