//! `devbox env [NAME] [--unset] [--shell SHELL | --json]`: the commands that point the docker
//! CLI at a machine (`DOCKER_HOST`), in the syntax of the user's shell (detected from
//! `$SHELL`, as docker-machine did), or as JSON; `--unset` undoes them and needs no machine.
//! The last lines are comments with the command that applies the output in that shell.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::{EnvArgs, EnvShell};
use crate::machine::Store;
use crate::output;
use crate::supervisor::client;

pub fn run(store: &Store, a: &EnvArgs) -> Result<i32> {
    let (value, args) = if a.unset {
        (None, "--unset".to_owned())
    } else {
        // clap requires NAME without --unset.
        let name = a
            .name
            .as_deref()
            .context("a machine name is needed without --unset")?;
        let dir = store.existing(name)?;
        client::require_running(&dir)?;
        (
            Some(docker_host(&dir.docker_socket_path())),
            name.to_owned(),
        )
    };
    if a.json {
        output::json::print(&serde_json::json!({ "variables": { "DOCKER_HOST": value } }));
        return Ok(0);
    }
    let shell = a
        .shell
        .unwrap_or_else(|| detect(std::env::var_os("SHELL").as_deref().map(Path::new)));
    output::data(script(shell, value.as_deref(), &args));
    Ok(0)
}

fn docker_host(socket: &Path) -> String {
    format!("unix://{}", socket.display())
}

/// The shell `$SHELL` names (its file name: `/usr/bin/fish` → fish); sh syntax for any
/// other or none.
pub fn detect(shell: Option<&Path>) -> EnvShell {
    let name = shell
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("");
    match name {
        "zsh" => EnvShell::Zsh,
        "fish" => EnvShell::Fish,
        "tcsh" | "csh" => EnvShell::Tcsh,
        "pwsh" | "powershell" | "pwsh.exe" | "powershell.exe" => EnvShell::Powershell,
        "cmd" | "cmd.exe" => EnvShell::Cmd,
        _ => EnvShell::Bash,
    }
}

/// The commands for `shell` that set `DOCKER_HOST` to `value` (unset it for `None`), and the
/// comment telling how to apply them (`args`: what follows `devbox env`). Values come from
/// `DEVBOX_HOME`, which may hold any character: each shell's own quoting makes them reach the
/// variable as they are, with nothing in them run.
pub fn script(shell: EnvShell, value: Option<&str>, args: &str) -> String {
    let set = match (shell, value) {
        (EnvShell::Bash | EnvShell::Zsh, Some(v)) => format!("export DOCKER_HOST={}", sh(v)),
        (EnvShell::Bash | EnvShell::Zsh, None) => "unset DOCKER_HOST".into(),
        (EnvShell::Fish, Some(v)) => format!("set -gx DOCKER_HOST {};", fish(v)),
        (EnvShell::Fish, None) => "set -e DOCKER_HOST;".into(),
        (EnvShell::Tcsh, Some(v)) => format!("setenv DOCKER_HOST {};", tcsh(v)),
        (EnvShell::Tcsh, None) => "unsetenv DOCKER_HOST;".into(),
        (EnvShell::Powershell, Some(v)) => format!("$Env:DOCKER_HOST = {}", pwsh(v)),
        (EnvShell::Powershell, None) => {
            "Remove-Item Env:\\DOCKER_HOST -ErrorAction SilentlyContinue".into()
        }
        (EnvShell::Cmd, Some(v)) => format!("SET \"DOCKER_HOST={v}\""),
        (EnvShell::Cmd, None) => "SET DOCKER_HOST=".into(),
    };
    let apply = match shell {
        EnvShell::Bash | EnvShell::Zsh => format!("# eval \"$(devbox env {args})\""),
        EnvShell::Fish => format!("# devbox env {args} | source"),
        EnvShell::Tcsh => format!("# eval `devbox env {args}`"),
        EnvShell::Powershell => format!("# & devbox env {args} | Invoke-Expression"),
        EnvShell::Cmd => format!("REM @FOR /f \"tokens=*\" %i IN ('devbox env {args}') DO @%i"),
    };
    let comment = match shell {
        EnvShell::Cmd => "REM Run this command to configure your shell:",
        _ => "# Run this command to configure your shell:",
    };
    format!("{set}\n{comment}\n{apply}")
}

fn sh(v: &str) -> String {
    // A path never holds a NUL byte, the only input `try_quote` refuses.
    shlex::try_quote(v).expect("no NUL byte").into_owned()
}

