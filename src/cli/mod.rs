//! Command-line types (clap derive). No I/O here (but for completing machine names, below):
//! `commands/` turns these into actions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "devbox",
    version,
    about = "Developer machines: a small Linux guest running Docker, on the host's hypervisor",
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// State directory (machines, keys, sockets).
    #[arg(long, env = "DEVBOX_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Cache directory (guest images, downloaded packages).
    #[arg(long, env = "DEVBOX_CACHE", global = true, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a machine (does not start it).
    Create(Box<CreateArgs>),
    /// Start machines and wait until Docker answers in them.
    Start(StartArgs),
    /// Stop machines (guest poweroff, then kill after a timeout).
    Stop(StopArgs),
    /// Stop then start machines.
    Restart(StartArgs),
    /// Remove machines and everything they own (asks first on a terminal).
    Rm(RmArgs),
    /// List machines.
    Ls(MachineLsArgs),
    /// Show a machine's state.
    Status(StatusArgs),
    /// Show everything known about a machine, as JSON.
    Inspect(NameArg),
    /// Print a machine's IP address.
    Ip(NameArg),
    /// Open a shell in a machine, or run a command: `devbox ssh NAME CMD…`.
    Ssh(SshArgs),
    /// Print an OpenSSH `Host` block for machines (all of them without NAME), for `ssh -F`,
    /// scp, rsync, VS Code or JetBrains: `devbox ssh-config >> ~/.ssh/config`.
    SshConfig(SshConfigArgs),
    /// Copy files between the host and a machine: `NAME:PATH` names the machine's side.
    Cp(CpArgs),
    /// Show a machine's serial console log.
    Logs(LogsArgs),
    /// Print the environment that points the docker CLI at a machine.
    Env(EnvArgs),
    /// Make a machine's Docker context (`devbox-NAME`) the docker CLI's current one, in every
    /// shell; `--none` goes back to the CLI's default.
    Use(UseArgs),
    /// Change a stopped or running machine's CPUs, memory, shares or engine settings (flags,
    /// or $EDITOR on its machine.yaml without them); they apply at its next start.
    Edit(Box<EditArgs>),
    /// Move a stopped machine to the newest guest image of its architecture (or --image),
    /// keeping its data disk (Docker's images, containers and volumes) and its settings.
    Upgrade(UpgradeArgs),
    /// Build, download, list or remove guest images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Host routes to the machines' Docker subnets, and the boot-time job that restores them.
    #[command(subcommand)]
    Routes(RoutesCommand),
    /// Point the host's resolver at a running machine's DNS server for the domains it owns.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// How full a machine's data disk is, and growing it.
    #[command(subcommand)]
    Disk(DiskCommand),
    /// The devbox certificate authority (HTTPS for every name) in your browsers' trust
    /// stores: Chromium's and Firefox's NSS databases on Linux, your login keychain on macOS.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// One-time host set-up (with sudo): devbox installed with the privileges machines need,
    /// the host-wide lease registry, the boot-time route job; and checks with exact fixes.
    #[command(subcommand)]
    System(SystemCommand),
    /// Docker swarm mode across your machines: `init` a manager, `join` others to it, `leave`,
    /// `ls`; only the swarm ports open between the members.
    #[command(subcommand)]
    Swarm(SwarmCommand),
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Run a machine's supervisor in the foreground (spawned by `start`).
    #[command(hide = true, name = "__supervise")]
    Supervise(SuperviseArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverArg {
    /// External qemu-system-x86_64 (KVM acceleration where it works, TCG otherwise).
    Qemu,
    /// In-process KVM virtual machine monitor (Linux).
    Kvm,
    /// Virtualization.framework (macOS).
    Vz,
    /// No virtual machine: adopt an existing Debian or Ubuntu host over SSH (--ssh-host).
    Ssh,
    /// No guest at all: devbox's own tests (accepted only by test builds).
    #[value(hide = true)]
    Fake,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Machine name: a DNS label (a-z, 0-9, '-', 1 to 63 characters).
    pub name: String,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Memory: a size with a unit (4G, 4096M) or a bare number of MiB.
    #[arg(long, default_value = "2G", value_name = "SIZE")]
    pub memory: String,
    /// Size of the sparse data disk, at least 1G (e.g. 20G, 100G, 1.5T).
    #[arg(long, default_value = "20G", value_name = "SIZE")]
    pub disk_size: String,
    /// Hypervisor driver (default: the best one this host can run).
    #[arg(long)]
    pub driver: Option<DriverArg>,
    /// Docker bridge address and prefix inside the machine (Docker's `bip`; default: the
    /// first free of 172.18.0.1/16, 172.20.0.1/16, …).
    #[arg(long, value_name = "CIDR")]
    pub docker_subnet: Option<String>,
    /// Give containers IPv6 addresses too, from a /56 of this host's unique local prefix
    /// (a /64 per Docker network), routed from the host and named by AAAA records
    /// (qemu and kvm drivers).
    #[arg(long)]
    pub ipv6: bool,
    /// Export a host directory into the machine over NFS: HOST_PATH[:GUEST_PATH][:ro]
    /// (repeatable; default: your home directory at the same path).
    #[arg(long = "share", value_name = "SHARE")]
    pub shares: Vec<String>,
    /// Do not export any directory (not even the default home share).
    #[arg(long, conflicts_with = "shares")]
    pub no_share: bool,
    /// Allow a --share whose directory is owned by root: the file server then acts as root
    /// on it (without this, such a share is refused).
    #[arg(long, requires = "shares")]
    pub allow_root_share: bool,
    /// Top-level domain of the machine's DNS names (`<machine>.<tld>`).
    #[arg(long, default_value = "dev", value_name = "TLD")]
    pub tld: String,
    /// Let the machine's containers claim names in DOMAIN (e.g. synbioz.dev), routed to its
    /// DNS server (repeatable; see `devbox dns allow`).
    #[arg(long = "dns-domain", value_name = "DOMAIN")]
    pub dns_domains: Vec<String>,
    /// Guest image version (default: the newest installed image).
    #[arg(long, value_name = "VERSION")]
    pub image: Option<String>,
    /// With --driver ssh: the host to adopt, a name or an address.
    #[arg(long, value_name = "HOST")]
    pub ssh_host: Option<String>,
    /// With --driver ssh: the user devbox connects as (root, or one who may sudo without a
    /// password or is in the host's docker group).
    #[arg(
        long,
        value_name = "USER",
        default_value = "root",
        requires = "ssh_host"
    )]
    pub ssh_user: String,
    /// With --driver ssh: the host's SSH port.
    #[arg(long, value_name = "PORT", default_value_t = 22, requires = "ssh_host")]
    pub ssh_port: u16,
    /// With --driver ssh: the private key to authenticate with (default ~/.ssh/id_ed25519).
    #[arg(long, value_name = "FILE", requires = "ssh_host")]
    pub ssh_key: Option<PathBuf>,
    /// With --driver ssh: the fingerprint of the host key to expect, as `ssh-keygen -lf`
    /// prints it on the host (SHA256:…); without it the key is trusted on first use and shown.
    #[arg(long, value_name = "SHA256:…", requires = "ssh_host")]
    pub ssh_host_key: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// docker-machine's engine flags: settings of the machine's Docker engine, applied at each
