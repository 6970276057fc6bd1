//! Where a package comes from: a local OCI layout (directory or tar), an
//! `https://` URL to such a tar, or a registry reference; and fetching it,
//! with its signatures, every byte verified.
//!
//! Plain `http://` is refused except for loopback hosts (an explicit,
//! insecure-localhost exception for tests and local mirrors); redirects may
//! not leave HTTPS (or loopback). Nothing here decides trust.

use crate::error::{Error, Result};
use crate::oci::{Digest, Layout, Package, limits};
use crate::registry::{Registry, RegistryRef, is_loopback};
use crate::sign::SignatureManifest;
use crate::trust::Origin;
use bytes::Bytes;
use std::path::{Path, PathBuf};

/// A package source, as the user names it.
#[derive(Debug, Clone)]
pub enum Source {
    /// An OCI layout: a `.tar` or a directory.
    File(PathBuf),
    /// An `https://` URL (or `http://` on loopback) to a layout `.tar`.
    Url(reqwest::Url),
    /// A registry reference.
    Registry(RegistryRef),
}

impl Source {
    /// `./tool.oci.tar`, `/abs/dir`, `https://…/tool.oci.tar`,
    /// `registry/repo:tag`, `registry/repo@sha256:…`. An existing path is a
    /// file; something that looks like a path but does not exist is an
    /// error, not a registry lookup.
    pub fn parse(s: &str) -> Result<Source> {
        if let Some(rest) = s.strip_prefix("oci://") {
            return Ok(Source::Registry(RegistryRef::parse(rest)?));
        }
        if s.starts_with("https://") || s.starts_with("http://") {
            let url = reqwest::Url::parse(s)
                .map_err(|e| Error::format(format!("`{s}` is not a URL: {e}")))?;
            if url.scheme() == "http" && !crate::http::is_loopback_url(&url) {
                return Err(Error::format(format!(
                    "refusing plain http for {s}: use https:// (plain http is allowed only for loopback hosts)"
                )));
            }
            return Ok(Source::Url(url));
        }
        let p = Path::new(s);
        if p.exists() {
            // A path written as a registry reference would be read as one
            // by its user: a directory planted under that name (in a
            // cloned repository, say) must not silently turn a registry
            // install into a file install, which skips the check that the
            // signature names the repository pulled from (found by review).
            let explicit = s.starts_with('.') || s.starts_with('/') || s.starts_with('~');
            if !explicit && s.contains('/') && RegistryRef::parse(s).is_ok() {
                return Err(Error::format(format!(
                    "`{s}` is both a path here and a registry reference: write ./{s} for the file, or oci://{s} for the registry"
                )));
            }
            return Ok(Source::File(p.to_path_buf()));
        }
        let looks_like_path = s.starts_with('.')
            || s.starts_with('/')
            || s.starts_with('~')
            || s.ends_with(".tar")
            || s.ends_with(".tar.gz")
            || !s.contains('/');
        if looks_like_path {
            return Err(Error::format(format!(
                "{s}: no such file or directory (a registry reference looks like REGISTRY/REPOSITORY:TAG)"
            )));
        }
        Ok(Source::Registry(RegistryRef::parse(s)?))
    }

