//! Bringing a machine up. [`Supervisor`] holds what every step needs (the machine's files and
//! spec, the state writer, the event channel, the readiness deadline, and the [`Parts`]
//! started so far) and [`Supervisor::run`] takes the machine through its life:
//!
//! 1. the image and the driver (its preflight and [`Capabilities`]);
//! 2. the host side of the network, from the capabilities (`host_net`): for a TAP link the
//!    conflict check, the TAP, the routes to the Docker subnets and the outbound NAT;
//! 3. the I/O runtime, the NFS server for the shares, the DNS server (now for a static
//!    address; after the guest's report for a DHCP one);
//! 4. the config drive, then the boot;
//! 5. the control socket and the signal watcher; for a DHCP guest its reported address, its
//!    link and routes, and its DNS server;
//! 6. the resolver watcher and the readiness watcher; then the event loop (`event_loop.rs`)
//!    until the machine ends, and every part stopped in reverse order.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::SigSet;

use super::event_loop::{self, Guest, Running};
use super::host_net::{self, HostNet};
use super::nat::Nat;
use super::parts::Parts;
use super::report::Awaited;
use super::routes::{Routes, add_routes, forget_routes};
use super::state::StateWriter;
use super::watchers::{self, ResolverWatch};
use super::{Event, client, control, log, report, shares, sys};
use crate::host::HostFilter;
use crate::hypervisor::{self, BootConfig, Hypervisor, console_log};
use crate::image::Image;
use crate::machine::{
    Addressing, Capabilities, GuestAccess, Link, MachineDir, MachineSpec, Store, config_drive,
};
use crate::net::{self, vmnet};
use crate::resolver::ResolverSync;
use crate::{dns, image, ssh};

/// One machine's supervisor, from bring-up to the end.
pub struct Supervisor<'a> {
    pub(super) store: &'a Store,
    pub(super) dir: &'a MachineDir,
    pub(super) spec: &'a MachineSpec,
    pub(super) state: StateWriter,
    /// When the guest must be ready by.
    pub(super) deadline: Instant,
    pub(super) tx: Sender<Event>,
    pub(super) rx: Receiver<Event>,
    pub(super) parts: Parts,
    /// Changes the file server makes for the guest, which the share watcher does not raise
    /// again (see `nfs::echo`).
    pub(super) echo: Arc<crate::nfs::echo::EchoLog>,
    /// The number of the current boot (0, then 1 after a kernel panic): a readiness watcher
    /// of an earlier boot gives up, and its reports are ignored.
    pub(super) boot_number: Arc<AtomicU32>,
}

/// How bring-up ended, when not in error.
enum BroughtUp {
    Running(Running),
    /// Asked to stop before the machine was up; why, for the log and the state file.
    Stopped(String),
}

