//! Resources: data a component serves by URI (MCP `resources/*`).
//!
//! A component serves fixed resources ([`Resource`] plus a function that
//! produces its body), families of resources under a URI template
//! ([`Template`] plus a function of the template's variables), and, if it
//! finds more at run time (files in a granted directory), a lister. Reads run
//! like calls: in a fresh sandbox, with the component's grants and limits.
//!
//! ```
//! use toolhost_guest::Toolbox;
//! use toolhost_guest::resources::{Body, Resource, ResourceContent, Template};
//!
//! fn tools() -> Toolbox {
//!     Toolbox::new()
//!         .resource(
//!             Resource::new("memo://welcome", "Welcome").mime_type("text/plain"),
//!             || Ok(Body::text("Hello!")),
//!         )
//!         .resource_template(
//!             Template::new("memo://notes/{id}", "A note").mime_type("text/plain"),
//!             |uri, vars| Ok(vec![ResourceContent::text(uri, format!("note {}", vars.get("id").unwrap_or("?")))]),
//!         )
//! }
//! ```

use crate::bindings::exports::toolhost::tool::resources as wit;
use crate::bindings::toolhost::tool::types as wit_types;
use std::collections::BTreeMap;

/// A resource as clients list it.
#[derive(Debug, Clone)]
pub struct Resource {
    pub uri: String,
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub mime_type: Option<String>,
    pub size: Option<u64>,
}

impl Resource {
    pub fn new(uri: impl Into<String>, name: impl Into<String>) -> Resource {
        Resource {
            uri: uri.into(),
            name: name.into(),
            title: None,
            description: None,
            mime_type: None,
            size: None,
        }
    }
    pub fn title(mut self, t: impl Into<String>) -> Self {
        self.title = Some(t.into());
        self
    }
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }
    pub fn mime_type(mut self, m: impl Into<String>) -> Self {
        self.mime_type = Some(m.into());
        self
    }
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }

    pub(crate) fn to_wit(&self) -> wit::ResourceDef {
        wit::ResourceDef {
            uri: self.uri.clone(),
            name: self.name.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            mime_type: self.mime_type.clone(),
            size: self.size,
        }
    }
}

/// A family of resources under an RFC 6570 URI template: `{name}` matches
/// one path segment (no `/`), `{+name}` anything.
#[derive(Debug, Clone)]
pub struct Template {
    pub uri_template: String,
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub mime_type: Option<String>,
}

impl Template {
    pub fn new(uri_template: impl Into<String>, name: impl Into<String>) -> Template {
        Template {
            uri_template: uri_template.into(),
            name: name.into(),
            title: None,
            description: None,
            mime_type: None,
        }
    }
    pub fn title(mut self, t: impl Into<String>) -> Self {
        self.title = Some(t.into());
        self
    }
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }
    pub fn mime_type(mut self, m: impl Into<String>) -> Self {
        self.mime_type = Some(m.into());
        self
    }

    /// The template's variables if `uri` matches it.
    pub fn matches(&self, uri: &str) -> Option<Vars> {
        match_template(&self.uri_template, uri)
    }
}

/// The values of a template's variables in a URI.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// What a resource holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Text(String),
    Blob(Vec<u8>),
}

impl Body {
    pub fn text(t: impl Into<String>) -> Body {
        Body::Text(t.into())
    }
    pub fn blob(b: impl Into<Vec<u8>>) -> Body {
        Body::Blob(b.into())
    }
}

/// One resource's contents as read.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceContent {
    pub uri: String,
    pub mime_type: Option<String>,
    pub body: Body,
}

impl ResourceContent {
    pub fn text(uri: impl Into<String>, text: impl Into<String>) -> Self {
        ResourceContent {
            uri: uri.into(),
            mime_type: None,
            body: Body::Text(text.into()),
        }
    }
    pub fn blob(uri: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        ResourceContent {
            uri: uri.into(),
            mime_type: None,
            body: Body::Blob(data.into()),
        }
    }
    pub fn mime_type(mut self, m: impl Into<String>) -> Self {
        self.mime_type = Some(m.into());
        self
    }

    pub(crate) fn into_wit(self) -> wit::Contents {
        wit::Contents {
            uri: self.uri,
            mime_type: self.mime_type,
            contents: match self.body {
                Body::Text(t) => wit_types::ResourceContents::Text(t),
                Body::Blob(b) => wit_types::ResourceContents::Blob(b),
            },
        }
    }
}

/// Why a read failed.
#[derive(Debug, Clone)]
pub enum ResourceError {
    /// Nothing at that URI: the client is told the resource was not found.
    NotFound(String),
    Failed(String),
}

impl ResourceError {
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::NotFound(m.into())
    }
    pub fn failed(m: impl Into<String>) -> Self {
        Self::Failed(m.into())
    }
    pub(crate) fn into_wit(self) -> wit::ResourceError {
        match self {
            ResourceError::NotFound(m) => wit::ResourceError::NotFound(m),
            ResourceError::Failed(m) => wit::ResourceError::Failed(m),
        }
    }
}

impl<E: std::fmt::Display> From<E> for ResourceError {
    fn from(e: E) -> Self {
        ResourceError::Failed(e.to_string())
    }
}

