//! Which functions a typed-WIT component exports, under which tool names,
//! with which signatures and descriptions.
//!
//! Only the component's *type* is read (no instance is created): exported
//! functions at the top level and in exported interfaces become tools;
//! interfaces of the `wasi:` namespace (`wasi:cli/run`,
//! `wasi:http/incoming-handler`) are entry points for other hosts, not
//! tools, and are skipped. A function that is not plain data (resources,
//! futures, streams) makes the whole component refused, with the function
//! and the place in its signature named.

use super::docs::{PackageDocs, interface_name};
use super::ty::{Signature, Spent, TypeError, signature};
use wasmtime::Engine;
use wasmtime::component::types::{Component, ComponentItem};

/// Longest tool name the host accepts.
pub const MAX_TOOL_NAME: usize = 64;

/// An exported function, as a tool.
#[derive(Debug, Clone)]
pub struct TypedFunction {
    /// `func` for a top-level function, `iface_func` for one in interface
    /// `ns:pkg/iface@v` (or a plain `iface` export). WIT names never contain
    /// `_`, so the two parts cannot be confused.
    pub tool: String,
    /// The export name of the interface holding it, if any.
    pub interface: Option<String>,
    /// The function's name in WIT.
    pub func: String,
    pub sig: Signature,
    /// Its WIT doc comment, or, without one, where it comes from and its
    /// signature.
    pub description: String,
}

impl TypedFunction {
    /// `ns:pkg/iface@v#func` or `func`: how WIT tooling names it.
    pub fn wit_path(&self) -> String {
        match &self.interface {
            Some(i) => format!("{i}#{}", self.func),
            None => self.func.clone(),
        }
    }
}

/// Why a component's exports cannot be served as tools.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescribeError {
    #[error(
        "it exports neither toolhost's world (the `toolhost:tool/tool@0.1.0` interface) nor any plain WIT function; export one or the other"
    )]
    NoFunctions,
    #[error("function `{function}` cannot be a tool: {source}")]
    Type {
        function: String,
        #[source]
        source: TypeError,
    },
    #[error("functions `{first}` and `{second}` would both be tool `{tool}`; rename one of them")]
    Clash {
        tool: String,
        first: String,
        second: String,
    },
    #[error(
        "function `{function}`: its tool name `{tool}` is longer than {MAX_TOOL_NAME} characters; export it under a shorter interface or function name"
    )]
    NameTooLong { function: String, tool: String },
    #[error("it exports more than {max} functions; a component may offer at most {max} tools")]
    TooMany { max: usize },
}

/// Whether the component exports toolhost's own world (any version of the
/// `toolhost:tool/` package): such a component is loaded by `describe`/`call`.
pub fn exports_toolhost_world(ty: &Component, engine: &Engine) -> bool {
    ty.exports(engine)
        .any(|(name, _)| name.starts_with("toolhost:tool/"))
}

