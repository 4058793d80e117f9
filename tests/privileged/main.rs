//! Tests that need root or /dev/kvm: real TAP devices, routes and network namespaces, the KVM
//! VMM on this host's /dev/kvm, and the CLI with a privilege taken away. One binary (a
//! libtest-mimic harness, `harness = false`), so that a test that cannot run here is reported
//! `ignored` with the reason instead of passing (`support/trials.rs`); under `CI=true` a
//! missing prerequisite CI has (root, /dev/kvm) fails instead.
//!
//! To add a test: a plain function that panics on failure, listed in its module's `trials()`
//! with what it requires. Not `#[test]`: without libtest such a function is never compiled
//! (`.ci/test` refuses one).

#[path = "../support/mod.rs"]
mod support;

#[cfg(target_os = "linux")]
#[path = "../kvm_support/mod.rs"]
mod kvm_support;

mod cli_root;
#[cfg(target_os = "linux")]
mod cli_system;
mod dns_netns;
mod kvm_boot_conformance;
mod kvm_net;
mod kvm_smoke;
mod nat_netns;
mod net_tap;
mod routes_netns;

fn main() -> std::process::ExitCode {
    // Elsewhere than on Linux only the CLI's check is compiled.
    #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
    let mut trials = cli_root::trials();
    #[cfg(target_os = "linux")]
    {
        trials.extend(cli_system::trials());
        trials.extend(net_tap::trials());
        trials.extend(routes_netns::trials());
        trials.extend(nat_netns::trials());
        trials.extend(dns_netns::trials());
        trials.extend(kvm_net::trials());
        trials.extend(kvm_smoke::trials());
        trials.extend(kvm_boot_conformance::trials());
    }
    support::trials::run(trials)
}
