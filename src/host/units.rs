//! The service jobs that keep routes in place: at boot, and whenever devbox rewrites the
//! routes state file (a machine started, stopped or changed subnets), the service manager
//! runs `devbox routes apply`. `sudo devbox system install` sets them up for the user who ran
//! it. On Linux the job runs as that user (`User=`/`Group=`): the installed binary's
//! capabilities are all it needs, and what it may touch is bounded by the allowlist and the
//! user's own leases, so no root process ever reads a user's state file. On macOS, which has
//! no capabilities, the LaunchDaemon runs as root and is how a vz machine gets its routes: the
//! supervisor writes `$DEVBOX_HOME/routes.json`, and the job applies it through the
//! allowlist, which bounds what a tampered state file could ask for.
//!
//! - macOS: `/Library/LaunchDaemons/dev.devbox.routes.plist` (`RunAtLoad`, `WatchPaths` on
//!   the state file), rendered from `launchd/dev.devbox.routes.plist`.
//! - Linux: `devbox-routes.service` (oneshot, `WantedBy=multi-user.target`) and
//!   `devbox-routes.path` (`PathChanged=` on the state file) in `/etc/systemd/system/`.

use std::path::{Path, PathBuf};

use super::HostError;
use super::plan::{FileSpec, HostOs, HostPlan, ServiceUnit};
use crate::routes::routes_state_path;

pub const LAUNCHD_LABEL: &str = "dev.devbox.routes";
pub const LAUNCHD_PLIST_PATH: &str = "/Library/LaunchDaemons/dev.devbox.routes.plist";
pub const SYSTEMD_SERVICE_UNIT: &str = "devbox-routes.service";
pub const SYSTEMD_PATH_UNIT: &str = "devbox-routes.path";
const SYSTEMD_DIR: &str = "/etc/systemd/system";
const TEMPLATE: &str = include_str!("../../launchd/dev.devbox.routes.plist");

/// The LaunchDaemon plist: runs `<devbox_exe> routes apply` with `DEVBOX_HOME=<home>` at load
/// (boot) and whenever `<home>/routes.json` changes.
pub fn render_launchd_plist(devbox_exe: &Path, home: &Path) -> Result<String, HostError> {
    let exe = checked(devbox_exe)?;
    let home_s = checked(home)?;
    let state = routes_state_path(home);
    Ok(TEMPLATE
        .replace("@DEVBOX_EXE@", &xml_escape(exe))
        .replace("@DEVBOX_HOME@", &xml_escape(home_s))
        .replace("@STATE_FILE@", &xml_escape(checked(&state)?)))
}

/// The systemd units, as (file name, text): a oneshot service and the path unit that starts
/// it when the routes state file changes. Both are enabled, so the service also runs at boot.
/// `run_as` (uid, gid) runs the service as that user instead of root.
pub fn render_systemd_units(
    devbox_exe: &Path,
    home: &Path,
    run_as: Option<(u32, u32)>,
) -> Result<Vec<(String, String)>, HostError> {
    let exe = systemd_quote(checked(devbox_exe)?);
    let env = systemd_quote(&format!("DEVBOX_HOME={}", checked(home)?));
    let state = routes_state_path(home);
    let state = checked(&state)?.replace('%', "%%");
    let header = "# Managed by devbox (`devbox system install`); do not edit.\n";
    let user = match run_as {
        Some((uid, gid)) => format!("User={uid}\nGroup={gid}\n"),
        None => String::new(),
    };
    let service = format!(
        "{header}[Unit]
Description=devbox: host routes to the machines' Docker subnets
After=network.target

[Service]
Type=oneshot
{user}Environment={env}
ExecStart={exe} routes apply

[Install]
WantedBy=multi-user.target
"
    );
    let path = format!(
        "{header}[Unit]
Description=devbox: reapply host routes when the routes state changes

[Path]
PathChanged={state}
Unit={SYSTEMD_SERVICE_UNIT}

[Install]
WantedBy=multi-user.target
"
    );
    Ok(vec![
        (SYSTEMD_SERVICE_UNIT.to_owned(), service),
        (SYSTEMD_PATH_UNIT.to_owned(), path),
    ])
}

/// The job files (0644) and their loading, with the service run as root.
pub fn install_plan(os: HostOs, devbox_exe: &Path, home: &Path) -> Result<HostPlan, HostError> {
    install_plan_as(os, devbox_exe, home, None)
}