/// start (`machine.yaml` keeps them under `engine:`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Docker engine")]
pub struct EngineArgs {
    /// A label of the engine, `docker info` shows it (repeatable): KEY=VALUE.
    #[arg(long = "engine-label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// A daemon.json setting (repeatable; a list key collects one item per flag; an object
    /// takes JSON): KEY=VALUE, e.g. log-level=debug.
    #[arg(long = "engine-opt", value_name = "KEY=VALUE")]
    pub opts: Vec<String>,
    /// A registry reached over plain HTTP or with an untrusted certificate (repeatable).
    #[arg(long = "engine-insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// A registry mirror (repeatable).
    #[arg(long = "engine-registry-mirror", value_name = "URL")]
    pub registry_mirrors: Vec<String>,
    /// An environment variable of dockerd, e.g. HTTPS_PROXY (repeatable): NAME=VALUE.
    #[arg(long = "engine-env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The engine's storage driver (default: Docker's choice, overlay2).
    #[arg(long = "engine-storage-driver", value_name = "NAME")]
    pub storage_driver: Option<String>,
    /// A root certificate the guest trusts, in a PEM file (repeatable): a TLS-inspecting
    /// proxy's or a private registry's. Containers find them at /etc/devbox/engine-ca.pem.
    #[arg(long = "engine-ca", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
}

