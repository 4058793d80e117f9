//! `devbox env NAME [--unset]`: shell commands that point the docker CLI at the machine.

use anyhow::Result;

use super::CommandError;
use crate::cli::EnvArgs;
use crate::machine::state::observe;
use crate::machine::{MachineState, Store};
use crate::output;

pub fn run(store: &Store, a: &EnvArgs) -> Result<i32> {
    if a.unset {
        output::data(
            "unset DOCKER_HOST\n# Run this command to configure your shell:\n# eval \"$(devbox env --unset)\"",
        );
        return Ok(0);
    }
    let dir = store.existing(&a.name)?;
    let obs = observe(&dir)?;
    if obs.state != MachineState::Running {
        return Err(CommandError::NotRunning {
            name: a.name.clone(),
            state: obs.state.as_str().to_lowercase(),
        }
        .into());
    }
    output::data(format!(
        "export DOCKER_HOST=\"unix://{}\"\n# Run this command to configure your shell:\n# eval \"$(devbox env {})\"",
        dir.docker_socket_path().display(),
        a.name
    ));
    Ok(0)
}
