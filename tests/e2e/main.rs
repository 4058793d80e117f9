//! Tier 3, end to end: the real binary boots real guests inside a network namespace this test
//! creates, and every check of the product that needs a running machine runs here.
//!
//! A TCG boot to a ready Docker takes 25–50 s on CI's host, so machines are shared: one
//! machine (`e2e`, with two shared folders, a 2 GiB disk) is booted once and handed to every
//! check that does not disturb it; the checks that do (restart, SIGKILL of the supervisor,
//! a full disk, a resize, stop and rm) run after them, in list order, on the same machine;
//! the next check gets it running again. The whole run boots 6 times (the shared machine
//! four times, a second machine once, an ordinary user's machine once: `users.rs`), and the arm64
//! image once more under qemu-system-aarch64.
//! Checks run one at a time, in the order of [`CHECKS`] grouped by kind; the run prints each
//! check's duration at the end, and the number of boots.
//!
//! # Adding a check
//!
//! Write a function in the module of its area that panics on failure, as a `#[test]` does
//! (never `#[test]` itself: this binary has no libtest, such a function would never run), and
//! list it in [`CHECKS`]:
//!
//! - `shared("name", area::check_x)` with `fn check_x(m: &Machine)`: gets the shared
//!   machine, running. It must leave it running and must not rely on another check: start
//!   containers under names of its own, `m.busybox_image()` gives the `bb:e2e` image.
//!   `shared_needing("name", requires, area::check_x)` when it needs more of the host than
//!   the run does (`requires` checks the run's prerequisites too).
//! - `exclusive("name", area::check_x)`, same signature: may restart, stop, crash or fill
//!   the shared machine (the next check gets it running again); runs after every shared
//!   check.
//! - `netns("name", area::check_x)` with `fn check_x(h: &Harness)`: the namespace and the
//!   image, no machine.
//! - `own("name", requires, area::check_x)` with `fn check_x()`: brings its own machine.
//!
//! `m.ssh`, `m.ok` (`devbox …`), `m.docker_ok`, `m.h.curl`, `m.h.dig` and the others are in
//! `machine.rs` and `harness.rs`. Every command is bounded (`harness::COMMAND_BOUND`), and
//! every wait a check writes must be too (a deadline, then a failure that says what did not
//! happen). On a failure the machines' supervisor logs and consoles are printed.
//!
//! Prerequisites (root, qemu, docker CLI, …: `support/guest.rs`) missing: the checks are
//! reported as not run, except under `CI=true`, where they fail.
//!
//! Never touches the host's real interfaces or routes: every machine command runs under
//! `ip netns exec`, so the TAP devices, their addresses and all guest traffic stay in the
//! namespace.

#[path = "../support/mod.rs"]
mod support;

mod arm64;
mod basics;
mod cli;
mod compose;
mod disk;
mod file_events;
mod harness;
mod https;
mod lifecycle;
mod machine;
mod memory;
mod network;
mod outside;
mod remote;
// Its raw-client check is Linux-only (src/nfs): elsewhere its helpers go unused.
#[cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]
mod shares;
mod swarm;
// Linux only (file capabilities, user namespaces of the test, /dev/net/tun): elsewhere the
// trial is reported as unsupported.
#[cfg(target_os = "linux")]
mod users;
#[cfg(not(target_os = "linux"))]
mod users {
    use crate::support::trials::Missing;

    pub fn prerequisites() -> Result<(), Missing> {
        Err(Missing::Unsupported(
            "system install and file capabilities are Linux's (macOS: see the README)".into(),
        ))
    }

    pub fn ordinary_users_after_one_system_install() {
        unreachable!("prerequisites() refuses this host");
    }
}

use std::process::{Command, ExitCode, Stdio};
use std::sync::{Mutex, OnceLock};

use harness::Harness;
use machine::{Image, Machine};
use support::guest::{bin, text};
use support::trials::{self, Missing, Trial};

/// The shared machine.
pub const MACHINE: &str = "e2e";

