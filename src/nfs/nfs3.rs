//! NFS version 3 procedures (RFC 1813 §3): argument decoding, the call into the export,
//! and result encoding. Arguments are always decoded completely before anything is done.
//! Each procedure runs with the filesystem identity of the owner of the export its (first)
//! handle names ([`call`], `identity.rs`).

use super::attr::{Attr, FATTR_SIZE, get_sattr, put_fattr, put_post_op, put_wcc};
use super::fs::{ExportFs, Loc, is_dot, key_of, read_dir_from};
use super::handle::{HANDLE_LEN, Handle, Kind, NfsResult, Status};
use super::identity::AsOwner;
use super::ops::{CreateHow, Stable};
use super::proto::Shared;
use super::rpc::{Cred, MAX_IO, MAX_RECORD};
use super::xdr::{Garbage, XdrReader, XdrResult, XdrWriter};

const ACCESS_READ: u32 = 1;
const ACCESS_LOOKUP: u32 = 2;
const ACCESS_MODIFY: u32 = 4;
const ACCESS_EXTEND: u32 = 8;
const ACCESS_DELETE: u32 = 16;
const ACCESS_EXECUTE: u32 = 32;

const FSF3_SYMLINK: u32 = 2;
const FSF3_HOMOGENEOUS: u32 = 8;
const FSF3_CANSETTIME: u32 = 16;

/// Dispatches one NFS call; `Ok(false)` means an unknown procedure (PROC_UNAVAIL).
///
/// Every procedure but NULL starts with a file handle; the procedure runs as the owner of
/// that handle's export. A handle of no export needs no identity: it is answered
/// BADHANDLE/STALE without touching the filesystem. If the identity cannot be taken, the
/// procedure is not run (SERVERFAULT, which every procedure's result allows).
pub(crate) fn call(
    shared: &Shared,
    cred: Cred,
    proc_: u32,
    r: &mut XdrReader<'_>,
    w: &mut XdrWriter,
) -> XdrResult<bool> {
    if proc_ == 0 || proc_ > 21 {
        return Ok(proc_ == 0);
    }
    let export = fh(&mut XdrReader::new(r.rest()))
        .ok()
        .and_then(|fh| Handle::decode(fh).ok())
        .and_then(|h| shared.exports.iter().find(|e| e.id == h.export));
    let _as_owner = match export.map(|e| AsOwner::enter(&e.owner)).transpose() {
        Ok(guard) => guard,
        Err(_) => {
            fail_without_attributes(w, proc_, Status::ServerFault);
            return Ok(true);
        }
    };
    match proc_ {
        0 => {}
        1 => getattr(shared, r, w)?,
        2 => setattr(shared, r, w)?,
        3 => lookup(shared, r, w)?,
        4 => access(shared, cred, r, w)?,
        5 => readlink(shared, r, w)?,
        6 => read(shared, r, w)?,
        7 => write(shared, r, w)?,
        8 => create(shared, r, w)?,
        9 => mkdir(shared, r, w)?,
        10 => symlink(shared, r, w)?,
        11 => mknod(shared, r, w)?,
        12 => remove(shared, r, w, false)?,
        13 => remove(shared, r, w, true)?,
        14 => rename(shared, r, w)?,
        15 => link(shared, r, w)?,
        16 => readdir(shared, r, w, false)?,
        17 => readdir(shared, r, w, true)?,
        18 => fsstat(shared, r, w)?,
        19 => fsinfo(shared, r, w)?,
        20 => pathconf(shared, r, w)?,
        21 => commit(shared, r, w)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// A failed result of procedure `proc_` with every optional attribute absent.
fn fail_without_attributes(w: &mut XdrWriter, proc_: u32, s: Status) {
    status(w, s);
    // How many `bool`s the failure arm of each result starts its attributes with: none for
    // GETATTR, one post_op_attr, one wcc_data (two), LINK's post_op_attr and wcc_data,
    // RENAME's two wcc_data.
    let absent = match proc_ {
        1 => 0,
        3 | 4 | 5 | 6 | 16 | 17 | 18 | 19 | 20 => 1,
        15 => 3,
        14 => 4,
        _ => 2,
    };
    for _ in 0..absent {
        w.bool(false);
    }
}

fn fh<'a>(r: &mut XdrReader<'a>) -> XdrResult<&'a [u8]> {
    r.opaque(64)
}

