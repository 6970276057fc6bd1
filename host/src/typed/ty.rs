//! `Ty`: the component-model value types toolhost can carry as JSON, as a
//! plain tree. It is built once per exported function from wasmtime's
//! reflected types (`from_wasmtime`), which is also where handles, futures,
//! streams and anything else that is not plain data are refused. Everything
//! downstream (schemas, JSON <-> `Val`) works on `Ty`, so it can be tested
//! without compiling a component.

use std::fmt;
use wasmtime::component::Type;

/// Deepest nesting of value types a function may use (a `list<list<u8>>` is
/// 2 deep). The validator allows 100; JSON conversion recurses once per
/// level, and nothing real comes close.
pub const MAX_DEPTH: usize = 32;

/// Most type nodes one function's signature may expand to (shared type
/// definitions are counted at each use: that is what its schema will hold).
/// Every name a type carries (a record's fields, a variant's or an enum's
/// cases, flags) is a node too: an enum of 10,000 cases is one type to the
/// validator, and used in 4,000 places it expanded to 40 million names at
/// load (found by review). Bounds the schema size and the work done per
/// call.
pub const MAX_NODES: usize = 4096;

/// Most bytes of names (fields, cases, flags) one function's signature may
/// expand to.
pub const MAX_NAME_BYTES: usize = 64 << 10;

/// Most type nodes, and bytes of names, all of one component's signatures
/// may expand to together. Each function's bounds alone let a component of
/// 256 functions hold a million nodes, and schemas of several hundred MiB,
/// at load (found by review); sixteen functions at the largest, or 256 of
/// 256 nodes, are well past anything real.
pub const MAX_COMPONENT_NODES: usize = 16 * MAX_NODES;
pub const MAX_COMPONENT_NAME_BYTES: usize = 16 * MAX_NAME_BYTES;

/// What the signatures of one component read so far have taken of its
/// budget ([`MAX_COMPONENT_NODES`], [`MAX_COMPONENT_NAME_BYTES`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Spent {
    nodes: usize,
    name_bytes: usize,
}

/// A value type of the component model, restricted to plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    Bool,
    S8,
    U8,
    S16,
    U16,
    S32,
    U32,
    S64,
    U64,
    F32,
    F64,
    Char,
    String,
    List(Box<Ty>),
    Tuple(Vec<Ty>),
    Record(Vec<Field>),
    Variant(Vec<Case>),
    Enum(Vec<String>),
    Flags(Vec<String>),
    Option(Box<Ty>),
    Result {
        ok: Option<Box<Ty>>,
        err: Option<Box<Ty>>,
    },
}

/// A record field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
}

/// A variant case and its payload, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    pub ty: Option<Ty>,
}

/// A function's parameters (in order) and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub params: Vec<(String, Ty)>,
    pub result: Option<Ty>,
}

impl Signature {
    /// The most one JSON value of its arguments can become, in a schema
    /// check's units (a value, and a value per 8 bytes): an object of no
    /// members is a record of every optional field, each a value with its
    /// name copied. For the argument check's cost (`Schema::with_check`),
    /// so that arguments that expand a lot are converted off the I/O
    /// threads.
    pub fn expansion(&self) -> u64 {
        fn walk(t: &Ty) -> u64 {
            match t {
                Ty::Record(fs) => {
                    let own: u64 = fs.iter().map(|f| 1 + f.name.len() as u64 / 8).sum();
                    fs.iter().map(|f| walk(&f.ty)).fold(own, u64::max)
                }
                Ty::List(t) | Ty::Option(t) => walk(t),
                Ty::Tuple(ts) => ts.iter().map(walk).fold(1, u64::max),
                Ty::Variant(cs) => cs
                    .iter()
                    .filter_map(|c| c.ty.as_ref())
                    .map(walk)
                    .fold(1, u64::max),
                Ty::Result { ok, err } => ok.iter().chain(err).map(|t| walk(t)).fold(1, u64::max),
                _ => 1,
            }
        }
        self.params.iter().map(|(_, t)| walk(t)).fold(1, u64::max)
    }
}

/// Why a type cannot be carried as JSON: `at` says where in the signature
/// (`parameter `file` > list element > field `fd``).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {what}")]
pub struct TypeError {
    pub at: String,
    pub what: String,
}

