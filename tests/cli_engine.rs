//! Tier 2: docker-machine's engine flags at `create`, and the `engine:` settings of
//! `machine.yaml`, through the real binary against a temporary DEVBOX_HOME. Every bad value
//! is refused naming its flag (or its field), and leaves nothing created.

mod support;
use support::cli::{Env, fails_with, stdout, succeeds};

#[test]
fn bad_engine_flags_are_refused_naming_the_flag_and_create_nothing() {
    let env = Env::new();
    for (args, want) in [
        (
            &["--engine-label", "foo"][..],
            "invalid --engine-label \"foo\"",
        ),
        (
            &["--engine-opt", "no-such-key=1"],
            "\"no-such-key\" is not a daemon.json key",
        ),
        (
            &["--engine-opt", "debug=maybe"],
            "\"debug\" is true or false, not maybe",
        ),
        (
            &["--engine-opt", "max-concurrent-downloads=many"],
            "is an integer",
        ),
        (
            &["--engine-opt", "bip=10.1.0.1/24"],
            "use `--docker-subnet` at create",
        ),
        (
            &["--engine-opt", "default-address-pools=[]"],
            "devbox's own",
        ),
        (&["--engine-opt", "dns=8.8.8.8"], "devbox's own"),
        (
            &["--engine-insecure-registry", "http://registry.test"],
            "invalid --engine-insecure-registry",
        ),
        (
            &["--engine-insecure-registry", "registry.test:0"],
            "HOST[:PORT]",
        ),
        (
            &["--engine-registry-mirror", "mirror.test"],
            "invalid --engine-registry-mirror",
        ),
        (
            &["--engine-env", "HTTPS_PROXY"],
            "invalid --engine-env \"HTTPS_PROXY\"",
        ),
        (
            &["--engine-env", "$(reboot)=1"],
            "not an environment variable name",
        ),
        (
            &["--engine-storage-driver", "overlay2 --debug"],
            "invalid --engine-storage-driver",
        ),
    ] {
        let mut all = vec!["create", "m", "--driver", "fake", "--no-share"];
        all.extend(args);
        let out = env.run(&all);
        fails_with(&out, want);
        assert!(
            support::cli::stderr(&out).contains("hint: example:"),
            "{args:?}: {}",
            support::cli::stderr(&out)
        );
        assert!(!env.machine_dir("m").exists(), "{args:?} left a machine");
    }
}

#[test]
fn engine_flags_are_kept_in_the_spec_and_checked_at_every_read() {
    let env = Env::new();
    succeeds(&env.run(&[
        "create",
        "m",
        "--driver",
        "fake",
        "--no-share",
        "--engine-label",
        "provider=devbox",
        "--engine-insecure-registry",
        "registry.test:5000",
        "--engine-registry-mirror",
        "https://mirror.test",
        "--engine-opt",
        "log-level=debug",
        "--engine-env",
        "HTTPS_PROXY=http://proxy.test:3128",
        "--engine-storage-driver",
        "overlay2",
    ]));
    let yaml = std::fs::read_to_string(env.machine_dir("m").join("machine.yaml")).unwrap();
    assert!(yaml.contains("engine:"), "{yaml}");
    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(&["inspect", "m"]))).unwrap();
    let engine = &inspect["spec"]["engine"];
    assert_eq!(
        engine["daemon"]["labels"],
        serde_json::json!(["provider=devbox"])
    );
    assert_eq!(
        engine["daemon"]["insecure-registries"],
        serde_json::json!(["registry.test:5000"])
    );
    assert_eq!(engine["daemon"]["log-level"], "debug");
    assert_eq!(engine["env"]["HTTPS_PROXY"], "http://proxy.test:3128");

    // A key devbox owns, written into machine.yaml by hand: every read refuses it.
    let tampered = yaml.replace("  daemon:\n", "  daemon:\n    bip: 10.9.0.1/24\n");
    assert_ne!(tampered, yaml);
    std::fs::write(env.machine_dir("m").join("machine.yaml"), tampered).unwrap();
    let out = env.run(&["inspect", "m"]);
    fails_with(&out, "engine.daemon.bip");
    fails_with(&out, "--docker-subnet");
}

#[test]
fn ipv6_is_refused_as_not_supported_yet_and_creates_nothing() {
    let env = Env::new();
    for opt in ["ipv6=true", "fixed-cidr-v6=fd00:db8:1::/64"] {
        let out = env.run(&[
            "create",
            "m",
            "--driver",
            "fake",
            "--no-share",
            "--engine-opt",
            opt,
        ]);
        fails_with(&out, "IPv6 is not supported yet");
        fails_with(&out, "hint: leave Docker's IPv6 off");
        assert!(!env.machine_dir("m").exists(), "{opt} left a machine");
    }
    // Written into machine.yaml by hand: every read refuses it the same way.
    succeeds(&env.run(&["create", "m", "--driver", "fake", "--no-share"]));
    let yaml_path = env.machine_dir("m").join("machine.yaml");
    let yaml = std::fs::read_to_string(&yaml_path).unwrap();
    std::fs::write(
        &yaml_path,
        format!("{yaml}engine:\n  daemon:\n    ipv6: true\n"),
    )
    .unwrap();
    let out = env.run(&["inspect", "m"]);
    fails_with(&out, "engine.daemon.ipv6");
    fails_with(&out, "IPv6 is not supported yet");
}
