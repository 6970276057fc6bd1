//! Tool manifests: the TOML file shipped beside each `.wasm`.
//!
//! `schema` holds the serde shapes; `normalize` (here) reads a file into
//! them section by section and checks every value, recording **every**
//! problem with its line and column rather than stopping at the first; each
//! capability unit (`caps::*::parse`) interprets its own section.
//!
//! This module owns the manifest *format*. It never opens the component,
//! never applies the operator's caps (the units do, at load) and never
//! decides anything at call time.

pub(crate) mod schema;

use crate::caps::{self, ClientRequestKind, EnvRequest, FsRequest, Limits, NetRequest};
use crate::diagnostic::{Collector, Diagnostics, section};
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};

/// A checked manifest with every path resolved against its directory.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Manifest {
    /// The manifest file itself.
    pub path: PathBuf,
    /// The component, resolved against the manifest's directory.
    pub component: PathBuf,
    /// The pinned digest of the component's bytes.
    pub sha256: [u8; 32],
    /// `[limits]`, before the operator's caps.
    pub limits: Limits,
    /// `[[fs]]`: directories asked for.
    pub fs: Vec<FsRequest>,
    /// `[env]`: variables asked for.
    pub env: EnvRequest,
    /// `[network]`: hosts asked for.
    pub network: NetRequest,
    /// `[client]`: requests to the calling client asked for.
    pub client: Vec<ClientRequestKind>,
}

impl Manifest {
    /// Read and check the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, Diagnostics> {
        let text = crate::files::read_trusted_text(path, crate::files::MAX_MANIFEST_BYTES)
            .map_err(|e| Diagnostics {
                items: vec![crate::diagnostic::Diagnostic::file(
                    path,
                    format!("cannot read manifest: {e}"),
                )],
            })?;
        Self::parse(path, &text)
    }

    /// Check manifest `text`, resolving paths against `path`'s directory.
    /// Returns every problem found, each with its line and column.
    ///
    /// Three steps, each reporting into the same collector: the TOML
    /// syntax; the sections, each read into its serde shape
    /// (`Sections::read`); then the component pin and each capability
    /// unit's own checks (`caps::*::parse`).
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, Diagnostics> {
        let mut cx = Collector::new(path, text);
        let doc = match DeTable::parse(text) {
            Ok(d) => d,
            Err(e) => {
                cx.error(e.span(), e.message().trim().to_string(), None);
                return Err(cx.into_diagnostics());
            }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let s = Sections::read(doc.get_ref(), &mut cx);
        let (component, sha256) = match &s.component {
            Some(c) => normalize_component(c, &dir, &mut cx),
            None => (PathBuf::new(), [0; 32]),
        };
        let m = Manifest {
            path: path.to_owned(),
            component,
            sha256,
            limits: caps::limits::parse(&s.limits, &mut cx),
            fs: caps::fs::parse(&s.fs, &dir, &mut cx),
            env: caps::env::parse(&s.env, &mut cx),
            network: caps::net::parse(&s.network, &mut cx),
            client: caps::client::parse(&s.client, &mut cx),
        };
        cx.finish(m)
    }

    /// A manifest granting nothing, for a component at `component` (used
    /// for components given without a manifest, and in tests).
    pub fn bare(path: &Path, component: &Path, sha256: [u8; 32]) -> Manifest {
        Manifest {
            path: path.to_owned(),
            component: component.to_owned(),
            sha256,
            limits: Limits::default(),
            fs: Vec::new(),
            env: EnvRequest::default(),
            network: NetRequest::default(),
            client: Vec::new(),
        }
    }
}

/// A manifest's sections as read, each in its serde shape; a section
/// missing or refused is its default (its problems are in the collector).
struct Sections {
    component: Option<schema::Component>,
    limits: schema::Limits,
    fs: Vec<toml::Spanned<schema::Fs>>,
    env: schema::Env,
    network: schema::Network,
    client: schema::Client,
}

