//! Docker engine settings of a machine beyond its subnets (pure): the `daemon.json` keys and
//! dockerd's environment a user asks for with docker-machine's flags (`create --engine-label,
//! --engine-opt, --engine-insecure-registry, --engine-registry-mirror, --engine-env,
//! --engine-storage-driver`) or in `machine.yaml` under `engine:`, checked against the keys
//! Docker knows and the keys devbox owns, at `create` and at every read of the spec.
//!
//! `machine.yaml`'s `docker:` mapping already holds the machine's Docker subnets (and
//! daemon.json's own `bridge` key would collide with its `bridge`), so the settings that
//! pass through to `daemon.json` live in `engine.daemon`, and dockerd's environment in
//! `engine.env`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a machine asks of its Docker engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    /// Merged into the guest's `daemon.json` (every key checked against [`DAEMON_KEYS`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub daemon: BTreeMap<String, Value>,
    /// dockerd's environment (`HTTPS_PROXY`, `NO_PROXY`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Extra root certificates the guest trusts (`create --engine-ca FILE`), one PEM
    /// certificate each: a TLS-inspecting proxy's or a private registry's. The guest adds them
    /// to its system bundle before dockerd starts, and offers them to containers at
    /// [`GUEST_ENGINE_CA_PATH`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca: Vec<String>,
}

impl EngineSpec {
    pub fn is_empty(&self) -> bool {
        self.daemon.is_empty() && self.env.is_empty() && self.ca.is_empty()
    }

    /// The extra root certificates as one PEM bundle (the config drive's `engine-ca.pem`).
    pub fn ca_bundle(&self) -> String {
        self.ca
            .iter()
            .map(|c| format!("{}\n", c.trim_end()))
            .collect()
    }
}

/// Where the guest (and containers that bind-mount it) find the machine's extra root
/// certificates (`--engine-ca`), also appended to the guest's system bundle.
pub const GUEST_ENGINE_CA_PATH: &str = "/etc/devbox/engine-ca.pem";

/// The JSON type of a `daemon.json` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Bool,
    Int,
    String,
    /// A list of strings (the plural of a repeatable flag: `labels`, `dns-search`, …).
    List,
    /// A JSON object (`log-opts`, `runtimes`, `default-ulimits`, …).
    Object,
}

impl KeyType {
    fn name(self) -> &'static str {
        match self {
            KeyType::Bool => "true or false",
            KeyType::Int => "an integer",
            KeyType::String => "a string",
            KeyType::List => "a list of strings",
            KeyType::Object => "a JSON object",
        }
    }

    fn holds(self, v: &Value) -> bool {
        match self {
            KeyType::Bool => v.is_boolean(),
            KeyType::Int => v.is_i64() || v.is_u64(),
            KeyType::String => v.is_string(),
            KeyType::List => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            KeyType::Object => v.is_object(),
        }
    }
}

/// One key of `daemon.json` on Linux: its type, and the Docker Engine majors that know it.
#[derive(Debug, Clone, Copy)]
pub struct DaemonKey {
    pub name: &'static str,
    pub kind: KeyType,
    /// First engine major that accepts it.
    pub since: u32,
    /// First engine major that refuses it again, if any.
    pub until: Option<u32>,
}

const fn key(name: &'static str, kind: KeyType) -> DaemonKey {
    DaemonKey {
        name,
        kind,
        since: 20,
        until: None,
    }
}

const fn since(name: &'static str, kind: KeyType, since: u32) -> DaemonKey {
    DaemonKey {
        name,
        kind,
        since,
        until: None,
    }
}

const fn until(name: &'static str, kind: KeyType, until: u32) -> DaemonKey {
    DaemonKey {
        name,
        kind,
        since: 20,
        until: Some(until),
    }
}

use KeyType::{Bool, Int, List, Object, String as Str};

