//! The trust decision: is this package signed by a key the operator trusts
//! for its name?
//!
//! A package's *identity* is the `registry/repository` its signature names
//! (`critical.identity.docker-reference`). A signature counts only if (1) it
//! signs this exact manifest digest, (2) for a registry install, it names the
//! repository the package was pulled from, and (3) it verifies with a key of
//! a `[[trust]]` entry whose `source` pattern covers that identity. Any one
//! such signature is enough; every other signature is ignored, so two keys
//! trusted during a rollover both verify.
//!
//! A keyless signature (a Fulcio certificate and a Rekor bundle instead of a
//! key) counts when it verifies against the `trusted-root` of a rule
//! covering the identity (`keyless`: certificate, log entry and time, all
//! offline) and the certificate's issuer and subject match one of that
//! rule's `keyless` patterns.
//!
//! This module decides; it loads key files and trust roots but fetches
//! nothing.

use crate::error::{Error, Result, printable};
use crate::keyless::{TrustedRoot, claimed_identity};
use crate::oci::Digest;
use crate::sign::{PublicKey, Signature, SimpleSigning};
use std::fmt::Write as _;
use std::sync::Arc;
use toolhost::{KeylessIdentity, TrustRule};

/// The operator's policy with its key files loaded.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    rules: Vec<LoadedRule>,
}

#[derive(Debug, Clone)]
struct LoadedRule {
    rule: TrustRule,
    source: String,
    keys: Vec<PublicKey>,
    keyless: Vec<KeylessIdentity>,
    root: Option<Arc<TrustedRoot>>,
}

/// Where a package came from, as far as trust is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Pulled from `registry/repository`.
    Registry(String),
    /// A local file: the operator chose it explicitly.
    File(String),
    /// Downloaded from a URL.
    Url(String),
}

impl Origin {
    /// Whether the package came over the network (a registry or a URL).
    pub fn is_remote(&self) -> bool {
        !matches!(self, Origin::File(_))
    }

    fn describe(&self) -> String {
        match self {
            Origin::Registry(r) => r.clone(),
            Origin::File(f) => f.clone(),
            Origin::Url(u) => u.clone(),
        }
    }
}

/// Who vouched for an accepted package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signer {
    /// The identity the signature names.
    pub identity: String,
    /// The key file that verified it.
    pub key: String,
    /// `sha256:` of the key.
    pub fingerprint: String,
    /// The `[[trust]]` source pattern that trusts the key for the identity.
    pub rule: String,
}

