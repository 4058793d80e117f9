//! Which of the user's trust stores hold the devbox root, and the exact commands that add or
//! remove it: pure planning (paths in, argv out), run by `commands/trust.rs`.
//!
//! - Linux: the NSS databases Chromium (`~/.pki/nssdb`) and Firefox (each profile under
//!   `~/.mozilla/firefox` and the snap's `~/snap/firefox/common/.mozilla/firefox`) read,
//!   through `certutil` (package libnss3-tools). No root: they are the user's files.
//! - macOS: the user's login keychain, through `security add-trusted-cert` (trust settings
//!   for the user, no root).
//!
//! - The system store (`--system`), which every program of the host trusts (curl, Python,
//!   Go, Java through its ca-certificates hook): Debian/Ubuntu's
//!   `/usr/local/share/ca-certificates` and `update-ca-certificates`, or macOS's System
//!   keychain. It needs root: the commands are run through `sudo` (one prompt) unless devbox
//!   already runs as root, and take only the user's own root file, already checked.

use std::path::{Path, PathBuf};

/// The nickname (NSS) under which the root is stored: one per user and host.
pub fn nickname(user: &str) -> String {
    format!("devbox local CA ({user})")
}

/// The user's NSS databases (directories holding `cert9.db`), Chromium's first; Chromium's
/// is listed even when it does not exist yet (install creates it).
pub fn nss_databases(home: &Path) -> Vec<PathBuf> {
    let mut out = vec![home.join(".pki/nssdb")];
    for root in [
        home.join(".mozilla/firefox"),
        home.join("snap/firefox/common/.mozilla/firefox"),
    ] {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut profiles: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("cert9.db").is_file())
            .collect();
        profiles.sort();
        out.extend(profiles);
    }
    out
}

fn db_arg(db: &Path) -> String {
    format!("sql:{}", db.display())
}

/// `certutil` creating an empty database in `db` (Chromium's, when it never ran).
pub fn nss_create(db: &Path) -> Vec<String> {
    vec![
        "certutil".into(),
        "-N".into(),
        "--empty-password".into(),
        "-d".into(),
        db_arg(db),
    ]
}

/// `certutil` adding `ca_pem` to `db` as a CA trusted for TLS servers (`C,,`).
pub fn nss_add(db: &Path, nick: &str, ca_pem: &Path) -> Vec<String> {
    vec![
        "certutil".into(),
        "-A".into(),
        "-d".into(),
        db_arg(db),
        "-n".into(),
        nick.into(),
        "-t".into(),
        "C,,".into(),
        "-i".into(),
        ca_pem.display().to_string(),
    ]
}

/// `certutil` removing the certificate `nick` from `db`.
pub fn nss_delete(db: &Path, nick: &str) -> Vec<String> {
    vec![
        "certutil".into(),
        "-D".into(),
        "-d".into(),
        db_arg(db),
        "-n".into(),
        nick.into(),
    ]
}

/// `certutil` listing `nick` in `db` (exit 0 when present).
pub fn nss_show(db: &Path, nick: &str) -> Vec<String> {
    vec![
        "certutil".into(),
        "-L".into(),
        "-d".into(),
        db_arg(db),
        "-n".into(),
        nick.into(),
    ]
}

/// macOS: trust `ca_pem` as a root for the user, in their login keychain.
pub fn macos_add(home: &Path, ca_pem: &Path) -> Vec<String> {
    vec![
        "security".into(),
        "add-trusted-cert".into(),
        "-r".into(),
        "trustRoot".into(),
        "-p".into(),
        "ssl".into(),
        "-k".into(),
        home.join("Library/Keychains/login.keychain-db")
            .display()
            .to_string(),
        ca_pem.display().to_string(),
    ]
}

/// macOS: remove the trust settings and the certificate `ca_pem` from the user's keychain.
pub fn macos_remove(ca_pem: &Path) -> Vec<String> {
    vec![
        "security".into(),
        "remove-trusted-cert".into(),
        ca_pem.display().to_string(),
    ]
}

/// macOS: `security verify-cert` of the root for SSL (exit 0 when trusted).
pub fn macos_verify(ca_pem: &Path) -> Vec<String> {
    vec![
        "security".into(),
        "verify-cert".into(),
        "-c".into(),
        ca_pem.display().to_string(),
        "-p".into(),
        "ssl".into(),
    ]
}

/// Where Debian and Ubuntu keep roots added locally (read by `update-ca-certificates`).
pub const LINUX_SYSTEM_DIR: &str = "/usr/local/share/ca-certificates";

/// macOS's keychain of roots every user trusts.
pub const MACOS_SYSTEM_KEYCHAIN: &str = "/Library/Keychains/System.keychain";

/// The user's root in the Linux system store: one file per user (a user name is kept to
/// letters, digits, `.`, `_` and `-`; the `.crt` suffix is what `update-ca-certificates` reads).
pub fn linux_system_file(user: &str) -> PathBuf {
    let safe: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    Path::new(LINUX_SYSTEM_DIR).join(format!("devbox-{safe}.crt"))
}