/// Completion of machine names: the machines of the store (`DEVBOX_HOME` or the default),
/// read when the shell asks (the one place this module touches the file system, and only
/// under `COMPLETE`, see `commands::completion`).
fn machine_names() -> clap_complete::ArgValueCandidates {
    clap_complete::ArgValueCandidates::new(|| {
        let home = std::env::var_os("DEVBOX_HOME").map(PathBuf::from);
        crate::machine::Store::new(home, None)
            .names()
            .unwrap_or_default()
            .into_iter()
            .map(clap_complete::CompletionCandidate::new)
            .collect()
    })
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// Machine name.
    #[arg(add = machine_names())]
    pub name: String,
}

/// The machines a bulk verb acts on: names, or `--all`.
#[derive(Debug, Args)]
pub struct Machines {
    /// Machine names.
    #[arg(required_unless_present = "all", value_name = "NAME", add = machine_names())]
    pub names: Vec<String>,
    /// Every machine.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub machines: Machines,
    /// Seconds to wait for each machine to be ready.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// Machine name.
    #[arg(add = machine_names())]
    pub name: String,
    /// Seconds to wait for the machine to be ready.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub machines: Machines,
    /// Kill the machines at once instead of shutting their guests down.
    #[arg(long, short)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[command(flatten)]
    pub machines: Machines,
    /// Stop a machine first if it is running.
    #[arg(long, short)]
    pub force: bool,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long, short)]
    pub yes: bool,
    /// For a host adopted over SSH: also put back the host's own Docker settings (its
    /// daemon.json as it was before devbox) and restart its engine.
    #[arg(long)]
    pub purge: bool,
}