/// The job files (0644) and their loading; on Linux the service runs as `run_as` (uid, gid)
/// when given.
pub fn install_plan_as(
    os: HostOs,
    devbox_exe: &Path,
    home: &Path,
    run_as: Option<(u32, u32)>,
) -> Result<HostPlan, HostError> {
    let mut plan = HostPlan {
        command: "system install".into(),
        ..HostPlan::default()
    };
    for (name, path, contents) in job_files(os, devbox_exe, home, run_as)? {
        plan.write_files.push(FileSpec {
            path: path.clone(),
            mode: 0o644,
            contents,
        });
        plan.load_units.push(ServiceUnit { name, path });
    }
    plan.normalize();
    Ok(plan)
}

/// Unloading the jobs and removing their files. The routes themselves stay until their
/// machines stop (they go with the TAP device).
pub fn uninstall_plan(os: HostOs) -> HostPlan {
    let mut plan = HostPlan {
        command: "system uninstall".into(),
        ..HostPlan::default()
    };
    for (name, path) in job_names(os) {
        plan.remove_files.push(path.clone());
        plan.unload_units.push(ServiceUnit { name, path });
    }
    plan.normalize();
    plan
}

fn job_names(os: HostOs) -> Vec<(String, PathBuf)> {
    match os {
        HostOs::Macos => vec![(LAUNCHD_LABEL.into(), LAUNCHD_PLIST_PATH.into())],
        HostOs::Linux => [SYSTEMD_PATH_UNIT, SYSTEMD_SERVICE_UNIT]
            .iter()
            .map(|n| (n.to_string(), Path::new(SYSTEMD_DIR).join(n)))
            .collect(),
    }
}

fn job_files(
    os: HostOs,
    devbox_exe: &Path,
    home: &Path,
    run_as: Option<(u32, u32)>,
) -> Result<Vec<(String, PathBuf, String)>, HostError> {
    Ok(match os {
        HostOs::Macos => vec![(
            LAUNCHD_LABEL.into(),
            LAUNCHD_PLIST_PATH.into(),
            render_launchd_plist(devbox_exe, home)?,
        )],
        HostOs::Linux => render_systemd_units(devbox_exe, home, run_as)?
            .into_iter()
            .map(|(name, text)| {
                let path = Path::new(SYSTEMD_DIR).join(&name);
                (name, path, text)
            })
            .collect(),
    })
}

/// An absolute UTF-8 path without control characters, which both formats can carry.
fn checked(path: &Path) -> Result<&str, HostError> {
    let bad = |why| HostError::BadPath {
        path: path.to_owned(),
        why,
    };
    let s = path.to_str().ok_or_else(|| bad("not valid UTF-8"))?;
    if !path.is_absolute() {
        return Err(bad("not absolute"));
    }
    if s.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    Ok(s)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// One word of a systemd command line or assignment: double-quoted, with `\`, `"`, and the
/// specifier and variable characters `%`, `$` escaped (systemd.service(5), "Command lines").
fn systemd_quote(s: &str) -> String {
    let inner = s
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    format!("\"{inner}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_and_escaped() {
        assert!(render_launchd_plist(Path::new("devbox"), Path::new("/h")).is_err());
        assert!(render_systemd_units(Path::new("/bin/devbox"), Path::new("/h\n"), None).is_err());
        let plist = render_launchd_plist(Path::new("/opt/a&b/devbox"), Path::new("/h")).unwrap();
        assert!(plist.contains("<string>/opt/a&amp;b/devbox</string>"));
        let units =
            render_systemd_units(Path::new("/opt/50% $x/devbox"), Path::new("/h"), None).unwrap();
        assert!(
            units[0]
                .1
                .contains(r#"ExecStart="/opt/50%% $$x/devbox" routes apply"#)
        );
    }

    #[test]
    fn install_and_uninstall_are_allowed_and_mirror_each_other() {
        for os in [HostOs::Linux, HostOs::Macos] {
            let inst =
                install_plan(os, Path::new("/usr/local/bin/devbox"), Path::new("/h")).unwrap();
            inst.check_allowed().unwrap();
            let un = uninstall_plan(os);
            un.check_allowed().unwrap();
            let written: Vec<_> = inst.write_files.iter().map(|f| f.path.clone()).collect();
            assert_eq!(written, un.remove_files);
            assert_eq!(inst.load_units, un.unload_units);
        }
    }
}
