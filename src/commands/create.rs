//! `devbox create NAME`: validate, allocate the host-only network, generate the machine's SSH
//! keys and sparse disk, and write the spec, all in a staging directory renamed into place
//! only when complete (a failed create leaves nothing behind).

use anyhow::{Context, Result};

use crate::cli::{CreateArgs, DriverArg};
use crate::machine::spec::{self, HostLimits, NetworkSpec};
use crate::machine::{Driver, MachineSpec, Store};
use crate::routes::{self, Claim};
use crate::{hypervisor, image, net, output, ssh};

pub fn run(store: &Store, a: CreateArgs) -> Result<i32> {
    spec::validate_name(&a.name)?;
    let limits = HostLimits::of_this_host();
    spec::validate_cpus(a.cpus, &limits)?;
    spec::validate_memory(a.memory, &limits)?;
    let disk_bytes = spec::parse_disk_size(&a.disk_size)?;
    let bip = a
        .docker_subnet
        .as_deref()
        .map(spec::parse_docker_bip)
        .transpose()?;
    spec::validate_tld(&a.tld)?;

    let (driver, why) = match a.driver {
        None => hypervisor::default_driver(),
        Some(d) => {
            let d = match d {
                DriverArg::Qemu => Driver::Qemu,
                DriverArg::Kvm => Driver::Kvm,
                DriverArg::Vz => Driver::Vz,
                DriverArg::Fake => Driver::Fake,
            };
            (d, "chosen with --driver".to_owned())
        }
    };
    // Refuse a driver this host cannot run now, not at the first start.
    hypervisor::for_driver(driver)?;

    let shares_work = driver.capabilities().shares;
    let state_dirs = store.state_dirs();
    let mut no_default_share = None;
    let shares = if a.no_share {
        Vec::new()
    } else if a.shares.is_empty() {
        // Where shares do not work, a default machine starts without one.
        if shares_work {
            let default = spec::default_shares(&state_dirs);
            no_default_share = default.why_none;
            default.shares
        } else {
            Vec::new()
        }
    } else if !shares_work {
        anyhow::bail!(
            "--share: file sharing is not available on this host yet (devbox's NFS server runs \
             on Linux hosts only); create the machine without --share"
        );
    } else {
        a.shares
            .iter()
            .map(|s| {
                spec::parse_share(s, a.allow_root_share, &state_dirs).map_err(spec::SpecError::from)
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    spec::check_shares(&shares, Some(&state_dirs)).map_err(spec::SpecError::from)?;
    let mut dns_domains = Vec::new();
    for d in &a.dns_domains {
        let d = super::dns_allow::check_allowance(store, &a.name, &a.tld, d)?;
        if !dns_domains.contains(&d) {
            dns_domains.push(d);
        }
    }
    dns_domains.sort();

    let image = image::find(&store.cache, a.image.as_deref())?;

    // One create at a time allocates networks, so two creates never get the same /24.
    fs_err::create_dir_all(store.machines_dir())?;
    let alloc_lock = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.machines_dir().join(".create.lock"))?;
    let _alloc = nix::fcntl::Flock::lock(
        alloc_lock.into_parts().0,
        nix::fcntl::FlockArg::LockExclusive,
    )
    .map_err(|(_, e)| std::io::Error::from(e))
    .context("locking the machine store")?;

    if store.machine(&a.name)?.spec_path().exists() {
        return Err(crate::machine::store::StoreError::Exists { name: a.name }.into());
    }
    let mut taken = Vec::new();
    let mut claims = Vec::new();
    for other in store.names()? {
        if let Ok(s) = store.machine(&other).and_then(|d| d.load_spec()) {
            taken.push(s.network.index);
            for subnet in s.docker.routed() {
                claims.push(Claim {
                    machine: other.clone(),
                    subnet,
                });
            }
        }
    }
    let host_routes = net::host_routes()?;
    let hostonly = net::allocate_host_only(&taken, &host_routes)?;
    let docker = routes::allocate_docker_subnets(&claims, &host_routes, bip)?;

    let staging = store.stage(&a.name)?;
    let dir = staging.dir();
    let client = ssh::generate_ed25519(&format!("devbox-{}", a.name))?;
    ssh::write_keypair(&client, &dir.client_key_path(), &dir.client_pub_path())?;
    let host = ssh::generate_ed25519(&format!("devbox-{}-host", a.name))?;
    ssh::write_keypair(&host, &dir.host_key_path(), &dir.host_pub_path())?;

    let disk = fs_err::File::create(dir.disk_path())?;
    disk.set_len(disk_bytes)
        .with_context(|| format!("sizing {}", dir.disk_path().display()))?;

    let spec = MachineSpec {
        name: a.name.clone(),
        driver,
        cpus: a.cpus,
        memory_mib: a.memory,
        disk_bytes,
        image: image.manifest.version.clone(),
        network: NetworkSpec {
            index: hostonly.index,
            subnet: hostonly.subnet,
            host_ip: hostonly.host_ip,
            guest_ip: hostonly.guest_ip,
            mac: spec::mac_for(&a.name),
        },
        docker,
        shares,
        tld: a.tld.clone(),
        dns_domains,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    dir.save_spec(&spec)?;
    staging.commit()?;

    output::info(format!(
        "Created machine {} ({driver}: {why}; {} CPUs, {} MiB, {} disk, IP {}, image {})",
        spec.name,
        spec.cpus,
        spec.memory_mib,
        spec::format_size(spec.disk_bytes),
        spec.network.guest_ip,
        spec.image
    ));
    for sh in &spec.shares {
        output::info(format!(
            "Share: {} -> {}{}{}",
            sh.host_path.display(),
            sh.guest_path,
            if sh.read_only { " (read-only)" } else { "" },
            if sh.allow_root {
                " (owned by root)"
            } else {
                ""
            }
        ));
    }
    if let Some(why) = no_default_share {
        output::info(format!("No default share: {why}"));
    }
    output::info(format!(
        "Docker: bridge {}, networks from {} (routed from this host)",
        spec.docker.bridge, spec.docker.pool
    ));
    if !spec.dns_domains.is_empty() {
        output::info(format!(
            "DNS: its containers may claim names in {}",
            spec.dns_domains.join(", ")
        ));
    }
    output::info(format!("Start it with: devbox start {}", spec.name));
    Ok(0)
}
