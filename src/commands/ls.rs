//! `devbox ls`: one row per machine, like `docker-machine ls`; `-q` only the names (for
//! scripts and shell completion), `--json` the `machines` document (`docs/json.md`),
//! `--format` a template of fields (`output::template`), `--filter` to keep some machines.
//! A machine whose `machine.yaml` does not load is listed with its state and the cause; what
//! only the spec knows (driver, address, sizes) is null for it, never `""` or `0`.

use anyhow::Result;
use serde::Serialize;

use crate::cli::MachineLsArgs;
use crate::disk;
use crate::hint::Hint;
use crate::machine::guest_net::guest_address;
use crate::machine::spec::format_size;
use crate::machine::state::observe;
use crate::machine::{MachineState, Store};
use crate::output;
use crate::output::template::{Field, Template};

/// One machine in `ls --json` (`docs/json.md`: the machine object).
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub state: MachineState,
    pub driver: Option<String>,
    pub ip: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_bytes: Option<u64>,
    /// The guest filesystem's fill level at the supervisor's last measurement.
    pub disk_used_pct: Option<u8>,
    pub docker_host: String,
    /// Why `machine.yaml` does not load (null when it does).
    pub spec_error: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("invalid --filter {text:?}: expected KEY=VALUE, with KEY one of {}", KEYS.join(", "))]
    Syntax { text: String },
    #[error("unknown --filter key {key:?}: the keys are {}", KEYS.join(", "))]
    Key { key: String },
    #[error("invalid --filter {key}={value:?}: the values are {}", known.join(", "))]
    Value {
        key: &'static str,
        value: String,
        known: Vec<&'static str>,
    },
    #[error("invalid --filter name={pattern:?}: {why}")]
    Glob { pattern: String, why: String },
}

impl Hint for FilterError {
    fn hint(&self) -> Option<String> {
        Some("for example: devbox ls --filter state=running --filter name='web-*'".into())
    }
}

/// The keys `--filter` takes.
const KEYS: &[&str] = &["state", "driver", "name"];
const DRIVERS: &[&str] = &["qemu", "kvm", "vz", "ssh", "fake"];

/// One `--filter KEY=VALUE`.
#[derive(Debug)]
enum Filter {
    State(MachineState),
    Driver(String),
    Name(glob::Pattern),
}

impl Filter {
    fn parse(text: &str) -> Result<Filter, FilterError> {
        let (key, value) = text.split_once('=').ok_or_else(|| FilterError::Syntax {
            text: text.to_owned(),
        })?;
        match key {
            "state" => MachineState::ALL
                .into_iter()
                .find(|s| s.as_str().eq_ignore_ascii_case(value))
                .map(Filter::State)
                .ok_or_else(|| FilterError::Value {
                    key: "state",
                    value: value.to_owned(),
                    known: MachineState::ALL.iter().map(|s| s.name()).collect(),
                }),
            "driver" => DRIVERS
                .iter()
                .find(|d| d.eq_ignore_ascii_case(value))
                .map(|d| Filter::Driver((*d).to_owned()))
                .ok_or_else(|| FilterError::Value {
                    key: "driver",
                    value: value.to_owned(),
                    known: DRIVERS.to_vec(),
                }),
            "name" => glob::Pattern::new(value)
                .map(Filter::Name)
                .map_err(|e| FilterError::Glob {
                    pattern: value.to_owned(),
                    why: e.to_string(),
                }),
            _ => Err(FilterError::Key {
                key: key.to_owned(),
            }),
        }
    }

    fn key(&self) -> &'static str {
        match self {
            Filter::State(_) => "state",
            Filter::Driver(_) => "driver",
            Filter::Name(_) => "name",
        }
    }

    fn keeps(&self, r: &Row) -> bool {
        match self {
            Filter::State(s) => r.state == *s,
            Filter::Driver(d) => r.driver.as_deref() == Some(d),
            Filter::Name(p) => p.matches(&r.name),
        }
    }
}

