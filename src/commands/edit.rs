//! `devbox edit NAME`: change a machine's CPUs, memory, shares or engine settings, with flags
//! or, without any, in `$VISUAL`/`$EDITOR` (else `vi`) on a copy of its `machine.yaml`. The
//! new spec is checked as `create` and every read check one (and against the fields an edit
//! may not change, `machine::edit`) before it replaces the file atomically; a refused edit
//! leaves the file as it was. Holds the machine's lock throughout. A running machine may be
//! edited: the change applies at its next start.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::EditArgs;
use crate::hint::Hint;
use crate::machine::edit::{self, EditFlags};
use crate::machine::engine::{self, EngineFlags};
use crate::machine::lock::lock_machine;
use crate::machine::spec::{self, HostLimits, InvalidField, SpecError};
use crate::machine::state::observe;
use crate::machine::store::StoreError;
use crate::machine::{MachineDir, MachineSpec, Store};
use crate::{image, output};

#[derive(Debug, thiserror::Error)]
pub enum EditorError {
    #[error("the edit of machine {name}'s machine.yaml was not saved; the file is as it was")]
    Refused {
        name: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("the editor `{editor}` {status}; machine {name}'s machine.yaml is as it was")]
    Failed {
        name: String,
        editor: String,
        status: std::process::ExitStatus,
    },
    #[error(
        "no flag given and no editor to open machine.yaml in: VISUAL and EDITOR are unset, and stdin is not a terminal for vi"
    )]
    NoEditor,
    #[error("machine {name}'s machine.yaml was changed by someone else while it was being edited")]
    ChangedMeanwhile { name: String },
}

impl Hint for EditorError {
    fn hint(&self) -> Option<String> {
        match self {
            // The cause's own fix, unless it is the store's ("fix machine.yaml by hand"),
            // which the file as it was does not need.
            EditorError::Refused { name, source } => {
                let store = source
                    .chain()
                    .any(|c| c.downcast_ref::<StoreError>().is_some());
                let again = format!("`devbox edit {name}` opens it again");
                Some(match output::diagnostics::hint(source).filter(|_| !store) {
                    Some(fix) => format!("{fix} ({again})"),
                    None => again,
                })
            }
            EditorError::ChangedMeanwhile { name } => {
                Some(format!("run `devbox edit {name}` again"))
            }
            EditorError::NoEditor => {
                Some("give the change as flags (`devbox edit NAME --cpus 4`), or set EDITOR".into())
            }
            EditorError::Failed { .. } => {
                Some("set VISUAL or EDITOR to an editor that exits 0 when it saves".into())
            }
        }
    }
}

pub fn run(store: &Store, a: &EditArgs) -> Result<i32> {
    let dir = store.existing(&a.name)?;
    // Every flag is checked before anything is locked or read.
    let flags = flags(store, a)?;
    let _lock = lock_machine(&dir)?;
    let live = observe(&dir)?.state.is_live();
    // A machine.yaml that does not load is for the editor to fix.
    if let Ok(spec) = dir.load_spec() {
        spec.require_booted("edit")?;
    }
    let (old, new) = if flags.is_empty() {
        match in_editor(store, &dir)? {
            Edited::Changed { old, new } => (old.map(|o| *o), *new),
            Edited::Unchanged => return nothing_changed(&a.name),
            Edited::GaveUp => {
                output::info(format!(
                    "Nothing changed in machine {}: machine.yaml is as it was.",
                    a.name
                ));
                return Ok(1);
            }
        }
    } else {
        let old = dir.load_spec()?;
        let new = edit::apply(&old, &flags)?;
        check(store, &old, &new)?;
        (Some(old), new)
    };
    let changes = match &old {
        Some(old) => edit::describe(old, &new),
        None => vec!["machine.yaml is valid again".to_owned()],
    };
    if changes.is_empty() {
        return nothing_changed(&a.name);
    }
    dir.save_spec(&new)
        .with_context(|| format!("saving machine {}'s machine.yaml", a.name))?;
    output::info(format!("Changed machine {}:", a.name));
    for c in changes {
        output::info(format!("  {c}"));
    }
    if live {
        output::info(format!(
            "Machine {0} is running: the change applies at its next start (`devbox restart {0}`).",
            a.name
        ));
    } else {
        output::info(format!(
            "The change applies at the next start (`devbox start {}`).",
            a.name
        ));
    }
    Ok(0)
}

