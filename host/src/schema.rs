//! JSON Schema checks of tool arguments (before the guest runs) and of
//! structured results (after). Schemas are compiled once, at load time.
//! Remote `$ref`s are never fetched.

use serde_json::Value;
use std::sync::Arc;

/// A check of arguments that replaces the schema's own (`Ok` or the
/// errors, each naming its JSON pointer).
pub type Check = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// A compiled schema.
pub struct Schema {
    validator: jsonschema::Validator,
    check: Option<Check>,
}

/// Most memory one `pattern` may compile to (the regex program, and each
/// lazy DFA's cache).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

impl Schema {
    /// Compile a tool's schema. Its `pattern`s use the `regex` engine, not
    /// the default `fancy-regex`: matching takes time linear in the input
    /// (no backtracking, so no schema can make the host spin on a crafted
    /// argument), and each compiles within [`PATTERN_SIZE_LIMIT`]. A schema
    /// that needs backreferences or look-around is refused at load.
    pub fn compile(schema: &serde_json::Map<String, Value>) -> Result<Schema, String> {
        let v = Value::Object(schema.clone());
        jsonschema::options()
            .with_pattern_options(
                jsonschema::PatternOptions::regex()
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .dfa_size_limit(PATTERN_SIZE_LIMIT),
            )
            .build(&v)
            .map(|validator| Schema {
                validator,
                check: None,
            })
            .map_err(|e| format!("schema does not compile: {e}"))
    }

    /// Build what checks each schema at its compile (the JSON Schema
    /// draft 2020-12 meta-validator, the one for schemas that name no
    /// other `$schema`, built at the process's first compile: milliseconds,
    /// on the start's critical path) on a thread of its own, while the
    /// caller goes on (the core makes the engine's pool meanwhile). A
    /// compile that comes first waits for it rather than building another.
    /// Nothing on a single core, where the thread would only compete.
    pub(crate) fn prepare_in_background() {
        if crate::scheduler::cores() < 2 {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("toolhost-schema".into())
            .spawn(|| {
                let mut any = serde_json::Map::new();
                any.insert("type".into(), "object".into());
                let _ = Schema::compile(&any);
            });
    }

    /// Check instances with `check` instead of the schema: typed-WIT tools
    /// convert their arguments exactly as the call will, with more precise
    /// errors than a schema validator can give (see `typed`).
    pub fn with_check(mut self, check: Check) -> Schema {
        self.check = Some(check);
        self
    }

    /// `Ok` or every violation, each with the JSON pointer to the offending value.
    pub fn check(&self, instance: &Value) -> Result<(), String> {
        if let Some(check) = &self.check {
            return check(instance);
        }
        if self.validator.is_valid(instance) {
            return Ok(());
        }
        let errors: Vec<String> = self
            .validator
            .iter_errors(instance)
            .take(8)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("at `{at}`: {e}")
                }
            })
            .collect();
        Err(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn patterns_that_backtrack_are_refused_and_plain_ones_match_in_linear_time() {
        // Backreference and look-around: exponential under a backtracking
        // engine; refused at load.
        for p in [r"^(a*)*\1b$", r"^(?=(a+)+$)b"] {
            let e = Schema::compile(&schema(
                json!({"type": "object", "properties": {"s": {"type": "string", "pattern": p}}}),
            ))
            .err()
            .unwrap_or_else(|| panic!("{p} compiled"));
            assert!(e.starts_with("schema does not compile"), "{e}");
        }
        // The classic ReDoS shape without them is fine, and a long
        // non-matching input is refused at once.
        let s = Schema::compile(&schema(
            json!({"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}),
        ))
        .unwrap();
        assert!(s.check(&json!({"s": "aaaa"})).is_ok());
        let evil = format!("{}!", "a".repeat(100_000));
        let e = s.check(&json!({ "s": evil })).unwrap_err();
        assert!(e.contains("at `/s`"), "{e}");
    }

    #[test]
    fn a_pattern_too_large_to_compile_is_refused() {
        let e = Schema::compile(&schema(
            json!({"type": "string", "pattern": "(\\w{1000}){1000}"}),
        ))
        .err()
        .expect("refused");
        assert!(e.starts_with("schema does not compile"), "{e}");
    }
}
