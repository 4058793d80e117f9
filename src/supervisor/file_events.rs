//! Host changes to the shares, raised as inotify events in the guest.
//!
//! NFS carries no change notifications, so a watcher in the guest (webpack, vite, nodemon,
//! `inotifywait`) never hears of an edit made in the host's editor. This part watches every
//! share on the host (the `notify` crate: inotify on Linux, FSEvents on macOS, one recursive
//! watch per share) and streams one record per change to the guest's `/dev/devbox-notify`
//! over an SSH channel running `cat`; the guest's `devbox_notify` module raises the same
//! fsnotify events a local change would have (`assets/guest/module/devbox_notify.c` has the
//! record format: `c`/`C` created, `d` removed, `m` modified, `w` closed after writing, `a`
//! attributes, `r FROM TO` renamed).
//!
//! - Not relayed: opens, reads and closes without writing; changes the file server made for
//!   the guest itself ([`EchoLog`]: the guest raised its own events for those).
//! - Bursts: records are gathered for [`FLUSH_EVERY`], and a record that repeats its path's
//!   previous one in the batch is dropped (so a path's final state is always sent); the queue between the watcher and the sender is bounded
//!   ([`QUEUE`] events). When it fills, or the host's own inotify queue overflows, the events
//!   in between are lost and the guest gets the documented overflow signal instead: an
//!   `IN_ATTRIB` on each share's root directory, after which a watcher should rescan
//!   (README, "File events").
//! - A machine whose image has no module (older, or built off Linux) gets no events and one
//!   line in the log saying how to get them (`devbox upgrade`).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};

use super::log;
use super::parts::Part;
use crate::nfs::echo::EchoLog;
use crate::ssh;

/// How long records are gathered before they are sent (the added latency, at most).
pub const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Events waiting between the host watcher and the sender, at most.
pub const QUEUE: usize = 65_536;
/// The guest's side of the channel.
const GUEST_COMMAND: &str = "exec cat > /dev/devbox-notify";

/// One share: where it is on the host and where the guest mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub host: PathBuf,
    pub guest: String,
}

/// One record for the guest's module.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    Created(String),
    DirCreated(String),
    Removed(String),
    Modified(String),
    ClosedWrite(String),
    Attrib(String),
    Renamed(String, String),
}

impl Record {
    /// The line the module reads.
    pub fn line(&self) -> String {
        let one = |op: char, p: &str| format!("{op} {}\n", escape(p));
        match self {
            Record::Created(p) => one('c', p),
            Record::DirCreated(p) => one('C', p),
            Record::Removed(p) => one('d', p),
            Record::Modified(p) => one('m', p),
            Record::ClosedWrite(p) => one('w', p),
            Record::Attrib(p) => one('a', p),
            Record::Renamed(a, b) => format!("r {} {}\n", escape(a), escape(b)),
        }
    }
}

/// `%XX` for every byte outside 0x21..0x7e and for `%` (the module's format).
pub fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The guest path of a host path inside one of `shares`.
pub fn guest_path(shares: &[Share], host: &Path) -> Option<String> {
    shares.iter().find_map(|s| {
        let rest = host.strip_prefix(&s.host).ok()?;
        let rest = rest.to_str()?;
        Some(if rest.is_empty() {
            s.guest.clone()
        } else {
            format!("{}/{rest}", s.guest.trim_end_matches('/'))
        })
    })
}

/// The records a host event makes, before the echo filter.
pub fn records(shares: &[Share], ev: &Event) -> Vec<Record> {
    let g = |i: usize| ev.paths.get(i).and_then(|p| guest_path(shares, p));
    let one = |f: fn(String) -> Record| g(0).map(f).into_iter().collect();
    match &ev.kind {
        EventKind::Create(CreateKind::Folder) => one(Record::DirCreated),
        EventKind::Create(_) => one(Record::Created),
        // DELETE_SELF of a watched directory repeats its parent's DELETE: the batch keeps one.
        EventKind::Remove(RemoveKind::Other) => Vec::new(),
        EventKind::Remove(_) => one(Record::Removed),
        EventKind::Modify(ModifyKind::Data(_)) => one(Record::Modified),
        EventKind::Modify(ModifyKind::Metadata(_)) => one(Record::Attrib),
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => one(Record::ClosedWrite),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if ev.paths.len() == 2 => {
            renamed(shares, &ev.paths[0], &ev.paths[1])
        }
        // The halves of a rename are decided when the batch is flushed (see `Batch`).
        _ => Vec::new(),
    }
}

