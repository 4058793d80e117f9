//! The config drive: a plain tar archive the host writes at every start and attaches to the
//! guest as a read-only disk with the virtio serial `devbox-config`. The guest's init extracts
//! it (busybox tar reads the raw block device), so the guest needs no metadata service and no
//! secret ever goes on the kernel command line. The contract is in `assets/guest/README.md`.

use std::path::Path;

use serde_json::json;

use super::driver::Addressing;
use super::spec::{MachineSpec, share_link_mac};
use crate::atomic_file::write_atomic;
use crate::net::ula::MachineIpv6;

/// One file of the drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveFile {
    pub name: &'static str,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// Inputs that are not in the spec.
pub struct DriveInputs<'a> {
    /// The machine's client public key (OpenSSH one-line), for `authorized_keys`.
    pub authorized_key: &'a str,
    /// The machine's pinned SSH host key, private (OpenSSH format) and public.
    pub host_key_private: &'a str,
    pub host_key_public: &'a str,
    /// Nameservers for the guest's resolv.conf.
    pub dns: &'a [std::net::IpAddr],
    /// Major version of the guest's Docker engine (decides which daemon.json keys exist).
    pub docker_major: u32,
    /// NFS shares the guest mounts at boot.
    pub mounts: &'a [NfsMount],
    /// The machine's IPv6 networks, when it has IPv6 (`spec.network.ipv6`).
    pub ipv6: Option<MachineIpv6>,
}

/// One NFS mount of the guest: `mount -t nfs -o OPTIONS SOURCE GUEST_PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsMount {
    pub source: String,
    pub guest_path: String,
    pub options: String,
}

