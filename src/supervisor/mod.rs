//! The per-machine supervisor: a detached `devbox __supervise NAME` process that owns a running
//! machine and everything attached to it, and tears it all down when the machine ends.
//!
//! It holds `supervisor.lock` for its whole life (a free lock means it is gone), writes
//! `supervisor.pid` and `state.json`, and owns:
//! - for qemu and kvm, the TAP device (its descriptor is shared only with the guest process,
//!   so the interface disappears when both are gone, even after SIGKILL); a vz machine's NIC
//!   is on Virtualization.framework's NAT instead, and its guest reports the address DHCP gave
//!   it (`report`), which then stands wherever the others use the spec's (`netplan` decides
//!   what each driver needs; `machine::guest_net` which address is the guest's);
//! - the hypervisor driver's running machine (a QEMU child that dies with the supervisor, or
//!   the in-process kvm or vz machine);
//! - the docker socket forwarder (`docker.sock` → the guest's `/var/run/docker.sock` over SSH);
//! - the host routes to the machine's Docker subnets (added through the host plan applier,
//!   recorded in `$DEVBOX_HOME/routes.json` for the boot-time job): over the TAP, or for vz
//!   over the vmnet bridge, with vmnet's host filter lifted for the machine's member;
//! - the NFS server exporting the machine's shares, bound to the machine's host-side IP and
//!   answering only the guest, on the `io` tokio runtime;
//! - the DNS server for `<machine>.<tld>`, its containers and their aliases (same address,
//!   port 53; for vz on loopback, a port per machine), fed by a container watcher on the
//!   forwarded docker socket once the machine is ready, and the host resolver settings for
//!   the domains it owns (`resolver`).
//!
//! Threads: the main loop (owns the machine, reacts to events), `control` (the control socket),
//! `ready` (waits for SSH and Docker once per boot), `signals` (SIGTERM/SIGINT/SIGHUP become a
//! graceful stop), `disk` (measures the guest filesystem every 30 s once ready, into
//! `state.json`). They talk to the main loop through one channel of [`Event`]s.

pub mod control;
pub mod netplan;
mod report;
pub mod resolver;
mod sys;

use std::net::Ipv4Addr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};

use crate::host::{self, HostFilter, HostPlan, MachineRoutes, RoutesState, routes_state_path};
use crate::hypervisor::{self, BootConfig, RunningVm};
use crate::machine::config_drive;
use crate::machine::guest_net::{self, Addressing};
use crate::machine::lock::lock_supervisor;
use crate::machine::state::{Phase, StateFile, observe, write_state_file};
use crate::machine::store::write_atomic;
use crate::machine::{MachineDir, MachineSpec, Store};
use crate::net::routes;
use crate::{disk, dns, image, net, ssh};

/// How often the guest filesystem's fill level is measured while the machine runs.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(30);

/// How long a guest gets to power off before it is killed.
const GRACEFUL_STOP: Duration = Duration::from_secs(60);

/// What the main loop reacts to.
pub enum Event {
    Control(control::ControlEvent),
    Ready { docker_version: String },
    NotReady { reason: String },
    Signal(Signal),
}

/// Timestamped line in `supervisor.log` (the supervisor's stderr).
pub(crate) fn log(msg: impl AsRef<str>) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    eprintln!("{now} {}", msg.as_ref());
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The SSH target for a machine, at its current address ([`guest_net::guest_address`]).
pub fn ssh_target(dir: &MachineDir, spec: &MachineSpec) -> Result<ssh::Target> {
    let ip = guest_net::guest_address(spec, &observe(dir)?)?;
    ssh_target_at(dir, ip)
}

/// The SSH target for a machine whose guest is at `ip`.
fn ssh_target_at(dir: &MachineDir, ip: Ipv4Addr) -> Result<ssh::Target> {
    let host_key = fs_err::read_to_string(dir.host_pub_path())?;
    Ok(ssh::Target {
        addr: std::net::SocketAddr::new(ip.into(), 22),
        user: "root".into(),
        identity: dir.client_key_path(),
        host_key: host_key.trim().to_owned(),
    })
}

