//! Tier 1: golden tests of every artefact devbox renders for the guest (config drive files,
//! kernel command line, QEMU arguments). `UPDATE_GOLDEN=1 cargo test --test golden` rewrites
//! the files; review the diff before committing it.

// QEMU's arguments are among these goldens, and the qemu driver exists on Linux hosts only.
#![cfg(target_os = "linux")]

mod support;
use std::path::PathBuf;
use support::golden;

use devbox::hypervisor::qemu;
use devbox::hypervisor::{BootConfig, GuestNic};
use devbox::machine::config_drive;
use devbox::machine::spec::{DirId, Driver, MachineSpec, NetworkSpec, ShareSpec, parse_docker_bip};
use devbox::routes::DockerSubnets;

fn spec() -> MachineSpec {
    MachineSpec {
        name: "dev".into(),
        driver: Driver::Qemu,
        cpus: 2,
        memory_mib: 2048,
        disk_bytes: 20 << 30,
        image: "0123456789abcdef".into(),
        network: NetworkSpec {
            index: 0,
            subnet: "192.168.64.0/24".parse().unwrap(),
            host_ip: "192.168.64.1".parse().unwrap(),
            guest_ip: "192.168.64.2".parse().unwrap(),
            mac: devbox::machine::spec::mac_for("dev"),
            ipv6: false,
        },
        docker: DockerSubnets {
            bridge: parse_docker_bip("172.18.0.1/16").unwrap(),
            pool: "172.19.0.0/16".parse().unwrap(),
            pool_size: 24,
        },
        shares: vec![ShareSpec {
            host_path: "/home/alice".into(),
            guest_path: "/home/alice".into(),
            read_only: false,
            id: Some(DirId {
                dev: 2049,
                ino: 131_073,
            }),
            allow_root: false,
        }],
        tld: "dev".into(),
        engine: Default::default(),
        dns_domains: vec![],
        remote: None,
        created: "2026-11-21T00:00:00Z".into(),
    }
}

#[test]
fn daemon_json() {
    let dns = ["192.168.64.1".parse().unwrap()];
    golden(
        "",
        "daemon.json",
        &config_drive::daemon_json(&spec(), 20, &dns, None),
    );
}

#[test]
fn guest_env_file() {
    let dns = ["192.168.64.1".parse().unwrap()];
    golden(
        "",
        "devbox.env",
        &config_drive::env_file(&spec(), &dns, None),
    );
}

#[test]
fn machine_yaml() {
    golden(
        "",
        "machine.yaml",
        &serde_norway::to_string(&spec()).unwrap(),
    );
}

#[test]
fn config_drive_is_a_tar_the_guest_can_read() {
    let inputs = config_drive::DriveInputs {
        authorized_key: "ssh-ed25519 AAAA client",
        host_key_private: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
        host_key_public: "ssh-ed25519 AAAA host",
        dns: &[],
        docker_major: 20,
        ipv6: None,
        mounts: &[config_drive::NfsMount {
            source: "192.168.64.253:/home/alice".into(),
            guest_path: "/home/alice".into(),
            options: "vers=3,proto=tcp,port=40000,mountport=40000,mountproto=tcp,nolock,noacl,addr=192.168.64.253".into(),
        }],
    };
    let bytes = config_drive::render(&config_drive::files(&spec(), &inputs)).unwrap();
    assert_eq!(bytes.len() % 512, 0, "whole blocks");
    let mut ar = tar::Archive::new(bytes.as_slice());
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        names.push(format!(
            "{} {:o}",
            e.path().unwrap().display(),
            e.header().mode().unwrap()
        ));
    }
    golden("", "config-drive.txt", &(names.join("\n") + "\n"));
}

#[test]
fn nfs_mounts_file() {
    let m = [config_drive::NfsMount {
        source: "192.168.64.253:/home/alice".into(),
        guest_path: "/home/alice".into(),
        options: "vers=3,proto=tcp,port=40000,mountport=40000,mountproto=tcp,nolock,noacl,addr=192.168.64.253".into(),
    }];
    golden("", "nfs-mounts", &config_drive::nfs_mounts_file(&m));
}

#[test]
fn kernel_cmdline() {
    let out = format!(
        "tcg: {}\nkvm: {}\n",
        qemu::kernel_cmdline("tcg", Some(2_000_000)),
        qemu::kernel_cmdline("kvm", Some(2_000_000))
    );
    golden("", "cmdline.txt", &out);
}

#[test]
fn qemu_arguments() {
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let m = PathBuf::from("/home/u/.devbox/machines/dev");
    let cfg = BootConfig {
        name: "dev".into(),
        cpus: 2,
        memory_mib: 2048,
        kernel: "/cache/images/v/vmlinuz".into(),
        initrd: "/cache/images/v/initrd.img".into(),
        root_image: Some("/cache/images/v/root.img".into()),
        data_disk: m.join("disk.raw"),
        config_drive: m.join("config.tar"),
        tap: Some(devnull.try_clone().unwrap().into()),
        mac: "52:54:00:12:34:56".into(),
        share_nic: Some(GuestNic {
            tap: devnull.into(),
            mac: "52:54:00:65:43:21".into(),
        }),
        serial_log: m.join("serial.log"),
        monitor_socket: m.join("qmp.sock"),
    };
    let args = qemu::args(&cfg, "tcg", Some(2_000_000), 3, Some(4));
    golden("", "qemu-tcg.args", &(args.join("\n") + "\n"));
}
