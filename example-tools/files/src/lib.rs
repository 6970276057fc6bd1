//! `files`: list, read and search the files of a directory granted at `/data`,
//! and serve them as MCP resources (`file:///data/PATH`, see [`resources`]).
//!
//! Needs a filesystem grant at guest path `/data` (read-only is enough).
//! Relative paths resolve against `/data`. The tools do no confinement checks
//! of their own: what the tool may reach is exactly what the sandbox lets it
//! open, and any refusal (`..`, other absolute paths, escaping symlinks) is
//! reported with the operating system's error text.

use regex::{Regex, RegexBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use toolhost_guest::{Content, Json, Output, Tool, ToolError, Toolbox};

pub mod resources;

/// Where the granted directory is mounted, and where relative paths resolve.
pub const ROOT: &str = "/data";

/// The tools (and resources) this component offers.
pub fn tools() -> Toolbox {
    resources::add(tools_only())
}

fn tools_only() -> Toolbox {
    Toolbox::new()
        .tool(Tool::new(
            "list_dir",
            "List the entries of a directory under /data: name, path, kind (file, dir, symlink, other) and size \
             in bytes. Set `recursive` to walk subdirectories (symlinks are listed, not followed).",
            list_dir,
        ).title("List directory").read_only().idempotent().open_world(false))
        .tool(Tool::new(
            "read_file",
            "Read a text file under /data. Returns up to `max_bytes` bytes starting at byte `offset` as text \
             (invalid UTF-8 is replaced by U+FFFD). When `truncated` is true, call again with \
             `offset` = `next_offset` to read on.",
            read_file,
        ).output_schema(Some(schema_of::<ReadFileResult>())).title("Read file").read_only().idempotent().open_world(false))
        .tool(Tool::new(
            "search",
            "Search the lines of the files under a directory (or in one file) for a regular expression, like \
             grep -rn. Binary files and files over 8 MiB are skipped. Returns each matching line with its \
             path and 1-based line number.",
            search,
        ).title("Search files").read_only().idempotent().open_world(false))
}

toolhost_guest::export!(tools);

fn schema_of<T: JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("schema serializes")
}

/// `path` as the tool opens it: absolute paths as given, relative ones joined
/// onto [`ROOT`]. No normalization: the sandbox judges `..` and the like.
pub fn resolve(path: &str) -> PathBuf {
    if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(ROOT).join(path)
    }
}

fn default_root() -> String {
    ROOT.to_string()
}

fn io_error(action: &str, path: &Path, e: io::Error) -> ToolError {
    ToolError::failed(format!("cannot {action} {}: {e}", path.display()))
}

// ------------------------------------------------------------------ list_dir

/// Arguments of `list_dir`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDirArgs {
    /// The directory to list; relative paths are relative to /data.
    #[serde(default = "default_root")]
    pub path: String,
    /// Also list the contents of subdirectories, depth first.
    #[serde(default)]
    pub recursive: bool,
    /// Stop after this many entries.
    #[serde(default = "default_max_entries")]
    #[schemars(range(min = 1))]
    pub max_entries: u32,
}

fn default_max_entries() -> u32 {
    1000
}

/// Kinds of directory entries.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One directory entry.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Entry {
    /// The entry's file name.
    pub name: String,
    /// The entry's full path, usable as `path` in the other tools.
    pub path: String,
    pub kind: Kind,
    /// Size in bytes (of the link itself for symlinks).
    pub size: u64,
}

