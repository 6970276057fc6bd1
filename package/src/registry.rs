//! An OCI registry over the distribution API (the `oci-client` crate for
//! pushes; `reqwest` for pulls and their token handshake, which
//! `oci-client` cannot bound): push a package and its signatures exactly
//! as built (the digest covers our bytes, not a re-serialization), pull
//! them back with every size bounded and every digest checked.
//!
//! Plain HTTP is used only for registries on a loopback address
//! (`127.0.0.0/8`, `localhost`, `[::1]`); everything else is HTTPS.
//! Credentials, if any, come from `TOOLHOST_REGISTRY_USERNAME` and
//! `TOOLHOST_REGISTRY_PASSWORD`, and are sent only for the one registry
//! `TOOLHOST_REGISTRY_HOST` names: to it, and to the token service its
//! challenge names (a typo-squatted or hostile registry gets none);
//! anonymous otherwise.
//!
//! This module moves bytes and verifies digests; it decides nothing about
//! trust or grants.

use crate::error::{Error, Result};
use crate::oci::{Digest, MANIFEST_MEDIA_TYPE, Package, limits, parse_manifest};
use crate::sign::SignatureManifest;
use bytes::Bytes;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
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

/// The longest a token handshake, a manifest's request or a small blob's
/// (up to `limits::MANIFEST`) may take, from its start to its last byte (a
/// registry that trickles bytes resets every per-read timeout).
const SMALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
/// The same for a larger blob (a component is up to `limits::COMPONENT`).
const BLOB_DEADLINE: std::time::Duration = std::time::Duration::from_secs(900);
/// How long a pull token is used before it is fetched again: less than
/// the 60 s a token that does not say when it expires lives (the
/// distribution spec's default, and `oci-client`'s rule).
const TOKEN_REUSE: std::time::Duration = std::time::Duration::from_secs(50);

/// The most a token service's answer may be: tokens are a few KiB (a JWT
/// with its claims), never more than this.
const TOKEN_REPLY: u64 = 64 << 10;

/// An error reply's text: its first line, printable, cut to 300
/// characters, read up to 4 KiB.
async fn error_text(response: reqwest::Response) -> reqwest::Result<String> {
    let body = crate::http::read_bounded(response, 4 << 10).await?;
    Ok(body.map_or_else(
        || "(a reply of more than 4 KiB)".to_string(),
        |b| {
            let text = String::from_utf8_lossy(&b);
            let line = text.trim().lines().next().unwrap_or_default();
            crate::error::printable(&line.chars().take(300).collect::<String>())
        },
    ))
}

/// What to tell a user whose request got `status`, given the credentials
/// it was made with.
fn credentials_hint(status: reqwest::StatusCode, auth: &RegistryAuth) -> &'static str {
    match (status.as_u16(), auth) {
        (401 | 403, RegistryAuth::Basic(..)) => {
            "; the registry refused the credentials of TOOLHOST_REGISTRY_USERNAME and TOOLHOST_REGISTRY_PASSWORD"
        }
        (401 | 403, _) => {
            "; if the registry needs credentials, set TOOLHOST_REGISTRY_USERNAME, TOOLHOST_REGISTRY_PASSWORD and TOOLHOST_REGISTRY_HOST"
        }
        _ => "",
    }
}

/// Text a registry chose (a realm), cut for an error message.
fn shown(text: &str) -> String {
    crate::error::printable(&text.chars().take(200).collect::<String>())
}

/// Whether the token request may go to `realm`, for a registry reached
/// over `scheme`: over HTTPS, or plain HTTP on loopback from a loopback
/// registry; with no credentials of its own in the URL (the request
/// carries the registry's, if any).
fn realm_allowed(scheme: &str, realm: &reqwest::Url) -> std::result::Result<(), &'static str> {
    let plain_ok = scheme == "http" && crate::http::is_loopback_url(realm);
    if realm.scheme() != "https" && !(realm.scheme() == "http" && plain_ok) {
        return Err("is not HTTPS");
    }
    if !realm.username().is_empty() || realm.password().is_some() {
        return Err("carries credentials");
    }
    Ok(())
}

