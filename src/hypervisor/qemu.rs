//! The QEMU driver: runs `qemu-system-x86_64` as a child of the supervisor.
//!
//! Machine type `microvm` with ACPI (Debian's `virtio_mmio` finds devices only through ACPI or
//! a device tree: research/vmm.md §0), virtio-mmio disks and NIC, the serial console on QEMU's
//! stdout (a `devbox-console` thread copies it into the size-capped `serial.log`,
//! `console_log`: QEMU's own file chardev grows without bound), and a QMP socket for the ACPI
//! power button. Under TCG the guest needs `tsc_early_khz` and
//! `tsc=reliable`, or it hangs calibrating the TSC and then loses a third of its clock
//! (research/guest-poc.md pitfalls 1–2).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::console_log::{self, ConsoleLog};
use super::probe::KvmProbe;
use super::{Accel, BootConfig, Hypervisor, HypervisorError, RunningVm, VmExit};
use crate::machine::Driver;

pub const PROGRAM: &str = "qemu-system-x86_64";
const PACKAGE: &str = "qemu-system-x86";

pub struct Qemu {
    accel: Accel,
    tsc_khz: Option<u64>,
}

impl Qemu {
    pub fn new(kvm: &KvmProbe) -> Qemu {
        let accel = if kvm.usable {
            Accel {
                name: "kvm",
                reason: kvm.reason.clone(),
            }
        } else {
            Accel {
                name: "tcg",
                reason: kvm.reason.clone(),
            }
        };
        Qemu {
            accel,
            tsc_khz: host_tsc_khz(),
        }
    }
}

/// The host's TSC frequency in kHz, which TCG guests see too.
fn host_tsc_khz() -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
        && let Ok(v) = s.trim().parse()
    {
        return Some(v);
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64)
}

/// The guest kernel command line. Nothing secret ever goes here: it is world-readable in the
/// guest and in the host's process list.
pub fn kernel_cmdline(accel: &str, tsc_khz: Option<u64>) -> String {
    let mut parts = vec![
        "console=ttyS0".to_owned(),
        "panic=-1".to_owned(),
        "loglevel=4".to_owned(),
    ];
    if accel == "tcg" {
        if let Some(khz) = tsc_khz {
            parts.push(format!("tsc_early_khz={khz}"));
        }
        parts.push("tsc=reliable".to_owned());
        // The first container's memory cgroup turns kernel-memory accounting on, which
        // live-patches a static branch in the slab allocator's hottest paths on every CPU.
        // Under TCG (Debian 12's QEMU 7.2) another vCPU sometimes runs the half-patched
        // site: an `int3` oops in `kmem_cache_alloc_noprof`, from runc, and the guest dies at
        // its first `docker run` (seen twice in one day's test runs). Without kernel-memory
        // accounting that branch is never patched; containers' kernel memory is then not
        // charged to their memory limits, under software emulation only.
        parts.push("cgroup.memory=nokmem".to_owned());
    }
    parts.join(" ")
}

/// The size of TCG's translation cache, in MiB (`-accel tcg,tb-size=`). QEMU's default on a
/// 64-bit host is 1 GiB; the cache only grows (a full one is flushed and refilled, its pages
/// kept), so its high-water mark stays in the VM process's resident set for the machine's
/// life ([`translation_cache_bytes`], shown apart in `devbox inspect`). A Docker guest fills
/// 256 MiB during its boot already, so the size trades memory against time spent
/// translating again. Measured on the x86_64 guest under TCG (a boot then six `docker run`s):
/// 256 MiB held the VM at 965-972 MiB resident against 1829-1840 MiB with the default, ready
/// 30.0-30.4 s against 27.7-27.9 s, the six runs 42.7-46.6 s against 42.2-42.6 s; 512 MiB
/// bought no clear time back (29.5-31.9 s, 40.8-44.0 s) for 1.26 GB. On the root-image layout
/// (#20; boot, 20 s idle, five `docker run`s and a shell loop in a container): 256 MiB idled
/// at 708-715 MiB, ready 14.3-14.6 s, runs 28.2-30.4 s; 128 MiB at 574 MiB, 15.1 s, 35.1 s;
/// 64 MiB at 504-509 MiB, 16.5-16.7 s, 43.3-43.7 s. Below 256 MiB every container pays.
pub const TB_SIZE_MIB: u64 = 256;

