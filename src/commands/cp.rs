//! `devbox cp [-r] SRC DEST`: copies between the host and a machine over its SSH connection
//! (host key pinned), `NAME:PATH` naming the machine's side, as `docker cp` and
//! docker-machine's `scp` do. A path with a colon on the host is written `./a:b`.
//!
//! As `cp`: a DEST that is an existing directory receives SRC under its own name; otherwise
//! DEST is the copy. A file goes through `cat` on the guest; a directory (`-r`) through `tar`
//! (busybox's in the guest, the `tar` crate on the host).
//!
//! The guest is untrusted: what it sends is written on the host only into a fresh temporary
//! directory beside the destination (regular files, directories and symlinks; the `tar`
//! crate refuses entries that would land outside it, through `..` or a symlink), without
//! owners or set-id bits, and moved into place only once complete. A failed copy leaves
//! nothing on the host.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::CpArgs;
use crate::hint::Hint;
use crate::machine::Store;
use crate::output;
use crate::ssh::Connection;
use crate::ssh::quote;
use crate::supervisor::client;

#[derive(Debug, thiserror::Error)]
pub enum CpError {
    #[error("neither {src:?} nor {dest:?} names a machine")]
    NoMachine { src: String, dest: String },
    #[error(
        "both {src:?} and {dest:?} name a machine: devbox copies between the host and one machine"
    )]
    TwoMachines { src: String, dest: String },
    #[error("{path:?}: a machine path must not be empty")]
    EmptyPath { path: String },
    #[error("{path} is a directory")]
    Directory { path: String },
    #[error("copying {path} in machine {name} failed (exit {status}): {stderr}")]
    Remote {
        name: String,
        path: String,
        status: i32,
        stderr: String,
    },
    #[error("{path} has a name devbox cannot copy (not UTF-8, or none)")]
    BadName { path: PathBuf },
}

impl Hint for CpError {
    fn hint(&self) -> Option<String> {
        match self {
            CpError::NoMachine { .. } => {
                Some("write the machine's side as NAME:PATH, e.g. `devbox cp ./f dev:/tmp/`".into())
            }
            CpError::TwoMachines { .. } => Some(
                "copy to the host first, then to the other machine (a host path with a colon is written ./a:b)".into(),
            ),
            CpError::EmptyPath { .. } => Some("e.g. dev:/root/ or dev:file".into()),
            CpError::Directory { .. } => Some("copy a directory with -r".into()),
            CpError::Remote { .. } | CpError::BadName { .. } => None,
        }
    }
}

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Side<'a> {
    Host(&'a str),
    Machine { name: &'a str, path: &'a str },
}

/// `NAME:PATH` is a machine's (NAME a valid machine name); anything else, including paths
/// that start with `/` or `.`, is the host's.
pub fn side(arg: &str) -> Side<'_> {
    match arg.split_once(':') {
        Some((name, path)) if crate::machine::spec::validate_name(name).is_ok() => {
            Side::Machine { name, path }
        }
        _ => Side::Host(arg),
    }
}

pub fn run(store: &Store, a: &CpArgs) -> Result<i32> {
    let (name, upload, host, guest) = match (side(&a.src), side(&a.dest)) {
        (Side::Host(h), Side::Machine { name, path }) => (name, true, h, path),
        (Side::Machine { name, path }, Side::Host(h)) => (name, false, h, path),
        (Side::Host(_), Side::Host(_)) => {
            return Err(CpError::NoMachine {
                src: a.src.clone(),
                dest: a.dest.clone(),
            }
            .into());
        }
        (Side::Machine { .. }, Side::Machine { .. }) => {
            return Err(CpError::TwoMachines {
                src: a.src.clone(),
                dest: a.dest.clone(),
            }
            .into());
        }
    };
    if guest.is_empty() {
        return Err(CpError::EmptyPath {
            path: if upload {
                a.dest.clone()
            } else {
                a.src.clone()
            },
        }
        .into());
    }
    let dir = store.existing(name)?;
    let spec = dir.load_spec()?;
    if upload {
        // Before connecting: a missing source is the user's error, whatever the machine.
        let meta = fs_err::metadata(host)?;
        if meta.is_dir() && !a.recursive {
            return Err(CpError::Directory { path: host.into() }.into());
        }
    }
    client::require_running(&dir)?;
    let target = client::ssh_target(&dir, &spec)?;
    let conn = Connection::connect(&target, Duration::from_secs(10))?;
    let copy = Copy { conn: &conn, name };
    if upload {
        copy.upload(Path::new(host), guest)?;
    } else {
        copy.download(guest, Path::new(host), a.recursive)?;
    }
    Ok(0)
}

