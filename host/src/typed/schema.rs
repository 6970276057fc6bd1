//! JSON Schemas (draft 2020-12) of typed functions: one per type, the
//! arguments object of a function, and its output. Each schema accepts
//! exactly the JSON that `value` converts (see the conventions in the
//! module docs of `typed`); the property tests check the two agree.

use super::ty::{Signature, Ty, int_bounds};
use serde_json::{Map, Value, json};

/// Strings that stand for the non-finite floats JSON cannot spell.
pub const NON_FINITE: [&str; 3] = ["NaN", "Infinity", "-Infinity"];

/// Decimal strings accepted for 64-bit integers (no sign for u64, no
/// leading zeros, no `+`).
pub const U64_PATTERN: &str = "^(0|[1-9][0-9]*)$";
pub const S64_PATTERN: &str = "^(0|-?[1-9][0-9]*)$";

/// Half an f32 ulp above `f32::MAX` (2^128 - 2^103): the first value that
/// rounds to infinity. Anything strictly inside ±this rounds to a finite f32.
pub const F32_LIMIT: f64 = 340_282_356_779_733_661_637_539_395_458_142_568_448.0;

/// The schema of one value of type `ty`.
pub fn of(ty: &Ty) -> Value {
    match ty {
        Ty::Bool => json!({"type": "boolean"}),
        Ty::S8 | Ty::U8 | Ty::S16 | Ty::U16 | Ty::S32 | Ty::U32 => {
            let (lo, hi) = int_bounds(ty).expect("integer type");
            json!({"type": "integer", "minimum": lo as i64, "maximum": hi as i64})
        }
        Ty::U64 => json!({
            "description": "u64: an integer, or a decimal string (exact beyond 2^53)",
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": u64::MAX},
                {"type": "string", "pattern": U64_PATTERN},
            ]
        }),
        Ty::S64 => json!({
            "description": "s64: an integer, or a decimal string (exact beyond ±2^53)",
            "anyOf": [
                {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX},
                {"type": "string", "pattern": S64_PATTERN},
            ]
        }),
        Ty::F32 => json!({
            "anyOf": [
                {"type": "number", "exclusiveMinimum": -F32_LIMIT, "exclusiveMaximum": F32_LIMIT},
                {"enum": NON_FINITE},
            ]
        }),
        Ty::F64 => json!({"anyOf": [{"type": "number"}, {"enum": NON_FINITE}]}),
        Ty::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
        Ty::String => json!({"type": "string"}),
        Ty::List(t) => json!({"type": "array", "items": of(t)}),
        Ty::Tuple(ts) => json!({
            "type": "array",
            "prefixItems": ts.iter().map(of).collect::<Vec<_>>(),
            "items": false,
            "minItems": ts.len(),
            "maxItems": ts.len(),
        }),
        Ty::Record(fields) => object(fields.iter().map(|f| (f.name.as_str(), &f.ty)), Map::new()),
        Ty::Variant(cases) => {
            let one_of: Vec<Value> = cases
                .iter()
                .map(|c| match &c.ty {
                    None => json!({"const": c.name}),
                    Some(t) => single_key(&c.name, of(t)),
                })
                .collect();
            json!({ "oneOf": one_of })
        }
        Ty::Enum(names) => json!({"type": "string", "enum": names}),
        Ty::Flags(names) => json!({
            "type": "array",
            "items": {"enum": names},
            "uniqueItems": true,
        }),
        Ty::Option(t) if t.json_nullable() => json!({
            "anyOf": [{"type": "null"}, single_key("some", of(t))]
        }),
        Ty::Option(t) => json!({"anyOf": [{"type": "null"}, of(t)]}),
        Ty::Result { ok, err } => {
            let payload = |t: &Option<Box<Ty>>| match t {
                Some(t) => of(t),
                None => json!({"type": "null"}),
            };
            json!({"oneOf": [single_key("ok", payload(ok)), single_key("err", payload(err))]})
        }
    }
}

/// `{"key": <schema>}` and nothing else.
fn single_key(key: &str, schema: Value) -> Value {
    json!({
        "type": "object",
        "properties": { key: schema },
        "required": [key],
        "additionalProperties": false,
    })
}

/// An object with one property per item; `option` items may be left out.
fn object<'a>(
    items: impl Iterator<Item = (&'a str, &'a Ty)>,
    mut base: Map<String, Value>,
) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (name, ty) in items {
        props.insert(name.to_string(), of(ty));
        if !matches!(ty, Ty::Option(_)) {
            required.push(Value::String(name.to_string()));
        }
    }
    base.insert("type".into(), "object".into());
    base.insert("properties".into(), Value::Object(props));
    if !required.is_empty() {
        base.insert("required".into(), Value::Array(required));
    }
    base.insert("additionalProperties".into(), false.into());
    Value::Object(base)
}