/// Shared, written-through state.
struct State {
    dir: MachineDir,
    shared: Arc<Mutex<StateFile>>,
}

impl State {
    fn update(&self, f: impl FnOnce(&mut StateFile)) {
        let snapshot = {
            let mut st = self.shared.lock().expect("state lock");
            f(&mut st);
            st.clone()
        };
        if let Err(e) = write_state_file(&self.dir, &snapshot) {
            log(format!("writing state: {e}"));
        }
    }
}

/// Runs the supervisor for machine `name` until the machine ends.
pub fn run(store: &Store, name: &str, ready_timeout: Duration) -> Result<()> {
    // Block the stop signals in every thread; the `signals` thread receives them with sigwait.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block().context("blocking signals")?;

    let dir = store.existing(name)?;
    let _lock = lock_supervisor(&dir)?;
    let spec = dir.load_spec()?;
    log(format!(
        "supervisor {} for machine {name}",
        std::process::id()
    ));
    write_atomic(
        &dir.pid_path(),
        format!("{}\n", std::process::id()).as_bytes(),
        0o644,
    )?;

    let state = State {
        dir: dir.clone(),
        shared: Arc::new(Mutex::new(StateFile {
            phase: Phase::Starting,
            step: "preparing".into(),
            supervisor_pid: std::process::id(),
            vm_pid: None,
            accel: None,
            accel_reason: None,
            started: now(),
            ready: None,
            error: None,
            disk: None,
            guest_ip: None,
            hint: None,
        })),
    };
    state.update(|_| {});

    let (tx, rx) = channel();
    let outcome = supervise(store, &dir, &spec, &state, ready_timeout, sigs, tx, rx);
    forget_routes(store, &spec);

    for path in [
        dir.docker_socket_path(),
        dir.control_socket_path(),
        dir.qmp_socket_path(),
        dir.pid_path(),
    ] {
        let _ = std::fs::remove_file(path);
    }
    match &outcome {
        Ok(why) => {
            log(format!("machine stopped: {why}"));
            state.update(|s| {
                s.phase = Phase::Stopped;
                s.step = "stopped".into();
                s.vm_pid = None;
                s.error = Some(why.clone());
            });
        }
        Err(e) => {
            log(format!("machine failed: {e:#}"));
            let hint = crate::commands::hint(e);
            if let Some(h) = &hint {
                log(format!("hint: {h}"));
            }
            state.update(|s| {
                s.phase = Phase::Failed;
                s.step = "failed".into();
                s.vm_pid = None;
                s.error = Some(format!("{e:#}"));
                s.hint = hint;
            });
        }
    }
    outcome.map(|_| ())
}