fn name<'a>(r: &mut XdrReader<'a>) -> XdrResult<&'a [u8]> {
    // Longer than NAME_MAX is answered NAMETOOLONG, not GARBAGE_ARGS: keep up to 1 KiB.
    r.opaque(1024)
}

/// Handle → (export, object).
fn resolve<'s>(shared: &'s Shared, fh: &[u8]) -> NfsResult<(&'s ExportFs, Loc)> {
    let handle = Handle::decode(fh)?;
    let export = shared
        .exports
        .iter()
        .find(|e| e.id == handle.export)
        .ok_or(Status::Stale)?;
    Ok((export, export.resolve(&handle)?))
}

fn status(w: &mut XdrWriter, s: Status) {
    w.u32(s as u32);
}

fn put_fh(w: &mut XdrWriter, fh: &[u8; HANDLE_LEN]) {
    w.opaque(fh);
}

/// Result of an operation creating an object: `post_op_fh3`, attributes, directory wcc.
fn put_created(w: &mut XdrWriter, e: &ExportFs, dir: &Loc, result: NfsResult<Loc>) {
    match result {
        Ok(obj) => {
            status(w, Status::Ok);
            w.bool(true);
            put_fh(w, &e.handle(&obj.st));
            put_post_op(w, Some(&e.attr(&obj.st)));
            put_wcc(w, Some(&e.attr(&dir.st)), e.attr_now(dir).as_ref());
        }
        Err(s) => {
            status(w, s);
            put_wcc(w, Some(&e.attr(&dir.st)), e.attr_now(dir).as_ref());
        }
    }
}

fn getattr(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let fh = fh(r)?;
    match resolve(shared, fh) {
        Ok((e, loc)) => {
            status(w, Status::Ok);
            put_fattr(w, &e.attr(&loc.st));
        }
        Err(s) => status(w, s),
    }
    Ok(())
}

fn setattr(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let fh = fh(r)?;
    let sattr = get_sattr(r)?;
    let guard = if r.bool()? {
        Some((r.u32()?, r.u32()?))
    } else {
        None
    };
    match resolve(shared, fh) {
        Ok((e, loc)) => match e.setattr(&loc, &sattr, guard) {
            Ok(a) => {
                status(w, Status::Ok);
                put_wcc(w, Some(&e.attr(&loc.st)), Some(&a));
            }
            Err(s) => {
                status(w, s);
                put_wcc(w, Some(&e.attr(&loc.st)), e.attr_now(&loc).as_ref());
            }
        },
        Err(s) => {
            status(w, s);
            put_wcc(w, None, None);
        }
    }
    Ok(())
}

fn lookup(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let dir_fh = fh(r)?;
    let name = name(r)?;
    match resolve(shared, dir_fh) {
        Ok((e, dir)) => match e.lookup(&dir, name) {
            Ok(obj) => {
                status(w, Status::Ok);
                put_fh(w, &e.handle(&obj.st));
                put_post_op(w, Some(&e.attr(&obj.st)));
                put_post_op(w, e.attr_now(&dir).as_ref());
            }
            Err(s) => {
                status(w, s);
                put_post_op(w, e.attr_now(&dir).as_ref());
            }
        },
        Err(s) => {
            status(w, s);
            put_post_op(w, None);
        }
    }
    Ok(())
}

