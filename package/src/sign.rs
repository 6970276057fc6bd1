//! Signatures in cosign's key-based format, so that `cosign verify --key`
//! (and other verifiers of it, such as containers/image's `sigstoreSigned`
//! policy) accept ours, and we accept theirs:
//!
//! - the signed payload is cosign's "simple signing" JSON naming the signed
//!   repository (`critical.identity.docker-reference`) and the package's
//!   manifest digest (`critical.image.docker-manifest-digest`);
//! - the signature is ECDSA P-256 over SHA-256 of the payload bytes, ASN.1
//!   DER, base64, in the layer annotation `dev.cosignproject.cosign/signature`;
//! - each payload is one layer (`application/vnd.dev.cosign.simplesigning.v1+json`)
//!   of an OCI image manifest stored under the tag `sha256-<hex>.sig` next to
//!   the package (in a registry, or in an OCI layout file). Two signatures
//!   (a key rollover) are two layers of that manifest.
//!
//! Keys and the signature arithmetic come from the `sigstore` crate (crypto
//! module only: no Fulcio, Rekor or OAuth client is compiled in, since
//! verification here is offline). Private keys: unencrypted PKCS#8 PEM
//! (`PRIVATE KEY`, e.g. `openssl genpkey -algorithm EC -pkeyopt
//! ec_paramgen_curve:P-256`), or cosign's encrypted key
//! (`cosign generate-key-pair`, `ENCRYPTED COSIGN PRIVATE KEY` / `ENCRYPTED
//! SIGSTORE PRIVATE KEY`) with its password in `COSIGN_PASSWORD`, as cosign
//! reads it. Public keys: PEM `PUBLIC KEY` (cosign.pub).
//!
//! This module owns the formats and the arithmetic; which keys are trusted
//! for what is `trust`'s business.

use crate::error::{Error, Result};
use crate::oci::{Digest, MANIFEST_MEDIA_TYPE, limits, verify_blob};
use base64::Engine as _;
use bytes::Bytes;
use oci_client::manifest::{IMAGE_CONFIG_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use serde::{Deserialize, Serialize};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{CosignVerificationKey, SigStoreSigner, SigningScheme};
use std::collections::BTreeMap;
use std::path::Path;

/// Media type of a cosign simple-signing payload layer.
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Layer annotations of keyless signatures (a Fulcio certificate, its
/// chain, a Rekor bundle).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Layer annotation holding a keyless signature's certificate chain.
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// Layer annotation holding a Rekor bundle.
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// `critical.type` of a cosign payload.
pub const COSIGN_TYPE: &str = "cosign container image signature";

/// Cosign's simple-signing payload. Field order is cosign's, so the bytes
/// we sign look like the bytes cosign signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimpleSigning {
    /// What the signature vouches for.
    pub critical: Critical,
    /// Free-form claims (cosign `-a` annotations); not interpreted.
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

/// The part of a payload a verifier must check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Critical {
    /// The repository the signer names.
    pub identity: Identity,
    /// The manifest digest signed.
    pub image: Image,
    /// Always [`COSIGN_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// `critical.identity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Identity {
    /// `registry/repository`, no tag or digest.
    pub docker_reference: String,
}

/// `critical.image`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Image {
    /// `sha256:<hex>` of the signed manifest.
    pub docker_manifest_digest: String,
}

impl SimpleSigning {
    /// The payload signing `digest` as the package `identity`
    /// (`registry/repository`, no tag).
    pub fn new(identity: &str, digest: &Digest) -> SimpleSigning {
        SimpleSigning {
            critical: Critical {
                identity: Identity {
                    docker_reference: identity.to_string(),
                },
                image: Image {
                    docker_manifest_digest: digest.to_string(),
                },
                kind: COSIGN_TYPE.to_string(),
            },
            optional: None,
        }
    }

