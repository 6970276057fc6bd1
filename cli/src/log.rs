//! The log on stderr: its filter (`TOOLHOST_LOG`, or the default) and its
//! lines, each cut at [`MAX_LINE`] bytes.
//!
//! Libraries log what clients send: rmcp logs a refused request with its
//! whole id and error, and an HTTP request refused for its Host or Origin
//! with that header (up to hyper's header limit). toolhost bounds and
//! escapes its own log fields, but cannot bound a library's; so every line
//! is cut here, whatever the filter (an operator's `TOOLHOST_LOG` replaces
//! the default one, which quietens rmcp's per-request refusals).
//!
//! Must not touch: what is logged (that is each module's), or the OTLP
//! export (`otel`).

use std::io::{self, Write};
use tracing_subscriber::fmt::MakeWriter;

/// The longest line (one event) written; the rest is dropped, and its size
/// said.
pub(crate) const MAX_LINE: usize = 8 << 10;

/// The filter: `TOOLHOST_LOG`, else `warn`, with rmcp's log of every
/// refused request (the client's whole request id and error) only from
/// `error` on: toolhost logs its own refusals, bounded.
pub(crate) fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("TOOLHOST_LOG")
        .unwrap_or_else(|_| "warn,rmcp::service=error".into())
}

/// Makes one [`CutLine`] per event (tracing-subscriber formats an event
/// whole, then writes it with one `write_all`).
pub(crate) struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = CutLine<io::StderrLock<'static>>;

    fn make_writer(&'a self) -> Self::Writer {
        CutLine::new(io::stderr().lock())
    }
}

/// One event's line on stderr (locked, so lines do not interleave), past
/// [`MAX_LINE`] bytes cut at a character boundary and ended with how much
/// was cut.
pub(crate) struct CutLine<W: Write> {
    out: W,
    left: usize,
    cut: usize,
}

impl<W: Write> CutLine<W> {
    fn new(out: W) -> Self {
        CutLine {
            out,
            left: MAX_LINE,
            cut: 0,
        }
    }
}

impl<W: Write> Write for CutLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut keep = buf.len().min(self.left);
        if keep < buf.len() {
            // Not inside a UTF-8 sequence (tracing writes an event with one
            // `write_all`, so a sequence is within one `buf`).
            while keep > 0 && buf[keep] & 0xC0 == 0x80 {
                keep -= 1;
            }
            // Nothing more of this line after a cut.
            self.left = 0;
        } else {
            self.left -= keep;
        }
        self.out.write_all(&buf[..keep])?;
        self.cut += buf.len() - keep;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Drop for CutLine<W> {
    fn drop(&mut self) {
        if self.cut > 0 {
            let _ = writeln!(self.out, "… ({} bytes cut)", self.cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line past the limit keeps its first [`MAX_LINE`] bytes or fewer
    /// (never half a character), and says what was cut; a short line
    /// passes whole.
    #[test]
    fn a_long_line_is_cut_at_a_character_boundary() {
        let written = |text: &str, piece: usize| {
            let mut out = Vec::new();
            let mut line = CutLine::new(&mut out);
            for part in text.as_bytes().chunks(piece) {
                line.write_all(part).unwrap();
            }
            drop(line);
            String::from_utf8(out).unwrap()
        };
        let text = format!("{}é{}\n", "a".repeat(MAX_LINE - 1), "b".repeat(100));
        for piece in [text.len(), 1000] {
            let out = written(&text, piece);
            let cut = text.len() - (MAX_LINE - 1);
            assert_eq!(
                out,
                format!("{}… ({cut} bytes cut)\n", "a".repeat(MAX_LINE - 1))
            );
        }
        assert_eq!(written("short\n", 6), "short\n");
    }
}