/// The arguments object of a function: one property per parameter, named
/// as in WIT.
pub fn input(sig: &Signature) -> Map<String, Value> {
    match object(sig.params.iter().map(|(n, t)| (n.as_str(), t)), Map::new()) {
        Value::Object(m) => m,
        _ => unreachable!("object() builds an object"),
    }
}

/// What a successful call returns as structured content:
/// `{"result": <value>}`. A top-level `result<T, E>` contributes only `T`
/// (its `err` case is a tool error); no result is `null`.
pub fn output(sig: &Signature) -> Map<String, Value> {
    let result = match &sig.result {
        None => json!({"type": "null"}),
        Some(Ty::Result { ok: Some(t), .. }) => of(t),
        Some(Ty::Result { ok: None, .. }) => json!({"type": "null"}),
        Some(t) => of(t),
    };
    match single_key("result", result) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typed::ty::{Case, Field};

    #[test]
    fn f32_limit_is_where_rounding_reaches_infinity() {
        assert_eq!(F32_LIMIT, 2f64.powi(128) - 2f64.powi(103));
        let below = f64::from_bits(F32_LIMIT.to_bits() - 1);
        assert_eq!(below as f32, f32::MAX);
        assert!((F32_LIMIT as f32).is_infinite());
    }

    /// Each kind's schema, compared with the committed snapshot
    /// `host/src/typed/snapshots/kinds.json` (set TOOLHOST_UPDATE_SNAPSHOTS=1
    /// to rewrite it after an intended change).
    #[test]
    fn schemas_match_their_snapshot() {
        let opt = |t: Ty| Ty::Option(Box::new(t));
        let kinds: Vec<(&str, Ty)> = vec![
            ("bool", Ty::Bool),
            ("u8", Ty::U8),
            ("s8", Ty::S8),
            ("u16", Ty::U16),
            ("s16", Ty::S16),
            ("u32", Ty::U32),
            ("s32", Ty::S32),
            ("u64", Ty::U64),
            ("s64", Ty::S64),
            ("f32", Ty::F32),
            ("f64", Ty::F64),
            ("char", Ty::Char),
            ("string", Ty::String),
            ("list<u8>", Ty::List(Box::new(Ty::U8))),
            ("tuple<string, u32>", Ty::Tuple(vec![Ty::String, Ty::U32])),
            (
                "record",
                Ty::Record(vec![
                    Field {
                        name: "first-name".into(),
                        ty: Ty::String,
                    },
                    Field {
                        name: "email".into(),
                        ty: opt(Ty::String),
                    },
                ]),
            ),
            (
                "variant",
                Ty::Variant(vec![
                    Case {
                        name: "circle".into(),
                        ty: Some(Ty::F64),
                    },
                    Case {
                        name: "empty".into(),
                        ty: None,
                    },
                ]),
            ),
            ("enum", Ty::Enum(vec!["red".into(), "green".into()])),
            ("flags", Ty::Flags(vec!["read".into(), "write".into()])),
            ("option<u8>", opt(Ty::U8)),
            ("option<option<u8>>", opt(opt(Ty::U8))),
            (
                "result<u8, string>",
                Ty::Result {
                    ok: Some(Box::new(Ty::U8)),
                    err: Some(Box::new(Ty::String)),
                },
            ),
            (
                "result",
                Ty::Result {
                    ok: None,
                    err: None,
                },
            ),
        ];
        let actual = Value::Object(kinds.iter().map(|(n, t)| (n.to_string(), of(t))).collect());
        crate::typed::snapshot::check("host/src/typed/snapshots/kinds.json", &actual);
    }

    #[test]
    fn option_parameters_may_be_left_out() {
        let sig = Signature {
            params: vec![
                ("a".into(), Ty::U8),
                ("b".into(), Ty::Option(Box::new(Ty::U8))),
            ],
            result: Some(Ty::Result {
                ok: Some(Box::new(Ty::String)),
                err: Some(Box::new(Ty::String)),
            }),
        };
        assert_eq!(
            Value::Object(input(&sig)),
            json!({
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "minimum": 0, "maximum": 255},
                    "b": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 0, "maximum": 255}]},
                },
                "required": ["a"],
                "additionalProperties": false,
            })
        );
        // A top-level result contributes its ok type only.
        assert_eq!(
            Value::Object(output(&sig)),
            json!({
                "type": "object",
                "properties": {"result": {"type": "string"}},
                "required": ["result"],
                "additionalProperties": false,
            })
        );
    }
}
