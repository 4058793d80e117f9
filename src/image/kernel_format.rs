//! Which kernel formats a guest image may ship: `VZLinuxBootLoader` (the vz driver) boots only
//! an uncompressed arm64 `Image` or an x86 bzImage, and hangs silently on anything else, so
//! `devbox image build` checks the kernel it assembles and the vz driver checks it again
//! before booting. Pure, so it is tested on any host.

/// How many bytes of the kernel [`check_kernel`] looks at.
pub const KERNEL_HEAD_LEN: usize = 0x240;

/// Why a kernel cannot boot under `VZLinuxBootLoader`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelProblem {
    #[error(
        "gzip-compressed; VZLinuxBootLoader needs the uncompressed arm64 Image \
         (it hangs silently on a compressed one)"
    )]
    Gzip,
    #[error(
        "an EFI zboot (compressed) image; VZLinuxBootLoader needs the uncompressed arm64 Image \
         (it hangs silently on a compressed one)"
    )]
    EfiZboot,
    #[error("not an arm64 Linux Image (no \"ARM\\x64\" magic at offset 0x38)")]
    NotArm64Image,
    #[error("not an x86 Linux bzImage (no \"HdrS\" at offset 0x202)")]
    NotBzImage,
    #[error("for {arch}, where Virtualization.framework runs no Linux guests")]
    UnsupportedArch { arch: String },
}

/// Checks the kernel's first bytes against what `VZLinuxBootLoader` boots on `arch`: the
/// uncompressed `Image` on arm64 (Documentation/arch/arm64/booting.rst: magic `ARM\x64` at
/// 0x38), a bzImage on x86_64 (Documentation/arch/x86/boot.rst: `HdrS` at 0x202).
pub fn check_kernel(arch: &str, head: &[u8]) -> Result<(), KernelProblem> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    match arch {
        "aarch64" => {
            if at(0, &[0x1f, 0x8b]) {
                Err(KernelProblem::Gzip)
            } else if at(0, b"MZ") && at(4, b"zimg") {
                Err(KernelProblem::EfiZboot)
            } else if at(0x38, b"ARM\x64") {
                Ok(())
            } else {
                Err(KernelProblem::NotArm64Image)
            }
        }
        "x86_64" => {
            if at(0x202, b"HdrS") {
                Ok(())
            } else {
                Err(KernelProblem::NotBzImage)
            }
        }
        other => Err(KernelProblem::UnsupportedArch {
            arch: other.to_owned(),
        }),
    }
}