/// Result of `list_dir`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListDirResult {
    /// The directory listed.
    pub path: String,
    /// Entries sorted by path.
    pub entries: Vec<Entry>,
    /// Whether the listing stopped at `max_entries`.
    pub truncated: bool,
    /// Subdirectories that could not be read, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub fn list_dir(args: ListDirArgs) -> Result<Json<ListDirResult>, ToolError> {
    if args.max_entries == 0 {
        return Err(ToolError::invalid("`max_entries` must be at least 1"));
    }
    let root = resolve(&args.path);
    let mut result = ListDirResult {
        path: root.display().to_string(),
        entries: Vec::new(),
        truncated: false,
        errors: Vec::new(),
    };
    let first = read_sorted(&root).map_err(|e| io_error("list", &root, e))?;
    // Depth-first, in sorted order: a stack of directory listings still to emit.
    let mut stack = vec![first.into_iter()];
    while let Some(level) = stack.last_mut() {
        let Some(entry) = level.next() else {
            stack.pop();
            continue;
        };
        if result.entries.len() == args.max_entries as usize {
            result.truncated = true;
            break;
        }
        let is_dir = entry.kind == Kind::Dir;
        let path = PathBuf::from(&entry.path);
        result.entries.push(entry);
        if args.recursive && is_dir {
            match read_sorted(&path) {
                Ok(children) => stack.push(children.into_iter()),
                Err(e) => result
                    .errors
                    .push(format!("cannot list {}: {e}", path.display())),
            }
        }
    }
    Ok(Json(result))
}