impl TrustPolicy {
    /// Load every key file the rules name; an unreadable or malformed key is
    /// an error naming the file and the rule.
    pub fn load(rules: &[TrustRule]) -> Result<TrustPolicy> {
        let mut out = Vec::new();
        let mut roots: Vec<(std::path::PathBuf, Arc<TrustedRoot>)> = Vec::new();
        for r in rules {
            let root = match &r.trusted_root {
                None => None,
                Some(p) => Some(match roots.iter().find(|(q, _)| q == p) {
                    Some((_, root)) => root.clone(),
                    None => {
                        let root = Arc::new(TrustedRoot::load(p).map_err(|e| {
                            Error::format(format!(
                                "host config [[trust]] source {:?}: {e}",
                                r.source
                            ))
                        })?);
                        roots.push((p.clone(), root.clone()));
                        root
                    }
                }),
            };
            let keys = r
                .keys
                .iter()
                .map(|k| {
                    PublicKey::load(k).map_err(|e| {
                        Error::format(format!("host config [[trust]] source {:?}: {e}", r.source))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(LoadedRule {
                rule: r.clone(),
                source: r.source.clone(),
                keys,
                keyless: r.keyless.clone(),
                root,
            });
        }
        Ok(TrustPolicy { rules: out })
    }

    /// A policy from keys already loaded (tests, library users).
    pub fn from_keys(source: &str, keys: Vec<PublicKey>) -> TrustPolicy {
        TrustPolicy {
            rules: vec![LoadedRule {
                rule: TrustRule::new(source, Vec::new()),
                source: source.to_string(),
                keys,
                keyless: Vec::new(),
                root: None,
            }],
        }
    }

    /// A policy trusting `keyless` identities for `source`, verified against
    /// `root` (tests, library users).
    pub fn from_keyless(
        source: &str,
        keyless: Vec<KeylessIdentity>,
        root: TrustedRoot,
    ) -> TrustPolicy {
        TrustPolicy {
            rules: vec![LoadedRule {
                rule: TrustRule::new(source, Vec::new())
                    .with_keyless(keyless.clone(), root.origin.clone()),
                source: source.to_string(),
                keys: Vec::new(),
                keyless,
                root: Some(Arc::new(root)),
            }],
        }
    }

    /// Decide on `digest` with `signatures`, fetched from `origin`. `what`
    /// names the package in messages (the reference the user typed).
    pub fn verify(
        &self,
        what: &str,
        origin: &Origin,
        digest: &Digest,
        signatures: &[Signature],
    ) -> Result<Signer> {
        let mut notes: Vec<String> = Vec::new();
        let mut identities: Vec<String> = Vec::new();
        // Every signature is looked at: the first that verifies is the
        // signer, unless another that verifies names another identity. A
        // file or URL names no repository of its own, so its signatures
        // alone would say which one it is, and the first would win: a
        // source could put another publisher's signature of the same bytes
        // first, and have the package installed as theirs (and the next
        // "upgrade" from them taken as the same signer; found by review).
        let mut signer: Option<Signer> = None;
        let mut found = |s: Signer| -> Result<()> {
            match &signer {
                Some(first) if first.identity != s.identity => Err(Error::Untrusted(format!(
                    "{what} ({}) is signed, and verified, as both {} and {}: which one it is cannot be told, so it is not installed; install it from its registry, where the repository says",
                    digest.short(),
                    printable(&first.identity),
                    printable(&s.identity)
                ))),
                Some(_) => Ok(()),
                None => {
                    signer = Some(s);
                    Ok(())
                }
            }
        };
        for s in signatures {
            let p = match SimpleSigning::parse(&s.payload) {
                Ok(p) => p,
                Err(e) => {
                    notes.push(format!("a signature with an unreadable payload ({e})"));
                    continue;
                }
            };
            let identity = p.critical.identity.docker_reference.clone();
            if p.critical.image.docker_manifest_digest != digest.as_str() {
                notes.push(format!(
                    "a signature of another artifact ({}) as {identity}",
                    p.critical.image.docker_manifest_digest
                ));
                continue;
            }
            if let Origin::Registry(repo) = origin
                && *repo != identity
            {
                notes.push(format!(
                    "a signature naming {identity}, not {repo} where the package was pulled from"
                ));
                continue;
            }
            if !identities.contains(&identity) {
                identities.push(identity.clone());
            }
            let rules: Vec<&LoadedRule> = self
                .rules
                .iter()
                .filter(|r| r.rule.covers(&identity))
                .collect();
            if let Some(cert) = &s.certificate {
                match self.keyless(&identity, &rules, s, cert) {
                    Ok(verified) => found(verified)?,
                    Err(note) => notes.push(note),
                }
                continue;
            }
            let verified = rules.iter().find_map(|r| {
                let k = r
                    .keys
                    .iter()
                    .find(|k| k.verifies(&s.payload, &s.signature))?;
                Some(Signer {
                    identity: identity.clone(),
                    key: k.origin.clone(),
                    fingerprint: k.fingerprint(),
                    rule: r.source.clone(),
                })
            });
            if let Some(verified) = verified {
                found(verified)?;
                continue;
            }
            if rules.is_empty() {
                notes.push(format!(
                    "a signature for {identity}, which no [[trust]] source covers (a host config's `[[trust]]` entries name the signers to trust; pass it with --config)"
                ));
            } else {
                let keys: Vec<String> = rules
                    .iter()
                    .flat_map(|r| {
                        r.keys
                            .iter()
                            .map(|k| format!("{} ({})", k.origin, &k.fingerprint()[..19]))
                    })
                    .collect();
                notes.push(format!(
                    "a signature for {identity} that none of the keys trusted for it verifies ({})",
                    if keys.is_empty() {
                        "no keys, only keyless identities".to_string()
                    } else {
                        keys.join(", ")
                    }
                ));
            }
        }
        if let Some(signer) = signer {
            return Ok(signer);
        }
        Err(Error::Untrusted(self.refusal(
            what,
            origin,
            digest,
            signatures.is_empty(),
            &identities,
            &notes,
        )))
    }

    /// A keyless signature for `identity`: accepted if it verifies against a
    /// covering rule's trust root and names an identity the rule trusts;
    /// else the note saying why not.
    fn keyless(
        &self,
        identity: &str,
        rules: &[&LoadedRule],
        s: &Signature,
        cert: &str,
    ) -> std::result::Result<Signer, String> {
        let mut why = Vec::new();
        for r in rules.iter().filter(|r| !r.keyless.is_empty()) {
            let Some(root) = &r.root else { continue };
            let k = match root.verify(&s.payload, &s.signature, cert, s.bundle.as_deref()) {
                Ok(k) => k,
                Err(e) => {
                    why.push(format!(
                        "a keyless signature for {identity} that does not verify against the trust root {}: {e}",
                        root.origin
                    ));
                    continue;
                }
            };
            for id in &r.keyless {
                if let Some(subject) = k
                    .subjects
                    .iter()
                    .find(|sub| id.matches(&k.issuer, sub, k.source_repository.as_deref()))
                {
                    return Ok(Signer {
                        identity: identity.to_string(),
                        key: format!(
                            "keyless: {subject} (issuer {}), logged at {} as entry {} of {}",
                            k.issuer,
                            humantime::format_rfc3339_seconds(
                                std::time::UNIX_EPOCH
                                    + std::time::Duration::from_secs(
                                        k.integrated_time.max(0) as u64
                                    )
                            ),
                            k.log_index,
                            k.log
                        ),
                        fingerprint: k.certificate,
                        rule: r.source.clone(),
                    });
                }
            }
            why.push(format!(
                "a keyless signature for {identity} by {} (issuer {}{}), which none of the keyless identities trusted for it matches ({})",
                k.subjects.join(", "),
                k.issuer,
                k.source_repository
                    .as_deref()
                    .map(|r| format!(", source repository {r}"))
                    .unwrap_or_default(),
                r.keyless
                    .iter()
                    .map(|i| match &i.source_repository {
                        Some(repo) => format!(
                            "issuer {} subject {} source repository {repo}",
                            i.issuer, i.subject
                        ),
                        None => format!("issuer {} subject {}", i.issuer, i.subject),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if why.is_empty() {
            let claims = match claimed_identity(cert) {
                Some((issuer, subjects)) => {
                    format!(" claiming {} (issuer {issuer})", subjects.join(", "))
                }
                None => String::new(),
            };
            why.push(format!(
                "a keyless signature for {identity}{claims}: no [[trust]] entry covering it trusts keyless identities (add `keyless = [{{ issuer = \"…\", subject = \"…\" }}]` and `trusted-root = \"trusted_root.json\"`)"
            ));
        }
        Err(why.join("\n  - "))
    }

    fn refusal(
        &self,
        what: &str,
        origin: &Origin,
        digest: &Digest,
        unsigned: bool,
        identities: &[String],
        notes: &[String],
    ) -> String {
        let mut m = String::new();
        if unsigned {
            let _ = writeln!(m, "refusing {what} ({}): it is not signed.", digest.short());
        } else {
            let _ = writeln!(
                m,
                "refusing {what} ({}): it is signed, but by no key this host trusts for it. Found:",
                digest.short()
            );
            for n in notes {
                let _ = writeln!(m, "  - {n}");
            }
        }
        let identity = identities.first().cloned().or(match origin {
            Origin::Registry(r) => Some(r.clone()),
            _ => None,
        });
        let source = identity
            .as_deref()
            .map(|i| match i.rsplit_once('/') {
                Some((ns, _)) => format!("{ns}/*"),
                None => i.to_string(),
            })
            .unwrap_or_else(|| "REGISTRY/NAMESPACE/*".to_string());
        if unsigned {
            let target = match origin {
                Origin::Registry(r) => r.clone(),
                _ => format!(
                    "{} --identity {}",
                    origin.describe(),
                    identity.as_deref().unwrap_or("REGISTRY/REPOSITORY")
                ),
            };
            let _ = writeln!(
                m,
                "Sign it with `toolhost sign {target} --key SIGNER.key`, then trust the signer."
            );
        }
        let _ = writeln!(
            m,
            "To trust a signer's public key for it, add to the host config (--config):"
        );
        let _ = writeln!(m, "    [[trust]]");
        let _ = writeln!(m, "    source = \"{source}\"");
        let _ = writeln!(m, "    keys = [\"/path/to/signer.pub\"]");
        let _ = writeln!(
            m,
            "  (for a keyless Sigstore signer: `keyless = [{{ issuer = \"…\", subject = \"…\" }}]` and `trusted-root = \"/path/to/trusted_root.json\"`)"
        );
        let _ = write!(
            m,
            "To install it anyway, unverified, pass --allow-unsigned{}.",
            if origin.is_remote() {
                " (it comes from a remote source: only do this if you trust the transport and the publisher)"
            } else {
                ""
            }
        );
        m
    }

    /// The rules, for display: source, key files, keyless identities.
    pub fn describe(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| {
                let mut parts: Vec<String> = r
                    .keys
                    .iter()
                    .map(|k| format!("key {} ({})", k.origin, &k.fingerprint()[..19]))
                    .collect();
                parts.extend(r.keyless.iter().map(|k| {
                    format!(
                        "keyless issuer {} subject {} (trust root {})",
                        k.issuer,
                        k.subject,
                        r.root.as_ref().map_or("-", |t| t.origin.as_str())
                    )
                }));
                format!("{}: {}", r.source, parts.join(", "))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::SigningKey;

    const REPO: &str = "127.0.0.1:5000/tools/echo";

    #[test]
    fn a_trusted_key_for_the_identity_is_enough_and_others_are_ignored() {
        let good = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let d = Digest::of(b"pkg");
        let p = TrustPolicy::from_keys("127.0.0.1:*/tools/*", vec![good.public().clone()]);
        let sigs = vec![other.sign(REPO, &d).unwrap(), good.sign(REPO, &d).unwrap()];
        let s = p
            .verify(REPO, &Origin::Registry(REPO.into()), &d, &sigs)
            .unwrap();
        assert_eq!(s.fingerprint, good.public().fingerprint());
        assert_eq!(s.identity, REPO);
    }

    /// A file's (or URL's) signatures that verify must name one identity:
    /// else its source could have it installed as whichever publisher's it
    /// listed first (found by review). From a registry only the
    /// repository's own count, so there it cannot arise.
    #[test]
    fn signatures_that_verify_as_two_identities_are_refused() {
        let acme = SigningKey::generate().unwrap();
        let community = SigningKey::generate().unwrap();
        let d = Digest::of(b"pkg");
        let mut p = TrustPolicy::from_keys("ghcr.io/acme/*", vec![acme.public().clone()]);
        p.rules.extend(
            TrustPolicy::from_keys("ghcr.io/community/*", vec![community.public().clone()]).rules,
        );
        let file = Origin::File("echo.oci.tar".into());
        let both = vec![
            community.sign("ghcr.io/community/echo", &d).unwrap(),
            acme.sign("ghcr.io/acme/echo", &d).unwrap(),
        ];
        let e = p
            .verify("echo.oci.tar", &file, &d, &both)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("as both ghcr.io/community/echo and ghcr.io/acme/echo"),
            "{e}"
        );
        // One identity, however many signatures: its signer.
        let s = p.verify("echo.oci.tar", &file, &d, &both[1..]).unwrap();
        assert_eq!(s.identity, "ghcr.io/acme/echo");
        let twice = vec![both[1].clone(), acme.sign("ghcr.io/acme/echo", &d).unwrap()];
        assert!(p.verify("echo.oci.tar", &file, &d, &twice).is_ok());
    }

    #[test]
    fn unsigned_untrusted_mismatched_and_misnamed_are_refused_with_the_reason() {
        let k = SigningKey::generate().unwrap();
        let d = Digest::of(b"pkg");
        let p = TrustPolicy::from_keys("127.0.0.1:*/tools/*", vec![k.public().clone()]);
        let o = Origin::Registry(REPO.into());
        let e = p.verify(REPO, &o, &d, &[]).unwrap_err().to_string();
        assert!(
            e.contains("it is not signed")
                && e.contains("[[trust]]")
                && e.contains("--allow-unsigned"),
            "{e}"
        );
        let e = p
            .verify(
                REPO,
                &o,
                &d,
                &[SigningKey::generate().unwrap().sign(REPO, &d).unwrap()],
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("none of the keys trusted for it verifies"),
            "{e}"
        );
        assert!(e.contains("source = \"127.0.0.1:5000/tools/*\""), "{e}");
        let e = p
            .verify(
                REPO,
                &o,
                &d,
                &[k.sign(REPO, &Digest::of(b"other")).unwrap()],
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("another artifact"), "{e}");
        let e = p
            .verify(
                REPO,
                &o,
                &d,
                &[k.sign("127.0.0.1:5000/tools/other", &d).unwrap()],
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not 127.0.0.1:5000/tools/echo where the package was pulled from"),
            "{e}"
        );
        let e = p
            .verify(
                "x",
                &Origin::File("x.tar".into()),
                &d,
                &[k.sign("evil.io/x/y", &d).unwrap()],
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("no [[trust]] source"), "{e}");
    }

    /// A keyless signature as cosign attaches it, for `identity` and `d`.
    fn keyless_sig(s: &crate::keyless::testing::Sigstore, identity: &str, d: &Digest) -> Signature {
        use crate::keyless::testing::*;
        let payload = SimpleSigning::new(identity, d).to_bytes();
        let m = s.sign(&payload, &Leaf::default(), T0 + 60);
        Signature {
            payload,
            signature: m.signature,
            certificate: Some(m.certificate),
            chain: Some(m.chain),
            bundle: Some(m.bundle),
        }
    }

    #[test]
    fn a_keyless_signature_counts_only_for_a_trusted_issuer_and_subject() {
        use crate::keyless::testing::*;
        let s = Sigstore::new();
        let root = || TrustedRoot::from_json(s.trusted_root(None).as_bytes(), "root.json").unwrap();
        let d = Digest::of(b"pkg");
        let o = Origin::Registry(REPO.into());
        let sig = keyless_sig(&s, REPO, &d);
        let policy = |issuer: &str, subject: &str| {
            TrustPolicy::from_keyless(
                "127.0.0.1:*/tools/*",
                vec![KeylessIdentity::new(issuer, subject)],
                root(),
            )
        };

        let signer = policy(ISSUER, "https://github.com/acme/**")
            .verify(REPO, &o, &d, std::slice::from_ref(&sig))
            .unwrap();
        assert_eq!(signer.identity, REPO);
        assert!(
            signer.key.contains(SUBJECT) && signer.key.contains(ISSUER),
            "{}",
            signer.key
        );
        assert!(signer.fingerprint.starts_with("sha256:"));

        // `*` stays within one path segment: the workflow URL is deeper.
        for (issuer, subject) in [
            (ISSUER, "https://github.com/acme/*"),
            (ISSUER, "https://github.com/evil/**"),
            ("https://accounts.google.com", "https://github.com/acme/**"),
        ] {
            let e = policy(issuer, subject)
                .verify(REPO, &o, &d, std::slice::from_ref(&sig))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("none of the keyless identities trusted for it matches")
                    && e.contains(SUBJECT),
                "{e}"
            );
        }

        // The build's repository, when the identity names one.
        let with_repo = |repo: &str| {
            TrustPolicy::from_keyless(
                "127.0.0.1:*/tools/*",
                vec![
                    KeylessIdentity::new(ISSUER, "https://github.com/acme/**")
                        .with_source_repository(repo),
                ],
                root(),
            )
        };
        assert!(
            with_repo("https://github.com/acme/*")
                .verify(REPO, &o, &d, std::slice::from_ref(&sig))
                .is_ok()
        );
        let e = with_repo("https://github.com/evil/*")
            .verify(REPO, &o, &d, std::slice::from_ref(&sig))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("source repository {REPOSITORY}")),
            "{e}"
        );

        // Signed for another digest, or naming another repository.
        for (other, expect) in [
            (
                keyless_sig(&s, REPO, &Digest::of(b"other")),
                "another artifact",
            ),
            (
                keyless_sig(&s, "127.0.0.1:5000/tools/other", &d),
                "where the package was pulled from",
            ),
        ] {
            let e = policy(ISSUER, "**")
                .verify(REPO, &o, &d, &[other])
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{e}");
        }

        // Trusted keys only: the refusal says what the signature claims.
        let k = SigningKey::generate().unwrap();
        let e = TrustPolicy::from_keys("127.0.0.1:*/tools/*", vec![k.public().clone()])
            .verify(REPO, &o, &d, std::slice::from_ref(&sig))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("trusts keyless identities") && e.contains(SUBJECT) && e.contains(ISSUER),
            "{e}"
        );

        // Another deployment's trust root.
        let other = Sigstore::new();
        let e = TrustPolicy::from_keyless(
            "**",
            vec![KeylessIdentity::new("**", "**")],
            TrustedRoot::from_json(other.trusted_root(None).as_bytes(), "other.json").unwrap(),
        )
        .verify(REPO, &o, &d, &[sig])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("does not verify against the trust root other.json")
                && e.contains("does not list"),
            "{e}"
        );
    }

    #[test]
    fn a_tampered_signature_payload_does_not_verify() {
        let k = SigningKey::generate().unwrap();
        let d = Digest::of(b"pkg");
        let p = TrustPolicy::from_keys("**", vec![k.public().clone()]);
        let mut s = k.sign(REPO, &d).unwrap();
        let forged = SimpleSigning::new(REPO, &d);
        let mut v = serde_json::to_value(&forged).unwrap();
        v["optional"] = serde_json::json!({"x": 1});
        s.payload = serde_json::to_vec(&v).unwrap().into();
        assert!(
            p.verify(REPO, &Origin::Registry(REPO.into()), &d, &[s])
                .is_err()
        );
    }
}