/// The `daemon.json` keys of Docker Engine on Linux, for the engines devbox's guests run
/// (20.10, Debian 12; 26.1, Debian 13). Source: the "Daemon configuration file" section of
/// the `dockerd` reference (docker/cli `docs/reference/dockerd.md`, the full Linux example and
/// the option list, at the 20.10 and 26.1 tags): `proxies` came in 23.0, `default-network-opts`
/// in 24.0, `cdi-spec-dirs` in 25.0; the `cluster-*` keys went in 23.0. Sorted by name.
pub const DAEMON_KEYS: &[DaemonKey] = &[
    key("allow-nondistributable-artifacts", List),
    key("api-cors-header", Str),
    key("authorization-plugins", List),
    key("bip", Str),
    key("bridge", Str),
    key("builder", Object),
    since("cdi-spec-dirs", List, 25),
    key("cgroup-parent", Str),
    until("cluster-advertise", Str, 23),
    until("cluster-store", Str, 23),
    until("cluster-store-opts", Object, 23),
    key("containerd", Str),
    key("containerd-namespace", Str),
    key("containerd-plugins-namespace", Str),
    key("cpu-rt-period", Int),
    key("cpu-rt-runtime", Int),
    key("cri-containerd", Bool),
    key("data-root", Str),
    key("debug", Bool),
    key("default-address-pools", Object),
    key("default-cgroupns-mode", Str),
    key("default-gateway", Str),
    key("default-gateway-v6", Str),
    key("default-ipc-mode", Str),
    since("default-network-opts", Object, 24),
    key("default-runtime", Str),
    key("default-shm-size", Str),
    key("default-ulimits", Object),
    key("dns", List),
    key("dns-opts", List),
    key("dns-search", List),
    key("exec-opts", List),
    key("exec-root", Str),
    key("experimental", Bool),
    key("features", Object),
    key("fixed-cidr", Str),
    key("fixed-cidr-v6", Str),
    key("group", Str),
    key("host-gateway-ip", Str),
    key("hosts", List),
    key("icc", Bool),
    key("init", Bool),
    key("init-path", Str),
    key("insecure-registries", List),
    key("ip", Str),
    key("ip-forward", Bool),
    key("ip-masq", Bool),
    key("ip6tables", Bool),
    key("iptables", Bool),
    key("ipv6", Bool),
    key("labels", List),
    key("live-restore", Bool),
    key("log-driver", Str),
    key("log-level", Str),
    key("log-opts", Object),
    key("max-concurrent-downloads", Int),
    key("max-concurrent-uploads", Int),
    key("max-download-attempts", Int),
    key("metrics-addr", Str),
    key("mtu", Int),
    key("network-control-plane-mtu", Int),
    key("no-new-privileges", Bool),
    key("node-generic-resources", List),
    key("oom-score-adjust", Int),
    key("pidfile", Str),
    since("proxies", Object, 23),
    key("raw-logs", Bool),
    key("registry-mirrors", List),
    key("rootless", Bool),
    key("runtimes", Object),
    key("seccomp-profile", Str),
    key("selinux-enabled", Bool),
    key("shutdown-timeout", Int),
    key("storage-driver", Str),
    key("storage-opts", List),
    key("swarm-default-advertise-addr", Str),
    key("tls", Bool),
    key("tlscacert", Str),
    key("tlscert", Str),
    key("tlskey", Str),
    key("tlsverify", Bool),
    key("userland-proxy", Bool),
    key("userland-proxy-path", Str),
    key("userns-remap", Str),
];

