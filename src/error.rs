//! Errors the binary maps to exit codes: a bad option value is a bad command line (exit 2), like
//! the argument errors clap reports itself; everything else is exit 1.

use std::fmt;

/// An option value the library refuses before any work starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Returns early with a [`UsageError`] built like `format!`.
#[macro_export]
macro_rules! usage_bail {
    ($($arg:tt)*) => {
        return Err($crate::error::UsageError(format!($($arg)*)).into())
    };
}

/// Whether an error chain holds a [`UsageError`].
pub fn is_usage(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<UsageError>().is_some())
}
