//! Tier 2: `devbox dns allow|deny|allowed` and `create --dns-domain` against a temporary
//! DEVBOX_HOME, no guest: what is stored in `machine.yaml`, and every refusal (a bare TLD, a
//! public suffix, an invalid name, another machine's domain, an unknown machine) with a
//! clear error, exit code 1, and nothing changed.

use std::process::Output;

mod support;
use support::cli::{Env, fails_with, stderr, stdout, succeeds};

fn create(env: &Env, name: &str, extra: &[&str]) -> Output {
    env.create_small(extra, name)
}

fn spec(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.machine_dir(name).join("machine.yaml")).unwrap()
}

fn allowed(env: &Env) -> Vec<(String, String)> {
    let o = env.run(&["dns", "allowed", "--json"]);
    succeeds(&o);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["schema"], 1);
    let rows = doc["domains"].as_array().unwrap();
    rows.iter()
        .map(|r| {
            (
                r["domain"].as_str().unwrap().to_string(),
                r["machine"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn create_with_dns_domains_stores_them() {
    let env = Env::new();
    let o = create(
        &env,
        "web",
        &[
            "--dns-domain",
            "Synbioz.dev",
            "--dns-domain",
            "mycorp.pages.dev",
        ],
    );
    succeeds(&o);
    assert!(
        stderr(&o).contains("mycorp.pages.dev, synbioz.dev"),
        "{}",
        stderr(&o)
    );
    let yaml = spec(&env, "web");
    assert!(
        yaml.contains("dns_domains:\n- mycorp.pages.dev\n- synbioz.dev\n"),
        "{yaml}"
    );
    assert_eq!(
        allowed(&env),
        [
            ("mycorp.pages.dev".into(), "web".into()),
            ("synbioz.dev".into(), "web".into())
        ]
    );
    // Without allowances the field is left out of machine.yaml altogether.
    succeeds(&create(&env, "plain", &[]));
    assert!(!spec(&env, "plain").contains("dns_domains"));
}

#[test]
fn create_refuses_bad_dns_domains_and_creates_nothing() {
    let env = Env::new();
    succeeds(&create(&env, "work", &[]));
    for (domain, why) in [
        ("dev", "is a public suffix"),
        ("pages.dev", "is a public suffix"),
        ("co.uk", "not under the machine's TLD"),
        ("bad_name.dev", "not a valid domain name"),
        ("a..dev", "not a valid domain name"),
        ("api.work.dev", "inside machine `work`'s domain"),
        ("x.web.dev", "inside the machine's own domain"),
    ] {
        let o = create(&env, "web", &["--dns-domain", domain]);
        fails_with(&o, "cannot allow DNS domain");
        fails_with(&o, why);
        assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
        assert!(
            !env.machine_dir("web").exists(),
            "{domain}: nothing created"
        );
    }
    let o = create(&env, "web", &["--dns-domain", "pages.dev"]);
    assert!(stderr(&o).contains("yourname.pages.dev"), "{}", stderr(&o));
}

#[test]
fn allow_deny_and_list() {
    let env = Env::new();
    succeeds(&create(&env, "web", &[]));
    // With one machine, --machine may be left out.
    let o = env.run(&["dns", "allow", "synbioz.dev"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("Allowed synbioz.dev for machine web"),
        "{}",
        stderr(&o)
    );
    assert!(spec(&env, "web").contains("- synbioz.dev"));
    // Again: nothing to do, still a success.
    let o = env.run(&["dns", "allow", "SYNBIOZ.dev.", "--machine", "web"]);
    succeeds(&o);
    assert!(stderr(&o).contains("already allowed"), "{}", stderr(&o));
    assert_eq!(allowed(&env), [("synbioz.dev".into(), "web".into())]);

    succeeds(&create(&env, "api", &[]));
    // Two machines: which one?
    let o = env.run(&["dns", "allow", "example.dev"]);
    fails_with(&o, "several machines exist (api, web)");
    assert!(stderr(&o).contains("--machine"), "{}", stderr(&o));
    // The same domain may be allowed for a second machine: the first to serve it routes it.
    succeeds(&env.run(&["dns", "allow", "synbioz.dev", "--machine", "api"]));
    assert_eq!(
        allowed(&env),
        [
            ("synbioz.dev".into(), "api".into()),
            ("synbioz.dev".into(), "web".into())
        ]
    );
    let table = stdout(&env.run(&["dns", "allowed"]));
    assert!(
        table.contains("DOMAIN") && table.contains("synbioz.dev"),
        "{table}"
    );

    // deny without --machine takes it back from every machine.
    let o = env.run(&["dns", "deny", "synbioz.dev"]);
    succeeds(&o);
    assert!(stderr(&o).contains("api, web"), "{}", stderr(&o));
    assert!(allowed(&env).is_empty());
    assert!(!spec(&env, "web").contains("synbioz"));
    fails_with(
        &env.run(&["dns", "deny", "synbioz.dev"]),
        "synbioz.dev is not allowed for any machine",
    );
}

#[test]
fn allow_refuses_bad_input_and_changes_nothing() {
    let env = Env::new();
    succeeds(&create(&env, "web", &[]));
    succeeds(&create(&env, "work", &[]));
    let before = (spec(&env, "web"), spec(&env, "work"));
    for (args, why) in [
        (vec!["dev", "--machine", "web"], "`dev` is a public suffix"),
        (
            vec!["pages.dev", "--machine", "web"],
            "`pages.dev` is a public suffix",
        ),
        (
            vec!["github.io", "--machine", "web"],
            "not under the machine's TLD",
        ),
        (
            vec!["x-.dev", "--machine", "web"],
            "not a valid domain name",
        ),
        (
            vec!["a b.dev", "--machine", "web"],
            "not a valid domain name",
        ),
        (
            vec!["ok.work.dev", "--machine", "web"],
            "inside machine `work`'s domain",
        ),
        (
            vec!["synbioz.dev", "--machine", "nope"],
            "no machine named \"nope\"",
        ),
    ] {
        let mut full = vec!["dns", "allow"];
        full.extend(args.iter().copied());
        fails_with(&env.run(&full), why);
    }
    fails_with(
        &env.run(&["dns", "deny", "bad_name.dev"]),
        "not a valid domain name",
    );
    fails_with(
        &env.run(&["dns", "deny", "synbioz.dev", "--machine", "nope"]),
        "no machine named \"nope\"",
    );
    assert_eq!((spec(&env, "web"), spec(&env, "work")), before);

    let empty = Env::new();
    fails_with(
        &empty.run(&["dns", "allow", "synbioz.dev"]),
        "there is no machine to allow synbioz.dev for",
    );
}

#[test]
fn a_hand_edited_bad_allowance_is_caught_at_read() {
    let env = Env::new();
    succeeds(&create(&env, "web", &[]));
    let path = env.machine_dir("web").join("machine.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{yaml}dns_domains:\n- pages.dev\n")).unwrap();
    let o = env.run(&["inspect", "web"]);
    fails_with(&o, "dns_domains[0] is not valid");
    assert!(stderr(&o).contains("public suffix"), "{}", stderr(&o));
}

#[test]
fn private_tld_machines_can_allow_too() {
    let env = Env::new();
    succeeds(&create(
        &env,
        "shop",
        &["--tld", "test", "--dns-domain", "shop-assets.test"],
    ));
    assert_eq!(allowed(&env), [("shop-assets.test".into(), "shop".into())]);
    fails_with(
        &env.run(&["dns", "allow", "test", "--machine", "shop"]),
        "`test` is a public suffix",
    );
}
