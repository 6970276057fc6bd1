//! Keyless (Sigstore) signatures, verified offline against a trust root the
//! operator pins.
//!
//! A keyless signer has no long-lived key: Fulcio issued it a certificate
//! for a few minutes, naming who it is (an e-mail, or a CI workflow's URL)
//! and which OIDC issuer vouched for that, and Rekor logged the signature
//! and countersigned the time it did (the bundle's signed entry timestamp).
//! cosign writes all three into the signature layer's annotations
//! (`dev.sigstore.cosign/certificate`, `…/chain`, `…/bundle`).
//!
//! Offline, with the Sigstore trust root (`trusted_root.json`: Fulcio's
//! certificate chains and Rekor's keys, each with its validity window; the
//! public-good one comes from Sigstore's TUF repository, a private
//! deployment writes its own with `cosign trusted-root create`), a keyless
//! signature is accepted only if every one of these holds:
//!
//! 1. the bundle's signed entry timestamp verifies with the key of a
//!    transparency log the root lists (found by its log ID, the SHA-256 of
//!    the key), and the log was valid at the entry's integrated time;
//! 2. the logged entry is this signature: a `hashedrekord` whose hash is the
//!    payload's SHA-256, whose signature is this signature's bytes and whose
//!    public key is this very certificate;
//! 3. the certificate chains to a Fulcio root of the trust root valid at that
//!    time, through that authority's own intermediates only (the signature's
//!    `…/chain` annotation is not used, as in cosign and sigstore-go: a CA
//!    it names could be any CA under the same root), was itself valid at
//!    that time (Fulcio certificates live minutes), and allows code signing;
//! 4. the signature verifies with the certificate's key.
//!
//! Only then are the certificate's identity (its subject alternative names)
//! and issuer (Fulcio's OIDC issuer extension) handed back, for `trust` to
//! match against the `[[trust]]` keyless patterns.
//!
//! Not checked: the certificate's embedded SCT (certificate transparency).
//! The Rekor entry already proves the certificate was used publicly at a
//! time it was valid; cosign's `--insecure-ignore-sct` is the same choice.
//!
//! This module owns the trust root's format and the verification above; it
//! fetches nothing and knows nothing of policy.

use crate::error::{Error, Result, printable};
use crate::oci::Digest;
use crate::sign::PublicKey;
use base64::Engine as _;
use pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use x509_cert::der::asn1::Utf8StringRef;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// The media types of a Sigstore trust root (the older one is still what
/// `cosign trusted-root create` writes).
const ROOT_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    "application/vnd.dev.sigstore.trustedroot.v0.1+json",
];

/// Bound on a trust root file (the public-good one is ~7 KiB).
const MAX_ROOT: u64 = 1 << 20;

/// `id-kp-codeSigning` (1.3.6.1.5.5.7.3.3), the OID's DER contents as webpki wants them.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
const OID_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const OID_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
const OID_SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
/// Fulcio's OIDC issuer, DER UTF8String (current).
const OID_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's OIDC issuer, raw bytes (deprecated, still issued beside v2).
const OID_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Fulcio's source repository URI (a CI build's repository), DER UTF8String.
const OID_SOURCE_REPOSITORY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.12");
/// Fulcio's `OtherName` SAN for a username identity.
const OID_OTHERNAME_USER: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.7");

/// A Sigstore trust root: the Fulcio certificate authorities and Rekor
/// transparency logs a keyless signature may come from.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    /// The file it was read from, for messages.
    pub origin: String,
    authorities: Vec<Authority>,
    logs: Vec<Log>,
}

#[derive(Debug, Clone)]
struct Authority {
    uri: String,
    anchor: TrustAnchor<'static>,
    /// The chain's certificates other than the root (intermediates).
    intermediates: Vec<CertificateDer<'static>>,
    valid: Window,
}

#[derive(Debug, Clone)]
struct Log {
    url: String,
    key: PublicKey,
    /// Lower-case hex SHA-256 of the key's DER: Rekor's log ID.
    id: String,
    valid: Window,
}

/// A validity window, seconds since the epoch.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    end: Option<i64>,
}

impl Window {
    fn contains(&self, t: i64) -> bool {
        t >= self.start && self.end.is_none_or(|e| t <= e)
    }
}

