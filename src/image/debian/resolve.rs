//! The dependency closure of the guest's package list, chosen the way `apt-get install`
//! chooses it on an empty system with `--no-install-recommends`, so that the Rust builder
//! picks the packages the apt-based one did (compared once, both arches: see the README).
//!
//! apt's rules as followed here (apt-pkg/depcache.cc, `MarkInstall` and `CompareProviders`):
//! - every requested package is marked first, then each one's dependencies are installed in
//!   the order requested, depth first, in field order (`Pre-Depends`, then `Depends`);
//! - a dependency group (`a | b`) already satisfied by a marked package is skipped; else its
//!   solutions are tried in order: for each alternative, the candidate of that name if its
//!   version satisfies the constraint, and the candidates that provide the name (a versioned
//!   dependency needs a versioned Provides), sorted by: protected (requested, or the only
//!   solution of a requested package's dependency) first, the real package before providers,
//!   Essential, then Protected, then the higher Priority, then the name (apt's last resort is
//!   its cache's internal order, which this cannot see);
//! - a package is installable only if each of its dependency groups has an alternative that
//!   some candidate could satisfy; an uninstallable solution is passed over for the next one;
//! - `pkg:any` is satisfied only by `Multi-Arch: allowed` packages; `pkg:<arch>` by that arch;
//! - Essential packages are not added for their own sake (apt's `install` does not add them;
//!   they come in when something depends on them), only preferred among providers.
//!
//! A Conflicts or Breaks between two chosen packages is an error here, where apt would try to
//! work around it; the guest's list has none.

use std::collections::{BTreeMap, BTreeSet};

use debian_control::lossy::{Relation, Relations};
use debian_control::relations::VersionConstraint;

use super::index::{Index, IndexError, MultiArch, Record, relations};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("package {package} is not in the archive for {arch}")]
    Missing { package: String, arch: String },
    #[error("{package} needs {dependency}, which no package in the archive for {arch} satisfies")]
    Unsatisfiable {
        package: String,
        dependency: String,
        arch: String,
    },
    #[error("{package} conflicts with {other} (by {field} {relation}), and both are needed")]
    Conflict {
        package: String,
        other: String,
        field: &'static str,
        relation: String,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// The closure of `requested` for Debian architecture `arch`, sorted by name.
pub fn resolve<'a>(
    index: &'a Index,
    arch: &str,
    requested: &[&str],
) -> Result<Vec<&'a Record>, ResolveError> {
    let mut r = Resolver {
        index,
        arch,
        marked: BTreeSet::new(),
        protected: BTreeSet::new(),
        deps: BTreeMap::new(),
        failure: None,
    };
    for name in requested {
        if index.candidate(name).is_none() {
            return Err(ResolveError::Missing {
                package: (*name).to_owned(),
                arch: arch.to_owned(),
            });
        }
        r.marked.insert((*name).to_owned());
        r.protected.insert((*name).to_owned());
    }
    for name in requested {
        if !r.install_deps(name)? {
            return Err(r.failure.take().unwrap_or(ResolveError::Unsatisfiable {
                package: (*name).to_owned(),
                dependency: "?".into(),
                arch: arch.to_owned(),
            }));
        }
    }
    let chosen: Vec<&Record> = r
        .marked
        .iter()
        .map(|n| index.candidate(n).expect("only candidates are marked"))
        .collect();
    check_conflicts(index, arch, &chosen)?;
    Ok(chosen)
}

struct Resolver<'a> {
    index: &'a Index,
    arch: &'a str,
    marked: BTreeSet<String>,
    protected: BTreeSet<String>,
    deps: BTreeMap<String, Relations>,
    /// The first dependency found unsatisfiable, reported if nothing works around it.
    failure: Option<ResolveError>,
}

