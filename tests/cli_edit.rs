//! Tier 2: `devbox edit`, `upgrade`, `image rm` and `image prune` (issue #18 items 3 and 4)
//! through the real binary against a temporary DEVBOX_HOME and an image cache of small fake
//! images (no guest): every flag, `$EDITOR` driven by scripts, the bad inputs (each leaves
//! `machine.yaml` or the cache as it was), a running machine (the fake driver), and the
//! completion of the new verbs by bash itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

mod support;
use support::cli::{Env, fails_with, stderr, stdout, succeeds};

/// The image `Env::new` installs (Docker 20: its manifest lists no packages).
const FIRST: &str = "0123456789abcdef";

/// A small machine of the fake driver without a share, with `extra` flags.
fn create(env: &Env, name: &str, extra: &[&str]) -> Output {
    let mut flags = vec!["--driver", "fake", "--no-share"];
    flags.extend_from_slice(extra);
    env.create_small(&flags, name)
}

/// A machine of the qemu driver (shares work with it; it is never started here).
fn create_qemu(env: &Env, name: &str) {
    succeeds(&env.create_small(&["--driver", "qemu", "--no-share"], name));
}

fn spec_path(env: &Env, name: &str) -> PathBuf {
    env.machine_dir(name).join("machine.yaml")
}

fn spec_text(env: &Env, name: &str) -> String {
    std::fs::read_to_string(spec_path(env, name)).unwrap()
}

fn spec(env: &Env, name: &str) -> serde_json::Value {
    serde_norway::from_str(&spec_text(env, name)).unwrap()
}

/// Adds a fake image to the cache: `docker` is the docker.io package version ("" for none).
fn add_image(env: &Env, version: &str, arch: &str, created: &str, docker: &str) {
    let img = env.cache.join("images").join(version);
    std::fs::create_dir_all(&img).unwrap();
    let (k, i) = (format!("kernel {version}"), format!("initrd {version}"));
    std::fs::write(img.join("vmlinuz"), &k).unwrap();
    std::fs::write(img.join("initrd.img"), &i).unwrap();
    let sha = |s: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(s.as_bytes()))
    };
    let packages = if docker.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "docker.io": docker })
    };
    let manifest = serde_json::json!({
        "version": version,
        "arch": arch,
        "kernel_version": format!("6.12.0-{version}"),
        "created": created,
        "packages": packages,
        "files": {"vmlinuz": sha(&k), "initrd.img": sha(&i)},
    });
    std::fs::write(img.join("manifest.json"), manifest.to_string()).unwrap();
}

fn image_exists(env: &Env, version: &str) -> bool {
    env.cache.join("images").join(version).is_dir()
}

/// An executable shell script in `dir`, for `$EDITOR`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `devbox edit NAME` with `$EDITOR` set to `editor` (and `$VISUAL` unset).
fn edit_with(env: &Env, name: &str, editor: &Path) -> Output {
    env.cmd()
        .args(["edit", name])
        .env_remove("VISUAL")
        .env("EDITOR", editor)
        .output()
        .unwrap()
}

#[track_caller]
fn usage_error(o: &Output) {
    assert_eq!(o.status.code(), Some(2), "usage error: {}", stderr(o));
}

fn host_cpus() -> u32 {
    std::thread::available_parallelism().unwrap().get() as u32
}

