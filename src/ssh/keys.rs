//! Key material: ed25519 key pairs in OpenSSH formats, written atomically, and SHA256
//! fingerprints formatted exactly like `ssh-keygen -lf` (`SHA256:` + unpadded base64).
//!
//! The same generator makes the per-machine client key and the guest's host key; the host
//! key's public half is what [`crate::ssh::Target::host_key`] pins.

use std::io::Write;
use std::path::Path;

use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use super::SshError;

/// An ed25519 key pair in OpenSSH formats.
#[derive(Clone)]
pub struct KeyPair {
    /// `-----BEGIN OPENSSH PRIVATE KEY-----` PEM, unencrypted.
    pub private_openssh: String,
    /// One line: `ssh-ed25519 AAAA… comment`.
    pub public_openssh: String,
}

impl std::fmt::Debug for KeyPair {
    // Keeps the private key out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_openssh", &self.public_openssh)
            .finish_non_exhaustive()
    }
}

/// Generates a fresh ed25519 key pair from the OS random source.
pub fn generate_ed25519(comment: &str) -> Result<KeyPair, SshError> {
    let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(SshError::KeyGen)?;
    key.set_comment(comment);
    let private_openssh = key
        .to_openssh(LineEnding::LF)
        .map_err(SshError::KeyGen)?
        .to_string();
    let public_openssh = key.public_key().to_openssh().map_err(SshError::KeyGen)?;
    Ok(KeyPair {
        private_openssh,
        public_openssh,
    })
}

/// Writes the private key (mode 0600) and the public key (mode 0644, newline-terminated).
/// Each file is written to a temporary file in the same directory, fsynced, then renamed over
/// the destination, so a reader never sees a half-written key.
pub fn write_keypair(
    kp: &KeyPair,
    private_path: &Path,
    public_path: &Path,
) -> Result<(), SshError> {
    write_atomic(private_path, kp.private_openssh.as_bytes(), 0o600)?;
    let mut public = kp.public_openssh.trim_end().to_string();
    public.push('\n');
    write_atomic(public_path, public.as_bytes(), 0o644)
}

/// The SHA256 fingerprint of a public key in OpenSSH one-line format, e.g.
/// `SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s`.
pub fn fingerprint(public_openssh: &str) -> Result<String, SshError> {
    Ok(parse_public(public_openssh)?
        .fingerprint(HashAlg::Sha256)
        .to_string())
}

pub(crate) fn parse_public(public_openssh: &str) -> Result<PublicKey, SshError> {
    PublicKey::from_openssh(public_openssh.trim()).map_err(|source| SshError::KeyParse {
        key: public_openssh.trim().to_string(),
        source,
    })
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), SshError> {
    use std::os::unix::fs::PermissionsExt;

    let err = |source| SshError::KeyWrite {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // tempfile creates the file with mode 0600, so the private key is never readable by
    // others, not even for an instant.
    let mut tmp = tempfile::Builder::new()
        .prefix(".devbox-key")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(contents).map_err(err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    // Make the rename itself durable.
    fs_err::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_round_trips_and_matches() {
        let kp = generate_ed25519("dev@devbox").unwrap();
        assert!(kp.public_openssh.starts_with("ssh-ed25519 "));
        assert!(kp.public_openssh.ends_with(" dev@devbox"));
        let private = PrivateKey::from_openssh(&kp.private_openssh).unwrap();
        let public = parse_public(&kp.public_openssh).unwrap();
        assert_eq!(private.public_key().key_data(), public.key_data());
        assert_ne!(
            kp.public_openssh,
            generate_ed25519("dev@devbox").unwrap().public_openssh
        );
    }

    #[test]
    fn fingerprint_matches_a_known_ssh_keygen_value() {
        // Made for this test with `ssh-keygen -t ed25519 -C vector@devbox`; the expected
        // value is what `ssh-keygen -lf` printed for it.
        let public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKa4fVbo5wFPsjL3UUXChdKXdrl+pYI9U2IGBtEDELhG vector@devbox";
        assert_eq!(
            fingerprint(public).unwrap(),
            "SHA256:LLhHnpne/gAuZAzYUezZbe8mW6aUlUkOuBAn9WS2fcw"
        );
    }

    #[test]
    fn fingerprint_rejects_garbage_with_the_key_in_the_message() {
        let err = fingerprint("ssh-ed25519 not-base64").unwrap_err();
        assert!(err.to_string().contains("not-base64"), "{err}");
    }

    #[test]
    fn write_keypair_sets_modes_and_contents() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let kp = generate_ed25519("t").unwrap();
        let (private, public) = (dir.path().join("id"), dir.path().join("id.pub"));
        write_keypair(&kp, &private, &public).unwrap();
        // Overwriting must work too (rename over an existing file).
        write_keypair(&kp, &private, &public).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&private), 0o600);
        assert_eq!(mode(&public), 0o644);
        assert_eq!(
            std::fs::read_to_string(&private).unwrap(),
            kp.private_openssh
        );
        assert_eq!(
            std::fs::read_to_string(&public).unwrap(),
            format!("{}\n", kp.public_openssh)
        );
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 2, "no temporary files left behind");
    }
}
