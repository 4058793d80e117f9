//! `devbox swarm init|join|leave|ls`: Docker swarm mode across the user's machines, driven
//! through each machine's forwarded Docker socket (Docker's own API: init, join tokens, join,
//! leave, node removal). What devbox adds is the network between the members — the swarm
//! ports, opened by the host applier between two machines of one swarm and nothing else — and
//! the record of who is in which swarm (`crate::swarm`).
//!
//! Every call to an engine is bounded ([`API_TIMEOUT_SECS`]); what an engine answers (its
//! error messages) comes from a guest and is escaped before it is shown.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::models::{SwarmInitRequest, SwarmJoinRequest};
use bollard::query_parameters::{DeleteNodeOptions, LeaveSwarmOptions, UpdateNodeOptions};
use serde::Serialize;

use crate::cli::{SwarmCommand, SwarmJoinArgs, SwarmLeaveArgs, SwarmLsArgs};
use crate::host;
use crate::machine::guest_net::guest_address;
use crate::machine::state::observe;
use crate::machine::{Driver, MachineDir, MachineState, Store};
use crate::net::tap_name;
use crate::output;
use crate::output::guest_text::escape;
use crate::swarm::{self, EngineSwarm, Membership, Role, SwarmError};

/// Bound of one engine call, in seconds: a join on an emulated guest takes a few seconds.
const API_TIMEOUT_SECS: u64 = 120;
/// Bound of the wait for a demoted manager to become a worker.
const DEMOTION: std::time::Duration = std::time::Duration::from_secs(60);
/// Swarm mode's management port, where nodes join.
const MANAGEMENT_PORT: u16 = 2377;

pub fn run(store: &Store, c: SwarmCommand) -> Result<i32> {
    match c {
        SwarmCommand::Init(a) => init(store, &a.name),
        SwarmCommand::Join(a) => join(store, &a),
        SwarmCommand::Leave(a) => leave(store, &a),
        SwarmCommand::Ls(a) => ls(store, &a),
    }
}

/// A running local machine, its engine and its addresses.
struct Local {
    name: String,
    dir: MachineDir,
    ip: Ipv4Addr,
    /// Its TAP (`dbxN`) where devbox's firewall table keeps it apart (Linux drivers).
    link: Option<String>,
    docker: Docker,
}

fn local(store: &Store, name: &str) -> Result<Local> {
    let dir = store.existing(name)?;
    let spec = dir.load_spec()?;
    if spec.driver == Driver::Ssh {
        return Err(SwarmError::Adopted {
            name: name.to_owned(),
        }
        .into());
    }
    let observed = observe(&dir)?;
    if observed.state != MachineState::Running {
        return Err(SwarmError::NotRunning {
            name: name.to_owned(),
            state: observed.state.as_str().to_lowercase(),
        }
        .into());
    }
    let ip = guest_address(&spec, &observed)?;
    let link = matches!(spec.driver, Driver::Qemu | Driver::Kvm | Driver::Fake)
        .then(|| tap_name(spec.network.index));
    let docker = connect(&dir)?;
    Ok(Local {
        name: name.to_owned(),
        dir,
        ip,
        link,
        docker,
    })
}

fn connect(dir: &MachineDir) -> Result<Docker> {
    let socket = dir.docker_socket_path();
    Docker::connect_with_unix(
        &socket.to_string_lossy(),
        API_TIMEOUT_SECS,
        bollard::API_DEFAULT_VERSION,
    )
    .with_context(|| format!("connecting to {}", socket.display()))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// An engine's refusal, its message escaped (it comes from the guest).
fn refused(name: &str, action: &'static str) -> impl FnOnce(bollard::errors::Error) -> SwarmError {
    let name = name.to_owned();
    move |e| {
        let message = match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message,
            other => other.to_string(),
        };
        SwarmError::Engine {
            name,
            action,
            message: escape(message.trim().as_bytes()),
        }
    }
}

async fn engine(m: &Local) -> Result<EngineSwarm> {
    let info = m
        .docker
        .info()
        .await
        .map_err(refused(&m.name, "report its state"))?;
    Ok(EngineSwarm::from_info(&info.swarm.unwrap_or_default()))
}

fn init(store: &Store, name: &str) -> Result<i32> {
    let m = local(store, name)?;
    let rt = runtime()?;
    swarm::check_init(name, &rt.block_on(engine(&m))?)?;
    rt.block_on(m.docker.init_swarm(SwarmInitRequest {
        listen_addr: Some(format!("0.0.0.0:{MANAGEMENT_PORT}")),
        advertise_addr: Some(m.ip.to_string()),
        ..SwarmInitRequest::default()
    }))
    .map_err(refused(name, "create a swarm"))?;
    let now = rt.block_on(engine(&m))?;
    let recorded = match (now.cluster.clone(), now.node.clone()) {
        (Some(cluster), Some(node)) => swarm::record(
            &m.dir,
            &Membership {
                cluster,
                role: Role::Manager,
                via: name.to_owned(),
                node,
            },
        )
        .context("recording the membership"),
        _ => Err(anyhow::anyhow!(
            "the engine reports no cluster after creating the swarm"
        )),
    };
    if let Err(e) = recorded {
        // Nothing half-made: the engine leaves the swarm it just made.
        let _ = rt.block_on(
            m.docker
                .leave_swarm(Some(LeaveSwarmOptions { force: true })),
        );
        return Err(e);
    }
    output::info(format!(
        "Machine {name} manages a new swarm, advertised on {}:{MANAGEMENT_PORT}.\n\
         Add machines: devbox swarm join OTHER --manager {name}\n\
         Drive it: devbox use {name}   (or: eval \"$(devbox env {name})\")",
        m.ip
    ));
    Ok(0)
}