#[test]
fn edit_flags_change_memory_cpus_and_engine_settings() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    let o = env.run(&["edit", "dev", "--memory", "1G"]);
    succeeds(&o);
    let err = stderr(&o);
    assert!(err.contains("memory: 512 MiB -> 1024 MiB"), "{err}");
    assert!(
        err.contains("The change applies at the next start (`devbox start dev`)."),
        "{err}"
    );
    assert_eq!(spec(&env, "dev")["memory_mib"], 1024);
    // A bare number stays MiB, as at create.
    succeeds(&env.run(&["edit", "dev", "--memory", "768"]));
    assert_eq!(spec(&env, "dev")["memory_mib"], 768);
    if host_cpus() >= 2 {
        let o = env.run(&["edit", "dev", "--cpus", "2"]);
        succeeds(&o);
        assert!(stderr(&o).contains("CPUs: 1 -> 2"), "{}", stderr(&o));
        assert_eq!(spec(&env, "dev")["cpus"], 2);
    }

    let o = env.run(&[
        "edit",
        "dev",
        "--engine-label",
        "team=web",
        "--engine-opt",
        "log-level=debug",
        "--engine-insecure-registry",
        "registry.lan:5000",
        "--engine-registry-mirror",
        "https://mirror.example.com",
        "--engine-env",
        "HTTPS_PROXY=http://proxy:3128",
        "--engine-storage-driver",
        "overlay2",
    ]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("engine environment: HTTPS_PROXY=http://proxy:3128"),
        "{}",
        stderr(&o)
    );
    let s = spec(&env, "dev");
    assert_eq!(
        s["engine"]["daemon"]["labels"],
        serde_json::json!(["team=web"])
    );
    assert_eq!(s["engine"]["daemon"]["log-level"], "debug");
    assert_eq!(s["engine"]["daemon"]["storage-driver"], "overlay2");
    assert_eq!(
        s["engine"]["daemon"]["insecure-registries"],
        serde_json::json!(["registry.lan:5000"])
    );
    assert_eq!(s["engine"]["env"]["HTTPS_PROXY"], "http://proxy:3128");
    // A list gains what it lacks; a plain key is replaced.
    succeeds(&env.run(&[
        "edit",
        "dev",
        "--engine-label",
        "team=web",
        "--engine-label",
        "tier=2",
        "--engine-opt",
        "log-level=warn",
    ]));
    let s = spec(&env, "dev");
    assert_eq!(
        s["engine"]["daemon"]["labels"],
        serde_json::json!(["team=web", "tier=2"])
    );
    assert_eq!(s["engine"]["daemon"]["log-level"], "warn");
    // And settings go away with --engine-unset, a daemon.json key or a variable.
    let o = env.run(&[
        "edit",
        "dev",
        "--engine-unset",
        "labels",
        "--engine-unset",
        "HTTPS_PROXY",
    ]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("engine: labels removed"),
        "{}",
        stderr(&o)
    );
    let s = spec(&env, "dev");
    assert!(s["engine"]["daemon"].get("labels").is_none(), "{s}");
    assert!(s["engine"].get("env").is_none(), "{s}");
    // The saved file is one every command reads.
    succeeds(&env.run(&["inspect", "dev"]));
}

#[test]
fn edit_without_a_change_says_so_and_leaves_the_file() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    let before = spec_text(&env, "dev");
    let o = env.run(&["edit", "dev", "--memory", "512M", "--cpus", "1"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("Nothing changed in machine dev."),
        "{}",
        stderr(&o)
    );
    assert_eq!(spec_text(&env, "dev"), before);
}

#[test]
fn bad_edits_are_refused_and_change_nothing() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &["--engine-opt", "log-level=info"]));
    let dir = tempfile::tempdir().unwrap();
    let before = spec_text(&env, "dev");
    let cases: &[(&[&str], &str)] = &[
        (
            &["edit", "nope", "--cpus", "1"],
            "no machine named \"nope\"",
        ),
        (&["edit", "../x", "--cpus", "1"], "invalid machine name"),
        (
            &["edit", "dev", "--memory", "4X"],
            "invalid --memory \"4X\"",
        ),
        (&["edit", "dev", "--memory", "1.5K"], "invalid --memory"),
        (
            &["edit", "dev", "--memory", "128M"],
            "--memory 128 MiB is out of range",
        ),
        (&["edit", "dev", "--cpus", "0"], "--cpus 0 is out of range"),
        (
            &["edit", "dev", "--cpus", "4096"],
            "--cpus 4096 is out of range",
        ),
        (
            &["edit", "dev", "--unshare", "/nowhere"],
            "--unshare /nowhere: machine dev has no share",
        ),
        (
            &["edit", "dev", "--engine-unset", "debug"],
            "--engine-unset debug: machine dev has no such engine setting",
        ),
        (
            &["edit", "dev", "--engine-opt", "bip=10.0.0.1/24"],
            "invalid --engine-opt",
        ),
        (
            &["edit", "dev", "--engine-opt", "no-such-key=1"],
            "invalid --engine-opt",
        ),
        (
            &["edit", "dev", "--engine-label", "novalue"],
            "invalid --engine-label",
        ),
        (
            &["edit", "dev", "--engine-env", "PATH=/x"],
            "invalid --engine-env",
        ),
        (
            &["edit", "dev", "--engine-registry-mirror", "ftp://m"],
            "invalid --engine-registry-mirror",
        ),
        (
            &["edit", "dev", "--share", "relative/dir"],
            "the host path must be absolute",
        ),
        (
            &[
                "edit",
                "dev",
                "--engine-opt",
                "log-level=debug",
                "--engine-unset",
                "log-level",
            ],
            "contradict each other",
        ),
        // The fake driver has no shares.
        (
            &[
                "edit",
                "dev",
                "--share",
                dir.path().to_str().unwrap(),
                "--allow-root-share",
            ],
            "file sharing is not available",
        ),
    ];
    for (args, needle) in cases {
        let o = env.run(args);
        fails_with(&o, needle);
        assert_eq!(spec_text(&env, "dev"), before, "{args:?} changed the file");
    }
    // Usage errors: a flag twice, --allow-root-share without --share.
    usage_error(&env.run(&["edit", "dev", "--cpus", "1", "--cpus", "2"]));
    usage_error(&env.run(&["edit", "dev", "--allow-root-share"]));
    usage_error(&env.run(&["edit"]));
    assert_eq!(spec_text(&env, "dev"), before);
}

