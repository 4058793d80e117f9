//! A swarm across two machines (`devbox swarm`, issue #21): the shared machine manages it,
//! the second machine of `lifecycle::second_machine_gets_the_next_subnets` joins it (that
//! check boots the second machine; a boot of its own here would cost a minute more). Both
//! have the `bb:e2e` image, loaded on each. The swarm ports open between the two machines
//! and nothing else does; a stack's two-replica service lands on both nodes, its published
//! port answers on both machines' addresses, each node's container reaches the other's
//! through the overlay network by service name, and the manager's DNS names the service.
//! Leaving and removing leave no rule, no node and no record behind.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::machine::Machine;
use crate::support::guest::text;

const STACK: &str = "s";

/// The stack: `web`, two replicas one per node, each serving its own container id on 8080
/// through the routing mesh; `probe` on every node, to look across the overlay network.
const STACK_FILE: &str = r#"services:
  web:
    image: bb:e2e
    command: ["/bin/sh", "-c", "cat /etc/hostname > /www/index.html; exec /bin/httpd -f -p 80 -h /www"]
    ports: ["8080:80"]
    networks: [mesh]
    deploy:
      replicas: 2
      placement:
        max_replicas_per_node: 1
  probe:
    image: bb:e2e
    command: ["/bin/sleep", "3600"]
    networks: [mesh]
    deploy:
      mode: global
networks:
  mesh:
    driver: overlay
"#;

/// devbox's swarm rules in the namespace (`swarm dbxA dbxB` comments).
fn swarm_rules(m: &Machine) -> usize {
    let o = m.h.exec("nft", &["-j", "list", "table", "inet", "devbox"]);
    if !o.status.success() {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| {
            o["rule"]["comment"]
                .as_str()
                .is_some_and(|c| c.starts_with("swarm "))
        })
        .count()
}

/// The tag of the rule that marks the Docker-like firewall as this check's own.
const FIREWALL_MARK: &str = "e2e-swarm";

/// Sets the namespace up as Docker leaves a host (FORWARD policy DROP, a DOCKER-USER chain),
/// with both machines already running: the swarm then goes through devbox's DOCKER-USER
/// rules alone, none of the machines' own (which exist only for a machine started after the
/// chain).
fn docker_firewall_on(m: &Machine) {
    let ipt = |args: &[&str]| {
        let mut all = vec!["-w", "5"];
        all.extend_from_slice(args);
        m.h.exec_ok("iptables", &all);
    };
    ipt(&["-N", "DOCKER-USER"]);
    ipt(&[
        "-A",
        "DOCKER-USER",
        "-m",
        "comment",
        "--comment",
        FIREWALL_MARK,
        "-j",
        "RETURN",
    ]);
    ipt(&["-A", "FORWARD", "-j", "DOCKER-USER"]);
    ipt(&["-P", "FORWARD", "DROP"]);
}

/// Takes [`docker_firewall_on`]'s firewall away (only if it is this check's).
fn docker_firewall_off(m: &Machine) {
    let o = m.h.exec("iptables", &["-w", "5", "-S", "DOCKER-USER"]);
    if !text(&o.stdout).contains(FIREWALL_MARK) {
        return;
    }
    for args in [
        &["-P", "FORWARD", "ACCEPT"][..],
        &["-D", "FORWARD", "-j", "DOCKER-USER"],
        &["-F", "DOCKER-USER"],
        &["-X", "DOCKER-USER"],
    ] {
        let mut all = vec!["-w", "5"];
        all.extend_from_slice(args);
        m.h.exec_ok("iptables", &all);
    }
}

/// devbox's swarm rules in Docker's DOCKER-USER chain, where the namespace has one.
fn docker_user_pairs(m: &Machine) -> Option<usize> {
    let o = m.h.exec("iptables", &["-w", "5", "-S", "DOCKER-USER"]);
    o.status.success().then(|| {
        text(&o.stdout)
            .lines()
            .filter(|l| l.contains("devbox:swarm:"))
            .count()
    })
}

