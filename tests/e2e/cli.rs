//! The everyday CLI against a running machine (issue #18): `devbox use` then a plain `docker`
//! with no DOCKER_HOST; `ssh -t` on a pseudo-terminal the test holds; OpenSSH's own `ssh` and
//! `scp` with `devbox ssh-config`; `devbox cp` both ways with a 50 MB file; `devbox logs` of
//! each source, the guest dockerd's followed over SSH.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use sha2::Digest;

use crate::MACHINE;
use crate::harness::bounded;
use crate::machine::Machine;
use crate::support::guest::text;

/// After `devbox use`, the docker CLI reaches the machine with no DOCKER_HOST (and a context
/// of its own, not the environment); `use --none` sends it back to its default.
pub fn check_use_makes_plain_docker_reach_the_machine(m: &Machine) {
    m.ok(&["use", MACHINE]);
    let docker = |args: &[&str]| {
        bounded("docker")
            .args(args)
            .env("DOCKER_CONFIG", m.h.docker_config())
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .output()
            .unwrap()
    };
    let show = docker(&["context", "show"]);
    assert_eq!(text(&show.stdout).trim(), format!("devbox-{MACHINE}"));
    let info = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(info.status.success(), "docker info: {}", text(&info.stderr));
    assert!(!text(&info.stdout).trim().is_empty());
    m.ok(&["use", "--none"]);
    assert_eq!(text(&docker(&["context", "show"]).stdout).trim(), "default");
}

