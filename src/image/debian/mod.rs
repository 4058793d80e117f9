//! The Debian archive, read without apt or dpkg: what `devbox image build` needs to turn a
//! package list into verified `.deb` files and unpacked trees, on any host.
//!
//! The hash chain, every link checked before anything is used or cached under a final name:
//! `dists/<suite>/InRelease` — its OpenPGP signature verified against Debian's archive keys
//! shipped in devbox ([`keys`]), its suite and dates checked ([`release`]) — lists the SHA256
//! of each `Packages` index; each index lists the SHA256 of each `.deb`.
//!
//! Files:
//! - [`keys`]: the trusted keys and the signature check;
//! - [`release`]: the fields of a verified Release;
//! - [`index`]: `Packages` files reduced to apt's candidates and their Provides;
//! - [`resolve`]: the dependency closure, as `apt-get install` chooses it;
//! - [`fetch`]: parallel, resumable, retried HTTP downloads of known-hash files;
//! - [`deb`]: `.deb` unpacking.
//!
//! Cache layout (under the image cache): `lists/` holds each verified `InRelease` and the
//! decompressed `Packages` files it vouches for (re-verified on every use; refreshed after a
//! day, or with `--force`), `debs/<sha256>.deb` the downloaded packages (content-addressed),
//! `debs/partial/` interrupted downloads, resumed by the next build.
//!
//! Runs on the calling thread; downloads run on the [`fetch::Fetcher`]'s own runtime.

pub mod deb;
pub mod fetch;
pub mod index;
pub mod keys;
pub mod release;
pub mod resolve;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use reqwest::Url;
use sha2::{Digest, Sha256};

use fetch::{Download, FetchError, Fetcher};
use index::{Index, IndexBuilder, IndexError, Record};
use keys::{KeyError, Keyring, PinnedKey, SignatureError};
use release::{Release, ReleaseError};
use resolve::ResolveError;

/// The archive `--mirror` defaults to.
pub const DEFAULT_MIRROR: &str = "https://deb.debian.org/debian";
/// The security archive `--security-mirror` defaults to.
pub const DEFAULT_SECURITY_MIRROR: &str = "https://deb.debian.org/debian-security";

/// Package lists older than this are fetched again (as the apt-based build did).
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// An InRelease is a few hundred KiB; refuse to buffer anything absurd.
const MAX_INRELEASE: u64 = 16 << 20;

/// The Debian release a guest is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Suite {
    /// Debian 12: Docker 20.10, containerd 1.6, kernel 6.1.
    Bookworm,
    /// Debian 13: Docker 26.1, containerd 1.7, kernel 6.12.
    #[default]
    Trixie,
}

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
        }
    }

    /// Debian's version number of the release (`VERSION_ID` in its os-release).
    pub fn version(self) -> &'static str {
        match self {
            Suite::Bookworm => "12",
            Suite::Trixie => "13",
        }
    }

    /// The keys that sign this release's suites.
    pub fn keys(self) -> &'static [PinnedKey] {
        match self {
            Suite::Bookworm => keys::BOOKWORM,
            Suite::Trixie => keys::TRIXIE,
        }
    }

    /// What a Debian system of this release has in its sources (and what the apt-based build
    /// read from the host's): the release and its `-updates` from the archive, `-security`
    /// from the security archive; component `main`.
    pub fn sources(self, mirror: &Url, security: &Url) -> Vec<Source> {
        let name = self.name();
        vec![
            Source::new(mirror, name),
            Source::new(mirror, &format!("{name}-updates")),
            Source::new(security, &format!("{name}-security")),
        ]
    }
}

/// One suite of one archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Base URL, ending in `/`.
    pub mirror: Url,
    pub suite: String,
    pub component: String,
}

impl Source {
    pub fn new(mirror: &Url, suite: &str) -> Source {
        Source {
            mirror: mirror.clone(),
            suite: suite.to_owned(),
            component: "main".into(),
        }
    }

    fn dists(&self) -> String {
        format!("dists/{}/", self.suite)
    }

