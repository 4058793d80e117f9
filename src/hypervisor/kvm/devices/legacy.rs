//! Legacy port-I/O devices: the 8250 UART that carries the guest console, the i8042 whose
//! reset command (0xFE on port 0x64) is how `reboot=k` guests leave, and devbox's ACPI
//! hardware-reduced sleep-control/reset registers (FADT `SLEEP_CONTROL_REG`, `RESET_REG`)
//! through which `poweroff` and ACPI reboot reach the VMM.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use vm_superio::{I8042Device, Serial, Trigger};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// An eventfd as a vm-superio interrupt/reset line.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

impl EventFdTrigger {
    pub fn new() -> std::io::Result<Self> {
        Ok(EventFdTrigger(EventFd::new(EFD_NONBLOCK)?))
    }
}

/// COM1, writing the guest's console output to `out` (the serial log file).
pub struct SerialPort(Serial<EventFdTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>);

impl SerialPort {
    /// `irq` is registered as the irqfd of GSI 4 by the caller.
    pub fn new(irq: EventFdTrigger, out: Box<dyn Write + Send>) -> SerialPort {
        SerialPort(Serial::new(irq, out))
    }
    pub fn irq(&self) -> &EventFd {
        &self.0.interrupt_evt().0
    }
    pub fn read(&mut self, offset: u8) -> u8 {
        self.0.read(offset)
    }
    pub fn write(&mut self, offset: u8, value: u8) {
        // A full log disk must not stop the guest: output is best-effort. The writer
        // decides when to flush (the driver's is line-buffered).
        let _ = self.0.write(offset, value);
    }
}

/// The i8042 controller; its reset line is the machine's "guest asked to reset" event.
pub struct I8042(I8042Device<EventFdTrigger>);

impl I8042 {
    pub fn new(reset: EventFdTrigger) -> I8042 {
        I8042(I8042Device::new(reset))
    }
    pub fn reset_evt(&self) -> &EventFd {
        &self.0.reset_evt().0
    }
    pub fn read(&mut self, offset: u8) -> u8 {
        self.0.read(offset)
    }
    pub fn write(&mut self, offset: u8, value: u8) {
        let _ = self.0.write(offset, value);
    }
}

/// `SLP_EN` and the `SLP_TYP` field of the sleep control register (ACPI 6.5 §4.8.3.7).
const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
/// The S5 value devbox's DSDT `_S5_` package declares.
pub const S5_SLP_TYP: u8 = 5;

/// What the guest asked the platform to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerEvent {
    PowerOff = 1,
    Reset = 2,
}

/// The hardware-reduced ACPI sleep and reset registers.
pub struct AcpiPm {
    event: AtomicU8,
    evt: EventFd,
}

impl AcpiPm {
    pub fn new() -> std::io::Result<AcpiPm> {
        Ok(AcpiPm {
            event: AtomicU8::new(0),
            evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }
    /// Signalled when the guest powers off or resets through ACPI.
    pub fn evt(&self) -> &EventFd {
        &self.evt
    }
    /// The first power event the guest requested.
    pub fn event(&self) -> Option<PowerEvent> {
        match self.event.load(Ordering::SeqCst) {
            1 => Some(PowerEvent::PowerOff),
            2 => Some(PowerEvent::Reset),
            _ => None,
        }
    }
    fn fire(&self, e: PowerEvent) {
        let _ = self
            .event
            .compare_exchange(0, e as u8, Ordering::SeqCst, Ordering::SeqCst);
        let _ = self.evt.write(1);
    }
    pub fn sleep_control(&self, v: u8) {
        if v & SLP_EN != 0 && (v >> SLP_TYP_SHIFT) & 7 == S5_SLP_TYP {
            self.fire(PowerEvent::PowerOff);
        }
    }
    /// WAK_STS is reported set: a guest polling for wake-up after S5 never waits.
    pub fn sleep_status(&self) -> u8 {
        0x80
    }
    pub fn reset(&self, v: u8) {
        if v == super::super::layout::ACPI_RESET_VALUE {
            self.fire(PowerEvent::Reset);
        }
    }
}
