//! The operator's trust policy for installed packages: `[[trust]]` tables in
//! the host config, each naming which package sources (a
//! `registry/repository` pattern) are trusted when signed by which keys or
//! keyless identities.
//!
//! This module owns the *shape* of the policy, its checks when the host
//! config is read, and its pattern matching only. It reads no key, verifies
//! no signature and knows nothing of OCI: the `toolhost-package` crate loads
//! the keys it names and decides. Nothing here is consulted when a tool
//! loads or runs.

use crate::diagnostic::Collector;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// One `[[trust]]` entry of the host config:
///
/// ```toml
/// [[trust]]
/// source = "ghcr.io/acme/*"          # which packages (registry/repository pattern)
/// keys = ["keys/acme.pub", "keys/acme-2027.pub"]   # PEM public keys (cosign.pub format)
/// keyless = [{ issuer = "https://token.actions.githubusercontent.com",
///              subject = "https://github.com/acme/tools/.github/workflows/release.yml@refs/tags/*",
///              source-repository = "https://github.com/acme/tools" }]
/// trusted-root = "keys/trusted_root.json"   # Sigstore's trust root, for `keyless`
/// ```
///
/// `source` is matched against the package's signed identity, a
/// `registry/repository` name (for a registry install it must also be where
/// the package came from). In patterns `*` matches within one path segment
/// (no `/`), `**` matches anything; every other character matches itself.
/// Relative key paths are resolved against the config file's directory.
/// Two keys in one entry are how a key rotation is done: both verify during
/// the rollover, then the old one is removed. `keyless` identities need
/// `trusted-root`, the Sigstore trust root (Fulcio's certificate authorities
/// and Rekor's keys) their certificates and log entries are checked against,
/// offline.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustRule {
    /// The `source` pattern, as written.
    pub source: String,
    /// Public key files (PEM `PUBLIC KEY`), resolved.
    pub keys: Vec<PathBuf>,
    /// Keyless identities (Fulcio certificates): issuer and subject patterns.
    pub keyless: Vec<KeylessIdentity>,
    /// The Sigstore trust root (`trusted_root.json`) keyless signatures are
    /// verified against, resolved; set whenever `keyless` is not empty.
    pub trusted_root: Option<PathBuf>,
}

/// A keyless (certificate-based) signer: the OIDC issuer that vouched for the
/// signer (exact: a pattern would let any issuer Fulcio accepts vouch), the
/// signer's identity (an e-mail or a workflow URL) and, optionally, the
/// repository a CI build ran in; the last two are patterns with the same
/// `*`/`**` syntax as [`TrustRule::source`].
///
/// For GitHub Actions the subject is the URL of the *workflow file* at a
/// ref, which may be a reusable workflow anyone can call from their own
/// repository: pin the subject to a tag or branch
/// (`…/release.yml@refs/tags/*`) and set `source-repository`, which is
/// the repository that ran the build (Fulcio's extension
/// 1.3.6.1.4.1.57264.1.12).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeylessIdentity {
    /// The OIDC issuer, exact.
    pub issuer: String,
    /// The signer identity pattern.
    pub subject: String,
    /// The pattern of the repository the signing build ran in; when set, a
    /// certificate without that extension does not match.
    #[serde(default, rename = "source-repository")]
    pub source_repository: Option<String>,
}

impl TrustRule {
    /// A rule trusting `keys` for packages matching `source` (no check of
    /// the pattern: for embedders building a policy in code).
    pub fn new(source: impl Into<String>, keys: Vec<PathBuf>) -> TrustRule {
        TrustRule {
            source: source.into(),
            keys,
            keyless: Vec::new(),
            trusted_root: None,
        }
    }

    /// Also trust `keyless` identities, their signatures verified against
    /// the Sigstore trust root at `trusted_root`.
    pub fn with_keyless(
        mut self,
        keyless: Vec<KeylessIdentity>,
        trusted_root: impl Into<PathBuf>,
    ) -> TrustRule {
        self.keyless = keyless;
        self.trusted_root = Some(trusted_root.into());
        self
    }

