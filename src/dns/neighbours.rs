//! Where the zone's [`Policy`] comes from, read afresh at every zone build (never a snapshot
//! taken when the server started): the other machines' names, this machine's allowed domains,
//! and the host-wide claims on routed domains. No tasks; called by
//! [`super::RecordsHandle`] under its build lock.
//!
//! - [`StoreNeighbours`]: a running machine's view of the state directory: the machine names
//!   under `machines/`, `dns_domains` in its own `machine.yaml` (so `devbox dns allow` and
//!   `deny` take effect on a running machine at the next refresh), and [`Claims`].
//! - A fixed [`Policy`] is a source too (benchmarks, and tests that need no state directory):
//!   its `taken` entries are the domains "another machine" holds.
//!
//! Claims: a domain routed to the host's resolver belongs to one running machine at a time,
//! the first to route it. Each claim is an exclusive `flock(2)` on
//! `$DEVBOX_HOME/dns-claims/<domain>`, held while the machine serves a name whose route is that
//! domain: the kernel releases it when the supervisor dies, so a crash never leaves a claim
//! behind. The file holds the holder's name, for the refusal message.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};

use super::log_warning;
use super::policy::{Policy, is_domain_name};
use crate::machine::Store;

/// Supplies the policy at each zone build and arbitrates routed domains between machines.
pub trait PolicySource: Debug + Send + 'static {
    /// The other machines and this machine's allowed domains, as they are now (`taken` is
    /// filled by [`PolicySource::claim`]).
    fn policy(&mut self) -> Policy;

    /// Holds exactly `domains` for this machine (taking new ones, releasing those no longer
    /// listed) and returns those another machine holds, with its name when known.
    fn claim(&mut self, domains: &[String]) -> BTreeMap<String, Option<String>>;
}

impl PolicySource for Policy {
    fn policy(&mut self) -> Policy {
        Policy {
            taken: BTreeMap::new(),
            ..self.clone()
        }
    }

    fn claim(&mut self, domains: &[String]) -> BTreeMap<String, Option<String>> {
        domains
            .iter()
            .filter_map(|d| Some((d.clone(), self.taken.get(d)?.clone())))
            .collect()
    }
}

/// A running machine's neighbours, read from the state directory.
#[derive(Debug)]
pub struct StoreNeighbours {
    store: Store,
    machine: String,
    claims: Claims,
    others: Vec<String>,
    /// The last problem logged, so a lasting one is logged once.
    last_problem: Option<String>,
}

impl StoreNeighbours {
    pub fn new(store: Store, machine: &str) -> StoreNeighbours {
        StoreNeighbours {
            claims: Claims::new(store.home.join("dns-claims"), machine),
            store,
            machine: machine.to_string(),
            others: Vec::new(),
            last_problem: None,
        }
    }

    fn problem(&mut self, msg: String) {
        if self.last_problem.as_ref() != Some(&msg) {
            log_warning(&msg);
            self.last_problem = Some(msg);
        }
    }
}

impl PolicySource for StoreNeighbours {
    fn policy(&mut self) -> Policy {
        match self.store.names() {
            Ok(names) => self.others = names.into_iter().filter(|n| *n != self.machine).collect(),
            // Keep the last list: forgetting machines would let aliases into their domains.
            Err(e) => self.problem(format!("listing the other machines: {e}")),
        }
        // Fail closed: without a readable spec, nothing outside the machine's domain.
        let allowed = match self
            .store
            .machine(&self.machine)
            .and_then(|d| d.load_spec())
        {
            Ok(spec) => spec.dns_domains,
            Err(e) => {
                self.problem(format!(
                    "reading the allowed DNS domains of {}: {e}",
                    self.machine
                ));
                Vec::new()
            }
        };
        Policy {
            other_machines: self.others.clone(),
            allowed,
            taken: BTreeMap::new(),
        }
    }

    fn claim(&mut self, domains: &[String]) -> BTreeMap<String, Option<String>> {
        match self.claims.hold(domains) {
            Ok(lost) => lost,
            Err(e) => {
                self.problem(e.to_string());
                // Fail closed: a domain whose claim cannot be checked is not routed.
                domains
                    .iter()
                    .filter(|d| !self.claims.holds(d))
                    .map(|d| (d.clone(), None))
                    .collect()
            }
        }
    }
}