/// Whether `filters` keep `r`: every key must match (AND), and a key given several times
/// matches when any of its values does (OR), as in docker-machine and docker.
fn kept(filters: &[Filter], r: &Row) -> bool {
    KEYS.iter().all(|key| {
        let mut of_key = filters.iter().filter(|f| f.key() == *key).peekable();
        of_key.peek().is_none() || of_key.any(|f| f.keeps(r))
    })
}

/// The fields of `ls --format`: docker-machine's names where it has the field (`DriverName`,
/// `URL`), devbox's own otherwise.
pub const FIELDS: &[Field] = &[
    Field {
        name: "Name",
        header: "NAME",
    },
    Field {
        name: "State",
        header: "STATE",
    },
    Field {
        name: "Driver",
        header: "DRIVER",
    },
    Field {
        name: "DriverName",
        header: "DRIVER",
    },
    Field {
        name: "IP",
        header: "IP",
    },
    Field {
        name: "CPUs",
        header: "CPUS",
    },
    Field {
        name: "Memory",
        header: "MEMORY",
    },
    Field {
        name: "Disk",
        header: "DISK",
    },
    Field {
        name: "DiskUsed",
        header: "DISK USED",
    },
    Field {
        name: "DockerHost",
        header: "DOCKER HOST",
    },
    Field {
        name: "URL",
        header: "URL",
    },
    Field {
        name: "Error",
        header: "ERROR",
    },
];

/// `r`'s values in the order of [`FIELDS`]; an unknown value is empty.
fn values(r: &Row) -> Vec<String> {
    let or_empty = |v: Option<String>| v.unwrap_or_default();
    let driver = or_empty(r.driver.clone());
    vec![
        r.name.clone(),
        r.state.as_str().to_owned(),
        driver.clone(),
        driver,
        or_empty(r.ip.clone()),
        or_empty(r.cpus.map(|c| c.to_string())),
        or_empty(r.memory_mib.map(|m| format!("{m} MiB"))),
        or_empty(r.disk_bytes.map(format_size)),
        or_empty(r.disk_used_pct.map(|p| format!("{p}%"))),
        r.docker_host.clone(),
        r.docker_host.clone(),
        or_empty(r.spec_error.clone()),
    ]
}

pub fn run(store: &Store, a: &MachineLsArgs) -> Result<i32> {
    // Bad --filter or --format: refused before anything is read.
    let filters = a
        .filters
        .iter()
        .map(|f| Filter::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    let template = a
        .format
        .as_deref()
        .map(|t| Template::parse(t, FIELDS))
        .transpose()?;
    if a.quiet && filters.is_empty() {
        // Names only: nothing else of a machine is read (its state file may not be ours).
        let names = store.names()?;
        if !names.is_empty() {
            output::data(names.join("\n"));
        }
        return Ok(0);
    }
    let rows: Vec<Row> = rows(store, a.quiet)?
        .into_iter()
        .filter(|r| kept(&filters, r))
        .collect();
    if a.quiet {
        if !rows.is_empty() {
            let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
            output::data(names.join("\n"));
        }
        return Ok(0);
    }
    if a.json {
        #[derive(Serialize)]
        struct Machines<'a> {
            machines: &'a [Row],
        }
        output::json::print(&Machines { machines: &rows });
        return Ok(0);
    }
    if let Some(t) = template {
        let lines: Vec<String> = rows.iter().map(|r| t.render(&values(r))).collect();
        if t.table {
            let header = t.header(FIELDS);
            let cells: Vec<Vec<String>> = lines
                .iter()
                .map(|l| l.split('\t').map(str::to_owned).collect())
                .collect();
            output::table(&header.split('\t').collect::<Vec<_>>(), &cells);
        } else if !lines.is_empty() {
            output::data(lines.join("\n"));
        }
        return Ok(0);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            if let Some(e) = &r.spec_error {
                return vec![
                    r.name.clone(),
                    r.state.as_str().into(),
                    format!("error: {e}"),
                ];
            }
            let v = values(r);
            vec![
                v[0].clone(),
                v[1].clone(),
                v[2].clone(),
                v[4].clone(),
                v[5].clone(),
                v[6].clone(),
                v[7].clone(),
            ]
        })
        .collect();
    output::table(
        &["NAME", "STATE", "DRIVER", "IP", "CPUS", "MEMORY", "DISK"],
        &table,
    );
    Ok(0)
}