#[test]
fn edit_adds_replaces_and_removes_shares() {
    let env = Env::new();
    create_qemu(&env, "q");
    let tmp = tempfile::tempdir().unwrap();
    let src = std::fs::canonicalize(tmp.path()).unwrap().join("src");
    std::fs::create_dir(&src).unwrap();
    let src_s = src.to_str().unwrap();
    // Root owns it (the tests run as root): refused without --allow-root-share, as at create.
    let before = spec_text(&env, "q");
    fails_with(
        &env.run(&["edit", "q", "--share", &format!("{src_s}:/src")]),
        "is owned by root",
    );
    assert_eq!(spec_text(&env, "q"), before);
    let o = env.run(&[
        "edit",
        "q",
        "--share",
        &format!("{src_s}:/src"),
        "--allow-root-share",
    ]);
    succeeds(&o);
    assert!(
        stderr(&o).contains(&format!("share added: {src_s} -> /src")),
        "{}",
        stderr(&o)
    );
    let s = spec(&env, "q");
    assert_eq!(s["shares"][0]["host_path"], src_s);
    assert_eq!(s["shares"][0]["guest_path"], "/src");
    assert!(s["shares"][0]["id"]["ino"].as_u64().is_some(), "{s}");
    // The same directory again: its share is replaced (here: another guest path, read-only).
    succeeds(&env.run(&[
        "edit",
        "q",
        "--share",
        &format!("{src_s}:/code:ro"),
        "--allow-root-share",
    ]));
    let s = spec(&env, "q");
    assert_eq!(s["shares"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["shares"][0]["guest_path"], "/code");
    assert_eq!(s["shares"][0]["read_only"], true);
    // Refused: devbox's own directories, a guest path twice, a system directory of the guest.
    let before = spec_text(&env, "q");
    let other = std::fs::canonicalize(tmp.path()).unwrap().join("other");
    std::fs::create_dir(&other).unwrap();
    for (share, needle) in [
        (
            env.home.to_str().unwrap().to_owned(),
            "devbox's own state directory",
        ),
        (
            format!("{}:/code", other.display()),
            "two shares use the guest path /code",
        ),
        (format!("{}:/etc", other.display()), "system directory"),
        (
            format!("{}/missing", tmp.path().display()),
            "cannot use host path",
        ),
    ] {
        let o = env.run(&["edit", "q", "--share", &share, "--allow-root-share"]);
        fails_with(&o, needle);
        assert_eq!(spec_text(&env, "q"), before);
    }
    // A share is removed by its guest path or its host directory.
    let o = env.run(&["edit", "q", "--unshare", "/code"]);
    succeeds(&o);
    assert!(stderr(&o).contains("share removed"), "{}", stderr(&o));
    assert_eq!(spec(&env, "q")["shares"], serde_json::json!([]));
    succeeds(&env.run(&["edit", "q", "--share", src_s, "--allow-root-share"]));
    succeeds(&env.run(&["edit", "q", "--unshare", src_s]));
    assert_eq!(spec(&env, "q")["shares"], serde_json::json!([]));
}

#[test]
fn editor_saves_a_valid_edit_and_refuses_a_bad_one_leaving_the_file() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    let tmp = tempfile::tempdir().unwrap();
    let before = spec_text(&env, "dev");
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(env.machine_dir("dev"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    };

    // Not YAML a spec can be read from: refused, naming the line; the file is as it was.
    let bad = script(
        tmp.path(),
        "bad-yaml",
        "sed -i 's/^cpus: .*/cpus: [many/' \"$1\"",
    );
    let o = edit_with(&env, "dev", &bad);
    fails_with(
        &o,
        "the edit of machine dev's machine.yaml was not saved; the file is as it was",
    );
    assert!(stderr(&o).contains("machine.yaml:"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("hint: `devbox edit dev` opens it again"),
        "{}",
        stderr(&o)
    );
    assert_eq!(spec_text(&env, "dev"), before);

    // Well-formed but invalid, with the cause and the field's line.
    let invalid = script(
        tmp.path(),
        "invalid",
        "sed -i 's/^memory_mib: .*/memory_mib: 3/' \"$1\"",
    );
    let o = edit_with(&env, "dev", &invalid);
    fails_with(&o, "memory_mib is not valid");
    assert!(
        stderr(&o).contains("--memory 3 MiB is out of range"),
        "{}",
        stderr(&o)
    );
    assert_eq!(spec_text(&env, "dev"), before);

    // An unknown key (a typo) is refused.
    let typo = script(tmp.path(), "typo", "echo 'cpu: 2' >> \"$1\"");
    fails_with(&edit_with(&env, "dev", &typo), "unknown field `cpu`");
    assert_eq!(spec_text(&env, "dev"), before);

    // A field with its own verb: refused, and the hint names the verb.
    let image = script(
        tmp.path(),
        "image",
        "sed -i 's/^image: .*/image: fedcba9876543210/' \"$1\"",
    );
    let o = edit_with(&env, "dev", &image);
    fails_with(&o, "image cannot be changed by `devbox edit`");
    assert!(
        stderr(&o).contains("hint: move a stopped machine to another image with `devbox upgrade"),
        "{}",
        stderr(&o)
    );
    assert_eq!(spec_text(&env, "dev"), before);
    let index = script(
        tmp.path(),
        "index",
        "sed -i 's/^  index: .*/  index: 5/' \"$1\"",
    );
    fails_with(&edit_with(&env, "dev", &index), "network.subnet");
    assert_eq!(spec_text(&env, "dev"), before);

    // The editor failing: nothing saved.
    let fail = script(
        tmp.path(),
        "fail",
        "sed -i 's/^cpus: .*/cpus: 1/' \"$1\"; exit 3",
    );
    fails_with(&edit_with(&env, "dev", &fail), "exit status: 3");
    assert_eq!(spec_text(&env, "dev"), before);

    // No editor named and no terminal for vi: refused at once.
    let o = env
        .cmd()
        .args(["edit", "dev"])
        .env_remove("VISUAL")
        .env_remove("EDITOR")
        .output()
        .unwrap();
    fails_with(&o, "no editor to open machine.yaml in");
    assert!(stderr(&o).contains("--cpus 4"), "{}", stderr(&o));
    assert_eq!(spec_text(&env, "dev"), before);

    // No change at all.
    let o = edit_with(&env, "dev", Path::new("true"));
    succeeds(&o);
    assert!(stderr(&o).contains("Nothing changed"), "{}", stderr(&o));
    assert_eq!(spec_text(&env, "dev"), before);

    // A valid edit is saved, and described.
    let good = script(
        tmp.path(),
        "good",
        "sed -i 's/^memory_mib: .*/memory_mib: 1024/' \"$1\"",
    );
    let o = edit_with(&env, "dev", &good);
    succeeds(&o);
    assert!(
        stderr(&o).contains("memory: 512 MiB -> 1024 MiB"),
        "{}",
        stderr(&o)
    );
    assert_eq!(spec(&env, "dev")["memory_mib"], 1024);
    assert!(leftovers().is_empty(), "{:?}", leftovers());

    // $VISUAL comes before $EDITOR; an editor with arguments works (run by sh, as git does).
    let visual = script(
        tmp.path(),
        "visual",
        "sed -i \"s/^memory_mib: .*/memory_mib: $1/\" \"$2\"",
    );
    let o = env
        .cmd()
        .args(["edit", "dev"])
        .env("VISUAL", format!("{} 2048", visual.display()))
        .env("EDITOR", &bad)
        .output()
        .unwrap();
    succeeds(&o);
    assert_eq!(spec(&env, "dev")["memory_mib"], 2048);
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}

/// `devbox edit NAME` with `$EDITOR` set to `editor` and stdin on a pseudo-terminal the test
/// holds, answering `answer`.
fn edit_on_a_terminal(env: &Env, name: &str, editor: &Path, answer: &str) -> Output {
    use std::io::Write;
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut master = std::fs::File::from(pty.master);
    master.write_all(answer.as_bytes()).unwrap();
    env.std_cmd()
        .args(["edit", name])
        .env_remove("VISUAL")
        .env("EDITOR", editor)
        .stdin(std::fs::File::from(pty.slave))
        .output()
        .unwrap()
}

#[test]
fn on_a_terminal_a_refused_edit_is_offered_again() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    let tmp = tempfile::tempdir().unwrap();
    let before = spec_text(&env, "dev");
    // The first run writes a bad value; the second finds the user's text again, and fixes it.
    let count = tmp.path().join("count");
    let editor = script(
        tmp.path(),
        "twice",
        &format!(
            "if [ -e {c} ]; then grep -q '^memory_mib: 3$' \"$1\" && sed -i 's/^memory_mib: .*/memory_mib: 1024/' \"$1\"; \
             else touch {c}; sed -i 's/^memory_mib: .*/memory_mib: 3/' \"$1\"; fi",
            c = count.display()
        ),
    );
    // Declined: nothing saved, and the command fails.
    let o = edit_on_a_terminal(&env, "dev", &editor, "n\n");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("memory_mib is not valid"), "{err}");
    assert!(err.contains("Edit again? [Y/n]"), "{err}");
    assert!(err.contains("machine.yaml is as it was"), "{err}");
    assert_eq!(spec_text(&env, "dev"), before);
    // Accepted: the editor opens on the refused text, and the mended edit is saved.
    std::fs::remove_file(&count).unwrap();
    let o = edit_on_a_terminal(&env, "dev", &editor, "\n");
    succeeds(&o);
    assert!(stderr(&o).contains("Edit again? [Y/n]"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("memory: 512 MiB -> 1024 MiB"),
        "{}",
        stderr(&o)
    );
    assert_eq!(spec(&env, "dev")["memory_mib"], 1024);
}

#[test]
fn editor_mends_a_broken_spec() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    let path = spec_path(&env, "dev");
    let good = spec_text(&env, "dev");
    // Broken by hand (as issue #18 found it): every read refuses it.
    std::fs::write(&path, good.replace("cpus: 1", "cpus: 4096")).unwrap();
    let o = env.run(&["edit", "dev", "--cpus", "1"]);
    fails_with(&o, "cpus is not valid");
    assert!(
        stderr(&o).contains("hint: fix it with `devbox edit dev` (which checks it before saving)"),
        "{}",
        stderr(&o)
    );
    let tmp = tempfile::tempdir().unwrap();
    let fix = script(tmp.path(), "fix", "sed -i 's/^cpus: .*/cpus: 1/' \"$1\"");
    let o = edit_with(&env, "dev", &fix);
    succeeds(&o);
    assert!(stderr(&o).contains("CPUs: 4096 -> 1"), "{}", stderr(&o));
    assert_eq!(spec(&env, "dev")["cpus"], 1);
    succeeds(&env.run(&["inspect", "dev"]));
}

