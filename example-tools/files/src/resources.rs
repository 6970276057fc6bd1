//! The files under `/data` as MCP resources: `file:///data/PATH` for each
//! file (listed at run time, up to [`MAX_LISTED`]), readable through the
//! template `file:///data/{+path}`, with completions for `path`.
//!
//! As with the tools, what may be read is exactly what the sandbox lets the
//! component open: a `..` that escapes the grant fails with the operating
//! system's error.

use crate::{Kind, ROOT, resolve};
use std::fs;
use std::path::Path;
use toolhost_guest::Toolbox;
use toolhost_guest::prompts::Ref;
use toolhost_guest::resources::{Resource, ResourceContent, ResourceError, Template};

/// The URI template of the files.
pub const TEMPLATE: &str = "file:///data/{+path}";
/// Files listed by `resources/list` at most.
pub const MAX_LISTED: usize = 1000;
/// Largest file a read returns (the host's `max-output` applies too).
pub const MAX_READ: u64 = 8 << 20;

pub fn add(t: Toolbox) -> Toolbox {
    t.resource_template(
        Template::new(TEMPLATE, "File under /data")
            .title("Files")
            .description("A file of the granted directory: text as text, anything else as a blob."),
        |uri, vars| read(uri, vars.get("path").unwrap_or_default()),
    )
    .list_resources(list)
    .complete(Ref::resource_template(TEMPLATE), "path", |value, _| {
        complete(value)
    })
}

/// A MIME type from the file name (for clients; the body decides text vs blob).
pub fn mime_type(path: &str) -> &'static str {
    match Path::new(path).extension().and_then(|e| e.to_str()) {
        Some("md") => "text/markdown",
        Some("txt" | "log") => "text/plain",
        Some("json") => "application/json",
        Some("toml") => "application/toml",
        Some("csv") => "text/csv",
        Some("html" | "htm") => "text/html",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

fn read(uri: &str, path: &str) -> Result<Vec<ResourceContent>, ResourceError> {
    let file = resolve(path);
    let meta = fs::metadata(&file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            ResourceError::not_found(format!("{}: no such file", file.display()))
        }
        _ => ResourceError::failed(format!("cannot read {}: {e}", file.display())),
    })?;
    if !meta.is_file() {
        return Err(ResourceError::not_found(format!(
            "{} is not a file",
            file.display()
        )));
    }
    if meta.len() > MAX_READ {
        return Err(ResourceError::failed(format!(
            "{} is {} bytes, over the {MAX_READ}-byte limit of a resource read",
            file.display(),
            meta.len()
        )));
    }
    let bytes = fs::read(&file)
        .map_err(|e| ResourceError::failed(format!("cannot read {}: {e}", file.display())))?;
    let content = match String::from_utf8(bytes) {
        Ok(text) => ResourceContent::text(uri, text),
        Err(e) => ResourceContent::blob(uri, e.into_bytes()),
    };
    Ok(vec![content.mime_type(mime_type(path))])
}

/// Every file under `/data`, depth first, sorted, up to [`MAX_LISTED`].
fn list() -> Result<Vec<Resource>, ResourceError> {
    let listing = crate::list_dir(crate::ListDirArgs {
        path: ROOT.to_string(),
        recursive: true,
        max_entries: MAX_LISTED as u32 * 4,
    })
    .map_err(|e| ResourceError::failed(format!("{e:?}")))?;
    Ok(listing
        .0
        .entries
        .into_iter()
        .filter(|e| e.kind == Kind::File)
        .take(MAX_LISTED)
        .map(|e| {
            let rel = e
                .path
                .trim_start_matches(ROOT)
                .trim_start_matches('/')
                .to_string();
            Resource::new(format!("file:///data/{rel}"), rel.clone())
                .mime_type(mime_type(&rel))
                .size(e.size)
        })
        .collect())
}

/// Entries of the directory `value` points into whose names start with
/// the rest of `value` (directories end with `/`).
fn complete(value: &str) -> Vec<String> {
    let (dir, prefix) = match value.rfind('/') {
        Some(i) => (&value[..=i], &value[i + 1..]),
        None => ("", value),
    };
    let Ok(entries) = fs::read_dir(resolve(dir)) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            name.starts_with(prefix)
                .then(|| format!("{dir}{name}{}", if is_dir { "/" } else { "" }))
        })
        .collect();
    out.sort();
    out
}