/// Every machine's row, sorted by name. `quiet`: no disk warnings (names only are wanted).
fn rows(store: &Store, quiet: bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for name in store.names()? {
        let dir = store.machine(&name)?;
        let obs = observe(&dir)?;
        let sample = obs.file.as_ref().and_then(|f| f.disk.clone());
        if let Some(w) = sample
            .as_ref()
            .and_then(|d| disk::fullness_warning(&name, d))
            .filter(|_| !quiet)
        {
            output::warn(w);
        }
        let disk_used_pct = sample.map(|d| d.used_pct);
        let docker_host = format!("unix://{}", dir.docker_socket_path().display());
        rows.push(match dir.load_spec() {
            Ok(s) => Row {
                name,
                state: obs.state,
                driver: Some(s.driver.to_string()),
                // A vz machine has an address only while it runs.
                ip: guest_address(&s, &obs).ok().map(|ip| ip.to_string()),
                // An adopted host has none of devbox's.
                cpus: s.remote.is_none().then_some(s.cpus),
                memory_mib: s.remote.is_none().then_some(s.memory_mib),
                disk_bytes: s.remote.is_none().then_some(s.disk_bytes),
                disk_used_pct,
                docker_host,
                spec_error: None,
            },
            Err(e) => Row {
                name,
                state: obs.state,
                driver: None,
                ip: None,
                cpus: None,
                memory_mib: None,
                disk_bytes: None,
                disk_used_pct,
                docker_host,
                spec_error: Some(output::json::chain_text(&e)),
            },
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, state: MachineState, driver: Option<&str>) -> Row {
        Row {
            name: name.into(),
            state,
            driver: driver.map(Into::into),
            ip: None,
            cpus: None,
            memory_mib: None,
            disk_bytes: None,
            disk_used_pct: None,
            docker_host: String::new(),
            spec_error: None,
        }
    }

    fn filters(texts: &[&str]) -> Vec<Filter> {
        texts.iter().map(|t| Filter::parse(t).unwrap()).collect()
    }

    #[test]
    fn keys_and_and_repeated_keys_or() {
        let web = row("web-1", MachineState::Running, Some("qemu"));
        let db = row("db", MachineState::Stopped, Some("kvm"));
        let broken = row("web-2", MachineState::Stopped, None);
        let f = filters(&["state=running"]);
        assert!(kept(&f, &web) && !kept(&f, &db));
        let f = filters(&["name=web-*", "state=Stopped"]);
        assert!(!kept(&f, &web) && !kept(&f, &db) && kept(&f, &broken));
        let f = filters(&["state=running", "state=stopped", "driver=kvm"]);
        assert!(!kept(&f, &web) && kept(&f, &db) && !kept(&f, &broken));
        assert!(kept(&[], &broken));
    }

    #[test]
    fn bad_filters_name_the_keys_or_values() {
        let e = Filter::parse("colour=red").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown --filter key \"colour\": the keys are state, driver, name"
        );
        let e = Filter::parse("state=up").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --filter state=\"up\": the values are stopped, starting, running, stopping, crashed, failed"
        );
        assert!(matches!(
            Filter::parse("running"),
            Err(FilterError::Syntax { .. })
        ));
        assert!(matches!(
            Filter::parse("name=[a"),
            Err(FilterError::Glob { .. })
        ));
        assert!(matches!(
            Filter::parse("driver=virtualbox"),
            Err(FilterError::Value { key: "driver", .. })
        ));
    }

    #[test]
    fn every_field_has_a_value() {
        let r = row("dev", MachineState::Crashed, Some("qemu"));
        assert_eq!(values(&r).len(), FIELDS.len());
        let t = Template::parse("{{.Name}} {{.State}} {{.DriverName}} [{{.IP}}]", FIELDS).unwrap();
        assert_eq!(t.render(&values(&r)), "dev Crashed qemu []");
    }
}