/// Docker's `daemon.json` for the machine: the user's settings (`spec.engine.daemon`, whose
/// keys never collide with devbox's own: the spec's validation refuses those), then devbox's.
/// With `ipv6`, the default bridge gets its /64 (`fixed-cidr-v6`) and user networks take
/// theirs from the machine's IPv6 pool, next to the IPv4 one.
pub fn daemon_json(
    spec: &MachineSpec,
    docker_major: u32,
    dns: &[std::net::IpAddr],
    ipv6: Option<&MachineIpv6>,
) -> String {
    let mut v = spec.docker.daemon_json_fragment(docker_major);
    if let Some(v6) = ipv6 {
        v["ipv6"] = json!(true);
        v["fixed-cidr-v6"] = json!(v6.bridge.to_string());
        // One entry per /64: Docker before 27 cannot split an IPv6 base shorter than /64
        // (moby/moby#42801, #41438), so each entry is a network's whole /64.
        if let Some(pools) = v["default-address-pools"].as_array_mut() {
            pools.extend(v6.pool_networks().map(|n| {
                json!({ "base": n.to_string(), "size": crate::net::ula::POOL_NETWORK_PREFIX_V6 })
            }));
        }
    }
    for (key, value) in &spec.engine.daemon {
        v[key.as_str()] = value.clone();
    }
    // The guest has no systemd: dockerd's own log file is the one place to look.
    if !spec.engine.daemon.contains_key("log-level") {
        v["log-level"] = json!("info");
    }
    if !dns.is_empty() {
        // Containers resolve through devbox's DNS server on the host side.
        v["dns"] = json!(dns.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    }
    let mut s = serde_json::to_string_pretty(&v).expect("static JSON");
    s.push('\n');
    s
}

/// `nfs-mounts`: one `SOURCE<TAB>GUEST_PATH<TAB>OPTIONS` line per share.
pub fn nfs_mounts_file(mounts: &[NfsMount]) -> String {
    mounts
        .iter()
        .map(|m| format!("{}\t{}\t{}\n", m.source, m.guest_path, m.options))
        .collect()
}

/// `devbox.env`: shell-sourceable settings for the guest init. How the guest gets its address
/// follows the driver ([`Addressing`]): a static address and default route (the host chose
/// them, on its TAP), or `DEVBOX_NET='dhcp'` (the driver's NAT chooses; the guest reports the
/// address it got). No `DEVBOX_NET` means static, so the file of a static machine reads as it
/// did before DHCP existed. A static machine with shares also gets its share link's NIC
/// (`DEVBOX_SHARE_MAC`) and address (`DEVBOX_SHARE_IP`), which the guest moves into a network
/// namespace of its own for its NFS client.
///
/// A DHCP machine with shares gets `DEVBOX_SHARES='host'`: its mounts come from the host
/// after its address report, as `/run/devbox/nfs-mounts` (`supervisor::shares`).
///
/// With IPv6, a static machine also gets `DEVBOX_GUEST_IP6` (its end of the IPv6 link, CIDR)
/// and `DEVBOX_HOST_IP6` (the host's end), which routes the machine's /56 via the guest.
pub fn env_file(
    spec: &MachineSpec,
    dns: &[std::net::IpAddr],
    ipv6: Option<&MachineIpv6>,
) -> String {
    let dns: Vec<String> = dns.iter().map(|a| a.to_string()).collect();
    let mut lines = vec![
        ("DEVBOX_NAME", spec.name.clone()),
        ("DEVBOX_HOSTNAME", spec.name.clone()),
    ];
    match spec.driver.capabilities().addressing {
        Addressing::Static => {
            lines.push((
                "DEVBOX_GUEST_IP",
                format!(
                    "{}/{}",
                    spec.network.guest_ip,
                    spec.network.subnet.prefix_len()
                ),
            ));
            lines.push(("DEVBOX_HOST_IP", spec.network.host_ip.to_string()));
            if let Some(v6) = ipv6 {
                lines.push((
                    "DEVBOX_GUEST_IP6",
                    format!("{}/{}", v6.guest_ip, v6.link.prefix_len()),
                ));
                lines.push(("DEVBOX_HOST_IP6", v6.host_ip.to_string()));
            }
            if !spec.shares.is_empty()
                && let Ok(net) = crate::net::HostOnlyNet::from_index(spec.network.index)
            {
                let link = net.share_link();
                lines.push(("DEVBOX_SHARE_MAC", share_link_mac(&spec.name)));
                lines.push((
                    "DEVBOX_SHARE_IP",
                    format!("{}/{}", link.guest_ip, link.prefix),
                ));
            }
        }
        Addressing::Dhcp => {
            lines.push(("DEVBOX_NET", "dhcp".into()));
            if !spec.shares.is_empty() {
                // The file server's address is the NAT's, known after the lease: the host
                // hands the mounts over SSH once the guest reported its address.
                lines.push(("DEVBOX_SHARES", "host".into()));
            }
        }
    }
    lines.push(("DEVBOX_DNS", dns.join(" ")));
    let mut out = String::from("# Written by devbox at each start; the guest init sources it.\n");
    for (k, v) in lines {
        out.push_str(&format!("{k}='{}'\n", shell_quote_inner(&v)));
    }
    out
}

/// Escapes a value for use inside single quotes.
fn shell_quote_inner(v: &str) -> String {
    v.replace('\'', r"'\''")
}

/// Every file on the drive, in a stable order.
pub fn files(spec: &MachineSpec, inputs: &DriveInputs) -> Vec<DriveFile> {
    let mut authorized = inputs.authorized_key.trim().to_owned();
    authorized.push('\n');
    vec![
        DriveFile {
            name: "devbox.env",
            mode: 0o644,
            contents: env_file(spec, inputs.dns, inputs.ipv6.as_ref()).into_bytes(),
        },
        DriveFile {
            name: "authorized_keys",
            mode: 0o600,
            contents: authorized.into_bytes(),
        },
        DriveFile {
            name: "ssh_host_ed25519_key",
            mode: 0o600,
            contents: inputs.host_key_private.as_bytes().to_vec(),
        },
        DriveFile {
            name: "ssh_host_ed25519_key.pub",
            mode: 0o644,
            contents: format!("{}\n", inputs.host_key_public.trim()).into_bytes(),
        },
        DriveFile {
            name: "daemon.json",
            mode: 0o644,
            contents: daemon_json(spec, inputs.docker_major, inputs.dns, inputs.ipv6.as_ref())
                .into_bytes(),
        },
        DriveFile {
            name: "nfs-mounts",
            mode: 0o644,
            contents: nfs_mounts_file(inputs.mounts).into_bytes(),
        },
        DriveFile {
            name: "dockerd.env",
            mode: 0o644,
            contents: super::engine::env_file(&spec.engine).into_bytes(),
        },
        DriveFile {
            name: "engine-ca.pem",
            mode: 0o644,
            contents: spec.engine.ca_bundle().into_bytes(),
        },
    ]
}

/// Builds the tar image (padded to whole 512-byte blocks, as a block device needs).
pub fn render(files: &[DriveFile]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for f in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(f.contents.len() as u64);
        h.set_mode(f.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, f.name, f.contents.as_slice())?;
    }
    let mut out = b.into_inner()?;
    // Round up to 64 KiB so the device is never smaller than one virtio-blk request.
    let len = out.len().div_ceil(65536) * 65536;
    out.resize(len, 0);
    Ok(out)
}

