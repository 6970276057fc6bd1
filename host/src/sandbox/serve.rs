//! The sandbox's half of resources, prompts and completions: what a
//! component declares at load, checked against `crate::served`'s bounds,
//! and what a read, get, list or completion returned, sized (against
//! `max-output`) and converted into the core's shapes.
//!
//! Must not touch: which component serves a URI or who may see it (that is
//! `catalog` and `core`).

use super::bindings::v2::exports::toolhost::tool::{prompts as wp, resources as wr};
use super::bound::{Described, Output, Raw};
use super::{PER_BLOCK, b64_len, content_size, convert_content};
use crate::error::{CallErrorKind, LoadErrorKind};
use crate::model::ResourceContents;
use crate::served::{self as s, Served};

fn describe_err(reason: String) -> LoadErrorKind {
    LoadErrorKind::Describe { reason }
}

fn resource_def(r: wr::ResourceDef) -> s::ResourceDef {
    s::ResourceDef {
        uri: r.uri,
        name: r.name,
        title: r.title,
        description: r.description,
        // An empty one is none (as a Python tool passes a resource's on).
        mime_type: r.mime_type.filter(|m| !m.is_empty()),
        size: r.size,
    }
}

/// Most bytes of text all of one component's resources, templates and
/// prompts may take together (each string is bounded on its own, and their
/// counts are, but not their sum: found by review, hundreds of MiB could be
/// declared, held with the catalog and cloned by every listing).
const MAX_SERVED_BYTES: usize = 4 << 20;

/// Count one declaration's texts (`named` and those `optional` it has)
/// against a component's [`MAX_SERVED_BYTES`].
fn declare(
    total: &mut usize,
    named: &[&String],
    optional: &[&Option<String>],
) -> Result<(), LoadErrorKind> {
    let texts = named
        .iter()
        .copied()
        .chain(optional.iter().copied().flatten());
    *total = texts.fold(*total, |t, x| t.saturating_add(x.len()));
    if *total > MAX_SERVED_BYTES {
        return Err(describe_err(format!(
            "its resources, templates and prompts together take more than {} MiB of text; a component may declare at most that much",
            MAX_SERVED_BYTES >> 20
        )));
    }
    Ok(())
}

