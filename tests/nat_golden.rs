//! Tier 1: the nftables transactions devbox sends for a machine's outbound NAT, as `nft -j
//! -f -` reads them (`tests/golden/nat/`). `UPDATE_GOLDEN=1` rewrites them.

mod support;
use support::golden;

use devbox::nat::{DevboxTable, NatLink, add_change, remove_change, render_text};

#[test]
fn first_machine_on_a_host_that_did_not_forward() {
    let change = add_change(None, &NatLink::of("dbx0").unwrap(), false);
    assert!(change.enable_forwarding);
    golden("nat", "add-first-dbx0.json", &render_text(&change.batch));
}

#[test]
fn last_machine_stops() {
    // The table as nft lists it after the change above was applied.
    let listing = r#"{"nftables": [
      {"table": {"family": "inet", "name": "devbox", "handle": 7}},
      {"chain": {"family": "inet", "table": "devbox", "name": "forward", "handle": 1}},
      {"rule": {"family": "inet", "table": "devbox", "chain": "forward", "handle": 9, "comment": "dbx0", "expr": []}},
      {"rule": {"family": "inet", "table": "devbox", "chain": "forward", "handle": 4, "comment": "devbox: ip_forward was 0", "expr": []}}
    ]}"#;
    let table = DevboxTable::parse(listing).unwrap().unwrap();
    let change = remove_change(&table, "dbx0").unwrap();
    assert!(change.restore_forwarding_off);
    golden("nat", "remove-last-dbx0.json", &render_text(&change.batch));
}
