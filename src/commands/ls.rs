//! `devbox ls`: one row per machine, like `docker-machine ls`.

use anyhow::Result;
use serde::Serialize;

use crate::cli::LsArgs;
use crate::disk;
use crate::machine::Store;
use crate::machine::guest_net::guest_address;
use crate::machine::spec::format_size;
use crate::machine::state::observe;
use crate::output;

#[derive(Serialize)]
struct Row {
    name: String,
    state: String,
    driver: String,
    ip: String,
    cpus: u32,
    memory_mib: u64,
    disk_bytes: u64,
    /// The guest filesystem's fill level at the supervisor's last measurement.
    disk_used_pct: Option<u8>,
    error: Option<String>,
}

pub fn run(store: &Store, a: &LsArgs) -> Result<i32> {
    let mut rows = Vec::new();
    for name in store.names()? {
        let dir = store.machine(&name)?;
        let obs = observe(&dir)?;
        let state = obs.state.as_str().to_owned();
        let sample = obs.file.as_ref().and_then(|f| f.disk.clone());
        if let Some(w) = sample
            .as_ref()
            .and_then(|d| disk::fullness_warning(&name, d))
        {
            output::warn(w);
        }
        let disk_used_pct = sample.map(|d| d.used_pct);
        match dir.load_spec() {
            Ok(s) => rows.push(Row {
                name,
                state,
                driver: s.driver.to_string(),
                // A vz machine has an address only while it runs.
                ip: guest_address(&s, &obs)
                    .map(|ip| ip.to_string())
                    .unwrap_or_default(),
                cpus: s.cpus,
                memory_mib: s.memory_mib,
                disk_bytes: s.disk_bytes,
                disk_used_pct,
                error: None,
            }),
            Err(e) => rows.push(Row {
                name,
                state: "Error".into(),
                driver: String::new(),
                ip: String::new(),
                cpus: 0,
                memory_mib: 0,
                disk_bytes: 0,
                disk_used_pct,
                error: Some(e.to_string()),
            }),
        }
    }
    if a.json {
        output::json(&rows);
        return Ok(0);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            if let Some(e) = &r.error {
                return vec![r.name.clone(), r.state.clone(), e.clone()];
            }
            vec![
                r.name.clone(),
                r.state.clone(),
                r.driver.clone(),
                r.ip.clone(),
                r.cpus.to_string(),
                format!("{} MiB", r.memory_mib),
                format_size(r.disk_bytes),
            ]
        })
        .collect();
    output::table(
        &["NAME", "STATE", "DRIVER", "IP", "CPUS", "MEMORY", "DISK"],
        &table,
    );
    Ok(0)
}
