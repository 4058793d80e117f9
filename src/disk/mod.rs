//! The data disk: how full it is (the guest's filesystem, Docker's own view, the host file's
//! apparent and allocated sizes), whether the host gives freed space back (hole punching),
//! and growing the disk file.
//!
//! No threads of its own. Exposes [`measure_guest`] and [`docker_df`] (one SSH command each),
//! [`GuestDiskSample`] (what the supervisor records in `state.json` for `status` and `ls`),
//! [`HostFile`], [`probe_reclaim`] / [`Reclaim`], [`plan_resize`] / [`grow_file`], and the
//! warning threshold [`WARN_PCT`] with [`fullness_warning`].
//!
//! The guest side (assets/guest/README.md): the data disk is ext4 mounted `-o discard` at
//! `/mnt/data`, with `/mnt/data/docker` bind-mounted on `/var/lib/docker`, and a reserve file
//! ([`RESERVE_PATH`]) that the guest releases once the filesystem is full, so that dockerd
//! can still write its own state.

mod sys;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

// The sample lives with the state file that records it; the rules for it stay named here.
use crate::machine::spec::format_size;
pub use crate::machine::state::{GuestDiskSample, WARN_PCT};
use crate::ssh;

/// What the user's data lives on in the guest.
pub const GUEST_PATH: &str = "/var/lib/docker";
/// The guest's reserve file (see `devbox-boot`).
pub const RESERVE_PATH: &str = "/mnt/data/.devbox-reserve";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("machine {name:?} is {state}: a disk can be resized only while its machine is stopped")]
    Live { name: String, state: String },
    #[error(
        "cannot shrink machine {name:?}'s disk from {current} to {requested}: shrinking is not supported"
    )]
    Shrink {
        name: String,
        current: String,
        requested: String,
    },
    #[error("the guest's `{command}` printed something unexpected ({why}): {output:?}")]
    GuestOutput {
        command: String,
        why: String,
        output: String,
    },
    #[error("measuring the guest's disk")]
    Ssh(#[source] ssh::SshError),
    #[error("resizing {path}")]
    Resize {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DiskError {
    pub fn hint(&self) -> Option<String> {
        match self {
            DiskError::Live { name, .. } => Some(format!(
                "stop it first: devbox stop {name} && devbox disk resize {name} SIZE"
            )),
            DiskError::Shrink { .. } => Some(
                "the guest's ext4 filesystem spans the whole disk and may hold data anywhere on \
                 it, so cutting the file would cut the filesystem; for a smaller disk, create a \
                 new machine with --disk-size and move the images over (docker save | docker load)"
                    .into(),
            ),
            _ => None,
        }
    }
}

const MEASURE_CMD: &str = "df -Pk /var/lib/docker && \
     if [ -e /mnt/data/.devbox-reserve ]; then echo reserve=held; else echo reserve=released; fi";

/// Measures the guest filesystem over an open connection (one `df`, no Docker call).
pub fn measure_guest(conn: &ssh::Connection) -> Result<GuestDiskSample, DiskError> {
    let out = conn.exec_capture(MEASURE_CMD).map_err(DiskError::Ssh)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let bad = |why: String| DiskError::GuestOutput {
        command: "df -Pk /var/lib/docker".into(),
        why,
        output: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
    };
    if out.status != 0 {
        return Err(bad(format!("it exited with status {}", out.status)));
    }
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    parse_measurement(&text, now).map_err(bad)
}

/// Parses `df -Pk` (POSIX format, KiB) followed by a `reserve=held|released` line.
///
/// The text comes from the guest, which is untrusted: every number is parsed as an unsigned
/// integer and every sum and product is checked, so a hostile `df` (negative, huge, garbage)
/// gives an error naming the problem, never a wrapped value or a panic in the disk thread.
fn parse_measurement(text: &str, measured: String) -> Result<GuestDiskSample, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(header) if header.starts_with("Filesystem") => {}
        _ => return Err("no `Filesystem` header line".into()),
    }
    let row: Vec<&str> = lines
        .next()
        .ok_or("no line for the filesystem")?
        .split_whitespace()
        .collect();
    let kib = |i: usize, what: &str| -> Result<u64, String> {
        let field = row.get(i).ok_or(format!("no {what} column"))?;
        let v: u64 = field
            .parse()
            .map_err(|_| format!("the {what} column {field:?} is not a count of KiB"))?;
        v.checked_mul(1024).ok_or(format!(
            "the {what} column {v} KiB is more than 64 bits of bytes"
        ))
    };
    let size_bytes = kib(1, "size")?;
    let used_bytes = kib(2, "used")?;
    let avail_bytes = kib(3, "available")?;
    let reserve_held = match lines.next().map(str::trim) {
        Some("reserve=held") => true,
        Some("reserve=released") => false,
        _ => return Err("no `reserve=held|released` line".into()),
    };
    let denom = used_bytes
        .checked_add(avail_bytes)
        .ok_or("used plus available is more than 64 bits of bytes")?;
    let used_pct = if denom == 0 {
        0
    } else {
        // In 128 bits `used * 100` cannot overflow; the result is at most 100.
        let pct = (u128::from(used_bytes) * 100).div_ceil(u128::from(denom));
        u8::try_from(pct.min(100)).expect("at most 100")
    };
    Ok(GuestDiskSample {
        size_bytes,
        used_bytes,
        avail_bytes,
        used_pct,
        reserve_held,
        measured,
    })
}

