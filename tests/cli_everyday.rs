//! Tier 2: the everyday CLI (issue #18) through the real binary against a temporary
//! DEVBOX_HOME, no guest: Docker contexts checked with the real docker CLI, `use`, `env` in
//! every shell, sizes with units, `rm`'s confirmation, bulk verbs, `ssh`'s arguments,
//! `ssh-config` read back by OpenSSH, `cp`'s refusals, and completion (golden scripts, and
//! machine names completed by bash and fish themselves).

use std::path::{Path, PathBuf};
use std::process::Output;

mod support;
use support::cli::{Env, fails_with, stderr, stdout, succeeds};

fn create(env: &Env, name: &str, extra: &[&str]) -> Output {
    let mut flags = vec!["--driver", "fake", "--no-share"];
    flags.extend_from_slice(extra);
    env.create_small(&flags, name)
}

fn usage_error(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(2),
        "usage error; stderr: {}",
        stderr(o)
    );
}

/// The real docker CLI with `env`'s DOCKER_CONFIG, nothing else of this process's docker
/// environment. The docker CLI is a prerequisite `.ci/install-deps` installs.
fn docker(env: &Env, args: &[&str]) -> Output {
    std::process::Command::new("docker")
        .args(args)
        .env("DOCKER_CONFIG", &env.docker_config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .output()
        .expect("the docker CLI (.ci/install-deps installs it)")
}

fn contexts(env: &Env) -> Vec<serde_json::Value> {
    let o = docker(env, &["context", "ls", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn current_context(env: &Env) -> String {
    let o = docker(env, &["context", "show"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_owned()
}

#[test]
fn each_machine_has_a_docker_context_the_docker_cli_reads() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    let socket = env.machine_dir("dev").join("docker.sock");
    let o = docker(&env, &["context", "inspect", "devbox-dev"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let inspect: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        inspect[0]["Endpoints"]["docker"]["Host"],
        format!("unix://{}", std::path::absolute(&socket).unwrap().display())
    );
    assert_eq!(inspect[0]["Metadata"]["Description"], "devbox machine dev");
    let names: Vec<_> = contexts(&env)
        .iter()
        .map(|c| c["Name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"devbox-dev".to_owned()), "{names:?}");
    assert_eq!(current_context(&env), "default");

    // `use` switches the CLI, keeping the rest of config.json; `use --none` switches back.
    std::fs::write(
        env.docker_config.join("config.json"),
        r#"{"auths":{"registry.example":{"auth":"dTpw"}},"detachKeys":"ctrl-x"}"#,
    )
    .unwrap();
    let o = env.run(&["use", "dev"]);
    succeeds(&o);
    assert!(stderr(&o).contains("devbox-dev"), "{}", stderr(&o));
    assert_eq!(current_context(&env), "devbox-dev");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.docker_config.join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["auths"]["registry.example"]["auth"], "dTpw");
    assert_eq!(config["detachKeys"], "ctrl-x");
    succeeds(&env.run(&["use", "--none"]));
    assert_eq!(current_context(&env), "default");

    // rm takes the context away, and the CLI back to its default if it was the current one.
    succeeds(&env.run(&["use", "dev"]));
    let o = env.run(&["rm", "-y", "dev"]);
    succeeds(&o);
    assert!(stderr(&o).contains("default context"), "{}", stderr(&o));
    assert_eq!(current_context(&env), "default");
    assert!(
        !docker(&env, &["context", "inspect", "devbox-dev"])
            .status
            .success()
    );
}

#[test]
fn start_brings_the_context_back_in_step() {
    let env = Env::new();
    succeeds(&create(&env, "m", &[]));
    // A context removed (or made before devbox wrote contexts) is written again at start.
    let o = docker(&env, &["context", "rm", "devbox-m"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env
        .cmd()
        .args(["start", "m"])
        .env("DEVBOX_FAKE_GUEST", "ready")
        .env("DEVBOX_DNS_UPSTREAMS", "127.0.0.1:53")
        .output()
        .unwrap();
    succeeds(&o);
    assert!(
        docker(&env, &["context", "inspect", "devbox-m"])
            .status
            .success()
    );
    // env on a running machine: the same socket, in the shell asked for, or as JSON.
    let js: serde_json::Value =
        serde_json::from_slice(&env.run(&["env", "m", "--json"]).stdout).unwrap();
    let host = js["variables"]["DOCKER_HOST"].as_str().unwrap().to_owned();
    assert!(host.ends_with("/machines/m/docker.sock"), "{host}");
    let fish = stdout(&env.run(&["env", "m", "--shell", "fish"]));
    assert!(fish.starts_with("set -gx DOCKER_HOST '"), "{fish}");
    assert!(fish.contains("# devbox env m | source"), "{fish}");
    succeeds(&env.run(&["stop", "m"]));
}

#[test]
fn use_refuses_what_it_cannot_do_and_changes_nothing() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    usage_error(&env.run(&["use"]));
    usage_error(&env.run(&["use", "dev", "--none"]));
    fails_with(&env.run(&["use", "nope"]), "no machine named \"nope\"");
    assert!(!env.docker_config.join("config.json").exists());
    // A config.json devbox cannot parse is left as it is.
    std::fs::write(env.docker_config.join("config.json"), "{oops").unwrap();
    let o = env.run(&["use", "dev"]);
    fails_with(&o, "config.json");
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(env.docker_config.join("config.json")).unwrap(),
        "{oops"
    );
    // The docker CLI prefers DOCKER_HOST: `use` says so.
    std::fs::remove_file(env.docker_config.join("config.json")).unwrap();
    let o = env
        .cmd()
        .args(["use", "dev"])
        .env("DOCKER_HOST", "unix:///x")
        .output()
        .unwrap();
    succeeds(&o);
    assert!(stderr(&o).contains("DOCKER_HOST is set"), "{}", stderr(&o));
}

/// A directory holding a `devbox` that runs the test's binary, for scripts that call it.
fn path_with_devbox(dir: &Path) -> String {
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_devbox"), dir.join("devbox")).unwrap();
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

#[test]
fn env_unset_needs_no_machine_and_its_hint_works() {
    let env = Env::new();
    let o = env
        .cmd()
        .args(["env", "--unset"])
        .env("SHELL", "/bin/bash")
        .output()
        .unwrap();
    succeeds(&o);
    let out = stdout(&o);
    assert!(out.starts_with("unset DOCKER_HOST\n"), "{out}");
    assert!(out.contains("# eval \"$(devbox env --unset)\""), "{out}");
    // The hint, run as printed (without its `# `), in bash with DOCKER_HOST set.
    let hint = out
        .lines()
        .last()
        .unwrap()
        .trim_start_matches("# ")
        .to_owned();
    let bin = tempfile::tempdir().unwrap();
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -e\n{hint}\n[ -z \"${{DOCKER_HOST+x}}\" ]"))
        .env("PATH", path_with_devbox(bin.path()))
        .env("DOCKER_HOST", "unix:///old")
        .env("DEVBOX_HOME", &env.home)
        .output()
        .unwrap();
    assert!(o.status.success(), "{hint}: {}", stderr(&o));

    // The shell comes from $SHELL unless --shell names one.
    let with_shell = |shell: &str, args: &[&str]| {
        stdout(&env.cmd().args(args).env("SHELL", shell).output().unwrap())
    };
    assert!(with_shell("/usr/bin/fish", &["env", "-u"]).starts_with("set -e DOCKER_HOST;"));
    assert!(with_shell("/bin/tcsh", &["env", "-u"]).starts_with("unsetenv DOCKER_HOST;"));
    assert!(
        with_shell("/bin/bash", &["env", "-u", "--shell", "powershell"])
            .starts_with("Remove-Item Env:\\DOCKER_HOST")
    );
    assert!(
        with_shell("/bin/fish", &["env", "-u", "--shell", "cmd"]).starts_with("SET DOCKER_HOST=")
    );
    assert!(
        with_shell("/bin/fish", &["env", "-u", "--shell", "zsh"]).starts_with("unset DOCKER_HOST")
    );
    let js: serde_json::Value =
        serde_json::from_slice(&env.run(&["env", "--unset", "--json"]).stdout).unwrap();
    assert_eq!(
        js,
        serde_json::json!({"schema": 1, "variables": {"DOCKER_HOST": null}})
    );
}

#[test]
fn env_bad_input() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    usage_error(&env.run(&["env"]));
    usage_error(&env.run(&["env", "dev", "--shell", "nushell"]));
    usage_error(&env.run(&["env", "dev", "--shell", "fish", "--json"]));
    fails_with(&env.run(&["env", "nope"]), "no machine named");
    fails_with(&env.run(&["env", "dev"]), "not running");
    fails_with(&env.run(&["env", "dev", "--json"]), "not running");
}

fn spec(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.machine_dir(name).join("machine.yaml")).unwrap()
}

#[test]
fn memory_takes_units_and_a_bare_number_stays_mib() {
    let env = Env::new();
    for (i, (memory, mib)) in [("1G", 1024), ("1536M", 1536), ("768", 768), ("1.5G", 1536)]
        .iter()
        .enumerate()
    {
        let name = format!("m{i}");
        let o = env.run(&[
            "create",
            "--driver",
            "fake",
            "--no-share",
            "--cpus",
            "1",
            "--memory",
            memory,
            "--disk-size",
            "2G",
            &name,
        ]);
        succeeds(&o);
        assert!(
            spec(&env, &name).contains(&format!("memory_mib: {mib}\n")),
            "{memory}: {}",
            spec(&env, &name)
        );
    }
    for bad in ["4X", "G", "1000K", "5.5.5"] {
        let o = env.run(&["create", "--driver", "fake", "--memory", bad, "bad"]);
        assert_ne!(o.status.code(), Some(0), "{bad}");
        assert!(stderr(&o).contains("--memory"), "{bad}: {}", stderr(&o));
        assert!(!env.machine_dir("bad").exists(), "{bad}");
    }
    fails_with(
        &env.run(&["create", "--driver", "fake", "--memory", "64M", "small"]),
        "out of range",
    );
}

/// Every size `create --help` gives as an example is one `create` accepts.
#[test]
fn the_help_examples_are_valid() {
    let env = Env::new();
    let help = stdout(&env.run(&["create", "--help"]));
    let examples = |flag: &str| -> Vec<String> {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} in {help}"));
        let text = &help[at..];
        let text = &text[..text.find("\n  -").unwrap_or(text.len())];
        let inside = text.split_once('(').map(|(_, r)| r).unwrap_or("");
        let inside = &inside[..inside.find(')').unwrap_or(0)];
        inside
            .replace("e.g.", "")
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .map(str::to_owned)
            .collect()
    };
    let disks = examples("--disk-size");
    let memories = examples("--memory");
    assert!(disks.contains(&"20G".to_owned()), "{disks:?} from {help}");
    assert!(
        memories.contains(&"4G".to_owned()),
        "{memories:?} from {help}"
    );
    for (i, d) in disks.iter().enumerate() {
        let name = format!("d{i}");
        let o = env.run(&[
            "create",
            "--driver",
            "fake",
            "--no-share",
            "--memory",
            "512",
            "--disk-size",
            d,
            &name,
        ]);
        succeeds(&o);
    }
    for (i, m) in memories.iter().enumerate() {
        let name = format!("r{i}");
        let o = env.run(&[
            "create",
            "--driver",
            "fake",
            "--no-share",
            "--memory",
            m,
            "--disk-size",
            "2G",
            &name,
        ]);
        succeeds(&o);
    }
    // The bound itself is unchanged, and says what it is.
    fails_with(
        &env.run(&["create", "--driver", "fake", "--disk-size", "512M", "x"]),
        "at least 1G",
    );
}

fn exists(env: &Env, name: &str) -> bool {
    env.machine_dir(name).join("machine.yaml").exists()
}

#[test]
fn rm_without_a_terminal_needs_yes() {
    let env = Env::new();
    succeeds(&create(&env, "a", &[]));
    succeeds(&create(&env, "b", &[]));
    succeeds(&create(&env, "c", &[]));
    let o = env.run(&["rm", "a"]);
    fails_with(&o, "not removing a without confirmation");
    assert!(stderr(&o).contains("devbox rm -y a"), "{}", stderr(&o));
    assert!(exists(&env, "a"));
    // Every name is checked before anything is removed.
    fails_with(
        &env.run(&["rm", "-y", "a", "nope"]),
        "no machine named \"nope\"",
    );
    assert!(exists(&env, "a"));
    usage_error(&env.run(&["rm"]));
    usage_error(&env.run(&["rm", "--all", "a"]));
    let o = env.run(&["rm", "--yes", "a", "b", "a"]);
    succeeds(&o);
    assert!(!exists(&env, "a") && !exists(&env, "b") && exists(&env, "c"));
    succeeds(&env.run(&["rm", "-y", "--all"]));
    assert!(!exists(&env, "c"));
    let o = env.run(&["rm", "-y", "--all"]);
    succeeds(&o);
    assert!(stderr(&o).contains("No machines."), "{}", stderr(&o));
}

/// `devbox rm NAME` with stdin on a pseudo-terminal the test holds, answering `answer`.
fn rm_on_a_terminal(env: &Env, name: &str, answer: &str) -> Output {
    use std::io::Write;
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut master = std::fs::File::from(pty.master);
    master.write_all(answer.as_bytes()).unwrap();
    env.std_cmd()
        .args(["rm", name])
        .stdin(std::fs::File::from(pty.slave))
        .output()
        .unwrap()
}

#[test]
fn rm_asks_on_a_terminal() {
    let env = Env::new();
    succeeds(&create(&env, "a", &[]));
    let o = rm_on_a_terminal(&env, "a", "n\n");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("Remove machine a"), "{}", stderr(&o));
    assert!(stderr(&o).contains("Nothing removed."), "{}", stderr(&o));
    assert!(exists(&env, "a"));
    let o = rm_on_a_terminal(&env, "a", "y\n");
    succeeds(&o);
    assert!(!exists(&env, "a"));
}

#[test]
fn stop_start_and_restart_take_several_machines_and_all() {
    let env = Env::new();
    succeeds(&create(&env, "a", &[]));
    succeeds(&create(&env, "b", &[]));
    let run = |args: &[&str]| {
        env.cmd()
            .args(args)
            .env("DEVBOX_FAKE_GUEST", "ready")
            .env("DEVBOX_DNS_UPSTREAMS", "127.0.0.1:53")
            .output()
            .unwrap()
    };
    let status = |n: &str| stdout(&env.run(&["status", n])).trim().to_owned();
    succeeds(&run(&["start", "a", "b"]));
    assert_eq!(
        (status("a"), status("b")),
        ("Running".into(), "Running".into())
    );
    succeeds(&run(&["stop", "--all"]));
    assert_eq!(
        (status("a"), status("b")),
        ("Stopped".into(), "Stopped".into())
    );
    succeeds(&run(&["restart", "--all"]));
    assert_eq!(
        (status("a"), status("b")),
        ("Running".into(), "Running".into())
    );
    // A running machine is refused by rm before any question.
    fails_with(&env.run(&["rm", "a"]), "is running");
    succeeds(&run(&["stop", "a", "b"]));
    // Unknown names are refused before anything is done.
    fails_with(&run(&["start", "a", "nope"]), "no machine named \"nope\"");
    assert_eq!(status("a"), "Stopped");
    usage_error(&run(&["stop"]));
    usage_error(&run(&["start", "--all", "a"]));
    succeeds(&env.run(&["rm", "-y", "--all"]));
    let o = run(&["stop", "--all"]);
    succeeds(&o);
    assert!(stderr(&o).contains("No machines."), "{}", stderr(&o));
}

#[test]
fn ls_quiet_prints_names_only() {
    let env = Env::new();
    succeeds(&env.run(&["ls", "-q"]));
    assert_eq!(stdout(&env.run(&["ls", "-q"])), "");
    succeeds(&create(&env, "b", &[]));
    succeeds(&create(&env, "a", &[]));
    assert_eq!(stdout(&env.run(&["ls", "--quiet"])), "a\nb\n");
    usage_error(&env.run(&["ls", "-q", "--json"]));
}

#[test]
fn ssh_takes_a_command_without_a_double_dash() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    // Parsed as a command for a stopped machine: the error is the machine's, not usage.
    for args in [
        &["ssh", "dev", "docker", "ps", "-a"][..],
        &["ssh", "dev", "--", "docker", "ps"],
        &["ssh", "-t", "dev", "tty"],
        &["ssh", "-T", "--workdir", "/tmp", "dev", "ls"],
        &["ssh", "-tt", "dev"],
    ] {
        fails_with(&env.run(args), "not running");
    }
    usage_error(&env.run(&["ssh", "-t", "-T", "dev"]));
    usage_error(&env.run(&["ssh"]));
    fails_with(&env.run(&["ssh", "nope", "true"]), "no machine named");
}

#[test]
fn ssh_config_is_read_by_openssh() {
    let env = Env::new();
    // A qemu machine has its address from create on; `ssh -G` only resolves the config.
    let o = env.run(&[
        "create",
        "--driver",
        "qemu",
        "--no-share",
        "--cpus",
        "1",
        "--memory",
        "512",
        "--disk-size",
        "2G",
        "dev",
    ]);
    succeeds(&o);
    let o = env.run(&["ssh-config", "dev"]);
    succeeds(&o);
    let config = stdout(&o);
    let ip = stdout(&env.run(&["ip", "dev"])).trim().to_owned();
    let dir = std::fs::canonicalize(env.machine_dir("dev")).unwrap();
    let known = std::fs::read_to_string(dir.join("known_hosts")).unwrap();
    let host_key = std::fs::read_to_string(dir.join("ssh_host_ed25519_key.pub")).unwrap();
    assert_eq!(known, format!("devbox-dev {}\n", host_key.trim()));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &config).unwrap();
    let o = std::process::Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(file.path())
        .arg("dev")
        .output()
        .expect("OpenSSH's client (.ci/install-deps installs it)");
    assert!(o.status.success(), "{}", stderr(&o));
    let resolved = stdout(&o);
    for line in [
        format!("hostname {ip}"),
        "user root".to_owned(),
        "port 22".to_owned(),
        "stricthostkeychecking true".to_owned(),
        "hostkeyalias devbox-dev".to_owned(),
        format!("userknownhostsfile {}", dir.join("known_hosts").display()),
        format!("identityfile {}", dir.join("id_ed25519").display()),
    ] {
        assert!(
            resolved.lines().any(|l| l == line),
            "{line:?} not in\n{resolved}\nfrom\n{config}"
        );
    }
    // Every machine without a name; an unknown one is an error.
    succeeds(&env.run(&[
        "create",
        "--driver",
        "qemu",
        "--no-share",
        "--cpus",
        "1",
        "--memory",
        "512",
        "--disk-size",
        "2G",
        "two",
    ]));
    let all = stdout(&env.run(&["ssh-config"]));
    assert!(
        all.contains("Host dev\n") && all.contains("Host two\n"),
        "{all}"
    );
    fails_with(&env.run(&["ssh-config", "nope"]), "no machine named");
}

#[test]
fn cp_refuses_bad_input_before_touching_anything() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let f = file.to_str().unwrap();
    let d = tmp.path().to_str().unwrap();
    fails_with(&env.run(&["cp", f, "/tmp/elsewhere"]), "names a machine");
    fails_with(&env.run(&["cp", "dev:/a", "dev:/b"]), "both");
    fails_with(&env.run(&["cp", f, "dev:"]), "must not be empty");
    fails_with(
        &env.run(&["cp", f, "nope:/tmp/"]),
        "no machine named \"nope\"",
    );
    let missing = tmp.path().join("missing");
    fails_with(
        &env.run(&["cp", missing.to_str().unwrap(), "dev:/tmp/"]),
        &missing.display().to_string(),
    );
    let o = env.run(&["cp", d, "dev:/tmp/"]);
    fails_with(&o, "is a directory");
    assert!(stderr(&o).contains("-r"), "{}", stderr(&o));
    fails_with(&env.run(&["cp", f, "dev:/tmp/"]), "not running");
    fails_with(&env.run(&["cp", "-r", "dev:/tmp", d]), "not running");
    usage_error(&env.run(&["cp", f]));
    // Nothing was left on the host side.
    let left: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, vec![file]);
}

