//! The one writer of `state.json`. Every part of the supervisor that changes the machine's
//! state (bring-up steps, the readiness and disk watchers, the event loop, the outcome) goes
//! through [`StateWriter::update`], which changes the state and writes the file while holding
//! one lock. Writes are therefore in the order of the changes: a slow write can never land
//! after a newer one and take `state.json` back to an older step or phase (as a disk
//! measurement written after `Stopping` once could). The control socket reads the same state.

use std::sync::{Arc, Mutex, MutexGuard};

use super::log;
use crate::machine::MachineDir;
use crate::machine::state::{Phase, StateFile, write_state_file};

/// Shared handle on the machine's state; clones write to the same file.
#[derive(Clone)]
pub struct StateWriter {
    inner: Arc<Inner>,
}

struct Inner {
    dir: MachineDir,
    file: Mutex<StateFile>,
}

impl StateWriter {
    /// Starts from `first` and writes it.
    pub fn new(dir: &MachineDir, first: StateFile) -> StateWriter {
        let w = StateWriter {
            inner: Arc::new(Inner {
                dir: dir.clone(),
                file: Mutex::new(first),
            }),
        };
        w.update(|_| {});
        w
    }

    /// Changes the state with `f` and writes it, under the lock.
    pub fn update(&self, f: impl FnOnce(&mut StateFile)) {
        let mut file = self.lock();
        f(&mut file);
        if let Err(e) = write_state_file(&self.inner.dir, &file) {
            log(format!("writing state: {e}"));
        }
    }

    /// The progress step `devbox start` shows.
    pub fn step(&self, step: &str) {
        self.update(|s| s.step = step.to_owned());
    }

    pub fn snapshot(&self) -> StateFile {
        self.lock().clone()
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    fn lock(&self) -> MutexGuard<'_, StateFile> {
        // A thread that panicked while holding the lock leaves a whole `StateFile` behind.
        self.inner
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::state::read_state_file;

    #[test]
    fn the_file_never_goes_back_to_an_older_state() {
        let d = tempfile::tempdir().unwrap();
        let dir = MachineDir {
            name: "m".into(),
            path: d.path().to_owned(),
        };
        let state = StateWriter::new(&dir, StateFile::starting(1, String::new()));
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A reader checks every version it sees against the last one.
        let reader = {
            let (dir, done) = (dir.clone(), done.clone());
            std::thread::spawn(move || {
                let mut last = 0u64;
                let mut seen = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    if let Some(f) = read_state_file(&dir).unwrap()
                        && let Ok(n) = f.step.parse::<u64>()
                    {
                        assert!(n >= last, "state.json went back from step {last} to {n}");
                        last = n;
                        seen += 1;
                    }
                }
                seen
            })
        };
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (state, counter) = (state.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        state.update(|s| {
                            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            s.step = (n + 1).to_string();
                        });
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0, "the reader saw no state");
        let last = read_state_file(&dir).unwrap().unwrap();
        assert_eq!(last.step, "200");
        assert_eq!(state.snapshot().step, "200");
        assert_eq!(state.phase(), Phase::Starting);
    }
}
