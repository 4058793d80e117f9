//! The guest's busybox: Debian's `busybox-static` package of the guest's arch, its applets
//! linked where busybox itself installs them, and `/init`.
//!
//! Nothing of it runs on the host, so the build needs no busybox there and works the same for
//! every guest arch on every host:
//! - which applets the binary has is read from the binary: busybox keeps their names as one
//!   sorted run of NUL-terminated strings (`applet_names[]`, generated into
//!   `include/applet_tables.h` from the build's configuration);
//! - where each one goes is a property of upstream busybox, not of Debian's configuration:
//!   every applet's source declares its directory (`//applet:… APPLET(name, BB_DIR_SBIN, …)`),
//!   and `busybox --install`/`--list-full` use that. The guest has a merged `/usr` (`/bin` and
//!   `/sbin` are links to `/usr/bin` and `/usr/sbin`), so only bin or sbin matters: the
//!   applets declared `BB_DIR_SBIN` or `BB_DIR_USR_SBIN` are [`SBIN_APPLETS`], every other one
//!   goes to `usr/bin` (both are on the guest's PATH, so an applet newer than the table is
//!   still found by name).
//!
//! Why a table and not the binary's own `applet_install_loc[]`: that array is packed
//! nibbles without a marker, so finding it in a stripped binary is guesswork; and running the
//! binary (`--list-full`) works only for the host's arch, which is why the build used to take
//! the host's busybox for x86_64 guests and needed one on the host for every build.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::BuildError;
use super::rootfs::io_at;

/// Applets busybox installs in `/sbin` or `/usr/sbin`: every `//applet:` line of busybox
/// 1.37.0's sources (the release Debian 13 ships; Debian 12's 1.35.0 places every applet it
/// has the same way, apart from `readlink`, which moved from /bin to /usr/bin) whose directory
/// is `BB_DIR_SBIN` or `BB_DIR_USR_SBIN`. Sorted, for the binary search.
pub const SBIN_APPLETS: &[&str] = &[
    "acpid",
    "add-shell",
    "addgroup",
    "adduser",
    "adjtimex",
    "arp",
    "arping",
    "blkid",
    "blockdev",
    "bootchartd",
    "brctl",
    "chat",
    "chpasswd",
    "chroot",
    "crond",
    "delgroup",
    "deluser",
    "depmod",
    "devfsd",
    "devmem",
    "dhcprelay",
    "dnsd",
    "ether-wake",
    "fakeidentd",
    "fbset",
    "fbsplash",
    "fdformat",
    "fdisk",
    "findfs",
    "flash_eraseall",
    "flash_lock",
    "flash_unlock",
    "flashcp",
    "freeramdisk",
    "fsck",
    "fsck.minix",
    "fsfreeze",
    "fstrim",
    "ftpd",
    "getenforce",
    "getsebool",
    "getty",
    "halt",
    "hdparm",
    "httpd",
    "hwclock",
    "i2cdetect",
    "i2cdump",
    "i2cget",
    "i2cset",
    "i2ctransfer",
    "ifconfig",
    "ifdown",
    "ifenslave",
    "ifplugd",
    "ifup",
    "inetd",
    "init",
    "inotifyd",
    "insmod",
    "ip",
    "ipaddr",
    "iplink",
    "ipneigh",
    "iproute",
    "iprule",
    "iptunnel",
    "killall5",
    "klogd",
    "load_policy",
    "loadfont",
    "loadkmap",
    "logread",
    "losetup",
    "lpd",
    "lsmod",
    "makedevs",
    "matchpathcon",
    "mdev",
    "mim",
    "mkdosfs",
    "mke2fs",
    "mkfs.ext2",
    "mkfs.minix",
    "mkfs.reiser",
    "mkfs.vfat",
    "mkswap",
    "modinfo",
    "modprobe",
    "nameif",
    "nanddump",
    "nandwrite",
    "nbd-client",
    "nologin",
    "ntpd",
    "partprobe",
    "pivot_root",
    "popmaildir",
    "poweroff",
    "powertop",
    "raidautorun",
    "rdate",
    "rdev",
    "readahead",
    "readprofile",
    "reboot",
    "remove-shell",
    "restorecon",
    "rfkill",
    "rmmod",
    "route",
    "rtcwake",
    "run-init",
    "runlevel",
    "seedrng",
    "selinuxenabled",
    "sendmail",
    "sestatus",
    "setconsole",
    "setenforce",
    "setfiles",
    "setfont",
    "setlogcons",
    "setsebool",
    "slattach",
    "start-stop-daemon",
    "sulogin",
    "svlogd",
    "swapoff",
    "swapon",
    "switch_root",
    "sysctl",
    "syslogd",
    "tc",
    "telnetd",
    "tftpd",
    "tunctl",
    "tune2fs",
    "ubiattach",
    "ubidetach",
    "ubimkvol",
    "ubirename",
    "ubirmvol",
    "ubirsvol",
    "ubiupdatevol",
    "udhcpc",
    "udhcpd",
    "uevent",
    "vconfig",
    "watchdog",
    "zcip",
];

