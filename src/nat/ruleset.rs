//! devbox's nftables table, `inet devbox`, and the batches that change it (pure).
//!
//! The table, with machine `dbx0` running on a host whose `ip_forward` was 0:
//!
//! ```text
//! table inet devbox {
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     oifname "dbx0" ct state established,related accept          comment "dbx0"
//!     iifname "dbx0" ip saddr 192.168.64.0/24 oifname != "dbx*" accept comment "dbx0"
//!     iifname "dbx*" drop                   comment "devbox: nothing else from a machine"
//!     oifname "dbx*" drop                   comment "devbox: nothing else to a machine"
//!     meta nfproto ipv4 drop                comment "devbox: ip_forward was 0"
//!   }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     iifname "dbx0" ip saddr 192.168.64.0/24 oifname != "dbx*" masquerade comment "dbx0"
//!   }
//! }
//! ```
//!
//! Each machine's rules carry its link name as their comment and go at the top of their
//! chain; the shared drops follow: a machine's subnet goes out (to any interface but another
//! machine's) and only replies come back, nothing is forwarded between two machines, and
//! nothing else reaches or leaves a machine's link through the host. The last rule exists only
//! when devbox turned `ip_forward` on: it is both the record of the original value (in the
//! kernel, where only `CAP_NET_ADMIN` can change it) and what keeps the host from routing
//! between its other interfaces meanwhile (IPv4 only: devbox never touches IPv6 forwarding).
//! An `accept` here cannot override a drop in another table; `firewall.rs` finds those.
//!
//! Every batch is one `nft -j -f -` transaction: it applies whole or not at all.

use std::borrow::Cow;
use std::collections::BTreeSet;

use nftables::batch::Batch;
use nftables::expr::{
    CT, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix,
};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Accept, Drop, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde::Deserialize;

use super::{NatError, NatLink};
use crate::net::devbox_link;

/// devbox's table (family `inet`).
pub const TABLE: &str = "devbox";
pub(super) const FORWARD: &str = "forward";
const POSTROUTING: &str = "postrouting";
/// Comment of the rule that records that devbox turned `ip_forward` on.
pub const FORWARDING_MARK: &str = "devbox: ip_forward was 0";
const FROM_MACHINES: &str = "devbox: nothing else from a machine";
const TO_MACHINES: &str = "devbox: nothing else to a machine";
/// Every machine link matches this interface-name wildcard.
const ANY_MACHINE: &str = "dbx*";
/// nftables' `srcnat` priority.
const SRCNAT: i32 = 100;

/// One rule of devbox's table as `nft -j list ruleset` shows it: only what
/// devbox needs to find its own rules again.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OwnRule {
    pub chain: String,
    pub handle: u32,
    #[serde(default)]
    pub comment: Option<String>,
}

impl OwnRule {
    /// Whether the rule is `link`'s: one of its NAT rules, or a swarm pair that names it.
    fn tagged(&self, link: &str) -> bool {
        self.comment
            .as_deref()
            .is_some_and(|c| c == link || super::swarm::names_link(c, link))
    }
}

/// What devbox's table holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevboxTable {
    pub rules: Vec<OwnRule>,
    /// Names of the chains present.
    pub chains: BTreeSet<String>,
}

impl DevboxTable {
    /// Reads devbox's table out of `nft -j list ruleset` (handles are always in nft's JSON);
    /// `None` when the table is absent. Only devbox's chains and rules are looked at, and of
    /// a rule only its chain, handle and comment: nothing else in the ruleset can make this
    /// fail.
    pub fn parse(json: &str) -> Result<Option<DevboxTable>, NatError> {
        #[derive(Deserialize)]
        struct Listing {
            nftables: Vec<serde_json::Value>,
        }
        let err = |why: String| NatError::Parse {
            what: "the host's nftables ruleset",
            why,
        };
        let ours = |o: &serde_json::Value| {
            let table = o.get("table").or(o.get("name")).and_then(|t| t.as_str());
            o.get("family").and_then(|f| f.as_str()) == Some("inet") && table == Some(TABLE)
        };
        let listing: Listing = serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
        let mut found = false;
        let mut table = DevboxTable::default();
        for obj in listing.nftables {
            if obj.get("table").is_some_and(|t| t.is_object() && ours(t)) {
                found = true;
            } else if let Some(rule) = obj.get("rule").filter(|r| ours(r)) {
                table
                    .rules
                    .push(OwnRule::deserialize(rule).map_err(|e| err(e.to_string()))?);
            } else if let Some(chain) = obj.get("chain").filter(|c| ours(c)) {
                let name = chain.get("name").and_then(|n| n.as_str());
                table.chains.insert(name.unwrap_or_default().to_owned());
            }
        }
        Ok(found.then_some(table))
    }