fn join(store: &Store, a: &SwarmJoinArgs) -> Result<i32> {
    let (name, manager) = (a.name.as_str(), a.manager.as_str());
    if name == manager {
        return Err(SwarmError::Itself {
            name: name.to_owned(),
        }
        .into());
    }
    // Both named machines exist before either is asked to run.
    store.existing(name)?;
    store.existing(manager)?;
    let me = local(store, name)?;
    let mgr = local(store, manager)?;
    let rt = runtime()?;
    let mgr_engine = rt.block_on(engine(&mgr))?;
    let cluster = swarm::check_join(name, &rt.block_on(engine(&me))?, manager, &mgr_engine)?;
    // A swarm made without devbox (`docker swarm init` in the machine) is recorded now, so
    // its members find each other at their next starts.
    if swarm::membership(&mgr.dir)?.is_none_or(|r| r.cluster != cluster) {
        swarm::record(
            &mgr.dir,
            &Membership {
                cluster: cluster.clone(),
                role: Role::Manager,
                via: manager.to_owned(),
                node: mgr_engine.node.clone().unwrap_or_default(),
            },
        )?;
    }
    // The ports first: the join itself goes through them.
    let members = swarm::members(store, &cluster)?;
    let peers: Vec<&str> = members
        .iter()
        .filter(|p| p.name != name && p.state == MachineState::Running)
        .filter_map(|p| p.link.as_deref())
        .collect();
    let opened = match &me.link {
        Some(link) if !peers.is_empty() => {
            host::apply(
                &swarm::open_plan(format!("swarm join {name}"), link, &peers),
                false,
            )
            .inspect_err(|_| close(name, link))?;
            Some(link.clone())
        }
        _ => None,
    };
    let undo = || {
        if let Some(link) = &opened {
            close(name, link);
        }
    };
    let joined = rt.block_on(async {
        let tokens = mgr
            .docker
            .inspect_swarm()
            .await
            .map_err(refused(manager, "hand out a join token"))?
            .join_tokens
            .unwrap_or_default();
        let token = match a.role {
            Role::Worker => tokens.worker,
            Role::Manager => tokens.manager,
        };
        me.docker
            .join_swarm(SwarmJoinRequest {
                listen_addr: Some(format!("0.0.0.0:{MANAGEMENT_PORT}")),
                advertise_addr: Some(me.ip.to_string()),
                remote_addrs: Some(vec![format!("{}:{MANAGEMENT_PORT}", mgr.ip)]),
                join_token: token,
                ..SwarmJoinRequest::default()
            })
            .await
            .map_err(refused(name, "join the swarm"))?;
        engine(&me).await
    });
    let now = match joined {
        Ok(now) => now,
        Err(e) => {
            undo();
            return Err(e);
        }
    };
    swarm::record(
        &me.dir,
        &Membership {
            cluster,
            role: a.role,
            via: manager.to_owned(),
            node: now.node.unwrap_or_default(),
        },
    )?;
    output::info(format!(
        "Machine {name} joined the swarm of {manager} as a {}; the swarm has {} node(s).\n\
         Drive it: devbox use {manager}",
        a.role.as_str(),
        now.nodes.max(2)
    ));
    Ok(0)
}

/// Closes `link`'s swarm ports; a failure is a warning (the machine's stop closes them too).
fn close(name: &str, link: &str) {
    if let Err(e) = host::apply(
        &swarm::close_plan(format!("swarm leave {name}"), link),
        false,
    ) {
        output::warn(format!("could not close the swarm ports of {link}: {e}"));
    }
}

fn leave(store: &Store, a: &SwarmLeaveArgs) -> Result<i32> {
    let name = a.name.as_str();
    let m = local(store, name)?;
    let rt = runtime()?;
    let now = rt.block_on(engine(&m))?;
    let how = swarm::check_leave(name, &now, a.force)?;
    let record = swarm::membership(&m.dir)?;
    if how.demote {
        rt.block_on(demote(&m, now.node.as_deref().unwrap_or_default()))?;
    }
    rt.block_on(
        m.docker
            .leave_swarm(Some(LeaveSwarmOptions { force: how.force })),
    )
    .map_err(refused(name, "leave the swarm"))?;
    let cluster = record.as_ref().map(|r| r.cluster.clone()).or(now.cluster);
    let node = record.as_ref().map(|r| r.node.clone()).or(now.node);
    if let (Some(cluster), Some(node)) = (cluster, node) {
        drop_node(store, &rt, name, &cluster, &node);
    }
    if let Some(link) = &m.link {
        host::apply(
            &swarm::close_plan(format!("swarm leave {name}"), link),
            false,
        )?;
    }
    swarm::forget(&m.dir)?;
    output::info(format!("Machine {name} left its swarm."));
    Ok(0)
}