/// Every check, in the order it runs within its kind (netns, own machine, shared, exclusive).
const CHECKS: &[Check] = &[
    netns(
        "create_refuses_a_subnet_routed_elsewhere",
        basics::create_refuses_a_subnet_routed_elsewhere,
    ),
    own(
        "arm64_image_boots_under_qemu_virt",
        arm64::prerequisites,
        arm64::arm64_image_boots_under_qemu_virt,
    ),
    own(
        "ordinary_users_after_one_system_install",
        users::prerequisites,
        users::ordinary_users_after_one_system_install,
    ),
    shared(
        "start_boots_and_a_second_start_is_not_an_error",
        basics::start_boots_and_a_second_start_is_not_an_error,
    ),
    shared(
        "an_adopted_host_is_driven_like_a_machine",
        remote::an_adopted_host_is_driven_like_a_machine,
    ),
    shared(
        "ssh_runs_commands_with_their_exit_code",
        basics::ssh_runs_commands_with_their_exit_code,
    ),
    shared(
        "console_has_the_boot_markers",
        basics::console_has_the_boot_markers,
    ),
    shared(
        "host_docker_cli_through_the_forwarded_socket",
        basics::host_docker_cli_through_the_forwarded_socket,
    ),
    shared("shares_over_nfs", shares::check_shares),
    shared(
        "raw_nfs_clients_in_the_guest_are_refused",
        shares::check_raw_clients_are_refused,
    ),
    shared(
        "guest_files_belong_to_the_share_owner",
        shares::check_owner_identity,
    ),
    shared(
        "host_side_moves_keep_the_guest_working",
        shares::check_host_side_moves,
    ),
    shared(
        "file_events_follow_host_changes",
        file_events::check_file_events,
    ),
    shared("routes_reach_containers_by_ip", network::check_routes),
    shared(
        "containers_reachable_only_from_the_host",
        network::check_containers_only_from_the_host,
    ),
    shared("names_follow_containers", network::check_names),
    shared(
        "https_for_container_names",
        https::check_https_for_container_names,
    ),
    shared(
        "vz_guest_lease_script_and_vsock_report",
        network::check_guest_report,
    ),
    shared("engine_flags_reach_docker", outside::check_engine_settings),
    shared(
        "outbound_nat_reaches_the_internet",
        outside::check_outbound_nat,
    ),
    shared(
        "published_ports_answer_on_localhost",
        outside::check_published_ports,
    ),
    shared_needing(
        "compose_project_through_the_forwarded_socket",
        compose::prerequisites,
        compose::check_compose,
    ),
    shared("discard_reaches_the_host_file", disk::check_discard),
    shared(
        "freed_guest_memory_returns_to_the_host",
        memory::check_freed_memory_returns_to_the_host,
    ),
    shared(
        "everyday_use_makes_plain_docker_reach_the_machine",
        cli::check_use_makes_plain_docker_reach_the_machine,
    ),
    shared(
        "everyday_ssh_behaves_like_ssh",
        cli::check_ssh_behaves_like_ssh,
    ),
    shared(
        "everyday_openssh_with_ssh_config",
        cli::check_openssh_with_ssh_config,
    ),
    shared("everyday_cp_both_ways", cli::check_cp_both_ways),
    shared(
        "everyday_logs_of_every_source",
        cli::check_logs_of_every_source,
    ),
    exclusive("full_disk_keeps_the_machine_usable", disk::check_full_disk),
    exclusive(
        "stop_removes_nat_and_a_docker_host_works",
        outside::check_nat_on_a_docker_host,
    ),
    exclusive(
        "restart_keeps_data_and_shares",
        lifecycle::restart_keeps_data_and_shares,
    ),
    exclusive(
        "killed_supervisor_resize_then_concurrent_starts",
        lifecycle::killed_supervisor_resize_then_concurrent_starts,
    ),
    exclusive(
        "second_machine_gets_the_next_subnets",
        lifecycle::second_machine_gets_the_next_subnets,
    ),
    exclusive(
        "stop_and_rm_leave_nothing",
        lifecycle::stop_and_rm_leave_nothing,
    ),
];

pub struct Check {
    name: &'static str,
    on: On,
}

#[derive(Clone, Copy)]
enum On {
    Netns(fn(&Harness)),
    Own(fn() -> Result<(), Missing>, fn()),
    Shared(fn() -> Result<(), Missing>, fn(&Machine)),
    Exclusive(fn(&Machine)),
}

impl On {
    /// Kinds run in this order.
    fn phase(self) -> u8 {
        match self {
            On::Netns(_) => 0,
            On::Own(..) => 1,
            On::Shared(..) => 2,
            On::Exclusive(_) => 3,
        }
    }
}

const fn shared(name: &'static str, f: fn(&Machine)) -> Check {
    shared_needing(name, e2e_prerequisites, f)
}
/// A shared check with prerequisites beyond the run's (which `requires` checks too).
const fn shared_needing(
    name: &'static str,
    requires: fn() -> Result<(), Missing>,
    f: fn(&Machine),
) -> Check {
    Check {
        name,
        on: On::Shared(requires, f),
    }
}
const fn exclusive(name: &'static str, f: fn(&Machine)) -> Check {
    Check {
        name,
        on: On::Exclusive(f),
    }
}
const fn netns(name: &'static str, f: fn(&Harness)) -> Check {
    Check {
        name,
        on: On::Netns(f),
    }
}
const fn own(name: &'static str, requires: fn() -> Result<(), Missing>, f: fn()) -> Check {
    Check {
        name,
        on: On::Own(requires, f),
    }
}