#[derive(Debug, Args)]
pub struct MachineLsArgs {
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print the machines' names only, one a line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Keep only the machines that match KEY=VALUE: state=running, driver=qemu, name=GLOB
    /// (repeatable: every key must match; a key given twice matches either value).
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Print each machine through a template of fields, as docker-machine: '{{.Name}}
    /// {{.State}} {{.IP}}'; a `table` prefix adds a header and aligns the tab-separated
    /// columns. Fields: Name, State, Driver, DriverName, IP, CPUs, Memory, Disk, DiskUsed,
    /// DockerHost, URL, Error.
    #[arg(long, conflicts_with_all = ["json", "quiet"], value_name = "TEMPLATE")]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine name.
    #[arg(add = machine_names())]
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Request a terminal for the command (as `ssh -t`; a shell without a command gets one
    /// whenever stdin is a terminal). Twice (`-tt`): even when stdin is not a terminal.
    #[arg(short = 't', action = clap::ArgAction::Count, conflicts_with = "no_tty")]
    pub tty: u8,
    /// Never request a terminal (as `ssh -T`).
    #[arg(short = 'T')]
    pub no_tty: bool,
    /// Directory to run in (default: the current directory's path in the machine when it is
    /// inside a share, else the login directory).
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Machine name.
    #[arg(add = machine_names())]
    pub name: String,
    /// Command to run instead of an interactive shell (`--` before it is accepted too).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// Machine name (default: every machine).
    #[arg(add = machine_names())]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Copy directories and their contents.
    #[arg(long, short)]
    pub recursive: bool,
    /// Source: a host path, or NAME:PATH in a machine.
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Destination: a host path, or NAME:PATH in a machine (an existing directory receives
    /// the source under its own name).
    #[arg(value_name = "DEST")]
    pub dest: String,
}

#[derive(Debug, Args)]
pub struct UseArgs {
    /// Machine name.
    #[arg(required_unless_present = "none", add = machine_names())]
    pub name: Option<String>,
    /// Go back to the docker CLI's default context.
    #[arg(long, conflicts_with = "name")]
    pub none: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Machine name.
    #[arg(add = machine_names())]
    pub name: String,
    /// Keep printing as the log grows (Ctrl-C stops).
    #[arg(long, short)]
    pub follow: bool,
    /// Print only the last N lines (then follow from there with --follow).
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<u64>,
    /// Which log: the guest's serial console, the machine's supervisor, or the guest's
    /// Docker engine (dockerd; the machine must be running).
    #[arg(long, value_enum, default_value = "console")]
    pub source: LogSource,
}

/// The logs `devbox logs` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogSource {
    /// The guest's serial console (`serial.log`): boot messages, kernel, init.
    Console,
    /// devbox's supervisor of the machine (`supervisor.log`): start, network, DNS, ports.
    Supervisor,
    /// The Docker engine in the guest (`/var/log/docker.log`, read over SSH).
    Docker,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Machine name (not needed with --unset).
    #[arg(required_unless_present = "unset", add = machine_names())]
    pub name: Option<String>,
    /// Print the commands that undo the environment instead.
    #[arg(long, short)]
    pub unset: bool,
    /// The shell to print for (default: the one $SHELL names; sh syntax when unknown).
    #[arg(long, value_enum, value_name = "SHELL")]
    pub shell: Option<EnvShell>,
    /// Print the variables as a JSON object instead (null values with --unset).
    #[arg(long, conflicts_with = "shell")]
    pub json: bool,
}

/// The shells `devbox env` prints for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvShell {
    /// POSIX sh, bash, dash, ksh.
    #[value(alias = "sh")]
    Bash,
    Zsh,
    Fish,
    /// tcsh and csh.
    #[value(alias = "csh")]
    Tcsh,
    /// PowerShell (pwsh).
    #[value(alias = "pwsh")]
    Powershell,
    /// Windows cmd.exe.
    Cmd,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Assemble a guest image from Debian packages (cached: a second build reuses it).
    Build(ImageBuildArgs),
    /// Download a built image: URL of its manifest.json.
    Pull(ImagePullArgs),
    /// List installed images.
    Ls(LsArgs),
    /// Remove an installed image no machine uses.
    Rm(ImageRmArgs),
    /// Remove the installed images no machine uses, but the newest of each architecture (asks
    /// first on a terminal).
    Prune(ImagePruneArgs),
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// Rebuild even if an image for the same recipe exists.
    #[arg(long)]
    pub force: bool,
    /// Debian kernel flavour: `cloud` (small, boots fastest; the default) or `generic`
    /// (Debian's full kernel, with drivers and filesystems the cloud one lacks, such as 9p).
    #[arg(long, value_enum, default_value = "cloud")]
    pub kernel: crate::image::build::Kernel,
    /// Debian release the guest is made of: `trixie` (Debian 13: Docker 26.1, kernel 6.12;
    /// the default) or `bookworm` (Debian 12: Docker 20.10, kernel 6.1).
    #[arg(long, value_enum, default_value = "trixie")]
    pub suite: crate::image::debian::Suite,
    /// Guest architecture (default: the host's). arm64 images are for Apple silicon hosts
    /// and can be built on any host.
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<ArchArg>,
    /// Debian archive to read packages from (any mirror of it: what it serves is checked
    /// against Debian's signatures).
    #[arg(long, value_name = "URL", default_value = crate::image::debian::DEFAULT_MIRROR)]
    pub mirror: String,
    /// Debian security archive (the `-security` suite).
    #[arg(long, value_name = "URL", default_value = crate::image::debian::DEFAULT_SECURITY_MIRROR)]
    pub security_mirror: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchArg {
    /// 64-bit x86 (Debian's amd64).
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    /// 64-bit ARM (Linux calls it aarch64).
    #[value(alias = "aarch64")]
    Arm64,
}

#[derive(Debug, Args)]
pub struct ImagePullArgs {
    /// URL of the image's manifest.json.
    pub url: String,
    /// Expected sha256 of manifest.json.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
}

// `edit`, `upgrade`, `image rm`, `image prune` (issue #18 items 3 and 4).

/// Completion of image versions: the images of the cache (`DEVBOX_CACHE` or the default), read
/// when the shell asks, like [`machine_names`].
fn image_versions() -> clap_complete::ArgValueCandidates {
    clap_complete::ArgValueCandidates::new(|| {
        let cache = std::env::var_os("DEVBOX_CACHE").map(PathBuf::from);
        let store = crate::machine::Store::new(None, cache);
        crate::image::list(&store.cache)
            .unwrap_or_default()
            .into_iter()
            .map(|i| {
                clap_complete::CompletionCandidate::new(i.manifest.version).help(Some(
                    format!("{} {}", i.manifest.arch, i.manifest.created).into(),
                ))
            })
            .collect()
    })
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  devbox edit dev --cpus 4 --memory 8G
  devbox edit dev --share ~/src:/src --unshare /home/me
  devbox edit dev --engine-registry-mirror https://mirror.example.com
  devbox edit dev                      # $VISUAL or $EDITOR (else vi) on machine.yaml")]
pub struct EditArgs {
    /// Machine name.
    #[arg(add = machine_names())]
    pub name: String,
    /// Virtual CPUs.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory: a size with a unit (4G, 4096M) or a bare number of MiB.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Add a share: HOST_PATH[:GUEST_PATH][:ro] (repeatable).
    #[arg(long = "share", value_name = "SHARE")]
    pub shares: Vec<String>,
    /// Allow an added --share whose directory is owned by root (the file server then acts as
    /// root on it).
    #[arg(long, requires = "shares")]
    pub allow_root_share: bool,
    /// Remove the share of this host directory, or mounted at this guest path (repeatable).
    #[arg(long = "unshare", value_name = "PATH")]
    pub unshares: Vec<String>,
    /// Add to the engine's settings (a list key gains the items, other keys are replaced).
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Remove an engine setting: a daemon.json key or a dockerd environment variable
    /// (repeatable); `ca` removes every --engine-ca certificate.
    #[arg(
        long = "engine-unset",
        value_name = "KEY",
        help_heading = "Docker engine"
    )]
    pub engine_unset: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Machine name.
    #[arg(add = machine_names())]
    pub name: String,
    /// The image to move to (default: the newest installed one of the machine's
    /// architecture); an older one is accepted too.
    #[arg(long, value_name = "VERSION", add = image_versions())]
    pub image: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImageRmArgs {
    /// Image versions (`devbox image ls`).
    #[arg(required = true, value_name = "VERSION", add = image_versions())]
    pub versions: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagePruneArgs {
    /// Print what would be removed and the space it would free, removing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the newest image of each architecture too when no machine uses it (kept
    /// otherwise: `create` takes it).
    #[arg(long)]
    pub all: bool,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long, short)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust the devbox CA (created on first use under DEVBOX_HOME/tls) in your stores.
    Install(TrustArgs),
    /// Remove exactly the devbox CA from your stores.
    Uninstall(TrustArgs),
    /// Which of your stores trust the devbox CA.
    Status,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Print the commands without running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Also the system store, which every program of the host trusts (Debian/Ubuntu's
    /// update-ca-certificates, macOS's System keychain); runs its commands through sudo
    /// unless devbox runs as root.
    #[arg(long)]
    pub system: bool,
}

#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// Make the host's routes match your running machines (idempotent; run at boot by the
    /// job `sudo devbox system install` sets up).
    Apply(DryRunArg),
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Set this host up for every user (run once, with sudo): copy this binary to
    /// /usr/local/bin/devbox with the capabilities CAP_NET_ADMIN and CAP_NET_BIND_SERVICE,
    /// create the lease registry /var/lib/devbox, install the boot-time route job for you.
    Install(SystemArgs),
    /// Remove exactly what `system install` added.
    Uninstall(SystemArgs),
    /// What is installed, and what still needs a fix.
    Status,
}

#[derive(Debug, Args)]
pub struct SystemArgs {
    /// Print the plan without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Install: replace a /usr/local/bin/devbox that `system install` did not put there.
    /// Uninstall: go ahead while machines still hold leases (the registry stays).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// Route the machine's domains (`<machine>.<tld>` and its containers' alias domains) to
    /// its DNS server: /etc/resolver files on macOS, systemd-resolved on Linux.
    Install(DnsArgs),
    /// Undo `dns install`.
    Uninstall(DnsArgs),
    /// Let a machine's containers claim names in DOMAIN (outside `<machine>.<tld>`), which is
    /// then routed to its DNS server. Not a public suffix (`dev`, `pages.dev`).
    Allow(DnsAllowArgs),
    /// Take DOMAIN back from the machines it was allowed for.
    Deny(DnsAllowArgs),
    /// List the allowed domains and their machines.
    Allowed(LsArgs),
}

#[derive(Debug, Args)]
pub struct DnsAllowArgs {
    /// A domain under the machine's TLD, e.g. synbioz.dev.
    pub domain: String,
    /// The machine (default: the only one; for `deny`, every machine that has it).
    #[arg(long, short, value_name = "NAME")]
    pub machine: Option<String>,
}

#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Machine name.
    #[arg(add = machine_names())]
    pub name: String,
    /// Print the plan without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum SwarmCommand {
    /// Make a running machine the manager of a new swarm, advertised on its host-facing
    /// address; `devbox use NAME` then drives the swarm.
    Init(NameArg),
    /// Add a running machine to the swarm that MANAGER manages.
    Join(SwarmJoinArgs),
    /// Take a machine out of its swarm (and out of the swarm's node list).
    Leave(SwarmLeaveArgs),
    /// List the machines in swarms, with their roles and node states.
    Ls(SwarmLsArgs),
}

