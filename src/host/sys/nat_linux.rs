//! Linux: a machine's outbound NAT through `nft` (devbox's table), `iptables` (Docker's
//! `DOCKER-USER` chain, where it exists) and `/proc/sys/net/ipv4/ip_forward`, all in the
//! caller's network namespace. What to change is computed by `crate::nat` from what the host
//! holds now; this file reads the host and runs the commands. The applier holds the lease
//! registry's host-wide lock around each call (`Registry::lock`), so machines of every user
//! starting and stopping at once see each other's rules (and the last one to stop is the one
//! that puts `ip_forward` back).
//!
//! An ordinary user's devbox holds CAP_NET_ADMIN only in its permitted set (the installed
//! binary's file capability): `nft` and `iptables` get it through the ambient set for their
//! run only (`privileged::spawn_with_net_admin`), and `ip_forward` is opened with it raised in
//! this thread (a net sysctl grants its owner's mode bits to CAP_NET_ADMIN in the network
//! namespace's user namespace). Which link, which /24, and whether devbox turned forwarding on
//! come from the link's name and from devbox's own table in the kernel, never from a file a
//! user can write.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::host::HostError;
use crate::host::apply::Outcome;
use crate::host::privileged::{spawn_with_net_admin, with_net_admin};
use crate::nat::{
    self, Blocker, DOCKER_USER, DevboxTable, NatError, NatLink, PairRefusal, SwarmPair,
    docker_user_delete_argvs, docker_user_insert_argvs, docker_user_pair_delete_argvs,
    docker_user_pair_insert_argvs, find_blockers,
};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// Where `nft` and `iptables` are looked up, in order, instead of the caller's `PATH`: an
/// ordinary user's `PATH` on Debian has no `/usr/sbin`, where both live, and a command run
/// with a capability is best taken from the system's own directories.
const SYSTEM_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Gives machine `link` its NAT: devbox's rules (replacing any an earlier run left), its
/// DOCKER-USER rules on a host that runs Docker, and `ip_forward` on. Returns what in the
/// host's own firewall may still drop the machine's traffic; fails without changing anything
/// when that firewall certainly drops all of it. The caller holds the host-wide lock.
pub fn add_nat(link: &str) -> Result<(Outcome, Vec<Blocker>), HostError> {
    let nat = nat_link(link)?;
    let ruleset = nft_output(&["-j", "list", "ruleset"])?;
    let forward = iptables_output(&["-S", "FORWARD"]).unwrap_or(None);
    let docker_user = iptables_output(&["-S", DOCKER_USER]).ok().flatten();
    let report = find_blockers(&ruleset, forward.as_deref(), docker_user.is_some(), link)
        .map_err(|e| parse_error(e.to_string()))?;
    if let Some(b) = report.blockers.iter().find(|b| b.certain) {
        return Err(NatError::Blocked {
            link: link.to_owned(),
            blocker: b.clone(),
        }
        .into());
    }
    let current = DevboxTable::parse(&ruleset)?;
    let change = nat::add_change(current.as_ref(), &nat, read_forwarding()?);
    nft_batch(&change.batch)?;
    if change.enable_forwarding {
        write_forwarding(true)?;
    }
    if let Some(listing) = &docker_user {
        // The link's rules and its swarm pairs from an earlier run, as in devbox's table.
        for argv in docker_user_delete_argvs(listing, link)
            .into_iter()
            .chain(docker_user_pair_delete_argvs(listing, link))
        {
            run(&argv)?;
        }
        if report.use_docker_user {
            for argv in docker_user_insert_argvs(link, &nat.subnet.to_string()) {
                run(&argv)?;
            }
        }
    }
    Ok((Outcome::Done, report.blockers))
}

/// Takes machine `link`'s NAT away; the last machine's stop removes devbox's table and puts
/// `ip_forward` back to 0 if devbox turned it on. The caller holds the host-wide lock.
pub fn remove_nat(link: &str) -> Result<Outcome, HostError> {
    nat_link(link)?;
    let mut changed = false;
    if let Some(listing) = iptables_output(&["-S", DOCKER_USER]).ok().flatten() {
        for argv in docker_user_delete_argvs(&listing, link)
            .into_iter()
            .chain(docker_user_pair_delete_argvs(&listing, link))
        {
            run(&argv)?;
            changed = true;
        }
    }
    let ruleset = match nft_output(&["-j", "list", "ruleset"]) {
        Ok(r) => r,
        // Without nft there never were rules of devbox's.
        Err(HostError::Nat(NatError::MissingTool { .. })) => return Ok(outcome(changed)),
        Err(e) => return Err(e),
    };
    let Some(current) = DevboxTable::parse(&ruleset)? else {
        return Ok(outcome(changed));
    };
    let Some(change) = nat::remove_change(&current, link) else {
        return Ok(outcome(changed));
    };
    if change.restore_forwarding_off {
        write_forwarding(false)?;
    }
    nft_batch(&change.batch)?;
    Ok(Outcome::Done)
}