    /// The payload's JSON bytes, as signed.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("payload serializes"))
    }

    /// Parse a payload; anything but a cosign container signature is refused.
    pub fn parse(data: &[u8]) -> Result<SimpleSigning> {
        let p: SimpleSigning = serde_json::from_slice(data)
            .map_err(|e| Error::format(format!("not a cosign simple-signing payload: {e}")))?;
        if p.critical.kind != COSIGN_TYPE {
            return Err(Error::format(format!(
                "payload type `{}` (expected `{COSIGN_TYPE}`)",
                p.critical.kind
            )));
        }
        Ok(p)
    }
}

/// A public key a signature can be checked against.
#[derive(Clone)]
pub struct PublicKey {
    key: CosignVerificationKey,
    der: Vec<u8>,
    /// Where it came from (a file), for messages.
    pub origin: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({} {})", self.origin, self.fingerprint())
    }
}

/// The largest public key file read (a PEM key is a few hundred bytes).
const MAX_PUBLIC_KEY: u64 = 64 << 10;

impl PublicKey {
    /// Read a PEM `PUBLIC KEY` (cosign.pub) file.
    pub fn load(path: &Path) -> Result<PublicKey> {
        // A trust anchor another user may rewrite trusts that user (found
        // by review: a key file left writable by `umask 0` was swapped).
        let pem =
            toolhost::files::read_trusted(path, MAX_PUBLIC_KEY).map_err(|e| Error::io(path, e))?;
        PublicKey::from_pem(&pem, &path.display().to_string())
    }

    /// Parse a PEM `PUBLIC KEY`; `origin` names it in errors.
    pub fn from_pem(pem: &[u8], origin: &str) -> Result<PublicKey> {
        let bad = |m: String| {
            Error::format(format!(
                "{origin}: not a public key: {m} (expected a PEM `PUBLIC KEY`, as `cosign generate-key-pair` or `toolhost keygen` write)"
            ))
        };
        let parsed = pem::parse(pem).map_err(|e| bad(e.to_string()))?;
        if parsed.tag() != "PUBLIC KEY" {
            return Err(bad(format!("PEM block `{}`", parsed.tag())));
        }
        let key = CosignVerificationKey::try_from_der(parsed.contents())
            .map_err(|e| bad(e.to_string()))?;
        Ok(PublicKey {
            key,
            der: parsed.contents().to_vec(),
            origin: origin.to_string(),
        })
    }

    /// A DER SubjectPublicKeyInfo (a transparency log's key in a trust
    /// root); `origin` names it in errors.
    pub(crate) fn from_der(der: &[u8], origin: &str) -> Result<PublicKey> {
        let key = CosignVerificationKey::try_from_der(der)
            .map_err(|e| Error::format(format!("{origin}: not a public key: {e}")))?;
        Ok(PublicKey {
            key,
            der: der.to_vec(),
            origin: origin.to_string(),
        })
    }

    /// `sha256:<hex>` of the key's DER (SubjectPublicKeyInfo).
    pub fn fingerprint(&self) -> String {
        Digest::of(&self.der).to_string()
    }

    /// The key as PEM `PUBLIC KEY` (what `keygen` writes as `.pub`).
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.der.clone()))
    }

    /// Whether `signature` (base64) is this key's signature of `payload`.
    pub fn verifies(&self, payload: &[u8], signature_b64: &str) -> bool {
        self.key
            .verify_signature(
                sigstore::crypto::Signature::Base64Encoded(signature_b64.trim().as_bytes()),
                payload,
            )
            .is_ok()
    }
}

/// A private key that signs packages.
pub struct SigningKey {
    signer: SigStoreSigner,
    public: PublicKey,
}

impl SigningKey {
    /// A new ECDSA P-256 key.
    pub fn generate() -> Result<SigningKey> {
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .map_err(|e| Error::format(format!("cannot generate a key: {e}")))?;
        Self::from_signer(signer, "new key")
    }