/// Boots the machine and runs the event loop; returns why the machine ended.
#[allow(clippy::too_many_arguments)]
fn supervise(
    store: &Store,
    dir: &MachineDir,
    spec: &MachineSpec,
    state: &State,
    ready_timeout: Duration,
    sigs: SigSet,
    tx: Sender<Event>,
    rx: Receiver<Event>,
) -> Result<String> {
    let deadline = Instant::now() + ready_timeout;
    let image = image::find(&store.cache, Some(&spec.image))?;
    let hv = hypervisor::for_driver(spec.driver)?;
    hv.preflight()?;
    state.update(|s| {
        s.accel = Some(hv.accel().name.to_owned());
        s.accel_reason = Some(hv.accel().reason.clone());
    });
    log(format!(
        "driver {}, acceleration {} ({})",
        hv.driver(),
        hv.accel().name,
        hv.accel().reason
    ));

    let host_net = netplan::host_net(spec);
    let mut tap_device = None;
    if let Some(tap_setup) = &host_net.tap {
        // The host-only /24 must still be free: a VPN may have claimed it since `create`.
        let routes = net::host_routes()?;
        let hostonly = net::HostOnlyNet::from_index(spec.network.index)?;
        net::check_conflicts(&hostonly, &routes)?;

        state.update(|s| s.step = "creating the network device".into());
        let tap = net::Tap::create(&tap_setup.name, true)?;
        tap.configure(tap_setup.host_ip, tap_setup.prefix)?;
        log(format!(
            "{} up with {}/{}",
            tap.name(),
            tap_setup.host_ip,
            tap_setup.prefix
        ));

        state.update(|s| s.step = "routing the Docker subnets".into());
        add_routes(store, spec, spec.network.guest_ip, tap.name(), Vec::new())?;
        tap_device = Some(tap);
    }

    // Host services run on one small tokio runtime; the machine's own threads stay plain.
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("io")
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let _io_guard = io.enter();

    state.update(|s| s.step = "exporting shares".into());
    // Held until the machine ends.
    let (_nfs_server, mounts) = sys::start_nfs(&io, spec)?;

    // A static guest's address is known now, and the guest resolves through this server;
    // a DHCP guest's comes with its report, after boot.
    let mut dns_server = None;
    if host_net.tap.is_some() {
        state.update(|s| s.step = "starting the DNS server".into());
        dns_server = Some(start_dns(
            &io,
            store,
            spec,
            host_net.dns_bind,
            spec.network.guest_ip,
        )?);
    }

    state.update(|s| s.step = "writing the config drive".into());
    let client_pub = fs_err::read_to_string(dir.client_pub_path())?;
    let host_key = fs_err::read_to_string(dir.host_key_path())?;
    let host_pub = fs_err::read_to_string(dir.host_pub_path())?;
    config_drive::write(
        &dir.config_drive_path(),
        spec,
        &config_drive::DriveInputs {
            authorized_key: &client_pub,
            host_key_private: &host_key,
            host_key_public: &host_pub,
            dns: &host_net.guest_dns,
            docker_major: image.manifest.docker_major(),
            mounts: &mounts,
        },
    )?;

    // vmnet adds the machine's member to its bridge at boot: what was there before is not ours.
    let bridges_before = match host_net.tap {
        None => sys::vmnet_bridges()?,
        Some(_) => Default::default(),
    };
    rotate_serial_log(dir);
    state.update(|s| s.step = "booting".into());
    let mut vm = hv.boot(BootConfig {
        name: spec.name.clone(),
        cpus: spec.cpus,
        memory_mib: spec.memory_mib,
        kernel: image.kernel(),
        initrd: image.initrd(),
        data_disk: dir.disk_path(),
        config_drive: dir.config_drive_path(),
        tap: tap_device.map(|t| t.into_inheritable_fd()).transpose()?,
        mac: spec.network.mac.clone(),
        serial_log: dir.serial_log_path(),
        monitor_socket: dir.qmp_socket_path(),
    })?;
    state.update(|s| s.vm_pid = vm.pid());
    log(format!("guest process {:?} started", vm.pid()));

    control::serve(&dir.control_socket_path(), tx.clone(), state.shared.clone())?;
    spawn_signal_thread(sigs, tx.clone());

    let guest_ip = match Addressing::of(spec.driver) {
        Addressing::Static => spec.network.guest_ip,
        Addressing::Dhcp => {
            state.update(|s| s.step = "waiting for the guest's address".into());
            let ip = match report::await_guest_address(vm.as_mut(), &rx, deadline)? {
                report::Awaited::Address(ip) => ip,
                report::Awaited::Stopped(why) => return Ok(why),
            };
            log(format!("the guest reported its address {ip}"));
            state.update(|s| s.guest_ip = Some(ip));
            let link = netplan::nat_link(&spec.name, ip, &bridges_before, &sys::vmnet_bridges()?)?;
            if link.members.len() > 1 {
                log(format!(
                    "{} members joined {} during boot ({}); lifting the host filter of each",
                    link.members.len(),
                    link.bridge,
                    link.members.join(", ")
                ));
            }
            state.update(|s| s.step = "routing the Docker subnets".into());
            // A supervisor killed before it could clean up left routes via the previous
            // boot's address, which the new ones would collide with.
            forget_routes(store, spec);
            let filters = link
                .members
                .iter()
                .map(|m| HostFilter {
                    bridge: link.bridge.clone(),
                    member: m.clone(),
                })
                .collect();
            add_routes(store, spec, ip, &link.bridge, filters)?;
            ip
        }
    };
    let dns_server = match dns_server {
        Some(d) => d,
        None => {
            state.update(|s| s.step = "starting the DNS server".into());
            start_dns(&io, store, spec, host_net.dns_bind, guest_ip)?
        }
    };
    let mut resolver = resolver::ResolverSync::new(dir, spec, dns_server.local_addr());

    let target = ssh_target_at(dir, guest_ip)?;
    spawn_ready_thread(
        target.clone(),
        deadline,
        state.shared.clone(),
        dir.clone(),
        tx,
    );

    let mut forwarder: Option<ssh::Forwarder> = None;
    let mut stopping: Option<Instant> = None;
    loop {
        if let Some(exit) = vm.try_wait()? {
            drop(forwarder.take());
            return if state.shared.lock().expect("state").phase == Phase::Starting
                && stopping.is_none()
            {
                Err(anyhow::anyhow!(
                    "the guest ended before it was ready: {}",
                    exit.description
                ))
            } else {
                Ok(exit.description)
            };
        }
        if let Some(since) = stopping
            && since.elapsed() > GRACEFUL_STOP
        {
            log("the guest did not power off in time; killing it");
            vm.kill()?;
            continue;
        }
        resolver.sync(
            &dns_server.records().zone().routed_domains(),
            dns_server.records().refused(),
        );
        match rx.recv_timeout(Duration::from_millis(200)) {
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {}
            Ok(Event::Ready { docker_version }) => {
                if stopping.is_some() {
                    continue;
                }
                match ssh::forward_unix_socket(
                    &target,
                    &dir.docker_socket_path(),
                    "/var/run/docker.sock",
                ) {
                    Ok(f) => forwarder = Some(f),
                    Err(e) => {
                        vm.kill()?;
                        return Err(anyhow::Error::new(e).context("forwarding the docker socket"));
                    }
                }
                io.spawn(dns::watch_containers(
                    dir.docker_socket_path(),
                    dns_server.records(),
                ));
                log(format!("ready: Docker {docker_version} answers"));
                state.update(|s| {
                    s.phase = Phase::Running;
                    s.step = "running".into();
                    s.ready = Some(now());
                });
                spawn_disk_watch(target.clone(), state.shared.clone(), dir.clone());
            }
            Ok(Event::NotReady { reason }) => {
                if stopping.is_none() {
                    vm.kill()?;
                    return Err(anyhow::anyhow!(
                        "the machine did not become ready: {reason}"
                    ));
                }
            }
            Ok(Event::Control(control::ControlEvent::Stop { force })) => {
                if force {
                    log("stop requested (force): killing the guest");
                    drop(forwarder.take());
                    vm.kill()?;
                    stopping.get_or_insert_with(Instant::now);
                } else if stopping.is_none() {
                    begin_graceful_stop(state, &target, vm.as_mut(), &mut forwarder);
                    stopping = Some(Instant::now());
                }
            }
            Ok(Event::Signal(sig)) => {
                if stopping.is_none() {
                    log(format!("{sig} received"));
                    begin_graceful_stop(state, &target, vm.as_mut(), &mut forwarder);
                    stopping = Some(Instant::now());
                }
            }
        }
    }
}

