//! The network namespace every machine of the run lives in, and the host-side tools the checks
//! use from inside it: the `devbox` runner, `curl`, `dig`, the namespace's routing table.
//!
//! Never touches the host's real interfaces or routes: every machine command runs under
//! `ip netns exec`, so the TAP devices, their addresses and all guest traffic stay in the
//! namespace. Inside it, a dnsmasq on loopback stands in for the host's resolvers as the
//! machines' DNS upstream, and the host side resolves through the first machine's DNS server,
//! as a host with `devbox dns install` would. When a check first needs it, the namespace gets
//! an uplink to a second namespace, "the internet" ([`Internet`]), on documentation addresses.
//!
//! Every command is bounded (`timeout`), so a hung guest or forwarder fails its check instead
//! of the whole run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::guest::{bin, text};

/// Port of the stand-in upstream resolver on the namespace's loopback.
pub const UPSTREAM_PORT: &str = "5353";

/// Machine boots in this run (`start` and `restart` that booted a guest).
static BOOTS: AtomicU32 = AtomicU32::new(0);

pub fn boots() -> u32 {
    BOOTS.load(Ordering::Relaxed)
}

/// Counts a boot that did not go through [`Harness::ok`].
pub fn count_boot() {
    BOOTS.fetch_add(1, Ordering::Relaxed);
}

/// The bound on one `devbox` command (`start --timeout 600` included) or `docker` command.
pub const COMMAND_BOUND: Duration = Duration::from_secs(900);

pub struct Harness {
    pub netns: String,
    pub home: PathBuf,
    pub cache: PathBuf,
    upstream: Mutex<Option<Child>>,
    internet: Mutex<Option<Internet>>,
    tmp: tempfile::TempDir,
}

/// The internet's address (TEST-NET-3), on the other end of the namespace's uplink `up0`.
pub const INTERNET_IP: &str = "203.0.113.2";
/// The internet's name, which the stand-in upstream resolver knows.
pub const INTERNET_NAME: &str = "internet.example";
/// The page the internet's HTTP server (port 80) serves.
pub const INTERNET_PAGE: &str = "hello from the internet\n";
/// Port of the internet's Docker registry (registry v2, Debian's `docker-registry`).
pub const REGISTRY_PORT: u16 = 5000;
/// Port of the same registry software over TLS, with a certificate from a private CA
/// ([`internet_ca`]): the shared machine trusts it through `create --engine-ca`.
pub const TLS_REGISTRY_PORT: u16 = 5443;