    /// Read a private key file: unencrypted PKCS#8 PEM, or cosign's
    /// encrypted format with `password` (cosign's `COSIGN_PASSWORD`).
    pub fn load(path: &Path, password: Option<&[u8]>) -> Result<SigningKey> {
        let data = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| Error::io(path, e))?);
        let origin = path.display().to_string();
        let bad = |m: String| Error::format(format!("{origin}: {m}"));
        let parsed = pem::parse(&*data).map_err(|e| bad(format!("not a PEM key: {e}")))?;
        let pair = match parsed.tag() {
            "PRIVATE KEY" => SigStoreKeyPair::from_pem(&data)
                .map_err(|e| bad(format!("not a usable PKCS#8 private key: {e}")))?,
            "ENCRYPTED COSIGN PRIVATE KEY" | "ENCRYPTED SIGSTORE PRIVATE KEY" => {
                let pw = password.ok_or_else(|| {
                    bad("an encrypted cosign key: set COSIGN_PASSWORD to its password".into())
                })?;
                SigStoreKeyPair::from_encrypted_pem(&data, pw)
                    .map_err(|e| bad(format!("cannot decrypt (wrong COSIGN_PASSWORD?): {e}")))?
            }
            "EC PRIVATE KEY" => {
                return Err(bad(
                    "a SEC1 `EC PRIVATE KEY`: convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`".into(),
                ));
            }
            other => return Err(bad(format!("PEM block `{other}` is not a private key"))),
        };
        let signer = pair
            .to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1)
            .map_err(|e| bad(format!("only ECDSA P-256 keys sign packages: {e}")))?;
        Self::from_signer(signer, &origin)
    }

    fn from_signer(signer: SigStoreSigner, origin: &str) -> Result<SigningKey> {
        let pem = signer
            .to_sigstore_keypair()
            .and_then(|k| k.public_key_to_pem())
            .map_err(|e| Error::format(format!("{origin}: {e}")))?;
        let public = PublicKey::from_pem(pem.as_bytes(), &format!("{origin} (public part)"))?;
        Ok(SigningKey { signer, public })
    }

    /// The public half, to list in `[[trust]] keys`.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The private key as unencrypted PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<zeroize::Zeroizing<String>> {
        self.signer
            .to_sigstore_keypair()
            .and_then(|k| k.private_key_to_pem())
            .map_err(|e| Error::format(e.to_string()))
    }

    /// The private key in cosign's encrypted format (what `cosign
    /// generate-key-pair` writes), under `password`.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<zeroize::Zeroizing<String>> {
        self.signer
            .to_sigstore_keypair()
            .and_then(|k| k.private_key_to_encrypted_pem(password))
            .map_err(|e| Error::format(e.to_string()))
    }

    /// Sign `digest` as `identity`: one signature layer.
    pub fn sign(&self, identity: &str, digest: &Digest) -> Result<Signature> {
        let payload = SimpleSigning::new(identity, digest).to_bytes();
        let sig = self
            .signer
            .sign(&payload)
            .map_err(|e| Error::format(format!("signing failed: {e}")))?;
        Ok(Signature {
            payload,
            signature: base64::engine::general_purpose::STANDARD.encode(sig),
            certificate: None,
            chain: None,
            bundle: None,
        })
    }
}

/// One signature: a payload layer and its annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// The simple-signing payload's bytes.
    pub payload: Bytes,
    /// base64 of the DER signature.
    pub signature: String,
    /// PEM certificate (keyless signatures).
    pub certificate: Option<String>,
    /// PEM certificate chain (keyless signatures).
    pub chain: Option<String>,
    /// Rekor bundle (JSON), if the signer logged it.
    pub bundle: Option<String>,
}

/// The cosign signature manifest of one artifact (`sha256-<hex>.sig`): its
/// signatures, as layers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignatureManifest {
    /// The signatures, one layer each.
    pub signatures: Vec<Signature>,
}

#[derive(Serialize)]
struct CosignConfig<'a> {
    architecture: &'a str,
    created: &'a str,
    history: [BTreeMap<&'a str, &'a str>; 1],
    os: &'a str,
    rootfs: RootFs,
    config: BTreeMap<(), ()>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