/// The resident bytes of TCG's translation cache in the QEMU process `pid`: its anonymous
/// mapping that is writable and executable at once (QEMU's code buffer; the one such mapping
/// in the process on Linux, where QEMU does not split it), from `/proc/PID/smaps`. `None`
/// when the process or the mapping is not there (KVM, or another driver).
pub fn translation_cache_bytes(pid: u32) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut in_cache = false;
    let mut found = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && first.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            // A mapping's header: range, perms, offset, dev, inode[, path].
            let perms = fields.next().unwrap_or_default();
            let path = fields.nth(3);
            in_cache = perms == "rwxp" && path.is_none();
        } else if in_cache && first == "Rss:" {
            let kib: u64 = fields.next()?.parse().ok()?;
            *found.get_or_insert(0) += kib * 1024;
        }
    }
    found
}

/// The QEMU arguments for a machine (without the program name). `tap_fd` is the descriptor
/// number the child inherits for the main NIC, `share_fd` the one for the share link's NIC
/// ([`BootConfig::share_nic`], whose MAC address is used).
pub fn args(
    cfg: &BootConfig,
    accel: &str,
    tsc_khz: Option<u64>,
    tap_fd: i32,
    share_fd: Option<i32>,
) -> Vec<String> {
    // `-kernel`/`-initrd` take a whole argument: the path as it is.
    let p = |p: &Path| p.display().to_string();
    // Inside `key=value,...` option strings a value is escaped (see [`opt_value`]).
    let v = |p: &Path| opt_value(&p.display().to_string());
    let tcg = format!("tcg,tb-size={TB_SIZE_MIB}");
    let (accel_arg, cpu) = if accel == "kvm" {
        ("kvm", "host")
    } else {
        (tcg.as_str(), "max")
    };
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&[
        "-name",
        &format!(
            "devbox-{},process=devbox-{}",
            opt_value(&cfg.name),
            opt_value(&cfg.name)
        ),
    ]);
    push(&["-machine", "microvm,acpi=on,rtc=on"]);
    push(&["-accel", accel_arg, "-cpu", cpu]);
    push(&[
        "-smp",
        &cfg.cpus.to_string(),
        "-m",
        &cfg.memory_mib.to_string(),
    ]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    // The console goes to stdout, which the driver reads (see `boot`); `signal=off`: a ^C
    // byte from the guest is data, never a signal to QEMU.
    push(&[
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
    ]);
    push(&["-kernel", &p(&cfg.kernel), "-initrd", &p(&cfg.initrd)]);
    push(&["-append", &kernel_cmdline(accel, tsc_khz)]);
    push(&[
        "-drive",
        &format!(
            "id=config,file={},format=raw,if=none,readonly=on",
            v(&cfg.config_drive)
        ),
        "-device",
        "virtio-blk-device,drive=config,serial=devbox-config",
    ]);
    // discard=unmap passes the guest's TRIM through as holes in the sparse file;
    // detect-zeroes=unmap does the same for blocks the guest zeroes.
    push(&[
        "-drive",
        &format!(
            "id=data,file={},format=raw,if=none,cache=writeback,discard=unmap,detect-zeroes=unmap",
            v(&cfg.data_disk)
        ),
        "-device",
        "virtio-blk-device,drive=data,serial=devbox-data",
    ]);
    if let Some(root) = &cfg.root_image {
        // The image's system, shared read-only by every machine of the image (QEMU takes a
        // shared lock); the guest's page cache holds only what it reads.
        push(&[
            "-drive",
            &format!("id=root,file={},format=raw,if=none,readonly=on", v(root)),
            "-device",
            &format!(
                "virtio-blk-device,drive=root,serial={}",
                crate::image::ROOT_DISK_SERIAL
            ),
        ]);
    }
    push(&[
        "-netdev",
        &format!("tap,id=net0,fd={tap_fd},vhost=off"),
        "-device",
        &format!("virtio-net-device,netdev=net0,mac={}", cfg.mac),
    ]);
    if let (Some(nic), Some(fd)) = (&cfg.share_nic, share_fd) {
        push(&[
            "-netdev",
            &format!("tap,id=shares,fd={fd},vhost=off"),
            "-device",
            &format!("virtio-net-device,netdev=shares,mac={}", nic.mac),
        ]);
    }
    push(&["-device", "virtio-rng-device"]);
    // Free page reporting: the guest's kernel (CONFIG_PAGE_REPORTING, virtio_balloon loaded by
    // devbox-boot) reports ranges it has freed (2 MiB blocks, about 2 s after they are
    // freed), and QEMU discards them, so memory the guest no longer uses returns to the host
    // on its own. The balloon is never inflated: nothing is taken from the guest.
    push(&["-device", "virtio-balloon-device,free-page-reporting=on"]);
    // Spelled out (`-chardev socket,path=` + `-mon`) rather than `-qmp unix:PATH`: there the
    // path is an implied first value, which QEMU reads as `key=value` when it holds a `=`.
    push(&[
        "-chardev",
        &format!(
            "socket,id=qmp,path={},server=on,wait=off",
            v(&cfg.monitor_socket)
        ),
        "-mon",
        "chardev=qmp,mode=control",
    ]);
    a
}

