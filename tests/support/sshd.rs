//! A real OpenSSH server on loopback for the tests that talk SSH (`tests/ssh_sshd.rs`,
//! `tests/remote_adopt.rs`), started per test with keys made by `generate_ed25519`. Without
//! `/usr/sbin/sshd` such tests print why and pass, except under `CI=true`, where a missing
//! sshd is a failure.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use devbox::ssh::{Connection, Target, generate_ed25519, write_keypair};

pub const SSHD: &str = "/usr/sbin/sshd";
pub const CONNECT: Duration = Duration::from_secs(10);

/// Whether the tools a test needs exist; panics under CI when they do not.
pub fn have(tool: &str) -> bool {
    if Path::new(tool).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but {tool} is missing: install openssh-server / openssh-client");
    }
    eprintln!("skipping: {tool} not found (install openssh-server to run this test)");
    false
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private sshd on 127.0.0.1 and a [`Target`] that reaches it.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub target: Target,
}

impl Sshd {
    /// Writes keys and config, without starting the server.
    pub fn prepare() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let host = generate_ed25519("host@devbox-test").unwrap();
        let client = generate_ed25519("client@devbox-test").unwrap();
        let p = |name: &str| dir.path().join(name);
        write_keypair(&host, &p("host_key"), &p("host_key.pub")).unwrap();
        write_keypair(&client, &p("id_ed25519"), &p("id_ed25519.pub")).unwrap();
        std::fs::write(p("authorized_keys"), format!("{}\n", client.public_openssh)).unwrap();
        let port = free_port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile none\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             AllowStreamLocalForwarding yes\nMaxStartups 100\nLogLevel VERBOSE\n",
            p("host_key").display(),
            p("authorized_keys").display(),
        );
        std::fs::write(p("sshd_config"), config).unwrap();
        if nix::unistd::geteuid().is_root() {
            // sshd's privilege separation directory; absent on hosts that never ran sshd.
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        let target = Target {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            user,
            identity: p("id_ed25519"),
            host_key: host.public_openssh.clone(),
        };
        Sshd {
            dir,
            child: None,
            target,
        }
    }

    /// Adds lines to the server's configuration (before [`Sshd::spawn`]).
    pub fn configure(&self, lines: &str) {
        let path = self.dir.path().join("sshd_config");
        let mut config = std::fs::read_to_string(&path).unwrap();
        config.push_str(lines);
        std::fs::write(path, config).unwrap();
    }

    pub fn start() -> Sshd {
        let mut sshd = Sshd::prepare();
        sshd.spawn();
        sshd.wait_listening();
        sshd
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sshd.log"))
            .unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.path().join("sshd_config"))
            .arg("-p")
            .arg(self.target.addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.target.addr).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sshd exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd not listening:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops sshd and the per-connection processes it forked (what a machine reboot does to
    /// established sessions), then starts a fresh one on the same port.
    /// Returns how many session processes were ended.
    pub fn restart(&mut self) -> usize {
        let sessions = self
            .child
            .as_ref()
            .map(|c| children_of(c.id()))
            .unwrap_or_default();
        for &pid in &sessions {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        self.kill();
        self.spawn();
        self.wait_listening();
        sessions.len()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn connect(&self) -> Connection {
        Connection::connect(&self.target, CONNECT)
            .unwrap_or_else(|e| panic!("connect: {e:?}\nsshd log:\n{}", self.log()))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Pids whose parent is `parent`, from /proc (Linux).
pub fn children_of(parent: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may contain spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

// Recording commands for the sessions of a server playing a host devbox adopts (#21).

/// A directory of commands for the server's sessions: the real ones the facts script needs,
/// and recording fakes.
pub fn fake_bin(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for real in [
        "sh", "bash", "env", "id", "uname", "true", "cat", "chmod", "mkdir", "cp", "mv", "rm",
    ] {
        let path = which(real);
        std::os::unix::fs::symlink(path, dir.join(real)).unwrap();
    }
    let log = dir.join("calls.log");
    let script = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> {}\n{body}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    // `apt-get install` "installs" an engine that answers.
    let docker = format!(
        "cat > {d}/docker <<'EOF'\n#!/bin/sh\n[ \"$1\" = version ] && echo 26.1.5-fake\nEOF\nchmod 755 {d}/docker",
        d = dir.display()
    );
    script(
        "apt-get",
        &format!(
            "case \"$*\" in *install*) [ -e {d}/fail-install ] && {{ printf '\\033]52;c;c3Bvb2Y=\\007E: Unable to locate package docker.io\\n' >&2; exit 100; }}; {docker};; esac\nexit 0",
            d = dir.display()
        ),
    );
    script("systemctl", "exit 0");
    script("sudo", "[ \"$1\" = -n ] && shift\nexec \"$@\"");
}

pub fn which(cmd: &str) -> String {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(cmd);
        if p.exists() {
            return p.display().to_string();
        }
    }
    panic!("{cmd} not found")
}

pub fn calls(bin: &Path) -> Vec<String> {
    std::fs::read_to_string(bin.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A server whose sessions get `bin` as their PATH (see [`fake_bin`]).
pub fn server(bin: &Path) -> Sshd {
    let mut sshd = Sshd::prepare();
    sshd.configure(&format!("SetEnv PATH={}\n", bin.display()));
    sshd.spawn();
    sshd.wait_listening();
    sshd
}

/// A fake engine for the settings tests: answers `docker version` unless `engine-down` exists.
pub fn fake_engine(bin: &Path) {
    let p = bin.join("docker");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\n[ -e {}/engine-down ] && exit 1\n[ \"$1\" = version ] && echo 26.1.5-fake\n",
            bin.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}