/// What a component declared besides tools, checked.
pub(super) fn convert(d: Described) -> Result<Served, LoadErrorKind> {
    let mut out = Served {
        completions: d.completions,
        ..Served::default()
    };
    let mut declared = 0usize;
    if let Some(c) = d.resources {
        if c.resources.len() > s::MAX_RESOURCES {
            return Err(describe_err(format!(
                "it declares {} resources; a component may declare at most {}",
                c.resources.len(),
                s::MAX_RESOURCES
            )));
        }
        if c.templates.len() > s::MAX_TEMPLATES {
            return Err(describe_err(format!(
                "it declares {} resource templates; a component may declare at most {}",
                c.templates.len(),
                s::MAX_TEMPLATES
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for r in c.resources {
            let r = resource_def(r);
            s::check_resource(&r)
                .map_err(|e| describe_err(format!("resource `{}`: {e}", r.uri)))?;
            declare(
                &mut declared,
                &[&r.uri, &r.name],
                &[&r.title, &r.description, &r.mime_type],
            )?;
            if !seen.insert(r.uri.clone()) {
                return Err(describe_err(format!(
                    "resource `{}` is declared twice",
                    r.uri
                )));
            }
            out.resources.push(r);
        }
        for t in c.templates {
            let parsed = s::UriTemplate::parse(&t.uri_template).map_err(describe_err)?;
            let bad =
                |e: String| describe_err(format!("resource template `{}`: {e}", t.uri_template));
            s::bounded("its name", &t.name, s::MAX_NAME).map_err(bad)?;
            if let Some(d) = &t.description {
                s::bounded("its description", d, s::MAX_TEXT).map_err(bad)?;
            }
            for o in [&t.title, &t.mime_type].into_iter().flatten() {
                s::bounded("its title or MIME type", o, s::MAX_NAME).map_err(bad)?;
            }
            if let Some(m) = t.mime_type.as_ref().filter(|m| !m.is_empty()) {
                crate::sandbox::check_mime(m).map_err(bad)?;
            }
            declare(
                &mut declared,
                &[&t.uri_template, &t.name],
                &[&t.title, &t.description, &t.mime_type],
            )?;
            out.templates.push((
                s::TemplateDef {
                    uri_template: t.uri_template,
                    name: t.name,
                    title: t.title,
                    description: t.description,
                    mime_type: t.mime_type.filter(|m| !m.is_empty()),
                },
                parsed,
            ));
        }
        out.dynamic = c.dynamic;
    }
    if d.prompts.len() > s::MAX_PROMPTS {
        return Err(describe_err(format!(
            "it declares {} prompts; a component may offer at most {}",
            d.prompts.len(),
            s::MAX_PROMPTS
        )));
    }
    let mut names = std::collections::HashSet::new();
    for p in d.prompts {
        let bad = |e: String| describe_err(format!("prompt `{}`: {e}", p.name));
        if !super::valid_tool_name(&p.name) {
            return Err(bad(
                "prompt names must be 1-64 characters of A-Z a-z 0-9 _ - .".into(),
            ));
        }
        if !names.insert(p.name.clone()) {
            return Err(bad("declared twice".into()));
        }
        if p.arguments.len() > s::MAX_PROMPT_ARGUMENTS {
            return Err(bad(format!(
                "{} arguments; a prompt may have at most {}",
                p.arguments.len(),
                s::MAX_PROMPT_ARGUMENTS
            )));
        }
        for o in [&p.title].into_iter().flatten() {
            s::bounded("its title", o, s::MAX_NAME).map_err(bad)?;
        }
        if let Some(d) = &p.description {
            s::bounded("its description", d, s::MAX_TEXT).map_err(bad)?;
        }
        let mut arguments = Vec::with_capacity(p.arguments.len());
        for a in &p.arguments {
            s::bounded("an argument name", &a.name, s::MAX_NAME).map_err(bad)?;
            // Unbounded before, up to the whole describe's lift (found by
            // review).
            if let Some(t) = &a.title {
                s::bounded("an argument title", t, s::MAX_NAME).map_err(bad)?;
            }
            if let Some(d) = &a.description {
                s::bounded("an argument description", d, s::MAX_TEXT).map_err(bad)?;
            }
            declare(&mut declared, &[&a.name], &[&a.title, &a.description])?;
            arguments.push(s::PromptArgument {
                name: a.name.clone(),
                title: a.title.clone(),
                description: a.description.clone(),
                required: a.required,
            });
        }
        declare(&mut declared, &[&p.name], &[&p.title, &p.description])?;
        out.prompts.push(s::PromptDef {
            name: p.name.as_str().into(),
            title: p.title.clone(),
            description: p.description.clone(),
            arguments,
        });
    }
    Ok(out)
}

fn def_size(r: &wr::ResourceDef) -> u64 {
    PER_BLOCK
        + (r.uri.len()
            + r.name.len()
            + [&r.title, &r.description, &r.mime_type]
                .into_iter()
                .flatten()
                .map(String::len)
                .sum::<usize>()) as u64
}

impl Raw {
    /// What the result weighs as it will be serialized, for `max-output`.
    pub(super) fn size(&self) -> u64 {
        match self {
            Raw::Toolhost(Ok(r)) => super::wit_result_size(r),
            // An error's text reaches the client too (and a task keeps it):
            // weighed like a result's, so `max-output` bounds it (found by
            // review: a `failed` of 60 MB passed a 1 KiB limit).
            Raw::Toolhost(Err(e)) => match e {
                super::wit_tool::ToolError::InvalidArguments(m)
                | super::wit_tool::ToolError::UnknownTool(m)
                | super::wit_tool::ToolError::Failed(m) => m.len() as u64,
            },
            // Typed results, errors too, are weighed where they are lifted
            // (`typed`).
            Raw::Typed(_) => 0,
            Raw::Listed(Ok(l)) => l.iter().map(def_size).sum(),
            Raw::Read(Ok(bodies)) => bodies
                .iter()
                .map(|b| {
                    PER_BLOCK
                        + b.uri.len() as u64
                        + b.mime_type.as_ref().map_or(0, |m| m.len() as u64)
                        + match &b.contents {
                            super::bindings::v2::toolhost::tool::types::ResourceContents::Text(
                                t,
                            ) => t.len() as u64,
                            super::bindings::v2::toolhost::tool::types::ResourceContents::Blob(
                                b,
                            ) => b64_len(b.len()),
                        }
                })
                .sum(),
            Raw::Prompt(Ok(p)) => {
                p.description.as_ref().map_or(0, |d| d.len() as u64)
                    + p.messages
                        .iter()
                        .map(|m| content_size(&m.content))
                        .sum::<u64>()
            }
            Raw::Completion(c) => c.values.iter().map(|v| v.len() as u64 + 4).sum::<u64>(),
            Raw::Listed(Err(e)) | Raw::Read(Err(e)) => match e {
                wr::ResourceError::NotFound(m) | wr::ResourceError::Failed(m) => m.len() as u64,
            },
            Raw::Prompt(Err(e)) => match e {
                wp::PromptError::InvalidArguments(m)
                | wp::PromptError::UnknownPrompt(m)
                | wp::PromptError::Failed(m) => m.len() as u64,
            },
        }
    }
}

fn resource_error(e: wr::ResourceError) -> CallErrorKind {
    match e {
        wr::ResourceError::NotFound(_) => CallErrorKind::UnknownTool,
        wr::ResourceError::Failed(message) => CallErrorKind::ToolFailed { message },
    }
}

/// A read, list, get or completion's result (already within `max-output`)
/// in the core's shapes, or the error it reported.
pub(super) fn finish(raw: Raw) -> Result<Output, CallErrorKind> {
    let bad = |details: String| CallErrorKind::BadResult { details };
    match raw {
        Raw::Listed(r) => {
            let list = r.map_err(resource_error)?;
            if list.len() > s::MAX_LISTED {
                return Err(bad(format!(
                    "it listed {} resources; at most {} are accepted",
                    list.len(),
                    s::MAX_LISTED
                )));
            }
            let list: Vec<_> = list.into_iter().map(resource_def).collect();
            for r in &list {
                s::check_resource(r)
                    .map_err(|e| bad(format!("listed resource `{}`: {e}", r.uri)))?;
            }
            Ok(Output::Listed(list))
        }
        Raw::Read(r) => {
            let bodies = r.map_err(resource_error)?;

            if bodies.len() > s::MAX_BODIES {
                return Err(bad(format!(
                    "it returned {} bodies; at most {} are accepted",
                    bodies.len(),
                    s::MAX_BODIES
                )));
            }
            use super::bindings::v2::toolhost::tool::types as wt;
            Ok(Output::Read(
                bodies
                    .into_iter()
                    .map(|b| s::ResourceBody {
                        uri: b.uri,
                        mime_type: crate::sandbox::optional_mime(b.mime_type),
                        contents: match b.contents {
                            wt::ResourceContents::Text(t) => ResourceContents::Text(t),
                            wt::ResourceContents::Blob(b) => ResourceContents::Blob(b),
                        },
                    })
                    .collect(),
            ))
        }
        Raw::Prompt(r) => {
            let p = r.map_err(|e| match e {
                wp::PromptError::InvalidArguments(details) => {
                    CallErrorKind::InvalidArguments { details }
                }
                wp::PromptError::UnknownPrompt(_) => CallErrorKind::UnknownTool,
                wp::PromptError::Failed(message) => CallErrorKind::ToolFailed { message },
            })?;
            let messages = p
                .messages
                .into_iter()
                .map(|m| {
                    Ok(s::PromptMessage {
                        role: match m.role {
                            wp::Role::User => s::Role::User,
                            wp::Role::Assistant => s::Role::Assistant,
                        },
                        content: convert_content(m.content)?,
                    })
                })
                .collect::<Result<_, String>>()
                .map_err(|details| CallErrorKind::BadResult { details })?;
            Ok(Output::Prompt(s::PromptOutput {
                description: p.description,
                messages,
            }))
        }
        Raw::Completion(c) => {
            let has_more = c.has_more || c.values.len() > s::MAX_COMPLETION_VALUES;
            let mut values = c.values;
            values.truncate(s::MAX_COMPLETION_VALUES);
            Ok(Output::Completion(s::Completion {
                values,
                total: c.total,
                has_more,
            }))
        }
        Raw::Toolhost(_) | Raw::Typed(_) => Err(CallErrorKind::Internal {
            message: "a tool call's result where another was expected".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(resources: Vec<wr::ResourceDef>, templates: Vec<&str>) -> Described {
        Described {
            resources: Some(wr::Catalog {
                resources,
                templates: templates
                    .into_iter()
                    .map(|t| wr::TemplateDef {
                        uri_template: t.into(),
                        name: "t".into(),
                        title: None,
                        description: None,
                        mime_type: None,
                    })
                    .collect(),
                dynamic: false,
            }),
            prompts: Vec::new(),
            completions: false,
        }
    }

    fn res(uri: &str) -> wr::ResourceDef {
        wr::ResourceDef {
            uri: uri.into(),
            name: "r".into(),
            title: None,
            description: None,
            mime_type: None,
            size: None,
        }
    }

    fn prompt(name: &str, args: usize) -> wp::PromptDef {
        wp::PromptDef {
            name: name.into(),
            title: None,
            description: None,
            arguments: (0..args)
                .map(|i| wp::ArgumentDef {
                    name: format!("a{i}"),
                    title: None,
                    description: None,
                    required: false,
                })
                .collect(),
        }
    }

    fn refused(d: Described) -> String {
        match convert(d) {
            Err(LoadErrorKind::Describe { reason }) => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn declarations_are_bounded_and_named_in_errors() {
        let ok = convert(described(vec![res("x://a")], vec!["x://t/{id}"])).unwrap();
        assert!(ok.claims("x://a") && ok.claims("x://t/1") && !ok.claims("x://t/1/2"));
        let many = (0..=s::MAX_RESOURCES)
            .map(|i| res(&format!("x://{i}")))
            .collect();
        assert!(refused(described(many, vec![])).contains("at most"));
        let e = refused(described(vec![res("x://a"), res("x://a")], vec![]));
        assert!(e.contains("`x://a`") && e.contains("twice"), "{e}");
        let e = refused(described(vec![res("no-scheme")], vec![]));
        assert!(e.contains("no-scheme"), "{e}");
        let e = refused(described(vec![], vec!["x://{a}{b}"]));
        assert!(e.contains("x://{a}{b}"), "{e}");
        let long = format!("x://{}", "a".repeat(s::MAX_URI));
        assert!(refused(described(vec![res(&long)], vec![])).contains("bytes"));
    }

    #[test]
    fn prompts_are_bounded_and_named_in_errors() {
        let d = |prompts| Described {
            resources: None,
            prompts,
            completions: true,
        };
        assert_eq!(convert(d(vec![prompt("p", 2)])).unwrap().prompts.len(), 1);
        let e = refused(d(vec![prompt("p", 1), prompt("p", 0)]));
        assert!(e.contains("`p`") && e.contains("twice"), "{e}");
        assert!(refused(d(vec![prompt("bad name", 0)])).contains("bad name"));
        assert!(refused(d(vec![prompt("p", s::MAX_PROMPT_ARGUMENTS + 1)])).contains("arguments"));
        let many = (0..=s::MAX_PROMPTS)
            .map(|i| prompt(&format!("p{i}"), 0))
            .collect();
        assert!(refused(d(many)).contains("at most"));
        // A review's case: an argument's title was bounded by nothing but
        // the describe's lift.
        let mut titled = prompt("p", 1);
        titled.arguments[0].title = Some("t".repeat(s::MAX_NAME + 1));
        assert!(refused(d(vec![titled])).contains("argument title"));
        // Each string within its bound, the sum past the component's: 100
        // prompts of 32 arguments with 2 KB descriptions (6.4 MB).
        let wordy = (0..100)
            .map(|i| {
                let mut p = prompt(&format!("p{i}"), 32);
                for a in &mut p.arguments {
                    a.description = Some("d".repeat(2000));
                }
                p
            })
            .collect();
        assert!(refused(d(wordy)).contains("MiB of text"));
    }

    #[test]
    fn completions_keep_at_most_a_hundred_values() {
        let c = super::super::bindings::v2::exports::toolhost::tool::completions::Completion {
            values: (0..150).map(|i| i.to_string()).collect(),
            total: None,
            has_more: false,
        };
        match finish(Raw::Completion(c)) {
            Ok(Output::Completion(c)) => {
                assert_eq!(c.values.len(), s::MAX_COMPLETION_VALUES);
                assert!(c.has_more);
            }
            other => panic!("{other:?}"),
        }
    }
}
