//! JSON <-> `wasmtime::component::Val`, both ways, guided by a `Ty`, with
//! the conventions documented in `typed`'s module docs. Conversions are
//! exact: `to_json(to_val(j)) == j` for every canonical `j`, and
//! `to_val(to_json(v)) == v` for every `v` (NaN payloads aside).
//!
//! Errors name the JSON pointer of the offending value and what was
//! expected there: `/items/2/id: expected u16 ≤ 65535, got 70000`.

use super::schema::NON_FINITE;
use super::ty::{Case, Field, Signature, Ty, int_bounds};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::fmt;
use wasmtime::component::Val;

/// Largest magnitude at which every integer is exactly a JSON (f64) number:
/// 64-bit integers beyond it travel as decimal strings.
pub const MAX_SAFE_INTEGER: i128 = (1 << 53) - 1;

/// Most argument errors reported at once.
const MAX_ERRORS: usize = 8;

/// A value that does not fit its type, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValueError {
    /// JSON pointer (RFC 6901) of the value, `""` for the root.
    pub pointer: String,
    pub message: String,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

/// Several argument errors, one per offending argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ArgumentErrors(pub Vec<ValueError>);

impl fmt::Display for ArgumentErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The path being converted, rendered only when something fails, and the
/// name lookups of the types met on the way.
#[derive(Default)]
struct Path {
    segs: Vec<Seg>,
    /// For each list of names (a type's cases or fields, or a signature's
    /// parameters) longer than [`SCAN`], keyed by where it is: each name's
    /// position, built at its first lookup in this conversion. A type may
    /// have thousands of cases and a value millions of them: a scan each
    /// held a host thread for a minute (found by review).
    names: HashMap<usize, HashMap<String, usize>>,
    /// Host memory the values made so far take, and the most they may
    /// (`None`: unbounded; a result lifted from a guest is bounded by
    /// wasmtime's hostcall fuel).
    spent: usize,
    budget: Option<usize>,
}

/// Host memory one `Val` takes beside what it owns (a record field's
/// entry: a `Val` and its name's `String`).
const VAL_BYTES: usize = size_of::<Val>() + size_of::<String>();

/// Lists of names up to this long are scanned; longer ones are looked up.
const SCAN: usize = 16;

enum Seg {
    Key(String),
    Index(usize),
}

impl Path {
    fn pointer(&self) -> String {
        let mut s = String::new();
        for seg in &self.segs {
            s.push('/');
            match seg {
                Seg::Key(k) => s.push_str(&k.replace('~', "~0").replace('/', "~1")),
                Seg::Index(i) => s.push_str(&i.to_string()),
            }
        }
        s
    }

    fn err(&self, message: impl Into<String>) -> ValueError {
        ValueError {
            pointer: self.pointer(),
            message: message.into(),
        }
    }

    /// Count a value made of `bytes` more than a `Val`'s own (its string,
    /// its name) against the budget. Found by review: an object of no
    /// members (`{}`) is a record of every optional field, each with its
    /// name copied; 200 KB of them became 3.27 GB of values on an I/O
    /// thread, past the call's deadline and outside every bound.
    fn spend(&mut self, bytes: usize) -> Result<(), ValueError> {
        self.spent = self.spent.saturating_add(VAL_BYTES + bytes);
        match self.budget {
            Some(b) if self.spent > b => Err(self.err(format!(
                "the arguments take over {b} bytes of host memory as the function's values (the tool's memory limit); send fewer or smaller values"
            ))),
            _ => Ok(()),
        }
    }

    fn key<T>(&mut self, k: &str, f: impl FnOnce(&mut Path) -> T) -> T {
        self.segs.push(Seg::Key(k.to_string()));
        let r = f(self);
        self.segs.pop();
        r
    }

    fn index<T>(&mut self, i: usize, f: impl FnOnce(&mut Path) -> T) -> T {
        self.segs.push(Seg::Index(i));
        let r = f(self);
        self.segs.pop();
        r
    }

    /// The position of `name` among `items` (named by `name_of`), if it is
    /// one of them.
    fn find<T>(&mut self, items: &[T], name_of: impl Fn(&T) -> &str, name: &str) -> Option<usize> {
        if items.len() <= SCAN {
            return items.iter().position(|t| name_of(t) == name);
        }
        self.names
            .entry(items.as_ptr() as usize)
            .or_insert_with(|| {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (name_of(t).to_string(), i))
                    .collect()
            })
            .get(name)
            .copied()
    }
}

/// A short rendering of a JSON value for "got ..." in messages.
fn got(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut short: String = s.chars().take(40).collect();
            if short.len() < s.len() {
                short.push('…');
            }
            format!("{short:?}")
        }
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(o) => format!("an object with {} keys", o.len()),
    }
}

