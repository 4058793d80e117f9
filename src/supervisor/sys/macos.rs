//! macOS parts of the supervisor: the vmnet bridges a vz machine's link is found among
//! (`ifconfig`), and shares, which are refused: the embedded NFS server is Linux-only for now
//! (its READDIR cookies and data sync use Linux interfaces).

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result};

use super::super::netplan::{Bridge, parse_ifconfig_bridges};
use crate::machine::MachineSpec;
use crate::machine::config_drive::NfsMount;

/// Never constructed on macOS: there is no share server yet.
pub enum NfsServer {}

pub fn start_nfs(
    _io: &tokio::runtime::Runtime,
    spec: &MachineSpec,
) -> Result<(Option<NfsServer>, Vec<NfsMount>)> {
    if spec.shares.is_empty() {
        return Ok((None, Vec::new()));
    }
    anyhow::bail!(
        "machine {} has shares, and file sharing is not available on macOS hosts yet; \
         recreate it with --no-share",
        spec.name
    )
}

/// The vmnet bridges and their members now, from `ifconfig` (no privilege needed).
pub fn vmnet_bridges() -> Result<BTreeMap<String, Bridge>> {
    let out = Command::new("ifconfig")
        .output()
        .context("running `ifconfig` to find the machine's vmnet bridge")?;
    if !out.status.success() {
        anyhow::bail!(
            "`ifconfig` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_ifconfig_bridges(&String::from_utf8_lossy(
        &out.stdout,
    )))
}
