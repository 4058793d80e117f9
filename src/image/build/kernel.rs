//! The image's kernel file: the kernel package's `vmlinuz`, made bootable as it is by the
//! machine's boot loader.
//!
//! On arm64 that means the uncompressed `Image`: Virtualization.framework's
//! `VZLinuxBootLoader` hangs silently on a compressed one (see `hypervisor::vz_plan`).
//! Debian 12's arm64 packages ship `vmlinuz` uncompressed already, but distributions and
//! later Debian kernels may ship it as a gzip'd `Image` (`Image.gz`), which is unpacked here.
//! The result is checked with the same rule the vz driver applies before boot, so an image
//! that would hang is never written.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{Arch, BuildError};
use crate::image::kernel_format::{KERNEL_HEAD_LEN, KernelProblem, check_kernel};

/// gzip's magic bytes (RFC 1952 §2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Writes the kernel `src` to `dest` in the form `arch`'s boot loaders take: gunzipped when it
/// is gzip'd, copied otherwise, then checked.
pub fn install(src: &Path, dest: &Path, arch: Arch) -> Result<(), BuildError> {
    let mut input = fs_err::File::open(src)?;
    let mut magic = [0u8; 2];
    let gzipped = match input.read_exact(&mut magic) {
        Ok(()) => magic == GZIP_MAGIC,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(e.into()),
    };
    drop(input);
    if gzipped {
        gunzip(src, dest)?;
    } else {
        fs_err::copy(src, dest)?;
    }
    check(dest, arch)
}

/// Streams the gzip file `src` into `dest`.
fn gunzip(src: &Path, dest: &Path) -> Result<(), BuildError> {
    let mut decoder = GzDecoder::new(std::io::BufReader::new(fs_err::File::open(src)?));
    let mut out = std::io::BufWriter::new(fs_err::File::create(dest)?);
    std::io::copy(&mut decoder, &mut out).map_err(|source| BuildError::Gunzip {
        path: src.to_owned(),
        source,
    })?;
    out.flush()?;
    Ok(())
}

/// Checks the kernel's first bytes against what `arch`'s boot loaders take.
fn check(path: &Path, arch: Arch) -> Result<(), BuildError> {
    let mut head = Vec::with_capacity(KERNEL_HEAD_LEN);
    fs_err::File::open(path)?
        .take(KERNEL_HEAD_LEN as u64)
        .read_to_end(&mut head)?;
    check_kernel(arch.name(), &head).map_err(|problem| BuildError::Kernel {
        path: PathBuf::from(path),
        problem,
    })
}

/// The hint for a kernel that is not in the expected form.
pub fn hint(problem: &KernelProblem) -> String {
    match problem {
        KernelProblem::EfiZboot => "the kernel package ships an EFI zboot image, which devbox \
            cannot unpack yet; pin a kernel package that ships a plain or gzip'd Image"
            .into(),
        _ => "the kernel package does not ship the kernel format devbox expects for this \
              architecture; `devbox image build --force` rebuilds from fresh package lists"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    /// The first bytes of an arm64 `Image` (Documentation/arch/arm64/booting.rst: `MZ` for
    /// the EFI stub, magic `ARM\x64` at 0x38) followed by a recognisable body.
    fn arm64_image() -> Vec<u8> {
        let mut img = vec![0u8; 0x40];
        img[..2].copy_from_slice(b"MZ");
        img[0x38..0x3c].copy_from_slice(b"ARM\x64");
        img.extend((0..100_000u32).flat_map(|i| i.to_le_bytes()));
        img
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzipped_arm64_kernel_is_written_uncompressed() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("vmlinuz.gz"), dir.path().join("vmlinuz"));
        let image = arm64_image();
        let packed = gzip(&image);
        assert_eq!(packed[..2], GZIP_MAGIC);
        fs_err::write(&src, &packed).unwrap();
        install(&src, &dest, Arch::Arm64).unwrap();
        assert_eq!(fs_err::read(&dest).unwrap(), image);
    }

    #[test]
    fn uncompressed_arm64_kernel_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("in"), dir.path().join("out"));
        fs_err::write(&src, arm64_image()).unwrap();
        install(&src, &dest, Arch::Arm64).unwrap();
        assert_eq!(fs_err::read(&dest).unwrap(), arm64_image());
    }

    #[test]
    fn kernel_of_the_wrong_form_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("in"), dir.path().join("out"));
        // An EFI zboot image: compressed, and not gzip on the outside.
        let mut zboot = vec![0u8; 0x240];
        zboot[..2].copy_from_slice(b"MZ");
        zboot[4..8].copy_from_slice(b"zimg");
        fs_err::write(&src, &zboot).unwrap();
        let e = install(&src, &dest, Arch::Arm64).unwrap_err();
        assert!(
            matches!(
                e,
                BuildError::Kernel {
                    problem: KernelProblem::EfiZboot,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.hint().unwrap().contains("zboot"));
        // A gzip'd file that holds no arm64 Image, and an arm64 Image where x86_64 is built.
        fs_err::write(&src, gzip(b"not a kernel")).unwrap();
        assert!(matches!(
            install(&src, &dest, Arch::Arm64),
            Err(BuildError::Kernel {
                problem: KernelProblem::NotArm64Image,
                ..
            })
        ));
        fs_err::write(&src, arm64_image()).unwrap();
        assert!(matches!(
            install(&src, &dest, Arch::X86_64),
            Err(BuildError::Kernel {
                problem: KernelProblem::NotBzImage,
                ..
            })
        ));
    }

    #[test]
    fn truncated_gzip_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("vmlinuz"), dir.path().join("out"));
        let packed = gzip(&arm64_image());
        fs_err::write(&src, &packed[..packed.len() / 2]).unwrap();
        let e = install(&src, &dest, Arch::Arm64).unwrap_err();
        assert!(
            matches!(&e, BuildError::Gunzip { path, .. } if *path == src),
            "{e:?}"
        );
    }
}
