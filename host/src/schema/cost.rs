//! A bound, computed once at load, on what checking one JSON value against
//! a tool's schema can cost: the schema's *factor*. Checking an instance
//! of `n` values then costs at most about `n` times the factor (`Schema`
//! uses it to decide where a check runs, and to refuse one too large).
//!
//! Why: a validator evaluates a subschema once for each way the schema
//! reaches it, and `$ref` lets a small schema reach one subschema along
//! many ways. `{"$defs": {"a": {"anyOf": [{"items": {"$ref": "#/$defs/a"}},
//! {"items": {"$ref": "#/$defs/a"}}]}}}` reaches an array nested `d`
//! deep along 2^d ways. jsonschema 0.60 caches `is_valid` through
//! recursive `$ref`s, but not the error report a refused instance gets:
//! measured, 0.5 s at 16 levels and 2.4 s at 18, four times more every
//! two, so a 100-byte schema and a 70-byte argument hold a host thread for
//! hours. And a schema of 2,000 `anyOf` branches checks each item of an
//! array 2,000 times (both found by review). jsonschema offers no budget
//! and cannot be interrupted, so the bound is computed from the schema.
//!
//! How: every subschema is a node with a weight (its keywords and their
//! values) and edges: *in place* (`allOf`, `anyOf`, `oneOf`, `not`, `if`,
//! `then`, `else`, `$ref` and its dynamic forms, and, for objects,
//! `dependentSchemas`), which apply to the same value, and *into* an
//! object's members or an array's items (`properties`, `items`, ...). For
//! each depth `k` up to [`MAX_DEPTH`], `E_k(s, t)` bounds the weight of
//! the evaluations that reach values `k` levels below one of type `t`
//! checked against `s`; the factor is the largest `E_k(root, t)`. Types
//! matter: in the recursive "any JSON value" schema, `anyOf` of an array
//! branch and an object branch, each recursing, is linear, because no
//! value is both. A `$ref` this module cannot resolve within the schema is
//! refused, as is a schema that refers to itself without descending into
//! the value (a loop).
//!
//! Must not touch: how schemas are compiled or checked (`Schema`).

use serde_json::Value;
use std::collections::HashMap;

/// Deepest instance the bound covers: serde_json's parser stops at 128
/// levels, and every instance checked was parsed (arguments from a
/// request, results from the guest's JSON text). A deeper one, built by
/// an embedder, is refused before its check (`measure` in the parent).
pub(crate) const MAX_DEPTH: usize = 130;

/// The kinds of JSON value an applicator distinguishes.
#[derive(Clone, Copy)]
enum Kind {
    Object = 0,
    Array = 1,
    Other = 2,
}

const KINDS: [Kind; 3] = [Kind::Object, Kind::Array, Kind::Other];

#[derive(Default)]
struct Node {
    weight: u64,
    /// Applied to the same value, whatever it is.
    in_place: Vec<usize>,
    /// Applied to the same value if it is an object (`dependentSchemas`).
    in_place_object: Vec<usize>,
    /// Applied to each of an object's members (or its keys:
    /// `propertyNames`).
    members: Vec<usize>,
    /// Of which at most one applies to any one member (`properties`: by
    /// its name).
    members_one: Vec<usize>,
    /// Applied to each of an array's items.
    items: Vec<usize>,
    /// Of which at most one applies to any one item (`prefixItems`, and
    /// `items` as a list: by its index).
    items_one: Vec<usize>,
}

impl Node {
    /// The most a value under one of `kind` is evaluated, at the depth
    /// below the one `below` describes.
    fn into(&self, kind: Kind, below: &[u64]) -> u64 {
        let (all, one) = match kind {
            Kind::Object => (&self.members, &self.members_one),
            Kind::Array => (&self.items, &self.items_one),
            Kind::Other => return 0,
        };
        let sum = all.iter().fold(0u64, |a, &c| a.saturating_add(below[c]));
        sum.saturating_add(one.iter().map(|&c| below[c]).max().unwrap_or(0))
    }
}

