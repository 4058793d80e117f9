//! devbox's JSON documents (`--json`, `inspect`): one versioned schema, written down in
//! `docs/json.md`. Every document is an object whose first key is `"schema"`, so a consumer
//! can check the version before reading anything else; a list is an object with one array
//! in it (`{"schema": 1, "machines": [...]}`), never a bare array. Unknown values are `null`
//! (never `""` or `0`), machine states are [`crate::machine::MachineState`]'s lowercase
//! names. A command that fails under `--json` prints [`error`]'s document on stdout (as well
//! as the usual `error:` lines on stderr), and still exits non-zero.

use serde::Serialize;

use super::diagnostics;

/// The version of the schema in `docs/json.md`. Raised when a field changes meaning or goes
/// away; adding a field does not raise it.
pub const SCHEMA: u32 = 1;

/// A document: `body`'s fields after `"schema"`. `body` must serialize as an object (a
/// struct, or `serde_json::json!({…})`).
#[derive(Serialize)]
struct Document<'a, T: Serialize> {
    schema: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// `body` with the schema version, as pretty JSON text.
pub fn render<T: Serialize>(body: &T) -> String {
    serde_json::to_string_pretty(&Document {
        schema: SCHEMA,
        body,
    })
    .expect("a document is an object of serializable fields")
}

/// Prints `body` as a document on stdout.
pub fn print<T: Serialize>(body: &T) {
    super::data(render(body));
}

/// The `error` object of a failed command's document.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error itself (the `error:` line).
    pub message: String,
    /// Its causes, outermost first (the `caused by:` lines).
    pub causes: Vec<String>,
    /// The known fix, or null.
    pub hint: Option<String>,
    /// What went wrong, for a program to act on: see [`diagnostics::kind`].
    pub kind: &'static str,
}

impl ErrorBody {
    pub fn of(err: &anyhow::Error) -> ErrorBody {
        ErrorBody {
            message: err.to_string(),
            causes: err.chain().skip(1).map(|c| c.to_string()).collect(),
            hint: diagnostics::hint(err),
            kind: diagnostics::kind(err),
        }
    }
}

/// The document of a failed command: `{"schema": 1, "error": {…}}`.
pub fn error_document(body: &ErrorBody) -> String {
    #[derive(Serialize)]
    struct Failed<'a> {
        error: &'a ErrorBody,
    }
    render(&Failed { error: body })
}

/// Prints the document of a failed command on stdout.
pub fn error(err: &anyhow::Error) {
    super::data(error_document(&ErrorBody::of(err)));
}

/// The document of a command line clap refused while `--json` was on it (exit code 2).
pub fn usage_error(err: &clap::Error) {
    let text = err.to_string();
    // clap's text: "error: <message>\n\n<usage>\n\nFor more information, try '--help'."
    let mut paragraphs = text.split("\n\n").map(str::trim);
    let message = paragraphs
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let body = ErrorBody {
        message,
        causes: Vec::new(),
        hint: Some("`devbox help` lists the commands and their options".into()),
        kind: "usage",
    };
    super::data(error_document(&body));
}

/// An error and its causes on one line (`outer: cause: cause`), for a document's field that
/// reports an error without failing the command (a machine whose `machine.yaml` is broken,
/// in `ls` and `status`).
pub fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let s = c.to_string();
        // `#[error(transparent)]` and `{source}` in a message repeat the cause's text.
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_comes_first_and_bodies_keep_their_fields() {
        #[derive(Serialize)]
        struct Body {
            name: &'static str,
            ip: Option<String>,
        }
        let text = render(&Body {
            name: "dev",
            ip: None,
        });
        assert!(text.starts_with("{\n  \"schema\": 1,"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"schema": 1, "name": "dev", "ip": null})
        );
    }

    #[test]
    fn an_error_document_carries_message_causes_hint_and_kind() {
        let inner = crate::machine::store::StoreError::NotFound {
            name: "nope".into(),
        };
        let e = anyhow::Error::new(inner).context("starting machine nope");
        let v: serde_json::Value =
            serde_json::from_str(&error_document(&ErrorBody::of(&e))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"schema": 1, "error": {
                "message": "starting machine nope",
                "causes": ["no machine named \"nope\""],
                "hint": "`devbox ls` lists the machines",
                "kind": "unknown_machine",
            }})
        );
    }
}
