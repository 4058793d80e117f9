//! Every external command the applier runs (or shows in `--dry-run`), as argv lists, and the
//! plan's dry-run text made of them. Pure, so both platforms' commands are tested on either.

use std::fmt;
use std::net::SocketAddr;

use super::plan::{HostFilter, HostOs, HostPlan, ResolvedLink, ServiceUnit, Step};
use crate::routes::PlannedRoute;

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// macOS: `route -n add -net <dest> <guest-ip>`.
pub fn route_add_argv(r: &PlannedRoute) -> Vec<String> {
    argv(&[
        "route",
        "-n",
        "add",
        "-net",
        &r.dest.to_string(),
        &r.gateway.to_string(),
    ])
}

/// macOS: `route -n delete -net <dest> <guest-ip>`.
pub fn route_delete_argv(r: &PlannedRoute) -> Vec<String> {
    argv(&[
        "route",
        "-n",
        "delete",
        "-net",
        &r.dest.to_string(),
        &r.gateway.to_string(),
    ])
}

/// Linux: the `ip route` command equivalent to what the applier does through rtnetlink
/// (shown by `--dry-run`; `verb` is `add` or `del`).
pub fn ip_route_argv(verb: &str, r: &PlannedRoute) -> Vec<String> {
    argv(&[
        "ip",
        "route",
        verb,
        &r.dest.to_string(),
        "via",
        &r.gateway.to_string(),
        "dev",
        &r.interface,
    ])
}

/// macOS: `ifconfig <bridge> -hostfilter <member>`.
pub fn hostfilter_argv(h: &HostFilter) -> Vec<String> {
    argv(&["ifconfig", &h.bridge, "-hostfilter", &h.member])
}

/// macOS: `launchctl bootstrap system <plist>`.
pub fn launchctl_bootstrap_argv(plist: &std::path::Path) -> Vec<String> {
    argv(&["launchctl", "bootstrap", "system", &plist.to_string_lossy()])
}

/// macOS: `launchctl bootout system/<label>`.
pub fn launchctl_bootout_argv(label: &str) -> Vec<String> {
    argv(&["launchctl", "bootout", &format!("system/{label}")])
}

/// Linux: `systemctl <args…>`.
pub fn systemctl_argv(args: &[&str]) -> Vec<String> {
    let mut v = argv(&["systemctl"]);
    v.extend(argv(args));
    v
}

/// Linux: the `resolvectl` commands (argv) that route `domains` to `server` on `link` (the
/// machine's TAP). These settings live as long as the link and resolved's state do, so they
/// are applied again at every machine start.
pub fn resolved_commands(link: &str, domains: &[String], server: SocketAddr) -> Vec<Vec<String>> {
    // Plain IP for port 53 so that systemd versions without `ip:port` support still work.
    let dns = if server.port() == 53 {
        server.ip().to_string()
    } else {
        server.to_string()
    };
    let mut domain = argv(&["resolvectl", "domain", link]);
    domain.extend(domains.iter().map(|d| format!("~{d}")));
    vec![
        argv(&["resolvectl", "dns", link, &dns]),
        domain,
        // Keep every other query off this link.
        argv(&["resolvectl", "default-route", link, "false"]),
    ]
}

/// [`resolved_commands`] for one plan item.
pub(super) fn resolved_argvs(r: &ResolvedLink) -> Vec<Vec<String>> {
    resolved_commands(&r.link, &r.domains, r.server)
}

/// Linux: the `resolvectl` command that undoes [`resolved_commands`] on `link`.
pub fn resolved_revert(link: &str) -> Vec<String> {
    argv(&["resolvectl", "revert", link])
}

/// Commands that start a unit now and at every boot. launchd refuses to bootstrap a job
/// that is loaded already, so the applier boots it out first and ignores that failure.
pub(super) fn unit_load_argvs(os: HostOs, u: &ServiceUnit) -> Vec<Vec<String>> {
    match os {
        HostOs::Linux => vec![systemctl_argv(&["enable", "--now", &u.name])],
        HostOs::Macos => vec![launchctl_bootstrap_argv(&u.path)],
    }
}

/// Commands that stop a unit and keep it from starting at boot.
pub(super) fn unit_unload_argvs(os: HostOs, u: &ServiceUnit) -> Vec<Vec<String>> {
    match os {
        HostOs::Linux => vec![systemctl_argv(&["disable", "--now", &u.name])],
        HostOs::Macos => vec![launchctl_bootout_argv(&u.name)],
    }
}

/// systemd rereads unit files only when told; launchd reads the plist at bootstrap.
pub(super) fn unit_reload_argv(os: HostOs) -> Option<Vec<String>> {
    match os {
        HostOs::Linux => Some(systemctl_argv(&["daemon-reload"])),
        HostOs::Macos => None,
    }
}

/// A machine's NAT in the dry-run text: the one `nft` transaction the applier computes from
/// what devbox's table holds at that moment, and what it does.
fn nat_line(link: &str, verb: &str, os: HostOs) -> String {
    let subnet = crate::nat::NatLink::of(link).map_or_else(String::new, |n| n.subnet.to_string());
    match (os, verb) {
        (HostOs::Macos, _) => format!("# outbound NAT of {link}: vmnet's own on macOS"),
        (HostOs::Linux, "add") => format!(
            "nft -j -f -  # table inet devbox: forward and masquerade {subnet} from {link} out of \
             the other interfaces (and DOCKER-USER, ip_forward as needed)"
        ),
        (HostOs::Linux, _) => format!(
            "nft -j -f -  # table inet devbox: remove {link}'s rules (the last machine's stop \
             removes the table and puts ip_forward back)"
        ),
    }
}