/// Debian's statically linked busybox.
pub const PACKAGE: &str = "busybox-static";

/// Where the busybox binary is in an unpacked `busybox-static` (Debian 12 ships
/// `/bin/busybox`, Debian 13 `/usr/bin/busybox`).
pub fn binary_in(unpacked: &Path) -> Option<PathBuf> {
    ["usr/bin/busybox", "bin/busybox"]
        .iter()
        .map(|p| unpacked.join(p))
        .find(|p| p.is_file())
}

/// Copies `binary` to the stage's `/usr/bin/busybox`, links every applet it has that no
/// package provides, and `/init`. Returns the applet links made (paths below `stage`).
pub fn install(stage: &Path, binary: &Path) -> Result<Vec<String>, BuildError> {
    let bytes = fs_err::read(binary)?;
    let names = applet_names(&bytes).ok_or_else(|| BuildError::NoAppletTable {
        path: binary.to_owned(),
    })?;
    let dest = stage.join("usr/bin/busybox");
    fs_err::write(&dest, &bytes)?;
    fs_err::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
    let mut made = Vec::new();
    for name in &names {
        let rel = applet_path(name);
        let link = stage.join(&rel);
        if link.symlink_metadata().is_ok() {
            continue; // a real tool from a package wins (e.g. e2fsprogs' mkfs)
        }
        symlink("/usr/bin/busybox", &link).map_err(|e| io_at(e, &link))?;
        made.push(rel);
    }
    // The kernel runs /init from the initramfs; busybox init then reads /etc/inittab.
    let init = stage.join("init");
    symlink("usr/bin/busybox", &init).map_err(|e| io_at(e, &init))?;
    Ok(made)
}

/// Where applet `name` is linked in the merged-usr tree.
pub fn applet_path(name: &str) -> String {
    if SBIN_APPLETS.binary_search(&name).is_ok() {
        format!("usr/sbin/{name}")
    } else {
        format!("usr/bin/{name}")
    }
}

/// The applet names compiled into a busybox binary. busybox keeps them as one sorted run of
/// NUL-terminated strings, `[`, `[[`, `acpid`, …, ended by an empty string
/// (`applet_names[]` in the generated `include/applet_tables.h`). The byte before `[` is the
/// end of whatever the linker put there (a NUL in Debian 12's binary, the last byte of
/// `applet_install_loc[]` in Debian 13's), so every `[\0[[\0` is tried until one starts a
/// run of short printable names in strictly ascending order.
pub fn applet_names(binary: &[u8]) -> Option<Vec<String>> {
    const START: &[u8] = b"[\0[[\0";
    binary
        .windows(START.len())
        .enumerate()
        .filter(|(_, w)| *w == START)
        .find_map(|(start, _)| table_at(&binary[start..]))
}

