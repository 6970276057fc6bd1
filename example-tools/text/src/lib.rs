//! `text`: query JSON documents and extract text with regular expressions.
//!
//! - `json_query` picks a value out of a JSON document by JSON Pointer
//!   (`/items/0/name`) or dotted path (`items[0].name`, `$.items[-1]`).
//! - `regex_extract` returns the matches (or one capture group) of a regular
//!   expression in a text.
//!
//! Pure computation: needs no grants.

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use toolhost_guest::{Json, Tool, ToolError, Toolbox};

/// The tools this component offers.
pub fn tools() -> Toolbox {
    Toolbox::new()
        .tool(Tool::new(
            "json_query",
            "Look up a value in a JSON document. `path` is a JSON Pointer (`/items/0/name`, `` for the whole \
             document) or a dotted path (`items[0].name`, `$.items[-1].id`, `meta[\"odd.key\"]`; negative \
             indices count from the end). Returns whether the path was found and the value there; when it \
             was not found, `detail` says which step failed.",
            json_query,
        ).title("JSON query").read_only().idempotent().open_world(false))
        .tool(Tool::new(
            "regex_extract",
            "Find the matches of a regular expression (Rust `regex` syntax: no look-around or backreferences; \
             inline flags such as `(?i)` case-insensitive, `(?m)` multi-line, `(?s)` dot-matches-newline) in \
             `text`. Returns the whole matches, or capture group `group` (a number or a name) of each.",
            regex_extract,
        ).title("Regex extract").read_only().idempotent().open_world(false))
}

toolhost_guest::export!(tools);

// ---------------------------------------------------------------- json_query

/// Arguments of `json_query`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonQueryArgs {
    /// The JSON document, as text.
    pub json: String,
    /// Where to look: a JSON Pointer starting with `/` (RFC 6901, `~1` for `/` and `~0` for `~` in keys; empty for the whole document) or a dotted path such as `a.b[0].c` (an optional leading `$` is allowed; `["key"]` quotes keys containing `.` or `[`; `[-1]` is the last element).
    pub path: String,
}

/// Result of `json_query`.
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct JsonQueryResult {
    /// Whether `path` exists in the document.
    pub found: bool,
    /// The value at `path` (`null` when not found).
    pub value: Value,
    /// The path as a JSON Pointer (indices resolved), as far as it was followed.
    pub pointer: String,
    /// Why the path was not found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// An object key, or an array index when it is a non-negative number.
    Key(String),
    /// An array index; negative counts from the end.
    Index(i64),
}

pub fn json_query(args: JsonQueryArgs) -> Result<Json<JsonQueryResult>, ToolError> {
    let doc: Value = serde_json::from_str(&args.json)
        .map_err(|e| ToolError::invalid(format!("`json` is not valid JSON: {e}")))?;
    let steps = parse_path(&args.path)
        .map_err(|e| ToolError::invalid(format!("`path` {:?}: {e}", args.path)))?;
    Ok(Json(lookup(&doc, &steps)))
}

fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    if path.is_empty() || path.starts_with('/') {
        parse_pointer(path)
    } else {
        parse_dotted(path)
    }
}

/// RFC 6901 JSON Pointer.
fn parse_pointer(path: &str) -> Result<Vec<Step>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    path[1..]
        .split('/')
        .map(|token| {
            if let Some(i) = token.find('~').filter(|&i| !matches!(token.as_bytes().get(i + 1), Some(b'0' | b'1'))) {
                return Err(format!("`~` at byte {i} of `{token}` must be followed by 0 or 1 (`~0` is `~`, `~1` is `/`)"));
            }
            Ok(Step::Key(token.replace("~1", "/").replace("~0", "~")))
        })
        .collect()
}

/// `$.a.b[0]["c.d"][-1]`: dots separate keys, brackets hold indices or quoted keys.
fn parse_dotted(path: &str) -> Result<Vec<Step>, String> {
    let body = path.strip_prefix('$').unwrap_or(path);
    let chars: Vec<char> = body.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    // `$.a` and `$[0]` need a separator after `$`; a bare `a.b` starts with a key.
    let mut expect_key = !path.starts_with('$');
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                expect_key = true;
                if i == chars.len() || matches!(chars[i], '.' | '[') {
                    return Err(format!("empty key after the `.` at character {i}"));
                }
            }
            '[' => {
                let (step, next) = parse_bracket(&chars, i)?;
                steps.push(step);
                i = next;
                expect_key = false;
            }
            _ if expect_key => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '.' || c == '[')
                    .map_or(chars.len(), |p| i + p);
                steps.push(Step::Key(chars[i..end].iter().collect()));
                i = end;
                expect_key = false;
            }
            c => {
                return Err(format!(
                    "unexpected `{c}` at character {}: expected `.` or `[`",
                    i + 1
                ));
            }
        }
    }
    Ok(steps)
}

