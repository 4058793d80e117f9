//! File handles, `nfsstat3` codes, and the object identity they carry.
//!
//! A handle is 24 bytes and depends only on the file, never on the server instance, so the
//! guest's handles survive a supervisor restart:
//!
//! ```text
//! "DB" | version 1 | kind | export id (4) | st_dev (8, BE) | st_ino (8, BE)
//! ```
//!
//! The export id is the start of SHA-256 of the export name, so reordering exports in the
//! machine spec does not invalidate handles. `kind` lets a handle whose inode number was
//! reused for an object of another type be reported STALE instead of being served.

use rustix::io::Errno;
use sha2::{Digest, Sha256};

/// `nfsstat3` (RFC 1813 §2.6) values the server returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok = 0,
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    Acces = 13,
    Exist = 17,
    XDev = 18,
    NotDir = 20,
    IsDir = 21,
    Inval = 22,
    FBig = 27,
    NoSpc = 28,
    Rofs = 30,
    MLink = 31,
    NameTooLong = 63,
    NotEmpty = 66,
    DQuot = 69,
    Stale = 70,
    BadHandle = 10001,
    NotSync = 10002,
    BadCookie = 10003,
    NotSupp = 10004,
    TooSmall = 10005,
    ServerFault = 10006,
    /// "Try again later": the server is still looking for the object (`index.rs`).
    Jukebox = 10008,
}

pub(crate) type NfsResult<T> = Result<T, Status>;

impl From<Errno> for Status {
    fn from(e: Errno) -> Self {
        match e {
            Errno::PERM => Status::Perm,
            Errno::NOENT => Status::NoEnt,
            Errno::ACCESS => Status::Acces,
            Errno::EXIST => Status::Exist,
            Errno::XDEV => Status::XDev,
            Errno::NOTDIR => Status::NotDir,
            Errno::ISDIR => Status::IsDir,
            Errno::INVAL => Status::Inval,
            Errno::FBIG => Status::FBig,
            Errno::NOSPC => Status::NoSpc,
            Errno::ROFS => Status::Rofs,
            Errno::MLINK => Status::MLink,
            Errno::NAMETOOLONG => Status::NameTooLong,
            Errno::NOTEMPTY => Status::NotEmpty,
            Errno::DQUOT => Status::DQuot,
            // A symlink met where O_NOFOLLOW forbids following one.
            Errno::LOOP => Status::Inval,
            Errno::NOTSUP => Status::NotSupp,
            _ => Status::Io,
        }
    }
}

/// The object types of `ftype3`, as far as the handle needs to distinguish them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Reg = 1,
    Dir = 2,
    Blk = 3,
    Chr = 4,
    Lnk = 5,
    Sock = 6,
    Fifo = 7,
}

impl Kind {
    pub(crate) fn from_mode(mode: u32) -> Kind {
        use rustix::fs::FileType;
        match FileType::from_raw_mode(mode as _) {
            FileType::RegularFile => Kind::Reg,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Lnk,
            FileType::BlockDevice => Kind::Blk,
            FileType::CharacterDevice => Kind::Chr,
            FileType::Socket => Kind::Sock,
            FileType::Fifo => Kind::Fifo,
            FileType::Unknown => Kind::Reg,
        }
    }

    fn from_u8(v: u8) -> Option<Kind> {
        [
            Kind::Reg,
            Kind::Dir,
            Kind::Blk,
            Kind::Chr,
            Kind::Lnk,
            Kind::Sock,
            Kind::Fifo,
        ]
        .into_iter()
        .find(|k| *k as u8 == v)
    }
}

/// Host identity of an object: `(st_dev, st_ino)`.
pub(crate) type Key = (u64, u64);

pub(crate) const HANDLE_LEN: usize = 24;
const MAGIC: [u8; 3] = *b"DB\x01";

/// A decoded handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handle {
    pub export: [u8; 4],
    pub kind: Kind,
    pub key: Key,
}

impl Handle {
    pub(crate) fn encode(&self) -> [u8; HANDLE_LEN] {
        let mut out = [0u8; HANDLE_LEN];
        out[..3].copy_from_slice(&MAGIC);
        out[3] = self.kind as u8;
        out[4..8].copy_from_slice(&self.export);
        out[8..16].copy_from_slice(&self.key.0.to_be_bytes());
        out[16..24].copy_from_slice(&self.key.1.to_be_bytes());
        out
    }

    /// Decodes a handle; anything not produced by [`Handle::encode`] is BADHANDLE.
    pub(crate) fn decode(bytes: &[u8]) -> NfsResult<Handle> {
        if bytes.len() != HANDLE_LEN || bytes[..3] != MAGIC {
            return Err(Status::BadHandle);
        }
        let kind = Kind::from_u8(bytes[3]).ok_or(Status::BadHandle)?;
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Handle {
            export: [bytes[4], bytes[5], bytes[6], bytes[7]],
            kind,
            key: (word(8), word(16)),
        })
    }
}

/// The 4-byte id of an export name, stable across restarts.
pub(crate) fn export_id(name: &str) -> [u8; 4] {
    let digest = Sha256::digest(name.as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_round_trip_and_forgeries() {
        let h = Handle {
            export: export_id("/home/alice"),
            kind: Kind::Dir,
            key: (0x801, 1234),
        };
        let bytes = h.encode();
        assert_eq!(Handle::decode(&bytes), Ok(h));
        assert_eq!(Handle::decode(&bytes[..20]), Err(Status::BadHandle));
        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(Handle::decode(&bad), Err(Status::BadHandle));
        let mut bad = bytes;
        bad[3] = 99;
        assert_eq!(Handle::decode(&bad), Err(Status::BadHandle));
        assert_ne!(export_id("/a"), export_id("/b"));
    }
}