    /// File-name prefix in `lists/`, like apt's: `deb.debian.org_debian_dists_bookworm`.
    fn list_prefix(&self) -> String {
        let mut s = format!(
            "{}{}{}",
            self.mirror.host_str().unwrap_or("local"),
            self.mirror
                .port()
                .map(|p| format!(":{p}"))
                .unwrap_or_default(),
            self.mirror.path()
        );
        s.push_str(&self.dists());
        s.trim_end_matches('/').replace('/', "_")
    }
}

/// Parses a `--mirror` URL: http or https, normalised to end in `/`.
pub fn mirror_url(text: &str) -> Result<Url, DebianError> {
    let bad = |reason: &str| DebianError::BadMirror {
        url: text.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http:// and https:// mirrors are supported"));
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "it must be the archive's base URL, with a host and no query",
        ));
    }
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("invalid mirror URL {url:?}: {reason}")]
    BadMirror { url: String, reason: String },
    #[error("{url} is refused: {source}")]
    Signature {
        url: String,
        #[source]
        source: SignatureError,
    },
    #[error("{url} is refused: {source}")]
    Release {
        url: String,
        #[source]
        source: ReleaseError,
    },
    #[error("{url} lists no {path}: the suite has no packages for {arch}")]
    NotInRelease {
        url: String,
        path: String,
        arch: String,
    },
    #[error(
        "{file} from mirror {mirror} unpacks to sha256 {actual}, the signed InRelease says {expected}"
    )]
    IndexHash {
        file: String,
        mirror: String,
        expected: String,
        actual: String,
    },
    #[error("{file} from mirror {mirror} cannot be read")]
    Index {
        file: String,
        mirror: String,
        #[source]
        source: IndexError,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Deb(#[from] deb::DebError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl DebianError {
    pub fn hint(&self) -> Option<String> {
        let other_mirror = "the mirror serves files that do not match Debian's signatures; \
                            try another one with `--mirror URL` (and `--security-mirror URL`)";
        match self {
            DebianError::BadMirror { .. } => Some(format!(
                "give the archive's base URL, e.g. `--mirror {DEFAULT_MIRROR}`"
            )),
            DebianError::Release {
                source: ReleaseError::NotYetValid { .. },
                ..
            } => Some("check the host's clock".into()),
            DebianError::Release {
                source: ReleaseError::Expired { .. },
                ..
            } => Some("the mirror is out of date; try another one with `--mirror URL`".into()),
            DebianError::Signature { .. }
            | DebianError::Release { .. }
            | DebianError::IndexHash { .. }
            | DebianError::Index { .. }
            | DebianError::Fetch(
                FetchError::Hash { .. } | FetchError::Short { .. } | FetchError::TooLarge { .. },
            ) => Some(other_mirror.into()),
            DebianError::Fetch(FetchError::Unreachable { .. } | FetchError::Status { .. }) => Some(
                "check the network and the mirror URL (`--mirror`, `--security-mirror`)".into(),
            ),
            DebianError::Fetch(FetchError::Broken { .. }) => {
                Some("run the same command again: the download resumes where it stopped".into())
            }
            DebianError::Deb(deb::DebError::Damaged { .. }) => {
                Some("run the same command again: the package is downloaded anew".into())
            }
            DebianError::NotInRelease { .. } | DebianError::Resolve(_) => Some(
                "the mirror must carry the suite's `main` component for this architecture".into(),
            ),
            _ => None,
        }
    }
}

/// A resolved package and where its `.deb` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub sha256: String,
    pub size: u64,
    pub mirror: Url,
    /// Path of the `.deb` below the mirror (`pool/main/…`).
    pub filename: String,
}

impl Package {
    fn of(r: &Record, sources: &[Source]) -> Package {
        Package {
            name: r.name.clone(),
            version: r.version_text.clone(),
            arch: r.arch.clone(),
            sha256: r.sha256.clone(),
            size: r.size,
            mirror: sources[r.source].mirror.clone(),
            filename: r.filename.clone(),
        }
    }

    /// Where the package is cached: `<debs>/<sha256>.deb`.
    pub fn cached(&self, debs: &Path) -> PathBuf {
        debs.join(format!("{}.deb", self.sha256))
    }
}