/// `[3]`, `[-1]`, `["key"]` or `['key']` starting at `chars[open] == '['`:
/// the step and the index just past the closing `]`.
fn parse_bracket(chars: &[char], open: usize) -> Result<(Step, usize), String> {
    let unclosed = || format!("`[` at character {} is never closed", open + 1);
    let skip_ws = |mut i: usize| {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        i
    };
    let start = skip_ws(open + 1);
    match chars.get(start) {
        Some(&q @ ('"' | '\'')) => {
            let end = chars[start + 1..]
                .iter()
                .position(|&c| c == q)
                .map(|p| start + 1 + p);
            let end = end.ok_or_else(|| {
                format!("the quoted key at character {} is never closed", start + 1)
            })?;
            let close = skip_ws(end + 1);
            if chars.get(close) != Some(&']') {
                return Err(unclosed());
            }
            Ok((Step::Key(chars[start + 1..end].iter().collect()), close + 1))
        }
        _ => {
            let close = chars[open..]
                .iter()
                .position(|&c| c == ']')
                .map(|p| open + p)
                .ok_or_else(unclosed)?;
            let inner: String = chars[open + 1..close].iter().collect();
            let inner = inner.trim();
            if inner == "*" {
                return Err("wildcards are not supported: query one value at a time".into());
            }
            let n = inner
                .parse()
                .map_err(|_| format!("`[{inner}]` is neither an index nor a quoted key"))?;
            Ok((Step::Index(n), close + 1))
        }
    }
}

fn lookup(doc: &Value, steps: &[Step]) -> JsonQueryResult {
    let mut here = doc;
    let mut pointer = String::new();
    for step in steps {
        let next = match (here, step) {
            (Value::Object(map), Step::Key(k)) => {
                map.get(k).map(|v| (v, k.clone())).ok_or_else(|| {
                    format!("no key {k:?} in the object at {}", at(&pointer)) + &keys_hint(map)
                })
            }
            (Value::Object(_), Step::Index(n)) => Err(format!(
                "{} is an object, not an array: index [{n}] does not apply (quote it as [\"{n}\"] for a key)",
                at(&pointer)
            )),
            (Value::Array(items), Step::Key(k)) => match k.parse::<usize>() {
                Ok(n) => items
                    .get(n)
                    .map(|v| (v, n.to_string()))
                    .ok_or_else(|| out_of_range(&pointer, n as i64, items.len())),
                Err(_) => Err(format!(
                    "{} is an array of {} elements, not an object: key {k:?} does not apply",
                    at(&pointer),
                    items.len()
                )),
            },
            (Value::Array(items), Step::Index(n)) => {
                let len = items.len() as i64;
                let idx = if *n < 0 { len + n } else { *n };
                (0..len)
                    .contains(&idx)
                    .then(|| (&items[idx as usize], idx.to_string()))
                    .ok_or_else(|| out_of_range(&pointer, *n, items.len()))
            }
            (scalar, _) => Err(format!(
                "{} is {}, which has no members",
                at(&pointer),
                kind(scalar)
            )),
        };
        match next {
            Ok((v, token)) => {
                here = v;
                pointer.push('/');
                pointer.push_str(&token.replace('~', "~0").replace('/', "~1"));
            }
            Err(detail) => {
                return JsonQueryResult {
                    found: false,
                    value: Value::Null,
                    pointer,
                    detail: Some(detail),
                };
            }
        }
    }
    JsonQueryResult {
        found: true,
        value: here.clone(),
        pointer,
        detail: None,
    }
}

fn at(pointer: &str) -> String {
    if pointer.is_empty() {
        "the document root".into()
    } else {
        format!("`{pointer}`")
    }
}

fn out_of_range(pointer: &str, n: i64, len: usize) -> String {
    format!(
        "index {n} is out of range: the array at {} has {len} elements",
        at(pointer)
    )
}

