//! Policy: whether a call that names an existing tool may run. Declarative
//! allow/deny rules (tool name globs, per scope, optionally matching an
//! argument), evaluated in order; the first match decides. With no allow
//! rule for a scope, every tool of that scope is allowed. The one rule
//! language of toolhost: the host config's `[[rule]]`, an embedder's
//! [`Policy`], and the agent transport's rules (checked before every tool
//! use of the model, built-in tools included) are all [`Rule`]s.
//!
//! Policy sees the scope, the tool name and the arguments; it never runs a
//! tool and never widens what the catalog exposes.

use serde::Deserialize;
use serde_json::Value;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Let the call run.
    Allow,
    /// Refuse it.
    Deny,
}

/// The keys a `[[rule]]` may have, for "unknown key" hints.
pub(crate) const RULE_KEYS: &str = "effect, tool, scope, arg, contains, pattern, reason";

/// One rule, e.g. `{ effect = "deny", tool = "write_*", reason = "read-only session" }`
/// or `{ effect = "deny", tool = "http_fetch", arg = "/url", contains = "internal", reason = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Allow or deny.
    pub effect: Effect,
    /// Glob on the tool name (`*` matches any run of characters).
    pub tool: String,
    /// Glob on the scope; any scope when absent.
    #[serde(default)]
    pub scope: Option<String>,
    /// JSON pointer into the arguments; with `contains`, the rule matches
    /// only when that value's text contains the string.
    #[serde(default)]
    pub arg: Option<String>,
    /// See `arg`.
    #[serde(default)]
    pub contains: Option<String>,
    /// With `arg`, a glob the value must match (`*` any run of characters).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Said to the caller when the rule denies.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Rules, evaluated in order; the first that matches decides.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The rules.
    pub rules: Vec<Rule>,
}

/// The verdict on one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The call may run.
    Allow,
    /// It may not, for this reason.
    Deny(String),
}

/// `*`-only glob match.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first)
        || !s[first.len()..].ends_with(last)
        || s.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl Rule {
    /// A rule that refuses the tools `tool` (a glob) matches, telling the
    /// caller `reason`.
    pub fn deny(tool: impl Into<String>, reason: impl Into<String>) -> Rule {
        Rule {
            effect: Effect::Deny,
            tool: tool.into(),
            scope: None,
            arg: None,
            contains: None,
            pattern: None,
            reason: Some(reason.into()),
        }
    }

    /// A rule that lets the tools `tool` (a glob) run. With any allow rule,
    /// what no rule allows is refused.
    pub fn allow(tool: impl Into<String>) -> Rule {
        Rule {
            effect: Effect::Allow,
            tool: tool.into(),
            scope: None,
            arg: None,
            contains: None,
            pattern: None,
            reason: None,
        }
    }

    /// Only for scopes `scope` (a glob) matches.
    pub fn in_scope(mut self, scope: impl Into<String>) -> Rule {
        self.scope = Some(scope.into());
        self
    }

    /// Only when the argument at JSON pointer `pointer` exists (and meets
    /// `containing` / `matching`, when given).
    pub fn with_arg(mut self, pointer: impl Into<String>) -> Rule {
        self.arg = Some(pointer.into());
        self
    }

    /// Only when the argument (or, without [`Rule::with_arg`], the whole
    /// arguments as JSON) contains `text`.
    pub fn containing(mut self, text: impl Into<String>) -> Rule {
        self.contains = Some(text.into());
        self
    }

    /// Only when the argument (or the whole arguments as JSON) matches the
    /// glob `pattern`.
    pub fn matching(mut self, pattern: impl Into<String>) -> Rule {
        self.pattern = Some(pattern.into());
        self
    }

    fn matches(&self, scope: &str, tool: &str, args: &Args<'_>) -> bool {
        if !glob(&self.tool, tool) || self.scope.as_deref().is_some_and(|s| !glob(s, scope)) {
            return false;
        }
        args_match(
            self.arg.as_deref(),
            self.contains.as_deref(),
            self.pattern.as_deref(),
            args,
        )
    }
}

/// The arguments one decision looks at, their whole text (in one
/// spelling) made at most once, however many rules look at it. Each rule
/// made it again: 16 rules over 3 MB of floats took 45 ms each, before
/// any of it was charged to the call (found by review).
/// So is each value an `arg` pointer names that is not a string (the
/// review of the fix: 16 rules on `arg = "/data"` over 3 MB of floats cost
/// what they did before).
pub(crate) struct Args<'a> {
    value: &'a Value,
    text: std::cell::OnceCell<std::rc::Rc<str>>,
    at: std::cell::RefCell<Vec<(String, std::rc::Rc<str>)>>,
}

