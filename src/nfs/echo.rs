//! What the server itself changed on the host, for a short while: the share watcher
//! (`supervisor::file_events`) drops the host's notifications of those changes, because the
//! guest already raised its own events for them (they were made through its VFS). Without
//! this, every guest write would be raised a second time in the guest.
//!
//! Changes are recorded by identity, never by path (the server builds no paths): the changed
//! object `(st_dev, st_ino)`, and the changed directory entry (the directory's identity and
//! the name). A host notification matches when its path's entry or its object was recorded
//! within [`WINDOW`]. The accepted race: a host edit of the same entry or file within that
//! window of a guest edit is not raised in the guest (its final state is still what the guest
//! reads next).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::handle::Key;

/// How long a change made through the server hides the host's notifications of it.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Entries kept at most: past this, the oldest half is forgotten (a burst of guest writes
/// cannot grow the log without bound).
const CAP: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Change {
    Object(Key),
    Entry(Key, Box<[u8]>),
}

/// Recent changes made through the server (see the module docs).
#[derive(Debug, Default)]
pub struct EchoLog {
    recent: Mutex<HashMap<Change, Instant>>,
}

impl EchoLog {
    pub fn new() -> EchoLog {
        EchoLog::default()
    }

    fn note(&self, c: Change) {
        let now = Instant::now();
        let mut m = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= CAP {
            m.retain(|_, t| now.duration_since(*t) < WINDOW);
            if m.len() >= CAP {
                let mut ages: Vec<Instant> = m.values().copied().collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                m.retain(|_, t| *t > cut);
            }
        }
        m.insert(c, now);
    }

    /// The server is about to change the object `key` (data or attributes).
    pub fn object(&self, key: Key) {
        self.note(Change::Object(key));
    }

    /// The server is about to add, remove or rename `name` in the directory `dir`.
    pub fn entry(&self, dir: Key, name: &[u8]) {
        self.note(Change::Entry(dir, name.into()))
    }

    fn fresh(&self, c: &Change) -> bool {
        let m = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        m.get(c).is_some_and(|t| t.elapsed() < WINDOW)
    }

    /// Whether a host notification about `name` in `dir` (the object `object`, when it still
    /// exists) echoes a change the server made.
    pub fn is_echo(&self, dir: Option<Key>, name: &[u8], object: Option<Key>) -> bool {
        dir.is_some_and(|d| self.fresh(&Change::Entry(d, name.into())))
            || object.is_some_and(|o| self.fresh(&Change::Object(o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_made_through_the_server_are_echoes_for_a_while() {
        let log = EchoLog::new();
        log.entry((1, 2), b"a");
        log.object((1, 9));
        assert!(log.is_echo(Some((1, 2)), b"a", None));
        assert!(log.is_echo(Some((1, 3)), b"x", Some((1, 9))));
        assert!(!log.is_echo(Some((1, 2)), b"b", Some((1, 8))));
        assert!(!log.is_echo(None, b"a", None));
    }

    #[test]
    fn the_log_stays_bounded() {
        let log = EchoLog::new();
        for i in 0..(CAP as u64 + 10) {
            log.object((0, i));
        }
        assert!(log.recent.lock().unwrap().len() <= CAP);
        assert!(
            log.is_echo(None, b"", Some((0, CAP as u64 + 9))),
            "the newest is kept"
        );
    }
}