#[test]
fn editor_gives_a_share_added_by_hand_its_identity() {
    let env = Env::new();
    create_qemu(&env, "q");
    let tmp = tempfile::tempdir().unwrap();
    let src = std::fs::canonicalize(tmp.path()).unwrap().join("src");
    std::fs::create_dir(&src).unwrap();
    let add = script(
        tmp.path(),
        "add",
        &format!(
            "sed -i 's|^shares: \\[\\]|shares:\\n- host_path: {}\\n  guest_path: /src\\n  allow_root: true|' \"$1\"",
            src.display()
        ),
    );
    let o = edit_with(&env, "q", &add);
    succeeds(&o);
    let s = spec(&env, "q");
    assert_eq!(s["shares"][0]["host_path"], src.to_str().unwrap());
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&src).unwrap();
    assert_eq!(s["shares"][0]["id"]["ino"], meta.ino());
    assert_eq!(s["shares"][0]["id"]["dev"], meta.dev());

    // A share of a directory that does not exist is refused.
    let before = spec_text(&env, "q");
    let missing = script(
        tmp.path(),
        "missing",
        &format!(
            "sed -i 's|{}|{}/gone|' \"$1\"",
            src.display(),
            tmp.path().display()
        ),
    );
    fails_with(&edit_with(&env, "q", &missing), "cannot use host path");
    assert_eq!(spec_text(&env, "q"), before);
}

