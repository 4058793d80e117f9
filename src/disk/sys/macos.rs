//! macOS: `fcntl(F_PUNCHHOLE)` (APFS), what Virtualization.framework relies on for a guest's
//! discard on a raw disk image.

use std::os::fd::AsRawFd;

pub fn punch_hole(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    let to_off = |v: u64| libc::off_t::try_from(v).map_err(std::io::Error::other);
    let arg = libc::fpunchhole_t {
        fp_flags: 0,
        reserved: 0,
        fp_offset: to_off(offset)?,
        fp_length: to_off(len)?,
    };
    // SAFETY: the descriptor is owned by `file`, open for the whole call, and `arg` is a
    // valid `fpunchhole_t` that outlives the call; F_PUNCHHOLE only reads it.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_PUNCHHOLE, &arg) };
    if rc == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
