//! Tier 2: the real binary against a temporary DEVBOX_HOME, no guest. Help, errors, exit
//! codes, and the state logic that does not need a booted machine.

use std::process::Output;

mod support;
use support::cli::{Env, fails_with, run_on_terminal, stderr, stdout, succeeds};

/// `create` needs to read the host's routes; keep it to a small machine.
fn create(env: &Env, name: &str) -> Output {
    env.create_small(&[], name)
}

#[test]
fn help_lists_the_verbs() {
    let o = Env::new().run(&["--help"]);
    succeeds(&o);
    for verb in [
        "create",
        "start",
        "stop",
        "restart",
        "rm",
        "ls",
        "status",
        "inspect",
        "ip",
        "ssh",
        "logs",
        "env",
        "edit",
        "upgrade",
        "image",
        "completion",
    ] {
        assert!(stdout(&o).contains(verb), "help lacks {verb}");
    }
    assert!(!stdout(&o).contains("__supervise"));
}

#[test]
fn create_ls_inspect_ip_rm() {
    let env = Env::new();
    succeeds(&create(&env, "dev"));
    let dir = env.machine_dir("dev");
    for f in [
        "machine.yaml",
        "disk.raw",
        "id_ed25519",
        "id_ed25519.pub",
        "ssh_host_ed25519_key",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    // The disk is sparse: its apparent size is the requested one, almost nothing allocated.
    let meta = std::fs::metadata(dir.join("disk.raw")).unwrap();
    assert_eq!(meta.len(), 2 << 30);
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) < 64);
    // The client key is private.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("id_ed25519"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "private key readable by others");

    let ls = env.run(&["ls"]);
    succeeds(&ls);
    let out = stdout(&ls);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.contains("dev") && out.contains("Stopped") && out.contains("qemu"),
        "{out}"
    );
    assert!(out.contains("192.168.") && out.contains("2G"), "{out}");

    let js: serde_json::Value = serde_json::from_slice(&env.run(&["ls", "--json"]).stdout).unwrap();
    assert_eq!(js["schema"], 1);
    assert_eq!(js["machines"][0]["name"], "dev");
    assert_eq!(js["machines"][0]["state"], "stopped");
    assert_eq!(js["machines"][0]["cpus"], 1);

    let ins: serde_json::Value =
        serde_json::from_slice(&env.run(&["inspect", "dev"]).stdout).unwrap();
    assert_eq!(ins["spec"]["memory_mib"], 512);
    assert_eq!(ins["spec"]["docker"]["bridge"], "172.18.0.1/16");
    assert!(ins["driver"]["kvm_probe"].is_string());

    let ip = env.run(&["ip", "dev"]);
    succeeds(&ip);
    assert!(stdout(&ip).trim().parse::<std::net::Ipv4Addr>().is_ok());

    // `status` exits 3 for a stopped machine (docs/json.md), and says so.
    let st = env.run(&["status", "dev"]);
    assert_eq!(st.status.code(), Some(3), "{}", stderr(&st));
    assert_eq!(stdout(&st).trim(), "Stopped");

    // Stopping a stopped machine is not an error.
    let stop = env.run(&["stop", "dev"]);
    succeeds(&stop);
    assert!(stderr(&stop).contains("already stopped"));

    succeeds(&env.run(&["rm", "-y", "dev"]));
    assert!(!dir.exists());
    assert_eq!(
        std::fs::read_dir(env.home.join("machines"))
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".create.lock")
            })
            .count(),
        0,
        "rm left files behind"
    );
}

#[test]
fn second_machine_gets_the_next_network() {
    let env = Env::new();
    succeeds(&create(&env, "a"));
    succeeds(&create(&env, "b"));
    let ip = |n| stdout(&env.run(&["ip", n])).trim().to_owned();
    assert_ne!(ip("a"), ip("b"));
}

