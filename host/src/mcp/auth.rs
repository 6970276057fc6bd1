//! Tenants on HTTP: who is calling, and whether they may call now.
//!
//! - A bearer credential selects the tenant: a static API token (its
//!   SHA-256 compared in constant time with every tenant's digests) or an
//!   OAuth 2.1 JWT (issuer, audience, expiry and signature against the keys
//!   of a JWKS file; the tenant from a configured claim), as an MCP
//!   resource server. A missing or bad credential gets 401 with
//!   `WWW-Authenticate: Bearer resource_metadata="…"`, pointing at the
//!   protected-resource metadata (RFC 9728) served here.
//!
//! Owns the credential checks only: the tenants' tool sets and caps are the
//! catalog's (each tenant is a scope), their quotas the core's (`quota`;
//! the HTTP door admits a `tools/call` early to answer 429).

use crate::tenant::{AuthConfig, Tenant};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Why tenant auth cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The JWKS file cannot be read or holds no usable key.
    #[error("JWKS file {path}: {reason}")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No tenants are configured.
    #[error("no `[[tenant]]` in the host config")]
    NoTenants,
    /// `[auth.jwt] tenants` names a tenant that is not configured.
    #[error("`[auth.jwt] tenants` names `{0}`, which is no `[[tenant]]`")]
    UnknownJwtTenant(String),
}

/// The tenants an HTTP server serves, with their credentials, built from
/// the host config (again on each reload: see
/// [`TenantsHandle`](super::TenantsHandle)).
pub struct Tenancy {
    pub(crate) tenants: Vec<TenantGate>,
    jwt: Option<JwtVerifier>,
    pub(crate) resource: Option<String>,
    pub(crate) authorization_servers: Vec<String>,
}

/// One tenant and its credentials.
pub(crate) struct TenantGate {
    pub(crate) tenant: Tenant,
}

impl Tenancy {
    /// The tenants of `tenants`, authenticated as `auth` says (reads the
    /// JWKS file, if any).
    pub fn new(tenants: &[Tenant], auth: &AuthConfig) -> Result<Tenancy, AuthError> {
        if tenants.is_empty() {
            return Err(AuthError::NoTenants);
        }
        let jwt = auth.jwt.as_ref().map(JwtVerifier::load).transpose()?;
        if let Some(names) = auth.jwt.as_ref().and_then(|j| j.tenants.as_ref()) {
            for n in names {
                if !tenants.iter().any(|t| t.name == *n) {
                    return Err(AuthError::UnknownJwtTenant(n.clone()));
                }
            }
        }
        let tenants = tenants
            .iter()
            .map(|t| TenantGate { tenant: t.clone() })
            .collect();
        Ok(Tenancy {
            tenants,
            jwt,
            resource: auth.resource.clone(),
            authorization_servers: auth.authorization_servers.clone(),
        })
    }

    /// The tenant `token` belongs to (its index) and, for a JWT, the
    /// principal it names (its `sub`), or why not.
    pub(crate) fn authenticate(
        &self,
        token: &str,
    ) -> Result<(usize, Option<Principal>), &'static str> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every digest is compared, matched or not: how long this takes
        // says nothing about which tenant, or whether any, matched.
        let mut found = None;
        for (i, g) in self.tenants.iter().enumerate() {
            for d in &g.tenant.token_sha256 {
                if bool::from(d.ct_eq(&digest)) {
                    found = Some(i);
                }
            }
        }
        if let Some(i) = found {
            return Ok((i, None));
        }
        match &self.jwt {
            Some(v) if token.split('.').count() == 3 => {
                let (name, principal) = v.verify(token)?;
                // A tenant JWTs may not select is the same as one that does
                // not exist.
                let allowed = v.tenants.as_ref().is_none_or(|t| t.contains(&name));
                self.tenants
                    .iter()
                    .position(|g| g.tenant.name == name)
                    .filter(|_| allowed)
                    .map(|i| (i, principal))
                    .ok_or("the token's tenant is not served here")
            }
            _ => Err("the token is not valid here"),
        }
    }
}

/// Whom a request's JWT names (its `sub` claim): the issuer's word,
/// carried in the request's extensions from the HTTP door to its calls'
/// audit records (where it is cut, as every name a peer chose).
#[derive(Clone, Debug)]
pub(crate) struct Principal(pub(crate) Arc<str>);

/// Checks bearer JWTs against one issuer's keys.
struct JwtVerifier {
    keys: Vec<VerifyKey>,
    issuer: String,
    audience: String,
    claim: String,
    leeway: Duration,
    tenants: Option<Vec<String>>,
}