fn names(ns: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    ns.into_iter()
        .map(|n| n.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The arguments object of a call -> the function's parameters, in order,
/// taking at most `budget` bytes of host memory as values (the tool's
/// memory limit). A missing `option` parameter is `none`; unknown keys
/// are errors.
pub fn arguments(
    args: &Map<String, Value>,
    sig: &Signature,
    budget: usize,
) -> Result<Vec<Val>, ArgumentErrors> {
    let mut errors = Vec::new();
    let mut vals = Vec::with_capacity(sig.params.len());
    let mut path = Path {
        budget: Some(budget),
        ..Path::default()
    };
    for (name, ty) in &sig.params {
        let r = path.key(name, |p| match args.get(name) {
            Some(v) => convert(v, ty, p),
            None if matches!(ty, Ty::Option(_)) => Ok(Val::Option(None)),
            None => Err(p.err(format!("missing argument (expected {})", expected(ty)))),
        });
        match r {
            Ok(v) => vals.push(v),
            Err(e) => errors.push(e),
        }
    }
    for k in args.keys() {
        // Reported up to MAX_ERRORS: a request of a million unknown keys
        // made a message each (found by review).
        if errors.len() >= MAX_ERRORS {
            break;
        }
        if path.find(&sig.params, |(n, _)| n.as_str(), k).is_none() {
            errors.push(path.key(k, |p| {
                p.err(if sig.params.is_empty() {
                    "unexpected argument (this function takes none)".to_string()
                } else {
                    format!(
                        "unexpected argument (parameters: {})",
                        names(sig.params.iter().map(|(n, _)| n))
                    )
                })
            }));
        }
    }
    if errors.is_empty() {
        Ok(vals)
    } else {
        errors.truncate(MAX_ERRORS);
        Err(ArgumentErrors(errors))
    }
}

/// One JSON value -> a `Val` of type `ty` (the argument path converts
/// whole objects with `arguments`; this one is for the property tests).
#[cfg(test)]
pub fn to_val(v: &Value, ty: &Ty) -> Result<Val, ValueError> {
    convert(v, ty, &mut Path::default())
}

/// How to describe what a type expects, when the JSON kind is wrong.
fn expected(ty: &Ty) -> String {
    match ty {
        Ty::Bool => "bool (true or false)".into(),
        Ty::U64 | Ty::S64 => format!("{} (an integer or a decimal string)", ty.name()),
        Ty::S8 | Ty::U8 | Ty::S16 | Ty::U16 | Ty::S32 | Ty::U32 => {
            let (lo, hi) = int_bounds(ty).expect("integer type");
            format!("{} (an integer from {lo} to {hi})", ty.name())
        }
        Ty::F32 | Ty::F64 => format!(
            "{} (a number, or \"NaN\", \"Infinity\", \"-Infinity\")",
            ty.name()
        ),
        Ty::Char => "char (a string of exactly one Unicode character)".into(),
        Ty::String => "string".into(),
        Ty::List(t) => format!("list<{t}> (an array)"),
        Ty::Tuple(ts) => format!("tuple (an array of exactly {} items)", ts.len()),
        Ty::Record(fs) => format!(
            "record (an object with fields {})",
            names(fs.iter().map(|f| &f.name))
        ),
        Ty::Variant(cs) => format!(
            "variant (a case name, or an object {{\"case\": payload}}; cases: {})",
            names(cs.iter().map(|c| match c.ty {
                Some(_) => format!("{}(..)", c.name),
                None => c.name.clone(),
            }))
        ),
        Ty::Enum(ns) => format!("enum (one of: {})", names(ns)),
        Ty::Flags(ns) => format!("flags (an array of distinct names from: {})", names(ns)),
        Ty::Option(t) if t.json_nullable() => "option (null, or {\"some\": value})".into(),
        Ty::Option(t) => format!("option<{t}> (null or a value)"),
        Ty::Result { .. } => "result ({\"ok\": value} or {\"err\": value})".into(),
    }
}

fn int_from_json(v: &Value, ty: &Ty, path: &Path) -> Result<i128, ValueError> {
    let (lo, hi) = int_bounds(ty).expect("integer type");
    let wide = matches!(ty, Ty::U64 | Ty::S64);
    let n: i128 = match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if let Some(u) = n.as_u64() {
                u.into()
            } else {
                // An integral number in float syntax (`3.0`, `1e17`): JSON
                // Schema calls it an integer, and so do we.
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 || !f.is_finite() {
                    return Err(path.err(format!("expected {} (an integer), got {n}", ty.name())));
                }
                // Saturates far beyond any 64-bit bound; the range check
                // below still sees it out of range.
                f as i128
            }
        }
        Value::String(s) if wide => {
            let canonical = match s.strip_prefix('-') {
                Some(rest) => *ty == Ty::S64 && canonical_digits(rest) && rest != "0",
                None => canonical_digits(s),
            };
            if !canonical {
                return Err(path.err(format!(
                    "expected {} as an integer or a decimal string (digits, no leading zeros{}), got {}",
                    ty.name(),
                    if *ty == Ty::S64 { ", optional -" } else { "" },
                    got(v)
                )));
            }
            // Too many digits for an i128 is far out of range either way.
            s.parse::<i128>().unwrap_or(if s.starts_with('-') {
                i128::MIN
            } else {
                i128::MAX
            })
        }
        other => {
            return Err(path.err(format!("expected {}, got {}", expected(ty), got(other))));
        }
    };
    // Quote the number as the caller wrote it.
    let shown = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if n > hi {
        return Err(path.err(format!("expected {} ≤ {hi}, got {shown}", ty.name())));
    }
    if n < lo {
        return Err(path.err(format!("expected {} ≥ {lo}, got {shown}", ty.name())));
    }
    Ok(n)
}

fn canonical_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

fn float_from_json(v: &Value, ty: &Ty, path: &Path) -> Result<f64, ValueError> {
    match v {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) if s == NON_FINITE[0] => Ok(f64::NAN),
        Value::String(s) if s == NON_FINITE[1] => Ok(f64::INFINITY),
        Value::String(s) if s == NON_FINITE[2] => Ok(f64::NEG_INFINITY),
        other => Err(path.err(format!("expected {}, got {}", expected(ty), got(other)))),
    }
}

/// The error for a value of the wrong JSON kind: what `ty` expects, and
/// what was given.
fn mismatch(v: &Value, ty: &Ty, path: &Path) -> ValueError {
    path.err(format!("expected {}, got {}", expected(ty), got(v)))
}

