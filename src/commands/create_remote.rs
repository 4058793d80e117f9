//! `devbox create NAME --driver ssh --ssh-host HOST`: adopts an existing Debian or Ubuntu host
//! (issue #21). Its host key is read and pinned (the one whose fingerprint `--ssh-host-key`
//! names, else the strongest, shown), the user's key must be accepted, Docker is installed
//! from the host's distribution or started when it is not running, and a user who is not root
//! joins the docker group (`remote::plan`). The machine then holds a lease (network index and
//! Docker subnets, like any machine), its spec and the pinned key, all written in a staging
//! directory renamed into place only when complete; what ran on the host is said as it runs.

use crate::output::guest_text::escape;
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::CreateArgs;
use crate::machine::spec::{self, RemoteSpec};
use crate::machine::{Driver, MachineSpec, Store};
use crate::net::lease::Registry;
use crate::remote::{self, AdoptError};
use crate::{output, ssh};

/// Bounds each connection attempt and the handshake.
const CONNECT: Duration = Duration::from_secs(10);
/// Bounds the facts command.
const FACTS: Duration = Duration::from_secs(30);
/// Bounds each step of the plan (an installation downloads packages).
const STEP: Duration = Duration::from_secs(600);
/// Bounds each settings command and the engine's restart.
const RESTART: Duration = Duration::from_secs(120);

pub fn run(store: &Store, a: CreateArgs) -> Result<i32> {
    refuse_machine_flags(&a)?;
    let host = a.ssh_host.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "--driver ssh adopts an existing host: name it with --ssh-host HOST (and \
             --ssh-user, --ssh-port, --ssh-key as needed)"
        )
    })?;
    spec::validate_remote_host(&host)?;
    spec::validate_remote_user(&a.ssh_user)?;
    spec::validate_tld(&a.tld)?;
    let expected = a
        .ssh_host_key
        .as_deref()
        .map(remote::parse_fingerprint)
        .transpose()?;
    let identity = identity(a.ssh_key.as_deref())?;
    let bip = a
        .docker_subnet
        .as_deref()
        .map(spec::parse_docker_bip)
        .transpose()?;
    let registry = Registry::system();
    registry.ensure()?;
    if store.machine(&a.name)?.spec_path().exists() {
        return Err(crate::machine::store::StoreError::Exists { name: a.name }.into());
    }

    let v4 = resolve(&host, a.ssh_port)?;
    let addr = SocketAddr::V4(v4);
    output::info(format!("Connecting to {host} ({addr})"));
    let unreachable = |source| {
        anyhow::Error::new(AdoptError::Unreachable {
            host: host.clone(),
            addr: addr.to_string(),
            source: Box::new(source),
        })
    };
    let keys = ssh::scan_host_keys(addr, CONNECT).map_err(|e| match e {
        e @ (ssh::SshError::Connect { .. } | ssh::SshError::Handshake { .. }) => unreachable(e),
        other => other.into(),
    })?;
    let pinned = remote::choose_host_key(&host, &keys, expected.as_deref())?;
    let fingerprint = ssh::fingerprint(&pinned)?;
    let target = ssh::Target {
        addr,
        user: a.ssh_user.clone(),
        identity: identity.clone(),
        host_key: pinned.clone(),
    };
    let conn = ssh::Connection::connect(&target, CONNECT).map_err(|e| match e {
        ssh::SshError::Auth { .. } => anyhow::Error::new(AdoptError::KeyRefused {
            host: host.clone(),
            user: a.ssh_user.clone(),
            identity: identity.display().to_string(),
        }),
        e @ (ssh::SshError::Connect { .. } | ssh::SshError::Handshake { .. }) => unreachable(e),
        other => other.into(),
    })?;
    output::info(match &expected {
        Some(_) => format!("Host key {fingerprint}, as expected (--ssh-host-key)"),
        None => format!(
            "Host key {fingerprint}, pinned on first use: compare it with `ssh-keygen -lf` of \
             the host's key on the host itself (or pass --ssh-host-key next time)"
        ),
    });

    let facts = remote::gather(&conn, FACTS).context("learning what the host runs")?;
    let plan = remote::plan(&facts, &host, &a.ssh_user)?;
    for step in &plan.steps {
        output::info(format!("On {host}: {step}"));
    }
    remote::run(&conn, &plan, STEP)?;
    drop(conn);
    // Checked again on a new session: a user who just joined the docker group has it only
    // in sessions opened afterwards, and the socket forward is such a session.
    let version = engine_version(&target).with_context(|| {
        format!(
            "the Docker engine of {host} does not answer {} after its set-up",
            a.ssh_user
        )
    })?;

    let alloc = super::create::allocate(store, &registry, &a.name, bip, false)?;
    // devbox's settings: the machine's Docker subnets (routed from this host, allocated
    // host-wide like any machine's) and its label, merged into the host's daemon.json.
    let conn = ssh::Connection::connect(&target, CONNECT)?;
    let settings = remote::settings::HostSettings {
        conn: &conn,
        facts: &facts,
        host: &host,
        etc_docker: remote::settings::ETC_DOCKER,
        timeout: RESTART,
    };
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(20);
    let mut ours = match alloc.docker.daemon_json_fragment(major) {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("the fragment is an object"),
    };
    ours.insert(
        "labels".to_owned(),
        serde_json::json!([format!("devbox.machine={}", a.name)]),
    );
    let wrote_settings = facts.systemd;
    if wrote_settings {
        output::info(format!(
            "On {host}: devbox's settings into {}/daemon.json (bridge {}, networks from {}; \
             the host's own kept), then systemctl restart docker.service",
            remote::settings::ETC_DOCKER,
            alloc.docker.bridge,
            alloc.docker.pool
        ));
        settings.apply(&ours)?;
    }
    let staging = store.stage(&a.name)?;
    let dir = staging.dir();
    crate::atomic_file::write_atomic(
        &dir.host_pub_path(),
        format!("{pinned}\n").as_bytes(),
        0o644,
    )?;
    let spec = MachineSpec {
        name: a.name.clone(),
        driver: Driver::Ssh,
        cpus: 0,
        memory_mib: 0,
        disk_bytes: 0,
        image: String::new(),
        network: alloc.network.clone(),
        docker: alloc.docker,
        shares: Vec::new(),
        tld: a.tld.clone(),
        engine: Default::default(),
        dns_domains: Vec::new(),
        remote: Some(RemoteSpec {
            host: host.clone(),
            address: *v4.ip(),
            port: a.ssh_port,
            user: a.ssh_user.clone(),
            identity,
        }),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    dir.save_spec(&spec)?;
    let committed = staging.commit()?;
    alloc.keep();

    output::info(format!(
        "Created machine {} (ssh: the host {host} as {}, Docker {version})",
        spec.name, a.ssh_user
    ));
    output::info(
        "No shares: devbox's file sharing serves machines on this host only, not a remote host",
    );
    if !wrote_settings {
        output::info(format!(
            "Engine settings left as they are: {host} does not run systemd, so devbox cannot \
             restart its engine (it keeps its own subnets)"
        ));
    }
    super::use_context::refresh(&committed);
    output::info(format!(
        "Docker context: {} (`devbox use {}` makes it the docker CLI's current one)",
        crate::docker_context::context_name(&spec.name),
        spec.name
    ));
    output::info(format!(
        "Start it with: devbox start {} (it connects; the host keeps running at stop)",
        spec.name
    ));
    Ok(0)
}

