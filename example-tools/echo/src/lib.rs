//! `echo`: returns its input unchanged.
//!
//! The smallest real tool, used to test the call path end to end and as the
//! benchmark baseline: [`call_native`] runs the very same [`Toolbox`] path
//! natively, without a sandbox. Needs no grants.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use toolhost_guest::bindings::toolhost::tool::types as wit;
use toolhost_guest::{Tool, ToolError, Toolbox};

/// Arguments of `echo`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EchoArgs {
    /// The text to return, unchanged.
    pub text: String,
}

/// `echo`'s business logic.
pub fn echo(args: EchoArgs) -> Result<String, ToolError> {
    Ok(args.text)
}

/// The tools this component offers.
pub fn tools() -> Toolbox {
    Toolbox::new().tool(
        Tool::new(
            "echo",
            "Return `text` unchanged. Useful to check that the tool path works end to end.",
            echo,
        )
        .title("Echo")
        .read_only()
        .idempotent()
        .open_world(false),
    )
}

toolhost_guest::export!(tools);

/// Run tool `name` with `arguments` (JSON text) through the same
/// `Toolbox::__call` path the component export uses, natively.
///
/// On success, returns the result as MCP `CallToolResult` JSON text
/// (`content`, and `structuredContent` when the tool returned one); on
/// failure, the tool error's message.
pub fn call_native(name: &str, arguments: &str) -> Result<String, String> {
    match tools().__call(name, arguments) {
        Ok(result) => Ok(call_result_json(&result).to_string()),
        Err(wit::ToolError::InvalidArguments(m)) => Err(format!("invalid arguments: {m}")),
        Err(wit::ToolError::UnknownTool(n)) => Err(format!("unknown tool `{n}`")),
        Err(wit::ToolError::Failed(m)) => Err(m),
    }
}

/// A `call-result` as an MCP `CallToolResult` object.
fn call_result_json(r: &wit::CallResult) -> Value {
    let content: Vec<Value> = r.content.iter().map(content_json).collect();
    let mut out = json!({ "content": content });
    if let Some(s) = &r.structured {
        // The guest produced the text from a `serde_json::Value`: it parses.
        out["structuredContent"] = serde_json::from_str(s).unwrap_or(Value::Null);
    }
    out
}

fn content_json(c: &wit::Content) -> Value {
    match c {
        wit::Content::Text(text) => json!({ "type": "text", "text": text }),
        wit::Content::Image(m) => {
            json!({ "type": "image", "data": base64(&m.data), "mimeType": m.mime_type })
        }
        wit::Content::Audio(m) => {
            json!({ "type": "audio", "data": base64(&m.data), "mimeType": m.mime_type })
        }
        wit::Content::Resource(r) => {
            let mut res = json!({ "uri": r.uri });
            if let Some(mime) = &r.mime_type {
                res["mimeType"] = json!(mime);
            }
            match &r.contents {
                wit::ResourceContents::Text(t) => res["text"] = json!(t),
                wit::ResourceContents::Blob(b) => res["blob"] = json!(base64(b)),
            }
            json!({ "type": "resource", "resource": res })
        }
    }
}

/// Standard, padded base64 (echo never produces binary content; this keeps
/// the conversion complete without another dependency).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | ((b as u32) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_through_the_toolbox() {
        let out = call_native("echo", r#"{"text":"héllo"}"#).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!({ "content": [{ "type": "text", "text": "héllo" }] })
        );
    }

    #[test]
    fn reports_bad_arguments_and_unknown_tools() {
        let err = call_native("echo", r#"{"text":1}"#).unwrap_err();
        assert!(
            err.starts_with("invalid arguments: arguments of `echo`"),
            "{err}"
        );
        let err = call_native("echo", r#"{"text":"a","extra":1}"#).unwrap_err();
        assert!(err.contains("unknown field `extra`"), "{err}");
        assert_eq!(
            call_native("nope", "{}").unwrap_err(),
            "unknown tool `nope`"
        );
    }

    #[test]
    fn describes_itself() {
        let defs = tools().__describe();
        assert_eq!(defs.len(), 1);
        assert_eq!(defs[0].name, "echo");
        assert_eq!(defs[0].annotations.read_only, Some(true));
        let schema: Value = serde_json::from_str(&defs[0].input_schema).unwrap();
        assert_eq!(schema["required"], json!(["text"]));
        assert_eq!(
            schema["properties"]["text"]["description"],
            "The text to return, unchanged."
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