/// A value for a QEMU `key=value,...` option string. QEMU's option parser ends a value at the
/// first single comma and reads `,,` as a literal comma (qemu-options docs, "-drive"), so a path
/// with a comma would otherwise end early and its rest be read as more options
/// (`/home/u/a,file.driver=...`). Every comma is doubled.
fn opt_value(value: &str) -> String {
    value.replace(',', ",,")
}

/// Finds a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

impl Hypervisor for Qemu {
    fn driver(&self) -> Driver {
        Driver::Qemu
    }

    fn accel(&self) -> &Accel {
        &self.accel
    }

    fn preflight(&self) -> Result<(), HypervisorError> {
        if which(PROGRAM).is_none() {
            return Err(HypervisorError::MissingProgram {
                program: PROGRAM.into(),
                package: PACKAGE.into(),
            });
        }
        Ok(())
    }

    fn boot(&self, mut cfg: BootConfig) -> Result<Box<dyn RunningVm>, HypervisorError> {
        let tap = cfg.tap.take().ok_or(HypervisorError::NoTap {
            driver: Driver::Qemu,
        })?;
        self.preflight()?;
        let tap_fd = tap.as_raw_fd();
        let _ = std::fs::remove_file(&cfg.monitor_socket);
        let console = ConsoleLog::open(&cfg.serial_log)?;
        let mut cmd = Command::new(PROGRAM);
        let share_fd = cfg.share_nic.as_ref().map(|n| n.tap.as_raw_fd());
        cmd.args(args(&cfg, self.accel.name, self.tsc_khz, tap_fd, share_fd))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        super::sys::kill_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| HypervisorError::Spawn {
            program: PROGRAM.into(),
            source,
        })?;
        // The guest's console: copied until QEMU exits and its end of the pipe closes.
        let stdout = child.stdout.take().expect("piped");
        let on_error = console_log::report_to_supervisor(cfg.serial_log.clone());
        console_log::spawn_pump(stdout, console, on_error)?;
        // QEMU reports bad arguments on stderr and exits at once; keep its last words.
        let stderr = child.stderr.take().expect("piped");
        let tail = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let tail2 = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut t = tail2.lock().expect("stderr tail");
                t.push(line);
                if t.len() > 20 {
                    t.remove(0);
                }
            }
        });
        Ok(Box::new(QemuVm {
            child,
            _tap: tap,
            monitor: cfg.monitor_socket,
            stderr_tail: tail,
        }))
    }
}

