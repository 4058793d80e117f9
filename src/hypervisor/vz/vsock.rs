//! The host end of the guest's report ([`crate::hypervisor::guest_report`]): a
//! `VZVirtioSocketListener` on the report port whose delegate accepts each guest connection,
//! takes its own descriptor of the socket and parses the report on a short-lived thread of
//! its own, so the machine's queue never blocks on a guest.

use std::fs::File;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::mpsc::Sender;

use objc2::rc::Retained;
use objc2::runtime::{NSObject, NSObjectProtocol, ProtocolObject};
use objc2::{AllocAnyThread, DefinedClass, define_class, msg_send};
use objc2_virtualization::{
    VZVirtioSocketConnection, VZVirtioSocketDevice, VZVirtioSocketListener,
    VZVirtioSocketListenerDelegate,
};

use crate::hypervisor::guest_report::{self, GuestReport, ReportError};

pub(super) struct ListenerIvars {
    reports: Sender<Result<GuestReport, ReportError>>,
}

define_class!(
    // SAFETY: NSObject has no subclassing requirements, and `ReportListener` does not
    // implement `Drop`.
    #[unsafe(super(NSObject))]
    #[name = "DevboxReportListener"]
    #[ivars = ListenerIvars]
    pub(super) struct ReportListener;

    unsafe impl NSObjectProtocol for ReportListener {}

    unsafe impl VZVirtioSocketListenerDelegate for ReportListener {
        #[unsafe(method(listener:shouldAcceptNewConnection:fromSocketDevice:))]
        fn should_accept(
            &self,
            _listener: &VZVirtioSocketListener,
            connection: &VZVirtioSocketConnection,
            _device: &VZVirtioSocketDevice,
        ) -> bool {
            self.accept(connection)
        }
    }
);

impl ReportListener {
    fn new(reports: Sender<Result<GuestReport, ReportError>>) -> Retained<Self> {
        let this = Self::alloc().set_ivars(ListenerIvars { reports });
        // SAFETY: NSObject's `init` on a freshly allocated instance whose ivars are set.
        unsafe { msg_send![super(this), init] }
    }

    /// Takes a descriptor of the connection's socket (the connection object closes its own
    /// when it is released) and reads the report off the queue.
    fn accept(&self, connection: &VZVirtioSocketConnection) -> bool {
        // SAFETY: `fileDescriptor` only reads a property; -1 means the connection is closed.
        let raw = unsafe { connection.fileDescriptor() };
        if raw < 0 {
            return false;
        }
        // SAFETY: `raw` is open for as long as `connection` lives, which spans this call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
        let Ok(fd) = borrowed.try_clone_to_owned() else {
            return false;
        };
        let reports = self.ivars().reports.clone();
        std::thread::Builder::new()
            .name("vz-report".into())
            .spawn(move || read_report(fd, reports))
            .is_ok()
    }
}

fn read_report(fd: OwnedFd, reports: Sender<Result<GuestReport, ReportError>>) {
    let conn = File::from(fd);
    // The supervisor may have stopped listening; nothing else wants the report then.
    let _ = reports.send(guest_report::read(&conn));
}

/// A listener and its delegate for the machine's socket device, held (never read) for the
/// machine's whole life: VZ holds the delegate weakly.
pub(super) struct Listener {
    _listener: Retained<VZVirtioSocketListener>,
    _delegate: Retained<ReportListener>,
}

/// Creates the listener and registers it on `device` for `port`. Must run on the machine's
/// queue (VZ's rule for everything attached to a machine).
pub(super) fn listen(
    device: &VZVirtioSocketDevice,
    port: u32,
    reports: Sender<Result<GuestReport, ReportError>>,
) -> Listener {
    let delegate = ReportListener::new(reports);
    // SAFETY: `new` has no preconditions; the delegate is a live object conforming to the
    // protocol, kept alive by the returned `Listener`; the caller runs on the device's queue.
    let listener = unsafe {
        let listener = VZVirtioSocketListener::new();
        listener.setDelegate(Some(ProtocolObject::from_ref(&*delegate)));
        device.setSocketListener_forPort(&listener, port);
        listener
    };
    Listener {
        _listener: listener,
        _delegate: delegate,
    }
}