fn convert(v: &Value, ty: &Ty, path: &mut Path) -> Result<Val, ValueError> {
    let wrong = |path: &Path| mismatch(v, ty, path);
    // What the value owns: its text, or for a flags value its names (a
    // record's field names are counted with each field).
    let owned = match v {
        Value::String(s) => s.len(),
        Value::Array(a) if matches!(ty, Ty::Flags(_)) => {
            a.iter().filter_map(Value::as_str).map(str::len).sum()
        }
        _ => 0,
    };
    path.spend(owned)?;
    Ok(match ty {
        Ty::Bool => Val::Bool(v.as_bool().ok_or_else(|| wrong(path))?),
        Ty::S8 => Val::S8(int_from_json(v, ty, path)? as i8),
        Ty::U8 => Val::U8(int_from_json(v, ty, path)? as u8),
        Ty::S16 => Val::S16(int_from_json(v, ty, path)? as i16),
        Ty::U16 => Val::U16(int_from_json(v, ty, path)? as u16),
        Ty::S32 => Val::S32(int_from_json(v, ty, path)? as i32),
        Ty::U32 => Val::U32(int_from_json(v, ty, path)? as u32),
        Ty::S64 => Val::S64(int_from_json(v, ty, path)? as i64),
        Ty::U64 => Val::U64(int_from_json(v, ty, path)? as u64),
        Ty::F64 => Val::Float64(float_from_json(v, ty, path)?),
        Ty::F32 => Val::Float32(f32_from_json(v, ty, path)?),
        Ty::Char => Val::Char(char_from_json(v, ty, path)?),
        Ty::String => Val::String(v.as_str().ok_or_else(|| wrong(path))?.to_string()),
        Ty::List(t) => {
            let items = v.as_array().ok_or_else(|| wrong(path))?;
            Val::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| path.index(i, |p| convert(x, t, p)))
                    .collect::<Result<_, _>>()?,
            )
        }
        Ty::Tuple(ts) => tuple_from_json(v, ty, ts, path)?,
        Ty::Record(fields) => record_from_json(v, ty, fields, path)?,
        Ty::Variant(cases) => variant_from_json(v, ty, cases, path)?,
        Ty::Enum(ns) => {
            let s = v.as_str().ok_or_else(|| wrong(path))?;
            if path.find(ns, String::as_str, s).is_none() {
                return Err(path.err(format!("unknown case {} (cases: {})", got(v), names(ns))));
            }
            Val::Enum(s.to_string())
        }
        Ty::Flags(ns) => flags_from_json(v, ty, ns, path)?,
        Ty::Option(t) => match v {
            Value::Null => Val::Option(None),
            _ if t.json_nullable() => match v.as_object() {
                Some(obj) if obj.len() == 1 && obj.contains_key("some") => {
                    let inner = path.key("some", |p| convert(&obj["some"], t, p))?;
                    Val::Option(Some(Box::new(inner)))
                }
                _ => return Err(wrong(path)),
            },
            _ => Val::Option(Some(Box::new(convert(v, t, path)?))),
        },
        Ty::Result { ok, err } => result_from_json(v, ty, ok.as_deref(), err.as_deref(), path)?,
    })
}

/// An `f32`: a float that the narrowing does not turn infinite.
fn f32_from_json(v: &Value, ty: &Ty, path: &Path) -> Result<f32, ValueError> {
    let f = float_from_json(v, ty, path)?;
    let x = f as f32;
    if x.is_infinite() && f.is_finite() {
        return Err(path.err(format!(
            "expected f32, got {}: beyond the f32 range (±3.4028235e38)",
            got(v)
        )));
    }
    Ok(x)
}

/// A `char`: a string of exactly one Unicode character.
fn char_from_json(v: &Value, ty: &Ty, path: &Path) -> Result<char, ValueError> {
    let s = v.as_str().ok_or_else(|| mismatch(v, ty, path))?;
    let mut cs = s.chars();
    match (cs.next(), cs.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(path.err(format!(
            "expected char (a string of exactly one Unicode character), got {} ({} characters)",
            got(v),
            s.chars().count()
        ))),
    }
}

/// A tuple: an array of exactly its items.
fn tuple_from_json(v: &Value, ty: &Ty, ts: &[Ty], path: &mut Path) -> Result<Val, ValueError> {
    let items = v.as_array().ok_or_else(|| mismatch(v, ty, path))?;
    if items.len() != ts.len() {
        return Err(path.err(format!(
            "expected a tuple of {} items, got {}",
            ts.len(),
            items.len()
        )));
    }
    Ok(Val::Tuple(
        items
            .iter()
            .zip(ts)
            .enumerate()
            .map(|(i, (x, t))| path.index(i, |p| convert(x, t, p)))
            .collect::<Result<_, _>>()?,
    ))
}

/// A record: an object with no unknown fields, a missing field allowed only
/// for an option (then `none`).
fn record_from_json(
    v: &Value,
    ty: &Ty,
    fields: &[Field],
    path: &mut Path,
) -> Result<Val, ValueError> {
    let obj = v.as_object().ok_or_else(|| mismatch(v, ty, path))?;
    if let Some(k) = obj
        .keys()
        .find(|k| path.find(fields, |f| &f.name, k).is_none())
    {
        return Err(path.key(k, |p| {
            p.err(format!(
                "unexpected field (record fields: {})",
                names(fields.iter().map(|f| &f.name))
            ))
        }));
    }
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let val = path.key(&f.name, |p| {
            // The field's name, copied into the value; a missing optional
            // field is a value made from nothing.
            p.spend(f.name.len())?;
            match obj.get(&f.name) {
                Some(x) => convert(x, &f.ty, p),
                None if matches!(f.ty, Ty::Option(_)) => p.spend(0).map(|()| Val::Option(None)),
                None => Err(p.err(format!("missing field (expected {})", expected(&f.ty)))),
            }
        })?;
        out.push((f.name.clone(), val));
    }
    Ok(Val::Record(out))
}

