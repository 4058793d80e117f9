//! Tier 2: `devbox swarm`'s refusals through the real binary, no guest (the fake driver): a
//! machine that is not running, a join through itself, an unknown manager, a bad role; and
//! `swarm ls` with no swarm. Each refusal exits 1 naming the fix and writes no membership.
//! The swarm itself (engines, ports, stack, DNS) is the end-to-end check `tests/e2e/swarm.rs`.

mod support;
use support::cli::{Env, fails_with, stderr, stdout, succeeds};

fn no_membership(env: &Env, name: &str) {
    assert!(
        !env.home
            .join("machines")
            .join(name)
            .join("swarm.json")
            .exists()
    );
}

#[test]
fn swarm_verbs_refuse_what_they_cannot_do_and_write_nothing() {
    let env = Env::new();
    for name in ["m1", "m2"] {
        succeeds(&env.create_small(&["--driver", "fake", "--no-share"], name));
    }
    let o = env.run(&["swarm", "init", "m1"]);
    fails_with(&o, "machine m1 is not running (it is stopped)");
    fails_with(&o, "hint: start it: `devbox start m1`");
    let o = env.run(&["swarm", "join", "m2", "--manager", "m1"]);
    fails_with(&o, "machine m2 is not running");
    let o = env.run(&["swarm", "join", "m1", "--manager", "m1"]);
    fails_with(&o, "a machine cannot join a swarm through itself (m1)");
    let o = env.run(&["swarm", "join", "m1", "--manager", "ghost"]);
    fails_with(&o, "ghost");
    let o = env.run(&["swarm", "leave", "m2"]);
    fails_with(&o, "machine m2 is not running");
    let o = env.run(&["swarm", "join", "m1", "--manager", "m2", "--as", "boss"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("possible values: manager, worker"),
        "{}",
        stderr(&o)
    );
    for name in ["m1", "m2"] {
        no_membership(&env, name);
    }
    let o = env.run(&["swarm", "ls"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("No machine is in a swarm"),
        "{}",
        stderr(&o)
    );
    let ls: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(&["swarm", "ls", "--json"]))).unwrap();
    assert_eq!(ls, serde_json::json!({"schema": 1, "members": []}));
}
