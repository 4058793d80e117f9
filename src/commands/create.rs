//! `devbox create NAME`: validate, allocate the host-only network and the Docker subnets
//! host-wide (under the lease registry's lock, against every user's leases), take the
//! network's lease, generate the machine's SSH keys and sparse disk, and write the spec, all
//! in a staging directory renamed into place only when complete (a failed create leaves
//! nothing behind, its lease included).

use fs_err::os::unix::fs::OpenOptionsExt;

use anyhow::{Context, Result};

use crate::cli::{CreateArgs, DriverArg};
use crate::machine::engine::{self, EngineFlags};
use crate::machine::spec::{self, HostLimits, NetworkSpec};
use crate::machine::{Driver, Link, MachineSpec, Store};
use crate::net::lease::{Lease, LeaseInfo, Registry, real_uid};
use crate::routes::{self, Claim};
use crate::{hypervisor, image, net, output, ssh};

pub fn run(store: &Store, a: CreateArgs) -> Result<i32> {
    spec::validate_name(&a.name)?;
    if matches!(a.driver, Some(DriverArg::Ssh)) {
        return super::create_remote::run(store, a);
    }
    if a.ssh_host.is_some() {
        anyhow::bail!(
            "--ssh-host adopts an existing host: it goes with --driver ssh (the {} driver boots \
             a machine of its own)",
            a.driver
                .map(driver_of)
                .unwrap_or_else(|| hypervisor::default_driver().0)
        );
    }
    // First: before `system install` there is nothing to allocate from (root makes it).
    let registry = Registry::system();
    registry.ensure()?;
    let limits = HostLimits::of_this_host();
    spec::validate_cpus(a.cpus, &limits)?;
    let memory_mib = spec::parse_memory(&a.memory)?;
    spec::validate_memory(memory_mib, &limits)?;
    let disk_bytes = spec::parse_disk_size(&a.disk_size)?;
    let bip = a
        .docker_subnet
        .as_deref()
        .map(spec::parse_docker_bip)
        .transpose()?;
    spec::validate_tld(&a.tld)?;
    let engine = engine::from_flags(&EngineFlags {
        labels: a.engine.labels.clone(),
        opts: a.engine.opts.clone(),
        insecure_registries: a.engine.insecure_registries.clone(),
        registry_mirrors: a.engine.registry_mirrors.clone(),
        env: a.engine.env.clone(),
        storage_driver: a.engine.storage_driver.clone(),
        ca_files: a.engine.ca_files.clone(),
    })?;

    let (driver, why) = match a.driver {
        None => hypervisor::default_driver(),
        Some(d) => (driver_of(d), "chosen with --driver".to_owned()),
    };
    // Refuse a driver this host cannot run now, not at the first start.
    hypervisor::for_driver(driver)?;

    if a.ipv6 {
        if driver.capabilities().link != Link::Tap {
            anyhow::bail!(
                "--ipv6: the {driver} driver's network is not a link devbox routes (a TAP \
                 device), so it cannot route the machine's IPv6 prefix; use --driver qemu or \
                 kvm, or leave out --ipv6"
            );
        }
        // The prefix derives from the host's machine ID: say now if there is none.
        net::ula::host_global_id().map_err(net::NetError::from)?;
    }

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
    engine::check_engine(&engine, image.manifest.docker_major())
        .context("--engine-opt: the image's Docker engine does not know this key")?;
    engine::check_ca_support(&engine, &image.manifest.version, image.manifest.engine_ca)?;

    // One create at a time, host-wide, allocates networks: two users never get the same /24
    // or Docker subnet.
    let alloc = allocate(store, &registry, &a.name, bip, a.ipv6)?;
    let staging = store.stage(&a.name)?;
    let dir = staging.dir();
    let client = ssh::generate_ed25519(&format!("devbox-{}", a.name))?;
    ssh::write_keypair(&client, &dir.client_key_path(), &dir.client_pub_path())?;
    let host = ssh::generate_ed25519(&format!("devbox-{}-host", a.name))?;
    ssh::write_keypair(&host, &dir.host_key_path(), &dir.host_pub_path())?;

    let disk = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.disk_path())?;
    disk.set_len(disk_bytes)
        .with_context(|| format!("sizing {}", dir.disk_path().display()))?;

    let spec = MachineSpec {
        name: a.name.clone(),
        driver,
        cpus: a.cpus,
        memory_mib,
        disk_bytes,
        image: image.manifest.version.clone(),
        network: alloc.network.clone(),
        docker: alloc.docker,
        shares,
        tld: a.tld.clone(),
        engine,
        dns_domains,
        remote: None,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    dir.save_spec(&spec)?;
    let committed = staging.commit()?;
    alloc.keep();

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
    if spec.network.ipv6
        && let Ok(v6) = net::ula::MachineIpv6::for_index(spec.network.index)
    {
        output::info(format!(
            "IPv6: {} (bridge {}, networks from {}, routed from this host)",
            v6.prefix, v6.bridge, v6.pool
        ));
    }
    if !spec.dns_domains.is_empty() {
        output::info(format!(
            "DNS: its containers may claim names in {}",
            spec.dns_domains.join(", ")
        ));
    }
    super::use_context::refresh(&committed);
    output::info(format!(
        "Docker context: {} (`devbox use {}` makes it the docker CLI's current one)",
        crate::docker_context::context_name(&spec.name),
        spec.name
    ));
    output::info(format!("Start it with: devbox start {}", spec.name));
    Ok(0)
}

