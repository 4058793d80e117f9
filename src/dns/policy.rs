//! Which names a machine's containers may claim, as pure rules (no I/O, no tasks).
//!
//! - Names under the machine's own domain, `<machine>.<tld>`, are always served.
//! - A name elsewhere under the TLD is served, and its domain routed to the host's resolver,
//!   only inside a domain the user allowed for this machine ([`check_allowance`]: stored in
//!   `machine.yaml` as `dns_domains`, set by `devbox dns allow` or `create --dns-domain`), or
//!   when the TLD cannot hold public names at all ([`is_private_tld`]). A container's label
//!   alone never claims a public name such as `pkg.go.dev` for the host.
//! - Never inside another machine's domain, and never in a domain another running machine
//!   routes already (first come, first served: [`Policy::taken`]).
//!
//! An allowance may not be a public suffix (`dev`, `pages.dev`, `co.uk`): the `psl` crate
//! carries Mozilla's Public Suffix List, ICANN and private sections, regenerated from the list
//! as it changes. A built-in rule ("two labels, minus a few known hosting suffixes") would miss
//! the thousands of multi-tenant suffixes the list tracks (`github.io`, `web.app`, `*.ck`…).

use std::collections::BTreeMap;

use crate::hint::Hint;

/// TLDs that cannot hold public names, so an alias under them claims nothing outside the
/// user's own network: RFC 6761's special-use names (`test`, `localhost`, `invalid`,
/// `example`), RFC 8375's `home.arpa`, `internal` (reserved for private use by ICANN in
/// 2024), and `lan`, never delegated and the de-facto private TLD of home routers (OpenWrt,
/// dnsmasq setups). `local` is left out: multicast DNS owns it on the host.
pub const PRIVATE_TLDS: [&str; 7] = [
    "test",
    "localhost",
    "invalid",
    "example",
    "home.arpa",
    "internal",
    "lan",
];

/// What the zone is built against besides the containers: read afresh at every build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Names of the other machines: no alias may enter `<other>.<tld>`.
    pub other_machines: Vec<String>,
    /// Domains the user allowed this machine's aliases in (`dns_domains` in its spec).
    pub allowed: Vec<String>,
    /// Routed domains another running machine holds, with its name when known: an alias
    /// whose domain is in here is refused (the first machine to route a domain keeps it).
    pub taken: BTreeMap<String, Option<String>>,
}

/// Why a domain cannot be allowed for a machine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllowanceError {
    #[error("`{domain}` is not a valid domain name")]
    Invalid { domain: String },
    #[error("`{domain}` is not under the machine's TLD `.{tld}`")]
    OutsideTld { domain: String, tld: String },
    #[error("`{domain}` is a public suffix, shared by unrelated owners")]
    PublicSuffix { domain: String },
    #[error("`{domain}` is inside the machine's own domain `{machine}.{tld}`")]
    OwnDomain {
        domain: String,
        machine: String,
        tld: String,
    },
    #[error("`{domain}` is inside machine `{other}`'s domain")]
    OtherMachine { domain: String, other: String },
}

impl Hint for AllowanceError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            AllowanceError::Invalid { .. } => {
                "a domain is dot-separated labels of a-z, 0-9 and '-', e.g. synbioz.dev".into()
            }
            AllowanceError::OutsideTld { tld, .. } => format!(
                "aliases are names under the machine's TLD: allow a domain ending in .{tld}"
            ),
            AllowanceError::PublicSuffix { domain } => {
                format!("allow the domain you own under it instead, e.g. yourname.{domain}")
            }
            AllowanceError::OwnDomain { machine, tld, .. } => {
                format!("names under {machine}.{tld} are always served: nothing to allow")
            }
            AllowanceError::OtherMachine { other, .. } => {
                format!("its names belong to machine {other}; pick another domain")
            }
        })
    }
}

/// Why `devbox dns allow`/`deny` cannot pick the machine or the domain to change.
#[derive(Debug, thiserror::Error)]
pub enum AllowError {
    #[error("there is no machine to allow {domain} for")]
    NoMachine { domain: String },
    #[error("several machines exist ({}): which one should {domain} be allowed for?", machines.join(", "))]
    WhichMachine {
        domain: String,
        machines: Vec<String>,
    },
    #[error("{domain} is not allowed for {}", machine.as_deref().map_or("any machine".to_string(), |m| format!("machine {m:?}")))]
    NotAllowed {
        domain: String,
        machine: Option<String>,
    },
}

impl Hint for AllowError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            AllowError::NoMachine { domain } => {
                format!("create one with it: devbox create NAME --dns-domain {domain}")
            }
            AllowError::WhichMachine { domain, machines } => format!(
                "name it: devbox dns allow {domain} --machine {}",
                machines.first().map_or("NAME", String::as_str)
            ),
            AllowError::NotAllowed { .. } => {
                "`devbox dns allowed` lists the allowed domains".into()
            }
        })
    }
}