impl<'a> Supervisor<'a> {
    pub fn new(
        store: &'a Store,
        dir: &'a MachineDir,
        spec: &'a MachineSpec,
        state: StateWriter,
        ready_timeout: Duration,
    ) -> Supervisor<'a> {
        let (tx, rx) = channel();
        Supervisor {
            store,
            dir,
            spec,
            state,
            deadline: Instant::now() + ready_timeout,
            tx,
            rx,
            parts: Parts::default(),
            echo: Arc::new(crate::nfs::echo::EchoLog::new()),
            boot_number: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Brings the machine up, runs it until it ends and stops every part; returns why the
    /// machine ended.
    pub fn run(mut self, sigs: SigSet) -> Result<String> {
        let outcome = match self.bring_up(sigs) {
            Ok(BroughtUp::Running(machine)) => event_loop::run(&mut self, machine),
            Ok(BroughtUp::Stopped(why)) => Ok(why),
            Err(e) => Err(e),
        };
        self.parts.stop_all();
        outcome
    }

    fn bring_up(&mut self, sigs: SigSet) -> Result<BroughtUp> {
        if self.spec.driver.capabilities().guest == GuestAccess::Remote {
            return self.bring_up_remote(sigs).map(BroughtUp::Running);
        }
        let image = image::find(&self.store.cache, Some(&self.spec.image))?;
        let hv = self.driver()?;
        let caps = hv.capabilities();
        let net = host_net::host_net(self.spec, caps)?;
        if caps.link != Link::None {
            // First, so that even a start that fails from here on forgets what an earlier
            // run of this machine left in the routes state.
            self.parts
                .add(Routes::new(self.store, self.spec, caps, net.hostonly));
        }
        let tap = self.tap(&net)?;
        let io = self.io_runtime()?;

        self.state.step("exporting shares");
        let sys::Shares {
            server: nfs_server,
            mounts,
            nic: share_nic,
        } = sys::start_nfs(&io, self.spec, &self.store.state_dirs(), self.echo.clone())?;
        if let Some(server) = nfs_server {
            self.parts.hold("NFS server", server);
        }
        // A static guest's address is known now, and the guest resolves through this server;
        // a DHCP guest's comes with its report, after boot.
        let mut dns_server = match caps.addressing {
            Addressing::Static => Some(self.dns(&io, &net, net.hostonly.guest_ip)?),
            Addressing::Dhcp => None,
        };
        self.state.step("writing the config drive");
        self.write_config_drive(&image, &net, &mounts)?;

        // vmnet adds the machine's member to its bridge at boot: what was there before is not
        // ours.
        let bridges_before = match caps.link {
            Link::DriverNat => net::vmnet_bridges()?,
            Link::Tap | Link::None => Default::default(),
        };
        let tap = tap.map(|t| t.into_inheritable_fd()).transpose()?;
        let spare = Spare::keep(&tap, &share_nic)?;
        let mut vm = Guest::new(self.boot(hv.as_ref(), &image, tap, share_nic)?);
        let booted = Instant::now();
        control::serve(
            &self.dir.control_socket_path(),
            self.tx.clone(),
            self.state.clone(),
        )?;
        watchers::spawn_signals(sigs, self.tx.clone());

        let guest_ip = match caps.addressing {
            Addressing::Static => net.hostonly.guest_ip,
            Addressing::Dhcp => match self.reported_address(&mut vm, &bridges_before)? {
                (Awaited::Address(ip), Some(link)) => {
                    if !self.spec.shares.is_empty() {
                        self.serve_shares_on_nat(&io, &link, ip)?;
                    }
                    ip
                }
                (Awaited::Address(ip), None) => ip,
                (Awaited::Stopped(why), _) => return Ok(BroughtUp::Stopped(why)),
            },
        };
        let dns_server = match dns_server.take() {
            Some(d) => d,
            None => self.dns(&io, &net, guest_ip)?,
        };
        let records = self.serve_names(dns_server, &net);

        let target = self.watch_readiness(caps, &mut vm, guest_ip)?;
        Ok(BroughtUp::Running(Running {
            vm,
            target,
            guest_ip,
            records: Some(records),
            io: io.handle().clone(),
            booted,
            reboot: Some(Box::new(Reboot {
                hv,
                image,
                spare,
                guest: caps.guest,
            })),
        }))
    }

    /// The machine's driver, checked, with its acceleration recorded.
    fn driver(&self) -> Result<Box<dyn Hypervisor>> {
        let hv = hypervisor::for_driver(self.spec.driver)?;
        hv.preflight()?;
        self.state.update(|s| {
            s.accel = Some(hv.accel().name.to_owned());
            s.accel_reason = Some(hv.accel().reason.clone());
        });
        log(format!(
            "driver {}, acceleration {} ({})",
            hv.driver(),
            hv.accel().name,
            hv.accel().reason
        ));
        Ok(hv)
    }

    /// Host services run on one small tokio runtime; the machine's own threads stay plain.
    pub(super) fn io_runtime(&mut self) -> Result<Arc<tokio::runtime::Runtime>> {
        let io = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("io")
                .enable_all()
                .build()
                .context("starting the I/O runtime")?,
        );
        self.parts.hold("I/O runtime", io.clone());
        Ok(io)
    }

    /// A DHCP guest's address, from its report, with its link routed (or why it stopped
    /// first).
    fn reported_address(
        &mut self,
        vm: &mut Guest,
        bridges_before: &BTreeMap<String, vmnet::Bridge>,
    ) -> Result<(Awaited, Option<vmnet::NatLink>)> {
        self.state.step("waiting for the guest's address");
        let awaited = report::await_guest_address(vm.as_mut(), &self.rx, self.deadline)?;
        let mut link = None;
        if let Awaited::Address(ip) = awaited {
            log(format!("the guest reported its address {ip}"));
            self.state.update(|s| s.guest_ip = Some(ip));
            link = Some(self.route_nat_link(ip, bridges_before)?);
        }
        Ok((awaited, link))
    }

    /// A vz machine's shares: served on its NAT bridge for its reported address, their mounts
    /// handed to the guest over SSH (see `supervisor::shares`).
    fn serve_shares_on_nat(
        &mut self,
        io: &tokio::runtime::Runtime,
        link: &vmnet::NatLink,
        guest_ip: Ipv4Addr,
    ) -> Result<()> {
        self.state.step("exporting shares");
        let (server, mounts) = shares::serve_on_nat(
            io,
            self.spec,
            &self.store.state_dirs(),
            link,
            guest_ip,
            self.echo.clone(),
        )?;
        log(shares::describe(&server, &link.bridge, self.spec));
        self.parts.hold("NFS server", server);
        let target = client::ssh_target_at(self.dir, guest_ip)?;
        shares::deliver(&target, &mounts, self.deadline)
    }