struct Graph<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    ids: HashMap<*const Value, usize>,
    todo: Vec<&'a Value>,
    /// The root's `$id` (draft 4: `id`): the one base a reference with a
    /// URI before its `#` may name. A subschema with an `$id` of its own
    /// is refused (`visit`): which base each `$ref` resolves against then
    /// depends on the draft's rules for `$id`, and a bound computed under
    /// other rules than jsonschema's would follow other references (a
    /// review hid the exponential schema behind one).
    root_id: Option<&'a str>,
    /// `$anchor` / `$dynamicAnchor` name -> objects declaring it, and
    /// whether `$recursiveAnchor` is set.
    anchors: Vec<(&'a str, &'a Value)>,
    dynamic: Vec<(&'a str, &'a Value)>,
    recursive: Vec<&'a Value>,
}

/// The schema's factor (see the module doc), or why it cannot be bounded.
/// `limit`: past it the schema is refused; the computation stops there.
pub(crate) fn factor(schema: &Value, limit: u64) -> Result<u64, String> {
    let mut g = Graph {
        root: schema,
        nodes: Vec::new(),
        ids: HashMap::new(),
        todo: Vec::new(),
        root_id: None,
        anchors: Vec::new(),
        dynamic: Vec::new(),
        recursive: Vec::new(),
    };
    g.root_id = ["$id", "id"]
        .iter()
        .find_map(|k| schema.get(k).and_then(Value::as_str));
    g.index(schema);
    let root = g.id(schema);
    while let Some(v) = g.todo.pop() {
        g.visit(v)?;
    }
    let order = g.in_place_order()?;
    let n = g.nodes.len();
    let mut worst = 0u64;
    // `below[s]`: max over kinds of E_{k-1}(s, kind).
    let mut below = vec![0u64; n];
    let mut layer = [vec![0u64; n], vec![0u64; n], vec![0u64; n]];
    for k in 0..=MAX_DEPTH {
        let mut any = false;
        for kind in KINDS {
            let e = &mut layer[kind as usize];
            for &s in &order {
                let node = &g.nodes[s];
                let mut sum = if k == 0 {
                    node.weight
                } else {
                    node.into(kind, &below)
                };
                let object = match kind {
                    Kind::Object => &node.in_place_object[..],
                    _ => &[],
                };
                for &c in node.in_place.iter().chain(object) {
                    sum = sum.saturating_add(e[c]);
                }
                e[s] = sum;
                any |= sum > 0;
            }
        }
        for s in 0..n {
            below[s] = layer.iter().map(|e| e[s]).max().unwrap_or(0);
        }
        worst = worst.max(below[root]);
        if worst > limit {
            return Err(format!(
                "checking a value against it could take time that grows exponentially with the value's nesting (each value checked over {limit} times at {k} levels deep): its `$ref`s reach the same subschemas along many ways; simplify it"
            ));
        }
        if !any {
            break;
        }
    }
    Ok(worst.max(1))
}

/// Number of JSON values in `v`.
fn size(v: &Value) -> u64 {
    match v {
        Value::Array(a) => 1 + a.iter().map(size).sum::<u64>(),
        Value::Object(o) => 1 + o.values().map(size).sum::<u64>(),
        _ => 1,
    }
}

impl<'a> Graph<'a> {
    /// Walk the whole document once for its anchors (wherever they are:
    /// a superset of what jsonschema finds is a sound bound).
    fn index(&mut self, v: &'a Value) {
        match v {
            Value::Object(o) => {
                if let Some(a) = o.get("$anchor").and_then(Value::as_str) {
                    self.anchors.push((a, v));
                }
                if let Some(a) = o.get("$dynamicAnchor").and_then(Value::as_str) {
                    self.anchors.push((a, v));
                    self.dynamic.push((a, v));
                }
                if o.get("$recursiveAnchor") == Some(&Value::Bool(true)) {
                    self.recursive.push(v);
                }
                for x in o.values() {
                    self.index(x);
                }
            }
            Value::Array(a) => {
                for x in a {
                    self.index(x);
                }
            }
            _ => {}
        }
    }

