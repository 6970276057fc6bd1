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

    fn matches(&self, scope: &str, tool: &str, args: &Value) -> bool {
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

/// The argument condition shared by every rule language (host policy, agent
/// hooks): with `arg` (a JSON pointer) the value there must exist; its text
/// (or, without `arg`, the whole arguments as JSON) must contain `contains`
/// and match the glob `pattern`, each when given.
pub fn args_match(
    arg: Option<&str>,
    contains: Option<&str>,
    pattern: Option<&str>,
    args: &Value,
) -> bool {
    let text = match arg {
        Some(ptr) => match args.pointer(ptr) {
            None => return false,
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        },
        None if contains.is_none() && pattern.is_none() => return true,
        None => args.to_string(),
    };
    contains.is_none_or(|c| text.contains(c)) && pattern.is_none_or(|p| glob(p, &text))
}

impl Policy {
    /// The verdict on calling `tool` in `scope` with `args`.
    pub fn decide(&self, scope: &str, tool: &str, args: &Value) -> Decision {
        self.decide_by(scope, tool, args).0
    }

    /// [`Policy::decide`], with the index (0-based, in `rules`) of the rule
    /// that decided; `None` when no rule matched (the default decided).
    pub fn decide_by(&self, scope: &str, tool: &str, args: &Value) -> (Decision, Option<usize>) {
        for (i, r) in self.rules.iter().enumerate() {
            if r.matches(scope, tool, args) {
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