    /// Starts the readiness watcher the driver's capabilities call for, and the console
    /// watcher that ends the wait early when the guest says it cannot get ready; returns the
    /// SSH target when the guest is reached over SSH.
    fn watch_readiness(
        &self,
        caps: Capabilities,
        vm: &mut Guest,
        guest_ip: Ipv4Addr,
    ) -> Result<Option<ssh::Target>> {
        let (state, tx) = (self.state.clone(), self.tx.clone());
        watchers::spawn_console_fatal(
            self.dir.serial_log_path(),
            self.deadline,
            state.clone(),
            tx.clone(),
        );
        match caps.guest {
            GuestAccess::Ssh => {
                let target = client::ssh_target_at(self.dir, guest_ip)?;
                watchers::spawn_ready_over_ssh(
                    target.clone(),
                    self.boot_number.clone(),
                    self.deadline,
                    state,
                    tx,
                );
                Ok(Some(target))
            }
            GuestAccess::DriverReport => {
                let report = vm.as_mut().take_ready_report().ok_or_else(|| {
                    anyhow::anyhow!(
                        "the {} driver reports readiness itself, and gave no report",
                        self.spec.driver
                    )
                })?;
                watchers::spawn_ready_from_driver(report, 0, self.deadline, state, tx);
                Ok(None)
            }
            GuestAccess::Remote => {
                anyhow::bail!("an adopted host is brought up by `bring_up_remote`")
            }
        }
    }

    /// For a TAP link: the TAP, through the privileged door (only for an index leased to the
    /// caller, with the index's address, and only while its /24 is still free on the host),
    /// then the routes to the Docker subnets over it, and its traffic forwarded out (`nat`).
    fn tap(&mut self, net: &HostNet) -> Result<Option<net::Tap>> {
        let Some(setup) = &net.tap else {
            return Ok(None);
        };
        self.state.step("creating the network device");
        let (tap, hostonly, v6) =
            crate::host::open_tap(net.hostonly.index, true, self.spec.network.ipv6)?;
        log(format!(
            "{} up with {}/{}",
            tap.name(),
            hostonly.host_ip,
            hostonly.subnet.prefix_len()
        ));
        if let Some(v6) = v6 {
            log(format!(
                "{} has {}/{}; {} routed via {}",
                tap.name(),
                v6.host_ip,
                v6.link.prefix_len(),
                v6.prefix,
                v6.guest_ip
            ));
        }
        debug_assert_eq!(setup.name, tap.name());

        self.state.step("routing the Docker subnets");
        add_routes(
            self.store,
            self.spec,
            net.hostonly.guest_ip,
            tap.name(),
            Vec::new(),
        )?;

        self.state.step("forwarding the machine's traffic out");
        let nat = Nat::add(self.store, &self.spec.name, tap.name(), &self.state)?;
        self.parts.add(nat);
        Ok(Some(tap))
    }

    /// For a DHCP guest: finds its vmnet link and routes the Docker subnets over it, with
    /// vmnet's host filter lifted for the machine's member(s).
    fn route_nat_link(
        &mut self,
        ip: Ipv4Addr,
        before: &BTreeMap<String, vmnet::Bridge>,
    ) -> Result<vmnet::NatLink> {
        let link = vmnet::nat_link(&self.spec.name, ip, before, &net::vmnet_bridges()?)?;
        if link.members.len() > 1 {
            log(format!(
                "{} members joined {} during boot ({}); lifting the host filter of each",
                link.members.len(),
                link.bridge,
                link.members.join(", ")
            ));
        }
        self.state.step("routing the Docker subnets");
        // A supervisor killed before it could clean up left routes via the previous boot's
        // address, which the new ones would collide with.
        forget_routes(self.store, self.spec, None);
        let filters = link
            .members
            .iter()
            .map(|m| HostFilter {
                bridge: link.bridge.clone(),
                member: m.clone(),
            })
            .collect();
        add_routes(self.store, self.spec, ip, &link.bridge, filters)?;
        Ok(link)
    }

