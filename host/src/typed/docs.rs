//! Doc comments of a component's exported functions, from the WIT
//! `package-docs` custom sections it carries.
//!
//! The component binary format has no place for docs; wit-component's
//! convention is a `package-docs` custom section holding the docs of one WIT
//! package, keyed by world, interface and function names (decoded here with
//! `wit_parser::PackageMetadata`, versions 0 and 1). Producers put it at the
//! top level of the component (a docs-injection step after the build) or in
//! the core module (a `#[link_section]` in the guest): both are read, the top
//! level first. The section does not name the package it documents, so docs
//! are matched by interface and function name.
//!
//! Docs are a courtesy: a malformed section is logged and skipped, never a
//! reason to refuse a component.

use serde_json::Value;
use wit_parser::PackageMetadata;

/// The custom section's name.
pub const SECTION: &str = PackageMetadata::SECTION_NAME;

/// Every `package-docs` section of a component, decoded.
#[derive(Debug, Default)]
pub struct PackageDocs {
    packages: Vec<Value>,
}

impl PackageDocs {
    /// Collect the `package-docs` sections of `wasm` (a component), top
    /// level first, then those of nested modules and components.
    pub fn from_component(wasm: &[u8]) -> PackageDocs {
        let mut top = Vec::new();
        let mut nested = Vec::new();
        let mut depth = 0usize;
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            let Ok(payload) = payload else { break };
            match payload {
                wasmparser::Payload::ModuleSection { .. }
                | wasmparser::Payload::ComponentSection { .. } => depth += 1,
                wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
                wasmparser::Payload::CustomSection(s) if s.name() == SECTION => {
                    match decode(s.data()) {
                        Ok(v) if depth == 0 => top.push(v),
                        Ok(v) => nested.push(v),
                        // The error quotes the component's own text (an
                        // unknown field's name): escaped and cut, or it
                        // writes lines of its own into the log (found by
                        // review).
                        Err(e) => tracing::warn!(
                            "ignoring a malformed `{SECTION}` section: {}",
                            crate::audit::shown(&format!("{e:#}"), 512)
                        ),
                    }
                }
                _ => {}
            }
        }
        top.append(&mut nested);
        PackageDocs { packages: top }
    }

    /// Docs of function `func`, exported from interface `interface` (its
    /// export name: `ns:pkg/iface@1.0.0` or a plain `iface`), or from the
    /// component itself when `interface` is `None`.
    pub fn function(&self, interface: Option<&str>, func: &str) -> Option<String> {
        self.packages.iter().find_map(|pkg| match interface {
            None => worlds(pkg).find_map(|w| {
                func_docs(w.get("func_exports")?.get(func)?)
                    .or_else(|| func_docs(w.get("funcs")?.get(func)?))
            }),
            Some(export) => {
                let short = interface_name(export);
                pkg.get("interfaces")
                    .and_then(|i| i.get(short))
                    .and_then(|i| func_docs(i.get("funcs")?.get(func)?))
                    .or_else(|| {
                        // An interface declared inline in a world:
                        // `export tools: interface { .. }`.
                        worlds(pkg).find_map(|w| {
                            ["interface_exports", "interfaces"].iter().find_map(|k| {
                                func_docs(w.get(*k)?.get(export)?.get("funcs")?.get(func)?)
                            })
                        })
                    })
            }
        })
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }
}

fn decode(data: &[u8]) -> anyhow::Result<Value> {
    let meta = PackageMetadata::decode(data)?;
    Ok(serde_json::to_value(&meta)?)
}

fn worlds(pkg: &Value) -> impl Iterator<Item = &Value> {
    pkg.get("worlds")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.values())
}

/// v0 stores a function's docs as a bare string, v1 as `{"docs": ..}`.
fn func_docs(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.as_str(),
        other => other.get("docs")?.as_str()?,
    };
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// `ns:pkg/iface@1.0.0` -> `iface`; a plain name stays as it is.
pub fn interface_name(export: &str) -> &str {
    let after_slash = export.rsplit_once('/').map_or(export, |(_, r)| r);
    after_slash.split('@').next().unwrap_or(after_slash)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section wit-component writes for `wit`, as a producer would.
    fn section(wit: &str) -> Vec<u8> {
        let mut resolve = wit_parser::Resolve::new();
        let pkg = resolve.push_str("docs.wit", wit).unwrap();
        PackageMetadata::extract(&resolve, pkg).encode().unwrap()
    }

    fn with_section(data: &[u8]) -> Vec<u8> {
        // The smallest component: the preamble, then one custom section.
        let mut wasm = b"\0asm\x0d\0\x01\0".to_vec();
        let mut body = Vec::new();
        leb(&mut body, SECTION.len() as u64);
        body.extend_from_slice(SECTION.as_bytes());
        body.extend_from_slice(data);
        wasm.push(0);
        leb(&mut wasm, body.len() as u64);
        wasm.extend_from_slice(&body);
        wasm
    }

    fn leb(out: &mut Vec<u8>, mut n: u64) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    const WIT: &str = r#"
        package acme:tools@1.2.0;

        interface ops {
            /// Add two numbers.
            ///
            /// Wraps on overflow.
            add: func(a: u32, b: u32) -> u32;
            undocumented: func();
        }

        world tools {
            export ops;
            /// Say hello.
            export greet: func(name: string) -> string;
            export inline: interface {
                /// Inline and documented.
                ping: func();
            }
        }
    "#;

    #[test]
    fn finds_docs_of_interface_and_world_functions() {
        let docs = PackageDocs::from_component(&with_section(&section(WIT)));
        assert!(!docs.is_empty());
        assert_eq!(
            docs.function(Some("acme:tools/ops@1.2.0"), "add")
                .as_deref(),
            Some("Add two numbers.\n\nWraps on overflow.")
        );
        assert_eq!(
            docs.function(Some("acme:tools/ops@1.2.0"), "undocumented"),
            None
        );
        assert_eq!(docs.function(None, "greet").as_deref(), Some("Say hello."));
        assert_eq!(
            docs.function(Some("inline"), "ping").as_deref(),
            Some("Inline and documented.")
        );
        assert_eq!(docs.function(None, "add"), None);
    }

    #[test]
    fn a_malformed_section_is_ignored() {
        let docs = PackageDocs::from_component(&with_section(b"\x07{not json"));
        assert!(docs.is_empty());
        let docs = PackageDocs::from_component(b"\0asm\x0d\0\x01\0");
        assert!(docs.is_empty());
    }

    #[test]
    fn interface_names_drop_package_and_version() {
        assert_eq!(interface_name("wasi:cli/run@0.2.0"), "run");
        assert_eq!(interface_name("acme:tools/ops"), "ops");
        assert_eq!(interface_name("inline"), "inline");
    }
}
