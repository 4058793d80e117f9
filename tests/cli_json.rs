//! Tier 2: devbox's JSON documents and scripting output (issue #18 items 6 and 8) through the
//! real binary against a temporary DEVBOX_HOME, no guest: every document against its golden
//! file (`tests/golden/json/`, see docs/json.md), errors as JSON on stdout under `--json`,
//! `status`'s exit codes for each state, a broken `machine.yaml` shown with its cause,
//! `ls -q/--filter/--format` and their bad input, and `logs` with each source, `--tail`,
//! `--follow`, and escaping on a terminal only.

use std::io::{Read, Write};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::cli::{Env, fails_with, run_on_terminal, stderr, stdout, succeeds};
use support::golden;

fn create(env: &Env, name: &str) {
    succeeds(&env.run(&[
        "create",
        "--driver",
        "fake",
        "--no-share",
        "--cpus",
        "1",
        "--memory",
        "512",
        "--disk-size",
        "2G",
        "--",
        name,
    ]));
}

/// Breaks `name`'s machine.yaml as a bad hand edit would (a word where a number goes).
fn break_spec(env: &Env, name: &str) {
    let path = env.machine_dir(name).join("machine.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\ncpus: 1\n"), "{text}");
    std::fs::write(&path, text.replace("\ncpus: 1\n", "\ncpus: many\n")).unwrap();
}

/// A supervisor's `state.json` in `phase`.
fn write_state(env: &Env, name: &str, phase: &str, error: Option<&str>) {
    let state = serde_json::json!({
        "phase": phase, "step": phase, "supervisor_pid": 4242, "vm_pid": null,
        "accel": "tcg", "accel_reason": "test", "started": "2026-11-21T00:00:00Z",
        "ready": null, "error": error
    });
    std::fs::write(env.machine_dir(name).join("state.json"), state.to_string()).unwrap();
}

/// Holds `name`'s supervisor lock, as a live supervisor does, while the value lives.
fn hold_supervisor_lock(env: &Env, name: &str) -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::File::create(env.machine_dir(name).join("supervisor.lock")).unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

/// A document as printed (key order included), with this test's paths and the machines'
/// addresses (which depend on the host's routes) replaced by placeholders, for its golden
/// file.
fn normalised(env: &Env, o: &Output) -> String {
    json(o); // it parses
    let mut text = stdout(o);
    for name in ["dev", "broken"] {
        let ip = env.run(&["ip", name]);
        if ip.status.success() {
            text = text.replace(&format!("\"{}\"", stdout(&ip).trim()), "\"<ip>\"");
        }
    }
    text.replace(env.home.to_str().unwrap(), "$DEVBOX_HOME")
        .replace(env.cache.to_str().unwrap(), "$DEVBOX_CACHE")
}

#[track_caller]
fn exits(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

#[test]
fn every_document_matches_its_golden_file() {
    let env = Env::new();
    create(&env, "dev");
    create(&env, "broken");
    break_spec(&env, "broken");
    write_state(&env, "dev", "stopped", Some("powered off"));

    let docs: &[(&str, &[&str], i32)] = &[
        ("ls.json", &["ls", "--json"], 0),
        ("status-stopped.json", &["status", "dev", "--json"], 3),
        ("status-broken.json", &["status", "broken", "--json"], 7),
        ("env-unset.json", &["env", "--unset", "--json"], 0),
        ("dns-allowed.json", &["dns", "allowed", "--json"], 0),
        ("image-ls.json", &["image", "ls", "--json"], 0),
        (
            "error-unknown-machine.json",
            &["status", "nope", "--json"],
            1,
        ),
        ("error-not-running.json", &["env", "dev", "--json"], 1),
        (
            "error-filter.json",
            &["ls", "--json", "--filter", "colour=red"],
            1,
        ),
        ("error-usage.json", &["ls", "--json", "--bogus"], 2),
    ];
    for (file, args, code) in docs {
        let o = env.run(args);
        exits(&o, *code);
        golden("json", file, &normalised(&env, &o));
    }

    // inspect: a broken spec is an error document that carries the cause.
    let o = env.run(&["inspect", "broken"]);
    exits(&o, 1);
    let v = json(&o);
    assert_eq!(v["error"]["kind"], "invalid_spec");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("cpus"),
        "{v}"
    );
    // Host-dependent values (the KVM probe) aside.
    let v = json(&env.run(&["inspect", "dev"]));
    assert_eq!(
        (&v["schema"], &v["spec"]["cpus"], &v["driver"]["name"]),
        (&1.into(), &1.into(), &"fake".into())
    );
    assert!(v["spec_error"].is_null());
    // disk usage: the host file's allocated size depends on the filesystem.
    let v = json(&env.run(&["disk", "usage", "dev", "--json"]));
    assert_eq!((&v["schema"], &v["state"]), (&1.into(), &"stopped".into()));
}