    /// Where a package from this source comes from, for the trust decision.
    pub fn origin(&self) -> Origin {
        match self {
            Source::File(p) => Origin::File(p.display().to_string()),
            Source::Url(u) => Origin::Url(u.to_string()),
            Source::Registry(r) => Origin::Registry(r.repository()),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Url(u) => write!(f, "{u}"),
            Source::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// A fetched package and the signatures found with it.
pub struct Fetched {
    /// The package, every digest verified.
    pub package: Package,
    /// The signatures found with it, not yet judged.
    pub signatures: SignatureManifest,
    /// Where it came from.
    pub origin: Origin,
}

/// Fetch `src`: the package, verified, and its signatures (not yet judged).
pub async fn fetch(src: &Source) -> Result<Fetched> {
    let origin = src.origin();
    match src {
        Source::Registry(r) => {
            let reg = Registry::for_ref(r)?;
            let package = reg.pull_package(r).await?;
            let signatures = reg.pull_signatures(r, &package.digest).await?;
            Ok(Fetched {
                package,
                signatures,
                origin,
            })
        }
        Source::File(p) => {
            let layout = Layout::read(p)?;
            from_layout(&layout, &p.display().to_string(), origin)
        }
        Source::Url(u) => {
            let data = download(u).await?;
            let layout = Layout::from_tar_bytes(&data, u.as_str())?;
            from_layout(&layout, u.as_str(), origin)
        }
    }
}

/// The package and signatures held in a layout.
pub fn from_layout(layout: &Layout, what: &str, origin: Origin) -> Result<Fetched> {
    let (digest, raw) = layout.package_entry(what)?;
    let package = Package::verify(raw, Some(&digest), &|d| layout.blobs.get(d).cloned(), what)?;
    let signatures = signatures_in_layout(layout, &digest, what)?;
    Ok(Fetched {
        package,
        signatures,
        origin,
    })
}

/// The signatures of `digest` stored in `layout` (empty if none).
pub fn signatures_in_layout(
    layout: &Layout,
    digest: &Digest,
    what: &str,
) -> Result<SignatureManifest> {
    match layout.signature_manifest(digest)? {
        None => Ok(SignatureManifest::default()),
        Some(raw) => SignatureManifest::from_oci(
            &raw,
            &mut |desc| {
                let d = Digest::parse(&desc.digest)?;
                layout.blob(
                    &d,
                    desc.size,
                    limits::SIGNATURE_PAYLOAD,
                    "a signature payload",
                )
            },
            what,
        ),
    }
}

/// GET `u`, at most [`limits::LAYOUT`] bytes within [`DOWNLOAD_DEADLINE`],
/// staying on HTTPS (or loopback).
async fn download(u: &reqwest::Url) -> Result<Bytes> {
    let client = crate::http::client(crate::http::is_loopback_url(u))
        .map_err(|e| Error::remote(u.as_str(), e))?;
    let started = std::time::Instant::now();
    let failed = |e: reqwest::Error| {
        Error::remote(
            u.as_str(),
            crate::http::failure(&e, started, DOWNLOAD_DEADLINE),
        )
    };
    let resp = client
        .get(u.clone())
        .timeout(DOWNLOAD_DEADLINE)
        .send()
        .await
        .map_err(failed)?;
    if !resp.status().is_success() {
        return Err(Error::remote(u.as_str(), format!("HTTP {}", resp.status())));
    }
    crate::http::read_bounded(resp, limits::LAYOUT)
        .await
        .map_err(failed)?
        .ok_or_else(|| Error::TooLarge {
            what: u.to_string(),
            limit: limits::LAYOUT,
        })
}

/// The longest a package's download may take, from its start to its last
/// byte (a server trickling bytes resets every per-read timeout).
const DOWNLOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(900);

/// Whether a registry reference's host is loopback (for messages).
pub fn registry_is_loopback(r: &RegistryRef) -> bool {
    is_loopback(r.reference.resolve_registry())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_told_apart_without_guessing_at_typos() {
        assert!(matches!(
            Source::parse("https://example.com/t.tar").unwrap(),
            Source::Url(_)
        ));
        assert!(matches!(
            Source::parse("http://127.0.0.1:8000/t.tar").unwrap(),
            Source::Url(_)
        ));
        let e = Source::parse("http://example.com/t.tar")
            .unwrap_err()
            .to_string();
        assert!(e.contains("refusing plain http"), "{e}");
        assert!(matches!(
            Source::parse("127.0.0.1:5000/tools/echo:1").unwrap(),
            Source::Registry(_)
        ));
        assert!(matches!(
            Source::parse("oci://ghcr.io/acme/echo").unwrap(),
            Source::Registry(_)
        ));
        let e = Source::parse("./missing.tar").unwrap_err().to_string();
        assert!(e.contains("no such file"), "{e}");
        let e = Source::parse("missing.oci.tar").unwrap_err().to_string();
        assert!(e.contains("no such file"), "{e}");
    }

    /// A directory planted under a registry reference's name (here, in the
    /// test's working directory) is not silently taken for it.
    #[test]
    fn a_path_that_reads_as_a_registry_reference_is_refused_as_ambiguous() {
        struct Gone(&'static str);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(self.0);
            }
        }
        let _gone = Gone("localhost:5999");
        let planted = "localhost:5999/tools/echo:1";
        std::fs::create_dir_all(planted).unwrap();
        let e = Source::parse(planted).unwrap_err().to_string();
        assert!(
            e.contains("both a path here and a registry reference"),
            "{e}"
        );
        assert!(matches!(
            Source::parse(&format!("./{planted}")).unwrap(),
            Source::File(_)
        ));
        assert!(matches!(
            Source::parse(&format!("oci://{planted}")).unwrap(),
            Source::Registry(_)
        ));
    }
}