/// ACCESS: what the guest's caller may do, by the attributes the guest sees (after uid/gid
/// mapping, so the answer agrees with what the guest kernel would decide itself: the guest's
/// root may do anything but execute a file without any x bit), limited to what the share's
/// owner may do on the host (the identity every operation runs with), and without any
/// modification on a read-only export.
fn allowed(e: &ExportFs, a: &Attr, host_uid: u32, host_gid: u32, cred: Cred) -> u32 {
    let dir = a.kind == Kind::Dir;
    let x = if dir { ACCESS_LOOKUP } else { ACCESS_EXECUTE };
    let write = ACCESS_MODIFY | ACCESS_EXTEND | ACCESS_DELETE;
    let by_class = |class: u32| {
        (if class & 4 != 0 { ACCESS_READ } else { 0 })
            | (if class & 2 != 0 { write } else { 0 })
            | (if class & 1 != 0 { x } else { 0 })
    };
    let root = |mode: u32| {
        let exec = dir || mode & 0o111 != 0;
        ACCESS_READ | write | if exec { x } else { 0 }
    };
    let guest = if cred.uid == 0 {
        root(a.mode)
    } else {
        by_class(
            if a.uid == cred.uid {
                a.mode >> 6
            } else if a.gid == cred.gid {
                a.mode >> 3
            } else {
                a.mode
            } & 7,
        )
    };
    let owner = if e.owner.uid == 0 {
        root(a.mode)
    } else {
        by_class(
            if host_uid == e.owner.uid {
                a.mode >> 6
            } else if host_gid == e.owner.gid {
                a.mode >> 3
            } else {
                a.mode
            } & 7,
        )
    };
    let mut bits = guest & owner;
    if e.read_only {
        bits &= !write;
    }
    bits
}

fn access(shared: &Shared, cred: Cred, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let fh = fh(r)?;
    let wanted = r.u32()?;
    match resolve(shared, fh) {
        Ok((e, loc)) => {
            let a = e.attr(&loc.st);
            status(w, Status::Ok);
            put_post_op(w, Some(&a));
            w.u32(wanted & allowed(e, &a, loc.st.st_uid, loc.st.st_gid, cred));
        }
        Err(s) => {
            status(w, s);
            put_post_op(w, None);
        }
    }
    Ok(())
}

fn readlink(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let fh = fh(r)?;
    match resolve(shared, fh) {
        Ok((e, loc)) => match e.readlink(&loc) {
            Ok(target) => {
                status(w, Status::Ok);
                put_post_op(w, Some(&e.attr(&loc.st)));
                w.opaque(&target);
            }
            Err(s) => {
                status(w, s);
                put_post_op(w, Some(&e.attr(&loc.st)));
            }
        },
        Err(s) => {
            status(w, s);
            put_post_op(w, None);
        }
    }
    Ok(())
}

fn read(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let fh = fh(r)?;
    let offset = r.u64()?;
    let count = r.u32()?;
    match resolve(shared, fh) {
        Ok((e, loc)) => match e.read(&loc, offset, count) {
            Ok((data, eof)) => {
                status(w, Status::Ok);
                put_post_op(w, e.attr_now(&loc).as_ref());
                w.u32(data.len() as u32);
                w.bool(eof);
                w.opaque(&data);
            }
            Err(s) => {
                status(w, s);
                put_post_op(w, e.attr_now(&loc).as_ref());
            }
        },
        Err(s) => {
            status(w, s);
            put_post_op(w, None);
        }
    }
    Ok(())
}

fn write(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let fh = fh(r)?;
    let offset = r.u64()?;
    let count = r.u32()?;
    let stable = match r.u32()? {
        0 => Stable::Unstable,
        1 => Stable::DataSync,
        2 => Stable::FileSync,
        _ => return Err(Garbage),
    };
    let data = r.opaque(MAX_RECORD)?;
    let data = &data[..data.len().min(count as usize)];
    match resolve(shared, fh) {
        Ok((e, loc)) => match e.write(&loc, offset, data, stable) {
            Ok(n) => {
                status(w, Status::Ok);
                put_wcc(w, Some(&e.attr(&loc.st)), e.attr_now(&loc).as_ref());
                w.u32(n);
                w.u32(stable as u32);
                w.fixed(&shared.verf);
            }
            Err(s) => {
                status(w, s);
                put_wcc(w, Some(&e.attr(&loc.st)), e.attr_now(&loc).as_ref());
            }
        },
        Err(s) => {
            status(w, s);
            put_wcc(w, None, None);
        }
    }
    Ok(())
}

