//! HTTP downloads from a Debian mirror: small files into memory (`InRelease`), and files of a
//! known SHA256 and size (indexes, `.deb`s) into place, several at once.
//!
//! A file of known hash is written to `<partial dir>/<sha256>.part`, resumed with a `Range`
//! request when a transfer breaks (in this run or an earlier one: the name is the content's
//! hash, so a partial file is only ever continued with the same bytes), checked against its
//! size and SHA256, and only then renamed to its destination. A file that does not match is
//! deleted: nothing unverified is ever kept under a final name. Failures that may pass
//! (refused or dropped connections, HTTP 5xx, 408, 429) are retried a bounded number of times
//! with a doubling pause; the error names the file and the mirror.
//!
//! Owns a small tokio runtime (two worker threads) for the duration of a build; callers stay
//! synchronous. A progress bar is drawn on stderr when asked for and stderr is a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{StatusCode, Url, header};
use tokio::io::AsyncWriteExt;

/// Downloads running at once. deb.debian.org is a CDN; a handful of connections fill a
/// link where one (apt's pipelined single connection) leaves gaps between files.
const PARALLEL: usize = 6;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one read may stall before the transfer counts as broken (and is resumed).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often and how patiently a failing download is tried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    /// Pause after the first failure; doubled after each further one.
    pub first_pause: Duration,
}

impl Default for Retry {
    /// Four attempts over about 3.5 s.
    fn default() -> Retry {
        Retry {
            attempts: 4,
            first_pause: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot download {file} from mirror {mirror} ({attempts} attempts)")]
    Unreachable {
        file: String,
        mirror: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("mirror {mirror} answered HTTP {status} for {file}")]
    Status {
        file: String,
        mirror: String,
        status: u16,
    },
    #[error(
        "the download of {file} from mirror {mirror} broke off ({attempts} attempts; the part received is kept and resumed next time)"
    )]
    Broken {
        file: String,
        mirror: String,
        attempts: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} from mirror {mirror} has sha256 {actual}, the signed index says {expected}")]
    Hash {
        file: String,
        mirror: String,
        expected: String,
        actual: String,
    },
    #[error("{file} from mirror {mirror} is {got} bytes, the signed index says {size}")]
    Short {
        file: String,
        mirror: String,
        got: u64,
        size: u64,
    },
    #[error("{file} from mirror {mirror} is larger than the {size} bytes the signed index says")]
    TooLarge {
        file: String,
        mirror: String,
        size: u64,
    },
    #[error("cannot start the downloader")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A file of known content to bring to `dest`.
#[derive(Debug, Clone)]
pub struct Download {
    /// Base URL of the archive, ending in `/`.
    pub mirror: Url,
    /// Path below the mirror (`pool/main/…/x.deb`, `dists/…/by-hash/SHA256/…`).
    pub path: String,
    pub sha256: String,
    pub size: u64,
    pub dest: PathBuf,
}

pub struct Fetcher {
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
    retry: Retry,
    progress: bool,
}

impl Fetcher {
    pub fn new(retry: Retry, progress: bool) -> Result<Fetcher, FetchError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(FetchError::Runtime)?;
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(STALL_TIMEOUT)
            .user_agent(concat!("devbox/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Runtime(std::io::Error::other(e)))?;
        Ok(Fetcher {
            client,
            rt,
            retry,
            progress,
        })
    }

    /// A file of unknown hash (an `InRelease`), at most `limit` bytes, retried like the rest.
    pub fn get(&self, mirror: &Url, path: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let url = join(mirror, path);
        self.rt.block_on(async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let err = match self.get_once(&url, mirror, path, limit).await {
                    Ok(body) => return Ok(body),
                    Err(Try::Fatal(e)) => return Err(e),
                    Err(Try::Again(e)) => e,
                };
                if attempt >= self.retry.attempts {
                    return Err(err.with_attempts(attempt));
                }
                tokio::time::sleep(self.pause(attempt)).await;
            }
        })
    }

