//! A running vz machine: the `VZVirtualMachine` on its private serial queue, its delegate
//! (how the machine ended) and the guest-report listener.
//!
//! Every VZ object here is touched only inside closures run on the machine's queue
//! ([`OnQueue`]): `initWithConfiguration:queue:` binds the machine to that queue, and VZ calls
//! the delegates there too (research/vmm.md §5.2, "Threading"). The caller's thread only
//! waits: for the queue (`exec_sync`) or for a completion handler's message.

use std::path::Path;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use block2::RcBlock;
use dispatch2::{DispatchQueue, DispatchQueueAttr, DispatchRetained};
use objc2::rc::Retained;
use objc2::runtime::{NSObject, NSObjectProtocol, ProtocolObject};
use objc2::{AllocAnyThread, DefinedClass, define_class, msg_send};
use objc2_foundation::NSError;
use objc2_virtualization::{
    VZVirtioSocketDevice, VZVirtualMachine, VZVirtualMachineConfiguration,
    VZVirtualMachineDelegate, VZVirtualMachineState,
};

use super::nserror;
use super::vsock::{self, Listener};
use crate::hypervisor::guest_report::{GuestReport, ReportError};
use crate::hypervisor::vz_plan::{NsErrorParts, VzError, classify};
use crate::hypervisor::{HypervisorError, RunningVm, VmExit};

/// How long VZ gets to report that the machine started, or stopped when killed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A value that is only ever used on the machine's queue.
struct OnQueue<T>(T);
// SAFETY: the wrapped VZ objects are dereferenced only inside closures that `on_queue` runs on
// the machine's serial queue, one at a time; other threads merely move the wrapper around.
unsafe impl<T> Send for OnQueue<T> {}
// SAFETY: as above: shared references cross threads, the objects are only used on the queue.
unsafe impl<T> Sync for OnQueue<T> {}

/// Runs `f` on `queue` and returns its result. Never call it from the queue itself.
fn on_queue<R: Send>(queue: &DispatchQueue, f: impl FnOnce() -> R + Send) -> R {
    let mut out = None;
    queue.exec_sync(|| out = Some(f()));
    out.expect("exec_sync runs the closure before returning")
}

pub(super) struct MachineIvars {
    exit: Arc<Mutex<Option<VmExit>>>,
}

define_class!(
    // SAFETY: NSObject has no subclassing requirements, and `MachineDelegate` does not
    // implement `Drop`.
    #[unsafe(super(NSObject))]
    #[name = "DevboxMachineDelegate"]
    #[ivars = MachineIvars]
    pub(super) struct MachineDelegate;

    unsafe impl NSObjectProtocol for MachineDelegate {}

    unsafe impl VZVirtualMachineDelegate for MachineDelegate {
        #[unsafe(method(guestDidStopVirtualMachine:))]
        fn guest_did_stop(&self, _vm: &VZVirtualMachine) {
            self.record("the guest powered off".into());
        }

        #[unsafe(method(virtualMachine:didStopWithError:))]
        fn did_stop_with_error(&self, _vm: &VZVirtualMachine, error: &NSError) {
            let e = nserror::parts(error);
            self.record(format!(
                "Virtualization.framework stopped the machine: {} ({} code {})",
                e.description, e.domain, e.code
            ));
        }
    }
);

impl MachineDelegate {
    fn new(exit: Arc<Mutex<Option<VmExit>>>) -> Retained<Self> {
        let this = Self::alloc().set_ivars(MachineIvars { exit });
        // SAFETY: NSObject's `init` on a freshly allocated instance whose ivars are set.
        unsafe { msg_send![super(this), init] }
    }

    fn record(&self, description: String) {
        self.ivars()
            .exit
            .lock()
            .expect("exit lock")
            .get_or_insert(VmExit { description });
    }
}

/// Everything that lives on the queue, dropped there too.
struct Live {
    vm: Retained<VZVirtualMachine>,
    _delegate: Retained<MachineDelegate>,
    _listener: Listener,
}

pub(super) struct VzVm {
    queue: DispatchRetained<DispatchQueue>,
    live: Option<OnQueue<Live>>,
    exit: Arc<Mutex<Option<VmExit>>>,
    reports: Option<Receiver<Result<GuestReport, ReportError>>>,
    binary: std::path::PathBuf,
}