impl Resolver<'_> {
    fn depends(&mut self, name: &str) -> Result<Relations, ResolveError> {
        if let Some(d) = self.deps.get(name) {
            return Ok(d.clone());
        }
        let rec = self.index.candidate(name).expect("candidate");
        let d = relations(name, "Depends", &rec.depends)?;
        self.deps.insert(name.to_owned(), d.clone());
        Ok(d)
    }

    /// apt's `MarkInstall` for a package not requested by the user.
    fn mark_install(&mut self, name: &str) -> Result<bool, ResolveError> {
        if self.marked.contains(name) {
            return Ok(true);
        }
        if !self.installable(name)? {
            return Ok(false);
        }
        self.marked.insert(name.to_owned());
        if self.install_deps(name)? {
            Ok(true)
        } else {
            self.marked.remove(name);
            Ok(false)
        }
    }

    /// Installs the dependencies of marked package `name`; false when one cannot be met.
    fn install_deps(&mut self, name: &str) -> Result<bool, ResolveError> {
        let protected = self.protected.contains(name);
        // Collected before any is installed, as apt does, then re-checked one by one.
        let groups: Vec<Vec<Relation>> = self
            .depends(name)?
            .0
            .into_iter()
            .filter(|g| protected || !self.satisfied(g))
            .collect();
        for group in groups {
            if self.satisfied(&group) {
                if protected {
                    self.protect_sole_solution(&group)?;
                }
                continue;
            }
            let solutions = self.solutions(&group);
            if protected && let [only] = solutions.as_slice() {
                self.protected.insert(only.clone());
            }
            let mut found = false;
            for s in solutions {
                if self.mark_install(&s)? {
                    found = true;
                    break;
                }
            }
            if !found {
                self.fail(name, &group);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A protected package's satisfied dependency with one possible solution protects it.
    fn protect_sole_solution(&mut self, group: &[Relation]) -> Result<(), ResolveError> {
        let solutions = self.solutions(group);
        if let [only] = solutions.as_slice()
            && self.marked.contains(only)
            && self.protected.insert(only.clone())
        {
            let only = only.clone();
            self.install_deps(&only)?;
        }
        Ok(())
    }

    fn fail(&mut self, package: &str, group: &[Relation]) {
        if self.failure.is_none() {
            self.failure = Some(ResolveError::Unsatisfiable {
                package: package.to_owned(),
                dependency: Relations(vec![group.to_vec()]).to_string(),
                arch: self.arch.to_owned(),
            });
        }
    }

    /// apt's `IsInstallOkDependenciesSatisfiableByCandidates`.
    fn installable(&mut self, name: &str) -> Result<bool, ResolveError> {
        for group in self.depends(name)?.0 {
            // Targets are candidates already: one is enough (marked or not).
            let possible = group.iter().any(|rel| !self.targets(rel).is_empty());
            if !possible {
                self.fail(name, &group);
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn satisfied(&self, group: &[Relation]) -> bool {
        group
            .iter()
            .any(|rel| self.targets(rel).iter().any(|t| self.marked.contains(t)))
    }

    /// Candidates that satisfy `rel`, in apt's order of preference.
    fn targets(&self, rel: &Relation) -> Vec<String> {
        let mut out: Vec<&Record> = Vec::new();
        if let Some(rec) = self.index.candidate(&rel.name)
            && satisfies(rel, rec, Some(&rec.version), self.arch)
        {
            out.push(rec);
        }
        for p in self.index.providers(&rel.name) {
            let rec = self
                .index
                .candidate(&p.package)
                .expect("providers are candidates");
            if satisfies(rel, rec, p.version.as_ref(), self.arch)
                && !out.iter().any(|o| o.name == rec.name)
            {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| {
            let key = |r: &Record| {
                (
                    !self.protected.contains(&r.name),
                    r.name != rel.name,
                    !r.essential,
                    !r.important,
                    r.priority,
                )
            };
            key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
        });
        out.into_iter().map(|r| r.name.clone()).collect()
    }

    /// Every alternative's targets, in order, each package once.
    fn solutions(&self, group: &[Relation]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for rel in group {
            for t in self.targets(rel) {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }
}

/// Whether `rec`, offering `version` (its own, or the one it Provides), satisfies `rel`.
fn satisfies(
    rel: &Relation,
    rec: &Record,
    version: Option<&debversion::Version>,
    arch: &str,
) -> bool {
    let arch_ok = match rel.archqual.as_deref() {
        None | Some("native") => true,
        Some("any") => rec.multi_arch == MultiArch::Allowed,
        Some(q) => q == rec.arch || (rec.arch == "all" && q == arch),
    };
    if !arch_ok {
        return false;
    }
    let Some((op, want)) = &rel.version else {
        return true;
    };
    let Some(have) = version else {
        return false; // an unversioned Provides satisfies no versioned dependency
    };
    match op {
        VersionConstraint::LessThan => have < want,
        VersionConstraint::LessThanEqual => have <= want,
        VersionConstraint::Equal => have == want,
        VersionConstraint::GreaterThanEqual => have >= want,
        VersionConstraint::GreaterThan => have > want,
    }
}

/// Refuses a closure where a package Conflicts with or Breaks another chosen one.
fn check_conflicts(index: &Index, arch: &str, chosen: &[&Record]) -> Result<(), ResolveError> {
    let names: BTreeMap<&str, &Record> = chosen.iter().map(|r| (r.name.as_str(), *r)).collect();
    for rec in chosen {
        for (field, text) in [("Conflicts", &rec.conflicts), ("Breaks", &rec.breaks)] {
            for group in relations(&rec.name, field, text)?.0 {
                for rel in group {
                    let mut hits: Vec<&str> = Vec::new();
                    if let Some(other) = names.get(rel.name.as_str())
                        && satisfies(&rel, other, Some(&other.version), arch)
                    {
                        hits.push(&other.name);
                    }
                    for p in index.providers(&rel.name) {
                        if let Some(other) = names.get(p.package.as_str())
                            && satisfies(&rel, other, p.version.as_ref(), arch)
                        {
                            hits.push(&other.name);
                        }
                    }
                    // A package may conflict with what it provides itself (Debian Policy 7.6.2).
                    if let Some(other) = hits.into_iter().find(|o| *o != rec.name) {
                        return Err(ResolveError::Conflict {
                            package: rec.name.clone(),
                            other: other.to_owned(),
                            field,
                            relation: rel.to_string(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::debian::index::IndexBuilder;

    /// An index from short stanzas: `name version [field: value]...` separated by `;`.
    fn index(packages: &[&str]) -> Index {
        let mut text = String::new();
        for (i, p) in packages.iter().enumerate() {
            let mut parts = p.split(';').map(str::trim);
            let head: Vec<&str> = parts.next().unwrap().split_whitespace().collect();
            text.push_str(&format!(
                "Package: {}\nVersion: {}\nArchitecture: amd64\nFilename: pool/{0}.deb\n\
                 Size: 1\nSHA256: {:064x}\n",
                head[0], head[1], i
            ));
            for f in parts {
                text.push_str(f);
                text.push('\n');
            }
            text.push('\n');
        }
        let mut b = IndexBuilder::default();
        b.add(&text, 0).unwrap();
        b.finish().unwrap()
    }

    fn names(index: &Index, want: &[&str]) -> Vec<String> {
        resolve(index, "amd64", want)
            .unwrap()
            .iter()
            .map(|r| format!("{}={}", r.name, r.version_text))
            .collect()
    }

    #[test]
    fn follows_pre_depends_and_depends_with_versions() {
        let idx = index(&[
            "app 1.0; Pre-Depends: libc6 (>= 2.36); Depends: libfoo (>> 1.0), tool",
            "libc6 2.36-9",
            "libfoo 1.2; Depends: libc6",
            "tool 3",
            "unrelated 1",
        ]);
        assert_eq!(
            names(&idx, &["app"]),
            ["app=1.0", "libc6=2.36-9", "libfoo=1.2", "tool=3"]
        );
    }

    #[test]
    fn first_satisfiable_alternative_wins_unless_one_is_already_chosen() {
        let idx = index(&[
            "a 1; Depends: usrmerge | usr-is-merged",
            "b 1; Depends: old (>= 2) | new",
            "usrmerge 37",
            "usr-is-merged 37",
            "old 1",
            "new 1",
        ]);
        assert_eq!(names(&idx, &["a"]), ["a=1", "usrmerge=37"]);
        // `old` 1 does not satisfy `old (>= 2)`: the next alternative is taken.
        assert_eq!(names(&idx, &["b"]), ["b=1", "new=1"]);
        // A requested package satisfies a later alternative before the first is tried.
        assert_eq!(
            names(&idx, &["a", "usr-is-merged"]),
            ["a=1", "usr-is-merged=37"]
        );
    }

    #[test]
    fn virtual_packages_go_to_the_preferred_provider() {
        let idx = index(&[
            "app 1; Depends: awk, mail-transport-agent, libx (>= 2)",
            "mawk 1.3; Priority: required; Provides: awk",
            "gawk 5; Priority: optional; Provides: awk",
            "exim4 4; Priority: standard; Provides: mail-transport-agent",
            "postfix 3; Priority: optional; Essential: yes; Provides: mail-transport-agent",
            // Only a versioned Provides satisfies a versioned dependency.
            "libx-compat 1; Provides: libx",
            "libx-new 1; Provides: libx (= 2.1)",
        ]);
        assert_eq!(
            names(&idx, &["app"]),
            ["app=1", "libx-new=1", "mawk=1.3", "postfix=3"]
        );
    }

    #[test]
    fn uninstallable_solutions_are_passed_over() {
        let idx = index(&[
            "app 1; Depends: first | second",
            "first 1; Depends: missing-lib",
            "second 1",
        ]);
        assert_eq!(names(&idx, &["app"]), ["app=1", "second=1"]);
    }

    #[test]
    fn arch_qualifiers_follow_multi_arch() {
        let idx = index(&[
            "app 1; Depends: python3:any, perl:any | perl-base",
            "python3 3.11; Multi-Arch: allowed",
            "perl 5.36",
            "perl-base 5.36",
        ]);
        // perl is not Multi-Arch: allowed, so `perl:any` is not met by it.
        assert_eq!(
            names(&idx, &["app"]),
            ["app=1", "perl-base=5.36", "python3=3.11"]
        );
    }

    #[test]
    fn missing_and_unsatisfiable_packages_are_named() {
        let idx = index(&["app 1; Depends: libgone (>= 2)", "libgone 1"]);
        let e = resolve(&idx, "arm64", &["nothere"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "package nothere is not in the archive for arm64"
        );
        let e = resolve(&idx, "amd64", &["app"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "app needs libgone (>= 2), which no package in the archive for amd64 satisfies"
        );
    }

    #[test]
    fn conflicts_between_chosen_packages_are_refused() {
        let idx = index(&[
            "a 1; Depends: b; Conflicts: c",
            "b 1; Depends: c (>= 1)",
            "c 1",
            "self 1; Provides: thing; Conflicts: thing",
        ]);
        let e = resolve(&idx, "amd64", &["a"]).unwrap_err();
        assert!(matches!(e, ResolveError::Conflict { .. }), "{e}");
        // Conflicting with what it provides itself is allowed.
        assert_eq!(names(&idx, &["self"]), ["self=1"]);
    }

    #[test]
    fn order_of_the_archive_does_not_change_the_result() {
        let a = index(&["app 1; Depends: x | y, z", "x 1", "y 1", "z 1; Depends: y"]);
        let b = index(&["z 1; Depends: y", "y 1", "x 1", "app 1; Depends: x | y, z"]);
        assert_eq!(names(&a, &["app"]), names(&b, &["app"]));
        assert_eq!(names(&a, &["app"]), ["app=1", "x=1", "y=1", "z=1"]);
    }
}