/// `devbox ssh -t NAME tty` on a terminal sees one; without -t a command gets none, as with
/// OpenSSH. Stdin reaches a command, and its exit code comes back.
pub fn check_ssh_behaves_like_ssh(m: &Machine) {
    let on_terminal = |args: &[&str]| {
        let pty = nix::pty::openpty(None, None).unwrap();
        let o =
            m.h.devbox_cmd(args)
                .stdin(std::fs::File::from(pty.slave))
                .output()
                .unwrap();
        drop(pty.master);
        o
    };
    let o = on_terminal(&["ssh", "-t", MACHINE, "tty"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).trim().starts_with("/dev/pts/"),
        "{:?}",
        text(&o.stdout)
    );
    let o = on_terminal(&["ssh", MACHINE, "tty"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "tty without -t: {}",
        text(&o.stdout)
    );
    assert!(text(&o.stdout).contains("not a tty"), "{}", text(&o.stdout));

    let mut c = m.h.devbox_cmd(&["ssh", MACHINE, "tr", "a-z", "A-Z"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(text(&o.stdout), "PIPED IN\n");
    let o = m.devbox(&["ssh", MACHINE, "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let o = m.devbox(&["ssh", "--workdir", "/var/lib", MACHINE, "pwd"]);
    assert_eq!(text(&o.stdout).trim(), "/var/lib");
    let o = m.devbox(&["ssh", "--workdir", "/nonexistent", MACHINE, "pwd"]);
    assert_ne!(o.status.code(), Some(0));
}

fn sha256(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// A file of `mib` MiB that does not compress (so nothing on the way can shortcut it).
fn random_file(path: &Path, mib: usize) {
    let mut bytes = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(path, bytes).unwrap();
}

/// OpenSSH's own client and scp, configured only by `devbox ssh-config` (host key pinned).
pub fn check_openssh_with_ssh_config(m: &Machine) {
    let dir = m.h.tmp().join("ssh-config");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config");
    std::fs::write(&config, m.ok(&["ssh-config", MACHINE])).unwrap();
    let in_netns = |program: &str| {
        let mut c = bounded("ip");
        c.args(["netns", "exec", &m.h.netns, program]);
        c
    };
    let o = in_netns("ssh")
        .arg("-F")
        .arg(&config)
        .args(["-o", "BatchMode=yes", MACHINE, "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "ssh -F: {}", text(&o.stderr));
    let file = dir.join("small");
    random_file(&file, 1);
    let o = in_netns("scp")
        .arg("-F")
        .arg(&config)
        .arg(&file)
        .arg(format!("{MACHINE}:/tmp/scp-small"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "scp: {}", text(&o.stderr));
    let remote = m.ssh("sha256sum /tmp/scp-small");
    assert_eq!(
        remote.split_whitespace().next(),
        Some(sha256(&file).as_str())
    );
    m.ssh("rm -f /tmp/scp-small");
}

/// `devbox cp` both ways: a 50 MB file keeps its sha256; a directory with -r; a missing
/// machine path is an error that leaves nothing on the host.
pub fn check_cp_both_ways(m: &Machine) {
    let dir = m.h.tmp().join("cp");
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big");
    random_file(&big, 50);
    let remote = "/var/lib/docker/devbox-cp-big";
    m.ok(&["cp", big.to_str().unwrap(), &format!("{MACHINE}:{remote}")]);
    let guest_sum = m.ssh(&format!("sha256sum {remote}"));
    assert_eq!(
        guest_sum.split_whitespace().next(),
        Some(sha256(&big).as_str())
    );
    let back = dir.join("back");
    m.ok(&["cp", &format!("{MACHINE}:{remote}"), back.to_str().unwrap()]);
    assert_eq!(sha256(&back), sha256(&big));
    m.ssh(&format!("rm -f {remote}"));

    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/f"), "deep\n").unwrap();
    m.ssh("rm -rf /tmp/cp-into && mkdir /tmp/cp-into");
    m.ok(&[
        "cp",
        "-r",
        tree.to_str().unwrap(),
        &format!("{MACHINE}:/tmp/cp-into"),
    ]);
    assert_eq!(m.ssh("cat /tmp/cp-into/tree/sub/f"), "deep\n");
    let out = dir.join("out");
    m.ok(&[
        "cp",
        "-r",
        &format!("{MACHINE}:/tmp/cp-into/tree"),
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(out.join("sub/f")).unwrap(),
        "deep\n"
    );
    m.ssh("rm -rf /tmp/cp-into");

    let missing = dir.join("missing");
    let o = m.devbox(&[
        "cp",
        &format!("{MACHINE}:/nonexistent/file"),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("/nonexistent/file"),
        "{}",
        text(&o.stderr)
    );
    assert!(!missing.exists());
    let o = m.devbox(&[
        "cp",
        big.to_str().unwrap(),
        &format!("{MACHINE}:/nonexistent/dir/f"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
}

/// `devbox logs` of each source on the running machine: the guest dockerd's log read over
/// SSH (with `--tail`, and `--follow` seeing a line written after it started), and the
/// supervisor's and the console's files.
pub fn check_logs_of_every_source(m: &Machine) {
    let docker = m.ok(&["logs", MACHINE, "--source", "docker", "--tail", "5"]);
    assert!((1..=5).contains(&docker.lines().count()), "{docker}");
    // dockerd's own lines (logrus: `time="…" level=info msg="…"`).
    assert!(docker.contains("level="), "{docker}");
    let supervisor = m.ok(&["logs", MACHINE, "--source", "supervisor", "--tail", "3"]);
    assert!(
        (1..=3).contains(&supervisor.lines().count()),
        "{supervisor}"
    );
    let console = m.ok(&["logs", MACHINE, "-n", "2"]);
    assert!(console.lines().count() <= 2, "{console}");

    /// The follower, ended (SIGTERM to `timeout`, which passes it on) also on a failure.
    struct Follower(std::process::Child);
    impl Drop for Follower {
        fn drop(&mut self) {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = self.0.wait();
        }
    }
    let mut follower = Follower(
        m.h.devbox_cmd(&[
            "logs", MACHINE, "--source", "docker", "--follow", "--tail", "0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let out = follower.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    // Written until seen: the follower's `tail -f` may not have opened the log yet.
    let marker = format!("devbox-e2e-follow-{}", std::process::id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    'seen: loop {
        assert!(
            std::time::Instant::now() < deadline,
            "logs --follow never showed {marker}"
        );
        m.ssh(&format!("echo {marker} >> /var/log/docker.log"));
        loop {
            match rx.recv_timeout(std::time::Duration::from_secs(2)) {
                Ok(line) if line.contains(&marker) => break 'seen,
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("logs --follow ended before showing {marker}")
                }
            }
        }
    }
    drop(follower);
}
