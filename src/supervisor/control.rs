//! The supervisor's control socket (`control.sock`): one JSON request per line, one JSON
//! reply per line. The CLI asks for the state and requests a stop through
//! [`super::client::request`]; this file is the server and the protocol.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::StateWriter;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum Request {
    /// The supervisor's current state file.
    Status,
    /// Stop the machine: guest poweroff, or kill at once with `force`.
    Stop { force: bool },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "lowercase")]
pub enum Reply {
    Status {
        // Boxed: the state is much larger than the other replies (the JSON is the same).
        state: Box<crate::machine::state::StateFile>,
    },
    Accepted,
    Error {
        message: String,
    },
}

/// What the control thread hands to the supervisor's main loop.
pub enum ControlEvent {
    Stop { force: bool },
}

/// Serves the socket on its own thread until the process exits.
pub fn serve(path: &Path, events: Sender<super::Event>, state: StateWriter) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding {}: {e}", path.display())))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = handle(conn, &events, &state);
            }
        })?;
    Ok(())
}

fn handle(
    conn: UnixStream,
    events: &Sender<super::Event>,
    state: &StateWriter,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => Reply::Status {
            state: Box::new(state.snapshot()),
        },
        Ok(Request::Stop { force }) => {
            let _ = events.send(super::Event::Control(ControlEvent::Stop { force }));
            Reply::Accepted
        }
        Err(e) => Reply::Error {
            message: format!("bad request: {e}"),
        },
    };
    let mut w = &conn;
    writeln!(
        w,
        "{}",
        serde_json::to_string(&reply).map_err(std::io::Error::other)?
    )
}

/// Sends one request to a supervisor and reads its reply (the client's side).
pub(super) fn request(path: &Path, req: &Request) -> std::io::Result<Reply> {
    let conn = UnixStream::connect(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("connecting to {}: {e}", path.display()))
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = &conn;
    writeln!(
        w,
        "{}",
        serde_json::to_string(req).map_err(std::io::Error::other)?
    )?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}