/// Keys devbox sets itself, or that the guest depends on, with what to use instead.
const OWNED: &[(&str, &str)] = &[
    ("bip", "use `--docker-subnet` at create"),
    (
        "bridge",
        "devbox's own: the machine's bridge is `--docker-subnet`'s",
    ),
    (
        "default-address-pools",
        "devbox's own: it picks the pool next to `--docker-subnet`",
    ),
    ("fixed-cidr", "devbox's own: derived from `--docker-subnet`"),
    (
        "dns",
        "devbox's own: containers resolve through the machine's DNS server (names under `--tld`)",
    ),
    (
        "hosts",
        "devbox's own: the guest's socket is forwarded to the host as docker.sock",
    ),
    (
        "iptables",
        "devbox's own: the routes to containers and published ports need Docker's iptables rules",
    ),
    (
        "ipv6",
        "devbox's own: use `--ipv6` at create (the machine's IPv6 prefix, its route from the \
         host and AAAA names come with it)",
    ),
    (
        "fixed-cidr-v6",
        "devbox's own: with `--ipv6` the bridge gets a /64 of the machine's IPv6 prefix",
    ),
    (
        "ip-forward",
        "devbox's own: the routes to containers need forwarding in the guest",
    ),
    (
        "data-root",
        "devbox's own: Docker's data lives on the machine's data disk (`devbox disk`)",
    ),
    (
        "exec-root",
        "devbox's own: the guest's init and readiness check use Docker's default",
    ),
    (
        "pidfile",
        "devbox's own: the guest's init watches Docker's default",
    ),
    (
        "containerd",
        "devbox's own: the guest runs dockerd's own containerd",
    ),
    (
        "tls",
        "devbox's own: the socket is reached over SSH, never over TCP",
    ),
    (
        "tlsverify",
        "devbox's own: the socket is reached over SSH, never over TCP",
    ),
];

/// dockerd environment variables the guest's init relies on.
const OWNED_ENV: &[&str] = &["PATH", "DOCKER_RAMDISK"];

/// What is wrong with an engine setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("{key:?} is not a daemon.json key Docker knows")]
    UnknownKey { key: String },
    #[error("{key:?} is {kind}, not {value}", kind = kind.name())]
    WrongType {
        key: String,
        kind: KeyType,
        value: String,
    },
    #[error("{key:?} cannot be set: {why}")]
    Owned { key: String, why: &'static str },
    #[error(
        "{key:?} is not known to Docker {major} (the machine's image): it exists in Docker {range}"
    )]
    NotInEngine {
        key: String,
        major: u32,
        range: String,
    },
    #[error("{text:?} is not KEY=VALUE")]
    NotPair { text: String },
    #[error(
        "{name:?} is not an environment variable name (letters, digits and `_`, not first a digit)"
    )]
    EnvName { name: String },
    #[error("{name:?} cannot be set: the guest's init sets it for dockerd")]
    EnvOwned { name: String },
    #[error("the value of {name} has a control character (a newline, a tab, …)")]
    EnvValue { name: String },
    #[error("{text:?} is not a registry HOST[:PORT] (e.g. registry.example.com:5000)")]
    Registry { text: String },
    #[error("{text:?} is not an http:// or https:// URL (e.g. https://mirror.example.com)")]
    Mirror { text: String },
    #[error("{text:?} is not a storage driver name (e.g. overlay2)")]
    StorageDriver { text: String },
    #[error("cannot read {path}: {error}")]
    CaRead { path: String, error: String },
    #[error(
        "{path} holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block); a DER file \
         converts with `openssl x509 -inform der -in FILE -out FILE.pem`"
    )]
    CaNoCertificate { path: String },
    #[error(
        "{path} holds a private key: give the certificate alone (a key never goes to the guest)"
    )]
    CaPrivateKey { path: String },
    #[error("{what} is not a valid X.509 certificate: {error}")]
    CaInvalid { what: String, error: String },
    #[error(
        "the image {image} does not install --engine-ca certificates (it was built before \
         devbox could): `devbox upgrade NAME` moves the machine to a newer image \
         (`devbox image build` makes one)"
    )]
    CaNotInImage { image: String },
}

impl crate::hint::Hint for EngineError {
    fn hint(&self) -> Option<String> {
        None
    }
}

/// The flags of `create`, as given (each repeatable).
#[derive(Debug, Clone, Default)]
pub struct EngineFlags {
    pub labels: Vec<String>,
    pub opts: Vec<String>,
    pub insecure_registries: Vec<String>,
    pub registry_mirrors: Vec<String>,
    pub env: Vec<String>,
    pub storage_driver: Option<String>,
    /// `--engine-ca FILE`s: PEM files of root certificates.
    pub ca_files: Vec<std::path::PathBuf>,
}

/// A failed flag: which flag, which value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag} {value:?}")]
pub struct FlagError {
    pub flag: &'static str,
    pub value: String,
    #[source]
    pub source: EngineError,
}

