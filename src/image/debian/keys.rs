//! The OpenPGP keys devbox trusts for Debian's `InRelease` files, and the check of an
//! `InRelease`'s signatures against them.
//!
//! The keys are data shipped in the binary (`keys/*.asc`, from Debian's
//! `debian-archive-keyring`; `keys/README.md` names each file, its fingerprint and source).
//! Each is pinned by its primary fingerprint here too, so a changed file fails the build's
//! tests rather than widening trust.
//!
//! OpenPGP is done by rPGP (the `pgp` crate): pure Rust on RustCrypto, no nettle, OpenSSL or
//! Botan to link, so the same code builds on macOS and any Linux, and MIT/Apache-licensed.
//! sequoia-openpgp does the job too, but its RustCrypto backend is still flagged
//! experimental (it must be enabled with `allow-experimental-crypto`), its default backend
//! links nettle, and it is LGPL.
//!
//! Policy, as apt's (through gpgv) for what matters here: a signature by a key that is not
//! trusted is ignored (Debian signs with several keys, some of other releases); a signature by
//! a trusted key that does not verify refuses the whole file; at least one good signature by
//! a trusted key is needed. A trusted key counts only while it is not expired or revoked, a
//! subkey only with a valid binding signature from its pinned primary and the signing flag.

use std::time::{Duration, SystemTime};

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::packet::{PublicKey, PublicSubkey, Signature, SignatureType};
use pgp::types::{KeyDetails, Tag};

/// A key shipped in the binary.
#[derive(Debug, Clone, Copy)]
pub struct PinnedKey {
    /// File name under `keys/`.
    pub file: &'static str,
    /// Primary key fingerprint, hex (spaces allowed).
    pub fingerprint: &'static str,
    pub armored: &'static str,
}

/// The keys for Debian 12 "bookworm" (see `keys/README.md`).
pub const BOOKWORM: &[PinnedKey] = &[
    PinnedKey {
        file: "debian-archive-bookworm-automatic.asc",
        fingerprint: "B8B8 0B5B 623E AB6A D877  5C45 B7C5 D7D6 3509 47F8",
        armored: include_str!("keys/debian-archive-bookworm-automatic.asc"),
    },
    PinnedKey {
        file: "debian-archive-bookworm-security-automatic.asc",
        fingerprint: "05AB 9034 0C0C 5E79 7F44  A8C8 254C F3B5 AEC0 A8F0",
        armored: include_str!("keys/debian-archive-bookworm-security-automatic.asc"),
    },
    PinnedKey {
        file: "debian-archive-bookworm-stable.asc",
        fingerprint: "4D64 FEC1 19C2 0290 67D6  E791 F8D2 585B 8783 D481",
        armored: include_str!("keys/debian-archive-bookworm-stable.asc"),
    },
];

/// The keys for Debian 13 "trixie" (see `keys/README.md`).
pub const TRIXIE: &[PinnedKey] = &[
    PinnedKey {
        file: "debian-archive-trixie-automatic.asc",
        fingerprint: "04B5 4C3C DCA7 9751 B16B  C6B5 2256 29DF 75B1 88BD",
        armored: include_str!("keys/debian-archive-trixie-automatic.asc"),
    },
    PinnedKey {
        file: "debian-archive-trixie-security-automatic.asc",
        fingerprint: "5E04 A1E3 223A 19A2 0706  E20F 9904 613D 4CCE 68C6",
        armored: include_str!("keys/debian-archive-trixie-security-automatic.asc"),
    },
    PinnedKey {
        file: "debian-archive-trixie-stable.asc",
        fingerprint: "4158 7F7D B8C7 74BC CF13  1416 762F 67A0 B2C3 9DE4",
        armored: include_str!("keys/debian-archive-trixie-stable.asc"),
    },
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the archive key {file} cannot be read: {what}")]
    Unreadable { file: String, what: String },
    #[error("the archive key {file} has fingerprint {actual}, devbox pins {pinned}")]
    Fingerprint {
        file: String,
        pinned: String,
        actual: String,
    },
}

/// Why an `InRelease` is refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("it is not an OpenPGP cleartext-signed file ({0})")]
    Malformed(String),
    #[error("its signature by trusted key {key} does not verify: the file was altered")]
    Bad { key: String },
    #[error("it carries no valid signature by a trusted key (signed by: {signers})")]
    Untrusted { signers: String },
}

/// The keys (primaries and signing subkeys) an `InRelease` may be signed with.
#[derive(Debug)]
pub struct Keyring {
    signers: Vec<Signer>,
}

