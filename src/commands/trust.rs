//! `devbox trust install|uninstall|status`: the devbox root in the user's trust stores (the
//! plan is `crate::tls::trust`'s; this runs it). Install creates the CA on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::cli::{TrustArgs, TrustCommand};
use crate::hint::Hint;
use crate::machine::store::Store;
use crate::output;
use crate::tls::ca::CaPaths;
use crate::tls::trust;

/// Why a trust store could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("`{tool}` is not installed; the {store} store needs it")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
        store: &'static str,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

impl Hint for TrustError {
    fn hint(&self) -> Option<String> {
        match self {
            TrustError::MissingTool { package, .. } => Some(format!(
                "install the package {package} (apt install {package})"
            )),
            TrustError::Failed { .. } => None,
        }
    }
}

pub fn run(store: &Store, c: TrustCommand) -> Result<i32> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let nick = trust::nickname(&user);
    let paths = CaPaths::new(&store.home);
    if let TrustCommand::Install(a) | TrustCommand::Uninstall(a) = &c
        && a.system
        && as_root()
        && let Some(by) = std::env::var_os("SUDO_USER")
    {
        anyhow::bail!(
            "`--system` under sudo would use root's devbox CA, not {}'s: run `devbox trust \
             {} --system` as yourself; it asks sudo for the system store's commands alone",
            by.to_string_lossy(),
            if matches!(c, TrustCommand::Install(_)) {
                "install"
            } else {
                "uninstall"
            }
        );
    }
    match c {
        TrustCommand::Install(a) => {
            let code = install(store, &paths, &home, &nick, &a)?;
            if a.system {
                system_install(&paths, &user, a.dry_run)?;
            }
            Ok(code)
        }
        TrustCommand::Uninstall(a) => {
            let code = uninstall(&paths, &home, &nick, &a)?;
            if a.system {
                system_uninstall(&paths, &user, a.dry_run)?;
            }
            Ok(code)
        }
        TrustCommand::Status => {
            let code = status(&paths, &home, &nick)?;
            if !cfg!(target_os = "macos") {
                output::data(format!(
                    "{}\t{}",
                    trust::linux_system_file(&user).display(),
                    yes_no(in_linux_system_store(&paths, &user))
                ));
            }
            Ok(code)
        }
    }
}

