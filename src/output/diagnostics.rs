//! Which fix to show for an error: the first [`Hint`] found along its chain of causes.
//!
//! Each error type carries its own hint (`impl Hint`); a chain of causes, though, holds them
//! as `dyn Error`, and Rust can only get a type's `Hint` back by naming the type. The names
//! are listed once, here, where errors are turned into output; nothing below this layer has
//! to know the list. The unit test below reads the source tree and fails when an error type
//! has a hint that this list does not reach, so a new type cannot lose its hint silently.

use crate::hint::Hint;

/// The first known fix found along the error's chain. The supervisor records it beside its
/// error in `state.json`, for `devbox start` to show.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(hint_of)
}

/// What kind of failure `e` is, for the `kind` field of a JSON error document
/// (`docs/json.md` lists them): the first cause along the chain that has a kind.
pub fn kind(e: &anyhow::Error) -> &'static str {
    use crate::machine::store::StoreError;
    use crate::supervisor::client::ClientError;
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            match s {
                StoreError::NotFound { .. } => return "unknown_machine",
                StoreError::Name(_) => return "invalid_name",
                StoreError::Corrupt { .. } | StoreError::Invalid { .. } => return "invalid_spec",
                StoreError::Exists { .. } => return "exists",
                StoreError::Io(_) => {}
            }
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            match c {
                ClientError::NotRunning { .. } => return "not_running",
                ClientError::Running { .. } => return "running",
                _ => {}
            }
        }
        if cause.is::<crate::commands::ls::FilterError>()
            || cause.is::<super::template::TemplateError>()
        {
            return "invalid_argument";
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return "permission_denied";
        }
    }
    "error"
}

/// Lists the error types whose hints [`hint`] finds: `hint_of` tries each, in order.
macro_rules! dispatch {
    ($($(#[$attr:meta])* $t:ty),* $(,)?) => {
        fn hint_of(cause: &(dyn std::error::Error + 'static)) -> Option<String> {
            $(
                $(#[$attr])*
                if let Some(e) = cause.downcast_ref::<$t>() {
                    return e.hint();
                }
            )*
            None
        }

        /// The type names `hint_of` tries, for the reachability test.
        #[cfg(test)]
        const DISPATCHED: &[&str] = &[$(stringify!($t)),*];
    };
}

dispatch!(
    crate::machine::store::StoreError,
    crate::machine::lock::LockError,
    crate::machine::spec::SpecError,
    crate::machine::share::ShareError,
    crate::machine::guest_net::AddressError,
    crate::net::NetError,
    crate::net::lease::LeaseError,
    crate::net::vmnet::NatLinkError,
    crate::routes::RouteError,
    crate::routes::RoutesStateError,
    crate::host::HostError,
    crate::nat::NatError,
    crate::machine::engine::FlagError,
    crate::machine::engine::EngineError,
    crate::host::privileged::PrivilegeError,
    crate::host::install::InstallError,
    crate::hypervisor::HypervisorError,
    crate::hypervisor::vz_plan::VzError,
    crate::image::ImageError,
    crate::image::build::BuildError,
    crate::image::debian::DebianError,
    crate::image::pull::PullError,
    crate::ssh::SshError,
    crate::remote::AdoptError,
    crate::remote::PinError,
    crate::remote::settings::SettingsError,
    crate::swarm::SwarmError,
    crate::dns::DnsError,
    crate::dns::policy::AllowanceError,
    crate::dns::policy::AllowError,
    crate::disk::DiskError,
    // The NFS server exists only on Linux hosts for now (see src/nfs).
    #[cfg(target_os = "linux")]
    crate::nfs::NfsError,
    crate::supervisor::client::ClientError,
    crate::docker_context::ContextError,
    crate::commands::cp::CpError,
    crate::commands::BulkError,
    crate::commands::rm::RmError,
    crate::commands::ssh_config::SshConfigError,
    crate::commands::ls::FilterError,
    crate::output::template::TemplateError,
    crate::commands::edit::EditorError,
    crate::machine::edit::EditError,
    crate::commands::upgrade::UpgradeError,
    crate::commands::image_rm::ImageRmError,
    crate::tls::ca::CaError,
    crate::commands::trust::TrustError,
);

/// Error types of modules that other work is changing right now keep their inherent
/// `hint()`; these impls make them [`Hint`] too, by calling it. (Moving each `hint()` into an
/// `impl Hint` in its own module is a mechanical change once those modules settle.)
macro_rules! hint_from_inherent {
    ($($(#[$attr:meta])* $t:ty),* $(,)?) => {
        $(
            $(#[$attr])*
            impl Hint for $t {
                fn hint(&self) -> Option<String> {
                    <$t>::hint(self)
                }
            }
        )*
    };
}

hint_from_inherent!(
    crate::hypervisor::vz_plan::VzError,
    crate::image::ImageError,
    crate::image::build::BuildError,
    crate::image::debian::DebianError,
    crate::image::pull::PullError,
    crate::ssh::SshError,
    crate::dns::DnsError,
    crate::disk::DiskError,
    #[cfg(target_os = "linux")]
    crate::nfs::NfsError,
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The last path segment of each dispatched type (`crate::net::NetError` → `NetError`).
    fn dispatched() -> BTreeSet<String> {
        DISPATCHED
            .iter()
            .map(|t| t.rsplit("::").next().unwrap().trim().to_owned())
            .collect()
    }

    /// Every type in `src/` with a hint: `impl Hint for T`, or an inherent
    /// `fn hint(&self) -> Option<String>` in an `impl T { … }` block. Returns (type, file).
    fn types_with_hints(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                types_with_hints(&path, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let mut inherent: Option<String> = None;
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("impl Hint for ") {
                    let name = rest.trim_end_matches(" {").rsplit("::").next().unwrap();
                    out.push((name.to_owned(), path.display().to_string()));
                } else if let Some(rest) = line.strip_prefix("impl ") {
                    // `impl Name {` (not `impl Trait for Name {`, not generic impls).
                    inherent = rest
                        .strip_suffix(" {")
                        .filter(|n| !n.contains(' ') && !n.contains('<'))
                        .map(str::to_owned);
                } else if line.starts_with('}') {
                    inherent = None;
                } else if line
                    .trim_start()
                    .starts_with("pub fn hint(&self) -> Option<String>")
                    && let Some(name) = &inherent
                {
                    out.push((name.clone(), path.display().to_string()));
                }
            }
        }
    }

    #[test]
    fn every_error_type_with_a_hint_is_reachable_from_an_error_chain() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        types_with_hints(&src, &mut found);
        assert!(
            found.len() >= 15,
            "the source scan found too few hints: {found:?}"
        );
        let dispatched = dispatched();
        let missing: Vec<_> = found
            .iter()
            .filter(|(name, _)| !dispatched.contains(name))
            .collect();
        assert!(
            missing.is_empty(),
            "error types with a hint that `output::diagnostics::hint` cannot reach (add them \
             to `dispatch!`): {missing:?}"
        );
    }

    #[test]
    fn the_first_hint_along_the_chain_wins() {
        let inner = crate::machine::lock::LockError::Busy { name: "m".into() };
        let e = anyhow::Error::new(inner).context("starting machine m");
        assert_eq!(
            hint(&e).as_deref(),
            Some("wait for it to finish, then try again")
        );
        assert_eq!(hint(&anyhow::anyhow!("no type, no hint")), None);
    }
}