    fn has(&self, comment: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.comment.as_deref() == Some(comment))
    }

    /// The machine links that have rules in the table.
    pub fn links(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .filter_map(|r| r.comment.as_deref())
            .filter(|c| devbox_link(c).is_some())
            .map(str::to_owned)
            .collect()
    }

    /// Whether devbox turned `ip_forward` on (and must put it back to 0 at the end).
    pub fn turned_forwarding_on(&self) -> bool {
        self.has(FORWARDING_MARK)
    }

    /// How many rules carry `link`'s tag: 3 for a running machine, 0 once stopped.
    pub fn rules_of(&self, link: &str) -> usize {
        self.rules
            .iter()
            .filter(|r| r.comment.as_deref() == Some(link))
            .count()
    }
}

/// What the applier does for one machine, in this order: for an add, the batch, then
/// `ip_forward` on if asked; for a removal, `ip_forward` back to 0 if asked, then the batch
/// (so forwarding is never on without devbox's drops in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatChange {
    pub batch: Nftables<'static>,
    /// Turn `ip_forward` on after the batch.
    pub enable_forwarding: bool,
    /// Put `ip_forward` back to 0 before the batch (devbox turned it on; the last machine
    /// stops).
    pub restore_forwarding_off: bool,
}

/// The change that gives `nat` its rules. `current` is devbox's table now (`None`: absent);
/// `forwarding_on` is the host's `ip_forward`. Rules the machine had from an earlier run
/// (a crashed supervisor) are deleted in the same transaction, so there is always exactly
/// one set; shared rules missing from the table are added.
pub fn add_change(current: Option<&DevboxTable>, nat: &NatLink, forwarding_on: bool) -> NatChange {
    let empty = DevboxTable::default();
    let current = current.unwrap_or(&empty);
    let mut b = Batch::new();
    b.add(NfListObject::Table(table()));
    b.add(NfListObject::Chain(base_chain(
        FORWARD,
        NfChainType::Filter,
        NfHook::Forward,
        0,
    )));
    b.add(NfListObject::Chain(base_chain(
        POSTROUTING,
        NfChainType::NAT,
        NfHook::Postrouting,
        SRCNAT,
    )));
    // The link's own rules and its swarm pairs from an earlier run go: the pairs come back
    // only when the supervisor asks for them again.
    for r in current.rules.iter().filter(|r| r.tagged(&nat.link)) {
        b.delete(NfListObject::Rule(Rule {
            handle: Some(r.handle),
            ..rule(&r.chain, vec![], None)
        }));
    }
    if !current.has(FROM_MACHINES) {
        b.add(NfListObject::Rule(rule(
            FORWARD,
            vec![is(MetaKey::Iifname, ANY_MACHINE), drop()],
            Some(FROM_MACHINES),
        )));
    }
    if !current.has(TO_MACHINES) {
        b.add(NfListObject::Rule(rule(
            FORWARD,
            vec![is(MetaKey::Oifname, ANY_MACHINE), drop()],
            Some(TO_MACHINES),
        )));
    }
    if !forwarding_on && !current.has(FORWARDING_MARK) {
        b.add(NfListObject::Rule(rule(
            FORWARD,
            vec![is_str(MetaKey::Nfproto, "ipv4"), drop()],
            Some(FORWARDING_MARK),
        )));
    }
    // Inserted at the top, above the shared drops.
    let link = nat.link.as_str();
    b.add_cmd(nftables::schema::NfCmd::Insert(NfListObject::Rule(rule(
        FORWARD,
        vec![
            is(MetaKey::Iifname, link),
            saddr_in(nat),
            is_not(MetaKey::Oifname, ANY_MACHINE),
            accept(),
        ],
        Some(link),
    ))));
    b.add_cmd(nftables::schema::NfCmd::Insert(NfListObject::Rule(rule(
        FORWARD,
        vec![is(MetaKey::Oifname, link), ct_reply(), accept()],
        Some(link),
    ))));
    b.add_cmd(nftables::schema::NfCmd::Insert(NfListObject::Rule(rule(
        POSTROUTING,
        // Forwarded packets from the machine's link only: the host's own packets from its
        // address on the link (a query from this host to the machine's DNS server goes out
        // through `lo`) keep their source; masqueraded, they took another interface's
        // address, which that server refuses.
        vec![
            is(MetaKey::Iifname, link),
            saddr_in(nat),
            is_not(MetaKey::Oifname, ANY_MACHINE),
            Statement::Masquerade(None),
        ],
        Some(link),
    ))));
    NatChange {
        batch: b.to_nftables(),
        enable_forwarding: !forwarding_on,
        restore_forwarding_off: false,
    }
}