/// Whether the system store's file is exactly the user's root.
fn in_linux_system_store(paths: &CaPaths, user: &str) -> bool {
    match (
        std::fs::read(trust::linux_system_file(user)),
        std::fs::read(&paths.cert),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The system store's commands, run (or printed with `--dry-run`). The root was checked by
/// `install` (created or loaded and verified) before anything runs as root.
fn run_system(plan: Vec<Vec<String>>, dry_run: bool) -> Result<()> {
    if dry_run {
        for argv in plan {
            output::data(argv.join(" "));
        }
        return Ok(());
    }
    if !as_root() {
        need("sudo", "sudo", "system")?;
        output::info("the system store needs root: sudo may ask for your password");
    }
    for argv in plan {
        run_argv(&argv, "system")?;
    }
    Ok(())
}

fn system_install(paths: &CaPaths, user: &str, dry_run: bool) -> Result<()> {
    if cfg!(target_os = "macos") {
        run_system(trust::macos_system_add(&paths.cert, as_root()), dry_run)?;
        if !dry_run {
            output::info("trusted in the System keychain");
        }
        return Ok(());
    }
    if !dry_run {
        need("update-ca-certificates", "ca-certificates", "system")?;
    }
    run_system(
        trust::linux_system_add(&paths.cert, user, as_root()),
        dry_run,
    )?;
    if !dry_run {
        output::info(format!(
            "trusted in the system store ({})",
            trust::linux_system_file(user).display()
        ));
    }
    Ok(())
}

fn system_uninstall(paths: &CaPaths, user: &str, dry_run: bool) -> Result<()> {
    if cfg!(target_os = "macos") {
        let der = std::fs::read_to_string(&paths.cert)
            .ok()
            .and_then(|pem| ::pem::parse(pem).ok())
            .map(|p| p.contents().to_vec());
        let Some(der) = der else {
            anyhow::bail!(
                "{} is missing or unreadable: the System keychain's devbox root cannot be named \
                 (remove it in Keychain Access)",
                paths.cert.display()
            );
        };
        use sha1::Digest;
        let sha1 = hex::encode_upper(sha1::Sha1::digest(&der));
        return run_system(
            trust::macos_system_remove(&paths.cert, &sha1, as_root()),
            dry_run,
        );
    }
    if !dry_run && !trust::linux_system_file(user).exists() {
        return Ok(());
    }
    run_system(trust::linux_system_remove(user, as_root()), dry_run)?;
    if !dry_run {
        output::info(format!(
            "removed {} from the system store",
            trust::linux_system_file(user).display()
        ));
    }
    Ok(())
}

fn install(store: &Store, paths: &CaPaths, home: &Path, nick: &str, a: &TrustArgs) -> Result<i32> {
    if a.dry_run {
        for line in plan_install(paths, home, nick) {
            output::data(line.join(" "));
        }
        return Ok(0);
    }
    if !cfg!(target_os = "macos") {
        // Before the CA is created: a missing tool leaves nothing behind.
        need("certutil", "libnss3-tools", "NSS (Chromium, Firefox)")?;
    }
    crate::tls::load_or_create_ca(store)?;
    if cfg!(target_os = "macos") {
        run_argv(&trust::macos_add(home, &paths.cert), "macOS keychain")?;
        output::info(format!(
            "trusted {} in your login keychain",
            paths.cert.display()
        ));
        return Ok(0);
    }
    for db in trust::nss_databases(home) {
        if !db.join("cert9.db").exists() {
            fs_err::create_dir_all(&db)?;
            run_argv(&trust::nss_create(&db), "NSS")?;
        }
        // Replace, so a re-created CA takes the old one's place.
        if present(&db, nick) {
            run_argv(&trust::nss_delete(&db, nick), "NSS")?;
        }
        run_argv(&trust::nss_add(&db, nick, &paths.cert), "NSS")?;
        output::info(format!("trusted in {}", db.display()));
    }
    Ok(0)
}

fn plan_install(paths: &CaPaths, home: &Path, nick: &str) -> Vec<Vec<String>> {
    if cfg!(target_os = "macos") {
        return vec![trust::macos_add(home, &paths.cert)];
    }
    let mut out = Vec::new();
    for db in trust::nss_databases(home) {
        if !db.join("cert9.db").exists() {
            out.push(trust::nss_create(&db));
        }
        out.push(trust::nss_add(&db, nick, &paths.cert));
    }
    out
}

fn uninstall(paths: &CaPaths, home: &Path, nick: &str, a: &TrustArgs) -> Result<i32> {
    if cfg!(target_os = "macos") {
        let argv = trust::macos_remove(&paths.cert);
        if a.dry_run {
            output::data(argv.join(" "));
        } else {
            run_argv(&argv, "macOS keychain")?;
        }
        return Ok(0);
    }
    if !a.dry_run {
        need("certutil", "libnss3-tools", "NSS (Chromium, Firefox)")?;
    }
    for db in trust::nss_databases(home) {
        if !db.join("cert9.db").exists() || (!a.dry_run && !present(&db, nick)) {
            continue;
        }
        let argv = trust::nss_delete(&db, nick);
        if a.dry_run {
            output::data(argv.join(" "));
        } else {
            run_argv(&argv, "NSS")?;
            output::info(format!("removed from {}", db.display()));
        }
    }
    Ok(0)
}

fn status(paths: &CaPaths, home: &Path, nick: &str) -> Result<i32> {
    output::data(format!(
        "CA\t{}",
        if paths.cert.exists() {
            paths.cert.display().to_string()
        } else {
            "not created yet (`devbox trust install` creates it)".into()
        }
    ));
    if cfg!(target_os = "macos") {
        let ok = Command::new("security")
            .args(&trust::macos_verify(&paths.cert)[1..])
            .output()
            .is_ok_and(|o| o.status.success());
        output::data(format!("login keychain\t{}", yes_no(ok)));
        return Ok(0);
    }
    need("certutil", "libnss3-tools", "NSS (Chromium, Firefox)")?;
    for db in trust::nss_databases(home) {
        let state = if !db.join("cert9.db").exists() {
            "no database".into()
        } else {
            yes_no(present(&db, nick))
        };
        output::data(format!("{}\t{state}", db.display()));
    }
    Ok(0)
}

fn yes_no(trusted: bool) -> String {
    if trusted { "trusted" } else { "not trusted" }.into()
}

fn present(db: &Path, nick: &str) -> bool {
    let argv = trust::nss_show(db, nick);
    Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn need(tool: &'static str, package: &'static str, store: &'static str) -> Result<(), TrustError> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()));
    if found {
        Ok(())
    } else {
        Err(TrustError::MissingTool {
            tool,
            package,
            store,
        })
    }
}

fn run_argv(argv: &[String], _store: &str) -> Result<(), TrustError> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| TrustError::Failed {
            command: argv.join(" "),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TrustError::Failed {
            command: argv.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
