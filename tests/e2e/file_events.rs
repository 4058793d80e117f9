//! Host changes to a share raise, in the guest and in a container bind-mounting it, exactly
//! the inotify events the same change made locally in the guest raises (issue #17): the
//! share watcher in the supervisor and the guest's `devbox_notify` module, end to end.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::machine::Machine;
use crate::shares::{SHARE_UID, shares_ro, shares_rw};

/// The events compared: what watchers (webpack, vite, nodemon, inotifywait) act on.
const EVENTS: &str =
    "create,modify,attrib,close_write,delete,moved_from,moved_to,delete_self,move_self";
/// A generous bound for an event to arrive (the 2 s; not a speed goal).
const WAIT: Duration = Duration::from_secs(2);

/// Starts `inotifywait -m -r` on `dir` in the guest (or, with `container`, in a container that
/// bind-mounts it), logging `EVENT PATH` lines with `dir` written `X`.
fn watch(m: &Machine, dir: &str, log: &str, container: Option<&str>) {
    // `log`: the guest file (a container's events go to its own log, `docker logs`).
    let cmd = format!("inotifywait -q -m -r -e {EVENTS} --format '%e %w%f' {dir}");
    match container {
        None => {
            m.ssh(&format!("({cmd} > {log} 2>&1 &) ; sleep 0.5"));
        }
        Some(name) => {
            // The guest's own inotifywait, run in the container's mount namespace on the
            // bind mount: the container's view of the share is what is watched.
            m.ssh("mkdir -p /fe-app");
            m.docker_ok(&[
                "run",
                "-d",
                "--name",
                name,
                "-v",
                "/:/host:ro",
                "-v",
                &format!("{dir}:/host/fe-app"),
                "--entrypoint",
                "/host/usr/bin/busybox",
                "bb:e2e",
                "chroot",
                "/host",
                "sh",
                "-c",
                &format!("inotifywait -q -m -r -e {EVENTS} --format '%e %w%f' /fe-app"),
            ]);
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Waits (bounded) until this start's share watcher runs: it starts right after the machine
/// is ready, so a change made before then would have no watcher yet.
fn wait_for_watcher(m: &Machine) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = m.supervisor_log();
        let ready = log.rfind("ready: Docker");
        let watching = log.rfind("file events: watching the shares");
        if matches!((ready, watching), (Some(r), Some(w)) if w > r) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the share watcher did not start after this start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn normalised(text: &str, dir: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.replace(dir, "X"))
        .filter(|l| !l.is_empty())
        .collect()
}

/// Lines of `log` in the guest, `dir` written `X`, once they stop growing (bounded).
fn settled(m: &Machine, log: &str, dir: &str, want: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = normalised(&m.ssh(&format!("cat {log}")), dir);
        if lines.len() >= want || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn check_file_events(m: &Machine) {
    m.busybox_image();
    wait_for_watcher(m);
    let host = shares_rw().join("fe");
    let guest_share = "/mnt/rw/fe";
    let _ = std::fs::remove_dir_all(&host);
    std::fs::create_dir_all(host.join("sub")).unwrap();
    std::fs::create_dir(host.join("rd")).unwrap();
    std::fs::write(host.join("f"), "hi\n").unwrap();
    m.ssh("rm -rf /tmp/fe-local; mkdir -p /tmp/fe-local/sub /tmp/fe-local/rd; echo hi > /tmp/fe-local/f; \
           ls -R /mnt/rw/fe > /dev/null");
    watch(m, guest_share, "/tmp/fe-share.log", None);
    watch(m, "/tmp/fe-local", "/tmp/fe-local.log", None);
    let _ = m.docker(&["rm", "-f", "fe-watch"]);
    watch(m, guest_share, "", Some("fe-watch"));

    // Each operation once on the host (on the share) and once in the guest (on a local
    // directory), one at a time, as `sh -c` with X for the directory.
    let ops = [
        "echo new > X/g",
        "echo more >> X/f",
        "truncate -s 1 X/f",
        "chmod 600 X/f",
        "mv X/g X/h",
        "mv X/h X/sub/h",
        "rm X/sub/h",
        "mkdir X/d2",
        "rmdir X/rd",
        "ln -s f X/lnk",
        "mkdir X/d2/deeper",
        "echo in > X/d2/deeper/file",
    ];
    for op in ops {
        let local = m.ssh_output(&format!("cd /tmp && {}", op.replace('X', "/tmp/fe-local")));
        assert!(local.status.success(), "{op} in the guest");
        let st = std::process::Command::new("sh")
            .args(["-c", &op.replace('X', host.to_str().unwrap())])
            .status()
            .unwrap();
        assert!(st.success(), "{op} on the host");
        let want = normalised(&m.ssh("cat /tmp/fe-local.log"), "/tmp/fe-local").len();
        let got = settled(m, "/tmp/fe-share.log", guest_share, want);
        assert_eq!(
            got,
            normalised(&m.ssh("cat /tmp/fe-local.log"), "/tmp/fe-local"),
            "after `{op}`: the share's events (left) against a local directory's"
        );
    }
    let local = normalised(&m.ssh("cat /tmp/fe-local.log"), "/tmp/fe-local");
    let deadline = Instant::now() + WAIT;
    let container = loop {
        let out = m.docker_ok(&["logs", "fe-watch"]);
        let lines = normalised(&out, "/fe-app");
        if lines.len() >= local.len() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        container, local,
        "a container bind-mounting the share sees the same events"
    );

    // A change made in the guest raises only its own, local events: no echo from the host.
    // (In a directory of the share's owner, whose identity the file server takes.)
    let mine = host.join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::os::unix::fs::chown(&mine, Some(SHARE_UID), Some(SHARE_UID)).unwrap();
    let guest_share = &format!("{guest_share}/mine");
    m.ssh(&format!(
        "ls {guest_share}; killall inotifywait; : > /tmp/fe-share.log; : > /tmp/fe-local.log"
    ));
    watch(m, guest_share, "/tmp/fe-share.log", None);
    watch(m, "/tmp/fe-local", "/tmp/fe-local.log", None);
    // In two steps: `inotifywait -r` watches a new directory only after it has printed its
    // CREATE, so what happens in `dd` is done once both watchers are watching it (a change
    // made before would be missed by one watcher or the other, depending on timing alone).
    let (first, then) = (
        "echo x > D/e; echo y >> D/e; mkdir D/dd",
        "mv D/e D/dd/e2; chmod 600 D/dd/e2; rm -r D/dd",
    );
    m.ssh(&first.replace('D', guest_share));
    m.ssh(&first.replace('D', "/tmp/fe-local"));
    let deadline = Instant::now() + Duration::from_secs(30);
    for (log, dir) in [
        ("/tmp/fe-share.log", guest_share.as_str()),
        ("/tmp/fe-local.log", "/tmp/fe-local"),
    ] {
        while !normalised(&m.ssh(&format!("cat {log}")), dir)
            .iter()
            .any(|l| l == "CREATE,ISDIR X/dd")
        {
            assert!(
                Instant::now() < deadline,
                "{log} never showed dd's creation"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // The watch on `dd` follows the printed event at once; a second is ample.
    std::thread::sleep(Duration::from_secs(1));
    m.ssh(&then.replace('D', guest_share));
    m.ssh(&then.replace('D', "/tmp/fe-local"));
    m.ssh("sync");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        normalised(&m.ssh("cat /tmp/fe-share.log"), guest_share),
        normalised(&m.ssh("cat /tmp/fe-local.log"), "/tmp/fe-local"),
        "guest-side changes on the share raise exactly the local events (no echo)"
    );

    check_burst_final_state(m, &mine, guest_share);

    // A read-only share gets events too.
    let ro = shares_ro().join("fe-ro.txt");
    let _ = std::fs::remove_file(&ro);
    m.ssh("killall inotifywait; : > /tmp/fe-ro.log");
    m.ssh("(inotifywait -q -m -e create,modify,close_write --format '%e %f' /mnt/ro > /tmp/fe-ro.log 2>&1 &); sleep 0.5");
    std::fs::write(&ro, "from the host\n").unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let log = m.ssh("cat /tmp/fe-ro.log");
        if log.contains("CLOSE_WRITE,CLOSE fe-ro.txt") {
            assert!(
                log.starts_with("CREATE fe-ro.txt\nMODIFY fe-ro.txt\n"),
                "{log}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no event on the read-only share: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::remove_file(&ro).unwrap();
    m.ssh("killall inotifywait");
    let _ = m.docker(&["rm", "-f", "fe-watch"]);
}

/// 10,000 mixed host operations in a burst: whatever coalescing merged, the state a watcher
/// rebuilds from its events is the truth.
fn check_burst_final_state(m: &Machine, host: &Path, guest_share: &str) {
    let burst = host.join("burst");
    std::fs::create_dir(&burst).unwrap();
    m.ssh(&format!(
        "ls {guest_share}/burst > /dev/null; killall inotifywait; : > /tmp/fe-burst.log"
    ));
    m.ssh(&format!(
        "(inotifywait -q -m -e create,delete,moved_from,moved_to --format '%e %f' {guest_share}/burst > /tmp/fe-burst.log 2>&1 &); sleep 0.5"
    ));
    // 2,500 rounds of four operations on 500 names: create, write, rename, delete.
    let mut ops = 0;
    for round in 0..2500u32 {
        let a = burst.join(format!("n{}", round % 500));
        let b = burst.join(format!("n{}", (round * 7 + 3) % 500));
        match round % 4 {
            0 => {
                std::fs::write(&a, b"x").unwrap();
                std::fs::write(&b, b"y").unwrap();
            }
            1 => {
                let _ = std::fs::rename(&a, &b);
                std::fs::write(&a, b"z").unwrap();
            }
            2 => {
                let _ = std::fs::remove_file(&a);
                let _ = std::fs::remove_file(&b);
            }
            _ => {
                std::fs::write(&b, b"w").unwrap();
                let _ = std::fs::rename(&b, &a);
            }
        }
        ops += 4;
    }
    assert_eq!(ops, 10_000);
    let truth: std::collections::BTreeSet<String> = std::fs::read_dir(&burst)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // Replay the events: a name exists after CREATE/MOVED_TO, not after DELETE/MOVED_FROM.
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let mut seen = std::collections::BTreeSet::new();
        for line in m.ssh("cat /tmp/fe-burst.log").lines() {
            let Some((ev, name)) = line.split_once(' ') else {
                continue;
            };
            if ev.starts_with("CREATE") || ev.starts_with("MOVED_TO") {
                seen.insert(name.to_owned());
            } else if ev.starts_with("DELETE") || ev.starts_with("MOVED_FROM") {
                seen.remove(name);
            }
        }
        if seen == truth || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let missed: Vec<_> = truth.symmetric_difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "after 10,000 host operations, {} of {} names end in the wrong state for a watcher: {:?}",
        missed.len(),
        truth.len(),
        &missed[..missed.len().min(10)]
    );
    m.ssh("killall inotifywait");
}

/// After a SIGKILL of the supervisor and a new start, host changes raise events again.
pub fn assert_events_flow(m: &Machine) {
    wait_for_watcher(m);
    let host = shares_rw().join("fe-after-kill");
    let _ = std::fs::remove_dir_all(&host);
    std::fs::create_dir(&host).unwrap();
    m.ssh("ls /mnt/rw/fe-after-kill > /dev/null; : > /tmp/fe-kill.log");
    m.ssh(
        "(inotifywait -q -m -e create --format '%e %f' /mnt/rw/fe-after-kill > /tmp/fe-kill.log 2>&1 &); sleep 0.5",
    );
    std::fs::write(host.join("new"), b"1").unwrap();
    let deadline = Instant::now() + WAIT;
    while !m.ssh("cat /tmp/fe-kill.log").contains("CREATE new") {
        assert!(
            Instant::now() < deadline,
            "no event for a host change after the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    m.ssh("killall inotifywait");
}