/// A variant: a case without a payload as its name, one with a payload as
/// `{"name": payload}`.
fn variant_from_json(
    v: &Value,
    ty: &Ty,
    cases: &[Case],
    path: &mut Path,
) -> Result<Val, ValueError> {
    let case_list = || {
        names(cases.iter().map(|c| match c.ty {
            Some(_) => format!("{}(..)", c.name),
            None => c.name.clone(),
        }))
    };
    Ok(match v {
        Value::String(name) => {
            let found = path.find(cases, |c| &c.name, name).map(|i| &cases[i]);
            let case = found.ok_or_else(|| {
                path.err(format!("unknown case {} (cases: {})", got(v), case_list()))
            })?;
            if let Some(t) = &case.ty {
                return Err(path.err(format!(
                    "case `{name}` carries a {}: write {{\"{name}\": <{t}>}}",
                    t.name()
                )));
            }
            Val::Variant(name.clone(), None)
        }
        Value::Object(obj) if obj.len() == 1 => {
            let (name, x) = obj.iter().next().expect("one key");
            let found = path.find(cases, |c| &c.name, name).map(|i| &cases[i]);
            let case = found.ok_or_else(|| {
                path.key(name, |p| {
                    p.err(format!("unknown case (cases: {})", case_list()))
                })
            })?;
            match &case.ty {
                None => {
                    return Err(path.err(format!("case `{name}` has no payload: write \"{name}\"")));
                }
                Some(t) => {
                    let val = path.key(name, |p| convert(x, t, p))?;
                    Val::Variant(name.clone(), Some(Box::new(val)))
                }
            }
        }
        _ => return Err(mismatch(v, ty, path)),
    })
}

/// Flags: an array of distinct flag names, in any order.
fn flags_from_json(v: &Value, ty: &Ty, ns: &[String], path: &mut Path) -> Result<Val, ValueError> {
    let items = v.as_array().ok_or_else(|| mismatch(v, ty, path))?;
    let mut set = vec![false; ns.len()];
    for (i, x) in items.iter().enumerate() {
        let pos = x
            .as_str()
            .and_then(|s| ns.iter().position(|n| n == s))
            .ok_or_else(|| {
                path.index(i, |p| {
                    p.err(format!("unknown flag {} (flags: {})", got(x), names(ns)))
                })
            })?;
        if set[pos] {
            return Err(path.index(i, |p| p.err(format!("flag {} is given twice", got(x)))));
        }
        set[pos] = true;
    }
    // Declaration order, whatever order the caller used.
    Ok(Val::Flags(
        ns.iter()
            .zip(set)
            .filter(|(_, on)| *on)
            .map(|(n, _)| n.clone())
            .collect(),
    ))
}

/// A result: `{"ok": payload}` or `{"err": payload}`, the payload `null`
/// when that side carries none.
fn result_from_json(
    v: &Value,
    ty: &Ty,
    ok: Option<&Ty>,
    err: Option<&Ty>,
    path: &mut Path,
) -> Result<Val, ValueError> {
    let wrong = |path: &Path| mismatch(v, ty, path);
    let obj = v
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| wrong(path))?;
    let (k, x) = obj.iter().next().expect("one key");
    let payload_ty = match k.as_str() {
        "ok" => ok,
        "err" => err,
        _ => return Err(wrong(path)),
    };
    let payload = path.key(k, |p| match payload_ty {
        None if x.is_null() => Ok(None),
        None => Err(p.err(format!(
            "expected null (`{k}` carries no value), got {}",
            got(x)
        ))),
        Some(t) => convert(x, t, p).map(|v| Some(Box::new(v))),
    })?;
    Ok(Val::Result(if k == "ok" {
        Ok(payload)
    } else {
        Err(payload)
    }))
}

/// A `Val` of type `ty` -> its JSON. Fails only if the value does not have
/// that type (which wasmtime's type checks rule out for guest results).
pub fn to_json(v: &Val, ty: &Ty) -> Result<Value, ValueError> {
    from_val(v, ty, &mut Path::default())
}

fn int_json(n: i128) -> Value {
    if n.abs() <= MAX_SAFE_INTEGER {
        Value::Number(Number::from(n as i64))
    } else {
        Value::String(n.to_string())
    }
}

fn float_json(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => NON_FINITE[0].into(),
        None if f > 0.0 => NON_FINITE[1].into(),
        None => NON_FINITE[2].into(),
    }
}

