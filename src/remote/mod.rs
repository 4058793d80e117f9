//! Adopting a host devbox did not create (`devbox create --driver ssh`, issue #21): what the
//! host is ([`Facts`], learnt in one SSH command), what it takes to give it a Docker engine
//! devbox can drive ([`plan`]: nothing, start the engine, or install it from the host's own
//! distribution packages), and running that plan over SSH.
//!
//! The plan is pure (facts in, commands out) so that the commands devbox would send are
//! tested as a recording (`tests/remote_adopt.rs`) on top of the unit tests here; the test
//! world's guests have neither a package manager nor systemd.
//!
//! The host is the user's (trusted, like the user), but what it prints is parsed strictly:
//! unknown lines are ignored and every value is checked before it changes a decision.

use crate::output::guest_text::escape;
use std::time::{Duration, Instant};

pub mod settings;

use crate::ssh::{Connection, SshError};

/// The one command that learns the [`Facts`]: `key=value` lines, nothing the host's shell
/// configuration can add to them (lines without a known key are ignored). POSIX sh: the
/// host's login shell may be anything, so the script runs under `sh -c`.
pub const FACTS_SCRIPT: &str = r#"sh -c '
echo "uid=$(id -u)"
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then echo sudo=yes; else echo sudo=no; fi
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os_id=$ID"; echo "os_like=$ID_LIKE"; echo "os_name=$PRETTY_NAME"; fi
echo "arch=$(uname -m)"
command -v apt-get >/dev/null 2>&1 && echo apt=yes
command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] && echo systemd=yes
command -v docker >/dev/null 2>&1 && echo docker_cli=yes
v=$(docker version --format "{{.Server.Version}}" 2>/dev/null) && echo "docker_version=$v"
if [ "$(id -u)" != 0 ] && [ -z "$v" ] && command -v docker >/dev/null 2>&1; then
  v=$(sudo -n docker version --format "{{.Server.Version}}" 2>/dev/null) && echo "docker_version_sudo=$v"
fi
true'"#;

/// What devbox learnt about a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub uid: Option<u32>,
    /// A non-root user who may run anything with `sudo -n` (no password asked).
    pub sudo: bool,
    /// `/etc/os-release`'s `ID` and `ID_LIKE` (lower case) and `PRETTY_NAME`.
    pub os_id: String,
    pub os_like: String,
    pub os_name: String,
    pub arch: String,
    pub apt: bool,
    /// systemd runs the host (`systemctl` and `/run/systemd/system`).
    pub systemd: bool,
    pub docker_cli: bool,
    /// The engine's version, when it answered the user.
    pub docker_version: Option<String>,
    /// The engine's version, when it answered only through `sudo`.
    pub docker_version_sudo: Option<String>,
}

impl Facts {
    /// Reads [`FACTS_SCRIPT`]'s output.
    pub fn parse(out: &str) -> Facts {
        let mut f = Facts::default();
        for line in out.lines() {
            let Some((key, value)) = line.trim_end_matches('\r').split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key {
                "uid" => f.uid = value.parse().ok(),
                "sudo" => f.sudo = value == "yes",
                "os_id" => f.os_id = value.trim_matches('"').to_ascii_lowercase(),
                "os_like" => f.os_like = value.trim_matches('"').to_ascii_lowercase(),
                "os_name" => f.os_name = value.trim_matches('"').to_owned(),
                "arch" => f.arch = value.to_owned(),
                "apt" => f.apt = value == "yes",
                "systemd" => f.systemd = value == "yes",
                "docker_cli" => f.docker_cli = value == "yes",
                "docker_version" if valid_version(value) => {
                    f.docker_version = Some(value.to_owned())
                }
                "docker_version_sudo" if valid_version(value) => {
                    f.docker_version_sudo = Some(value.to_owned())
                }
                _ => {}
            }
        }
        f
    }

    pub fn root(&self) -> bool {
        self.uid == Some(0)
    }

    /// Debian, Ubuntu, or a derivative that says it is one of them.
    pub fn debian_family(&self) -> bool {
        let family = |id: &str| id == "debian" || id == "ubuntu";
        family(&self.os_id) || self.os_like.split_whitespace().any(family)
    }

    fn os(&self) -> String {
        if self.os_name.is_empty() {
            "this host (no /etc/os-release)".to_owned()
        } else {
            self.os_name.clone()
        }
    }
}

/// A Docker version as the engine prints it: digits, dots, letters, `+`, `-`, `~`, short.
fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '~'))
}