/// The functions of a typed-WIT component, in export order: at most `max`
/// (refused past it before any more is looked at: a component may export a
/// million names, and each costs its signature's work).
pub fn functions(
    ty: &Component,
    engine: &Engine,
    docs: &PackageDocs,
    max: usize,
) -> Result<Vec<TypedFunction>, DescribeError> {
    let mut out: Vec<TypedFunction> = Vec::new();
    // Each tool name's function, for clashes (a scan of `out` per export
    // was quadratic in a hostile component's million exports).
    let mut taken: std::collections::HashMap<String, usize> = Default::default();
    let mut spent = Spent::default();
    let mut add = |interface: Option<&str>, func: &str, item: &ComponentItem| {
        let ComponentItem::ComponentFunc(f) = item else {
            return Ok(());
        };
        if out.len() >= max {
            return Err(DescribeError::TooMany { max });
        }
        let wit_path = match interface {
            Some(i) => format!("{i}#{func}"),
            None => func.to_string(),
        };
        let sig = signature(f, &mut spent).map_err(|source| DescribeError::Type {
            function: wit_path.clone(),
            source,
        })?;
        let tool = match interface {
            Some(i) => format!("{}_{func}", interface_name(i)),
            None => func.to_string(),
        };
        if tool.len() > MAX_TOOL_NAME {
            return Err(DescribeError::NameTooLong {
                function: wit_path,
                tool,
            });
        }
        if let Some(&other) = taken.get(&tool) {
            return Err(DescribeError::Clash {
                tool,
                first: out[other].wit_path(),
                second: wit_path,
            });
        }
        taken.insert(tool.clone(), out.len());
        let description = docs.function(interface, func).unwrap_or_else(|| {
            let mut d = format!("Calls `{wit_path}`: {sig}");
            if d.len() > 512 {
                let cut = (0..=509)
                    .rev()
                    .find(|&i| d.is_char_boundary(i))
                    .unwrap_or(0);
                d.truncate(cut);
                d.push('…');
            }
            d
        });
        out.push(TypedFunction {
            tool,
            interface: interface.map(str::to_string),
            func: func.to_string(),
            sig,
            description,
        });
        Ok(())
    };
    for (name, export) in ty.exports(engine) {
        match &export.ty {
            ComponentItem::ComponentFunc(_) => add(None, name, &export.ty)?,
            ComponentItem::ComponentInstance(inst) if !name.starts_with("wasi:") => {
                for (func, item) in inst.exports(engine) {
                    add(Some(name), func, &item.ty)?;
                }
            }
            // Types, resources, modules, nested components and skipped
            // `wasi:` interfaces are not tools.
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(DescribeError::NoFunctions);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typed::ty::Ty;

    fn component(wat: &str) -> (Engine, wasmtime::component::Component) {
        let engine = Engine::default();
        let c = wasmtime::component::Component::new(&engine, wat::parse_str(wat).unwrap()).unwrap();
        (engine, c)
    }

    /// A core module whose `f` takes `params` i32s and returns one.
    fn core(params: usize) -> String {
        format!(
            r#"(core module $m (func (export "f") (param {}) (result i32) i32.const 0))
               (core instance $i (instantiate $m))"#,
            "i32 ".repeat(params)
        )
    }

    #[test]
    fn exported_functions_and_interfaces_become_tools() {
        let (engine, c) = component(&format!(
            r#"(component
                {}
                (func $add (param "a" u32) (param "b" u32) (result u32) (canon lift (core func $i "f")))
                (instance $ops (export "add" (func $add)))
                (export "acme:tools/ops@1.0.0" (instance $ops))
                (instance $run (export "run" (func $add)))
                (export "wasi:cli/run@0.2.0" (instance $run))
                (export "sum" (func $add))
            )"#,
            core(2)
        ));
        let fs = functions(&c.component_type(), &engine, &PackageDocs::default(), 256).unwrap();
        let names: Vec<_> = fs.iter().map(|f| f.tool.as_str()).collect();
        assert_eq!(names, ["ops_add", "sum"], "wasi: interfaces are not tools");
        assert_eq!(fs[0].interface.as_deref(), Some("acme:tools/ops@1.0.0"));
        assert_eq!(fs[0].wit_path(), "acme:tools/ops@1.0.0#add");
        assert_eq!(
            fs[0].sig.params,
            vec![("a".into(), Ty::U32), ("b".into(), Ty::U32)]
        );
        assert_eq!(fs[0].sig.result, Some(Ty::U32));
        assert_eq!(
            fs[0].description,
            "Calls `acme:tools/ops@1.0.0#add`: func(a: u32, b: u32) -> u32"
        );
        assert!(!exports_toolhost_world(&c.component_type(), &engine));
    }

    #[test]
    fn two_interfaces_of_the_same_name_clash() {
        let (engine, c) = component(&format!(
            r#"(component
                {}
                (func $g (result u32) (canon lift (core func $i "f")))
                (instance $a (export "get" (func $g)))
                (export "acme:one/ops" (instance $a))
                (instance $b (export "get" (func $g)))
                (export "acme:two/ops" (instance $b))
            )"#,
            core(0)
        ));
        assert_eq!(
            functions(&c.component_type(), &engine, &PackageDocs::default(), 256)
                .unwrap_err()
                .to_string(),
            "functions `acme:one/ops#get` and `acme:two/ops#get` would both be tool `ops_get`; rename one of them"
        );
    }

    /// A core instance `$i` whose `f` takes its arguments in memory (one
    /// pointer), with the memory and `realloc` such a lift needs.
    const MEMORY_CORE: &str = r#"(core module $m
            (memory (export "mem") 1)
            (func (export "f") (param i32) (result i32) i32.const 0)
            (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 0))
        (core instance $i (instantiate $m))"#;

    /// A component taking `record { f0: e, f1: e, ... }` (`fields` fields)
    /// of `enum e { ... }` (`cases`, each named by `name`).
    fn wide(fields: usize, cases: usize, name: impl Fn(usize) -> String) -> String {
        let cases: String = (0..cases).map(|i| format!(" \"{}\"", name(i))).collect();
        let fields: String = (0..fields)
            .map(|i| format!(" (field \"f{i}\" $e2)"))
            .collect();
        format!(
            r#"(component
                {MEMORY_CORE}
                (type $e (enum{cases}))
                (export $e2 "e" (type $e))
                (type $r (record{fields}))
                (export $r2 "r" (type $r))
                (func $f (param "x" $r2) (result u32)
                    (canon lift (core func $i "f") (memory $i "mem") (realloc (func $i "realloc"))))
                (export "take" (func $f))
            )"#
        )
    }

    /// A review's case: an enum is one type to the validator, but each use
    /// carries all its names. 200 uses of 2,000 cases made 400,000 names at
    /// load (and 4,000 uses of 10,000, 40 million): every name counts
    /// against the signature's nodes, and their bytes against a budget.
    #[test]
    fn names_count_against_a_signatures_size() {
        let (engine, c) = component(&wide(200, 2000, |i| format!("a{i}")));
        let e = functions(&c.component_type(), &engine, &PackageDocs::default(), 256).unwrap_err();
        assert!(e.to_string().contains("more than 4096 type nodes"), "{e}");
        let long = |i: usize| format!("{}{i}", "n".repeat(1000));
        let (engine, c) = component(&wide(1, 100, long));
        let e = functions(&c.component_type(), &engine, &PackageDocs::default(), 256).unwrap_err();
        assert!(
            e.to_string().contains("names expand to more than 64 KiB"),
            "{e}"
        );
        // Parameter names too.
        let params: String = (0..100)
            .map(|i| format!(r#"(param "{}{i}" u32)"#, "p".repeat(1000)))
            .collect();
        let (engine, c) = component(&format!(
            r#"(component
                {MEMORY_CORE}
                (func $f {params} (result u32)
                    (canon lift (core func $i "f") (memory $i "mem") (realloc (func $i "realloc"))))
                (export "many" (func $f))
            )"#
        ));
        let e = functions(&c.component_type(), &engine, &PackageDocs::default(), 256).unwrap_err();
        assert!(
            e.to_string().contains("names expand to more than 64 KiB"),
            "{e}"
        );
        // A real one is fine.
        let (engine, c) = component(&wide(20, 50, |i| format!("a{i}")));
        assert!(functions(&c.component_type(), &engine, &PackageDocs::default(), 256).is_ok());
    }

    /// A review's case: each function within its bounds, 256 of them held
    /// a million type nodes and several hundred MiB of schemas at load.
    /// A component's signatures share one budget of nodes and name bytes.
    #[test]
    fn a_components_signatures_share_one_budget() {
        // The same function exported `n` times: 3,843 nodes each.
        let times = |n: usize, one: String| {
            let more: String = (1..n)
                .map(|i| format!(r#"(export "take{i}" (func $f))"#))
                .collect();
            one.replace(
                r#"(export "take" (func $f))"#,
                &format!(r#"(export "take" (func $f)){more}"#),
            )
        };
        let docs = PackageDocs::default();
        let (engine, c) = component(&times(17, wide(20, 190, |i| format!("a{i}"))));
        assert_eq!(
            functions(&c.component_type(), &engine, &docs, 256)
                .unwrap()
                .len(),
            17
        );
        let (engine, c) = component(&times(18, wide(20, 190, |i| format!("a{i}"))));
        let e = functions(&c.component_type(), &engine, &docs, 256).unwrap_err();
        assert!(
            e.to_string()
                .contains("signatures together expand to more than 65536 type nodes"),
            "{e}"
        );
        // Names: 60 KB a function.
        let long = |i: usize| format!("{}{i}", "n".repeat(1000));
        let (engine, c) = component(&times(17, wide(1, 60, long)));
        assert!(functions(&c.component_type(), &engine, &docs, 256).is_ok());
        let (engine, c) = component(&times(18, wide(1, 60, long)));
        let e = functions(&c.component_type(), &engine, &docs, 256).unwrap_err();
        assert!(e.to_string().contains("more than 1024 KiB of field"), "{e}");
    }

    /// A review's case: a million exports of one function took half an
    /// hour of clash checks before the tool count was looked at. Past the
    /// most tools a component may offer, it is refused at once.
    #[test]
    fn past_the_most_tools_a_component_is_refused_at_once() {
        let exports: String = (0..300)
            .map(|i| format!(r#"(export "t{i}" (func $g))"#))
            .collect();
        let (engine, c) = component(&format!(
            r#"(component
                {}
                (func $g (result u32) (canon lift (core func $i "f")))
                {exports}
            )"#,
            core(0)
        ));
        let e = functions(&c.component_type(), &engine, &PackageDocs::default(), 256).unwrap_err();
        assert_eq!(e, DescribeError::TooMany { max: 256 });
        assert_eq!(
            functions(&c.component_type(), &engine, &PackageDocs::default(), 300)
                .unwrap()
                .len(),
            300
        );
    }

    #[test]
    fn toolhost_world_is_recognised_by_its_package() {
        let (engine, c) = component(&format!(
            r#"(component
                {}
                (func $g (result u32) (canon lift (core func $i "f")))
                (instance $t (export "describe" (func $g)))
                (export "toolhost:tool/tool@0.1.0" (instance $t))
            )"#,
            core(0)
        ));
        assert!(exports_toolhost_world(&c.component_type(), &engine));
    }
}