#[test]
fn completion_scripts_are_golden() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let o = env.run(&["completion", shell]);
        succeeds(&o);
        support::golden("completion", shell, &stdout(&o));
    }
}

#[test]
fn bash_and_fish_complete_verbs_and_machine_names() {
    let env = Env::new();
    succeeds(&create(&env, "alpha", &[]));
    succeeds(&create(&env, "beta", &[]));
    let bin = tempfile::tempdir().unwrap();
    let path = path_with_devbox(bin.path());
    let bash = |words: &str| -> Vec<String> {
        let script = format!(
            "source <(devbox completion bash)\nCOMP_WORDS=({words})\nCOMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\nCOMP_TYPE=9\n_clap_complete_devbox devbox \"${{COMP_WORDS[COMP_CWORD]}}\" x\nprintf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let o = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("PATH", &path)
            .env("DEVBOX_HOME", &env.home)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).lines().map(|l| l.trim().to_owned()).collect()
    };
    let verbs = bash("devbox ''");
    for v in ["create", "ssh", "use", "ssh-config", "cp"] {
        assert!(verbs.contains(&v.to_owned()), "{v} not in {verbs:?}");
    }
    assert!(
        !verbs.iter().any(|v| v.contains("__supervise")),
        "{verbs:?}"
    );
    for verb in [
        "ssh",
        "start",
        "stop",
        "rm",
        "use",
        "env",
        "status",
        "ssh-config",
        "logs",
    ] {
        let names = bash(&format!("devbox {verb} ''"));
        assert!(
            names.contains(&"alpha".to_owned()) && names.contains(&"beta".to_owned()),
            "{verb}: {names:?}"
        );
    }
    assert_eq!(bash("devbox ssh al"), vec!["alpha".to_owned()]);

    let o = std::process::Command::new("fish")
        .arg("-c")
        .arg("devbox completion fish | source; complete -C 'devbox stop '")
        .env("PATH", &path)
        .env("DEVBOX_HOME", &env.home)
        .output()
        .expect("fish (.ci/install-deps installs it)");
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = stdout(&o)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"alpha".into()) && names.contains(&"beta".into()),
        "{names:?}"
    );
}