/// Whether `from`'s guest opens a TCP connection to `ip:port` (busybox nc, 3 s).
fn reaches(from: &Machine, ip: &str, port: u16) -> bool {
    let o = from.ssh_output(&format!("echo | nc -w 3 {ip} {port} >/dev/null 2>&1"));
    o.status.success()
}

/// Polls `what` until it holds, for at most `limit`; the failure names `describe()`.
fn wait(limit: Duration, mut what: impl FnMut() -> bool, describe: impl Fn() -> String) {
    let t = Instant::now();
    while !what() {
        assert!(t.elapsed() < limit, "after {limit:?}: {}", describe());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `devbox ARGS` is refused: exit 1 and `want` in its message.
#[track_caller]
fn refused(m: &Machine, args: &[&str], want: &str) {
    let o = m.devbox(args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: {err}");
}

pub fn two_machines_form_a_swarm(m: &Machine, second: &Machine) {
    let (ip1, ip2) = (
        m.ok(&["ip", &m.name]).trim().to_owned(),
        m.ok(&["ip", &second.name]).trim().to_owned(),
    );
    refused(
        m,
        &["swarm", "join", &second.name, "--manager", &m.name],
        &format!(
            "machine {} is not a swarm manager: it is in no swarm",
            m.name
        ),
    );
    assert_eq!(swarm_rules(m), 0);

    // From here to the end of `nothing_is_left_after_rm`, the host drops what it forwards
    // unless DOCKER-USER accepts it, as a host running Docker does.
    let docker_host = docker_user_pairs(m).is_none();
    if docker_host {
        docker_firewall_on(m);
    }
    let t = Instant::now();
    m.ok(&["swarm", "init", &m.name]);
    m.ok(&["swarm", "join", &second.name, "--manager", &m.name]);
    eprintln!(
        "[e2e] swarm init + join: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(swarm_rules(m), 4, "two protocols, both ways");
    eprintln!(
        "[e2e] swarm behind Docker's FORWARD policy DROP (DOCKER-USER): {}",
        if docker_host {
            "yes"
        } else {
            "no (the chain was there already)"
        }
    );
    assert_eq!(
        docker_user_pairs(m),
        Some(6),
        "{}",
        m.h.exec_ok("iptables", &["-S", "DOCKER-USER"])
    );
    refused(
        m,
        &["swarm", "join", &second.name, "--manager", &m.name],
        &format!("machine {} is already in a swarm", second.name),
    );
    refused(
        m,
        &["swarm", "join", &m.name, "--manager", &second.name],
        &format!(
            "machine {} is not a swarm manager: it is a worker",
            second.name
        ),
    );
    // The swarm ports and nothing else: the worker reaches the manager's 2377 and 7946, not
    // its SSH server.
    assert!(reaches(second, &ip1, 2377));
    assert!(reaches(second, &ip1, 7946));
    assert!(!reaches(second, &ip1, 22));
    let ls: serde_json::Value = serde_json::from_str(&m.ok(&["swarm", "ls", "--json"])).unwrap();
    let roles: Vec<(String, String)> = ls["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            (m.name.clone(), "manager".to_owned()),
            (second.name.clone(), "worker".to_owned())
        ]
    );

    let file = m.h.tmp().join("stack.yml");
    std::fs::write(&file, STACK_FILE).unwrap();
    m.docker_ok(&["stack", "deploy", "-c", file.to_str().unwrap(), STACK]);
    let web = format!("{STACK}_web");
    let nodes_of = |service: &str| -> BTreeSet<String> {
        m.docker_ok(&[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
        ])
        .lines()
        .filter(|l| l.contains(" Running"))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
    };
    let both: BTreeSet<String> = [m.name.clone(), second.name.clone()].into();
    for service in [web.clone(), format!("{STACK}_probe")] {
        wait(
            Duration::from_secs(180),
            || nodes_of(&service) == both,
            || format!("{service} on {:?}", nodes_of(&service)),
        );
    }

    // The routing mesh: each machine's address answers, and between them both replicas do.
    let mut served = BTreeSet::new();
    for ip in [&ip1, &ip2] {
        let mut seen = BTreeSet::new();
        wait(
            Duration::from_secs(60),
            || {
                let o = m.h.curl_output(&format!("http://{ip}:8080/"));
                if o.status.success() {
                    seen.insert(text(&o.stdout).trim().to_owned());
                }
                seen.len() == 2
            },
            || format!("replicas seen through {ip}:8080"),
        );
        served.extend(seen);
    }
    assert_eq!(served.len(), 2, "{served:?}");

    // Across the overlay: on each node, the probe finds both tasks by service name and
    // fetches each (one of them on the other node). Busybox's own nslookup resolves (its
    // static wget cannot), against Docker's embedded DNS.
    let fetch = format!(
        "for ip in $(nslookup tasks.{web} 127.0.0.11 | sed -n 's/^Address: //p' | grep -v '^127'); \
         do wget -q -O - http://$ip/; done"
    );
    for node in [m, second] {
        let probe = node.docker_ok(&["ps", "-q", "--filter", &format!("name={STACK}_probe")]);
        let got = std::cell::RefCell::new(BTreeSet::new());
        wait(
            Duration::from_secs(60),
            || {
                let o = node.docker(&["exec", &probe, "/bin/sh", "-c", &fetch]);
                *got.borrow_mut() = text(&o.stdout).lines().map(str::to_owned).collect();
                *got.borrow() == served
            },
            || format!("{} reached {:?} of {served:?}", node.name, got.borrow()),
        );
    }

    // The manager's DNS names the published service after both nodes.
    let tld = {
        let v: serde_json::Value = serde_json::from_str(&m.ok(&["inspect", &m.name])).unwrap();
        v["spec"]["tld"].as_str().unwrap().to_owned()
    };
    let mut want = vec![ip1.clone(), ip2.clone()];
    want.sort();
    for name in [
        format!("{web}.{}.{tld}", m.name),
        format!("web.{STACK}.{}.{tld}", m.name),
    ] {
        wait(
            Duration::from_secs(20),
            || {
                let mut got = m.h.dig(&name, "A").1;
                got.sort();
                got == want
            },
            || format!("{name}: {:?}", m.h.dig(&name, "A")),
        );
    }

    // Leaving: the worker goes, its rules go, the manager lists one node.
    m.docker_ok(&["stack", "rm", STACK]);
    m.ok(&["swarm", "leave", &second.name]);
    assert_eq!(swarm_rules(m), 0);
    assert_eq!(docker_user_pairs(m), Some(0));
    assert!(!reaches(second, &ip1, 2377));
    wait(
        Duration::from_secs(30),
        || m.docker_ok(&["node", "ls", "-q"]).lines().count() == 1,
        || m.docker_ok(&["node", "ls"]),
    );
    // Back in, for `rm` to take it out again (the caller stops and removes the machine).
    m.ok(&["swarm", "join", &second.name, "--manager", &m.name]);
    assert_eq!(swarm_rules(m), 4);
}

/// After the second machine's stop and `rm`: its rules went with its stop, the manager's
/// list lost it with its `rm`; the manager leaves, and nothing is left of the swarm.
pub fn nothing_is_left_after_rm(m: &Machine) {
    assert_eq!(swarm_rules(m), 0);
    assert_eq!(docker_user_pairs(m), Some(0), "the stop took them");
    docker_firewall_off(m);
    wait(
        Duration::from_secs(30),
        || m.docker_ok(&["node", "ls", "-q"]).lines().count() == 1,
        || m.docker_ok(&["node", "ls"]),
    );
    m.ok(&["swarm", "leave", &m.name]);
    assert_eq!(
        m.docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]),
        "inactive"
    );
    let ls: serde_json::Value = serde_json::from_str(&m.ok(&["swarm", "ls", "--json"])).unwrap();
    assert_eq!(ls["members"], serde_json::json!([]), "{ls}");
    assert!(!m.dir().join("swarm.json").exists());
}