/// Opens the swarm ports between the pair's machines; both must be running (have their NAT).
/// The caller holds the host-wide lock.
pub fn add_swarm(pair: &SwarmPair) -> Result<Outcome, HostError> {
    let ruleset = nft_output(&["-j", "list", "ruleset"])?;
    let current = DevboxTable::parse(&ruleset)?;
    let batch = match nat::add_pair(current.as_ref(), pair) {
        Ok(batch) => batch,
        Err(PairRefusal::NotRunning(link)) => {
            return Err(HostError::Refused {
                item: format!("open the swarm ports between {pair}"),
                why: format!("the machine on {link} is not running"),
            });
        }
    };
    nft_batch(&batch)?;
    // On a host that runs Docker, its FORWARD policy drops what devbox's table accepts.
    if let Some(listing) = iptables_output(&["-S", DOCKER_USER]).ok().flatten() {
        let [a, _] = pair.links();
        let stale = docker_user_pair_delete_argvs(&listing, a)
            .into_iter()
            .filter(|argv| argv.iter().any(|w| *w == pair.iptables_tag()));
        for argv in stale.chain(docker_user_pair_insert_argvs(pair)) {
            run(&argv)?;
        }
    }
    Ok(Outcome::Done)
}

/// Closes every swarm pair of `link`. The caller holds the host-wide lock.
pub fn remove_swarm(link: &str) -> Result<Outcome, HostError> {
    let ruleset = match nft_output(&["-j", "list", "ruleset"]) {
        Ok(r) => r,
        Err(HostError::Nat(NatError::MissingTool { .. })) => return Ok(Outcome::AlreadyDone),
        Err(e) => return Err(e),
    };
    let mut changed = false;
    if let Some(listing) = iptables_output(&["-S", DOCKER_USER]).ok().flatten() {
        for argv in docker_user_pair_delete_argvs(&listing, link) {
            run(&argv)?;
            changed = true;
        }
    }
    let Some(current) = DevboxTable::parse(&ruleset)? else {
        return Ok(outcome(changed));
    };
    match nat::remove_pairs(&current, link) {
        Some(batch) => nft_batch(&batch).map(|()| Outcome::Done),
        None => Ok(outcome(changed)),
    }
}

fn outcome(changed: bool) -> Outcome {
    if changed {
        Outcome::Done
    } else {
        Outcome::AlreadyDone
    }
}

fn nat_link(link: &str) -> Result<NatLink, HostError> {
    NatLink::of(link).ok_or_else(|| HostError::Refused {
        item: format!("change the NAT of {link}"),
        why: "only devbox's own links (dbxN)".into(),
    })
}

fn parse_error(why: String) -> HostError {
    NatError::Parse {
        what: "the host's nftables ruleset",
        why,
    }
    .into()
}

fn read_forwarding() -> Result<bool, HostError> {
    let v = std::fs::read_to_string(IP_FORWARD).map_err(|source| HostError::Io {
        what: "read",
        path: IP_FORWARD.into(),
        source,
    })?;
    Ok(v.trim() != "0")
}

/// Writes `ip_forward` with CAP_NET_ADMIN raised for the open and the write.
fn write_forwarding(on: bool) -> Result<(), HostError> {
    with_net_admin(|| std::fs::write(IP_FORWARD, if on { "1\n" } else { "0\n" })).map_err(
        |source| HostError::Io {
            what: "write",
            path: IP_FORWARD.into(),
            source,
        },
    )
}

/// `nft ARGS`, its stdout; a missing `nft` is [`NatError::MissingTool`].
fn nft_output(args: &[&str]) -> Result<String, HostError> {
    let out = tool("nft", "nftables", args, None)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs one batch as one transaction: `nft -j -f -`.
fn nft_batch(batch: &nftables::schema::Nftables) -> Result<(), HostError> {
    let json = serde_json::to_vec(batch).expect("nftables types serialise");
    tool("nft", "nftables", &["-j", "-f", "-"], Some(&json)).map(drop)
}

/// `iptables -w 5 ARGS`: `Ok(None)` when iptables is not installed (then there is no
/// iptables firewall to read either), `Err` when it fails (a chain that does not exist).
fn iptables_output(args: &[&str]) -> Result<Option<String>, HostError> {
    let mut all = vec!["-w", "5"];
    all.extend(args);
    match tool("iptables", "iptables", &all, None) {
        Ok(out) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
        Err(HostError::Nat(NatError::MissingTool { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

fn run(argv: &[String]) -> Result<(), HostError> {
    let (program, args) = argv.split_first().expect("an argv has a program");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let package = if program == "nft" {
        "nftables"
    } else {
        "iptables"
    };
    tool(program, package, &args, None).map(drop)
}

/// `program` in the first of [`SYSTEM_DIRS`] that has it.
fn system_program(program: &str) -> Option<PathBuf> {
    SYSTEM_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

fn tool(
    program: &str,
    package: &'static str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<Output, HostError> {
    let line = || format!("{program} {}", args.join(" "));
    let missing = || {
        HostError::Nat(NatError::MissingTool {
            tool: if program == "nft" { "nft" } else { "iptables" },
            package,
        })
    };
    let path = system_program(program).ok_or_else(missing)?;
    let mut cmd = Command::new(path);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_with_net_admin(&mut cmd).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => missing(),
        _ => HostError::Spawn {
            argv: line(),
            source,
        },
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).map_err(|source| HostError::Spawn {
            argv: line(),
            source,
        })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| HostError::Spawn {
            argv: line(),
            source,
        })?;
    if !out.status.success() {
        return Err(HostError::Command {
            argv: line(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}
