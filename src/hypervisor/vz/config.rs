//! A [`VzPlan`] as Virtualization.framework objects: one VZ call per plan field.

use std::io::PipeWriter;
use std::os::fd::IntoRawFd;
use std::path::Path;

use objc2::AllocAnyThread;
use objc2::rc::Retained;
use objc2_foundation::{NSArray, NSFileHandle, NSString, NSURL};
use objc2_virtualization::{
    VZDiskImageCachingMode, VZDiskImageStorageDeviceAttachment, VZDiskImageSynchronizationMode,
    VZEntropyDeviceConfiguration, VZFileHandleSerialPortAttachment, VZLinuxBootLoader,
    VZMACAddress, VZNATNetworkDeviceAttachment, VZNetworkDeviceConfiguration,
    VZSerialPortConfiguration, VZSocketDeviceConfiguration, VZStorageDeviceConfiguration,
    VZVirtioBlockDeviceConfiguration, VZVirtioConsoleDeviceSerialPortConfiguration,
    VZVirtioEntropyDeviceConfiguration, VZVirtioNetworkDeviceConfiguration,
    VZVirtioSocketDeviceConfiguration, VZVirtualMachineConfiguration,
};

use super::nserror;
use crate::hypervisor::vz_plan::{VzError, VzPlan};

/// Builds the machine's configuration. Validation is the caller's (it needs the binary path
/// for the entitlement hint).
/// `console` is the write end of the pipe the guest's console goes to.
pub(super) fn build(
    plan: &VzPlan,
    console: PipeWriter,
) -> Result<Retained<VZVirtualMachineConfiguration>, VzError> {
    let config = {
        // SAFETY: `new` has no preconditions; the object is used on this thread only until it
        // is handed to the machine's queue.
        unsafe { VZVirtualMachineConfiguration::new() }
    };
    let boot = {
        let kernel = file_url(&plan.kernel)?;
        let initrd = file_url(&plan.initrd)?;
        // SAFETY: a freshly allocated boot loader initialised once with a valid file URL; the
        // setters take valid objects.
        unsafe {
            let boot = VZLinuxBootLoader::initWithKernelURL(VZLinuxBootLoader::alloc(), &kernel);
            boot.setInitialRamdiskURL(Some(&initrd));
            boot.setCommandLine(&NSString::from_str(&plan.cmdline));
            boot
        }
    };

    let mut disks: Vec<Retained<VZStorageDeviceConfiguration>> = Vec::new();
    for d in &plan.disks {
        let url = file_url(&d.path)?;
        // SAFETY: a freshly allocated attachment initialised once; the caching and
        // synchronization modes are constants of the framework (research/vmm.md §5: the
        // default `automatic` mode has corrupted ext4).
        let attachment = unsafe {
            VZDiskImageStorageDeviceAttachment::initWithURL_readOnly_cachingMode_synchronizationMode_error(
                VZDiskImageStorageDeviceAttachment::alloc(),
                &url,
                d.read_only,
                VZDiskImageCachingMode::Cached,
                VZDiskImageSynchronizationMode::Fsync,
            )
        }
        .map_err(|e| VzError::DiskImage {
            path: d.path.clone(),
            reason: nserror::parts(&e).description,
        })?;
        // SAFETY: a freshly allocated device initialised once with a valid attachment; the
        // identifier was checked by the plan (at most 20 ASCII bytes).
        let blk = unsafe {
            let blk = VZVirtioBlockDeviceConfiguration::initWithAttachment(
                VZVirtioBlockDeviceConfiguration::alloc(),
                &attachment,
            );
            blk.setBlockDeviceIdentifier(&NSString::from_str(d.identifier));
            blk
        };
        disks.push(Retained::into_super(blk));
    }

    // SAFETY: the string is a MAC the plan checked; `initWithString:` returns nil otherwise.
    let mac = unsafe {
        VZMACAddress::initWithString(VZMACAddress::alloc(), &NSString::from_str(&plan.mac))
    }
    .ok_or_else(|| VzError::BadMac {
        mac: plan.mac.clone(),
    })?;
    // SAFETY: `new` objects, set up with valid objects before the configuration is used.
    let nic: Retained<VZNetworkDeviceConfiguration> = unsafe {
        let nic = VZVirtioNetworkDeviceConfiguration::new();
        let nat = Retained::into_super(VZNATNetworkDeviceAttachment::new());
        nic.setAttachment(Some(&nat));
        nic.setMACAddress(&mac);
        Retained::into_super(nic)
    };

    // VZ writes the guest's console to this descriptor; the file handle owns it from here
    // and closes it when VZ releases the attachment, which ends the pump reading the pipe.
    let console_fd = console.into_raw_fd();
    let console_handle = NSFileHandle::initWithFileDescriptor_closeOnDealloc(
        NSFileHandle::alloc(),
        console_fd,
        true,
    );
    // SAFETY: a freshly allocated attachment initialised once; the writing handle holds a
    // valid, open descriptor (the write end of a pipe) and there is no reading handle (the
    // guest gets no console input).
    let console_file = unsafe {
        VZFileHandleSerialPortAttachment::initWithFileHandleForReading_fileHandleForWriting(
            VZFileHandleSerialPortAttachment::alloc(),
            None,
            Some(&console_handle),
        )
    };
    // SAFETY: a `new` port given a valid attachment.
    let console: Retained<VZSerialPortConfiguration> = unsafe {
        let port = VZVirtioConsoleDeviceSerialPortConfiguration::new();
        port.setAttachment(Some(&Retained::into_super(console_file)));
        Retained::into_super(port)
    };

    // SAFETY: `new` has no preconditions.
    let entropy: Retained<VZEntropyDeviceConfiguration> =
        Retained::into_super(unsafe { VZVirtioEntropyDeviceConfiguration::new() });
    // SAFETY: `new` has no preconditions.
    let vsock: Retained<VZSocketDeviceConfiguration> =
        Retained::into_super(unsafe { VZVirtioSocketDeviceConfiguration::new() });

    // SAFETY: every argument is a valid, fully set-up object of the class the setter expects.
    unsafe {
        config.setCPUCount(plan.cpus);
        config.setMemorySize(plan.memory_bytes);
        config.setBootLoader(Some(&Retained::into_super(boot)));
        config.setStorageDevices(&NSArray::from_retained_slice(&disks));
        config.setNetworkDevices(&NSArray::from_retained_slice(&[nic]));
        config.setSerialPorts(&NSArray::from_retained_slice(&[console]));
        config.setEntropyDevices(&NSArray::from_retained_slice(&[entropy]));
        config.setSocketDevices(&NSArray::from_retained_slice(&[vsock]));
    }
    Ok(config)
}

fn file_url(path: &Path) -> Result<Retained<NSURL>, VzError> {
    NSURL::from_file_path(path).ok_or_else(|| VzError::BadPath {
        path: path.to_owned(),
    })
}
