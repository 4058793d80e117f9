//! The handle index of one export, and the scan that finds objects it does not know.
//!
//! A handle names an object by `(st_dev, st_ino)` only (`handle.rs`), which is what keeps it
//! valid across renames and supervisor restarts; the server needs the object's place to
//! reach it without following symlinks (`fs.rs`). The [`Index`] maps each key the guest has
//! been given (LOOKUP, READDIRPLUS, CREATE…) and every directory a scan passed to its parent
//! and name. It is bounded ([`MAX_NODES`]); past the bound, entries of non-directories go
//! first (directories are what every path goes through), and a later miss finds them again.
//!
//! A miss (a key not indexed, or whose recorded place no longer holds it because the host
//! renamed or moved it, or a directory above it) asks the export's scanner: one thread per
//! export at a time, started on demand, acting as the share's owner, that walks the export
//! breadth-first and records every directory, and the non-directories some request is
//! waiting for. It never holds the index lock while it reads the disk (only for a moment per
//! directory, to insert what it found), so a scan, started by a forged handle or not, stalls
//! no other request. Scans are rate-limited: a new one starts at the earliest
//! [`MIN_COOLDOWN`] or four times the last scan's duration after it ended, so at most about
//! a fifth of one thread goes to scanning. A request waits up to [`MISS_WAIT`] for its key;
//! if it is not found by then, the request is answered NFS3ERR_JUKEBOX ("try again later",
//! RFC 1813), which the client retries after a few seconds. A key that two scans, both
//! started after it was asked for, did not find is STALE (one could have missed it: a
//! directory the host moves during a scan, from a place the scan has yet to list to one it
//! has listed already, is not seen by that scan), and is remembered as gone.
//!
//! Why not `open_by_handle_at(2)` (knfsd's way, O(1) and rename-proof): it needs
//! CAP_DAC_READ_SEARCH, which the server does not have when it runs as the user, nor on
//! macOS. One code path for every deployment.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

use super::handle::{Key, Kind};
use super::identity::{AsOwner, Owner};

/// Most index entries an export keeps (about 150 bytes each with short names, measured:
/// 75 MiB at the bound, which a home the guest walks through whole can reach).
pub(crate) const MAX_NODES: usize = 1 << 19;

/// Deepest chain of parents followed when rebuilding a path from the index.
pub(crate) const MAX_DEPTH: usize = 4096;

/// Most keys waiting for a scan at once; a request for another one is answered JUKEBOX.
const MAX_WANTED: usize = 1 << 16;

/// Most keys remembered as not found.
const MAX_GONE: usize = 1 << 12;

/// Shortest time between the end of a scan and the start of the next.
pub(crate) const MIN_COOLDOWN: Duration = Duration::from_millis(250);

/// How long a request waits for the scanner before being answered JUKEBOX.
pub(crate) const MISS_WAIT: Duration = Duration::from_secs(3);

struct Node {
    parent: Key,
    name: Box<[u8]>,
    dir: bool,
}

/// Key → (parent, name), bounded, and the keys known to be gone.
#[derive(Default)]
pub(crate) struct Index {
    nodes: HashMap<Key, Node>,
    /// Keys two whole scans did not find: STALE at once from then on (the guest's client
    /// drops a handle once told it is stale; this spares a scan per retry of one that does
    /// not). A key recorded again (found by LOOKUP after all) leaves it. Bounded: emptied
    /// when full.
    gone: HashSet<Key>,
}

impl Index {
    /// The names from the root to `key`, or `None` if some object on the way is unknown.
    pub(crate) fn path(&self, key: Key, root: Key) -> Option<Vec<Box<[u8]>>> {
        let mut comps = Vec::new();
        let mut at = key;
        while at != root {
            let node = self.nodes.get(&at)?;
            comps.push(node.name.clone());
            if comps.len() > MAX_DEPTH {
                return None;
            }
            at = node.parent;
        }
        comps.reverse();
        Some(comps)
    }

    pub(crate) fn insert(&mut self, key: Key, parent: Key, name: &[u8], dir: bool) {
        if self.nodes.len() >= MAX_NODES && !self.nodes.contains_key(&key) {
            self.shrink();
        }
        if !self.gone.is_empty() {
            self.gone.remove(&key);
        }
        self.nodes.insert(
            key,
            Node {
                parent,
                name: name.into(),
                dir,
            },
        );
    }

    pub(crate) fn remove(&mut self, key: Key) {
        self.nodes.remove(&key);
    }

