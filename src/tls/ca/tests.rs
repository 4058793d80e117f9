use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::*;

fn tmp_paths() -> (tempfile::TempDir, CaPaths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = CaPaths::new(dir.path());
    (dir, paths)
}

fn mode(path: &Path) -> u32 {
    fs_err::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn first_use_creates_a_private_key_and_a_constrained_root_that_loads_back() {
    let (_dir, paths) = tmp_paths();
    let ca = Ca::load_or_create(&paths, &["box".into()]).unwrap();
    assert_eq!(mode(&paths.key), 0o600);
    assert_eq!(mode(&paths.cert), 0o600);
    assert_eq!(mode(&paths.dir), 0o700);
    assert_eq!(
        ca.tlds(),
        [
            "box",
            "dev",
            "example",
            "home.arpa",
            "internal",
            "lan",
            "test"
        ]
    );
    let again = Ca::load_or_create(&paths, &[]).unwrap();
    assert_eq!(again.cert_pem(), ca.cert_pem(), "an existing CA is kept");
    assert_eq!(again.tlds(), ca.tlds());
}

#[test]
fn a_missing_or_corrupt_ca_is_an_error_naming_devbox_trust_and_nothing_is_rewritten() {
    let (_dir, paths) = tmp_paths();
    Ca::load_or_create(&paths, &[]).unwrap();
    let cert = fs_err::read_to_string(&paths.cert).unwrap();

    // The key gone: load_or_create must not mint a new pair over the trusted certificate.
    let key = fs_err::read(&paths.key).unwrap();
    fs_err::remove_file(&paths.key).unwrap();
    let e = Ca::load_or_create(&paths, &[]).unwrap_err();
    assert!(matches!(e, CaError::Incomplete { .. }), "{e:?}");
    assert!(e.hint().unwrap().contains("devbox trust install"));
    assert_eq!(fs_err::read_to_string(&paths.cert).unwrap(), cert);
    assert!(!paths.key.exists());
    fs_err::write(&paths.key, &key).unwrap();

    // A torn certificate.
    fs_err::write(&paths.cert, &cert[..cert.len() / 2]).unwrap();
    let e = Ca::load(&paths).unwrap_err();
    assert!(matches!(e, CaError::Corrupt { .. }), "{e:?}");
    assert!(e.hint().unwrap().contains("devbox trust"));

    // A certificate that is not this key's.
    let other = Ca::generate(&[]).unwrap();
    fs_err::write(&paths.cert, other.cert_pem()).unwrap();
    let e = Ca::load(&paths).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");

    // A key that is not PEM.
    fs_err::write(&paths.cert, &cert).unwrap();
    fs_err::write(&paths.key, "garbage").unwrap();
    assert!(matches!(Ca::load(&paths), Err(CaError::Corrupt { .. })));

    // Nothing at all: `load` (the supervisor's read of an existing CA) says so.
    let (_d2, empty) = tmp_paths();
    assert!(matches!(Ca::load(&empty), Err(CaError::Read { .. })));
}

#[test]
fn intermediates_are_refused_for_tlds_the_root_does_not_cover() {
    let ca = Ca::generate(&[]).unwrap();
    let e = ca.machine_issuer("m", "box", &[]).err().unwrap();
    assert!(matches!(e, CaError::TldNotCovered { .. }), "{e:?}");
    assert!(e.hint().unwrap().contains("devbox trust install"));
    assert!(ca.machine_issuer("m", "test", &[]).is_ok());
}

#[test]
fn leaves_are_only_issued_inside_the_machine_s_names() {
    let ca = Ca::generate(&[]).unwrap();
    let m = ca
        .machine_issuer("box", "dev", &["synbioz.dev".into()])
        .unwrap();
    assert_eq!(m.domains(), ["box.dev", "synbioz.dev"]);
    for ok in [
        "box.dev",
        "web.box.dev",
        "www.synbioz.dev",
        "WWW.Synbioz.dev.",
    ] {
        let leaf = m.leaf(ok).unwrap();
        let life = leaf.not_after - OffsetDateTime::now_utc();
        assert!(life <= LEAF_LIFETIME && life > LEAF_LIFETIME - Duration::minutes(5));
    }
    for bad in [
        "pkg.go.dev",
        "evilbox.dev",
        "other.dev",
        "google.com",
        "dev",
    ] {
        assert!(
            matches!(m.leaf(bad), Err(CaError::OutsideConstraints { .. })),
            "{bad}"
        );
    }
}

/// Writes PEM files and runs `openssl`: the constraints are what OpenSSL enforces, not only
/// what `MachineIssuer::leaf` checks.
struct Openssl {
    dir: tempfile::TempDir,
}

impl Openssl {
    fn new() -> Openssl {
        Openssl {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn pem(&self, name: &str, der: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        let der_path = path.with_extension("der");
        fs_err::write(&der_path, der).unwrap();
        let st = Command::new("openssl")
            .args(["x509", "-inform", "DER", "-in"])
            .arg(&der_path)
            .arg("-out")
            .arg(&path)
            .status()
            .expect("openssl (package openssl) runs");
        assert!(st.success());
        path
    }

    fn text(&self, cert: &Path) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(cert)
            .output()
            .expect("openssl (package openssl) runs");
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }

    /// `openssl verify` of `leaf` through `inter` to `root`, for `purpose` sslserver.
    fn verify(&self, root: &Path, inter: Option<&Path>, leaf: &Path) -> (bool, String) {
        let mut cmd = Command::new("openssl");
        cmd.args(["verify", "-purpose", "sslserver", "-CAfile"])
            .arg(root);
        if let Some(i) = inter {
            cmd.arg("-untrusted").arg(i);
        }
        let out = cmd.arg(leaf).output().expect("openssl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// A leaf for any name, signed with `issuer` without `MachineIssuer::leaf`'s check: what a
/// thief holding that key could mint.
fn forged_leaf(issuer: &Issuer<'_, impl rcgen::SigningKey>, name: &str) -> Vec<u8> {
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = OffsetDateTime::now_utc() - BACKDATE;
    params.not_after = OffsetDateTime::now_utc() + LEAF_LIFETIME;
    let key = KeyPair::generate().unwrap();
    params.signed_by(&key, issuer).unwrap().der().to_vec()
}

#[test]
fn openssl_shows_critical_constraints_and_refuses_leaves_outside_them() {
    let ca = Ca::generate(&[]).unwrap();
    let m = ca
        .machine_issuer("box", "dev", &["synbioz.dev".into()])
        .unwrap();
    let ssl = Openssl::new();
    let root = ssl.pem("root.pem", ca.cert_der());
    let inter = ssl.pem("inter.pem", m.cert_der());

    let text = ssl.text(&root);
    assert!(text.contains("X509v3 Name Constraints: critical"), "{text}");
    assert!(text.contains("DNS:dev"), "{text}");
    assert!(text.contains("DNS:home.arpa"), "{text}");
    assert!(text.contains("IP:0.0.0.0/0.0.0.0"), "{text}");
    assert!(text.contains("CA:TRUE, pathlen:1"), "{text}");
    let text = ssl.text(&inter);
    assert!(text.contains("X509v3 Name Constraints: critical"), "{text}");
    assert!(text.contains("DNS:box.dev"), "{text}");
    assert!(text.contains("DNS:synbioz.dev"), "{text}");
    assert!(!text.contains("DNS:dev\n"), "{text}");

    // Leaves the supervisor issues verify.
    let good = ssl.pem("good.pem", &m.leaf("www.synbioz.dev").unwrap().cert_der);
    let (ok, out) = ssl.verify(&root, Some(&inter), &good);
    assert!(ok, "{out}");

    // The intermediate's key cannot mint a trusted leaf for another name under .dev, nor
    // the root's for a name outside its TLDs, nor for an IP address.
    let cases = [
        ("pkg.go.dev", forged_leaf(&m.issuer, "pkg.go.dev"), true),
        ("other.dev", forged_leaf(&m.issuer, "other.dev"), true),
        (
            "google.com",
            forged_leaf(&root_issuer(&ca), "google.com"),
            false,
        ),
        (
            "10.0.0.1",
            forged_leaf(&root_issuer(&ca), "10.0.0.1"),
            false,
        ),
    ];
    for (name, der, through_inter) in cases {
        let leaf = ssl.pem(&format!("{name}.pem"), &der);
        let (ok, out) = ssl.verify(&root, through_inter.then_some(inter.as_path()), &leaf);
        assert!(!ok, "{name} verified: {out}");
        assert!(
            out.contains("subtree violation") || out.contains("name constraint"),
            "{name}: {out}"
        );
    }
}

fn root_issuer(ca: &Ca) -> Issuer<'static, &KeyPair> {
    Issuer::from_ca_cert_der(&ca.cert_der.clone().into(), &ca.key).unwrap()
}