/// The applet table starting at the first byte of `bytes`, if it is one.
fn table_at(bytes: &[u8]) -> Option<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for raw in bytes.split(|&b| b == 0) {
        if raw.is_empty() {
            break;
        }
        let name = std::str::from_utf8(raw).ok()?;
        // Applet names are short printable words in strcmp order; anything else means a
        // false start.
        let in_order = names.last().is_none_or(|last| last.as_str() < name);
        if name.len() > 32 || !name.bytes().all(|b| b.is_ascii_graphic()) || !in_order {
            return None;
        }
        names.push(name.to_owned());
    }
    (names.len() > 2).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_unique() {
        assert!(
            SBIN_APPLETS.windows(2).all(|w| w[0] < w[1]),
            "SBIN_APPLETS must stay sorted (binary search) and free of duplicates"
        );
    }

    #[test]
    fn applets_go_where_busybox_installs_them() {
        // What `busybox --list-full` says (bin/ and usr/bin/ are one directory here).
        for (applet, path) in [
            ("modprobe", "usr/sbin/modprobe"),
            ("init", "usr/sbin/init"),
            ("acpid", "usr/sbin/acpid"),
            ("udhcpc", "usr/sbin/udhcpc"),
            ("ip", "usr/sbin/ip"),
            ("poweroff", "usr/sbin/poweroff"),
            ("sh", "usr/bin/sh"),
            ("[", "usr/bin/["),
            ("tar", "usr/bin/tar"),
            ("wget", "usr/bin/wget"),
            // Unknown to the table (a newer busybox): on the PATH all the same.
            ("newapplet", "usr/bin/newapplet"),
        ] {
            assert_eq!(applet_path(applet), path, "{applet}");
        }
    }

    #[test]
    fn applet_names_are_read_from_the_binary() {
        // As in busybox's rodata: other strings, the NUL-separated sorted names, an empty one.
        let mut bin = b"\x7fELF junk\0usage: [ EXPR ]\0".to_vec();
        bin.extend_from_slice(b"\0[\0[[\0acpid\0modprobe\0sh\0zcat\0\0more data\0");
        assert_eq!(
            applet_names(&bin).unwrap(),
            ["[", "[[", "acpid", "modprobe", "sh", "zcat"]
        );
        assert_eq!(applet_names(b"no table here\0"), None);
        // Debian 13's binary: the table follows another array's last byte, not a NUL, and a
        // `[\0[[\0` that starts no table comes first.
        let mut bin = b"x[\0[[\0zz\0aa\0\0".to_vec();
        bin.extend_from_slice(b"\x88\xae [\0[[\0acpid\0ash\0\0");
        assert_eq!(applet_names(&bin).unwrap(), ["[", "[[", "acpid", "ash"]);
        // A false start (binary garbage after `[[`) is not taken for the table.
        assert_eq!(applet_names(b"\0[\0[[\0\x01\x02\0\0"), None);
    }

    #[test]
    fn install_links_applets_but_keeps_package_tools() {
        let tmp = tempfile::tempdir().unwrap();
        let stage = tmp.path().join("root");
        for d in ["usr/bin", "usr/sbin"] {
            fs_err::create_dir_all(stage.join(d)).unwrap();
        }
        // e2fsprogs' mke2fs is already there.
        fs_err::write(stage.join("usr/sbin/mke2fs"), b"real").unwrap();
        let binary = tmp.path().join("busybox");
        fs_err::write(&binary, b"\x7fELF\0\0[\0[[\0mke2fs\0modprobe\0sh\0\0").unwrap();
        let made = install(&stage, &binary).unwrap();
        assert_eq!(
            made,
            ["usr/bin/[", "usr/bin/[[", "usr/sbin/modprobe", "usr/bin/sh"]
        );
        assert_eq!(
            fs_err::read(stage.join("usr/sbin/mke2fs")).unwrap(),
            b"real"
        );
        assert_eq!(
            fs_err::read_link(stage.join("usr/sbin/modprobe")).unwrap(),
            Path::new("/usr/bin/busybox")
        );
        assert_eq!(
            fs_err::read_link(stage.join("init")).unwrap(),
            Path::new("usr/bin/busybox")
        );
        let mode = fs_err::metadata(stage.join("usr/bin/busybox"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // A file that holds no applet table is refused, naming it.
        fs_err::write(&binary, b"not busybox").unwrap();
        let e = install(&tmp.path().join("other"), &binary).unwrap_err();
        assert!(
            matches!(&e, BuildError::NoAppletTable { path } if *path == binary),
            "{e:?}"
        );
    }
}
