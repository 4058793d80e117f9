//! [`SniResolver`]: picks the certificate for a TLS handshake by its SNI name, issuing a leaf
//! in memory the first time a served name is asked for and again when less than a day of it
//! is left. A name the machine does not serve right now (no SNI, an unknown name, a name
//! outside the machine's intermediate) gets no certificate: rustls then refuses the
//! handshake. There is no default certificate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};

use super::ca::MachineIssuer;

/// A leaf is re-issued when less than this is left of it.
pub const RENEW_BEFORE: Duration = Duration::hours(24);

/// Where the machine's names lead: answered from its DNS zone.
pub trait Backends: Send + Sync + 'static {
    /// The plain-HTTP address to proxy `name` (lower case, no trailing dot) to, when the
    /// machine serves that name now and its traffic is to be terminated here.
    fn backend(&self, name: &str) -> Option<SocketAddr>;
}

/// The certificate resolver of a machine's TLS listener.
pub struct SniResolver {
    issuer: RwLock<Arc<MachineIssuer>>,
    backends: Arc<dyn Backends>,
    leaves: Mutex<HashMap<String, (Arc<CertifiedKey>, OffsetDateTime)>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl SniResolver {
    pub fn new(issuer: MachineIssuer, backends: Arc<dyn Backends>) -> SniResolver {
        SniResolver {
            issuer: RwLock::new(Arc::new(issuer)),
            backends,
            leaves: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the intermediate (allowed domains changed, or it nears expiry); every leaf is
    /// issued afresh under the new one.
    pub fn set_issuer(&self, issuer: MachineIssuer) {
        *self.issuer.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(issuer);
        self.leaves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The intermediate in use.
    pub fn issuer(&self) -> Arc<MachineIssuer> {
        self.issuer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The certificate for `name`, if the machine serves it now.
    pub fn certificate_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.backends.backend(&name)?;
        let now = OffsetDateTime::now_utc();
        let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((key, not_after)) = leaves.get(&name)
            && *not_after - now > RENEW_BEFORE
        {
            return Some(key.clone());
        }
        let issuer = self.issuer();
        let leaf = match issuer.leaf(&name) {
            Ok(leaf) => leaf,
            Err(e) => {
                crate::tls::log(&format!("no certificate for {name}: {e}"));
                return None;
            }
        };
        let key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(leaf.key_der),
        ))
        .ok()?;
        let chain = vec![
            CertificateDer::from(leaf.cert_der),
            CertificateDer::from(issuer.cert_der().to_vec()),
        ];
        let certified = Arc::new(CertifiedKey::new(chain, key));
        leaves.insert(name, (certified.clone(), leaf.not_after));
        Some(certified)
    }

    /// How many leaves are held (for tests and the status line).
    pub fn leaf_count(&self) -> usize {
        self.leaves.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certificate_for(hello.server_name()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::Ca;

    struct One(&'static str);

    impl Backends for One {
        fn backend(&self, name: &str) -> Option<SocketAddr> {
            (name == self.0).then(|| "127.0.0.1:80".parse().unwrap())
        }
    }

    fn resolver() -> SniResolver {
        let ca = Ca::generate(&[]).unwrap();
        let issuer = ca.machine_issuer("box", "dev", &[]).unwrap();
        SniResolver::new(issuer, Arc::new(One("web.box.dev")))
    }

    #[test]
    fn a_leaf_is_reused_until_a_day_is_left_then_renewed() {
        let r = resolver();
        let first = r.certificate_for("web.box.dev").unwrap();
        let again = r.certificate_for("WEB.box.dev.").unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same leaf while it is fresh"
        );
        assert_eq!(first.cert.len(), 2, "leaf then intermediate");
        // Age it: 23 hours left.
        r.leaves.lock().unwrap().get_mut("web.box.dev").unwrap().1 =
            OffsetDateTime::now_utc() + Duration::hours(23);
        let renewed = r.certificate_for("web.box.dev").unwrap();
        assert!(
            !Arc::ptr_eq(&first, &renewed),
            "renewed without anyone asking"
        );
        assert_ne!(first.cert[0], renewed.cert[0]);
    }

    #[test]
    fn names_not_served_get_nothing_and_a_new_intermediate_drops_old_leaves() {
        let r = resolver();
        assert!(r.certificate_for("other.box.dev").is_none());
        assert!(r.certificate_for("pkg.go.dev").is_none());
        assert!(r.certificate_for("web.box.dev").is_some());
        assert_eq!(r.leaf_count(), 1);
        let ca = Ca::generate(&[]).unwrap();
        r.set_issuer(ca.machine_issuer("box", "dev", &[]).unwrap());
        assert_eq!(r.leaf_count(), 0);
    }
}
