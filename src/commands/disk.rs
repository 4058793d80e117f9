//! `devbox disk usage NAME [--json]` and `devbox disk resize NAME SIZE`.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{DiskCommand, DiskResizeArgs, StatusArgs};
use crate::disk::{self, DiskError, DockerDfRow, GuestDiskSample, HostFile, Reclaim, ResizePlan};
use crate::machine::lock::lock_machine;
use crate::machine::spec::{format_size, parse_size};
use crate::machine::state::observe;
use crate::machine::{MachineState, Store};
use crate::supervisor::client;
use crate::{output, ssh};

pub fn run(store: &Store, c: DiskCommand) -> Result<i32> {
    match c {
        DiskCommand::Usage(a) => usage(store, &a),
        DiskCommand::Resize(a) => resize(store, &a),
    }
}

#[derive(Serialize)]
struct Usage {
    name: String,
    state: MachineState,
    /// Measured now when the machine runs; else the supervisor's last measurement.
    guest: Option<GuestDiskSample>,
    guest_measured_now: bool,
    docker: Option<Vec<DockerDfRow>>,
    host: HostFile,
    #[serde(flatten)]
    reclaim: Reclaim,
}

fn usage(store: &Store, a: &StatusArgs) -> Result<i32> {
    let dir = store.existing(&a.name)?;
    let spec = dir.load_spec()?;
    spec.require_booted("disk")?;
    let obs = observe(&dir)?;
    let host = HostFile::of(&dir.disk_path())?;
    let reclaim = disk::probe_reclaim(&dir.path);
    let (guest, docker, now) = if obs.state == MachineState::Running {
        let target = client::ssh_target(&dir, &spec)?;
        let conn = ssh::Connection::connect(&target, Duration::from_secs(10))?;
        let guest = disk::measure_guest(&conn)?;
        // Docker may be the thing in trouble; the filesystem figures stand on their own.
        let docker = match disk::docker_df(&conn) {
            Ok(rows) => Some(rows),
            Err(e) => {
                output::warn(format!("docker system df: {e}"));
                None
            }
        };
        (Some(guest), docker, true)
    } else {
        (obs.file.as_ref().and_then(|f| f.disk.clone()), None, false)
    };
    let u = Usage {
        name: a.name.clone(),
        state: obs.state,
        guest,
        guest_measured_now: now,
        docker,
        host,
        reclaim,
    };
    if a.json {
        output::json::print(&u);
    } else {
        output::data(render(&u));
    }
    if let Some(w) = u
        .guest
        .as_ref()
        .and_then(|g| disk::fullness_warning(&a.name, g))
    {
        output::warn(w);
    }
    Ok(0)
}

fn render(u: &Usage) -> String {
    let mut out = String::new();
    match &u.guest {
        Some(g) => {
            out += &format!(
                "guest filesystem ({}): {} used, {} free, {} in all ({}% full){}\n",
                disk::GUEST_PATH,
                format_size(g.used_bytes),
                format_size(g.avail_bytes),
                format_size(g.size_bytes),
                g.used_pct,
                if u.guest_measured_now {
                    String::new()
                } else {
                    format!(
                        "; machine {}, last measured {}",
                        u.state.as_str().to_lowercase(),
                        g.measured
                    )
                }
            );
            out += if g.reserve_held {
                "guest reserve: held (released by the guest when the disk fills up, so dockerd can still write)\n"
            } else {
                "guest reserve: released (the disk filled up; the guest takes it back at boot once there is room)\n"
            };
        }
        None => {
            out += &format!(
                "guest filesystem ({}): not measured (machine {})\n",
                disk::GUEST_PATH,
                u.state.as_str().to_lowercase()
            )
        }
    }
    if let Some(rows) = &u.docker {
        let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(3);
        let _ = std::io::Write::write_all(&mut tw, b"docker:\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE\n");
        for r in rows {
            let line = format!(
                "  {}\t{}\t{}\t{}\t{}\n",
                r.kind, r.total, r.active, r.size, r.reclaimable
            );
            let _ = std::io::Write::write_all(&mut tw, line.as_bytes());
        }
        out += &String::from_utf8_lossy(&tw.into_inner().unwrap_or_default());
    }
    out += &format!(
        "host file {}: {} apparent, {} allocated\n",
        u.host.path.display(),
        format_size(u.host.apparent_bytes),
        format_size(u.host.allocated_bytes)
    );
    out += &u.reclaim.describe();
    out
}

fn resize(store: &Store, a: &DiskResizeArgs) -> Result<i32> {
    let requested = parse_size(&a.size)?;
    let dir = store.existing(&a.name)?;
    let _lock = lock_machine(&dir)?;
    let obs = observe(&dir)?;
    if obs.state.is_live() {
        return Err(DiskError::Live {
            name: a.name.clone(),
            state: obs.state.as_str().to_lowercase(),
        }
        .into());
    }
    let mut spec = dir.load_spec()?;
    spec.require_booted("disk resize")?;
    let path = dir.disk_path();
    let file_len = fs_err::metadata(&path)?.len();
    match disk::plan_resize(&a.name, spec.disk_bytes.max(file_len), requested)? {
        ResizePlan::Unchanged => {
            output::info(format!(
                "The disk of machine {} is already {}.",
                a.name,
                format_size(requested)
            ));
        }
        ResizePlan::Grow { from, to } => {
            disk::grow_file(&path, to)?;
            spec.disk_bytes = to;
            dir.save_spec(&spec)
                .with_context(|| format!("recording the new disk size of {}", a.name))?;
            output::info(format!(
                "Grew the disk of machine {} from {} to {}; the guest grows its filesystem at the next start (devbox start {}).",
                a.name,
                format_size(from),
                format_size(to),
                a.name
            ));
        }
    }
    Ok(0)
}
