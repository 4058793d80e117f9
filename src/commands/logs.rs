//! `devbox logs NAME [--follow]`: the guest's serial console.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::Result;

use crate::cli::LogsArgs;
use crate::machine::Store;

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
    let mut f = fs_err::File::open(&path)?;
    let mut pos = std::io::copy(&mut f, &mut out)?;
    out.flush()?;
    if !a.follow {
        return Ok(0);
    }
    let mut buf = vec![0u8; 64 * 1024];
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
            out.write_all(&buf[..n])?;
            pos += n as u64;
        }
        out.flush()?;
        // Keep following across restarts; stop only when the machine is gone.
        if !dir.path.exists() {
            return Ok(0);
        }
    }
}