#[test]
fn bad_names_are_refused_and_nothing_is_created() {
    let env = Env::new();
    for bad in ["Dev", "-x", "x-", "a_b", "a.b", &"a".repeat(64)] {
        fails_with(&create(&env, bad), "invalid machine name");
    }
    let left = std::fs::read_dir(env.home.join("machines"))
        .map(|d| {
            d.filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0);
}

#[test]
fn duplicate_create_is_refused() {
    let env = Env::new();
    succeeds(&create(&env, "dup"));
    let before = std::fs::read(env.machine_dir("dup").join("id_ed25519")).unwrap();
    fails_with(&create(&env, "dup"), "already exists");
    // The existing machine is untouched.
    assert_eq!(
        std::fs::read(env.machine_dir("dup").join("id_ed25519")).unwrap(),
        before
    );
}

#[test]
fn out_of_range_resources_are_refused() {
    let env = Env::new();
    fails_with(
        &env.run(&["create", "m", "--memory", "100"]),
        "--memory 100 MiB is out of range",
    );
    fails_with(
        &env.run(&["create", "m", "--memory", "99999999"]),
        "is out of range",
    );
    fails_with(
        &env.run(&["create", "m", "--cpus", "0"]),
        "--cpus 0 is out of range",
    );
    fails_with(
        &env.run(&["create", "m", "--cpus", "4096"]),
        "--cpus 4096 is out of range",
    );
    fails_with(
        &env.run(&["create", "m", "--disk-size", "lots"]),
        "invalid size",
    );
    fails_with(
        &env.run(&["create", "m", "--disk-size", "10M"]),
        "too small",
    );
    fails_with(
        &env.run(&["create", "m", "--docker-subnet", "172.18.0.1"]),
        "invalid --docker-subnet",
    );
    assert!(!env.machine_dir("m").exists());
}

#[test]
fn unknown_machine_is_an_error_for_every_verb() {
    let env = Env::new();
    for verb in [
        vec!["start", "nope"],
        vec!["stop", "nope"],
        vec!["restart", "nope"],
        vec!["rm", "nope"],
        vec!["status", "nope"],
        vec!["inspect", "nope"],
        vec!["ip", "nope"],
        vec!["ssh", "nope"],
        vec!["logs", "nope"],
        vec!["env", "nope"],
        vec!["edit", "nope"],
        vec!["edit", "nope", "--cpus", "1"],
        vec!["upgrade", "nope"],
    ] {
        let o = env.run(&verb);
        fails_with(&o, "no machine named \"nope\"");
        assert!(stderr(&o).contains("hint:"), "{verb:?}: {}", stderr(&o));
    }
}

#[test]
fn a_name_outside_the_store_is_refused_by_every_verb_and_nothing_is_touched() {
    let env = Env::new();
    succeeds(&create(&env, "dev"));
    // `machines/../x` and an absolute path: directories a careless join would act on.
    let outside = env.home.join("x");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    let victim = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(victim.path().join("sub")).unwrap();
    let victim_path = victim.path().to_str().unwrap().to_owned();
    let listing = |p: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = (
        listing(&outside),
        listing(victim.path()),
        listing(&env.home.join("machines")),
    );
    for name in ["../x", &victim_path, "..", "dev/..", "/etc"] {
        for verb in [
            vec!["rm", name],
            vec!["rm", "--force", name],
            vec!["logs", name],
            vec!["start", name],
            vec!["stop", name],
            vec!["env", name],
            vec!["edit", name],
            vec!["edit", name, "--memory", "1G"],
            vec!["upgrade", name],
        ] {
            let o = env.run(&verb);
            fails_with(&o, &format!("invalid machine name {name:?}"));
            assert!(
                stderr(&o).contains("hint: `devbox ls` lists the machines"),
                "{verb:?}: {}",
                stderr(&o)
            );
        }
        let after = (
            listing(&outside),
            listing(victim.path()),
            listing(&env.home.join("machines")),
        );
        assert_eq!(before, after, "`devbox rm {name}` touched something");
    }
    assert!(!std::path::Path::new("/etc/machine.lock").exists());
    assert!(env.machine_dir("dev").join("machine.yaml").is_file());
}

#[test]
fn missing_image_names_the_fix() {
    let env = Env::new();
    std::fs::remove_dir_all(&env.cache).unwrap();
    let o = create(&env, "m");
    fails_with(&o, "no guest image");
    assert!(stderr(&o).contains("devbox image build"));
    assert!(!env.machine_dir("m").exists());
}

#[test]
fn corrupted_spec_names_file_and_line() {
    let env = Env::new();
    succeeds(&create(&env, "m"));
    let spec = env.machine_dir("m").join("machine.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("cpus: 1", "cpus: [oops")).unwrap();
    let o = env.run(&["start", "m"]);
    fails_with(&o, "machine.yaml:");
    let line = stderr(&o)
        .split("machine.yaml:")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse::<usize>().ok());
    assert!(line.is_some_and(|l| l > 1), "{}", stderr(&o));
    // A broken machine can still be removed.
    succeeds(&env.run(&["rm", "-y", "m"]));
}

/// Security review finding 4: the privileged side never trusts `machine.yaml`. Each crafted
/// value is refused at the first read, naming the file, the line and the field, before any
/// supervisor exists.
#[test]
fn a_crafted_spec_is_refused_naming_line_and_field() {
    let env = Env::new();
    succeeds(&create(&env, "m"));
    let spec = env.machine_dir("m").join("machine.yaml");
    let good = std::fs::read_to_string(&spec).unwrap();
    let line_starting = |prefix: &str| {
        good.lines()
            .find(|l| l.starts_with(prefix))
            .expect("devbox writes this key")
            .to_owned()
    };
    let subnet = line_starting("  subnet:");
    let pool = line_starting("  pool:");
    let line_of = |text: &str, needle: &str| {
        1 + text
            .lines()
            .position(|l| l.starts_with(needle))
            .expect("the edited line")
    };
    for (from, to, field) in [
        // A prefix covering a quarter of the address space, on the machine's TAP.
        (
            subnet.as_str(),
            "  subnet: 192.168.64.0/2",
            "network.subnet",
        ),
        // A foreign subnet of the usual size.
        (subnet.as_str(), "  subnet: 10.66.0.0/24", "network.subnet"),
        // A Docker pool covering the host's default route.
        (pool.as_str(), "  pool: 0.0.0.0/1", "docker.pool"),
        // An index past the pool: a link (dbx200) that is not devbox's.
        ("  index: 0", "  index: 200", "network.index"),
        // An image "version" that is a path out of the image cache.
        ("image: 0123456789abcdef", "image: ../../../../etc", "image"),
    ] {
        let crafted = good.replacen(from, to, 1);
        assert_ne!(crafted, good, "{from:?} is in the spec");
        std::fs::write(&spec, &crafted).unwrap();
        let o = env.run(&["start", "m"]);
        let line = line_of(&crafted, to);
        fails_with(&o, &format!("machine.yaml:{line}: {field} is not valid"));
        assert!(stderr(&o).contains("caused by:"), "{}", stderr(&o));
        assert!(!env.machine_dir("m").join("supervisor.pid").exists());
        assert!(!env.machine_dir("m").join("state.json").exists());
        // Every other command that reads the spec refuses it the same way.
        fails_with(&env.run(&["ip", "m"]), &format!("{field} is not valid"));
    }
    std::fs::write(&spec, &good).unwrap();
    succeeds(&env.run(&["ip", "m"]));
}

#[test]
fn create_failing_midway_leaves_nothing() {
    let env = Env::new();
    // A disk no filesystem can hold: the last step of create fails.
    let o = env.run(&["create", "big", "--disk-size", "8000000T"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let entries: Vec<String> = std::fs::read_dir(env.home.join("machines"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".create.lock")
        .collect();
    assert!(entries.is_empty(), "left behind: {entries:?}");
}

#[test]
fn ssh_and_env_refuse_a_stopped_machine() {
    let env = Env::new();
    succeeds(&create(&env, "m"));
    let o = env.run(&["ssh", "m", "--", "true"]);
    fails_with(&o, "is not running");
    assert!(stderr(&o).contains("devbox start m"));
    fails_with(&env.run(&["env", "m"]), "is not running");
}

#[test]
fn unavailable_drivers_are_refused_at_create() {
    let env = Env::new();
    fails_with(
        &env.run(&["create", "m", "--driver", "vz"]),
        "driver vz cannot run on this host",
    );
    fails_with(
        &env.run(&["create", "m", "--driver", "kvm"]),
        "driver kvm cannot run on this host",
    );
    assert!(!env.machine_dir("m").exists());
}

#[test]
fn missing_qemu_is_named_with_its_package() {
    let env = Env::new();
    succeeds(&create(&env, "m"));
    let o = env
        .cmd()
        .args(["start", "m"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    fails_with(&o, "qemu-system-x86_64 was not found");
    assert!(stderr(&o).contains("apt-get install qemu-system-x86"));
    assert_eq!(stdout(&env.run(&["status", "m"])).trim(), "Stopped");
}

#[test]
fn crashed_supervisor_is_reported_as_crashed() {
    let env = Env::new();
    succeeds(&create(&env, "m"));
    // What a supervisor killed with SIGKILL leaves: a state file saying "running" and a
    // supervisor lock nobody holds.
    let dir = env.machine_dir("m");
    let state = serde_json::json!({
        "phase": "running", "step": "running", "supervisor_pid": 999999, "vm_pid": null,
        "accel": "tcg", "accel_reason": "x", "started": "2026-11-21T00:00:00Z",
        "ready": null, "error": null
    });
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
    std::fs::write(dir.join("supervisor.lock"), "").unwrap();
    let st = env.run(&["status", "m"]);
    assert_eq!(st.status.code(), Some(4), "{}", stderr(&st));
    assert_eq!(stdout(&st).trim(), "Crashed");
    let ls = stdout(&env.run(&["ls"]));
    assert!(ls.contains("Crashed") && !ls.contains("Running"), "{ls}");
    fails_with(&env.run(&["ssh", "m", "--", "true"]), "is not running");
    // `stop` cleans up after it.
    let stop = env.run(&["stop", "m"]);
    succeeds(&stop);
    assert!(stderr(&stop).contains("crashed"));
}

#[test]
fn rm_of_a_running_machine_needs_force() {
    let env = Env::new();
    succeeds(&create(&env, "m"));
    let dir = env.machine_dir("m");
    let state = serde_json::json!({
        "phase": "running", "step": "running", "supervisor_pid": std::process::id(), "vm_pid": null,
        "accel": "tcg", "accel_reason": "x", "started": "2026-11-21T00:00:00Z",
        "ready": null, "error": null
    });
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
    // Hold the supervisor lock as a live supervisor would.
    let f = std::fs::File::create(dir.join("supervisor.lock")).unwrap();
    let _held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    assert_eq!(stdout(&env.run(&["status", "m"])).trim(), "Running");
    let o = env.run(&["rm", "m"]);
    fails_with(&o, "is running");
    assert!(stderr(&o).contains("--force"));
    assert!(dir.join("machine.yaml").exists());
}

#[test]
fn completion_scripts_are_printed() {
    let env = Env::new();
    for sh in ["bash", "zsh", "fish"] {
        let o = env.run(&["completion", sh]);
        succeeds(&o);
        assert!(stdout(&o).contains("devbox"), "{sh}");
    }
}

#[test]
fn env_unset_prints_the_undo() {
    let o = Env::new().run(&["env", "any", "--unset"]);
    succeeds(&o);
    assert!(stdout(&o).contains("unset DOCKER_HOST"));
}

#[test]
fn logs_of_a_never_started_machine() {
    let env = Env::new();
    succeeds(&create(&env, "m"));
    let o = env.run(&["logs", "m"]);
    succeeds(&o);
    assert!(stderr(&o).contains("never started"));
}

/// The guest writes its console: on a terminal, `logs` shows its escape sequences (OSC 52
/// clipboard write, title, clear screen, 8-bit CSI) as text instead of passing them to the
/// terminal; into a pipe the bytes go as written.
#[test]
fn logs_neutralise_the_guest_escape_sequences() {
    let env = Env::new();
    succeeds(&create(&env, "m"));
    let hostile =
        "boot ok\r\n\x1b]52;c;cm0gLXJmIH4=\x07\x1b]0;sudo password\x07\x1b[2J\u{9b}8m\tend\r\n";
    std::fs::write(env.machine_dir("m").join("serial.log"), hostile).unwrap();
    let (code, out) = run_on_terminal(&env, &["logs", "m"]);
    assert_eq!(code, Some(0));
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out,
        "boot ok\n\\u{1b}]52;c;cm0gLXJmIH4=\\u{7}\\u{1b}]0;sudo password\\u{7}\\u{1b}[2J\\u{9b}8m\tend\n"
    );
    assert!(
        !out.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "{out:?}"
    );
    let o = env.run(&["logs", "m"]);
    succeeds(&o);
    assert_eq!(o.stdout, hostile.as_bytes());
}
