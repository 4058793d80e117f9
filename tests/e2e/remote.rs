//! A host adopted over SSH (`create --driver ssh`, issue #21). The shared machine plays the
//! remote host: it already has Docker, and devbox writes no settings to it (that needs
//! systemd, which the guest lacks: `tests/remote_adopt.rs` covers installation, settings and
//! restart as a recording), so adopting it does not disturb it.

use std::time::Instant;

use crate::harness::bounded;
use crate::machine::Machine;
use crate::support::guest::text;

const ADOPTED: &str = "adopted";

/// Created with the host key checked, started, driven through `devbox env`, the Docker context
/// and `devbox ssh`; a stop leaves the host and its containers running; `rm` leaves nothing of
/// it here. A fingerprint the host does not have is refused before anything is created.
pub fn an_adopted_host_is_driven_like_a_machine(m: &Machine) {
    let r = m.sibling(ADOPTED);
    let ip = m.ok(&["ip", &m.name]).trim().to_owned();
    let key = m.dir().join("id_ed25519");
    let key = key.to_str().unwrap();
    let host_pub = std::fs::read_to_string(m.dir().join("ssh_host_ed25519_key.pub")).unwrap();
    let real_fp = devbox::ssh::fingerprint(&host_pub).unwrap();
    m.busybox_image();
    let probe = format!("{ADOPTED}-probe");
    let _ = m.docker(&["rm", "-f", &probe]);
    m.docker_ok(&["run", "-d", "--name", &probe, "bb:e2e", "sleep", "3600"]);
    let create = |expected: &str| {
        m.devbox(&[
            "create",
            ADOPTED,
            "--driver",
            "ssh",
            "--ssh-host",
            &ip,
            "--ssh-key",
            key,
            "--ssh-host-key",
            expected,
        ])
    };

    let other = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    let refused = create(other);
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains(other) && err.contains(&real_fp), "{err}");
    assert!(
        !r.dir().exists(),
        "a refused create left {}",
        r.dir().display()
    );

    let t = Instant::now();
    let created = create(&real_fp);
    assert!(
        created.status.success(),
        "create: {}",
        text(&created.stderr)
    );
    let create_s = t.elapsed().as_secs_f64();
    m.ok(&["start", ADOPTED]);
    println!(
        "figure: adopting a host that already has Docker: create {create_s:.1} s, create + \
         start {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The host's containers, through `devbox env`'s DOCKER_HOST and through the context.
    let names = r.docker_ok(&["ps", "--format", "{{.Names}}"]);
    assert!(names.lines().any(|n| n == probe), "{names}");
    let via_context = bounded("docker")
        .args([
            "--context",
            &format!("devbox-{ADOPTED}"),
            "ps",
            "--format",
            "{{.Names}}",
        ])
        .env("DOCKER_CONFIG", m.h.docker_config())
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    assert!(
        text(&via_context.stdout).lines().any(|n| n == probe),
        "docker --context: {}",
        text(&via_context.stderr)
    );
    assert_eq!(r.ssh("cat /etc/hostname"), m.ssh("cat /etc/hostname"));

    // The host's containers by name, from the adopted machine's own DNS server, on port 53 of
    // a link of its lease that is up (for systemd-resolved's per-link settings), answered
    // with their addresses on that host.
    let inspect: serde_json::Value = serde_json::from_str(&m.ok(&["inspect", ADOPTED])).unwrap();
    let index = inspect["spec"]["network"]["index"].as_u64().unwrap();
    let tld = inspect["spec"]["tld"].as_str().unwrap().to_owned();
    let link = format!("dbx{index}");
    let dns: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.dir().join("dns.json")).unwrap()).unwrap();
    assert_eq!(dns["link"], link.as_str(), "{dns}");
    let server: std::net::SocketAddr = dns["server"].as_str().unwrap().parse().unwrap();
    assert_eq!(server.to_string(), format!("192.168.{}.1:53", 64 + index));
    let shown = m.h.exec_ok("ip", &["link", "show", &link]);
    assert!(shown.contains("LOWER_UP"), "{shown}");
    let (server_ip, port) = (server.ip().to_string(), server.port().to_string());
    let probe_ip = m.docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &probe,
    ]);
    let dig = |name: &str| {
        m.h.exec_ok(
            "dig",
            &[
                &format!("@{server_ip}"),
                "-p",
                &port,
                "+short",
                "+tries=1",
                "+time=2",
                name,
                "A",
            ],
        )
        .trim()
        .to_owned()
    };
    let name = format!("{probe}.{ADOPTED}.{tld}");
    let t = Instant::now();
    while dig(&name) != probe_ip {
        assert!(
            t.elapsed().as_secs() < 20,
            "{name}: {:?}, want {probe_ip}",
            dig(&name)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(dig(&format!("{ADOPTED}.{tld}")), ip);

    // Its Docker subnets are routed via its address, which this host reaches directly (on
    // dbx0 here): a container on a network of the adopted machine's bridge subnet answers by
    // IP from the host.
    let bridge = inspect["spec"]["docker"]["bridge"]
        .as_str()
        .unwrap()
        .to_owned();
    let dest: ipnet::Ipv4Net = bridge.parse::<ipnet::Ipv4Net>().unwrap().trunc();
    let octets = dest.network().octets();
    let (subnet, web_ip) = (
        format!("{}.{}.5.0/24", octets[0], octets[1]),
        format!("{}.{}.5.10", octets[0], octets[1]),
    );
    let routes = m.h.routes();
    assert!(
        routes.contains(&format!("{dest} via {ip} dev dbx0")),
        "{routes}"
    );
    let (net, web) = (format!("{ADOPTED}-net"), format!("{ADOPTED}-web"));
    let _ = m.docker(&["rm", "-f", &web]);
    let _ = m.docker(&["network", "rm", &net]);
    r.docker_ok(&["network", "create", "--subnet", &subnet, &net]);
    r.docker_ok(&[
        "run",
        "-d",
        "--name",
        &web,
        "--network",
        &net,
        "--ip",
        &web_ip,
        "bb:e2e",
        "/bin/httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    assert_eq!(m.h.curl(&format!("http://{web_ip}/")), "hello from web\n");
    let ls: serde_json::Value = serde_json::from_str(&m.ok(&["ls", "--json"])).unwrap();
    let row = ls["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == ADOPTED)
        .unwrap()
        .clone();
    assert_eq!(row["driver"], "ssh");
    assert_eq!(row["ip"], ip.as_str());
    assert_eq!(row["state"], "running");
    assert!(row["cpus"].is_null(), "{row}");

    // A stop lets go of the host: it keeps running, and so does its container; the routes go.
    m.ok(&["stop", ADOPTED]);
    let routes = m.h.routes();
    assert!(!routes.contains(&dest.to_string()), "{routes}");
    assert!(
        !m.h.exec("ip", &["link", "show", &link]).status.success(),
        "the stop removes {link}"
    );
    assert_eq!(r.status().to_lowercase(), "stopped");
    assert_eq!(m.status().to_lowercase(), "running");
    let names = m.docker_ok(&["ps", "--format", "{{.Names}}"]);
    assert!(names.lines().any(|n| n == probe), "{names}");

    m.ok(&["rm", "-y", ADOPTED]);
    assert!(!r.dir().exists());
    let contexts = bounded("docker")
        .args(["context", "ls", "--format", "{{.Name}}"])
        .env("DOCKER_CONFIG", m.h.docker_config())
        .output()
        .unwrap();
    assert!(
        !text(&contexts.stdout).contains(&format!("devbox-{ADOPTED}")),
        "{}",
        text(&contexts.stdout)
    );
    m.docker_ok(&["rm", "-f", &probe, &web]);
    m.docker_ok(&["network", "rm", &net]);
}