fn privileged(as_root: bool, argv: &[&str]) -> Vec<String> {
    let sudo = (!as_root).then_some("sudo");
    sudo.into_iter()
        .chain(argv.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// Linux: the commands that put `ca_pem` into the system store (`sudo` first unless
/// `as_root`). `install` copies it as a root-owned 0644 file (never a link to the user's).
pub fn linux_system_add(ca_pem: &Path, user: &str, as_root: bool) -> Vec<Vec<String>> {
    let dest = linux_system_file(user).display().to_string();
    let src = ca_pem.display().to_string();
    vec![
        privileged(
            as_root,
            &[
                "install", "-m", "0644", "-o", "root", "-g", "root", "-T", &src, &dest,
            ],
        ),
        privileged(as_root, &["update-ca-certificates"]),
    ]
}

/// Linux: the commands that take the user's root out of the system store again.
pub fn linux_system_remove(user: &str, as_root: bool) -> Vec<Vec<String>> {
    let dest = linux_system_file(user).display().to_string();
    vec![
        privileged(as_root, &["rm", "-f", &dest]),
        privileged(as_root, &["update-ca-certificates", "--fresh"]),
    ]
}

/// macOS: trust `ca_pem` as a root for every user, in the System keychain.
pub fn macos_system_add(ca_pem: &Path, as_root: bool) -> Vec<Vec<String>> {
    let src = ca_pem.display().to_string();
    vec![privileged(
        as_root,
        &[
            "security",
            "add-trusted-cert",
            "-d",
            "-r",
            "trustRoot",
            "-p",
            "ssl",
            "-k",
            MACOS_SYSTEM_KEYCHAIN,
            &src,
        ],
    )]
}

/// macOS: remove the admin trust settings of `ca_pem`, then the certificate itself from the
/// System keychain, named by its SHA-1 hash (`sha1_hex`, how `security` names one exactly).
pub fn macos_system_remove(ca_pem: &Path, sha1_hex: &str, as_root: bool) -> Vec<Vec<String>> {
    let src = ca_pem.display().to_string();
    vec![
        privileged(as_root, &["security", "remove-trusted-cert", "-d", &src]),
        privileged(
            as_root,
            &[
                "security",
                "delete-certificate",
                "-Z",
                sha1_hex,
                MACOS_SYSTEM_KEYCHAIN,
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_exactly_these() {
        let db = Path::new("/home/ann/.pki/nssdb");
        let ca = Path::new("/home/ann/.devbox/tls/ca.pem");
        let nick = nickname("ann");
        assert_eq!(
            nss_add(db, &nick, ca).join(" "),
            "certutil -A -d sql:/home/ann/.pki/nssdb -n devbox local CA (ann) -t C,, -i \
             /home/ann/.devbox/tls/ca.pem"
        );
        assert_eq!(
            nss_delete(db, &nick).join(" "),
            "certutil -D -d sql:/home/ann/.pki/nssdb -n devbox local CA (ann)"
        );
        assert_eq!(
            macos_add(Path::new("/Users/ann"), ca).join(" "),
            "security add-trusted-cert -r trustRoot -p ssl -k \
             /Users/ann/Library/Keychains/login.keychain-db /home/ann/.devbox/tls/ca.pem"
        );
        assert_eq!(
            macos_remove(ca).join(" "),
            "security remove-trusted-cert /home/ann/.devbox/tls/ca.pem"
        );
    }

    #[test]
    fn system_store_command_lines_are_exactly_these() {
        let ca = Path::new("/home/ann/.devbox/tls/ca.pem");
        let lines = |v: Vec<Vec<String>>| v.iter().map(|a| a.join(" ")).collect::<Vec<_>>();
        assert_eq!(
            lines(linux_system_add(ca, "ann", false)),
            [
                "sudo install -m 0644 -o root -g root -T /home/ann/.devbox/tls/ca.pem \
                 /usr/local/share/ca-certificates/devbox-ann.crt",
                "sudo update-ca-certificates",
            ]
        );
        assert_eq!(
            lines(linux_system_remove("ann", true)),
            [
                "rm -f /usr/local/share/ca-certificates/devbox-ann.crt",
                "update-ca-certificates --fresh",
            ]
        );
        assert_eq!(
            linux_system_file("../../etc/x y"),
            Path::new("/usr/local/share/ca-certificates/devbox-.._.._etc_x_y.crt"),
            "a user name never leaves the directory"
        );
        assert_eq!(
            lines(macos_system_add(ca, false)),
            ["sudo security add-trusted-cert -d -r trustRoot -p ssl -k \
              /Library/Keychains/System.keychain /home/ann/.devbox/tls/ca.pem"]
        );
        assert_eq!(
            lines(macos_system_remove(ca, "0A1B", false)),
            [
                "sudo security remove-trusted-cert -d /home/ann/.devbox/tls/ca.pem",
                "sudo security delete-certificate -Z 0A1B /Library/Keychains/System.keychain",
            ]
        );
    }

    #[test]
    fn firefox_profiles_with_a_database_are_found() {
        let home = tempfile::tempdir().unwrap();
        let ff = home.path().join(".mozilla/firefox");
        for (p, db) in [("b.default", true), ("a.other", true), ("c.empty", false)] {
            std::fs::create_dir_all(ff.join(p)).unwrap();
            if db {
                std::fs::write(ff.join(p).join("cert9.db"), "").unwrap();
            }
        }
        assert_eq!(
            nss_databases(home.path()),
            vec![
                home.path().join(".pki/nssdb"),
                ff.join("a.other"),
                ff.join("b.default")
            ]
        );
    }
}
