//! The user's local certificate authority: one root per `DEVBOX_HOME`, per-machine
//! intermediates and leaves issued in memory.
//!
//! # The constraint set, and why
//!
//! A CA the user's browsers trust is a skeleton key for every site unless it is constrained,
//! so every certificate in the chain carries a **critical X.509 `nameConstraints`**:
//!
//! - **Root** (10 years, `tls/ca.pem` + `tls/ca-key.pem`, the key 0600 and never sent to a
//!   guest): permits DNS names under the TLDs devbox serves when the CA is created — `dev`
//!   (the default) and every existing machine's `--tld` — plus the special-use TLDs that
//!   cannot hold public names (`test`, `example`, `internal`, `lan`, `home.arpa`; see
//!   [`crate::dns::policy::PRIVATE_TLDS`]), and **excludes every IPv4 and IPv6 address**
//!   (`0.0.0.0/0`, `::/0`): a leaked key cannot mint a certificate for `google.com` or
//!   `10.0.0.1`. Why the whole TLD and not the user's own domains: `.dev` is a real TLD, so
//!   this still leaves `pkg.go.dev` reachable by a leaked root key, but aliases the user
//!   allows later (`devbox dns allow synbioz.dev`) are always under the machine's TLD
//!   ([`crate::dns::policy::check_allowance`]) and must not need a new root re-trusted in
//!   every store; a root constrained to the domains of the day would. The narrower bound is
//!   carried by the next level, which costs nothing to re-issue.
//! - **Machine intermediate** (7 days, in the supervisor's memory only, re-issued when the
//!   machine's allowed domains change or it nears expiry): permits only `<machine>.<tld>` and
//!   the domains allowed for that machine (`dns_domains`), same IP exclusions, path length 0.
//!   Leaves under it for any other name fail verification in OpenSSL, NSS and Chromium (the
//!   tests below prove it with `openssl verify`).
//! - **Leaf** (48 hours, serverAuth only, key in the supervisor's memory only): one per SNI
//!   name, issued when a client first asks and renewed when less than a day is left
//!   ([`super::resolver`]), only for a name the machine's DNS zone serves at that moment.
//!
//! So no key but the root's is ever on disk, and none is ever in a guest: a compromised guest
//! cannot obtain any certificate. What it can do is make the supervisor terminate TLS for a
//! name by serving it (a container alias), which it could already answer DNS for: no name it
//! does not already serve. A leaked root key (the user's own account compromised) is bounded
//! by the root's constraints above.
//!
//! EKU serverAuth on the root and intermediates limits the chain to TLS servers (no code
//! signing, no client or S/MIME certificates), as Mozilla's policy reads EKU on CAs.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, PublicKeyData, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::hint::Hint;

/// The special-use TLDs every root permits besides the user's TLDs (see the module header).
/// `localhost` and `invalid` are left out: no machine can use them (`localhost` resolves
/// locally everywhere, `invalid` never resolves).
pub const SPECIAL_USE_TLDS: [&str; 5] = ["test", "example", "internal", "lan", "home.arpa"];

/// How long the root is valid.
const ROOT_LIFETIME: Duration = Duration::days(3650);
/// How long a machine intermediate is valid.
pub const INTERMEDIATE_LIFETIME: Duration = Duration::days(7);
/// How long a leaf is valid.
pub const LEAF_LIFETIME: Duration = Duration::hours(48);
/// Backdating of every certificate, so a client whose clock lags a little accepts it.
const BACKDATE: Duration = Duration::hours(1);

/// Why the CA cannot be created, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("reading the devbox CA at {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the devbox CA at {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the devbox CA in {dir} is incomplete: {present} exists but {missing} does not")]
    Incomplete {
        dir: PathBuf,
        present: PathBuf,
        missing: PathBuf,
    },
    #[error("the devbox CA file {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("the devbox CA does not cover .{tld}: it was created for {covered}")]
    TldNotCovered { tld: String, covered: String },
    #[error("`{name}` is outside the names this certificate authority may sign ({permitted})")]
    OutsideConstraints { name: String, permitted: String },
    #[error("signing a certificate")]
    Sign(#[source] rcgen::Error),
}

impl Hint for CaError {
    fn hint(&self) -> Option<String> {
        let dir = match self {
            CaError::Incomplete { dir, .. } => dir.clone(),
            CaError::Corrupt { path, .. } | CaError::Read { path, .. } => {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            }
            CaError::TldNotCovered { .. } => {
                return Some(
                    "run `devbox trust uninstall`, remove the tls directory under DEVBOX_HOME, \
                     then `devbox trust install` to create and trust a CA that covers every \
                     machine's TLD"
                        .into(),
                );
            }
            CaError::Write { .. } | CaError::OutsideConstraints { .. } | CaError::Sign(_) => {
                return None;
            }
        };
        Some(format!(
            "run `devbox trust uninstall`, remove {}, then `devbox trust install` to create a \
             new CA and trust it",
            dir.display()
        ))
    }
}

