//! The Linux side of name resolution for machines: systemd-resolved's per-link DNS server and
//! `~domain` routing domains on the machine's TAP link, so only the machine's own domains go
//! to its DNS server (never the bare TLD: `.dev` is a real, HSTS-preloaded TLD).
//!
//! This is a narrow door like the plan applier: it only ever talks to resolved about `dbxN`
//! links and domains under the machine's TLD.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use super::HostError;
use crate::dns::resolver_plan;
use crate::net::routes::devbox_link;

/// resolved's varlink socket exists only while the service runs.
pub fn resolved_active() -> bool {
    Path::new("/run/systemd/resolve/io.systemd.Resolve").exists()
}

fn check(link: &str, domains: &[String], tld: &str) -> Result<(), HostError> {
    if devbox_link(link).is_none() {
        return Err(HostError::Refused {
            item: format!("configure resolved on {link}"),
            why: "it is not a devbox link (dbx0 … dbx63)".into(),
        });
    }
    let suffix = format!(".{tld}");
    if let Some(d) = domains.iter().find(|d| !d.ends_with(&suffix)) {
        return Err(HostError::Refused {
            item: format!("route {d} to a machine"),
            why: format!("it is not under .{tld}"),
        });
    }
    Ok(())
}

fn run(argv: &[String]) -> Result<(), HostError> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|source| HostError::Spawn {
            argv: argv.join(" "),
            source,
        })?;
    if !out.status.success() {
        return Err(HostError::Command {
            argv: argv.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// The `resolvectl` commands for `domains` on `link`, after the allowlist check.
pub fn plan(
    link: &str,
    domains: &[String],
    tld: &str,
    server: SocketAddr,
) -> Result<Vec<Vec<String>>, HostError> {
    check(link, domains, tld)?;
    Ok(resolver_plan::resolved_commands(link, domains, server))
}

/// Points resolved at the machine's server for `domains`.
pub fn apply(
    link: &str,
    domains: &[String],
    tld: &str,
    server: SocketAddr,
) -> Result<(), HostError> {
    for argv in plan(link, domains, tld, server)? {
        run(&argv)?;
    }
    Ok(())
}

/// Undoes [`apply`] on `link`.
pub fn revert(link: &str) -> Result<(), HostError> {
    check(link, &[], "")?;
    run(&resolver_plan::resolved_revert(link))
}
