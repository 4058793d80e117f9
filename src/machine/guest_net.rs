//! How a machine's guest gets its network address, and which address is the guest's at a
//! given moment. Pure: the config drive, the supervisor and every command that reaches the
//! guest (`ip`, `ls`, `ssh`, `inspect`, `disk`) decide through here, so the drivers' two ways
//! cannot drift apart.
//!
//! Which one comes from the driver's capabilities ([`Addressing`]):
//! - [`Addressing::Static`] (qemu, kvm): the host chose the address when the machine was
//!   created (its host-only /24, `MachineSpec::network`), puts the guest's NIC on its own TAP
//!   device and tells the guest the address on the config drive.
//! - [`Addressing::Dhcp`] (vz): Virtualization.framework's NAT (vmnet shared mode, host side
//!   `bridge100`) hands out the address by DHCP at each boot; the host cannot choose it. The
//!   guest reports it over vsock ([`crate::hypervisor::guest_report`]) and the supervisor
//!   records it in `state.json` ([`StateFile::guest_ip`]) for the other commands.

use std::net::Ipv4Addr;

use super::driver::{Addressing, Driver};
use super::spec::MachineSpec;
use super::state::{Observed, StateFile};
use crate::hint::Hint;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "machine {name:?} has no address while it is {state}: with the {driver} driver the \
         guest gets one by DHCP at each boot"
    )]
    NotRunning {
        name: String,
        driver: Driver,
        state: &'static str,
    },
    #[error("machine {name:?} is starting and its guest has not reported its address yet")]
    NotReported { name: String },
}

impl Hint for AddressError {
    fn hint(&self) -> Option<String> {
        match self {
            AddressError::NotRunning { name, .. } => Some(format!("start it: devbox start {name}")),
            AddressError::NotReported { name } => Some(format!(
                "wait for `devbox start {name}` to finish; `devbox logs {name}` shows the guest's boot"
            )),
        }
    }
}

/// The guest's address now: the spec's for a [`Addressing::Static`] machine (whatever its
/// state, as before vz existed); for a [`Addressing::Dhcp`] one, the address its live
/// supervisor recorded from the guest's report.
pub fn guest_address(spec: &MachineSpec, observed: &Observed) -> Result<Ipv4Addr, AddressError> {
    // An adopted host is at its own address, running or not.
    if let Some(r) = &spec.remote {
        return Ok(r.address);
    }
    match spec.driver.capabilities().addressing {
        Addressing::Static => Ok(spec.network.guest_ip),
        Addressing::Dhcp if !observed.state.is_live() => Err(AddressError::NotRunning {
            name: spec.name.clone(),
            driver: spec.driver,
            state: observed.state.name(),
        }),
        Addressing::Dhcp => observed
            .file
            .as_ref()
            .and_then(|f: &StateFile| f.guest_ip)
            .ok_or_else(|| AddressError::NotReported {
                name: spec.name.clone(),
            }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::machine::spec::NetworkSpec;
    use crate::machine::state::{MachineState, Phase};
    use crate::routes::DockerSubnets;

    /// A machine like the golden tests' (tests/golden/machine.yaml), on `driver`.
    pub(crate) fn spec(driver: Driver) -> MachineSpec {
        MachineSpec {
            name: "dev".into(),
            driver,
            cpus: 2,
            memory_mib: 2048,
            disk_bytes: 20 << 30,
            image: "0123456789abcdef".into(),
            network: NetworkSpec {
                index: 0,
                subnet: "192.168.64.0/24".parse().unwrap(),
                host_ip: "192.168.64.1".parse().unwrap(),
                guest_ip: "192.168.64.2".parse().unwrap(),
                mac: "52:54:00:12:34:56".into(),
                ipv6: false,
            },
            docker: DockerSubnets {
                bridge: "172.18.0.1/16".parse().unwrap(),
                pool: "172.19.0.0/16".parse().unwrap(),
                pool_size: 24,
            },
            shares: vec![],
            tld: "dev".into(),
            engine: Default::default(),
            dns_domains: vec![],
            remote: None,
            created: "2026-11-21T00:00:00Z".into(),
        }
    }

    fn observed(state: MachineState, reported: Option<&str>) -> Observed {
        Observed {
            state,
            file: Some(StateFile {
                phase: Phase::Running,
                step: "running".into(),
                supervisor_pid: 1,
                vm_pid: None,
                accel: None,
                accel_reason: None,
                started: String::new(),
                ready: None,
                error: None,
                disk: None,
                guest_ip: reported.map(|s| s.parse().unwrap()),
                hint: None,
                warnings: Vec::new(),
                ports: Vec::new(),
                boot: None,
            }),
        }
    }

    #[test]
    fn a_static_machine_has_its_spec_address_in_every_state() {
        for state in [MachineState::Stopped, MachineState::Running] {
            // Even a stray recorded address does not override the spec's.
            let obs = observed(state, Some("10.0.0.9"));
            assert_eq!(
                guest_address(&spec(Driver::Qemu), &obs),
                Ok("192.168.64.2".parse().unwrap())
            );
        }
    }

    #[test]
    fn a_dhcp_machine_has_the_reported_address_only_while_live() {
        let vz = spec(Driver::Vz);
        assert_eq!(
            guest_address(&vz, &observed(MachineState::Running, Some("192.168.64.7"))),
            Ok("192.168.64.7".parse().unwrap()),
            "the report wins over the spec's host-only address"
        );
        let err = guest_address(&vz, &observed(MachineState::Starting, None)).unwrap_err();
        assert_eq!(err, AddressError::NotReported { name: "dev".into() });
        // A stopped machine's last address is stale: the next boot may get another.
        let err =
            guest_address(&vz, &observed(MachineState::Stopped, Some("192.168.64.7"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "machine \"dev\" has no address while it is stopped: with the vz driver the guest \
             gets one by DHCP at each boot"
        );
        assert_eq!(err.hint().unwrap(), "start it: devbox start dev");
    }
}