    fn id(&mut self, v: &'a Value) -> usize {
        let next = self.nodes.len();
        *self.ids.entry(v as *const Value).or_insert_with(|| {
            self.nodes.push(Node::default());
            self.todo.push(v);
            next
        })
    }

    fn visit(&mut self, v: &'a Value) -> Result<(), String> {
        let me = self.ids[&(v as *const Value)];
        let Value::Object(o) = v else {
            self.nodes[me].weight = 1;
            return Ok(());
        };
        if !std::ptr::eq(v, self.root) && has_own_id(v) {
            return Err(EMBEDDED.into());
        }
        let mut node = Node {
            weight: 1,
            ..Node::default()
        };
        let each = |g: &mut Self, x: &'a Value, to: &mut Vec<usize>| match x {
            Value::Array(a) => a.iter().for_each(|s| to.push(g.id(s))),
            s => to.push(g.id(s)),
        };
        let one = |g: &mut Self, x: &'a Value, to: &mut Vec<usize>| {
            if let Value::Array(a) = x {
                a.iter().for_each(|s| to.push(g.id(s)));
            }
        };
        let values = |g: &mut Self, x: &'a Value, to: &mut Vec<usize>| {
            if let Value::Object(m) = x {
                for s in m.values() {
                    // `dependencies` (draft 7) mixes schemas and name lists.
                    if s.is_object() || s.is_boolean() {
                        to.push(g.id(s));
                    }
                }
            }
        };
        for (k, x) in o {
            node.weight += 1;
            match k.as_str() {
                "allOf" | "anyOf" | "oneOf" | "not" | "if" | "then" | "else" => {
                    each(self, x, &mut node.in_place)
                }
                "$ref" | "$dynamicRef" | "$recursiveRef" => {
                    let r = x.as_str().ok_or("a `$ref` that is not a string")?;
                    for target in self.resolve(k, r)? {
                        node.in_place.push(self.id(target));
                    }
                }
                "dependentSchemas" => values(self, x, &mut node.in_place_object),
                // Draft 7 mixes schemas and name lists (checked as
                // `required`, entry by entry).
                "dependencies" => {
                    node.weight += size(x);
                    values(self, x, &mut node.in_place_object)
                }
                "properties" => values(self, x, &mut node.members_one),
                "patternProperties" => values(self, x, &mut node.members),
                "additionalProperties" | "unevaluatedProperties" | "propertyNames" => {
                    each(self, x, &mut node.members)
                }
                "prefixItems" => one(self, x, &mut node.items_one),
                "items" if x.is_array() => one(self, x, &mut node.items_one),
                "items" | "additionalItems" | "unevaluatedItems" | "contains" => {
                    each(self, x, &mut node.items)
                }
                // Not applied themselves: reached through `$ref`s.
                "$defs" | "definitions" => {}
                // Compared with the value, or looked up in it, entry by
                // entry.
                "enum" | "const" | "required" | "dependentRequired" | "type" => {
                    node.weight += size(x)
                }
                // Hashes the whole array: its items at every level below.
                "uniqueItems" => node.weight += MAX_DEPTH as u64,
                // Anything else: one check of the value (string keywords
                // are linear in its length, counted with the value, see
                // `Schema::check`), or an annotation.
                _ => {}
            }
        }
        self.nodes[me] = node;
        Ok(())
    }

    /// What the reference `r` (keyword `k`) in `from` may evaluate: its
    /// static target and, for the dynamic forms, every subschema whose
    /// anchor it could resolve to at run time (a superset is a sound
    /// bound).
    fn resolve(&self, k: &str, r: &str) -> Result<Vec<&'a Value>, String> {
        let unresolved = || {
            format!(
                "`{k}` `{r}` does not refer to a subschema of this schema (remote references are never fetched), so the time a check takes cannot be bounded; inline what it refers to"
            )
        };
        let (base, fragment) = r.split_once('#').unwrap_or((r, ""));
        // The root is the only resource (`visit`): a reference resolves
        // against it, or names it by its `$id`.
        let names_root = |id: &str| {
            let id = id.split('#').next().unwrap_or(id);
            id == base || id.ends_with(&format!("/{base}"))
        };
        if !base.is_empty() && !self.root_id.is_some_and(names_root) {
            return Err(unresolved());
        }
        let resource = self.root;
        let mut out = Vec::new();
        if fragment.is_empty() {
            out.push(resource);
        } else if fragment.starts_with('/') {
            let pointer = percent_decode(fragment).ok_or_else(unresolved)?;
            // Each object the pointer passes through: an `$id` on the way
            // would change the base of what lies beyond it, for jsonschema
            // (`referencing` switches at each), not for this walk (a
            // review's bypass of the refusal in `visit`).
            let mut at = resource;
            for token in pointer.split('/').skip(1) {
                let token = token.replace("~1", "/").replace("~0", "~");
                at = match at {
                    Value::Object(o) => o.get(&token),
                    Value::Array(a) => token.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                }
                .ok_or_else(unresolved)?;
                if has_own_id(at) {
                    return Err(EMBEDDED.into());
                }
            }
            out.push(at);
        } else {
            out.extend(
                self.anchors
                    .iter()
                    .filter(|(a, _)| *a == fragment)
                    .map(|(_, v)| *v),
            );
            if out.is_empty() {
                return Err(unresolved());
            }
        }
        match k {
            "$dynamicRef" if !fragment.starts_with('/') => out.extend(
                self.dynamic
                    .iter()
                    .filter(|(a, _)| *a == fragment)
                    .map(|(_, v)| *v),
            ),
            "$recursiveRef" => out.extend(self.recursive.iter().copied()),
            _ => {}
        }
        Ok(out)
    }

    /// The nodes in an order where every node comes after what it applies
    /// in place; a loop of in-place applicators is refused (it would check
    /// the same value against itself forever).
    fn in_place_order(&self) -> Result<Vec<usize>, String> {
        let n = self.nodes.len();
        // 0: not seen, 1: on the stack, 2: done.
        let mut state = vec![0u8; n];
        let mut order = Vec::with_capacity(n);
        for start in 0..n {
            if state[start] != 0 {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            state[start] = 1;
            while let Some((s, i)) = stack.last_mut() {
                let node = &self.nodes[*s];
                let next = node.in_place.iter().chain(&node.in_place_object).nth(*i);
                *i += 1;
                match next {
                    Some(&c) if state[c] == 1 => {
                        return Err(
                            "it refers to itself without descending into the value (a `$ref` loop)"
                                .into(),
                        );
                    }
                    Some(&c) if state[c] == 0 => {
                        state[c] = 1;
                        stack.push((c, 0));
                    }
                    Some(_) => {}
                    None => {
                        state[*s] = 2;
                        order.push(*s);
                        stack.pop();
                    }
                }
            }
        }
        Ok(order)
    }
}

