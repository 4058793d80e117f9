//! The machine and the world outside the host: outbound NAT to "the internet" (a namespace on
//! TEST-NET-3 behind the run's namespace, `harness::Internet`), also on a host whose firewall
//! is Docker's (FORWARD policy DROP with DOCKER-USER); ports containers publish answering on
//! the host's localhost; docker-machine's engine flags reaching the guest's Docker.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::MACHINE;
use crate::harness::{INTERNET_NAME, INTERNET_PAGE, REGISTRY_PORT, TLS_REGISTRY_PORT};
use crate::machine::Machine;
use crate::support::guest::text;

/// The bound on a port opening or closing after the `docker` command that caused it (the
/// goal is 1 s; the printed figure says how long it took).
const PORT_BOUND: Duration = Duration::from_secs(10);

/// From the guest and from a container, by name, through devbox's NAT: HTTP to the internet,
/// and `docker push` then `docker pull` through the internet's registry (an insecure one,
/// set with `--engine-insecure-registry` at create).
pub fn check_outbound_nat(m: &Machine) {
    m.busybox_image();
    m.h.internet();
    assert_eq!(
        m.h.nat_rules("dbx0"),
        Some(3),
        "the running machine has its NAT rules"
    );
    let url = format!("http://{INTERNET_NAME}/");
    assert_eq!(
        m.ssh(&format!("busybox wget -q -O - {url}")),
        INTERNET_PAGE,
        "the guest reaches the internet"
    );
    assert_eq!(
        m.docker_ok(&["run", "--rm", "bb:e2e", "/bin/wget", "-q", "-O", "-", &url]),
        INTERNET_PAGE.trim_end(),
        "a container reaches the internet"
    );
    let remote = format!("{INTERNET_NAME}:{REGISTRY_PORT}/bb:e2e");
    m.docker_ok(&["tag", "bb:e2e", &remote]);
    let t = Instant::now();
    m.docker_ok(&["push", &remote]);
    m.docker_ok(&["rmi", &remote]);
    m.docker_ok(&["pull", &remote]);
    eprintln!(
        "[e2e] docker push + pull through the internet's registry: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    m.docker_ok(&["rmi", &remote]);

    // The TLS registry's certificate comes from a private CA, given at create with
    // `--engine-ca`: dockerd verifies it (the registry is not an insecure one), and the CA is
    // offered to containers at /etc/devbox/engine-ca.pem.
    let ca = std::fs::read_to_string(crate::harness::internet_ca(m.h.tmp())).unwrap();
    assert_eq!(
        m.ssh("cat /etc/devbox/engine-ca.pem").trim_end(),
        ca.trim_end(),
        "the guest holds the --engine-ca certificate"
    );
    let remote = format!("{INTERNET_NAME}:{TLS_REGISTRY_PORT}/bb:e2e");
    m.docker_ok(&["tag", "bb:e2e", &remote]);
    let t = Instant::now();
    m.docker_ok(&["push", &remote]);
    m.docker_ok(&["rmi", &remote]);
    m.docker_ok(&["pull", &remote]);
    eprintln!(
        "[e2e] docker push + pull through the internet's TLS registry (--engine-ca): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    m.docker_ok(&["rmi", &remote]);
}

/// iptables in the run's namespace, asserting success.
fn iptables(m: &Machine, args: &[&str]) -> String {
    m.h.exec_ok("iptables", args)
}

/// Rules tagged `devbox:dbx0` in the namespace's DOCKER-USER chain.
fn tagged(m: &Machine) -> usize {
    iptables(m, &["-S", "DOCKER-USER"])
        .matches("devbox:dbx0")
        .count()
}

/// Puts the namespace's firewall back as the run had it (no DOCKER-USER, FORWARD accepts,
/// forwarding off), even when the check fails.
struct DockerFirewall<'a>(&'a Machine);

impl Drop for DockerFirewall<'_> {
    fn drop(&mut self) {
        let h = self.0.h;
        let _ = h.exec("iptables", &["-P", "FORWARD", "ACCEPT"]);
        let _ = h.exec("iptables", &["-D", "FORWARD", "-j", "DOCKER-USER"]);
        let _ = h.exec("iptables", &["-F", "DOCKER-USER"]);
        let _ = h.exec("iptables", &["-X", "DOCKER-USER"]);
        let _ = h.exec("sysctl", &["-qw", "net.ipv4.ip_forward=0"]);
    }
}

