//! The host's other firewalls, read for a drop that devbox's table cannot override (pure).
//!
//! Netfilter runs every base chain on the forward hook, of every table: an `accept` in
//! devbox's table only ends that chain, and a drop anywhere else still drops. So at each
//! start devbox reads the host's rules and names what would drop its machine's traffic:
//!
//! | set-up | what devbox does |
//! |---|---|
//! | no firewall, or one that forwards | nothing else needed |
//! | Docker on the host (iptables `FORWARD` policy `DROP`, chain `DOCKER-USER`) | adds its tagged rules to `DOCKER-USER` (`iptables.rs`) |
//! | ufw (`ufw-*` chains in iptables, forward policy `DROP`) | reported: `ufw route allow in on dbxN` |
//! | firewalld (table `inet firewalld`) | reported: put `dbxN` in the `trusted` zone |
//! | iptables `FORWARD` policy `DROP` without Docker or ufw | reported: the two `iptables -I FORWARD` rules |
//! | another nftables table with a forward chain that drops | reported: the two `nft insert rule` commands for that chain |
//!
//! A report is a warning: the chain may well accept the machine's traffic by a rule devbox
//! does not understand. It is an error only when nothing can get out: a drop policy on a
//! chain without a single rule that accepts or jumps anywhere.

use std::fmt;

use serde::Deserialize;

use super::ruleset::TABLE;

/// A firewall that drops what a machine sends out, and how to let it through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// Which firewall, and which chain.
    pub what: String,
    /// The exact commands that let the machine's traffic through.
    pub fix: String,
    /// Nothing in that chain can accept anything: the machine cannot get out at all.
    pub certain: bool,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

/// What the host's firewall means for one machine link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallReport {
    pub blockers: Vec<Blocker>,
    /// iptables' `FORWARD` drops, and Docker's `DOCKER-USER` chain is there for devbox's rules.
    pub use_docker_user: bool,
}