/// An argv as one shell-readable line (for messages and the dry-run text).
pub(super) fn join_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| crate::ssh::quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

impl HostPlan {
    /// The plan as the commands it amounts to on `os`, one per line (the `--dry-run` text).
    pub fn render(&self, os: HostOs) -> String {
        let mut out = format!("# devbox host plan for {os}");
        if !self.command.is_empty() {
            out.push_str(&format!(" (devbox {})", self.command));
        }
        out.push('\n');
        let steps = self.steps();
        if steps.is_empty() {
            out.push_str("# nothing to change\n");
        }
        for step in steps {
            for line in step_lines(&step, os) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

impl fmt::Display for HostPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(HostOs::current()))
    }
}

/// The text lines for one step; `apply` reports with the same words.
pub(super) fn step_lines(step: &Step<'_>, os: HostOs) -> Vec<String> {
    let machine = |r: &PlannedRoute| format!("  # machine {}", r.machine);
    match step {
        Step::UnloadUnit(u) => unit_unload_argvs(os, u)
            .iter()
            .map(|a| join_argv(a))
            .collect(),
        Step::LoadUnit(u) => unit_load_argvs(os, u)
            .iter()
            .map(|a| join_argv(a))
            .collect(),
        Step::ReloadUnits => unit_reload_argv(os)
            .map(|a| join_argv(&a))
            .into_iter()
            .collect(),
        Step::RemoveRoute(r) => vec![match os {
            HostOs::Linux => join_argv(&ip_route_argv("del", r)) + &machine(r),
            HostOs::Macos => join_argv(&route_delete_argv(r)) + &machine(r),
        }],
        Step::AddRoute(r) => vec![match os {
            HostOs::Linux => join_argv(&ip_route_argv("add", r)) + &machine(r),
            HostOs::Macos => join_argv(&route_add_argv(r)) + &machine(r),
        }],
        Step::SetResolved(r) => match os {
            HostOs::Linux => resolved_argvs(r).iter().map(|a| join_argv(a)).collect(),
            HostOs::Macos => vec![format!("# systemd-resolved on {}: not on macOS", r.link)],
        },
        Step::RevertResolved(link) => match os {
            HostOs::Linux => vec![join_argv(&resolved_revert(link))],
            HostOs::Macos => vec![format!("# systemd-resolved on {link}: not on macOS")],
        },
        Step::HostFilter(h) => vec![join_argv(&hostfilter_argv(h))],
        Step::AddNat(link) => vec![nat_line(link, "add", os)],
        Step::RemoveNat(link) => vec![nat_line(link, "remove", os)],
        Step::AddRemoteRoute(r) => vec![match os {
            HostOs::Linux => join_argv(&ip_route_argv("add", &r.route())) + &machine(&r.route()),
            HostOs::Macos => join_argv(&route_add_argv(&r.route())) + &machine(&r.route()),
        }],
        Step::RemoveRemoteRoute(r) => vec![match os {
            HostOs::Linux => join_argv(&ip_route_argv("del", &r.route())) + &machine(&r.route()),
            HostOs::Macos => join_argv(&route_delete_argv(&r.route())) + &machine(&r.route()),
        }],
        Step::AddSwarm(p) => vec![format!(
            "nft -j -f -  # table inet devbox: open 2377/tcp, 7946/tcp+udp, 4789/udp between {p}"
        )],
        Step::RemoveSwarm(link) => vec![format!(
            "nft -j -f -  # table inet devbox: close the swarm ports of {link}"
        )],
        Step::RemoveFile(p) => vec![format!("rm -f {}", p.display())],
        Step::RemoveBinary(p) => vec![format!("rm -f {}", p.display())],
        Step::RemoveDir(p) => vec![format!("rmdir {}  # only when empty", p.display())],
        Step::CreateDir(d) => vec![format!(
            "install -d -o root -g root -m {:04o} {}",
            d.mode,
            d.path.display()
        )],
        Step::InstallBinary(b) => {
            let mut lines = vec![format!(
                "install -o root -g root -m 0755 {} {}",
                b.source.display(),
                b.path.display()
            )];
            if b.caps {
                lines.push(format!(
                    "setcap {} {}",
                    super::privileged::INSTALLED_CAPS,
                    b.path.display()
                ));
            }
            lines
        }
        Step::WriteFile(f) => vec![format!(
            "write {} (mode {:04o}, {} bytes)",
            f.path.display(),
            f.mode,
            f.contents.len()
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvectl_plain_ip_on_port_53() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cmds = resolved_commands(
            "devbox0",
            &s(&["dev.dev"]),
            "192.168.64.1:53".parse().unwrap(),
        );
        assert_eq!(
            cmds[0],
            s(&["resolvectl", "dns", "devbox0", "192.168.64.1"])
        );
        let v6 = resolved_commands(
            "devbox0",
            &s(&["dev.dev"]),
            "[fd00::1]:5353".parse().unwrap(),
        );
        assert_eq!(
            v6[0],
            s(&["resolvectl", "dns", "devbox0", "[fd00::1]:5353"])
        );
    }

    #[test]
    fn argv_lines_quote_only_what_needs_it() {
        assert_eq!(
            join_argv(&argv(&["launchctl", "bootstrap", "system", "/a b/c's"])),
            r"launchctl bootstrap system '/a b/c'\''s'"
        );
    }
}