impl crate::hint::Hint for FlagError {
    fn hint(&self) -> Option<String> {
        Some(
            match self.flag {
                "--engine-label" => "example: --engine-label provider=devbox",
                "--engine-opt" => {
                    "example: --engine-opt log-level=debug, --engine-opt 'log-opts={\"max-size\":\"10m\"}'"
                }
                "--engine-insecure-registry" => "example: --engine-insecure-registry registry.lan:5000",
                "--engine-registry-mirror" => "example: --engine-registry-mirror https://mirror.example.com",
                "--engine-env" => "example: --engine-env HTTPS_PROXY=http://proxy.example.com:3128",
                "--engine-ca" => "example: --engine-ca /usr/local/share/ca-certificates/corp-root.crt",
                _ => "example: --engine-storage-driver overlay2",
            }
            .to_owned(),
        )
    }
}

/// Builds the engine settings from `create`'s flags; the first bad value fails, naming its
/// flag. Repeated list keys append, in the order given.
pub fn from_flags(f: &EngineFlags) -> Result<EngineSpec, FlagError> {
    let mut spec = EngineSpec::default();
    let fail = |flag, value: &str, source| FlagError {
        flag,
        value: value.to_owned(),
        source,
    };
    for l in &f.labels {
        match l.split_once('=') {
            Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                push(&mut spec, "labels", l.clone())
            }
            _ => {
                return Err(fail(
                    "--engine-label",
                    l,
                    EngineError::NotPair { text: l.clone() },
                ));
            }
        }
    }
    for o in &f.opts {
        let (k, v) = o
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| fail("--engine-opt", o, EngineError::NotPair { text: o.clone() }))?;
        let value = opt_value(k, v).map_err(|e| fail("--engine-opt", o, e))?;
        match value {
            Value::String(s) if daemon_key(k).is_some_and(|d| d.kind == KeyType::List) => {
                push(&mut spec, k, s)
            }
            v => {
                spec.daemon.insert(k.to_owned(), v);
            }
        }
    }
    for r in &f.insecure_registries {
        check_registry(r).map_err(|e| fail("--engine-insecure-registry", r, e))?;
        push(&mut spec, "insecure-registries", r.clone());
    }
    for m in &f.registry_mirrors {
        check_mirror(m).map_err(|e| fail("--engine-registry-mirror", m, e))?;
        push(&mut spec, "registry-mirrors", m.clone());
    }
    for e in &f.env {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| fail("--engine-env", e, EngineError::NotPair { text: e.clone() }))?;
        check_env(k, v).map_err(|err| fail("--engine-env", e, err))?;
        spec.env.insert(k.to_owned(), v.to_owned());
    }
    if let Some(d) = &f.storage_driver {
        check_storage_driver(d).map_err(|e| fail("--engine-storage-driver", d, e))?;
        spec.daemon
            .insert("storage-driver".into(), Value::String(d.clone()));
    }
    for file in &f.ca_files {
        let shown = file.display().to_string();
        for cert in read_ca_file(file).map_err(|e| fail("--engine-ca", &shown, e))? {
            if !spec.ca.contains(&cert) {
                spec.ca.push(cert);
            }
        }
    }
    Ok(spec)
}

/// The certificates of a PEM file given to `--engine-ca`, each checked and re-encoded as one
/// PEM block (whatever else the file holds, comments or text between blocks, is left out).
fn read_ca_file(path: &std::path::Path) -> Result<Vec<String>, EngineError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| EngineError::CaRead {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    let mut certs = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
        let pem = pem.map_err(|e| EngineError::CaInvalid {
            what: shown.clone(),
            error: e.to_string(),
        })?;
        if pem.label.contains("PRIVATE KEY") {
            return Err(EngineError::CaPrivateKey { path: shown });
        }
        if pem.label != "CERTIFICATE" {
            continue;
        }
        check_der(&pem.contents, &format!("a certificate in {shown}"))?;
        certs.push(pem_text(&pem.contents));
    }
    if certs.is_empty() {
        return Err(EngineError::CaNoCertificate { path: shown });
    }
    Ok(certs)
}

