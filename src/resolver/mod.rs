//! The host resolver's side of machine names: the host's resolver sends a machine's own
//! domains, and only those, to the machine's DNS server (never the bare TLD: `.dev` is a real,
//! HSTS-preloaded TLD).
//!
//! - `plan.rs` (pure): which domains a machine owns, the macOS `/etc/resolver/*` files, and
//!   the text shown on a Linux host without systemd-resolved.
//! - `sync.rs`: [`ResolverSync`], run by the supervisor while the machine runs: on each change
//!   of the owned domains it rewrites `dns.json` and, on a machine with a TAP where
//!   systemd-resolved runs, points resolved's per-link settings at the new set.
//! - here: `dns.json` ([`DnsState`]) and the plans of `devbox dns install|uninstall`.
//!
//! Every change to the host goes through the one door, [`crate::host::apply`]: resolved's
//! settings as [`ResolvedLink`] items (allowed only on `dbxN` links, for domains under the
//! machine's TLD), the macOS files as file items (allowed only in `/etc/resolver/`).

pub mod plan;
mod sync;

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::{FileSpec, HostOs, HostPlan, ResolvedLink};
use crate::machine::MachineDir;

pub use sync::ResolverSync;

/// resolved's varlink socket exists only while the service runs.
const RESOLVED_SOCKET: &str = "/run/systemd/resolve/io.systemd.Resolve";

/// Whether systemd-resolved runs on this host.
pub fn resolved_active() -> bool {
    Path::new(RESOLVED_SOCKET).exists()
}

/// `dns.json`: the machine's DNS server, the domains routed to it and the names refused to its
/// containers, written by its supervisor while it runs (absent otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsState {
    pub server: SocketAddr,
    /// The machine's TAP (`dbxN`), where resolved's settings go.
    pub link: String,
    pub tld: String,
    pub domains: Vec<String>,
    /// Names the machine's containers asked for and did not get, and why.
    #[serde(default)]
    pub refused: Vec<crate::dns::RefusedName>,
}

