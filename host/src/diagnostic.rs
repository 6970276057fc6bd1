//! Diagnostics for the operator's and tool authors' files (manifests, host
//! config): every problem of a file at once, compiler-style, each with the
//! file, line, column, the offending text and a hint.
//!
//! This module only formats and collects; it decides nothing about what is
//! valid (the manifest, config and capability modules do).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnostic {
    /// The file.
    pub path: PathBuf,
    /// 1-based line and column of the offending text, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters).
    pub column: Option<usize>,
    /// The line of the file that holds the problem, for display.
    pub source_line: Option<String>,
    /// How many characters of `source_line` to underline, from `column`.
    pub width: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when there is something to say.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem with the file as a whole (unreadable, say).
    pub fn file(path: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            path: path.to_owned(),
            line: None,
            column: None,
            source_line: None,
            width: 0,
            message: message.into(),
            hint: None,
        }
    }

    /// The same diagnostic with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    /// One line: `file:line:column: message (hint)`. Use
    /// [`Diagnostic::render`] for the multi-line, compiler-style form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// Compiler-style rendering: the message, the location, the offending
    /// line with the text underlined, and the hint.
    pub fn render(&self) -> String {
        let mut out = format!("error: {}\n  --> {}", self.message, self.path.display());
        if let Some(l) = self.line {
            out.push_str(&format!(":{l}"));
            if let Some(c) = self.column {
                out.push_str(&format!(":{c}"));
            }
        }
        out.push('\n');
        if let (Some(l), Some(src), Some(c)) = (self.line, &self.source_line, self.column) {
            let n = l.to_string();
            let pad = " ".repeat(n.len());
            out.push_str(&format!("{pad} |\n{n} | {src}\n{pad} | "));
            out.push_str(&" ".repeat(c.saturating_sub(1)));
            out.push_str(&"^".repeat(self.width.max(1)));
            out.push('\n');
        }
        if let Some(h) = &self.hint {
            out.push_str(&format!("  = hint: {h}\n"));
        }
        out
    }
}

/// Every problem found in one file. Its `Display` lists them one a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct Diagnostics {
    /// The problems, in the order they appear in the file.
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl Diagnostics {
    /// Compiler-style rendering of every problem.
    pub fn render(&self) -> String {
        self.items.iter().map(Diagnostic::render).collect()
    }
}

/// Collects diagnostics while a file is checked, turning byte spans into
/// lines, columns and source text.
pub(crate) struct Collector<'a> {
    path: &'a Path,
    text: &'a str,
    items: Vec<Diagnostic>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        Collector {
            path,
            text,
            items: Vec::new(),
        }
    }

    /// Record a problem at `span` (a byte range of the file), if known.
    pub(crate) fn error(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let d = self.at(span, message.into(), hint);
        self.items.push(d);
    }

    fn at(&self, span: Option<Range<usize>>, message: String, hint: Option<String>) -> Diagnostic {
        let mut d = Diagnostic::file(self.path, message);
        d.hint = hint;
        if let Some(span) = span {
            let start = span.start.min(self.text.len());
            let end = span.end.clamp(start, self.text.len());
            let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = self.text[start..]
                .find('\n')
                .map_or(self.text.len(), |i| start + i);
            let line = self.text[..start].bytes().filter(|&b| b == b'\n').count() + 1;
            let col = self.text[line_start..start].chars().count() + 1;
            let src = &self.text[line_start..line_end];
            d.line = Some(line);
            d.column = Some(col);
            d.source_line = Some(src.trim_end().to_string());
            d.width = self.text[start..end.min(line_end)].chars().count();
        }
        d
    }

    /// `Ok(value)` if nothing was recorded, else every problem.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.items.is_empty() {
            Ok(value)
        } else {
            Err(self.into_diagnostics())
        }
    }

    /// Every problem, in the order they appear in the file.
    pub(crate) fn into_diagnostics(mut self) -> Diagnostics {
        self.items
            .sort_by_key(|d| (d.line.unwrap_or(0), d.column.unwrap_or(0)));
        Diagnostics { items: self.items }
    }
}

/// Deserialize one TOML section (or array element) into its serde shape,
/// reporting every unknown key rather than stopping at the first: each one
/// found is recorded and removed, and the section is read again. Any other
/// error (a wrong type) is recorded and the section skipped.
pub(crate) fn section<T: serde::de::DeserializeOwned>(
    cx: &mut Collector<'_>,
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    allowed: &str,
) -> Option<T> {
    let mut value = value.clone();
    for _ in 0..64 {
        match T::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
            Ok(t) => return Some(t),
            Err(e) => {
                let msg = e.message().trim().to_string();
                let unknown = msg
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split_once('`'))
                    .map(|(k, _)| k.to_string());
                match (unknown, value.get_mut()) {
                    (Some(key), toml::de::DeValue::Table(t)) => {
                        let found = t.keys().find(|k| k.get_ref().as_ref() == key).cloned();
                        let span = found.as_ref().map(|k| k.span());
                        cx.error(
                            span.or(e.span()),
                            format!("unknown key `{key}`"),
                            Some(format!("allowed here: {allowed}")),
                        );
                        match found {
                            Some(k) => {
                                t.remove(&k);
                            }
                            None => return None,
                        }
                    }
                    _ => {
                        let missing = msg
                            .strip_prefix("missing field `")
                            .and_then(|r| r.split_once('`'))
                            .map(|(k, _)| k);
                        let hint = missing.map(|k| match k {
                            "sha256" => "pin the component: `sha256 = \"…\"`, the 64 hex digits `sha256sum` prints for it".to_string(),
                            k => format!("add `{k}` (the keys here: {allowed})"),
                        });
                        cx.error(e.span(), msg, hint);
                        return None;
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_offending_text_underlined() {
        let text = "[limits]\nmemory = \"64 MB\"\n";
        let mut c = Collector::new(Path::new("t.toml"), text);
        let start = text.find("\"64").unwrap();
        c.error(Some(start..start + 7), "bad size", Some("use MiB".into()));
        let d = c.into_diagnostics();
        let r = d.render();
        assert!(r.contains("--> t.toml:2:10"), "{r}");
        assert!(r.contains("2 | memory = \"64 MB\""), "{r}");
        assert!(r.contains("  |          ^^^^^^^"), "{r}");
        assert!(r.contains("hint: use MiB"), "{r}");
        assert_eq!(d.to_string(), "t.toml:2:10: bad size (use MiB)");
    }
}
