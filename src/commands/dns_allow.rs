//! `devbox dns allow DOMAIN [--machine NAME]`, `dns deny DOMAIN [--machine NAME]` and
//! `dns allowed`: the domains outside `<machine>.<tld>` in which a machine's containers may
//! claim names. Stored per machine, in `machine.yaml` (`dns_domains`): an allowance is trust
//! in one machine's containers, not in every machine the user will ever create, and it goes
//! with the machine at `rm`. A running machine's DNS server re-reads it within seconds.

use anyhow::Result;
use serde::Serialize;

use crate::cli::{DnsAllowArgs, LsArgs};
use crate::dns::policy::{self, AllowError, AllowanceError};
use crate::machine::lock::lock_machine;
use crate::machine::spec::{SpecError, check_dns_domain};
use crate::machine::{MachineDir, Store};
use crate::output;

/// Checks `domain` for a machine `name` under `tld` (new or existing) against the rules and
/// the other machines in `store`, returning it normalized.
pub(crate) fn check_allowance(
    store: &Store,
    name: &str,
    tld: &str,
    domain: &str,
) -> Result<String> {
    let d = check_dns_domain(domain, name, tld)?;
    let others: Vec<String> = store.names()?.into_iter().filter(|n| n != name).collect();
    if let Some(other) = policy::other_machine_of(&d, tld, others.iter().map(String::as_str)) {
        return Err(SpecError::DnsDomain {
            text: domain.to_string(),
            source: Box::new(AllowanceError::OtherMachine {
                domain: d.clone(),
                other: other.to_string(),
            }),
        }
        .into());
    }
    Ok(d)
}

pub fn allow(store: &Store, a: &DnsAllowArgs) -> Result<i32> {
    let dir = match &a.machine {
        Some(name) => store.existing(name)?,
        None => only_machine(store, &a.domain)?,
    };
    let _lock = lock_machine(&dir)?;
    let mut spec = dir.load_spec()?;
    let domain = check_allowance(store, &spec.name, &spec.tld, &a.domain)?;
    if spec.dns_domains.contains(&domain) {
        output::info(format!(
            "{domain} is already allowed for machine {}",
            spec.name
        ));
        return Ok(0);
    }
    spec.dns_domains.push(domain.clone());
    spec.dns_domains.sort();
    dir.save_spec(&spec)?;
    output::info(format!(
        "Allowed {domain} for machine {}: its containers may claim names in it, routed to its \
         DNS server (a running machine takes it up within seconds)",
        spec.name
    ));
    Ok(0)
}

pub fn deny(store: &Store, a: &DnsAllowArgs) -> Result<i32> {
    let domain = policy::normalize(&a.domain);
    if !policy::is_domain_name(&domain) {
        return Err(SpecError::DnsDomain {
            text: a.domain.clone(),
            source: Box::new(AllowanceError::Invalid {
                domain: a.domain.clone(),
            }),
        }
        .into());
    }
    let names = match &a.machine {
        Some(name) => vec![store.existing(name)?.name],
        None => store.names()?,
    };
    let mut denied = Vec::new();
    for name in names {
        let dir = store.machine(&name)?;
        if !dir.load_spec()?.dns_domains.contains(&domain) {
            continue;
        }
        let _lock = lock_machine(&dir)?;
        let mut spec = dir.load_spec()?;
        spec.dns_domains.retain(|d| *d != domain);
        dir.save_spec(&spec)?;
        denied.push(name);
    }
    if denied.is_empty() {
        return Err(AllowError::NotAllowed {
            domain,
            machine: a.machine.clone(),
        }
        .into());
    }
    output::info(format!(
        "Denied {domain} for {}: its names are no longer served or routed",
        denied.join(", ")
    ));
    Ok(0)
}

#[derive(Serialize)]
struct Row {
    domain: String,
    machine: String,
}

pub fn allowed(store: &Store, a: &LsArgs) -> Result<i32> {
    let mut rows = Vec::new();
    for name in store.names()? {
        // One machine's broken machine.yaml does not hide the others' domains.
        let spec = match store.machine(&name)?.load_spec() {
            Ok(s) => s,
            Err(e) => {
                output::warn(format!(
                    "machine {name} is left out: {}",
                    output::json::chain_text(&e)
                ));
                continue;
            }
        };
        for domain in spec.dns_domains {
            rows.push(Row {
                domain,
                machine: name.clone(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.domain, &a.machine).cmp(&(&b.domain, &b.machine)));
    if a.json {
        output::json::print(&serde_json::json!({ "domains": rows }));
        return Ok(0);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| vec![r.domain.clone(), r.machine.clone()])
        .collect();
    output::table(&["DOMAIN", "MACHINE"], &table);
    Ok(0)
}

/// The one machine, when `--machine` is left out.
fn only_machine(store: &Store, domain: &str) -> Result<MachineDir> {
    let names = store.names()?;
    match names.as_slice() {
        [one] => Ok(store.existing(one)?),
        [] => Err(AllowError::NoMachine {
            domain: domain.to_string(),
        }
        .into()),
        _ => Err(AllowError::WhichMachine {
            domain: domain.to_string(),
            machines: names,
        }
        .into()),
    }
}