/// The change that takes `link`'s rules away; when no other machine has rules left, the
/// whole table goes, and `ip_forward` is put back to 0 if devbox had turned it on. `None`
/// when there is nothing to do.
pub fn remove_change(current: &DevboxTable, link: &str) -> Option<NatChange> {
    let others = current.links().into_iter().any(|l| l != link);
    let mut b = Batch::new();
    if others {
        let mine: Vec<&OwnRule> = current.rules.iter().filter(|r| r.tagged(link)).collect();
        if mine.is_empty() {
            return None;
        }
        for r in mine {
            b.delete(NfListObject::Rule(Rule {
                handle: Some(r.handle),
                ..rule(&r.chain, vec![], None)
            }));
        }
        return Some(NatChange {
            batch: b.to_nftables(),
            enable_forwarding: false,
            restore_forwarding_off: false,
        });
    }
    b.delete(NfListObject::Table(table()));
    Some(NatChange {
        batch: b.to_nftables(),
        enable_forwarding: false,
        restore_forwarding_off: current.turned_forwarding_on(),
    })
}

/// A batch as the JSON `nft -j -f -` reads (and the golden files hold).
pub fn render_text(batch: &Nftables) -> String {
    let mut s = serde_json::to_string_pretty(batch).expect("nftables types serialise");
    s.push('\n');
    s
}

fn table() -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    }
}

fn base_chain(name: &'static str, t: NfChainType, hook: NfHook, prio: i32) -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        _type: Some(t),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }
}

pub(super) fn rule(
    chain: &str,
    expr: Vec<Statement<'static>>,
    comment: Option<&str>,
) -> Rule<'static> {
    Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: Cow::Owned(chain.to_owned()),
        expr: expr.into(),
        comment: comment.map(|c| Cow::Owned(c.to_owned())),
        ..Rule::default()
    }
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

pub(super) fn is(key: MetaKey, name: &str) -> Statement<'static> {
    matches(
        meta(key),
        Operator::EQ,
        Expression::String(Cow::Owned(name.to_owned())),
    )
}

pub(super) fn is_str(key: MetaKey, value: &'static str) -> Statement<'static> {
    matches(meta(key), Operator::EQ, Expression::String(value.into()))
}

fn is_not(key: MetaKey, name: &str) -> Statement<'static> {
    matches(
        meta(key),
        Operator::NEQ,
        Expression::String(Cow::Owned(name.to_owned())),
    )
}

fn saddr_in(nat: &NatLink) -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: "ip".into(),
                field: "saddr".into(),
            },
        ))),
        Operator::EQ,
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(Cow::Owned(
                nat.subnet.network().to_string(),
            ))),
            len: u32::from(nat.subnet.prefix_len()),
        })),
    )
}