struct Copy<'a> {
    conn: &'a Connection,
    name: &'a str,
}

impl Copy<'_> {
    /// Runs `cmd` in the machine with `stdin`, its stdout to `stdout`; a non-zero exit is an
    /// error carrying what it printed on stderr.
    fn exec(
        &self,
        path: &str,
        cmd: &str,
        stdin: Option<&mut dyn Read>,
        stdout: &mut dyn std::io::Write,
    ) -> Result<()> {
        let mut stderr = Vec::new();
        let status = self.conn.exec(cmd, stdin, stdout, &mut stderr)?;
        if status != 0 {
            let stderr = output::guest_text::escape(&stderr);
            return Err(CpError::Remote {
                name: self.name.to_owned(),
                path: path.to_owned(),
                status,
                stderr: stderr.trim().to_owned(),
            }
            .into());
        }
        Ok(())
    }

    fn upload(&self, src: &Path, dest: &str) -> Result<()> {
        let base = base_name(src)?;
        let probe = self
            .conn
            .exec_capture(&format!("[ -d {} ] && echo dir", quote(dest)))?;
        let into_dir = String::from_utf8_lossy(&probe.stdout).trim() == "dir";
        // The copy's path in the machine: DEST/BASE into a directory, else DEST.
        let (parent, name) = if into_dir {
            let d = dest.trim_end_matches('/');
            (
                if d.is_empty() {
                    "/".into()
                } else {
                    d.to_owned()
                },
                base,
            )
        } else {
            match dest.trim_end_matches('/').rsplit_once('/') {
                Some((p, n)) => (if p.is_empty() { "/".into() } else { p.into() }, n.into()),
                None => (".".into(), dest.to_owned()),
            }
        };
        let target = format!("{}/{name}", parent.trim_end_matches('/'));
        if fs_err::metadata(src)?.is_dir() {
            let (reader, writer) = std::io::pipe()?;
            let src_owned = src.to_owned();
            let name_owned = name.clone();
            let producer = std::thread::spawn(move || -> std::io::Result<()> {
                let mut tar = tar::Builder::new(writer);
                tar.follow_symlinks(false);
                tar.append_dir_all(&name_owned, &src_owned)?;
                tar.into_inner()?;
                Ok(())
            });
            let mut reader = reader;
            let sent = self.exec(
                &target,
                &format!("tar -x -f - -C {}", quote(&parent)),
                Some(&mut reader),
                &mut std::io::sink(),
            );
            drop(reader);
            let produced = producer.join().expect("the tar thread does not panic");
            sent?;
            produced.with_context(|| format!("reading {}", src.display()))?;
        } else {
            let mut file = fs_err::File::open(src)?;
            self.exec(
                &target,
                &format!("cat > {}", quote(&target)),
                Some(&mut file),
                &mut std::io::sink(),
            )?;
        }
        output::info(format!(
            "Copied {} to {}:{target}",
            src.display(),
            self.name
        ));
        Ok(())
    }

    fn download(&self, src: &str, dest: &Path, recursive: bool) -> Result<()> {
        let src_trimmed = src.trim_end_matches('/');
        let base = match src_trimmed.rsplit_once('/') {
            Some((_, b)) => b,
            None => src_trimmed,
        };
        let base = if base.is_empty() || base == "." || base == ".." {
            return Err(CpError::BadName { path: src.into() }.into());
        } else {
            base
        };
        let (parent, target) = if dest.is_dir() {
            (dest.to_owned(), dest.join(base))
        } else {
            let parent = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            (parent, dest.to_owned())
        };
        // Everything lands in a fresh directory beside the target first.
        let staging = tempfile::Builder::new()
            .prefix(".devbox-cp-")
            .tempdir_in(&parent)
            .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
        let q = quote(src);
        let staged = if recursive {
            let (reader, mut writer) = std::io::pipe()?;
            let into = staging.path().to_owned();
            let consumer = std::thread::spawn(move || unpack(reader, &into));
            let got = self.exec(
                src,
                &format!(
                    "cd {} && tar -c -f - {}",
                    quote(&parent_of(src_trimmed)),
                    quote(&format!("./{base}"))
                ),
                None,
                &mut writer,
            );
            drop(writer);
            let unpacked = consumer.join().expect("the untar thread does not panic");
            got?;
            unpacked.context("unpacking what the machine sent")?;
            staging.path().join(base)
        } else {
            let staged = staging.path().join(base);
            let mut file = fs_err::File::create(&staged)?;
            self.exec(
                src,
                &format!(
                    "if [ -d {q} ]; then echo {} is a directory, copy it with -r >&2; exit 1; fi; cat {q}",
                    quote(src)
                ),
                None,
                &mut file,
            )?;
            file.sync_all()?;
            staged
        };
        if !staged.exists() {
            anyhow::bail!("machine {} sent nothing for {src}", self.name);
        }
        if target.is_dir() && staged.is_dir() {
            anyhow::bail!(
                "{} exists: remove it first, or copy into its parent",
                target.display()
            );
        }
        fs_err::rename(&staged, &target)?;
        output::info(format!(
            "Copied {}:{src} to {}",
            self.name,
            target.display()
        ));
        Ok(())
    }
}