/// The private CA of the internet's TLS registry (as a corporate registry's or a
/// TLS-inspecting proxy's would be), made once per run in `dir`: returns the CA's PEM file.
/// The registry's certificate and key sit beside it.
pub fn internet_ca(dir: &Path) -> PathBuf {
    let ca_path = dir.join("internet-ca.pem");
    if ca_path.exists() {
        return ca_path;
    }
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "e2e Internet Root");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![INTERNET_NAME.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("internet-registry.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("internet-registry.key"), key.serialize_pem()).unwrap();
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    ca_path
}

/// A namespace standing for the internet, behind the run's namespace (the host): its uplink
/// `up0` (203.0.113.1) is the host's default route, and the internet has no route back to
/// the host's private networks, so only NAT gets replies. It serves HTTP and a registry.
pub struct Internet {
    netns: String,
    servers: Vec<Child>,
}

impl Internet {
    fn new(host_netns: &str, dir: &Path) -> Internet {
        let netns = format!("{host_netns}-inet");
        let run = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().unwrap();
            assert!(
                o.status.success(),
                "ip {}: {}",
                args.join(" "),
                text(&o.stderr)
            );
        };
        run(&["netns", "add", &netns]);
        // From here on, Drop removes the namespace and the servers, whatever fails.
        let mut inet = Internet {
            netns,
            servers: Vec::new(),
        };
        let n = inet.netns.clone();
        run(&["-n", &n, "link", "set", "lo", "up"]);
        run(&[
            "-n", host_netns, "link", "add", "up0", "type", "veth", "peer", "name", "eth0",
            "netns", &n,
        ]);
        run(&[
            "-n",
            host_netns,
            "addr",
            "add",
            "203.0.113.1/24",
            "dev",
            "up0",
        ]);
        run(&["-n", host_netns, "link", "set", "up0", "up"]);
        run(&[
            "-n",
            &n,
            "addr",
            "add",
            &format!("{INTERNET_IP}/24"),
            "dev",
            "eth0",
        ]);
        run(&["-n", &n, "link", "set", "eth0", "up"]);
        run(&[
            "-n",
            host_netns,
            "route",
            "add",
            "default",
            "via",
            INTERNET_IP,
        ]);

        let www = dir.join("internet-www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), INTERNET_PAGE).unwrap();
        let registry = dir.join("internet-registry");
        std::fs::create_dir_all(&registry).unwrap();
        let config = dir.join("internet-registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {INTERNET_IP}:{REGISTRY_PORT}\n",
                registry.display()
            ),
        )
        .unwrap();
        let ca = internet_ca(dir);
        let tls_registry = dir.join("internet-registry-tls");
        std::fs::create_dir_all(&tls_registry).unwrap();
        let tls_config = dir.join("internet-registry-tls.yml");
        std::fs::write(
            &tls_config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {INTERNET_IP}:{TLS_REGISTRY_PORT}\n  tls:\n    \
                 certificate: {}\n    key: {}\n",
                tls_registry.display(),
                dir.join("internet-registry.crt").display(),
                dir.join("internet-registry.key").display(),
            ),
        )
        .unwrap();
        let spawn = |args: &[&str]| {
            Command::new("ip")
                .args(["netns", "exec", &n])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let www = www.to_str().unwrap();
        inet.servers.push(spawn(&[
            "busybox",
            "httpd",
            "-f",
            "-p",
            &format!("{INTERNET_IP}:80"),
            "-h",
            www,
        ]));
        inet.servers.push(spawn(&[
            "docker-registry",
            "serve",
            config.to_str().unwrap(),
        ]));
        inet.servers.push(spawn(&[
            "docker-registry",
            "serve",
            tls_config.to_str().unwrap(),
        ]));
        // Both answer from the internet's own side before any check relies on them.
        let t = Instant::now();
        let resolve = format!("{INTERNET_NAME}:{TLS_REGISTRY_PORT}:{INTERNET_IP}");
        let ca = ca.to_str().unwrap();
        for url in [
            format!("http://{INTERNET_IP}/"),
            format!("http://{INTERNET_IP}:{REGISTRY_PORT}/v2/"),
            format!("https://{INTERNET_NAME}:{TLS_REGISTRY_PORT}/v2/"),
        ] {
            while !Command::new("ip")
                .args(["netns", "exec", &n, "curl", "-sf", "--max-time", "2"])
                .args(["--resolve", &resolve, "--cacert", ca, &url])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success()
            {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "the internet's server at {url} did not start"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        inet
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

impl Harness {
    pub fn new() -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let netns = format!("devbox-e2e-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {netns}");
        let st = Command::new("ip")
            .args(["-n", &netns, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(st.success());
        // A new namespace may inherit the host's IPv4 forwarding; this one starts as a host
        // that does not forward, whose setting devbox must put back.
        let st = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=0",
            ])
            .status()
            .unwrap();
        assert!(st.success());
        // Inside the namespace, the host side resolves through the machine's DNS server, as
        // a host with `devbox dns install` would (`ip netns exec` bind-mounts this file).
        let etc = PathBuf::from("/etc/netns").join(&netns);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), "nameserver 192.168.64.1\n").unwrap();
        // The host's own resolver is never a test's target: a dnsmasq inside the namespace
        // stands in for it as the machine's upstream.
        let upstream = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
            ])
            .args([
                "--no-hosts",
                "--port",
                UPSTREAM_PORT,
                "--listen-address",
                "127.0.0.1",
            ])
            .args(["--bind-interfaces", "--address=/pkg.go.dev/10.1.2.3"])
            // The real world's answer for a name nobody has: NXDOMAIN.
            .arg("--local=/synbioz.dev/")
            .arg(format!("--address=/{INTERNET_NAME}/{INTERNET_IP}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Harness {
            netns,
            home: tmp.path().join("home"),
            cache: cache_dir(),
            upstream: Mutex::new(Some(upstream)),
            internet: Mutex::new(None),
            tmp,
        }
    }

    /// Makes sure the internet namespace is up behind this one (see [`Internet`]).
    pub fn internet(&self) {
        let mut internet = self.internet.lock().unwrap_or_else(|e| e.into_inner());
        if internet.is_none() {
            *internet = Some(Internet::new(&self.netns, self.tmp.path()));
        }
    }

    /// `PROGRAM ARGS` inside the namespace (the host's side), whatever its outcome.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        bounded("ip")
            .args(["netns", "exec", &self.netns, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `PROGRAM ARGS` inside the namespace, asserting success; stdout.
    #[track_caller]
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let o = self.exec(program, args);
        assert!(
            o.status.success(),
            "{program} {}: {}",
            args.join(" "),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// devbox's nftables rules for the link `dbxN` in the namespace; `None` when devbox's
    /// table (`inet devbox`) is absent.
    pub fn nat_rules(&self, link: &str) -> Option<usize> {
        let o = self.exec("nft", &["-j", "list", "table", "inet", "devbox"]);
        if !o.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        Some(
            v["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| o["rule"]["comment"] == link)
                .count(),
        )
    }

    /// The namespace's `net.ipv4.ip_forward`.
    pub fn ip_forward(&self) -> String {
        self.exec_ok("cat", &["/proc/sys/net/ipv4/ip_forward"])
            .trim()
            .to_owned()
    }

    /// A directory of this run, removed at the end.
    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// The docker CLI's configuration directory of this run (`DOCKER_CONFIG`).
    pub fn docker_config(&self) -> std::path::PathBuf {
        self.tmp.path().join("docker-config")
    }

    /// `devbox ARGS` inside the namespace.
    pub fn devbox(&self, args: &[&str]) -> Output {
        self.devbox_cmd(args).output().unwrap()
    }

    /// The command for `devbox ARGS` inside the namespace, bounded by [`COMMAND_BOUND`].
    pub fn devbox_cmd(&self, args: &[&str]) -> Command {
        let mut c = bounded("ip");
        c.args(["netns", "exec", &self.netns]).arg(bin()).args(args);
        self.devbox_env(&mut c);
        c
    }

    /// The environment of every devbox command of the run (its own home, cache, registry).
    pub fn devbox_env(&self, c: &mut Command) {
        c.env("DEVBOX_HOME", &self.home)
            .env("DEVBOX_CACHE", &self.cache)
            // The run's own lease registry (root may move it), never the host's.
            .env("DEVBOX_REGISTRY", self.tmp.path().join("registry"))
            // The machines' Docker contexts: the run's own, never root's ~/.docker.
            .env("DOCKER_CONFIG", self.docker_config())
            .env("NO_COLOR", "1")
            .env("DEVBOX_DNS_UPSTREAMS", format!("127.0.0.1:{UPSTREAM_PORT}"))
            .stdin(Stdio::null());
    }

    /// `devbox ARGS`, asserting success (with the machines' logs on failure); stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        text(&self.ok_output(args).stdout)
    }

    /// `devbox ARGS`, asserting success (with the machines' logs on failure).
    #[track_caller]
    pub fn ok_output(&self, args: &[&str]) -> Output {
        let t = Instant::now();
        let o = self.devbox(args);
        eprintln!(
            "[e2e] devbox {} ({:.1} s)",
            args.join(" "),
            t.elapsed().as_secs_f64()
        );
        if matches!(args.first(), Some(&"start" | &"restart"))
            && o.status.success()
            && !text(&o.stderr).contains("already running")
        {
            count_boot();
        }
        if !o.status.success() {
            self.dump();
            panic!(
                "devbox {} failed ({}):\n{}\n{}",
                args.join(" "),
                o.status,
                text(&o.stdout),
                text(&o.stderr)
            );
        }
        o
    }

    /// The last lines of every machine's supervisor log and console.
    pub fn dump(&self) {
        let Ok(machines) = std::fs::read_dir(self.home.join("machines")) else {
            return;
        };
        for dir in machines.flatten() {
            for f in ["supervisor.log", "serial.log"] {
                let p = dir.path().join(f);
                let t = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                eprintln!(
                    "---- last lines of {} ----\n{}",
                    p.display(),
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
        }
    }

    /// The namespace's IPv4 routing table, as `ip route` prints it.
    pub fn routes(&self) -> String {
        let o = Command::new("ip")
            .args(["-n", &self.netns, "route"])
            .output()
            .unwrap();
        text(&o.stdout)
    }

    /// Whether a machine's TAP device (`dbxN`) exists in the namespace.
    pub fn tap_exists(&self) -> bool {
        let o = Command::new("ip")
            .args(["-n", &self.netns, "-o", "link", "show"])
            .output()
            .unwrap();
        text(&o.stdout).contains("dbx")
    }

    /// `curl URL` from the host side of the namespace, asserting success; the body.
    #[track_caller]
    pub fn curl(&self, url: &str) -> String {
        let o = self.curl_output(url);
        assert!(o.status.success(), "curl {url}: {}", text(&o.stderr));
        text(&o.stdout)
    }

    /// `curl URL` from the host side of the namespace (20 s at most).
    pub fn curl_output(&self, url: &str) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-sS",
                "--max-time",
                "20",
                url,
            ])
            .output()
            .unwrap()
    }

    /// `dig @server NAME TYPE` from the host side: (status, answers).
    pub fn dig(&self, name: &str, rtype: &str) -> (String, Vec<String>) {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "dig",
                "@192.168.64.1",
                "+tries=1",
            ])
            .args(["+time=2", name, rtype])
            .output()
            .unwrap();
        let out = text(&o.stdout);
        let status = out
            .split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("NO ANSWER")
            .to_owned();
        let short = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "dig",
                "@192.168.64.1",
                "+short",
                "+tries=1",
            ])
            .args(["+time=2", name, rtype])
            .output()
            .unwrap();
        (
            status,
            text(&short.stdout).lines().map(str::to_owned).collect(),
        )
    }

    /// Polls until `dig` gives `want` (answers, or an empty list for NXDOMAIN); returns the
    /// time it took.
    #[track_caller]
    pub fn await_answer(&self, name: &str, want: &[String]) -> Duration {
        let t = Instant::now();
        loop {
            let (status, answers) = self.dig(name, "A");
            let done = if want.is_empty() {
                status == "NXDOMAIN"
            } else {
                answers == want
            };
            if done {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{name}: {status} {answers:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Harness {
    /// Forces every machine down, stops the upstream resolver, removes the namespace and the
    /// run's files. Best effort, and safe to call twice.
    pub fn teardown(&self) {
        if let Ok(machines) = std::fs::read_dir(self.home.join("machines")) {
            for dir in machines.flatten() {
                let name = dir.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    let _ = self.devbox(&["stop", "--force", &name]);
                }
            }
        }
        if let Some(mut upstream) = self
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = upstream.kill();
            let _ = upstream.wait();
        }
        drop(
            self.internet
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.netns));
        let _ = std::fs::remove_dir_all(self.tmp.path());
    }
}

/// `PROGRAM` under coreutils' `timeout`, killed (with everything in its process group, which
/// the machine's supervisor is not: it runs in a group of its own) after [`COMMAND_BOUND`].
pub fn bounded(program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "--kill-after=10",
        &COMMAND_BOUND.as_secs().to_string(),
        program,
    ]);
    c
}

/// The host's docker CLI against a machine, asserting success; trimmed stdout.
#[track_caller]
pub fn docker_ok(docker_host: &str, args: &[&str]) -> String {
    let o = docker(docker_host, args);
    assert!(o.status.success(), "docker {args:?}: {}", text(&o.stderr));
    text(&o.stdout).trim().to_owned()
}

/// The host's docker CLI against a machine.
pub fn docker(docker_host: &str, args: &[&str]) -> Output {
    bounded("docker")
        .args(["-H", docker_host])
        .args(args)
        .output()
        .unwrap()
}

/// Images are cached across runs, where `devbox` keeps them (the first build takes minutes);
/// machines are not.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("DEVBOX_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/devbox")
        })
}
