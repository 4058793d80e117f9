//! The swarm ports between two of one user's machines (pure): while both run and both are in
//! one Docker swarm, the host forwards between their links Docker swarm mode's ports and
//! nothing else — 2377/tcp (cluster management), 7946/tcp+udp (node gossip), 4789/udp
//! (VXLAN of the overlay networks) — from one machine's host-only /24 to the other's, both
//! ways. The rules sit at the top of devbox's `forward` chain, above the shared drops that
//! otherwise keep machines apart, and carry the pair as their comment, `swarm dbxA dbxB`
//! (lower index first). Replies go back through each link's own `established,related` rule.
//!
//! A pair's rules go when either machine's NAT goes (its stop, or the next start on that
//! link after a crash: `ruleset.rs` deletes every rule that names the link), so a link
//! leased later to someone else never inherits a peer.

use std::borrow::Cow;

use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, Prefix, SetItem};
use nftables::schema::{NfCmd, NfListObject, Nftables, Rule};
use nftables::stmt::{Match, Operator, Statement};

use super::ruleset::{DevboxTable, FORWARD, accept, is, is_str, rule};
use crate::net::{HostOnlyNet, devbox_link};
use nftables::expr::MetaKey;

/// Swarm mode's TCP ports: cluster management, node gossip.
pub const SWARM_TCP: [u16; 2] = [2377, 7946];
/// Swarm mode's UDP ports: node gossip, overlay VXLAN.
pub const SWARM_UDP: [u16; 2] = [7946, 4789];
const PREFIX: &str = "swarm ";

/// Two machine links whose machines are in one swarm, lower index first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SwarmPair {
    a: String,
    b: String,
}

impl SwarmPair {
    /// The pair of two distinct machine links (`dbxN`); `None` for anything else (a share
    /// link, a host interface, the same link twice).
    pub fn new(x: &str, y: &str) -> Option<SwarmPair> {
        let (i, j) = (devbox_link(x)?.index, devbox_link(y)?.index);
        match i.cmp(&j) {
            std::cmp::Ordering::Less => Some(SwarmPair {
                a: x.to_owned(),
                b: y.to_owned(),
            }),
            std::cmp::Ordering::Greater => Some(SwarmPair {
                a: y.to_owned(),
                b: x.to_owned(),
            }),
            std::cmp::Ordering::Equal => None,
        }
    }

    pub fn links(&self) -> [&str; 2] {
        [&self.a, &self.b]
    }

    /// The pair's rules' comment.
    pub fn comment(&self) -> String {
        format!("{PREFIX}{} {}", self.a, self.b)
    }

    /// The pair a rule comment names, if it is a swarm rule's.
    pub fn of_comment(comment: &str) -> Option<SwarmPair> {
        let (a, b) = comment.strip_prefix(PREFIX)?.split_once(' ')?;
        SwarmPair::new(a, b).filter(|p| p.a == a)
    }

    /// The tag of the pair's rules in Docker's `DOCKER-USER` chain (no spaces: iptables
    /// prints it back as one word).
    pub fn iptables_tag(&self) -> String {
        format!("devbox:swarm:{}:{}", self.a, self.b)
    }

    /// The pair an iptables tag names, if it is a swarm rule's.
    pub fn of_iptables_tag(tag: &str) -> Option<SwarmPair> {
        let (a, b) = tag.strip_prefix("devbox:swarm:")?.split_once(':')?;
        SwarmPair::new(a, b).filter(|p| p.a == a)
    }

    /// Whether the pair is valid as deserialised (serde bypasses [`SwarmPair::new`]).
    pub fn is_valid(&self) -> bool {
        SwarmPair::new(&self.a, &self.b).as_ref() == Some(self)
    }
}

impl std::fmt::Display for SwarmPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} and {}", self.a, self.b)
    }
}

/// Whether a rule comment is a swarm pair that names `link`.
pub fn names_link(comment: &str, link: &str) -> bool {
    SwarmPair::of_comment(comment).is_some_and(|p| p.links().contains(&link))
}

/// Why a pair's ports cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairRefusal {
    /// A machine of the pair has no NAT rules: it is not running.
    NotRunning(String),
}

