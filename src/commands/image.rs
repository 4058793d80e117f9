//! `devbox image build|pull|ls` (`rm` and `prune`: `image_rm`).

use anyhow::Result;

use crate::cli::{ArchArg, ImageCommand};
use crate::image::{self, build};
use crate::machine::Store;
use crate::machine::spec::format_size;
use crate::output;

pub fn run(store: &Store, c: ImageCommand) -> Result<i32> {
    match c {
        ImageCommand::Build(a) => {
            let arch = match a.arch {
                Some(ArchArg::X86_64) => build::Arch::X86_64,
                Some(ArchArg::Arm64) => build::Arch::Arm64,
                None => build::Arch::host().ok_or(build::BuildError::UnsupportedHostArch {
                    arch: std::env::consts::ARCH,
                })?,
            };
            let opts = build::BuildOptions {
                cache: store.cache.clone(),
                force: a.force,
                arch,
                kernel: a.kernel,
                suite: a.suite,
                mirror: image::debian::mirror_url(&a.mirror).map_err(build::BuildError::from)?,
                security_mirror: image::debian::mirror_url(&a.security_mirror)
                    .map_err(build::BuildError::from)?,
                progress: true,
            };
            let img = build::build(&opts, &mut |msg: &str| output::info(msg))?;
            output::info(format!(
                "Image {} ready ({}, kernel {}) in {}",
                img.manifest.version,
                img.manifest.arch,
                img.manifest.kernel_version,
                img.dir.display()
            ));
            output::data(&img.manifest.version);
        }
        ImageCommand::Pull(a) => {
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let img = image::pull::pull(&store.cache, &a.url, a.sha256.as_deref(), progress)?;
            output::info(format!(
                "Image {} ready (kernel {}) in {}",
                img.manifest.version,
                img.manifest.kernel_version,
                img.dir.display()
            ));
            output::data(&img.manifest.version);
        }
        ImageCommand::Ls(a) => {
            let images = image::list(&store.cache)?;
            if a.json {
                let v: Vec<_> = images
                    .iter()
                    .map(|i| serde_json::json!({"dir": i.dir, "manifest": i.manifest}))
                    .collect();
                output::json::print(&serde_json::json!({ "images": v }));
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = images
                .iter()
                .map(|i| {
                    let size: u64 = i
                        .manifest
                        .files
                        .keys()
                        .filter_map(|f| std::fs::metadata(i.dir.join(f)).ok())
                        .map(|m| m.len())
                        .sum();
                    vec![
                        i.manifest.version.clone(),
                        i.manifest.arch.clone(),
                        i.manifest.kernel_version.clone(),
                        i.manifest.created.clone(),
                        format_size(size),
                    ]
                })
                .collect();
            output::table(&["VERSION", "ARCH", "KERNEL", "CREATED", "SIZE"], &rows);
        }
        ImageCommand::Rm(a) => return super::image_rm::rm(store, &a),
        ImageCommand::Prune(a) => return super::image_rm::prune(store, &a),
    }
    Ok(0)
}