/// The claims a machine holds on routed domains (see the module header).
#[derive(Debug)]
pub struct Claims {
    dir: PathBuf,
    machine: String,
    held: BTreeMap<String, Flock<File>>,
}

impl Claims {
    pub fn new(dir: PathBuf, machine: &str) -> Claims {
        Claims {
            dir,
            machine: machine.to_string(),
            held: BTreeMap::new(),
        }
    }

    /// Whether this machine holds `domain` now.
    pub fn holds(&self, domain: &str) -> bool {
        self.held.contains_key(domain)
    }

    /// Holds exactly `domains`: releases the others, tries to take the new ones, and returns
    /// those another machine holds (with its name when its file says it).
    pub fn hold(
        &mut self,
        domains: &[String],
    ) -> std::io::Result<BTreeMap<String, Option<String>>> {
        let wanted: BTreeSet<&String> = domains.iter().collect();
        self.held.retain(|d, _| wanted.contains(d));
        let mut lost = BTreeMap::new();
        for domain in wanted {
            if self.held.contains_key(domain) {
                continue;
            }
            match self.take(domain)? {
                Ok(lock) => {
                    self.held.insert(domain.clone(), lock);
                }
                Err(holder) => {
                    lost.insert(domain.clone(), holder);
                }
            }
        }
        Ok(lost)
    }

    /// The lock on `domain`, or the name of the machine that holds it.
    fn take(&self, domain: &str) -> std::io::Result<Result<Flock<File>, Option<String>>> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        // Names come from the zone, which built them from validated labels; check anyway,
        // as the name becomes a path.
        if !is_domain_name(domain) {
            return Ok(Err(None));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| with_path(e, &self.dir))?;
        let path = self.dir.join(domain);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| with_path(e, &path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                // Who holds it, for the other machines' refusal messages.
                lock.set_len(0)
                    .and_then(|()| lock.rewind())
                    .and_then(|()| lock.write_all(self.machine.as_bytes()))
                    .map_err(|e| with_path(e, &path))?;
                Ok(Ok(lock))
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut name = String::new();
                let holder = file
                    .read_to_string(&mut name)
                    .ok()
                    .map(|_| name.trim().to_string())
                    .filter(|n| crate::machine::spec::validate_name(n).is_ok());
                Ok(Err(holder))
            }
            Err((_, e)) => Err(with_path(e.into(), &path)),
        }
    }
}

fn with_path(e: std::io::Error, path: &std::path::Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("DNS claim {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn first_machine_keeps_a_domain_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Claims::new(dir.path().join("claims"), "a");
        let mut b = Claims::new(dir.path().join("claims"), "b");
        assert!(a.hold(&s(&["synbioz.dev"])).unwrap().is_empty());
        let lost = b.hold(&s(&["synbioz.dev", "shop.test"])).unwrap();
        assert_eq!(
            lost,
            [("synbioz.dev".to_string(), Some("a".to_string()))].into()
        );
        assert!(b.holds("shop.test"));
        // `a` no longer serves it: `b` gets it at its next try.
        assert!(a.hold(&[]).unwrap().is_empty());
        assert!(
            b.hold(&s(&["synbioz.dev", "shop.test"]))
                .unwrap()
                .is_empty()
        );
        assert!(
            a.hold(&s(&["synbioz.dev"]))
                .unwrap()
                .contains_key("synbioz.dev")
        );
        // Dropping the holder (a supervisor that dies) releases everything.
        drop(b);
        assert!(a.hold(&s(&["synbioz.dev"])).unwrap().is_empty());
    }

    #[test]
    fn fixed_policy_claims() {
        let mut p = Policy {
            taken: [("x.dev".to_string(), None)].into(),
            ..Policy::default()
        };
        assert!(p.policy().taken.is_empty());
        assert_eq!(p.claim(&s(&["x.dev", "y.dev"])).len(), 1);
    }
}