#[derive(Debug, Args)]
pub struct SwarmJoinArgs {
    /// The machine to add.
    #[arg(add = machine_names())]
    pub name: String,
    /// A manager of the swarm (the machine of `devbox swarm init`, or another manager).
    #[arg(long, value_name = "MANAGER", add = machine_names())]
    pub manager: String,
    /// The role to join with.
    #[arg(long = "as", value_enum, default_value = "worker", value_name = "ROLE")]
    pub role: crate::swarm::Role,
}

#[derive(Debug, Args)]
pub struct SwarmLeaveArgs {
    /// The machine to take out.
    #[arg(add = machine_names())]
    pub name: String,
    /// Leave even as the last manager of other nodes (they keep running, unmanaged).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SwarmLsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// The guest filesystem's use, Docker's own view, and the host file's apparent and
    /// allocated sizes.
    Usage(StatusArgs),
    /// Grow a stopped machine's data disk; the guest grows its filesystem at the next boot.
    Resize(DiskResizeArgs),
}

#[derive(Debug, Args)]
pub struct DiskResizeArgs {
    /// Machine name.
    #[arg(add = machine_names())]
    pub name: String,
    /// New size of the data disk (e.g. 40G); only growing is possible.
    #[arg(value_name = "SIZE")]
    pub size: String,
}