/// The batch that opens the swarm ports between the pair's machines (replacing the pair's
/// rules if present). Both machines must have their NAT in place: the table and their
/// `established,related` rules are theirs.
pub fn add_pair(
    current: Option<&DevboxTable>,
    pair: &SwarmPair,
) -> Result<Nftables<'static>, PairRefusal> {
    let current = match current {
        Some(t) => t,
        None => return Err(PairRefusal::NotRunning(pair.a.clone())),
    };
    if let Some(down) = pair.links().into_iter().find(|l| current.rules_of(l) == 0) {
        return Err(PairRefusal::NotRunning(down.to_owned()));
    }
    let comment = pair.comment();
    let mut b = Batch::new();
    for r in current
        .rules
        .iter()
        .filter(|r| r.comment.as_deref() == Some(&comment))
    {
        b.delete(NfListObject::Rule(Rule {
            handle: Some(r.handle),
            ..rule(&r.chain, vec![], None)
        }));
    }
    let [x, y] = pair.links();
    for (from, to) in [(x, y), (y, x)] {
        let (src, dst) = (net(from), net(to));
        for (proto, ports) in [("tcp", SWARM_TCP), ("udp", SWARM_UDP)] {
            b.add_cmd(NfCmd::Insert(NfListObject::Rule(rule(
                FORWARD,
                vec![
                    is(MetaKey::Iifname, from),
                    is(MetaKey::Oifname, to),
                    addr_in("saddr", &src),
                    addr_in("daddr", &dst),
                    is_str(MetaKey::L4proto, proto),
                    dport_in(&ports),
                    accept(),
                ],
                Some(&comment),
            ))));
        }
    }
    Ok(b.to_nftables())
}

/// The batch that closes every swarm pair of `link`; `None` when it has none.
pub fn remove_pairs(current: &DevboxTable, link: &str) -> Option<Nftables<'static>> {
    let mut b = Batch::new();
    let mut any = false;
    for r in current
        .rules
        .iter()
        .filter(|r| r.comment.as_deref().is_some_and(|c| names_link(c, link)))
    {
        any = true;
        b.delete(NfListObject::Rule(Rule {
            handle: Some(r.handle),
            ..rule(&r.chain, vec![], None)
        }));
    }
    any.then(|| b.to_nftables())
}

fn net(link: &str) -> HostOnlyNet {
    devbox_link(link).expect("a pair holds machine links only")
}

fn addr_in(field: &'static str, net: &HostOnlyNet) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: "ip".into(),
                field: field.into(),
            },
        ))),
        op: Operator::EQ,
        right: Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(Cow::Owned(
                net.subnet.network().to_string(),
            ))),
            len: u32::from(net.subnet.prefix_len()),
        })),
    })
}

