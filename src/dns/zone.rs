//! The machine's DNS zone, built purely from the machine's settings and the list of its running
//! containers: `<machine>.<tld>` for the guest, `<container>.<machine>.<tld>` for each container
//! (every IP on every network, A and AAAA), the aliases containers ask for, and PTR records for
//! all of those IPs. No I/O and no tasks; the server reads a built [`Zone`] through
//! [`super::RecordsHandle`], the watcher rebuilds it when containers change.
//!
//! Names live in a `HashMap`, so a miss costs one hash like a hit does: hickory's in-memory
//! zone scans every key on a negative answer (research/services.md §2.4).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

/// TTL of every served record. Short, so a stopped or renamed container leaves client caches
/// within seconds (the issue asks for at most 5 s).
pub const RECORD_TTL: u32 = 5;

/// Environment variables whose comma-separated values are aliases (`DNSDOCK_ALIAS` for
/// compatibility with dnsdock).
pub const ALIAS_ENV: [&str; 2] = ["DEVBOX_ALIAS", "DNSDOCK_ALIAS"];

/// Labels whose comma-separated values are aliases (`com.dnsdock.alias` for dnsdock users).
pub const ALIAS_LABELS: [&str; 2] = ["devbox.alias", "com.dnsdock.alias"];

/// What the zone needs to know about the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    pub machine: String,
    pub tld: String,
    pub guest_ip: IpAddr,
    /// Names of the other machines: an alias under `<other>.<tld>` is refused.
    pub other_machines: Vec<String>,
}

/// One running container, as the zone sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// Docker's container id (used in log lines and by the watcher's bookkeeping).
    pub id: String,
    /// Container name without Docker's leading `/`.
    pub name: String,
    /// Its addresses on every network it is attached to.
    pub ips: Vec<IpAddr>,
    /// Names it asked for (see [`aliases_from`]), as given.
    pub aliases: Vec<String>,
}

/// Why a name a container asked for is not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// Not a syntactically valid DNS name.
    Invalid,
    /// Not strictly under the machine's TLD (`evil.com`, or the bare TLD itself).
    OutsideTld,
    /// `<machine>.<tld>` itself: that name belongs to the guest.
    MachineName,
    /// Equal to or under another machine's `<other>.<tld>`.
    OtherMachine(String),
    /// Equal to another container's `<container>.<machine>.<tld>`.
    OtherContainer(String),
}

/// A name refused for a container; the server logs each as a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub container: String,
    pub name: String,
    pub reason: RefusalReason,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (container, name) = (&self.container, &self.name);
        write!(f, "container `{container}`: name `{name}` refused: ")?;
        match &self.reason {
            RefusalReason::Invalid => write!(f, "not a valid DNS name"),
            RefusalReason::OutsideTld => write!(f, "not under the machine's TLD"),
            RefusalReason::MachineName => write!(f, "it is the machine's own name"),
            RefusalReason::OtherMachine(m) => write!(f, "it belongs to machine `{m}`"),
            RefusalReason::OtherContainer(c) => write!(f, "it is container `{c}`'s name"),
        }
    }
}

/// Aliases a container asks for, from its environment (`KEY=value` strings, as Docker gives
/// them) and labels: every comma-separated, non-empty value, in order, without duplicates.
pub fn aliases_from<'a>(
    env: impl IntoIterator<Item = &'a str>,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    let env_values = env.into_iter().filter_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        ALIAS_ENV.contains(&k).then_some(v)
    });
    let label_values = labels
        .into_iter()
        .filter(|(k, _)| ALIAS_LABELS.contains(k))
        .map(|(_, v)| v);
    let mut out: Vec<String> = Vec::new();
    for alias in env_values.chain(label_values).flat_map(|v| v.split(',')) {
        let alias = alias.trim();
        if !alias.is_empty() && !out.iter().any(|a| a == alias) {
            out.push(alias.to_string());
        }
    }
    out
}