fn keys_hint(map: &serde_json::Map<String, Value>) -> String {
    const SHOWN: usize = 20;
    if map.is_empty() {
        return " (the object is empty)".into();
    }
    let keys: Vec<String> = map.keys().take(SHOWN).map(|k| format!("{k:?}")).collect();
    let more = if map.len() > SHOWN {
        format!(", … ({} keys in all)", map.len())
    } else {
        String::new()
    };
    format!(" (keys: {}{more})", keys.join(", "))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ------------------------------------------------------------- regex_extract

/// A capture group, by number (0 is the whole match) or by name.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Group {
    Index(usize),
    Name(String),
}

/// Arguments of `regex_extract`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexExtractArgs {
    /// The regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// The text to search.
    pub text: String,
    /// Return this capture group of each match instead of the whole match: a number (1 is the first group) or the name of a `(?<name>...)` group. Matches in which the group took no part are skipped.
    #[serde(default)]
    pub group: Option<Group>,
    /// Stop after this many matches.
    #[serde(default = "default_max_matches")]
    #[schemars(range(min = 1))]
    pub max_matches: u32,
}

fn default_max_matches() -> u32 {
    100
}

/// Result of `regex_extract`.
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct RegexExtractResult {
    /// The matched texts (or group texts), in order.
    pub matches: Vec<String>,
    /// How many entries `matches` has.
    pub count: usize,
    /// Whether more matches exist beyond `max_matches`.
    pub truncated: bool,
}

