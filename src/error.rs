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

/// Whether `err` is, or was caused by, an interrupt (Ctrl-C, SIGTERM).
pub fn interrupted(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|c| c.downcast_ref::<Interrupted>().is_some())
}

/// Returns early with a [`Hinted`] error.
#[macro_export]
macro_rules! bail_hint {
    ($hint:expr, $($msg:tt)+) => {
        return Err($crate::error::hinted(format!($($msg)+), $hint))
    };
}

/// What a run found wrong before it started, gathered so that one report says all of
/// it: each mistake with its own hint, in the order found, said once.
#[derive(Debug, Default)]
pub struct Problems(Vec<anyhow::Error>);

impl Problems {
    /// Adds one problem (every problem of a [`Many`]), unless the same was said already.
    pub fn push(&mut self, err: anyhow::Error) {
        let err = match err.downcast::<Many>() {
            Ok(many) => {
                for (message, hint) in many.items {
                    self.push(match hint {
                        Some(h) => hinted(message, h),
                        None => anyhow::anyhow!(message),
                    });
                }
                return;
            }
            Err(err) => err,
        };
        let said = format!("{err:#}");
        if !self.0.iter().any(|e| format!("{e:#}") == said) {
            self.0.push(err);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Ok when nothing was found; the one error as it is; else all of them as a [`Many`]
    /// titled "N problems" and `why` (", so nothing was started").
    pub fn finish(mut self, why: &str) -> anyhow::Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            n => Err(anyhow::Error::new(Many {
                title: format!("{n} problems{why}"),
                items: self
                    .0
                    .iter()
                    .map(|e| (format!("{e:#}"), hint_of(e).map(str::to_string)))
                    .collect(),
            })),
        }
    }
}

/// Several problems said together, each on its own lines with its hint.
#[derive(Debug)]
pub struct Many {
    pub title: String,
    pub items: Vec<(String, Option<String>)>,
}

impl fmt::Display for Many {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.title)?;
        for (i, (message, hint)) in self.items.iter().enumerate() {
            write!(f, "\n  {}. {message}", i + 1)?;
            if let Some(hint) = hint {
                write!(f, "\n     hint: {hint}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Many {}