/// What [`Archive::open`] reads and where it keeps it.
pub struct ArchiveOptions<'a> {
    pub sources: &'a [Source],
    pub keyring: &'a Keyring,
    /// Debian architecture (`amd64`, `arm64`).
    pub arch: &'a str,
    /// `<cache>/lists`.
    pub lists: &'a Path,
    /// Fetch the InRelease files even if the cached ones are recent.
    pub refresh: bool,
    pub now: SystemTime,
}

/// The verified package index of a set of sources for one architecture.
pub struct Archive {
    sources: Vec<Source>,
    arch: String,
    index: Index,
}

impl Archive {
    /// Fetches (or reuses from `lists/`) and verifies each source's InRelease and Packages.
    pub fn open(fetcher: &Fetcher, o: &ArchiveOptions) -> Result<Archive, DebianError> {
        fs_err::create_dir_all(o.lists)?;
        let mut builder = IndexBuilder::default();
        for (i, source) in o.sources.iter().enumerate() {
            let release = in_release(fetcher, o, source)?;
            let mut archs = vec![o.arch];
            if release.separate_all {
                archs.push("all");
            }
            for arch in archs {
                let text = packages(fetcher, o, source, &release, arch)?;
                builder
                    .add(&text, i)
                    .map_err(|source_err| DebianError::Index {
                        file: format!(
                            "{}{}/binary-{arch}/Packages",
                            source.dists(),
                            source.component
                        ),
                        mirror: source.mirror.to_string(),
                        source: source_err,
                    })?;
            }
        }
        let index = builder.finish().map_err(|e| DebianError::Index {
            file: "Provides".into(),
            mirror: o
                .sources
                .first()
                .map(|s| s.mirror.to_string())
                .unwrap_or_default(),
            source: e,
        })?;
        Ok(Archive {
            sources: o.sources.to_vec(),
            arch: o.arch.to_owned(),
            index,
        })
    }

    /// The dependency closure of `requested`, sorted by name.
    pub fn resolve(&self, requested: &[&str]) -> Result<Vec<Package>, DebianError> {
        Ok(resolve::resolve(&self.index, &self.arch, requested)?
            .into_iter()
            .map(|r| Package::of(r, &self.sources))
            .collect())
    }
}

/// Downloads the packages missing from `debs/` (verified, content-addressed).
pub fn download(fetcher: &Fetcher, packages: &[&Package], debs: &Path) -> Result<(), DebianError> {
    let items: Vec<Download> = packages
        .iter()
        .map(|p| Download {
            mirror: p.mirror.clone(),
            path: p.filename.clone(),
            sha256: p.sha256.clone(),
            size: p.size,
            dest: p.cached(debs),
        })
        .collect();
    Ok(fetcher.download(&items, &debs.join("partial"))?)
}

/// The verified Release of `source`, from `lists/` when recent, else from the mirror.
fn in_release(
    fetcher: &Fetcher,
    o: &ArchiveOptions,
    source: &Source,
) -> Result<Release, DebianError> {
    let path = format!("{}InRelease", source.dists());
    let url = format!("{}{path}", source.mirror);
    let cached = o.lists.join(format!("{}_InRelease", source.list_prefix()));
    let fresh = !o.refresh
        && fs_err::metadata(&cached)
            .and_then(|m| m.modified())
            .is_ok_and(|t| o.now.duration_since(t).unwrap_or_default() < LISTS_MAX_AGE);
    // A cached copy that no longer passes (its Valid-Until has passed) is fetched anew.
    if fresh && let Ok(release) = checked(&fs_err::read_to_string(&cached)?, &url, source, o) {
        return Ok(release);
    }
    let body = fetcher.get(&source.mirror, &path, MAX_INRELEASE)?;
    let text = String::from_utf8(body).map_err(|_| DebianError::Signature {
        url: url.clone(),
        source: SignatureError::Malformed("not UTF-8 text".into()),
    })?;
    let release = checked(&text, &url, source, o)?;
    write_atomic(&cached, text.as_bytes())?;
    Ok(release)
}