/// What a verified keyless signature says about its signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylessSigner {
    /// The OIDC issuer that vouched for the signer (Fulcio's extension).
    pub issuer: String,
    /// The certificate's identities (e-mail, URI or username SANs).
    pub subjects: Vec<String>,
    /// The repository a CI build ran in (Fulcio's source repository URI
    /// extension), if the certificate names one. For GitHub the subject is
    /// the *workflow's* URL, which may be a reusable workflow of another
    /// repository; this is the repository that ran it.
    pub source_repository: Option<String>,
    /// When Rekor logged the signature (seconds since the epoch).
    pub integrated_time: i64,
    /// The Rekor entry's index.
    pub log_index: i64,
    /// The Rekor log's base URL, as the trust root names it.
    pub log: String,
    /// `sha256:` of the certificate's DER.
    pub certificate: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootJson {
    media_type: String,
    #[serde(default)]
    tlogs: Vec<LogJson>,
    #[serde(default)]
    certificate_authorities: Vec<AuthorityJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogJson {
    #[serde(default)]
    base_url: String,
    public_key: KeyJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyJson {
    raw_bytes: Option<String>,
    valid_for: Option<WindowJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorityJson {
    #[serde(default)]
    uri: String,
    cert_chain: ChainJson,
    valid_for: Option<WindowJson>,
}

#[derive(Deserialize)]
struct ChainJson {
    certificates: Vec<RawJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawJson {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct WindowJson {
    start: Option<String>,
    end: Option<String>,
}

/// cosign's Rekor bundle annotation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Bundle {
    signed_entry_timestamp: String,
    payload: BundlePayload,
}

#[derive(Deserialize, serde::Serialize)]
struct BundlePayload {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logIndex")]
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

/// The bundle payload as Rekor signed it: RFC 8785 canonical JSON, which
/// for these four fields (a base64 string, two integers, a hex string) is
/// compact JSON with the keys in this order.
#[derive(serde::Serialize)]
struct Canonical<'a> {
    body: &'a str,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logID")]
    log_id: &'a str,
    #[serde(rename = "logIndex")]
    log_index: i64,
}

/// A `hashedrekord` v0.0.1 entry, the part checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    api_version: String,
    kind: String,
    spec: EntrySpec,
}

#[derive(Deserialize)]
struct EntrySpec {
    data: EntryData,
    signature: EntrySignature,
}

#[derive(Deserialize)]
struct EntryData {
    hash: EntryHash,
}

#[derive(Deserialize)]
struct EntryHash {
    algorithm: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntrySignature {
    content: String,
    public_key: EntryKey,
}

#[derive(Deserialize)]
struct EntryKey {
    content: String,
}

fn b64(s: &str) -> std::result::Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(s.trim())
}

fn time(s: &str) -> std::result::Result<i64, String> {
    let t = humantime::parse_rfc3339(s)
        .map_err(|e| format!("`{s}` is not an RFC 3339 UTC time (`…Z`): {e}"))?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("`{s}` is before 1970"))?;
    Ok(d.as_secs() as i64)
}

fn window(w: Option<&WindowJson>) -> std::result::Result<Window, String> {
    let Some(w) = w else {
        return Ok(Window {
            start: i64::MIN,
            end: None,
        });
    };
    Ok(Window {
        start: w
            .start
            .as_deref()
            .map(time)
            .transpose()?
            .unwrap_or(i64::MIN),
        end: w.end.as_deref().map(time).transpose()?,
    })
}

/// The DER of a PEM `CERTIFICATE`.
fn certificate_der(pem_text: &str) -> std::result::Result<Vec<u8>, String> {
    let p = pem::parse(pem_text.trim()).map_err(|e| format!("not a PEM certificate: {e}"))?;
    if p.tag() != "CERTIFICATE" {
        return Err(format!("PEM block `{}`, not `CERTIFICATE`", p.tag()));
    }
    Ok(p.into_contents())
}

impl TrustedRoot {
    /// Read a trust root file (`trusted_root.json`).
    pub fn load(path: &Path) -> Result<TrustedRoot> {
        let data = toolhost::files::read_trusted(path, MAX_ROOT).map_err(|e| Error::io(path, e))?;
        TrustedRoot::from_json(&data, &path.display().to_string())
    }

    /// Parse a trust root; `origin` names it in messages.
    pub fn from_json(data: &[u8], origin: &str) -> Result<TrustedRoot> {
        let bad = |m: String| {
            Error::format(format!(
                "{origin}: not a Sigstore trust root: {m} (expected a `trusted_root.json`, as Sigstore's TUF repository serves it or `cosign trusted-root create` writes it)"
            ))
        };
        let raw: RootJson = serde_json::from_slice(data).map_err(|e| bad(e.to_string()))?;
        if !ROOT_MEDIA_TYPES.contains(&raw.media_type.as_str()) {
            return Err(bad(format!("media type `{}`", raw.media_type)));
        }
        let mut authorities = Vec::new();
        for (i, a) in raw.certificate_authorities.iter().enumerate() {
            let what = |m: String| bad(format!("certificateAuthorities[{i}]: {m}"));
            let mut ders = Vec::new();
            for c in &a.cert_chain.certificates {
                ders.push(CertificateDer::from(
                    b64(&c.raw_bytes).map_err(|e| what(e.to_string()))?,
                ));
            }
            // The chain is leaf-most first; its last certificate is the root.
            let Some(root) = ders.pop() else {
                return Err(what("an empty certificate chain".into()));
            };
            let anchor = webpki::anchor_from_trusted_cert(&root)
                .map_err(|e| what(format!("its root certificate: {e}")))?
                .to_owned();
            authorities.push(Authority {
                uri: a.uri.clone(),
                anchor,
                intermediates: ders,
                valid: window(a.valid_for.as_ref()).map_err(what)?,
            });
        }
        let mut logs = Vec::new();
        for (i, l) in raw.tlogs.iter().enumerate() {
            let what = |m: String| bad(format!("tlogs[{i}]: {m}"));
            let der = b64(l.public_key.raw_bytes.as_deref().unwrap_or_default())
                .map_err(|e| what(e.to_string()))?;
            let key = PublicKey::from_der(&der, &format!("{origin} tlogs[{i}]"))?;
            logs.push(Log {
                url: l.base_url.clone(),
                id: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der)),
                key,
                valid: window(l.public_key.valid_for.as_ref()).map_err(what)?,
            });
        }
        if authorities.is_empty() || logs.is_empty() {
            return Err(bad(
                "it lists no certificate authority or no transparency log, so no keyless signature could verify".into(),
            ));
        }
        Ok(TrustedRoot {
            origin: origin.to_string(),
            authorities,
            logs,
        })
    }

    /// Verify one keyless signature of `payload` (steps 1-4 of the module
    /// docs). The error says which step failed.
    pub fn verify(
        &self,
        payload: &[u8],
        signature_b64: &str,
        certificate_pem: &str,
        bundle_json: Option<&str>,
    ) -> std::result::Result<KeylessSigner, String> {
        let signature =
            b64(signature_b64).map_err(|e| format!("the signature is not base64: {e}"))?;
        let leaf = certificate_der(certificate_pem).map_err(|e| format!("its certificate: {e}"))?;
        let bundle = bundle_json.ok_or(
            "it carries no Rekor bundle (`dev.sigstore.cosign/bundle`), so when it was made cannot be checked offline (sign with a transparency log)",
        )?;
        let bundle: Bundle = serde_json::from_str(bundle)
            .map_err(|e| format!("its Rekor bundle is not cosign's bundle JSON: {e}"))?;

        // 1. The log countersigned this entry at this time.
        let p = &bundle.payload;
        let log_id = p.log_id.to_ascii_lowercase();
        let log = self.logs.iter().find(|l| l.id == log_id).ok_or_else(|| {
            format!(
                "its Rekor bundle comes from a transparency log the trust root does not list (log ID {})",
                printable(&p.log_id)
            )
        })?;
        let canonical = serde_json::to_vec(&Canonical {
            body: &p.body,
            integrated_time: p.integrated_time,
            log_id: &p.log_id,
            log_index: p.log_index,
        })
        .expect("serializes");
        if !log.key.verifies(&canonical, &bundle.signed_entry_timestamp) {
            return Err(format!(
                "its Rekor bundle's signed entry timestamp does not verify with the key of {}",
                log.url
            ));
        }
        if !log.valid.contains(p.integrated_time) {
            return Err(format!(
                "it was logged at {} by {}, outside the time the trust root trusts that log's key",
                show_time(p.integrated_time),
                log.url
            ));
        }

        // 2. The logged entry is this signature, of this payload, by this certificate.
        let body = b64(&p.body).map_err(|e| format!("the Rekor entry is not base64: {e}"))?;
        let entry: Entry = serde_json::from_slice(&body).map_err(|e| {
            format!("the Rekor entry is not a hashedrekord entry this version reads: {e}")
        })?;
        if entry.kind != "hashedrekord" || entry.api_version != "0.0.1" {
            return Err(format!(
                "the Rekor entry is a `{}` {} entry; only `hashedrekord` 0.0.1 (what cosign writes) is read",
                entry.kind, entry.api_version
            ));
        }
        let hash = &entry.spec.data.hash;
        if hash.algorithm != "sha256" || !hash.value.eq_ignore_ascii_case(Digest::of(payload).hex())
        {
            return Err("the Rekor entry logs another payload".into());
        }
        if b64(&entry.spec.signature.content).ok().as_deref() != Some(&signature[..]) {
            return Err("the Rekor entry logs another signature".into());
        }
        let logged = b64(&entry.spec.signature.public_key.content)
            .ok()
            .and_then(|pem| String::from_utf8(pem).ok())
            .and_then(|pem| certificate_der(&pem).ok());
        if logged.as_deref() != Some(&leaf[..]) {
            return Err("the Rekor entry logs another certificate".into());
        }

        // 3. The certificate chains to a Fulcio root, at the logged time.
        let leaf_der = CertificateDer::from(&leaf[..]);
        let ee = webpki::EndEntityCert::try_from(&leaf_der)
            .map_err(|e| format!("its certificate cannot be parsed: {e}"))?;
        let at = UnixTime::since_unix_epoch(Duration::from_secs(p.integrated_time.max(0) as u64));
        let mut why = Vec::new();
        let mut chained = false;
        for a in &self.authorities {
            if !a.valid.contains(p.integrated_time) {
                why.push(format!("{}: not valid at that time", a.uri));
                continue;
            }
            // Only the authority's own intermediates: one from the
            // signature's chain annotation could be any CA under the same
            // root (a sibling sub-CA, or one the root retired), not Fulcio.
            match ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                std::slice::from_ref(&a.anchor),
                &a.intermediates,
                at,
                // Intermediates without an extended key usage are not
                // limited (as in Go's x509, which cosign uses); the leaf
                // must name code signing, checked in `identity`.
                webpki::KeyUsage::required_if_present(EKU_CODE_SIGNING),
                None,
                None,
            ) {
                Ok(_) => {
                    chained = true;
                    break;
                }
                Err(e) => why.push(format!("{}: {e:?}", a.uri)),
            }
        }
        if !chained {
            return Err(format!(
                "its certificate does not chain to a certificate authority of the trust root, valid for code signing at {} ({})",
                show_time(p.integrated_time),
                why.join("; ")
            ));
        }

        // 4. The certificate's key made the signature.
        let algs = [
            webpki::ring::ECDSA_P256_SHA256,
            webpki::ring::ECDSA_P384_SHA384,
            webpki::ring::ED25519,
        ];
        if !algs
            .iter()
            .any(|alg| ee.verify_signature(*alg, payload, &signature).is_ok())
        {
            return Err("the signature does not verify with its certificate's key".into());
        }

        let id = identity(&leaf)?;
        Ok(KeylessSigner {
            issuer: id.issuer,
            subjects: id.subjects,
            source_repository: id.source_repository,
            integrated_time: p.integrated_time,
            log_index: p.log_index,
            log: log.url.clone(),
            certificate: Digest::of(&leaf).to_string(),
        })
    }
}