/// Stop removes the NAT and puts forwarding back; then, on a host set up as Docker leaves
/// one (forwarding on, FORWARD policy DROP, a DOCKER-USER chain), the machine still gets
/// out through two tagged DOCKER-USER rules, which its stop removes again, leaving Docker's
/// policy and forwarding as they were. Leaves the machine stopped.
pub fn check_nat_on_a_docker_host(m: &Machine) {
    m.busybox_image();
    m.h.internet();
    let h = m.h;
    assert_eq!(h.ip_forward(), "1", "devbox turned forwarding on");
    m.ok(&["stop", MACHINE]);
    assert_eq!(h.nat_rules("dbx0"), None, "stop removes devbox's table");
    assert_eq!(
        h.ip_forward(),
        "0",
        "the last stop puts forwarding back (the harness turned it off)"
    );

    let _restore = DockerFirewall(m);
    h.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    iptables(m, &["-N", "DOCKER-USER"]);
    iptables(m, &["-A", "DOCKER-USER", "-j", "RETURN"]);
    iptables(m, &["-A", "FORWARD", "-j", "DOCKER-USER"]);
    iptables(m, &["-P", "FORWARD", "DROP"]);
    m.ok(&["start", MACHINE, "--timeout", "600"]);
    assert_eq!(tagged(m), 2, "{}", iptables(m, &["-S", "DOCKER-USER"]));
    let url = format!("http://{INTERNET_NAME}/");
    assert_eq!(
        m.docker_ok(&["run", "--rm", "bb:e2e", "/bin/wget", "-q", "-O", "-", &url]),
        INTERNET_PAGE.trim_end(),
        "a container reaches the internet through Docker's FORWARD policy DROP"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.dir().join("state.json")).unwrap())
            .unwrap();
    assert!(
        state.get("warnings").is_none(),
        "a Docker host works by itself, without a warning: {state}"
    );

    m.ok(&["stop", MACHINE]);
    assert_eq!(tagged(m), 0, "stop removes the DOCKER-USER rules");
    assert_eq!(h.nat_rules("dbx0"), None);
    assert_eq!(
        h.ip_forward(),
        "1",
        "forwarding was on before devbox: left on"
    );
    assert!(
        iptables(m, &["-S", "FORWARD"]).contains("-P FORWARD DROP"),
        "Docker's policy is untouched"
    );
}

/// Polls `url` from the host side until it answers with `body` (`Some`) or stops answering
/// (`None`); the time it took.
fn await_port(m: &Machine, url: &str, body: Option<&str>) -> Duration {
    let t = Instant::now();
    loop {
        let o = m.h.exec("curl", &["-sS", "--max-time", "2", url]);
        let answered = o.status.success() && body.is_some_and(|b| text(&o.stdout) == b);
        let gone = !o.status.success() && body.is_none();
        if answered || gone {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < PORT_BOUND,
            "{url}: still {} after {PORT_BOUND:?} ({} {})",
            if body.is_some() { "closed" } else { "open" },
            text(&o.stdout),
            text(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Something of another program's on the host side's port 8082, for the check's duration.
struct Squatter(Child);

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `docker run -p` answers on the host's 127.0.0.1 and ::1 (also a port published on the
/// guest's loopback), follows the container's stop, and a port another program holds is a
/// warning in `status` and `inspect` while the container's other port works.
pub fn check_published_ports(m: &Machine) {
    m.busybox_image();
    let page = "hello from web\n";
    let httpd = ["bb:e2e", "/bin/httpd", "-f", "-p", "80", "-h", "/www"];
    let mut run = vec!["run", "-d", "--name", "published"];
    run.extend(["-p", "8080:80", "-p", "127.0.0.1:8081:80"]);
    run.extend(httpd);
    m.docker_ok(&run);
    let opened = await_port(m, "http://127.0.0.1:8080/", Some(page));
    eprintln!("[e2e] published port answered {opened:?} after `docker run` returned");
    assert_eq!(
        m.h.exec_ok(
            "curl",
            &["-sS", "--max-time", "10", "-g", "http://[::1]:8080/"]
        ),
        page
    );
    await_port(m, "http://127.0.0.1:8081/", Some(page));

    // Another program holds 8082 on the host side: a warning, and 8083 still works.
    let squatter = Squatter(
        Command::new("ip")
            .args([
                "netns", "exec", &m.h.netns, "busybox", "nc", "-l", "-p", "8082",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while !m.h.exec_ok("ss", &["-Htln"]).contains(":8082 ") {
        assert!(t.elapsed() < PORT_BOUND, "nc did not listen on 8082");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut run = vec!["run", "-d", "--name", "squatted"];
    run.extend(["-p", "8082:80", "-p", "8083:80"]);
    run.extend(httpd);
    m.docker_ok(&run);
    await_port(m, "http://127.0.0.1:8083/", Some(page));
    let t = Instant::now();
    loop {
        let status = text(&m.devbox(&["status", MACHINE]).stderr);
        if status.contains("port 8082/tcp of container squatted") {
            break;
        }
        assert!(t.elapsed() < PORT_BOUND, "no warning for 8082: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let inspect = m.ok(&["inspect", MACHINE]);
    assert!(inspect.contains("8082"), "{inspect}");
    drop(squatter);

    m.docker_ok(&["stop", "-t", "1", "published"]);
    let closed = await_port(m, "http://127.0.0.1:8080/", None);
    eprintln!("[e2e] published port closed {closed:?} after `docker stop` returned");
    // Closed, not merely failing: nothing listens on the host's 8080 and 8081 any more.
    let t = Instant::now();
    loop {
        let listening = m.h.exec_ok("ss", &["-Htln"]);
        if !listening.contains(":8080 ") && !listening.contains(":8081 ") {
            break;
        }
        assert!(
            t.elapsed() < PORT_BOUND,
            "8080 still listened on: {listening}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    m.docker_ok(&["rm", "-f", "published", "squatted"]);
}

/// `--engine-label` and `--engine-insecure-registry` (given at create) in `docker info`.
pub fn check_engine_settings(m: &Machine) {
    let labels = m.docker_ok(&["info", "--format", "{{json .Labels}}"]);
    assert!(labels.contains("provider=devbox"), "{labels}");
    let registries = m.docker_ok(&["info", "--format", "{{json .RegistryConfig.IndexConfigs}}"]);
    assert!(
        registries.contains(&format!("\"{INTERNET_NAME}:{REGISTRY_PORT}\"")),
        "{registries}"
    );
    let daemon = m.ssh("cat /run/devbox/config/daemon.json");
    assert!(daemon.contains("provider=devbox"), "{daemon}");
}
