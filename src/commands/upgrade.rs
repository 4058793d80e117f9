//! `devbox upgrade NAME [--image VERSION]`: point a stopped machine at another guest image.
//!
//! A machine references its image by version (`machine.yaml`'s `image`); its kernel and
//! initramfs are read from the image cache at each start, and the guest's system lives in
//! the initramfs, so nothing of the old image is copied into the machine. What the machine
//! keeps is its data disk (`disk.raw`, mounted at `/var/lib/docker`: images, containers,
//! volumes) and its settings, both untouched. The one change is the spec's `image`, written
//! atomically: an upgrade either happened whole or not at all.

use anyhow::{Context, Result};

use crate::cli::UpgradeArgs;
use crate::hint::Hint;
use crate::machine::Store;
use crate::machine::engine;
use crate::machine::lock::lock_machine;
use crate::machine::spec::validate_image_version;
use crate::machine::state::observe;
use crate::{image, output};

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("machine {name:?} is {state}: only a stopped machine can move to another image")]
    Live { name: String, state: String },
}

impl Hint for UpgradeError {
    fn hint(&self) -> Option<String> {
        match self {
            UpgradeError::Live { name, .. } => Some(format!(
                "stop it first: `devbox stop {name}`, then `devbox upgrade {name}` and `devbox start {name}`"
            )),
        }
    }
}

pub fn run(store: &Store, a: &UpgradeArgs) -> Result<i32> {
    if let Some(v) = &a.image {
        validate_image_version(v).context("--image")?;
    }
    let dir = store.existing(&a.name)?;
    let _lock = lock_machine(&dir)?;
    let obs = observe(&dir)?;
    if obs.state.is_live() {
        return Err(UpgradeError::Live {
            name: a.name.clone(),
            state: obs.state.as_str().to_lowercase(),
        }
        .into());
    }
    let mut spec = dir.load_spec()?;
    spec.require_booted("upgrade")?;
    let images = image::list(&store.cache)?;
    let current = images.iter().find(|i| i.manifest.version == spec.image);
    // The machine's arch is its image's; an image no longer installed was the host's (every
    // driver runs guests of the host's arch).
    let arch = current.map_or(std::env::consts::ARCH, |i| i.manifest.arch.as_str());
    let target = image::find_for(&store.cache, a.image.as_deref(), arch)?;
    let to = &target.manifest;
    if to.version == spec.image {
        let which = if a.image.is_some() {
            "that image"
        } else {
            "the newest image of its architecture"
        };
        output::info(format!(
            "Machine {} is already on image {} ({which}); nothing to do.",
            a.name, to.version
        ));
        return Ok(0);
    }
    target
        .verify()
        .with_context(|| format!("checking image {} before moving to it", to.version))?;
    engine::check_engine(&spec.engine, to.docker_major()).with_context(|| {
        format!(
            "image {} has Docker {}, which does not know one of machine {}'s engine settings \
             (remove it with `devbox edit {} --engine-unset KEY`)",
            to.version,
            to.docker_major(),
            a.name,
            a.name
        )
    })?;
    let from = match current {
        Some(c) => format!(
            "{} (Docker {}, kernel {})",
            c.manifest.version,
            c.manifest.docker_major(),
            c.manifest.kernel_version
        ),
        None => format!("{} (no longer installed)", spec.image),
    };
    if let Some(c) = current
        && to.docker_major() < c.manifest.docker_major()
    {
        output::warn(format!(
            "image {} has an older Docker ({}) than image {} ({}): Docker does not promise to \
             read the data a newer one wrote in /var/lib/docker",
            to.version,
            to.docker_major(),
            c.manifest.version,
            c.manifest.docker_major()
        ));
    }
    spec.image = to.version.clone();
    dir.save_spec(&spec)
        .with_context(|| format!("recording machine {}'s new image", a.name))?;
    output::info(format!(
        "Moved machine {} from image {from} to {} (Docker {}, kernel {}); its data disk \
         (Docker's images, containers and volumes) and settings are kept.",
        a.name,
        to.version,
        to.docker_major(),
        to.kernel_version
    ));
    output::info(format!("Start it with: devbox start {}", a.name));
    Ok(0)
}