    fn set_gone(&mut self, key: Key) {
        if self.gone.len() >= MAX_GONE {
            self.gone.clear();
        }
        self.gone.insert(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Makes room: every non-directory goes, then, if directories alone still fill three
    /// quarters of the bound, everything (misses rebuild what is used).
    fn shrink(&mut self) {
        self.nodes.retain(|_, n| n.dir);
        if self.nodes.len() > MAX_NODES / 4 * 3 {
            self.nodes.clear();
        }
        self.nodes.shrink_to(MAX_NODES);
    }
}

/// The scanner's state, shared by the requests waiting on it.
#[derive(Default)]
pub(crate) struct Scan {
    running: bool,
    /// Scans started, and finished, since the server started.
    started: u64,
    finished: u64,
    last_end: Option<Instant>,
    last_duration: Duration,
    /// Keys requests are waiting for.
    wanted: HashMap<Key, Want>,
    /// Wanted keys the current scan has recorded.
    found: HashSet<Key>,
}

/// A key some request waits for.
struct Want {
    /// Scans started when it was first asked for: scans numbered above this look for it.
    asked: u64,
    /// Scans that looked for it in vain. Two are needed to call it gone: a scan that a
    /// host-side rename overtakes (a directory moved from a place the scan has yet to list
    /// to one it has listed already) misses what was moved.
    misses: u8,
}

/// What a miss comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// A scan that started after the request finished without finding the key.
    Gone,
    /// No such scan finished in time (or none may start yet): ask again later.
    Later,
}

/// What the scanner thread needs of its export.
pub(crate) struct ScanTarget {
    pub root: OwnedFd,
    pub root_key: Key,
    pub owner: Owner,
    pub hidden: HashSet<Key>,
    pub path: super::sys::FsPath,
}

/// An export's index with its scanner.
pub(crate) struct Finder {
    pub target: ScanTarget,
    index: Mutex<Index>,
    scan: Mutex<Scan>,
    progress: Condvar,
}

impl Finder {
    pub(crate) fn new(target: ScanTarget) -> Finder {
        Finder {
            target,
            index: Mutex::new(Index::default()),
            scan: Mutex::new(Scan::default()),
            progress: Condvar::new(),
        }
    }

    pub(crate) fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn scan_state(&self) -> MutexGuard<'_, Scan> {
        self.scan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a scan to record `key` where `found` succeeds with it. `this` is the
    /// `Arc` holding `self`, for a scanner thread to start with.
    pub(crate) fn find<T>(
        this: &std::sync::Arc<Finder>,
        key: Key,
        mut found: impl FnMut() -> Option<T>,
    ) -> Result<T, Miss> {
        let deadline = Instant::now() + MISS_WAIT;
        let mut st = this.scan_state();
        if !st.wanted.contains_key(&key) {
            if this.index().gone.contains(&key) {
                return Err(Miss::Gone);
            }
            if st.wanted.len() >= MAX_WANTED {
                return Err(Miss::Later);
            }
            let started = st.started;
            st.wanted.insert(
                key,
                Want {
                    asked: started,
                    misses: 0,
                },
            );
        }
        loop {
            if !st.running && this.may_start(&st) {
                this.start(&mut st);
            }
            drop(st);
            if let Some(t) = found() {
                this.scan_state().wanted.remove(&key);
                return Ok(t);
            }
            st = this.scan_state();
            if !st.wanted.contains_key(&key) && this.index().gone.contains(&key) {
                return Err(Miss::Gone);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Miss::Later);
            }
            // Wake at the deadline, at the scanner's progress, or when a scan may start.
            let mut until = deadline;
            if let (false, Some(end)) = (st.running, st.last_end) {
                until = until.min(end + this.cooldown(&st));
            }
            let wait = until
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            st = this
                .progress
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn cooldown(&self, st: &Scan) -> Duration {
        MIN_COOLDOWN.max(st.last_duration * 4)
    }

    fn may_start(&self, st: &Scan) -> bool {
        match st.last_end {
            None => true,
            Some(end) => end.elapsed() >= self.cooldown(st),
        }
    }

    fn start(self: &std::sync::Arc<Self>, st: &mut Scan) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("nfs-scan".into())
            .spawn(move || me.run_scan());
        if spawned.is_ok() {
            st.running = true;
            st.started += 1;
        }
    }

