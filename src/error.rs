//! Errors that know how to be fixed.
//!
//! Application code uses `anyhow` throughout; this module adds one thing on top: a
//! [`Hinted`] error carries a `hint:` line that the printer shows after the error chain,
//! so the user reads what failed and, where we know it, what to do about it.

use std::fmt;

/// An error with a known fix. Its `Display` is the message only; the hint is printed
/// separately by [`crate::output::Printer::error`].
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// Builds an `anyhow::Error` with a hint.
pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

/// The first hint found anywhere in an error's chain.
pub fn hint_of(err: &anyhow::Error) -> Option<&str> {
    err.chain()
        .find_map(|e| e.downcast_ref::<Hinted>())
        .map(|h| h.hint.as_str())
}

/// Raised when the user pressed Ctrl-C; the binary exits 130 without a hint.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Returns early with a [`Hinted`] error.
#[macro_export]
macro_rules! bail_hint {
    ($hint:expr, $($msg:tt)+) => {
        return Err($crate::error::hinted(format!($($msg)+), $hint))
    };
}
