//! An OCI registry over the distribution API (the `oci-client` crate):
//! push a package and its signatures exactly as built (the digest covers our
//! bytes, not a re-serialization), pull them back with every size bounded
//! and every digest checked.
//!
//! Plain HTTP is used only for registries on a loopback address
//! (`127.0.0.0/8`, `localhost`, `[::1]`); everything else is HTTPS.
//! Credentials, if any, come from `TOOLHOST_REGISTRY_USERNAME` and
//! `TOOLHOST_REGISTRY_PASSWORD`, and are sent only to the one registry
//! `TOOLHOST_REGISTRY_HOST` names (a typo-squatted or hostile registry
//! gets none); anonymous otherwise.
//!
//! This module moves bytes and verifies digests; it decides nothing about
//! trust or grants.

use crate::error::{Error, Result};
use crate::oci::{Digest, MANIFEST_MEDIA_TYPE, Package, limits, parse_manifest};
use crate::sign::SignatureManifest;
use bytes::Bytes;
use futures::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::collections::HashMap;

/// A registry reference (`registry/repository[:tag|@sha256:…]`), parsed.
#[derive(Debug, Clone)]
pub struct RegistryRef {
    /// The parsed reference.
    pub reference: Reference,
}

impl RegistryRef {
    /// Parse `REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST]`; a digest must be sha256.
    pub fn parse(s: &str) -> Result<RegistryRef> {
        let reference: Reference = s.parse().map_err(|e| {
            Error::format(format!(
                "`{s}` is not a registry reference ({e}); expected REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST], e.g. ghcr.io/acme/echo:1.0"
            ))
        })?;
        if let Some(d) = reference.digest() {
            Digest::parse(d)?;
        }
        Ok(RegistryRef { reference })
    }

    /// `registry/repository`: the package's identity.
    pub fn repository(&self) -> String {
        format!(
            "{}/{}",
            self.reference.resolve_registry(),
            self.reference.repository()
        )
    }

    /// The digest the reference names, if any.
    pub fn digest(&self) -> Option<Digest> {
        self.reference.digest().and_then(|d| Digest::parse(d).ok())
    }

    /// This repository at `tag`.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            tag.to_string(),
        )
    }

    /// This repository at `digest`.
    pub fn with_digest(&self, digest: &Digest) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            digest.to_string(),
        )
    }
}

impl std::fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reference.whole())
    }
}

/// Whether `host[:port]` is a loopback address.
pub fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What to authenticate to `registry` with: the user and password only if
/// `host` names that registry.
fn credentials_for(
    registry: &str,
    host: Option<&str>,
    user: Option<String>,
    password: Option<String>,
) -> Result<RegistryAuth> {
    let (Some(user), Some(password)) = (user, password) else {
        return Ok(RegistryAuth::Anonymous);
    };
    match host {
        None => Err(Error::format(
            "TOOLHOST_REGISTRY_USERNAME and TOOLHOST_REGISTRY_PASSWORD are set without \
             TOOLHOST_REGISTRY_HOST: set it to the registry they are for (e.g. ghcr.io), \
             so that no other registry is sent them",
        )),
        // Named as references name it: Docker Hub is `index.docker.io`.
        Some(h)
            if h.trim().eq_ignore_ascii_case(registry)
                || (h.trim().eq_ignore_ascii_case("docker.io")
                    && registry == "index.docker.io") =>
        {
            Ok(RegistryAuth::Basic(user, password))
        }
        Some(_) => Ok(RegistryAuth::Anonymous),
    }
}

/// A client for one registry.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

impl Registry {
    /// A client for `r`'s registry: plain HTTP only if it is on loopback;
    /// the credentials of the environment only if they are for it (see the
    /// module doc). Fails if credentials are set without the registry they
    /// are for.
    pub fn for_ref(r: &RegistryRef) -> Result<Registry> {
        let registry = r.reference.resolve_registry().to_string();
        let protocol = if is_loopback(&registry) {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        };
        let var = |n: &str| std::env::var(n).ok();
        let auth = credentials_for(
            &registry,
            var("TOOLHOST_REGISTRY_HOST").as_deref(),
            var("TOOLHOST_REGISTRY_USERNAME"),
            var("TOOLHOST_REGISTRY_PASSWORD"),
        )?;
        Ok(Registry {
            client: Client::new(config),
            auth,
        })
    }

    fn err(what: impl std::fmt::Display, e: OciDistributionError) -> Error {
        Error::remote(what.to_string(), e)
    }

    async fn authed(&self, r: &Reference, op: oci_client::RegistryOperation) -> Result<()> {
        self.client
            .auth(r, &self.auth, op)
            .await
            .map(|_| ())
            .map_err(|e| Self::err(format!("authenticating to {}", r.resolve_registry()), e))
    }