struct VerifyKey {
    kid: Option<String>,
    algs: Vec<Algorithm>,
    key: DecodingKey,
}

impl JwtVerifier {
    fn load(c: &crate::tenant::JwtConfig) -> Result<JwtVerifier, AuthError> {
        let bad = |reason: String| AuthError::Jwks {
            path: c.jwks_file.clone(),
            reason,
        };
        let text = crate::files::read_trusted_text(&c.jwks_file, crate::files::MAX_CONFIG_BYTES)
            .map_err(|e| bad(e.to_string()))?;
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            // Only asymmetric keys: a shared secret in a key set would let
            // anyone who can read it mint tokens.
            let mut algs = match &jwk.algorithm {
                AlgorithmParameters::EllipticCurve(p) => match p.curve {
                    EllipticCurve::P256 => vec![Algorithm::ES256],
                    EllipticCurve::P384 => vec![Algorithm::ES384],
                    _ => continue,
                },
                AlgorithmParameters::RSA(_) => vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    vec![Algorithm::EdDSA]
                }
                _ => continue,
            };
            if let Some(a) = &jwk.common.key_algorithm {
                let named: Option<Algorithm> = format!("{a:?}").parse().ok();
                algs.retain(|x| Some(*x) == named);
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
            keys.push(VerifyKey {
                kid: jwk.common.key_id.clone(),
                algs,
                key,
            });
        }
        if keys.is_empty() {
            return Err(bad(
                "no usable key (EC P-256/P-384, RSA or Ed25519 expected)".into(),
            ));
        }
        Ok(JwtVerifier {
            keys,
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
            claim: c.tenant_claim.clone(),
            leeway: c.leeway,
            tenants: c.tenants.clone(),
        })
    }

    /// The tenant a valid token names, and its principal (`sub`), if any.
    fn verify(&self, token: &str) -> Result<(String, Option<Principal>), &'static str> {
        use jsonwebtoken::errors::ErrorKind;
        // Before anything is decoded: the header is parsed once here and
        // again for every key tried, and any client may send one (found by
        // review: a 48 KB header of zeros cost 16 times a wrong token's
        // refusal, a core's worth at 274 tokens a second).
        if token
            .split('.')
            .next()
            .is_none_or(|h| h.len() > MAX_HEADER_SEGMENT)
        {
            return Err("the token's header is over 4096 bytes");
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        // RFC 7515 §4.1.11: a token whose `crit` names extensions this
        // server does not understand (it understands none) is refused.
        // `jsonwebtoken` does not read `crit`, so it accepted them (found
        // by review).
        if declares_critical(token) {
            return Err("the token declares critical extensions this server does not understand");
        }
        let mut last = "no key of the issuer verifies the token";
        for k in &self.keys {
            if !k.algs.contains(&header.alg) {
                continue;
            }
            if let (Some(want), Some(have)) = (&header.kid, &k.kid)
                && want != have
            {
                continue;
            }
            let mut v = Validation::new(header.alg);
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[&self.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud"]);
            v.leeway = self.leeway.as_secs();
            v.validate_nbf = true;
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token, &k.key, &v,
            ) {
                Ok(data) => {
                    let tenant = data
                        .claims
                        .get(&self.claim)
                        .and_then(|t| t.as_str())
                        .map(String::from)
                        .ok_or("the token names no tenant")?;
                    let principal = data
                        .claims
                        .get("sub")
                        .and_then(|s| s.as_str())
                        .map(|s| Principal(Arc::from(s)));
                    return Ok((tenant, principal));
                }
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature => "the token has expired",
                        ErrorKind::ImmatureSignature => "the token is not valid yet",
                        ErrorKind::InvalidAudience => "the token is for another audience",
                        ErrorKind::InvalidIssuer => "the token is from another issuer",
                        ErrorKind::InvalidSignature => "the token's signature is not valid",
                        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                        _ => "the token is not valid",
                    };
                    // Only a bad signature may mean another key is the one.
                    if !matches!(e.kind(), ErrorKind::InvalidSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

/// The longest header segment of a token read (base64url): an issuer's
/// header names its algorithm, key and type in about a hundred bytes.
const MAX_HEADER_SEGMENT: usize = 4096;

/// Whether `token`'s header (its first segment, base64url JSON) has a
/// `crit` member (even `null`, or given twice: the last is kept). Read
/// whole: it is at most `MAX_HEADER_SEGMENT`.
fn declares_critical(token: &str) -> bool {
    use base64::Engine as _;
    token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|h| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&h).ok())
        .is_some_and(|h| h.contains_key("crit"))
}