/// A rename on the host: a rename in the guest within one share; between two shares (two
/// filesystems in the guest) or across a share's edge, a removal and a creation.
fn renamed(shares: &[Share], from: &Path, to: &Path) -> Vec<Record> {
    let share = |p: &Path| shares.iter().position(|s| p.starts_with(&s.host));
    match (guest_path(shares, from), guest_path(shares, to)) {
        (Some(a), Some(b)) if share(from) == share(to) => vec![Record::Renamed(a, b)],
        (a, b) => a
            .map(Record::Removed)
            .into_iter()
            .chain(b.map(|b| created(to, b)))
            .collect(),
    }
}

fn created(host: &Path, guest: String) -> Record {
    if std::fs::symlink_metadata(host).is_ok_and(|m| m.is_dir()) {
        Record::DirCreated(guest)
    } else {
        Record::Created(guest)
    }
}

/// Records gathered for one flush, in order; a record that repeats the last one of its
/// path is dropped (a hundred writes make one `m`), so each path's last record, its final
/// state, is always kept.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    last: HashMap<String, Record>,
    /// Rename halves by cookie: (from, to), host paths. A half left alone at the flush is a
    /// move out of (or into) the watched shares.
    halves: Vec<(usize, Option<PathBuf>, Option<PathBuf>)>,
}

impl Batch {
    fn push(&mut self, r: Record) {
        let paths: Vec<&String> = match &r {
            Record::Renamed(a, b) => vec![a, b],
            Record::Created(p)
            | Record::DirCreated(p)
            | Record::Removed(p)
            | Record::Modified(p)
            | Record::ClosedWrite(p)
            | Record::Attrib(p) => vec![p],
        };
        if paths.iter().all(|p| self.last.get(*p) == Some(&r)) {
            return;
        }
        for p in paths {
            self.last.insert(p.clone(), r.clone());
        }
        self.records.push(r);
    }

    fn half(&mut self, cookie: usize, from: Option<&Path>, to: Option<&Path>) {
        match self.halves.iter_mut().find(|h| h.0 == cookie) {
            Some(h) => {
                if from.is_some() {
                    h.1 = from.map(Path::to_owned);
                }
                if to.is_some() {
                    h.2 = to.map(Path::to_owned);
                }
            }
            None => self
                .halves
                .push((cookie, from.map(Path::to_owned), to.map(Path::to_owned))),
        }
    }

    /// Adds `ev`; a complete rename (`Both`) settles its halves.
    fn add(&mut self, shares: &[Share], ev: &Event) {
        if let EventKind::Modify(ModifyKind::Name(mode)) = &ev.kind {
            match (mode, ev.attrs.tracker()) {
                (RenameMode::From, Some(c)) => {
                    return self.half(c, ev.paths.first().map(PathBuf::as_path), None);
                }
                (RenameMode::To, Some(c)) => {
                    return self.half(c, None, ev.paths.first().map(PathBuf::as_path));
                }
                (RenameMode::Both, Some(c)) => self.halves.retain(|h| h.0 != c),
                // A watched directory moved (MOVE_SELF): its parent's events say where.
                (RenameMode::From | RenameMode::To, None) => return,
                _ => {}
            }
        }
        for r in records(shares, ev) {
            self.push(r);
        }
    }

    /// The records, with lone rename halves as removals and creations.
    fn take(&mut self, shares: &[Share]) -> Vec<Record> {
        for (_, from, to) in std::mem::take(&mut self.halves) {
            match (from, to) {
                (Some(f), None) => {
                    if let Some(g) = guest_path(shares, &f) {
                        self.push(Record::Removed(g));
                    }
                }
                (None, Some(t)) => {
                    if let Some(g) = guest_path(shares, &t) {
                        let r = created(&t, g);
                        self.push(r);
                    }
                }
                (Some(f), Some(t)) => {
                    for r in renamed(shares, &f, &t) {
                        self.push(r);
                    }
                }
                (None, None) => {}
            }
        }
        self.last.clear();
        std::mem::take(&mut self.records)
    }
}

