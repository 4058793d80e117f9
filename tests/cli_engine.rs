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
fn docker_ipv6_keys_name_the_ipv6_flag_and_create_nothing() {
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
        fails_with(&out, "devbox's own");
        fails_with(&out, "--ipv6");
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
    fails_with(&out, "`--ipv6` at create");
}

#[test]
fn ipv6_needs_a_tap_driver_and_is_kept_in_the_spec() {
    let env = Env::new();
    // The fake driver has no link devbox routes (nor has vz, whose NIC is on vmnet's NAT).
    let out = env.run(&["create", "m", "--driver", "fake", "--no-share", "--ipv6"]);
    fails_with(
        &out,
        "--ipv6: the fake driver's network is not a link devbox routes",
    );
    fails_with(&out, "--driver qemu or kvm");
    assert!(!env.machine_dir("m").exists());
}

/// A self-signed root certificate and its key, as PEM (rcgen, the crate devbox's own CA uses).
fn root_ca(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Marks the test image as one whose guest installs `--engine-ca` certificates.
fn image_installs_engine_ca(env: &Env) {
    let path = env.cache.join("images/0123456789abcdef/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["engine_ca"] = serde_json::json!(true);
    std::fs::write(&path, m.to_string()).unwrap();
}

#[test]
fn bad_engine_ca_files_are_refused_naming_the_problem_and_create_nothing() {
    let env = Env::new();
    image_installs_engine_ca(&env);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = root_ca("Corp Proxy Root");
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let garbage =
        "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    let missing = dir.path().join("missing.pem").display().to_string();
    for (path, want) in [
        (missing.clone(), "cannot read"),
        (file("empty.pem", ""), "holds no PEM certificate"),
        (
            file("der.crt", "\u{30}\u{82}binary"),
            "openssl x509 -inform der",
        ),
        (
            file("with-key.pem", &format!("{cert}{key}")),
            "holds a private key: give the certificate alone",
        ),
        (
            file("garbage.pem", garbage),
            "is not a valid X.509 certificate",
        ),
    ] {
        let out = env.run(&[
            "create",
            "m",
            "--driver",
            "fake",
            "--no-share",
            "--engine-ca",
            &path,
        ]);
        fails_with(&out, &format!("invalid --engine-ca {path:?}"));
        fails_with(&out, want);
        assert!(
            support::cli::stderr(&out).contains("hint: example: --engine-ca"),
            "{path}: {}",
            support::cli::stderr(&out)
        );
        assert!(!env.machine_dir("m").exists(), "{path} left a machine");
    }
}

#[test]
fn engine_ca_certificates_reach_the_config_drive_and_need_an_image_that_installs_them() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = root_ca("Corp Proxy Root");
    let (b, _) = root_ca("Registry Root");
    let both = dir.path().join("both.pem");
    // Text around the blocks (as `openssl x509 -text` leaves it) is left out.
    std::fs::write(&both, format!("Corp Proxy Root\n{a}\nsome text\n{b}")).unwrap();
    let one = dir.path().join("a.pem");
    std::fs::write(&one, &a).unwrap();
    let both = both.display().to_string();
    let one = one.display().to_string();

    // The test image is one built before devbox installed them: refused, nothing created.
    let out = env.run(&[
        "create",
        "m",
        "--driver",
        "fake",
        "--no-share",
        "--engine-ca",
        &one,
    ]);
    fails_with(&out, "does not install --engine-ca certificates");
    fails_with(&out, "devbox upgrade");
    assert!(!env.machine_dir("m").exists());

    image_installs_engine_ca(&env);
    succeeds(&env.run(&[
        "create",
        "m",
        "--driver",
        "fake",
        "--no-share",
        "--engine-ca",
        &both,
        "--engine-ca",
        &one,
    ]));
    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(&["inspect", "m"]))).unwrap();
    let ca = inspect["spec"]["engine"]["ca"].as_array().unwrap().clone();
    assert_eq!(
        ca.len(),
        2,
        "two certificates, the repeated one once: {ca:?}"
    );
    assert_eq!(ca[0].as_str().unwrap(), a.trim_end());
    assert_eq!(ca[1].as_str().unwrap(), b.trim_end());

    // Each start writes them on the config drive, as one bundle.
    let started = env
        .cmd()
        .args(["start", "m"])
        .env("DEVBOX_DNS_UPSTREAMS", "127.0.0.1:53")
        .output()
        .unwrap();
    succeeds(&started);
    let drive = std::fs::read(env.machine_dir("m").join("config.tar")).unwrap();
    let mut tar = tar::Archive::new(drive.as_slice());
    let bundle = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("engine-ca.pem"))
        .map(|mut e| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            s
        })
        .expect("engine-ca.pem on the config drive");
    assert_eq!(bundle, format!("{}\n{}\n", a.trim_end(), b.trim_end()));
    succeeds(&env.run(&["stop", "m"]));

    // `edit --engine-unset ca` removes them all; a second time there is nothing to remove.
    succeeds(&env.run(&["edit", "m", "--engine-unset", "ca"]));
    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(&["inspect", "m"]))).unwrap();
    assert!(inspect["spec"]["engine"]["ca"].is_null(), "{inspect}");
    fails_with(
        &env.run(&["edit", "m", "--engine-unset", "ca"]),
        "has no such engine setting",
    );

    // A certificate broken by hand in machine.yaml: every read refuses it, naming the field.
    succeeds(&env.run(&["edit", "m", "--engine-ca", &one]));
    let yaml_path = env.machine_dir("m").join("machine.yaml");
    let yaml = std::fs::read_to_string(&yaml_path).unwrap();
    let line = a.lines().nth(3).unwrap();
    std::fs::write(&yaml_path, yaml.replacen(line, "AAAA", 1)).unwrap();
    fails_with(&env.run(&["inspect", "m"]), "engine.ca[0]");
}
