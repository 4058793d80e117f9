//! `devbox inspect NAME`: everything known about a machine, as a JSON document
//! (`docs/json.md`). A machine whose `machine.yaml` does not load is an error (the JSON error
//! document, kind `invalid_spec`, with the cause); `ls` and `status` still show it.

use anyhow::Result;
use serde_json::json;

use crate::machine::Store;
use crate::machine::guest_net::guest_address;
use crate::machine::state::observe;
use crate::{hypervisor, output};

pub fn run(store: &Store, name: &str) -> Result<i32> {
    let dir = store.existing(name)?;
    let spec = dir.load_spec()?;
    let obs = observe(&dir)?;
    let kvm = hypervisor::probe::kvm();
    let image = crate::image::find(&store.cache, Some(&spec.image)).ok();
    // The guest's address now (null for a vz machine that is not running).
    let ip = guest_address(&spec, &obs).ok();
    // The running DNS server's routed domains and refused names (`dns.json`).
    let dns: Option<serde_json::Value> = fs_err::read_to_string(dir.path.join("dns.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    // `create --ipv6`: the machine's prefix and its parts (null without IPv6).
    let ipv6 = spec
        .network
        .ipv6
        .then(|| crate::net::ula::MachineIpv6::for_index(spec.network.index).ok())
        .flatten()
        .map(|v6| {
            json!({
                "prefix": v6.prefix.to_string(),
                "guest_ip": v6.guest_ip,
                "host_ip": v6.host_ip,
                "bridge": v6.bridge.to_string(),
                "pool": v6.pool.to_string(),
            })
        });
    output::json::print(&json!({
        "name": spec.name,
        "state": obs.state,
        "ip": ip,
        "ipv6": ipv6,
        "spec": spec,
        "runtime": obs.file,
        "dns": dns,
        "driver": {
            "name": spec.driver,
            "kvm_usable": kvm.usable,
            "kvm_probe": kvm.reason,
        },
        "image": image.map(|i| json!({
            "version": i.manifest.version,
            "kernel_version": i.manifest.kernel_version,
            "dir": i.dir,
        })),
        "paths": {
            "dir": dir.path,
            "disk": dir.disk_path(),
            "serial_log": dir.serial_log_path(),
            "supervisor_log": dir.supervisor_log_path(),
            "control_socket": dir.control_socket_path(),
            "docker_socket": dir.docker_socket_path(),
            "ssh_key": dir.client_key_path(),
        },
        "docker_host": format!("unix://{}", dir.docker_socket_path().display()),
        "memory": vm_memory(obs.file.as_ref()),
    }));
    Ok(0)
}

/// The running VM process's memory, measured now: its resident set and, under QEMU's TCG, the
/// part of it that is the translation cache (`null` when the machine does not run, or the
/// process is not one this user can read). Read from `/proc`: Linux hosts only.
#[cfg(target_os = "linux")]
fn vm_memory(state: Option<&crate::machine::state::StateFile>) -> serde_json::Value {
    let Some(pid) = state
        .filter(|s| s.phase == crate::machine::state::Phase::Running)
        .and_then(|s| s.vm_pid)
    else {
        return serde_json::Value::Null;
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let Some(rss_kib) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return serde_json::Value::Null;
    };
    let tcg = state.and_then(|s| s.accel.as_deref()) == Some("tcg");
    json!({
        "vm_rss_bytes": rss_kib * 1024,
        "translation_cache_bytes": if tcg {
            crate::hypervisor::qemu::translation_cache_bytes(pid)
        } else {
            None
        },
    })
}

/// On macOS the VM runs in Virtualization.framework's own process, which has no `/proc` to
/// read: `memory` is null there (documented in docs/json.md).
#[cfg(not(target_os = "linux"))]
fn vm_memory(_state: Option<&crate::machine::state::StateFile>) -> serde_json::Value {
    serde_json::Value::Null
}