fn create(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let dir_fh = fh(r)?;
    let name = name(r)?;
    let how = match r.u32()? {
        0 => CreateHow::Unchecked(get_sattr(r)?),
        1 => CreateHow::Guarded(get_sattr(r)?),
        2 => {
            let v = r.fixed(8)?;
            CreateHow::Exclusive([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]])
        }
        _ => return Err(Garbage),
    };
    match resolve(shared, dir_fh) {
        Ok((e, dir)) => put_created(w, e, &dir, e.create(&dir, name, &how)),
        Err(s) => {
            status(w, s);
            put_wcc(w, None, None);
        }
    }
    Ok(())
}

fn mkdir(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let dir_fh = fh(r)?;
    let name = name(r)?;
    let sattr = get_sattr(r)?;
    match resolve(shared, dir_fh) {
        Ok((e, dir)) => put_created(w, e, &dir, e.mkdir(&dir, name, &sattr)),
        Err(s) => {
            status(w, s);
            put_wcc(w, None, None);
        }
    }
    Ok(())
}

fn symlink(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let dir_fh = fh(r)?;
    let name = name(r)?;
    let _sattr = get_sattr(r)?; // a symlink's mode is meaningless on Linux hosts
    let target = r.opaque(4096)?;
    match resolve(shared, dir_fh) {
        Ok((e, dir)) => put_created(w, e, &dir, e.symlink(&dir, name, target)),
        Err(s) => {
            status(w, s);
            put_wcc(w, None, None);
        }
    }
    Ok(())
}

/// MKNOD: device files, FIFOs and sockets are not created on the host (NOTSUPP; ROFS on a
/// read-only export). Only the directory handle is needed to answer.
fn mknod(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let dir_fh = fh(r)?;
    let _name = name(r)?;
    not_supported(shared, dir_fh, w, false);
    Ok(())
}

/// LINK: refused with NFS3ERR_NOTSUPP (RFC 1813 lists it for LINK), and FSINFO does not set
/// FSF3_LINK, so the guest's `ln` fails with EOPNOTSUPP instead of a misleading EPERM/EIO.
/// Why: a second name for an inode makes "the" path of a handle ambiguous, and a hard link
/// to a host file is a way to keep it alive and writable from the guest after the host
/// user deleted or replaced it.
fn link(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let file_fh = fh(r)?;
    let _dir_fh = fh(r)?;
    let _name = name(r)?;
    not_supported(shared, file_fh, w, true);
    Ok(())
}

fn not_supported(shared: &Shared, fh: &[u8], w: &mut XdrWriter, link: bool) {
    let (s, attr) = match resolve(shared, fh) {
        Ok((e, loc)) if e.read_only => (Status::Rofs, Some(e.attr(&loc.st))),
        Ok((e, loc)) => (Status::NotSupp, Some(e.attr(&loc.st))),
        Err(s) => (s, None),
    };
    status(w, s);
    if link {
        put_post_op(w, attr.as_ref());
        put_wcc(w, None, None);
    } else {
        // Nothing changed: the same attributes before and after.
        put_wcc(w, attr.as_ref(), attr.as_ref());
    }
}

fn remove(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter, rmdir: bool) -> XdrResult<()> {
    let dir_fh = fh(r)?;
    let name = name(r)?;
    match resolve(shared, dir_fh) {
        Ok((e, dir)) => {
            let s = e.remove(&dir, name, rmdir).err().unwrap_or(Status::Ok);
            status(w, s);
            put_wcc(w, Some(&e.attr(&dir.st)), e.attr_now(&dir).as_ref());
        }
        Err(s) => {
            status(w, s);
            put_wcc(w, None, None);
        }
    }
    Ok(())
}