#[derive(Debug)]
struct Signer {
    /// Lowercase hex fingerprint of the key that signs (primary or subkey).
    fingerprint: String,
    key: SignerKey,
    /// End of validity from the newest valid self-signature, if it sets one.
    expires: Option<SystemTime>,
}

#[derive(Debug)]
enum SignerKey {
    Primary(PublicKey),
    Sub(PublicSubkey),
}

impl Keyring {
    /// The shipped keys, each checked against its pinned fingerprint.
    pub fn pinned(keys: &[PinnedKey]) -> Result<Keyring, KeyError> {
        let mut signers = Vec::new();
        for pk in keys {
            let key = parse(pk.file, pk.armored)?;
            let actual = key.primary_key.fingerprint().to_string();
            let pinned: String = pk
                .fingerprint
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase();
            if actual != pinned {
                return Err(KeyError::Fingerprint {
                    file: pk.file.to_owned(),
                    pinned,
                    actual,
                });
            }
            signers.extend(signers_of(key));
        }
        Ok(Keyring { signers })
    }

    /// Trusts these armored keys as they are (a test archive's own key).
    pub fn from_armored(keys: &[&str]) -> Result<Keyring, KeyError> {
        let mut signers = Vec::new();
        for (i, armored) in keys.iter().enumerate() {
            signers.extend(signers_of(parse(&format!("key #{i}"), armored)?));
        }
        Ok(Keyring { signers })
    }

    /// Checks the signatures of an `InRelease` and returns the text they cover (LF line ends):
    /// the only part of the file that may be read afterwards.
    pub fn verify(&self, inrelease: &str, now: SystemTime) -> Result<String, SignatureError> {
        let (msg, _headers) = CleartextSignedMessage::from_string(inrelease)
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        let text = msg.signed_text();
        let mut good = false;
        let mut others = Vec::new();
        for sig in msg.signatures() {
            let Some(signer) = self.signers.iter().find(|s| s.issued(sig)) else {
                others.push(issuer_of(sig));
                continue;
            };
            let typ_ok = matches!(sig.typ(), Some(SignatureType::Text | SignatureType::Binary));
            let verified = match &signer.key {
                SignerKey::Primary(k) => sig.verify(k, text.as_bytes()),
                SignerKey::Sub(k) => sig.verify(k, text.as_bytes()),
            };
            if !typ_ok || verified.is_err() {
                return Err(SignatureError::Bad {
                    key: signer.fingerprint.to_ascii_uppercase(),
                });
            }
            let made: Option<SystemTime> = sig.created().map(Into::into);
            let when = made.unwrap_or(now);
            if signer.expires.is_some_and(|end| end <= when) {
                others.push(format!(
                    "{} (expired)",
                    signer.fingerprint.to_ascii_uppercase()
                ));
                continue;
            }
            good = true;
        }
        if !good {
            return Err(SignatureError::Untrusted {
                signers: if others.is_empty() {
                    "nobody".into()
                } else {
                    others.join(", ")
                },
            });
        }
        // The signed text is CRLF-normalised (RFC 9580 §7.1); the fields are read with LF.
        Ok(text.replace("\r\n", "\n"))
    }
}

impl Signer {
    fn issued(&self, sig: &Signature) -> bool {
        let by_fpr = sig
            .issuer_fingerprint()
            .iter()
            .any(|f| f.to_string() == self.fingerprint);
        let key_id = match &self.key {
            SignerKey::Primary(k) => k.legacy_key_id(),
            SignerKey::Sub(k) => k.legacy_key_id(),
        };
        by_fpr || sig.issuer_key_id().iter().any(|id| **id == key_id)
    }
}

fn issuer_of(sig: &Signature) -> String {
    sig.issuer_fingerprint()
        .first()
        .map(|f| f.to_string().to_ascii_uppercase())
        .or_else(|| sig.issuer_key_id().first().map(|k| format!("{k:?}")))
        .unwrap_or_else(|| "an unnamed key".into())
}

fn parse(file: &str, armored: &str) -> Result<SignedPublicKey, KeyError> {
    SignedPublicKey::from_string(armored)
        .map(|(k, _)| k)
        .map_err(|e| KeyError::Unreadable {
            file: file.to_owned(),
            what: e.to_string(),
        })
}