struct QemuVm {
    child: Child,
    /// Held so the TAP device lives exactly as long as the machine.
    _tap: OwnedFd,
    monitor: PathBuf,
    stderr_tail: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RunningVm for QemuVm {
    fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }

    fn request_stop(&mut self) -> Result<(), HypervisorError> {
        qmp_command(&self.monitor, "system_powerdown").map_err(|source| HypervisorError::Monitor {
            path: self.monitor.clone(),
            source,
        })
    }

    fn kill(&mut self) -> Result<(), HypervisorError> {
        match self.child.kill() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {} // already exited
            Err(e) => return Err(e.into()),
        }
        self.child.wait()?;
        Ok(())
    }

    fn try_wait(&mut self) -> Result<Option<VmExit>, HypervisorError> {
        let Some(status) = self.child.try_wait()? else {
            return Ok(None);
        };
        // Give the stderr reader a moment to collect QEMU's last lines.
        std::thread::sleep(Duration::from_millis(50));
        let tail = self.stderr_tail.lock().expect("stderr tail").join("\n");
        let mut description = match status.code() {
            Some(0) => "the guest powered off".to_owned(),
            Some(c) => format!("{PROGRAM} exited with status {c}"),
            None => format!("{PROGRAM} was killed ({status})"),
        };
        if !tail.trim().is_empty() && status.code() != Some(0) {
            description.push_str(&format!(": {}", tail.trim()));
        }
        Ok(Some(VmExit { description }))
    }
}

impl Drop for QemuVm {
    /// A machine handle dropped on an error path must not leave its guest running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends one QMP command (after the capabilities handshake) and waits for its reply.
fn qmp_command(socket: &Path, command: &str) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?; // greeting
    for cmd in ["qmp_capabilities", command] {
        writeln!(writer, "{{\"execute\":\"{cmd}\"}}")?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("QMP closed the connection"));
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(std::io::Error::other)?;
            if v.get("return").is_some() {
                break;
            }
            if let Some(e) = v.get("error") {
                return Err(std::io::Error::other(format!("QMP {cmd}: {e}")));
            }
            // Asynchronous events may arrive in between; skip them.
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_has_tsc_help_only_under_tcg() {
        assert_eq!(
            kernel_cmdline("tcg", Some(2_000_000)),
            "console=ttyS0 panic=-1 loglevel=4 tsc_early_khz=2000000 tsc=reliable \
             cgroup.memory=nokmem"
        );
        assert_eq!(
            kernel_cmdline("kvm", Some(2_000_000)),
            "console=ttyS0 panic=-1 loglevel=4"
        );
    }

