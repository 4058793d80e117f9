//! The SSH module against a real OpenSSH server on loopback, started per test with keys made
//! by `generate_ed25519`. Without `/usr/sbin/sshd` the tests print why and pass, except
//! under `CI=true`, where a missing sshd is a failure.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use devbox::ssh::{
    Connection, KeyPair, SshError, Target, fingerprint, forward_unix_socket, generate_ed25519,
    wait_until_reachable, write_keypair,
};

mod support;
use support::sshd::{CONNECT, SSHD, Sshd, children_of, free_port, have};

macro_rules! require {
    ($($tool:expr),+) => {
        if !($(have($tool))&&+) {
            return;
        }
    };
}

/// Runs `f` on a thread and fails the test if it does not finish in time (a deadlock).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not done after {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// Deterministic bytes that are not a repeating pattern (xorshift).
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn keys_agree_with_ssh_keygen() {
    require!("/usr/bin/ssh-keygen");
    let dir = tempfile::tempdir().unwrap();
    let kp = generate_ed25519("me@devbox").unwrap();
    let (private, public) = (dir.path().join("id"), dir.path().join("id.pub"));
    write_keypair(&kp, &private, &public).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("/usr/bin/ssh-keygen")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-keygen {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // `256 SHA256:… me@devbox (ED25519)`
    let listed = run(&["-lf", public.to_str().unwrap()]);
    let expected = listed.split_whitespace().nth(1).unwrap();
    assert_eq!(fingerprint(&kp.public_openssh).unwrap(), expected);
    // ssh-keygen reads our private key and derives the same public key.
    let derived = run(&["-y", "-f", private.to_str().unwrap()]);
    let key_part = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(key_part(&derived), key_part(&kp.public_openssh));
}

#[test]
fn exec_reports_exit_codes_and_separates_streams() {
    require!(SSHD);
    let sshd = Sshd::start();
    let conn = sshd.connect();
    let out = conn.exec_capture("echo out; echo err >&2").unwrap();
    assert_eq!(out.status, 0);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(conn.exec_capture("exit 3").unwrap().status, 3);
    // Killed by SIGKILL: 128 + 9, as a shell would report it.
    assert_eq!(conn.exec_capture("kill -9 $$").unwrap().status, 137);
    // The connection stays usable after all of that.
    assert_eq!(conn.exec_capture("true").unwrap().status, 0);
}

/// A guest whose kernel panicked leaves its connections open and silent: a bounded exec gives
/// up at its deadline instead of waiting forever (the readiness watcher relies on it).
#[test]
fn exec_capture_until_gives_up_on_a_server_gone_silent() {
    require!(SSHD);
    let sshd = Sshd::start();
    let conn = sshd.connect();
    assert_eq!(conn.exec_capture("true").unwrap().status, 0);
    let sessions = sshd
        .child
        .as_ref()
        .map(|c| children_of(c.id()))
        .unwrap_or_default();
    assert!(!sessions.is_empty(), "the connection has its sshd process");
    let signal = |sig| {
        for &pid in &sessions {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    };
    signal(nix::sys::signal::Signal::SIGSTOP);
    let started = Instant::now();
    let result = within(
        Duration::from_secs(60),
        "an exec on a silent server",
        move || conn.exec_capture_until("true", Instant::now() + Duration::from_secs(2)),
    );
    let waited = started.elapsed();
    signal(nix::sys::signal::Signal::SIGCONT);
    let err = result.expect_err("nothing answered, so the exec cannot have succeeded");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(
        waited >= Duration::from_secs(2),
        "gave up early: {waited:?}"
    );
}

#[test]
fn exec_streams_large_stdout_and_stderr_without_deadlock() {
    require!(SSHD);
    let sshd = Sshd::start();
    let conn = sshd.connect();
    let out = within(Duration::from_secs(60), "4 MiB on each stream", move || {
        // Both streams are written at the same time, so neither can be read to the end first.
        conn.exec_capture(
            "head -c 4194304 /dev/zero | tr '\\0' o & head -c 4194304 /dev/zero | tr '\\0' e >&2; wait",
        )
        .unwrap()
    });
    assert_eq!(out.status, 0);
    assert_eq!(out.stdout.len(), 4 << 20);
    assert_eq!(out.stderr.len(), 4 << 20);
    assert!(out.stdout.iter().all(|&b| b == b'o'));
    assert!(out.stderr.iter().all(|&b| b == b'e'));
}

#[test]
fn exec_pipes_stdin() {
    require!(SSHD);
    let sshd = Sshd::start();
    let conn = sshd.connect();
    within(Duration::from_secs(60), "stdin piping", move || {
        // Echoed back while still being sent: needs input and output to progress together.
        let data = payload(3 << 20, 7);
        let mut input = std::io::Cursor::new(data.clone());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = conn
            .exec("cat", Some(&mut input), &mut out, &mut err)
            .unwrap();
        assert_eq!(status, 0, "stderr: {}", String::from_utf8_lossy(&err));
        assert!(
            out == data,
            "cat returned {} bytes, not the 3 MiB sent",
            out.len()
        );

        let mut input = std::io::Cursor::new(b"one\ntwo\n".to_vec());
        let mut out = Vec::new();
        let status = conn
            .exec("wc -l", Some(&mut input), &mut out, &mut Vec::new())
            .unwrap();
        assert_eq!((status, String::from_utf8(out).unwrap().trim()), (0, "2"));

        // The command stops reading early: the rest of stdin is dropped, no error.
        let mut input = std::io::Cursor::new(payload(8 << 20, 9));
        let mut out = Vec::new();
        let status = conn
            .exec("head -c 5", Some(&mut input), &mut out, &mut Vec::new())
            .unwrap();
        assert_eq!((status, out.len()), (0, 5));
    });
}

#[test]
fn host_key_mismatch_names_both_fingerprints() {
    require!(SSHD);
    let sshd = Sshd::start();
    let impostor: KeyPair = generate_ed25519("someone-else").unwrap();
    let mut target = sshd.target.clone();
    target.host_key = impostor.public_openssh.clone();
    let err = Connection::connect(&target, CONNECT).unwrap_err();
    let expected = fingerprint(&impostor.public_openssh).unwrap();
    let actual = fingerprint(&sshd.target.host_key).unwrap();
    match &err {
        SshError::HostKeyMismatch {
            addr,
            expected_fp,
            actual_fp,
        } => {
            assert_eq!(*addr, target.addr);
            assert_eq!(expected_fp, &expected);
            assert_eq!(actual_fp, &actual);
        }
        other => panic!("expected HostKeyMismatch, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&expected) && message.contains(&actual),
        "{message}"
    );
    assert!(err.hint().is_some());
    // Not retried: waiting cannot fix a wrong key.
    let start = Instant::now();
    let err = wait_until_reachable(&target, Instant::now() + Duration::from_secs(20)).unwrap_err();
    assert!(matches!(err, SshError::HostKeyMismatch { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // The key was checked before authenticating: sshd saw no publickey attempt.
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn wait_until_reachable_times_out_on_a_closed_port() {
    let target = Target {
        addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
        user: "nobody".into(),
        identity: PathBuf::from("/nonexistent"),
        host_key: generate_ed25519("x").unwrap().public_openssh,
    };
    let start = Instant::now();
    let err = wait_until_reachable(&target, start + Duration::from_millis(1500)).unwrap_err();
    let waited = start.elapsed();
    assert!(matches!(err, SshError::Unreachable { .. }), "{err:?}");
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(err.to_string().contains(&target.addr.to_string()), "{err}");
}

#[test]
fn wait_until_reachable_waits_for_a_late_server() {
    require!(SSHD);
    let mut sshd = Sshd::prepare();
    let target = sshd.target.clone();
    let waiter = thread::spawn(move || wait_until_reachable(&target, Instant::now() + CONNECT));
    thread::sleep(Duration::from_millis(700));
    sshd.spawn();
    let conn = waiter
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:?}\n{}", sshd.log()));
    assert_eq!(conn.exec_capture("echo up").unwrap().stdout, b"up\n");
}

/// A unix socket server that echoes each connection and half-closes after the client's EOF.
fn echo_server(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            thread::spawn(move || {
                let mut reader = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut reader, &mut conn);
                let _ = conn.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

/// Sends `data`, half-closes, and returns everything read back until EOF.
fn round_trip(path: &Path, data: Vec<u8>) -> Vec<u8> {
    let mut stream = UnixStream::connect(path).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    sender.join().unwrap();
    back
}

#[test]
fn forwarder_carries_concurrent_connections_with_half_close() {
    require!(SSHD);
    let sshd = Sshd::start();
    let remote = sshd.dir.path().join("remote.sock");
    echo_server(&remote);
    let local = sshd.dir.path().join("local.sock");
    std::fs::write(&local, "stale").unwrap();
    let mut fwd = forward_unix_socket(&sshd.target, &local, remote.to_str().unwrap())
        .unwrap_or_else(|e| panic!("{e:?}\n{}", sshd.log()));
    let mode = std::fs::metadata(&local).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let path = local.clone();
    within(Duration::from_secs(120), "forwarded traffic", move || {
        // A long-lived connection (like `docker attach`) stays open throughout.
        let mut held = UnixStream::connect(&path).unwrap();
        held.write_all(b"hello").unwrap();
        let mut five = [0u8; 5];
        held.read_exact(&mut five).unwrap();
        assert_eq!(&five, b"hello");

        let clients: Vec<_> = (0..8u64)
            .map(|i| {
                let path = path.clone();
                thread::spawn(move || {
                    let data = payload(1 << 20, i + 1);
                    assert!(round_trip(&path, data.clone()) == data, "client {i}");
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let big = payload(16 << 20, 99);
        assert!(round_trip(&path, big.clone()) == big, "16 MiB round trip");

        held.write_all(b" bye").unwrap();
        held.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        held.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b" bye");
    });
    assert_eq!(fwd.last_error(), None);
    fwd.stop();
    assert!(!local.exists(), "socket file removed on stop");
    assert!(UnixStream::connect(&local).is_err());
}

#[test]
fn forwarder_reconnects_after_the_server_restarts() {
    require!(SSHD);
    let mut sshd = Sshd::start();
    let remote = sshd.dir.path().join("remote.sock");
    echo_server(&remote);
    let local = sshd.dir.path().join("local.sock");
    let fwd = forward_unix_socket(&sshd.target, &local, remote.to_str().unwrap()).unwrap();
    for _ in 0..3 {
        assert_eq!(round_trip(&local, b"before".to_vec()), b"before");
        // The session goes back to the pool once the channel's CLOSE is acknowledged, just
        // after the client saw EOF; a client arriving within that instant gets a new session.
        thread::sleep(Duration::from_millis(200));
    }
    // Sequential clients reuse the session opened by forward_unix_socket: no handshake each.
    assert_eq!(
        sshd.log().matches("Accepted publickey").count(),
        1,
        "{}",
        sshd.log()
    );
    // The pooled session dies with the server; the next client must get a new one.
    assert!(
        sshd.restart() >= 1,
        "the pooled session's sshd process was not found"
    );
    let path = local.clone();
    let back = within(Duration::from_secs(30), "after restart", move || {
        round_trip(&path, b"after".to_vec())
    });
    assert_eq!(back, b"after", "{:?}\n{}", fwd.last_error(), sshd.log());
    drop(fwd);
    assert!(!local.exists());
}

#[test]
fn forwarder_reports_a_missing_remote_socket() {
    require!(SSHD);
    let sshd = Sshd::start();
    let local = sshd.dir.path().join("local.sock");
    let missing = "/nonexistent/devbox-test.sock";
    let fwd = forward_unix_socket(&sshd.target, &local, missing).unwrap();
    // Each client's connection is closed instead of hanging.
    for _ in 0..2 {
        let path = local.clone();
        let back = within(Duration::from_secs(20), "refused forward", move || {
            let mut stream = UnixStream::connect(&path).unwrap();
            let mut back = Vec::new();
            let _ = stream.read_to_end(&mut back);
            back
        });
        assert!(back.is_empty());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while fwd.last_error().is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let error = fwd.last_error().expect("the failure is recorded");
    assert!(error.contains(missing), "{error}");
    // A refused channel leaves the session usable: it is kept, not replaced by a new one.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        sshd.log().matches("Accepted publickey").count(),
        1,
        "{}",
        sshd.log()
    );
    drop(fwd);
    assert!(!local.exists());
}

/// Environment variable through which the shell test hands the target to its child.
const SHELL_ENV: &str = "DEVBOX_TEST_SHELL_TARGET";

/// Not a test by itself: the child half of `shell_uses_a_pty_and_returns_the_exit_status`,
/// run in a fresh process whose stdio is a pty.
#[test]
#[ignore = "helper process for shell_uses_a_pty_and_returns_the_exit_status"]
fn shell_child() {
    let Ok(spec) = std::env::var(SHELL_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.splitn(4, '|').collect();
    let target = Target {
        addr: parts[0].parse().unwrap(),
        user: parts[1].into(),
        identity: parts[2].into(),
        host_key: parts[3].into(),
    };
    let conn = Connection::connect(&target, CONNECT).unwrap();
    let status = conn
        .shell(
            Some("stty size; read line; stty size; echo done; exit 7"),
            true,
        )
        .unwrap();
    std::process::exit(status);
}

#[test]
fn shell_uses_a_pty_and_returns_the_exit_status() {
    use nix::pty::{Winsize, openpty};
    use nix::sys::signal::{Signal, kill};
    use nix::sys::termios::{LocalFlags, tcgetattr};
    use nix::unistd::Pid;

    require!(SSHD, "/usr/bin/stty");
    let sshd = Sshd::start();
    let size = Winsize {
        ws_row: 40,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).unwrap();
    let slave_path = nix::unistd::ttyname(&pty.slave).unwrap();
    let t = &sshd.target;
    let spec = format!(
        "{}|{}|{}|{}",
        t.addr,
        t.user,
        t.identity.display(),
        t.host_key
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shell_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SHELL_ENV, spec)
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()))
        .spawn()
        .unwrap();

    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut master = std::fs::File::from(pty.master);
    let mut master_in = master.try_clone().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = master.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("no {needle:?} from the shell; got {seen:?}"),
            }
        }
    };

    // The PTY was requested with the terminal's size.
    wait_for("40 100");
    // Resize the terminal; the kernel would send SIGWINCH to a foreground job, we do it.
    let resized = Command::new("/usr/bin/stty")
        .arg("-F")
        .arg(&slave_path)
        .args(["rows", "50", "cols", "120"])
        .status()
        .unwrap();
    assert!(resized.success());
    kill(Pid::from_raw(child.id() as i32), Signal::SIGWINCH).unwrap();
    thread::sleep(Duration::from_millis(300));
    master_in.write_all(b"go\r").unwrap();
    wait_for("50 120");
    wait_for("done");

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "shell child did not exit; output {seen:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(7), "output {seen:?}");
    // Raw mode was undone on exit: the terminal is back in canonical mode with echo.
    let attrs = tcgetattr(&pty.slave).unwrap();
    assert!(
        attrs
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "terminal left in raw mode"
    );
}
