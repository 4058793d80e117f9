//! SSH client (filled in by the ssh work).