/// The root: its certificate and key, loaded from (or created in) `DEVBOX_HOME/tls/`.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
    /// The TLDs the root permits (lower case, no dots around).
    tlds: Vec<String>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Ca").field("tlds", &self.tlds).finish()
    }
}

/// The files of the CA under a `DEVBOX_HOME`.
#[derive(Clone, Debug)]
pub struct CaPaths {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CaPaths {
    pub fn new(home: &Path) -> CaPaths {
        let dir = home.join("tls");
        CaPaths {
            cert: dir.join("ca.pem"),
            key: dir.join("ca-key.pem"),
            dir,
        }
    }
}

impl Ca {
    /// Loads the CA, or creates it when neither file exists (first use), permitting `dev`,
    /// `user_tlds` and the special-use TLDs. One file without the other, or a file that does
    /// not parse, is an error: nothing is overwritten.
    pub fn load_or_create(paths: &CaPaths, user_tlds: &[String]) -> Result<Ca, CaError> {
        match (paths.cert.exists(), paths.key.exists()) {
            (false, false) => {
                let ca = Ca::generate(user_tlds)?;
                ca.save(paths)?;
                Ok(ca)
            }
            _ => Ca::load(paths),
        }
    }

    /// Loads an existing CA; a missing, partial or corrupt one is an error naming the fix.
    pub fn load(paths: &CaPaths) -> Result<Ca, CaError> {
        match (paths.cert.exists(), paths.key.exists()) {
            (true, true) => {}
            (true, false) | (false, true) => {
                let (present, missing) = if paths.cert.exists() {
                    (paths.cert.clone(), paths.key.clone())
                } else {
                    (paths.key.clone(), paths.cert.clone())
                };
                return Err(CaError::Incomplete {
                    dir: paths.dir.clone(),
                    present,
                    missing,
                });
            }
            (false, false) => {
                return Err(CaError::Read {
                    path: paths.cert.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                });
            }
        }
        let read = |path: &Path| {
            fs_err::read_to_string(path).map_err(|source| CaError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(&paths.cert)?;
        let key_pem = read(&paths.key)?;
        let corrupt = |path: &Path, why: String| CaError::Corrupt {
            path: path.to_path_buf(),
            why,
        };
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| corrupt(&paths.key, format!("not a PEM private key ({e})")))?;
        let cert_der = pem_cert_der(&cert_pem)
            .ok_or_else(|| corrupt(&paths.cert, "not a PEM certificate".into()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| corrupt(&paths.cert, format!("not an X.509 certificate ({e})")))?;
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(corrupt(
                &paths.cert,
                format!("its public key does not match {}", paths.key.display()),
            ));
        }
        if !x509.is_ca() {
            return Err(corrupt(&paths.cert, "not a CA certificate".into()));
        }
        let tlds = permitted_dns(&x509)
            .ok_or_else(|| corrupt(&paths.cert, "it carries no DNS name constraints".into()))?;
        Ok(Ca {
            cert_pem,
            cert_der,
            key,
            tlds,
        })
    }

    /// A new root (not saved).
    pub fn generate(user_tlds: &[String]) -> Result<Ca, CaError> {
        let mut tlds: Vec<String> = std::iter::once("dev".to_string())
            .chain(
                user_tlds
                    .iter()
                    .map(|t| t.trim_matches('.').to_ascii_lowercase()),
            )
            .chain(SPECIAL_USE_TLDS.iter().map(|t| t.to_string()))
            .collect();
        tlds.sort();
        tlds.dedup();
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let params = root_params(&tlds);
        let cert = params.self_signed(&key).map_err(CaError::Sign)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
            tlds,
        })
    }