/// The issuer and identities a Fulcio certificate names, *unverified*: for
/// telling the operator what a keyless signature they do not trust claims.
/// Control characters are replaced: the text is the signer's, not Fulcio's.
pub fn claimed_identity(certificate_pem: &str) -> Option<(String, Vec<String>)> {
    let id = identity(&certificate_der(certificate_pem).ok()?).ok()?;
    Some((
        printable(&id.issuer),
        id.subjects.iter().map(|s| printable(s)).collect(),
    ))
}

struct Identity {
    issuer: String,
    subjects: Vec<String>,
    source_repository: Option<String>,
}

fn identity(der: &[u8]) -> std::result::Result<Identity, String> {
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|e| format!("its certificate cannot be parsed: {e}"))?;
    let mut issuer_v2 = None;
    let mut issuer_v1 = None;
    let mut source_repository = None;
    let mut subjects = Vec::new();
    let mut code_signing = false;
    // Each extension read here at most once, and each readable: else the
    // identity would be whichever copy or form this code happened to pick
    // (found by review: two issuers that differ, or a v2 issuer that is
    // not text, fell back silently).
    let mut seen = Vec::new();
    for ext in cert.tbs_certificate().extensions().into_iter().flatten() {
        let value = ext.extn_value.as_bytes();
        if [
            OID_EKU,
            OID_SAN,
            OID_ISSUER_V2,
            OID_ISSUER_V1,
            OID_SOURCE_REPOSITORY,
        ]
        .contains(&ext.extn_id)
        {
            if seen.contains(&ext.extn_id) {
                return Err(format!(
                    "its certificate has extension {} twice",
                    ext.extn_id
                ));
            }
            seen.push(ext.extn_id);
        }
        if ext.extn_id == OID_EKU {
            code_signing = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(value)
                .is_ok_and(|eku| eku.0.contains(&OID_CODE_SIGNING));
        } else if ext.extn_id == OID_SAN {
            let san = SubjectAltName::from_der(value)
                .map_err(|e| format!("its subject alternative name: {e}"))?;
            for name in san.0 {
                match name {
                    GeneralName::Rfc822Name(s) | GeneralName::UniformResourceIdentifier(s) => {
                        subjects.push(s.to_string())
                    }
                    GeneralName::OtherName(o) if o.type_id == OID_OTHERNAME_USER => {
                        if let Ok(der) = o.value.to_der()
                            && let Ok(s) = Utf8StringRef::from_der(&der)
                        {
                            subjects.push(s.as_str().to_string());
                        }
                    }
                    _ => {}
                }
            }
        } else if ext.extn_id == OID_ISSUER_V2 {
            issuer_v2 = Some(
                Utf8StringRef::from_der(value)
                    .map_err(|e| {
                        format!("its OIDC issuer (extension {OID_ISSUER_V2}) is not text: {e}")
                    })?
                    .as_str()
                    .to_string(),
            );
        } else if ext.extn_id == OID_SOURCE_REPOSITORY {
            source_repository = Some(
                Utf8StringRef::from_der(value)
                    .map_err(|e| {
                        format!("its source repository (extension {OID_SOURCE_REPOSITORY}) is not text: {e}")
                    })?
                    .as_str()
                    .to_string(),
            );
        } else if ext.extn_id == OID_ISSUER_V1 {
            issuer_v1 = Some(
                std::str::from_utf8(value)
                    .map_err(|e| {
                        format!("its OIDC issuer (extension {OID_ISSUER_V1}) is not text: {e}")
                    })?
                    .to_string(),
            );
        }
    }
    if let (Some(v2), Some(v1)) = (&issuer_v2, &issuer_v1)
        && v1 != v2
    {
        return Err(format!(
            "its certificate names two OIDC issuers, {} (extension {OID_ISSUER_V2}) and {} (extension {OID_ISSUER_V1})",
            printable(v2),
            printable(v1)
        ));
    }
    if !code_signing {
        return Err(
            "its certificate is not for code signing (no id-kp-codeSigning extended key usage)"
                .into(),
        );
    }
    let issuer = issuer_v2.or(issuer_v1).ok_or(
        "its certificate names no OIDC issuer (Fulcio's extension 1.3.6.1.4.1.57264.1.8): not a Fulcio certificate",
    )?;
    if subjects.is_empty() {
        return Err("its certificate names no e-mail, URI or username identity".into());
    }
    Ok(Identity {
        issuer,
        subjects,
        source_repository,
    })
}