/// One row of `docker system df`, as Docker prints it (sizes are Docker's own strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerDfRow {
    #[serde(rename(deserialize = "Type"))]
    pub kind: String,
    #[serde(rename(deserialize = "TotalCount"))]
    pub total: String,
    #[serde(rename(deserialize = "Active"))]
    pub active: String,
    #[serde(rename(deserialize = "Size"))]
    pub size: String,
    #[serde(rename(deserialize = "Reclaimable"))]
    pub reclaimable: String,
}

const DOCKER_DF_CMD: &str = "docker system df --format '{{json .}}'";

/// Docker's own view of what uses the disk (images, containers, volumes, build cache).
pub fn docker_df(conn: &ssh::Connection) -> Result<Vec<DockerDfRow>, DiskError> {
    let out = conn.exec_capture(DOCKER_DF_CMD).map_err(DiskError::Ssh)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let bad = |why: String| DiskError::GuestOutput {
        command: DOCKER_DF_CMD.into(),
        why,
        output: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
    };
    if out.status != 0 {
        return Err(bad(format!("it exited with status {}", out.status)));
    }
    parse_docker_df(&text).ok_or_else(|| bad("a line is not one of Docker's JSON rows".into()))
}

fn parse_docker_df(text: &str) -> Option<Vec<DockerDfRow>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The warning `status`, `ls` and the supervisor print for a nearly full guest filesystem.
pub fn fullness_warning(machine: &str, s: &GuestDiskSample) -> Option<String> {
    if !s.is_nearly_full() {
        return None;
    }
    Some(format!(
        "machine {machine}: the guest filesystem ({GUEST_PATH}) is {}% full ({} used, {} free, \
         measured {}); `devbox disk usage {machine}` shows what uses it, `devbox disk resize` \
         grows it",
        s.used_pct,
        format_size(s.used_bytes),
        format_size(s.avail_bytes),
        s.measured
    ))
}

/// The disk file on the host: its apparent size and what it really occupies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFile {
    pub path: PathBuf,
    /// `st_size`: the disk size the guest sees.
    pub apparent_bytes: u64,
    /// `st_blocks * 512`: what the file occupies (holes excluded).
    pub allocated_bytes: u64,
}

impl HostFile {
    pub fn of(path: &Path) -> std::io::Result<HostFile> {
        use std::os::unix::fs::MetadataExt;
        let m = fs_err::metadata(path)?;
        Ok(HostFile {
            path: path.to_owned(),
            apparent_bytes: m.len(),
            allocated_bytes: m.blocks() * 512,
        })
    }
}

/// Whether space the guest frees can be given back to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reclaim", rename_all = "lowercase")]
pub enum Reclaim {
    Available,
    Unavailable { dir: PathBuf, reason: String },
}