/// Result of looking a name up in the zone.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a> {
    /// The name exists and has records of the asked type.
    Answer(&'a [Record]),
    /// The name exists but has no record of that type; the SOA goes in the authority section.
    NoData(&'a Record),
    /// The name is under `<machine>.<tld>` and does not exist.
    NxDomain(&'a Record),
    /// Not ours: forward it.
    NotOwned,
}

#[derive(Debug, Default)]
struct Node {
    a: Vec<Record>,
    aaaa: Vec<Record>,
    ptr: Vec<Record>,
    all: Vec<Record>,
    /// SOA for negative answers at this name: the machine's for names under it, else one
    /// owned by the name itself (devbox owns that single name, not its parent zone).
    soa: Option<Record>,
}

/// The built record map. Cheap to look up; rebuilt whole on every container change.
#[derive(Debug)]
pub struct Zone {
    apex: LowerName,
    apex_soa: Record,
    nodes: HashMap<LowerName, Node>,
}

impl Zone {
    /// Builds the zone for `cfg` and `containers`, returning the names it refused.
    pub fn build(cfg: &ZoneConfig, containers: &[Container]) -> (Zone, Vec<Refusal>) {
        let tld = normalize(&cfg.tld);
        let machine = normalize(&cfg.machine);
        let apex_text = format!("{machine}.{tld}");
        let apex = fqdn(&apex_text).expect("machine names and TLDs are validated DNS labels");
        let apex_soa = soa_record(&apex, &apex);

        let mut refusals = Vec::new();
        // name -> (ips, ptr target); BTree so PTR and answer order are stable.
        let mut wanted: BTreeMap<Name, BTreeSet<IpAddr>> = BTreeMap::new();
        let mut ptrs: BTreeMap<IpAddr, BTreeSet<Name>> = BTreeMap::new();
        wanted.entry(apex.clone()).or_default().insert(cfg.guest_ip);
        ptrs.entry(cfg.guest_ip).or_default().insert(apex.clone());

        let mut sorted: Vec<&Container> = containers.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let mut container_names: HashMap<Name, &str> = HashMap::new();
        for c in &sorted {
            let cname = c.name.trim_start_matches('/');
            match fqdn(&format!("{}.{apex_text}", normalize(cname))) {
                Some(name) if name.num_labels() > apex.num_labels() => {
                    container_names.insert(name.clone(), cname);
                    let ips = wanted.entry(name.clone()).or_default();
                    ips.extend(c.ips.iter().copied());
                    for ip in &c.ips {
                        ptrs.entry(*ip).or_default().insert(name.clone());
                    }
                }
                _ => refusals.push(Refusal {
                    container: cname.to_string(),
                    name: format!("{cname}.{apex_text}"),
                    reason: RefusalReason::Invalid,
                }),
            }
        }
        for c in &sorted {
            let cname = c.name.trim_start_matches('/');
            for alias in &c.aliases {
                let refuse = |reason| Refusal {
                    container: cname.to_string(),
                    name: alias.clone(),
                    reason,
                };
                match check_alias(alias, &tld, &apex, &cfg.other_machines) {
                    Err(reason) => refusals.push(refuse(reason)),
                    Ok(name) => match container_names.get(&name) {
                        Some(owner) if *owner != cname => {
                            refusals.push(refuse(RefusalReason::OtherContainer(owner.to_string())))
                        }
                        _ => wanted
                            .entry(name)
                            .or_default()
                            .extend(c.ips.iter().copied()),
                    },
                }
            }
        }

        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        for (name, ips) in wanted {
            let soa = if apex.zone_of(&name) {
                // Empty non-terminals between the name and the apex exist (NODATA, not
                // NXDOMAIN), e.g. `web.dev.dev` for the alias `api.web.dev.dev`.
                let mut parent = name.base_name();
                while parent.num_labels() > apex.num_labels() {
                    nodes.entry(LowerName::new(&parent)).or_default();
                    parent = parent.base_name();
                }
                None
            } else {
                Some(soa_record(&name, &apex))
            };
            let node = nodes.entry(LowerName::new(&name)).or_default();
            node.soa = soa;
            for ip in ips {
                let rdata = match ip {
                    IpAddr::V4(v4) => RData::A(A(v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                };
                let record = Record::from_rdata(name.clone(), RECORD_TTL, rdata);
                match ip {
                    IpAddr::V4(_) => node.a.push(record),
                    IpAddr::V6(_) => node.aaaa.push(record),
                }
            }
        }
        for (ip, targets) in ptrs {
            let rev = Name::from(ip);
            let node = nodes.entry(LowerName::new(&rev)).or_default();
            node.soa = Some(soa_record(&rev, &apex));
            for target in targets {
                let record = Record::from_rdata(rev.clone(), RECORD_TTL, RData::PTR(PTR(target)));
                node.ptr.push(record);
            }
        }
        for node in nodes.values_mut() {
            node.all = [&node.a, &node.aaaa, &node.ptr]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
        }
        let zone = Zone {
            apex: LowerName::new(&apex),
            apex_soa,
            nodes,
        };
        (zone, refusals)
    }

    /// `<machine>.<tld>.`, the name everything under which is answered authoritatively.
    pub fn apex(&self) -> &LowerName {
        &self.apex
    }

    /// Looks `name` up for `rtype` (`ANY` returns every record at the name).
    pub fn lookup(&self, name: &LowerName, rtype: RecordType) -> Lookup<'_> {
        let Some(node) = self.nodes.get(name) else {
            return if self.apex.zone_of(name) {
                Lookup::NxDomain(&self.apex_soa)
            } else {
                Lookup::NotOwned
            };
        };
        let records = match rtype {
            RecordType::A => &node.a,
            RecordType::AAAA => &node.aaaa,
            RecordType::PTR => &node.ptr,
            RecordType::ANY => &node.all,
            _ => &node.all[..0],
        };
        if records.is_empty() {
            Lookup::NoData(node.soa.as_ref().unwrap_or(&self.apex_soa))
        } else {
            Lookup::Answer(records)
        }
    }

    /// Whether a query for `name` is answered here rather than forwarded.
    pub fn owns(&self, name: &LowerName) -> bool {
        self.nodes.contains_key(name) || self.apex.zone_of(name)
    }

    /// Every name served outside `<machine>.<tld>` and the reverse tree: the aliases, which
    /// the host resolver plan needs (see [`crate::resolver::plan::owned_domains`]).
    pub fn alias_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .filter(|(name, node)| !self.apex.zone_of(name) && node.ptr.is_empty())
            .map(|(name, _)| name.to_string().trim_end_matches('.').to_string())
            .collect();
        out.sort();
        out
    }

    /// The zone as sorted master-file lines (`name TTL IN TYPE data`), for tests and
    /// `--dry-run` style inspection.
    pub fn to_text(&self) -> String {
        let mut lines: Vec<String> = std::iter::once(&self.apex_soa)
            .chain(self.nodes.values().flat_map(|n| n.all.iter()))
            .map(|r| {
                let (name, ttl, ty, data) = (&r.name, r.ttl, r.record_type(), &r.data);
                format!("{name} {ttl} IN {ty} {data}")
            })
            .collect();
        lines.sort();
        lines.dedup();
        lines.join("\n") + "\n"
    }
}

/// Lower-case, without surrounding blanks or a trailing dot.
fn normalize(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Parses `text` as an absolute name; `None` if it is not a valid one.
fn fqdn(text: &str) -> Option<Name> {
    if text.is_empty() || text.starts_with('.') || text.contains("..") {
        return None;
    }
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name.to_lowercase())
}

/// Validates an alias: a name strictly under the TLD, not the machine's own name, not in
/// another machine's domain.
fn check_alias(
    alias: &str,
    tld: &str,
    apex: &Name,
    other_machines: &[String],
) -> Result<Name, RefusalReason> {
    let text = normalize(alias);
    let name = fqdn(&text).ok_or(RefusalReason::Invalid)?;
    let tld_name = fqdn(tld).ok_or(RefusalReason::OutsideTld)?;
    if name.num_labels() <= tld_name.num_labels() || !tld_name.zone_of(&name) {
        return Err(RefusalReason::OutsideTld);
    }
    if &name == apex {
        return Err(RefusalReason::MachineName);
    }
    for other in other_machines {
        let other = normalize(other);
        if fqdn(&format!("{other}.{tld}")).is_some_and(|o| o.zone_of(&name)) {
            return Err(RefusalReason::OtherMachine(other));
        }
    }
    Ok(name)
}

/// SOA at `owner` for negative answers: minimum 0 so that NXDOMAIN/NODATA seen while a
/// container starts is not cached (RFC 2308 §5).
fn soa_record(owner: &Name, apex: &Name) -> Record {
    let mname = apex.clone();
    let rname = Name::from_ascii("hostmaster")
        .and_then(|h| h.append_domain(apex))
        .unwrap_or_else(|_| apex.clone());
    let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, 0);
    Record::from_rdata(owner.clone(), RECORD_TTL, RData::SOA(soa))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn cfg() -> ZoneConfig {
        ZoneConfig {
            machine: "dev".into(),
            tld: "dev".into(),
            guest_ip: "192.168.64.2".parse().unwrap(),
            other_machines: vec!["work".into()],
        }
    }

    fn c(name: &str, ips: &[&str], aliases: &[&str]) -> Container {
        Container {
            id: format!("id-{name}"),
            name: format!("/{name}"),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn ln(s: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(s).unwrap())
    }

    fn ips(zone: &Zone, name: &str, ty: RecordType) -> Vec<String> {
        match zone.lookup(&ln(name), ty) {
            Lookup::Answer(rs) => rs.iter().map(|r| r.data.to_string()).collect(),
            other => panic!("{name} {ty}: {other:?}"),
        }
    }

    #[test]
    fn machine_and_container_names() {
        let (zone, refused) = Zone::build(&cfg(), &[c("web", &["172.18.0.3"], &[])]);
        assert!(refused.is_empty());
        assert_eq!(ips(&zone, "dev.dev.", RecordType::A), ["192.168.64.2"]);
        assert_eq!(ips(&zone, "web.dev.dev.", RecordType::A), ["172.18.0.3"]);
        assert_eq!(ips(&zone, "WEB.Dev.DEV.", RecordType::A), ["172.18.0.3"]);
        assert!(zone.owns(&ln("web.dev.dev.")));
        assert!(!zone.owns(&ln("pkg.go.dev.")));
        assert!(!zone.owns(&ln("dev.")));
    }

    #[test]
    fn multiple_networks_v4_and_v6() {
        let container = c("db", &["172.18.0.4", "172.19.0.2", "fd00::4"], &[]);
        let (zone, _) = Zone::build(&cfg(), &[container]);
        assert_eq!(
            ips(&zone, "db.dev.dev.", RecordType::A),
            ["172.18.0.4", "172.19.0.2"]
        );
        assert_eq!(ips(&zone, "db.dev.dev.", RecordType::AAAA), ["fd00::4"]);
        assert_eq!(zone_any_len(&zone, "db.dev.dev."), 3);
    }

    fn zone_any_len(zone: &Zone, name: &str) -> usize {
        match zone.lookup(&ln(name), RecordType::ANY) {
            Lookup::Answer(rs) => rs.len(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nodata_nxdomain_and_not_owned() {
        let (zone, _) = Zone::build(&cfg(), &[c("web", &["172.18.0.3"], &[])]);
        let soa = |l: Lookup<'_>| match l {
            Lookup::NoData(s) | Lookup::NxDomain(s) => s.name.to_string(),
            other => panic!("{other:?}"),
        };
        let nodata = zone.lookup(&ln("web.dev.dev."), RecordType::AAAA);
        assert!(matches!(nodata, Lookup::NoData(_)));
        assert_eq!(soa(nodata), "dev.dev.");
        assert!(matches!(
            zone.lookup(&ln("web.dev.dev."), RecordType::MX),
            Lookup::NoData(_)
        ));
        let nx = zone.lookup(&ln("nope.dev.dev."), RecordType::A);
        assert!(matches!(nx, Lookup::NxDomain(_)));
        assert_eq!(soa(nx), "dev.dev.");
        assert!(matches!(
            zone.lookup(&ln("a.nope.dev.dev."), RecordType::A),
            Lookup::NxDomain(_)
        ));
        assert_eq!(
            zone.lookup(&ln("other.dev."), RecordType::A),
            Lookup::NotOwned
        );
        assert_eq!(
            zone.lookup(&ln("example.com."), RecordType::A),
            Lookup::NotOwned
        );
    }

    #[test]
    fn negative_soa_is_not_cached() {
        let (zone, _) = Zone::build(&cfg(), &[]);
        let Lookup::NxDomain(soa) = zone.lookup(&ln("x.dev.dev."), RecordType::A) else {
            panic!()
        };
        let RData::SOA(data) = &soa.data else {
            panic!()
        };
        assert_eq!(data.minimum, 0);
        assert!(soa.ttl <= 5);
    }

    #[test]
    fn ttl_is_at_most_five_seconds() {
        let (zone, _) = Zone::build(
            &cfg(),
            &[c("web", &["172.18.0.3", "fd00::3"], &["w.x.dev"])],
        );
        for node in zone.nodes.values() {
            assert!(node.all.iter().all(|r| r.ttl <= 5));
        }
    }

    #[test]
    fn ptr_for_every_ip() {
        let containers = [c("web", &["172.18.0.3", "fd00::3"], &["www.synbioz.dev"])];
        let (zone, _) = Zone::build(&cfg(), &containers);
        let v4 = Name::from(IpAddr::V4(Ipv4Addr::new(172, 18, 0, 3)));
        assert_eq!(
            ips(&zone, &v4.to_string(), RecordType::PTR),
            ["web.dev.dev."]
        );
        let v6 = Name::from(IpAddr::V6("fd00::3".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(
            ips(&zone, &v6.to_string(), RecordType::PTR),
            ["web.dev.dev."]
        );
        assert_eq!(
            ips(&zone, "2.64.168.192.in-addr.arpa.", RecordType::PTR),
            ["dev.dev."]
        );
        // A reverse name devbox owns answers NODATA for A; other reverse names are forwarded.
        assert!(matches!(
            zone.lookup(&ln("3.0.18.172.in-addr.arpa."), RecordType::A),
            Lookup::NoData(_)
        ));
        assert_eq!(
            zone.lookup(&ln("9.0.18.172.in-addr.arpa."), RecordType::PTR),
            Lookup::NotOwned
        );
    }

    #[test]
    fn aliases_from_env_and_labels() {
        let env = [
            "PATH=/usr/bin",
            "DEVBOX_ALIAS=www.synbioz.dev, api.synbioz.dev",
            "DNSDOCK_ALIAS=old.synbioz.dev,www.synbioz.dev,",
            "NOT_DEVBOX_ALIAS=x.dev",
        ];
        let labels = [
            ("devbox.alias", "label.synbioz.dev"),
            ("com.dnsdock.alias", "dd.synbioz.dev"),
            ("other", "y.dev"),
        ];
        assert_eq!(
            aliases_from(env, labels),
            [
                "www.synbioz.dev",
                "api.synbioz.dev",
                "old.synbioz.dev",
                "label.synbioz.dev",
                "dd.synbioz.dev"
            ]
        );
    }

    #[test]
    fn alias_served_with_all_container_ips() {
        let containers = [c("web", &["172.18.0.3", "fd00::3"], &["WWW.Synbioz.dev."])];
        let (zone, refused) = Zone::build(&cfg(), &containers);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(
            ips(&zone, "www.synbioz.dev.", RecordType::A),
            ["172.18.0.3"]
        );
        assert_eq!(
            ips(&zone, "www.synbioz.dev.", RecordType::AAAA),
            ["fd00::3"]
        );
        assert_eq!(zone.alias_names(), ["www.synbioz.dev"]);
        // Neighbours of an alias are not ours: forwarded, never NXDOMAIN by guess.
        assert_eq!(
            zone.lookup(&ln("synbioz.dev."), RecordType::A),
            Lookup::NotOwned
        );
        assert_eq!(
            zone.lookup(&ln("blog.synbioz.dev."), RecordType::A),
            Lookup::NotOwned
        );
        // NODATA at an alias carries an SOA owned by the alias itself, not the machine's.
        let Lookup::NoData(soa) = zone.lookup(&ln("www.synbioz.dev."), RecordType::MX) else {
            panic!()
        };
        assert_eq!(soa.name.to_string(), "www.synbioz.dev.");
    }

    #[test]
    fn refused_aliases() {
        let containers = [
            c(
                "web",
                &["172.18.0.3"],
                &["evil.com", "dev", "dev.dev", "work.dev"],
            ),
            c(
                "api",
                &["172.18.0.5"],
                &["x.work.dev", "web.dev.dev", "bad..dev", "ok.dev"],
            ),
        ];
        let (zone, refused) = Zone::build(&cfg(), &containers);
        let got: Vec<(String, String, RefusalReason)> = refused
            .into_iter()
            .map(|r| (r.container, r.name, r.reason))
            .collect();
        use RefusalReason::*;
        let want = [
            ("api", "x.work.dev", OtherMachine("work".into())),
            ("api", "web.dev.dev", OtherContainer("web".into())),
            ("api", "bad..dev", Invalid),
            ("web", "evil.com", OutsideTld),
            ("web", "dev", OutsideTld),
            ("web", "dev.dev", MachineName),
            ("web", "work.dev", OtherMachine("work".into())),
        ];
        let want: Vec<_> = want
            .into_iter()
            .map(|(c, n, r)| (c.to_string(), n.to_string(), r))
            .collect();
        assert_eq!(got, want);
        assert_eq!(ips(&zone, "ok.dev.", RecordType::A), ["172.18.0.5"]);
        assert_eq!(ips(&zone, "dev.dev.", RecordType::A), ["192.168.64.2"]);
        assert_eq!(ips(&zone, "web.dev.dev.", RecordType::A), ["172.18.0.3"]);
        assert_eq!(
            zone.lookup(&ln("evil.com."), RecordType::A),
            Lookup::NotOwned
        );
        assert_eq!(
            zone.lookup(&ln("work.dev."), RecordType::A),
            Lookup::NotOwned
        );
        let msg = Refusal {
            container: "web".into(),
            name: "evil.com".into(),
            reason: OutsideTld,
        }
        .to_string();
        assert_eq!(
            msg,
            "container `web`: name `evil.com` refused: not under the machine's TLD"
        );
    }

    #[test]
    fn alias_under_machine_creates_empty_non_terminals() {
        let (zone, _) = Zone::build(&cfg(), &[c("web", &["172.18.0.3"], &["api.v1.dev.dev"])]);
        assert_eq!(ips(&zone, "api.v1.dev.dev.", RecordType::A), ["172.18.0.3"]);
        assert!(matches!(
            zone.lookup(&ln("v1.dev.dev."), RecordType::A),
            Lookup::NoData(_)
        ));
        assert!(zone.alias_names().is_empty());
    }

    #[test]
    fn shared_alias_serves_both_containers() {
        let containers = [
            c("a", &["172.18.0.3"], &["lb.synbioz.dev"]),
            c("b", &["172.18.0.4"], &["lb.synbioz.dev"]),
        ];
        let (zone, _) = Zone::build(&cfg(), &containers);
        assert_eq!(
            ips(&zone, "lb.synbioz.dev.", RecordType::A),
            ["172.18.0.3", "172.18.0.4"]
        );
    }

    #[test]
    fn rename_and_stop_replace_records() {
        let (before, _) = Zone::build(&cfg(), &[c("web", &["172.18.0.3"], &[])]);
        assert!(matches!(
            before.lookup(&ln("web.dev.dev."), RecordType::A),
            Lookup::Answer(_)
        ));
        let (after, _) = Zone::build(&cfg(), &[c("front", &["172.18.0.3"], &[])]);
        assert!(matches!(
            after.lookup(&ln("web.dev.dev."), RecordType::A),
            Lookup::NxDomain(_)
        ));
        assert_eq!(ips(&after, "front.dev.dev.", RecordType::A), ["172.18.0.3"]);
        assert_eq!(
            ips(&after, "3.0.18.172.in-addr.arpa.", RecordType::PTR),
            ["front.dev.dev."]
        );
        let (stopped, _) = Zone::build(&cfg(), &[]);
        assert_eq!(
            stopped.lookup(&ln("3.0.18.172.in-addr.arpa."), RecordType::PTR),
            Lookup::NotOwned
        );
    }

    #[test]
    fn container_without_ip_still_exists() {
        let (zone, _) = Zone::build(&cfg(), &[c("hostnet", &[], &[])]);
        assert!(matches!(
            zone.lookup(&ln("hostnet.dev.dev."), RecordType::A),
            Lookup::NoData(_)
        ));
    }

    #[test]
    fn zone_text_is_sorted_and_stable() {
        let containers = [
            c("web", &["172.18.0.3", "fd00::3"], &["www.synbioz.dev"]),
            c("db", &["172.18.0.4"], &[]),
        ];
        let (zone, _) = Zone::build(&cfg(), &containers);
        let text = zone.to_text();
        let (again, _) = Zone::build(&cfg(), &[containers[1].clone(), containers[0].clone()]);
        assert_eq!(text, again.to_text());
        assert!(text.contains("web.dev.dev. 5 IN AAAA fd00::3\n"));
        assert!(text.contains("www.synbioz.dev. 5 IN A 172.18.0.3\n"));
        assert!(text.contains("3.0.18.172.in-addr.arpa. 5 IN PTR web.dev.dev.\n"));
    }
}
