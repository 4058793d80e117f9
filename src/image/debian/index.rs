//! The package index: every `Packages` file of the build's sources, reduced to apt's
//! *candidates* (per package name, the highest version of any source: the sources apt reads
//! for the guest all have the default pin priority, 500) and a map of who provides which
//! virtual package. Dependencies are kept as text and parsed when the resolver reaches them.

use std::collections::BTreeMap;

use debian_control::lossy::Relations;
use debversion::Version;

/// `Multi-Arch` of a package (Debian Policy §5.6.27; the MultiArchSpec wiki page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiArch {
    No,
    Same,
    Foreign,
    /// May satisfy `pkg:any` dependencies.
    Allowed,
}

/// One package version as a `Packages` file describes it.
#[derive(Debug, Clone)]
pub struct Record {
    pub name: String,
    pub version: Version,
    /// The version as written (what the manifest records).
    pub version_text: String,
    pub arch: String,
    pub multi_arch: MultiArch,
    pub essential: bool,
    /// `Protected: yes` (apt's "important" flag; called `Important:` before).
    pub important: bool,
    /// apt's order: 1 required, 2 important, 3 standard, 4 optional, 5 extra; 0 when the
    /// field is missing, as in apt's cache.
    pub priority: u8,
    /// `Pre-Depends` then `Depends`, the order apt stores and follows them in.
    pub depends: String,
    pub provides: String,
    pub conflicts: String,
    pub breaks: String,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// Which source (index into the build's source list) lists this version.
    pub source: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct IndexError {
    pub what: String,
}

/// Candidates by name, and providers by virtual name (only candidates provide).
#[derive(Debug, Default)]
pub struct Index {
    candidates: BTreeMap<String, Record>,
    providers: BTreeMap<String, Vec<Provider>>,
}

/// A candidate that provides a name, with the version it provides (if the Provides says one).
#[derive(Debug, Clone)]
pub struct Provider {
    pub package: String,
    pub version: Option<Version>,
}

/// Accumulates `Packages` files, then [`IndexBuilder::finish`]es into an [`Index`].
#[derive(Debug, Default)]
pub struct IndexBuilder {
    candidates: BTreeMap<String, Record>,
}

impl IndexBuilder {
    /// Adds the paragraphs of one `Packages` file of source `source`, keeping for each name
    /// the highest version (on a tie, the source listed first).
    pub fn add(&mut self, text: &str, source: usize) -> Result<(), IndexError> {
        for p in deb822_fast::borrowed::iter_paragraphs_borrowed(text) {
            let p = p.map_err(|e| IndexError {
                what: format!("unreadable paragraph: {e:?}"),
            })?;
            let record = record(&p, source)?;
            match self.candidates.get(&record.name) {
                Some(have) if have.version >= record.version => {}
                _ => {
                    self.candidates.insert(record.name.clone(), record);
                }
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Index, IndexError> {
        let mut providers: BTreeMap<String, Vec<Provider>> = BTreeMap::new();
        for r in self.candidates.values() {
            for group in relations(&r.name, "Provides", &r.provides)?.0 {
                for rel in group {
                    providers.entry(rel.name).or_default().push(Provider {
                        package: r.name.clone(),
                        version: rel.version.map(|(_, v)| v),
                    });
                }
            }
        }
        Ok(Index {
            candidates: self.candidates,
            providers,
        })
    }
}

impl Index {
    pub fn candidate(&self, name: &str) -> Option<&Record> {
        self.candidates.get(name)
    }

    /// Candidates that provide `name` (a virtual package, or a real one provided too).
    pub fn providers(&self, name: &str) -> &[Provider] {
        self.providers.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }
}

/// Parses a relationship field of package `package` (for the error message).
pub fn relations(package: &str, field: &str, text: &str) -> Result<Relations, IndexError> {
    text.parse().map_err(|e| IndexError {
        what: format!("{package}: cannot parse {field} {text:?}: {e}"),
    })
}

fn record(
    p: &deb822_fast::borrowed::BorrowedParagraph,
    source: usize,
) -> Result<Record, IndexError> {
    let name = p.get_single("Package").unwrap_or_default().trim();
    let need = |field: &str| -> Result<&str, IndexError> {
        p.get_single(field)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| IndexError {
                what: format!("package {name:?} has no {field}"),
            })
    };
    let text = |field: &str| p.get(field).map(|l| l.join(" ")).unwrap_or_default();
    let version_text = need("Version")?.to_owned();
    let version = version_text.parse().map_err(|e| IndexError {
        what: format!("package {name}: version {version_text:?}: {e}"),
    })?;
    let sha256 = need("SHA256")?.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IndexError {
            what: format!("package {name}: SHA256 {sha256:?}"),
        });
    }
    let filename = need("Filename")?.to_owned();
    // A pool path, never one that climbs out of the mirror.
    if filename.starts_with('/') || filename.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(IndexError {
            what: format!("package {name}: Filename {filename:?}"),
        });
    }
    let pre = text("Pre-Depends");
    let dep = text("Depends");
    Ok(Record {
        name: need("Package")?.to_owned(),
        version,
        version_text,
        arch: need("Architecture")?.to_owned(),
        multi_arch: match p.get_single("Multi-Arch").map(str::trim) {
            Some("same") => MultiArch::Same,
            Some("foreign") => MultiArch::Foreign,
            Some("allowed") => MultiArch::Allowed,
            _ => MultiArch::No,
        },
        essential: p.get_single("Essential").map(str::trim) == Some("yes"),
        important: ["Protected", "Important"]
            .iter()
            .any(|f| p.get_single(f).map(str::trim) == Some("yes")),
        priority: match p.get_single("Priority").map(str::trim) {
            Some("required") => 1,
            Some("important") => 2,
            Some("standard") => 3,
            Some("optional") => 4,
            Some("extra") => 5,
            _ => 0,
        },
        depends: match (pre.is_empty(), dep.is_empty()) {
            (false, false) => format!("{pre}, {dep}"),
            (false, true) => pre,
            _ => dep,
        },
        provides: text("Provides"),
        conflicts: text("Conflicts"),
        breaks: text("Breaks"),
        size: need("Size")?.parse().map_err(|_| IndexError {
            what: format!("package {name}: Size"),
        })?,
        filename,
        sha256,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &str = "\
Package: libc6
Version: 2.36-9+deb12u13
Architecture: amd64
Multi-Arch: same
Priority: optional
Protected: yes
Depends: libgcc-s1
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u13_amd64.deb
Size: 2757936
SHA256: 0000000000000000000000000000000000000000000000000000000000000001

Package: mawk
Version: 1.3.4.20200120-3.1
Architecture: amd64
Multi-Arch: foreign
Priority: required
Pre-Depends: libc6 (>= 2.34)
Depends: libc6 (>= 2.29)
Provides: awk
Filename: pool/main/m/mawk/mawk_1.3.4.20200120-3.1_amd64.deb
Size: 121024
SHA256: 0000000000000000000000000000000000000000000000000000000000000002
";

    const SECURITY: &str = "\
Package: libc6
Version: 2.36-9+deb12u14
Architecture: amd64
Filename: pool/updates/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb
Size: 2758000
SHA256: 0000000000000000000000000000000000000000000000000000000000000003
";

    #[test]
    fn candidates_are_the_highest_version_of_any_source() {
        let mut b = IndexBuilder::default();
        b.add(MAIN, 0).unwrap();
        b.add(SECURITY, 1).unwrap();
        let idx = b.finish().unwrap();
        let libc = idx.candidate("libc6").unwrap();
        assert_eq!(
            (libc.version_text.as_str(), libc.source),
            ("2.36-9+deb12u14", 1)
        );
        let mawk = idx.candidate("mawk").unwrap();
        assert_eq!(mawk.depends, "libc6 (>= 2.34), libc6 (>= 2.29)");
        assert_eq!(mawk.multi_arch, MultiArch::Foreign);
        assert_eq!(mawk.priority, 1);
        assert_eq!(idx.providers("awk")[0].package, "mawk");
        assert!(idx.providers("libc6").is_empty());
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn a_filename_outside_the_pool_is_refused() {
        let text = MAIN.replace("pool/main/m/mawk/", "pool/../../etc/");
        let e = IndexBuilder::default().add(&text, 0).unwrap_err();
        assert!(e.what.contains("Filename"), "{e}");
    }
}