#[derive(Debug, Args)]
pub struct DryRunArg {
    /// Print the plan without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to print the completion script for.
    pub shell: clap_complete::Shell,
}

/// `--json`: which commands print a JSON document (`docs/json.md`), and so also print their
/// error as one on stdout.
impl Command {
    pub fn json(&self) -> bool {
        match self {
            Command::Ls(a) => a.json,
            Command::Status(a) => a.json,
            Command::Inspect(_) => true,
            Command::Env(a) => a.json,
            Command::Image(ImageCommand::Ls(a)) => a.json,
            Command::Dns(DnsCommand::Allowed(a)) => a.json,
            Command::Disk(DiskCommand::Usage(a)) => a.json,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_arch(args: &[&str]) -> Result<Option<ArchArg>, clap::Error> {
        let cli = Cli::try_parse_from(["devbox", "image", "build"].iter().chain(args))?;
        match cli.command {
            Command::Image(ImageCommand::Build(a)) => Ok(a.arch),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn image_build_arch_names_and_synonyms() {
        assert_eq!(build_arch(&[]).unwrap(), None);
        assert_eq!(
            build_arch(&["--arch", "arm64"]).unwrap(),
            Some(ArchArg::Arm64)
        );
        assert_eq!(
            build_arch(&["--arch", "aarch64"]).unwrap(),
            Some(ArchArg::Arm64)
        );
        assert_eq!(
            build_arch(&["--arch", "x86_64"]).unwrap(),
            Some(ArchArg::X86_64)
        );
        assert_eq!(
            build_arch(&["--arch", "amd64"]).unwrap(),
            Some(ArchArg::X86_64)
        );
    }

    fn ssh(args: &[&str]) -> Result<SshArgs, clap::Error> {
        let cli = Cli::try_parse_from(["devbox", "ssh"].iter().chain(args))?;
        match cli.command {
            Command::Ssh(a) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn ssh_takes_its_command_with_or_without_a_double_dash() {
        let a = ssh(&["dev", "docker", "ps", "-a"]).unwrap();
        assert_eq!(
            (a.name.as_str(), a.command),
            ("dev", vec!["docker".into(), "ps".into(), "-a".into()])
        );
        let a = ssh(&["dev", "--", "ls", "--all", "--"]).unwrap();
        assert_eq!(a.command, ["ls", "--all", "--"]);
        // Options before the name are devbox's; after it, the command's.
        let a = ssh(&["-t", "--workdir", "/w", "dev", "tty", "-t"]).unwrap();
        assert_eq!((a.tty, a.workdir.as_deref()), (1, Some("/w")));
        assert_eq!(a.command, ["tty", "-t"]);
        let a = ssh(&["-tt", "dev"]).unwrap();
        assert_eq!(a.tty, 2);
        assert!(a.command.is_empty());
        assert!(ssh(&["-T", "dev"]).unwrap().no_tty);
        assert!(ssh(&["-t", "-T", "dev"]).is_err());
        assert!(ssh(&[]).is_err());
    }

    #[test]
    fn unknown_arch_lists_the_valid_ones() {
        let e = build_arch(&["--arch", "riscv64"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let msg = e.to_string();
        assert!(msg.contains("riscv64"), "{msg}");
        assert!(msg.contains("[possible values: x86_64, arm64]"), "{msg}");
    }
}