impl<'a> Args<'a> {
    pub(crate) fn new(value: &'a Value) -> Args<'a> {
        Args {
            value,
            text: std::cell::OnceCell::new(),
            at: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// The whole arguments as JSON text, in one spelling.
    fn text(&self) -> std::rc::Rc<str> {
        self.text
            .get_or_init(|| one_spelling(self.value).to_string().into())
            .clone()
    }

    /// The text of the value at `ptr` (a string as it is, anything else as
    /// JSON in one spelling); `None` if there is none.
    fn text_at(&self, ptr: &str) -> Option<Text<'a>> {
        if ptr.is_empty() {
            return Some(Text::Shared(self.text()));
        }
        let v = self.value.pointer(ptr)?;
        if let Value::String(s) = v {
            return Some(Text::Borrowed(s));
        }
        let mut at = self.at.borrow_mut();
        if let Some((_, t)) = at.iter().find(|(p, _)| p == ptr) {
            return Some(Text::Shared(t.clone()));
        }
        let t: std::rc::Rc<str> = one_spelling(v).to_string().into();
        at.push((ptr.to_string(), t.clone()));
        Some(Text::Shared(t))
    }
}

/// A rule's text of the arguments: borrowed from them, or made once and
/// shared by the rules of a decision.
enum Text<'a> {
    Borrowed(&'a str),
    Shared(std::rc::Rc<str>),
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Shared(s) => s,
        }
    }
}

/// The argument condition shared by every rule language (host policy, agent
/// hooks): with `arg` (a JSON pointer) the value there must exist; its text
/// (or, without `arg`, the whole arguments as JSON) must contain `contains`
/// and match the glob `pattern`, each when given.
///
/// Numbers are matched in one spelling: a whole number written as a float
/// (`1000.0`, `1e3`, `-0.0`) is the integer it equals (`1000`, `0`), as
/// the tools that receive it read it (a typed tool's integer parameter,
/// JavaScript, a JSON Schema `integer`). Matched as serde_json prints it,
/// `{"n":1e3}` passed a rule denying `1000` and the tool ran with 1000
/// (found by review).
pub(crate) fn args_match(
    arg: Option<&str>,
    contains: Option<&str>,
    pattern: Option<&str>,
    args: &Args<'_>,
) -> bool {
    let text = match arg {
        Some(ptr) => match args.text_at(ptr) {
            None => return false,
            Some(t) => t,
        },
        None if contains.is_none() && pattern.is_none() => return true,
        None => Text::Shared(args.text()),
    };
    contains.is_none_or(|c| text.contains(c)) && pattern.is_none_or(|p| glob(p, &text))
}

/// `v` with every whole-number float as the integer it equals (see
/// [`args_match`]); borrowed when it has none, so arguments without floats
/// cost one walk and no copy.
fn one_spelling(v: &Value) -> std::borrow::Cow<'_, Value> {
    fn any(v: &Value) -> bool {
        match v {
            Value::Number(n) => whole(n).is_some(),
            Value::Array(a) => a.iter().any(any),
            Value::Object(o) => o.values().any(any),
            _ => false,
        }
    }
    fn respell(v: &mut Value) {
        match v {
            Value::Number(n) => {
                if let Some(i) = whole(n) {
                    *n = i;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(respell),
            Value::Object(o) => o.values_mut().for_each(respell),
            _ => {}
        }
    }
    if !any(v) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut v = v.clone();
    respell(&mut v);
    std::borrow::Cow::Owned(v)
}

/// The integer a float holding a whole number in `i64`'s or `u64`'s range
/// equals; `None` for an integer already, a fraction, or a float past
/// both ranges (which no integer parameter takes either).
fn whole(n: &serde_json::Number) -> Option<serde_json::Number> {
    let f = n.as_f64().filter(|_| n.is_f64())?;
    if f.fract() != 0.0 {
        return None;
    }
    // `-0.0 >= 0.0`: minus zero is 0. Both bounds are powers of two, so
    // exact as floats, and every whole float below them converts exactly.
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        Some((f as u64).into())
    } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
        Some((f as i64).into())
    } else {
        None
    }
}

impl Policy {
    /// The verdict on calling `tool` in `scope` with `args`.
    pub fn decide(&self, scope: &str, tool: &str, args: &Value) -> Decision {
        self.decide_by(scope, tool, args).0
    }

    /// [`Policy::decide`], with the index (0-based, in `rules`) of the rule
    /// that decided; `None` when no rule matched (the default decided).
    pub fn decide_by(&self, scope: &str, tool: &str, args: &Value) -> (Decision, Option<usize>) {
        let args = Args::new(args);
        for (i, r) in self.rules.iter().enumerate() {
            if r.matches(scope, tool, &args) {
                let d = match r.effect {
                    Effect::Allow => Decision::Allow,
                    Effect::Deny => Decision::Deny(
                        r.reason
                            .clone()
                            .unwrap_or_else(|| format!("policy rule denies `{}`", r.tool)),
                    ),
                };
                return (d, Some(i));
            }
        }
        (self.default_decision(scope), None)
    }