/// `devbox ARGS` with the fake guest ready at once.
fn run_fake(env: &Env, args: &[&str]) -> Output {
    env.cmd()
        .args(args)
        .env("DEVBOX_FAKE_GUEST", "ready")
        .env("DEVBOX_DNS_UPSTREAMS", "127.0.0.1:53")
        .output()
        .unwrap()
}

#[test]
fn a_running_machine_is_edited_for_its_next_start_and_never_upgraded() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    succeeds(&run_fake(&env, &["start", "dev"]));
    let o = env.run(&["edit", "dev", "--memory", "1G"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains(
            "Machine dev is running: the change applies at its next start (`devbox restart dev`)."
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(spec(&env, "dev")["memory_mib"], 1024);

    add_image(
        &env,
        "fedcba9876543210",
        "x86_64",
        "2026-12-01T00:00:00Z",
        "",
    );
    let before = spec_text(&env, "dev");
    let o = env.run(&["upgrade", "dev"]);
    fails_with(
        &o,
        "machine \"dev\" is running: only a stopped machine can move",
    );
    assert!(stderr(&o).contains("devbox stop dev"), "{}", stderr(&o));
    assert_eq!(spec_text(&env, "dev"), before);
    succeeds(&run_fake(&env, &["stop", "dev"]));
    succeeds(&env.run(&["upgrade", "dev"]));
    assert_eq!(spec(&env, "dev")["image"], "fedcba9876543210");
}

#[test]
fn upgrade_moves_to_the_newest_image_of_its_arch_keeping_the_disk() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    let o = env.run(&["upgrade", "dev"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains(&format!("Machine dev is already on image {FIRST}")),
        "{}",
        stderr(&o)
    );
    // The data disk holds something (a marker where /var/lib/docker's filesystem would be).
    let disk = env.machine_dir("dev").join("disk.raw");
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.seek(std::io::SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(b"marker in /var/lib/docker").unwrap();
    }
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&disk).unwrap().ino();
    let disk_before = std::fs::read(&disk).unwrap();

    // Newer images: one for another arch (never taken), one for this one.
    add_image(
        &env,
        "aaaaaaaaaaaaaaaa",
        "aarch64",
        "2026-12-02T00:00:00Z",
        "",
    );
    add_image(
        &env,
        "fedcba9876543210",
        std::env::consts::ARCH,
        "2026-12-01T00:00:00Z",
        "26.1.5+dfsg1-9",
    );
    let o = env.run(&["upgrade", "dev"]);
    succeeds(&o);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "Moved machine dev from image {FIRST} (Docker 20, kernel 6.1.0-test-cloud-amd64) to fedcba9876543210 (Docker 26"
        )),
        "{err}"
    );
    assert!(err.contains("Start it with: devbox start dev"), "{err}");
    let s = spec(&env, "dev");
    assert_eq!(s["image"], "fedcba9876543210");
    assert_eq!(
        (s["cpus"].clone(), s["memory_mib"].clone()),
        (1.into(), 512.into())
    );
    assert_eq!(std::fs::metadata(&disk).unwrap().ino(), ino);
    assert_eq!(std::fs::read(&disk).unwrap(), disk_before);
    let o = env.run(&["upgrade", "dev"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("already on image fedcba9876543210"),
        "{}",
        stderr(&o)
    );

    // --image: back to the older one (a warning: Docker 26 wrote the disk).
    let o = env.run(&["upgrade", "dev", "--image", FIRST]);
    succeeds(&o);
    assert!(stderr(&o).contains("older Docker (20)"), "{}", stderr(&o));
    assert_eq!(spec(&env, "dev")["image"], FIRST);
    assert_eq!(std::fs::read(&disk).unwrap(), disk_before);

    // Bad input changes nothing.
    let before = spec_text(&env, "dev");
    for (args, needle) in [
        (
            &["upgrade", "dev", "--image", "../../etc"][..],
            "is not an image version",
        ),
        (
            &["upgrade", "dev", "--image", "ffffffffffffffff"],
            "image ffffffffffffffff not found",
        ),
        (
            &["upgrade", "dev", "--image", "aaaaaaaaaaaaaaaa"],
            "is for aarch64 machines",
        ),
        (&["upgrade", "nope"], "no machine named \"nope\""),
    ] {
        fails_with(&env.run(args), needle);
        assert_eq!(spec_text(&env, "dev"), before, "{args:?}");
    }
    usage_error(&env.run(&["upgrade"]));

    // A damaged image is never moved to.
    std::fs::write(
        env.cache.join("images/fedcba9876543210/initrd.img"),
        "tampered",
    )
    .unwrap();
    fails_with(&env.run(&["upgrade", "dev"]), "is damaged");
    assert_eq!(spec_text(&env, "dev"), before);
}