/// Inclusive integer bounds of an integer type, as i128 so every width fits.
pub fn int_bounds(ty: &Ty) -> Option<(i128, i128)> {
    Some(match ty {
        Ty::S8 => (i8::MIN.into(), i8::MAX.into()),
        Ty::U8 => (0, u8::MAX.into()),
        Ty::S16 => (i16::MIN.into(), i16::MAX.into()),
        Ty::U16 => (0, u16::MAX.into()),
        Ty::S32 => (i32::MIN.into(), i32::MAX.into()),
        Ty::U32 => (0, u32::MAX.into()),
        Ty::S64 => (i64::MIN.into(), i64::MAX.into()),
        Ty::U64 => (0, u64::MAX.into()),
        _ => return None,
    })
}

impl Ty {
    /// Whether this type's JSON form can be `null` (only `option` can):
    /// an option of such a type needs the explicit `{"some": ..}` form.
    pub fn json_nullable(&self) -> bool {
        matches!(self, Ty::Option(_))
    }

    /// The WIT spelling of a scalar type, or a short description of a
    /// compound one, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::S8 => "s8",
            Ty::U8 => "u8",
            Ty::S16 => "s16",
            Ty::U16 => "u16",
            Ty::S32 => "s32",
            Ty::U32 => "u32",
            Ty::S64 => "s64",
            Ty::U64 => "u64",
            Ty::F32 => "f32",
            Ty::F64 => "f64",
            Ty::Char => "char",
            Ty::String => "string",
            Ty::List(_) => "list",
            Ty::Tuple(_) => "tuple",
            Ty::Record(_) => "record",
            Ty::Variant(_) => "variant",
            Ty::Enum(_) => "enum",
            Ty::Flags(_) => "flags",
            Ty::Option(_) => "option",
            Ty::Result { .. } => "result",
        }
    }
}

/// WIT-like rendering (`list<tuple<u8, string>>`, `record { a: u8 }`), used
/// in descriptions of functions that carry no doc comment.
impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T>(
            f: &mut fmt::Formatter<'_>,
            items: &[T],
            mut one: impl FnMut(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
        ) -> fmt::Result {
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                one(f, it)?;
            }
            Ok(())
        }
        match self {
            Ty::List(t) => write!(f, "list<{t}>"),
            Ty::Option(t) => write!(f, "option<{t}>"),
            Ty::Tuple(ts) => {
                f.write_str("tuple<")?;
                list(f, ts, |f, t| write!(f, "{t}"))?;
                f.write_str(">")
            }
            Ty::Result { ok, err } => match (ok, err) {
                (None, None) => f.write_str("result"),
                (Some(o), None) => write!(f, "result<{o}>"),
                (None, Some(e)) => write!(f, "result<_, {e}>"),
                (Some(o), Some(e)) => write!(f, "result<{o}, {e}>"),
            },
            Ty::Record(fs) => {
                f.write_str("record { ")?;
                list(f, fs, |f, x| write!(f, "{}: {}", x.name, x.ty))?;
                f.write_str(" }")
            }
            Ty::Variant(cs) => {
                f.write_str("variant { ")?;
                list(f, cs, |f, c| match &c.ty {
                    Some(t) => write!(f, "{}({t})", c.name),
                    None => f.write_str(&c.name),
                })?;
                f.write_str(" }")
            }
            Ty::Enum(ns) => {
                f.write_str("enum { ")?;
                list(f, ns, |f, n| f.write_str(n))?;
                f.write_str(" }")
            }
            Ty::Flags(ns) => {
                f.write_str("flags { ")?;
                list(f, ns, |f, n| f.write_str(n))?;
                f.write_str(" }")
            }
            scalar => f.write_str(scalar.name()),
        }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("func(")?;
        for (i, (n, t)) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}: {t}")?;
        }
        f.write_str(")")?;
        if let Some(r) = &self.result {
            write!(f, " -> {r}")?;
        }
        Ok(())
    }
}

/// Converts wasmtime's reflected types, counting nodes and depth.
struct Convert {
    nodes: usize,
    name_bytes: usize,
    /// The component's signatures before this one.
    before: Spent,
    /// Where we are, for errors: `parameter `x``, `list element`, ...
    at: Vec<String>,
}

