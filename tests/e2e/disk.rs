//! The data disk: discard reaching the host file, and a full disk (containers keep serving,
//! SSH works, the guest's reserve gives dockerd room, `status` warns, the space comes back).
//! The resize is in `lifecycle`, where the machine is down anyway.

use std::time::{Duration, Instant};

use crate::MACHINE;
use crate::machine::{MIB, Machine, mib};
use crate::support::guest::text;

/// Deleting data in the guest gives the space back in the host file (online discard).
pub fn check_discard(m: &Machine) {
    let discard_max = m.ssh(
        "for d in /sys/block/vd*; do if [ \"$(cat $d/serial)\" = devbox-data ]; then cat $d/queue/discard_max_bytes; fi; done",
    );
    eprintln!(
        "[e2e] guest data disk discard_max_bytes = {}",
        discard_max.trim()
    );
    assert_ne!(discard_max.trim(), "0", "the data disk offers discard");

    let before = m.allocated();
    let t = Instant::now();
    m.ssh("dd if=/dev/urandom of=/var/lib/docker/x bs=1M count=300 2>/dev/null && sync");
    let write_time = t.elapsed();
    let after_write = m.allocated();
    let written = after_write.saturating_sub(before);
    assert!(
        written >= 290 * MIB,
        "300 MiB written in the guest allocated only {:.1} MiB on the host",
        mib(written)
    );
    let t = Instant::now();
    m.ssh("rm /var/lib/docker/x && sync");
    let rm_time = t.elapsed();
    let target = after_write - written * 9 / 10;
    let reclaimed = m.await_allocated_at_most(target, Duration::from_secs(60));
    let after_rm = m.allocated();
    eprintln!(
        "[e2e] FIGURES discard: host allocated {:.1} MiB before, {:.1} MiB after writing 300 MiB \
         ({:.1} MiB allocated, dd+sync {:.1} s), {:.1} MiB after rm+sync ({:.1} MiB freed = {:.0} %); \
         rm+sync took {:.2} s, host file down by 90 % {:?} after it returned",
        mib(before),
        mib(after_write),
        mib(written),
        write_time.as_secs_f64(),
        mib(after_rm),
        mib(after_write - after_rm),
        (after_write - after_rm) as f64 * 100.0 / written as f64,
        rm_time.as_secs_f64(),
        reclaimed
    );
    assert!(
        reclaimed.is_some(),
        "the host file kept {:.1} of {:.1} MiB after the guest deleted them",
        mib(after_rm - before),
        mib(written)
    );
}