fn from_val(v: &Val, ty: &Ty, path: &mut Path) -> Result<Value, ValueError> {
    let mismatch = |path: &Path| {
        path.err(format!(
            "the value does not match its declared type {ty}: {v:?}"
        ))
    };
    Ok(match (ty, v) {
        (Ty::Bool, Val::Bool(b)) => Value::Bool(*b),
        (Ty::S8, Val::S8(n)) => Value::from(*n),
        (Ty::U8, Val::U8(n)) => Value::from(*n),
        (Ty::S16, Val::S16(n)) => Value::from(*n),
        (Ty::U16, Val::U16(n)) => Value::from(*n),
        (Ty::S32, Val::S32(n)) => Value::from(*n),
        (Ty::U32, Val::U32(n)) => Value::from(*n),
        (Ty::S64, Val::S64(n)) => int_json((*n).into()),
        (Ty::U64, Val::U64(n)) => int_json((*n).into()),
        // An f32 widens to f64 exactly, and JSON prints the shortest text
        // that reads back as that f64: exact, if not always the shortest
        // spelling of the f32.
        (Ty::F32, Val::Float32(f)) => float_json(f64::from(*f)),
        (Ty::F64, Val::Float64(f)) => float_json(*f),
        (Ty::Char, Val::Char(c)) => Value::String(c.to_string()),
        (Ty::String, Val::String(s)) => Value::String(s.clone()),
        (Ty::List(t), Val::List(items)) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| path.index(i, |p| from_val(x, t, p)))
                .collect::<Result<_, _>>()?,
        ),
        (Ty::Tuple(ts), Val::Tuple(items)) if ts.len() == items.len() => Value::Array(
            items
                .iter()
                .zip(ts)
                .enumerate()
                .map(|(i, (x, t))| path.index(i, |p| from_val(x, t, p)))
                .collect::<Result<_, _>>()?,
        ),
        (Ty::Record(fields), Val::Record(vals)) if fields.len() == vals.len() => {
            let mut obj = Map::new();
            for (f, (name, x)) in fields.iter().zip(vals) {
                if &f.name != name {
                    return Err(mismatch(path));
                }
                let j = path.key(name, |p| from_val(x, &f.ty, p))?;
                obj.insert(name.clone(), j);
            }
            Value::Object(obj)
        }
        (Ty::Variant(cases), Val::Variant(name, payload)) => {
            let case = match path.find(cases, |c| &c.name, name) {
                Some(i) => &cases[i],
                None => return Err(mismatch(path)),
            };
            match (&case.ty, payload) {
                (None, None) => Value::String(name.clone()),
                (Some(t), Some(x)) => {
                    let j = path.key(name, |p| from_val(x, t, p))?;
                    Value::Object(Map::from_iter([(name.clone(), j)]))
                }
                _ => return Err(mismatch(path)),
            }
        }
        (Ty::Enum(ns), Val::Enum(n)) if path.find(ns, String::as_str, n).is_some() => {
            Value::String(n.clone())
        }
        (Ty::Flags(ns), Val::Flags(set)) => {
            if set.iter().any(|f| !ns.contains(f)) {
                return Err(mismatch(path));
            }
            Value::Array(
                ns.iter()
                    .filter(|n| set.contains(n))
                    .map(|n| Value::String(n.clone()))
                    .collect(),
            )
        }
        (Ty::Option(_), Val::Option(None)) => Value::Null,
        (Ty::Option(t), Val::Option(Some(x))) => {
            if t.json_nullable() {
                let j = path.key("some", |p| from_val(x, t, p))?;
                Value::Object(Map::from_iter([("some".to_string(), j)]))
            } else {
                from_val(x, t, path)?
            }
        }
        (Ty::Result { ok, err }, Val::Result(r)) => {
            let (k, t, x) = match r {
                Ok(x) => ("ok", ok, x),
                Err(x) => ("err", err, x),
            };
            let j = match (t, x) {
                (None, None) => Value::Null,
                (Some(t), Some(x)) => path.key(k, |p| from_val(x, t, p))?,
                _ => return Err(mismatch(path)),
            };
            Value::Object(Map::from_iter([(k.to_string(), j)]))
        }
        _ => return Err(mismatch(path)),
    })
}

/// The most host memory [`to_json`] makes of `v`, as
/// `crate::weight::parsed_weight` weighs parsed JSON: a value each, a map
/// node each object (a record, a variant or result with a payload, an
/// option that may become `{"some":x}`), and the bytes of its strings and
/// names. Walked without building anything, so a result whose JSON would
/// not fit in the call's memory is refused before it is made (found by
/// review: a list of records builds a map node of 632 bytes a record).
pub fn json_weight(v: &Val) -> usize {
    use crate::weight::{OBJECT_VALUES, VALUE_BYTES};
    // An object: itself, its node, and a key for each entry (each entry's
    // value is its own weight).
    let object = |entries: usize| (1 + OBJECT_VALUES + entries) * VALUE_BYTES;
    let sum = |items: &mut dyn Iterator<Item = usize>| items.fold(0usize, usize::saturating_add);
    match v {
        Val::String(s) | Val::Enum(s) | Val::Variant(s, None) => VALUE_BYTES + s.len(),
        // Itself and its first slots (an array made without knowing its
        // length holds at least four), and each item its own weight (a
        // value at least: its slot, with room for the array's doubling).
        Val::List(items) | Val::Tuple(items) => {
            (2 * VALUE_BYTES).saturating_add(sum(&mut items.iter().map(json_weight)))
        }
        // Made into a string of its own.
        Val::Char(_) => VALUE_BYTES + 32,
        Val::Record(fields) => object(fields.len()).saturating_add(sum(&mut fields
            .iter()
            .map(|(n, x)| n.len().saturating_add(json_weight(x))))),
        Val::Variant(name, Some(x)) => (object(1) + name.len()).saturating_add(json_weight(x)),
        Val::Flags(set) => VALUE_BYTES.saturating_add(sum(&mut set
            .iter()
            .map(|n| n.len().saturating_add(VALUE_BYTES)))),
        Val::Option(Some(x)) | Val::Result(Ok(Some(x)) | Err(Some(x))) => {
            object(1).saturating_add(json_weight(x))
        }
        Val::Result(Ok(None) | Err(None)) => object(1),
        _ => VALUE_BYTES,
    }
}

/// The least length `v`'s text block ([`text`]) can have: a JSON string's
/// own bytes, else its compact JSON's least (a string's bytes and quotes, one
/// byte a number, a record's field names, the brackets and separators;
/// escapes and digits only add to it). Walked without building anything,
/// so a result past the call's `max-output` is refused before its JSON is
/// made (a review's case: a lifted result within `hostcall_fuel` was held
/// as values, JSON and text at once).
pub fn least_text_size(v: &Val) -> usize {
    match v {
        // JSON strings: their text is without quotes.
        Val::String(s) | Val::Enum(s) | Val::Variant(s, None) => s.len(),
        Val::Char(c) => c.len_utf8(),
        // The value itself, or an object holding it.
        Val::Option(Some(x)) => least_text_size(x),
        other => least_json_size(other),
    }
}

