//! `devbox env NAME [--unset]`: shell commands that point the docker CLI at the machine.

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
    output::data(format!(
        "export DOCKER_HOST=\"unix://{}\"\n# Run this command to configure your shell:\n# eval \"$(devbox env {})\"",
        dir.docker_socket_path().display(),
        a.name
    ));
    Ok(0)
}