#[test]
fn every_json_command_prints_an_unknown_machine_as_an_error_document() {
    let env = Env::new();
    for args in [
        &["ls", "--json", "--filter", "state=up"][..],
        &["status", "nope", "--json"],
        &["inspect", "nope"],
        &["env", "nope", "--json"],
        &["disk", "usage", "nope", "--json"],
    ] {
        let o = env.run(args);
        exits(&o, 1);
        let v = json(&o);
        assert_eq!(v["schema"], 1, "{args:?}");
        let kind = v["error"]["kind"].as_str().unwrap();
        let want = if args[0] == "ls" {
            "invalid_argument"
        } else {
            "unknown_machine"
        };
        assert_eq!(kind, want, "{args:?}");
        // The message on stderr too, for the person at the terminal.
        assert!(
            stderr(&o).contains(v["error"]["message"].as_str().unwrap()),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // Without --json, stdout stays empty.
    let o = env.run(&["status", "nope"]);
    fails_with(&o, "no machine named \"nope\"");
    assert!(o.stdout.is_empty());
}

#[test]
fn status_exit_codes_follow_the_state() {
    let env = Env::new();
    create(&env, "m");
    let status = |env: &Env| env.run(&["status", "m"]);
    let o = status(&env);
    exits(&o, 3);
    assert_eq!(stdout(&o).trim(), "Stopped");
    {
        let _lock = hold_supervisor_lock(&env, "m");
        write_state(&env, "m", "running", None);
        exits(&status(&env), 0);
        write_state(&env, "m", "starting", None);
        let o = status(&env);
        exits(&o, 6);
        assert_eq!(stdout(&o).trim(), "Starting");
        // A running machine whose spec breaks still runs: 0, with the cause.
        write_state(&env, "m", "running", None);
        break_spec(&env, "m");
        let o = status(&env);
        exits(&o, 0);
        assert!(stderr(&o).contains("cpus"), "{}", stderr(&o));
    }
    // The supervisor is gone, its state file says running: crashed.
    let o = status(&env);
    exits(&o, 7);
    let text = std::fs::read_to_string(env.machine_dir("m").join("machine.yaml")).unwrap();
    std::fs::write(
        env.machine_dir("m").join("machine.yaml"),
        text.replace("\ncpus: many\n", "\ncpus: 1\n"),
    )
    .unwrap();
    let o = status(&env);
    exits(&o, 4);
    assert_eq!(stdout(&o).trim(), "Crashed");
    write_state(&env, "m", "failed", Some("the guest did not boot"));
    let o = env.run(&["status", "m", "--json"]);
    exits(&o, 5);
    let v = json(&o);
    assert_eq!(
        (&v["state"], &v["runtime"]["error"]),
        (&"failed".into(), &"the guest did not boot".into())
    );
    fails_with(&env.run(&["status", "nope"]), "no machine named");
    exits(&env.run(&["status"]), 2);
}

#[test]
fn a_broken_spec_shows_its_cause_in_ls_and_status() {
    let env = Env::new();
    create(&env, "m");
    break_spec(&env, "m");
    let o = env.run(&["ls"]);
    succeeds(&o);
    let line = stdout(&o)
        .lines()
        .find(|l| l.starts_with("m "))
        .unwrap()
        .to_owned();
    assert!(
        line.contains("Stopped") && line.contains("machine.yaml:") && line.contains("cpus"),
        "{line}"
    );
    let o = env.run(&["status", "m"]);
    exits(&o, 7);
    assert_eq!(stdout(&o).trim(), "Stopped");
    assert!(
        stderr(&o).contains("does not load") && stderr(&o).contains("cpus"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
}

fn lines(o: &Output) -> Vec<String> {
    stdout(o).lines().map(str::to_owned).collect()
}

#[test]
fn ls_quiet_filter_and_format() {
    let env = Env::new();
    for n in ["web-1", "web-2", "db"] {
        create(&env, n);
    }
    let _lock = hold_supervisor_lock(&env, "web-2");
    write_state(&env, "web-2", "running", None);
    let ls = |args: &[&str]| {
        let mut all = vec!["ls"];
        all.extend_from_slice(args);
        let o = env.run(&all);
        succeeds(&o);
        o
    };
    assert_eq!(lines(&ls(&["-q"])), ["db", "web-1", "web-2"]);
    assert_eq!(
        lines(&ls(&["-q", "--filter", "name=web-*"])),
        ["web-1", "web-2"]
    );
    assert_eq!(
        lines(&ls(&[
            "-q",
            "--filter",
            "name=web-*",
            "--filter",
            "state=stopped"
        ])),
        ["web-1"]
    );
    // A repeated key: either value.
    assert_eq!(
        lines(&ls(&[
            "-q",
            "--filter",
            "name=db",
            "--filter",
            "name=web-2"
        ])),
        ["db", "web-2"]
    );
    assert_eq!(
        lines(&ls(&[
            "-q",
            "--filter",
            "state=Running",
            "--filter",
            "driver=fake"
        ])),
        ["web-2"]
    );
    assert!(ls(&["-q", "--filter", "driver=qemu"]).stdout.is_empty());
    let v = json(&ls(&["--json", "--filter", "state=running"]));
    assert_eq!(v["machines"].as_array().unwrap().len(), 1);
    assert_eq!(v["machines"][0]["name"], "web-2");
    let table = ls(&["--filter", "state=running"]);
    assert_eq!(lines(&table).len(), 2, "{}", stdout(&table));

    assert_eq!(
        lines(&ls(&["--format", "{{.Name}} {{.State}} {{.Driver}}"])),
        [
            "db Stopped fake",
            "web-1 Stopped fake",
            "web-2 Running fake"
        ]
    );
    let t = ls(&[
        "--format",
        "table {{.Name}}\\t{{.State}}\\t{{.CPUs}}",
        "--filter",
        "name=web-*",
    ]);
    let got = lines(&t);
    assert_eq!(got.len(), 3, "{got:?}");
    let cells: Vec<Vec<&str>> = got.iter().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        cells,
        [
            vec!["NAME", "STATE", "CPUS"],
            vec!["web-1", "Stopped", "1"],
            vec!["web-2", "Running", "1"]
        ]
    );
    // Columns are aligned: each starts at the same offset on every line.
    let col = |l: &str| l.find(['S', 'R']).unwrap();
    assert!(got.iter().all(|l| col(l) == col(&got[0])), "{got:?}");
}

#[test]
fn ls_bad_filters_and_formats_are_refused_with_the_choices() {
    let env = Env::new();
    create(&env, "m");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--filter", "colour=red"],
            "unknown --filter key \"colour\": the keys are state, driver, name",
        ),
        (
            &["--filter", "state=up"],
            "the values are stopped, starting, running, stopping, crashed, failed",
        ),
        (
            &["--filter", "driver=virtualbox"],
            "the values are qemu, kvm, vz, ssh, fake",
        ),
        (&["--filter", "running"], "expected KEY=VALUE"),
        (&["--filter", "name=[a"], "invalid --filter name=\"[a\""),
        (
            &["--format", "{{.Nmae}}"],
            "unknown field {{.Nmae}} in --format: the fields are {{.Name}}, {{.State}}",
        ),
        (
            &["--format", "{{json .}}"],
            "--format supports fields only (such as {{.Name}}), not {{json .}}",
        ),
        (&["--format", "{{.Name"], "unclosed {{"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["ls"];
        all.extend_from_slice(args);
        let o = env.run(&all);
        fails_with(&o, needle);
        assert!(stderr(&o).contains("hint: for example"), "{}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?}: {}", stdout(&o));
    }
    for args in [
        &["ls", "--format", "{{.Name}}", "--json"][..],
        &["ls", "--format", "{{.Name}}", "-q"],
    ] {
        exits(&env.run(args), 2);
    }
}

/// Machine `m` with a console log and a supervisor log (as a stopped machine keeps them).
fn with_logs(env: &Env) {
    create(env, "m");
    let dir = env.machine_dir("m");
    std::fs::write(
        dir.join("serial.log"),
        "boot 1\r\nline 2 \x1b]0;pwned\x07\x1b[2J\r\nline 3\r\n",
    )
    .unwrap();
    // The supervisor logs names the guest's containers chose: escape sequences too.
    std::fs::write(dir.join("supervisor.log"), "sup a\nsup b\nsup \x1b[31mc\n").unwrap();
}

#[test]
fn logs_sources_and_tail() {
    let env = Env::new();
    with_logs(&env);
    // Into a pipe: the bytes as written.
    let o = env.run(&["logs", "m"]);
    succeeds(&o);
    assert_eq!(
        o.stdout,
        b"boot 1\r\nline 2 \x1b]0;pwned\x07\x1b[2J\r\nline 3\r\n"
    );
    let o = env.run(&["logs", "m", "--tail", "1"]);
    succeeds(&o);
    assert_eq!(stdout(&o), "line 3\r\n");
    let o = env.run(&["logs", "m", "--source", "supervisor", "-n", "2"]);
    succeeds(&o);
    assert_eq!(stdout(&o), "sup b\nsup \x1b[31mc\n");
    let o = env.run(&["logs", "m", "--source", "supervisor", "--tail", "0"]);
    succeeds(&o);
    assert!(o.stdout.is_empty());

    // The docker log is the running guest's.
    let o = env.run(&["logs", "m", "--source", "docker"]);
    fails_with(&o, "the Docker engine's log is read from the running guest");
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    assert!(stderr(&o).contains("devbox start m"), "{}", stderr(&o));

    let o = env.run(&["logs", "m", "--source", "dockerd"]);
    exits(&o, 2);
    assert!(
        stderr(&o).contains("[possible values: console, supervisor, docker]"),
        "{}",
        stderr(&o)
    );
    exits(&env.run(&["logs", "m", "--tail", "-3"]), 2);
    exits(&env.run(&["logs", "m", "--tail", "many"]), 2);
    fails_with(
        &env.run(&["logs", "nope", "--source", "supervisor"]),
        "no machine named",
    );

    // A machine that never started has no log yet: said on stderr, not an error.
    create(&env, "fresh");
    let o = env.run(&["logs", "fresh", "--source", "supervisor"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("no supervisor log yet"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn logs_on_a_terminal_show_escape_sequences_instead_of_obeying_them() {
    let env = Env::new();
    with_logs(&env);
    for args in [
        &["logs", "m"][..],
        &["logs", "m", "--tail", "2"],
        &["logs", "m", "--source", "supervisor"],
    ] {
        let (code, out) = run_on_terminal(&env, args);
        assert_eq!(code, Some(0), "{args:?}");
        let text = String::from_utf8(out).unwrap();
        if args.len() == 2 {
            assert_eq!(
                text,
                "boot 1\nline 2 \\u{1b}]0;pwned\\u{7}\\u{1b}[2J\nline 3\n"
            );
        }
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?}: {text:?}"
        );
    }
    let (_, out) = run_on_terminal(&env, &["logs", "m", "--source", "supervisor"]);
    assert_eq!(out, b"sup a\nsup b\nsup \\u{1b}[31mc\n");
}

/// Reads `child`'s stdout until it holds `want`, or fails after 10 s.
fn read_until(out: &mut impl Read, got: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1024];
    while !got.contains(want) {
        assert!(Instant::now() < deadline, "no {want:?} in {got:?}");
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "logs --follow ended early: {got:?}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn logs_follow_prints_what_is_appended() {
    let env = Env::new();
    with_logs(&env);
    for (source, file) in [("console", "serial.log"), ("supervisor", "supervisor.log")] {
        let mut child = env
            .std_cmd()
            .args(["logs", "m", "--follow", "--tail", "1", "--source", source])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut got = String::new();
        let last = if source == "console" {
            "line 3"
        } else {
            "mc\n"
        };
        read_until(&mut out, &mut got, last);
        assert!(!got.contains("boot 1") && !got.contains("sup a"), "{got:?}");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(env.machine_dir("m").join(file))
            .unwrap();
        f.write_all(b"appended later\n").unwrap();
        read_until(&mut out, &mut got, "appended later\n");
        // Still following: the machine exists.
        assert!(child.try_wait().unwrap().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // A machine that never started: --follow waits for its first log.
    create(&env, "fresh");
    let mut child = env
        .std_cmd()
        .args(["logs", "fresh", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "--follow gave up");
    std::fs::write(env.machine_dir("fresh").join("serial.log"), "first boot\n").unwrap();
    let mut got = String::new();
    read_until(&mut out, &mut got, "first boot\n");
    child.kill().unwrap();
    child.wait().unwrap();
}
