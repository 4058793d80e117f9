//! `fattr3` from host `stat`, `sattr3` from the wire, and the uid/gid mapping between them.
//!
//! Mapping (like `-mapall=uid:gid`): objects owned by the export's host user/group are
//! shown to the guest as owned by uid/gid 0, so the guest's root (docker, build tools) can
//! write them; objects the host's root owns are shown as owned by nobody (65534), since the
//! guest's root cannot act as the host's; other owners are shown as they are. In the other
//! direction, a guest chown/chgrp may only name 0 or the export's own ids (both meaning the
//! export's owner); anything else is NFS3ERR_PERM, so the guest can never hand a host file to
//! another user (and, acting as the owner, it cannot take another user's file either).

use rustix::fs::Stat;

use super::fs::ExportFs;
use super::handle::{Key, Kind, NfsResult, Status};
use super::xdr::{Garbage, XdrReader, XdrResult, XdrWriter};

/// The id host root's objects are shown with (the guest's root is the share's owner).
const NOBODY: u32 = 65534;

/// `fattr3` (RFC 1813 §2.6).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr {
    pub kind: Kind,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub used: u64,
    pub rdev: (u32, u32),
    pub fsid: u64,
    pub fileid: u64,
    pub atime: (u32, u32),
    pub mtime: (u32, u32),
    pub ctime: (u32, u32),
}

fn nfs_time(sec: i64, nsec: i64) -> (u32, u32) {
    (
        u32::try_from(sec.max(0)).unwrap_or(u32::MAX),
        u32::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0),
    )
}

impl ExportFs {
    #[allow(clippy::unnecessary_cast)] // field types differ between platforms
    pub(crate) fn attr(&self, st: &Stat) -> Attr {
        let key: Key = super::fs::key_of(st);
        let map = |id: u32, owner: u32| match id {
            _ if id == owner => 0,
            0 => NOBODY,
            _ => id,
        };
        Attr {
            kind: super::fs::kind_of(st),
            mode: super::fs::mode_of(st) & 0o7777,
            // u64 on Linux, u16 on macOS.
            #[allow(clippy::unnecessary_fallible_conversions)]
            nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
            uid: map(st.st_uid, self.owner.uid),
            gid: map(st.st_gid, self.owner.gid),
            size: st.st_size as u64,
            used: (st.st_blocks as u64).saturating_mul(512),
            rdev: (
                rustix::fs::major(st.st_rdev as _),
                rustix::fs::minor(st.st_rdev as _),
            ),
            fsid: self.fsid,
            fileid: self.fileid(key),
            atime: nfs_time(st.st_atime as _, st.st_atime_nsec as _),
            mtime: nfs_time(st.st_mtime as _, st.st_mtime_nsec as _),
            ctime: nfs_time(st.st_ctime as _, st.st_ctime_nsec as _),
        }
    }

    /// Host uid for a uid the guest asks for (see the module header).
    pub(crate) fn host_uid(&self, guest: u32) -> NfsResult<u32> {
        if guest == 0 || guest == self.owner.uid {
            Ok(self.owner.uid)
        } else {
            Err(Status::Perm)
        }
    }

    pub(crate) fn host_gid(&self, guest: u32) -> NfsResult<u32> {
        if guest == 0 || guest == self.owner.gid {
            Ok(self.owner.gid)
        } else {
            Err(Status::Perm)
        }
    }
}

pub(crate) fn put_fattr(w: &mut XdrWriter, a: &Attr) {
    w.u32(a.kind as u32);
    w.u32(a.mode);
    w.u32(a.nlink);
    w.u32(a.uid);
    w.u32(a.gid);
    w.u64(a.size);
    w.u64(a.used);
    w.u32(a.rdev.0);
    w.u32(a.rdev.1);
    w.u64(a.fsid);
    w.u64(a.fileid);
    for t in [a.atime, a.mtime, a.ctime] {
        w.u32(t.0);
        w.u32(t.1);
    }
}

/// Encoded size of `fattr3`.
pub(crate) const FATTR_SIZE: usize = 84;

pub(crate) fn put_post_op(w: &mut XdrWriter, a: Option<&Attr>) {
    w.bool(a.is_some());
    if let Some(a) = a {
        put_fattr(w, a);
    }
}

/// `wcc_data`: the object's size, mtime and ctime before the operation, and its attributes
/// after. With both, the client sees that a change was its own and keeps its caches; with
/// post-operation attributes alone it must assume someone else changed the object too, and
/// a directory's cached access rights go with it (a capture of 300 creates showed one extra
/// ACCESS call per file). `before` is the `stat` taken when the handle was resolved, just
/// before the operation: not atomic with it (RFC 1813 asks for that where the server can),
/// so a host-side change inside that window can go unnoticed by the client until its
/// attribute cache times out, as with any change made on the host.
pub(crate) fn put_wcc(w: &mut XdrWriter, before: Option<&Attr>, after: Option<&Attr>) {
    w.bool(before.is_some());
    if let Some(b) = before {
        w.u64(b.size);
        for t in [b.mtime, b.ctime] {
            w.u32(t.0);
            w.u32(t.1);
        }
    }
    put_post_op(w, after);
}

/// `time_how` of `sattr3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetTime {
    Keep,
    ServerNow,
    Client(u32, u32),
}

/// `sattr3`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sattr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: SetTime,
    pub mtime: SetTime,
}

impl Sattr {
    pub(crate) fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.size.is_none()
            && self.atime == SetTime::Keep
            && self.mtime == SetTime::Keep
    }
}

pub(crate) fn get_sattr(r: &mut XdrReader<'_>) -> XdrResult<Sattr> {
    let mode = if r.bool()? { Some(r.u32()?) } else { None };
    let uid = if r.bool()? { Some(r.u32()?) } else { None };
    let gid = if r.bool()? { Some(r.u32()?) } else { None };
    let size = if r.bool()? { Some(r.u64()?) } else { None };
    let mut time = || -> XdrResult<SetTime> {
        Ok(match r.u32()? {
            0 => SetTime::Keep,
            1 => SetTime::ServerNow,
            2 => SetTime::Client(r.u32()?, r.u32()?),
            _ => return Err(Garbage),
        })
    };
    let atime = time()?;
    let mtime = time()?;
    Ok(Sattr {
        mode,
        uid,
        gid,
        size,
        atime,
        mtime,
    })
}