/// The token in a token service's answer: `token`, or OAuth2's
/// `access_token` (an empty one is none).
fn token_of(body: &[u8]) -> std::result::Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    // serde's message quotes what it could not read: a line and column
    // say enough, and the answer is the server's to fill.
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        format!(
            "answered with something that is not a token answer (JSON {:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    [answer.token, answer.access_token]
        .into_iter()
        .flatten()
        .find(|t| !t.is_empty())
        .ok_or_else(|| "answered with no token".to_string())
}

/// A `WWW-Authenticate` challenge for a bearer token: where to ask.
struct BearerChallenge {
    realm: String,
    service: Option<String>,
}

/// The first bearer challenge in a `WWW-Authenticate` value, if any
/// (parsed by `http-auth`, the RFC 7235 grammar with its quoting).
fn bearer_challenge(value: &str) -> Option<BearerChallenge> {
    http_auth::ChallengeParser::new(value)
        .filter_map(std::result::Result::ok)
        .filter(|c| c.scheme.eq_ignore_ascii_case("Bearer"))
        .find_map(|c| {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            Some(BearerChallenge {
                realm: param("realm")?,
                service: param("service"),
            })
        })
}

/// A client for one registry.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    /// For pulls, which `oci-client` cannot bound (see [`Registry::get`]).
    http: reqwest::Client,
    /// `http` for a loopback registry, else `https`.
    scheme: &'static str,
    /// Pull tokens by repository, with when they were fetched (see
    /// [`Registry::pull_token`]).
    tokens: tokio::sync::Mutex<HashMap<String, (Option<String>, std::time::Instant)>>,
}

impl Registry {
    /// A client for `r`'s registry: plain HTTP only if it is on loopback;
    /// the credentials of the environment only if they are for it (see the
    /// module doc). Fails if credentials are set without the registry they
    /// are for.
    pub fn for_ref(r: &RegistryRef) -> Result<Registry> {
        let registry = r.reference.resolve_registry().to_string();
        let (protocol, scheme) = if is_loopback(&registry) {
            (ClientProtocol::HttpsExcept(vec![registry.clone()]), "http")
        } else {
            (ClientProtocol::Https, "https")
        };
        let (connect, read) = (
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(60),
        );
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(connect),
            read_timeout: Some(read),
            ..Default::default()
        };
        let http = crate::http::client(scheme == "http")
            .map_err(|e| Error::remote(format!("a client for {registry}"), e))?;
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
            http,
            scheme,
            tokens: Default::default(),
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

    /// The pull token of `r`'s repository (or none: basic or anonymous),
    /// from the registry's token handshake ([`Registry::handshake`])
    /// within [`SMALL_DEADLINE`], fetched again once it is [`TOKEN_REUSE`]
    /// old (tokens expire: Docker Hub's after 300 s).
    async fn pull_token(&self, r: &Reference) -> Result<Option<String>> {
        let repository = format!("{}/{}", r.resolve_registry(), r.repository());
        if let Some((token, at)) = self.tokens.lock().await.get(&repository)
            && at.elapsed() < TOKEN_REUSE
        {
            return Ok(token.clone());
        }
        let authenticating = || format!("authenticating to {}", r.resolve_registry());
        let token = tokio::time::timeout(SMALL_DEADLINE, self.handshake(r))
            .await
            .map_err(|_| {
                Error::remote(
                    authenticating(),
                    format!(
                        "no token within {}",
                        humantime::format_duration(SMALL_DEADLINE)
                    ),
                )
            })?
            .map_err(|e| Error::remote(authenticating(), e))?;
        self.tokens
            .lock()
            .await
            .insert(repository, (token.clone(), std::time::Instant::now()));
        Ok(token)
    }