    /// The scanner thread: one breadth-first pass over the export.
    fn run_scan(&self) {
        let started = Instant::now();
        let number = self.scan_state().started;
        // As the owner: the scan sees what the owner may list, nothing more.
        if let Ok(_as_owner) = AsOwner::enter(&self.target.owner) {
            self.walk_all();
        }
        let mut st = self.scan_state();
        st.running = false;
        st.finished = number;
        st.last_end = Some(Instant::now());
        st.last_duration = started.elapsed();
        // Keys asked for before this scan started: found, missed once more, or gone.
        let looked_for: Vec<Key> = st
            .wanted
            .iter()
            .filter(|(_, w)| w.asked < number)
            .map(|(k, _)| *k)
            .collect();
        for key in looked_for {
            if st.found.contains(&key) {
                st.wanted.remove(&key);
                continue;
            }
            let want = st.wanted.get_mut(&key).expect("listed above");
            want.misses += 1;
            want.asked = number;
            if want.misses >= 2 {
                st.wanted.remove(&key);
                self.index().set_gone(key);
            }
        }
        st.found.clear();
        self.progress.notify_all();
    }

    fn walk_all(&self) {
        let t = &self.target;
        // Directories seen in this scan: their place, to open them from the root.
        let mut places: HashMap<Key, (Key, Box<[u8]>)> = HashMap::new();
        let mut queue = VecDeque::from([t.root_key]);
        while let Some(dir_key) = queue.pop_front() {
            let Some(dir) = self.open_scanned(dir_key, &places) else {
                continue;
            };
            let Ok(mut entries) = Dir::read_from(&dir) else {
                continue;
            };
            // (key, name, is a directory)
            let mut seen: Vec<(Key, Box<[u8]>, bool)> = Vec::new();
            while let Some(Ok(entry)) = entries.read() {
                let name = entry.file_name();
                if matches!(name.to_bytes(), b"." | b"..") {
                    continue;
                }
                let (key, is_dir) = match entry.file_type() {
                    FileType::Directory | FileType::Unknown => {
                        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                            Ok(st) => {
                                (super::fs::key_of(&st), super::fs::kind_of(&st) == Kind::Dir)
                            }
                            Err(_) => continue,
                        }
                    }
                    _ => ((dir_key.0, entry.ino()), false),
                };
                if key == t.root_key || t.hidden.contains(&key) {
                    continue;
                }
                if is_dir && !places.contains_key(&key) {
                    places.insert(key, (dir_key, name.to_bytes().into()));
                    queue.push_back(key);
                }
                seen.push((key, name.to_bytes().into(), is_dir));
            }
            let mut st = self.scan_state();
            {
                let mut index = self.index();
                for (key, name, is_dir) in &seen {
                    let wanted = st.wanted.contains_key(key);
                    if *is_dir || wanted {
                        index.insert(*key, dir_key, name, *is_dir);
                    }
                    if wanted {
                        st.found.insert(*key);
                    }
                }
            }
            self.progress.notify_all();
        }
    }

    /// Opens a directory met in this scan for listing, from the root, without following
    /// symlinks; `None` if it moved or cannot be read.
    fn open_scanned(&self, key: Key, places: &HashMap<Key, (Key, Box<[u8]>)>) -> Option<OwnedFd> {
        let t = &self.target;
        if key == t.root_key {
            return t.root.try_clone().ok();
        }
        let mut names = Vec::new();
        let mut at = key;
        while at != t.root_key {
            let (parent, name) = places.get(&at)?;
            names.push(name);
            if names.len() > MAX_DEPTH {
                return None;
            }
            at = *parent;
        }
        names.reverse();
        let (last, parents) = names.split_last()?;
        let mut dir = t.root.try_clone().ok()?;
        for comp in parents {
            let comp = CString::new(&comp[..]).ok()?;
            dir = rustix::fs::openat(&dir, comp.as_c_str(), t.path.dir_flags(), Mode::empty())
                .ok()?;
        }
        let last = CString::new(&last[..]).ok()?;
        let fd = rustix::fs::openat(
            &dir,
            last.as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        (super::fs::key_of(&st) == key).then_some(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_bounded_and_keeps_directories_first() {
        let mut index = Index::default();
        let root = (1, 1);
        index.insert((1, 2), root, b"dir", true);
        for i in 0..MAX_NODES as u64 + 10 {
            index.insert((1, 100 + i), (1, 2), b"f", false);
        }
        assert!(index.len() <= MAX_NODES, "{}", index.len());
        assert!(
            index.path((1, 2), root).is_some(),
            "directories survive the shrink"
        );
        assert!(index.path((1, 100 + MAX_NODES as u64 + 9), root).is_some());
    }
}