/// fish: inside single quotes only `\` and `'` are special, each escaped with `\`.
fn fish(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// tcsh: single quotes keep everything but `!` (history) and newlines; `'` ends the quote.
fn tcsh(v: &str) -> String {
    let mut out = String::from("'");
    for c in v.chars() {
        match c {
            '\'' => out.push_str("'\\''"),
            '!' => out.push_str("'\\!'"),
            '\n' => out.push_str("'\\\n'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// PowerShell: in single quotes only `'` (and its typographic forms) is special, doubled.
fn pwsh(v: &str) -> String {
    let mut out = String::from("'");
    for c in v.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket path with every character a shell might act on, and a canary file that a
    /// command run from the path would create.
    fn hostile(d: &Path) -> (String, std::path::PathBuf) {
        let canary = d.join("ran");
        let home = format!(
            "{}/it's \"$(touch {c})\" `touch {c}` $HOME \\ x ! %PATH% {{a,b}} *",
            d.display(),
            c = canary.display()
        );
        (format!("unix://{home}/machines/m/docker.sock"), canary)
    }

    fn evaluates_to_the_value(shell: &str, eval: &str) {
        let d = tempfile::tempdir().unwrap();
        let (value, canary) = hostile(d.path());
        let kind = match shell {
            "sh" | "bash" => EnvShell::Bash,
            "zsh" => EnvShell::Zsh,
            "fish" => EnvShell::Fish,
            "tcsh" => EnvShell::Tcsh,
            _ => unreachable!(),
        };
        let set = script(kind, Some(&value), "m");
        let out = std::process::Command::new(shell)
            .arg("-c")
            .arg(format!("{set}\n{eval}"))
            .output()
            .unwrap_or_else(|e| panic!("{shell}: {e}"));
        assert!(out.status.success(), "{set}: {out:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), value, "{set}");
        assert!(!canary.exists(), "{shell} ran a command from the path");
        let unset = script_unset(kind);
        let out = std::process::Command::new(shell)
            .arg("-c")
            .arg(format!("{set}\n{unset}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{unset}: {out:?}");
    }

    /// The unset script, then a check that the variable is gone (exit 1 if still set).
    fn script_unset(kind: EnvShell) -> String {
        let s = script(kind, None, "--unset");
        match kind {
            EnvShell::Fish => format!("{s}\nset -q DOCKER_HOST; and exit 1; exit 0"),
            EnvShell::Tcsh => format!("{s}\nif ($?DOCKER_HOST) exit 1\nexit 0"),
            _ => format!("{s}\n[ -z \"${{DOCKER_HOST+x}}\" ]"),
        }
    }

    #[test]
    fn sh_and_bash_set_the_path_as_it_is_and_run_nothing() {
        evaluates_to_the_value("sh", "printf %s \"$DOCKER_HOST\"");
        evaluates_to_the_value("bash", "printf %s \"$DOCKER_HOST\"");
    }

    /// zsh, fish and tcsh run when installed (`.ci/install-deps` installs them); elsewhere
    /// the test fails, naming the package, rather than pass without running them.
    #[test]
    fn zsh_fish_and_tcsh_set_the_path_as_it_is_and_run_nothing() {
        evaluates_to_the_value("zsh", "printf %s \"$DOCKER_HOST\"");
        evaluates_to_the_value("fish", "printf %s \"$DOCKER_HOST\"");
        evaluates_to_the_value("tcsh", "printf '%s' \"$DOCKER_HOST:q\"");
    }

    #[test]
    fn powershell_and_cmd_quote_their_own_way() {
        assert_eq!(
            script(EnvShell::Powershell, Some("unix:///h/it's/d.sock"), "m"),
            "$Env:DOCKER_HOST = 'unix:///h/it''s/d.sock'\n# Run this command to configure your shell:\n# & devbox env m | Invoke-Expression"
        );
        assert_eq!(
            script(EnvShell::Cmd, None, "--unset"),
            "SET DOCKER_HOST=\nREM Run this command to configure your shell:\nREM @FOR /f \"tokens=*\" %i IN ('devbox env --unset') DO @%i"
        );
    }

    #[test]
    fn the_shell_is_found_from_its_path() {
        let d = |s: &str| detect(Some(Path::new(s)));
        assert_eq!(d("/usr/bin/fish"), EnvShell::Fish);
        assert_eq!(d("/bin/zsh"), EnvShell::Zsh);
        assert_eq!(d("/bin/tcsh"), EnvShell::Tcsh);
        assert_eq!(d("/bin/csh"), EnvShell::Tcsh);
        assert_eq!(d("/opt/microsoft/powershell/7/pwsh"), EnvShell::Powershell);
        assert_eq!(d("/bin/bash"), EnvShell::Bash);
        assert_eq!(d("/bin/dash"), EnvShell::Bash);
        assert_eq!(detect(None), EnvShell::Bash);
    }
}
