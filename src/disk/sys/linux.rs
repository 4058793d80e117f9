//! Linux: fallocate(2) with `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`, the call QEMU makes
//! for a guest's discard on a raw file (`discard=unmap`).

use nix::fcntl::{FallocateFlags, fallocate};

pub fn punch_hole(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    let to_off = |v: u64| libc::off_t::try_from(v).map_err(std::io::Error::other);
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        to_off(offset)?,
        to_off(len)?,
    )
    .map_err(std::io::Error::from)
}