/// Why a host cannot be adopted, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(
        "{user} on {host} is not root and cannot use sudo without a password, so devbox \
         cannot {what}"
    )]
    NoPrivilege {
        user: String,
        host: String,
        what: &'static str,
    },
    #[error(
        "{host} runs {os}, which has no apt-get: devbox installs Docker from Debian's or \
         Ubuntu's own packages only"
    )]
    NoPackageManager { host: String, os: String },
    #[error(
        "Docker is installed on {host} but its engine does not answer, and {host} does not \
         run systemd, so devbox cannot start it"
    )]
    EngineDown { host: String },
    #[error("cannot reach SSH on {host} ({addr})")]
    Unreachable {
        host: String,
        addr: String,
        #[source]
        source: Box<SshError>,
    },
    #[error("{host} refused the key {identity} for {user}")]
    KeyRefused {
        host: String,
        user: String,
        identity: String,
    },
    #[error("no SSH key at {path}")]
    NoKey { path: String },
}

impl AdoptError {
    /// What the user can do.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            AdoptError::NoPrivilege { user, .. } => format!(
                "connect as root (--ssh-user root), or let {user} run sudo without a password \
                 (a line `{user} ALL=(ALL) NOPASSWD: ALL` in /etc/sudoers.d/), or add {user} \
                 to the docker group of a host whose engine already runs"
            ),
            AdoptError::NoPackageManager { .. } => {
                "install Docker on the host yourself (its engine must answer `docker version`), \
                 then run the same `devbox create` again"
                    .to_owned()
            }
            AdoptError::EngineDown { .. } => {
                "start dockerd on the host, then run the same `devbox create` again".to_owned()
            }
            AdoptError::Unreachable { .. } => "check that the host is up, that this host \
                 reaches it, and that sshd listens on that port (--ssh-port)"
                .to_owned(),
            AdoptError::KeyRefused {
                host,
                user,
                identity,
            } => format!(
                "install the public key on the host (`ssh-copy-id -i {identity}.pub \
                 {user}@{host}`), or name another one with --ssh-key"
            ),
            AdoptError::NoKey { .. } => "name your key with --ssh-key FILE, or make one with \
                 `ssh-keygen -t ed25519` and install it on the host"
                .to_owned(),
        })
    }
}

/// Why the host's key cannot be pinned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PinError {
    #[error(
        "--ssh-host-key {text:?} is not an SSH key fingerprint (SHA256: followed by 43 \
         characters of unpadded base64, as `ssh-keygen -lf` prints it)"
    )]
    BadFingerprint { text: String },
    #[error(
        "{host} presents host key(s) {actual}, not the expected {expected}: this may not be \
         the host you meant"
    )]
    Mismatch {
        host: String,
        expected: String,
        actual: String,
    },
}

impl PinError {
    pub fn hint(&self) -> Option<String> {
        match self {
            PinError::BadFingerprint { .. } => Some(
                "on the host, `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints its \
                 key's fingerprint"
                    .to_owned(),
            ),
            PinError::Mismatch { .. } => Some(
                "check the fingerprint on the host itself (`ssh-keygen -lf \
                 /etc/ssh/ssh_host_ed25519_key.pub` on its console); if it was reinstalled, \
                 pass its new fingerprint; otherwise something else answers at that address"
                    .to_owned(),
            ),
        }
    }
}

/// `--ssh-host-key`: an SHA256 fingerprint as OpenSSH prints it (`SHA256:` and 43 characters
/// of unpadded standard base64).
pub fn parse_fingerprint(text: &str) -> Result<String, PinError> {
    let t = text.trim();
    let ok = t.strip_prefix("SHA256:").is_some_and(|b| {
        b.len() == 43
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    });
    if ok {
        Ok(t.to_owned())
    } else {
        Err(PinError::BadFingerprint {
            text: text.to_owned(),
        })
    }
}

/// The host key to pin among those the host `presented` (strongest first): the one with the
/// `expected` fingerprint, or, with none expected, the strongest (trust on first use: the
/// caller shows its fingerprint).
pub fn choose_host_key(
    host: &str,
    presented: &[String],
    expected: Option<&str>,
) -> Result<String, PinError> {
    let fingerprints: Vec<String> = presented
        .iter()
        .map(|k| crate::ssh::fingerprint(k).unwrap_or_else(|_| "(unreadable key)".to_owned()))
        .collect();
    match expected {
        None => presented.first().cloned(),
        Some(want) => presented
            .iter()
            .zip(&fingerprints)
            .find(|(_, fp)| fp.as_str() == want)
            .map(|(k, _)| k.clone()),
    }
    .ok_or_else(|| PinError::Mismatch {
        host: host.to_owned(),
        expected: expected.unwrap_or("a key").to_owned(),
        actual: if fingerprints.is_empty() {
            "none".to_owned()
        } else {
            fingerprints.join(", ")
        },
    })
}