/// A full data disk: the container keeps serving, SSH works, the reserve gives dockerd room,
/// `status` warns; after removing the filler the space comes back in the guest and the host.
pub fn check_full_disk(m: &Machine) {
    m.busybox_image();
    let o = m.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "bb:e2e",
        "/bin/httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    assert!(o.status.success(), "docker run: {}", text(&o.stderr));
    let o = m.docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"]);
    let ip = text(&o.stdout).trim().to_owned();
    let url = format!("http://{ip}/");
    let c = m.h.curl_output(&url);
    assert_eq!(text(&c.stdout), "hello from web\n", "{}", text(&c.stderr));
    assert!(m.reserve_held(), "the guest made its reserve at boot");
    // The containers running now (on the shared machine, other checks' too): `docker ps`
    // must still list exactly these on the full disk.
    let running = m.docker_ok(&["ps", "--format", "{{.Names}}"]);
    assert!(running.lines().any(|l| l == "web"), "{running}");

    // Fill with non-zero data (a 16 MiB random chunk repeated), so the host file really
    // grows: QEMU's detect-zeroes=unmap would turn zeros into holes.
    let before_fill = m.allocated();
    let t = Instant::now();
    let fill = m.devbox(&[
        "ssh",
        MACHINE,
        "--",
        "dd if=/dev/urandom of=/tmp/chunk bs=1M count=16 2>/dev/null; \
         while cat /tmp/chunk; do :; done >/var/lib/docker/filler; sync; rm /tmp/chunk",
    ]);
    let fill_time = t.elapsed();
    assert!(
        text(&fill.stderr).contains("No space left on device"),
        "the filler stops at ENOSPC: {}",
        text(&fill.stderr)
    );
    let (size, used, free) = m.guest_df();
    let after_fill = m.allocated();
    eprintln!(
        "[e2e] FIGURES fill: {:.1} s; guest {:.1} MiB used of {:.1} MiB, {:.1} MiB free; \
         host allocated {:.1} -> {:.1} MiB",
        fill_time.as_secs_f64(),
        mib(used),
        mib(size),
        mib(free),
        mib(before_fill),
        mib(after_fill)
    );

    // At ENOSPC, before the guest releases its reserve: what still works.
    let t = Instant::now();
    let early_run = m.docker(&["run", "--rm", "bb:e2e", "/bin/echo", "ok"]);
    eprintln!(
        "[e2e] FIGURES at ENOSPC, reserve {}: `docker run` {} ({:.1} s): {}",
        if m.reserve_held() {
            "held"
        } else {
            "already released"
        },
        if early_run.status.success() {
            "succeeded"
        } else {
            "failed"
        },
        t.elapsed().as_secs_f64(),
        text(&early_run.stderr).trim()
    );
    let c = m.h.curl_output(&url);
    assert_eq!(
        text(&c.stdout),
        "hello from web\n",
        "the container serves on a full disk: {}",
        text(&c.stderr)
    );
    assert_eq!(
        m.ssh("echo ssh-ok").trim(),
        "ssh-ok",
        "devbox ssh on a full disk"
    );
    assert!(!m.ssh("pidof dockerd").trim().is_empty(), "dockerd runs");
    let ps = m.docker(&["ps", "--format", "{{.Names}}"]);
    assert_eq!(text(&ps.stdout).trim(), running, "{}", text(&ps.stderr));

    // The guest releases its reserve once the disk has stayed full for two checks.
    let t = Instant::now();
    while m.reserve_held() {
        assert!(t.elapsed() < Duration::from_secs(30), "reserve still held");
        std::thread::sleep(Duration::from_secs(1));
    }
    let (_, _, free) = m.guest_df();
    eprintln!(
        "[e2e] FIGURES reserve released {:.1} s after the fill ended; {:.1} MiB free",
        t.elapsed().as_secs_f64(),
        mib(free)
    );
    assert!(free >= 60 * MIB, "the reserve's room is free: {free}");
    let run = m.docker(&["run", "--rm", "bb:e2e", "/bin/echo", "ok"]);
    assert!(
        run.status.success() && text(&run.stdout).trim() == "ok",
        "dockerd creates a container on the full disk once the reserve is released: {}",
        text(&run.stderr)
    );
    assert!(
        m.serial_has("devbox-guest: data disk full: released the reserve"),
        "console marker"
    );

    // The supervisor measures every 30 s; `status` and `ls` read its figure. Wait for a
    // measurement of the full disk (one taken during the fill may already warn).
    let t = Instant::now();
    loop {
        let st = m.devbox(&["status", MACHINE]);
        let warned_pct = text(&st.stderr)
            .split("% full")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|p| p.parse::<u8>().ok());
        if warned_pct.is_some_and(|p| p >= 95) {
            eprintln!(
                "[e2e] status warned {:.1} s after the reserve was released: {}",
                t.elapsed().as_secs_f64(),
                text(&st.stderr).trim()
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(45),
            "status never warned: {}",
            text(&st.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let ls = m.ok_output(&["ls"]);
    assert!(text(&ls.stderr).contains("% full"), "{}", text(&ls.stderr));
    let sup = std::fs::read_to_string(m.dir().join("supervisor.log")).unwrap();
    assert!(
        sup.contains(&format!("warning: machine {MACHINE}: the guest filesystem")),
        "{sup}"
    );
    let usage = text(&m.ok_output(&["disk", "usage", MACHINE]).stdout);
    eprintln!("[e2e] disk usage on a full disk:\n{usage}");
    assert!(usage.contains("guest reserve: released"), "{usage}");
    assert!(usage.contains("Images"), "docker's view: {usage}");

    // Remove the filler: the space is back in the guest, and in the host file.
    let full_alloc = m.allocated();
    m.ssh("rm /var/lib/docker/filler && sync");
    let (_, used, free) = m.guest_df();
    assert!(
        used < size / 4,
        "guest space is back: {used} used of {size}"
    );
    let reclaimed = m.await_allocated_at_most(before_fill + 64 * MIB, Duration::from_secs(60));
    eprintln!(
        "[e2e] FIGURES filler removed: guest {:.1} MiB used, {:.1} MiB free; host allocated \
         {:.1} -> {:.1} MiB, back under before-fill + 64 MiB after {:?}",
        mib(used),
        mib(free),
        mib(full_alloc),
        mib(m.allocated()),
        reclaimed
    );
    assert!(
        reclaimed.is_some(),
        "the host file gave the filler's space back"
    );
    let u: serde_json::Value =
        serde_json::from_slice(&m.ok_output(&["disk", "usage", MACHINE, "--json"]).stdout).unwrap();
    assert_eq!(u["reclaim"], "available");
    assert!(u["guest"]["used_pct"].as_u64().unwrap() < 25, "{u}");
}