    async fn get_once(
        &self,
        url: &Url,
        mirror: &Url,
        path: &str,
        limit: u64,
    ) -> Result<Vec<u8>, Try> {
        let mut resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| Try::Again(unreachable(path, mirror, e)))?;
        check_status(resp.status(), path, mirror)?;
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(b)) => {
                    body.extend_from_slice(&b);
                    if body.len() as u64 > limit {
                        return Err(Try::Fatal(FetchError::TooLarge {
                            file: path.to_owned(),
                            mirror: mirror.to_string(),
                            size: limit,
                        }));
                    }
                }
                Ok(None) => return Ok(body),
                Err(e) => return Err(Try::Again(broken(path, mirror, std::io::Error::other(e)))),
            }
        }
    }

    /// Brings every item whose `dest` does not exist yet into place, [`PARALLEL`] at a time.
    /// Partial files live in `partial_dir`.
    pub fn download(&self, items: &[Download], partial_dir: &Path) -> Result<(), FetchError> {
        let missing: Vec<&Download> = items.iter().filter(|d| !d.dest.is_file()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        fs_err::create_dir_all(partial_dir)?;
        // What is left to receive: partial files of earlier runs are resumed.
        let total: u64 = missing
            .iter()
            .map(|d| {
                let part = partial_dir.join(format!("{}.part", d.sha256));
                d.size - fs_err::metadata(part).map_or(0, |m| m.len()).min(d.size)
            })
            .sum();
        let bar = if self.progress && std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg} ({eta})",
                )
                .expect("static template"),
            );
            b.set_message(format!("{} files", missing.len()));
            b
        } else {
            ProgressBar::hidden()
        };
        let result = self.rt.block_on(async {
            let mut jobs =
                futures::stream::iter(missing.iter().map(|d| self.fetch(d, partial_dir, &bar)))
                    .buffer_unordered(PARALLEL);
            while let Some(r) = jobs.next().await {
                r?;
            }
            Ok(())
        });
        bar.finish_and_clear();
        result
    }

    async fn fetch(
        &self,
        d: &Download,
        partial_dir: &Path,
        bar: &ProgressBar,
    ) -> Result<(), FetchError> {
        let part = partial_dir.join(format!("{}.part", d.sha256));
        let url = join(&d.mirror, &d.path);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.fetch_once(d, &url, &part, bar).await {
                Ok(()) => break,
                Err(Try::Fatal(e)) => return Err(e),
                Err(Try::Again(e)) => e,
            };
            if attempt >= self.retry.attempts {
                return Err(err.with_attempts(attempt));
            }
            tokio::time::sleep(self.pause(attempt)).await;
        }
        let (part2, want) = (part.clone(), d.sha256.clone());
        let actual = tokio::task::spawn_blocking(move || crate::image::sha256_file(&part2))
            .await
            .map_err(|e| FetchError::Io(std::io::Error::other(e)))??;
        if actual != want {
            let _ = fs_err::remove_file(&part);
            return Err(FetchError::Hash {
                file: d.path.clone(),
                mirror: d.mirror.to_string(),
                expected: want,
                actual,
            });
        }
        if let Some(parent) = d.dest.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::rename(&part, &d.dest)?;
        Ok(())
    }

    /// One request for what `part` still lacks.
    async fn fetch_once(
        &self,
        d: &Download,
        url: &Url,
        part: &Path,
        bar: &ProgressBar,
    ) -> Result<(), Try> {
        let file = || d.path.clone();
        let mirror = || d.mirror.to_string();
        let mut have = fs_err::metadata(part).map(|m| m.len()).unwrap_or(0);
        if have > d.size {
            fs_err::remove_file(part).map_err(|e| Try::Fatal(e.into()))?;
            have = 0;
        }
        if have == d.size {
            return Ok(());
        }
        let mut req = self.client.get(url.clone());
        if have > 0 {
            req = req.header(header::RANGE, format!("bytes={have}-"));
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| Try::Again(unreachable(&d.path, &d.mirror, e)))?;
        let resumed = have > 0
            && resp.status() == StatusCode::PARTIAL_CONTENT
            && resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {have}-")));
        if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE
            || (resp.status() == StatusCode::PARTIAL_CONTENT && !resumed)
        {
            // The part on disk is not a prefix the server agrees with: start over.
            let _ = fs_err::remove_file(part);
            return Err(Try::Again(broken(
                &d.path,
                &d.mirror,
                std::io::Error::other("restarting"),
            )));
        }
        check_status(resp.status(), &d.path, &d.mirror)?;
        if !resumed {
            have = 0;
        }
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(part)
            .await
            .map_err(|e| Try::Fatal(io_at(e, part).into()))?;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    let _ = out.flush().await;
                    return Err(Try::Again(broken(
                        &d.path,
                        &d.mirror,
                        std::io::Error::other(e),
                    )));
                }
            };
            have += chunk.len() as u64;
            if have > d.size {
                drop(out);
                let _ = fs_err::remove_file(part);
                return Err(Try::Fatal(FetchError::TooLarge {
                    file: file(),
                    mirror: mirror(),
                    size: d.size,
                }));
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| Try::Fatal(io_at(e, part).into()))?;
            bar.inc(chunk.len() as u64);
        }
        out.flush()
            .await
            .map_err(|e| Try::Fatal(io_at(e, part).into()))?;
        out.sync_all()
            .await
            .map_err(|e| Try::Fatal(io_at(e, part).into()))?;
        if have < d.size {
            // The response ended cleanly (a transfer cut short errors above): the server's
            // file is not the one the signed index describes.
            drop(out);
            let _ = fs_err::remove_file(part);
            return Err(Try::Fatal(FetchError::Short {
                file: file(),
                mirror: mirror(),
                got: have,
                size: d.size,
            }));
        }
        Ok(())
    }

    fn pause(&self, attempt: u32) -> Duration {
        self.retry.first_pause * 2u32.saturating_pow(attempt - 1)
    }
}

/// An attempt's outcome: worth another try, or final.
enum Try {
    Again(FetchError),
    Fatal(FetchError),
}

impl FetchError {
    fn with_attempts(mut self, n: u32) -> FetchError {
        match &mut self {
            FetchError::Unreachable { attempts, .. } | FetchError::Broken { attempts, .. } => {
                *attempts = n
            }
            _ => {}
        }
        self
    }
}

fn check_status(status: StatusCode, path: &str, mirror: &Url) -> Result<(), Try> {
    if status.is_success() {
        return Ok(());
    }
    let e = FetchError::Status {
        file: path.to_owned(),
        mirror: mirror.to_string(),
        status: status.as_u16(),
    };
    let passing = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    Err(if passing {
        Try::Again(e)
    } else {
        Try::Fatal(e)
    })
}

fn unreachable(path: &str, mirror: &Url, source: reqwest::Error) -> FetchError {
    FetchError::Unreachable {
        file: path.to_owned(),
        mirror: mirror.to_string(),
        attempts: 1,
        source,
    }
}

fn broken(path: &str, mirror: &Url, source: std::io::Error) -> FetchError {
    FetchError::Broken {
        file: path.to_owned(),
        mirror: mirror.to_string(),
        attempts: 1,
        source,
    }
}

/// `mirror` + `path`; the mirror URL always ends in `/` (see `Source::new`).
fn join(mirror: &Url, path: &str) -> Url {
    let mut url = mirror.clone();
    url.set_path(&format!("{}{path}", mirror.path()));
    url
}

fn io_at(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
