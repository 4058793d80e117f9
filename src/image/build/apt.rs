//! A private apt state for resolving and downloading the guest's packages.
//!
//! `apt-get` runs with its own lists, an empty dpkg status, its own archive cache and no
//! locking, all under `<cache>/apt/`, so the closure is computed as if nothing were installed
//! and the host's apt state and installed packages are never touched. The host's configured
//! sources (`/etc/apt/sources.list*`) and keyrings are used as they are.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use super::{BuildError, run};

/// Lists older than this are refreshed before resolving.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Touched after a successful private `apt-get update`.
const UPDATED_STAMP: &str = "devbox-updated";

/// One package of a resolved closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

impl Package {
    /// File name `apt-get download` gives the package (epoch colon escaped as `%3a`).
    pub fn deb_file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

pub struct Apt {
    root: PathBuf,
    arch: &'static str,
}

impl Apt {
    /// Creates (if needed) the private state under `root`.
    pub fn new(root: &Path, arch: &'static str) -> Result<Apt, BuildError> {
        let apt = Apt {
            root: root.to_owned(),
            arch,
        };
        fs_err::create_dir_all(apt.lists().join("partial"))?;
        fs_err::create_dir_all(apt.archives().join("partial"))?;
        fs_err::create_dir_all(root.join("cache"))?;
        let status = apt.status();
        if !status.exists() {
            // An empty dpkg status: apt resolves the full closure of every package.
            fs_err::write(&status, "")?;
        }
        Ok(apt)
    }

    fn lists(&self) -> PathBuf {
        self.root.join("lists")
    }
    fn status(&self) -> PathBuf {
        self.root.join("status")
    }
    /// Where downloaded `.deb`s are kept between builds.
    pub fn archives(&self) -> PathBuf {
        self.root.join("archives")
    }