/// The least length of `v`'s compact JSON text.
fn least_json_size(v: &Val) -> usize {
    // A name as a string or key: itself and its quotes.
    let quoted = |s: &str| s.len().saturating_add(2);
    // Brackets and the commas between `n` items.
    let brackets = |n: usize| n.max(1).saturating_add(1);
    let sum =
        |items: &mut dyn Iterator<Item = usize>| items.fold(0usize, |a, b| a.saturating_add(b));
    match v {
        Val::Bool(b) => 4 + usize::from(!*b),
        Val::String(s) | Val::Enum(s) | Val::Variant(s, None) => quoted(s),
        Val::Char(c) => c.len_utf8() + 2,
        Val::List(items) | Val::Tuple(items) => {
            brackets(items.len()).saturating_add(sum(&mut items.iter().map(least_json_size)))
        }
        // `"name":` before each value.
        Val::Record(fields) => brackets(fields.len()).saturating_add(sum(&mut fields
            .iter()
            .map(|(n, x)| (quoted(n) + 1).saturating_add(least_json_size(x))))),
        // `{"name":x}`.
        Val::Variant(name, Some(x)) => (quoted(name) + 3).saturating_add(least_json_size(x)),
        Val::Flags(set) => {
            brackets(set.len()).saturating_add(sum(&mut set.iter().map(|n| quoted(n))))
        }
        Val::Option(None) => 4,
        // Itself, or `{"some":x}`.
        Val::Option(Some(x)) => least_json_size(x),
        // `{"ok":x}`, `{"err":null}`.
        Val::Result(Ok(Some(x)) | Err(Some(x))) => 7usize.saturating_add(least_json_size(x)),
        Val::Result(Ok(None) | Err(None)) => 11,
        // Numbers; and what a typed tool's signature cannot hold (refused
        // at load).
        _ => 1,
    }
}

