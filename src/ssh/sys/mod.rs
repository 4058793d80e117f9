//! Host-side platform code of the SSH module: the local terminal (raw mode, window size,
//! SIGWINCH). Every `unsafe` block of the module lives below this directory. The code is
//! plain POSIX and serves Linux and macOS alike.

pub(super) mod terminal;
