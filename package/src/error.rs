//! The errors of packaging, fetching, verifying and installing. Each says
//! what failed, on which file, reference or layer, and what to do.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not a package, a malformed reference, a bad key file, …
    #[error("{0}")]
    Format(String),
    /// Content that does not match its digest (or declared size).
    #[error(
        "{what} does not match its digest: expected {expected}, got {actual}. The source served tampered or corrupt content; nothing was installed"
    )]
    Tampered {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} is larger than {limit} bytes, the most accepted")]
    TooLarge { what: String, limit: u64 },
    /// The registry or the URL could not be reached or refused the request.
    #[error("{what}: {reason}")]
    Remote { what: String, reason: String },
    /// The trust policy refused the package (unsigned, untrusted key, …);
    /// the message says how to trust it or override.
    #[error("{0}")]
    Untrusted(String),
    /// The package asks for grants this host refuses; the message is the
    /// grants review.
    #[error("{0}")]
    GrantsRefused(String),
    /// An upgrade asks for more than the installed version; the message
    /// names each new grant.
    #[error("{0}")]
    NewGrants(String),
    #[error("{0}")]
    NotInstalled(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub fn format(m: impl Into<String>) -> Error {
        Error::Format(m.into())
    }

    pub fn remote(what: impl Into<String>, reason: impl std::fmt::Display) -> Error {
        Error::Remote {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
