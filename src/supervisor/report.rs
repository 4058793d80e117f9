//! Waiting for a DHCP-addressed (vz) guest to report its address
//! ([`crate::hypervisor::guest_report`]), on the main loop's thread before the main loop:
//! until the report comes, there is no address to reach SSH, route to or name in DNS. Stop
//! requests and signals are honoured meanwhile, and a guest that ends is noticed.

use std::net::Ipv4Addr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use super::Event;
use super::control::ControlEvent;
use crate::hypervisor::RunningVm;

/// How the wait ended, when not in error.
#[derive(Debug, PartialEq, Eq)]
pub enum Awaited {
    Address(Ipv4Addr),
    /// Asked to stop first; the guest was ended. Why, for the log and the state file.
    Stopped(String),
}

/// Waits for the guest's first report until `deadline`. A report that does not parse fails at
/// once: the guest sends one per lease, so waiting longer would only hide the reason.
pub fn await_guest_address(
    vm: &mut dyn RunningVm,
    events: &Receiver<Event>,
    deadline: Instant,
) -> Result<Awaited> {
    let reports = vm
        .take_guest_reports()
        .ok_or_else(|| anyhow!("this driver's guests do not report their address"))?;
    loop {
        if let Some(exit) = vm.try_wait()? {
            bail!(
                "the guest ended before it reported its address: {}",
                exit.description
            );
        }
        match events.try_recv() {
            Ok(Event::Control(ControlEvent::Stop { .. })) | Ok(Event::Signal(_)) => {
                vm.kill()?;
                return Ok(Awaited::Stopped(
                    "stopped before the guest reported its address".into(),
                ));
            }
            Ok(_) | Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => {}
        }
        if Instant::now() >= deadline {
            vm.kill()?;
            bail!(
                "the guest did not report its address over vsock in time (no DHCP lease, or \
                 the report failed: the console shows which)"
            );
        }
        match reports.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(report)) => return Ok(Awaited::Address(report.ip)),
            Ok(Err(e)) => {
                vm.kill()?;
                return Err(anyhow::Error::new(e).context("reading the guest's address report"));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                vm.kill()?;
                bail!("the driver stopped listening for the guest's address report");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::guest_report::{GuestReport, ReportError};
    use crate::hypervisor::{HypervisorError, VmExit};
    use std::sync::mpsc::{Sender, channel};

    type Report = Result<GuestReport, ReportError>;

    /// A machine whose reports and end the test controls.
    struct FakeVm {
        reports: Option<Receiver<Report>>,
        exit: Option<VmExit>,
        killed: bool,
    }

    impl RunningVm for FakeVm {
        fn pid(&self) -> Option<u32> {
            None
        }
        fn request_stop(&mut self) -> Result<(), HypervisorError> {
            Ok(())
        }
        fn kill(&mut self) -> Result<(), HypervisorError> {
            self.killed = true;
            Ok(())
        }
        fn try_wait(&mut self) -> Result<Option<VmExit>, HypervisorError> {
            Ok(self.exit.clone())
        }
        fn take_guest_reports(&mut self) -> Option<Receiver<Report>> {
            self.reports.take()
        }
    }

    fn machine() -> (FakeVm, Sender<Report>, Sender<Event>, Receiver<Event>) {
        let (report_tx, report_rx) = channel();
        let (event_tx, event_rx) = channel();
        let vm = FakeVm {
            reports: Some(report_rx),
            exit: None,
            killed: false,
        };
        (vm, report_tx, event_tx, event_rx)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn the_reported_address_is_the_guests() {
        let (mut vm, reports, _events, rx) = machine();
        let ip: Ipv4Addr = "192.168.64.5".parse().unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            reports.send(Ok(GuestReport { ip })).unwrap();
        });
        assert_eq!(
            await_guest_address(&mut vm, &rx, soon()).unwrap(),
            Awaited::Address(ip)
        );
        assert!(!vm.killed);
    }

    #[test]
    fn a_bad_report_ends_the_machine_with_its_reason() {
        let (mut vm, reports, _events, rx) = machine();
        reports
            .send(Err(ReportError::Version {
                version: "2".into(),
            }))
            .unwrap();
        let err = await_guest_address(&mut vm, &rx, soon()).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "reading the guest's address report: the guest speaks report protocol version 2; \
             this devbox knows version 1"
        );
        assert!(vm.killed);
    }

    #[test]
    fn a_stop_request_while_waiting_ends_the_guest() {
        let (mut vm, _reports, events, rx) = machine();
        events
            .send(Event::Control(ControlEvent::Stop { force: false }))
            .unwrap();
        assert!(matches!(
            await_guest_address(&mut vm, &rx, soon()).unwrap(),
            Awaited::Stopped(_)
        ));
        assert!(vm.killed);
    }

    #[test]
    fn silence_and_death_are_errors() {
        let (mut vm, _reports, _events, rx) = machine();
        let err = await_guest_address(&mut vm, &rx, Instant::now()).unwrap_err();
        assert!(err.to_string().contains("in time"), "{err}");
        assert!(vm.killed);

        let (mut vm, _reports, _events, rx) = machine();
        vm.exit = Some(VmExit {
            description: "the guest powered off".into(),
        });
        let err = await_guest_address(&mut vm, &rx, soon()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the guest ended before it reported its address: the guest powered off"
        );

        let (mut vm, reports, _events, rx) = machine();
        drop(reports);
        let err = await_guest_address(&mut vm, &rx, soon()).unwrap_err();
        assert!(err.to_string().contains("stopped listening"), "{err}");

        let mut vm = FakeVm {
            reports: None,
            exit: None,
            killed: false,
        };
        assert!(await_guest_address(&mut vm, &rx, soon()).is_err());
    }
}