fn check_der(der: &[u8], what: &str) -> Result<(), EngineError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], _)) => Ok(()),
        Ok(_) => Err(EngineError::CaInvalid {
            what: what.to_owned(),
            error: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(EngineError::CaInvalid {
            what: what.to_owned(),
            error: e.to_string(),
        }),
    }
}

/// One PEM certificate block (64 columns of base64, `\n` line ends, no trailing newline).
fn pem_text(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der), config)
        .trim_end()
        .to_owned()
}

/// The subject of a certificate of `engine.ca`, for people (`CN=Corp Proxy Root`).
pub fn ca_subject(text: &str) -> String {
    x509_parser::pem::parse_x509_pem(text.as_bytes())
        .ok()
        .and_then(|(_, pem)| {
            let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).ok()?;
            Some(cert.subject().to_string())
        })
        .unwrap_or_else(|| "(unreadable certificate)".into())
}

/// A certificate of `engine.ca` (read from `machine.yaml`): exactly one PEM certificate.
fn check_ca_entry(text: &str) -> Result<(), EngineError> {
    let what = "a certificate of engine.ca".to_owned();
    let mut blocks = x509_parser::pem::Pem::iter_from_buffer(text.as_bytes());
    match (blocks.next(), blocks.next()) {
        (Some(Ok(pem)), None) if pem.label == "CERTIFICATE" => check_der(&pem.contents, &what),
        _ => Err(EngineError::CaInvalid {
            what,
            error: "expected one `-----BEGIN CERTIFICATE-----` block".into(),
        }),
    }
}

fn push(spec: &mut EngineSpec, key: &str, item: String) {
    let entry = spec
        .daemon
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(a) = entry {
        a.push(Value::String(item));
    }
}

/// The value of `--engine-opt KEY=VALUE` in KEY's type: `true`/`false`, an integer, a
/// string, one item of a list, or a JSON object.
fn opt_value(key: &str, text: &str) -> Result<Value, EngineError> {
    let k = known(key)?;
    let wrong = || EngineError::WrongType {
        key: key.to_owned(),
        kind: k.kind,
        value: text.to_owned(),
    };
    let v = match k.kind {
        KeyType::Bool => Value::Bool(text.parse().map_err(|_| wrong())?),
        KeyType::Int => Value::from(text.parse::<i64>().map_err(|_| wrong())?),
        KeyType::String | KeyType::List => Value::String(text.to_owned()),
        KeyType::Object => serde_json::from_str::<Value>(text)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(wrong)?,
    };
    Ok(v)
}

/// The table's entry for `key`.
pub fn daemon_key(key: &str) -> Option<&'static DaemonKey> {
    DAEMON_KEYS.iter().find(|k| k.name == key)
}

/// `key` is a daemon.json key that a user may set.
fn known(key: &str) -> Result<&'static DaemonKey, EngineError> {
    if let Some((_, why)) = OWNED.iter().find(|(k, _)| *k == key) {
        return Err(EngineError::Owned {
            key: key.to_owned(),
            why,
        });
    }
    daemon_key(key).ok_or_else(|| EngineError::UnknownKey {
        key: key.to_owned(),
    })
}

/// Checks settings read from `machine.yaml`; the error names the field.
pub fn validate(spec: &EngineSpec) -> Result<(), (String, EngineError)> {
    for (key, value) in &spec.daemon {
        let field = || format!("engine.daemon.{key}");
        let k = known(key).map_err(|e| (field(), e))?;
        if !k.kind.holds(value) {
            return Err((
                field(),
                EngineError::WrongType {
                    key: key.clone(),
                    kind: k.kind,
                    value: value.to_string(),
                },
            ));
        }
        let items = || {
            value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
        };
        match key.as_str() {
            "insecure-registries" => items().try_for_each(check_registry),
            "registry-mirrors" => items().try_for_each(check_mirror),
            "storage-driver" => check_storage_driver(value.as_str().unwrap_or_default()),
            _ => Ok(()),
        }
        .map_err(|e| (field(), e))?;
    }
    for (name, value) in &spec.env {
        check_env(name, value).map_err(|e| (format!("engine.env.{name}"), e))?;
    }
    for (i, cert) in spec.ca.iter().enumerate() {
        check_ca_entry(cert).map_err(|e| (format!("engine.ca[{i}]"), e))?;
    }
    Ok(())
}