/// What adopting a host takes: the commands to run, in order, each one shell command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<String>,
}

/// The commands that install or start the engine and let `user` drive it directly (devbox
/// forwards the engine's socket over SSH, which cannot go through sudo: a user who is not root
/// joins the host's docker group), or why that is not possible. Nothing when the engine
/// already answers the user. `host` is for messages.
pub fn plan(facts: &Facts, host: &str, user: &str) -> Result<Plan, AdoptError> {
    if facts.docker_version.is_some() {
        return Ok(Plan { steps: Vec::new() });
    }
    let privileged = facts.root() || facts.sudo;
    let sudo = if facts.root() { "" } else { "sudo -n " };
    let no_privilege = |what| AdoptError::NoPrivilege {
        user: user.to_owned(),
        host: host.to_owned(),
        what,
    };
    let mut steps = Vec::new();
    if facts.docker_version_sudo.is_none() {
        if facts.docker_cli {
            if !facts.systemd {
                return Err(AdoptError::EngineDown {
                    host: host.to_owned(),
                });
            }
            if !privileged {
                return Err(no_privilege("start its Docker engine"));
            }
        } else {
            if !facts.apt || !facts.debian_family() {
                return Err(AdoptError::NoPackageManager {
                    host: host.to_owned(),
                    os: facts.os(),
                });
            }
            if !privileged {
                return Err(no_privilege("install Docker"));
            }
            // The distribution's own engine (Debian's and Ubuntu's `docker.io`), never a
            // script fetched from elsewhere; noninteractive so that no prompt waits on a
            // closed stdin.
            steps.push(format!(
                "{sudo}env DEBIAN_FRONTEND=noninteractive apt-get update -q"
            ));
            steps.push(format!(
                "{sudo}env DEBIAN_FRONTEND=noninteractive apt-get install -q -y docker.io"
            ));
        }
        if facts.systemd {
            steps.push(format!("{sudo}systemctl enable --now docker.service"));
        }
    }
    if !facts.root() {
        if !facts.sudo {
            return Err(no_privilege("let it use the Docker engine"));
        }
        steps.push(format!(
            "sudo -n usermod -aG docker {}",
            crate::ssh::quote(user)
        ));
    }
    Ok(Plan { steps })
}

/// Learns the host's [`Facts`] over `conn`.
pub fn gather(conn: &Connection, timeout: Duration) -> Result<Facts, SshError> {
    let out = conn.exec_capture_until(FACTS_SCRIPT, Instant::now() + timeout)?;
    Ok(Facts::parse(&escape(&out.stdout)))
}

/// A step of a plan that failed: its command, exit status and last lines of output.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` on the host exited with status {status}: {tail}")]
pub struct StepFailed {
    pub command: String,
    pub status: i32,
    pub tail: String,
}