    /// Upload blob `data` unless the registry already has it.
    async fn push_blob(&self, r: &Reference, d: &Digest, data: &Bytes) -> Result<()> {
        let exists = self
            .client
            .blob_exists(r, d.as_str())
            .await
            .map_err(|e| Self::err(format!("{r}: checking blob {}", d.short()), e))?;
        if !exists {
            self.client
                .push_blob(r, data.clone(), d.as_str())
                .await
                .map_err(|e| Self::err(format!("{r}: uploading blob {}", d.short()), e))?;
        }
        Ok(())
    }

    async fn push_manifest(&self, r: &Reference, raw: &Bytes) -> Result<()> {
        self.client
            .push_manifest_raw(
                r,
                raw.clone(),
                MANIFEST_MEDIA_TYPE.parse().expect("valid header"),
            )
            .await
            .map_err(|e| Self::err(format!("{r}: uploading the manifest"), e))?;
        Ok(())
    }

    /// Push `pkg` to `r` (its tag, or its digest). Returns the digest.
    pub async fn push_package(&self, r: &RegistryRef, pkg: &Package) -> Result<Digest> {
        if let Some(d) = r.digest()
            && d != pkg.digest
        {
            return Err(Error::format(format!(
                "{r} names digest {d}, but the package is {}",
                pkg.digest
            )));
        }
        self.authed(&r.reference, oci_client::RegistryOperation::Push)
            .await?;
        for (d, data) in &pkg.blobs {
            self.push_blob(&r.reference, d, data).await?;
        }
        let target = match r.reference.digest() {
            Some(_) => r.with_digest(&pkg.digest),
            None => r.reference.clone(),
        };
        self.push_manifest(&target, &pkg.manifest_raw).await?;
        Ok(pkg.digest.clone())
    }

    /// Push the signature manifest of `digest` (tag `sha256-<hex>.sig`).
    pub async fn push_signatures(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        sigs: &SignatureManifest,
    ) -> Result<()> {
        self.authed(&r.reference, oci_client::RegistryOperation::Push)
            .await?;
        let (raw, blobs) = sigs.to_oci();
        let target = r.with_tag(&digest.signature_tag());
        for (d, data) in &blobs {
            self.push_blob(&target, d, data).await?;
        }
        self.push_manifest(&target, &raw).await
    }

    /// The raw manifest at `r`, bounded and checked against the digest the
    /// reference names (if any). `None` if the registry does not have it.
    async fn manifest(&self, r: &Reference) -> Result<Option<(Bytes, Digest)>> {
        match self
            .client
            .pull_manifest_raw(r, &self.auth, &[MANIFEST_MEDIA_TYPE])
            .await
        {
            Ok((raw, _)) => {
                if raw.len() as u64 > limits::MANIFEST {
                    return Err(Error::TooLarge {
                        what: format!("the manifest of {r}"),
                        limit: limits::MANIFEST,
                    });
                }
                let actual = Digest::of(&raw);
                if let Some(want) = r.digest()
                    && want != actual.as_str()
                {
                    return Err(Error::Tampered {
                        what: format!("the manifest of {r}"),
                        expected: want.to_string(),
                        actual: actual.to_string(),
                    });
                }
                Ok(Some((raw, actual)))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(OciDistributionError::DigestError(e)) => Err(Error::Tampered {
                what: format!("the manifest of {r}"),
                expected: r
                    .digest()
                    .unwrap_or("the registry's Docker-Content-Digest")
                    .to_string(),
                actual: e.to_string(),
            }),
            Err(e) => Err(Self::err(format!("{r}: fetching the manifest"), e)),
        }
    }

    /// A blob of `r`'s repository, at most `desc.size` bytes (itself at
    /// most `limit`), checked against its digest.
    async fn blob(&self, r: &Reference, desc: &OciDescriptor, what: &str) -> Result<Bytes> {
        let d = Digest::parse(&desc.digest)?;
        let declared = u64::try_from(desc.size).unwrap_or(u64::MAX);
        let mut stream = self
            .client
            .pull_blob_stream(r, desc)
            .await
            .map_err(|e| Self::err(format!("{r}: fetching {what} {}", d.short()), e))?;
        let mut buf = Vec::with_capacity(declared.min(limits::COMPONENT) as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // oci-client checks the digest as the stream ends: report
                // it as ours does, naming the layer and both digests.
                Err(e)
                    if e.get_ref()
                        .is_some_and(|i| i.is::<oci_client::errors::DigestError>()) =>
                {
                    return Err(Error::Tampered {
                        what: format!("{what} {d} of {r}"),
                        expected: d.to_string(),
                        actual: Digest::of(&buf).to_string(),
                    });
                }
                Err(e) => return Err(Error::remote(format!("{r}: reading {what}"), e)),
            };
            if (buf.len() + chunk.len()) as u64 > declared {
                return Err(Error::Tampered {
                    what: format!("{what} {} of {r}", d.short()),
                    expected: format!("{d} ({declared} bytes)"),
                    actual: "more bytes than declared".into(),
                });
            }
            buf.extend_from_slice(&chunk);
        }
        let data = Bytes::from(buf);
        crate::oci::verify_blob(desc, &data, &format!("{what} {} of {r}", d.short()))?;
        Ok(data)
    }

