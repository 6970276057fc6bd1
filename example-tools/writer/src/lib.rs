//! `writer`: write text files in a directory granted at `/out`.
//!
//! Needs a read-write filesystem grant at guest path `/out`. Relative paths
//! resolve against `/out`. Like `files`, it does no confinement checks of its
//! own: the sandbox refuses whatever the grant does not cover, and the tool
//! reports the operating system's error text.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use toolhost_guest::{Json, Tool, ToolError, Toolbox};

/// Where the granted directory is mounted, and where relative paths resolve.
pub const ROOT: &str = "/out";

/// The tools this component offers.
pub fn tools() -> Toolbox {
    Toolbox::new()
        .tool(Tool::new(
            "write_file",
            "Write text to a file under /out, creating it if needed. By default an existing file is \
             replaced; set `append` to add to its end instead. Set `create_dirs` to create missing parent \
             directories.",
            write_file,
        ).title("Write file").destructive().open_world(false))
}

toolhost_guest::export!(tools);

/// `path` as the tool opens it: absolute paths as given, relative ones joined
/// onto [`ROOT`]. No normalization: the sandbox judges `..` and the like.
pub fn resolve(path: &str) -> PathBuf {
    if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(ROOT).join(path)
    }
}

/// Arguments of `write_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFileArgs {
    /// The file to write; relative paths are relative to /out.
    pub path: String,
    /// The text to write (UTF-8).
    pub content: String,
    /// Add `content` to the end of the file instead of replacing it.
    #[serde(default)]
    pub append: bool,
    /// Create missing parent directories.
    #[serde(default)]
    pub create_dirs: bool,
}

/// Result of `write_file`.
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct WriteFileResult {
    /// The file written.
    pub path: String,
    /// How many bytes were written.
    pub bytes_written: u64,
    /// The file's size afterwards.
    pub size: u64,
}

pub fn write_file(args: WriteFileArgs) -> Result<Json<WriteFileResult>, ToolError> {
    let path = resolve(&args.path);
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(ToolError::invalid(format!(
            "`path` {:?} names a directory, not a file",
            args.path
        )));
    }
    let fail = |e: std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound
            && !args.create_dirs
            && path.starts_with(ROOT)
        {
            " (if its directory does not exist, set `create_dirs` to create it)"
        } else {
            ""
        };
        ToolError::failed(format!("cannot write {}: {e}{hint}", path.display()))
    };
    if args.create_dirs
        && let Some(parent) = path.parent()
    {
        fs::create_dir_all(parent).map_err(|e| {
            ToolError::failed(format!("cannot create directory {}: {e}", parent.display()))
        })?;
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(args.append)
        .truncate(!args.append)
        .open(&path)
        .map_err(fail)?;
    file.write_all(args.content.as_bytes()).map_err(fail)?;
    file.flush().map_err(fail)?;
    let size = file.metadata().map_err(fail)?.len();
    Ok(Json(WriteFileResult {
        path: path.display().to_string(),
        bytes_written: args.content.len() as u64,
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_onto_out() {
        assert_eq!(resolve("report.md"), PathBuf::from("/out/report.md"));
        assert_eq!(resolve("/tmp/x"), PathBuf::from("/tmp/x"));
    }

    #[test]
    fn trailing_slash_is_refused() {
        let e = write_file(WriteFileArgs {
            path: "dir/".into(),
            content: String::new(),
            append: false,
            create_dirs: false,
        });
        assert!(
            matches!(e, Err(ToolError::InvalidArguments(m)) if m.contains("names a directory"))
        );
    }
}