/// The primary and its signing subkeys that are valid by their own self-signatures. A key
/// whose self-signatures do not verify, or that is revoked, yields nothing.
fn signers_of(key: SignedPublicKey) -> Vec<Signer> {
    let primary = &key.primary_key;
    let revoked = key
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary).is_ok());
    if revoked {
        return Vec::new();
    }
    // Expiry comes from the newest self-certification of a user ID (third-party
    // certifications, which Debian's keys carry, are not the key's own word and are skipped).
    let newest_cert = key
        .details
        .users
        .iter()
        .flat_map(|u| {
            u.signatures
                .iter()
                .filter(|s| s.verify_certification(primary, Tag::UserId, &u.id).is_ok())
        })
        .max_by_key(|s| s.created().map(|t| t.as_secs()));
    let Some(cert) = newest_cert else {
        return Vec::new();
    };
    let mut out = vec![Signer {
        fingerprint: primary.fingerprint().to_string(),
        expires: expiry(primary.created_at().into(), cert),
        key: SignerKey::Primary(primary.clone()),
    }];
    for sub in &key.public_subkeys {
        let valid = |t: SignatureType| {
            sub.signatures
                .iter()
                .filter(move |s| s.typ() == Some(t))
                .filter(|s| s.verify_subkey_binding(primary, &sub.key).is_ok())
        };
        if valid(SignatureType::SubkeyRevocation).next().is_some() {
            continue;
        }
        let Some(binding) =
            valid(SignatureType::SubkeyBinding).max_by_key(|s| s.created().map(|t| t.as_secs()))
        else {
            continue;
        };
        if !binding.key_flags().sign() {
            continue;
        }
        out.push(Signer {
            fingerprint: sub.key.fingerprint().to_string(),
            expires: expiry(sub.key.created_at().into(), binding),
            key: SignerKey::Sub(sub.key.clone()),
        });
    }
    out
}

/// Creation plus the self-signature's key expiration time (0 or absent: never).
fn expiry(created: SystemTime, sig: &Signature) -> Option<SystemTime> {
    let secs = Duration::from(sig.key_expiration_time()?).as_secs();
    (secs > 0).then(|| created + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_keys_match_their_pins_and_sign() {
        let ring = Keyring::pinned(BOOKWORM).unwrap();
        let fprs: Vec<&str> = ring
            .signers
            .iter()
            .map(|s| s.fingerprint.as_str())
            .collect();
        // Two RSA primaries with their signing subkeys, and the ed25519 release key.
        assert_eq!(
            fprs,
            [
                "b8b80b5b623eab6ad8775c45b7c5d7d6350947f8",
                "4cb50190207b4758a3f73a796ed0e7b82643e131",
                "05ab90340c0c5e797f44a8c8254cf3b5aec0a8f0",
                "b0cab9266e8c3929798b3eeebde6d2b9216ec7a8",
                "4d64fec119c2029067d6e791f8d2585b8783d481",
            ]
        );
        // Valid until 2031 by their self-signatures (`gpg --show-keys` agrees).
        for s in &ring.signers {
            let end = s.expires.expect("Debian's keys expire");
            let year = 1970
                + end
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    / 31_556_952;
            assert_eq!(year, 2031, "{}", s.fingerprint);
        }
    }

    #[test]
    fn trixie_keys_match_their_pins_and_sign() {
        let ring = Keyring::pinned(TRIXIE).unwrap();
        let signers: Vec<(&str, u64)> = ring
            .signers
            .iter()
            .map(|s| {
                let end = s.expires.expect("Debian's keys expire");
                let secs = end.duration_since(SystemTime::UNIX_EPOCH).unwrap();
                (s.fingerprint.as_str(), 1970 + secs.as_secs() / 31_556_952)
            })
            .collect();
        // As `gpg --show-keys --with-subkey-fingerprints` lists them: two RSA primaries with
        // their signing subkeys (until 2035), and the ed25519 release key (until 2033).
        assert_eq!(
            signers,
            [
                ("04b54c3cdca79751b16bc6b5225629df75b188bd", 2035),
                ("b8e5f13176d2a7a75220028078dba3bc47ef2265", 2035),
                ("5e04a1e3223a19a20706e20f9904613d4cce68c6", 2035),
                ("89c87acea5dd6b8e6a7068808e9f831205b4ba95", 2035),
                ("41587f7db8c774bccf131416762f67a0b2c39de4", 2033),
            ]
        );
    }

    #[test]
    fn a_changed_pin_is_refused() {
        let mut keys = BOOKWORM.to_vec();
        keys[0].fingerprint = keys[1].fingerprint;
        let e = Keyring::pinned(&keys).unwrap_err();
        assert!(matches!(e, KeyError::Fingerprint { .. }), "{e}");
    }
}