/// The entries of one directory, sorted by name, without following symlinks.
fn read_sorted(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for item in fs::read_dir(dir)? {
        let item = item?;
        let meta = item.path().symlink_metadata()?;
        let ft = meta.file_type();
        let kind = if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
        entries.push(Entry {
            name: item.file_name().to_string_lossy().into_owned(),
            path: item.path().display().to_string(),
            kind,
            size: if kind == Kind::Dir { 0 } else { meta.len() },
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

// ----------------------------------------------------------------- read_file

/// Arguments of `read_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileArgs {
    /// The file to read; relative paths are relative to /data.
    pub path: String,
    /// Byte offset to start reading at.
    #[serde(default)]
    pub offset: u64,
    /// Read at most this many bytes.
    #[serde(default = "default_max_bytes")]
    #[schemars(range(min = 1))]
    pub max_bytes: u64,
}

fn default_max_bytes() -> u64 {
    64 * 1024
}

/// Structured result of `read_file` (the text itself is the content).
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct ReadFileResult {
    /// The file read.
    pub path: String,
    /// The file's size in bytes.
    pub size: u64,
    /// Where reading started.
    pub offset: u64,
    /// How many bytes of the file the text holds.
    pub bytes_read: u64,
    /// Whether the file goes on past what was read.
    pub truncated: bool,
    /// Where to continue reading, when truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
}

pub fn read_file(args: ReadFileArgs) -> Result<Output, ToolError> {
    let (text, meta) = read_file_text(&args)?;
    let structured = serde_json::to_value(&meta)?;
    Ok(Output::new()
        .with(Content::text(text))
        .structured(structured))
}

/// `read_file` without the MCP wrapping: the text and its description.
pub fn read_file_text(args: &ReadFileArgs) -> Result<(String, ReadFileResult), ToolError> {
    if args.max_bytes == 0 {
        return Err(ToolError::invalid("`max_bytes` must be at least 1"));
    }
    let path = resolve(&args.path);
    let fail = |e| io_error("read", &path, e);
    let meta = fs::metadata(&path).map_err(fail)?;
    if meta.is_dir() {
        return Err(ToolError::failed(format!(
            "cannot read {}: it is a directory (use list_dir)",
            path.display()
        )));
    }
    let size = meta.len();
    if args.offset > size {
        return Err(ToolError::invalid(format!(
            "`offset` {} is past the end of {} ({size} bytes)",
            args.offset,
            path.display()
        )));
    }
    let mut file = fs::File::open(&path).map_err(fail)?;
    file.seek(SeekFrom::Start(args.offset)).map_err(fail)?;
    let mut bytes = Vec::new();
    file.take(args.max_bytes)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    let mut truncated = args.offset + (bytes.len() as u64) < size;
    if truncated {
        // Do not split a UTF-8 sequence: leave an incomplete tail for the next read.
        let keep = utf8_boundary(&bytes);
        if keep > 0 {
            bytes.truncate(keep);
        }
    }
    let bytes_read = bytes.len() as u64;
    truncated = args.offset + bytes_read < size;
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let result = ReadFileResult {
        path: path.display().to_string(),
        size,
        offset: args.offset,
        bytes_read,
        truncated,
        next_offset: truncated.then_some(args.offset + bytes_read),
    };
    Ok((text, result))
}

/// The length of `bytes` without a trailing incomplete UTF-8 sequence.
fn utf8_boundary(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // A sequence is at most 4 bytes: look back at most 3 for its lead byte.
    for back in 1..=len.min(3) {
        let b = bytes[len - back];
        if b & 0xC0 != 0x80 {
            let need = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if need > back { len - back } else { len };
        }
    }
    len
}

// -------------------------------------------------------------------- search

/// Arguments of `search`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// The regular expression to look for in each line (Rust `regex` syntax).
    pub pattern: String,
    /// A directory to search recursively, or a single file; relative paths are relative to /data.
    #[serde(default = "default_root")]
    pub path: String,
    /// Only search files whose name matches this wildcard pattern (`*` any characters, `?` one character), e.g. `*.rs` or `README*`.
    #[serde(default)]
    pub glob: Option<String>,
    /// Stop after this many matching lines.
    #[serde(default = "default_max_matches")]
    #[schemars(range(min = 1))]
    pub max_matches: u32,
    /// Match letters regardless of case.
    #[serde(default)]
    pub case_insensitive: bool,
}

fn default_max_matches() -> u32 {
    200
}

/// One matching line.
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct Match {
    pub path: String,
    /// 1-based.
    pub line_number: u64,
    /// The line, without its line ending (cut to 500 characters, marked with `…`).
    pub line: String,
}

/// Result of `search`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchResult {
    pub matches: Vec<Match>,
    /// How many entries `matches` has.
    pub count: usize,
    /// Whether the search stopped at `max_matches`.
    pub truncated: bool,
    /// How many files were searched.
    pub files_searched: u64,
    /// Files and directories that could not be read, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Files larger than this are skipped.
const MAX_SEARCH_FILE: u64 = 8 << 20;
/// Characters of a matching line returned.
const MAX_LINE_CHARS: usize = 500;
/// Reasons for skipped files returned, at most.
const MAX_ERRORS: usize = 20;

pub fn search(args: SearchArgs) -> Result<Json<SearchResult>, ToolError> {
    if args.max_matches == 0 {
        return Err(ToolError::invalid("`max_matches` must be at least 1"));
    }
    let re = RegexBuilder::new(&args.pattern)
        .case_insensitive(args.case_insensitive)
        .build()
        .map_err(|e| {
            ToolError::invalid(format!("`pattern` is not a valid regular expression: {e}"))
        })?;
    let glob = args.glob.as_deref().map(Glob::new);
    let root = resolve(&args.path);
    let meta = fs::metadata(&root).map_err(|e| io_error("search", &root, e))?;

    let mut s = Searcher {
        re,
        max: args.max_matches as usize,
        result: SearchResult {
            matches: Vec::new(),
            count: 0,
            truncated: false,
            files_searched: 0,
            errors: Vec::new(),
        },
    };
    if meta.is_dir() {
        s.walk(&root, glob.as_ref());
    } else {
        // A file named explicitly is searched whatever `glob` says.
        if let Err(e) = s.file(&root, meta.len()) {
            return Err(io_error("search", &root, e));
        }
    }
    s.result.count = s.result.matches.len();
    Ok(Json(s.result))
}

struct Searcher {
    re: Regex,
    max: usize,
    result: SearchResult,
}

impl Searcher {
    fn done(&self) -> bool {
        self.result.truncated
    }

    fn error(&mut self, msg: String) {
        if self.result.errors.len() < MAX_ERRORS {
            self.result.errors.push(msg);
        }
    }

    fn walk(&mut self, dir: &Path, glob: Option<&Glob>) {
        let entries = match read_sorted(dir) {
            Ok(entries) => entries,
            Err(e) => return self.error(format!("cannot list {}: {e}", dir.display())),
        };
        for entry in entries {
            if self.done() {
                return;
            }
            let path = PathBuf::from(&entry.path);
            match entry.kind {
                Kind::Dir => self.walk(&path, glob),
                Kind::File if glob.is_none_or(|g| g.matches(&entry.name)) => {
                    if let Err(e) = self.file(&path, entry.size) {
                        self.error(format!("cannot search {}: {e}", path.display()));
                    }
                }
                _ => {}
            }
        }
    }

    fn file(&mut self, path: &Path, size: u64) -> io::Result<()> {
        if size > MAX_SEARCH_FILE {
            self.error(format!(
                "skipped {}: {size} bytes is over the {MAX_SEARCH_FILE}-byte limit",
                path.display()
            ));
            return Ok(());
        }
        let bytes = fs::read(path)?;
        self.result.files_searched += 1;
        if bytes[..bytes.len().min(8192)].contains(&0) {
            return Ok(()); // binary
        }
        let text = String::from_utf8_lossy(&bytes);
        for (i, line) in text.lines().enumerate() {
            if self.re.is_match(line) {
                if self.result.matches.len() == self.max {
                    self.result.truncated = true;
                    break;
                }
                self.result.matches.push(Match {
                    path: path.display().to_string(),
                    line_number: i as u64 + 1,
                    line: shorten(line),
                });
            }
        }
        Ok(())
    }
}

fn shorten(line: &str) -> String {
    match line.char_indices().nth(MAX_LINE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// A file-name wildcard pattern: `*` matches any run of characters, `?` one.
struct Glob(Vec<char>);

impl Glob {
    fn new(pattern: &str) -> Self {
        Glob(pattern.chars().collect())
    }

    fn matches(&self, name: &str) -> bool {
        let (p, n): (&[char], Vec<char>) = (&self.0, name.chars().collect());
        // Iterative wildcard matching with one backtrack point for the last `*`.
        let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
        while ni < n.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
                pi += 1;
                ni += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some(pi);
                mark = ni;
                pi += 1;
            } else if let Some(s) = star {
                pi = s + 1;
                mark += 1;
                ni = mark;
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_onto_data() {
        assert_eq!(resolve("src/main.rs"), PathBuf::from("/data/src/main.rs"));
        assert_eq!(resolve("/etc/passwd"), PathBuf::from("/etc/passwd"));
        assert_eq!(resolve("../x"), PathBuf::from("/data/../x"));
    }

    #[test]
    fn globs() {
        let g = Glob::new("*.rs");
        assert!(
            g.matches("main.rs")
                && g.matches(".rs")
                && !g.matches("main.rsx")
                && !g.matches("main.r")
        );
        assert!(Glob::new("READ*").matches("README.md"));
        assert!(Glob::new("a?c*d").matches("abcxxd") && !Glob::new("a?c*d").matches("acxd"));
        assert!(Glob::new("*").matches("anything") && Glob::new("**x").matches("x"));
    }

    #[test]
    fn utf8_boundaries() {
        let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(utf8_boundary(&s[..2]), 1);
        assert_eq!(utf8_boundary(&s[..3]), 3);
        assert_eq!(utf8_boundary(&s[..5]), 3);
        assert_eq!(utf8_boundary(&s[..8]), 6);
        assert_eq!(utf8_boundary(&s[..10]), 10);
        assert_eq!(utf8_boundary(b"\xff\xff"), 2);
    }

    #[test]
    fn long_lines_are_shortened() {
        assert_eq!(shorten("abc"), "abc");
        let long = "é".repeat(600);
        assert_eq!(shorten(&long).chars().count(), MAX_LINE_CHARS + 1);
    }
}