/// Whether every key is known to the engine of major version `major` (checked when the
/// config drive is written, against the image the machine boots).
pub fn check_engine(spec: &EngineSpec, major: u32) -> Result<(), EngineError> {
    for key in spec.daemon.keys() {
        let k = known(key)?;
        if major < k.since || k.until.is_some_and(|u| major >= u) {
            return Err(EngineError::NotInEngine {
                key: key.clone(),
                major,
                range: match k.until {
                    Some(u) => format!("{} to {}", k.since, u - 1),
                    None => format!("{} and later", k.since),
                },
            });
        }
    }
    Ok(())
}

/// Whether the machine's image installs its `--engine-ca` certificates (`image_has_ca`, from
/// its manifest) when it has any: an older image would boot without them, and TLS to the
/// proxy or registry they are for would fail far from the cause.
pub fn check_ca_support(
    spec: &EngineSpec,
    image: &str,
    image_has_ca: bool,
) -> Result<(), EngineError> {
    if spec.ca.is_empty() || image_has_ca {
        Ok(())
    } else {
        Err(EngineError::CaNotInImage {
            image: image.to_owned(),
        })
    }
}

fn check_env(name: &str, value: &str) -> Result<(), EngineError> {
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(EngineError::EnvName {
            name: name.to_owned(),
        });
    }
    if OWNED_ENV.contains(&name) || name.starts_with("DEVBOX_") {
        return Err(EngineError::EnvOwned {
            name: name.to_owned(),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(EngineError::EnvValue {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// `HOST[:PORT]`: a DNS name or an IPv4 address (or `[IPv6]`), and a port 1-65535.
fn check_registry(text: &str) -> Result<(), EngineError> {
    let err = || EngineError::Registry {
        text: text.to_owned(),
    };
    let (host, port) = match text.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (text, None),
        Some((h, p)) => (h, Some(p)),
        None => (text, None),
    };
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(err());
    }
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    };
    if host_ok { Ok(()) } else { Err(err()) }
}

fn check_mirror(text: &str) -> Result<(), EngineError> {
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        _ => Err(EngineError::Mirror {
            text: text.to_owned(),
        }),
    }
}

fn check_storage_driver(text: &str) -> Result<(), EngineError> {
    let ok = !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(EngineError::StorageDriver {
            text: text.to_owned(),
        })
    }
}