    fn apt_get(&self) -> Command {
        let mut cmd = Command::new("apt-get");
        let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
        cmd.arg("-q")
            .arg("-o")
            .arg(opt("Dir::State::Lists", &self.lists()))
            .arg("-o")
            .arg(opt("Dir::State::status", &self.status()))
            .arg("-o")
            .arg(opt("Dir::Cache", &self.root.join("cache")))
            .arg("-o")
            .arg(opt("Dir::Cache::archives", &self.archives()))
            .args(["-o", "Debug::NoLocking=1"])
            .args(["-o", "APT::Install-Recommends=false"])
            .args(["-o", &format!("APT::Architecture={}", self.arch)])
            // Only this arch's lists and packages, whatever foreign archs the host's dpkg has.
            .args(["-o", &format!("APT::Architectures={}", self.arch)])
            // The private dirs belong to the invoking user; apt's `_apt` sandbox user could
            // not write them.
            .args(["-o", "APT::Sandbox::User=root"])
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// True when the private lists were never fetched or are older than a day.
    pub fn lists_stale(&self) -> Result<bool, BuildError> {
        let stamp = self.lists().join(UPDATED_STAMP);
        let modified = match fs_err::metadata(&stamp) {
            Ok(m) => m.modified()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        Ok(age > LISTS_MAX_AGE)
    }

    /// Private `apt-get update`.
    pub fn update(&self) -> Result<(), BuildError> {
        let out = run(self.apt_get().arg("update"))?;
        // apt-get update exits 0 when some sources failed; a failed fetch shows as `W:`/`E:`.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(line) = stderr.lines().find(|l| l.starts_with("E:")) {
            return Err(BuildError::Command {
                command: "apt-get update".into(),
                status: out.status,
                stderr: line.to_owned(),
            });
        }
        fs_err::write(self.lists().join(UPDATED_STAMP), "")?;
        Ok(())
    }

    /// The full closure of `packages` (simulated install against the empty status).
    pub fn resolve(&self, packages: &[&str]) -> Result<Vec<Package>, BuildError> {
        let out = run(self.apt_get().args(["-s", "install"]).args(packages))?;
        parse_simulation(&String::from_utf8_lossy(&out.stdout))
    }

    /// Paths of the packages' `.deb`s, downloading the ones missing from the archive cache
    /// (one `apt-get download` for all of them: each apt start costs about half a second).
    pub fn fetch(&self, pkgs: &[&Package]) -> Result<Vec<PathBuf>, BuildError> {
        let paths: Vec<PathBuf> = pkgs
            .iter()
            .map(|p| self.archives().join(p.deb_file_name()))
            .collect();
        let missing: Vec<&Package> = pkgs
            .iter()
            .zip(&paths)
            .filter(|(_, path)| !path.is_file())
            .map(|(p, _)| *p)
            .collect();
        if missing.is_empty() {
            return Ok(paths);
        }
        // Download into partial/ and rename, so an interrupted download is never reused.
        let partial = self.archives().join("partial");
        run(self
            .apt_get()
            .current_dir(&partial)
            .arg("download")
            .args(missing.iter().map(|p| format!("{}={}", p.name, p.version))))?;
        for p in missing {
            fs_err::rename(
                partial.join(p.deb_file_name()),
                self.archives().join(p.deb_file_name()),
            )?;
        }
        Ok(paths)
    }
}

/// Parses the `Inst` lines of `apt-get -s install`, e.g.
/// `Inst libc6 (2.36-9+deb12u14 Debian:12.11/stable, Debian-Security:12/stable-security [amd64])`.
pub fn parse_simulation(stdout: &str) -> Result<Vec<Package>, BuildError> {
    let mut out = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let bad = || BuildError::AptOutput {
            line: line.to_owned(),
        };
        let name = rest.split_whitespace().next().ok_or_else(bad)?;
        // With an empty status there is no `[old version]`; the new one follows `(`.
        let open = rest.find('(').ok_or_else(bad)? + 1;
        // Only the parenthesised part: apt may append more (`[]` for broken-dependency marks).
        let paren = &rest[open..open + rest[open..].find(')').ok_or_else(bad)?];
        let version = paren.split_whitespace().next().ok_or_else(bad)?;
        let arch = paren
            .rfind('[')
            .and_then(|i| paren[i + 1..].split(']').next())
            .ok_or_else(bad)?;
        out.push(Package {
            name: name.to_owned(),
            version: version.to_owned(),
            arch: arch.to_owned(),
        });
    }
    Ok(out)
}

/// The concrete kernel (`linux-image-<abi>-cloud-amd64`) the metapackage pulled in.
pub fn kernel_package(closure: &[Package], metapackage: &str) -> Result<Package, BuildError> {
    let flavour = metapackage.trim_start_matches("linux-image-");
    closure
        .iter()
        .find(|p| {
            p.name != metapackage
                && p.name.starts_with("linux-image-")
                && p.name.ends_with(flavour)
                && p.name[12..].starts_with(|c: char| c.is_ascii_digit())
        })
        .cloned()
        .ok_or_else(|| BuildError::NoKernel {
            metapackage: metapackage.to_owned(),
        })
}

/// The package `name` of a resolved closure.
pub fn find_package(closure: &[Package], name: &str) -> Result<Package, BuildError> {
    closure
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| BuildError::NotResolved {
            package: name.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIM: &str = "\
NOTE: This is only a simulation!
Reading package lists...
Inst libc6 (2.36-9+deb12u14 Debian:12.11/stable, Debian-Security:12/stable-security [amd64])
Inst libattr1 (1:2.5.1-4 Debian:12.11/stable [amd64]) []
Inst linux-image-6.1.0-56-cloud-amd64 (6.1.192-2 Debian-Security:12/stable-security [amd64])
Inst linux-image-cloud-amd64 (6.1.192-2 Debian-Security:12/stable-security [amd64])
Inst netbase (6.4 Debian:12.11/stable [all])
Conf libc6 (2.36-9+deb12u14 Debian:12.11/stable [amd64])
";

    #[test]
    fn parses_inst_lines_only() {
        let pkgs = parse_simulation(SIM).unwrap();
        assert_eq!(pkgs.len(), 5);
        assert_eq!(
            pkgs[1],
            Package {
                name: "libattr1".into(),
                version: "1:2.5.1-4".into(),
                arch: "amd64".into()
            }
        );
        assert_eq!(pkgs[4].arch, "all");
        assert_eq!(pkgs[1].deb_file_name(), "libattr1_1%3a2.5.1-4_amd64.deb");
    }

    #[test]
    fn rejects_garbled_inst_line() {
        assert!(matches!(
            parse_simulation("Inst broken"),
            Err(BuildError::AptOutput { .. })
        ));
    }

    #[test]
    fn finds_concrete_kernel_not_metapackage() {
        let pkgs = parse_simulation(SIM).unwrap();
        let k = kernel_package(&pkgs, "linux-image-cloud-amd64").unwrap();
        assert_eq!(k.name, "linux-image-6.1.0-56-cloud-amd64");
        assert!(kernel_package(&pkgs[..2], "linux-image-cloud-amd64").is_err());
    }
}