    /// Keeps `server` running as a part of the machine, with the host resolver's side in step
    /// with the domains it owns (`dns.json`, and systemd-resolved on `net`'s link); its
    /// records, for the container watcher.
    pub(super) fn serve_names(
        &mut self,
        server: dns::DnsServer,
        net: &HostNet,
    ) -> dns::RecordsHandle {
        let records = server.records();
        let resolver = ResolverSync::new(
            self.dir,
            self.spec,
            server.local_addr(),
            net.resolved_link.clone(),
        );
        self.parts.hold("DNS server", server);
        self.parts
            .add(ResolverWatch::spawn(resolver, records.clone()));
        records
    }

    /// Starts the machine's DNS server, answering `<machine>.<tld>` with `guest_ip`.
    ///
    /// Upstreams: `DEVBOX_DNS_UPSTREAMS` (comma-separated `ip:port`), else the host's resolvers.
    pub(super) fn dns(
        &self,
        io: &tokio::runtime::Runtime,
        net: &HostNet,
        guest_ip: Ipv4Addr,
    ) -> Result<dns::DnsServer> {
        self.state.step("starting the DNS server");
        let upstreams = match std::env::var("DEVBOX_DNS_UPSTREAMS") {
            Ok(v) if !v.trim().is_empty() => v
                .split(',')
                .map(|a| {
                    a.trim()
                        .parse()
                        .with_context(|| format!("DEVBOX_DNS_UPSTREAMS: {a:?} is not ip:port"))
                })
                .collect::<Result<Vec<std::net::SocketAddr>>>()?,
            _ => dns::host_upstreams()?,
        };
        // The alias policy (other machines, allowed domains, claims) is read from the state
        // directory at every zone build; only the guest, its containers and the host query.
        let subnets: Vec<ipnet::IpNet> = self.spec.docker.routed().map(Into::into).to_vec();
        let config = dns::DnsConfig {
            machine: self.spec.name.clone(),
            tld: self.spec.tld.clone(),
            guest_ip: guest_ip.into(),
            bind: net.dns_bind,
            upstreams: upstreams.clone(),
            clients: dns::machine_clients(net.dns_bind.ip(), guest_ip.into(), &subnets),
            policy: Box::new(dns::StoreNeighbours::new(
                self.store.clone(),
                &self.spec.name,
            )),
        };
        // Port 53 on the TAP's own address (from the leased index, opened by `tap` already):
        // CAP_NET_BIND_SERVICE for the binds only. `start` binds on this thread (block_on runs
        // the future here, and the runtime's workers, started earlier, do not get it).
        let start = || io.block_on(dns::DnsServer::start(config));
        let server = if net.dns_bind.port() < 1024 {
            crate::host::privileged::with_bind_service(start)
        } else {
            start()
        }?;
        log(format!(
            "DNS on {} for {}.{} (upstreams: {})",
            server.local_addr(),
            self.spec.name,
            self.spec.tld,
            upstreams
                .iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(server)
    }

    fn write_config_drive(
        &self,
        image: &Image,
        net: &HostNet,
        mounts: &[config_drive::NfsMount],
    ) -> Result<()> {
        let client_pub = fs_err::read_to_string(self.dir.client_pub_path())?;
        let host_key = fs_err::read_to_string(self.dir.host_key_path())?;
        let host_pub = fs_err::read_to_string(self.dir.host_pub_path())?;
        crate::machine::engine::check_engine(&self.spec.engine, image.manifest.docker_major())
            .context("the machine's engine settings (machine.yaml `engine:`)")?;
        crate::machine::engine::check_ca_support(
            &self.spec.engine,
            &image.manifest.version,
            image.manifest.engine_ca,
        )?;
        // The same networks the TAP got (derived from the index alone).
        let ipv6 = if self.spec.network.ipv6 {
            Some(
                crate::net::ula::MachineIpv6::for_index(self.spec.network.index)
                    .map_err(crate::net::NetError::from)?,
            )
        } else {
            None
        };
        config_drive::write(
            &self.dir.config_drive_path(),
            self.spec,
            &config_drive::DriveInputs {
                authorized_key: &client_pub,
                host_key_private: &host_key,
                host_key_public: &host_pub,
                dns: &net.guest_dns,
                docker_major: image.manifest.docker_major(),
                mounts,
                ipv6,
            },
        )?;
        Ok(())
    }

    fn boot(
        &self,
        hv: &dyn Hypervisor,
        image: &Image,
        tap: Option<OwnedFd>,
        share_nic: Option<hypervisor::GuestNic>,
    ) -> Result<Box<dyn hypervisor::RunningVm>> {
        rotate_serial_log(self.dir);
        self.state.step("booting");
        let vm = hv.boot(BootConfig {
            name: self.spec.name.clone(),
            cpus: self.spec.cpus,
            memory_mib: self.spec.memory_mib,
            kernel: image.kernel(),
            initrd: image.initrd(),
            root_image: image.root_image(),
            data_disk: self.dir.disk_path(),
            config_drive: self.dir.config_drive_path(),
            tap,
            mac: self.spec.network.mac.clone(),
            share_nic,
            serial_log: self.dir.serial_log_path(),
            monitor_socket: self.dir.qmp_socket_path(),
        })?;
        self.state.update(|s| s.vm_pid = vm.pid());
        log(format!("guest process {:?} started", vm.pid()));
        Ok(vm)
    }
}

/// What booting the guest once more takes: the driver, the image, and spare descriptors of
/// the machine's network devices (kept close-on-exec; the boot gets inheritable copies). Used
/// once, when the guest's kernel panics before the machine is ready (see `event_loop`): a boot
/// under QEMU's software emulation (TCG) rarely dies that way in its first second, and a second
/// boot of the same files does not.
pub struct Reboot {
    hv: Box<dyn Hypervisor>,
    image: Image,
    spare: Spare,
    guest: GuestAccess,
}

/// Close-on-exec copies of the descriptors a boot hands to the driver.
struct Spare {
    tap: Option<OwnedFd>,
    share_nic: Option<(OwnedFd, String)>,
}

impl Spare {
    fn keep(tap: &Option<OwnedFd>, share_nic: &Option<hypervisor::GuestNic>) -> Result<Spare> {
        let dup = |fd: &OwnedFd| fd.try_clone().context("keeping a copy of a network device");
        Ok(Spare {
            tap: tap.as_ref().map(dup).transpose()?,
            share_nic: share_nic
                .as_ref()
                .map(|n| Ok::<_, anyhow::Error>((dup(&n.tap)?, n.mac.clone())))
                .transpose()?,
        })
    }

    /// Inheritable copies for one more boot.
    fn for_boot(&self) -> Result<(Option<OwnedFd>, Option<hypervisor::GuestNic>)> {
        let inheritable = |fd: &OwnedFd| -> Result<OwnedFd> {
            let copy = fd.try_clone().context("copying a network device")?;
            nix::fcntl::fcntl(
                &copy,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .context("making a network device's descriptor inheritable")?;
            Ok(copy)
        };
        let tap = self.tap.as_ref().map(inheritable).transpose()?;
        let nic = match &self.share_nic {
            Some((fd, mac)) => Some(hypervisor::GuestNic {
                tap: inheritable(fd)?,
                mac: mac.clone(),
            }),
            None => None,
        };
        Ok((tap, nic))
    }
}

impl Supervisor<'_> {
    /// Boots the guest once more after its kernel panicked before it was ready (the console
    /// of the failed boot is kept as `serial.log.1`), with a readiness watcher of its own
    /// until the same deadline: the earlier boot's may be stuck on a connection to a guest
    /// that is gone, and what it reports later is ignored (`boot_number`).
    pub(super) fn reboot(&self, r: &Reboot, target: Option<&ssh::Target>) -> Result<Guest> {
        let (tap, nic) = r.spare.for_boot()?;
        let boot = self.boot_number.fetch_add(1, Ordering::SeqCst) + 1;
        let mut vm = Guest::new(self.boot(r.hv.as_ref(), &r.image, tap, nic)?);
        match (r.guest, target) {
            (GuestAccess::DriverReport, _) => {
                let report = vm.as_mut().take_ready_report().ok_or_else(|| {
                    anyhow::anyhow!(
                        "the {} driver reports readiness itself, and gave no report",
                        self.spec.driver
                    )
                })?;
                watchers::spawn_ready_from_driver(
                    report,
                    boot,
                    self.deadline,
                    self.state.clone(),
                    self.tx.clone(),
                );
            }
            (GuestAccess::Ssh, Some(target)) => watchers::spawn_ready_over_ssh(
                target.clone(),
                self.boot_number.clone(),
                self.deadline,
                self.state.clone(),
                self.tx.clone(),
            ),
            (GuestAccess::Remote, _) => anyhow::bail!("an adopted host is never booted"),
            (GuestAccess::Ssh, None) => {
                anyhow::bail!("the guest is reached over SSH, and no SSH target is known")
            }
        }
        Ok(vm)
    }
}

/// The previous boot's console log is kept as `serial.log.1` (the driver's `ConsoleLog`
/// rotates the same way when the log fills while the machine runs).
fn rotate_serial_log(dir: &MachineDir) {
    let log_path = dir.serial_log_path();
    if log_path.exists() {
        let _ = std::fs::rename(&log_path, console_log::rotated_path(&log_path));
    }
}
