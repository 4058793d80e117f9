//! [`RecordsHandle`]: the shared, cloneable handle through which the container watcher (or
//! the supervisor) replaces the served records, and through which the server reads them. No
//! tasks; a write rebuilds the [`Zone`] off to the side and swaps an `Arc`, so a reader holds
//! the lock only for a pointer copy.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};

use super::log_warning;
use super::zone::{Container, Refusal, Zone, ZoneConfig};

/// Shared view of the machine's records. Clones share the same records.
#[derive(Clone, Debug)]
pub struct RecordsHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: ZoneConfig,
    zone: RwLock<Arc<Zone>>,
    /// Refusals already logged, so a container refused once is not logged on every event.
    logged: Mutex<BTreeSet<String>>,
}

impl RecordsHandle {
    /// A handle serving only `<machine>.<tld>` until containers are set.
    pub fn new(cfg: ZoneConfig) -> Self {
        let (zone, _) = Zone::build(&cfg, &[]);
        RecordsHandle {
            inner: Arc::new(Inner {
                cfg,
                zone: RwLock::new(Arc::new(zone)),
                logged: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// Replaces the served containers with `containers` (all running containers). Refused
    /// names are logged as warnings (once each) and returned.
    pub fn set_containers(&self, containers: &[Container]) -> Vec<Refusal> {
        let (zone, refusals) = Zone::build(&self.inner.cfg, containers);
        *self.inner.zone.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(zone);
        let now: BTreeSet<String> = refusals.iter().map(ToString::to_string).collect();
        let mut logged = self.inner.logged.lock().unwrap_or_else(|e| e.into_inner());
        for line in now.difference(&logged) {
            log_warning(line);
        }
        *logged = now;
        refusals
    }

    /// The records being served now.
    pub fn zone(&self) -> Arc<Zone> {
        self.inner
            .zone
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The settings the zone is built from.
    pub fn config(&self) -> &ZoneConfig {
        &self.inner.cfg
    }
}
