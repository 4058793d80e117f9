//! [`RecordsHandle`]: the shared, cloneable handle through which the container watcher (or
//! the supervisor) replaces the served containers, and through which the server reads the
//! records. No tasks of its own: the server's refresh task calls [`RecordsHandle::refresh`].
//!
//! Every build reads the policy afresh from its [`PolicySource`] (other machines, allowed
//! domains) and claims the routed domains host-wide; a build runs when the containers change,
//! and on a refresh when the policy changed or a domain another machine held may be free.
//! A build happens off to the side and swaps an `Arc`, so a reader holds the lock only for a
//! pointer copy.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::log_warning;
use super::neighbours::PolicySource;
use super::policy::Policy;
use super::zone::{Container, Refusal, RefusalReason, Zone, ZoneConfig};

/// Refusals remembered as logged; past this, the oldest are forgotten (a container refused
/// that long ago may be logged once more).
const LOGGED_CAP: usize = 4096;

/// A name refused for a container, as `dns.json` and `devbox inspect` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedName {
    pub container: String,
    pub name: String,
    pub reason: String,
}

/// Shared view of the machine's records. Clones share the same records.
#[derive(Clone, Debug)]
pub struct RecordsHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: ZoneConfig,
    zone: RwLock<Arc<Zone>>,
    build: Mutex<Builder>,
}

/// What a build needs, behind one lock so that builds never interleave.
#[derive(Debug)]
struct Builder {
    source: Box<dyn PolicySource>,
    containers: Vec<Container>,
    /// The policy of the last build (without `taken`).
    policy: Policy,
    refused: Vec<Refusal>,
    logged: Logged,
}

impl RecordsHandle {
    /// A handle serving only `<machine>.<tld>` until containers are set.
    pub fn new(cfg: ZoneConfig, source: Box<dyn PolicySource>) -> Self {
        let (zone, _) = Zone::build(&cfg, &Policy::default(), &[]);
        let handle = RecordsHandle {
            inner: Arc::new(Inner {
                cfg,
                zone: RwLock::new(Arc::new(zone)),
                build: Mutex::new(Builder {
                    source,
                    containers: Vec::new(),
                    policy: Policy::default(),
                    refused: Vec::new(),
                    logged: Logged::default(),
                }),
            }),
        };
        handle.refresh();
        handle
    }

    /// Replaces the served containers with `containers` (all running containers). Refused
    /// names are logged as warnings (once per container) and returned. Reads the state
    /// directory: call it off the async workers.
    pub fn set_containers(&self, containers: &[Container]) -> Vec<Refusal> {
        let mut b = self.lock();
        b.containers = containers.to_vec();
        b.policy = b.source.policy();
        self.build(&mut b);
        b.refused.clone()
    }

    /// Re-reads the policy, and rebuilds when it changed or when a domain another machine
    /// held may have been freed. Reads the state directory: call it off the async workers.
    pub fn refresh(&self) {
        let mut b = self.lock();
        let policy = b.source.policy();
        let waiting = b
            .refused
            .iter()
            .any(|r| matches!(r.reason, RefusalReason::Taken { .. }));
        if policy != b.policy || waiting {
            b.policy = policy;
            self.build(&mut b);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Builder> {
        self.inner.build.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn build(&self, b: &mut Builder) {
        let mut policy = b.policy.clone();
        // Each pass drops the aliases whose domain another machine holds, which only shrinks
        // the routed set: the second pass claims nothing new.
        let (zone, refused) = loop {
            let (zone, refused) = Zone::build(&self.inner.cfg, &policy, &b.containers);
            let lost = b.source.claim(&zone.routed_domains());
            if lost.is_empty() {
                break (zone, refused);
            }
            policy.taken.extend(lost);
        };
        *self.inner.zone.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(zone);
        let ids: std::collections::HashMap<&str, &str> = b
            .containers
            .iter()
            .map(|c| (c.name.trim_start_matches('/'), c.id.as_str()))
            .collect();
        for r in &refused {
            let id = ids.get(r.container.as_str()).copied().unwrap_or("");
            if b.logged.first_time(id, r) {
                log_warning(&r.to_string());
            }
        }
        b.refused = refused;
    }

    /// The records being served now.
    pub fn zone(&self) -> Arc<Zone> {
        self.inner
            .zone
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The names refused at the last build, for `dns.json`.
    pub fn refused(&self) -> Vec<RefusedName> {
        self.lock()
            .refused
            .iter()
            .map(|r| RefusedName {
                container: r.container.clone(),
                name: r.name.clone(),
                reason: r.reason.to_string(),
            })
            .collect()
    }

    /// The settings the zone is built from.
    pub fn config(&self) -> &ZoneConfig {
        &self.inner.cfg
    }
}

/// Refusals already logged, by container id, name and reason: a container restarting in a
/// loop, or a domain flapping between two machines, is logged once, not at every build.
#[derive(Debug, Default)]
struct Logged {
    seen: HashSet<(String, String, String)>,
    order: VecDeque<(String, String, String)>,
}

impl Logged {
    fn first_time(&mut self, id: &str, r: &Refusal) -> bool {
        let key = (id.to_string(), r.name.clone(), r.reason.to_string());
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > LOGGED_CAP
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, aliases: &[&str]) -> Container {
        Container {
            id: id.into(),
            name: format!("/c{id}"),
            ips: vec!["172.18.0.3".parse().unwrap()],
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            web: Default::default(),
        }
    }

    /// Finding 15 (last bullet): a refused alias was logged again as builds came and went.
    #[test]
    fn refusals_are_logged_once_per_container() {
        let mut logged = Logged::default();
        let r = |container: &str| Refusal {
            container: container.into(),
            name: "pkg.go.dev".into(),
            reason: RefusalReason::OutsideTld,
        };
        assert!(logged.first_time("id1", &r("web")));
        for _ in 0..10 {
            assert!(!logged.first_time("id1", &r("web")));
        }
        // Another container (a new id) asking for the same name is logged once too.
        assert!(logged.first_time("id2", &r("web")));
        for i in 0..LOGGED_CAP {
            logged.first_time(&format!("x{i}"), &r("x"));
        }
        assert!(logged.seen.len() <= LOGGED_CAP);
    }

    #[test]
    fn refused_names_follow_the_policy_source() {
        let cfg = ZoneConfig {
            machine: "dev".into(),
            tld: "dev".into(),
            guest_ip: "192.168.64.2".parse().unwrap(),
        };
        let source = Policy {
            allowed: vec!["synbioz.dev".into()],
            taken: [("synbioz.dev".to_string(), Some("first".to_string()))].into(),
            ..Policy::default()
        };
        let records = RecordsHandle::new(cfg, Box::new(source));
        let refused = records.set_containers(&[c("1", &["www.synbioz.dev", "pkg.go.dev"])]);
        assert_eq!(refused.len(), 2);
        assert_eq!(
            records.refused()[1],
            RefusedName {
                container: "c1".into(),
                name: "pkg.go.dev".into(),
                reason: "outside the machine's domain and in none allowed for it \
                         (`devbox dns allow go.dev --machine dev` would let it in)"
                    .into()
            }
        );
        assert!(records.zone().routed_domains().is_empty());
    }
}
