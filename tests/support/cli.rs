//! The tier-2 environment: the real binary against a temporary DEVBOX_HOME, with a cache
//! holding one small image (enough for `create`, which only records its version).

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;

pub struct Env {
    _tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub cache: PathBuf,
    /// The host-wide lease registry, private to this test (`DEVBOX_REGISTRY`, which devbox
    /// honours for root only; the tests run as root).
    pub registry: PathBuf,
    /// The docker CLI's configuration directory (`DOCKER_CONFIG`).
    pub docker_config: PathBuf,
}

impl Env {
    /// A fresh home and a cache holding one image (a manifest and two small payload files:
    /// enough for `create`, which only records the version).
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let cache = tmp.path().join("cache");
        let img = cache.join("images/0123456789abcdef");
        std::fs::create_dir_all(&img).unwrap();
        std::fs::write(img.join("vmlinuz"), "k").unwrap();
        std::fs::write(img.join("initrd.img"), "i").unwrap();
        let sha = |s: &str| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(s.as_bytes()))
        };
        let manifest = serde_json::json!({
            "version": "0123456789abcdef",
            "arch": "x86_64",
            "kernel_version": "6.1.0-test-cloud-amd64",
            "created": "2026-11-21T00:00:00Z",
            "packages": {},
            "files": {"vmlinuz": sha("k"), "initrd.img": sha("i")},
        });
        std::fs::write(img.join("manifest.json"), manifest.to_string()).unwrap();
        Env {
            registry: tmp.path().join("registry"),
            docker_config: tmp.path().join("docker"),
            _tmp: tmp,
            home,
            cache,
        }
    }

    pub fn cmd(&self) -> Command {
        Command::from_std(self.std_cmd())
    }

    /// [`Env::cmd`] as a `std::process::Command` (whose stdin can be any file).
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("devbox"));
        c.env("DEVBOX_HOME", &self.home)
            .env("DEVBOX_CACHE", &self.cache)
            .env("DEVBOX_REGISTRY", &self.registry)
            // The machines' Docker contexts go here, never to the user's ~/.docker.
            .env("DOCKER_CONFIG", &self.docker_config)
            .env("NO_COLOR", "1");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// `devbox create` of a small machine (1 vCPU, 512 MiB, a 2 GiB disk) with `flags`, then
    /// `--` and the name (so a name that looks like a flag is tested as a name).
    pub fn create_small(&self, flags: &[&str], name: &str) -> Output {
        let mut args = vec![
            "create",
            "--cpus",
            "1",
            "--memory",
            "512",
            "--disk-size",
            "2G",
        ];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", name]);
        self.run(&args)
    }

    /// [`Env::create_small`] on the fake driver, without a share: no guest, no root.
    pub fn create_fake(&self, name: &str) -> Output {
        self.create_small(&["--driver", "fake", "--no-share"], name)
    }

    pub fn machine_dir(&self, name: &str) -> PathBuf {
        self.home.join("machines").join(name)
    }
}

/// Runs devbox with `args` and its stdout on a pseudo-terminal in raw mode (no `\n` to
/// `\r\n`), as a command printing to the user's terminal; returns its exit code and what
/// reached the terminal.
pub fn run_on_terminal(env: &Env, args: &[&str]) -> (Option<i32>, Vec<u8>) {
    use nix::sys::termios;
    use std::io::Read;
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut raw = termios::tcgetattr(&pty.slave).unwrap();
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &raw).unwrap();
    let status = env
        .std_cmd()
        .args(args)
        .stdout(std::fs::File::from(pty.slave))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    // The child is gone and the slave closed: what it wrote waits in the terminal's buffer.
    let mut master = std::fs::File::from(pty.master);
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    (status.code(), out)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
pub fn fails_with(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {}", stderr(o));
    assert!(
        stderr(o).contains(needle),
        "stderr should contain {needle:?}:\n{}",
        stderr(o)
    );
}

#[track_caller]
pub fn succeeds(o: &Output) {
    assert!(o.status.success(), "failed: {}\n{}", stderr(o), stdout(o));
}
