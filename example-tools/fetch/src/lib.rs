//! `fetch`: make HTTP requests over `wasi:http`.
//!
//! Needs network grants: the host lets a request through only when its
//! `host[:port]` matches the manifest's `[network] allow` list, and answers
//! anything else with `HttpRequestDenied`, which the tool reports as a clear
//! error. There is no other way out: no sockets, no DNS.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use toolhost_guest::{Json, Tool, ToolError, Toolbox};

use toolhost_example_http as http;

/// The tools this component offers.
pub fn tools() -> Toolbox {
    Toolbox::new()
        .tool(Tool::new(
            "http_fetch",
            "Make an HTTP request and return the response's status, headers and body (as text; invalid UTF-8 \
             is replaced by U+FFFD; cut at `max_bytes`). Only hosts this tool is granted can be reached. \
             A non-2xx status is a response, not an error.",
            http_fetch,
        ).title("HTTP fetch").open_world(true))
}

toolhost_guest::export!(tools);

/// Arguments of `http_fetch`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchArgs {
    /// The absolute http:// or https:// URL to request.
    pub url: String,
    /// The HTTP method: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, ...
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers, name to value (e.g. {"Accept": "application/json"}).
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// The request body (sent as UTF-8; set a Content-Type header to match).
    #[serde(default)]
    pub body: Option<String>,
    /// Keep at most this many bytes of the response body.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_method() -> String {
    "GET".into()
}

fn default_max_bytes() -> u64 {
    1 << 20
}

/// Result of `http_fetch`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FetchResult {
    /// The HTTP status code.
    pub status: u16,
    /// Response headers, names lower-cased; repeated headers are joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The response body as text, at most `max_bytes` bytes of it.
    pub body: String,
    /// Whether the body went on past `max_bytes`.
    pub truncated: bool,
}

pub fn http_fetch(args: FetchArgs) -> Result<Json<FetchResult>, ToolError> {
    let headers: Vec<(String, String)> = args.headers.unwrap_or_default().into_iter().collect();
    let request = http::Request {
        method: &args.method,
        url: &args.url,
        headers: &headers,
        body: args.body.as_deref().map(str::as_bytes),
        max_bytes: args.max_bytes,
    };
    let response = http::send(&request).map_err(|e| match e {
        http::Error::Invalid(m) => ToolError::invalid(m),
        http::Error::Failed(m) => ToolError::failed(m),
    })?;
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in response.headers {
        let value = String::from_utf8_lossy(&value);
        headers
            .entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    Ok(Json(FetchResult {
        status: response.status,
        headers,
        body: String::from_utf8_lossy(&response.body).into_owned(),
        truncated: response.truncated,
    }))
}
