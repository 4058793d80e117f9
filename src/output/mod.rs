//! The one owner of terminal output: data on stdout (tables, JSON, `devbox ip`), messages,
//! progress and errors on stderr. Colour only on a terminal and never with `NO_COLOR`;
//! spinners only on a terminal. Which hint goes with an error is `diagnostics`' business;
//! making guest-written text safe to print is `guest_text`'s; the JSON documents and their
//! schema are `json`'s, `--format` templates `template`'s.

pub mod diagnostics;
pub mod guest_text;
pub mod json;
pub mod template;

use std::io::{IsTerminal, Write};
use std::time::Duration;

fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

fn paint(code: &str, text: &str) -> String {
    if color() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// A progress message on stderr.
pub fn info(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

pub fn warn(msg: impl AsRef<str>) {
    eprintln!("{} {}", paint("1;33", "warning:"), msg.as_ref());
}

/// Prints an error with its chain of causes and a hint.
pub fn error(err: &anyhow::Error, hint: Option<String>) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{} {err}", paint("1;31", "error:"));
    for cause in err.chain().skip(1) {
        let _ = writeln!(e, "  {} {cause}", paint("2", "caused by:"));
    }
    if let Some(h) = hint {
        let _ = writeln!(e, "  {} {h}", paint("1;36", "hint:"));
    }
}

/// Data on stdout.
pub fn data(text: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_ref().as_bytes());
    if !text.as_ref().ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
}

/// An aligned table on stdout, header first (like `docker-machine ls`).
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(3);
    let _ = writeln!(tw, "{}", header.join("\t"));
    for r in rows {
        let _ = writeln!(tw, "{}", r.join("\t"));
    }
    let bytes = tw.into_inner().unwrap_or_default();
    data(String::from_utf8_lossy(&bytes));
}

/// A spinner on stderr when it is a terminal; plain step lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last: String,
}

impl Progress {
    pub fn new(msg: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("static template"),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        let mut p = Progress {
            bar,
            last: String::new(),
        };
        p.set(msg);
        p
    }

    pub fn set(&mut self, msg: &str) {
        if msg == self.last {
            return;
        }
        self.last = msg.to_owned();
        match &self.bar {
            Some(b) => b.set_message(msg.to_owned()),
            None => info(format!("{msg}…")),
        }
    }

    pub fn finish(self, msg: &str) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        info(msg);
    }

    pub fn abandon(self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