impl Reclaim {
    /// From the outcome of punching a hole in a scratch file in `dir`.
    pub fn from_probe(dir: &Path, probe: std::io::Result<()>) -> Reclaim {
        match probe {
            Ok(()) => Reclaim::Available,
            Err(e) => Reclaim::Unavailable {
                dir: dir.to_owned(),
                reason: e.to_string(),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Reclaim::Available => {
                "reclaim: available (space the guest frees is punched out of the host file)".into()
            }
            Reclaim::Unavailable { dir, reason } => format!(
                "reclaim: unavailable (the filesystem under {} cannot punch holes: {reason}); \
                 the host file keeps the space the guest frees",
                dir.display()
            ),
        }
    }
}

/// Size of the scratch file's data: a few filesystem blocks on any filesystem.
const PROBE_BYTES: usize = 256 << 10;

/// Tries `fallocate(PUNCH_HOLE | KEEP_SIZE)` (macOS: `F_PUNCHHOLE`) on a scratch file in
/// `dir`, the directory holding the disk, and checks that it frees blocks: QEMU makes this
/// call for each discard, and some filesystems (NFS before 4.2, FAT) refuse it.
pub fn probe_reclaim(dir: &Path) -> Reclaim {
    Reclaim::from_probe(dir, punch_scratch_file(dir))
}

fn punch_scratch_file(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut f = tempfile::Builder::new()
        .prefix(".punch-probe-")
        .tempfile_in(dir)?;
    f.write_all(&[0x5a; PROBE_BYTES])?;
    f.as_file().sync_all()?;
    let before = f.as_file().metadata()?.blocks();
    sys::punch_hole(f.as_file(), 0, PROBE_BYTES as u64)?;
    f.as_file().sync_all()?;
    let after = f.as_file().metadata()?.blocks();
    if after >= before {
        return Err(std::io::Error::other(format!(
            "punching a hole freed nothing ({before} blocks before, {after} after)"
        )));
    }
    Ok(())
}

/// What `disk resize` will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizePlan {
    Grow { from: u64, to: u64 },
    Unchanged,
}

/// Checks a resize request: growing only. `current` is the larger of the spec's size and the
/// file's, so a half-finished earlier resize cannot be undone by accident.
pub fn plan_resize(name: &str, current: u64, requested: u64) -> Result<ResizePlan, DiskError> {
    if requested < current {
        return Err(DiskError::Shrink {
            name: name.to_owned(),
            current: format_size(current),
            requested: format_size(requested),
        });
    }
    if requested == current {
        return Ok(ResizePlan::Unchanged);
    }
    Ok(ResizePlan::Grow {
        from: current,
        to: requested,
    })
}

