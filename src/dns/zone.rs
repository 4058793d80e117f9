//! The machine's DNS zone, built purely from the machine's settings, the [`Policy`] of the
//! moment and the list of its running containers: `<machine>.<tld>` for the guest,
//! `<container>.<machine>.<tld>` for each container (every IP on every network, A and AAAA),
//! the aliases containers ask for where the policy lets them ([`super::policy`]), and PTR
//! records for all of those IPs. No I/O and no tasks; the server reads a built [`Zone`]
//! through [`super::RecordsHandle`], which rebuilds it when containers or the policy change.
//!
//! Names live in a `HashMap`, so a miss costs one hash like a hit does: hickory's in-memory
//! zone scans every key on a negative answer (research/services.md §2.4).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::policy::{self, Policy, normalize};
use super::wire::WireIndex;

/// TTL of every served record. Short, so a stopped or renamed container leaves client caches
/// within seconds (the issue asks for at most 5 s).
pub const RECORD_TTL: u32 = 5;

/// Environment variables whose comma-separated values are aliases (`DNSDOCK_ALIAS` for
/// compatibility with dnsdock).
pub const ALIAS_ENV: [&str; 2] = ["DEVBOX_ALIAS", "DNSDOCK_ALIAS"];

/// Labels whose comma-separated values are aliases (`com.dnsdock.alias` for dnsdock users).
pub const ALIAS_LABELS: [&str; 2] = ["devbox.alias", "com.dnsdock.alias"];

/// Ids of the zone entries that are swarm services, not containers (`watch::services_from`):
/// their addresses are the swarm nodes' own, so they get no reverse records and no say in
/// how HTTPS reaches those addresses.
pub const SERVICE_ID_PREFIX: &str = "swarm-service:";

/// What the zone needs to know about the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    pub machine: String,
    pub tld: String,
    pub guest_ip: IpAddr,
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
    /// Where HTTPS for its names goes (`crate::tls`).
    pub web: WebPorts,
}

impl Container {
    /// Whether the entry is a swarm service ([`SERVICE_ID_PREFIX`]).
    pub fn is_service(&self) -> bool {
        self.id.starts_with(SERVICE_ID_PREFIX)
    }
}

/// The label that names a container's plain-HTTP port for HTTPS termination (default 80).
pub const HTTP_PORT_LABEL: &str = "devbox.http.port";

/// How HTTPS reaches a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebPorts {
    /// The plain-HTTP port TLS is terminated to: 80, or the `devbox.http.port` label.
    pub http: u16,
    /// It exposes 443 itself: its port 443 is left alone (passed through untouched).
    pub own_tls: bool,
}

impl Default for WebPorts {
    fn default() -> Self {
        WebPorts {
            http: 80,
            own_tls: false,
        }
    }
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
    /// Outside `<machine>.<tld>`, under a public TLD, in no domain the user allowed for this
    /// machine; `domain` is the one to allow (the name's registrable domain).
    NotAllowed { machine: String, domain: String },
    /// Its routed domain is held by another running machine (named when known).
    Taken {
        domain: String,
        machine: Option<String>,
    },
}

/// A name refused for a container; the server logs each as a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub container: String,
    pub name: String,
    pub reason: RefusalReason,
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalReason::Invalid => write!(f, "not a valid DNS name"),
            RefusalReason::OutsideTld => write!(f, "not under the machine's TLD"),
            RefusalReason::MachineName => write!(f, "it is the machine's own name"),
            RefusalReason::OtherMachine(m) => write!(f, "it belongs to machine `{m}`"),
            RefusalReason::OtherContainer(c) => write!(f, "it is container `{c}`'s name"),
            RefusalReason::NotAllowed { machine, domain } => write!(
                f,
                "outside the machine's domain and in none allowed for it \
                 (`devbox dns allow {domain} --machine {machine}` would let it in)"
            ),
            RefusalReason::Taken { domain, machine } => match machine {
                Some(m) => write!(f, "machine `{m}` routes `{domain}` already"),
                None => write!(f, "another machine routes `{domain}` already"),
            },
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (container, name, reason) = (&self.container, &self.name, &self.reason);
        write!(
            f,
            "container `{container}`: name `{name}` refused: {reason}"
        )
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
    /// The domain routed to the host's resolver for each alias served outside the apex.
    routes: BTreeSet<String>,
    /// The same names with their answers pre-encoded, for the UDP fast path.
    wire: WireIndex,
    /// How HTTPS reaches each container address.
    web: HashMap<IpAddr, WebPorts>,
}