    /// Pull the package at `r`, every blob verified. `what` names it.
    pub async fn pull_package(&self, r: &RegistryRef) -> Result<Package> {
        self.authed(&r.reference, oci_client::RegistryOperation::Pull)
            .await?;
        let what = r.to_string();
        let (raw, digest) = self
            .manifest(&r.reference)
            .await?
            .ok_or_else(|| Error::remote(&what, "no such package (manifest unknown)"))?;
        let m = parse_manifest(&raw, Some(&digest), &what)?;
        let at = r.with_digest(&digest);
        let mut blobs: HashMap<Digest, Bytes> = HashMap::new();
        for (desc, kind) in std::iter::once((&m.config, "config".to_string())).chain(
            m.layers
                .iter()
                .map(|l| (l, format!("layer {}", l.media_type))),
        ) {
            let data = self.blob(&at, desc, &kind).await?;
            blobs.insert(Digest::parse(&desc.digest)?, data);
        }
        Package::verify(raw, Some(&digest), &|d| blobs.get(d).cloned(), &what)
    }

    /// The signatures of `digest` in `r`'s repository (empty if none).
    pub async fn pull_signatures(
        &self,
        r: &RegistryRef,
        digest: &Digest,
    ) -> Result<SignatureManifest> {
        let sig_ref = r.with_tag(&digest.signature_tag());
        let Some((raw, sig_digest)) = self.manifest(&sig_ref).await? else {
            return Ok(SignatureManifest::default());
        };
        let at = r.with_digest(&sig_digest);
        // Fetch the payloads first (async), then parse with them at hand.
        let m: oci_client::manifest::OciImageManifest = serde_json::from_slice(&raw)
            .map_err(|e| Error::format(format!("{sig_ref}: not an OCI manifest: {e}")))?;
        let mut payloads: HashMap<String, Bytes> = HashMap::new();
        for l in m
            .layers
            .iter()
            .filter(|l| l.media_type == crate::sign::SIMPLESIGNING_MEDIA_TYPE)
            .take(limits::SIGNATURES)
        {
            if l.size < 0 || l.size as u64 > limits::SIGNATURE_PAYLOAD {
                return Err(Error::TooLarge {
                    what: format!("a signature payload of {sig_ref}"),
                    limit: limits::SIGNATURE_PAYLOAD,
                });
            }
            let data = self.blob(&at, l, "signature payload").await?;
            payloads.insert(l.digest.clone(), data);
        }
        SignatureManifest::from_oci(
            &raw,
            &mut |desc| {
                payloads.get(&desc.digest).cloned().ok_or_else(|| {
                    Error::format(format!("{sig_ref}: payload {} missing", desc.digest))
                })
            },
            &sig_ref.to_string(),
        )
    }
}

fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_to_the_registry_they_are_for() {
        let c = |host: Option<&str>, registry: &str| {
            credentials_for(registry, host, Some("u".into()), Some("p".into()))
        };
        assert!(matches!(
            c(Some("ghcr.io"), "ghcr.io"),
            Ok(RegistryAuth::Basic(u, p)) if u == "u" && p == "p"
        ));
        assert!(matches!(
            c(Some("GHCR.io"), "ghcr.io"),
            Ok(RegistryAuth::Basic(..))
        ));
        assert!(matches!(
            c(Some("docker.io"), "index.docker.io"),
            Ok(RegistryAuth::Basic(..))
        ));
        assert!(matches!(
            c(Some("ghcr.io"), "evil.example"),
            Ok(RegistryAuth::Anonymous)
        ));
        let e = c(None, "ghcr.io").expect_err("refused").to_string();
        assert!(e.contains("TOOLHOST_REGISTRY_HOST"), "{e}");
        assert!(matches!(
            credentials_for("ghcr.io", None, None, None),
            Ok(RegistryAuth::Anonymous)
        ));
    }

    #[test]
    fn only_loopback_registries_get_plain_http() {
        for h in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "ghcr.io",
            "10.0.0.1:5000",
            "127.0.0.1.evil.com",
            "localhost.evil.com:5000",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn references_name_their_repository_and_digest() {
        let d = Digest::of(b"x");
        let r = RegistryRef::parse(&format!("127.0.0.1:5000/tools/echo@{d}")).unwrap();
        assert_eq!(r.repository(), "127.0.0.1:5000/tools/echo");
        assert_eq!(r.digest(), Some(d.clone()));
        assert_eq!(
            r.with_tag(&d.signature_tag()).whole(),
            format!("127.0.0.1:5000/tools/echo:sha256-{}.sig", d.hex())
        );
        assert!(RegistryRef::parse("127.0.0.1:5000/tools/echo@sha256:abc").is_err());
    }
}
