//! [`Hint`]: the known fix for an error, carried by the error type itself.
//!
//! Every error enum whose failures have a fix the user can apply implements it; `output`
//! shows the first hint found along an error's chain (`output::diagnostics`, which also
//! holds the unit test that fails when a type implements `Hint` but cannot be reached from
//! an error chain). A leaf: it imports nothing from the crate, so every layer can implement
//! it without reaching up to the one that prints.

/// The fix for an error, in words a user can act on ("run `sudo devbox system install`").
pub trait Hint: std::error::Error + 'static {
    /// `None` when nothing better than the message itself can be said.
    fn hint(&self) -> Option<String>;
}
