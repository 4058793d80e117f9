//! A suite's `Release` fields, read from the text an `InRelease` signature covers (never from
//! the file around it): which suite it is, how long it is valid, and the SHA256 of every
//! index file, the first links of the hash chain InRelease → Packages → .deb.

use std::collections::BTreeMap;
use std::time::SystemTime;

use deb822_fast::borrowed::BorrowedParser;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("its fields cannot be read: {0}")]
    Malformed(String),
    #[error("it is for suite {found:?}, not {expected:?}")]
    WrongSuite { expected: String, found: String },
    #[error("it expired on {until} (Valid-Until)")]
    Expired { until: String },
    #[error("it is dated {date}, in the future")]
    NotYetValid { date: String },
}

/// One index file listed in a `Release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Release {
    pub suite: String,
    pub codename: String,
    date: Option<(String, SystemTime)>,
    valid_until: Option<(String, SystemTime)>,
    /// `Acquire-By-Hash: yes`: index files can be fetched as `…/by-hash/SHA256/<hex>`, which
    /// stays consistent with this Release while the mirror is being updated.
    pub by_hash: bool,
    /// Whether `binary-all/Packages` must be read besides the architecture's own, as apt
    /// decides it: when the Release lists `all` among its Architectures and does not say
    /// `No-Support-for-Architecture-all: Packages` (`Architecture: all` packages listed in
    /// each architecture's Packages file, as Debian's main archive does).
    pub separate_all: bool,
    files: BTreeMap<String, IndexFile>,
}

/// How far a Release's `Date` may be ahead of the local clock (apt's default allows none;
/// a minute absorbs the gap between a mirror's and the host's clocks).
const CLOCK_SLACK: std::time::Duration = std::time::Duration::from_secs(60);

impl Release {
    pub fn parse(text: &str) -> Result<Release, ReleaseError> {
        let bad = |what: String| ReleaseError::Malformed(what);
        let paragraphs = BorrowedParser::new(text)
            .parse_all()
            .map_err(|e| bad(format!("{e:?}")))?;
        let [p] = paragraphs.as_slice() else {
            return Err(bad(format!("{} paragraphs, expected 1", paragraphs.len())));
        };
        let field = |name: &str| p.get_single(name).map(str::trim);
        let time = |name: &str| -> Result<Option<(String, SystemTime)>, ReleaseError> {
            field(name)
                .map(|v| {
                    parse_date(v)
                        .map(|t| (v.to_owned(), t))
                        .ok_or_else(|| bad(format!("{name}: {v:?} is not a date")))
                })
                .transpose()
        };
        let mut files = BTreeMap::new();
        for line in p.get("SHA256").unwrap_or_default() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [hash, size, path] = parts.as_slice() else {
                if parts.is_empty() {
                    continue;
                }
                return Err(bad(format!("SHA256 line {line:?}")));
            };
            let size = size
                .parse()
                .map_err(|_| bad(format!("SHA256 line {line:?}")))?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("SHA256 line {line:?}")));
            }
            files.insert(
                (*path).to_owned(),
                IndexFile {
                    sha256: hash.to_ascii_lowercase(),
                    size,
                },
            );
        }
        if files.is_empty() {
            return Err(bad("it lists no SHA256 of any file".into()));
        }
        Ok(Release {
            suite: field("Suite").unwrap_or_default().to_owned(),
            codename: field("Codename").unwrap_or_default().to_owned(),
            date: time("Date")?,
            valid_until: time("Valid-Until")?,
            by_hash: field("Acquire-By-Hash") == Some("yes"),
            separate_all: field("Architectures")
                .is_some_and(|a| a.split_whitespace().any(|a| a == "all"))
                && field("No-Support-for-Architecture-all") != Some("Packages"),
            files,
        })
    }

    /// Refuses a Release of another suite (a validly signed file replayed in place of the
    /// one asked for), an expired one (a frozen mirror), or one from the future.
    pub fn check(&self, suite: &str, now: SystemTime) -> Result<(), ReleaseError> {
        if self.codename != suite && self.suite != suite {
            return Err(ReleaseError::WrongSuite {
                expected: suite.to_owned(),
                found: if self.codename.is_empty() {
                    self.suite.clone()
                } else {
                    self.codename.clone()
                },
            });
        }
        if let Some((text, until)) = &self.valid_until
            && *until < now
        {
            return Err(ReleaseError::Expired {
                until: text.clone(),
            });
        }
        if let Some((text, date)) = &self.date
            && *date > now + CLOCK_SLACK
        {
            return Err(ReleaseError::NotYetValid { date: text.clone() });
        }
        Ok(())
    }

    /// The listed SHA256 and size of an index (`main/binary-amd64/Packages.xz`).
    pub fn file(&self, path: &str) -> Option<&IndexFile> {
        self.files.get(path)
    }
}

