//! Compose v2 on the host through the machine's forwarded socket: a project of two services
//! comes up with `docker compose`, one service reaches the other by its service name, the host
//! reaches the web service by IP (its network is one of the machine's routed subnets) and by
//! its devbox DNS name, and `docker compose down` removes it all.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::MACHINE;
use crate::harness::bounded;
use crate::machine::Machine;
use crate::support::guest::text;
use crate::support::trials::Missing;

/// The project's name (`name:` in the file): its containers are `<project>-<service>-1`.
const PROJECT: &str = "e2ecompose";

/// The page the web service serves, written at its start (not the image's own page, so a
/// stray answer from another container cannot pass for it).
const PAGE: &str = "hello from compose web";

/// The e2e prerequisites, and the host's `docker compose` being Compose v2.
pub fn prerequisites() -> Result<(), Missing> {
    crate::e2e_prerequisites()?;
    let o = bounded("docker").args(["compose", "version"]).output();
    let version = o.map(|o| text(&o.stdout)).unwrap_or_default();
    if version.contains("version v2.") || version.contains("version 2.") {
        Ok(())
    } else {
        Err(Missing::Prerequisite(format!(
            "`docker compose` is not Compose v2 ({}): .ci/install-deps installs Debian 13's \
             docker-compose package",
            version.trim()
        )))
    }
}

fn compose_file() -> String {
    format!(
        r#"name: {PROJECT}
services:
  web:
    image: bb:e2e
    command: ["/bin/sh", "-c", "echo {PAGE} > /www/index.html && exec /bin/httpd -f -p 80 -h /www"]
  client:
    image: bb:e2e
    depends_on: [web]
    command: ["/bin/sleep", "3600"]
"#
    )
}

pub fn check_compose(m: &Machine) {
    m.busybox_image();
    let dir = m.h.tmp().join("compose");
    fs_err::create_dir_all(&dir).unwrap();
    let file = dir.join("compose.yaml");
    fs_err::write(&file, compose_file()).unwrap();
    let compose = |args: &[&str]| {
        let mut all = vec!["compose", "-f", file.to_str().unwrap()];
        all.extend_from_slice(args);
        m.docker_ok(&all)
    };
    compose(&["up", "-d", "--wait"]);
    let checked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_project(m, &file)));
    // Down whatever the checks found, then check that it is all gone.
    compose(&["down", "-t", "1"]);
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
    let left = m.docker_ok(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={PROJECT}"),
    ]);
    assert!(
        left.is_empty(),
        "containers left after `compose down`: {left}"
    );
    let nets = m.docker_ok(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name={PROJECT}_"),
    ]);
    assert!(
        nets.is_empty(),
        "networks left after `compose down`: {nets}"
    );
}

fn check_project(m: &Machine, file: &Path) {
    let h = m.h;
    let want = format!("{PAGE}\n");
    let web = format!("{PROJECT}-web-1");
    let ip = m.docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &web,
    ]);
    assert!(!ip.is_empty(), "{web} has no address");

    // The client reaches the web service by its service name, which Docker's DNS on the
    // project's network answers. The test image's busybox (Debian 12's busybox-static, static
    // glibc) crashes in wget on a name (no NSS modules) and on `-T`, so busybox's own
    // nslookup resolves `web` and a plain wget fetches the address it found (bounded by the
    // docker command's bound). httpd may still be starting, hence the retries.
    let fetch = "a=$(nslookup web) || exit 1; ip=${a##*Address: }; ip=${ip%%[!0-9.]*}; \
                 echo \"$ip\"; exec wget -q -O - \"http://$ip/\"";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = m.docker(&[
            "compose",
            "-f",
            file.to_str().unwrap(),
            "exec",
            "-T",
            "client",
            "/bin/sh",
            "-c",
            fetch,
        ]);
        let out = text(&o.stdout);
        if o.status.success() && out == format!("{ip}\n{want}") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client did not get web's page by the name `web` within 60 s (want {ip}, \
             then the page): {out:?} {}",
            text(&o.stderr)
        );
        sleep(Duration::from_millis(500));
    }

    // From the host: by IP, through the route to the project network's subnet.
    let subnet = m.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        &format!("{PROJECT}_default"),
    ]);
    // The machine's pool (172.19.0.0/16, the first machine's) has one host route; the
    // project's /24 is carved from it.
    assert!(
        subnet.starts_with("172.19."),
        "the project's network {subnet} is not in the machine's pool"
    );
    let routes = h.routes();
    assert!(
        routes.contains("172.19.0.0/16 via 192.168.64.2 dev dbx0"),
        "the machine's pool is not routed to it: {routes}"
    );
    assert_eq!(
        h.curl(&format!("http://{ip}/")),
        want,
        "by IP from the host"
    );
    // And by the name devbox serves for it.
    let name = format!("{web}.{MACHINE}.dev");
    h.await_answer(&name, std::slice::from_ref(&ip));
    assert_eq!(
        h.curl(&format!("http://{name}/")),
        want,
        "by name from the host"
    );
}