/// dockerd's environment as `export K='V'` lines for a shell (the guest's init sources it in
/// the subshell that starts dockerd, and nowhere else). Values are single-quoted, with each
/// `'` written as `'\''`: nothing in a value is ever run.
pub fn env_file(spec: &EngineSpec) -> String {
    let mut out = String::from("# Written by devbox at each start: dockerd's environment.\n");
    for (k, v) in &spec.env {
        out.push_str(&format!("export {k}='{}'\n", v.replace('\'', r"'\''")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flags() -> EngineFlags {
        EngineFlags::default()
    }

    #[test]
    fn the_table_is_sorted_and_every_owned_key_is_in_it() {
        let names: Vec<&str> = DAEMON_KEYS.iter().map(|k| k.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        for k in OWNED.iter().map(|(k, _)| k) {
            assert!(daemon_key(k).is_some(), "{k}");
        }
    }

    #[test]
    fn docker_ipv6_keys_are_devbox_own_and_name_the_ipv6_flag() {
        for opt in ["ipv6=true", "fixed-cidr-v6=fd00:db8::/64"] {
            let e = from_flags(&EngineFlags {
                opts: vec![opt.into()],
                ..flags()
            })
            .unwrap_err();
            assert_eq!(e.flag, "--engine-opt");
            assert!(
                matches!(e.source, EngineError::Owned { .. }),
                "{opt}: {e:?}"
            );
            assert!(e.source.to_string().contains("--ipv6"), "{e}");
        }
        let mut s = EngineSpec::default();
        s.daemon.insert("ipv6".into(), json!(true));
        let (field, e) = validate(&s).unwrap_err();
        assert_eq!(field, "engine.daemon.ipv6");
        assert!(e.to_string().contains("`--ipv6` at create"), "{e}");
    }

    #[test]
    fn flags_build_the_settings() {
        let f = EngineFlags {
            labels: vec!["provider=devbox".into(), "team=web".into()],
            opts: vec![
                "log-level=debug".into(),
                "debug=true".into(),
                "max-concurrent-downloads=6".into(),
                "dns-search=corp.example".into(),
                r#"log-opts={"max-size":"10m"}"#.into(),
            ],
            insecure_registries: vec!["registry.test:5000".into(), "10.0.0.5".into()],
            registry_mirrors: vec!["https://mirror.example.com".into()],
            env: vec!["HTTPS_PROXY=http://proxy:3128".into(), "NO_PROXY=".into()],
            storage_driver: Some("overlay2".into()),
            ca_files: vec![],
        };
        let s = from_flags(&f).unwrap();
        assert_eq!(
            serde_json::to_value(&s.daemon).unwrap(),
            json!({
                "labels": ["provider=devbox", "team=web"],
                "log-level": "debug",
                "debug": true,
                "max-concurrent-downloads": 6,
                "dns-search": ["corp.example"],
                "log-opts": {"max-size": "10m"},
                "insecure-registries": ["registry.test:5000", "10.0.0.5"],
                "registry-mirrors": ["https://mirror.example.com"],
                "storage-driver": "overlay2",
            })
        );
        assert_eq!(s.env["HTTPS_PROXY"], "http://proxy:3128");
        validate(&s).unwrap();
        check_engine(&s, 20).unwrap();
        check_engine(&s, 26).unwrap();
    }

    /// The flag and the reason of each kind of bad value.
    #[test]
    fn bad_values_name_their_flag() {
        let cases: Vec<(EngineFlags, &str, &str)> = vec![
            (
                EngineFlags {
                    labels: vec!["foo".into()],
                    ..flags()
                },
                "--engine-label",
                "not KEY=VALUE",
            ),
            (
                EngineFlags {
                    labels: vec!["=x".into()],
                    ..flags()
                },
                "--engine-label",
                "not KEY=VALUE",
            ),
            (
                EngineFlags {
                    opts: vec!["no-such-key=1".into()],
                    ..flags()
                },
                "--engine-opt",
                "not a daemon.json key",
            ),
            (
                EngineFlags {
                    opts: vec!["debug=yes".into()],
                    ..flags()
                },
                "--engine-opt",
                "is true or false",
            ),
            (
                EngineFlags {
                    opts: vec!["mtu=big".into()],
                    ..flags()
                },
                "--engine-opt",
                "is an integer",
            ),
            (
                EngineFlags {
                    opts: vec!["log-opts=max-size".into()],
                    ..flags()
                },
                "--engine-opt",
                "a JSON object",
            ),
            (
                EngineFlags {
                    opts: vec!["bip=10.0.0.1/24".into()],
                    ..flags()
                },
                "--engine-opt",
                "--docker-subnet",
            ),
            (
                EngineFlags {
                    opts: vec!["hosts=tcp://0.0.0.0:2375".into()],
                    ..flags()
                },
                "--engine-opt",
                "devbox's own",
            ),
            (
                EngineFlags {
                    opts: vec!["debug".into()],
                    ..flags()
                },
                "--engine-opt",
                "not KEY=VALUE",
            ),
            (
                EngineFlags {
                    insecure_registries: vec!["http://registry".into()],
                    ..flags()
                },
                "--engine-insecure-registry",
                "HOST[:PORT]",
            ),
            (
                EngineFlags {
                    insecure_registries: vec!["registry:99999".into()],
                    ..flags()
                },
                "--engine-insecure-registry",
                "HOST[:PORT]",
            ),
            (
                EngineFlags {
                    insecure_registries: vec!["bad host".into()],
                    ..flags()
                },
                "--engine-insecure-registry",
                "HOST[:PORT]",
            ),
            (
                EngineFlags {
                    registry_mirrors: vec!["mirror.example.com".into()],
                    ..flags()
                },
                "--engine-registry-mirror",
                "URL",
            ),
            (
                EngineFlags {
                    registry_mirrors: vec!["ftp://mirror".into()],
                    ..flags()
                },
                "--engine-registry-mirror",
                "URL",
            ),
            (
                EngineFlags {
                    env: vec!["HTTPS_PROXY".into()],
                    ..flags()
                },
                "--engine-env",
                "not KEY=VALUE",
            ),
            (
                EngineFlags {
                    env: vec!["1X=y".into()],
                    ..flags()
                },
                "--engine-env",
                "variable name",
            ),
            (
                EngineFlags {
                    env: vec!["A;reboot=y".into()],
                    ..flags()
                },
                "--engine-env",
                "variable name",
            ),
            (
                EngineFlags {
                    env: vec!["PATH=/tmp".into()],
                    ..flags()
                },
                "--engine-env",
                "init sets it",
            ),
            (
                EngineFlags {
                    env: vec!["X=a\nb".into()],
                    ..flags()
                },
                "--engine-env",
                "control character",
            ),
            (
                EngineFlags {
                    storage_driver: Some("overlay2; reboot".into()),
                    ..flags()
                },
                "--engine-storage-driver",
                "storage driver",
            ),
        ];
        for (f, flag, why) in cases {
            let e = from_flags(&f).unwrap_err();
            assert_eq!(e.flag, flag, "{e}");
            let msg = format!("{e}: {}", e.source);
            assert!(msg.contains(why), "{msg} (want {why:?})");
            assert!(crate::hint::Hint::hint(&e).unwrap().starts_with("example:"));
        }
        // IPv6 registries and ports are fine.
        check_registry("[fd00::5]:5000").unwrap();
        check_registry("registry.test").unwrap();
    }

    #[test]
    fn the_spec_is_checked_at_every_read() {
        let mut s = EngineSpec::default();
        s.daemon.insert("debug".into(), json!("yes"));
        assert_eq!(validate(&s).unwrap_err().0, "engine.daemon.debug");
        let mut s = EngineSpec::default();
        s.daemon.insert("default-address-pools".into(), json!([]));
        let (field, e) = validate(&s).unwrap_err();
        assert_eq!(field, "engine.daemon.default-address-pools");
        assert!(e.to_string().contains("devbox's own"), "{e}");
        let mut s = EngineSpec::default();
        s.daemon.insert("registry-mirrors".into(), json!(["nope"]));
        assert!(validate(&s).is_err());
        let mut s = EngineSpec::default();
        s.env.insert("X';reboot;'".into(), "y".into());
        assert_eq!(validate(&s).unwrap_err().0, "engine.env.X';reboot;'");
    }

    #[test]
    fn keys_are_held_to_the_image_engine() {
        let mut s = EngineSpec::default();
        s.daemon
            .insert("proxies".into(), json!({"http-proxy": "http://p:3128"}));
        let e = check_engine(&s, 20).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"proxies\" is not known to Docker 20 (the machine's image): it exists in Docker 23 and later"
        );
        check_engine(&s, 26).unwrap();
        let mut s = EngineSpec::default();
        s.daemon.insert("cluster-store".into(), json!("consul://x"));
        check_engine(&s, 20).unwrap();
        assert!(
            check_engine(&s, 26)
                .unwrap_err()
                .to_string()
                .contains("20 to 22")
        );
    }

    #[test]
    fn env_values_cannot_run_anything() {
        let mut s = EngineSpec::default();
        s.env
            .insert("HTTPS_PROXY".into(), "http://p:3128/'$(reboot)'`id`".into());
        let text = env_file(&s);
        assert_eq!(
            text.lines().nth(1).unwrap(),
            r#"export HTTPS_PROXY='http://p:3128/'\''$(reboot)'\''`id`'"#
        );
        // A real shell reads the value back exactly.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{text}\nprintf %s \"$HTTPS_PROXY\""))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "http://p:3128/'$(reboot)'`id`"
        );
    }
}