/// Release dates: RFC 2822 with Debian's `UTC` zone name (`Sat, 11 Jul 2026 10:16:37 UTC`).
fn parse_date(v: &str) -> Option<SystemTime> {
    let v = v
        .strip_suffix(" UTC")
        .map_or(v.to_owned(), |d| format!("{d} +0000"));
    let t = chrono::DateTime::parse_from_rfc2822(&v).ok()?;
    let secs = u64::try_from(t.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TEXT: &str = "\
Origin: Debian
Label: Debian-Security
Suite: oldstable-security
Codename: bookworm-security
Date: Mon, 30 Nov 2026 00:22:33 UTC
Valid-Until: Mon, 07 Dec 2026 00:22:33 UTC
Acquire-By-Hash: yes
Architectures: amd64 arm64
Components: updates/main
SHA256:
 c49617c0b30619d7403f5e66de60aeeb47c6488262e4327418830d0d6e83500a   383968 main/binary-amd64/Packages.xz
 f9bb50b06e18c3a5e7e3fdece5d6d351ff9a39acac205ebfa7948b56bc1e91a4  2563447 main/binary-amd64/Packages
";

    fn at(s: &str) -> SystemTime {
        parse_date(s).unwrap()
    }

    #[test]
    fn reads_the_fields_and_hashes() {
        let r = Release::parse(TEXT).unwrap();
        assert_eq!(r.codename, "bookworm-security");
        assert!(r.by_hash);
        // `all` is not among the security archive's Architectures.
        assert!(!r.separate_all);
        let main = TEXT.replace("Architectures: amd64", "Architectures: all amd64");
        assert!(Release::parse(&main).unwrap().separate_all);
        let main = main.replace(
            "Acquire-By-Hash",
            "No-Support-for-Architecture-all: Packages\nX",
        );
        assert!(!Release::parse(&main).unwrap().separate_all);
        assert_eq!(
            r.file("main/binary-amd64/Packages.xz"),
            Some(&IndexFile {
                sha256: "c49617c0b30619d7403f5e66de60aeeb47c6488262e4327418830d0d6e83500a".into(),
                size: 383_968
            })
        );
        assert_eq!(r.file("main/binary-arm64/Packages.xz"), None);
        assert_eq!(
            at("Thu, 01 Jan 1970 00:01:00 UTC"),
            SystemTime::UNIX_EPOCH + Duration::from_secs(60)
        );
    }

    #[test]
    fn refuses_other_suites_expired_and_future_files() {
        let r = Release::parse(TEXT).unwrap();
        let now = at("Tue, 01 Dec 2026 12:00:00 UTC");
        r.check("bookworm-security", now).unwrap();
        r.check("oldstable-security", now).unwrap();
        assert!(matches!(
            r.check("bookworm", now),
            Err(ReleaseError::WrongSuite { .. })
        ));
        let e = r
            .check("bookworm-security", at("Tue, 08 Dec 2026 00:00:00 UTC"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "it expired on Mon, 07 Dec 2026 00:22:33 UTC (Valid-Until)"
        );
        assert!(matches!(
            r.check("bookworm-security", at("Sun, 29 Nov 2026 00:00:00 UTC")),
            Err(ReleaseError::NotYetValid { .. })
        ));
    }

    #[test]
    fn malformed_hash_lines_are_refused() {
        let text = TEXT.replace("  383968 ", " many ");
        assert!(matches!(
            Release::parse(&text),
            Err(ReleaseError::Malformed(_))
        ));
        assert!(Release::parse("Suite: x\n").is_err(), "no hashes at all");
    }
}
