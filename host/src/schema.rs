//! JSON Schema checks of tool arguments (before the guest runs) and of
//! structured results (after). Schemas are compiled once, at load time.
//! Remote `$ref`s are never fetched.
//!
//! Owns what a check may cost: each schema's factor (`cost`: the most
//! evaluations one value of an instance may take; a schema past
//! [`MAX_FACTOR`] is refused at load), which checks are small enough for
//! the calling thread ([`Schema::small`]; the rest the caller runs off the
//! I/O threads), the refusal of a check past [`MAX_WORK`], how much detail
//! a refusal gets, and the bound on `format: "regex"`. Must not touch:
//! where a check runs or what it is charged (`core`).

use serde_json::Value;
use std::sync::Arc;

mod cost;

/// A check of arguments that replaces the schema's own (`Ok` or the
/// errors, each naming its JSON pointer).
pub type Check = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// A compiled schema.
pub struct Schema {
    validator: jsonschema::Validator,
    check: Option<Check>,
    /// The most evaluations' weight one value of an instance may cost
    /// (`cost`): the work of a check is bounded by the instance's size
    /// times this.
    factor: u64,
    /// Whether it has `anyOf` or `oneOf` anywhere: their errors gather
    /// every branch's, even for the first violation alone.
    branches: bool,
}

/// Most a schema's factor may be: past it, checking a value could take
/// exponential time in its nesting (`cost`), and the schema is refused
/// at load. Plain tool schemas are under a hundred.
const MAX_FACTOR: u64 = 1 << 14;

/// Most work one check may take (an instance's size in values, plus a
/// value per 8 bytes of strings and keys, times the schema's factor):
/// about a second of one thread. A larger check is refused unchecked.
const MAX_WORK: u64 = 1 << 26;

/// An instance's size in the units a check's work is counted in: a value
/// each, and a value per 8 bytes of strings and keys.
fn units(nodes: u64, bytes: u64) -> u64 {
    nodes + bytes / 8
}

/// An instance's size, as a check's work counts it: within the bound
/// ([`Schema::small`]).
#[derive(Clone, Copy)]
pub(crate) struct Small {
    nodes: u64,
    bytes: u64,
}

/// Longest string `format: "regex"` accepts (see [`regex_format`]).
const MAX_REGEX_FORMAT: usize = 1024;

/// Whether `v` (a schema) has `anyOf` or `oneOf` anywhere in it.
fn has_branches(v: &Value) -> bool {
    match v {
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| k == "anyOf" || k == "oneOf" || has_branches(x)),
        Value::Array(a) => a.iter().any(has_branches),
        _ => false,
    }
}

/// `format: "regex"` (asserted under drafts 4 to 7): jsonschema's own
/// check, for strings of at most [`MAX_REGEX_FORMAT`] bytes; longer ones
/// are refused. Its check of named groups takes time quadratic in the
/// string's length (found by review): a client's 256 KiB string against a
/// draft 7 schema would have held a thread for minutes.
fn regex_format(s: &str) -> bool {
    static CHECK: std::sync::LazyLock<jsonschema::Validator> = std::sync::LazyLock::new(|| {
        jsonschema::options()
            .should_validate_formats(true)
            .build(&serde_json::json!({ "format": "regex" }))
            .expect("a constant schema compiles")
    });
    s.len() <= MAX_REGEX_FORMAT && CHECK.is_valid(&Value::String(s.to_string()))
}

/// Past this much work, a refused instance's message names its first
/// violation only, not up to eight (see `Schema::check`).
const REPORT_WORK: u64 = 1 << 16;

/// One violation as a message shows it, with where it is; the instance's
/// own text in it (member names, values) with control characters escaped,
/// as names in messages are (`error`).
fn shown(e: &jsonschema::ValidationError<'_>) -> String {
    let at = e.instance_path().to_string();
    let text = if at.is_empty() {
        e.to_string()
    } else {
        format!("at `{at}`: {e}")
    };
    crate::audit::escape_controls(&text).into_owned()
}

/// Checks of more work than this run off the I/O threads
/// ([`Schema::runs_aside`]).
const ASIDE_WORK: u64 = 1 << 20;

/// Instances of more values, or more bytes of strings and keys, are
/// checked off the I/O threads whatever the schema.
const LARGE_NODES: u64 = 4096;
const LARGE_BYTES: u64 = 256 << 10;