pub fn regex_extract(args: RegexExtractArgs) -> Result<Json<RegexExtractResult>, ToolError> {
    if args.max_matches == 0 {
        return Err(ToolError::invalid("`max_matches` must be at least 1"));
    }
    let re = Regex::new(&args.pattern).map_err(|e| {
        ToolError::invalid(format!("`pattern` is not a valid regular expression: {e}"))
    })?;
    let group = match &args.group {
        None => 0,
        Some(Group::Index(n)) if *n < re.captures_len() => *n,
        Some(Group::Index(n)) => {
            return Err(ToolError::invalid(format!(
                "`group` {n} does not exist: the pattern has {} capture group(s)",
                re.captures_len() - 1
            )));
        }
        Some(Group::Name(name)) => re
            .capture_names()
            .position(|g| g == Some(name.as_str()))
            .ok_or_else(|| {
                let names: Vec<&str> = re.capture_names().flatten().collect();
                let known = if names.is_empty() {
                    "the pattern has no named groups".to_string()
                } else {
                    format!("named groups: {}", names.join(", "))
                };
                ToolError::invalid(format!("`group` {name:?} does not exist ({known})"))
            })?,
    };
    let max = args.max_matches as usize;
    let mut matches = Vec::new();
    let mut truncated = false;
    let found: Box<dyn Iterator<Item = &str>> = if group == 0 {
        Box::new(re.find_iter(&args.text).map(|m| m.as_str()))
    } else {
        Box::new(
            re.captures_iter(&args.text)
                .filter_map(|c| c.get(group))
                .map(|m| m.as_str()),
        )
    };
    for m in found {
        if matches.len() == max {
            truncated = true;
            break;
        }
        matches.push(m.to_string());
    }
    Ok(Json(RegexExtractResult {
        count: matches.len(),
        matches,
        truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(json: &str, path: &str) -> JsonQueryResult {
        json_query(JsonQueryArgs {
            json: json.into(),
            path: path.into(),
        })
        .map(|j| j.0)
        .map_err(|e| format!("{e:?}"))
        .unwrap()
    }

    const DOC: &str =
        r#"{"a":{"b":[{"c":1},{"c":2,"d.e":"x","f/g":true}]},"list":[10,20,30],"odd]key":5}"#;

    #[test]
    fn pointer_and_dotted_paths_agree() {
        for (path, want) in [
            ("/a/b/0/c", json!(1)),
            ("a.b[0].c", json!(1)),
            ("$.a.b[1].c", json!(2)),
            ("a.b.1.c", json!(2)),
            ("list[-1]", json!(30)),
            ("$.list[ 1 ]", json!(20)),
            ("a.b[1][\"d.e\"]", json!("x")),
            ("a.b[1]['d.e']", json!("x")),
            ("/a/b/1/f~1g", json!(true)),
            ("[\"odd]key\"]", json!(5)),
            ("$[\"odd]key\"]", json!(5)),
            ("$", serde_json::from_str::<Value>(DOC).unwrap()),
            ("", serde_json::from_str::<Value>(DOC).unwrap()),
        ] {
            let r = q(DOC, path);
            assert!(r.found, "{path}: {r:?}");
            assert_eq!(r.value, want, "{path}");
        }
        assert_eq!(q(DOC, "list[-1]").pointer, "/list/2");
        assert_eq!(q(DOC, "a.b[1].f/g").pointer, "/a/b/1/f~1g");
    }

    #[test]
    fn misses_say_where_and_why() {
        let r = q(DOC, "a.x");
        assert!(!r.found);
        assert_eq!(r.value, Value::Null);
        assert_eq!(r.pointer, "/a");
        assert_eq!(
            r.detail.unwrap(),
            "no key \"x\" in the object at `/a` (keys: \"b\")"
        );
        assert!(
            q(DOC, "list[3]")
                .detail
                .unwrap()
                .contains("out of range: the array at `/list` has 3 elements")
        );
        assert!(q(DOC, "list.x").detail.unwrap().contains("not an object"));
        assert!(
            q(DOC, "a.b[0].c.d")
                .detail
                .unwrap()
                .contains("is a number, which has no members")
        );
        assert!(
            q(DOC, "a[0]")
                .detail
                .unwrap()
                .contains("is an object, not an array")
        );
    }

    #[test]
    fn bad_input_is_an_invalid_argument() {
        let e = json_query(JsonQueryArgs {
            json: "{".into(),
            path: "a".into(),
        })
        .err()
        .unwrap();
        assert!(
            matches!(e, ToolError::InvalidArguments(m) if m.starts_with("`json` is not valid JSON: EOF"))
        );
        for bad in ["a..b", "a[0", "a[x]", "a[*]", "/a~2", "a.", "$x", "a['b]"] {
            let e = json_query(JsonQueryArgs {
                json: "{}".into(),
                path: bad.into(),
            })
            .err();
            assert!(
                matches!(e, Some(ToolError::InvalidArguments(_))),
                "{bad}: {e:?}"
            );
        }
    }

    fn rx(
        pattern: &str,
        text: &str,
        group: Option<Group>,
        max: u32,
    ) -> Result<RegexExtractResult, ToolError> {
        regex_extract(RegexExtractArgs {
            pattern: pattern.into(),
            text: text.into(),
            group,
            max_matches: max,
        })
        .map(|j| j.0)
    }

    #[test]
    fn extracts_matches_and_groups() {
        let text = "id=1 id=22 x=3 id=333";
        assert_eq!(
            rx(r"id=\d+", text, None, 100).unwrap().matches,
            ["id=1", "id=22", "id=333"]
        );
        assert_eq!(
            rx(r"id=(\d+)", text, Some(Group::Index(1)), 100)
                .unwrap()
                .matches,
            ["1", "22", "333"]
        );
        let r = rx(r"id=(?<n>\d+)", text, Some(Group::Name("n".into())), 2).unwrap();
        assert_eq!(
            r,
            RegexExtractResult {
                matches: vec!["1".into(), "22".into()],
                count: 2,
                truncated: true
            }
        );
        assert_eq!(
            rx(r"(a)|(b)", "ab", Some(Group::Index(2)), 10)
                .unwrap()
                .matches,
            ["b"]
        );
    }

    #[test]
    fn regex_errors_are_precise() {
        assert!(
            matches!(rx("(", "", None, 1), Err(ToolError::InvalidArguments(m)) if m.contains("not a valid regular expression"))
        );
        assert!(
            matches!(rx("(a)", "", Some(Group::Index(2)), 1), Err(ToolError::InvalidArguments(m)) if m.contains("has 1 capture group"))
        );
        assert!(
            matches!(rx("(?<x>a)", "", Some(Group::Name("y".into())), 1), Err(ToolError::InvalidArguments(m)) if m.contains("named groups: x"))
        );
        assert!(matches!(
            rx("a", "", None, 0),
            Err(ToolError::InvalidArguments(_))
        ));
    }

    #[test]
    fn group_accepts_numbers_and_names() {
        let a: RegexExtractArgs =
            serde_json::from_value(json!({"pattern": "a", "text": "", "group": 1})).unwrap();
        assert!(matches!(a.group, Some(Group::Index(1))));
        assert_eq!(a.max_matches, 100);
        let a: RegexExtractArgs =
            serde_json::from_value(json!({"pattern": "a", "text": "", "group": "n"})).unwrap();
        assert!(matches!(a.group, Some(Group::Name(n)) if n == "n"));
    }
}