impl Sections {
    /// Read each top-level key of `doc` into its section; an unknown key,
    /// a `fs` that is not an array of tables and a missing `[component]`
    /// are reported.
    fn read(doc: &DeTable<'_>, cx: &mut Collector<'_>) -> Sections {
        let mut s = Sections {
            component: None,
            limits: schema::Limits::default(),
            fs: Vec::new(),
            env: schema::Env::default(),
            network: schema::Network::default(),
            client: schema::Client::default(),
        };
        let mut has_component = false;
        for (key, value) in doc {
            match key.get_ref().as_ref() {
                "component" => {
                    has_component = true;
                    s.component = section(cx, value, schema::COMPONENT_KEYS);
                }
                "limits" => s.limits = section(cx, value, schema::LIMITS_KEYS).unwrap_or_default(),
                "fs" => s.fs = fs_grants(value, cx),
                "env" => s.env = section(cx, value, schema::ENV_KEYS).unwrap_or_default(),
                "network" => {
                    s.network = section(cx, value, schema::NETWORK_KEYS).unwrap_or_default()
                }
                "client" => s.client = section(cx, value, schema::CLIENT_KEYS).unwrap_or_default(),
                other => cx.error(
                    Some(key.span()),
                    format!("unknown key `{other}`"),
                    Some(format!("allowed here: {}", schema::TOP_KEYS)),
                ),
            }
        }
        if !has_component {
            cx.error(
                None,
                "missing `[component]`",
                Some("add `[component]` with `path` and `sha256`".into()),
            );
        }
        s
    }
}

/// The `[[fs]]` grants of `value`, each with its span.
fn fs_grants(
    value: &toml::Spanned<DeValue<'_>>,
    cx: &mut Collector<'_>,
) -> Vec<toml::Spanned<schema::Fs>> {
    let DeValue::Array(items) = value.get_ref() else {
        cx.error(
            Some(value.span()),
            "`fs` must be an array of tables",
            Some("write each grant as `[[fs]]`".into()),
        );
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            section::<schema::Fs>(cx, item, schema::FS_KEYS)
                .map(|g| toml::Spanned::new(item.span(), g))
        })
        .collect()
}

