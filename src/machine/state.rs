//! Observed state: what the supervisor wrote in `state.json`, checked against whether the
//! supervisor is actually alive (its lock). A dead supervisor is never reported as running.

use serde::{Deserialize, Serialize};

use super::lock::supervisor_alive;
use super::store::{MachineDir, StoreError};
use crate::atomic_file::write_atomic;

/// `status` and `ls` warn, and the supervisor logs, from this fill level (percent) up.
pub const WARN_PCT: u8 = 80;

/// The guest filesystem under `/var/lib/docker`, as `df` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDiskSample {
    pub size_bytes: u64,
    pub used_bytes: u64,
    /// Free to unprivileged writers (ext4's root-reserved blocks are not counted).
    pub avail_bytes: u64,
    /// `used / (used + avail)`, rounded up, as `df` prints it.
    pub used_pct: u8,
    /// Whether the guest still holds its reserve file (released once the disk filled up).
    pub reserve_held: bool,
    /// RFC 3339 time of the measurement.
    pub measured: String,
}

impl GuestDiskSample {
    pub fn is_nearly_full(&self) -> bool {
        self.used_pct >= WARN_PCT
    }
}

/// The phase the supervisor reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

/// `state.json`, written by the supervisor at each phase change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateFile {
    pub phase: Phase,
    /// What the supervisor is doing, for progress display ("booting", "waiting for SSH").
    pub step: String,
    pub supervisor_pid: u32,
    pub vm_pid: Option<u32>,
    /// Acceleration actually used (`kvm` or `tcg`) and why.
    pub accel: Option<String>,
    pub accel_reason: Option<String>,
    pub started: String,
    pub ready: Option<String>,
    /// Why the machine stopped or failed.
    pub error: Option<String>,
    /// The guest filesystem's fill level, measured by the supervisor every 30 s while the
    /// machine runs (so `status` and `ls` need not reach the guest).
    #[serde(default)]
    pub disk: Option<GuestDiskSample>,
    /// The address the guest reported, for drivers whose guest gets it by DHCP (vz; see
    /// [`super::guest_net`]). Absent for the others, whose address is the spec's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_ip: Option<std::net::Ipv4Addr>,
    /// The known fix for `error`, so that `devbox start` can show it (the supervisor runs
    /// detached and its errors reach the user only through this file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// What keeps the running machine from working fully, each with its fix (a host firewall
    /// that may drop its outbound traffic); `status` and `inspect` show them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The ports containers publish in the machine and what the host's localhost does with
    /// each (forwarded, or why not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortState>,
    /// The last boot, phase by phase, from the guest's console markers (absent for a guest
    /// that prints none: images built before them, the fake driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootTimes>,
}

/// How the last boot went: the guest's phases (seconds since its kernel started, its
/// `/proc/uptime`) and the host's view (the guest's process started → ready).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootTimes {
    /// Seconds from the guest's process start to the machine being ready, on the host's clock.
    pub ready_after_s: f64,
    pub phases: Vec<BootPhase>,
}

/// One boot phase the guest reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootPhase {
    /// `init`, `drivers`, `disk`, `network`, `sshd`, `shares`, `containerd`, `docker`.
    pub name: String,
    /// When, in seconds since the guest's kernel started.
    pub guest_s: f64,
}

/// A port a container publishes in the machine, as the host's localhost sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortState {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The port on the host's `127.0.0.1` and `::1` (the one Docker published).
    pub port: u16,
    /// Where connections go: the guest's address and the port, or the container's.
    pub target: String,
    pub container: String,
    /// Why the host does not answer on it (the port is taken, a privileged port, the guest
    /// cannot be reached); `None` while it forwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl StateFile {
    /// A supervisor's first state: starting, with nothing known yet.
    pub fn starting(supervisor_pid: u32, started: String) -> StateFile {
        StateFile {
            phase: Phase::Starting,
            step: "preparing".into(),
            supervisor_pid,
            vm_pid: None,
            accel: None,
            accel_reason: None,
            started,
            ready: None,
            error: None,
            disk: None,
            guest_ip: None,
            hint: None,
            warnings: Vec::new(),
            ports: Vec::new(),
            boot: None,
        }
    }
}

/// The state shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineState {
    Stopped,
    Starting,
    Running,
    Stopping,
    /// The supervisor died without shutting down (killed, or a bug).
    Crashed,
    /// The last start failed; `error` says why.
    Failed,
}

impl MachineState {
    /// Every state, in the order `docs/json.md` lists them.
    pub const ALL: [MachineState; 6] = [
        MachineState::Stopped,
        MachineState::Starting,
        MachineState::Running,
        MachineState::Stopping,
        MachineState::Crashed,
        MachineState::Failed,
    ];

    /// The state's name in JSON documents and `--filter state=` (lowercase, as serialized).
    pub fn name(self) -> &'static str {
        match self {
            MachineState::Stopped => "stopped",
            MachineState::Starting => "starting",
            MachineState::Running => "running",
            MachineState::Stopping => "stopping",
            MachineState::Crashed => "crashed",
            MachineState::Failed => "failed",
        }
    }

    /// The state's name for people: tables, `status`, `--format '{{.State}}'` (capitalised,
    /// as docker-machine prints it).
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Stopped => "Stopped",
            MachineState::Starting => "Starting",
            MachineState::Running => "Running",
            MachineState::Stopping => "Stopping",
            MachineState::Crashed => "Crashed",
            MachineState::Failed => "Failed",
        }
    }

    /// A supervisor owns the machine right now.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            MachineState::Starting | MachineState::Running | MachineState::Stopping
        )
    }
}

#[derive(Debug, Clone)]
pub struct Observed {
    pub state: MachineState,
    pub file: Option<StateFile>,
}

pub fn read_state_file(dir: &MachineDir) -> Result<Option<StateFile>, StoreError> {
    let path = dir.state_path();
    match fs_err::read_to_string(&path) {
        Ok(text) => Ok(serde_json::from_str(&text).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn write_state_file(dir: &MachineDir, st: &StateFile) -> Result<(), StoreError> {
    let text = serde_json::to_vec_pretty(st).map_err(std::io::Error::other)?;
    write_atomic(&dir.state_path(), &text, 0o600)?;
    Ok(())
}

/// Combines `state.json` with the liveness of the supervisor lock.
pub fn observe(dir: &MachineDir) -> Result<Observed, StoreError> {
    let file = read_state_file(dir)?;
    let alive = supervisor_alive(dir)?;
    let state = match (&file, alive) {
        (Some(f), true) => match f.phase {
            Phase::Starting => MachineState::Starting,
            Phase::Running => MachineState::Running,
            // The supervisor is still tearing down.
            Phase::Stopping | Phase::Stopped | Phase::Failed => MachineState::Stopping,
        },
        // Alive but has not written its state yet.
        (None, true) => MachineState::Starting,
        (Some(f), false) => match f.phase {
            Phase::Stopped => MachineState::Stopped,
            Phase::Failed => MachineState::Failed,
            Phase::Starting | Phase::Running | Phase::Stopping => MachineState::Crashed,
        },
        (None, false) => MachineState::Stopped,
    };
    Ok(Observed { state, file })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One spelling per state in JSON (`docs/json.md`): `name()` is what serde writes, and
    /// people's spelling differs only in case.
    #[test]
    fn a_states_names_agree() {
        for s in MachineState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
            assert_eq!(s.as_str().to_lowercase(), s.name());
        }
    }
}