impl DnsState {
    /// The running machine's `dns.json`; `None` when the machine does not run.
    pub fn load(dir: &MachineDir) -> anyhow::Result<Option<DnsState>> {
        let path = dir.dns_state_path();
        match fs_err::read_to_string(&path) {
            Ok(t) => Ok(Some(serde_json::from_str(&t).map_err(|e| {
                anyhow::Error::new(e).context(format!("reading {}", path.display()))
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The resolved settings for this state's link.
    pub fn resolved_link(&self) -> ResolvedLink {
        ResolvedLink {
            link: self.link.clone(),
            server: self.server,
            tld: self.tld.clone(),
            domains: self.domains.clone(),
        }
    }
}

/// What `devbox dns install|uninstall` does on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostResolverChange {
    /// A plan for the host applier (boxed: it is far larger than the other variant).
    Plan(Box<HostPlan>),
    /// Nothing devbox can change (Linux without systemd-resolved): `install` shows what to
    /// configure by hand, `uninstall` says there is nothing to undo.
    Manual { install: bool, text: String },
}

/// The change that routes (`install`) or unroutes the machine's domains on a host running
/// `os`, where systemd-resolved runs or not (`resolved`).
pub fn host_change(
    machine: &str,
    st: &DnsState,
    install: bool,
    os: HostOs,
    resolved: bool,
) -> HostResolverChange {
    let verb = if install { "install" } else { "uninstall" };
    let command = format!("dns {verb} {machine}");
    match os {
        HostOs::Macos => {
            let files = plan::macos_files(machine, &st.domains, st.server);
            let plan = if install {
                HostPlan {
                    command,
                    write_files: files
                        .into_iter()
                        .map(|(path, contents)| FileSpec {
                            path,
                            mode: 0o644,
                            contents,
                        })
                        .collect(),
                    ..HostPlan::default()
                }
            } else {
                HostPlan {
                    command,
                    remove_files: files.into_iter().map(|(p, _)| p).collect(),
                    ..HostPlan::default()
                }
            };
            HostResolverChange::Plan(Box::new(plan))
        }
        // No resolved, or a server on loopback (an adopted host's), which resolved's per-link
        // settings cannot reach.
        HostOs::Linux if !resolved || st.server.ip().is_loopback() => HostResolverChange::Manual {
            install,
            text: if install {
                plan::manual_instructions(&st.domains, st.server, resolved)
            } else if resolved {
                "systemd-resolved was not given this machine's names: nothing to undo.".into()
            } else {
                "systemd-resolved is not running: nothing to undo.".into()
            },
        },
        HostOs::Linux => HostResolverChange::Plan(Box::new(if install {
            HostPlan {
                command,
                resolved: vec![st.resolved_link()],
                ..HostPlan::default()
            }
        } else {
            HostPlan {
                command,
                resolved_revert: vec![st.link.clone()],
                ..HostPlan::default()
            }
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> DnsState {
        DnsState {
            server: "192.168.64.1:53".parse().unwrap(),
            link: "dbx0".into(),
            tld: "dev".into(),
            domains: vec!["dev.dev".into(), "synbioz.dev".into()],
            refused: vec![],
        }
    }

    #[test]
    fn linux_with_resolved_goes_through_the_applier() {
        let HostResolverChange::Plan(plan) =
            host_change("dev", &state(), true, HostOs::Linux, true)
        else {
            panic!("a plan");
        };
        plan.check_allowed().unwrap();
        assert_eq!(plan.resolved, [state().resolved_link()]);
        let text = plan.render(HostOs::Linux);
        assert!(text.contains("resolvectl dns dbx0 192.168.64.1"), "{text}");
        assert!(
            text.contains("resolvectl domain dbx0 '~dev.dev' '~synbioz.dev'"),
            "{text}"
        );

        let HostResolverChange::Plan(undo) =
            host_change("dev", &state(), false, HostOs::Linux, true)
        else {
            panic!("a plan");
        };
        assert!(
            undo.render(HostOs::Linux)
                .contains("resolvectl revert dbx0")
        );
    }

    #[test]
    fn a_tampered_dns_json_is_refused_by_the_door() {
        let mut st = state();
        st.link = "eth0".into();
        let HostResolverChange::Plan(plan) = host_change("dev", &st, true, HostOs::Linux, true)
        else {
            panic!("a plan");
        };
        assert!(plan.check_allowed().is_err());
        let mut st = state();
        st.domains.push("pkg.go.dev.evil.com".into());
        let HostResolverChange::Plan(plan) = host_change("dev", &st, true, HostOs::Linux, true)
        else {
            panic!("a plan");
        };
        let err = plan.check_allowed().unwrap_err().to_string();
        assert!(err.contains("not a domain under .dev"), "{err}");
    }

    #[test]
    fn without_resolved_the_user_gets_the_manual_steps() {
        match host_change("dev", &state(), true, HostOs::Linux, false) {
            HostResolverChange::Manual {
                install: true,
                text,
            } => {
                assert!(text.contains("server=/dev.dev/192.168.64.1"), "{text}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_server_on_loopback_gets_the_manual_steps_even_with_resolved() {
        // An adopted host's server: resolved's per-link settings cannot reach it.
        let st = DnsState {
            server: "127.0.0.1:10054".parse().unwrap(),
            link: "dbx1".into(),
            domains: vec!["far.dev".into()],
            ..state()
        };
        match host_change("far", &st, true, HostOs::Linux, true) {
            HostResolverChange::Manual {
                install: true,
                text,
            } => {
                assert!(text.contains("server=/far.dev/127.0.0.1#10054"), "{text}");
                assert!(text.contains("has none on this host"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            host_change("far", &st, false, HostOs::Linux, true),
            HostResolverChange::Manual { install: false, .. }
        ));
        // macOS's /etc/resolver takes the port.
        let HostResolverChange::Plan(plan) = host_change("far", &st, true, HostOs::Macos, true)
        else {
            panic!("a plan");
        };
        assert!(
            plan.write_files[0].contents.contains("port 10054"),
            "{plan:?}"
        );
    }

    #[test]
    fn macos_gets_one_file_per_domain() {
        let HostResolverChange::Plan(plan) =
            host_change("dev", &state(), true, HostOs::Macos, false)
        else {
            panic!("a plan");
        };
        plan.check_allowed().unwrap();
        assert_eq!(plan.write_files.len(), 2);
        assert_eq!(plan.write_files[0].path, Path::new("/etc/resolver/dev.dev"));
    }
}
