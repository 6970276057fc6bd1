//! Structure-aware mutators for toolhost's fuzz targets (`tests/`).
//!
//! A fuzz input is raw bytes. Each target feeds them to the code under test
//! as they are, and also reads them as a [`Script`]: a sequence of choices
//! that edits a *valid* seed (a manifest, a host config, a session of
//! JSON-RPC lines, a component) the way a careless or hostile author would:
//! keys dropped, duplicated or renamed, values swapped for ones of the wrong
//! type or range, lines truncated, bits flipped. Random bytes on stable reach
//! deep into the parsers this way, where they would almost never get past
//! the TOML or JSON syntax on their own; under libFuzzer (`cargo bolero`)
//! the same script is what the fuzzer mutates.
//!
//! Nothing here knows toolhost: the targets pass in their seeds and their
//! palettes of keys, values and lines.

use serde_json::{Map, Value};

/// Choices read from fuzz input bytes. An exhausted script answers `0`, so
/// every input, however short, is a complete script.
#[derive(Debug, Clone)]
pub struct Script<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Script<'a> {
    /// A script reading `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Script<'a> {
        Script { bytes, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn is_done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// The next byte (`0` once exhausted).
    pub fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number below `n` (`0` when `n` is 0), from two bytes.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let v = u16::from_le_bytes([self.byte(), self.byte()]) as usize;
        v % n
    }

    /// One of `items` (`None` when it is empty).
    pub fn pick<'b, T>(&mut self, items: &'b [T]) -> Option<&'b T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.below(items.len())])
        }
    }

    /// How many edits to make: 1 to `max`.
    pub fn count(&mut self, max: usize) -> usize {
        1 + self.below(max.max(1))
    }
}

/// What a TOML mutation may put in: keys, values and whole lines of the
/// format under test (known ones, and a few it must refuse).
#[derive(Debug, Clone, Copy)]
pub struct TomlPalette<'a> {
    /// Key names, known and unknown.
    pub keys: &'a [&'a str],
    /// TOML values, of every type and range.
    pub values: &'a [&'a str],
    /// Whole lines: table headers, `key = value` pairs.
    pub lines: &'a [&'a str],
}

/// Values any TOML format should survive: wrong types, out-of-range
/// numbers, odd strings.
pub const TOML_VALUES: &[&str] = &[
    "\"\"",
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "1e400",
    "nan",
    "-inf",
    "0.5",
    "true",
    "[]",
    "{}",
    "[1, \"a\", [true]]",
    "{ a = 1, b = { c = [] } }",
    "1979-05-27T07:32:00Z",
    "\"0\"",
    "\"-1 MiB\"",
    "\"18446744073709551615\"",
    "\"18446744073709551615 TiB\"",
    "\"99999999999999999999 KiB\"",
    "\"1 ZiB\"",
    "\"0s\"",
    "\"18446744073709551615s\"",
    "\"99999999999999h\"",
    "\"1.5e300 ms\"",
    "\"\u{0}\"",
    "\"\\u0000\"",
    "\"é\u{301}\u{1F600}\"",
    "\"/\"",
    "\"../../../../etc\"",
    "\".\"",
    "\"*\"",
    "\"**\"",
    "\"*:*\"",
    "\"127.0.0.1:*\"",
    "\"[::1]:99999\"",
    "\"a:b:c\"",
    "'''\nmulti\nline'''",
    "\"\"\"\n\"\"\"",
    "[\"\", \"*\", \"..\"]",
];

