//! `devbox ip NAME`: the guest's address: on its host-only network (qemu, kvm), or the one
//! the guest reported from the NAT's DHCP server while it runs (vz).

use anyhow::Result;

use crate::machine::Store;
use crate::machine::guest_net::guest_address;
use crate::machine::state::observe;
use crate::output;

pub fn run(store: &Store, name: &str) -> Result<i32> {
    let dir = store.existing(name)?;
    let spec = dir.load_spec()?;
    output::data(guest_address(&spec, &observe(&dir)?)?.to_string());
    Ok(0)
}
