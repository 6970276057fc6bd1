//! Typed-WIT components: components that export plain WIT functions rather
//! than toolhost's `toolhost:tool` world (the convention of other wasm MCP
//! hosts) are served too, one tool per exported function.
//!
//! This module owns the pure parts: which functions a component exports and
//! their docs (`describe`, `docs`), their types as plain data (`ty`), the
//! JSON Schemas of arguments and results (`schema`) and the conversion of
//! JSON to and from component values (`value`). It never instantiates or
//! runs anything: `sandbox` calls the functions, under the same limits and
//! grants as any tool.
//!
//! # Tools
//!
//! A function `f` exported at the top level is tool `f`; a function `f` of
//! an exported interface `ns:pkg/iface@v` is tool `iface_f`. Interfaces of
//! the `wasi:` namespace are not tools. The description is the function's
//! WIT doc comment (from the `package-docs` custom section, see `docs`), or
//! its WIT path and signature when it has none. A component whose exported
//! functions use resources, futures or streams is refused at load.
//!
//! # JSON conventions
//!
//! Arguments are one JSON object with a property per parameter, named as in
//! WIT (kebab-case: `first-name`). Each type maps to JSON as follows; the
//! output is always in this canonical form, the input must be too except
//! where noted.
//!
//! | WIT | JSON |
//! |---|---|
//! | `bool` | `true` / `false` |
//! | `u8` `u16` `u32` `s8` `s16` `s32` | an integer within the type's bounds (`3.0` is accepted as `3`) |
//! | `u64` `s64` | an integer; beyond ±(2^53 − 1) output is a decimal string (`"18446744073709551615"`) so no client rounds it; input may be either (strings: digits, no leading zeros, `-` for s64) |
//! | `f32` `f64` | a number; `"NaN"`, `"Infinity"`, `"-Infinity"` for the non-finite values. An f32 is output as its exact f64 value (`0.1f32` is `0.10000000149011612`); input rounds to nearest, beyond the f32 range is an error. NaN payloads are not kept |
//! | `char` | a string of exactly one Unicode scalar value |
//! | `string` | a string |
//! | `list<T>` (`list<u8>` too) | an array |
//! | `tuple<A, B>` | an array of exactly that many items |
//! | `record` | an object keyed by the WIT field names (kebab-case); unknown keys are errors; `option` fields may be omitted on input (`none`), and are `null` on output |
//! | `variant` | a case without payload is its name (`"none"`); a case with one is a one-key object (`{"circle": 2.5}`) |
//! | `enum` | the case name |
//! | `flags` | an array of the set flag names, in declaration order on output, any order (no repeats) on input |
//! | `option<T>` | `null` or the value; when `T` is itself an option, `null` or `{"some": value}` |
//! | `result<T, E>` | `{"ok": value}` or `{"err": value}`; `null` as the value of a side without a type |
//!
//! # Results
//!
//! A call's structured content is `{"result": <value>}` (`null` for a
//! function without result); its text block is the value itself for a
//! string and compact JSON otherwise. A function whose result is a
//! `result<T, E>` succeeds with `T`, and its `err` case is a tool error
//! (`isError`) whose message is the error value (the string itself, or
//! compact JSON).

mod describe;
mod docs;
mod schema;
mod ty;
mod value;

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod snapshot;

pub(crate) use describe::{DescribeError, TypedFunction, exports_toolhost_world, functions};
pub(crate) use docs::PackageDocs;
pub(crate) use schema::{input as input_schema, output as output_schema};
pub(crate) use ty::{Signature, Ty};
pub(crate) use value::{arguments, json_weight, least_text_size, text, to_json};
