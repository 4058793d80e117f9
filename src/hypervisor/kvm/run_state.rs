//! [`RunState`]: whether the machine is stopping and why it ended, shared by the vCPU threads
//! (`cpu.rs`), the event loop (`event_loop.rs`) and the live handle (`vm.rs`). In a file of
//! its own so that none of them imports another for it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

pub struct RunState {
    pub stopping: AtomicBool,
    exit: Mutex<Option<String>>,
    /// Wakes the event loop when the machine stops.
    pub stop_evt: EventFd,
}

impl RunState {
    pub fn new() -> std::io::Result<RunState> {
        Ok(RunState {
            stopping: AtomicBool::new(false),
            exit: Mutex::new(None),
            stop_evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Records why the machine ended (the first reason wins) and tells every thread to stop.
    pub fn record_exit(&self, why: String) {
        let mut e = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(why);
        }
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop_evt.write(1);
    }

    pub fn exit(&self) -> Option<String> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
