//! `devbox logs NAME [--follow]`: the guest's serial console, with its control characters
//! escaped (`output::guest_text`): the guest writes it, and its escape sequences must not act
//! on the user's terminal. The raw bytes stay in `serial.log`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::Result;

use crate::cli::LogsArgs;
use crate::machine::Store;
use crate::output::guest_text::GuestText;

pub fn run(store: &Store, a: &LogsArgs) -> Result<i32> {
    let dir = store.existing(&a.name)?;
    let path = dir.serial_log_path();
    if !path.exists() {
        crate::output::info(format!(
            "Machine {} has no console log yet (it has never started).",
            a.name
        ));
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    let mut text = GuestText::new();
    let mut f = fs_err::File::open(&path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(text.push(&buf[..n]).as_bytes())?;
        pos += n as u64;
    }
    if !a.follow {
        out.write_all(text.finish().as_bytes())?;
        out.flush()?;
        return Ok(0);
    }
    out.flush()?;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let len = fs_err::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            // A new boot rotated the log: start over on the new file.
            f = fs_err::File::open(&path)?;
            pos = 0;
        }
        f.seek(SeekFrom::Start(pos))?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(text.push(&buf[..n]).as_bytes())?;
            pos += n as u64;
        }
        out.flush()?;
        // Keep following across restarts; stop only when the machine is gone.
        if !dir.path.exists() {
            return Ok(0);
        }
    }
}