    /// Whether this rule covers the package named `identity`
    /// (`registry/repository`, no tag or digest).
    pub fn covers(&self, identity: &str) -> bool {
        glob_match(&self.source, identity)
    }
}

impl KeylessIdentity {
    /// An identity: certificates from an issuer matching `issuer` for a
    /// signer matching `subject` (no check of the patterns).
    pub fn new(issuer: impl Into<String>, subject: impl Into<String>) -> KeylessIdentity {
        KeylessIdentity {
            issuer: issuer.into(),
            subject: subject.into(),
            source_repository: None,
        }
    }

    /// Also require the build's repository to match `pattern`.
    pub fn with_source_repository(mut self, pattern: impl Into<String>) -> KeylessIdentity {
        self.source_repository = Some(pattern.into());
        self
    }

    /// Whether a certificate from `issuer` for `subject`, naming
    /// `source_repository` (if any), matches.
    pub fn matches(&self, issuer: &str, subject: &str, source_repository: Option<&str>) -> bool {
        self.issuer == issuer
            && glob_match(&self.subject, subject)
            && match (&self.source_repository, source_repository) {
                (None, _) => true,
                (Some(p), Some(r)) => glob_match(p, r),
                (Some(_), None) => false,
            }
    }
}

impl fmt::Display for TrustRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "source {:?}", self.source)
    }
}

pub(crate) const TRUST_KEYS: &str = "source, keys, keyless, trusted-root";

/// `[[trust]]` as written in the file, before paths are resolved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrustRule {
    source: Spanned<String>,
    #[serde(default)]
    keys: Vec<Spanned<String>>,
    #[serde(default)]
    keyless: Vec<Spanned<KeylessIdentity>>,
    #[serde(default, rename = "trusted-root")]
    trusted_root: Option<Spanned<String>>,
}

impl RawTrustRule {
    /// Check the patterns and resolve relative key paths against `base`
    /// (the config file's directory); every problem is recorded.
    pub(crate) fn resolve(
        self,
        base: &Path,
        span: std::ops::Range<usize>,
        cx: &mut Collector<'_>,
    ) -> Option<TrustRule> {
        let mut ok = true;
        if let Err(e) = check_pattern(self.source.get_ref()) {
            cx.error(Some(self.source.span()), format!("source: {e}"), None);
            ok = false;
        }
        if self.keys.is_empty() && self.keyless.is_empty() {
            cx.error(
                Some(span.clone()),
                format!("[[trust]] for {:?} trusts nobody", self.source.get_ref()),
                Some(
                    "give `keys = [\"signer.pub\"]` and/or `keyless = [{ issuer = \"…\", subject = \"…\" }]`"
                        .into(),
                ),
            );
            ok = false;
        }
        match (&self.trusted_root, self.keyless.is_empty()) {
            (None, false) => {
                cx.error(
                    Some(span.clone()),
                    format!(
                        "[[trust]] for {:?} trusts keyless identities but names no trust root to verify them against",
                        self.source.get_ref()
                    ),
                    Some(
                        "add `trusted-root = \"trusted_root.json\"`: Sigstore's trust root (from its TUF repository, or `cosign trusted-root create` for a private deployment)"
                            .into(),
                    ),
                );
                ok = false;
            }
            (Some(r), true) => {
                cx.error(
                    Some(r.span()),
                    "`trusted-root` is only used for `keyless` identities, and this entry has none",
                    Some(
                        "add `keyless = [{ issuer = \"…\", subject = \"…\" }]`, or remove it"
                            .into(),
                    ),
                );
                ok = false;
            }
            (Some(r), false) if r.get_ref().trim().is_empty() => {
                cx.error(Some(r.span()), "empty trusted-root path", None);
                ok = false;
            }
            _ => {}
        }
        for k in &self.keys {
            if k.get_ref().trim().is_empty() {
                cx.error(Some(k.span()), "empty key path", None);
                ok = false;
            }
        }
        for k in &self.keyless {
            let id = k.get_ref();
            for (what, p) in [
                ("issuer", Some(&id.issuer)),
                ("subject", Some(&id.subject)),
                ("source-repository", id.source_repository.as_ref()),
            ] {
                if let Some(Err(e)) = p.map(|p| check_pattern(p)) {
                    cx.error(Some(k.span()), format!("keyless {what}: {e}"), None);
                    ok = false;
                }
            }
            if id.issuer.contains('*') {
                cx.error(
                    Some(k.span()),
                    format!("keyless issuer `{}` is a pattern", id.issuer),
                    Some(
                        "name the OIDC issuer exactly (e.g. `https://token.actions.githubusercontent.com`): with a pattern, any issuer Fulcio accepts could vouch for the subject"
                            .into(),
                    ),
                );
                ok = false;
            }
        }
        ok.then(|| TrustRule {
            source: self.source.into_inner(),
            keys: self
                .keys
                .into_iter()
                .map(|k| base.join(k.into_inner()))
                .collect(),
            keyless: self.keyless.into_iter().map(Spanned::into_inner).collect(),
            trusted_root: self.trusted_root.map(|r| base.join(r.into_inner())),
        })
    }
}