fn rename(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let from_fh = fh(r)?;
    let from_name = name(r)?;
    let to_fh = fh(r)?;
    let to_name = name(r)?;
    // Between exports: refused before the second handle is resolved, which would be done
    // with the first export owner's identity.
    let export_of = |fh: &[u8]| Handle::decode(fh).map(|h| h.export);
    if let (Ok(a), Ok(b)) = (export_of(from_fh), export_of(to_fh))
        && a != b
    {
        status(w, Status::XDev);
        put_wcc(w, None, None);
        put_wcc(w, None, None);
        return Ok(());
    }
    let result = resolve(shared, from_fh).and_then(|(e, from)| {
        let (_, to) = resolve(shared, to_fh)?;
        Ok((e, from, to))
    });
    match result {
        Ok((e, from, to)) => {
            let s = e
                .rename(&from, from_name, &to, to_name)
                .err()
                .unwrap_or(Status::Ok);
            status(w, s);
            put_wcc(w, Some(&e.attr(&from.st)), e.attr_now(&from).as_ref());
            put_wcc(w, Some(&e.attr(&to.st)), e.attr_now(&to).as_ref());
        }
        Err(s) => {
            status(w, s);
            put_wcc(w, None, None);
            put_wcc(w, None, None);
        }
    }
    Ok(())
}

/// READDIR and READDIRPLUS. The cookie is the host directory offset after an entry, so the
/// next call resumes exactly there (nfsserve ignores the cookie of plain READDIR and loops).
/// `.` and `..` are not listed; the client synthesises them.
fn readdir(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter, plus: bool) -> XdrResult<()> {
    let dir_fh = fh(r)?;
    let cookie = r.u64()?;
    let _verf = r.fixed(8)?;
    let (dircount, maxcount) = if plus {
        (r.u32()? as usize, r.u32()? as usize)
    } else {
        (0, r.u32()? as usize)
    };
    let maxcount = maxcount.min(MAX_IO as usize);
    let (e, dir) = match resolve(shared, dir_fh) {
        Ok(found) => found,
        Err(s) => {
            status(w, s);
            put_post_op(w, None);
            return Ok(());
        }
    };
    let dir_attr = e.attr_now(&dir);
    let entries = match list(e, &dir, cookie, dircount, maxcount, plus) {
        Ok(entries) => entries,
        Err(s) => {
            status(w, s);
            put_post_op(w, dir_attr.as_ref());
            return Ok(());
        }
    };
    status(w, Status::Ok);
    put_post_op(w, dir_attr.as_ref());
    w.fixed(&[0; 8]); // cookies stay valid: verifier unused
    w.fixed(&entries.body);
    w.bool(false);
    w.bool(entries.eof);
    Ok(())
}

struct Listing {
    body: Vec<u8>,
    eof: bool,
}

