//! HTTPS for the machine's names (issue #16) on a real guest: the guest hands port 443 of a
//! container to the supervisor's TLS terminator, whose certificates chain to the user's
//! devbox root; curl and Chromium on the host side verify that chain, and another container
//! reaches the same name over TLS.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::machine::Machine;

const PAGE: &str = "hello over https";

/// `curl --cacert <devbox root> URL` from the host side of the namespace.
fn curl_verified(m: &Machine, url: &str, extra: &[&str]) -> std::process::Output {
    let ca = m.h.home.join("tls/ca.pem");
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &m.h.netns,
            "curl",
            "-sS",
            "--max-time",
            "20",
        ])
        .arg("--cacert")
        .arg(&ca)
        .args(extra)
        .arg(url)
        .output()
        .unwrap()
}

pub fn check_https_for_container_names(m: &Machine) {
    m.busybox_image();
    let h = m.h;
    if m.docker(&["inspect", "secure"]).status.success() {
        m.docker_ok(&["rm", "-f", "secure"]);
    }
    m.docker_ok(&[
        "run",
        "-d",
        "--name",
        "secure",
        "-e",
        // synbioz.dev is allowed for the shared machine (create --dns-domain).
        "DNSDOCK_ALIAS=www.synbioz.dev",
        "bb:e2e",
        "/bin/sh",
        "-c",
        &format!("echo {PAGE} > /www/index.html && exec /bin/httpd -f -p 80 -h /www"),
    ]);
    let ip = m.docker_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "secure"]);
    h.await_answer("www.synbioz.dev", std::slice::from_ref(&ip));

    // The supervisor rewrites the guest's redirection within a second of the zone changing.
    let start = Instant::now();
    let out = loop {
        let out = curl_verified(m, "https://www.synbioz.dev/", &[]);
        if out.status.success() || start.elapsed() > Duration::from_secs(30) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        out.status.success(),
        "curl https://www.synbioz.dev/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{PAGE}\n"));
    eprintln!(
        "[e2e] https://www.synbioz.dev/ verified after {:?}",
        start.elapsed()
    );

    // By container name, over HTTP/2; and plain HTTP to the name and the IP still work.
    let name = format!("secure.{}.dev", crate::MACHINE);
    let out = curl_verified(
        m,
        &format!("https://{name}/"),
        &["--http2", "-w", "%{http_version}"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{PAGE}\n2"));
    assert_eq!(h.curl("http://www.synbioz.dev/"), format!("{PAGE}\n"));
    assert_eq!(h.curl(&format!("http://{ip}/")), format!("{PAGE}\n"));

    // The machine's own name: its port 443 is terminated too, proxied to what a container
    // publishes on the guest's port 80; Docker's own jump comes first in PREROUTING, so a
    // container that publishes 443 would keep it.
    m.docker_ok(&[
        "run",
        "-d",
        "--name",
        "front",
        "-p",
        "80:80",
        "bb:e2e",
        "/bin/sh",
        "-c",
        "echo front door > /www/index.html && exec /bin/httpd -f -p 80 -h /www",
    ]);
    let machine_url = format!("https://{}.dev/", crate::MACHINE);
    let start = Instant::now();
    let out = loop {
        let out = curl_verified(m, &machine_url, &[]);
        if out.status.success() || start.elapsed() > Duration::from_secs(30) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "front door\n",
        "{machine_url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prerouting = m.ssh("iptables -t nat -S PREROUTING");
    let docker = prerouting.find("-j DOCKER").expect(&prerouting);
    let own = prerouting.find("-j DEVBOX-HTTPS-SELF").expect(&prerouting);
    assert!(docker < own, "Docker's jump first: {prerouting}");
    m.docker_ok(&["rm", "-f", "front"]);

    // A name the machine does not serve, sent to a served address: no certificate at all.
    let out = curl_verified(
        m,
        "https://nothing.synbioz.dev/",
        &["-k", "--resolve", &format!("nothing.synbioz.dev:443:{ip}")],
    );
    assert_eq!(out.status.code(), Some(35), "a TLS handshake failure");

    // The root is in the guest at its documented path, the same as the host's.
    let in_guest = h.ok(&["ssh", crate::MACHINE, "--", "cat", "/etc/devbox/ca.pem"]);
    let on_host = std::fs::read_to_string(h.home.join("tls/ca.pem")).unwrap();
    assert_eq!(in_guest.trim(), on_host.trim());

    // Container to container, by name, verified with the root bind-mounted from its
    // documented path. (busybox's wget cannot be the client: it sends no
    // signature_algorithms extension, which TLS 1.2 servers such as rustls require, and it
    // verifies no chain anyway.) The client is the host's curl with its libraries.
    curl_image(m);
    let out = m.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "/etc/devbox/ca.pem:/etc/devbox/ca.pem:ro",
        "curl:e2e",
        "/usr/bin/curl",
        "-sS",
        "--cacert",
        "/etc/devbox/ca.pem",
        &format!("https://{name}/"),
    ]);
    assert_eq!(out.trim(), PAGE);

    // `devbox.http.port` picks the port TLS goes to; a container that exposes 443 keeps it
    // (plain HTTP on 443 here: had the guest redirected it, the terminator would refuse).
    m.docker_ok(&[
        "run",
        "-d",
        "--name",
        "alt",
        "-l",
        "devbox.http.port=8080",
        "bb:e2e",
        "/bin/sh",
        "-c",
        "echo alt port > /www/index.html && exec /bin/httpd -f -p 8080 -h /www",
    ]);
    m.docker_ok(&[
        "run",
        "-d",
        "--name",
        "own",
        "--expose",
        "443",
        "bb:e2e",
        "/bin/sh",
        "-c",
        "echo own 443 > /www/index.html && exec /bin/httpd -f -p 443 -h /www",
    ]);
    let alt = format!("https://alt.{}.dev/", crate::MACHINE);
    let own = format!("http://own.{}.dev:443/", crate::MACHINE);
    let start = Instant::now();
    let (alt_out, own_out) = loop {
        let a = curl_verified(m, &alt, &[]);
        let o = h.curl_output(&own);
        let done = a.status.success() && o.status.success();
        if done || start.elapsed() > Duration::from_secs(30) {
            break (a, o);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        String::from_utf8_lossy(&alt_out.stdout),
        "alt port\n",
        "{alt_out:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&own_out.stdout),
        "own 443\n",
        "{own_out:?}"
    );
    m.docker_ok(&["rm", "-f", "alt", "own"]);

    // A real browser: Chromium, with the root put into its NSS database (of a throwaway
    // home) by `devbox trust install`, loads the page with no interstitial.
    let home = tempfile::tempdir().unwrap();
    let run = |cmd: &mut Command| {
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    run(h.devbox_cmd(&["trust", "install"]).env("HOME", home.path()));
    let dom = run(Command::new("ip")
        .args(["netns", "exec", &h.netns, "timeout", "60", "chromium"])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--dump-dom",
            "https://www.synbioz.dev/",
        ])
        .env("HOME", home.path()));
    assert!(dom.contains(PAGE), "Chromium's DOM: {dom}");
    check_system_store(m, home.path());
    m.docker_ok(&["rm", "-f", "secure"]);
}

