//! `devbox status NAME`: the observed state (and why a machine stopped or failed, or why its
//! `machine.yaml` does not load), and a warning when the supervisor last found the guest
//! filesystem nearly full, when the host's firewall may drop the machine's traffic, or when a
//! published port is not forwarded. The exit code says the state ([`exit_code`]), for scripts.

use anyhow::Result;
use serde_json::json;

use crate::cli::StatusArgs;
use crate::disk;
use crate::hint::Hint;
use crate::machine::state::observe;
use crate::machine::{MachineState, Store};
use crate::output;

/// `devbox status` exits with these (README, `docs/json.md`). 1 is every command's error
/// code, an unknown machine's included; 2 is a refused command line (clap's).
pub const EXIT_STOPPED: i32 = 3;
pub const EXIT_CRASHED: i32 = 4;
pub const EXIT_FAILED: i32 = 5;
/// Starting or stopping: a supervisor is at work; ask again.
pub const EXIT_CHANGING: i32 = 6;
/// Not running, and `machine.yaml` does not load: it cannot start until fixed.
pub const EXIT_BROKEN_SPEC: i32 = 7;

/// The exit code for `state`; `spec_broken`: `machine.yaml` does not load.
pub fn exit_code(state: MachineState, spec_broken: bool) -> i32 {
    match state {
        MachineState::Running => 0,
        MachineState::Starting | MachineState::Stopping => EXIT_CHANGING,
        _ if spec_broken => EXIT_BROKEN_SPEC,
        MachineState::Stopped => EXIT_STOPPED,
        MachineState::Crashed => EXIT_CRASHED,
        MachineState::Failed => EXIT_FAILED,
    }
}

pub fn run(store: &Store, a: &StatusArgs) -> Result<i32> {
    let dir = store.existing(&a.name)?;
    let obs = observe(&dir)?;
    let spec_error = dir.load_spec().err();
    let code = exit_code(obs.state, spec_error.is_some());
    // Names the machine's containers asked for and did not get (`dns.json`, while running).
    let refused: Vec<serde_json::Value> = fs_err::read_to_string(dir.path.join("dns.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("refused")?.as_array().cloned())
        .unwrap_or_default();
    if a.json {
        output::json::print(&json!({
            "name": a.name,
            "state": obs.state,
            "spec_error": spec_error.as_ref().map(|e| output::json::chain_text(e)),
            "runtime": obs.file,
            "dns_refused": refused,
        }));
        return Ok(code);
    }
    output::data(obs.state.as_str());
    if let Some(e) = &spec_error {
        output::warn(format!(
            "the spec of machine {} does not load (it cannot start until that is fixed): {}",
            a.name,
            output::json::chain_text(e)
        ));
        if let Some(h) = e.hint() {
            output::info(format!("  hint: {h}"));
        }
    }
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
    Ok(code)
}