fn normalize_component(
    c: &schema::Component,
    dir: &Path,
    cx: &mut Collector<'_>,
) -> (PathBuf, [u8; 32]) {
    let component = dir.join(c.path.get_ref());
    if !component.is_file() {
        // A FIFO or a device (`/dev/zero`) would hold a load forever; the
        // load checks again on the descriptor it reads.
        let what = if component.exists() {
            "is not a regular file"
        } else {
            "not found"
        };
        cx.error(
            Some(c.path.span()),
            format!(
                "component `{}` {what} (resolved to {})",
                c.path.get_ref(),
                component.display()
            ),
            None,
        );
    }
    let digest = c.sha256.get_ref().trim().to_ascii_lowercase();
    let digest = digest.strip_prefix("sha256:").unwrap_or(&digest);
    let mut sha256 = [0u8; 32];
    if hex::decode_to_slice(digest, &mut sha256).is_err() {
        cx.error(
            Some(c.sha256.span()),
            format!("sha256 `{}` is not 64 hex digits", c.sha256.get_ref()),
            Some(format!(
                "pin the component with `sha256sum {}`",
                c.path.get_ref()
            )),
        );
    }
    (component, sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.wasm"), b"").unwrap();
        let p = dir.path().join("t.toml");
        Manifest::parse(&p, text)
    }

    const HEAD: &str = "[component]\npath = \"t.wasm\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";

    /// A missing key says what to add; for `sha256`, how to get it (the
    /// user review: "missing field `sha256`" said neither).
    #[test]
    fn a_missing_key_says_what_to_add() {
        let e = parse("[component]\npath = \"t.wasm\"\n").unwrap_err();
        let text = e.render();
        assert!(
            text.contains("missing field `sha256`") && text.contains("sha256sum"),
            "{text}"
        );
    }

    #[test]
    fn every_problem_of_a_file_is_reported_at_once() {
        let text = format!(
            "{HEAD}[limits]\nmemroy = \"1 MiB\"\nmemory = \"64 MB/s\"\ntimeout = \"0s\"\n\n[[fs]]\nguest = \"data\"\nhost = \".\"\nmode = \"ro\"\n\n[[fs]]\nguest = \"/x\"\nhost = \".\"\nmode = \"rwx\"\n\n[client]\nrequests = [\"telepathy\"]\n\n[bogus]\n"
        );
        let e = parse(&text).unwrap_err();
        let msgs: Vec<String> = e
            .items
            .iter()
            .map(|d| format!("{}:{}", d.line.unwrap_or(0), d.message))
            .collect();
        assert!(
            msgs.iter().any(|m| m.starts_with("5:unknown key `memroy`")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("6:") && m.contains("64 MB/s")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("7:timeout must be greater")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter().any(|m| m.starts_with("10:guest path `data`")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter().any(|m| m.starts_with("17:mode `rwx`")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter().any(|m| m.starts_with("20:`telepathy`")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter().any(|m| m.starts_with("22:unknown key `bogus`")),
            "{msgs:#?}"
        );
        assert_eq!(msgs.len(), 7, "{msgs:#?}");
        let rendered = e.render();
        assert!(rendered.contains("^^^^^^"), "{rendered}");
    }

    #[test]
    fn a_good_manifest_reads_every_unit() {
        let text = format!(
            "{HEAD}[limits]\nmemory = \"16 MiB\"\nfuel = 5\n[[fs]]\nguest = \"/out\"\nhost = \".\"\nmode = \"rw\"\nquota = \"1 MiB\"\n[env]\nset = {{ A = \"1\" }}\npass = [\"LANG\"]\n[network]\nallow = [\"example.com:8080\"]\n[client]\nrequests = [\"sampling\"]\n"
        );
        let m = parse(&text).unwrap();
        assert_eq!(m.limits.memory, 16 << 20);
        assert_eq!(m.limits.fuel, Some(5));
        assert_eq!(m.fs[0].quota, Some(1 << 20));
        assert_eq!(m.env.set, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(m.env.pass, vec!["LANG".to_string()]);
        assert_eq!(m.network.allow[0].to_string(), "example.com:8080");
        assert_eq!(m.client, vec![ClientRequestKind::Sampling]);
    }

    /// Every grant costs a descriptor per sandbox (a directory) or a check
    /// per request (a host): a manifest's lists are bounded.
    #[test]
    fn a_manifest_may_not_list_grants_without_end() {
        let mut text = HEAD.to_string();
        for i in 0..=caps::fs::MAX_GRANTS {
            text.push_str(&format!(
                "[[fs]]\nguest = \"/d{i}\"\nhost = \".\"\nmode = \"ro\"\n"
            ));
        }
        let hosts: Vec<String> = (0..=caps::net::MAX_PATTERNS)
            .map(|i| format!("\"h{i}.example.com\""))
            .collect();
        text.push_str(&format!("[network]\nallow = [{}]\n", hosts.join(", ")));
        let e = parse(&text).unwrap_err();
        let msgs: Vec<&str> = e.items.iter().map(|d| d.message.as_str()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("at most 32 directories (33 here)")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("at most 256 hosts (257 here)")),
            "{msgs:#?}"
        );
        assert_eq!(msgs.len(), 2, "{msgs:#?}");
    }

    #[test]
    fn syntax_errors_and_a_missing_component_table_are_reported() {
        let e = parse("[limits\n").unwrap_err();
        assert_eq!(e.items.len(), 1);
        assert_eq!(e.items[0].line, Some(1));
        let e = parse("[limits]\nfuel = 1\n").unwrap_err();
        assert!(e.items[0].message.contains("missing `[component]`"), "{e}");
    }
}