fn dport_in(ports: &[u16]) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: "th".into(),
                field: "dport".into(),
            },
        ))),
        op: Operator::EQ,
        right: Expression::Named(NamedExpression::Set(
            ports
                .iter()
                .map(|p| SetItem::Element(Expression::Number(u32::from(*p))))
                .collect(),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// devbox's table with `links` running (3 NAT rules each, handles from 10) and `pairs`
    /// open (4 rules each, handles from 100).
    fn table(links: &[&str], pairs: &[&SwarmPair]) -> DevboxTable {
        let mut rules = Vec::new();
        let mut h = 10;
        for l in links {
            for chain in ["forward", "forward", "postrouting"] {
                rules.push((chain.to_owned(), h, l.to_string()));
                h += 1;
            }
        }
        let mut h = 100;
        for p in pairs {
            for _ in 0..4 {
                rules.push(("forward".to_owned(), h, p.comment()));
                h += 1;
            }
        }
        let mut objs = vec![serde_json::json!({"table": {"family": "inet", "name": "devbox"}})];
        for (chain, handle, comment) in rules {
            objs.push(
                serde_json::json!({"rule": {"family": "inet", "table": "devbox",
                "chain": chain, "handle": handle, "comment": comment, "expr": []}}),
            );
        }
        let text = serde_json::json!({ "nftables": objs }).to_string();
        DevboxTable::parse(&text).unwrap().unwrap()
    }

    fn rules(batch: &Nftables) -> Vec<serde_json::Value> {
        serde_json::to_value(batch).unwrap()["nftables"]
            .as_array()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_pair_is_two_distinct_machine_links_lower_index_first() {
        let p = SwarmPair::new("dbx12", "dbx3").unwrap();
        assert_eq!(p.links(), ["dbx3", "dbx12"]);
        assert_eq!(p.comment(), "swarm dbx3 dbx12");
        assert_eq!(SwarmPair::of_comment("swarm dbx3 dbx12"), Some(p.clone()));
        assert!(p.is_valid());
        for (x, y) in [
            ("dbx1", "dbx1"),
            ("dbx1", "dbx1s"),
            ("dbx1", "eth0"),
            ("dbx1", "dbx64"),
        ] {
            assert_eq!(SwarmPair::new(x, y), None, "{x} {y}");
        }
        // Only the canonical comment is a pair's: not reversed, not a link's own tag.
        assert_eq!(SwarmPair::of_comment("swarm dbx12 dbx3"), None);
        assert_eq!(SwarmPair::of_comment("dbx3"), None);
        assert!(names_link("swarm dbx3 dbx12", "dbx12"));
        assert!(!names_link("swarm dbx3 dbx12", "dbx1"));
        let forged: SwarmPair = serde_json::from_str(r#"{"a": "dbx2", "b": "eth0"}"#).unwrap();
        assert!(!forged.is_valid());
    }

    #[test]
    fn the_ports_open_both_ways_between_the_two_subnets_only() {
        let p = SwarmPair::new("dbx0", "dbx1").unwrap();
        let batch = add_pair(Some(&table(&["dbx0", "dbx1"], &[])), &p).unwrap();
        let rules = rules(&batch);
        assert_eq!(rules.len(), 4, "{rules:?}");
        let text = serde_json::to_string(&rules).unwrap();
        for want in [
            r#""iifname""#,
            r#""192.168.64.0""#,
            r#""192.168.65.0""#,
            r#""th""#,
            r#""dport""#,
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let mut directions = Vec::new();
        for r in &rules {
            let rule = &r["insert"]["rule"];
            assert_eq!(rule["comment"], "swarm dbx0 dbx1");
            assert_eq!(rule["chain"], "forward");
            let expr = rule["expr"].as_array().unwrap();
            let right = |i: usize| expr[i]["match"]["right"].clone();
            let ports: Vec<u64> = right(5)["set"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let proto = right(4).as_str().unwrap().to_owned();
            assert_eq!(
                ports,
                if proto == "tcp" {
                    [2377, 7946]
                } else {
                    [7946, 4789]
                }
            );
            directions.push((right(0), right(1), proto));
            assert!(expr[6].get("accept").is_some());
        }
        assert!(directions.contains(&("dbx0".into(), "dbx1".into(), "udp".into())));
        assert!(directions.contains(&("dbx1".into(), "dbx0".into(), "tcp".into())));
    }

    #[test]
    fn a_pair_opens_only_between_running_machines_and_replaces_itself() {
        let p = SwarmPair::new("dbx0", "dbx1").unwrap();
        assert_eq!(
            add_pair(Some(&table(&["dbx0"], &[])), &p),
            Err(PairRefusal::NotRunning("dbx1".into()))
        );
        assert_eq!(
            add_pair(None, &p),
            Err(PairRefusal::NotRunning("dbx0".into()))
        );
        let again = add_pair(Some(&table(&["dbx0", "dbx1"], &[&p])), &p).unwrap();
        let rules = rules(&again);
        let deleted: Vec<_> = rules.iter().filter(|r| r.get("delete").is_some()).collect();
        assert_eq!(deleted.len(), 4, "the old four go in the same transaction");
        assert_eq!(rules.len(), 8);
    }

    #[test]
    fn a_links_pairs_go_with_it_and_with_its_nat() {
        let p01 = SwarmPair::new("dbx0", "dbx1").unwrap();
        let p12 = SwarmPair::new("dbx1", "dbx2").unwrap();
        let t = table(&["dbx0", "dbx1", "dbx2"], &[&p01, &p12]);
        assert_eq!(rules(&remove_pairs(&t, "dbx0").unwrap()).len(), 4);
        assert_eq!(rules(&remove_pairs(&t, "dbx1").unwrap()).len(), 8);
        assert!(remove_pairs(&t, "dbx3").is_none());
        // A machine's stop takes its NAT and its pairs, not the other pair.
        let stop = super::super::remove_change(&t, "dbx0").unwrap();
        let handles: Vec<u64> = rules(&stop.batch)
            .iter()
            .map(|r| r["delete"]["rule"]["handle"].as_u64().unwrap())
            .collect();
        assert_eq!(handles, [10, 11, 12, 100, 101, 102, 103]);
        // A start after a crash drops the pairs the crashed run had.
        let nat = super::super::NatLink::of("dbx1").unwrap();
        let start = super::super::add_change(Some(&t), &nat, true);
        let deleted = rules(&start.batch)
            .iter()
            .filter(|r| r.get("delete").is_some())
            .count();
        assert_eq!(deleted, 3 + 8);
    }
}