/// A network index and Docker subnets allocated host-wide and leased to a machine being
/// created, released again unless [`Allocation::keep`] is called once the machine exists.
pub(super) struct Allocation<'r> {
    pub network: NetworkSpec,
    pub docker: crate::routes::DockerSubnets,
    held: HeldLease<'r>,
    /// The host-wide allocation lock, held until the machine exists or the create failed.
    _lock: crate::net::lease::HostLock,
}

impl Allocation<'_> {
    pub fn keep(mut self) {
        self.held.index = None;
    }
}

/// Allocates the host-only network and the Docker subnets of machine `name` host-wide (under
/// the lease registry's lock, against every user's leases and this store's machines) and
/// takes the network's lease.
pub(super) fn allocate<'r>(
    store: &Store,
    registry: &'r Registry,
    name: &str,
    bip: Option<ipnet::Ipv4Net>,
    ipv6: bool,
) -> Result<Allocation<'r>> {
    store.create_private_dirs()?;
    let lock = registry.lock()?;

    if store.machine(name)?.spec_path().exists() {
        return Err(crate::machine::store::StoreError::Exists {
            name: name.to_owned(),
        }
        .into());
    }
    let machine_dir = fs_err::canonicalize(store.machines_dir())?.join(name);
    reclaim_stale_leases(registry)?;
    let leases = registry.list()?;
    let mut taken: Vec<u8> = leases.iter().map(|l| l.index).collect();
    let mut claims: Vec<Claim> = leases.iter().flat_map(lease_claims).collect();
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
    let lease = registry.take(
        hostonly.index,
        &LeaseInfo {
            uid: real_uid(),
            user: std::env::var("USER").unwrap_or_default(),
            machine: name.to_owned(),
            dir: machine_dir,
            docker: docker.routed().to_vec(),
        },
    )?;
    anyhow::ensure!(
        lease,
        "host-only index {} was leased by another command meanwhile; try again",
        hostonly.index
    );
    // Released again unless the machine is committed.
    let held = HeldLease {
        registry,
        index: Some(hostonly.index),
    };

    Ok(Allocation {
        network: NetworkSpec {
            index: hostonly.index,
            subnet: hostonly.subnet,
            host_ip: hostonly.host_ip,
            guest_ip: hostonly.guest_ip,
            mac: spec::mac_for(name),
            ipv6,
        },
        docker,
        held,
        _lock: lock,
    })
}

/// The machine driver `--driver` names.
pub(super) fn driver_of(d: DriverArg) -> Driver {
    match d {
        DriverArg::Qemu => Driver::Qemu,
        DriverArg::Kvm => Driver::Kvm,
        DriverArg::Vz => Driver::Vz,
        DriverArg::Ssh => Driver::Ssh,
        DriverArg::Fake => Driver::Fake,
    }
}

/// A lease taken by this create, released if the create fails.
struct HeldLease<'r> {
    registry: &'r Registry,
    index: Option<u8>,
}

impl Drop for HeldLease<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.index {
            let _ = self.registry.release(i);
        }
    }
}

/// The caller's own leases whose machine directory is gone (a home removed without `devbox
/// rm`) are released, so their indexes and subnets can be used again. Other users' leases are
/// never touched (their homes may just be unmounted), and neither is a lease whose contents
/// cannot be read.
fn reclaim_stale_leases(registry: &Registry) -> Result<()> {
    let uid = real_uid();
    for l in registry.list()? {
        let gone = l
            .info
            .as_ref()
            .is_some_and(|i| i.dir.is_absolute() && !i.dir.join("machine.yaml").exists());
        if l.owner == uid && gone {
            registry.release(l.index)?;
        }
    }
    Ok(())
}

/// The Docker subnets another lease claims, as claims to steer clear of.
fn lease_claims(l: &Lease) -> Vec<Claim> {
    let machine = match &l.info {
        Some(i) => format!("{} (uid {}, dbx{})", i.machine, l.owner, l.index),
        None => format!("dbx{} (uid {})", l.index, l.owner),
    };
    l.docker()
        .iter()
        .map(|subnet| Claim {
            machine: machine.clone(),
            subnet: *subnet,
        })
        .collect()
}