/// Lower-case, without surrounding blanks or a trailing dot.
pub fn normalize(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` (normalized) is `domain` or under it.
pub fn within(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|head| head.ends_with('.'))
}

/// Whether `tld` cannot hold public names (see [`PRIVATE_TLDS`]); `my.lan` counts too.
pub fn is_private_tld(tld: &str) -> bool {
    let tld = normalize(tld);
    PRIVATE_TLDS.iter().any(|p| within(&tld, p))
}

/// Whether `name` is dot-separated DNS labels (letters, digits, '-'; 1-63 bytes each; at
/// most 253 bytes), the form every served name and allowance takes.
pub fn is_domain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Checks that `domain` can be allowed for machine `machine` under `tld`, returning it
/// normalized. Other machines' domains are checked by the caller, which knows them
/// ([`other_machine_of`]).
pub fn check_allowance(domain: &str, machine: &str, tld: &str) -> Result<String, AllowanceError> {
    let d = normalize(domain);
    let tld = normalize(tld);
    if !is_domain_name(&d) {
        return Err(AllowanceError::Invalid {
            domain: domain.to_string(),
        });
    }
    if d == tld || !within(&d, &tld) {
        return Err(if d == tld {
            AllowanceError::PublicSuffix { domain: d }
        } else {
            AllowanceError::OutsideTld { domain: d, tld }
        });
    }
    // `psl::domain_str` is the registrable domain: `None` for a public suffix itself. An
    // unknown TLD follows the list's default rule (`*`), so `test` is a suffix, `x.test` not.
    if psl::domain_str(&d).is_none() {
        return Err(AllowanceError::PublicSuffix { domain: d });
    }
    if within(&d, &format!("{}.{tld}", normalize(machine))) {
        return Err(AllowanceError::OwnDomain {
            domain: d,
            machine: normalize(machine),
            tld,
        });
    }
    Ok(d)
}

/// The other machine whose domain `domain` is, or is inside, if any.
pub fn other_machine_of<'a>(
    domain: &str,
    tld: &str,
    others: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let (domain, tld) = (normalize(domain), normalize(tld));
    others
        .into_iter()
        .find(|o| within(&domain, &format!("{}.{tld}", normalize(o))))
}

/// The domain a user would allow to serve `alias`: its registrable domain by the Public
/// Suffix List (`pkg.go.dev` → `go.dev`, `login.mycorp.pages.dev` → `mycorp.pages.dev`).
pub fn suggested_allowance(alias: &str) -> String {
    let alias = normalize(alias);
    psl::domain_str(&alias).unwrap_or(&alias).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_tlds() {
        for tld in [
            "test",
            "internal",
            "localhost",
            "home.arpa",
            "lan",
            "my.lan",
            "TEST.",
        ] {
            assert!(is_private_tld(tld), "{tld}");
        }
        for tld in [
            "dev",
            "com",
            "arpa",
            "local",
            "app",
            "pages.dev",
            "latest",
            "xlan",
        ] {
            assert!(!is_private_tld(tld), "{tld}");
        }
    }

    #[test]
    fn allowances_are_registrable_domains_under_the_tld() {
        assert_eq!(
            check_allowance("Synbioz.Dev.", "web", "dev").unwrap(),
            "synbioz.dev"
        );
        assert_eq!(
            check_allowance("mycorp.pages.dev", "web", "dev").unwrap(),
            "mycorp.pages.dev"
        );
        assert_eq!(
            check_allowance("www.synbioz.dev", "web", "dev").unwrap(),
            "www.synbioz.dev"
        );
        assert_eq!(
            check_allowance("shop.test", "web", "test").unwrap(),
            "shop.test"
        );
        use AllowanceError::*;
        let err = |d: &str, tld: &str| check_allowance(d, "web", tld).unwrap_err();
        assert!(matches!(err("dev", "dev"), PublicSuffix { .. }));
        assert!(matches!(err("pages.dev", "dev"), PublicSuffix { .. }));
        assert!(matches!(err("co.uk", "uk"), PublicSuffix { .. }));
        assert!(matches!(err("github.io", "io"), PublicSuffix { .. }));
        assert!(matches!(err("test", "test"), PublicSuffix { .. }));
        assert!(matches!(err("synbioz.com", "dev"), OutsideTld { .. }));
        assert!(matches!(err("web.dev", "dev"), OwnDomain { .. }));
        assert!(matches!(err("api.web.dev", "dev"), OwnDomain { .. }));
        for bad in [
            "", ".dev", "a..dev", "a_b.dev", "-a.dev", "é.dev", "a b.dev",
        ] {
            assert!(matches!(err(bad, "dev"), Invalid { .. }), "{bad:?}");
        }
        assert!(
            err("pages.dev", "dev")
                .hint()
                .unwrap()
                .contains("yourname.pages.dev")
        );
    }

    #[test]
    fn other_machines_and_suggestions() {
        let others = ["work", "api"];
        assert_eq!(other_machine_of("x.work.dev", "dev", others), Some("work"));
        assert_eq!(other_machine_of("work.dev", "dev", others), Some("work"));
        assert_eq!(other_machine_of("network.dev", "dev", others), None);
        assert_eq!(suggested_allowance("pkg.go.dev"), "go.dev");
        assert_eq!(
            suggested_allowance("login.mycorp.pages.dev"),
            "mycorp.pages.dev"
        );
        assert!(within("a.b.dev", "b.dev") && within("b.dev", "b.dev"));
        assert!(!within("ab.dev", "b.dev"));
    }
}
