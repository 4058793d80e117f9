//! Can this host's KVM boot a stock Linux kernel?
//!
//! `/dev/kvm` existing is not enough: under the software-nested `kvm_pvm` hypervisor a stock
//! Debian kernel dies with KVM_EXIT_INTERNAL_ERROR (emulation failure on `lock cmpxchg16b`,
//! then `xrstor`) and runs ~100x slower (research/vmm.md §1.9). So the probe rejects kvm_pvm,
//! a device it cannot open, and a host CPU without hardware virtualization flags.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmProbe {
    pub usable: bool,
    pub reason: String,
}

pub fn kvm() -> KvmProbe {
    probe_at(Path::new("/"))
}

/// The probe against a root directory (tests point it at a fake tree).
pub fn probe_at(root: &Path) -> KvmProbe {
    let no = |reason: String| KvmProbe {
        usable: false,
        reason,
    };
    let dev = root.join("dev/kvm");
    if !dev.exists() {
        return no("/dev/kvm does not exist (no KVM on this host)".into());
    }
    if root.join("sys/module/kvm_pvm").exists() {
        return no(
            "/dev/kvm is kvm_pvm, a software-nested hypervisor on which stock kernels fail".into(),
        );
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
    {
        return no(format!(
            "cannot open /dev/kvm ({e}); add your user to the kvm group"
        ));
    }
    let cpuinfo = std::fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default();
    let has_hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !has_hw {
        return no("the CPU reports neither vmx nor svm".into());
    }
    KvmProbe {
        usable: true,
        reason: "/dev/kvm is hardware KVM (vmx/svm)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(kvm: bool, pvm: bool, flags: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        if kvm {
            std::fs::write(d.path().join("dev/kvm"), "").unwrap();
        }
        if pvm {
            std::fs::create_dir_all(d.path().join("sys/module/kvm_pvm")).unwrap();
        }
        std::fs::write(
            d.path().join("proc/cpuinfo"),
            format!("flags\t: fpu {flags}\n"),
        )
        .unwrap();
        d
    }

    #[test]
    fn rejects_missing_pvm_and_no_hw() {
        assert!(!probe_at(tree(false, false, "vmx").path()).usable);
        let p = probe_at(tree(true, true, "vmx").path());
        assert!(!p.usable && p.reason.contains("kvm_pvm"), "{p:?}");
        assert!(!probe_at(tree(true, false, "sse").path()).usable);
        assert!(probe_at(tree(true, false, "vmx").path()).usable);
        assert!(probe_at(tree(true, false, "svm").path()).usable);
    }
}