fn list(
    e: &ExportFs,
    dir: &Loc,
    cookie: u64,
    dircount: usize,
    maxcount: usize,
    plus: bool,
) -> NfsResult<Listing> {
    // status + post_op_attr + verifier + end-of-list + eof
    let fixed = 4 + 4 + FATTR_SIZE + 8 + 4 + 4;
    let budget = maxcount.checked_sub(fixed).ok_or(Status::TooSmall)?;
    let dirfd = dir.open_dir()?;
    let mut entries = read_dir_from(&dirfd, cookie, e.path)?;
    let mut out = XdrWriter::with_capacity(budget.min(64 * 1024));
    let mut names_size = 0;
    let mut count = 0;
    let mut eof = true;
    while let Some(entry) = entries.next_entry() {
        let (entry, entry_cookie) = entry?;
        let name = entry.file_name();
        if is_dot(name) {
            continue;
        }
        let st = rustix::fs::statat(&dirfd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
        let key = match &st {
            Ok(st) => key_of(st),
            Err(_) if plus => continue, // vanished since listed
            Err(_) => (dir.key().0, entry.ino()),
        };
        if !e.visible(key) {
            continue;
        }
        let fileid = e.fileid(key);
        let name = name.to_bytes();
        let dir_part = 4 + 8 + XdrWriter::opaque_size(name.len()) + 8;
        let plus_part = if plus {
            4 + FATTR_SIZE + 4 + 4 + HANDLE_LEN
        } else {
            0
        };
        if out.len() + dir_part + plus_part > budget
            || (dircount > 0 && names_size + dir_part > dircount)
        {
            eof = false;
            break;
        }
        names_size += dir_part;
        count += 1;
        out.bool(true);
        out.u64(fileid);
        out.opaque(name);
        out.u64(entry_cookie);
        if plus {
            let st = st.map_err(Status::from)?;
            e.remember(dir.key(), name, &st);
            put_post_op(&mut out, Some(&e.attr(&st)));
            out.bool(true);
            put_fh(&mut out, &e.handle(&st));
        }
    }
    if count == 0 && !eof {
        return Err(Status::TooSmall);
    }
    Ok(Listing {
        body: out.into_bytes(),
        eof,
    })
}

fn fsstat(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let fh = fh(r)?;
    match resolve(shared, fh).and_then(|(e, loc)| Ok((e.attr(&loc.st), e.statvfs(&loc)?))) {
        Ok((a, v)) => {
            status(w, Status::Ok);
            put_post_op(w, Some(&a));
            let frsize = v.f_frsize;
            w.u64(v.f_blocks.saturating_mul(frsize));
            w.u64(v.f_bfree.saturating_mul(frsize));
            w.u64(v.f_bavail.saturating_mul(frsize));
            w.u64(v.f_files);
            w.u64(v.f_ffree);
            w.u64(v.f_favail);
            w.u32(0);
        }
        Err(s) => {
            status(w, s);
            put_post_op(w, None);
        }
    }
    Ok(())
}

fn fsinfo(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let fh = fh(r)?;
    match resolve(shared, fh) {
        Ok((e, loc)) => {
            status(w, Status::Ok);
            put_post_op(w, Some(&e.attr(&loc.st)));
            for v in [MAX_IO, MAX_IO, 4096, MAX_IO, MAX_IO, 4096, 64 * 1024] {
                w.u32(v); // rtmax rtpref rtmult wtmax wtpref wtmult dtpref
            }
            w.u64(i64::MAX as u64); // maxfilesize
            w.u32(0); // time_delta: nanosecond timestamps
            w.u32(1);
            w.u32(FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME);
        }
        Err(s) => {
            status(w, s);
            put_post_op(w, None);
        }
    }
    Ok(())
}

fn pathconf(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let fh = fh(r)?;
    match resolve(shared, fh) {
        Ok((e, loc)) => {
            status(w, Status::Ok);
            put_post_op(w, Some(&e.attr(&loc.st)));
            w.u32(1); // linkmax: no hard links through this server
            w.u32(super::fs::NAME_MAX as u32);
            w.bool(true); // no_trunc
            w.bool(true); // chown_restricted
            w.bool(false); // case_insensitive
            w.bool(true); // case_preserving
        }
        Err(s) => {
            status(w, s);
            put_post_op(w, None);
        }
    }
    Ok(())
}

fn commit(shared: &Shared, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<()> {
    let fh = fh(r)?;
    let _offset = r.u64()?;
    let _count = r.u32()?;
    match resolve(shared, fh) {
        Ok((e, loc)) => {
            let s = e.commit(&loc).err().unwrap_or(Status::Ok);
            status(w, s);
            put_wcc(w, Some(&e.attr(&loc.st)), e.attr_now(&loc).as_ref());
            if s == Status::Ok {
                w.fixed(&shared.verf);
            }
        }
        Err(s) => {
            status(w, s);
            put_wcc(w, None, None);
        }
    }
    Ok(())
}