/// Whether the host event at `path` echoes a change the file server made.
fn is_echo(echo: &EchoLog, path: &Path) -> bool {
    let key = |m: std::fs::Metadata| (m.dev(), m.ino());
    let dir = path
        .parent()
        .and_then(|p| std::fs::symlink_metadata(p).ok())
        .map(key);
    let name = path
        .file_name()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or(b"");
    let object = std::fs::symlink_metadata(path).ok().map(key);
    echo.is_echo(dir, name, object)
}

/// Directories below `root` (itself included), counted up to `limit`.
fn count_dirs(root: &Path, limit: u64) -> u64 {
    let mut n = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        n += 1;
        if n > limit {
            break;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    n
}

/// The host's inotify watch budget for this user (Linux).
fn watch_budget() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Logs the fix when the shares hold more directories than the host's inotify budget.
fn check_budget(roots: &[PathBuf]) {
    let Some(budget) = watch_budget() else {
        return;
    };
    let need: u64 = roots.iter().map(|r| count_dirs(r, budget + 1)).sum();
    if need > budget {
        log(format!(
            "file events: the shares hold {need}+ directories, over this host's inotify watch \
             budget ({budget}): changes in the directories past it raise no events. Fix: sudo \
             sysctl fs.inotify.max_user_watches={} (and the same line in \
             /etc/sysctl.d/90-devbox.conf to keep it)",
            (need * 2).next_power_of_two()
        ));
    }
}

/// The running share watcher.
pub struct FileEvents {
    stop: Arc<AtomicBool>,
    watcher: Option<notify::RecommendedWatcher>,
    threads: Vec<JoinHandle<()>>,
    /// Closed to end the guest's `cat` (its stdin reaches EOF).
    writer: Arc<Mutex<Option<std::io::PipeWriter>>>,
}

impl Part for FileEvents {
    fn name(&self) -> &str {
        "share watcher"
    }
    fn stop(mut self: Box<Self>) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.watcher.take());
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts watching `shares` for the guest at `target`; `None` (logged) when the guest has
/// no module or the host cannot watch.
pub fn start(
    target: &ssh::Target,
    shares: Vec<Share>,
    echo: Arc<EchoLog>,
) -> anyhow::Result<Option<FileEvents>> {
    if shares.is_empty() {
        return Ok(None);
    }
    let conn = ssh::Connection::connect(target, Duration::from_secs(10))?;
    let probe = conn.exec_capture("test -c /dev/devbox-notify")?;
    if probe.status != 0 {
        log(
            "file events are off: this machine's image has no devbox_notify module (images \
             built before it, or off Linux); `devbox upgrade` moves it to a newer image",
        );
        return Ok(None);
    }
    drop(conn);
    // Counting a large share's directories takes a while: in the background, log only.
    let roots: Vec<PathBuf> = shares.iter().map(|s| s.host.clone()).collect();
    let _ = std::thread::Builder::new()
        .name("file-events-budget".into())
        .spawn(move || check_budget(&roots));
    let stop = Arc::new(AtomicBool::new(false));
    let overflow = Arc::new(AtomicBool::new(false));
    let (tx, rx): (SyncSender<Event>, Receiver<Event>) = sync_channel(QUEUE);
    let handler = {
        let overflow = overflow.clone();
        move |res: notify::Result<Event>| match res {
            Ok(ev) if ev.need_rescan() => overflow.store(true, Ordering::SeqCst),
            Ok(ev) => {
                if tx.try_send(ev).is_err() {
                    overflow.store(true, Ordering::SeqCst);
                }
            }
            Err(e) => log(format!("file events: the host watcher failed: {e}")),
        }
    };
    let mut watcher = notify::recommended_watcher(handler)?;
    for s in &shares {
        if let Err(e) = watcher.watch(&s.host, RecursiveMode::Recursive) {
            // Out of watches part-way: what was added keeps working (see the budget above).
            log(format!(
                "file events: cannot watch all of {}: {e}",
                s.host.display()
            ));
        }
    }

    let (reader, writer) = std::io::pipe()?;
    let writer = Arc::new(Mutex::new(Some(writer)));
    let sender = {
        let (stop, target) = (stop.clone(), target.clone());
        std::thread::Builder::new()
            .name("file-events-ssh".into())
            .spawn(move || channel(&target, reader, &stop))?
    };
    let batcher = {
        let (stop, writer) = (stop.clone(), writer.clone());
        std::thread::Builder::new()
            .name("file-events".into())
            .spawn(move || batch_loop(&shares, &rx, &echo, &overflow, &writer, &stop))?
    };
    log("file events: watching the shares");
    Ok(Some(FileEvents {
        stop,
        watcher: Some(watcher),
        threads: vec![sender, batcher],
        writer,
    }))
}

/// Keeps an SSH channel running the guest's `cat` fed from `reader`, reconnecting when it
/// drops, until stopped (the pipe's writer closed: EOF ends the command).
fn channel(target: &ssh::Target, mut reader: std::io::PipeReader, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let result = ssh::Connection::connect(target, Duration::from_secs(10)).and_then(|c| {
            c.exec(
                GUEST_COMMAND,
                Some(&mut reader),
                &mut std::io::sink(),
                &mut std::io::sink(),
            )
        });
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match result {
            // EOF from the writer: the part is stopping.
            Ok(0) => break,
            Ok(code) => log(format!(
                "file events: the guest's channel ended ({code}); reconnecting"
            )),
            Err(e) => log(format!("file events: the guest's channel failed: {e}")),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn batch_loop(
    shares: &[Share],
    rx: &Receiver<Event>,
    echo: &EchoLog,
    overflow: &AtomicBool,
    writer: &Mutex<Option<std::io::PipeWriter>>,
    stop: &AtomicBool,
) {
    let mut batch = Batch::default();
    while !stop.load(Ordering::SeqCst) {
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let until = Instant::now() + FLUSH_EVERY;
        let mut next = Some(first);
        while let Some(ev) = next.take() {
            if !ev.paths.iter().all(|p| is_echo(echo, p)) {
                batch.add(shares, &ev);
            }
            let left = until.saturating_duration_since(Instant::now());
            next = rx.recv_timeout(left).ok();
        }
        let mut records = batch.take(shares);
        if overflow.swap(false, Ordering::SeqCst) {
            // Lost events: drop what is queued and give the documented signal.
            while !matches!(
                rx.try_recv(),
                Err(TryRecvError::Empty | TryRecvError::Disconnected)
            ) {}
            log(
                "file events: the host's event queue overflowed; watchers get IN_ATTRIB on each share's root and should rescan",
            );
            records = shares
                .iter()
                .map(|s| Record::Attrib(s.guest.clone()))
                .collect();
        }
        if records.is_empty() {
            continue;
        }
        let text: String = records.iter().map(Record::line).collect();
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pipe) = w.as_mut() else {
            break;
        };
        if pipe.write_all(text.as_bytes()).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, MetadataKind};

    fn shares() -> Vec<Share> {
        vec![
            Share {
                host: "/home/ann/src".into(),
                guest: "/src".into(),
            },
            Share {
                host: "/home/ann/data".into(),
                guest: "/data".into(),
            },
        ]
    }

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn paths_map_to_the_guest_and_are_escaped() {
        let s = shares();
        assert_eq!(
            guest_path(&s, Path::new("/home/ann/src/a b/c")).as_deref(),
            Some("/src/a b/c")
        );
        assert_eq!(
            guest_path(&s, Path::new("/home/ann/data")).as_deref(),
            Some("/data")
        );
        assert_eq!(guest_path(&s, Path::new("/home/ann/x")), None);
        assert_eq!(guest_path(&s, Path::new("/etc/passwd")), None);
        assert_eq!(
            Record::Renamed("/src/a b".into(), "/src/100%".into()).line(),
            "r /src/a%20b /src/100%25\n"
        );
        assert_eq!(
            Record::Created("/src/é\n".into()).line(),
            "c /src/%C3%A9%0A\n"
        );
    }

    #[test]
    fn events_become_records() {
        let s = shares();
        let r = |kind, paths: &[&str]| records(&s, &ev(kind, paths));
        assert_eq!(
            r(EventKind::Create(CreateKind::File), &["/home/ann/src/f"]),
            [Record::Created("/src/f".into())]
        );
        assert_eq!(
            r(EventKind::Create(CreateKind::Folder), &["/home/ann/src/d"]),
            [Record::DirCreated("/src/d".into())]
        );
        assert_eq!(
            r(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                &["/home/ann/src/f"]
            ),
            [Record::Modified("/src/f".into())]
        );
        assert_eq!(
            r(
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                &["/home/ann/src/f"]
            ),
            [Record::Attrib("/src/f".into())]
        );
        assert_eq!(
            r(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["/home/ann/src/f"]
            ),
            [Record::ClosedWrite("/src/f".into())]
        );
        assert!(
            r(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["/home/ann/src/f"]
            )
            .is_empty()
        );
        assert!(r(EventKind::Create(CreateKind::File), &["/tmp/x"]).is_empty());
    }

    #[test]
    fn renames_pair_by_cookie_and_lone_halves_become_remove_or_create() {
        let s = shares();
        let mut b = Batch::default();
        let named = |mode, p: &str, cookie| {
            ev(EventKind::Modify(ModifyKind::Name(mode)), &[p]).set_tracker(cookie)
        };
        b.add(&s, &named(RenameMode::From, "/home/ann/src/a", 7));
        b.add(&s, &named(RenameMode::To, "/home/ann/src/d/b", 7));
        b.add(
            &s,
            &ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/home/ann/src/a", "/home/ann/src/d/b"],
            )
            .set_tracker(7),
        );
        // Moved out of the shares, and a cross-share rename.
        b.add(&s, &named(RenameMode::From, "/home/ann/src/gone", 8));
        b.add(&s, &named(RenameMode::From, "/home/ann/src/x", 9));
        b.add(&s, &named(RenameMode::To, "/home/ann/data/y", 9));
        assert_eq!(
            b.take(&s),
            [
                Record::Renamed("/src/a".into(), "/src/d/b".into()),
                Record::Removed("/src/gone".into()),
                Record::Removed("/src/x".into()),
                Record::Created("/data/y".into()),
            ]
        );
    }

    #[test]
    fn a_batch_sends_each_record_once_in_order() {
        let s = shares();
        let mut b = Batch::default();
        for _ in 0..100 {
            b.add(
                &s,
                &ev(
                    EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                    &["/home/ann/src/f"],
                ),
            );
        }
        b.add(
            &s,
            &ev(EventKind::Remove(RemoveKind::File), &["/home/ann/src/f"]),
        );
        b.add(
            &s,
            &ev(EventKind::Create(CreateKind::File), &["/home/ann/src/f"]),
        );
        assert_eq!(
            b.take(&s),
            [
                Record::Modified("/src/f".into()),
                Record::Removed("/src/f".into()),
                Record::Created("/src/f".into()),
            ]
        );
    }

    #[test]
    fn an_overflow_becomes_an_attrib_on_every_share_root() {
        use std::io::Read;
        let s = shares();
        let (tx, rx) = sync_channel(4);
        let (mut reader, writer) = std::io::pipe().unwrap();
        let writer = Arc::new(Mutex::new(Some(writer)));
        let (overflow, stop) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicBool::new(false)),
        );
        let echo = Arc::new(EchoLog::new());
        let t = {
            let (s, writer, overflow, stop) =
                (s.clone(), writer.clone(), overflow.clone(), stop.clone());
            std::thread::spawn(move || batch_loop(&s, &rx, &echo, &overflow, &writer, &stop))
        };
        // Events lost to the overflow: what arrives is the signal, not a partial story.
        tx.send(ev(
            EventKind::Create(CreateKind::File),
            &["/home/ann/src/lost"],
        ))
        .unwrap();
        let mut got = vec![0u8; 64];
        let n = reader.read(&mut got).unwrap();
        assert_eq!(std::str::from_utf8(&got[..n]).unwrap(), "a /src\na /data\n");
        assert!(!overflow.load(Ordering::SeqCst), "the signal is given once");
        stop.store(true, Ordering::SeqCst);
        drop(tx);
        t.join().unwrap();
    }
}