    fn default_decision(&self, scope: &str) -> Decision {
        let has_allow = self.rules.iter().any(|r| {
            r.effect == Effect::Allow && r.scope.as_deref().is_none_or(|s| glob(s, scope))
        });
        if has_allow {
            Decision::Deny("not on this scope's allow list".into())
        } else {
            Decision::Allow
        }
    }

    /// Whether `tool` could ever be allowed in `scope` (argument rules aside):
    /// tools that can't are left out of listings.
    pub fn visible(&self, scope: &str, tool: &str) -> bool {
        self.visible_by(scope, tool).0
    }

    /// [`Policy::visible`], with the index of the rule that decided.
    pub fn visible_by(&self, scope: &str, tool: &str) -> (bool, Option<usize>) {
        for (i, r) in self.rules.iter().enumerate() {
            if r.arg.is_none()
                && r.contains.is_none()
                && glob(&r.tool, tool)
                && r.scope.as_deref().is_none_or(|s| glob(s, scope))
            {
                return (r.effect == Effect::Allow, Some(i));
            }
        }
        let open = !self.rules.iter().any(|r| {
            r.effect == Effect::Allow && r.scope.as_deref().is_none_or(|s| glob(s, scope))
        });
        (open, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling of a whole number is matched as the integer; a
    /// fraction, a string of digits and a float past every integer stay as
    /// they are.
    #[test]
    fn a_number_is_matched_in_one_spelling() {
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        for args in [
            r#"{"n":1000}"#,
            r#"{"n":1000.0}"#,
            r#"{"n":1e3}"#,
            r#"{"n":10000e-1}"#,
            r#"{"n":1.0e+3}"#,
        ] {
            assert!(
                args_match(Some("/n"), None, Some("1000"), &Args::new(&v(args))),
                "{args}"
            );
            assert!(
                args_match(None, Some(r#""n":1000}"#), None, &Args::new(&v(args))),
                "{args}"
            );
            assert!(
                args_match(None, None, Some(r#"*:1000}"#), &Args::new(&v(args))),
                "{args}"
            );
        }
        let nested = v(r#"{"a":[{"b":-0.0},2.5,"3.0",-4e0,1e30,1.8446744073709552e19]}"#);
        assert_eq!(
            one_spelling(&nested).to_string(),
            r#"{"a":[{"b":0},2.5,"3.0",-4,1e+30,1.8446744073709552e+19]}"#
        );
        let big = v(r#"{"n":18446744073709549568.0,"m":-9223372036854775808.0}"#);
        assert_eq!(
            one_spelling(&big).to_string(),
            r#"{"m":-9223372036854775808,"n":18446744073709549568}"#
        );
        assert!(matches!(
            one_spelling(&v(r#"{"n":1,"s":"x"}"#)),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(!args_match(
            Some("/n"),
            None,
            Some("1000"),
            &Args::new(&v(r#"{"n":1000.5}"#))
        ));
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("write_*", "write_file"));
        assert!(!glob("write_*", "read_file"));
        assert!(glob("*_file", "read_file"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxc"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn first_match_decides_and_allow_lists_close() {
        #[derive(Deserialize)]
        struct File {
            rule: Vec<Rule>,
        }
        let f: File = toml::from_str(
            r#"
            [[rule]]
            effect = "deny"
            tool = "http_fetch"
            arg = "/url"
            contains = "169.254"
            reason = "metadata"
            [[rule]]
            effect = "deny"
            tool = "http_fetch"
            arg = "/url"
            pattern = "ftp://*"
            [[rule]]
            effect = "allow"
            tool = "http_*"
            "#,
        )
        .unwrap();
        let p = Policy { rules: f.rule };
        assert_eq!(
            p.decide(
                "s",
                "http_fetch",
                &serde_json::json!({"url": "http://169.254.169.254/"})
            ),
            Decision::Deny("metadata".into())
        );
        assert_eq!(
            p.decide(
                "s",
                "http_fetch",
                &serde_json::json!({"url": "http://example.com/"})
            ),
            Decision::Allow
        );
        assert!(matches!(
            p.decide("s", "echo", &serde_json::json!({})),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.decide("s", "http_fetch", &serde_json::json!({"url": "ftp://x/"})),
            Decision::Deny(r) if r.contains("http_fetch")
        ));
        assert!(!p.visible("s", "echo"));
        assert!(p.visible("s", "http_fetch"));
    }
}
