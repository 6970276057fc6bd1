//! A small blocking HTTP client over `wasi:http/outgoing-handler`, shared
//! by the example tools (`fetch`, `hostile`). A library of its own, not a
//! tool: depending on a tool crate would link its component exports twice.

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, HeaderError, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::{InputStream, StreamError};

/// Bytes per write: `blocking-write-and-flush` takes at most 4096.
const WRITE_CHUNK: usize = 4096;
/// Bytes asked for per read.
const READ_CHUNK: u64 = 64 * 1024;

/// An HTTP request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// An absolute `http://` or `https://` URL.
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub body: Option<&'a [u8]>,
    /// Keep at most this many bytes of the response body.
    pub max_bytes: u64,
}

/// An HTTP response, its body possibly cut at the request's `max_bytes`.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// In the order received; a name may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Whether the body went on past `max_bytes`.
    pub truncated: bool,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request itself is malformed (bad URL, method or header).
    Invalid(String),
    /// The host or the network refused or failed it.
    Failed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Invalid(m) | Error::Failed(m) => f.write_str(m),
        }
    }
}

/// The parts of an absolute URL that an outgoing request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url<'a> {
    pub https: bool,
    /// `host[:port]`.
    pub authority: &'a str,
    /// Starts with `/`; the fragment is dropped.
    pub path_with_query: String,
}

/// Split an absolute http(s) URL; errors say what to fix.
pub fn parse_url(url: &str) -> Result<Url<'_>, String> {
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "URL {url:?} contains {c:?}: percent-encode it (a space is %20)"
        ));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("URL {url:?} is not absolute: use e.g. https://example.com/path"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        _ => {
            return Err(format!(
                "URL scheme `{scheme}` is not supported: use http or https"
            ));
        }
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() {
        return Err(format!("URL {url:?} has no host"));
    }
    if authority.contains('@') {
        return Err(format!(
            "URL {url:?} contains credentials: send an Authorization header instead"
        ));
    }
    let path = rest[end..].split('#').next().unwrap_or("");
    let path_with_query = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(Url {
        https,
        authority,
        path_with_query,
    })
}

fn method(name: &str) -> Result<Method, String> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other
            if !other.is_empty()
                && other
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) =>
        {
            Method::Other(name.to_string())
        }
        _ => return Err(format!("`{name}` is not an HTTP method")),
    })
}

/// Send `req` and wait for the response (blocking the guest, not the host).
pub fn send(req: &Request<'_>) -> Result<Response, Error> {
    let url = parse_url(req.url).map_err(Error::Invalid)?;
    let host = url.authority;
    let failed =
        |code: &ErrorCode| Error::Failed(format!("request to {host} failed: {}", describe(code)));

    let mut entries: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    // Without a length the body goes out chunked, which some servers (and
    // HTTP/1.0 ones) do not read.
    if let Some(body) = req.body
        && !entries
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        entries.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let headers = Fields::from_list(&entries).map_err(|_| header_error(&entries))?;
    let request = OutgoingRequest::new(headers);
    let invalid = |what: String| move |()| Error::Invalid(what);
    request
        .set_method(&method(req.method).map_err(Error::Invalid)?)
        .map_err(invalid(format!("method `{}` is not accepted", req.method)))?;
    request
        .set_scheme(Some(if url.https {
            &Scheme::Https
        } else {
            &Scheme::Http
        }))
        .map_err(invalid("scheme is not accepted".into()))?;
    request
        .set_authority(Some(url.authority))
        .map_err(invalid(format!(
            "`{}` is not a valid host[:port]",
            url.authority
        )))?;
    request
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(invalid(format!(
            "`{}` is not a valid path and query",
            url.path_with_query
        )))?;

    let body = request.body().expect("a new request's body is taken once");
    let future = outgoing_handler::handle(request, None).map_err(|e| failed(&e))?;
    let sent = send_body(body, req.body, host);
    let response = loop {
        match future.get() {
            Some(result) => break result.expect("the response is taken once"),
            None => future.subscribe().block(),
        }
    };
    // A server may answer before reading the whole body (e.g. 413): its
    // answer beats our write error.
    let response = match (response, sent) {
        (Ok(response), _) => response,
        (Err(_), Err(body_error)) => return Err(body_error),
        (Err(e), Ok(())) => return Err(failed(&e)),
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().expect("a response's body is taken once");
    let stream = incoming.stream().expect("a body's stream is taken once");
    let (body, truncated) = read_up_to(&stream, req.max_bytes)
        .map_err(|e| stream_error(host, "reading the body", e))?;
    drop(stream); // a child of `incoming`: drop it first
    if !truncated {
        drop(IncomingBody::finish(incoming));
    }
    Ok(Response {
        status,
        headers,
        body,
        truncated,
    })
}

/// Say which header `Fields::from_list` refused, and why.
fn header_error(entries: &[(String, Vec<u8>)]) -> Error {
    for entry in entries {
        match Fields::from_list(std::slice::from_ref(entry)) {
            Ok(_) => continue,
            Err(HeaderError::Forbidden) => {
                return Error::Invalid(format!(
                    "header `{}` may not be set by a tool: the host manages it",
                    entry.0
                ));
            }
            Err(_) => {
                return Error::Invalid(format!(
                    "header `{}` is not valid: names are tokens (letters, digits, `-`), values printable text",
                    entry.0
                ));
            }
        }
    }
    Error::Invalid("the headers are not acceptable together (too large?)".into())
}

/// Write `bytes` (if any) to the request body and finish it.
fn send_body(body: OutgoingBody, bytes: Option<&[u8]>, host: &str) -> Result<(), Error> {
    if let Some(bytes) = bytes {
        let stream = body.write().expect("a body's stream is taken once");
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| stream_error(host, "sending the body", e))?;
        }
    } // the stream is a child of `body`: dropped before finishing it
    OutgoingBody::finish(body, None).map_err(|e| {
        Error::Failed(format!(
            "request to {host} failed sending the body: {}",
            describe(&e)
        ))
    })
}