fn ct_reply() -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::CT(CT {
            key: "state".into(),
            family: None,
            dir: None,
        })),
        Operator::IN,
        Expression::List(vec![
            Expression::String("established".into()),
            Expression::String("related".into()),
        ]),
    )
}

pub(super) fn accept() -> Statement<'static> {
    Statement::Accept(Some(Accept {}))
}

fn drop() -> Statement<'static> {
    Statement::Drop(Some(Drop {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(rules: &[(&str, u32, Option<&str>)]) -> String {
        let mut objs = vec![
            serde_json::json!({"metainfo": {"version": "1.0.6", "json_schema_version": 1}}),
            serde_json::json!({"table": {"family": "inet", "name": "devbox", "handle": 1}}),
            serde_json::json!({"chain": {"family": "inet", "table": "devbox", "name": "forward",
                "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}),
        ];
        for (chain, handle, comment) in rules {
            let mut r = serde_json::json!({"family": "inet", "table": "devbox", "chain": chain,
                "handle": handle, "expr": [{"accept": null}, {"xt": {"type": "match"}}]});
            if let Some(c) = comment {
                r["comment"] = serde_json::json!(c);
            }
            objs.push(serde_json::json!({ "rule": r }));
        }
        serde_json::json!({ "nftables": objs }).to_string()
    }

    fn running(links: &[&str], marked: bool) -> DevboxTable {
        let mut rules = vec![
            ("forward", 2, Some(FROM_MACHINES)),
            ("forward", 3, Some(TO_MACHINES)),
        ];
        if marked {
            rules.push(("forward", 4, Some(FORWARDING_MARK)));
        }
        let mut h = 10;
        for l in links {
            for chain in ["forward", "forward", "postrouting"] {
                rules.push((chain, h, Some(l)));
                h += 1;
            }
        }
        DevboxTable::parse(&listing(&rules)).unwrap().unwrap()
    }

    fn commands(c: &NatChange) -> Vec<String> {
        let v = serde_json::to_value(&c.batch).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let (cmd, body) = o.as_object().unwrap().iter().next().unwrap();
                let (kind, obj) = body.as_object().unwrap().iter().next().unwrap();
                let what = obj
                    .get("comment")
                    .or(obj.get("name"))
                    .and_then(|s| s.as_str())
                    .unwrap_or("");
                let handle = obj
                    .get("handle")
                    .map(|h| format!("#{h}"))
                    .unwrap_or_default();
                format!("{cmd} {kind} {what}{handle}").trim_end().to_owned()
            })
            .collect()
    }

    #[test]
    fn the_listing_is_read_for_chains_rules_and_tags_only() {
        let t = running(&["dbx0", "dbx5"], true);
        assert_eq!(t.links().into_iter().collect::<Vec<_>>(), ["dbx0", "dbx5"]);
        assert!(t.turned_forwarding_on());
        assert_eq!(t.rules_of("dbx0"), 3);
        assert_eq!(t.rules_of("dbx1"), 0);
        assert!(t.chains.contains("forward"));
        assert!(DevboxTable::parse("{").is_err());
        let bad = r#"{"nftables":[{"rule":{"family":"inet","table":"devbox","chain":"x"}}]}"#;
        assert!(DevboxTable::parse(bad).is_err());
        // Other tables' rules, even malformed, are not devbox's business; no table is None.
        let other = r#"{"nftables":[{"rule":{"family":"ip","table":"filter","chain":"x"}}]}"#;
        assert_eq!(DevboxTable::parse(other).unwrap(), None);
    }

    #[test]
    fn the_first_machine_creates_the_table_and_records_forwarding() {
        let nat = NatLink::of("dbx0").unwrap();
        let c = add_change(None, &nat, false);
        assert!(c.enable_forwarding && !c.restore_forwarding_off);
        assert_eq!(
            commands(&c),
            [
                "add table devbox",
                "add chain forward",
                "add chain postrouting",
                "add rule devbox: nothing else from a machine",
                "add rule devbox: nothing else to a machine",
                "add rule devbox: ip_forward was 0",
                "insert rule dbx0",
                "insert rule dbx0",
                "insert rule dbx0",
            ]
        );
        // A host that forwards already: no record, and nothing else is dropped.
        let c = add_change(None, &nat, true);
        assert!(!c.enable_forwarding);
        assert!(!commands(&c).iter().any(|l| l.contains(FORWARDING_MARK)));
    }

    #[test]
    fn the_share_link_is_never_forwarded_nor_masqueraded() {
        // The share link (`dbxNs`, a /30 at the top of the machine's /24) carries NFS to the
        // host and nothing else: no rule names it, the machine's accepts match its main TAP
        // by exact name (nft's `iifname "dbx0"` has no wildcard, so `dbx0s` is not it), and
        // the shared drops (`dbx*`) cover it in both directions.
        let net = crate::net::HostOnlyNet::from_index(0).unwrap();
        let share = net.share_link();
        let nat = NatLink::of(&net.tap_name()).unwrap();
        assert!(NatLink::of(&share.tap).is_none());
        let text = render_text(&add_change(None, &nat, false).batch);
        assert!(!text.contains(&format!("\"{}\"", share.tap)), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut accepts = 0;
        let mut drops = Vec::new();
        for o in v["nftables"].as_array().unwrap() {
            let Some(r) = o.get("insert").or(o.get("add")).and_then(|c| c.get("rule")) else {
                continue;
            };
            let names: Vec<&str> = r["expr"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["match"]["right"].as_str())
                .filter(|n| n.starts_with("dbx"))
                .collect();
            let expr = r["expr"].to_string();
            if expr.contains("\"accept\"") || expr.contains("\"masquerade\"") {
                accepts += 1;
                // Each names the main TAP exactly (or excludes every machine's link).
                for n in names {
                    assert!(n == "dbx0" || n == ANY_MACHINE, "{n} in {expr}");
                }
            } else if expr.contains("\"drop\"") {
                drops.extend(names);
            }
        }
        assert_eq!(accepts, 3);
        assert_eq!(drops, [ANY_MACHINE, ANY_MACHINE]);
        assert!(share.tap.starts_with(ANY_MACHINE.trim_end_matches('*')));
    }

    #[test]
    fn a_restart_after_a_crash_replaces_the_old_rules() {
        let t = running(&["dbx0", "dbx1"], true);
        let c = add_change(Some(&t), &NatLink::of("dbx1").unwrap(), true);
        assert_eq!(
            commands(&c),
            [
                "add table devbox",
                "add chain forward",
                "add chain postrouting",
                "delete rule #13",
                "delete rule #14",
                "delete rule #15",
                "insert rule dbx1",
                "insert rule dbx1",
                "insert rule dbx1",
            ]
        );
        assert!(!c.enable_forwarding);
    }

    #[test]
    fn forwarding_turned_off_behind_devbox_is_recorded_and_turned_on_again() {
        let t = running(&["dbx0"], false);
        let c = add_change(Some(&t), &NatLink::of("dbx1").unwrap(), false);
        assert!(c.enable_forwarding);
        assert!(commands(&c).contains(&format!("add rule {FORWARDING_MARK}")));
    }

    #[test]
    fn the_last_machine_takes_the_table_and_puts_forwarding_back() {
        let t = running(&["dbx0", "dbx1"], true);
        let c = remove_change(&t, "dbx0").unwrap();
        assert_eq!(
            commands(&c),
            ["delete rule #10", "delete rule #11", "delete rule #12"]
        );
        assert!(!c.restore_forwarding_off);
        assert!(remove_change(&t, "dbx7").is_none(), "not ours to remove");

        let t = running(&["dbx1"], true);
        let c = remove_change(&t, "dbx1").unwrap();
        assert_eq!(commands(&c), ["delete table devbox"]);
        assert!(c.restore_forwarding_off);
        let t = running(&["dbx1"], false);
        assert!(!remove_change(&t, "dbx1").unwrap().restore_forwarding_off);
        // A table with no machine left (a crash between two steps) goes too.
        let t = running(&[], true);
        let c = remove_change(&t, "dbx1").unwrap();
        assert!(c.restore_forwarding_off);
    }
}