/// `devbox trust install --system` then plain `curl` (the system store, no `--cacert`), and
/// `uninstall --system` leaving the store as before: in a private mount namespace whose
/// `/usr/local/share/ca-certificates` and `/etc/ssl/certs` are fresh tmpfs copies, so the
/// host's real store is never touched.
fn check_system_store(m: &Machine, home: &std::path::Path) {
    let script = r#"
set -e
mount -t tmpfs devbox-e2e /usr/local/share/ca-certificates
mount -t tmpfs devbox-e2e /etc/ssl/certs
update-ca-certificates --fresh >/dev/null 2>&1
before=$(sha256sum /etc/ssl/certs/ca-certificates.crt)
if curl -sS --max-time 20 -o /dev/null https://www.synbioz.dev/ 2>/dev/null; then
    echo "trusted before install"; exit 1
fi
"$DEVBOX" trust install --system
curl -sS --max-time 20 https://www.synbioz.dev/
"$DEVBOX" trust status
"$DEVBOX" trust uninstall --system
if curl -sS --max-time 20 -o /dev/null https://www.synbioz.dev/ 2>/dev/null; then
    echo "still trusted after uninstall"; exit 1
fi
[ "$(sha256sum /etc/ssl/certs/ca-certificates.crt)" = "$before" ] || { echo "bundle changed"; exit 1; }
[ -z "$(ls /usr/local/share/ca-certificates)" ] || { echo "a file is left"; exit 1; }
echo system store restored
"#;
    let mut sh = crate::harness::bounded("ip");
    sh.args([
        "netns", "exec", &m.h.netns, "unshare", "--mount", "sh", "-c", script,
    ])
    .env("HOME", home)
    .env("DEVBOX", crate::support::guest::bin());
    m.h.devbox_env(&mut sh);
    let t = Instant::now();
    let o = sh.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "the system store check failed: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains(&format!("{PAGE}\n")), "{out}");
    assert!(
        out.contains("/usr/local/share/ca-certificates/devbox-root.crt\ttrusted"),
        "status shows the system store: {out}"
    );
    assert!(out.contains("system store restored"), "{out}");
    eprintln!(
        "[e2e] trust install --system, curl without --cacert, uninstall: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// `curl:e2e`: the host's curl and the libraries `ldd` lists, at their own paths.
fn curl_image(m: &Machine) {
    if !m.docker_ok(&["images", "-q", "curl:e2e"]).is_empty() {
        return;
    }
    let curl = "/usr/bin/curl";
    let ldd = Command::new("ldd").arg(curl).output().unwrap();
    let mut files = vec![curl.to_string()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|p| p.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            files.push(p.to_string());
        }
    }
    let tar = m.h.tmp().join("curl-image.tar");
    let st = Command::new("tar")
        .arg("-chf")
        .arg(&tar)
        .args(["-C", "/"])
        .args(files.iter().map(|f| f.trim_start_matches('/')))
        .status()
        .unwrap();
    assert!(st.success(), "tar of {files:?}");
    m.docker_ok(&["import", tar.to_str().unwrap(), "curl:e2e"]);
}