/// Grows the sparse disk file to `bytes` (no data written: the new tail is a hole).
pub fn grow_file(path: &Path, bytes: u64) -> Result<(), DiskError> {
    let resize = || -> std::io::Result<()> {
        let f = fs_err::OpenOptions::new().write(true).open(path)?;
        f.set_len(bytes)?;
        f.sync_all()
    };
    resize().map_err(|source| DiskError::Resize {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DF: &str = "Filesystem           1024-blocks    Used Available Capacity Mounted on\n\
                      /dev/vdb               1992552   1600000    290000  85% /var/lib/docker\n\
                      reserve=held\n";

    #[test]
    fn parses_df_and_reserve() {
        let s = parse_measurement(DF, "t".into()).unwrap();
        assert_eq!(s.size_bytes, 1992552 * 1024);
        assert_eq!(s.used_bytes, 1600000 * 1024);
        assert_eq!(s.avail_bytes, 290000 * 1024);
        // 1600000 / 1890000 = 84.66…, rounded up like df.
        assert_eq!(s.used_pct, 85);
        assert!(s.reserve_held && s.is_nearly_full());
        let full = DF
            .replace("290000", "0")
            .replace("reserve=held", "reserve=released");
        let s = parse_measurement(&full, "t".into()).unwrap();
        assert_eq!((s.used_pct, s.reserve_held), (100, false));
    }

    #[test]
    fn refuses_unexpected_df_output() {
        let why = |text: &str| parse_measurement(text, "t".into()).unwrap_err();
        assert_eq!(
            why("df: /var/lib/docker: No such file\n"),
            "no `Filesystem` header line"
        );
        assert_eq!(
            why(&DF.replace("1600000", "x")),
            "the used column \"x\" is not a count of KiB"
        );
        assert_eq!(
            why(&DF.replace("reserve=held\n", "")),
            "no `reserve=held|released` line"
        );
    }

    /// The guest controls `df`'s output: hostile numbers give errors, never wrapped values
    /// or an overflow panic (debug builds) in the supervisor's disk thread.
    #[test]
    fn hostile_df_numbers_are_errors_not_overflows() {
        let with = |size: &str, used: &str, avail: &str| {
            let text = format!(
                "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                 /dev/vdb {size} {used} {avail} 85% /var/lib/docker\nreserve=held\n"
            );
            parse_measurement(&text, "t".into())
        };
        let max = u64::MAX.to_string();
        let past_max = "18446744073709551616"; // u64::MAX + 1
        let huge_kib = (u64::MAX / 1024 + 1).to_string(); // fits in u64, not once in bytes
        assert_eq!(
            with(&max, "1", "1").unwrap_err(),
            format!("the size column {max} KiB is more than 64 bits of bytes")
        );
        assert_eq!(
            with("1", &huge_kib, "1").unwrap_err(),
            format!("the used column {huge_kib} KiB is more than 64 bits of bytes")
        );
        assert_eq!(
            with("1", "1", past_max).unwrap_err(),
            format!("the available column \"{past_max}\" is not a count of KiB")
        );
        assert_eq!(
            with("100", "-5", "1").unwrap_err(),
            "the used column \"-5\" is not a count of KiB"
        );
        assert_eq!(
            with("100", "1e9", "1").unwrap_err(),
            "the used column \"1e9\" is not a count of KiB"
        );
        assert_eq!(
            with("100", "50", "").unwrap_err(),
            "the available column \"85%\" is not a count of KiB"
        );
        // Each value fits, the sum does not.
        let half = (u64::MAX / 1024 / 2 + 1).to_string();
        assert_eq!(
            with("1", &half, &half).unwrap_err(),
            "used plus available is more than 64 bits of bytes"
        );
        // The largest values that fit: `used * 100` would overflow 64 bits; the result holds.
        let big = (u64::MAX / 1024 / 2).to_string();
        let s = with(&big, &big, "0").unwrap();
        assert_eq!(
            (s.used_bytes, s.used_pct),
            (u64::MAX / 1024 / 2 * 1024, 100)
        );
        let s = with(&big, "1", &big).unwrap();
        assert_eq!(s.used_pct, 1);
    }

    #[test]
    fn warns_from_the_threshold_up() {
        let mut s = parse_measurement(DF, "2026-01-01T00:00:00Z".into()).unwrap();
        let w = fullness_warning("dev", &s).unwrap();
        assert!(
            w.contains("85% full") && w.contains("devbox disk usage dev"),
            "{w}"
        );
        s.used_pct = WARN_PCT;
        assert!(fullness_warning("dev", &s).is_some());
        s.used_pct = WARN_PCT - 1;
        assert!(fullness_warning("dev", &s).is_none());
    }

    #[test]
    fn parses_docker_system_df() {
        let text = r#"{"Active":"1","Reclaimable":"0B (0%)","Size":"1.25MB","TotalCount":"1","Type":"Images"}
{"Active":"0","Reclaimable":"0B","Size":"0B","TotalCount":"0","Type":"Local Volumes"}
"#;
        let rows = parse_docker_df(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].kind, "Images");
        assert_eq!(rows[0].size, "1.25MB");
        assert_eq!(rows[1].kind, "Local Volumes");
        assert!(parse_docker_df("Cannot connect to the Docker daemon").is_none());
    }

    #[test]
    fn resize_only_grows() {
        let g = 1u64 << 30;
        assert_eq!(
            plan_resize("m", 2 * g, 4 * g).unwrap(),
            ResizePlan::Grow {
                from: 2 * g,
                to: 4 * g
            }
        );
        assert_eq!(
            plan_resize("m", 2 * g, 2 * g).unwrap(),
            ResizePlan::Unchanged
        );
        let e = plan_resize("m", 2 * g, g).unwrap_err();
        assert!(e.to_string().contains("from 2G to 1G"), "{e}");
        assert!(e.hint().unwrap().contains("--disk-size"));
    }

    #[test]
    fn grown_file_stays_sparse() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.raw");
        std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        grow_file(&p, 64 << 20).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.len(), 64 << 20);
        assert!(m.blocks() * 512 < 1 << 20);
    }

    /// Both filesystems a developer host (or CI) keeps machines on support hole punching.
    #[test]
    fn punch_hole_probe_on_ext4_or_tmp_and_dev_shm() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            probe_reclaim(d.path()),
            Reclaim::Available,
            "{:?}",
            d.path()
        );
        // /dev/shm is tmpfs on Linux.
        if Path::new("/dev/shm").is_dir() {
            let d = tempfile::tempdir_in("/dev/shm").unwrap();
            assert_eq!(probe_reclaim(d.path()), Reclaim::Available);
        }
        // No scratch file left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn reports_unavailable_reclaim_without_failing() {
        let dir = Path::new("/mnt/nfs/devbox/machines/m");
        let r = Reclaim::from_probe(
            dir,
            Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
        );
        let text = r.describe();
        assert!(
            text.starts_with(
                "reclaim: unavailable (the filesystem under /mnt/nfs/devbox/machines/m cannot punch holes"
            ),
            "{text}"
        );
        assert_eq!(serde_json::to_value(&r).unwrap()["reclaim"], "unavailable");
        assert_eq!(Reclaim::from_probe(dir, Ok(())), Reclaim::Available);
        // A directory where no scratch file can be made is reported the same way.
        let r = probe_reclaim(Path::new("/nonexistent/devbox-probe"));
        assert!(matches!(r, Reclaim::Unavailable { .. }));
    }
}