#[test]
fn upgrade_refuses_an_image_whose_docker_lacks_an_engine_setting() {
    let env = Env::new();
    add_image(
        &env,
        "fedcba9876543210",
        std::env::consts::ARCH,
        "2026-12-01T00:00:00Z",
        "26.1.5+dfsg1-9",
    );
    succeeds(&create(
        &env,
        "dev",
        &[
            "--engine-opt",
            r#"proxies={"http-proxy":"http://proxy:3128"}"#,
        ],
    ));
    assert_eq!(spec(&env, "dev")["image"], "fedcba9876543210");
    let before = spec_text(&env, "dev");
    let o = env.run(&["upgrade", "dev", "--image", FIRST]);
    fails_with(&o, "\"proxies\" is not known to Docker 20");
    assert!(stderr(&o).contains("--engine-unset"), "{}", stderr(&o));
    assert_eq!(spec_text(&env, "dev"), before);
}

#[test]
fn image_rm_removes_only_unused_images() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    succeeds(&create(&env, "web", &[]));
    add_image(
        &env,
        "fedcba9876543210",
        "x86_64",
        "2026-12-01T00:00:00Z",
        "",
    );
    let o = env.run(&["image", "rm", FIRST]);
    fails_with(&o, &format!("image {FIRST} is used by machines: dev, web"));
    assert!(stderr(&o).contains("devbox upgrade dev"), "{}", stderr(&o));
    assert!(image_exists(&env, FIRST));
    // One of two in use: neither is removed.
    fails_with(
        &env.run(&["image", "rm", "fedcba9876543210", FIRST]),
        "is used by",
    );
    assert!(image_exists(&env, "fedcba9876543210"));
    for (args, needle) in [
        (
            &["image", "rm", "ffffffffffffffff"][..],
            "image ffffffffffffffff not found",
        ),
        (&["image", "rm", "../images"], "is not an image version"),
    ] {
        fails_with(&env.run(args), needle);
    }
    usage_error(&env.run(&["image", "rm"]));

    let o = env.run(&["image", "rm", "fedcba9876543210"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("Removed image fedcba9876543210"),
        "{}",
        stderr(&o)
    );
    assert!(!image_exists(&env, "fedcba9876543210"));
    let ls = env.run(&["image", "ls"]);
    assert!(!stdout(&ls).contains("fedcba9876543210"), "{}", stdout(&ls));
    // Nothing left behind in the cache but the image in use.
    let names: Vec<_> = std::fs::read_dir(env.cache.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [FIRST]);

    // Once no machine uses it, it goes too.
    succeeds(&env.run(&["rm", "-y", "dev", "web"]));
    succeeds(&env.run(&["image", "rm", FIRST]));
    assert!(!image_exists(&env, FIRST));
}

