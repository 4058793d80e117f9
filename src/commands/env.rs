//! `devbox env NAME [--unset]`: shell commands that point the docker CLI at the machine.

use std::path::Path;

use anyhow::Result;

use crate::cli::EnvArgs;
use crate::machine::Store;
use crate::output;
use crate::supervisor::client;

pub fn run(store: &Store, a: &EnvArgs) -> Result<i32> {
    if a.unset {
        output::data(
            "unset DOCKER_HOST\n# Run this command to configure your shell:\n# eval \"$(devbox env --unset)\"",
        );
        return Ok(0);
    }
    let dir = store.existing(&a.name)?;
    client::require_running(&dir)?;
    output::data(sh_script(&dir.docker_socket_path(), &a.name));
    Ok(0)
}

/// The `sh` commands `eval "$(devbox env NAME)"` runs. The socket path comes from
/// `DEVBOX_HOME`, which may hold any character: `shlex` quotes it for POSIX sh, so `$`, backticks, quotes and spaces reach the variable
/// as they are and nothing in them runs. A path that is not UTF-8 is shown lossily, as
/// everywhere else devbox prints a path.
fn sh_script(socket: &Path, name: &str) -> String {
    let value = format!("unix://{}", socket.display());
    // A path never holds a NUL byte, the only input `try_quote` refuses.
    let quoted = shlex::try_quote(&value).expect("a path has no NUL byte");
    let name = shlex::try_quote(name).expect("a machine name has no NUL byte");
    format!(
        "export DOCKER_HOST={quoted}\n# Run this command to configure your shell:\n# eval \"$(devbox env {name})\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_by_sh_sets_the_path_as_it_is_and_runs_nothing() {
        let d = tempfile::tempdir().unwrap();
        let canary = d.path().join("ran");
        let home = format!(
            "{}/it's \"$(touch {c})\" `touch {c}` $HOME \\ x",
            d.path().display(),
            c = canary.display()
        );
        let socket = Path::new(&home).join("machines/m/docker.sock");
        let script = sh_script(&socket, "m");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{script}\nprintf %s \"$DOCKER_HOST\""))
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("unix://{}", socket.display())
        );
        assert!(
            !canary.exists(),
            "eval ran a command from the path: {script}"
        );
    }
}