/// Unpacks a tar stream from the guest into `into`: regular files, directories and
/// symlinks only; paths that would leave `into` are refused by `unpack_in`.
fn unpack(reader: impl Read, into: &Path) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(false);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            continue;
        }
        if !entry.unpack_in(into)? {
            return Err(std::io::Error::other(format!(
                "the machine sent a path outside the copy: {}",
                String::from_utf8_lossy(&entry.path_bytes())
            )));
        }
    }
    Ok(())
}

fn parent_of(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) => "/".into(),
        Some((p, _)) => p.into(),
        None => ".".into(),
    }
}

fn base_name(p: &Path) -> Result<String> {
    let canonical = fs_err::canonicalize(p)?;
    canonical
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| CpError::BadName { path: p.into() }.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_side_is_a_machine_name_and_a_colon() {
        assert_eq!(
            side("dev:/tmp/x"),
            Side::Machine {
                name: "dev",
                path: "/tmp/x"
            }
        );
        assert_eq!(
            side("dev:"),
            Side::Machine {
                name: "dev",
                path: ""
            }
        );
        assert_eq!(side("./dev:x"), Side::Host("./dev:x"));
        assert_eq!(side("/a:b"), Side::Host("/a:b"));
        assert_eq!(side("Bad_Name:x"), Side::Host("Bad_Name:x"));
        assert_eq!(side("file"), Side::Host("file"));
    }

    #[test]
    fn a_stream_that_leaves_the_copy_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let into = d.path().join("in");
        std::fs::create_dir(&into).unwrap();
        // A symlink to the outside, then a file written through it.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "x/out", d.path()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "x/out/pwned", &b"hi"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(unpack(&bytes[..], &into).is_err());
        assert!(!d.path().join("pwned").exists());
    }

    #[test]
    fn parents_of_machine_paths() {
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(parent_of("a"), ".");
    }
}