/// An InRelease's signatures verified, then its fields read and checked.
fn checked(
    text: &str,
    url: &str,
    source: &Source,
    o: &ArchiveOptions,
) -> Result<Release, DebianError> {
    let signed = o
        .keyring
        .verify(text, o.now)
        .map_err(|e| DebianError::Signature {
            url: url.to_owned(),
            source: e,
        })?;
    let release = Release::parse(&signed).map_err(|e| DebianError::Release {
        url: url.to_owned(),
        source: e,
    })?;
    release
        .check(&source.suite, o.now)
        .map_err(|e| DebianError::Release {
            url: url.to_owned(),
            source: e,
        })?;
    Ok(release)
}

/// The text of `source`'s Packages for `arch`, checked against the Release's SHA256 of the
/// uncompressed file: from `lists/` when it matches, else downloaded (xz, gz or plain, by
/// hash when the archive offers it), decompressed, checked and kept.
fn packages(
    fetcher: &Fetcher,
    o: &ArchiveOptions,
    source: &Source,
    release: &Release,
    arch: &str,
) -> Result<String, DebianError> {
    let dir = format!("{}/binary-{arch}", source.component);
    let plain_path = format!("{dir}/Packages");
    let not_listed = || DebianError::NotInRelease {
        url: format!("{}{}InRelease", source.mirror, source.dists()),
        path: plain_path.clone(),
        arch: arch.to_owned(),
    };
    let plain = release.file(&plain_path).ok_or_else(not_listed)?;
    let cached = o.lists.join(format!(
        "{}_{}_binary-{arch}_Packages",
        source.list_prefix(),
        source.component
    ));
    if let Ok(bytes) = fs_err::read(&cached)
        && bytes.len() as u64 == plain.size
        && hex::encode(Sha256::digest(&bytes)) == plain.sha256
    {
        return String::from_utf8(bytes).map_err(|_| not_utf8(source, &plain_path));
    }
    let (ext, packed) = ["xz", "gz", ""]
        .iter()
        .find_map(|ext| {
            let p = if ext.is_empty() {
                plain_path.clone()
            } else {
                format!("{plain_path}.{ext}")
            };
            release.file(&p).map(|f| (*ext, f.clone()))
        })
        .ok_or_else(not_listed)?;
    let partial = o.lists.join("partial");
    let download = |path: String| Download {
        mirror: source.mirror.clone(),
        path,
        sha256: packed.sha256.clone(),
        size: packed.size,
        dest: partial.join(format!("{}.{ext}", packed.sha256)),
    };
    let canonical = format!(
        "{}{plain_path}{}{ext}",
        source.dists(),
        if ext.is_empty() { "" } else { "." }
    );
    let by_hash = format!("{}{dir}/by-hash/SHA256/{}", source.dists(), packed.sha256);
    let first = if release.by_hash {
        &by_hash
    } else {
        &canonical
    };
    let fetched = fetcher.download(&[download(first.clone())], &partial);
    match fetched {
        // A mirror that announces by-hash but has not synced that file yet.
        Err(FetchError::Status { status: 404, .. }) if release.by_hash => {
            fetcher.download(&[download(canonical.clone())], &partial)?
        }
        r => r?,
    }
    let packed_file = download(String::new()).dest;
    let text = unpack_index(&packed_file, ext, plain.size);
    let _ = fs_err::remove_file(&packed_file);
    let text = text.map_err(|e| DebianError::Index {
        file: canonical.clone(),
        mirror: source.mirror.to_string(),
        source: IndexError {
            what: e.to_string(),
        },
    })?;
    let actual = hex::encode(Sha256::digest(text.as_bytes()));
    if text.len() as u64 != plain.size || actual != plain.sha256 {
        return Err(DebianError::IndexHash {
            file: canonical,
            mirror: source.mirror.to_string(),
            expected: plain.sha256.clone(),
            actual,
        });
    }
    write_atomic(&cached, text.as_bytes())?;
    Ok(text)
}

/// Decompresses an index, reading at most one byte more than `size` (so a decompression
/// bomb stops there and fails the size check).
fn unpack_index(path: &Path, ext: &str, size: u64) -> std::io::Result<String> {
    let file = std::io::BufReader::new(fs_err::File::open(path)?);
    let reader: Box<dyn Read> = match ext {
        "xz" => Box::new(liblzma::read::XzDecoder::new(file)),
        "gz" => Box::new(flate2::read::GzDecoder::new(file)),
        _ => Box::new(file),
    };
    let mut text = String::new();
    reader.take(size + 1).read_to_string(&mut text)?;
    Ok(text)
}