/// Writes the drive for `spec` to `path` (mode 0600: it holds the host's private key).
pub fn write(path: &Path, spec: &MachineSpec, inputs: &DriveInputs) -> std::io::Result<()> {
    let bytes = render(&files(spec, inputs))?;
    write_atomic(path, &bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::spec::Driver;

    use crate::machine::guest_net::tests::spec;

    #[test]
    fn a_static_machine_gets_its_address_and_route() {
        let env = env_file(&spec(Driver::Kvm), &["192.168.64.1".parse().unwrap()], None);
        assert!(env.contains("DEVBOX_GUEST_IP='192.168.64.2/24'\n"), "{env}");
        assert!(env.contains("DEVBOX_HOST_IP='192.168.64.1'\n"), "{env}");
        assert!(!env.contains("DEVBOX_NET"), "{env}");
    }

    #[test]
    fn engine_settings_join_devbox_keys_in_daemon_json() {
        let mut s = spec(Driver::Qemu);
        s.engine
            .daemon
            .insert("labels".into(), json!(["provider=devbox"]));
        s.engine.daemon.insert("log-level".into(), json!("debug"));
        let v: serde_json::Value = serde_json::from_str(&daemon_json(&s, 26, &[], None)).unwrap();
        assert_eq!(v["labels"], json!(["provider=devbox"]));
        assert_eq!(
            v["log-level"], "debug",
            "the user's level wins over devbox's default"
        );
        assert_eq!(v["bip"], "172.18.0.1/16");
        let plain: serde_json::Value =
            serde_json::from_str(&daemon_json(&spec(Driver::Qemu), 26, &[], None)).unwrap();
        assert_eq!(plain["log-level"], "info");
    }

    #[test]
    fn an_ipv6_machine_gets_its_link_bridge_and_pool() {
        use crate::net::ula::Ipv6Net;
        let id = crate::net::ula::GlobalId::from_machine_id("0123456789abcdef0123456789abcdef");
        let v6 = MachineIpv6::new(id, 0);
        let mut s = spec(Driver::Qemu);
        s.network.ipv6 = true;
        let env = env_file(&s, &[], Some(&v6));
        assert!(
            env.contains(&format!("DEVBOX_GUEST_IP6='{}/64'\n", v6.guest_ip)),
            "{env}"
        );
        assert!(
            env.contains(&format!("DEVBOX_HOST_IP6='{}'\n", v6.host_ip)),
            "{env}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&daemon_json(&s, 26, &[], Some(&v6))).unwrap();
        assert_eq!(v["ipv6"], true);
        assert_eq!(v["fixed-cidr-v6"], v6.bridge.to_string());
        let pools = v["default-address-pools"].as_array().unwrap();
        assert_eq!(pools.len(), 1 + 128, "the IPv4 pool, then 128 IPv6 /64s");
        assert_eq!(pools[0], json!({ "base": "172.19.0.0/16", "size": 24 }));
        let first: crate::net::ula::Ipv6Net = pools[1]["base"].as_str().unwrap().parse().unwrap();
        assert_eq!(first, Ipv6Net::new(v6.pool.network(), 64).unwrap());
        assert_eq!(pools[1]["size"], 64);
        for p in &pools[1..] {
            let n: Ipv6Net = p["base"].as_str().unwrap().parse().unwrap();
            assert!(v6.pool.contains(&n) && n.prefix_len() == 64, "{n}");
        }
        let plain = daemon_json(&s, 26, &[], None);
        assert!(!plain.contains("ipv6"), "{plain}");
        assert!(!env_file(&s, &[], None).contains("IP6"));
    }

    #[test]
    fn a_vz_machine_is_told_to_use_dhcp_and_nothing_static() {
        let env = env_file(&spec(Driver::Vz), &[], None);
        assert_eq!(
            env,
            "# Written by devbox at each start; the guest init sources it.\n\
             DEVBOX_NAME='dev'\n\
             DEVBOX_HOSTNAME='dev'\n\
             DEVBOX_NET='dhcp'\n\
             DEVBOX_DNS=''\n"
        );
    }
}
