//! `devbox ip NAME`: the guest's address on its host-only network.

use anyhow::Result;

use crate::machine::Store;
use crate::output;

pub fn run(store: &Store, name: &str) -> Result<i32> {
    let spec = store.existing(name)?.load_spec()?;
    output::data(spec.network.guest_ip.to_string());
    Ok(0)
}