impl Convert {
    fn err(&self, what: impl Into<String>) -> TypeError {
        TypeError {
            at: self.at.join(" > "),
            what: what.into(),
        }
    }

    fn within<T>(
        &mut self,
        step: String,
        f: impl FnOnce(&mut Self) -> Result<T, TypeError>,
    ) -> Result<T, TypeError> {
        self.at.push(step);
        let r = f(self);
        self.at.pop();
        r
    }

    /// Count `names` (a type's fields, cases or flags) against the
    /// signature's nodes and name bytes.
    fn names<'n>(&mut self, names: impl Iterator<Item = &'n str>) -> Result<(), TypeError> {
        for n in names {
            self.nodes += 1;
            self.name_bytes += n.len();
        }
        if self.name_bytes > MAX_NAME_BYTES {
            return Err(self.err(format!(
                "the signature's field, case and flag names expand to more than {} KiB; \
                 toolhost refuses types this large (split the function or simplify its types)",
                MAX_NAME_BYTES >> 10
            )));
        }
        if self.before.name_bytes + self.name_bytes > MAX_COMPONENT_NAME_BYTES {
            return Err(self.err(format!(
                "the component's signatures together expand to more than {} KiB of field, \
                 case and flag names; toolhost refuses components this large (split it or \
                 simplify its types)",
                MAX_COMPONENT_NAME_BYTES >> 10
            )));
        }
        self.count()
    }

    fn count(&mut self) -> Result<(), TypeError> {
        if self.nodes > MAX_NODES {
            return Err(self.err(format!(
                "the signature expands to more than {MAX_NODES} type nodes; \
                 toolhost refuses types this large (split the function or simplify its types)"
            )));
        }
        if self.before.nodes + self.nodes > MAX_COMPONENT_NODES {
            return Err(self.err(format!(
                "the component's signatures together expand to more than \
                 {MAX_COMPONENT_NODES} type nodes; toolhost refuses components this large \
                 (split it or simplify its types)"
            )));
        }
        Ok(())
    }

    fn ty(&mut self, t: &Type, depth: usize) -> Result<Ty, TypeError> {
        self.nodes += 1;
        self.count()?;
        if depth > MAX_DEPTH {
            return Err(self.err(format!(
                "types nest more than {MAX_DEPTH} levels deep; toolhost refuses deeper types"
            )));
        }
        let d = depth + 1;
        Ok(match t {
            Type::Bool => Ty::Bool,
            Type::S8 => Ty::S8,
            Type::U8 => Ty::U8,
            Type::S16 => Ty::S16,
            Type::U16 => Ty::U16,
            Type::S32 => Ty::S32,
            Type::U32 => Ty::U32,
            Type::S64 => Ty::S64,
            Type::U64 => Ty::U64,
            Type::Float32 => Ty::F32,
            Type::Float64 => Ty::F64,
            Type::Char => Ty::Char,
            Type::String => Ty::String,
            Type::List(l) => {
                let e = self.within("list element".into(), |c| c.ty(&l.ty(), d))?;
                Ty::List(Box::new(e))
            }
            Type::Tuple(tu) => Ty::Tuple(
                tu.types()
                    .enumerate()
                    .map(|(i, t)| self.within(format!("tuple item {i}"), |c| c.ty(&t, d)))
                    .collect::<Result<_, _>>()?,
            ),
            Type::Record(r) => Ty::Record({
                self.names(r.fields().map(|f| f.name))?;
                r.fields()
                    .map(|f| {
                        let ty = self.within(format!("field `{}`", f.name), |c| c.ty(&f.ty, d))?;
                        Ok(Field {
                            name: f.name.to_string(),
                            ty,
                        })
                    })
                    .collect::<Result<_, _>>()?
            }),
            Type::Variant(v) => Ty::Variant({
                self.names(v.cases().map(|c| c.name))?;
                v.cases()
                    .map(|cs| {
                        let ty = match &cs.ty {
                            Some(t) => {
                                Some(self.within(format!("case `{}`", cs.name), |c| c.ty(t, d))?)
                            }
                            None => None,
                        };
                        Ok(Case {
                            name: cs.name.to_string(),
                            ty,
                        })
                    })
                    .collect::<Result<_, _>>()?
            }),
            Type::Enum(e) => {
                self.names(e.names())?;
                Ty::Enum(e.names().map(str::to_string).collect())
            }
            Type::Flags(fl) => {
                self.names(fl.names())?;
                Ty::Flags(fl.names().map(str::to_string).collect())
            }
            Type::Option(o) => {
                let t = self.within("option payload".into(), |c| c.ty(&o.ty(), d))?;
                Ty::Option(Box::new(t))
            }
            Type::Result(r) => {
                let ok = match r.ok() {
                    Some(t) => Some(Box::new(self.within("ok payload".into(), |c| c.ty(&t, d))?)),
                    None => None,
                };
                let err = match r.err() {
                    Some(t) => Some(Box::new(
                        self.within("err payload".into(), |c| c.ty(&t, d))?,
                    )),
                    None => None,
                };
                Ty::Result { ok, err }
            }
            Type::Own(_) | Type::Borrow(_) => {
                return Err(self.err(
                    "a resource handle cannot be passed as JSON: toolhost serves only \
                     functions whose parameters and results are plain data",
                ));
            }
            Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
                return Err(self.err(
                    "async values (future, stream, error-context) are not supported: toolhost \
                     serves only functions whose parameters and results are plain data",
                ));
            }
            Type::Map(_) | Type::FixedLengthList(_) => {
                return Err(self.err(format!(
                    "`{}` types are not supported by toolhost yet",
                    if matches!(t, Type::Map(_)) {
                        "map"
                    } else {
                        "fixed-length list"
                    }
                )));
            }
        })
    }
}

