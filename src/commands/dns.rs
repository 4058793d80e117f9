//! `devbox dns install|uninstall NAME [--dry-run]`: the host resolver side of machine names.
//! The domains come from the running supervisor (`dns.json`), which follows the aliases its
//! containers ask for. On macOS one `/etc/resolver/<domain>` file per domain goes through the
//! host plan applier; on Linux systemd-resolved gets per-link routing domains, or, when it
//! does not run, the exact configuration to add by hand is printed.

use anyhow::{Context, Result};

use super::CommandError;
use crate::cli::DnsCommand;
use crate::dns::resolver_plan;
use crate::host::{self, FileSpec, HostOs, HostPlan, resolved};
use crate::machine::Store;
use crate::output;
use crate::supervisor::resolver::DnsState;

pub fn run(store: &Store, c: DnsCommand) -> Result<i32> {
    let (a, install) = match c {
        DnsCommand::Install(a) => (a, true),
        DnsCommand::Uninstall(a) => (a, false),
        DnsCommand::Allow(a) => return super::dns_allow::allow(store, &a),
        DnsCommand::Deny(a) => return super::dns_allow::deny(store, &a),
        DnsCommand::Allowed(a) => return super::dns_allow::allowed(store, &a),
    };
    let dir = store.existing(&a.name)?;
    let path = dir.path.join("dns.json");
    let st: DnsState = match fs_err::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t).with_context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CommandError::NotRunning {
                name: a.name.clone(),
                state: "stopped".into(),
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    match HostOs::current() {
        HostOs::Macos => {
            let files = resolver_plan::macos_files(&a.name, &st.domains, st.server);
            let plan = if install {
                HostPlan {
                    command: format!("dns install {}", a.name),
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
                    command: format!("dns uninstall {}", a.name),
                    remove_files: files.into_iter().map(|(p, _)| p).collect(),
                    ..HostPlan::default()
                }
            };
            if a.dry_run {
                output::data(plan.to_string());
            } else {
                host::apply(&plan, false)?;
            }
        }
        HostOs::Linux => {
            if !resolved::resolved_active() {
                if install {
                    output::data(resolver_plan::manual_instructions(&st.domains, st.server));
                } else {
                    output::info("systemd-resolved is not running: nothing to undo.");
                }
                return Ok(0);
            }
            let cmds = if install {
                resolved::plan(&st.link, &st.domains, &st.tld, st.server)?
            } else {
                vec![resolver_plan::resolved_revert(&st.link)]
            };
            if a.dry_run {
                output::data(
                    cmds.iter()
                        .map(|c| c.join(" "))
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
            } else if install {
                resolved::apply(&st.link, &st.domains, &st.tld, st.server)?;
            } else {
                resolved::revert(&st.link)?;
            }
        }
    }
    if !a.dry_run {
        output::info(format!(
            "{} {} for {}",
            if install { "Routed" } else { "Unrouted" },
            st.domains.join(", "),
            a.name
        ));
    }
    Ok(0)
}
