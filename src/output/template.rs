//! `--format` templates, as docker-machine's `ls --format` takes them: text with fields such
//! as `{{.Name}}` (Go template syntax, fields only), `\t` and `\n` read as a tab and a
//! newline, and an optional `table ` prefix that adds a header line and aligns the columns
//! the tabs separate. An unknown field, or anything else between `{{` and `}}`, is an error
//! that lists the fields.
//!
//! Written here rather than taken from a crate: `gtmpl` implements the whole of Go's
//! text/template (pipelines, functions, `range`), a language devbox would then have to
//! document and keep safe, for three field names; `minijinja`, `handlebars` and `upon` have
//! a syntax of their own (`{{ name }}`), not the `{{.Name}}` docker-machine users already
//! type. Fields only is the few lines below.

use crate::hint::Hint;

/// A field a template can name: its name in the template and its column header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub header: &'static str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error(
        "unknown field {{{{.{field}}}}} in --format: the fields are {}",
        list(known)
    )]
    Field {
        field: String,
        known: Vec<&'static str>,
    },
    #[error(
        "--format supports fields only (such as {{{{.Name}}}}), not {{{{{action}}}}}: the fields are {}",
        list(known)
    )]
    Action {
        action: String,
        known: Vec<&'static str>,
    },
    #[error("unclosed {{{{ at byte {at} of --format")]
    Unclosed { at: usize },
}

impl Hint for TemplateError {
    fn hint(&self) -> Option<String> {
        Some("for example: devbox ls --format 'table {{.Name}}\\t{{.State}}\\t{{.IP}}'".into())
    }
}

fn list(known: &[&str]) -> String {
    known
        .iter()
        .map(|f| format!("{{{{.{f}}}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// An index into the fields the template was parsed with.
    Field(usize),
}

/// A parsed `--format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// `table ` prefix: a header line, and columns aligned.
    pub table: bool,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text` against the fields a command offers.
    pub fn parse(text: &str, fields: &[Field]) -> Result<Template, TemplateError> {
        let known = || fields.iter().map(|f| f.name).collect::<Vec<_>>();
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, text),
        };
        let offset = text.len() - body.len();
        let mut parts = Vec::new();
        let mut rest = body;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(unescape(&rest[..open])));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed {
                at: offset + (body.len() - rest.len()) + open,
            })?;
            let action = after[..close].trim();
            let name = action
                .strip_prefix('.')
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()))
                .ok_or_else(|| TemplateError::Action {
                    action: action.to_owned(),
                    known: known(),
                })?;
            let i =
                fields
                    .iter()
                    .position(|f| f.name == name)
                    .ok_or_else(|| TemplateError::Field {
                        field: name.to_owned(),
                        known: known(),
                    })?;
            parts.push(Part::Field(i));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(unescape(rest)));
        }
        Ok(Template { table, parts })
    }

    /// The header line of a `table` template: each field's header in its place.
    pub fn header(&self, fields: &[Field]) -> String {
        self.fill(|i| fields[i].header)
    }

    /// One line: `values[i]` for the template's field `fields[i]`.
    pub fn render(&self, values: &[String]) -> String {
        self.fill(|i| values[i].as_str())
    }

    fn fill<'a>(&self, value: impl Fn(usize) -> &'a str) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(i) => out.push_str(value(*i)),
            }
        }
        out
    }
}

/// The template's `\t` and `\n` as a tab and a newline (docker-machine's shells pass them
/// as two characters).
fn unescape(text: &str) -> String {
    text.replace("\\t", "\t").replace("\\n", "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[Field] = &[
        Field {
            name: "Name",
            header: "NAME",
        },
        Field {
            name: "State",
            header: "STATE",
        },
        Field {
            name: "IP",
            header: "IP",
        },
    ];

    fn values() -> Vec<String> {
        vec!["dev".into(), "Running".into(), "192.168.64.2".into()]
    }

    #[test]
    fn fields_text_and_escapes() {
        let t = Template::parse("{{.Name}} is {{ .State }}\\t({{.IP}})", FIELDS).unwrap();
        assert!(!t.table);
        assert_eq!(t.render(&values()), "dev is Running\t(192.168.64.2)");
        let t = Template::parse("plain }} text", FIELDS).unwrap();
        assert_eq!(t.render(&values()), "plain }} text");
    }

    #[test]
    fn table_prefix_gives_a_header() {
        let t = Template::parse("table {{.Name}}\\t{{.IP}}", FIELDS).unwrap();
        assert!(t.table);
        assert_eq!(t.header(FIELDS), "NAME\tIP");
        assert_eq!(t.render(&values()), "dev\t192.168.64.2");
        // A field named `table…` is not the prefix.
        assert!(!Template::parse("tablet {{.Name}}", FIELDS).unwrap().table);
    }

    #[test]
    fn unknown_fields_and_actions_list_the_fields() {
        let e = Template::parse("{{.Name}} {{.Nmae}}", FIELDS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown field {{.Nmae}} in --format: the fields are {{.Name}}, {{.State}}, {{.IP}}"
        );
        let e = Template::parse("{{json .}}", FIELDS).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "--format supports fields only (such as {{.Name}}), not {{json .}}: the fields are {{.Name}}"
            ),
            "{e}"
        );
        assert!(matches!(
            Template::parse("{{.Name | upper}}", FIELDS),
            Err(TemplateError::Action { .. })
        ));
        assert!(matches!(
            Template::parse("{{}}", FIELDS),
            Err(TemplateError::Action { .. })
        ));
        // Go's field names are case-sensitive.
        assert!(matches!(
            Template::parse("{{.name}}", FIELDS),
            Err(TemplateError::Field { .. })
        ));
        assert_eq!(
            Template::parse("table {{.Name", FIELDS),
            Err(TemplateError::Unclosed { at: 6 })
        );
    }
}