    /// Splits a QEMU option string the way QEMU does: a single comma separates, `,,` is a
    /// literal comma; an element without `=` gets the name `implied`.
    fn parse_opts(s: &str, implied: &str) -> Vec<(String, String)> {
        let mut elems = vec![String::new()];
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c == ',' {
                if chars.peek() == Some(&',') {
                    chars.next();
                    elems.last_mut().unwrap().push(',');
                } else {
                    elems.push(String::new());
                }
            } else {
                elems.last_mut().unwrap().push(c);
            }
        }
        elems
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (implied.to_owned(), e),
            })
            .collect()
    }

    fn boot_config(dir: &str) -> BootConfig {
        BootConfig {
            name: "dev".into(),
            cpus: 1,
            memory_mib: 512,
            kernel: format!("{dir}/vmlinuz").into(),
            initrd: format!("{dir}/initrd").into(),
            root_image: Some(format!("{dir}/root.img").into()),
            data_disk: format!("{dir}/disk.raw").into(),
            config_drive: format!("{dir}/config.tar").into(),
            tap: None,
            mac: "52:54:00:12:34:56".into(),
            share_nic: None,
            serial_log: format!("{dir}/serial.log").into(),
            monitor_socket: format!("{dir}/qmp.sock").into(),
        }
    }

    /// The option string that follows the `n`th occurrence of `flag`.
    fn option<'a>(args: &'a [String], flag: &str, n: usize) -> &'a str {
        args.iter()
            .enumerate()
            .filter(|(_, a)| *a == flag)
            .nth(n)
            .map(|(i, _)| args[i + 1].as_str())
            .unwrap_or_else(|| panic!("no {flag} #{n} in {args:?}"))
    }

    #[test]
    fn tcg_gets_a_bounded_translation_cache_and_kvm_none() {
        let tcg = args(&boot_config("/m"), "tcg", None, 3, None);
        assert_eq!(option(&tcg, "-accel", 0), "tcg,tb-size=256");
        let kvm = args(&boot_config("/m"), "kvm", None, 3, None);
        assert_eq!(option(&kvm, "-accel", 0), "kvm");
    }

    #[test]
    fn the_translation_cache_is_the_anonymous_rwx_mapping() {
        // This test process has no rwx mapping: nothing is found, rather than something else.
        assert_eq!(translation_cache_bytes(std::process::id()), None);
        assert_eq!(translation_cache_bytes(u32::MAX), None);
    }

    #[test]
    fn a_path_with_commas_stays_one_option_value() {
        // A state directory whose name, read naively, would add a `file.driver` option.
        let dir = "/home/u/dev,box,file.driver=nbd/a=b/machines/dev";
        let cfg = boot_config(dir);
        let a = args(&cfg, "tcg", None, 3, None);
        let config = parse_opts(option(&a, "-drive", 0), "file");
        assert_eq!(
            config,
            [
                ("id", "config"),
                ("file", &format!("{dir}/config.tar")[..]),
                ("format", "raw"),
                ("if", "none"),
                ("readonly", "on"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let data = parse_opts(option(&a, "-drive", 1), "file");
        assert_eq!(data[1], ("file".into(), format!("{dir}/disk.raw")));
        assert_eq!(
            data.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            [
                "id",
                "file",
                "format",
                "if",
                "cache",
                "discard",
                "detect-zeroes"
            ]
        );
        assert_eq!(
            parse_opts(option(&a, "-chardev", 1), "backend"),
            [
                ("backend", "socket"),
                ("id", "qmp"),
                ("path", &format!("{dir}/qmp.sock")[..]),
                ("server", "on"),
                ("wait", "off"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // Whole-argument paths are passed as they are.
        assert_eq!(option(&a, "-kernel", 0), format!("{dir}/vmlinuz"));
    }

    /// The console is a stream the driver caps (`console_log`), never QEMU's own file
    /// chardev, which appends without end.
    #[test]
    fn the_console_goes_to_stdout_not_to_a_file() {
        let a = args(&boot_config("/m"), "tcg", None, 3, None);
        assert_eq!(option(&a, "-chardev", 0), "stdio,id=console,signal=off");
        assert_eq!(option(&a, "-serial", 0), "chardev:console");
        assert!(!a.iter().any(|x| x.contains("serial.log")), "{a:?}");
    }

    #[test]
    fn booting_without_a_tap_is_a_clear_error() {
        let qemu = Qemu::new(&crate::hypervisor::probe::probe_at(std::path::Path::new(
            "/nonexistent",
        )));
        let err = qemu
            .boot(BootConfig {
                name: "dev".into(),
                cpus: 1,
                memory_mib: 512,
                kernel: "/k".into(),
                initrd: "/i".into(),
                root_image: None,
                data_disk: "/d".into(),
                config_drive: "/c".into(),
                tap: None,
                mac: "52:54:00:12:34:56".into(),
                share_nic: None,
                serial_log: "/s".into(),
                monitor_socket: "/m".into(),
            })
            .err()
            .expect("no TAP, no boot");
        assert!(
            matches!(
                err,
                HypervisorError::NoTap {
                    driver: Driver::Qemu
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the qemu driver needs the machine's TAP device, and the supervisor gave none"
        );
    }
}