/// Creates the machine on a new queue, starts it and waits until VZ says it runs.
pub(super) fn start(
    name: &str,
    config: Retained<VZVirtualMachineConfiguration>,
    report_port: u32,
    binary: &Path,
) -> Result<VzVm, HypervisorError> {
    let queue = DispatchQueue::new(&format!("devbox.vz.{name}"), DispatchQueueAttr::SERIAL);
    let exit = Arc::new(Mutex::new(None));
    let (report_tx, report_rx) = channel();
    let config = OnQueue(config);
    let exit_for_delegate = exit.clone();
    let q = &*queue;
    let live = on_queue(q, move || -> Result<OnQueue<Live>, VzError> {
        let config = config;
        // SAFETY: runs on `q`, the queue the machine is bound to from here on; the
        // configuration was validated by the caller.
        let vm = unsafe {
            VZVirtualMachine::initWithConfiguration_queue(VZVirtualMachine::alloc(), &config.0, q)
        };
        let delegate = MachineDelegate::new(exit_for_delegate);
        // SAFETY: on the machine's queue; the delegate lives as long as the machine (`Live`).
        unsafe { vm.setDelegate(Some(ProtocolObject::from_ref(&*delegate))) };
        // SAFETY: on the machine's queue; reading the device list has no other precondition.
        let device = unsafe { vm.socketDevices() }
            .firstObject()
            .and_then(|d| d.downcast::<VZVirtioSocketDevice>().ok())
            .ok_or(VzError::NoSocketDevice)?;
        let listener = vsock::listen(&device, report_port, report_tx);
        Ok(OnQueue(Live {
            vm,
            _delegate: delegate,
            _listener: listener,
        }))
    })?;

    let machine = VzVm {
        queue,
        live: Some(live),
        exit,
        reports: Some(report_rx),
        binary: binary.to_owned(),
    };
    let (tx, rx) = channel::<Result<(), NsErrorParts>>();
    machine.with_vm(move |vm| {
        let done = RcBlock::new(move |err: *mut NSError| {
            // SAFETY: VZ passes nil or a valid NSError that lives for the call.
            let result = match unsafe { err.as_ref() } {
                None => Ok(()),
                Some(e) => Err(nserror::parts(e)),
            };
            let _ = tx.send(result);
        });
        // SAFETY: on the machine's queue; VZ copies the block and calls it on the queue.
        unsafe { vm.startWithCompletionHandler(&done) };
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(())) => Ok(machine),
        Ok(Err(e)) => Err(classify("starting the machine", e, &machine.binary).into()),
        Err(_) => Err(VzError::Timeout {
            operation: "starting the machine",
            timeout: START_TIMEOUT,
        }
        .into()),
    }
}

impl VzVm {
    /// Runs `f` with the machine on its queue.
    fn with_vm<R: Send>(&self, f: impl FnOnce(&VZVirtualMachine) -> R + Send) -> R {
        let live = self.live.as_ref().expect("the machine lives until drop");
        on_queue(&self.queue, || f(&live.0.vm))
    }

    /// Stops the machine at once (no guest shutdown) and waits for VZ to confirm.
    fn force_stop(&self) -> Result<(), VzError> {
        let (tx, rx) = channel::<Result<(), NsErrorParts>>();
        let started = self.with_vm(move |vm| {
            // SAFETY: on the machine's queue.
            if !unsafe { vm.canStop() } {
                return false;
            }
            let done = RcBlock::new(move |err: *mut NSError| {
                // SAFETY: VZ passes nil or a valid NSError that lives for the call.
                let result = match unsafe { err.as_ref() } {
                    None => Ok(()),
                    Some(e) => Err(nserror::parts(e)),
                };
                let _ = tx.send(result);
            });
            // SAFETY: on the machine's queue; VZ copies the block and calls it on the queue.
            unsafe { vm.stopWithCompletionHandler(&done) };
            true
        });
        if !started {
            return Ok(()); // already stopped (or never ran)
        }
        match rx.recv_timeout(STOP_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(classify("stopping the machine", e, &self.binary)),
            Err(_) => Err(VzError::Timeout {
                operation: "stopping the machine",
                timeout: STOP_TIMEOUT,
            }),
        }
    }

    fn recorded_exit(&self) -> Option<VmExit> {
        self.exit.lock().expect("exit lock").clone()
    }
}

impl RunningVm for VzVm {
    /// The machine runs inside the supervisor: there is no separate process.
    fn pid(&self) -> Option<u32> {
        None
    }

    /// `requestStop`: the guest sees a power-button press (on Linux, an input event busybox
    /// `acpid` turns into `poweroff`).
    fn request_stop(&mut self) -> Result<(), HypervisorError> {
        let binary = self.binary.clone();
        self.with_vm(move |vm| {
            // SAFETY: on the machine's queue.
            unsafe { vm.requestStopWithError() }
                .map_err(|e| classify("asking the guest to power off", nserror::parts(&e), &binary))
        })?;
        Ok(())
    }

    fn kill(&mut self) -> Result<(), HypervisorError> {
        self.force_stop()?;
        self.exit.lock().expect("exit lock").get_or_insert(VmExit {
            description: "the machine was stopped without a guest shutdown".into(),
        });
        Ok(())
    }

    fn try_wait(&mut self) -> Result<Option<VmExit>, HypervisorError> {
        if let Some(exit) = self.recorded_exit() {
            return Ok(Some(exit));
        }
        // SAFETY: on the machine's queue.
        let state = self.with_vm(|vm| unsafe { vm.state() });
        Ok(match state {
            VZVirtualMachineState::Stopped => Some(VmExit {
                description: "the machine stopped".into(),
            }),
            VZVirtualMachineState::Error => Some(VmExit {
                description: "Virtualization.framework put the machine in its error state".into(),
            }),
            _ => None,
        })
    }

    fn take_guest_reports(&mut self) -> Option<Receiver<Result<GuestReport, ReportError>>> {
        self.reports.take()
    }
}

impl Drop for VzVm {
    /// A machine handle dropped on an error path must not leave its guest running, and its
    /// VZ objects are released on their queue.
    fn drop(&mut self) {
        let _ = self.force_stop();
        if let Some(live) = self.live.take() {
            self.queue.exec_sync(move || drop(live));
        }
    }
}