fn check_pattern(p: &str) -> Result<(), String> {
    if p.trim().is_empty() {
        return Err("empty pattern".into());
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{p}` contains whitespace"));
    }
    if p.contains("***") {
        return Err(format!("`{p}`: use `*` (one segment) or `**` (anything)"));
    }
    Ok(())
}

/// Match `text` against `pattern`: `**` matches any run of characters, `*`
/// any run without `/`, everything else itself (case-sensitive, as registry
/// repositories are lower-case anyway).
///
/// Linear in the pattern times the text: the text may be a signer's (a
/// keyless certificate's subject), so no backtracking that a long subject
/// and a pattern with several wildcards could make polynomial.
fn glob_match(pattern: &str, text: &str) -> bool {
    enum Tok {
        Any,
        Segment,
        Byte(u8),
    }
    let p = pattern.as_bytes();
    let mut toks = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' if p.get(i + 1) == Some(&b'*') => {
                toks.push(Tok::Any);
                i += 2;
            }
            b'*' => {
                toks.push(Tok::Segment);
                i += 1;
            }
            c => {
                toks.push(Tok::Byte(c));
                i += 1;
            }
        }
    }
    let t = text.as_bytes();
    // `at[j]`: the pattern's tokens so far can match exactly `t[..j]`.
    let mut at = vec![false; t.len() + 1];
    at[0] = true;
    for tok in &toks {
        let mut next = vec![false; t.len() + 1];
        match tok {
            Tok::Byte(c) => {
                for j in 0..t.len() {
                    next[j + 1] = at[j] && t[j] == *c;
                }
            }
            Tok::Any => {
                let mut reach = false;
                for j in 0..=t.len() {
                    reach |= at[j];
                    next[j] = reach;
                }
            }
            Tok::Segment => {
                let mut reach = false;
                for j in 0..=t.len() {
                    reach |= at[j];
                    next[j] = reach;
                    if j < t.len() && t[j] == b'/' {
                        reach = false;
                    }
                }
            }
        }
        at = next;
    }
    at[t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_in_one_segment_and_double_star_crosses() {
        assert!(glob_match("ghcr.io/acme/*", "ghcr.io/acme/echo"));
        assert!(!glob_match("ghcr.io/acme/*", "ghcr.io/acme/team/echo"));
        assert!(!glob_match("ghcr.io/acme/*", "ghcr.io/acmex/echo"));
        assert!(glob_match("ghcr.io/acme/**", "ghcr.io/acme/team/echo"));
        assert!(glob_match(
            "127.0.0.1:*/tools/*",
            "127.0.0.1:5000/tools/echo"
        ));
        assert!(!glob_match(
            "127.0.0.1:*/tools/*",
            "127.0.0.1:5000/evil/tools/echo"
        ));
        assert!(glob_match("**", "anything/at/all"));
        assert!(glob_match("a*b*c", "aXbYc") && !glob_match("a*b*c", "aXb/Yc"));
        assert!(glob_match("**/x", "a/b/x") && glob_match("*", "") && !glob_match("*", "/"));
        assert!(glob_match("*/**", "a/") && !glob_match("a*", "ba"));
        // Many wildcards against a long text that almost matches: linear,
        // where backtracking took time exponential in the wildcards.
        let long = "a".repeat(5000);
        assert!(!glob_match(&"**a".repeat(40), &format!("{long}b")));
        assert!(glob_match("ghcr.io/acme/echo", "ghcr.io/acme/echo"));
        assert!(!glob_match("ghcr.io/acme/echo", "ghcr.io/acme/echo2"));
    }

    #[test]
    fn trust_tables_are_checked_and_key_paths_resolve_against_the_config() {
        let c = crate::HostConfig::parse(
            Path::new("/etc/toolhost/host.toml"),
            "[[trust]]\nsource = \"ghcr.io/acme/*\"\nkeys = [\"k.pub\", \"/abs/k2.pub\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.trust[0].keys,
            vec![
                PathBuf::from("/etc/toolhost/k.pub"),
                PathBuf::from("/abs/k2.pub")
            ]
        );
        assert!(c.trust[0].covers("ghcr.io/acme/echo"));
        let e = crate::HostConfig::parse(
            Path::new("t.toml"),
            "[[trust]]\nsource = \"x/*\"\n\n[[trust]]\nsource = \"a b\"\nkeys = [\"k\"]\nkeyz = 1\n",
        )
        .unwrap_err();
        let text = e.render();
        assert!(text.contains("trusts nobody"), "{text}");
        assert!(text.contains("contains whitespace"), "{text}");
        assert!(text.contains("unknown key `keyz`"), "{text}");
    }

    #[test]
    fn keyless_identities_need_a_trust_root_and_a_trust_root_needs_them() {
        let c = crate::HostConfig::parse(
            Path::new("/etc/toolhost/host.toml"),
            "[[trust]]\nsource = \"ghcr.io/acme/*\"\nkeyless = [{ issuer = \"https://i\", subject = \"https://github.com/acme/**\" }]\ntrusted-root = \"trusted_root.json\"\n",
        )
        .unwrap();
        assert_eq!(
            c.trust[0].trusted_root.as_deref(),
            Some(Path::new("/etc/toolhost/trusted_root.json"))
        );
        let k = &c.trust[0].keyless[0];
        let wf = "https://github.com/acme/tools/.github/workflows/r.yml@refs/tags/v1";
        assert!(k.matches("https://i", wf, None));
        assert!(!k.matches("https://i2", wf, None));
        let k = k
            .clone()
            .with_source_repository("https://github.com/acme/*");
        assert!(k.matches("https://i", wf, Some("https://github.com/acme/tools")));
        assert!(!k.matches("https://i", wf, Some("https://github.com/evil/tools")));
        assert!(!k.matches("https://i", wf, None));
        let e = crate::HostConfig::parse(
            Path::new("t.toml"),
            "[[trust]]\nsource = \"a/*\"\nkeyless = [{ issuer = \"i\", subject = \"s\" }]\n\n[[trust]]\nsource = \"c/*\"\nkeyless = [{ issuer = \"https://*\", subject = \"s\", source-repository = \"a b\" }]\ntrusted-root = \"r.json\"\n\n[[trust]]\nsource = \"b/*\"\nkeys = [\"k\"]\ntrusted-root = \"r.json\"\n",
        )
        .unwrap_err();
        let text = e.render();
        assert!(
            text.contains("names no trust root") && text.contains("trusted-root = "),
            "{text}"
        );
        assert!(
            text.contains("only used for `keyless` identities"),
            "{text}"
        );
        assert!(
            text.contains("keyless issuer `https://*` is a pattern"),
            "{text}"
        );
        assert!(
            text.contains("keyless source-repository: `a b` contains whitespace"),
            "{text}"
        );
    }
}