pub(crate) type ReadFixed = Box<dyn Fn() -> Result<Body, ResourceError>>;
pub(crate) type ReadTemplate =
    Box<dyn Fn(&str, &Vars) -> Result<Vec<ResourceContent>, ResourceError>>;
pub(crate) type Lister = Box<dyn Fn() -> Result<Vec<Resource>, ResourceError>>;

/// The resources of a toolbox.
#[derive(Default)]
pub(crate) struct Resources {
    pub(crate) fixed: Vec<(Resource, ReadFixed)>,
    pub(crate) templates: Vec<(Template, ReadTemplate)>,
    pub(crate) lister: Option<Lister>,
}

impl Resources {
    pub(crate) fn describe(&self) -> wit::Catalog {
        wit::Catalog {
            resources: self.fixed.iter().map(|(r, _)| r.to_wit()).collect(),
            templates: self
                .templates
                .iter()
                .map(|(t, _)| wit::TemplateDef {
                    uri_template: t.uri_template.clone(),
                    name: t.name.clone(),
                    title: t.title.clone(),
                    description: t.description.clone(),
                    mime_type: t.mime_type.clone(),
                })
                .collect(),
            dynamic: self.lister.is_some(),
        }
    }

    pub(crate) fn list(&self) -> Result<Vec<wit::ResourceDef>, wit::ResourceError> {
        match &self.lister {
            Some(l) => l()
                .map(|rs| rs.iter().map(Resource::to_wit).collect())
                .map_err(ResourceError::into_wit),
            None => Ok(Vec::new()),
        }
    }

    pub(crate) fn read(&self, uri: &str) -> Result<Vec<wit::Contents>, wit::ResourceError> {
        if let Some((r, read)) = self.fixed.iter().find(|(r, _)| r.uri == uri) {
            let body = read().map_err(ResourceError::into_wit)?;
            return Ok(vec![
                ResourceContent {
                    uri: uri.to_string(),
                    mime_type: r.mime_type.clone(),
                    body,
                }
                .into_wit(),
            ]);
        }
        for (t, read) in &self.templates {
            if let Some(vars) = t.matches(uri) {
                let contents = read(uri, &vars).map_err(ResourceError::into_wit)?;
                return Ok(contents
                    .into_iter()
                    .map(|mut c| {
                        if c.mime_type.is_none() {
                            c.mime_type = t.mime_type.clone();
                        }
                        c.into_wit()
                    })
                    .collect());
            }
        }
        Err(wit::ResourceError::NotFound(format!(
            "no resource at `{uri}`"
        )))
    }
}

/// Match `uri` against an RFC 6570 template of literals, `{var}` (one or
/// more characters, no `/`, `?` or `#`) and `{+var}` (one or more of
/// anything). Leftmost, shortest match for each variable, backtracking; a
/// template is short, so the search is too. Hand-written: the template
/// crates expand templates, they do not match them.
pub fn match_template(template: &str, uri: &str) -> Option<Vars> {
    enum Part<'a> {
        Lit(&'a str),
        Var { name: &'a str, reserved: bool },
    }
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Lit(&rest[..open]));
        }
        let close = rest[open..].find('}')? + open;
        let expr = &rest[open + 1..close];
        let (reserved, name) = match expr.strip_prefix('+') {
            Some(n) => (true, n),
            None => (false, expr),
        };
        if name.is_empty() {
            return None;
        }
        parts.push(Part::Var { name, reserved });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest));
    }
    fn go<'a>(parts: &[Part<'a>], s: &str, vars: &mut Vec<(&'a str, String)>) -> bool {
        let Some((first, more)) = parts.split_first() else {
            return s.is_empty();
        };
        match first {
            Part::Lit(l) => s.strip_prefix(l).is_some_and(|s| go(more, s, vars)),
            Part::Var { name, reserved } => {
                for (i, c) in s.char_indices() {
                    if !reserved && matches!(c, '/' | '?' | '#') {
                        return false;
                    }
                    let end = i + c.len_utf8();
                    vars.push((name, s[..end].to_string()));
                    if go(more, &s[end..], vars) {
                        return true;
                    }
                    vars.pop();
                }
                false
            }
        }
    }
    let mut vars = Vec::new();
    go(&parts, uri, &mut vars)
        .then(|| Vars(vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn templates_match_simple_and_reserved_variables() {
        assert_eq!(
            match_template("test://template/{id}/data", "test://template/123/data"),
            Some(vars(&[("id", "123")]))
        );
        assert_eq!(
            match_template("test://template/{id}/data", "test://template/1/2/data"),
            None
        );
        assert_eq!(
            match_template("test://template/{id}/data", "test://template//data"),
            None
        );
        assert_eq!(
            match_template("file:///data/{+path}", "file:///data/a/b.txt"),
            Some(vars(&[("path", "a/b.txt")]))
        );
        assert_eq!(
            match_template("file:///data/{+path}", "file:///etc/passwd"),
            None
        );
        assert_eq!(
            match_template("x://{a}-{b}", "x://one-two-three"),
            Some(vars(&[("a", "one"), ("b", "two-three")]))
        );
        assert_eq!(match_template("x://{a", "x://a"), None);
    }
}