/// The text block of a result: a string as itself, anything else as
/// compact JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a result's JSON is charged: a value an element of a list (the
    /// first version counted each twice, and refused a 1 MB `list<u8>`
    /// from a 64 MiB tool: found by the review of the fix), and a record
    /// its node, a key a field and its fields.
    #[test]
    fn a_results_json_weighs_what_parsing_its_text_would() {
        use crate::weight::{OBJECT_VALUES, VALUE_BYTES};
        let bytes = Val::List(vec![Val::U8(7); 1000]);
        assert_eq!(json_weight(&bytes), 1002 * VALUE_BYTES);
        assert!(
            json_weight(&bytes)
                >= crate::weight::parsed_weight(format!("[{}7]", "7,".repeat(999)).as_bytes())
        );
        // A list of one-element lists: each inner array holds four slots.
        let nested = Val::List(vec![Val::List(vec![Val::U8(1)]); 10]);
        assert_eq!(json_weight(&nested), (2 + 10 * 3) * VALUE_BYTES);
        let record = Val::Record(vec![("ab".into(), Val::U8(1)), ("c".into(), Val::U8(2))]);
        assert_eq!(
            json_weight(&record),
            (1 + OBJECT_VALUES + 2 + 2) * VALUE_BYTES + 3
        );
    }

    /// The review's case: a list of empty objects against a record of
    /// optional fields with long names became gigabytes of values, on an
    /// I/O thread, before the call had a sandbox. The conversion stops at
    /// its budget (the tool's memory limit), and the check's cost per
    /// value sends such instances off the I/O threads.
    #[test]
    fn arguments_that_expand_past_their_budget_are_refused() {
        use crate::typed::ty::{Field, Signature};
        let fields: Vec<Field> = (0..16)
            .map(|i| Field {
                name: format!("{}-{i}", "n".repeat(240)),
                ty: Ty::Option(Box::new(Ty::U8)),
            })
            .collect();
        let sig = Signature {
            params: vec![("items".into(), Ty::List(Box::new(Ty::Record(fields))))],
            result: None,
        };
        let empties = serde_json::json!({ "items": vec![serde_json::json!({}); 4000] });
        let args = empties.as_object().unwrap();
        // 4,000 `{}` become 64,000 values, each with a name of 243 bytes:
        // about 20 MB.
        let e = arguments(args, &sig, 4 << 20).unwrap_err().to_string();
        assert!(e.contains("over 4194304 bytes"), "{e}");
        assert_eq!(arguments(args, &sig, 64 << 20).unwrap().len(), 1);
        // Each `{}` is 16 values and their names' bytes of work.
        assert_eq!(sig.expansion(), 16 * (1 + 243 / 8));
        let check: crate::schema::Check = std::sync::Arc::new(|_| Ok(()));
        let schema = |expansion| {
            crate::schema::Schema::compile(&Map::new())
                .unwrap()
                .with_check(check.clone(), expansion)
        };
        assert!(schema(1).small(&empties).is_some());
        assert!(schema(sig.expansion()).small(&empties).is_none());
    }

    /// The least text size is exact for values whose JSON has no escapes
    /// and one-digit numbers (the property tests check it is never more),
    /// so a result is refused early only once its text is past the limit.
    #[test]
    fn least_text_size_is_exact_without_escapes_or_long_numbers() {
        let record = Val::Record(vec![
            ("a".into(), Val::Bool(true)),
            (
                "b-c".into(),
                Val::List(vec![Val::U8(1), Val::U8(2), Val::U8(3)]),
            ),
            ("d".into(), Val::Option(None)),
            ("e".into(), Val::Flags(vec!["x".into(), "yy".into()])),
            (
                "f".into(),
                Val::Variant("v".into(), Some(Box::new(Val::Enum("q".into())))),
            ),
            ("g".into(), Val::Result(Ok(None))),
            ("h".into(), Val::List(vec![])),
        ]);
        let ty = Ty::Record(
            [
                ("a", Ty::Bool),
                ("b-c", Ty::List(Box::new(Ty::U8))),
                ("d", Ty::Option(Box::new(Ty::U8))),
                ("e", Ty::Flags(vec!["x".into(), "yy".into()])),
                (
                    "f",
                    Ty::Variant(vec![Case {
                        name: "v".into(),
                        ty: Some(Ty::Enum(vec!["q".into()])),
                    }]),
                ),
                (
                    "g",
                    Ty::Result {
                        ok: None,
                        err: None,
                    },
                ),
                ("h", Ty::List(Box::new(Ty::U8))),
            ]
            .into_iter()
            .map(|(n, ty)| Field { name: n.into(), ty })
            .collect(),
        );
        let text = text(&to_json(&record, &ty).unwrap());
        assert_eq!(least_text_size(&record), text.len(), "{text}");
        assert_eq!(least_text_size(&Val::String("héllo".into())), "héllo".len());
    }

    /// A review's case: a type of thousands of cases and a value of many of
    /// them. Each list of names is looked up through one map built once
    /// per conversion (a scan per value held a thread for a minute), in
    /// both directions; short lists are scanned and build nothing.
    #[test]
    fn many_cases_are_looked_up_not_scanned() {
        let cases: Vec<String> = (0..10_000).map(|i| format!("x{i:05}")).collect();
        let e = Ty::Enum(cases.clone());
        let list = Ty::List(Box::new(e.clone()));
        let vals = Val::List(vec![Val::Enum("x09766".into()); 1000]);
        let mut path = Path::default();
        let j = from_val(&vals, &list, &mut path).unwrap();
        assert_eq!(j[999], "x09766");
        assert_eq!(path.names.len(), 1, "one map, built once");
        let mut path = Path::default();
        let back = convert(&j, &list, &mut path).unwrap();
        assert_eq!(back, vals);
        assert_eq!(path.names.len(), 1);
        let v = Ty::Variant(
            cases
                .iter()
                .map(|n| Case {
                    name: n.clone(),
                    ty: None,
                })
                .collect(),
        );
        let mut path = Path::default();
        let one = Val::Variant("x00007".into(), None);
        assert_eq!(from_val(&one, &v, &mut path).unwrap(), "x00007");
        assert!(from_val(&Val::Variant("nope".into(), None), &v, &mut path).is_err());
        assert_eq!(path.names.len(), 1);
        // Short lists are scanned.
        let small = Ty::Enum(cases[..SCAN].to_vec());
        let mut path = Path::default();
        assert!(from_val(&Val::Enum("x00003".into()), &small, &mut path).is_ok());
        assert!(path.names.is_empty());
    }
    use crate::typed::ty::{Case, Field};
    use serde_json::json;

    fn err(v: Value, ty: &Ty) -> String {
        to_val(&v, ty).unwrap_err().to_string()
    }

    fn item() -> Ty {
        Ty::Record(vec![
            Field {
                name: "id".into(),
                ty: Ty::U16,
            },
            Field {
                name: "label".into(),
                ty: Ty::Option(Box::new(Ty::String)),
            },
        ])
    }

    #[test]
    fn errors_name_the_pointer_and_the_expectation() {
        let sig = Signature {
            params: vec![("items".into(), Ty::List(Box::new(item())))],
            result: None,
        };
        let args = json!({"items": [{"id": 1}, {"id": 2}, {"id": 70000}]});
        let e = arguments(args.as_object().unwrap(), &sig, usize::MAX).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/items/2/id: expected u16 ≤ 65535, got 70000"
        );

        let e = arguments(
            json!({"items": [{"id": -1}]}).as_object().unwrap(),
            &sig,
            usize::MAX,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "/items/0/id: expected u16 ≥ 0, got -1");
        let e = arguments(
            json!({"items": [{"id": 1.5}]}).as_object().unwrap(),
            &sig,
            usize::MAX,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/items/0/id: expected u16 (an integer), got 1.5"
        );
        let e = arguments(
            json!({"items": [{"id": 1, "lable": "x"}]})
                .as_object()
                .unwrap(),
            &sig,
            usize::MAX,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/items/0/lable: unexpected field (record fields: id, label)"
        );
        let e = arguments(
            json!({"items": [{}]}).as_object().unwrap(),
            &sig,
            usize::MAX,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/items/0/id: missing field (expected u16 (an integer from 0 to 65535))"
        );
        let e = arguments(json!({"itemz": []}).as_object().unwrap(), &sig, usize::MAX).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/items: missing argument (expected list<record { id: u16, label: option<string> }> (an array)); \
             /itemz: unexpected argument (parameters: items)"
        );
    }

    #[test]
    fn sixty_four_bit_integers_take_numbers_and_decimal_strings() {
        assert_eq!(
            to_val(&json!(u64::MAX), &Ty::U64).unwrap(),
            Val::U64(u64::MAX)
        );
        assert_eq!(
            to_val(&json!("18446744073709551615"), &Ty::U64).unwrap(),
            Val::U64(u64::MAX)
        );
        assert_eq!(
            to_val(&json!("-9223372036854775808"), &Ty::S64).unwrap(),
            Val::S64(i64::MIN)
        );
        assert_eq!(to_val(&json!(3.0), &Ty::U64).unwrap(), Val::U64(3));
        assert_eq!(
            err(json!("18446744073709551616"), &Ty::U64),
            "expected u64 ≤ 18446744073709551615, got 18446744073709551616"
        );
        assert_eq!(
            err(json!("007"), &Ty::U64),
            "expected u64 as an integer or a decimal string (digits, no leading zeros), got \"007\""
        );
        assert_eq!(
            err(json!("-0"), &Ty::S64),
            "expected s64 as an integer or a decimal string (digits, no leading zeros, optional -), got \"-0\""
        );
        assert_eq!(err(json!(-1), &Ty::U64), "expected u64 ≥ 0, got -1");
        assert_eq!(
            to_val(&json!(1e17), &Ty::U64).unwrap(),
            Val::U64(100_000_000_000_000_000)
        );
        assert_eq!(
            err(json!(1e20), &Ty::U64),
            "expected u64 ≤ 18446744073709551615, got 1e+20"
        );
        // Beyond 2^53 the output is a string, within it a number.
        assert_eq!(
            to_json(&Val::U64(1 << 53), &Ty::U64).unwrap(),
            json!("9007199254740992")
        );
        assert_eq!(
            to_json(&Val::U64((1 << 53) - 1), &Ty::U64).unwrap(),
            json!(9007199254740991u64)
        );
        assert_eq!(
            to_json(&Val::S64(i64::MIN), &Ty::S64).unwrap(),
            json!("-9223372036854775808")
        );
        // Only 64-bit integers take strings.
        assert_eq!(
            err(json!("5"), &Ty::U32),
            "expected u32 (an integer from 0 to 4294967295), got \"5\""
        );
    }

    #[test]
    fn floats_are_exact_and_spell_non_finite_values() {
        let tenth = to_val(&json!(0.1), &Ty::F32).unwrap();
        assert_eq!(tenth, Val::Float32(0.1));
        assert_eq!(
            to_json(&tenth, &Ty::F32).unwrap(),
            json!(0.10000000149011612)
        );
        assert_eq!(
            to_val(&json!(0.10000000149011612), &Ty::F32).unwrap(),
            tenth
        );
        assert_eq!(
            to_json(&Val::Float64(f64::NAN), &Ty::F64).unwrap(),
            json!("NaN")
        );
        assert_eq!(
            to_json(&Val::Float32(f32::NEG_INFINITY), &Ty::F32).unwrap(),
            json!("-Infinity")
        );
        assert_eq!(
            to_val(&json!("Infinity"), &Ty::F64).unwrap(),
            Val::Float64(f64::INFINITY)
        );
        assert_eq!(
            to_val(&json!(3.4028235e38), &Ty::F32).unwrap(),
            Val::Float32(f32::MAX)
        );
        assert_eq!(
            err(json!(1e39), &Ty::F32),
            "expected f32, got 1e+39: beyond the f32 range (±3.4028235e38)"
        );
        assert_eq!(
            err(json!("nan"), &Ty::F64),
            "expected f64 (a number, or \"NaN\", \"Infinity\", \"-Infinity\"), got \"nan\""
        );
        let neg_zero = to_val(&json!(-0.0), &Ty::F64).unwrap();
        assert_eq!(neg_zero, Val::Float64(-0.0));
        assert_ne!(neg_zero, Val::Float64(0.0));
    }

    #[test]
    fn sum_types_follow_the_documented_shapes() {
        let shape = Ty::Variant(vec![
            Case {
                name: "circle".into(),
                ty: Some(Ty::F64),
            },
            Case {
                name: "none".into(),
                ty: None,
            },
        ]);
        assert_eq!(
            to_val(&json!({"circle": 2.0}), &shape).unwrap(),
            Val::Variant("circle".into(), Some(Box::new(Val::Float64(2.0))))
        );
        assert_eq!(
            to_val(&json!("none"), &shape).unwrap(),
            Val::Variant("none".into(), None)
        );
        assert_eq!(
            err(json!("circle"), &shape),
            "case `circle` carries a f64: write {\"circle\": <f64>}"
        );
        assert_eq!(
            err(json!({"none": null}), &shape),
            "case `none` has no payload: write \"none\""
        );
        assert_eq!(
            err(json!({"square": 1}), &shape),
            "/square: unknown case (cases: circle(..), none)"
        );
        assert_eq!(
            err(json!({"circle": "x"}), &shape)
                .split(':')
                .next()
                .unwrap(),
            "/circle"
        );

        let flags = Ty::Flags(vec!["read".into(), "write".into(), "exec".into()]);
        assert_eq!(
            to_val(&json!(["exec", "read"]), &flags).unwrap(),
            Val::Flags(vec!["read".into(), "exec".into()])
        );
        assert_eq!(
            err(json!(["read", "read"]), &flags),
            "/1: flag \"read\" is given twice"
        );
        assert_eq!(
            err(json!(["list"]), &flags),
            "/0: unknown flag \"list\" (flags: read, write, exec)"
        );

        let nested = Ty::Option(Box::new(Ty::Option(Box::new(Ty::U8))));
        assert_eq!(to_val(&json!(null), &nested).unwrap(), Val::Option(None));
        assert_eq!(
            to_val(&json!({"some": null}), &nested).unwrap(),
            Val::Option(Some(Box::new(Val::Option(None))))
        );
        assert_eq!(
            to_json(&to_val(&json!({"some": 7}), &nested).unwrap(), &nested).unwrap(),
            json!({"some": 7})
        );

        let res = Ty::Result {
            ok: None,
            err: Some(Box::new(Ty::String)),
        };
        assert_eq!(
            to_val(&json!({"ok": null}), &res).unwrap(),
            Val::Result(Ok(None))
        );
        assert_eq!(
            err(json!({"ok": 1}), &res),
            "/ok: expected null (`ok` carries no value), got 1"
        );
        assert_eq!(
            err(json!({"ok": null, "err": "x"}), &res),
            "expected result ({\"ok\": value} or {\"err\": value}), got an object with 2 keys"
        );
        assert_eq!(to_val(&json!("é"), &Ty::Char).unwrap(), Val::Char('é'));
        assert_eq!(
            err(json!("é!"), &Ty::Char),
            "expected char (a string of exactly one Unicode character), got \"é!\" (2 characters)"
        );
    }

    #[test]
    fn text_is_raw_for_strings_and_json_otherwise() {
        assert_eq!(text(&json!("line\n")), "line\n");
        assert_eq!(text(&json!({"a": [1, "x"]})), r#"{"a":[1,"x"]}"#);
    }
}
