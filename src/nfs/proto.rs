//! One RPC record in, one reply out: program/version dispatch, MOUNT v3 (RFC 1813 §5) and
//! the single PORTMAP call a client may make to this port.
//!
//! Credentials: every MOUNT and NFS procedure but NULL needs `AUTH_UNIX` (the Linux client's
//! default); any other flavor is refused with AUTH_TOOWEAK, a malformed one with
//! AUTH_BADCRED (RFC 5531 §9). NULL is answered whatever the flavor: the Linux client pings
//! with `AUTH_NONE`. Together with the reserved source port (`server.rs`), this is knfsd's
//! `secure` + `sec=sys`; which process in the guest may use those is the guest's firewall's
//! business (README, "Who can reach a share").

use super::fs::ExportFs;
use super::nfs3;
use super::rpc::{Accept, Auth, AuthStat, accepted, auth_error, parse_call, rpc_mismatch};
use super::xdr::{Garbage, XdrReader, XdrResult, XdrWriter};

const PMAP_PROG: u32 = 100_000;
const NFS_PROG: u32 = 100_003;
const MOUNT_PROG: u32 = 100_005;

const MNT3_OK: u32 = 0;
const MNT3ERR_NOENT: u32 = 2;
const MNT3ERR_SERVERFAULT: u32 = 10006;

/// State shared by every connection of one server.
pub(crate) struct Shared {
    pub exports: Vec<ExportFs>,
    pub port: u16,
    /// WRITE/COMMIT verifier: new for every server instance, so after a restart the client
    /// resends data it wrote UNSTABLE and had not yet seen committed.
    pub verf: [u8; 8],
}

/// Handles one record. `None`: not even an xid could be read; nothing to answer.
pub(crate) fn handle_record(shared: &Shared, record: &[u8]) -> Option<Vec<u8>> {
    let call = match parse_call(record) {
        Ok(call) => call,
        Err(Some(xid)) => return Some(accepted(xid, Accept::GarbageArgs, (0, 0)).into_bytes()),
        Err(None) => return None,
    };
    if call.rpcvers != 2 {
        return Some(rpc_mismatch(call.xid).into_bytes());
    }
    let version = match call.prog {
        NFS_PROG | MOUNT_PROG => 3,
        PMAP_PROG => 2,
        _ => return Some(accepted(call.xid, Accept::ProgUnavail, (0, 0)).into_bytes()),
    };
    if call.vers != version {
        let reply = accepted(call.xid, Accept::ProgMismatch, (version, version));
        return Some(reply.into_bytes());
    }
    let cred = match (call.prog, call.proc_, call.auth) {
        (_, _, Auth::Unix(cred)) => Some(cred),
        (PMAP_PROG, _, _) | (_, 0, _) => None,
        (_, _, Auth::Bad) => return Some(auth_error(call.xid, AuthStat::BadCred).into_bytes()),
        (_, _, Auth::Weak) => return Some(auth_error(call.xid, AuthStat::TooWeak).into_bytes()),
    };
    let mut w = accepted(call.xid, Accept::Success, (0, 0));
    let mut r = XdrReader::new(call.args);
    let result = match (call.prog, cred) {
        (NFS_PROG, Some(cred)) => nfs3::call(shared, cred, call.proc_, &mut r, &mut w),
        (NFS_PROG, None) => Ok(true), // NULL
        (MOUNT_PROG, _) => mount(shared, call.proc_, &mut r, &mut w),
        _ => portmap(shared, call.proc_, &mut r, &mut w),
    };
    let reply = match result {
        Ok(true) => w,
        Ok(false) => accepted(call.xid, Accept::ProcUnavail, (0, 0)),
        Err(Garbage) => accepted(call.xid, Accept::GarbageArgs, (0, 0)),
    };
    Some(reply.into_bytes())
}

/// The export a MOUNT path names: exact match, a trailing `/` ignored.
fn find_export<'s>(shared: &'s Shared, path: &[u8]) -> Option<&'s ExportFs> {
    let trimmed = match path {
        [rest @ .., b'/'] if !rest.is_empty() => rest,
        p => p,
    };
    shared.exports.iter().find(|e| e.name.as_bytes() == trimmed)
}

fn mount(shared: &Shared, proc_: u32, r: &mut XdrReader<'_>, w: &mut XdrWriter) -> XdrResult<bool> {
    match proc_ {
        0 => {}
        1 => {
            let path = r.opaque(1024)?;
            match find_export(shared, path).map(|e| e.root_handle()) {
                Some(Ok(fh)) => {
                    w.u32(MNT3_OK);
                    w.opaque(&fh);
                    w.u32(1);
                    w.u32(1); // AUTH_UNIX only
                }
                Some(Err(_)) => w.u32(MNT3ERR_SERVERFAULT),
                None => w.u32(MNT3ERR_NOENT),
            }
        }
        2 => w.bool(false), // DUMP: mounts are not tracked
        3 => {
            r.opaque(1024)?; // UMNT
        }
        4 => {} // UMNTALL
        5 => {
            for e in &shared.exports {
                w.bool(true);
                w.opaque(e.name.as_bytes());
                w.bool(false); // no group list: access is decided by peer address and port
            }
            w.bool(false);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// PORTMAP GETPORT answers this server's own port for NFS and MOUNT over TCP, so clients that
/// insist on asking a portmapper can be pointed at this port.
fn portmap(
    shared: &Shared,
    proc_: u32,
    r: &mut XdrReader<'_>,
    w: &mut XdrWriter,
) -> XdrResult<bool> {
    match proc_ {
        0 => {}
        3 => {
            let prog = r.u32()?;
            let _vers = r.u32()?;
            let prot = r.u32()?;
            let _port = r.u32()?;
            let served = matches!(prog, NFS_PROG | MOUNT_PROG) && prot == 6;
            w.u32(if served { u32::from(shared.port) } else { 0 });
        }
        _ => return Ok(false),
    }
    Ok(true)
}
