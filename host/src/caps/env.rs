//! The `env` unit: environment variables a tool sees.
//!
//! - parse: `[env]` of the manifest: `set` (explicit values) and `pass`
//!   (names of host variables passed through);
//! - narrow: the operator's `[env] pass` allow-list (globs); toolhost's own
//!   variables (`TOOLHOST_*`: tokens, keys, paths) are never passed, whatever
//!   any list says. A name outside the list fails to load, naming the
//!   setting;
//! - prepare, once at load: read the passed variables' values (unset ones
//!   are left out);
//! - apply, per call: exactly those variables, nothing inherited.
//!
//! Must not touch: the host's environment beyond the names granted here.

use super::AllowList;
use crate::diagnostic::Collector;
use crate::manifest::schema;
use std::ops::Range;

/// What a manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EnvRequest {
    /// Explicit `NAME = value` pairs.
    pub set: Vec<(String, String)>,
    /// Host variables to pass through, by name.
    pub pass: Vec<String>,
    pub(crate) pass_spans: Vec<Option<Range<usize>>>,
}

/// The operator's cap on passed variables (`[env] pass` in the host config).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EnvCaps {
    /// Globs (`*` any run) of the host variables a manifest may pass;
    /// unrestricted: any but toolhost's own.
    pub pass: AllowList<String>,
}

impl EnvCaps {
    /// Only variables matching one of `globs` may be passed.
    pub fn with_pass<I: IntoIterator<Item = S>, S: Into<String>>(mut self, globs: I) -> Self {
        self.pass = AllowList::only(globs.into_iter().map(Into::into));
        self
    }

    /// Both caps at once: a name must be allowed by each.
    pub fn intersect(&self, other: &EnvCaps) -> EnvCaps {
        EnvCaps {
            pass: self.pass.intersect(&other.pass),
        }
    }

    /// Whether variable `name` may be passed through.
    pub fn allows(&self, name: &str) -> bool {
        !is_own(name) && self.pass.allows(|g| crate::policy::glob(g, name))
    }
}

/// toolhost's own variables: never visible to a tool.
fn is_own(name: &str) -> bool {
    name.starts_with("TOOLHOST_")
}

/// The variables of one component, resolved.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prepared {
    pub(crate) vars: Vec<(String, String)>,
}

/// A name the operator does not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvRefusal {
    pub(crate) name: String,
    pub(crate) message: String,
    pub(crate) hint: String,
}

/// Not empty, no `=`, no control or bidi characters (a name is shown in the
/// operator's log and review: a newline in one forged a log line; found
/// by review).
fn valid_name(n: &str) -> bool {
    !n.is_empty() && !n.contains('=') && !n.chars().any(crate::audit::forges)
}

/// Read `[env]`; every problem is recorded.
pub(crate) fn parse(raw: &schema::Env, cx: &mut Collector<'_>) -> EnvRequest {
    let mut req = EnvRequest::default();
    for (k, v) in &raw.set {
        if !valid_name(k) {
            cx.error(
                Some(v.span()),
                format!(
                    "`{}` is not a valid environment variable name",
                    crate::audit::escape_controls(k)
                ),
                None,
            );
            continue;
        }
        if v.get_ref().contains('\0') {
            cx.error(
                Some(v.span()),
                format!("the value of `{k}` contains a NUL byte"),
                None,
            );
            continue;
        }
        req.set.push((k.clone(), v.get_ref().clone()));
    }
    for name in &raw.pass {
        let n = name.get_ref();
        if !valid_name(n) {
            cx.error(
                Some(name.span()),
                format!(
                    "`{}` is not a valid environment variable name",
                    crate::audit::escape_controls(n)
                ),
                None,
            );
        } else if req.set.iter().any(|(k, _)| k == n) {
            cx.error(
                Some(name.span()),
                format!("`{n}` is both set and passed through"),
                Some("keep one".into()),
            );
        } else if req.pass.iter().any(|p| p == n) {
            cx.error(Some(name.span()), format!("`{n}` is passed twice"), None);
        } else {
            req.pass.push(n.clone());
            req.pass_spans.push(Some(name.span()));
        }
    }
    req
}

/// Narrow by the operator's caps and read the passed values.
pub(crate) fn prepare(req: &EnvRequest, caps: &EnvCaps) -> Result<Prepared, Vec<EnvRefusal>> {
    let refused: Vec<EnvRefusal> = req
        .pass
        .iter()
        .filter(|n| !caps.allows(n))
        .map(|n| EnvRefusal {
            name: n.clone(),
            message: format!("passing host variable `{n}` is not allowed"),
            hint: if is_own(n) {
                "toolhost's own variables (TOOLHOST_*) are never passed to tools".into()
            } else {
                format!("the host config's `[env] pass` allows {}", caps.pass)
            },
        })
        .collect();
    if !refused.is_empty() {
        return Err(refused);
    }
    let mut vars = req.set.clone();
    for n in &req.pass {
        if let Ok(v) = std::env::var(n) {
            vars.push((n.clone(), v));
        }
    }
    Ok(Prepared { vars })
}

impl Prepared {
    /// Exactly these variables; nothing inherited.
    pub(crate) fn apply(&self, b: &mut wasmtime_wasi::WasiCtxBuilder) {
        b.envs(&self.vars);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(pass: &[&str]) -> EnvRequest {
        EnvRequest {
            set: vec![("GREETING".into(), "hi".into())],
            pass: pass.iter().map(|s| s.to_string()).collect(),
            pass_spans: vec![None; pass.len()],
        }
    }

    #[test]
    fn toolhosts_own_variables_never_pass() {
        let e = prepare(&asking(&["TOOLHOST_BEARER_TOKEN"]), &EnvCaps::default()).unwrap_err();
        assert!(e[0].hint.contains("never"), "{e:?}");
        let everything = EnvCaps::default().with_pass(["*"]);
        assert!(!everything.allows("TOOLHOST_JWT_KEY"));
        assert!(everything.allows("LANG"));
    }

    #[test]
    fn the_operator_list_narrows_and_is_named() {
        let caps = EnvCaps::default().with_pass(["LANG", "LC_*"]);
        assert!(prepare(&asking(&["LANG", "LC_ALL"]), &caps).is_ok());
        let e = prepare(&asking(&["HOME"]), &caps).unwrap_err();
        assert_eq!(e[0].name, "HOME");
        assert!(e[0].hint.contains("[env] pass"), "{e:?}");
        let tenant = EnvCaps::default().with_pass(["LC_*"]);
        let both = caps.intersect(&tenant);
        assert!(!both.allows("LANG"));
        assert!(both.allows("LC_ALL"));
    }

    #[test]
    fn set_values_come_first_and_unset_passes_are_left_out() {
        let p = prepare(&asking(&["X_TEST_SURELY_UNSET_XYZ"]), &EnvCaps::default()).unwrap();
        assert_eq!(p.vars, vec![("GREETING".to_string(), "hi".to_string())]);
    }
}
