//! `devbox image pull URL`: downloads a built guest image published as a plain directory
//! (`manifest.json`, `vmlinuz`, `initrd.img`) behind any static HTTP(S) server.
//!
//! The manifest is fetched first (and checked against a pinned sha256 when the user gives
//! one), validated, then each payload file is streamed to disk relative to the manifest's URL
//! while its sha256 is computed. Everything lands in `<cache>/images/.partial-<random>/`,
//! which is renamed to `<cache>/images/<version>/` only once every file matches the manifest;
//! on any error the partial directory is removed (it is a [`tempfile::TempDir`], so even an
//! unwinding panic cleans it up). Runs on the calling thread; owns no background work.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Url;
use reqwest::blocking::{Client, Response};
use sha2::{Digest, Sha256};

use super::{INITRD, Image, ImageError, KERNEL, MANIFEST, Manifest, ROOT_IMAGE, images_dir};

/// How long to wait for a TCP/TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one read (response head or body chunk) may stall. reqwest's blocking client
/// applies this per read, not to the whole transfer, so a slow but moving download of a large
/// initrd is not cut off.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A manifest is a few hundred bytes; refuse to buffer anything absurd.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("invalid image URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("download of {url} broke off")]
    Transfer {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {url} has sha256 {actual}, expected {expected}")]
    ManifestChecksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("manifest {url} is not a valid image manifest: {what}")]
    BadManifest { url: String, what: String },
    #[error("{file} from {url} has sha256 {actual}, the manifest says {expected}")]
    Checksum {
        file: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Local file system errors; `fs-err` puts the path in the message.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl PullError {
    pub fn hint(&self) -> Option<String> {
        match self {
            PullError::BadUrl { .. } => Some(
                "give the http:// or https:// URL of an image's manifest.json, e.g. \
                 `devbox image pull https://example.org/images/0123456789abcdef/manifest.json`"
                    .into(),
            ),
            PullError::Connect { .. } => {
                Some("check the URL, your network, and that the server is running".into())
            }
            PullError::Status { status: 404, .. } => {
                Some("check the URL: it must point at an image's manifest.json".into())
            }
            PullError::Status { .. } => None,
            PullError::Transfer { .. } => {
                Some("run the same command again; nothing was kept from this attempt".into())
            }
            PullError::ManifestChecksum { .. } => Some(
                "the server published a different manifest than the one pinned; check the URL \
                 and the expected sha256"
                    .into(),
            ),
            PullError::BadManifest { .. } => Some(
                "ask whoever published the image to rebuild it with `devbox image build`".into(),
            ),
            PullError::Checksum { .. } => Some(
                "the server's copy is damaged or changed during the download; try again, and \
                 tell whoever publishes the image if it persists"
                    .into(),
            ),
            PullError::Image(e) => e.hint(),
            PullError::Io(_) => None,
        }
    }
}

/// Downloads the image whose `manifest.json` is at `url` into `cache` and returns it.
///
/// When `expected_manifest_sha256` is given, the manifest's bytes must hash to it, which pins
/// the whole image (the manifest carries the payload hashes). If an image of the same
/// version is already cached, has the same payload hashes and verifies, it is returned
/// without downloading the payload. A progress bar is drawn on stderr only when `progress`
/// is set and stderr is a terminal.
pub fn pull(
    cache: &Path,
    url: &str,
    expected_manifest_sha256: Option<&str>,
    progress: bool,
) -> Result<Image, PullError> {
    let manifest_url = parse_url(url)?;
    let client = Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(STALL_TIMEOUT)
        .user_agent(concat!("devbox/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| PullError::Connect {
            url: manifest_url.to_string(),
            source,
        })?;

    let manifest_bytes = fetch_manifest(&client, &manifest_url)?;
    let actual = hex::encode(Sha256::digest(&manifest_bytes));
    if let Some(expected) = expected_manifest_sha256
        && !expected.trim().eq_ignore_ascii_case(&actual)
    {
        return Err(PullError::ManifestChecksum {
            url: manifest_url.to_string(),
            expected: expected.trim().to_owned(),
            actual,
        });
    }
    let manifest = parse_manifest(&manifest_bytes).map_err(|what| PullError::BadManifest {
        url: manifest_url.to_string(),
        what,
    })?;

    let images = images_dir(cache);
    let final_dir = images.join(&manifest.version);
    let existing = installed(&final_dir, &manifest);
    if let Some(image) = existing.usable {
        return Ok(image);
    }

    fs_err::create_dir_all(&images)?;
    let partial = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(&images)?;
    for (name, expected) in &manifest.files {
        let file_url = manifest_url
            .join(name)
            .map_err(|e| PullError::BadManifest {
                url: manifest_url.to_string(),
                what: format!("file name {name:?} does not form a URL: {e}"),
            })?;
        let dest = partial.path().join(name);
        let actual = download(&client, &file_url, &dest, name, progress)?;
        if &actual != expected {
            return Err(PullError::Checksum {
                file: name.clone(),
                url: file_url.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    // The manifest goes in last and byte for byte, so its sha256 stays the one that was pinned.
    write_synced(&partial.path().join(MANIFEST), &manifest_bytes)?;
    let image = Image::open(partial.path())?;
    image.verify()?;

    install(partial, &final_dir, existing.stale)?;
    Ok(Image::open(&final_dir)?)
}

/// Accepts the manifest's URL, or the image directory's URL ending in `/`.
fn parse_url(url: &str) -> Result<Url, PullError> {
    let bad = |reason: String| PullError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let mut parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme {:?} is not http or https",
            parsed.scheme()
        )));
    }
    if parsed.path().ends_with('/') {
        parsed = parsed.join(MANIFEST).map_err(|e| bad(e.to_string()))?;
    }
    Ok(parsed)
}

fn get(client: &Client, url: &Url) -> Result<Response, PullError> {
    let response = client
        .get(url.clone())
        .send()
        .map_err(|source| PullError::Connect {
            url: url.to_string(),
            source,
        })?;
    if !response.status().is_success() {
        return Err(PullError::Status {
            url: url.to_string(),
            status: response.status().as_u16(),
        });
    }
    Ok(response)
}

fn fetch_manifest(client: &Client, url: &Url) -> Result<Vec<u8>, PullError> {
    let response = get(client, url)?;
    let mut bytes = Vec::new();
    response
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| PullError::Transfer {
            url: url.to_string(),
            source,
        })?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(PullError::BadManifest {
            url: url.to_string(),
            what: format!("larger than {MAX_MANIFEST_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

/// Parses and validates a manifest. The file names become paths under the cache and URL
/// segments, so only the known names are allowed: no `..`, no `/`, no extras. `root.img` is
/// optional (images of the earlier layout have none).
fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if !is_lower_hex(&manifest.version, 16) {
        return Err(format!(
            "version {:?} is not 16 lowercase hex digits",
            manifest.version
        ));
    }
    for name in manifest.files.keys() {
        if name != KERNEL && name != INITRD && name != ROOT_IMAGE {
            return Err(format!(
                "unexpected file {name:?} (only {KERNEL}, {INITRD} and {ROOT_IMAGE} are allowed)"
            ));
        }
    }
    let optional = manifest
        .files
        .contains_key(ROOT_IMAGE)
        .then_some(ROOT_IMAGE);
    for name in [KERNEL, INITRD].into_iter().chain(optional) {
        match manifest.files.get(name) {
            None => return Err(format!("{name} is not listed")),
            Some(hash) if !is_lower_hex(hash, 64) => {
                return Err(format!(
                    "sha256 of {name} {hash:?} is not 64 lowercase hex digits"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(manifest)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What is already at `<cache>/images/<version>`.
struct Existing {
    /// Complete, same payload hashes as the pulled manifest, and verified.
    usable: Option<Image>,
    /// Present but not usable: to be replaced once the download is complete.
    stale: bool,
}

fn installed(dir: &Path, manifest: &Manifest) -> Existing {
    if fs_err::symlink_metadata(dir).is_err() {
        return Existing {
            usable: None,
            stale: false,
        };
    }
    let usable = Image::open(dir)
        .ok()
        .filter(|image| image.manifest.files == manifest.files && image.verify().is_ok());
    let stale = usable.is_none();
    Existing { usable, stale }
}

/// Streams `url` into `dest`, returning the sha256 of what was received.
fn download(
    client: &Client,
    url: &Url,
    dest: &Path,
    name: &str,
    progress: bool,
) -> Result<String, PullError> {
    let mut response = get(client, url)?;
    let total = response.content_length();
    let bar = progress_bar(progress, total, name);
    let transfer = |source| PullError::Transfer {
        url: url.to_string(),
        source,
    };

    let mut file = fs_err::File::create(dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut received: u64 = 0;
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(transfer(e));
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        received += n as u64;
        bar.set_position(received);
    }
    // hyper already rejects a body shorter than its Content-Length; this keeps the promise
    // even if a lenient decoder ever lets one through.
    if let Some(total) = total
        && received != total
    {
        bar.abandon();
        return Err(transfer(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("received {received} of {total} bytes"),
        )));
    }
    file.sync_all()?;
    bar.finish();
    Ok(hex::encode(hasher.finalize()))
}

fn progress_bar(progress: bool, total: Option<u64>, name: &str) -> ProgressBar {
    if !progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template(
                "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid progress template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg:12} {spinner} {bytes} {bytes_per_sec}")
                .expect("valid progress template"),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.with_message(name.to_owned())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    let mut file = fs_err::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Renames the verified partial directory into place. A stale image of the same version is
/// first moved aside under a dot-name (invisible to `list`/`find`) and then removed, so the
/// version name never points at a half-state. If another pull installed the same version in
/// the meantime, its copy wins when it verifies.
fn install(partial: tempfile::TempDir, final_dir: &Path, stale: bool) -> Result<(), PullError> {
    let images = final_dir.parent().expect("image dir has a parent");
    fsync_dir(partial.path())?;
    let mut aside: Option<PathBuf> = None;
    if stale {
        let name = final_dir.file_name().expect("image dir has a name");
        let tomb = images.join(format!(
            ".stale-{}-{}",
            name.to_string_lossy(),
            partial
                .path()
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        fs_err::rename(final_dir, &tomb)?;
        aside = Some(tomb);
    }
    let staged = partial.keep();
    let renamed = fs_err::rename(&staged, final_dir);
    if let Some(tomb) = aside {
        let _ = fs_err::remove_dir_all(tomb);
    }
    if let Err(e) = renamed {
        let _ = fs_err::remove_dir_all(&staged);
        let raced = Image::open(final_dir).and_then(|i| i.verify());
        if raced.is_err() {
            return Err(e.into());
        }
    }
    fsync_dir(images)?;
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<(), std::io::Error> {
    fs_err::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_json(version: &str, files: &[(&str, &str)]) -> Vec<u8> {
        let files: serde_json::Map<String, serde_json::Value> = files
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        serde_json::json!({
            "version": version, "arch": "x86_64", "kernel_version": "6.1.0-1-cloud-amd64",
            "created": "2025-01-01T00:00:00Z", "packages": {}, "files": files,
        })
        .to_string()
        .into_bytes()
    }

    const H: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn accepts_a_well_formed_manifest() {
        let m = parse_manifest(&manifest_json(
            "0123456789abcdef",
            &[(KERNEL, H), (INITRD, H)],
        ))
        .unwrap();
        assert_eq!(m.version, "0123456789abcdef");
        // The current layout carries the root image too.
        let m = parse_manifest(&manifest_json(
            "0123456789abcdef",
            &[(KERNEL, H), (INITRD, H), (ROOT_IMAGE, H)],
        ))
        .unwrap();
        assert!(m.files.contains_key(ROOT_IMAGE));
        let err = parse_manifest(&manifest_json(
            "0123456789abcdef",
            &[(KERNEL, H), (INITRD, H), (ROOT_IMAGE, "abc")],
        ))
        .unwrap_err();
        assert!(err.contains("sha256 of root.img"), "{err}");
    }

    #[test]
    fn rejects_versions_that_could_escape_the_cache() {
        for v in [
            "../../etc/passw",
            "0123456789ABCDEF",
            "0123456789abcde",
            ".partial-abcdef0",
        ] {
            let err = parse_manifest(&manifest_json(v, &[(KERNEL, H), (INITRD, H)])).unwrap_err();
            assert!(err.contains("version"), "{v}: {err}");
        }
    }

    #[test]
    fn rejects_unknown_or_traversing_file_names() {
        for name in ["../vmlinuz", "/etc/shadow", "vmlinuz/..", "extra"] {
            let err = parse_manifest(&manifest_json(
                "0123456789abcdef",
                &[(KERNEL, H), (INITRD, H), (name, H)],
            ))
            .unwrap_err();
            assert!(err.contains("unexpected file"), "{name}: {err}");
        }
    }

    #[test]
    fn rejects_missing_files_and_malformed_hashes() {
        let err = parse_manifest(&manifest_json("0123456789abcdef", &[(KERNEL, H)])).unwrap_err();
        assert!(err.contains("initrd.img is not listed"), "{err}");
        let err = parse_manifest(&manifest_json(
            "0123456789abcdef",
            &[(KERNEL, H), (INITRD, "abc")],
        ))
        .unwrap_err();
        assert!(err.contains("sha256 of initrd.img"), "{err}");
    }

    #[test]
    fn url_must_be_http_and_may_name_the_directory() {
        assert!(matches!(
            parse_url("ftp://host/manifest.json"),
            Err(PullError::BadUrl { .. })
        ));
        assert!(matches!(
            parse_url("not a url"),
            Err(PullError::BadUrl { .. })
        ));
        assert_eq!(
            parse_url("https://host/images/x/").unwrap().as_str(),
            "https://host/images/x/manifest.json"
        );
        let u = parse_url("http://host/x/manifest.json").unwrap();
        assert_eq!(u.join(KERNEL).unwrap().as_str(), "http://host/x/vmlinuz");
    }
}