/// The plain-data signature of an exported function, or why it has none.
/// The signature of `func`, one more of a component whose signatures so
/// far took `spent` (its budget is added to).
pub fn signature(
    func: &wasmtime::component::types::ComponentFunc,
    spent: &mut Spent,
) -> Result<Signature, TypeError> {
    let mut c = Convert {
        nodes: 0,
        name_bytes: 0,
        before: *spent,
        at: Vec::new(),
    };
    if func.async_() {
        return Err(c.err("async functions are not supported by toolhost"));
    }
    // Parameter names count too (a review's case: 1,000 long ones per
    // function, 256 functions of one type).
    c.names(func.params().map(|(n, _)| n))?;
    let params = func
        .params()
        .map(|(name, t)| {
            let ty = c.within(format!("parameter `{name}`"), |c| c.ty(&t, 0))?;
            Ok((name.to_string(), ty))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = func.results();
    let result = match results.next() {
        Some(t) => Some(c.within("result".into(), |c| c.ty(&t, 0))?),
        None => None,
    };
    if results.next().is_some() {
        return Err(c.err("functions with more than one result are not supported"));
    }
    spent.nodes += c.nodes;
    spent.name_bytes += c.name_bytes;
    Ok(Signature { params, result })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_wit() {
        let t = Ty::List(Box::new(Ty::Tuple(vec![
            Ty::U8,
            Ty::Result {
                ok: None,
                err: Some(Box::new(Ty::String)),
            },
            Ty::Record(vec![Field {
                name: "first-name".into(),
                ty: Ty::Option(Box::new(Ty::Char)),
            }]),
        ])));
        assert_eq!(
            t.to_string(),
            "list<tuple<u8, result<_, string>, record { first-name: option<char> }>>"
        );
        let s = Signature {
            params: vec![
                ("a".into(), Ty::U32),
                ("b".into(), Ty::Flags(vec!["x".into()])),
            ],
            result: None,
        };
        assert_eq!(s.to_string(), "func(a: u32, b: flags { x })");
    }

    #[test]
    fn integer_bounds_are_exact() {
        assert_eq!(int_bounds(&Ty::U64), Some((0, 18_446_744_073_709_551_615)));
        assert_eq!(
            int_bounds(&Ty::S64),
            Some((-9_223_372_036_854_775_808, 9_223_372_036_854_775_807))
        );
        assert_eq!(int_bounds(&Ty::S8), Some((-128, 127)));
        assert_eq!(int_bounds(&Ty::F32), None);
    }
}