/// Edit `seed` (TOML text) with `script`: lines dropped, duplicated,
/// swapped or inserted; keys renamed; values replaced or exchanged between
/// lines; now and then a byte-level cut or flip.
pub fn mutate_toml(seed: &str, script: &mut Script<'_>, palette: &TomlPalette<'_>) -> String {
    let mut lines: Vec<String> = seed.lines().map(str::to_string).collect();
    for _ in 0..script.count(8) {
        let n = lines.len();
        let i = script.below(n.max(1));
        match script.byte() % 9 {
            0 if n > 0 => {
                lines.remove(i);
            }
            1 if n > 0 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 if n > 1 => {
                let j = script.below(n);
                lines.swap(i, j);
            }
            3 if n > 0 => {
                let v = script.pick(palette.values).copied().unwrap_or("0");
                if let Some((k, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{}= {v}", k);
                }
            }
            4 if n > 0 => {
                let k = script.pick(palette.keys).copied().unwrap_or("x");
                if let Some((_, v)) = lines[i].split_once('=') {
                    lines[i] = format!("{k} ={v}");
                }
            }
            5 => {
                let l = script.pick(palette.lines).copied().unwrap_or("");
                lines.insert(i.min(n), l.to_string());
            }
            6 if n > 1 => {
                let j = script.below(n);
                if let (Some((ka, va)), Some((kb, vb))) =
                    (lines[i].split_once('='), lines[j].split_once('='))
                {
                    let (a, b) = (format!("{ka}={vb}"), format!("{kb}={va}"));
                    lines[i] = a;
                    lines[j] = b;
                }
            }
            7 if n > 0 => {
                // A value pasted under the key of another line.
                let v = script.pick(palette.values).copied().unwrap_or("0");
                let k = script.pick(palette.keys).copied().unwrap_or("x");
                lines.insert(i, format!("{k} = {v}"));
            }
            _ => {
                let mut bytes = lines.join("\n").into_bytes();
                byte_edit(&mut bytes, script, b"=[]{}\"'.\n#\\ ");
                return String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// One byte-level edit: cut at a point, flip a bit, or insert a byte of
/// `chars`.
fn byte_edit(bytes: &mut Vec<u8>, script: &mut Script<'_>, chars: &[u8]) {
    let n = bytes.len();
    let at = script.below(n + 1);
    match script.byte() % 3 {
        0 => bytes.truncate(at),
        1 if n > 0 => bytes[at.min(n - 1)] ^= 1 << (script.byte() % 8),
        _ => {
            let c = script.pick(chars).copied().unwrap_or(b' ');
            bytes.insert(at, c);
        }
    }
}

/// What a JSON mutation may put in.
#[derive(Debug, Clone, Copy)]
pub struct JsonPalette<'a> {
    /// Object keys, known and unknown.
    pub keys: &'a [&'a str],
    /// Values (JSON text), of every type and range.
    pub values: &'a [&'a str],
}

/// Values any JSON protocol should survive.
pub const JSON_VALUES: &[&str] = &[
    "null",
    "true",
    "0",
    "-1",
    "1.5",
    "1e308",
    "-1e308",
    "18446744073709551615",
    "-9223372036854775808",
    "18446744073709551616",
    "123456789012345678901234567890",
    "\"\"",
    "\"\\u0000\"",
    "\"é😀\"",
    "[]",
    "{}",
    "[null]",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "{\"a\": {\"b\": {\"c\": {}}}}",
];

/// Replace, remove or add a node somewhere in `v`, as `script` says.
pub fn mutate_json(v: &mut Value, script: &mut Script<'_>, palette: &JsonPalette<'_>) {
    // Walk down to a node: each step either stops or enters a child.
    let mut node = v;
    loop {
        if script.byte().is_multiple_of(3) {
            break;
        }
        let len = match &*node {
            Value::Object(m) => m.len(),
            Value::Array(a) => a.len(),
            _ => 0,
        };
        if len == 0 {
            break;
        }
        let i = script.below(len);
        node = match node {
            Value::Object(m) => m.values_mut().nth(i).expect("index below len"),
            Value::Array(a) => &mut a[i],
            _ => unreachable!("only containers have children"),
        };
    }
    let value = |script: &mut Script<'_>| -> Value {
        let text = script.pick(palette.values).copied().unwrap_or("null");
        serde_json::from_str(text).unwrap_or(Value::Null)
    };
    match script.byte() % 5 {
        0 => *node = value(script),
        1 => match node {
            Value::Object(m) if !m.is_empty() => {
                let i = script.below(m.len());
                if let Some(k) = m.keys().nth(i).cloned() {
                    m.remove(&k);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                let i = script.below(a.len());
                a.remove(i);
            }
            _ => *node = Value::Null,
        },
        2 => {
            let k = script
                .pick(palette.keys)
                .copied()
                .unwrap_or("x")
                .to_string();
            let new = value(script);
            match node {
                Value::Object(m) => {
                    m.insert(k, new);
                }
                Value::Array(a) => a.push(new),
                other => {
                    let mut m = Map::new();
                    m.insert(k, new);
                    *other = Value::Object(m);
                }
            }
        }
        3 => {
            let inner = node.take();
            *node = Value::Array(vec![inner]);
        }
        _ => {
            // The node's type changes but its content stays recognizable.
            *node = match node.take() {
                Value::String(s) => s.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
                Value::Number(n) => Value::String(n.to_string()),
                Value::Bool(b) => Value::from(b as u8),
                Value::Object(m) => Value::Array(m.into_iter().map(|(_, v)| v).collect()),
                Value::Array(a) => Value::Object(
                    a.into_iter()
                        .enumerate()
                        .map(|(i, v)| (i.to_string(), v))
                        .collect(),
                ),
                Value::Null => Value::from(""),
            }
        }
    }
}

/// A line of JSON text: `v` serialized, then, now and then, cut or with a
/// byte flipped (so the line is no longer valid JSON).
pub fn json_line(v: &Value, script: &mut Script<'_>) -> String {
    let mut bytes = serde_json::to_vec(v).expect("a Value serializes");
    if script.byte().is_multiple_of(8) {
        byte_edit(&mut bytes, script, b"{}[]\",:\\0 ");
    }
    // A line must stay one line.
    for b in &mut bytes {
        if *b == b'\n' {
            *b = b' ';
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Edit a session of JSON lines (`seed`, one message a line) with
/// `script`: messages mutated as JSON ([`mutate_json`]), dropped,
/// duplicated, swapped, batched into an array, or replaced by one of
/// `raw` (lines that need not be JSON at all).
pub fn mutate_lines(
    seed: &str,
    script: &mut Script<'_>,
    palette: &JsonPalette<'_>,
    raw: &[&str],
) -> Vec<String> {
    let mut lines: Vec<String> = seed.lines().map(str::to_string).collect();
    for _ in 0..script.count(6) {
        let n = lines.len();
        let i = script.below(n.max(1));
        match script.byte() % 7 {
            0 | 1 if n > 0 => {
                if let Ok(mut v) = serde_json::from_str::<Value>(&lines[i]) {
                    mutate_json(&mut v, script, palette);
                    lines[i] = json_line(&v, script);
                }
            }
            2 if n > 0 => {
                lines.remove(i);
            }
            3 if n > 0 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            4 if n > 1 => {
                let j = script.below(n);
                lines.swap(i, j);
            }
            5 if n > 0 => {
                // A batch of this message and the next.
                let end = (i + 1 + script.below(3)).min(n);
                let batch: Vec<Value> = lines[i..end]
                    .iter()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                lines.splice(i..end, [Value::Array(batch).to_string()]);
            }
            _ => {
                let l = script.pick(raw).copied().unwrap_or("");
                lines.insert(i.min(n), l.to_string());
            }
        }
    }
    lines
}

/// Edit binary `seed` (a component) with `script`: bit flips, cuts,
/// overwritten bytes, ranges spliced from `donors` or from the seed itself.
pub fn mutate_bytes(seed: &[u8], script: &mut Script<'_>, donors: &[&[u8]]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..script.count(4) {
        let n = out.len();
        if n == 0 {
            break;
        }
        let at = script.below(n);
        match script.byte() % 6 {
            0 => out[at] ^= 1 << (script.byte() % 8),
            1 => out.truncate(at),
            // LEB128 sizes and counts blown up.
            2 => out[at] = [0x00, 0x7f, 0x80, 0xff][script.below(4)],
            3 => {
                let len = 1 + script.below(64);
                let end = (at + len).min(n);
                out.drain(at..end);
            }
            4 => {
                let donor = script.pick(donors).copied().unwrap_or(seed);
                if !donor.is_empty() {
                    let from = script.below(donor.len());
                    let len = (1 + script.below(4096)).min(donor.len() - from);
                    let to = script.below(n);
                    out.splice(to..to, donor[from..from + len].iter().copied());
                }
            }
            _ => {
                // Duplicate a range in place (repeated sections, items).
                let len = (1 + script.below(256)).min(n - at);
                let copy = out[at..at + len].to_vec();
                out.splice(at..at, copy);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_script_still_edits_and_never_panics() {
        let palette = TomlPalette {
            keys: &["k"],
            values: TOML_VALUES,
            lines: &["[t]"],
        };
        let _ = mutate_toml("", &mut Script::new(&[]), &palette);
        let _ = mutate_toml("a = 1\n", &mut Script::new(&[]), &palette);
        let _ = mutate_bytes(&[], &mut Script::new(&[]), &[]);
        let mut v = Value::Null;
        mutate_json(
            &mut v,
            &mut Script::new(&[]),
            &JsonPalette {
                keys: &[],
                values: &[],
            },
        );
    }

    #[test]
    fn every_json_palette_value_parses() {
        for v in JSON_VALUES {
            assert!(serde_json::from_str::<Value>(v).is_ok(), "{v}");
        }
    }
}