fn main() -> ExitCode {
    let mut args = trials::Arguments::from_args();
    // Machines are shared between checks: one check at a time.
    args.test_threads = Some(1);
    let mut checks: Vec<&'static Check> = CHECKS.iter().collect();
    checks.sort_by_key(|c| c.on.phase());
    let trials: Vec<Trial> = checks.into_iter().map(trial).collect();
    let code = trials::run_with(args, trials);
    if let Some(Ok(h)) = RUN.harness.get() {
        eprintln!(
            "[e2e] {} machine boots (start, restart) in this run",
            harness::boots()
        );
        h.teardown();
    }
    code
}

fn trial(c: &'static Check) -> Trial {
    match c.on {
        On::Own(requires, f) => trials::check(c.name, requires, f),
        On::Netns(f) => trials::check(c.name, e2e_prerequisites, move || {
            let h = harness();
            image();
            dumping(h, || f(h))
        }),
        On::Shared(requires, f) => trials::check(c.name, requires, move || {
            let m = shared_machine();
            dumping(m.h, || f(&m))
        }),
        On::Exclusive(f) => trials::check(c.name, e2e_prerequisites, move || {
            let m = shared_machine();
            dumping(m.h, || f(&m))
        }),
    }
}

fn e2e_prerequisites() -> Result<(), Missing> {
    match support::guest::missing_prerequisite() {
        Some(why) => Err(Missing::Prerequisite(why)),
        None => Ok(()),
    }
}

/// Runs `f`; on a failure, prints the machines' logs first.
fn dumping(h: &Harness, f: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        h.dump();
        std::panic::resume_unwind(panic);
    }
}

/// What the run sets up once, when a check first needs it.
struct Run {
    harness: OnceLock<Result<Harness, String>>,
    image: OnceLock<Result<Image, String>>,
    /// Whether the shared machine exists, or why it could not be created or booted (then
    /// every check that needs it fails at once, instead of waiting for a boot again).
    shared: Mutex<Option<Result<(), String>>>,
}

static RUN: Run = Run {
    harness: OnceLock::new(),
    image: OnceLock::new(),
    shared: Mutex::new(None),
};

/// The panic message of a setup step, as its error.
fn setup<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{what} failed: {msg}")
    })
}

fn harness() -> &'static Harness {
    match RUN
        .harness
        .get_or_init(|| setup("setting up the network namespace", Harness::new))
    {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    }
}

/// The x86_64 image: built once and cached (outside the namespace: it needs the package
/// archive), and its kernel version as `image ls --json` reports it.
fn image() -> &'static Image {
    let h = harness();
    let built = RUN.image.get_or_init(|| {
        setup("building the image", || {
            let o = Command::new(bin())
                .args(["image", "build"])
                .env("DEVBOX_HOME", &h.home)
                .env("DEVBOX_CACHE", &h.cache)
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            assert!(o.status.success(), "image build failed");
            let version = text(&o.stdout).trim().to_owned();
            let images: serde_json::Value =
                serde_json::from_slice(&h.devbox(&["image", "ls", "--json"]).stdout).unwrap();
            let manifest = &images["images"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["manifest"]["version"] == version.as_str())
                .expect("built image is listed")["manifest"];
            let kernel_version = manifest["kernel_version"].as_str().unwrap().to_owned();
            let docker_package = manifest["packages"]["docker.io"]
                .as_str()
                .expect("the manifest lists docker.io")
                .to_owned();
            eprintln!(
                "[e2e] image {version} (kernel {kernel_version}, docker.io {docker_package})"
            );
            Image {
                kernel_version,
                docker_package,
            }
        })
    });
    match built {
        Ok(i) => i,
        Err(e) => panic!("{e}"),
    }
}

/// The shared machine, created on first use and started whenever it is not running.
fn shared_machine() -> Machine {
    let m = Machine::new(MACHINE, harness(), image());
    let mut state = RUN.shared.lock().unwrap_or_else(|e| e.into_inner());
    match &*state {
        Some(Err(e)) => panic!("the shared machine is unusable: {e}"),
        Some(Ok(())) => {}
        None => {
            let created = setup("creating the shared machine", || shares::create(&m));
            *state = Some(created.clone());
            if let Err(e) = created {
                panic!("{e}");
            }
        }
    }
    if m.status() != "Running"
        && let Err(e) = setup("starting the shared machine", || {
            m.ok(&["start", MACHINE, "--timeout", "600"]);
        })
    {
        *state = Some(Err(e.clone()));
        panic!("{e}");
    }
    m
}