#[derive(Deserialize)]
struct Listing {
    nftables: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChainInfo {
    family: String,
    table: String,
    name: String,
    #[serde(default)]
    hook: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    policy: Option<String>,
}

#[derive(Deserialize)]
struct RuleInfo {
    family: String,
    table: String,
    chain: String,
    #[serde(default)]
    expr: Vec<serde_json::Value>,
}

/// Tables iptables-nft keeps; their `FORWARD` chain is read through `iptables -S` instead.
const XTABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

/// Reads `nft -j list ruleset` (`ruleset`) and `iptables -S FORWARD` (`forward`, `None`
/// without iptables), with whether Docker's `DOCKER-USER` chain exists, for machine `link`.
/// A ruleset that is not nft's JSON is an error in the caller's hands (it gets `Err`).
pub fn find_blockers(
    ruleset: &str,
    forward: Option<&str>,
    docker_user: bool,
    link: &str,
) -> Result<FirewallReport, serde_json::Error> {
    let mut report = FirewallReport::default();
    if let Some(forward) = forward {
        iptables_forward(forward, docker_user, link, &mut report);
    }
    let listing: Listing = serde_json::from_str(ruleset)?;
    let chains: Vec<ChainInfo> = listing
        .nftables
        .iter()
        .filter_map(|o| o.get("chain"))
        .filter_map(|c| ChainInfo::deserialize(c).ok())
        .collect();
    let rules: Vec<RuleInfo> = listing
        .nftables
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter_map(|r| RuleInfo::deserialize(r).ok())
        .collect();
    if chains
        .iter()
        .any(|c| c.family == "inet" && c.table == "firewalld")
    {
        report.blockers.push(Blocker {
            what: "firewalld rejects forwarded traffic from interfaces outside its zones".into(),
            fix: format!(
                "put the machine's link in firewalld's trusted zone: \
                 `sudo firewall-cmd --zone=trusted --add-interface={link}` \
                 (and once more with `--permanent` to keep it)"
            ),
            certain: false,
        });
    }
    for c in &chains {
        let ours = c.family == "inet" && c.table == TABLE;
        let iptables_own =
            forward.is_some() && c.family == "ip" && XTABLES.contains(&c.table.as_str());
        let family_ok = c.family == "ip" || c.family == "inet";
        if ours || iptables_own || !family_ok || c.table == "firewalld" {
            continue;
        }
        if c.hook.as_deref() != Some("forward") || c.kind.as_deref() != Some("filter") {
            continue;
        }
        let own: Vec<&RuleInfo> = rules
            .iter()
            .filter(|r| r.family == c.family && r.table == c.table && r.chain == c.name)
            .collect();
        let policy_drop = c.policy.as_deref() == Some("drop");
        let final_drop = own.last().is_some_and(|r| unconditional_drop(&r.expr));
        if !policy_drop && !final_drop {
            continue;
        }
        let lets_through = own.iter().any(|r| r.expr.iter().any(passes));
        let at = format!("{} {} {}", c.family, c.table, c.name);
        report.blockers.push(Blocker {
            what: format!("the nftables chain `{at}` drops forwarded traffic"),
            fix: format!(
                "let the machine's traffic through that chain: \
                 `sudo nft insert rule {at} iifname \"{link}\" accept` and \
                 `sudo nft insert rule {at} oifname \"{link}\" ct state established,related accept`"
            ),
            certain: policy_drop && !lets_through,
        });
    }
    Ok(report)
}

/// iptables' `FORWARD` chain, as `iptables -S FORWARD` prints it.
fn iptables_forward(forward: &str, docker_user: bool, link: &str, report: &mut FirewallReport) {
    let lines: Vec<Vec<&str>> = forward
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let policy_drop = lines
        .iter()
        .any(|w| w.as_slice() == ["-P", "FORWARD", "DROP"]);
    let rules: Vec<&Vec<&str>> = lines
        .iter()
        .filter(|w| w.first() == Some(&"-A") && w.get(1) == Some(&"FORWARD"))
        .collect();
    let target = |w: &[&str]| {
        w.windows(2)
            .find(|p| p[0] == "-j" || p[0] == "-g")
            .map(|p| p[1].to_owned())
    };
    let final_drop = rules
        .last()
        .is_some_and(|w| w.len() >= 4 && w[2] == "-j" && (w[3] == "DROP" || w[3] == "REJECT"));
    if !policy_drop && !final_drop {
        return;
    }
    if docker_user {
        report.use_docker_user = true;
        return;
    }
    let ufw = rules
        .iter()
        .any(|w| target(w).is_some_and(|t| t.starts_with("ufw-")));
    let lets_through = rules
        .iter()
        .any(|w| target(w).is_some_and(|t| !matches!(t.as_str(), "DROP" | "REJECT" | "LOG")));
    let blocker = if ufw {
        Blocker {
            what: "ufw drops forwarded traffic (its default forward policy)".into(),
            fix: format!("allow the machine's traffic out: `sudo ufw route allow in on {link}`"),
            certain: false,
        }
    } else {
        Blocker {
            what: "iptables' FORWARD chain drops forwarded traffic".into(),
            fix: format!(
                "let the machine's traffic through: `sudo iptables -I FORWARD -i {link} -j ACCEPT` \
                 and `sudo iptables -I FORWARD -o {link} -m conntrack --ctstate \
                 RELATED,ESTABLISHED -j ACCEPT`"
            ),
            certain: policy_drop && !lets_through,
        }
    };
    report.blockers.push(blocker);
}

/// A statement that can let a packet through: a verdict other than drop/reject.
fn passes(stmt: &serde_json::Value) -> bool {
    ["accept", "jump", "goto", "vmap", "queue"]
        .iter()
        .any(|k| stmt.get(k).is_some())
}

/// A rule that drops everything that reaches it (counters, logs and the like aside).
fn unconditional_drop(expr: &[serde_json::Value]) -> bool {
    let verdict = expr
        .iter()
        .any(|s| s.get("drop").is_some() || s.get("reject").is_some());
    let harmless = |s: &serde_json::Value| {
        ["drop", "reject", "counter", "log", "limit"]
            .iter()
            .any(|k| s.get(k).is_some())
    };
    verdict && expr.iter().all(harmless)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ruleset(objs: Vec<serde_json::Value>) -> String {
        json!({ "nftables": objs }).to_string()
    }

    fn chain(family: &str, table: &str, name: &str, policy: &str) -> serde_json::Value {
        json!({"chain": {"family": family, "table": table, "name": name, "handle": 1,
            "type": "filter", "hook": "forward", "prio": 0, "policy": policy}})
    }

    fn rule(family: &str, table: &str, chain: &str, expr: serde_json::Value) -> serde_json::Value {
        json!({"rule": {"family": family, "table": table, "chain": chain, "handle": 2, "expr": expr}})
    }

    const DOCKER_FORWARD: &str = "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n\
        -A FORWARD -j DOCKER-FORWARD\n";

    #[test]
    fn an_open_host_and_a_docker_host_need_no_report() {
        let empty = ruleset(vec![]);
        let r = find_blockers(&empty, Some("-P FORWARD ACCEPT\n"), false, "dbx0").unwrap();
        assert_eq!(r, FirewallReport::default());
        let r = find_blockers(&empty, None, false, "dbx0").unwrap();
        assert!(r.blockers.is_empty());
        // Docker: devbox's rules go to DOCKER-USER. Its tables in nft are iptables' own.
        let nft = ruleset(vec![chain("ip", "filter", "FORWARD", "drop")]);
        let r = find_blockers(&nft, Some(DOCKER_FORWARD), true, "dbx0").unwrap();
        assert!(r.use_docker_user && r.blockers.is_empty(), "{r:?}");
        // devbox's own table is never a blocker.
        let nft = ruleset(vec![chain("inet", "devbox", "forward", "drop")]);
        assert!(
            find_blockers(&nft, None, false, "dbx0")
                .unwrap()
                .blockers
                .is_empty()
        );
    }

    #[test]
    fn ufw_and_plain_iptables_get_their_own_fix() {
        let ufw = "-P FORWARD DROP\n-A FORWARD -j ufw-before-logging-forward\n\
            -A FORWARD -j ufw-before-forward\n-A FORWARD -j ufw-after-forward\n";
        let r = find_blockers(&ruleset(vec![]), Some(ufw), false, "dbx2").unwrap();
        assert_eq!(r.blockers.len(), 1);
        assert_eq!(
            r.blockers[0].fix,
            "allow the machine's traffic out: `sudo ufw route allow in on dbx2`"
        );
        assert!(!r.blockers[0].certain);

        let bare = "-P FORWARD DROP\n";
        let r = find_blockers(&ruleset(vec![]), Some(bare), false, "dbx0").unwrap();
        assert!(r.blockers[0].certain, "nothing in FORWARD can accept");
        assert!(
            r.blockers[0]
                .fix
                .contains("sudo iptables -I FORWARD -i dbx0 -j ACCEPT")
        );
        let last_drop = "-P FORWARD ACCEPT\n-A FORWARD -i eth1 -j ACCEPT\n-A FORWARD -j DROP\n";
        let r = find_blockers(&ruleset(vec![]), Some(last_drop), false, "dbx0").unwrap();
        assert_eq!(r.blockers.len(), 1);
        assert!(!r.blockers[0].certain);
    }

    #[test]
    fn firewalld_and_hand_written_tables_are_named() {
        let nft = ruleset(vec![
            json!({"table": {"family": "inet", "name": "firewalld", "handle": 3}}),
            chain("inet", "firewalld", "filter_FORWARD", "accept"),
        ]);
        let r = find_blockers(&nft, Some("-P FORWARD ACCEPT\n"), false, "dbx0").unwrap();
        assert_eq!(r.blockers.len(), 1);
        assert!(
            r.blockers[0]
                .fix
                .contains("firewall-cmd --zone=trusted --add-interface=dbx0")
        );

        let nft = ruleset(vec![
            chain("inet", "filter", "forward", "drop"),
            rule(
                "inet",
                "filter",
                "forward",
                json!([{"match": {"op": "in", "left": {"ct": {"key": "state"}},
                "right": ["established", "related"]}}, {"accept": null}]),
            ),
        ]);
        let r = find_blockers(&nft, Some("-P FORWARD ACCEPT\n"), false, "dbx0").unwrap();
        assert_eq!(r.blockers.len(), 1);
        let b = &r.blockers[0];
        assert_eq!(
            b.what,
            "the nftables chain `inet filter forward` drops forwarded traffic"
        );
        assert!(
            b.fix
                .contains("`sudo nft insert rule inet filter forward iifname \"dbx0\" accept`")
        );
        assert!(!b.certain);

        let nft = ruleset(vec![chain("ip", "fw", "fwd", "drop")]);
        assert!(find_blockers(&nft, None, false, "dbx0").unwrap().blockers[0].certain);

        let nft = ruleset(vec![
            chain("inet", "mine", "fwd", "accept"),
            rule(
                "inet",
                "mine",
                "fwd",
                json!([{"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]),
            ),
        ]);
        let r = find_blockers(&nft, None, false, "dbx0").unwrap();
        assert_eq!(r.blockers.len(), 1, "a final unconditional drop");
        // IPv6-only and bridge tables do not see the machine's IPv4 traffic.
        let nft = ruleset(vec![
            chain("ip6", "v6", "fwd", "drop"),
            chain("bridge", "b", "fwd", "drop"),
        ]);
        assert!(
            find_blockers(&nft, None, false, "dbx0")
                .unwrap()
                .blockers
                .is_empty()
        );
        assert!(find_blockers("not json", None, false, "dbx0").is_err());
    }
}