    /// The distribution spec's token handshake for pulling `r`, as Docker
    /// Hub, ghcr.io and the reference registry implement it: `GET /v2/`,
    /// and if that challenges for a bearer token, ask the realm it names
    /// for one scoped to pulling `r`'s repository (with the credentials, if
    /// any; they are only ever this registry's, see the module doc). `None`
    /// if the registry wants no token (anonymous, or basic credentials).
    ///
    /// toolhost's own, not `oci-client`'s: that one reads the token
    /// service's reply whole, and follows redirects anywhere. Here the
    /// realm must be HTTPS (plain HTTP only on loopback, from a loopback
    /// registry), and its reply is read up to [`TOKEN_REPLY`].
    async fn handshake(&self, r: &Reference) -> std::result::Result<Option<String>, String> {
        let started = std::time::Instant::now();
        let failed = |e: reqwest::Error| crate::http::failure(&e, started, SMALL_DEADLINE);
        let url = format!("{}://{}/v2/", self.scheme, r.resolve_registry());
        let response = self.http.get(&url).send().await.map_err(failed)?;
        // Each challenge header in turn: a registry may send `Basic` and
        // `Bearer` apart.
        let Some(challenge) = response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .find_map(bearer_challenge)
        else {
            return Ok(None);
        };
        drop(response);
        let realm = reqwest::Url::parse(&challenge.realm).map_err(|e| {
            format!(
                "its token realm `{}` is not a URL ({e})",
                shown(&challenge.realm)
            )
        })?;
        if let Err(why) = realm_allowed(self.scheme, &realm) {
            return Err(format!("its token realm `{}` {why}", shown(realm.as_str())));
        }
        let at = || format!("the token service at {}", shown(realm.as_str()));
        let scope = format!("repository:{}:pull", r.repository());
        let mut query = vec![("scope", scope.as_str())];
        if let Some(service) = &challenge.service {
            query.push(("service", service));
        }
        let mut request = self.http.get(realm.clone()).query(&query);
        if let RegistryAuth::Basic(user, password) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            let text = error_text(response).await.map_err(failed)?;
            let hint = credentials_hint(status, &self.auth);
            return Err(format!("{} answered {status}: {text}{hint}", at()));
        }
        let body = crate::http::read_bounded(response, TOKEN_REPLY)
            .await
            .map_err(failed)?
            .ok_or_else(|| format!("{} answered with more than {} KiB", at(), TOKEN_REPLY >> 10))?;
        token_of(&body)
            .map(Some)
            .map_err(|why| format!("{} {why}", at()))
    }

    /// `GET /v2/<repository>/<path>` of `r`'s registry, authenticated with
    /// its pull token or credentials, read up to `limit` bytes (else `over`'s
    /// error) and within `deadline` in all; `None` on 404. `what` names
    /// the object.
    ///
    /// Manifests and blobs are fetched here rather than by `oci-client`,
    /// which reads a manifest reply, and a failed blob request's reply,
    /// whole before anything could check their size (a hostile registry
    /// could answer with gigabytes). An error reply is read up to 4 KiB.
    async fn get(
        &self,
        r: &Reference,
        path: &str,
        accept: Option<&str>,
        (limit, over): (u64, &dyn Fn() -> Error),
        deadline: std::time::Duration,
        what: &str,
    ) -> Result<Option<Bytes>> {
        let token = self.pull_token(r).await?;
        let url = format!(
            "{}://{}/v2/{}/{path}",
            self.scheme,
            r.resolve_registry(),
            r.repository()
        );
        let mut request = self.http.get(&url).timeout(deadline);
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        request = match (token, &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        };
        let started = std::time::Instant::now();
        let failed = |e: reqwest::Error| {
            Error::remote(
                format!("{r}: fetching {what}"),
                crate::http::failure(&e, started, deadline),
            )
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let text = error_text(response).await.map_err(failed)?;
            let hint = credentials_hint(status, &self.auth);
            return Err(Error::remote(
                format!("{r}: fetching {what}"),
                format!("{status}: {text}{hint}"),
            ));
        }
        crate::http::read_bounded(response, limit)
            .await
            .map_err(failed)?
            .map(Some)
            .ok_or_else(over)
    }

    /// The raw manifest at `r`, bounded and checked against the digest the
    /// reference names (if any). `None` if the registry does not have it.
    async fn manifest(&self, r: &Reference) -> Result<Option<(Bytes, Digest)>> {
        let at = r.digest().or(r.tag()).unwrap_or("latest");
        let over = || Error::TooLarge {
            what: format!("the manifest of {r}"),
            limit: limits::MANIFEST,
        };
        let Some(raw) = self
            .get(
                r,
                &format!("manifests/{at}"),
                Some(MANIFEST_MEDIA_TYPE),
                (limits::MANIFEST, &over),
                SMALL_DEADLINE,
                "the manifest",
            )
            .await?
        else {
            return Ok(None);
        };
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

    /// A blob of `r`'s repository, at most `desc.size` bytes (itself at
    /// most `limits::COMPONENT`; callers hold it to smaller limits),
    /// checked against its digest. A
    /// descriptor that names external URLs is refused before any request:
    /// a registry could otherwise send us to any address (`oci-client`
    /// tries a layer's `urls` when the registry says it has no such blob).
    async fn blob(&self, r: &Reference, desc: &OciDescriptor, what: &str) -> Result<Bytes> {
        let d = Digest::parse(&desc.digest)?;
        crate::oci::check_desc(
            desc,
            limits::COMPONENT,
            &format!("{r}: {what} {}", d.short()),
        )
        .map_err(Error::format)?;
        let declared = u64::try_from(desc.size).unwrap_or(u64::MAX);
        let over = || Error::Tampered {
            what: format!("{what} {} of {r}", d.short()),
            expected: format!("{d} ({declared} bytes)"),
            actual: "more bytes than declared".into(),
        };
        // Small blobs (configs, signature payloads) get a small deadline.
        let deadline = if declared <= limits::MANIFEST {
            SMALL_DEADLINE
        } else {
            BLOB_DEADLINE
        };
        let data = self
            .get(
                r,
                &format!("blobs/{d}"),
                None,
                (declared, &over),
                deadline,
                &format!("{what} {}", d.short()),
            )
            .await?
            .ok_or_else(|| {
                Error::remote(
                    format!("{r}: fetching {what} {}", d.short()),
                    "no such blob",
                )
            })?;
        crate::oci::verify_blob(desc, &data, &format!("{what} {} of {r}", d.short()))?;
        Ok(data)
    }

    /// Pull the package at `r`, every blob verified. `what` names it.
    pub async fn pull_package(&self, r: &RegistryRef) -> Result<Package> {
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

    /// What [`Reply::Endless`] sends at most.
    const ENDLESS: u64 = 64 * limits::MANIFEST;

    /// What a [`fake_registry`] answers one request with.
    enum Reply {
        /// A whole reply: status line, headers and body.
        Whole(String),
        /// A status line and headers, then a chunked body of [`ENDLESS`]
        /// bytes, counted into the counter as they go out; the connection
        /// ends after it.
        Endless(String, std::sync::Arc<std::sync::atomic::AtomicU64>),
    }

    /// A server on 127.0.0.1 that answers each request (its head, lower
    /// case) as `answer` says, given the server's own address; that address.
    async fn fake_registry(answer: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (answer, own) = (std::sync::Arc::new(answer), addr.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (answer, own) = (answer.clone(), own.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    loop {
                        while !head.ends_with(b"\r\n\r\n") {
                            if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        let request = String::from_utf8_lossy(&head).to_ascii_lowercase();
                        head.clear();
                        let (reply, endless) = match answer(&request, &own) {
                            Reply::Whole(reply) => (reply, None),
                            Reply::Endless(head, sent) => (head, Some(sent)),
                        };
                        if tcp.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                        let Some(sent) = endless else { continue };
                        // "Endless": 64 MiB, so that a client that reads it
                        // all still ends (and fails the test, not the host).
                        let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
                        for _ in 0..ENDLESS / 0x10000 {
                            if tcp.write_all(chunk.as_bytes()).await.is_err() {
                                return;
                            }
                            sent.fetch_add(0x10000, std::sync::atomic::Ordering::Relaxed);
                        }
                        let _ = tcp.write_all(b"0\r\n\r\n").await;
                        return;
                    }
                });
            }
        });
        addr
    }

    /// A registry that answers `/v2/` (anonymous) and every manifest
    /// request with `status` and an endless body; the bytes it managed to
    /// send.
    async fn endless_registry(
        status: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = sent.clone();
        let addr = fake_registry(move |request, _| {
            if !request.contains("/manifests/") {
                return Reply::Whole("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into());
            }
            Reply::Endless(
                format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {MANIFEST_MEDIA_TYPE}\r\ntransfer-encoding: chunked\r\n\r\n"
                ),
                counted.clone(),
            )
        })
        .await;
        (addr, sent)
    }

    /// The error of pulling `acme/echo:1.0` from the registry at `addr`,
    /// which must refuse it within a minute.
    async fn pull_refused(addr: &str) -> Error {
        let r = RegistryRef::parse(&format!("{addr}/acme/echo:1.0")).unwrap();
        let registry = Registry::for_ref(&r).unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            registry.pull_package(&r),
        )
        .await
        .expect("no answer within a minute")
        .expect_err("refused")
    }

    /// A hostile registry's endless manifest is read to the limit and no
    /// further (`oci-client` would have read all of it first), and so is
    /// an endless error reply.
    #[tokio::test]
    async fn an_endless_manifest_is_refused_at_its_limit() {
        let (addr, sent) = endless_registry("500 Internal Server Error").await;
        let e = pull_refused(&addr).await;
        assert!(
            matches!(&e, Error::Remote { reason, .. } if reason.starts_with("500")),
            "{e}"
        );
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(sent < ENDLESS, "{sent} bytes were read");

        let (addr, sent) = endless_registry("200 OK").await;
        let e = pull_refused(&addr).await;
        assert!(
            matches!(&e, Error::TooLarge { limit, .. } if *limit == limits::MANIFEST),
            "{e}"
        );
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        // What the socket buffers took beyond the limit, not the endless rest.
        assert!(sent < ENDLESS, "{sent} bytes were read");
    }

    /// A registry that wants a bearer token (its realm is itself) and
    /// answers a blob request that carries it with twice the bytes the blob
    /// declares; the token requests it got.
    async fn token_registry() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let tokens = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = tokens.clone();
        let addr = fake_registry(move |request, own| {
            let (status, extra, body) = if request.starts_with("get /token") {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ("200 OK", String::new(), r#"{"token":"t0k3n"}"#)
            } else if request.contains("/blobs/") && request.contains("authorization: bearer t0k3n")
            {
                ("200 OK", String::new(), "payloadpayload")
            } else {
                let challenge = format!(
                    "www-authenticate: Bearer realm=\"http://{own}/token\",service=\"fake\"\r\n"
                );
                ("401 Unauthorized", challenge, "")
            };
            Reply::Whole(format!(
                "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\n\r\n{body}",
                body.len()
            ))
        })
        .await;
        (addr, tokens)
    }

    /// Blob requests carry the registry's token, fetched once for the
    /// repository, and a blob longer than it declares is refused.
    #[tokio::test]
    async fn blobs_carry_the_token_and_are_cut_at_their_declared_size() {
        let (addr, tokens) = token_registry().await;
        let r = RegistryRef::parse(&format!("{addr}/acme/echo:1.0")).unwrap();
        let registry = Registry::for_ref(&r).unwrap();
        let desc = OciDescriptor {
            media_type: crate::sign::SIMPLESIGNING_MEDIA_TYPE.into(),
            digest: Digest::of(b"payload").to_string(),
            size: 7,
            ..Default::default()
        };
        for _ in 0..2 {
            let e = registry
                .blob(&r.reference, &desc, "signature payload")
                .await
                .expect_err("refused");
            assert!(
                matches!(&e, Error::Tampered { actual, .. } if actual == "more bytes than declared"),
                "{e}"
            );
        }
        assert_eq!(tokens.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// A registry whose `/v2/` challenges for a bearer token from `realm`
    /// (given the server's own address), and whose token service answers
    /// as `token` says; the scope the token requests asked for.
    async fn challenging_registry(
        realm: fn(&str) -> String,
        token: fn(std::sync::Arc<std::sync::atomic::AtomicU64>) -> Reply,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = sent.clone();
        let addr = fake_registry(move |request, own| {
            if request.starts_with("get /token") {
                // Any other scope gets an answer the tests' checks name.
                if !request.contains("scope=repository%3aacme%2fecho%3apull") {
                    return Reply::Whole(
                        "HTTP/1.1 418 Wrong Scope\r\ncontent-length: 0\r\n\r\n".into(),
                    );
                }
                return token(counted.clone());
            }
            Reply::Whole(format!(
                "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"{}\",service=\"fake\"\r\ncontent-length: 0\r\n\r\n",
                realm(own)
            ))
        })
        .await;
        (addr, sent)
    }

    /// A token service's endless answer is read to its limit and no
    /// further (`oci-client` read it whole), and so is an endless error.
    #[tokio::test]
    async fn an_endless_token_answer_is_refused_at_its_limit() {
        for status in ["200 OK", "401 Unauthorized"] {
            let (addr, sent) = challenging_registry(
                |own| format!("http://{own}/token"),
                match status {
                    "200 OK" => |sent| {
                        Reply::Endless(
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".into(),
                            sent,
                        )
                    },
                    _ => |sent| {
                        Reply::Endless(
                            "HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n"
                                .into(),
                            sent,
                        )
                    },
                },
            )
            .await;
            let text = pull_refused(&addr).await.to_string();
            assert!(text.contains("authenticating to"), "{text}");
            let want = match status {
                "200 OK" => "answered with more than 64 KiB",
                _ => "answered 401 Unauthorized: (a reply of more than 4 KiB)",
            };
            assert!(text.contains(want), "{text}");
            let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
            assert!(sent < ENDLESS, "{sent} bytes were read");
        }
    }

    /// A registry cannot send the installer's token request (which would
    /// carry its credentials) to a realm over plain HTTP, to one with
    /// credentials of its own, nor to one that is not a URL: no request is
    /// made.
    #[tokio::test]
    async fn a_token_realm_must_be_https() {
        let unused = |asked: std::sync::Arc<std::sync::atomic::AtomicU64>| {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Reply::Whole("HTTP/1.1 500 Unused\r\ncontent-length: 0\r\n\r\n".into())
        };
        for (realm, want) in [
            (
                (|_: &str| "http://registry.example/token".to_string()) as fn(&str) -> String,
                "its token realm `http://registry.example/token` is not HTTPS",
            ),
            (
                |_: &str| "/token".to_string(),
                "its token realm `/token` is not a URL",
            ),
            (
                |own: &str| format!("http://user:pw@{own}/token"),
                "carries credentials",
            ),
        ] {
            let (addr, asked) = challenging_registry(realm, unused).await;
            let e = pull_refused(&addr).await;
            assert!(e.to_string().contains(want), "{e}");
            assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 0);
        }
    }

    /// Where a token request may go, for a registry reached over HTTPS or
    /// (on loopback) plain HTTP.
    #[test]
    fn token_realms_are_https_or_loopback_from_loopback() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        for (scheme, realm, allowed) in [
            ("https", "https://auth.example/token", true),
            ("https", "https://10.0.0.1/token", true),
            ("http", "https://auth.example/token", true),
            ("http", "http://127.0.0.1:5000/token", true),
            ("http", "http://localhost/token", true),
            ("https", "http://127.0.0.1:5000/token", false),
            ("https", "http://auth.example/token", false),
            ("http", "http://auth.example/token", false),
            ("https", "ftp://auth.example/token", false),
            ("http", "file:///etc/passwd", false),
            ("https", "https://u:p@auth.example/token", false),
            ("https", "https://u@auth.example/token", false),
        ] {
            assert_eq!(
                realm_allowed(scheme, &url(realm)).is_ok(),
                allowed,
                "{realm} from {scheme}"
            );
        }
    }

    /// The bearer challenge among a `WWW-Authenticate` value's, as RFC 7235
    /// spells them.
    #[test]
    fn the_bearer_challenge_is_found_among_others() {
        let realm = |v: &str| bearer_challenge(v).map(|c| (c.realm, c.service));
        let some = |r: &str, s: Option<&str>| Some((r.to_string(), s.map(str::to_string)));
        assert_eq!(
            realm(r#"Bearer realm="https://a/token",service="reg",scope="x""#),
            some("https://a/token", Some("reg"))
        );
        assert_eq!(
            realm(r#"Basic realm="b", Bearer realm="https://a/t""#),
            some("https://a/t", None)
        );
        assert_eq!(
            realm(r#"bearer REALM="https://a/t""#),
            some("https://a/t", None)
        );
        assert_eq!(
            realm(r#"Bearer realm="https://a/t?q=\"1\"""#),
            some(r#"https://a/t?q="1""#, None)
        );
        assert_eq!(
            realm(r#"Bearer service="x", Bearer realm="https://a/t""#),
            some("https://a/t", None)
        );
        assert_eq!(realm(r#"Basic realm="registry""#), None);
        assert_eq!(realm("Bearer"), None);
    }

    /// A token answer's token: `token` first, then `access_token`, an empty
    /// one counting as none; anything else is an error that quotes none of
    /// it.
    #[test]
    fn a_token_answer_names_its_token() {
        assert_eq!(
            token_of(br#"{"token":"t","access_token":"a"}"#).unwrap(),
            "t"
        );
        assert_eq!(
            token_of(br#"{"token":null,"access_token":"a"}"#).unwrap(),
            "a"
        );
        assert_eq!(
            token_of(br#"{"token":"","access_token":"a"}"#).unwrap(),
            "a"
        );
        assert_eq!(
            token_of(br#"{"expires_in":60}"#).unwrap_err(),
            "answered with no token"
        );
        let secret = "x".repeat(10_000);
        let e = token_of(format!("\"{secret}\"").as_bytes()).unwrap_err();
        assert!(
            e.contains("not a token answer") && !e.contains(&secret),
            "{e}"
        );
        let e = token_of(b"<html>captive portal</html>").unwrap_err();
        assert!(e.contains("not a token answer"), "{e}");
    }

    /// A blob that names URLs outside the registry is never fetched, from
    /// them or from the registry.
    #[tokio::test]
    async fn a_blob_naming_external_urls_is_refused_before_any_request() {
        // Nothing listens on port 1: a request would fail differently.
        let r = RegistryRef::parse("127.0.0.1:1/acme/echo:1.0").unwrap();
        let desc = OciDescriptor {
            media_type: crate::sign::SIMPLESIGNING_MEDIA_TYPE.into(),
            digest: Digest::of(b"payload").to_string(),
            size: 7,
            urls: Some(vec!["http://169.254.169.254/latest/meta-data".into()]),
            ..Default::default()
        };
        let e = Registry::for_ref(&r)
            .unwrap()
            .blob(&r.reference, &desc, "signature payload")
            .await
            .expect_err("refused");
        assert!(e.to_string().contains("names external URLs"), "{e}");
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
