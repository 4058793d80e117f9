//! The event-loop thread: one `event_manager::EventManager` watching every virtio queue's
//! ioeventfd, the TAP descriptor, the i8042 reset line and the ACPI power events.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};

use super::devices::legacy::{AcpiPm, I8042, PowerEvent};
use super::devices::lock;
use super::devices::virtio::mmio::MmioTransport;
use super::run_state::RunState;

/// Data tag of a backend descriptor (queue indices are small).
const BACKEND: u32 = u32::MAX;

/// Routes a virtio device's notifications to its transport.
pub struct VirtioEvents(pub Arc<Mutex<MmioTransport>>);

impl MutEventSubscriber for VirtioEvents {
    fn init(&mut self, ops: &mut EventOps) {
        let t = lock(&self.0);
        for (i, evt) in t.queue_evts().iter().enumerate() {
            ops.add(Events::with_data(evt, i as u32, EventSet::IN))
                .expect("register a queue eventfd with epoll");
        }
        if let Some(fd) = t.backend_fd() {
            ops.add(Events::with_data_raw(
                fd,
                BACKEND,
                EventSet::IN | EventSet::EDGE_TRIGGERED,
            ))
            .expect("register the backend descriptor with epoll");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let mut t = lock(&self.0);
        match events.data() {
            BACKEND => t.backend_ready(),
            i => {
                let i = i as usize;
                if let Some(evt) = t.queue_evts().get(i) {
                    let _ = evt.read();
                }
                t.notify(i);
            }
        }
    }
}

/// Turns the guest's reset and power-off requests into the machine's exit.
pub struct PowerEvents {
    pub i8042: Arc<Mutex<I8042>>,
    pub acpi: Arc<AcpiPm>,
    pub shared: Arc<RunState>,
}

const I8042_RESET: u32 = 0;
const ACPI_EVENT: u32 = 1;
const STOP: u32 = 2;

impl MutEventSubscriber for PowerEvents {
    fn init(&mut self, ops: &mut EventOps) {
        let i = lock(&self.i8042);
        ops.add(Events::with_data(i.reset_evt(), I8042_RESET, EventSet::IN))
            .expect("register the i8042 reset eventfd");
        ops.add(Events::with_data(self.acpi.evt(), ACPI_EVENT, EventSet::IN))
            .expect("register the ACPI eventfd");
        ops.add(Events::with_data(&self.shared.stop_evt, STOP, EventSet::IN))
            .expect("register the stop eventfd");
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            I8042_RESET => {
                let _ = lock(&self.i8042).reset_evt().read();
                self.shared
                    .record_exit("the guest rebooted (i8042 reset)".into());
            }
            ACPI_EVENT => {
                let _ = self.acpi.evt().read();
                let what = match self.acpi.event() {
                    Some(PowerEvent::PowerOff) => "the guest powered off",
                    _ => "the guest rebooted (ACPI reset)",
                };
                self.shared.record_exit(what.into());
            }
            _ => {
                let _ = self.shared.stop_evt.read();
            }
        }
    }
}

pub type Subscriber = Box<dyn MutEventSubscriber + Send>;

/// Runs until the machine stops.
pub fn run(subscribers: Vec<Subscriber>, shared: Arc<RunState>) {
    let mut em = match EventManager::<Subscriber>::new() {
        Ok(em) => em,
        Err(e) => {
            shared.record_exit(format!("event loop: creating epoll failed: {e:?}"));
            return;
        }
    };
    for s in subscribers {
        em.add_subscriber(s);
    }
    while !shared.stopping.load(Ordering::SeqCst) {
        if let Err(e) = em.run_with_timeout(500) {
            shared.record_exit(format!("event loop: epoll failed: {e:?}"));
            return;
        }
    }
}
