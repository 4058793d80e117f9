//! virtio-rng (entropy device): fills each writable buffer from the host's `getrandom`.
//! Without it a guest's early `getrandom()` can block for seconds (research/vmm.md §6.3).

use virtio_queue::Queue;

use super::{F_VERSION_1, GuestRam, TYPE_RNG, VirtioDevice, add_used, pop_chain};

pub const QUEUE_SIZE: u16 = 64;
/// Bytes handed out per request at most.
pub const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Default)]
pub struct Rng {
    queue_sizes: [u16; 1],
}

impl Rng {
    pub fn new() -> Rng {
        Rng {
            queue_sizes: [QUEUE_SIZE],
        }
    }
}

fn getrandom(buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the kernel writes at most `buf.len() - done` bytes into the live buffer
        // starting at `done`.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n <= 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        done += n as usize;
    }
    done
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        F_VERSION_1
    }
    fn config_space(&self) -> &[u8] {
        &[]
    }
    fn activate(&mut self, _acked: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn process_queue(&mut self, queues: &mut [Queue], index: usize, mem: &GuestRam) -> u32 {
        let Some(q) = queues.get_mut(index) else {
            return 0;
        };
        let mut used = 0;
        while let Some(next) = pop_chain(q, mem) {
            let (head, len) = match next {
                Err((head, _)) => (head, 0),
                Ok(chain) => {
                    let mut buf = vec![0u8; chain.writable_len().min(MAX_REQUEST) as usize];
                    let n = getrandom(&mut buf);
                    (chain.head, chain.write_at(mem, 0, &buf[..n]) as u32)
                }
            };
            add_used(q, mem, head, len);
            used |= 1 << index;
        }
        used
    }
}