#[test]
fn image_prune_keeps_used_and_newest_images_and_asks_first() {
    let env = Env::new();
    // FIRST (2026-11-21) is used; an older and a newer one are not; an arm64 one is the
    // newest of its arch.
    succeeds(&create(&env, "dev", &[]));
    add_image(
        &env,
        "1111111111111111",
        "x86_64",
        "2026-10-01T00:00:00Z",
        "",
    );
    add_image(
        &env,
        "2222222222222222",
        "x86_64",
        "2026-12-01T00:00:00Z",
        "",
    );
    add_image(
        &env,
        "3333333333333333",
        "aarch64",
        "2026-09-01T00:00:00Z",
        "",
    );

    let o = env.run(&["image", "prune", "--dry-run"]);
    succeeds(&o);
    let err = stderr(&o);
    assert!(
        err.contains("Would remove image 1111111111111111 (x86_64"),
        "{err}"
    );
    assert!(
        err.contains("Keeping image 2222222222222222, the newest"),
        "{err}"
    );
    assert!(
        err.contains("Keeping image 3333333333333333, the newest"),
        "{err}"
    );
    assert!(
        !err.contains(&format!("Would remove image {FIRST}")),
        "{err}"
    );
    assert!(err.contains("Would free "), "{err}");
    assert!(image_exists(&env, "1111111111111111"));

    // Without a terminal and without -y: refused, nothing removed.
    let o = env
        .std_cmd()
        .args(["image", "prune"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    fails_with(&o, "not pruning images without confirmation");
    assert!(
        stderr(&o).contains("devbox image prune -y"),
        "{}",
        stderr(&o)
    );
    assert!(image_exists(&env, "1111111111111111"));

    let o = env.run(&["image", "prune", "-y"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("Removed image 1111111111111111"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("Freed "), "{}", stderr(&o));
    assert!(!image_exists(&env, "1111111111111111"));
    for kept in [FIRST, "2222222222222222", "3333333333333333"] {
        assert!(image_exists(&env, kept), "{kept}");
    }
    let o = env.run(&["image", "prune", "-y"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("No unused images to remove."),
        "{}",
        stderr(&o)
    );

    succeeds(&env.run(&["image", "prune", "-y", "--all"]));
    assert!(image_exists(&env, FIRST), "in use");
    assert!(!image_exists(&env, "2222222222222222"));
    assert!(!image_exists(&env, "3333333333333333"));
}

#[test]
fn image_removal_waits_for_a_machine_that_cannot_say_its_image() {
    let env = Env::new();
    succeeds(&create(&env, "dev", &[]));
    add_image(
        &env,
        "1111111111111111",
        "x86_64",
        "2026-10-01T00:00:00Z",
        "",
    );
    std::fs::write(spec_path(&env, "dev"), "name: dev\ncpus: [\n").unwrap();
    let o = env.run(&["image", "prune", "-y"]);
    fails_with(
        &o,
        "machine dev's machine.yaml does not say which image it uses",
    );
    assert!(stderr(&o).contains("devbox edit dev"), "{}", stderr(&o));
    fails_with(
        &env.run(&["image", "rm", "1111111111111111"]),
        "does not say which image",
    );
    assert!(image_exists(&env, "1111111111111111"));
    assert!(image_exists(&env, FIRST));
}

#[test]
fn bash_completes_the_new_verbs() {
    let env = Env::new();
    succeeds(&create(&env, "alpha", &[]));
    add_image(
        &env,
        "fedcba9876543210",
        "x86_64",
        "2026-12-01T00:00:00Z",
        "",
    );
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_devbox"), bin.path().join("devbox")).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let bash = |words: &str| -> Vec<String> {
        let script = format!(
            "source <(devbox completion bash)\nCOMP_WORDS=({words})\nCOMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\nCOMP_TYPE=9\n_clap_complete_devbox devbox \"${{COMP_WORDS[COMP_CWORD]}}\" x\nprintf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let o = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("PATH", &path)
            .env("DEVBOX_HOME", &env.home)
            .env("DEVBOX_CACHE", &env.cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).lines().map(|l| l.trim().to_owned()).collect()
    };
    let verbs = bash("devbox ''");
    assert!(
        verbs.contains(&"edit".to_owned()) && verbs.contains(&"upgrade".to_owned()),
        "{verbs:?}"
    );
    for verb in ["edit", "upgrade"] {
        let names = bash(&format!("devbox {verb} ''"));
        assert!(names.contains(&"alpha".to_owned()), "{verb}: {names:?}");
    }
    let versions = bash("devbox image rm ''");
    for v in [FIRST, "fedcba9876543210"] {
        assert!(versions.contains(&v.to_owned()), "{versions:?}");
    }
    assert_eq!(
        bash("devbox upgrade alpha --image fe"),
        ["fedcba9876543210"]
    );
    let sub = bash("devbox image ''");
    assert!(
        sub.contains(&"rm".to_owned()) && sub.contains(&"prune".to_owned()),
        "{sub:?}"
    );
}