fn not_utf8(source: &Source, path: &str) -> DebianError {
    DebianError::Index {
        file: format!("{}{path}", source.dists()),
        mirror: source.mirror.to_string(),
        source: IndexError {
            what: "not UTF-8 text".into(),
        },
    }
}

/// Writes a file under a temporary name in the same directory, then renames it.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a file in a directory");
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    std::io::Write::write_all(&mut tmp, data)?;
    tmp.persist(path).map_err(|e| {
        std::io::Error::new(e.error.kind(), format!("{}: {}", path.display(), e.error))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_version_order() {
        // Known pairs: dpkg's algorithm (deb-version(7)), as `dpkg --compare-versions` says.
        let lt = [
            ("1.0", "1.1"),
            ("1.0~rc1", "1.0"),
            ("1.0~~", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0+b1"),
            ("1.0", "1.0-0.1"),
            ("2.36-9+deb12u13", "2.36-9+deb12u14"),
            ("6.1.0-9", "6.1.0-10"),
            ("1:0.1", "2:0.0"),
            ("9.9", "1:0.1"),
            ("1.0a", "1.0b"),
            ("1.0", "1.0a"),
            ("1.0-1", "1.0-1.1"),
            ("20.10.24+dfsg1-1+deb12u1", "20.10.24+dfsg1-1+deb12u1+b6"),
            ("1.6.20~ds1-1+deb12u1", "1.6.20~ds1-1+deb12u3"),
            ("252.39-1~deb12u1", "252.39-1"),
        ];
        for (a, b) in lt {
            let (va, vb): (debversion::Version, debversion::Version) =
                (a.parse().unwrap(), b.parse().unwrap());
            assert!(va < vb, "{a} < {b}");
            assert!(vb > va, "{b} > {a}");
        }
        let eq = [("1.0", "1.0-0"), ("0:1.0", "1.0"), ("1.01", "1.1")];
        for (a, b) in eq {
            let (va, vb): (debversion::Version, debversion::Version) =
                (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(va, vb, "{a} = {b}");
        }
    }

    #[test]
    fn mirror_urls_are_normalised_and_checked() {
        assert_eq!(
            mirror_url("https://deb.debian.org/debian")
                .unwrap()
                .as_str(),
            "https://deb.debian.org/debian/"
        );
        assert_eq!(
            mirror_url("http://127.0.0.1:8080/").unwrap().as_str(),
            "http://127.0.0.1:8080/"
        );
        for bad in [
            "ftp://x/debian",
            "deb.debian.org/debian",
            "https://x/debian?y=1",
        ] {
            let e = mirror_url(bad).unwrap_err();
            assert!(e.hint().unwrap().contains("--mirror"), "{bad}");
        }
    }

    #[test]
    fn the_suite_reads_what_a_debian_system_reads() {
        let m = mirror_url(DEFAULT_MIRROR).unwrap();
        let s = mirror_url(DEFAULT_SECURITY_MIRROR).unwrap();
        let sources = Suite::Bookworm.sources(&m, &s);
        let suites: Vec<&str> = sources.iter().map(|s| s.suite.as_str()).collect();
        assert_eq!(
            suites,
            ["bookworm", "bookworm-updates", "bookworm-security"]
        );
        let trixie: Vec<String> = Suite::Trixie
            .sources(&m, &s)
            .into_iter()
            .map(|s| format!("{}{}", s.mirror, s.suite))
            .collect();
        assert_eq!(
            trixie,
            [
                "https://deb.debian.org/debian/trixie",
                "https://deb.debian.org/debian/trixie-updates",
                "https://deb.debian.org/debian-security/trixie-security"
            ]
        );
        assert_eq!(Suite::default(), Suite::Trixie);
        assert_eq!(
            sources[2].mirror.as_str(),
            "https://deb.debian.org/debian-security/"
        );
        assert_eq!(
            sources[0].list_prefix(),
            "deb.debian.org_debian_dists_bookworm"
        );
        let local = Source::new(&mirror_url("http://127.0.0.1:8080/").unwrap(), "test");
        assert_eq!(local.list_prefix(), "127.0.0.1:8080_dists_test");
    }
}
