//! The parts of a running machine, started in order and stopped in reverse: the one place a
//! new part (a port forwarder, a NAT keeper, a share watcher) is added to the supervisor.
//!
//! Bring-up adds each part as it starts it ([`Parts::add`], or [`Parts::hold`] for a value
//! whose `Drop` stops it); when the machine ends, [`Parts::stop_all`] stops them from the
//! last to the first, so a part never outlives what it depends on (the DNS server stops
//! before the I/O runtime it runs on, the routes go last). A part added before a later step
//! fails is stopped too: a failed start leaves nothing running.

use super::log;

/// Something the supervisor started for the machine, stopped when the machine ends.
pub trait Part: Send {
    /// What it is, for the log ("DNS server", "routes").
    fn name(&self) -> &str;
    /// Stops it. Called once; failures are logged by the part itself.
    fn stop(self: Box<Self>);
}

/// Parts in the order they started.
#[derive(Default)]
pub struct Parts {
    started: Vec<Box<dyn Part>>,
}

impl Parts {
    pub fn add(&mut self, part: impl Part + 'static) {
        self.started.push(Box::new(part));
    }

    /// Keeps `value` until the machine ends: dropping it is what stops it.
    pub fn hold<T: Send + 'static>(&mut self, name: &'static str, value: T) {
        self.add(Held {
            name,
            _value: value,
        });
    }

    /// Stops the latest part called `name` now, ahead of the others (the docker socket
    /// forwarder, before the guest powers off).
    pub fn stop_one(&mut self, name: &str) {
        if let Some(i) = self.started.iter().rposition(|p| p.name() == name) {
            self.started.remove(i).stop();
        }
    }

    /// Stops every part, the last started first.
    pub fn stop_all(&mut self) {
        while let Some(part) = self.started.pop() {
            log(format!("stopping the {}", part.name()));
            part.stop();
        }
    }

    #[cfg(test)]
    fn names(&self) -> Vec<&str> {
        self.started.iter().map(|p| p.name()).collect()
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A value whose `Drop` stops it (servers, the I/O runtime, the socket forwarder).
struct Held<T> {
    name: &'static str,
    _value: T,
}

impl<T: Send> Part for Held<T> {
    fn name(&self) -> &str {
        self.name
    }
    fn stop(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Recorded(&'static str, Arc<Mutex<Vec<&'static str>>>);

    impl Part for Recorded {
        fn name(&self) -> &str {
            self.0
        }
        fn stop(self: Box<Self>) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    #[test]
    fn parts_stop_in_reverse_order_and_one_can_go_first() {
        let stopped = Arc::new(Mutex::new(Vec::new()));
        let mut parts = Parts::default();
        for name in ["routes", "DNS server", "forwarder", "disk watch"] {
            parts.add(Recorded(name, stopped.clone()));
        }
        parts.hold("runtime", ());
        assert_eq!(
            parts.names(),
            ["routes", "DNS server", "forwarder", "disk watch", "runtime"]
        );
        parts.stop_one("forwarder");
        parts.stop_one("not there");
        drop(parts);
        assert_eq!(
            *stopped.lock().unwrap(),
            ["forwarder", "disk watch", "DNS server", "routes"]
        );
    }
}
