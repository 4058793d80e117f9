//! Tier 1: `routes.json` under concurrent changes (security review finding 8). Supervisors of
//! machines starting and stopping at once each load, change and save the file; without a
//! lock the second save drops the first one's machine, and the boot job then takes that
//! running machine's routes away. Every change now holds `routes.lock` across the three.

use std::sync::{Arc, Barrier};

use devbox::routes::{MachineRoutes, RoutesFile, allocate_docker_subnets};

fn machine(index: u8) -> MachineRoutes {
    MachineRoutes {
        guest_ip: format!("192.168.{}.2", 64 + index).parse().unwrap(),
        interface: format!("dbx{index}"),
        docker: allocate_docker_subnets(&[], &[], None).unwrap(),
    }
}

/// The review's reproduction: two starts released together, 100 rounds; each round must keep
/// both machines (it lost one in 100 of 100 rounds before the lock).
#[test]
fn concurrent_starts_keep_every_machine() {
    let mut lost = 0;
    for _ in 0..100 {
        let home = tempfile::tempdir().unwrap();
        let file = RoutesFile::new(home.path());
        let go = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2u8)
            .map(|i| {
                let (file, go) = (file.clone(), go.clone());
                std::thread::spawn(move || {
                    go.wait();
                    file.record(&format!("m{i}"), machine(i)).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let names: Vec<String> = file.load().unwrap().machines.into_keys().collect();
        if names != ["m0", "m1"] {
            lost += 1;
        }
    }
    assert_eq!(
        lost, 0,
        "an entry was lost in {lost} of 100 concurrent starts"
    );
}

/// A start and a stop at once: the stopping machine goes, the starting one stays.
#[test]
fn a_stop_and_a_start_at_once_change_only_their_own_machine() {
    for _ in 0..50 {
        let home = tempfile::tempdir().unwrap();
        let file = RoutesFile::new(home.path());
        file.record("old", machine(0)).unwrap();
        let go = Arc::new(Barrier::new(2));
        let stop = {
            let (file, go) = (file.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                file.forget("old").unwrap()
            })
        };
        let start = {
            let (file, go) = (file.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                file.record("new", machine(1)).unwrap();
            })
        };
        assert_eq!(stop.join().unwrap(), Some(machine(0)));
        start.join().unwrap();
        let names: Vec<String> = file.load().unwrap().machines.into_keys().collect();
        assert_eq!(names, ["new"]);
    }
}