/// Asks the guest to power off: through SSH when it answers (the guest stops dockerd and
/// unmounts its disk first), else through the driver's power button.
fn begin_graceful_stop(
    state: &State,
    target: &ssh::Target,
    vm: &mut dyn RunningVm,
    forwarder: &mut Option<ssh::Forwarder>,
) {
    log("stopping: asking the guest to power off");
    state.update(|s| {
        s.phase = Phase::Stopping;
        s.step = "stopping".into();
    });
    drop(forwarder.take());
    let via_ssh = ssh::Connection::connect(target, Duration::from_secs(5))
        .and_then(|c| c.exec_capture("poweroff"));
    if let Err(e) = via_ssh {
        log(format!(
            "poweroff over SSH failed ({e}); pressing the power button"
        ));
        if let Err(e) = vm.request_stop() {
            log(format!("power button failed: {e}"));
        }
    }
}

/// The previous boot's console log is kept as `serial.log.1`.
fn rotate_serial_log(dir: &MachineDir) {
    let log_path = dir.serial_log_path();
    if log_path.exists() {
        let _ = std::fs::rename(&log_path, log_path.with_extension("log.1"));
    }
}

fn spawn_signal_thread(sigs: SigSet, tx: Sender<Event>) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(sig) = sigs.wait() {
                if tx.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        })
        .expect("spawning the signal thread");
}