impl Zone {
    /// Builds the zone for `cfg` and `containers` under `policy`, returning the names it
    /// refused.
    pub fn build(
        cfg: &ZoneConfig,
        policy: &Policy,
        containers: &[Container],
    ) -> (Zone, Vec<Refusal>) {
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
        let mut routes = BTreeSet::new();
        for c in &sorted {
            let cname = c.name.trim_start_matches('/');
            match fqdn(&format!("{}.{apex_text}", normalize(cname))) {
                Some(name) if name.num_labels() > apex.num_labels() => {
                    container_names.insert(name.clone(), cname);
                    let ips = wanted.entry(name.clone()).or_default();
                    ips.extend(c.ips.iter().copied());
                    for ip in c.ips.iter().filter(|_| !c.is_service()) {
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
                match check_alias(alias, &machine, &tld, &apex, policy) {
                    Err(reason) => refusals.push(refuse(reason)),
                    Ok((name, route)) => match container_names.get(&name) {
                        Some(owner) if *owner != cname => {
                            refusals.push(refuse(RefusalReason::OtherContainer(owner.to_string())))
                        }
                        _ => {
                            routes.extend(route);
                            wanted
                                .entry(name)
                                .or_default()
                                .extend(c.ips.iter().copied());
                        }
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
        let mut wire = WireIndex::new(&apex, &apex_soa);
        for (name, node) in nodes.iter_mut() {
            node.all = [&node.a, &node.aaaa, &node.ptr]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            let name = Name::from(name.clone());
            wire.insert(&name, &node.a, &node.aaaa, &node.ptr, node.soa.as_ref());
        }
        let web = sorted
            .iter()
            .filter(|c| !c.is_service())
            .flat_map(|c| c.ips.iter().map(|ip| (*ip, c.web)))
            .collect();
        let zone = Zone {
            apex: LowerName::new(&apex),
            apex_soa,
            nodes,
            routes,
            wire,
            web,
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

    /// The pre-encoded answers of the UDP fast path ([`super::wire`]).
    pub(crate) fn wire(&self) -> &WireIndex {
        &self.wire
    }

    /// Whether a query for `name` is answered here rather than forwarded.
    pub fn owns(&self, name: &LowerName) -> bool {
        self.nodes.contains_key(name) || self.apex.zone_of(name)
    }

    /// The domains to route to the machine's server besides `<machine>.<tld>`: for each alias
    /// served outside it, its parent domain when that lies within what the alias was allowed
    /// in, else the alias itself (`www.synbioz.dev` → `synbioz.dev` under an allowance of
    /// `synbioz.dev`; `mycorp.pages.dev` → itself, never `pages.dev`). Sorted; what
    /// [`crate::resolver::plan::owned_domains`] turns into the host's routing domains, and what
    /// the machine claims host-wide.
    pub fn routed_domains(&self) -> Vec<String> {
        self.routes.iter().cloned().collect()
    }

    /// The first IPv4 address served for `name` (text, any case, trailing dot or not).
    pub fn ipv4_of(&self, name: &str) -> Option<std::net::Ipv4Addr> {
        let name = LowerName::from(fqdn(name.trim_end_matches('.'))?);
        self.nodes.get(&name)?.a.iter().find_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
    }

    /// How HTTPS reaches the container at `ip` (the default for an address of no container).
    pub fn web_of(&self, ip: IpAddr) -> WebPorts {
        self.web.get(&ip).copied().unwrap_or_default()
    }

    /// Every IPv4 address the zone serves a name for (the guest's and the containers').
    pub fn ipv4_addresses(&self) -> std::collections::BTreeSet<std::net::Ipv4Addr> {
        self.nodes
            .values()
            .flat_map(|n| n.a.iter())
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    /// Every name served outside `<machine>.<tld>` and the reverse tree: the aliases.
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

/// Parses `text` as an absolute name; `None` if it is not a valid one.
fn fqdn(text: &str) -> Option<Name> {
    if text.is_empty() || text.starts_with('.') || text.contains("..") {
        return None;
    }
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name.to_lowercase())
}

/// Validates an alias against the policy ([`super::policy`]): a name strictly under the TLD,
/// not the machine's own name, not in another machine's domain; outside the machine's domain,
/// only within an allowed domain (or under a private TLD) whose route no other machine holds.
/// Returns the name and, for a name outside the machine's domain, the domain to route.
fn check_alias(
    alias: &str,
    machine: &str,
    tld: &str,
    apex: &Name,
    policy: &Policy,
) -> Result<(Name, Option<String>), RefusalReason> {
    let text = normalize(alias);
    let name = fqdn(&text).ok_or(RefusalReason::Invalid)?;
    let tld_name = fqdn(tld).ok_or(RefusalReason::OutsideTld)?;
    if name.num_labels() <= tld_name.num_labels() || !tld_name.zone_of(&name) {
        return Err(RefusalReason::OutsideTld);
    }
    if &name == apex {
        return Err(RefusalReason::MachineName);
    }
    if apex.zone_of(&name) {
        return Ok((name, None));
    }
    let others = policy.other_machines.iter().map(String::as_str);
    if let Some(other) = policy::other_machine_of(&text, tld, others) {
        return Err(RefusalReason::OtherMachine(normalize(other)));
    }
    // The domain the name was let in by: the TLD itself when it is private, else the
    // broadest allowance that covers it.
    let scope = if policy::is_private_tld(tld) {
        Some(tld.to_string())
    } else {
        policy
            .allowed
            .iter()
            .map(|a| normalize(a))
            .filter(|a| policy::within(&text, a))
            .min_by_key(|a| a.len())
    };
    let Some(scope) = scope else {
        return Err(RefusalReason::NotAllowed {
            machine: machine.to_string(),
            domain: policy::suggested_allowance(&text),
        });
    };
    let route = match text.split_once('.') {
        Some((_, parent)) if parent != tld && policy::within(parent, &scope) => parent.to_string(),
        _ => text.clone(),
    };
    if let Some(holder) = policy.taken.get(&route) {
        return Err(RefusalReason::Taken {
            domain: route,
            machine: holder.clone(),
        });
    }
    Ok((name, Some(route)))
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
        }
    }

    /// Machine `work` exists; `synbioz.dev` is allowed for this machine (`dev`).
    fn pol() -> Policy {
        Policy {
            other_machines: vec!["work".into()],
            allowed: vec!["synbioz.dev".into()],
            taken: Default::default(),
        }
    }

    fn c(name: &str, ips: &[&str], aliases: &[&str]) -> Container {
        Container {
            id: format!("id-{name}"),
            name: format!("/{name}"),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            web: Default::default(),
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
        let (zone, refused) = Zone::build(&cfg(), &pol(), &[c("web", &["172.18.0.3"], &[])]);
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
        let (zone, _) = Zone::build(&cfg(), &pol(), &[container]);
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
        let (zone, _) = Zone::build(&cfg(), &pol(), &[c("web", &["172.18.0.3"], &[])]);
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
        let (zone, _) = Zone::build(&cfg(), &pol(), &[]);
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
            &pol(),
            &[c("web", &["172.18.0.3", "fd00::3"], &["w.synbioz.dev"])],
        );
        for node in zone.nodes.values() {
            assert!(node.all.iter().all(|r| r.ttl <= 5));
        }
    }

    #[test]
    fn ptr_for_every_ip() {
        let containers = [c("web", &["172.18.0.3", "fd00::3"], &["www.synbioz.dev"])];
        let (zone, _) = Zone::build(&cfg(), &pol(), &containers);
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
        let (zone, refused) = Zone::build(&cfg(), &pol(), &containers);
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
                &[
                    "x.work.dev",
                    "web.dev.dev",
                    "bad..dev",
                    "ok.synbioz.dev",
                    "ok.dev",
                ],
            ),
        ];
        let (zone, refused) = Zone::build(&cfg(), &pol(), &containers);
        let got: Vec<(String, String, RefusalReason)> = refused
            .into_iter()
            .map(|r| (r.container, r.name, r.reason))
            .collect();
        use RefusalReason::*;
        let want = [
            ("api", "x.work.dev", OtherMachine("work".into())),
            ("api", "web.dev.dev", OtherContainer("web".into())),
            ("api", "bad..dev", Invalid),
            (
                "api",
                "ok.dev",
                NotAllowed {
                    machine: "dev".into(),
                    domain: "ok.dev".into(),
                },
            ),
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
        assert_eq!(ips(&zone, "ok.synbioz.dev.", RecordType::A), ["172.18.0.5"]);
        assert_eq!(zone.lookup(&ln("ok.dev."), RecordType::A), Lookup::NotOwned);
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

    fn refusals(refused: Vec<Refusal>) -> Vec<(String, RefusalReason)> {
        refused.into_iter().map(|r| (r.name, r.reason)).collect()
    }

    /// Finding 6 of the security review: a label alone claimed public names for the host.
    #[test]
    fn public_names_need_an_allowance() {
        let policy = Policy {
            other_machines: vec!["work".into()],
            ..Policy::default()
        };
        let claims = [
            "pkg.go.dev",
            "login.mycorp.pages.dev",
            "web.dev",
            "www.synbioz.dev",
        ];
        let (zone, refused) = Zone::build(&cfg(), &policy, &[c("evil", &["172.18.0.9"], &claims)]);
        let domain = |d: &str| RefusalReason::NotAllowed {
            machine: "dev".into(),
            domain: d.into(),
        };
        assert_eq!(
            refusals(refused),
            [
                ("pkg.go.dev".to_string(), domain("go.dev")),
                (
                    "login.mycorp.pages.dev".to_string(),
                    domain("mycorp.pages.dev")
                ),
                ("web.dev".to_string(), domain("web.dev")),
                ("www.synbioz.dev".to_string(), domain("synbioz.dev")),
            ]
        );
        for name in claims {
            let name = format!("{name}.");
            assert_eq!(zone.lookup(&ln(&name), RecordType::A), Lookup::NotOwned);
        }
        assert!(zone.routed_domains().is_empty());
        assert!(zone.alias_names().is_empty());
        // Inside the machine's own domain, no allowance is needed and nothing else is routed.
        let (zone, refused) = Zone::build(
            &cfg(),
            &policy,
            &[c("web", &["172.18.0.3"], &["api.dev.dev"])],
        );
        assert!(refused.is_empty());
        assert_eq!(ips(&zone, "api.dev.dev.", RecordType::A), ["172.18.0.3"]);
        assert!(zone.routed_domains().is_empty());
    }

    #[test]
    fn routes_stay_within_the_allowance() {
        let policy = Policy {
            allowed: vec![
                "synbioz.dev".into(),
                "mycorp.pages.dev".into(),
                "www.example.dev".into(),
            ],
            ..Policy::default()
        };
        let aliases = [
            "www.synbioz.dev",
            "a.b.synbioz.dev",
            "synbioz.dev",
            "mycorp.pages.dev",
            "www.example.dev",
            "x.www.example.dev",
        ];
        let (zone, refused) = Zone::build(&cfg(), &policy, &[c("web", &["172.18.0.3"], &aliases)]);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(
            zone.routed_domains(),
            [
                "b.synbioz.dev",
                "mycorp.pages.dev",
                "synbioz.dev",
                "www.example.dev"
            ]
        );
        assert_eq!(ips(&zone, "synbioz.dev.", RecordType::A), ["172.18.0.3"]);
    }

    #[test]
    fn private_tld_needs_no_allowance() {
        let cfg = ZoneConfig {
            tld: "test".into(),
            ..cfg()
        };
        let policy = Policy {
            other_machines: vec!["work".into()],
            ..Policy::default()
        };
        let aliases = ["www.shop.test", "shop.test", "x.work.test", "evil.dev"];
        let (zone, refused) = Zone::build(&cfg, &policy, &[c("web", &["172.18.0.3"], &aliases)]);
        assert_eq!(
            refusals(refused),
            [
                (
                    "x.work.test".to_string(),
                    RefusalReason::OtherMachine("work".into())
                ),
                ("evil.dev".to_string(), RefusalReason::OutsideTld),
            ]
        );
        assert_eq!(ips(&zone, "www.shop.test.", RecordType::A), ["172.18.0.3"]);
        assert_eq!(zone.routed_domains(), ["shop.test"]);
    }

    /// Other machines are whatever the policy says at this build: a machine created after
    /// the server started takes its domain back at the next build.
    #[test]
    fn a_machine_created_later_takes_its_domain_back() {
        let policy = Policy {
            allowed: vec!["late.dev".into()],
            ..Policy::default()
        };
        let web = [c("web", &["172.18.0.3"], &["api.late.dev"])];
        let (zone, refused) = Zone::build(&cfg(), &policy, &web);
        assert!(refused.is_empty());
        assert_eq!(zone.routed_domains(), ["late.dev"]);
        let later = Policy {
            other_machines: vec!["late".into()],
            ..policy
        };
        let (zone, refused) = Zone::build(&cfg(), &later, &web);
        assert_eq!(
            refusals(refused),
            [(
                "api.late.dev".to_string(),
                RefusalReason::OtherMachine("late".into())
            )]
        );
        assert_eq!(
            zone.lookup(&ln("api.late.dev."), RecordType::A),
            Lookup::NotOwned
        );
        assert!(zone.routed_domains().is_empty());
    }

    #[test]
    fn a_domain_another_machine_routes_is_refused() {
        let policy = Policy {
            taken: [("synbioz.dev".to_string(), Some("first".to_string()))].into(),
            ..pol()
        };
        let web = [c(
            "web",
            &["172.18.0.3"],
            &["www.synbioz.dev", "a.b.synbioz.dev"],
        )];
        let (zone, refused) = Zone::build(&cfg(), &policy, &web);
        assert_eq!(
            refusals(refused),
            [(
                "www.synbioz.dev".to_string(),
                RefusalReason::Taken {
                    domain: "synbioz.dev".into(),
                    machine: Some("first".into())
                }
            )]
        );
        assert_eq!(zone.routed_domains(), ["b.synbioz.dev"]);
        let msg = Refusal {
            container: "web".into(),
            name: "www.synbioz.dev".into(),
            reason: RefusalReason::Taken {
                domain: "synbioz.dev".into(),
                machine: Some("first".into()),
            },
        };
        assert_eq!(
            msg.to_string(),
            "container `web`: name `www.synbioz.dev` refused: machine `first` routes \
             `synbioz.dev` already"
        );
    }

    #[test]
    fn alias_under_machine_creates_empty_non_terminals() {
        let (zone, _) = Zone::build(
            &cfg(),
            &pol(),
            &[c("web", &["172.18.0.3"], &["api.v1.dev.dev"])],
        );
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
        let (zone, _) = Zone::build(&cfg(), &pol(), &containers);
        assert_eq!(
            ips(&zone, "lb.synbioz.dev.", RecordType::A),
            ["172.18.0.3", "172.18.0.4"]
        );
    }

    #[test]
    fn rename_and_stop_replace_records() {
        let (before, _) = Zone::build(&cfg(), &pol(), &[c("web", &["172.18.0.3"], &[])]);
        assert!(matches!(
            before.lookup(&ln("web.dev.dev."), RecordType::A),
            Lookup::Answer(_)
        ));
        let (after, _) = Zone::build(&cfg(), &pol(), &[c("front", &["172.18.0.3"], &[])]);
        assert!(matches!(
            after.lookup(&ln("web.dev.dev."), RecordType::A),
            Lookup::NxDomain(_)
        ));
        assert_eq!(ips(&after, "front.dev.dev.", RecordType::A), ["172.18.0.3"]);
        assert_eq!(
            ips(&after, "3.0.18.172.in-addr.arpa.", RecordType::PTR),
            ["front.dev.dev."]
        );
        let (stopped, _) = Zone::build(&cfg(), &pol(), &[]);
        assert_eq!(
            stopped.lookup(&ln("3.0.18.172.in-addr.arpa."), RecordType::PTR),
            Lookup::NotOwned
        );
    }

    #[test]
    fn container_without_ip_still_exists() {
        let (zone, _) = Zone::build(&cfg(), &pol(), &[c("hostnet", &[], &[])]);
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
        let (zone, _) = Zone::build(&cfg(), &pol(), &containers);
        let text = zone.to_text();
        let (again, _) = Zone::build(
            &cfg(),
            &pol(),
            &[containers[1].clone(), containers[0].clone()],
        );
        assert_eq!(text, again.to_text());
        assert!(text.contains("web.dev.dev. 5 IN AAAA fd00::3\n"));
        assert!(text.contains("www.synbioz.dev. 5 IN A 172.18.0.3\n"));
        assert!(text.contains("3.0.18.172.in-addr.arpa. 5 IN PTR web.dev.dev.\n"));
    }
}