/// An instance's size as a check's work counts it (values, and bytes of
/// strings and keys), counted until `stop` (values and a value per 8
/// bytes). `None` if the walk stopped there, or met a value nested deeper
/// than the bound covers (`cost::MAX_DEPTH`).
fn measure(v: &Value, stop: u64) -> Option<(u64, u64)> {
    fn walk(v: &Value, depth: usize, nodes: &mut u64, bytes: &mut u64, stop: u64) -> bool {
        *nodes += 1;
        if depth > cost::MAX_DEPTH {
            return false;
        }
        match v {
            Value::String(s) => *bytes += s.len() as u64,
            Value::Array(a) => {
                for x in a {
                    if !walk(x, depth + 1, nodes, bytes, stop) {
                        return false;
                    }
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    *bytes += k.len() as u64;
                    if !walk(x, depth + 1, nodes, bytes, stop) {
                        return false;
                    }
                }
            }
            _ => {}
        }
        units(*nodes, *bytes) <= stop
    }
    let (mut nodes, mut bytes) = (0, 0);
    walk(v, 0, &mut nodes, &mut bytes, stop).then_some((nodes, bytes))
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
            .with_format("regex", regex_format)
            .with_pattern_options(
                jsonschema::PatternOptions::regex()
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .dfa_size_limit(PATTERN_SIZE_LIMIT),
            )
            .build(&v)
            .map_err(|e| format!("schema does not compile: {e}"))
            .and_then(|validator| {
                let factor =
                    cost::factor(&v, MAX_FACTOR).map_err(|e| format!("schema is refused: {e}"))?;
                Ok(Schema {
                    validator,
                    check: None,
                    factor,
                    branches: has_branches(&v),
                })
            })
    }

    /// `instance`'s size if checking it is work for the calling thread:
    /// at most [`LARGE_NODES`] values, [`LARGE_BYTES`] of strings and keys,
    /// and [`ASIDE_WORK`] for this schema. `None`: it is work to do off the
    /// I/O threads ([`check`](Self::check) there). Counting stops at the
    /// bound, so deciding costs little.
    pub(crate) fn small(&self, instance: &Value) -> Option<Small> {
        let stop = (ASIDE_WORK / self.factor).min(units(LARGE_NODES, LARGE_BYTES));
        measure(instance, stop)
            .filter(|&(nodes, bytes)| nodes <= LARGE_NODES && bytes <= LARGE_BYTES)
            .map(|(nodes, bytes)| Small { nodes, bytes })
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
    /// errors than a schema validator can give (see `typed`). A conversion
    /// visits each value once, but one value may become up to `expansion`
    /// units of work (a record made of an empty object: every optional
    /// field and its name): that is its cost per value, so instances that
    /// expand a lot are checked off the I/O threads (found by review: the
    /// cost of one value each kept 4,000 `{}`s, 265 MB of values, on them).
    pub fn with_check(mut self, check: Check, expansion: u64) -> Schema {
        self.check = Some(check);
        self.factor = expansion.clamp(1, MAX_FACTOR);
        self
    }

    /// `Ok` or every violation, each with the JSON pointer to the
    /// offending value; an instance whose check would take more than
    /// [`MAX_WORK`] is refused unchecked.
    pub fn check(&self, instance: &Value) -> Result<(), String> {
        if let Some(check) = &self.check {
            return check(instance);
        }
        let Some((nodes, bytes)) = measure(instance, MAX_WORK / self.factor) else {
            return Err(format!(
                "too large to check against this schema: over {} values (a value per 8 bytes of strings), or nested over {} deep; each value may be checked up to {} times here",
                MAX_WORK / self.factor,
                cost::MAX_DEPTH,
                self.factor
            ));
        };
        self.check_sized(instance, Small { nodes, bytes })
    }

    /// [`check`](Self::check) of an instance [`small`](Self::small)
    /// measured already (within [`MAX_WORK`], so not walked again).
    pub(crate) fn check_small(&self, instance: &Value, size: Small) -> Result<(), String> {
        match &self.check {
            Some(check) => check(instance),
            None => self.check_sized(instance, size),
        }
    }

    fn check_sized(&self, instance: &Value, Small { nodes, bytes }: Small) -> Result<(), String> {
        if self.validator.is_valid(instance) {
            return Ok(());
        }
        // jsonschema's full report (`iter_errors`) gathers every violation
        // before the first is read: on a large instance, gigabytes (16M
        // errors for 32 MB of zeros against a list of strings, found by
        // review). Past a small bound, the first violation only
        // (`validate`, which stops at it), or, in a schema with `anyOf` or
        // `oneOf` (where even `validate` gathers every branch's errors),
        // no detail at all.
        if units(nodes, bytes).saturating_mul(self.factor) > REPORT_WORK {
            if self.branches {
                return Err(format!(
                    "does not match the schema ({nodes} values: too large an instance for the host to say where)"
                ));
            }
            return match self.validator.validate(instance) {
                Ok(()) => Ok(()),
                Err(e) => Err(format!("{} (the first violation found)", shown(&e))),
            };
        }
        let errors: Vec<String> = self
            .validator
            .iter_errors(instance)
            .take(8)
            .map(|e| shown(&e))
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

    fn is_aside(s: &Schema, v: &Value) -> bool {
        s.small(v).is_none()
    }

    #[test]
    fn only_large_instances_are_checked_off_the_io_threads() {
        let any = Schema::compile(&schema(json!({"type": "object"}))).unwrap();
        assert!(!is_aside(&any, &json!({"text": "hello", "n": [1, 2, 3]})));
        assert!(is_aside(
            &any,
            &json!({ "data": vec![1; LARGE_NODES as usize] })
        ));
        assert!(is_aside(
            &any,
            &json!({ "text": "x".repeat(LARGE_BYTES as usize + 1) })
        ));
        // Keys weigh too.
        let keys: serde_json::Map<String, Value> = (0..LARGE_NODES / 2)
            .map(|i| (format!("{i:0>200}"), Value::Null))
            .collect();
        assert!(is_aside(&any, &Value::Object(keys)));
        // A schema that checks each value many times moves smaller
        // instances aside.
        let branches: Vec<Value> = (0..2000).map(|i| json!({"minimum": i})).collect();
        let heavy = Schema::compile(&schema(
            json!({"type": "object", "properties": {"r": {"items": {"anyOf": branches}}}}),
        ))
        .unwrap();
        assert!(heavy.factor > 2000, "{}", heavy.factor);
        let some = json!({ "r": vec![0; 1000] });
        assert!(is_aside(&heavy, &some) && !is_aside(&any, &some));
    }

    /// The review's case: a schema whose `$ref`s reach one subschema along
    /// two ways at every level checks a value nested `d` deep 2^d times.
    /// Refused at load; and a check whose work the factor puts past the
    /// bound is refused without being run.
    #[test]
    fn schemas_and_instances_whose_check_is_unbounded_are_refused() {
        let evil = schema(json!({"$defs": {"a": {"anyOf": [
            {"type": "array", "items": {"$ref": "#/$defs/a"}},
            {"type": "array", "items": {"$ref": "#/$defs/a"}}
        ]}}, "type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}}));
        let e = Schema::compile(&evil).err().expect("refused");
        assert!(
            e.starts_with("schema is refused") && e.contains("exponentially"),
            "{e}"
        );

        let branches: Vec<Value> = (0..8000).map(|i| json!({"minimum": i})).collect();
        let heavy = Schema::compile(&schema(
            json!({"type": "object", "properties": {"r": {"items": {"anyOf": branches}}}}),
        ))
        .unwrap();
        let t = std::time::Instant::now();
        let e = heavy.check(&json!({ "r": vec![0; 500_000] })).unwrap_err();
        assert!(e.starts_with("too large to check"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // Within the bound it is checked.
        assert!(heavy.check(&json!({ "r": [5] })).is_ok());
        // A large refused instance is reported by its first violation, not
        // by gathering them all.
        let strings = Schema::compile(&schema(
            json!({"type": "object", "properties": {"xs": {"items": {"type": "string"}}}}),
        ))
        .unwrap();
        let e = strings
            .check(&json!({ "xs": vec![0; 1_000_000] }))
            .unwrap_err();
        assert!(
            e.ends_with("(the first violation found)") && e.contains("/xs/0"),
            "{e}"
        );
        let e = strings.check(&json!({ "xs": [0, 1, "ok"] })).unwrap_err();
        assert!(e.contains("/xs/0") && e.contains("/xs/1"), "{e}");
        // Under `anyOf`, even the first violation gathers every branch's:
        // no detail then.
        let optional = Schema::compile(&schema(json!({"type": "object", "properties": {"xs":
            {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]}}})))
        .unwrap();
        let e = optional
            .check(&json!({ "xs": vec![0; 1_000_000] }))
            .unwrap_err();
        assert!(
            e.contains("too large an instance for the host to say where"),
            "{e}"
        );
        // Deeper than any parsed value can be: refused, not walked.
        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        let any = Schema::compile(&schema(json!({}))).unwrap();
        assert!(
            any.check(&deep)
                .unwrap_err()
                .starts_with("too large to check")
        );
    }

    #[test]
    fn regex_formats_are_checked_within_a_bound() {
        let s = Schema::compile(&schema(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"p": {"type": "string", "format": "regex"}}
        })))
        .unwrap();
        assert!(s.check(&json!({"p": "^a+(?<n>b)$"})).is_ok());
        assert!(s.check(&json!({"p": "a(b"})).is_err());
        // Distinct group names: jsonschema's check of them is quadratic.
        let long: String = (0..20_000).map(|i| format!("(?<n{i}>a)")).collect();
        let t = std::time::Instant::now();
        assert!(s.check(&json!({ "p": long })).is_err());
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
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
