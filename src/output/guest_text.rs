//! Guest-controlled text made safe for a terminal.
//!
//! The guest's console (and what the supervisor logs about it: container names, aliases) is
//! written by an untrusted guest. Copied raw to a terminal, its escape sequences act on the
//! user's terminal: OSC 52 writes the clipboard, OSC 0 sets the window title, CSI sequences
//! redraw the screen to hide or spoof what came before. [`GuestText`] keeps printable text,
//! `\n` and `\t`, reads a serial console's `\r\n` as `\n`, and shows every other control
//! character (C0, DEL, C1, and so a lone `\r`) escaped as Rust does (`\u{1b}`), so it is seen,
//! not obeyed. Bytes that are not UTF-8 become U+FFFD.
//!
//! Written here rather than taken from a crate: the crates for this (`strip-ansi-escapes`,
//! `vte`) remove escape sequences, where devbox wants to show the user what the guest sent;
//! the rule itself is the few lines below.

use std::fmt::Write;

/// A streaming escaper: bytes arrive in chunks (`devbox logs --follow` reads as the file
/// grows), and a UTF-8 character or a `\r\n` split between two chunks is kept until it is
/// whole.
#[derive(Debug, Default)]
pub struct GuestText {
    pending: Vec<u8>,
}

impl GuestText {
    pub fn new() -> GuestText {
        GuestText::default()
    }

    /// The escaped text of `bytes`, less any incomplete tail, which waits for the next chunk.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut keep = incomplete_utf8_tail(&self.pending);
        if self.pending.len() > keep && self.pending[self.pending.len() - keep - 1] == b'\r' {
            // A `\r` at the end may be the first half of a `\r\n`.
            keep += 1;
        }
        let done = self.pending.len() - keep;
        let out = escape(&self.pending[..done]);
        self.pending.drain(..done);
        out
    }

    /// The escaped text of whatever is still held (at the end of the input).
    pub fn finish(&mut self) -> String {
        let out = escape(&self.pending);
        self.pending.clear();
        out
    }
}

/// The escaped text of a whole byte string.
pub fn escape(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' if chars.peek() == Some(&'\n') => {}
            c if c.is_control() => {
                let _ = write!(out, "{}", c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    out
}

/// How many bytes at the end of `bytes` start a UTF-8 character that is not complete yet.
fn incomplete_utf8_tail(bytes: &[u8]) -> usize {
    // A UTF-8 character is at most 4 bytes: only the last 3 can be an unfinished one.
    let start = bytes.len().saturating_sub(3);
    for i in (start..bytes.len()).rev() {
        let b = bytes[i];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0, // ASCII or an invalid byte: nothing to wait for
        };
        let have = bytes.len() - i;
        return if have < need { have } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        // OSC 52 (clipboard), OSC 0 (title), CSI clear screen, an 8-bit CSI, BEL, DEL.
        let hostile =
            "boot ok\r\n\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b]0;title\x07\x1b[2J\u{9b}31m\x7fend\n";
        let shown = escape(hostile.as_bytes());
        assert_eq!(
            shown,
            "boot ok\n\\u{1b}]52;c;ZWNobyBwd25lZA==\\u{7}\\u{1b}]0;title\\u{7}\\u{1b}[2J\\u{9b}31m\\u{7f}end\n"
        );
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n'));
    }

    #[test]
    fn keeps_text_newlines_and_tabs_and_shows_a_lone_carriage_return() {
        assert_eq!(escape(b"a\tb\nc\r\n"), "a\tb\nc\n");
        assert_eq!(
            escape(b"progress 10%\rprogress 99%"),
            "progress 10%\\u{d}progress 99%"
        );
        assert_eq!(escape(b"bad \xff byte"), "bad \u{fffd} byte");
        assert_eq!(escape("é ✓ 😀".as_bytes()), "é ✓ 😀");
    }

    #[test]
    fn a_character_or_crlf_split_between_chunks_survives() {
        let input = "é✓😀\r\n\x1b[0m\r\nend".as_bytes();
        for split in 0..=input.len() {
            let mut g = GuestText::new();
            let mut out = g.push(&input[..split]);
            out += &g.push(&input[split..]);
            out += &g.finish();
            assert_eq!(out, "é✓😀\n\\u{1b}[0m\nend", "split at {split}");
        }
    }
}