/// Why a schema with an embedded resource is refused.
const EMBEDDED: &str = "a subschema has an `$id` (or `id`) of its own, which changes what `$ref`s resolve against; inline it, or move it under `$defs` without the `$id`";

/// Whether `v` is an object with an `$id` (draft 4: `id`) of its own.
fn has_own_id(v: &Value) -> bool {
    ["$id", "id"]
        .iter()
        .any(|k| v.get(*k).is_some_and(Value::is_string))
}

/// A JSON pointer fragment with its `%XX` escapes decoded.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMIT: u64 = 1 << 14;

    #[test]
    fn plain_schemas_have_small_factors() {
        let echo = json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]});
        let f = factor(&echo, LIMIT).unwrap();
        assert!((1..=16).contains(&f), "{f}");
        assert_eq!(factor(&json!(true), LIMIT).unwrap(), 1);
    }

    /// The review's shape: two branches that both recurse into the same
    /// items double the work at each level.
    #[test]
    fn references_reaching_a_subschema_along_many_ways_are_refused() {
        let evil = json!({"$defs": {"a": {"anyOf": [
            {"type": "array", "items": {"$ref": "#/$defs/a"}},
            {"type": "array", "items": {"$ref": "#/$defs/a"}}
        ]}}, "type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}});
        let e = factor(&evil, LIMIT).unwrap_err();
        assert!(e.contains("exponentially"), "{e}");
        // The same without `$ref`: the schema's own size bounds it.
        let flat = json!({"anyOf": [{"items": {"type": "string"}}, {"items": {"type": "number"}}]});
        assert!(factor(&flat, LIMIT).unwrap() < 32);
    }

    /// Recursion that descends once per level is linear, and so is the
    /// "any JSON value" schema: its array and object branches never apply
    /// to the same value.
    #[test]
    fn recursive_schemas_that_descend_once_per_level_are_accepted() {
        let tree = json!({"$defs": {"node": {"type": "object", "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}
        }}}, "$ref": "#/$defs/node"});
        assert!(factor(&tree, LIMIT).unwrap() < 100);
        let any = json!({"$defs": {"json": {"anyOf": [
            {"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
            {"type": "array", "items": {"$ref": "#/$defs/json"}},
            {"type": "object", "additionalProperties": {"$ref": "#/$defs/json"}}
        ]}}, "type": "object", "additionalProperties": {"$ref": "#/$defs/json"}});
        assert!(factor(&any, LIMIT).unwrap() < 100);
    }

    #[test]
    fn references_outside_the_schema_and_loops_are_refused() {
        for bad in [
            json!({"$ref": "https://example.com/other.json"}),
            json!({"$ref": "#/$defs/missing"}),
            json!({"$ref": "#nowhere"}),
        ] {
            let e = factor(&bad, LIMIT).unwrap_err();
            assert!(e.contains("does not refer to a subschema"), "{bad}: {e}");
        }
        let e = factor(&json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}), LIMIT).unwrap_err();
        assert!(e.contains("loop"), "{e}");
        // Anchors, the root's `$id` and escaped pointers resolve.
        let ok = json!({"$id": "https://example.com/t.json", "$defs": {
            "a/b": {"$anchor": "ab", "type": "string"}
        }, "properties": {
            "x": {"$ref": "#ab"}, "y": {"$ref": "#/$defs/a~1b"}, "z": {"$ref": "t.json#/$defs/a~1b"},
            "w": {"$ref": "#/$defs/a%7E1b"}
        }});
        factor(&ok, LIMIT).unwrap();
    }

    /// The review's bypass: an embedded resource (`$id` beside `$ref`, a
    /// fragment `$id`, a draft 4 `id`) changes what a `$ref` inside it
    /// resolves to under the draft's rules, and hid the exponential schema
    /// from a bound that resolved it otherwise. Refused.
    #[test]
    fn embedded_resources_are_refused() {
        for inner in [
            json!({"$id": "http://e/x.json", "$ref": "#/definitions/a", "definitions": {"a": {}}}),
            json!({"$id": "#inner", "type": "string"}),
            json!({"id": "http://e/y.json", "type": "string"}),
        ] {
            let schema = json!({"$schema": "http://json-schema.org/draft-07/schema#",
                "properties": {"x": inner}});
            let e = factor(&schema, LIMIT).unwrap_err();
            assert!(e.contains("`$id`"), "{e}");
        }
        // A pointer through an embedded resource to a subschema of it.
        let through = json!({"$defs": {"a": true, "r": {"$id": "http://e/r.json", "$defs": {"a": {"anyOf": [
            {"items": {"$ref": "#/$defs/a"}}, {"items": {"$ref": "#/$defs/a"}}
        ]}}}}, "properties": {"x": {"$ref": "#/$defs/r/$defs/a"}}});
        let e = factor(&through, LIMIT).unwrap_err();
        assert!(e.contains("`$id`"), "{e}");
        // Name lists under `dependencies` are weighed (checked as `required`).
        let names: Vec<String> = (0..5000).map(|i| format!("n{i}")).collect();
        let deps = json!({"items": {"dependencies": {"a": names}}});
        assert!(factor(&deps, LIMIT).unwrap() > 5000);
    }
}
