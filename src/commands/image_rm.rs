//! `devbox image rm VERSION…` and `devbox image prune`: remove guest images no machine uses.
//!
//! Which images are used is read from every machine's `machine.yaml` in this `DEVBOX_HOME`,
//! leniently (a spec that fails validation still names its image, and keeps it). A machine
//! whose file names no image cannot say what it needs: nothing is removed until it is fixed.
//! An image is removed by renaming it to a dot-name first (which `image ls` and `create`
//! skip), so a failure half-way never leaves a half image that looks whole.
//!
//! `image rm` removes what it is told, like `rm` with a name (an image can be built or pulled
//! again); `prune` chooses what to remove, so it asks first on a terminal and needs `-y`
//! without one, as `devbox rm` does.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::Result;

use crate::cli::{ImagePruneArgs, ImageRmArgs};
use crate::hint::Hint;
use crate::image::{self, Image, ImageError};
use crate::machine::Store;
use crate::machine::spec::{format_size, validate_image_version};
use crate::output;

#[derive(Debug, thiserror::Error)]
pub enum ImageRmError {
    #[error("image {version} is used by {}: {}", if machines.len() == 1 { "machine" } else { "machines" }, machines.join(", "))]
    InUse {
        version: String,
        machines: Vec<String>,
    },
    #[error("machine {name}'s machine.yaml does not say which image it uses: {why}")]
    UnknownImage { name: String, why: String },
    #[error("not pruning images without confirmation: stdin is not a terminal to ask on")]
    NoTerminal,
}

impl Hint for ImageRmError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ImageRmError::InUse { machines, .. } => format!(
                "move each to another image first (`devbox upgrade {}`), or remove it",
                machines[0]
            ),
            ImageRmError::UnknownImage { name, .. } => format!(
                "fix it with `devbox edit {name}`, or remove the machine with `devbox rm {name}`"
            ),
            ImageRmError::NoTerminal => "confirm with -y: `devbox image prune -y`".into(),
        })
    }
}

/// The images the machines of `store` use: version → machine names.
fn images_in_use(store: &Store) -> Result<BTreeMap<String, Vec<String>>> {
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in store.names()? {
        let path = store.machine(&name)?.spec_path();
        let text = fs_err::read_to_string(&path)?;
        let image = serde_norway::from_str::<serde_norway::Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                v.get("image")
                    .and_then(|i| i.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| "it has no `image:` string".to_owned())
            })
            .map_err(|why| ImageRmError::UnknownImage {
                name: name.clone(),
                why,
            })?;
        used.entry(image).or_default().push(name);
    }
    Ok(used)
}

pub fn rm(store: &Store, a: &ImageRmArgs) -> Result<i32> {
    let images = image::list(&store.cache)?;
    let used = images_in_use(store)?;
    let mut chosen: Vec<&Image> = Vec::new();
    // Every version is checked before any is removed.
    for v in &a.versions {
        validate_image_version(v)?;
        let img = images
            .iter()
            .find(|i| &i.manifest.version == v)
            .ok_or_else(|| ImageError::NotFound {
                version: v.clone(),
                dir: image::images_dir(&store.cache),
            })?;
        if let Some(machines) = used.get(v) {
            return Err(ImageRmError::InUse {
                version: v.clone(),
                machines: machines.clone(),
            }
            .into());
        }
        if !chosen.iter().any(|c| c.manifest.version == *v) {
            chosen.push(img);
        }
    }
    let mut freed = 0;
    for img in chosen {
        let size = remove(store, img)?;
        freed += size;
        output::info(format!(
            "Removed image {} ({}).",
            img.manifest.version,
            format_size(size)
        ));
    }
    if a.versions.len() > 1 {
        output::info(format!("Freed {}.", format_size(freed)));
    }
    Ok(0)
}

pub fn prune(store: &Store, a: &ImagePruneArgs) -> Result<i32> {
    let images = image::list(&store.cache)?;
    let used = images_in_use(store)?;
    // `list` is newest first: the first of each arch is the one `create` would take.
    let mut newest_seen: Vec<&str> = Vec::new();
    let mut unused: Vec<(&Image, u64)> = Vec::new();
    let mut kept_newest: Vec<&str> = Vec::new();
    for img in &images {
        let arch = img.manifest.arch.as_str();
        let newest = !newest_seen.contains(&arch);
        if newest {
            newest_seen.push(arch);
        }
        if used.contains_key(&img.manifest.version) {
            continue;
        }
        if newest && !a.all {
            kept_newest.push(&img.manifest.version);
            continue;
        }
        unused.push((img, dir_size(&img.dir)?));
    }
    for v in &kept_newest {
        output::info(format!(
            "Keeping image {v}, the newest of its architecture (`create` uses it; --all removes it too)."
        ));
    }
    if unused.is_empty() {
        output::info("No unused images to remove.");
        return Ok(0);
    }
    let total: u64 = unused.iter().map(|(_, s)| s).sum();
    if a.dry_run {
        for (img, size) in &unused {
            output::info(format!(
                "Would remove image {} ({}, created {}, {}).",
                img.manifest.version,
                img.manifest.arch,
                img.manifest.created,
                format_size(*size)
            ));
        }
        output::info(format!("Would free {}.", format_size(total)));
        return Ok(0);
    }
    if !a.yes && !confirm(unused.len())? {
        output::info("Nothing removed.");
        return Ok(1);
    }
    let mut freed = 0;
    for (img, _) in &unused {
        let size = remove(store, img)?;
        freed += size;
        output::info(format!(
            "Removed image {} ({}).",
            img.manifest.version,
            format_size(size)
        ));
    }
    output::info(format!("Freed {}.", format_size(freed)));
    Ok(0)
}

/// Asks on the terminal whether to remove `n` images (yes only for `y` or `yes`).
fn confirm(n: usize) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(ImageRmError::NoTerminal.into());
    }
    let what = if n == 1 {
        "1 unused image".to_owned()
    } else {
        format!("{n} unused images")
    };
    eprint!("Remove {what}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Removes an image directory (renamed to a dot-name first); returns the space it held.
fn remove(store: &Store, img: &Image) -> Result<u64> {
    let size = dir_size(&img.dir)?;
    let trash = image::images_dir(&store.cache).join(format!(
        ".removing-{}-{}",
        img.manifest.version,
        std::process::id()
    ));
    fs_err::rename(&img.dir, &trash)?;
    fs_err::remove_dir_all(&trash)?;
    Ok(size)
}

/// The disk space the files under `dir` take (allocated blocks, as `du` counts them).
fn dir_size(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let meta = fs_err::symlink_metadata(entry.path())?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}