fn show_time(t: i64) -> String {
    if t < 0 {
        return t.to_string();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(t as u64))
        .to_string()
}

/// A Sigstore deployment in miniature, for tests: a Fulcio-like CA (root
/// and intermediate), a Rekor-like log key, and keyless signatures made
/// with them exactly as cosign writes them. Built with openssl, not with
/// this module, so the two do not share a mistake. For tests only (the
/// `testing` feature): not a supported API.
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod testing {
    use super::*;
    use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::extension::{
        BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    };
    use openssl::x509::{X509, X509Builder, X509Extension, X509NameBuilder};

    pub const ISSUER: &str = "https://token.actions.githubusercontent.com";
    pub const REPOSITORY: &str = "https://github.com/acme/tools";
    pub const SUBJECT: &str =
        "https://github.com/acme/tools/.github/workflows/release.yml@refs/tags/v1.0.0";
    /// 2026-01-01T00:00:00Z.
    pub const T0: i64 = 1_767_225_600;

    pub fn key() -> PKey<Private> {
        let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
    }

    fn name(cn: &str) -> openssl::x509::X509Name {
        let mut n = X509NameBuilder::new().unwrap();
        if !cn.is_empty() {
            n.append_entry_by_text("O", "sigstore.test").unwrap();
            n.append_entry_by_text("CN", cn).unwrap();
        }
        n.build()
    }

    /// A CA certificate for `key`, self-signed when `issuer` is `None`.
    pub fn ca(cn: &str, key: &PKey<Private>, issuer: Option<(&X509, &PKey<Private>)>) -> X509 {
        let subject = name(cn);
        let mut b = builder(
            &subject,
            issuer.map_or(&subject, |(c, _)| c.subject_name()),
            key,
            (T0 - 86_400 * 365, T0 + 86_400 * 3650),
        );
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256())
            .unwrap();
        b.build()
    }

    /// A v3 certificate of `key` for `subject`, issued by `issuer`, valid
    /// over `(not_before, not_after)`, with a random serial.
    fn builder(
        subject: &openssl::x509::X509NameRef,
        issuer: &openssl::x509::X509NameRef,
        key: &PKey<Private>,
        (not_before, not_after): (i64, i64),
    ) -> X509Builder {
        let mut serial = [0u8; 4];
        openssl::rand::rand_bytes(&mut serial).unwrap();
        let serial = BigNum::from_u32(u32::from_le_bytes(serial) >> 1).unwrap();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(subject).unwrap();
        b.set_issuer_name(issuer).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(not_before).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
            .unwrap();
        b
    }

    /// What a Fulcio leaf certificate says.
    pub struct Leaf<'a> {
        pub san_uri: Option<&'a str>,
        pub san_email: Option<&'a str>,
        pub issuer: Option<&'a str>,
        /// Fulcio's source repository URI extension.
        pub source_repository: Option<&'a str>,
        /// An extended key usage of code signing (else none at all).
        pub code_signing: bool,
        /// Valid from `not_before` for ten minutes.
        pub not_before: i64,
        /// More extensions, as they are (OID, DER value), after Fulcio's.
        pub extra: &'a [(&'a str, &'a [u8])],
    }

    impl Default for Leaf<'_> {
        fn default() -> Self {
            Leaf {
                san_uri: Some(SUBJECT),
                san_email: None,
                issuer: Some(ISSUER),
                source_repository: Some(REPOSITORY),
                code_signing: true,
                not_before: T0,
                extra: &[],
            }
        }
    }

    pub fn leaf(l: &Leaf<'_>, key: &PKey<Private>, ca: &X509, ca_key: &PKey<Private>) -> X509 {
        // Fulcio's leaves name nobody in their subject: the SAN does.
        let mut b = builder(
            &name(""),
            ca.subject_name(),
            key,
            (l.not_before, l.not_before + 600),
        );
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
        if l.code_signing {
            b.append_extension(ExtendedKeyUsage::new().code_signing().build().unwrap())
                .unwrap();
        }
        let mut san = SubjectAlternativeName::new();
        san.critical();
        if let Some(u) = l.san_uri {
            san.uri(u);
        }
        if let Some(e) = l.san_email {
            san.email(e);
        }
        let san = san.build(&b.x509v3_context(Some(ca), None)).unwrap();
        b.append_extension(san).unwrap();
        // Fulcio's extensions: DER UTF8Strings.
        for (oid, v) in [
            ("1.3.6.1.4.1.57264.1.8", l.issuer),
            ("1.3.6.1.4.1.57264.1.12", l.source_repository),
        ] {
            if let Some(v) = v {
                let mut der = vec![0x0c, v.len() as u8];
                der.extend_from_slice(v.as_bytes());
                let oid = Asn1Object::from_str(oid).unwrap();
                let value = Asn1OctetString::new_from_bytes(&der).unwrap();
                b.append_extension(X509Extension::new_from_der(&oid, false, &value).unwrap())
                    .unwrap();
            }
        }
        for (oid, der) in l.extra {
            let oid = Asn1Object::from_str(oid).unwrap();
            let value = Asn1OctetString::new_from_bytes(der).unwrap();
            b.append_extension(X509Extension::new_from_der(&oid, false, &value).unwrap())
                .unwrap();
        }
        b.sign(ca_key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    pub fn sign(key: &PKey<Private>, data: &[u8]) -> Vec<u8> {
        let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), key).unwrap();
        s.sign_oneshot_to_vec(data).unwrap()
    }

    pub fn b64e(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    pub fn pem_of(c: &X509) -> String {
        String::from_utf8(c.to_pem().unwrap()).unwrap()
    }

    /// One deployment: root CA -> intermediate CA, and a log key.
    pub struct Sigstore {
        pub root: X509,
        pub root_key: PKey<Private>,
        pub intermediate: X509,
        pub intermediate_key: PKey<Private>,
        pub log_key: PKey<Private>,
    }

    /// A keyless signature as cosign puts it in a signature layer.
    pub struct Made {
        pub payload: Vec<u8>,
        pub signature: String,
        pub certificate: String,
        pub chain: String,
        pub bundle: String,
    }

    impl Default for Sigstore {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Sigstore {
        pub fn new() -> Sigstore {
            let root_key = key();
            let root = ca("sigstore-test", &root_key, None);
            let intermediate_key = key();
            let intermediate = ca(
                "sigstore-test-intermediate",
                &intermediate_key,
                Some((&root, &root_key)),
            );
            Sigstore {
                root,
                root_key,
                intermediate,
                intermediate_key,
                log_key: key(),
            }
        }

        /// `trusted_root.json` for this deployment.
        pub fn trusted_root(&self, log_valid_until: Option<&str>) -> String {
            let log_pub = self.log_key.public_key_to_der().unwrap();
            let mut valid = serde_json::json!({"start": "2021-01-12T11:53:27.000Z"});
            if let Some(end) = log_valid_until {
                valid["end"] = end.into();
            }
            serde_json::json!({
                "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                "tlogs": [{
                    "baseUrl": "https://rekor.sigstore.test",
                    "hashAlgorithm": "SHA2_256",
                    "publicKey": {
                        "rawBytes": b64e(&log_pub),
                        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                        "validFor": valid,
                    },
                    "logId": {"keyId": b64e(&<sha2::Sha256 as sha2::Digest>::digest(&log_pub))},
                }],
                "certificateAuthorities": [{
                    "subject": {"organization": "sigstore.test", "commonName": "sigstore-test"},
                    "uri": "https://fulcio.sigstore.test",
                    "certChain": {"certificates": [
                        {"rawBytes": b64e(&self.intermediate.to_der().unwrap())},
                        {"rawBytes": b64e(&self.root.to_der().unwrap())},
                    ]},
                    "validFor": {"start": "2021-03-07T03:20:29.000Z"},
                }],
                "ctlogs": [],
                "timestampAuthorities": [],
            })
            .to_string()
        }

        /// A keyless signature of `payload` by a fresh key certified as
        /// `l`, logged at `at` by `log_key` (this deployment's, or another).
        pub fn sign(&self, payload: &[u8], l: &Leaf<'_>, at: i64) -> Made {
            let k = key();
            let cert = leaf(l, &k, &self.intermediate, &self.intermediate_key);
            let sig = sign(&k, payload);
            let body = entry(payload, &sig, &pem_of(&cert));
            self.made(payload, &sig, &cert, &body, at, &self.log_key)
        }

        /// The annotations for a signature, certificate and logged `body`,
        /// countersigned by `log_key` at `at`.
        pub fn made(
            &self,
            payload: &[u8],
            sig: &[u8],
            cert: &X509,
            body: &str,
            at: i64,
            log_key: &PKey<Private>,
        ) -> Made {
            let log_id = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                self.log_key.public_key_to_der().unwrap(),
            ));
            let body = b64e(body.as_bytes());
            // Rekor's signed entry timestamp: over the canonical JSON of the
            // payload (keys sorted, no spaces), written out by hand here.
            let canonical = format!(
                "{{\"body\":\"{body}\",\"integratedTime\":{at},\"logID\":\"{log_id}\",\"logIndex\":4242}}"
            );
            let set = b64e(&sign(log_key, canonical.as_bytes()));
            Made {
                payload: payload.to_vec(),
                signature: b64e(sig),
                certificate: pem_of(cert),
                chain: pem_of(&self.intermediate) + &pem_of(&self.root),
                bundle: serde_json::json!({
                    "SignedEntryTimestamp": set,
                    "Payload": {"body": body, "integratedTime": at, "logIndex": 4242, "logID": log_id},
                })
                .to_string(),
            }
        }
    }

    /// A `hashedrekord` 0.0.1 entry for `sig` of `payload` by `cert_pem`.
    pub fn entry(payload: &[u8], sig: &[u8], cert_pem: &str) -> String {
        serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(payload))}},
                "signature": {"content": b64e(sig), "publicKey": {"content": b64e(cert_pem.as_bytes())}},
            },
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn root(s: &Sigstore) -> TrustedRoot {
        TrustedRoot::from_json(s.trusted_root(None).as_bytes(), "trusted_root.json").unwrap()
    }

    fn check(r: &TrustedRoot, m: &Made) -> std::result::Result<KeylessSigner, String> {
        r.verify(&m.payload, &m.signature, &m.certificate, Some(&m.bundle))
    }

    #[test]
    fn a_keyless_signature_verifies_and_names_its_signer() {
        let s = Sigstore::new();
        let r = root(&s);
        let m = s.sign(b"payload", &Leaf::default(), T0 + 60);
        let k = check(&r, &m).unwrap();
        assert_eq!(k.issuer, ISSUER);
        assert_eq!(k.subjects, vec![SUBJECT.to_string()]);
        assert_eq!((k.integrated_time, k.log_index), (T0 + 60, 4242));
        assert_eq!(k.log, "https://rekor.sigstore.test");
        assert_eq!(k.source_repository.as_deref(), Some(REPOSITORY));
        // An e-mail identity.
        let m = s.sign(
            b"payload",
            &Leaf {
                san_uri: None,
                san_email: Some("dev@acme.test"),
                ..Leaf::default()
            },
            T0 + 60,
        );
        assert_eq!(check(&r, &m).unwrap().subjects, vec!["dev@acme.test"]);
    }

    /// A certificate whose issuer could be read two ways is refused: two
    /// issuers that differ, one that is not text, an extension twice (found
    /// by review: v2 won silently, and an unreadable v2 fell back to v1).
    #[test]
    fn a_certificate_naming_its_issuer_two_ways_is_refused() {
        let s = Sigstore::new();
        let identity_of = |extra: &[(&str, &[u8])]| {
            let l = Leaf {
                extra,
                ..Leaf::default()
            };
            let c = leaf(&l, &key(), &s.intermediate, &s.intermediate_key);
            identity(&c.to_der().unwrap()).map(|i| i.issuer)
        };
        let v1 = "1.3.6.1.4.1.57264.1.1";
        let v2 = "1.3.6.1.4.1.57264.1.8";
        // The same issuer both ways, as Fulcio writes it: taken.
        assert_eq!(identity_of(&[(v1, ISSUER.as_bytes())]).unwrap(), ISSUER);
        let e = identity_of(&[(v1, b"https://evil.test")]).unwrap_err();
        assert!(e.contains("two OIDC issuers"), "{e}");
        let mut other = vec![0x0c, 17];
        other.extend_from_slice(b"https://evil.test");
        let e = identity_of(&[(v2, &other)]).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        // v2 not a UTF8String, where v1 (written as text) would pass.
        let l = Leaf {
            issuer: None,
            extra: &[(v2, &[0x04, 0x01, 0x00]), (v1, ISSUER.as_bytes())],
            ..Leaf::default()
        };
        let c = leaf(&l, &key(), &s.intermediate, &s.intermediate_key);
        let e = identity(&c.to_der().unwrap())
            .map(|i| i.issuer)
            .unwrap_err();
        assert!(e.contains("is not text"), "{e}");
    }

    #[test]
    fn each_broken_link_is_refused_with_its_reason() {
        let s = Sigstore::new();
        let r = root(&s);
        let err = |m: &Made| check(&r, m).unwrap_err();
        let good = s.sign(b"payload", &Leaf::default(), T0 + 60);

        // No bundle: no time to check the certificate against.
        let e = r
            .verify(&good.payload, &good.signature, &good.certificate, None)
            .unwrap_err();
        assert!(e.contains("no Rekor bundle"), "{e}");

        // Another payload, under the same signature and bundle.
        let mut m = s.sign(b"payload", &Leaf::default(), T0 + 60);
        m.payload = b"payloaD".to_vec();
        assert!(err(&m).contains("logs another payload"), "{}", err(&m));

        // The bundle countersigned by a key that is not the log's.
        let k = key();
        let cert = leaf(&Leaf::default(), &k, &s.intermediate, &s.intermediate_key);
        let sig = sign(&k, b"payload");
        let body = entry(b"payload", &sig, &pem_of(&cert));
        let m = s.made(b"payload", &sig, &cert, &body, T0 + 60, &key());
        assert!(
            err(&m).contains("signed entry timestamp does not verify"),
            "{}",
            err(&m)
        );

        // A bundle whose time was changed after the log signed it.
        let mut m = s.sign(b"payload", &Leaf::default(), T0 + 60);
        m.bundle = m
            .bundle
            .replace(&format!("{}", T0 + 60), &format!("{}", T0 + 61));
        assert!(
            err(&m).contains("signed entry timestamp does not verify"),
            "{}",
            err(&m)
        );

        // A log the trust root does not list.
        let mut m = s.sign(b"payload", &Leaf::default(), T0 + 60);
        let v: serde_json::Value = serde_json::from_str(&m.bundle).unwrap();
        let id = v["Payload"]["logID"].as_str().unwrap().to_string();
        m.bundle = m.bundle.replace(&id, &"ab".repeat(32));
        assert!(err(&m).contains("does not list"), "{}", err(&m));

        // The log entry is of another signature (a valid one, of this
        // payload, by this certificate's key): the layer's was swapped.
        let k = key();
        let cert = leaf(&Leaf::default(), &k, &s.intermediate, &s.intermediate_key);
        let logged = sign(&k, b"payload");
        let body = entry(b"payload", &logged, &pem_of(&cert));
        let mut m = s.made(b"payload", &logged, &cert, &body, T0 + 60, &s.log_key);
        m.signature = b64e(&sign(&k, b"payload"));
        assert!(err(&m).contains("logs another signature"), "{}", err(&m));

        // The log entry is of another certificate.
        let other = leaf(&Leaf::default(), &k, &s.intermediate, &s.intermediate_key);
        let body = entry(b"payload", &logged, &pem_of(&other));
        let m = s.made(b"payload", &logged, &cert, &body, T0 + 60, &s.log_key);
        assert!(err(&m).contains("logs another certificate"), "{}", err(&m));

        // Logged, consistently, but the signature is not the certificate's key's.
        let forged = sign(&key(), b"payload");
        let body = entry(b"payload", &forged, &pem_of(&cert));
        let m = s.made(b"payload", &forged, &cert, &body, T0 + 60, &s.log_key);
        assert!(
            err(&m).contains("does not verify with its certificate's key"),
            "{}",
            err(&m)
        );

        // A certificate from a CA the trust root does not hold, even with
        // the same names and its chain in the annotation.
        let evil = Sigstore::new();
        let mut m = evil.sign(b"payload", &Leaf::default(), T0 + 60);
        let mine = s.made(
            b"payload",
            &b64(&m.signature).unwrap(),
            &openssl::x509::X509::from_pem(m.certificate.as_bytes()).unwrap(),
            &String::from_utf8(
                b64(serde_json::from_str::<serde_json::Value>(&m.bundle).unwrap()["Payload"]["body"]
                    .as_str()
                    .unwrap())
                .unwrap(),
            )
            .unwrap(),
            T0 + 60,
            &s.log_key,
        );
        m.bundle = mine.bundle;
        assert!(err(&m).contains("does not chain"), "{}", err(&m));

        // A sibling CA under the same root (no extended key usage, so not
        // limited to anything), its certificate in the chain annotation:
        // only the trust root's own intermediates count.
        let sibling_key = key();
        let sibling = ca("corp-sub-ca", &sibling_key, Some((&s.root, &s.root_key)));
        let k = key();
        let cert = leaf(&Leaf::default(), &k, &sibling, &sibling_key);
        let sig = sign(&k, b"payload");
        let body = entry(b"payload", &sig, &pem_of(&cert));
        let m = s.made(b"payload", &sig, &cert, &body, T0 + 60, &s.log_key);
        assert!(m.chain.contains(&pem_of(&s.intermediate)));
        let mut m = m;
        m.chain = pem_of(&sibling) + &pem_of(&s.root);
        assert!(err(&m).contains("does not chain"), "{}", err(&m));

        // Logged after the certificate expired (ten minutes), or before it began.
        for at in [T0 + 601 + 60, T0 - 60] {
            let m = s.sign(b"payload", &Leaf::default(), at);
            let e = err(&m);
            assert!(
                e.contains("does not chain") && e.contains("Expired") || e.contains("NotValidYet"),
                "{e}"
            );
        }

        // No code signing in its extended key usage.
        let m = s.sign(
            b"payload",
            &Leaf {
                code_signing: false,
                ..Leaf::default()
            },
            T0 + 60,
        );
        assert!(err(&m).contains("not for code signing"), "{}", err(&m));

        // Not a Fulcio certificate: no issuer extension.
        let m = s.sign(
            b"payload",
            &Leaf {
                issuer: None,
                ..Leaf::default()
            },
            T0 + 60,
        );
        assert!(err(&m).contains("names no OIDC issuer"), "{}", err(&m));

        // The log's key trusted only until before the entry's time.
        let r2 =
            TrustedRoot::from_json(s.trusted_root(Some("2025-12-31T00:00:00Z")).as_bytes(), "t")
                .unwrap();
        let e = check(&r2, &good).unwrap_err();
        assert!(e.contains("outside the time the trust root trusts"), "{e}");
    }

    #[test]
    fn a_malformed_trust_root_is_refused_with_what_is_wrong() {
        let s = Sigstore::new();
        let good: serde_json::Value = serde_json::from_str(&s.trusted_root(None)).unwrap();
        for (change, expect) in [
            (
                serde_json::json!({"mediaType": "application/json"}),
                "media type `application/json`",
            ),
            (serde_json::json!({"tlogs": []}), "no transparency log"),
            (
                serde_json::json!({"certificateAuthorities": [{"uri": "x", "certChain": {"certificates": []}}]}),
                "certificateAuthorities[0]: an empty certificate chain",
            ),
            (
                serde_json::json!({"tlogs": [{"publicKey": {"rawBytes": "bm90IGEga2V5"}}]}),
                "tlogs[0]",
            ),
        ] {
            let mut v = good.clone();
            for (k, x) in change.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = TrustedRoot::from_json(v.to_string().as_bytes(), "root.json")
                .unwrap_err()
                .to_string();
            assert!(e.contains("root.json") && e.contains(expect), "{e}");
        }
        let e = TrustedRoot::from_json(b"{", "root.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a Sigstore trust root"), "{e}");
    }
}
