//! The in-process KVM driver (Linux): a small VMM on the rust-vmm crates.
pub mod devices;
pub mod layout;