fn nothing_changed(name: &str) -> Result<i32> {
    output::info(format!("Nothing changed in machine {name}."));
    Ok(0)
}

/// The flags, each parsed and checked on its own as `create` checks it.
fn flags(store: &Store, a: &EditArgs) -> Result<EditFlags> {
    let limits = HostLimits::of_this_host();
    if let Some(c) = a.cpus {
        spec::validate_cpus(c, &limits)?;
    }
    let memory_mib = a.memory.as_deref().map(spec::parse_memory).transpose()?;
    if let Some(m) = memory_mib {
        spec::validate_memory(m, &limits)?;
    }
    let state_dirs = store.state_dirs();
    let add_shares = a
        .shares
        .iter()
        .map(|s| spec::parse_share(s, a.allow_root_share, &state_dirs).map_err(SpecError::from))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = engine::from_flags(&EngineFlags {
        labels: a.engine.labels.clone(),
        opts: a.engine.opts.clone(),
        insecure_registries: a.engine.insecure_registries.clone(),
        registry_mirrors: a.engine.registry_mirrors.clone(),
        env: a.engine.env.clone(),
        storage_driver: a.engine.storage_driver.clone(),
        ca_files: a.engine.ca_files.clone(),
    })?;
    Ok(EditFlags {
        cpus: a.cpus,
        memory_mib,
        add_shares,
        unshares: a.unshares.clone(),
        engine,
        engine_unset: a.engine_unset.clone(),
    })
}

/// Checks an edited spec as a whole, as `create` and every read do: the fields an edit may
/// not change are unchanged, every value is valid, the shares work with the driver and stay
/// out of devbox's own directories, and the image's Docker knows every engine key.
fn check(store: &Store, old: &MachineSpec, new: &MachineSpec) -> Result<()> {
    edit::check_fixed(old, new)?;
    let state_dirs = store.state_dirs();
    new.validate(&HostLimits::of_this_host())
        .map_err(|InvalidField { field, source }| {
            anyhow::Error::new(source).context(format!("invalid {field}"))
        })?;
    spec::check_shares(&new.shares, Some(&state_dirs)).map_err(SpecError::from)?;
    let added_share = new.shares.iter().any(|s| !old.shares.contains(s));
    if added_share && !new.driver.capabilities().shares {
        anyhow::bail!(
            "--share: file sharing is not available with the {} driver on this host yet \
             (devbox's NFS server runs on Linux hosts only)",
            new.driver
        );
    }
    if new.engine != old.engine
        && let Ok(img) = image::find(&store.cache, Some(&new.image))
    {
        engine::check_engine(&new.engine, img.manifest.docker_major())
            .context("the machine's image's Docker engine does not know this key")?;
        engine::check_ca_support(&new.engine, &img.manifest.version, img.manifest.engine_ca)?;
    }
    Ok(())
}

/// The editor: `$VISUAL`, else `$EDITOR`, else `vi` (only on a terminal: `vi` without one
/// would wait for keys no one types), run by `sh -c` as git runs it, so that
/// `EDITOR="code --wait"` works.
fn editor() -> Result<String> {
    let chosen = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|v| v.to_string_lossy().into_owned())
        .find(|v| !v.trim().is_empty());
    match chosen {
        Some(e) => Ok(e),
        None if std::io::stdin().is_terminal() => Ok("vi".to_owned()),
        None => Err(EditorError::NoEditor.into()),
    }
}

