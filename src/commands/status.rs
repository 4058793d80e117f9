//! `devbox status NAME`: the observed state (and why a machine stopped or failed), and a
//! warning when the supervisor last found the guest filesystem nearly full, when the host's
//! firewall may drop the machine's traffic, or when a published port is not forwarded.

use anyhow::Result;
use serde_json::json;

use crate::cli::StatusArgs;
use crate::disk;
use crate::machine::Store;
use crate::machine::state::observe;
use crate::output;

pub fn run(store: &Store, a: &StatusArgs) -> Result<i32> {
    let dir = store.existing(&a.name)?;
    let obs = observe(&dir)?;
    // Names the machine's containers asked for and did not get (`dns.json`, while running).
    let refused: Vec<serde_json::Value> = fs_err::read_to_string(dir.path.join("dns.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("refused")?.as_array().cloned())
        .unwrap_or_default();
    if a.json {
        output::json(&json!({
            "name": a.name,
            "state": obs.state,
            "detail": obs.file,
            "dns_refused": refused,
        }));
        return Ok(0);
    }
    output::data(obs.state.as_str());
    if let Some(f) = &obs.file {
        match obs.state {
            crate::machine::MachineState::Crashed => output::warn(format!(
                "the supervisor (pid {}) died without stopping the machine; `devbox start {}` recovers",
                f.supervisor_pid, a.name
            )),
            crate::machine::MachineState::Failed => {
                if let Some(e) = &f.error {
                    output::info(format!("last start failed: {e}"));
                }
            }
            _ => {}
        }
        // Recorded by the supervisor; a stopped machine keeps its last figure.
        if let Some(w) = f
            .disk
            .as_ref()
            .and_then(|d| disk::fullness_warning(&a.name, d))
        {
            output::warn(w);
        }
        if obs.state.is_live() {
            for w in &f.warnings {
                output::warn(w);
            }
            for p in f.ports.iter().filter(|p| p.problem.is_some()) {
                output::warn(format!(
                    "port {}/{} of container {}: {}",
                    p.port,
                    p.proto,
                    p.container,
                    p.problem.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    if obs.state.is_live() {
        for r in &refused {
            let field = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            output::warn(format!(
                "DNS: container `{}` asked for `{}`: refused, {}",
                field("container"),
                field("name"),
                field("reason")
            ));
        }
    }
    Ok(0)
}