/// Flags of a machine devbox boots, meaningless for an adopted host: refused rather than
/// silently ignored. (`--cpus`, `--memory` and `--disk-size` have defaults and cannot be told
/// from absent; they are ignored.)
fn refuse_machine_flags(a: &CreateArgs) -> Result<()> {
    let mut given = Vec::new();
    if !a.shares.is_empty() {
        given.push("--share");
    }
    if a.ipv6 {
        given.push("--ipv6");
    }
    if a.image.is_some() {
        given.push("--image");
    }
    if !a.dns_domains.is_empty() {
        given.push("--dns-domain");
    }
    let e = &a.engine;
    if !(e.labels.is_empty()
        && e.opts.is_empty()
        && e.insecure_registries.is_empty()
        && e.registry_mirrors.is_empty()
        && e.env.is_empty()
        && e.storage_driver.is_none()
        && e.ca_files.is_empty())
    {
        given.push("--engine-*");
    }
    if given.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} cannot be used with --driver ssh: an adopted host keeps its own files, image and \
         engine settings; leave {} out",
        given.join(", "),
        if given.len() == 1 { "it" } else { "them" }
    )
}

/// `--ssh-key`, or the user's `~/.ssh/id_ed25519`; it must exist.
fn identity(given: Option<&std::path::Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => std::path::absolute(p)?,
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set: pass --ssh-key")?;
            PathBuf::from(home).join(".ssh/id_ed25519")
        }
    };
    if !path.is_file() {
        return Err(AdoptError::NoKey {
            path: path.display().to_string(),
        }
        .into());
    }
    Ok(path)
}

/// The host's first IPv4 address.
fn resolve(host: &str, port: u16) -> Result<SocketAddrV4> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve --ssh-host {host:?}"))?
        .collect();
    let v4 = addrs.iter().find_map(|a| match a {
        SocketAddr::V4(v4) => Some(*v4),
        SocketAddr::V6(_) => None,
    });
    v4.ok_or_else(|| {
        anyhow::anyhow!(
            "--ssh-host {host:?} has no IPv4 address ({}): devbox reaches adopted hosts over \
             IPv4",
            addrs
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// The engine's version as the adopted user sees it, on a session of its own.
fn engine_version(target: &ssh::Target) -> Result<String> {
    let conn = ssh::Connection::connect(target, CONNECT)?;
    let out = conn.exec_capture_until(
        "docker version --format '{{.Server.Version}}'",
        std::time::Instant::now() + FACTS,
    )?;
    let version = escape(&out.stdout).trim().to_owned();
    anyhow::ensure!(
        out.status == 0 && !version.is_empty(),
        "{}",
        escape(&out.stderr).trim()
    );
    Ok(version)
}
