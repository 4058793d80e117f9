//! Device models and the two buses the vCPU threads dispatch exits to.
//!
//! - Port I/O: 8250 COM1 ([`legacy::SerialPort`]), i8042 reset ([`legacy::I8042`]) and the
//!   ACPI sleep/reset registers ([`legacy::AcpiPm`]).
//! - MMIO: one [`virtio::mmio::MmioTransport`] per 4 KiB slot in the MMIO gap.
//!
//! Every device sits behind its own mutex, so a serial write never waits for a disk request.

pub mod legacy;
pub mod virtio;

use std::sync::{Arc, Mutex};

use super::layout;
use virtio::mmio::MmioTransport;

/// The port-I/O and MMIO devices of one machine.
pub struct Buses {
    pub serial: Arc<Mutex<legacy::SerialPort>>,
    pub i8042: Arc<Mutex<legacy::I8042>>,
    pub acpi: Arc<legacy::AcpiPm>,
    /// virtio-mmio slots, in slot order.
    pub virtio: Vec<Arc<Mutex<MmioTransport>>>,
}

impl Buses {
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        if (layout::PORT_SERIAL..layout::PORT_SERIAL + 8).contains(&port) && data.len() == 1 {
            data[0] = lock(&self.serial).read((port - layout::PORT_SERIAL) as u8);
        } else if (layout::PORT_I8042..layout::PORT_I8042 + 5).contains(&port) && data.len() == 1 {
            data[0] = lock(&self.i8042).read((port - layout::PORT_I8042) as u8);
        } else if port == layout::PORT_ACPI_SLEEP_STATUS && data.len() == 1 {
            data[0] = self.acpi.sleep_status();
        }
    }

    pub fn pio_write(&self, port: u16, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        if (layout::PORT_SERIAL..layout::PORT_SERIAL + 8).contains(&port) {
            lock(&self.serial).write((port - layout::PORT_SERIAL) as u8, v);
        } else if (layout::PORT_I8042..layout::PORT_I8042 + 5).contains(&port) {
            lock(&self.i8042).write((port - layout::PORT_I8042) as u8, v);
        } else if port == layout::PORT_ACPI_SLEEP_CONTROL {
            self.acpi.sleep_control(v);
        } else if port == layout::PORT_ACPI_RESET {
            self.acpi.reset(v);
        }
    }

    fn slot(&self, addr: u64) -> Option<(&Arc<Mutex<MmioTransport>>, u64)> {
        let off = addr.checked_sub(layout::VIRTIO_MMIO_BASE)?;
        let slot = (off / layout::VIRTIO_MMIO_SIZE) as usize;
        let t = self.virtio.get(slot)?;
        Some((t, off % layout::VIRTIO_MMIO_SIZE))
    }

    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.slot(addr) {
            Some((t, off)) => lock(t).read(off, data),
            None => data.fill(0xff),
        }
    }

    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((t, off)) = self.slot(addr) {
            lock(t).write(off, data);
        }
    }
}

/// Locks a device mutex. A device that panicked while holding its lock has left its state
/// half-updated; the machine cannot go on with it, so the panic propagates to the vCPU thread,
/// which reports the machine as crashed.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock()
        .expect("a device thread panicked while holding this device")
}