/// Read until end of stream or past `max` bytes; whether it stopped early.
fn read_up_to(stream: &InputStream, max: u64) -> Result<(Vec<u8>, bool), StreamError> {
    let mut body = Vec::new();
    loop {
        let room = max - body.len() as u64;
        match stream.blocking_read(READ_CHUNK.min(room + 1)) {
            Ok(chunk) if chunk.len() as u64 > room => {
                body.extend_from_slice(&chunk[..room as usize]);
                return Ok((body, true));
            }
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok((body, false)),
            Err(e) => return Err(e),
        }
    }
}

fn stream_error(host: &str, doing: &str, e: StreamError) -> Error {
    let why = match e {
        StreamError::Closed => "the stream closed early".to_string(),
        StreamError::LastOperationFailed(err) => match wasi::http::types::http_error_code(&err) {
            Some(code) => describe(&code),
            None => err.to_debug_string(),
        },
    };
    Error::Failed(format!("request to {host} failed {doing}: {why}"))
}

/// What an `error-code` means, in words, followed by the code's name.
pub fn describe(code: &ErrorCode) -> String {
    use ErrorCode as E;
    let words: String = match code {
        E::HttpRequestDenied => {
            "denied by the host: that destination is not granted (not in the tool's manifest, or narrowed by the host config's `[network] allow`)".into()
        }
        E::DnsTimeout => "DNS lookup timed out".into(),
        E::DnsError(p) => match &p.rcode {
            Some(rcode) => format!("DNS lookup failed ({rcode})"),
            None => "DNS lookup failed".into(),
        },
        E::DestinationNotFound => "destination not found".into(),
        E::DestinationUnavailable => "destination unavailable".into(),
        E::DestinationIpProhibited => "destination IP address prohibited".into(),
        E::DestinationIpUnroutable => "destination IP address unroutable".into(),
        E::ConnectionRefused => "connection refused".into(),
        E::ConnectionTerminated => "connection terminated".into(),
        E::ConnectionTimeout => "connection timed out".into(),
        E::ConnectionReadTimeout => "timed out reading from the connection".into(),
        E::ConnectionWriteTimeout => "timed out writing to the connection".into(),
        E::ConnectionLimitReached => "connection limit reached".into(),
        E::TlsProtocolError => "TLS protocol error".into(),
        E::TlsCertificateError => "TLS certificate not accepted".into(),
        E::TlsAlertReceived(p) => format!(
            "TLS alert received: {}",
            p.alert_message.as_deref().unwrap_or("no message")
        ),
        E::HttpRequestMethodInvalid => "method not accepted".into(),
        E::HttpRequestUriInvalid => "URL not accepted".into(),
        E::HttpRequestUriTooLong => "URL too long".into(),
        E::HttpRequestBodySize(_) => "request body too large".into(),
        E::HttpResponseIncomplete => "response incomplete".into(),
        E::HttpResponseBodySize(_) => "response body too large".into(),
        E::HttpResponseTimeout => "timed out waiting for the response".into(),
        E::HttpProtocolError => "HTTP protocol error".into(),
        E::LoopDetected => "loop detected".into(),
        E::ConfigurationError => "configuration error".into(),
        E::InternalError(Some(m)) => m.clone(),
        E::InternalError(None) => "internal error".into(),
        other => return format!("{other:?}"),
    };
    let debug = format!("{code:?}");
    let name = debug
        .split(['(', ' '])
        .next()
        .unwrap_or(&debug)
        .trim_start_matches("ErrorCode::");
    format!("{words} ({name})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://Example.com:8443/a/b?q=1#frag").unwrap();
        assert_eq!(
            u,
            Url {
                https: true,
                authority: "Example.com:8443",
                path_with_query: "/a/b?q=1".into()
            }
        );
        assert_eq!(
            parse_url("http://127.0.0.1:8080").unwrap().path_with_query,
            "/"
        );
        assert_eq!(parse_url("http://h?x=1").unwrap().path_with_query, "/?x=1");
        assert!(!parse_url("HTTP://h/").unwrap().https);
        for (bad, why) in [
            ("example.com/x", "not absolute"),
            ("ftp://h/", "scheme `ftp`"),
            ("http:///x", "no host"),
            ("http://u:p@h/", "credentials"),
            ("http://h/a b", "percent-encode"),
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn methods() {
        assert!(matches!(method("get"), Ok(Method::Get)));
        assert!(matches!(method("PROPFIND"), Ok(Method::Other(m)) if m == "PROPFIND"));
        assert!(method("BAD METHOD").is_err());
        assert!(method("").is_err());
    }

    #[test]
    fn error_codes_read_well() {
        assert_eq!(
            describe(&ErrorCode::ConnectionRefused),
            "connection refused (ConnectionRefused)"
        );
        assert_eq!(
            describe(&ErrorCode::HttpRequestDenied),
            "denied by the host: that destination is not granted (not in the tool's manifest, or narrowed by the host config's `[network] allow`) (HttpRequestDenied)"
        );
        assert_eq!(
            describe(&ErrorCode::InternalError(Some("boom".into()))),
            "boom (InternalError)"
        );
    }
}
