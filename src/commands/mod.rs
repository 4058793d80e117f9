//! One file per verb; orchestration only.

pub fn run(_args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    0
}