/// Demotes manager `m` (node `node`) to a worker through its own engine and waits until it
/// is one, so that it can leave without costing the swarm its quorum.
async fn demote(m: &Local, node: &str) -> Result<()> {
    let action = "demote itself to a worker";
    let current = m
        .docker
        .inspect_node(node)
        .await
        .map_err(refused(&m.name, action))?;
    let mut spec = current.spec.unwrap_or_default();
    spec.role = Some(bollard::models::NodeSpecRoleEnum::WORKER);
    let version = current.version.and_then(|v| v.index).unwrap_or_default();
    m.docker
        .update_node(
            node,
            spec,
            UpdateNodeOptions {
                version: i64::try_from(version).unwrap_or_default(),
            },
        )
        .await
        .map_err(refused(&m.name, action))?;
    let deadline = tokio::time::Instant::now() + DEMOTION;
    while engine(m).await?.manager {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "machine {} is still a manager {} s after its demotion",
                m.name,
                DEMOTION.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Takes node `node` (machine `name`, gone from the swarm) out of the swarm's node list
/// through a running manager among the other members; a warning when none can.
fn drop_node(store: &Store, rt: &tokio::runtime::Runtime, name: &str, cluster: &str, node: &str) {
    let Ok(members) = swarm::members(store, cluster) else {
        return;
    };
    let managers = members.iter().filter(|p| {
        p.name != name && p.membership.role == Role::Manager && p.state == MachineState::Running
    });
    let mut tried = false;
    for p in managers {
        tried = true;
        let Ok(docker) = connect(&p.dir) else {
            continue;
        };
        let removed =
            rt.block_on(docker.delete_node(node, Some(DeleteNodeOptions { force: true })));
        if removed.is_ok() {
            return;
        }
    }
    if tried {
        output::warn(format!(
            "the swarm still lists {name} (node {node}): remove it with `docker node rm {node}` \
             on a manager"
        ));
    }
}

/// `rm` of a machine in a swarm: it leaves (when running) and is taken out of the node list;
/// failures are warnings, the removal goes on.
pub fn forget_member(store: &Store, dir: &MachineDir) {
    let Ok(Some(record)) = swarm::membership(dir) else {
        return;
    };
    let Ok(rt) = runtime() else {
        return;
    };
    if let Ok(m) = local(store, &dir.name) {
        // As `leave --force` does: a manager beside others is demoted first.
        let left = rt.block_on(async {
            let now = engine(&m).await?;
            let how = swarm::check_leave(&m.name, &now, true)?;
            if how.demote {
                demote(&m, now.node.as_deref().unwrap_or_default()).await?;
            }
            m.docker
                .leave_swarm(Some(LeaveSwarmOptions { force: how.force }))
                .await
                .map_err(refused(&m.name, "leave the swarm"))?;
            anyhow::Ok(())
        });
        if let Err(e) = left {
            output::warn(format!(
                "machine {} could not leave its swarm: {e}",
                dir.name
            ));
        }
    }
    drop_node(store, &rt, &dir.name, &record.cluster, &record.node);
    let _ = swarm::forget(dir);
}

/// One row of `swarm ls --json`.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    role: Role,
    /// The machine it joined through.
    via: String,
    cluster: String,
    node: String,
    /// The machine's state, as `devbox ls --json` shows it.
    state: MachineState,
    /// Its engine's swarm state when it runs (`active`, `pending`, …), else null.
    swarm_state: Option<String>,
}

fn ls(store: &Store, a: &SwarmLsArgs) -> Result<i32> {
    let rt = runtime()?;
    let mut rows = Vec::new();
    for name in store.names()? {
        let Ok(dir) = store.existing(&name) else {
            continue;
        };
        let Some(record) = swarm::membership(&dir)? else {
            continue;
        };
        let state = observe(&dir)?.state;
        let swarm_state = (state == MachineState::Running)
            .then(|| connect(&dir).ok())
            .flatten()
            .and_then(|docker| rt.block_on(docker.info()).ok())
            .and_then(|info| info.swarm)
            .map(|s| EngineSwarm::from_info(&s).state);
        rows.push(Row {
            name,
            role: record.role,
            via: record.via,
            cluster: record.cluster,
            node: record.node,
            state,
            swarm_state,
        });
    }
    if a.json {
        output::json::print(&serde_json::json!({ "members": rows }));
        return Ok(0);
    }
    if rows.is_empty() {
        output::info("No machine is in a swarm: `devbox swarm init NAME` makes one.");
        return Ok(0);
    }
    let short = |s: &str| s.chars().take(12).collect::<String>();
    output::table(
        &["NAME", "ROLE", "VIA", "CLUSTER", "STATE", "SWARM"],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.role.as_str().to_owned(),
                    r.via.clone(),
                    short(&r.cluster),
                    r.state.as_str().to_owned(),
                    r.swarm_state.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Ok(0)
}
