//! The errors of packaging, fetching, verifying and installing. Each says
//! what failed, on which file, reference or layer, and what to do.

use std::path::{Path, PathBuf};

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a package operation failed. Every refusal leaves the store as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
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
        /// Which blob or manifest, of which source.
        what: String,
        /// The digest it is addressed by.
        expected: String,
        /// What its bytes hash to (or how their size differs).
        actual: String,
    },
    /// Content over one of the bounds of `oci::limits`.
    #[error("{what} is larger than {limit} bytes, the most accepted")]
    TooLarge {
        /// Which blob, manifest or file.
        what: String,
        /// The bound, in bytes.
        limit: u64,
    },
    /// The registry or the URL could not be reached or refused the request.
    #[error("{what}: {reason}")]
    Remote {
        /// The request.
        what: String,
        /// The registry's or the transport's answer.
        reason: String,
    },
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
    /// An upgrade is signed for another identity than the installed
    /// version (another publisher's package of the same name).
    #[error("{0}")]
    NewSigner(String),
    /// The package is an older version than the one installed, or not the
    /// version the registry tag named: a source serving a genuinely signed
    /// old release for a newer one.
    #[error("{0}")]
    Downgrade(String),
    /// `remove` of a name the store does not hold.
    #[error("{0}")]
    NotInstalled(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// A [`Error::Format`] error with message `m`.
    pub fn format(m: impl Into<String>) -> Error {
        Error::Format(m.into())
    }

    /// A [`Error::Remote`] error: request `what` failed with `reason`.
    pub fn remote(what: impl Into<String>, reason: impl std::fmt::Display) -> Error {
        Error::Remote {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// `s` with every control character (newlines, escape sequences) shown as
/// `?`: text from a remote party, safe to print.
pub(crate) fn printable(s: &str) -> String {
    s.replace(|c: char| c.is_control(), "?")
}