impl SignatureManifest {
    /// The OCI manifest (bytes) and the blobs it references (config and
    /// payloads), shaped as cosign writes them.
    pub fn to_oci(&self) -> (Bytes, Vec<(Digest, Bytes)>) {
        let mut blobs = Vec::new();
        let mut layers = Vec::new();
        for s in &self.signatures {
            let mut ann = BTreeMap::new();
            ann.insert(SIGNATURE_ANNOTATION.to_string(), s.signature.clone());
            for (k, v) in [
                (CERTIFICATE_ANNOTATION, &s.certificate),
                (CHAIN_ANNOTATION, &s.chain),
                (BUNDLE_ANNOTATION, &s.bundle),
            ] {
                if let Some(v) = v {
                    ann.insert(k.to_string(), v.clone());
                }
            }
            let d = Digest::of(&s.payload);
            layers.push(OciDescriptor {
                media_type: SIMPLESIGNING_MEDIA_TYPE.to_string(),
                digest: d.to_string(),
                size: s.payload.len() as i64,
                urls: None,
                annotations: Some(ann),
                artifact_type: None,
            });
            blobs.push((d, s.payload.clone()));
        }
        let zero = "0001-01-01T00:00:00Z";
        let config = CosignConfig {
            architecture: "",
            created: zero,
            history: [BTreeMap::from([("created", zero)])],
            os: "",
            rootfs: RootFs {
                kind: "layers",
                diff_ids: layers.iter().map(|l| l.digest.clone()).collect(),
            },
            config: BTreeMap::new(),
        };
        let config = Bytes::from(serde_json::to_vec(&config).expect("config serializes"));
        let cd = Digest::of(&config);
        let m = OciImageManifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.to_string()),
            config: OciDescriptor {
                media_type: IMAGE_CONFIG_MEDIA_TYPE.to_string(),
                digest: cd.to_string(),
                size: config.len() as i64,
                urls: None,
                annotations: None,
                artifact_type: None,
            },
            layers,
            subject: None,
            artifact_type: None,
            annotations: None,
        };
        blobs.push((cd, config));
        let raw = Bytes::from(serde_json::to_vec(&m).expect("manifest serializes"));
        (raw, blobs)
    }

    /// Parse a signature manifest, fetching each payload through `blob`
    /// (bounded, verified against its digest). Layers that are not cosign
    /// signatures are ignored; at most [`limits::SIGNATURES`] are read.
    pub fn from_oci(
        raw: &[u8],
        blob: &mut dyn FnMut(&OciDescriptor) -> Result<Bytes>,
        origin: &str,
    ) -> Result<SignatureManifest> {
        if raw.len() as u64 > limits::MANIFEST {
            return Err(Error::TooLarge {
                what: format!("the signature manifest of {origin}"),
                limit: limits::MANIFEST,
            });
        }
        let m: OciImageManifest = serde_json::from_slice(raw).map_err(|e| {
            Error::format(format!(
                "{origin}: the signature manifest is not an OCI manifest: {e}"
            ))
        })?;
        let mut out = SignatureManifest::default();
        for l in m
            .layers
            .iter()
            .filter(|l| l.media_type == SIMPLESIGNING_MEDIA_TYPE)
            .take(limits::SIGNATURES)
        {
            let ann = l.annotations.clone().unwrap_or_default();
            let Some(sig) = ann.get(SIGNATURE_ANNOTATION) else {
                continue;
            };
            if l.size < 0 || l.size as u64 > limits::SIGNATURE_PAYLOAD {
                return Err(Error::TooLarge {
                    what: format!("a signature payload of {origin}"),
                    limit: limits::SIGNATURE_PAYLOAD,
                });
            }
            let payload = blob(l)?;
            verify_blob(l, &payload, &format!("a signature payload of {origin}"))?;
            out.signatures.push(Signature {
                payload,
                signature: sig.clone(),
                certificate: ann.get(CERTIFICATE_ANNOTATION).cloned(),
                chain: ann.get(CHAIN_ANNOTATION).cloned(),
                bundle: ann.get(BUNDLE_ANNOTATION).cloned(),
            });
        }
        Ok(out)
    }

    /// Add `sig`, replacing any earlier signature of the same payload by the
    /// same key (re-signing is idempotent; a second key adds a layer).
    pub fn add(&mut self, sig: Signature, key: &PublicKey) {
        self.signatures
            .retain(|s| !(s.payload == sig.payload && key.verifies(&s.payload, &s.signature)));
        self.signatures.push(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_cosigns_simple_signing_json_byte_for_byte() {
        let d = Digest::of(b"x");
        let p = SimpleSigning::new("127.0.0.1:5000/tools/echo", &d).to_bytes();
        assert_eq!(
            std::str::from_utf8(&p).unwrap(),
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"127.0.0.1:5000/tools/echo\"}},\"image\":{{\"docker-manifest-digest\":\"{d}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
            )
        );
    }

    #[test]
    fn a_signature_verifies_with_its_key_only() {
        let a = SigningKey::generate().unwrap();
        let b = SigningKey::generate().unwrap();
        let s = a.sign("r/x", &Digest::of(b"x")).unwrap();
        assert!(a.public().verifies(&s.payload, &s.signature));
        assert!(!b.public().verifies(&s.payload, &s.signature));
        let mut other = s.payload.to_vec();
        other[20] ^= 1;
        assert!(!a.public().verifies(&other, &s.signature));
        // ASN.1 DER ECDSA, base64: what cosign writes.
        let der = base64::engine::general_purpose::STANDARD
            .decode(&s.signature)
            .unwrap();
        assert_eq!(der[0], 0x30, "DER SEQUENCE");
    }

    #[test]
    fn keys_round_trip_through_pkcs8_and_cosigns_encrypted_format() {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::generate().unwrap();
        let plain = dir.path().join("k.pem");
        std::fs::write(&plain, k.to_pem().unwrap().as_bytes()).unwrap();
        let enc = dir.path().join("cosign.key");
        std::fs::write(&enc, k.to_encrypted_pem(b"pw").unwrap().as_bytes()).unwrap();
        assert!(std::fs::read_to_string(&enc).unwrap().contains("ENCRYPTED"));
        for (p, pw) in [(&plain, None), (&enc, Some(&b"pw"[..]))] {
            let l = SigningKey::load(p, pw).unwrap();
            assert_eq!(l.public().fingerprint(), k.public().fingerprint());
        }
        let e = SigningKey::load(&enc, None).err().unwrap().to_string();
        assert!(e.contains("COSIGN_PASSWORD"), "{e}");
        let e = SigningKey::load(&enc, Some(b"wrong"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("wrong COSIGN_PASSWORD"), "{e}");
        let pubf = dir.path().join("k.pub");
        std::fs::write(&pubf, k.public().to_pem()).unwrap();
        assert_eq!(
            PublicKey::load(&pubf).unwrap().fingerprint(),
            k.public().fingerprint()
        );
        let e = PublicKey::load(&plain).unwrap_err().to_string();
        assert!(e.contains("PEM block `PRIVATE KEY`"), "{e}");
    }

    #[test]
    fn the_signature_manifest_is_shaped_like_cosigns_and_round_trips() {
        let a = SigningKey::generate().unwrap();
        let b = SigningKey::generate().unwrap();
        let d = Digest::of(b"pkg");
        let mut m = SignatureManifest::default();
        m.add(a.sign("r/x", &d).unwrap(), a.public());
        m.add(b.sign("r/x", &d).unwrap(), b.public());
        m.add(a.sign("r/x", &d).unwrap(), a.public()); // re-sign: replaces
        assert_eq!(m.signatures.len(), 2);
        let (raw, blobs) = m.to_oci();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(
            v["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        assert_eq!(v["layers"][0]["mediaType"], SIMPLESIGNING_MEDIA_TYPE);
        assert!(v["layers"][0]["annotations"][SIGNATURE_ANNOTATION].is_string());
        let blobs: std::collections::HashMap<_, _> = blobs.into_iter().collect();
        let back = SignatureManifest::from_oci(
            &raw,
            &mut |desc| Ok(blobs[&Digest::parse(&desc.digest).unwrap()].clone()),
            "t",
        )
        .unwrap();
        assert_eq!(back, m);
    }
}