    /// Writes the certificate and the key atomically, both 0600 like everything in
    /// DEVBOX_HOME, key first: a crash between the two leaves a key without a certificate,
    /// which [`Ca::load`] reports.
    fn save(&self, paths: &CaPaths) -> Result<(), CaError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Write { path, source }
        };
        fs_err::create_dir_all(&paths.dir).map_err(write_err(&paths.dir))?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs_err::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(write_err(&paths.dir))?;
        }
        crate::atomic_file::write_atomic(&paths.key, self.key.serialize_pem().as_bytes(), 0o600)
            .map_err(write_err(&paths.key))?;
        crate::atomic_file::write_atomic(&paths.cert, self.cert_pem.as_bytes(), 0o600)
            .map_err(write_err(&paths.cert))?;
        Ok(())
    }

    /// The root certificate, PEM (what trust stores and guests get).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The TLDs the root permits.
    pub fn tlds(&self) -> &[String] {
        &self.tlds
    }

    /// Issues the intermediate of machine `machine` under `tld`, constrained to
    /// `<machine>.<tld>` and `allowed` (domains under the same TLD).
    pub fn machine_issuer(
        &self,
        machine: &str,
        tld: &str,
        allowed: &[String],
    ) -> Result<MachineIssuer, CaError> {
        let tld = tld.trim_matches('.').to_ascii_lowercase();
        if !self.tlds.contains(&tld) {
            return Err(CaError::TldNotCovered {
                tld,
                covered: self.tlds.join(", "),
            });
        }
        let mut domains = vec![format!("{machine}.{tld}").to_ascii_lowercase()];
        domains.extend(
            allowed
                .iter()
                .map(|d| d.trim_matches('.').to_ascii_lowercase()),
        );
        domains.sort();
        domains.dedup();
        for d in &domains {
            if !within(d, &self.tlds) {
                return Err(CaError::OutsideConstraints {
                    name: d.clone(),
                    permitted: self.tlds.join(", "),
                });
            }
        }
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("devbox machine {machine}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.name_constraints = Some(constraints(&domains));
        params.not_before = now - BACKDATE;
        params.not_after = now + INTERMEDIATE_LIFETIME;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let root = Issuer::from_ca_cert_der(&self.cert_der.clone().into(), &self.key)
            .map_err(CaError::Sign)?;
        let cert = params.signed_by(&key, &root).map_err(CaError::Sign)?;
        Ok(MachineIssuer {
            cert_der: cert.der().to_vec(),
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
            domains,
        })
    }
}

/// A machine's intermediate, held by its supervisor: signs the leaves.
pub struct MachineIssuer {
    cert_der: Vec<u8>,
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
    domains: Vec<String>,
}

/// A leaf certificate and its key (PKCS#8 DER), as the TLS server needs them.
pub struct Leaf {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    pub not_after: OffsetDateTime,
}

impl MachineIssuer {
    /// The intermediate's certificate, DER (sent in every handshake after the leaf).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// When the intermediate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The domains it may sign under.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Whether `name` is inside this intermediate's constraints.
    pub fn permits(&self, name: &str) -> bool {
        within(&name.to_ascii_lowercase(), &self.domains)
    }

    /// A 48-hour serverAuth leaf for `name`. A name outside the intermediate's constraints is
    /// refused here (a certificate for it would not verify anyway).
    pub fn leaf(&self, name: &str) -> Result<Leaf, CaError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !self.permits(&name) {
            return Err(CaError::OutsideConstraints {
                name,
                permitted: self.domains.join(", "),
            });
        }
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&name);
        params.subject_alt_names = vec![SanType::DnsName(
            name.clone().try_into().map_err(CaError::Sign)?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - BACKDATE;
        params.not_after = (now + LEAF_LIFETIME).min(self.not_after);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Sign)?;
        Ok(Leaf {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            not_after: params.not_after,
        })
    }
}

/// Whether DNS name `name` is `domain` or under it, for one of `domains` (the rule of RFC
/// 5280 §4.2.1.10 for dNSName constraints).
fn within(name: &str, domains: &[String]) -> bool {
    domains
        .iter()
        .any(|d| name == d || name.ends_with(&format!(".{d}")))
}

fn root_params(tlds: &[String]) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let who = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    params.distinguished_name = dn(&format!("devbox local CA {who}@{host}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.name_constraints = Some(constraints(tlds));
    params.not_before = now - BACKDATE;
    params.not_after = now + ROOT_LIFETIME;
    params.serial_number = Some(random_serial());
    params
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "devbox");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// DNS subtrees `domains` permitted, every IP address excluded.
fn constraints(domains: &[String]) -> NameConstraints {
    NameConstraints {
        permitted_subtrees: domains
            .iter()
            .map(|d| GeneralSubtree::DnsName(d.clone()))
            .collect(),
        excluded_subtrees: vec![
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
        ],
    }
}

/// 16 random bytes, positive (top bit clear), as CA/Browser Forum rules ask (≥ 64 bits).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn pem_cert_der(text: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes()).ok()?;
    (pem.label == "CERTIFICATE").then_some(pem.contents)
}

/// The permitted DNS subtrees of a CA certificate's name constraints.
fn permitted_dns(x509: &x509_parser::certificate::X509Certificate<'_>) -> Option<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let nc = x509.name_constraints().ok()??;
    let permitted = nc.value.permitted_subtrees.as_ref()?;
    let dns: Vec<String> = permitted
        .iter()
        .filter_map(|s| match &s.base {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    (!dns.is_empty()).then_some(dns)
}

#[cfg(test)]
mod tests;
