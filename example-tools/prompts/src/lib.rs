//! `prompts`: prompt templates a client offers its user (MCP `prompts/*`),
//! with completions for their arguments. Offers no tools and needs no
//! grants: rendering a prompt is pure computation, run like a call in a
//! fresh sandbox.

use schemars::JsonSchema;
use serde::Deserialize;
use toolhost_guest::prompts::{Message, Prompt, Ref};
use toolhost_guest::{ToolError, Toolbox};

/// Summary styles `summarize` knows.
pub const STYLES: &[&str] = &["brief", "bullet points", "detailed", "executive", "tweet"];
/// Languages `code_review` suggests.
pub const LANGUAGES: &[&str] = &[
    "c",
    "go",
    "java",
    "javascript",
    "python",
    "rust",
    "typescript",
];

/// Arguments of `code_review`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReviewArgs {
    /// The code to review.
    pub code: String,
    /// Its programming language.
    pub language: Option<String>,
    /// What to look at first (e.g. "error handling").
    pub focus: Option<String>,
}

/// Arguments of `summarize`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SummarizeArgs {
    /// The text to summarize.
    pub text: String,
    /// How: brief, bullet points, detailed, executive or tweet.
    pub style: Option<String>,
}

/// Arguments of `explain_error`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExplainArgs {
    /// The error message, as printed.
    pub error: String,
    /// What was being done when it happened.
    pub context: Option<String>,
}

pub fn code_review(a: ReviewArgs) -> Result<(String, Vec<Message>), ToolError> {
    let lang = a.language.unwrap_or_else(|| "code".into());
    let focus = a
        .focus
        .map(|f| format!(" Look at {f} first."))
        .unwrap_or_default();
    Ok((
        format!("Review of some {lang}"),
        vec![Message::user(format!(
            "Please review this {lang}: point out bugs, unclear parts and risky patterns, most important first.{focus}\n\n```\n{}\n```",
            a.code
        ))],
    ))
}

pub fn summarize(a: SummarizeArgs) -> Result<Vec<Message>, ToolError> {
    let style = a.style.unwrap_or_else(|| "brief".into());
    if !STYLES.contains(&style.as_str()) {
        return Err(ToolError::invalid(format!(
            "unknown style `{style}` (one of: {})",
            STYLES.join(", ")
        )));
    }
    Ok(vec![Message::user(format!(
        "Summarize the following text ({style}):\n\n{}",
        a.text
    ))])
}

pub fn explain_error(a: ExplainArgs) -> Result<Vec<Message>, ToolError> {
    let context = a
        .context
        .map(|c| format!("\n\nIt happened while: {c}"))
        .unwrap_or_default();
    Ok(vec![
        Message::user(format!(
            "Explain this error and how to fix it:\n\n{}{context}",
            a.error
        )),
        Message::assistant("Let me look at what the message says, then at its likely causes."),
    ])
}

/// The values of `options` that start with `value` (case-insensitive).
pub fn starting_with(options: &[&str], value: &str) -> Vec<String> {
    let v = value.to_lowercase();
    options
        .iter()
        .filter(|o| o.starts_with(&v))
        .map(|o| o.to_string())
        .collect()
}

/// The prompts this component offers.
pub fn tools() -> Toolbox {
    Toolbox::new()
        .prompt(
            Prompt::new("code_review", "Ask for a review of a piece of code.").title("Code review"),
            code_review,
        )
        .complete(Ref::prompt("code_review"), "language", |v, _| {
            starting_with(LANGUAGES, v)
        })
        .prompt(
            Prompt::new(
                "summarize",
                "Ask for a summary of a text, in a given style.",
            )
            .title("Summarize"),
            summarize,
        )
        .complete(Ref::prompt("summarize"), "style", |v, _| {
            starting_with(STYLES, v)
        })
        .prompt(
            Prompt::new(
                "explain_error",
                "Ask what an error message means and how to fix it.",
            )
            .title("Explain an error"),
            explain_error,
        )
}

toolhost_guest::export!(tools);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_complete_by_prefix_and_unknown_ones_are_refused() {
        assert_eq!(starting_with(STYLES, "b"), vec!["brief", "bullet points"]);
        assert!(starting_with(STYLES, "zzz").is_empty());
        let e = summarize(SummarizeArgs {
            text: "t".into(),
            style: Some("epic".into()),
        })
        .unwrap_err();
        assert!(matches!(e, ToolError::InvalidArguments(m) if m.contains("brief")));
    }
}