/// Runs `plan`'s steps in order over `conn`, each bounded by `step_timeout`; stops at the
/// first that fails.
pub fn run(conn: &Connection, plan: &Plan, step_timeout: Duration) -> anyhow::Result<()> {
    for step in &plan.steps {
        let out = conn.exec_capture_until(step, Instant::now() + step_timeout)?;
        if out.status != 0 {
            let text = escape(if out.stderr.is_empty() {
                &out.stdout
            } else {
                &out.stderr
            });
            let tail = text
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" / ");
            return Err(StepFailed {
                command: step.clone(),
                status: out.status,
                tail,
            }
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian(root: bool) -> Facts {
        Facts {
            uid: Some(if root { 0 } else { 1000 }),
            os_id: "debian".into(),
            os_name: "Debian GNU/Linux 12 (bookworm)".into(),
            arch: "x86_64".into(),
            apt: true,
            systemd: true,
            ..Facts::default()
        }
    }

    #[test]
    fn a_fingerprint_is_sha256_and_43_base64_characters() {
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        assert_eq!(parse_fingerprint(&format!(" {fp}\n")).unwrap(), fp);
        for bad in [
            "",
            "MD5:aa:bb",
            "SHA256:short",
            &format!("{fp}="),
            "uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_key_pinned_is_the_one_expected_or_the_strongest() {
        let a = crate::ssh::generate_ed25519("a").unwrap().public_openssh;
        let b = crate::ssh::generate_ed25519("b").unwrap().public_openssh;
        let keys = [a.clone(), b.clone()];
        assert_eq!(choose_host_key("h", &keys, None).unwrap(), a);
        let fp_b = crate::ssh::fingerprint(&b).unwrap();
        assert_eq!(choose_host_key("h", &keys, Some(&fp_b)).unwrap(), b);
        let other =
            crate::ssh::fingerprint(&crate::ssh::generate_ed25519("c").unwrap().public_openssh)
                .unwrap();
        let e = choose_host_key("h", &keys[..1], Some(&other)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&other) && msg.contains(&crate::ssh::fingerprint(&a).unwrap()),
            "{msg}"
        );
    }

    #[test]
    fn facts_are_read_strictly() {
        let out = "Welcome to the host!\nuid=0\nsudo=no\nos_id=ubuntu\nos_like=\"debian\"\n\
                   os_name=\"Ubuntu 24.04 LTS\"\narch=x86_64\napt=yes\nsystemd=yes\n\
                   docker_cli=yes\ndocker_version=26.1.5+dfsg1\nrandom=stuff\n";
        let f = Facts::parse(out);
        assert_eq!(f.uid, Some(0));
        assert!(f.root() && f.apt && f.systemd && f.docker_cli && f.debian_family());
        assert_eq!(f.os_like, "debian");
        assert_eq!(f.os_name, "Ubuntu 24.04 LTS");
        assert_eq!(f.docker_version.as_deref(), Some("26.1.5+dfsg1"));
        // A version that is not one is no version: the engine did not answer.
        let f = Facts::parse("uid=0\ndocker_version=$(reboot)\n");
        assert_eq!(f.docker_version, None);
        let f = Facts::parse("uid=zero\n");
        assert_eq!(f.uid, None);
        assert!(!f.root());
    }

    #[test]
    fn a_host_whose_engine_answers_needs_nothing() {
        let mut f = debian(false);
        f.docker_cli = true;
        f.docker_version = Some("26.1.5".into());
        assert_eq!(plan(&f, "h", "u").unwrap(), Plan { steps: vec![] });
        // Answering only through sudo: the user joins the docker group (the socket is
        // forwarded over SSH, without sudo).
        f.docker_version = None;
        f.docker_version_sudo = Some("26.1.5".into());
        f.sudo = true;
        assert_eq!(
            plan(&f, "h", "dev").unwrap().steps,
            ["sudo -n usermod -aG docker dev"]
        );
        f.sudo = false;
        assert!(matches!(
            plan(&f, "h", "dev"),
            Err(AdoptError::NoPrivilege { .. })
        ));
    }

    #[test]
    fn docker_is_installed_from_the_distribution_and_started() {
        let mut f = debian(true);
        assert_eq!(
            plan(&f, "h", "root").unwrap().steps,
            [
                "env DEBIAN_FRONTEND=noninteractive apt-get update -q",
                "env DEBIAN_FRONTEND=noninteractive apt-get install -q -y docker.io",
                "systemctl enable --now docker.service",
            ]
        );
        f = debian(false);
        f.sudo = true;
        let p = plan(&f, "h", "dev").unwrap();
        assert!(p.steps.iter().all(|s| s.starts_with("sudo -n ")), "{p:?}");
        assert_eq!(p.steps.last().unwrap(), "sudo -n usermod -aG docker dev");
        // Installed but stopped: started only.
        f.docker_cli = true;
        assert_eq!(
            plan(&f, "h", "dev").unwrap().steps,
            [
                "sudo -n systemctl enable --now docker.service",
                "sudo -n usermod -aG docker dev"
            ]
        );
    }

    #[test]
    fn hosts_devbox_cannot_adopt_are_refused_with_the_fix() {
        let mut f = debian(false);
        let e = plan(&f, "box", "dev").unwrap_err();
        assert!(matches!(e, AdoptError::NoPrivilege { .. }), "{e:?}");
        assert!(e.to_string().contains("dev on box is not root"), "{e}");
        assert!(e.hint().unwrap().contains("NOPASSWD"), "{:?}", e.hint());

        f = debian(true);
        f.os_id = "fedora".into();
        f.os_name = "Fedora Linux 41".into();
        f.apt = false;
        let e = plan(&f, "box", "root").unwrap_err();
        assert!(e.to_string().contains("Fedora Linux 41"), "{e}");

        // apt-get alone is not Debian (and the reverse).
        f.apt = true;
        assert!(matches!(
            plan(&f, "box", "root"),
            Err(AdoptError::NoPackageManager { .. })
        ));

        f = debian(true);
        f.systemd = false;
        f.docker_cli = true;
        assert!(matches!(
            plan(&f, "box", "root"),
            Err(AdoptError::EngineDown { .. })
        ));
        f.os_id = "linuxmint".into();
        f.os_like = "ubuntu debian".into();
        assert!(f.debian_family());
    }
}