/// Waits for SSH, then for Docker, and reports once.
fn spawn_ready_thread(
    target: ssh::Target,
    deadline: Instant,
    shared: Arc<Mutex<StateFile>>,
    dir: MachineDir,
    tx: Sender<Event>,
) {
    let step = move |s: &str| {
        let snapshot = {
            let mut st = shared.lock().expect("state lock");
            st.step = s.to_owned();
            st.clone()
        };
        let _ = write_state_file(&dir, &snapshot);
    };
    std::thread::Builder::new()
        .name("ready".into())
        .spawn(move || {
            step("waiting for SSH");
            let event = match wait_ready(&target, deadline, &step) {
                Ok(docker_version) => Event::Ready { docker_version },
                Err(reason) => Event::NotReady { reason },
            };
            let _ = tx.send(event);
        })
        .expect("spawning the readiness thread");
}

fn wait_ready(
    target: &ssh::Target,
    deadline: Instant,
    step: &dyn Fn(&str),
) -> Result<String, String> {
    let conn = ssh::wait_until_reachable(target, deadline).map_err(|e| format!("SSH: {e}"))?;
    step("waiting for Docker");
    let mut last = String::new();
    while Instant::now() < deadline {
        // The guest writes Docker's version to /run/devbox/ready once Docker answers and its
        // firewall rule for routed container access is in place (assets/guest/README.md);
        // reading it costs no docker command, which is slow to start in a guest.
        match conn.exec_capture("cat /run/devbox/ready") {
            Ok(out) if out.status == 0 => {
                return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            }
            Ok(out) => last = String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => return Err(format!("SSH: {e}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "Docker did not answer in time (last error: {last})"
    ))
}

/// Measures the guest filesystem right away and then every [`DISK_CHECK_EVERY`] while the
/// machine runs, records it in `state.json` (so `status` and `ls` read it without reaching the
/// guest), and logs when it crosses [`disk::WARN_PCT`] either way. Also says once whether the
/// host filesystem can take back what the guest frees.
fn spawn_disk_watch(target: ssh::Target, shared: Arc<Mutex<StateFile>>, dir: MachineDir) {
    std::thread::Builder::new()
        .name("disk".into())
        .spawn(move || {
            log(disk::probe_reclaim(&dir.path).describe());
            let mut conn: Option<ssh::Connection> = None;
            let mut last_pct: Option<u8> = None;
            while shared.lock().expect("state lock").phase == Phase::Running {
                if conn.is_none() {
                    conn = ssh::Connection::connect(&target, Duration::from_secs(5)).ok();
                }
                match conn.as_ref().map(disk::measure_guest) {
                    Some(Ok(sample)) => {
                        // Logged when crossing the threshold, and at each change above it.
                        let was_full = last_pct.is_some_and(|p| p >= disk::WARN_PCT);
                        let full = sample.is_nearly_full();
                        if full != was_full || (full && last_pct != Some(sample.used_pct)) {
                            match disk::fullness_warning(&dir.name, &sample) {
                                Some(w) => log(format!("warning: {w}")),
                                None => log(format!(
                                    "disk: the guest filesystem is back to {}% full",
                                    sample.used_pct
                                )),
                            }
                        }
                        last_pct = Some(sample.used_pct);
                        let snapshot = {
                            let mut st = shared.lock().expect("state lock");
                            st.disk = Some(sample);
                            st.clone()
                        };
                        let _ = write_state_file(&dir, &snapshot);
                    }
                    Some(Err(e)) => {
                        log(format!("disk: {e:#}"));
                        conn = None;
                    }
                    None => {}
                }
                std::thread::sleep(DISK_CHECK_EVERY);
            }
        })
        .expect("spawning the disk thread");
}

/// Routes the machine's Docker subnets via its guest IP on `link` (its TAP, or the vmnet
/// bridge of a vz machine, whose host filter is lifted with `hostfilters`), and records them
/// for the boot-time job (`devbox routes install`).
fn add_routes(
    store: &Store,
    spec: &MachineSpec,
    guest_ip: Ipv4Addr,
    link: &str,
    hostfilters: Vec<HostFilter>,
) -> Result<()> {
    let table = net::host_routes()?;
    let plan = HostPlan {
        command: format!("start {}", spec.name),
        routes: routes::route_plan_for(&spec.name, &spec.docker, guest_ip, link, &table)?,
        hostfilters,
        ..HostPlan::default()
    };
    host::apply(&plan, false)?;
    let path = routes_state_path(&store.home);
    let mut st = RoutesState::load(&path)?;
    st.machines.insert(
        spec.name.clone(),
        MachineRoutes {
            guest_ip,
            interface: link.to_owned(),
            docker: spec.docker,
        },
    );
    st.save(&path)?;
    log(format!(
        "routes: {} via {guest_ip} on {link}",
        spec.docker.routed().map(|n| n.to_string()).join(", "),
    ));
    Ok(())
}

/// Takes the machine's routes away (the kernel already dropped them with the TAP device;
/// this also covers a TAP that outlived us) and removes it from the routes state. A vz
/// machine's routes are those recorded at start (its address and bridge), if it got that far.
fn forget_routes(store: &Store, spec: &MachineSpec) {
    let path = routes_state_path(&store.home);
    let (guest_ip, link) = match Addressing::of(spec.driver) {
        Addressing::Static => (spec.network.guest_ip, net::tap_name(spec.network.index)),
        Addressing::Dhcp => match RoutesState::load(&path)
            .ok()
            .and_then(|st| st.machines.get(&spec.name).cloned())
        {
            Some(m) => (m.guest_ip, m.interface),
            None => return,
        },
    };
    match routes::removal_plan_for(&spec.name, &spec.docker, guest_ip, &link) {
        Ok(r) => {
            let plan = HostPlan {
                command: format!("stop {}", spec.name),
                routes: r,
                ..HostPlan::default()
            };
            if let Err(e) = host::apply(&plan, false) {
                log(format!("removing routes: {e}"));
            }
        }
        Err(e) => log(format!("removing routes: {e}")),
    }
    match RoutesState::load(&path) {
        Ok(mut st) => {
            if st.machines.remove(&spec.name).is_some()
                && let Err(e) = st.save(&path)
            {
                log(format!("updating {}: {e}", path.display()));
            }
        }
        Err(e) => log(format!("reading {}: {e}", path.display())),
    }
}

/// Starts the machine's DNS server on `bind` ([`netplan::HostNet::dns_bind`]), answering
/// `<machine>.<tld>` with `guest_ip`.
///
/// Upstreams: `DEVBOX_DNS_UPSTREAMS` (comma-separated `ip:port`), else the host's resolvers.
fn start_dns(
    io: &tokio::runtime::Runtime,
    store: &Store,
    spec: &MachineSpec,
    bind: std::net::SocketAddr,
    guest_ip: Ipv4Addr,
) -> Result<dns::DnsServer> {
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
    let subnets: Vec<ipnet::IpNet> = spec.docker.routed().map(Into::into).to_vec();
    let server = io.block_on(dns::DnsServer::start(dns::DnsConfig {
        machine: spec.name.clone(),
        tld: spec.tld.clone(),
        guest_ip: guest_ip.into(),
        bind,
        upstreams: upstreams.clone(),
        clients: dns::machine_clients(bind.ip(), guest_ip.into(), &subnets),
        policy: Box::new(dns::StoreNeighbours::new(store.clone(), &spec.name)),
    }))?;
    log(format!(
        "DNS on {} for {}.{} (upstreams: {})",
        server.local_addr(),
        spec.name,
        spec.tld,
        upstreams
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(server)
}