/// How an edit in the editor ended.
enum Edited {
    /// The spec before (`None`: it did not parse) and after.
    Changed {
        old: Option<Box<MachineSpec>>,
        new: Box<MachineSpec>,
    },
    Unchanged,
    /// The edit was refused, and the user chose not to edit again.
    GaveUp,
}

/// Opens a copy of `machine.yaml` in the editor until it holds a valid spec (or the user
/// gives up, or there is no terminal to ask on).
fn in_editor(store: &Store, dir: &MachineDir) -> Result<Edited> {
    let path = dir.spec_path();
    let original = fs_err::read_to_string(&path)?;
    // The spec as it is, to compare against. A broken one can be mended here too: then only
    // what parses is compared (a file that does not parse at all compares with nothing, but
    // the result must still be a valid spec).
    let old: Option<MachineSpec> = match dir.parse_spec(&original) {
        Ok(s) => Some(s),
        Err(_) => serde_norway::from_str(&original).ok(),
    };
    // In the machine's own directory (0700): the copy is as private as the file.
    let copy = tempfile::Builder::new()
        .prefix(".edit-")
        .suffix(".yaml")
        .tempfile_in(&dir.path)
        .with_context(|| format!("creating a temp file in {}", dir.path.display()))?;
    let mut text = original.clone();
    // Offered again only on a terminal (as `rm` asks only there): a script gets the error.
    let ask = std::io::stdin().is_terminal();
    loop {
        fs_err::write(copy.path(), &text)?;
        run_editor(&dir.name, copy.path())?;
        text = fs_err::read_to_string(copy.path())?;
        if text == original {
            return Ok(Edited::Unchanged);
        }
        match checked(store, dir, old.as_ref(), &text) {
            Ok(new) => {
                if old.as_ref() == Some(&new) {
                    return Ok(Edited::Unchanged);
                }
                // Hand edits do not take the lock: never overwrite one made meanwhile.
                if fs_err::read_to_string(&path)? != original {
                    return Err(EditorError::ChangedMeanwhile {
                        name: dir.name.clone(),
                    }
                    .into());
                }
                return Ok(Edited::Changed {
                    old: old.map(Box::new),
                    new: Box::new(new),
                });
            }
            Err(e) => {
                let e = anyhow::Error::new(EditorError::Refused {
                    name: dir.name.clone(),
                    source: e,
                });
                if !ask {
                    return Err(e);
                }
                output::error(&e, None);
                eprint!("Edit again? [Y/n] ");
                let _ = std::io::stderr().flush();
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if matches!(answer.trim().to_ascii_lowercase().as_str(), "n" | "no") {
                    return Ok(Edited::GaveUp);
                }
            }
        }
    }
}

/// `text` as the machine's new spec, checked: first as every read checks `machine.yaml`
/// (errors name the field's line), then as [`check`] does.
fn checked(
    store: &Store,
    dir: &MachineDir,
    old: Option<&MachineSpec>,
    text: &str,
) -> Result<MachineSpec> {
    let mut new = dir.parse_spec(text)?;
    // A file that did not parse before is compared with itself: nothing is fixed, but its
    // shares are looked up again like new ones.
    let (against, known_shares) = match old {
        Some(o) => (o.clone(), o.shares.as_slice()),
        None => (new.clone(), &[][..]),
    };
    edit::reresolve_shares(known_shares, &mut new.shares, &store.state_dirs())
        .map_err(SpecError::from)?;
    check(store, &against, &new)?;
    Ok(new)
}

fn run_editor(name: &str, file: &Path) -> Result<()> {
    let editor = editor()?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("devbox-edit")
        .arg(file)
        .status()
        .with_context(|| format!("running the editor `{editor}` with sh"))?;
    if !status.success() {
        return Err(EditorError::Failed {
            name: name.to_owned(),
            editor,
            status,
        }
        .into());
    }
    Ok(())
}
