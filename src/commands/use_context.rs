//! `devbox use NAME | --none`: the machine's Docker context (`devbox-NAME`) becomes the docker
//! CLI's current context, so every shell and tool that runs `docker` reaches it; `--none` goes
//! back to the CLI's default. Also the context's upkeep for `create`, `start` and `rm`, which
//! warn rather than fail over it: the machine itself is fine without a context.

use anyhow::Result;

use crate::cli::UseArgs;
use crate::docker_context::{self, context_name};
use crate::machine::{MachineDir, Store};
use crate::output;

pub fn run(store: &Store, a: &UseArgs) -> Result<i32> {
    let config = docker_context::config_dir()?;
    let Some(name) = a.name.as_deref() else {
        docker_context::set_current(&config, None)?;
        output::info("The docker CLI uses its default context again.");
        warn_overrides();
        return Ok(0);
    };
    let dir = store.existing(name)?;
    // The context of a machine made before devbox wrote contexts, or one a user removed.
    docker_context::write(&config, name, &dir.docker_socket_path())?;
    docker_context::set_current(&config, Some(&context_name(name)))?;
    output::info(format!(
        "The docker CLI now uses machine {name} (context {}) in every shell.",
        context_name(name)
    ));
    warn_overrides();
    Ok(0)
}

/// The docker CLI prefers `DOCKER_HOST` and `DOCKER_CONTEXT` over the current context.
fn warn_overrides() {
    for var in ["DOCKER_HOST", "DOCKER_CONTEXT"] {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            output::warn(format!(
                "{var} is set in this shell and the docker CLI prefers it: run `eval \"$(devbox env --unset)\"` (or `unset {var}`)"
            ));
        }
    }
}

/// Writes (or brings in step) the machine's context; a failure is a warning.
pub fn refresh(dir: &MachineDir) {
    let written = docker_context::config_dir()
        .and_then(|c| docker_context::write(&c, &dir.name, &dir.docker_socket_path()));
    if let Err(e) = written {
        output::warn(format!(
            "could not write the Docker context {}: {e}",
            context_name(&dir.name)
        ));
    }
}

/// Removes the machine's context (and resets the CLI's current one if it was it); a failure
/// is a warning.
pub fn forget(name: &str) {
    match docker_context::config_dir().and_then(|c| docker_context::remove(&c, name)) {
        Ok(true) => output::info(format!(
            "The docker CLI used {}; it uses its default context again.",
            context_name(name)
        )),
        Ok(false) => {}
        Err(e) => output::warn(format!(
            "could not remove the Docker context {}: {e}",
            context_name(name)
        )),
    }
}
